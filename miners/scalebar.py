"""Find and read the scale bar of an electron micrograph.

A scale bar is a thin, high-contrast horizontal rectangle (sometimes with end ticks, sometimes
inside a filled label box, white-on-dark, black-on-light or coloured) with a label such as
``200 nm``, ``0.5 µm`` or ``10 Å`` next to it. :func:`read_scalebar` finds bar candidates from
connected components of extreme-intensity pixels, measures the bar length to sub-pixel precision
from its end profiles, OCRs (tesseract, through pytesseract) only the small regions next to each
candidate, and pairs text and bar by proximity and alignment.

Units are normalised to ``pm``, ``Å``, ``nm``, ``µm`` (U+00B5 MICRO SIGN) or ``mm``;
:func:`parse_scale_text` and :func:`to_nm` are shared with the caption parser.
"""
from __future__ import annotations

import functools
import logging
import re
import shutil
import unicodedata
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from idx.errors import ImageError
from miners.images import as_uint8, to_gray
from miners.ocr import image_to_data

log = logging.getLogger(__name__)

NM_PER_UNIT = {"pm": 1e-3, "Å": 0.1, "nm": 1.0, "µm": 1e3, "mm": 1e6}
UNIT_ALIASES = {
    "pm": "pm", "picometer": "pm", "picometre": "pm",
    "å": "Å", "a": "Å", "angstrom": "Å", "angstroms": "Å", "ångström": "Å",
    "nm": "nm", "nanometer": "nm", "nanometre": "nm", "nanometers": "nm", "nanometres": "nm",
    "µm": "µm", "um": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm",
    "micrometre": "µm", "micrometers": "µm", "micrometres": "µm",
    "mm": "mm", "millimeter": "mm", "millimetre": "mm",
}
_NUMBER = r"(\d{1,3}(?:,\d{3})+(?!\d)|\d*[.,]\d+|\d+)"
_UNIT = (r"(picomet(?:er|re)s?|pm|ångström|angstroms?|å|nanomet(?:er|re)s?|nm|micromet(?:er|re)s?"
         r"|microns?|µm|um|millimet(?:er|re)s?|mm|a)")
_SCALE_RE = re.compile(_NUMBER + r"\s*-?\s*" + _UNIT + r"(?![a-z])", re.IGNORECASE)

BRIGHT_MIN = 190  # grey level a light bar reaches at least
DARK_MAX = 70  # grey level a dark bar reaches at most
COLOUR_MIN_CHROMA = 110  # max - min channel for a coloured bar
SATURATED_LIGHT_MIN = 245  # second, near-white level for light bars
SATURATED_DARK_MAX = 15  # second, near-black level for dark bars
MIN_BAR_PX = 10  # shortest bar considered, px
MAX_BAR_FRACTION = 0.75  # of the image width; longer lines are frames or plot axes
FAINT_BAR_WINDOW_PX = 25  # rows of the local ground (grey closing/opening) of a faint bar
FAINT_BAR_CONTRAST = 70  # grey levels between a faint bar and that local ground at least
FAINT_BAR_GAP_PX = 3  # gaps of a faint bar this short (columns) are closed
MIN_CONTRAST = 35  # grey levels between a bar and the pixels above and below it
EDGE_ROWS = 3  # rows next to a thick bar looked at for its contrast with the ground
BLURRED_EDGE_PENALTY = 0.9  # score factor of a bar whose contrast shows only past its edge rows
BLUR_END_PX = 2  # extra columns a thick (>= 4 rows) bar's ends may fade over, each side
MAX_END_SHIFT_PX = 3.5  # sub-pixel ends may move the length this far from the component's (px)
GLYPH_CONTRAST = 50  # grey levels between a glyph and the ground in its box
ADAPTIVE_GLYPH_CONTRAST = 50  # grey levels between text and the window's median, second glyph pass
# pixel sizes a micrograph can have, nm/px: 0.005 (atomic-resolution STEM) to 20 000 (20 µm/px: a
# 10 mm field over a 500 px panel, an SEM overview at about x12; EMPS has 200 µm over 56 px = 3571)
NM_PER_PX_RANGE = (0.005, 20000.0)
MAX_GLYPH_RUN = 5  # width / height of a glyph blob: up to 4 bold digits blurred together
MAX_STACKED_PAIRS = 1  # two-line label guesses OCRed per bar (each is one tesseract call)
MAX_OCR_CALLS = 10  # tesseract calls per image (~0.1 s each): bounds the time of a hard panel
MAX_CANDIDATES = 4  # bars whose neighbourhood is OCRed
MAX_FAINT_CANDIDATES = 2  # faint bars (last route) whose neighbourhood is OCRed
TEXT_REACH_PX = 30  # rows above and below a bar searched for its label, at least
FAR_TEXT_REACH_PX = 45  # ... searched again when nothing was read there (short bar, tall label)
MAX_FAR_OCR_CALLS = 4  # tesseract calls of that second search per image (not the first's budget)
OCR_TEXT_HEIGHT_PX = 36  # text is rescaled to about this height before OCR
LABEL_CHARS = "0123456789.nmuµ"  # characters of a scale label (tesseract whitelist)
MIN_OCR_CONF = 20.0  # tesseract word confidence (0-100) under which a reading is dropped
# seconds one tesseract call on a label box may take (a band: twice this) before it is given up;
# benchmarks on a loaded machine raise it so that accuracy does not depend on the load
OCR_TIMEOUT_S = 5.0


@dataclass
class ScaleBar:
    """A read scale bar; ``found=False`` (with everything else empty) when there is none.

    Attributes
    ----------
    found : bool
        True when a bar and its value are known (from the image or the caption).
    value, unit : float, str
        Length the bar stands for, unit one of ``pm, Å, nm, µm, mm``.
    text : str
        Raw OCR text next to the bar ("" when unreadable).
    bar_px : float
        Bar length in pixels (sub-pixel).
    nm_per_px : float
        Pixel size, nm.
    bar_bbox, text_bbox : tuple of int
        ``(row0, col0, row1, col1)``, end exclusive; written ``[x0, y0, x1, y1]`` by ``to_dict``.
    confidence : float
        0-1, product of bar shape and OCR confidences.
    source : str
        ``"image"`` or ``"caption"`` (value taken from the caption, bar from the image).
    mask : ndarray of bool, shape (H, W)
        Pixels of bar and text, to leave out of particle segmentation; not in ``to_dict``.
    """

    found: bool = False
    value: float | None = None
    unit: str | None = None
    text: str = ""
    bar_px: float | None = None
    nm_per_px: float | None = None
    bar_bbox: tuple[int, int, int, int] | None = None
    text_bbox: tuple[int, int, int, int] | None = None
    confidence: float = 0.0
    source: str | None = None
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready dict; bounding boxes as ``[x0, y0, x1, y1]`` (x1, y1 exclusive)."""
        return {
            "found": self.found,
            "value": self.value,
            "unit": self.unit,
            "text": self.text,
            "bar_px": None if self.bar_px is None else round(float(self.bar_px), 2),
            "nm_per_px": None if self.nm_per_px is None else float(f"{self.nm_per_px:.6g}"),
            "bar_bbox": bbox_to_xyxy(self.bar_bbox),
            "text_bbox": bbox_to_xyxy(self.text_bbox),
            "confidence": round(float(self.confidence), 3),
            "source": self.source,
        }


def bbox_to_xyxy(bbox: tuple[int, int, int, int] | None) -> list[int] | None:
    """``(row0, col0, row1, col1)`` -> ``[x0, y0, x1, y1]`` for JSON (None stays None)."""
    if bbox is None:
        return None
    r0, c0, r1, c1 = bbox
    return [int(c0), int(r0), int(c1), int(r1)]


def normalize_unit(unit: str) -> str | None:
    """Canonical spelling (``pm, Å, nm, µm, mm``) of a unit as written, or None if unknown.

    Both micro signs (U+00B5, U+03BC), ``um``, ``micron``, ``A``/``Å``/``Å`` (U+212B) and
    spelled-out names are accepted, in any case except ``Å`` vs ``mm``/``nm`` clashes.
    """
    u = unicodedata.normalize("NFC", unit.strip())
    u = u.replace("\u03bc", "µ").replace("\u212b", "Å").replace("\u2009", "")
    return UNIT_ALIASES.get(u.lower())


def parse_scale_text(text: str) -> tuple[float, str] | None:
    """Read a length such as ``200 nm``, ``0.5 µm``, ``1,000 nm``, ``0,5 um`` or ``10 Å``.

    Parameters
    ----------
    text : str
        OCR output or caption fragment; the first number followed by a length unit wins.

    Returns
    -------
    (value, unit) or None
        ``unit`` is one of ``pm, Å, nm, µm, mm``; None when no number+unit pair is present.
    """
    if not text:
        return None
    t = unicodedata.normalize("NFC", text).replace("\u03bc", "µ").replace("\u212b", "Å")
    t = t.replace("\u00a0", " ").replace("\u2009", " ").replace("\u202f", " ")
    for match in _SCALE_RE.finditer(t):
        number, unit_text = match.group(1), match.group(2)
        if unit_text == "a":  # a lone lowercase "a" is a word or panel letter, not Å
            continue
        unit = normalize_unit(unit_text)
        if unit is None:
            continue
        value = _parse_number(number)
        if value is None or value <= 0:
            continue
        return value, unit
    return None


def to_nm(value: float, unit: str) -> float:
    """Length ``value`` in ``unit`` (any spelling :func:`normalize_unit` knows) in nm.

    Raises
    ------
    ValueError
        If the unit is not a length unit.
    """
    canonical = normalize_unit(unit)
    if canonical is None:
        raise ValueError(f"unknown length unit {unit!r}; use one of {', '.join(NM_PER_UNIT)}")
    return float(value) * NM_PER_UNIT[canonical]


def scalebar_mask(scalebar: ScaleBar, shape: tuple[int, int], margin_px: int = 2) -> np.ndarray:
    """Boolean ``(H, W)`` mask covering the bar and its text, grown by ``margin_px``.

    Parameters
    ----------
    scalebar : ScaleBar
        A reading from :func:`read_scalebar`; boxes are ``(row0, col0, row1, col1)``.
    shape : tuple of int
        ``(H, W)`` of the image the mask is for.
    margin_px : int
        Pixels added on every side of each box.
    """
    mask = np.zeros(shape[:2], dtype=bool)
    for box in (scalebar.bar_bbox, scalebar.text_bbox):
        if box is None:
            continue
        r0, c0, r1, c1 = box
        mask[max(0, r0 - margin_px):r1 + margin_px, max(0, c0 - margin_px):c1 + margin_px] = True
    return mask


def read_scalebar(image: np.ndarray, caption_scale: tuple[float, str] | None = None) -> ScaleBar:
    """Find the scale bar of a micrograph and read its length.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3) or (H, W, 4)
        Micrograph, any integer or float dtype (rescaled to uint8).
    caption_scale : (float, str), optional
        Scale stated by the caption for this panel (value, unit); used, with ``source="caption"``,
        when a bar is found but its text cannot be read.

    Returns
    -------
    ScaleBar
        ``found=False`` when no bar with a value is present; never guesses a value.
    """
    try:
        arr = as_uint8(image)
    except ImageError as exc:
        log.warning("scale bar: unusable image (%s)", exc)
        return ScaleBar()
    if min(arr.shape[:2]) < 16:
        return ScaleBar()
    gray = to_gray(arr)
    if int(gray.max()) - int(gray.min()) < MIN_CONTRAST:
        return ScaleBar()
    candidates = find_bar_candidates(arr)
    tesseract_ok = _tesseract_available()
    ocr_budget = [MAX_OCR_CALLS]  # tesseract calls left for this image (about 0.1 s each)
    far_budget = [MAX_FAR_OCR_CALLS]  # the second, farther label search has its own
    readings = []
    for bar in candidates[:MAX_CANDIDATES]:
        text, text_box, ocr_conf = ("", None, 0.0)
        if tesseract_ok:
            text, text_box, ocr_conf = _read_text_near(gray, arr, bar, ocr_budget)
        parsed = _parse_label(text)
        if parsed is None and tesseract_ok and 0.7 * bar["length_px"] < FAR_TEXT_REACH_PX:
            # a short bar under a tall label: the label's top lies beyond the first window
            far = _read_text_near(gray, arr, bar, far_budget, FAR_TEXT_REACH_PX)
            far_parsed = _parse_label(far[0])
            if far_parsed is not None:
                (text, text_box, ocr_conf), parsed = far, far_parsed
        readings.append((bar, text, text_box, ocr_conf, parsed))
    # a stroke of a longer bar's label (the foot of a "2") is no bar of its own
    readings = [_check_reading(gray, r) for r in readings
                if not any(_inside(r[0]["bbox"], other[2]) and other[0]["length_px"] > r[0]["length_px"]
                           for other in readings if other[2] is not None)]
    read = [r for r in readings if r[4] is not None]
    # a photograph's "5 m" or "1 cm" label: no route below may make an EM length of it
    metre_label = None if read else _metre_label_of(gray, readings)
    if not read and tesseract_ok and metre_label is None:
        # second route: the label first (sparse-text OCR of the label bands), then its bar
        text_first = _read_text_first(gray, arr, candidates, [MAX_SPARSE_OCR_CALLS])
        if text_first is not None:
            read = [text_first]
    if not read and tesseract_ok and readings and metre_label is None:
        # third route: a blurred label OCRed with only the characters of a scale label
        restricted = _read_label_chars(gray, arr, readings[0][0])
        if restricted is not None:
            read = [_check_reading(gray, restricted)]
            read = [r for r in read if r[4] is not None]
            metre_label = _metre_label_of(gray, [restricted])
    if not read and tesseract_ok and metre_label is None:
        # fourth route: faint bars (grey on white, dark grey on grey texture) that reach no
        # fixed level; only when nothing else reads, so no bar read before changes
        faint = [bar for bar in find_faint_bar_candidates(arr)
                 if not any(_same_bar(bar, other) for other in candidates)]
        for bar in faint[:MAX_FAINT_CANDIDATES]:
            if ocr_budget[0] <= 0:
                break
            text, text_box, ocr_conf = _read_text_near(gray, arr, bar, ocr_budget)
            if text_box is not None and _boxes_overlap(text_box, bar["bbox"]):
                continue  # a stroke of the label itself taken for a faint bar
            parsed = _parse_label(text)
            reading = _check_reading(gray, (bar, text, text_box, ocr_conf, parsed))
            if reading[4] is not None:
                read = [reading]
                break
    if metre_label is not None and not read:
        log.warning("scale bar: the label read %r is in %s (its glyphs spell %r), not an electron "
                    "micrograph's length unit; no pixel size is taken from it", metre_label[0],
                    {"m": "metres", "cm": "centimetres"}[metre_label[1]], metre_label[1])
    if not readings and not read:
        return ScaleBar()
    if read:
        bar, text, text_box, ocr_conf, (value, unit) = max(
            read, key=lambda r: r[0]["score"] * (0.5 + r[3] / 200.0))
        source = "image"
        confidence = bar["score"] * max(ocr_conf, 1.0) / 100.0
    elif caption_scale is not None and readings[0][0]["score"] >= 0.5:
        bar, text, text_box, _, _ = readings[0]
        parsed_caption = _as_value_unit(caption_scale)
        if parsed_caption is None:
            return ScaleBar()
        value, unit = parsed_caption
        source = "caption"
        confidence = bar["score"] * 0.8
    else:
        return ScaleBar()
    result = ScaleBar(
        found=True, value=value, unit=unit, text=text, bar_px=bar["length_px"],
        nm_per_px=to_nm(value, unit) / bar["length_px"], bar_bbox=bar["bbox"],
        text_bbox=text_box, confidence=min(1.0, confidence), source=source,
    )
    result.mask = scalebar_mask(result, gray.shape)
    return result


def _same_bar(a: dict, b: dict) -> bool:
    """True when two bar candidates' ``bbox`` agree within 2 px on every side."""
    return max(abs(p - q) for p, q in zip(a["bbox"], b["bbox"])) <= 2


def _inside(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when the ``(row0, col0, row1, col1)`` box ``a`` lies within ``b``."""
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """True when two ``(row0, col0, row1, col1)`` boxes share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


_STRICT_LABEL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(nm|um|µm)")
_BLURRED_LABEL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([nuµm]{1,3})")  # unit letters half read
MIN_LABEL_CHARS_SCORE = 0.4  # bar score needed before its label is OCRed with LABEL_CHARS
MAX_LABEL_CHARS_CALLS = 4  # tesseract calls of that last route per image


def _read_label_chars(gray: np.ndarray, arr: np.ndarray, bar: dict) -> tuple | None:
    """Last route for the best bar: OCR its label boxes with only ``LABEL_CHARS``.

    A blurred label defeats the free OCR (``"168 ne"``, ``"lim"``); limited to digits, ``.``
    and the unit letters tesseract often reads it. Only a whole, clean reading counts (a number
    and ``nm``/``um``/``µm``, nothing else, a round value, a plausible pixel size), so texture
    or a data bar does not turn into a scale.

    Returns
    -------
    tuple or None
        ``(bar, text, text_box, confidence, (value, unit))`` like the other routes, or None.
    """
    if bar["score"] < MIN_LABEL_CHARS_SCORE:
        return None
    calls = MAX_LABEL_CHARS_CALLS
    for *box, text_polarity in _text_line_boxes(gray, arr, bar)[:2]:
        for mode in ([text_polarity, None] if text_polarity else [None, "light"]):
            if calls <= 0:
                return None
            calls -= 1
            text, _ = _ocr_label(gray, arr, tuple(box), mode, label_chars=True)
            match = _STRICT_LABEL_RE.fullmatch(text.strip())
            if match is not None:
                unit = "nm" if match.group(2) == "nm" else "µm"
            else:
                # blurred unit letters ("168n", "290un"): nm or µm by the glyph shapes (µ has
                # a descender)
                match = _BLURRED_LABEL_RE.fullmatch(text.strip())
                if match is None:
                    continue
                descender = _unit_has_descender(gray, tuple(box), bar["polarity"],
                                                _digit_count(match.group(1)))
                if descender is None:
                    continue
                unit = "µm" if descender else "nm"
            value = _parse_number(match.group(1))
            value = _round_misread_zeros(value) if value else value
            if (value and _is_round_value(value)
                    and is_plausible_scale(value, unit, bar["length_px"])):
                return bar, text, tuple(box), 50.0, (value, unit)
    return None


def is_plausible_scale(value: float, unit: str, bar_px: float) -> bool:
    """True when ``value unit`` over ``bar_px`` pixels gives a micrograph-like pixel size.

    Pixel sizes of EM panels lie within ``NM_PER_PX_RANGE`` (0.005-20 000 nm/px); a reading
    outside it (``2.9 mm`` over 100 px, the working distance of an SEM data bar) is an OCR or
    pairing error.
    """
    if not bar_px or bar_px <= 0:
        return False
    nm_per_px = to_nm(value, unit) / bar_px
    return NM_PER_PX_RANGE[0] <= nm_per_px <= NM_PER_PX_RANGE[1]


def _round_misread_zeros(value: float) -> float:
    """A 3-digit-or-more integer whose 6, 8 and 9 after the first digit become 0 when that is round.

    Blurred or slashed zeros come out of tesseract as ``6``, ``8`` or ``9`` (``168 nm``,
    ``108 nm``, ``208 nm``, ``299 nm`` for 100 and 200 nm); a scale-bar value has at most 2
    significant digits, so ``168`` -> 100 and ``258`` -> 250. Only results 100, 150, 200, 250
    or 500 (times a power of ten) are taken: ``906`` (a misread ``100``) is left as it is.
    Round values and decimals are returned unchanged.
    """
    if _is_round_value(value) or value != int(value) or value < 100:
        return value
    digits = str(int(value))
    zeroed = digits[0] + re.sub(r"[689]", "0", digits[1:])
    # only to the common bar values 100, 150, 200, 250, 500 (x 10^k): "906" stays no value
    if zeroed != digits and re.fullmatch(r"[125]0+|[12]50+", zeroed):
        zeroed = float(zeroed)
        log.debug("scale bar: %s read as %s (blurred zeros)", value, zeroed)
        return zeroed
    return value


# Leading significant digits of scale-bar values (x 10^k): the 1-2-5 series and the usual
# in-betweens. Of the 313 labelled EMPS bars, 300 are 1, 2 or 5, then 3 (9), 4 (2), 2.5, 3.5.
_SCALE_MANTISSAS = {"1", "15", "2", "25", "3", "35", "4", "5", "6", "7", "75", "8"}
_BARE_MANTISSAS = {"1", "2", "3", "4", "5"}


def _drop_stray_leading_digit(value: float) -> float:
    """A two-digit label whose first digit is a stray: ``930`` -> 30, ``41`` -> 1, ``4200`` -> 200.

    A bar end, tick or speck in front of the label is read as one more digit (``930 um`` for
    ``30 µm``, ``S500nm`` for ``500 nm``). When an integer with two significant digits starts
    with no usual scale-bar value (``_SCALE_MANTISSAS``: not 93, 41, 42, 55) and what follows its
    first digit is 1, 2, 3, 4 or 5 (x 10^k), that is the label; other values are returned as they
    are (``96``, ``250``, ``35``, ``0.5``).
    """
    if value != int(value) or value < 10:
        return value
    digits = str(int(value))
    significant = digits.rstrip("0")
    if len(significant) != 2 or significant in _SCALE_MANTISSAS:
        return value
    rest = digits[1:].lstrip("0")
    if rest and rest.rstrip("0") in _BARE_MANTISSAS:
        log.debug("scale bar: %s read as %s (a stray leading digit)", value, rest)
        return float(rest)
    return value


def _is_round_value(value: float) -> bool:
    """True for values a scale bar is labelled with: at most 2 significant digits (2.5, 250, 0.1).

    Data-bar fields next to a bar (``WD = 2.35 mm``, ``14.66 K X``) have more.
    """
    digits = f"{value:.6g}".replace(".", "").lstrip("0").rstrip("0")
    return 0 < len(digits) <= 2


def _check_reading(gray: np.ndarray, reading: tuple) -> tuple:
    """Settle a dropped micro sign by the glyph shapes; drop implausible or data-bar readings."""
    bar, text, text_box, ocr_conf, parsed = reading
    if parsed is None:
        return reading
    # "EHT = 20.00 kV", "WD = 10 mm"; a stray "=" after the unit ("100 n=" for 100 nm) is no field
    if re.search(r"=\s*\d|\b(?:WD|EHT|HV|Mag|HFW|Det|kV)\b", text, flags=re.IGNORECASE):
        log.debug("scale bar: %r is a data-bar field, not a scale label", text)
        return bar, text, text_box, ocr_conf, None
    value, unit = parsed
    fixed = _fix_ocr(text)
    # the unit's letters, found once and only when a rule below asks for their shape
    unit_glyphs = functools.cache(lambda: _unit_glyphs(gray, text_box, _digit_count(fixed)))
    if _metre_label(gray, text, text_box) is not None:
        log.debug("scale bar: %r is a label in metres or centimetres, not a micrograph length", text)
        return bar, text, text_box, ocr_conf, None
    if unit == "µm" and text_box is not None and _DROPPED_MICRO_RE.search(text):
        # "20 nm" and "2.0 µm" both come out of tesseract as "20m"; a micro sign has a descender
        # (a "p" has one too, and a closed bowl: "500 pm" also comes out as "500m")
        if (_descends(unit_glyphs()) is False and _letter_follows_number(unit_glyphs())
                and is_plausible_scale(value, "nm", bar["length_px"])):
            unit = "nm"
        elif _first_letter(unit_glyphs()) == "p":
            unit = "pm"
    elif (unit == "µm" and text_box is not None and not _READ_MICRO_RE.search(text)
          and _is_n(unit_glyphs()) and is_plausible_scale(value, "nm", bar["length_px"])):
        # an "n" touched by a particle comes out as "5 Hm" or "5pm", made µm by _fix_ocr; where
        # tesseract saw a descender the glyphs may have lost a faint one, so only a whole "n"
        # (an arch over two legs, a µ is the other way up) undoes it
        log.debug("scale bar: %r read as nm: its first unit letter is an n", text)
        unit = "nm"
    said = re.search(r"\d\s*([pPmM])[mM]\b", text)
    if said and text_box is not None:
        # tesseract's "pm" and "mm" stand for µm and nm as often as not (_fix_ocr takes them so);
        # where the glyphs can be told apart, their shape decides between those two only: "500
        # pm" and "5 mm" bars exist
        choices = {"p": {"p": "pm", "µ": "µm"}, "m": {"m": "mm", "n": "nm"}}[said.group(1).lower()]
        shape_unit = choices.get(_first_letter(unit_glyphs()))
        if shape_unit is not None and shape_unit != unit:
            log.debug("scale bar: %r read as %s by the glyphs' shape, not %s", text, shape_unit, unit)
            unit = shape_unit
    if text_box is not None:
        value = _repair_digits(gray, text_box, fixed, value, bar["polarity"])
    value = _drop_stray_leading_digit(_round_misread_zeros(value))
    if not _is_round_value(value):
        log.debug("scale bar: %s is not a scale-bar value (more than 2 significant digits)", value)
        return bar, text, text_box, ocr_conf, None
    if not is_plausible_scale(value, unit, bar["length_px"]):
        log.debug("scale bar: %s %s over %.1f px is implausible", value, unit, bar["length_px"])
        return bar, text, text_box, ocr_conf, None
    return bar, text, text_box, ocr_conf, (value, unit)


def _text_glyphs(gray: np.ndarray, box: tuple[int, int, int, int],
                 polarity: str) -> tuple[np.ndarray, list[tuple[int, tuple[slice, slice]]]]:
    """Labelled ink of a text box and its glyphs, left to right.

    ``polarity`` ``"light"`` or ``"dark"``: the text is brighter or darker than the ground (the
    crop's median); ink is what lies more than half-way from the ground to the extreme level.
    Returns ``(labels, glyphs)``: ``labels`` int (h, w) over the box, ``glyphs`` ``(index, slice)``
    of every blob at least 2 px high.
    """
    r0, c0, r1, c1 = box
    crop = gray[max(0, r0):r1, max(0, c0):c1].astype(float)
    if crop.size == 0:
        return np.zeros((0, 0), dtype=np.int32), []
    ground = float(np.median(crop))
    if polarity == "light":
        ink = crop >= ground + max(GLYPH_CONTRAST / 2, (crop.max() - ground) / 2)
    else:
        ink = crop <= ground - max(GLYPH_CONTRAST / 2, (ground - crop.min()) / 2)
    labels, _ = ndimage.label(ink)
    glyphs = [(index, sl) for index, sl in enumerate(ndimage.find_objects(labels), start=1)
              if sl is not None and sl[0].stop - sl[0].start >= 2]
    glyphs.sort(key=lambda g: g[1][1].start)
    return labels, glyphs


def _repair_digits(gray: np.ndarray, box: tuple[int, int, int, int], text: str, value: float,
                   bar_polarity: str | None = None) -> float:
    """Put back what OCR loses in the number of a label, judged from the glyph shapes.

    - a dropped decimal point: ``1.0 µm`` read ``10 m``; a dot is a small blob on the digits'
      baseline between two digits;
    - ``0`` read as ``8`` (``208 nm``, a blurred serif 0): a digit glyph with one hole is no 8.

    Changes nothing unless every digit of the OCR number is matched by one isolated digit glyph
    (tried with light and with dark text, the bar's polarity first: labels are mostly drawn like
    their bar, and the gaps between bold dark digits can pass for light "digits" with a speck
    between them, ``20 nm`` -> 2.0).
    """
    match = _SCALE_RE.search(text)
    if match is None:
        return value
    number = match.group(1)
    digits_text = re.sub(r"\D", "", number)
    if len(digits_text) < 2 or ("." in number or "," in number) and "8" not in digits_text:
        return value
    for polarity in (("dark", "light") if bar_polarity == "dark" else ("light", "dark")):
        labels, glyphs = _text_glyphs(gray, box, polarity)
        digit_glyphs = _number_glyphs(glyphs)
        if len(digit_glyphs) != len(digits_text):
            continue
        repaired = list(digits_text)
        for k, (index, sl) in enumerate(digit_glyphs):
            if repaired[k] == "8" and _count_holes(labels[sl] == index) == 1:
                repaired[k] = "0"
        new_number = "".join(repaired)
        if "." in number or "," in number:
            new_value = _number_with_point(number, new_number)
        else:
            cap_h = float(np.median([sl[0].stop - sl[0].start for _, sl in digit_glyphs]))
            baseline = float(np.median([sl[0].stop for _, sl in digit_glyphs]))
            # in small text a speck of the ground is as big as a point: no point put back
            for k in range(len(digit_glyphs) - 1 if cap_h >= MIN_POINT_CAP_PX else 0):
                left, right = digit_glyphs[k][1], digit_glyphs[k + 1][1]
                if any(left[1].stop <= sl[1].start and sl[1].stop <= right[1].start
                       and sl[0].stop - sl[0].start <= 0.3 * cap_h
                       and sl[1].stop - sl[1].start <= 0.4 * cap_h
                       and abs(sl[0].stop - baseline) <= max(2.0, 0.12 * cap_h) for _, sl in glyphs):
                    pointed = new_number[:k + 1] + "." + new_number[k + 1:]
                    # labels read "1.0", "2.5", "0.25"; "10.0" or "2.00" (a speck under "100",
                    # "200") is no label
                    if _DECIMAL_LABEL_RE.fullmatch(pointed):
                        new_number = pointed
                    break
            new_value = float(new_number)
        if new_value != value:
            log.debug("scale bar: number %r read from the glyph shapes as %s", number, new_value)
        return new_value
    return value


MIN_POINT_CAP_PX = 12  # digit height below which a dropped decimal point is not looked for
_DECIMAL_LABEL_RE = re.compile(r"\d\.\d|0\.\d\d")  # numbers a dropped decimal point is put back in


def _number_glyphs(glyphs: list[tuple[int, tuple[slice, slice]]]) -> list[tuple[int, tuple[slice, slice]]]:
    """The leading run of digit glyphs: cap-height blobs sharing the top row, up to the first letter."""
    if not glyphs:
        return []
    heights = sorted((sl[0].stop - sl[0].start for _, sl in glyphs), reverse=True)
    ref_h = float(np.median(heights[:3]))
    if ref_h < 6:
        return []
    top = min(sl[0].start for _, sl in glyphs if sl[0].stop - sl[0].start >= 0.6 * ref_h)
    digits = []
    for index, sl in glyphs:
        h = sl[0].stop - sl[0].start
        if abs(sl[0].start - top) <= max(2, 0.12 * ref_h) and 0.7 * ref_h <= h <= 1.3 * ref_h:
            digits.append((index, sl))
        elif digits and h >= 0.4 * ref_h:
            break  # the first letter (n, m, µ start at the x-height) ends the number
    return digits


def _number_with_point(number: str, digits: str) -> float:
    """``number`` (with its decimal point or comma) with its digits replaced by ``digits``."""
    out, i = [], 0
    for ch in number:
        if ch.isdigit():
            out.append(digits[i])
            i += 1
        else:
            out.append(".")
    return float("".join(out))


def _count_holes(glyph: np.ndarray) -> int:
    """Enclosed background regions (holes) of one glyph mask: 0 has 1, 8 has 2, 1 has 0."""
    background, n = ndimage.label(~np.pad(glyph, 1))
    return n - 1


def _join_broken_glyphs(boxes: list[tuple[slice, slice]]) -> list[tuple[slice, slice]]:
    """Join the pieces of one character: boxes sharing at least half their columns that are
    stacked and touching (a blurred ``2`` binarised into its upper and lower strokes) or span the
    same rows (a slashed ``0`` cut in two), so one character gives one box. Other boxes that share
    columns (an edge reaching over a letter) stay apart."""
    boxes = list(boxes)
    joined = True
    while joined:
        joined = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                (ra, ca), (rb, cb) = boxes[i], boxes[j]
                overlap = min(ca.stop, cb.stop) - max(ca.start, cb.start)
                narrow = min(ca.stop - ca.start, cb.stop - cb.start)
                gap = max(ra.start, rb.start) - min(ra.stop, rb.stop)
                stacked = -2 <= gap <= 1
                halves = abs(ra.start - rb.start) <= 2 and abs(ra.stop - rb.stop) <= 2
                if overlap >= 0.5 * narrow and (stacked or halves):
                    boxes[i] = (slice(min(ra.start, rb.start), max(ra.stop, rb.stop)),
                                slice(min(ca.start, cb.start), max(ca.stop, cb.stop)))
                    del boxes[j]
                    joined = True
                    break
            if joined:
                break
    return boxes


def _digit_count(text: str) -> int | None:
    """Digits of the first number in ``text`` (``"1.0m"`` -> 2, ``"200 nm"`` -> 3), or None."""
    match = re.search(_NUMBER, text)
    return sum(ch.isdigit() for ch in match.group(0)) if match else None


def _unit_has_descender(gray: np.ndarray, box: tuple[int, int, int, int],
                        bar_polarity: str, n_digits: int | None = None) -> bool | None:
    """True when the glyph right of the number reaches clearly below the digits' baseline (µ).

    False when the unit's first letter sits on the baseline (``nm``); None when the letters
    cannot be isolated (touching glyphs, tiny text) or, given ``n_digits`` (the OCR's), when a
    different number of digit glyphs is found (text merged with the texture behind it).
    """
    return _descends(_unit_glyphs(gray, box, n_digits))


def _descends(found: tuple | None) -> bool | None:
    """:func:`_unit_has_descender` of :func:`_unit_glyphs`' result."""
    if found is None:
        return None
    _, unit, cap_h, baseline, _ = found
    return unit[0][0].stop >= baseline + max(2.0, 0.15 * cap_h)


def _letter_follows_number(found: tuple) -> bool:
    """True when no glyph lies between the number and the first unit letter of
    :func:`_unit_glyphs`' result ``found``: no ink over 0.3 cap heights of rows (specks are
    less) from the digits' top to 0.2 below their baseline. A letter the search left out would be
    there: a µ whose tail touches the bar or a particle, the first letter then found being the
    ``m``."""
    ink, unit, cap_h, baseline, number_end = found
    gap = ink[max(0, int(baseline - cap_h)):int(baseline + 0.2 * cap_h), number_end:unit[0][1].start]
    return int(gap.any(axis=1).sum()) < 0.3 * cap_h


N_MAX_WIDTH = 1.3  # width / height of an "n" at most (an "m" is 1.45 and more)


def _is_n(found: tuple | None) -> bool:
    """True when the unit's first glyph (:func:`_unit_glyphs`) is a whole ``n``: no descender,
    no wider than ``N_MAX_WIDTH`` times its height nor narrower than half of it (a stem of a
    broken letter), right after the number (:func:`_letter_follows_number`), with a row in its
    top third joined across most of its width (the arch) and two legs apart in a row of its
    lower half. A ``u`` or a µ whose tail was lost is the other way up:
    its arms stand apart at the top."""
    if found is None or _descends(found):
        return False
    ink, unit, cap_h, baseline, number_end = found
    first = unit[0]
    glyph = ink[first]
    h, w = glyph.shape
    if not 0.5 * h <= w <= N_MAX_WIDTH * h or not _letter_follows_number(found):
        return False

    def widest_gap(row):  # background columns between the row's ink runs, at most
        runs = _runs(row)
        return max((b[0] - a[1] for a, b in zip(runs, runs[1:])), default=0), runs

    # the arch: ink across most of the width, broken by no gap wider than a pixel or a tenth of
    # it (the threshold may leave one between stem and arch; a serif u's arms stand 0.17 apart);
    # the legs: two runs a quarter of the width apart
    arch = any(runs and runs[-1][1] - runs[0][0] >= 0.6 * w and gap <= max(1.0, 0.1 * w)
               for gap, runs in map(widest_gap, glyph[:max(1, h // 3)]))
    legs = any(len(runs) == 2 and gap >= 0.25 * w for gap, runs in map(widest_gap, glyph[h // 2:]))
    return arch and legs


def _first_letter(found: tuple | None) -> str | None:
    """The first letter of the unit as its shape says: ``"µ"``, ``"p"``, ``"n"`` or ``"m"``; None
    when :func:`_unit_glyphs` found no letters (``found`` None) or the shape is unclear.

    Tesseract reads a micro sign as ``p`` and an ``n`` as ``m``, so ``pm`` and ``mm`` are taken
    for ``µm`` and ``nm`` (:func:`_fix_ocr`); the glyphs tell them apart where the text is big
    enough: ``µ`` and ``p`` reach below the baseline and only ``p`` closes a bowl (a hole); an
    ``m`` is as wide as the ``m`` after it, an ``n`` at most three quarters of it.
    """
    if found is None:
        return None
    ink, unit, *_ = found
    first = unit[0]
    if _descends(found):
        return "p" if _count_holes(ink[first]) >= 1 else "µ"
    if len(unit) < 2:
        return None
    ratio = (first[1].stop - first[1].start) / max(1, unit[1][1].stop - unit[1][1].start)
    return "m" if ratio >= 0.88 else "n" if ratio <= 0.78 else None


def _metre_label(gray: np.ndarray, text: str, text_box: tuple[int, int, int, int] | None) -> str | None:
    """``"m"`` or ``"cm"`` when an OCR text of a number and a bare m (``"5m"``, ``"1m"``) stands
    for metres or centimetres by the glyphs of its box (:func:`_metre_unit`); None otherwise.

    Photographs in a figure carry such labels; tesseract reads "5 m" and "1 cm" as it reads a
    "5 µm" or "5 nm" whose first letter it dropped.
    """
    if text_box is None or not _BARE_M_RE.search(text):
        return None
    # a one-digit label in metres has two glyphs only
    return _metre_unit(_unit_glyphs(gray, text_box, _digit_count(_fix_ocr(text)), min_shapes=2))


def _metre_label_of(gray: np.ndarray, readings: list[tuple]) -> tuple[str, str] | None:
    """``(text, "m" or "cm")`` of the first reading whose label :func:`_metre_label` finds in
    metres or centimetres, or None."""
    for _, text, text_box, *_ in readings:
        unit = _metre_label(gray, text, text_box)
        if unit is not None:
            return text, unit
    return None


M_WIDTH_RANGE = (1.35, 2.2)  # width / x-height of an "m" (n, c, µ: 0.7-1.26; "nm": 2.5 and more)


def _metre_unit(found: tuple | None) -> str | None:
    """``"m"`` or ``"cm"`` when the unit's glyphs (:func:`_unit_glyphs`) spell metres or
    centimetres; None when they spell anything else or are unclear.

    Tesseract reads "5 m" and "1 cm" as "5m" and "1m", as it reads a "5 µm" or "5 nm" whose first
    letter it dropped. The glyphs tell them apart by the stems their middle rows cross (pieces of
    a thin serif letter count as well as whole ones): an ``m`` has 3, ``nm`` and ``um`` 5, ``cm``
    4. Metres are 3 stems as wide as an ``m`` (``M_WIDTH_RANGE``) with no ink between them and
    the number (where a lost µ or n would be), centimetres 4 whose first glyph is a ``c``: as
    wide as a letter and open on the right (no ink in the right third of its middle rows, where
    ``n``, ``u`` and ``µ`` have a stem). A descender (µ) rules both out.
    """
    if found is None or _descends(found):
        return None
    ink, unit, cap_h, baseline, number_end = found
    if not _letter_follows_number(found):
        return None
    top = min(sl[0].start for sl in unit)
    x_height = baseline - top
    c0, c1 = unit[0][1].start, max(sl[1].stop for sl in unit)
    middle = range(int(top + 0.4 * x_height), int(np.ceil(top + 0.6 * x_height)))
    stems = {len(_runs(ink[row, c0:c1])) for row in middle}
    if stems == {3} and M_WIDTH_RANGE[0] <= (c1 - c0) / x_height <= M_WIDTH_RANGE[1]:
        return "m"
    first = ink[unit[0]]
    h, w = first.shape
    if (stems == {4} and w >= 0.5 * x_height
            and not first[int(0.35 * h):int(np.ceil(0.65 * h)), w - w // 3:].any()):
        return "cm"
    return None


def _unit_glyphs(gray: np.ndarray, box: tuple[int, int, int, int], n_digits: int | None = None,
                 min_shapes: int = 3) -> tuple | None:
    """``(ink, unit glyphs, cap height, baseline, number end)`` of a label box: the ink mask of the
    crop, the slices of the letters right of the number that start at the x-height (left to
    right), the digits' height, their baseline row and the column after the last digit (crop
    coordinates); None as :func:`_unit_has_descender` says, or when the box holds fewer than
    ``min_shapes`` glyphs (a number and a unit of two letters, unless told otherwise)."""
    r0, c0, r1, c1 = box
    height, width = gray.shape
    pad = max(2, (r1 - r0) // 3)
    crop = gray[max(0, r0 - 1):min(height, r1 + pad), max(0, c0):min(width, c1)].astype(float)
    if crop.size == 0:
        return None
    ground = float(np.median(crop))
    # text has the polarity that stands out most from the ground in the crop
    light = crop >= ground + max(GLYPH_CONTRAST / 2, (crop.max() - ground) / 2)
    dark = crop <= ground - max(GLYPH_CONTRAST / 2, (ground - crop.min()) / 2)
    ink = light if (crop.max() - ground) >= (ground - crop.min()) else dark
    labels, _ = ndimage.label(ink)
    # specks (a particle's noisy rim crossing the ink level) are no pieces of a glyph: joined
    # to a letter below them, they would raise its top to the digits' and make it a digit
    pieces = [sl for sl in ndimage.find_objects(labels)
              if sl is not None and max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= 3]
    glyphs = _join_broken_glyphs(pieces)
    glyphs = [sl for sl in glyphs if sl[0].stop - sl[0].start >= 3]
    glyphs.sort(key=lambda sl: sl[1].start)

    def height(sl):
        return sl[0].stop - sl[0].start

    # no bars or rules (flat), so the number is the leftmost glyph of text height
    shapes = [sl for sl in glyphs if sl[1].stop - sl[1].start <= 3 * height(sl)]
    if len(shapes) < min_shapes:
        return None
    tall = 0.5 * float(np.median([height(sl) for sl in shapes]))
    first = next(i for i, sl in enumerate(shapes) if height(sl) >= tall)
    # the digits: the glyphs level with the first (a decimal point or speck between is skipped);
    # the first glyph of text height that is not level starts the unit. Particles or edges
    # inside the OCR box (taller, elsewhere) do not set the cap height.
    digits = [shapes[first]]
    cap0, top = height(shapes[first]), shapes[first][0].start
    for sl in shapes[first + 1:]:
        if height(sl) < 0.5 * cap0:
            continue
        if abs(sl[0].start - top) <= max(2, 0.12 * cap0) and abs(height(sl) - cap0) <= 0.25 * cap0:
            digits.append(sl)
            continue
        break
    if n_digits is not None and len(digits) != n_digits:
        return None
    cap_h = float(np.median([height(sl) for sl in digits]))
    baseline = float(np.median([sl[0].stop for sl in digits]))
    if cap_h < 5:
        return None
    # n, m and µ start at the x-height (below the digits' top by more than the digits' own
    # spread; DejaVu Sans' x-height is 0.75 of its cap height, and round tops overshoot it);
    # µ, the unit's first letter, reaches below the baseline
    letters = [sl for sl in shapes if digits[-1][1].stop <= sl[1].start
               and top + max(2, 0.12 * cap0) < sl[0].start < baseline - 0.3 * cap_h
               and height(sl) >= 0.3 * cap_h]
    # the first letter within two digit heights of the number, then each one that follows it
    # closely (a wide "mm" puts its second letter beyond that reach)
    if not letters or letters[0][1].start > digits[-1][1].stop + 2 * cap_h:
        return None  # the unit letters were not isolated: undecided
    unit_glyphs = letters[:1]
    for sl in letters[1:]:
        if sl[1].start - unit_glyphs[-1][1].stop > 0.5 * cap_h:
            break
        unit_glyphs.append(sl)
    return ink, unit_glyphs, cap_h, baseline, digits[-1][1].stop


def find_bar_candidates(image: np.ndarray) -> list[dict]:
    """Horizontal bar-shaped components, best first.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)

    Returns
    -------
    list of dict
        Keys ``bbox`` ``(row0, col0, row1, col1)`` of the bar rows (ticks excluded),
        ``length_px`` (float, sub-pixel), ``thickness_px``, ``polarity`` (``"light"``,
        ``"dark"``, ``"colour"``), ``value`` (mean grey level), ``score`` (0-1),
        ``component`` (bbox of the whole component, ticks included).
    """
    arr = as_uint8(image)
    gray = to_gray(arr)
    height, width = gray.shape
    masks = [("light", gray >= BRIGHT_MIN), ("dark", gray <= DARK_MAX)]
    if arr.ndim == 3:
        chroma = _chroma(arr)
        # a coloured bar is measured on the chroma image: its grey level may be the ground's
        # (a yellow bar on a light image), its chroma stands out on any grey ground
        masks.append(("colour", chroma >= COLOUR_MIN_CHROMA, chroma))
    # near-saturated levels: a pure white (black) bar over bright (dark) particles or texture
    # is glued to them at the levels above, not at these
    masks += [("light", gray >= SATURATED_LIGHT_MIN), ("dark", gray <= SATURATED_DARK_MAX)]
    return _candidates_from_masks(gray, masks)


def find_faint_bar_candidates(image: np.ndarray) -> list[dict]:
    """Bars that stand out from their local ground but reach no fixed level, best first.

    A grey line on white (a blurred 1-px bar: 121 on 255) or a dark-grey bar on grey texture
    (78 on 160) is neither ``<= DARK_MAX`` nor ``>= BRIGHT_MIN``. Here a pixel is bar when it
    differs by ``FAINT_BAR_CONTRAST`` from the grey closing (dark) or opening (light) of its
    column over ``FAINT_BAR_WINDOW_PX`` rows, i.e. from the ground above and below it.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)

    Returns
    -------
    list of dict
        As :func:`find_bar_candidates`.
    """
    gray = to_gray(as_uint8(image)).astype(np.int16)
    size = (FAINT_BAR_WINDOW_PX, 1)
    masks = [("dark", ndimage.grey_closing(gray, size=size) - gray >= FAINT_BAR_CONTRAST),
             ("light", gray - ndimage.grey_opening(gray, size=size) >= FAINT_BAR_CONTRAST)]
    # a bar over darker (lighter) texture has short gaps where its ground comes near it
    gap = np.ones((1, FAINT_BAR_GAP_PX + 2), dtype=bool)
    masks = [(polarity, ndimage.binary_closing(mask, structure=gap)) for polarity, mask in masks]
    return _candidates_from_masks(gray.astype(np.uint8), masks)


def _candidates_from_masks(gray: np.ndarray, masks: list[tuple]) -> list[dict]:
    """Bar candidates among the components of ``(polarity, bool mask (H, W))`` pairs, best first.

    A third item, a uint8 (H, W) image, is what that mask's bars are measured on (contrast,
    sub-pixel ends, ``value``) instead of ``gray``.
    """
    height, width = gray.shape
    min_len = max(MIN_BAR_PX, int(0.02 * width))
    max_len = MAX_BAR_FRACTION * width
    candidates = []
    for polarity, mask, *measured_on in masks:
        image = measured_on[0] if measured_on else gray
        if not mask.any():
            continue
        labels, _ = ndimage.label(mask)
        for index, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if w < min_len or w > max_len or h > max(0.6 * w, 6):
                continue
            bar = _measure_bar(image, labels[sl] == index, sl, polarity)
            if bar is not None and not any(
                    other["polarity"] == polarity
                    and _same_bar(other, bar)
                    for other in candidates):
                candidates.append(bar)
    # a piece of a bar (a JPEG block edge cut it at one level) is not the bar: the whole one,
    # found at another level on the same rows, wins when it scores almost as well
    candidates = [bar for bar in candidates if not any(_longer_same_bar(other, bar) for other in candidates)]
    candidates.sort(key=lambda b: -b["score"])
    return candidates


def _longer_same_bar(other: dict, bar: dict) -> bool:
    """``other`` is ``bar`` made longer: same polarity and the same rows (a label glyph touching
    the bar makes its component a row taller or deeper: that is no longer bar), its columns
    spanning ``bar``'s and at least 3 px more, and a score at least 0.95 of ``bar``'s."""
    (r0, c0, r1, c1), (o_r0, o_c0, o_r1, o_c1) = bar["bbox"], other["bbox"]
    return (other is not bar and other["polarity"] == bar["polarity"]
            and (o_r0, o_r1) == (r0, r1) and o_c0 <= c0 + 1 and o_c1 >= c1 - 1
            and other["length_px"] >= bar["length_px"] + 3 and other["score"] >= 0.95 * bar["score"])


def _measure_bar(gray: np.ndarray, comp: np.ndarray, sl: tuple[slice, slice],
                 polarity: str) -> dict | None:
    """Check that one component is a horizontal bar; measure it (None if it is not a bar)."""
    height, width = gray.shape
    h, w = comp.shape
    counts = comp.sum(axis=1)
    full = counts >= 0.9 * w
    if not full.any():
        return None
    # largest run of full rows = the bar body
    runs = _runs(full)
    start, stop = max(runs, key=lambda r: r[1] - r[0])
    thickness = stop - start
    if thickness * 3 > w or thickness > 40:
        log.debug("component at %s: too thick (%d px for %d px)", sl, thickness, w)
        return None
    # rows outside the body may hold end ticks only: little fill away from the ends
    inner = comp[:, int(0.15 * w):max(int(0.85 * w), int(0.15 * w) + 1)]
    other = np.ones(h, dtype=bool)
    # the rows next to the body may be anti-aliased: two on each side of a blurred thick bar,
    # or of a 3-row bar whose half-level edge row was doubled by resampling (a figure re-rendered
    # from a PDF at ~0.8x)
    blur_rows = 2 if thickness >= 3 else 1
    other[max(0, start - blur_rows):stop + blur_rows] = False
    if other.any() and inner[other].mean() > 0.25:
        log.debug("component at %s: filled outside the bar rows", sl)
        return None
    r0, r1 = sl[0].start + start, sl[0].start + stop
    c0, c1 = sl[1].start, sl[1].stop
    # ragged ends (a blob, not a drawn rectangle)
    body = comp[start + 1:stop - 1] if thickness >= 3 else comp[start:stop]
    lefts = body.argmax(axis=1)
    rights = w - 1 - body[:, ::-1].argmax(axis=1)
    tolerance = max(2, thickness // 4)
    if np.ptp(lefts) > tolerance or np.ptp(rights) > tolerance:
        log.debug("component at %s: ragged ends", sl)
        return None
    # contrast with the rows just above and below, between the ends
    inner_cols = slice(c0 + max(1, w // 8), c1 - max(1, w // 8))
    bar_value = float(gray[r0:r1, inner_cols].mean())

    def edge_contrast(n_rows: int, any_row: bool) -> tuple[float, list[float]] | None:
        """(edge fraction, per-side contrasted share) from ``n_rows`` rows above and below the
        bar: the share of pixels that differ from the bar enough, or with ``any_row`` the share
        of columns where one of the rows does."""
        sides = [s for s in (gray[max(0, r0 - n_rows):r0, inner_cols].astype(float),
                             gray[r1:min(height, r1 + n_rows), inner_cols].astype(float)) if s.size]
        if not sides:
            return None
        differs = [np.abs(s - bar_value) >= MIN_CONTRAST for s in sides]
        contrasts = [float(np.mean(d.any(axis=0) if any_row else d)) for d in differs]
        # text touching one side of the bar lowers that side's contrast
        return (float(np.mean(contrasts)) if len(sides) == 2 else contrasts[0] * 0.8), contrasts

    measured = edge_contrast(2, any_row=False)
    if measured is None:
        return None
    edge_fraction, side_contrasts = measured
    if (edge_fraction < 0.6 or min(side_contrasts) < 0.35) and thickness >= 4:
        # a blurred thick bar's edge rows sit half-way between bar and ground: its side counts
        # as contrasted in a column where one of its EDGE_ROWS rows differs enough (scored lower)
        edge_fraction, side_contrasts = edge_contrast(EDGE_ROWS, any_row=True)
        edge_fraction *= BLURRED_EDGE_PENALTY
    if edge_fraction < 0.6 or min(side_contrasts) < 0.35:
        log.debug("component at %s: low contrast above/below (%.2f)", sl, edge_fraction)
        return None
    uniformity = 1.0 - min(1.0, float(gray[r0:r1, inner_cols].std()) / 40.0)
    length_px = _subpixel_length(gray, r0, r1, c0, c1, bar_value)
    if polarity == "light":
        length_px = _outlined_length(gray, r0, r1, c0, c1, bar_value) or length_px
    aspect = w / thickness
    shape_score = min(1.0, aspect / 8.0) * (0.6 if thickness == 1 else 1.0)
    position_score = 0.8 + 0.2 * (r0 / height)  # bars sit low more often than high
    score = edge_fraction * uniformity * shape_score * position_score
    return {
        "bbox": (int(r0), int(c0), int(r1), int(c1)),
        "component": (int(sl[0].start), int(c0), int(sl[0].stop), int(c1)),
        "length_px": float(length_px),
        "thickness_px": int(thickness),
        "polarity": polarity,
        "value": bar_value,
        "score": float(score),
    }


SHOULDER_PX = 3  # columns past a bar end's near ground looked at for a farther ground
SHOULDER_SHARE = 0.4  # the near ground is a shoulder when this near the bar, as a share of the
# farther ground's contrast


def _subpixel_length(gray: np.ndarray, r0: int, r1: int, c0: int, c1: int,
                     bar_value: float) -> float:
    """Distance between the half-contrast crossings at both bar ends, px."""
    width = gray.shape[1]
    rows = slice(r0 + 1, r1 - 1) if r1 - r0 >= 3 else slice(r0, r1)
    # a blurred thick bar fades over several columns, and its saturated core (the component)
    # is shorter than the drawn bar: look farther out for the ground, walk farther, allow more
    blur_px = BLUR_END_PX if r1 - r0 >= 4 else 0
    lo = max(0, c0 - 3 - blur_px - SHOULDER_PX)
    hi = min(width, c1 + 3 + blur_px + SHOULDER_PX)
    profile = gray[rows, lo:hi].astype(float).mean(axis=0)

    def crossing(inside: int, outside: int) -> float | None:
        # inside/outside are absolute column indices of neighbouring pixels
        if not (lo <= outside < hi):
            return None
        step = 1 if outside > inside else -1
        far = int(np.clip(outside + (2 + blur_px) * step, lo, hi - 1))  # past anti-aliased pixels
        b, g = bar_value, profile[far - lo]
        if abs(b - g) < MIN_CONTRAST / 2:
            return None
        walk = 5 + blur_px
        # a "shoulder": the end fades through a few columns much nearer the bar's level than the
        # ground's beyond them (a dark bar ending in dark grey, ed3547f3da); the bar ends where
        # the profile crosses half-way to that ground
        beyond = [profile[x - lo] for x in range(far + step, far + (SHOULDER_PX + 1) * step, step)
                  if lo <= x < hi]
        if beyond:
            g_beyond = float(np.median(beyond))
            if abs(g - b) <= SHOULDER_SHARE * abs(g_beyond - b):
                g, walk = g_beyond, walk + SHOULDER_PX
        mid = (b + g) / 2.0
        # walk outward from two pixels inside the last bar pixel (a low-contrast bar's component
        # takes in its anti-aliased end columns) until the profile crosses mid
        x = inside - 2 * step
        for _ in range(walk):
            v0, v1 = profile[x - lo], profile[x + step - lo] if lo <= x + step < hi else g
            if (v0 - mid) * (v1 - mid) <= 0 and v0 != v1:
                return x + step * (v0 - mid) / (v0 - v1) + 0.0
            x += step
            if not (lo <= x + step < hi):
                break
        return None

    left = crossing(c0, c0 - 1)
    right = crossing(c1 - 1, c1)
    # a crossing at x between pixel centres; a crisp edge gives c0-0.5 and c1-0.5
    left_edge = c0 - 0.5 if left is None else left
    right_edge = c1 - 0.5 if right is None else right
    length = right_edge - left_edge
    if abs(length - (c1 - c0)) > MAX_END_SHIFT_PX + 2 * blur_px:
        return float(c1 - c0)
    return float(length)


OUTLINE_MAX = DARK_MAX + 30  # grey level an outline round a light bar reaches at most
OUTLINE_REACH_PX = 6  # columns past a bar end searched for its outline
OUTLINE_MAX_PX = 4.0  # widest stroke taken for an outline (a label box's margin is wider)


def _outlined_length(gray: np.ndarray, r0: int, r1: int, c0: int, c1: int,
                     bar_value: float) -> float | None:
    """Length of a light bar drawn with a dark outline (a white rectangle with a black stroke)
    between the middles of the stroke at its two ends, as drawing programs place a rectangle's
    edges; None when there is no outline.

    The half-level ends of :func:`_subpixel_length` are the body's inner edges, short by the
    stroke width (``b3e7900e39``: 96 px body, 101 px outer edge). A sharpening halo
    (a grey undershoot beside a bar) is not an outline: the frame must be dark (``OUTLINE_MAX``),
    far from both body and ground (2 ``MIN_CONTRAST``), above, below and at both ends.
    """
    height, width = gray.shape
    reach = OUTLINE_REACH_PX + 4
    if r1 - r0 < 3 or r0 < 10 or r1 + 10 > height or c0 < reach or c1 + reach > width:
        return None
    # a window round the bar, in its own coordinates: bar rows 10..10 + (r1 - r0), columns
    # reach..reach + (c1 - c0)
    g = gray[r0 - 10:r1 + 10, c0 - reach:c1 + reach].astype(float)
    top, bottom, left, right = 10, 10 + r1 - r0, reach, reach + c1 - c0
    inner = slice(left + (c1 - c0) // 8, right - (c1 - c0) // 8)
    frames = [g[top - 4:top, inner].min(axis=0), g[bottom:bottom + 4, inner].min(axis=0)]
    frame = float(np.median(np.concatenate(frames)))
    # ground right past the stroke on both sides: a filled label box round the bar is no outline
    grounds = [float(np.median(g[:5, inner])), float(np.median(g[-5:, inner]))]
    if (frame > OUTLINE_MAX or min(grounds) - frame < 2 * MIN_CONTRAST
            or bar_value - frame < 2 * MIN_CONTRAST
            or min(float(np.mean(f <= frame + MIN_CONTRAST)) for f in frames) < 0.8):
        return None
    rows = slice(top + 1, bottom - 1)
    ends = []
    for edge, step in ((left, -1), (right - 1, 1)):
        profile = g[rows, [edge + step * k for k in range(reach)]].mean(axis=0)
        dip = int(np.argmin(profile[:OUTLINE_REACH_PX]))
        low, end_ground = float(profile[dip]), float(profile[-2:].mean())
        if low > frame + MIN_CONTRAST or end_ground - low < 2 * MIN_CONTRAST:
            return None
        inner_mid, outer_mid = (bar_value + low) / 2.0, (low + end_ground) / 2.0
        inside = [k for k in range(dip) if profile[k] >= inner_mid]
        outside = [k for k in range(dip + 1, reach) if profile[k] >= outer_mid]
        if not inside or not outside:
            return None
        a, b = inside[-1], outside[0]  # last body column, first ground column
        x_in = a + (profile[a] - inner_mid) / (profile[a] - profile[a + 1])
        x_out = b - 1 + (outer_mid - profile[b - 1]) / (profile[b] - profile[b - 1])
        if x_out - x_in > OUTLINE_MAX_PX:  # a box's margin, not a stroke
            return None
        ends.append(edge + step * (x_in + x_out) / 2.0)  # the stroke's middle
    return float(ends[1] - ends[0])


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every run of True in a 1-D bool array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    diff = np.diff(padded)
    return list(zip(np.flatnonzero(diff == 1), np.flatnonzero(diff == -1)))


def _read_text_near(gray: np.ndarray, arr: np.ndarray, bar: dict,
                    ocr_budget: list[int] | None = None,
                    min_reach: int = TEXT_REACH_PX) -> tuple[str, tuple | None, float]:
    """OCR the label next to a bar: ``(text, text_bbox, confidence 0-100)``.

    ``ocr_budget`` is a one-item list of the tesseract calls still allowed for the image; it is
    decremented here, and nothing more is OCRed once it reaches 0. ``min_reach``: see
    :func:`_text_line_boxes`.
    """
    if ocr_budget is None:
        ocr_budget = [MAX_OCR_CALLS]
    boxes = _text_line_boxes(gray, arr, bar, min_reach)
    best = ("", None, 0.0)
    odd = []  # readings whose value is not a scale-bar value ("208 nm" for 200 nm): last resort
    for *box, text_polarity in boxes[:3]:
        box = tuple(box)
        # plain bands (no glyphs found) are tried as grey, then binarised both ways
        modes = [None, "light", "dark"] if text_polarity is None else [text_polarity, None]
        repaired = []
        extended = False
        for mode in modes:
            if ocr_budget[0] <= 0:
                return odd[0] if odd else best
            ocr_budget[0] -= 1
            text, conf = _ocr_label(gray, arr, box, mode)
            cleaned = (_label_crop(gray, box, mode, clean=True)
                       if (mode in ("light", "dark") and _GARBLED_LABEL_RE.search(text)
                           and _parse_label(text) is None and not _UNIT_ONLY_RE.fullmatch(text)
                           and not _NUMBER_ONLY_RE.fullmatch(text) and ocr_budget[0] > 0)
                       else None)
            if cleaned is not None:
                # a label garbled (a digit or an "m" left), not a part of one: once more
                # without specks and bar rims
                ocr_budget[0] -= 1
                clean_text, clean_conf = _ocr_crop(cleaned, box[2] - box[0])
                if _parse_label(clean_text) is not None:
                    text, conf = clean_text, clean_conf
            if text and _UNIT_ONLY_RE.fullmatch(text) and ocr_budget[0] > 0:
                # the unit alone: the number touches a particle and was left out of the line box
                ocr_budget[0] -= 1
                wider = _widen_box(box, gray.shape)
                wide_text, wide_conf = _ocr_label(gray, arr, wider, mode)
                if _parse_label(wide_text) is not None:
                    box, text, conf = wider, wide_text, wide_conf
            elif (text and text_polarity is not None and not extended
                  and _NUMBER_ONLY_RE.fullmatch(text) and ocr_budget[0] > 0):
                # the number alone in a line of glyphs (not a plain band over a short bar, where
                # a lone digit is any label's): the unit stands a wide word gap away ("100   nm")
                # or its letters touch and were no line of their own; OCR the line to the right
                ocr_budget[0] -= 1
                extended = True  # once a box: the calls left may be needed by stacked lines
                longer = _extend_box_right(box, gray.shape)
                long_text, long_conf = _ocr_label(gray, arr, longer, mode)
                if _parse_label(long_text) is not None:
                    box, text, conf = longer, long_text, long_conf
            parsed = _parse_label(text)
            if parsed is not None and not _is_round_value(parsed[0]):
                odd.append((text, box, conf))  # another binarisation may read the digits right
            elif parsed is not None and parse_scale_text(text) == parsed:
                return text, box, conf  # read cleanly, no repair needed ("2 pm" is a repair)
            elif parsed is not None:
                repaired.append((conf, text))
            elif text and conf > best[2]:
                best = (text, box, conf)
        if repaired:  # every reading needed repairs: the most confident one
            conf, text = max(repaired)
            return text, box, conf
    if odd:
        return odd[0]
    # a label split over two lines ("100" above "nm"): OCR pairs of stacked line boxes together
    for box in _stacked_pairs([tuple(b) for b in boxes[:4]])[:MAX_STACKED_PAIRS]:
        *rect, text_polarity = box
        if ocr_budget[0] <= 0:
            return best
        ocr_budget[0] -= 1
        text, conf = _ocr_label(gray, arr, tuple(rect), text_polarity, n_lines=2)
        text = " ".join(text.split())
        if _parse_label(text) is not None:
            return text, tuple(rect), conf
    return best


_GARBLED_LABEL_RE = re.compile(r"[0-9m]")
_UNIT_ONLY_RE = re.compile(r"[^\w]*(?:nm|µm|um|pm|mm)[^\w]*", re.IGNORECASE)


_NUMBER_ONLY_RE = re.compile(r"\d+(?:[.,]\d+)?")
UNIT_REACH_LINES = 4.0  # line heights right of a lone number searched for its unit


def _extend_box_right(box: tuple[int, int, int, int],
                      shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A text-line box grown by ``UNIT_REACH_LINES`` line heights to the right (a unit left out)."""
    r0, c0, r1, c1 = box
    return r0, c0, r1, min(shape[1], c1 + int(UNIT_REACH_LINES * (r1 - r0)))


def _widen_box(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A text-line box grown by 3 line heights to the left and 1 to the right (missed digits)."""
    r0, c0, r1, c1 = box
    line_h = r1 - r0
    return r0, max(0, c0 - 3 * line_h), r1, min(shape[1], c1 + line_h)


def _stacked_pairs(boxes: list[tuple]) -> list[tuple]:
    """Union boxes of two text lines stacked one above the other, overlapping in columns."""
    pairs = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[4] != b[4]:
                continue
            top, bottom = (a, b) if a[0] <= b[0] else (b, a)
            line_h = max(top[2] - top[0], bottom[2] - bottom[0])
            gap = bottom[0] - top[2]
            overlap = min(top[3], bottom[3]) - max(top[1], bottom[1])
            if 0 <= gap <= line_h and overlap > 0:
                pairs.append((top[0], min(top[1], bottom[1]), bottom[2], max(top[3], bottom[3]), a[4]))
    return pairs


def _text_line_boxes(gray: np.ndarray, arr: np.ndarray, bar: dict,
                     min_reach: int = TEXT_REACH_PX) -> list[tuple[int, int, int, int]]:
    """Candidate text-line boxes around a bar, nearest and best aligned first; glyphs are looked
    for up to 0.7 bar lengths (at least ``min_reach`` px, at most 140) above and below it."""
    height, width = gray.shape
    r0, c0, r1, c1 = bar["bbox"]
    cr0, _, cr1, _ = bar["component"]
    length = c1 - c0
    reach_v = int(np.clip(0.7 * length, min_reach, 140))
    reach_h = int(np.clip(1.5 * length + 40, 60, 500))
    wr0, wr1 = max(0, cr0 - reach_v), min(height, cr1 + reach_v)
    wc0, wc1 = max(0, c0 - reach_h), min(width, c1 + reach_h)
    window = gray[wr0:wr1, wc0:wc1]
    light = window >= max(BRIGHT_MIN - 30, min(bar["value"], 255) - 60)
    dark = window <= DARK_MAX + 40
    # text of the other polarity (white label on a black box, say) must be near-pure
    if bar["polarity"] == "light":
        masks = [(light, 0.0, "light"), (window <= 50, 15.0, "dark")]
    elif bar["polarity"] == "dark":
        masks = [(dark, 0.0, "dark"), (window >= 215, 15.0, "light")]
    else:
        chroma = _chroma(arr[wr0:wr1, wc0:wc1])
        # coloured glyphs are told from the ground by their chroma, not their grey level
        masks = [(chroma >= COLOUR_MIN_CHROMA * 0.8, 0.0, "colour", chroma),
                 (dark, 10.0, "dark"), (light, 10.0, "light")]
    # masks relative to the local ground: grey text on grey ground (SEM data bars, dark text on
    # a mid-grey image) falls between the fixed levels above
    ground = float(np.median(window))
    masks += [(window >= ground + ADAPTIVE_GLYPH_CONTRAST, 5.0, "light"),
              (window <= ground - ADAPTIVE_GLYPH_CONTRAST, 5.0, "dark")]
    max_glyph_h = max(12, min(80, int(0.8 * length) + 10))
    lines = []
    for text_mask, penalty, text_polarity, *contrast_on in masks:
        contrast_image = contrast_on[0] if contrast_on else window
        text_mask = text_mask.copy()
        # remove the bar rows and the end ticks; text touching the bar body survives
        # (two rows each side: a bar drawn with a dark outline would glue the glyphs together)
        text_mask[max(0, r0 - wr0 - 2):r1 - wr0 + 2, max(0, c0 - wc0 - 2):c1 - wc0 + 2] = False
        tick_w = max(3, (c1 - c0) // 12)
        for tc0, tc1 in ((c0 - 1, c0 + tick_w), (c1 - tick_w, c1 + 1)):
            text_mask[max(0, cr0 - wr0 - 1):cr1 - wr0 + 1, max(0, tc0 - wc0):tc1 - wc0] = False
        labels, _ = ndimage.label(text_mask)
        glyphs = []
        for index, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            gh, gw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if not (5 <= gh <= max_glyph_h and gw <= MAX_GLYPH_RUN * gh and gw * gh >= 12):
                continue
            # a glyph stands out from the ground inside its box; texture speckles do not
            inside = labels[sl] == index
            if inside.all():
                continue
            patch = contrast_image[sl]
            if abs(float(patch[inside].mean()) - float(np.median(patch[~inside]))) < GLYPH_CONTRAST:
                continue
            if True:
                glyphs.append((sl[0].start + wr0, sl[1].start + wc0, sl[0].stop + wr0,
                               sl[1].stop + wc0))
        lines += [line + (penalty, text_polarity) for line in _group_lines(glyphs)]
    scored = []
    bar_mid_c = (c0 + c1) / 2
    for box in lines:
        lr0, lc0, lr1, lc1, n_glyphs, penalty, text_polarity = box
        if n_glyphs < 2:
            continue
        grow = (lr1 - lr0) // 2  # glyphs touching particles are missed; widen the line a bit
        box = (lr0, max(0, lc0 - grow), lr1, min(width, lc1 + grow), text_polarity)
        if lr1 <= cr0:
            v_gap = cr0 - lr1
        elif lr0 >= cr1:
            v_gap = lr0 - cr1
        else:
            v_gap = 0  # same rows: text left or right of the bar
        h_overlap = min(lc1, c1) - max(lc0, c0)
        if h_overlap > 0:
            h_gap = 0
        else:
            h_gap = max(lc0 - c1, c0 - lc1)
        line_h = lr1 - lr0
        if v_gap > 3 * line_h + 10 or h_gap > 2 * line_h + 10:
            continue
        centre_off = abs((lc0 + lc1) / 2 - bar_mid_c) / max(length, 1)
        scored.append((v_gap + h_gap + 10 * centre_off + penalty, box))
    scored.sort(key=lambda s: s[0])
    boxes = [b for _, b in scored]
    if not boxes:  # no glyphs found: plain bands above and below the bar
        band = int(np.clip(0.35 * length, 14, 60))
        pad = int(0.3 * length)
        # (a coloured bar's label is read from the chroma image: see _ocr_label)
        band_polarity = "colour" if bar["polarity"] == "colour" else None
        boxes = [
            (max(0, cr0 - band), max(0, c0 - pad), cr0, min(width, c1 + pad), band_polarity),
            (cr1, max(0, c0 - pad), min(height, cr1 + band), min(width, c1 + pad), band_polarity),
        ]
        boxes = [b for b in boxes if b[2] - b[0] >= 6]
    return boxes


def _group_lines(glyphs: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int, int]]:
    """Merge glyph boxes sharing rows and close in columns into text lines (+ glyph count)."""
    glyphs = sorted(glyphs, key=lambda g: g[1])
    lines: list[list[int]] = []
    for r0, c0, r1, c1 in glyphs:
        gh = r1 - r0
        for line in lines:
            lr0, lc0, lr1, lc1, _ = line
            lh = lr1 - lr0
            v_overlap = min(r1, lr1) - max(r0, lr0)
            if v_overlap >= 0.4 * min(gh, lh) and c0 - lc1 <= 1.2 * max(gh, lh) and max(gh, lh) <= 3 * min(gh, lh):
                line[0], line[1], line[2], line[3] = min(lr0, r0), min(lc0, c0), max(lr1, r1), max(lc1, c1)
                line[4] += 1
                break
        else:
            lines.append([r0, c0, r1, c1, 1])
    return [tuple(line) for line in lines]


def _ocr_label(gray: np.ndarray, arr: np.ndarray, box: tuple[int, int, int, int],
               text_polarity: str | None, **kwargs) -> tuple[str, float]:
    """:func:`_ocr_box` on the image where text of ``text_polarity`` shows best.

    Coloured text (``"colour"``: yellow, red, green labels) is read from the chroma image
    (max - min channel of ``arr``, (H, W, 3) uint8) as light text: there it stands out whatever
    the ground, while its grey level can equal the ground's (yellow on a light image, red on a
    dark one). Other text is read from ``gray`` (uint8 (H, W)).
    """
    if text_polarity == "colour" and arr.ndim == 3:
        # the chroma of a window around the box only (it holds _ocr_box's padded crop: same text)
        r0, c0, r1, c1 = box
        margin = (r1 - r0) // 4 + 2
        wr0, wc0 = max(0, r0 - margin), max(0, c0 - margin)
        window = _chroma(arr[wr0:r1 + margin, wc0:c1 + margin])
        return _ocr_box(window, (r0 - wr0, c0 - wc0, r1 - wr0, c1 - wc0), "light", **kwargs)
    return _ocr_box(gray, box, text_polarity, **kwargs)


def _chroma(arr: np.ndarray) -> np.ndarray:
    """Colour saturation of an (H, W, 3+) uint8 image: max - min of R, G, B, uint8 (H, W)."""
    rgb = arr[..., :3]
    return rgb.max(axis=2) - rgb.min(axis=2)


def _label_crop(gray: np.ndarray, box: tuple[int, int, int, int],
                text_polarity: str | None = None, clean: bool = False) -> np.ndarray | None:
    """The padded crop of ``box`` that :func:`_ocr_box` gives tesseract, before scaling: float
    (H, W), dark text (0) on white (1); None when it holds no contrast to read.

    ``clean`` (binarised crops only) also erases the anti-aliased rims of the ground blobs
    removed at the crop's border and ink specks (:func:`_drop_specks_of`): a second try where
    the first reading did not parse (a serif "5 µm" read "(Sym ,"). It returns None as well when
    there is nothing to erase (the crop would be the one already read).
    """
    height, width = gray.shape
    r0, c0, r1, c1 = box
    pad = max(2, (r1 - r0) // 4)
    crop = gray[max(0, r0 - pad):min(height, r1 + pad), max(0, c0 - pad):min(width, c1 + pad)]
    if crop.size == 0:
        return None
    # dark text on light ground
    lo, hi = np.percentile(crop, [5, 95])
    if hi - lo < 20:
        return None
    norm = np.clip((crop.astype(float) - lo) / (hi - lo), 0, 1)
    if text_polarity not in ("light", "dark"):
        return 1.0 - norm if np.median(norm) < 0.5 else norm
    ground = float(np.median(crop))
    ink_level = float(np.percentile(crop, 97 if text_polarity == "light" else 3))
    if abs(ink_level - ground) < 20:
        return None
    level = (ground + ink_level) / 2.0
    raw = crop >= level if text_polarity == "light" else crop <= level
    ink = _drop_border_blobs(raw, rule_px=max(12, 2 * (r1 - r0)))
    # soft ink (keeps anti-aliasing) with ground blobs at the border removed
    soft = np.clip((crop.astype(float) - ground) / (ink_level - ground), 0, 1)

    def text_only(soft: np.ndarray, ink: np.ndarray) -> np.ndarray:
        soft[raw & ~ink] = 0.0
        # ground of a third grey beyond the text's (the image left or right of a white label
        # box) would come out as a grey band tesseract reads as "1" ("1100 nm")
        soft[_side_ground(soft, ink)] = 0.0
        return 1.0 - soft

    if not clean:
        return text_only(soft, ink)
    cleaned = soft.copy()
    cleaned[ndimage.binary_dilation(raw & ~ink, iterations=2) & ~ink] = 0.0  # the blobs' rims
    out = text_only(cleaned, _drop_specks_of(ink))
    return None if np.array_equal(out, text_only(soft, ink)) else out


def _ocr_box(gray: np.ndarray, box: tuple[int, int, int, int],
             text_polarity: str | None = None, n_lines: int = 1,
             label_chars: bool = False) -> tuple[str, float]:
    """OCR one box of ``n_lines`` text lines: ``(text, mean word confidence 0-100)``.

    ``label_chars`` limits tesseract to the characters of a scale label (``LABEL_CHARS``): a
    blurred ``nm`` then cannot come out as ``sun`` or ``ne``.

    ``text_polarity`` ``"light"`` or ``"dark"`` binarises the crop at the level between text and
    ground first (clean on textured ground); None OCRs the contrast-stretched grey crop.
    """
    norm = _label_crop(gray, box, text_polarity)
    if norm is None:
        return "", 0.0
    return _ocr_crop(norm, box[2] - box[0], n_lines, label_chars)


def _ocr_crop(norm: np.ndarray, line_h: int, n_lines: int = 1,
              label_chars: bool = False) -> tuple[str, float]:
    """tesseract on a :func:`_label_crop` of ``n_lines`` lines ``line_h`` px high in all:
    ``(text, mean word confidence 0-100)``."""
    import pytesseract
    from PIL import Image

    scale = np.clip(OCR_TEXT_HEIGHT_PX * n_lines / max(1, line_h), 1.0, 6.0)
    img = Image.fromarray((norm * 255).astype(np.uint8))
    if scale > 1.05:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BICUBIC)
    framed = Image.new("L", (img.width + 40, img.height + 40), 255)
    framed.paste(img, (20, 20))
    try:
        psm = "--psm 7" if n_lines == 1 else "--psm 6"  # one line, or a uniform block
        if label_chars:
            psm += f" -c tessedit_char_whitelist={LABEL_CHARS}"
        data = image_to_data(framed, config=psm, timeout=OCR_TIMEOUT_S)
    except (RuntimeError, pytesseract.TesseractError) as exc:
        log.warning("tesseract failed on a scale-bar label (%s)", exc)
        return "", 0.0
    words, confs = [], []
    for word, conf in zip(data["text"], data["conf"]):
        if word.strip():
            words.append(word.strip())
            confs.append(float(conf))
    text = " ".join(words)
    return text, (float(np.mean(confs)) if confs else 0.0)


def _parse_label(text: str) -> tuple[float, str] | None:
    """``(value, unit)`` an OCR text reads as once :func:`_fix_ocr` has repaired it, or None."""
    return parse_scale_text(_fix_ocr(text)) if text else None


def _fix_ocr(text: str) -> str:
    """Undo common tesseract misreadings in a scale label (``pm``/``ym``/``jim`` -> ``µm``, O -> 0)."""
    t = unicodedata.normalize("NFC", text).replace("\u03bc", "µ").replace("_", " ")  # "_": the bar
    t = re.sub(r"(?<![\w.,])[Oo](?=\d)", "0", t)  # "o5 um"
    # a leading "0" then a digit is a dropped point: no label reads "05 µm" ("o5 um" for "0.5 um")
    t = re.sub(r"(?<![\w.,])0(\d)(?=\s*[a-zA-Zµ])", r"0.\1", t)
    t = re.sub(r"(?<![\w.,]),(?=\d)", "", t)  # a speck before the number read as a comma: ",20nm"
    t = re.sub(r"(?<=\d)[Oo](?=\d|\s|[nµu])", "0", t)
    t = re.sub(r"\b[Oo](?=[.,]\d)", "0", t)
    t = re.sub(r"(?<=\d)[lI|](?=\d)", "1", t)
    t = re.sub(r"\b[lI|](?=\d)", "1", t)
    # a lone "1" before the unit read as a letter: "tpm", "l nm"
    t = re.sub(r"(?<![\w.|])[tlI](?=\s*(?:pm|µm|um|nm|jm|ym)\b)", "1", t)
    t = re.sub(r"(?<=\d)\s*(?:pm|pum|ym|jim|jm|wm|uum|µum|hm|qm|um|µm|urn|µ\s*m)\b", " µm", t, flags=re.IGNORECASE)
    t = re.sub(r"(?<=\d)[$S](?=\d)", "5", t)
    t = re.sub(r"(?<![\w.])[$S](?=\d)", "5", t)
    t = re.sub(r"(?<=\d)\s*[‘'\"`]?\s*(?:rn|am|nrn|mn|n|nt|nhr|nr|nn|nim|ntn|hm)\b", " nm", t)
    # the micro sign dropped or misread: "1.0 m", "2.0 Lum" (no micrograph has a bar in metres)
    # ("200 im" is a blurred "nm" as often as a "µm": _check_reading decides by the descender)
    t = re.sub(r"(?<=\d)\s*(?:[LlIi|]?um|[^\w\s]?\s*m|[iIl|]m)\b", " µm", t)
    # "nm" read as "mm": micrographs with mm bars are rare, and then the value is small
    t = re.sub(r"(\d+(?:[.,]\d+)?)\s*mm\b",
               lambda m: m.group(0) if _parse_number(m.group(1)) <= 2 else m.group(1) + " nm", t)
    t = re.sub(r"(?<=\d)[.,:;'`°]+(?=\s*[a-zA-Zµ])", " ", t)  # "100.nm", "20°A" (the ring of Å)
    t = re.sub(r"(?<=\d)\s*[Aa]°?(?=\s|$)", " Å", t)
    return t


def _side_ground(soft: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Grey ground left or right of a label box in a soft-ink crop, as a bool mask (H, W).

    ``soft`` (float, 0 = ground, 1 = ink) and ``ink`` (bool) of one OCR crop. Ground is a region
    of soft ink above 0.2 that is no ink, touches the crop's left or right edge and spans at
    least 90 % of its height; pixels next to ink (a glyph's rim) are kept.
    """
    grey_parts, _ = ndimage.label((soft > 0.2) & ~ink)
    out = np.zeros_like(ink)
    h = ink.shape[0]
    for side in (0, -1):
        for index in np.unique(grey_parts[:, side]):
            if index == 0:
                continue
            part = grey_parts == index
            rows = np.flatnonzero(part.any(axis=1))
            if rows[-1] - rows[0] + 1 >= 0.9 * h:
                out |= part
    return out & ~ndimage.binary_dilation(ink)


SPECK_FRACTION = 0.015  # ink blobs under this share of the largest glyph's area are specks


def _drop_specks_of(ink: np.ndarray) -> np.ndarray:
    """Ink mask without blobs under ``SPECK_FRACTION`` of the largest blob's area (texture
    specks beside a label, read as "(" or ","); a decimal point is larger than that."""
    labels, n = ndimage.label(ink)
    if n < 2:
        return ink
    areas = ndimage.sum(ink, labels, range(1, n + 1))
    return ink & ~np.isin(labels, 1 + np.flatnonzero(areas < SPECK_FRACTION * areas.max()))


def _drop_border_blobs(ink: np.ndarray, rule_px: int | None = None) -> np.ndarray:
    """Ink mask without the blobs touching the crop border (ground bleeding into the crop).

    With ``rule_px``, a glyph joined to such a blob only through a horizontal rule of ``rule_px``
    or more (the bar under a label, touched by the descender of a "µ") is kept: with the rules
    cut out, the pieces of dropped blobs that no longer touch the border come back.
    """
    keep = _drop_border_blobs_once(ink)
    if rule_px is None or rule_px >= ink.shape[1]:
        return keep
    rules = _rules(ink & ~keep, rule_px)
    if not rules.any():
        return keep
    labels, _ = ndimage.label(ink & ~keep & ~rules)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return keep | ((labels > 0) & ~np.isin(labels, border))


def _rules(ink: np.ndarray, min_px: int) -> np.ndarray:
    """Horizontal ink runs of ``min_px`` or more (bars, frames), grown by a pixel all round."""
    runs = ndimage.binary_opening(ink, structure=np.ones((1, min_px), dtype=bool))
    return ndimage.binary_dilation(runs, structure=np.ones((3, 3), dtype=bool))


def _drop_border_blobs_once(ink: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(ink)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    keep = ink.copy()
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if index not in border or sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if h >= 0.9 * ink.shape[0] or w >= 0.5 * ink.shape[1]:  # ground, not a glyph
            keep[sl] &= labels[sl] != index
    return keep


def _as_value_unit(scale: tuple[float, str]) -> tuple[float, str] | None:
    """Validate a caption scale ``(value, unit)``; None if the unit is unknown."""
    try:
        value, unit = float(scale[0]), normalize_unit(str(scale[1]))
    except (TypeError, ValueError, IndexError):
        return None
    if unit is None or not value > 0:
        return None
    return value, unit


def _parse_number(number: str) -> float | None:
    """``1,000`` -> 1000, ``0,5`` -> 0.5, ``.5`` -> 0.5."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", number) and not number.startswith("0"):
        number = number.replace(",", "")
    number = number.replace(",", ".")
    try:
        return float(number)
    except ValueError:
        return None


# a number and a bare "m" (or "cm"): what tesseract makes of "5 m", "1 cm", "5 µm" and "5 nm"
_BARE_M_RE = re.compile(r"\d\s*[^\w\s]?\s*c?m\b")
# what tesseract leaves of "20 nm" or "2.0 µm" when it drops or blurs the first unit letter:
# "20m", "2.0 m", "200 im"
_DROPPED_MICRO_RE = re.compile(r"\d\s*(?:[^\w\s]?\s*|[iIl|])m\b")
# a micro sign tesseract saw as one ("2 µm", "2 um", "lum", "1 pum", "2 microns"); in other texts
# read as µm ("5 Hm", "5pm") it stands for what tesseract made of the first unit letter
_READ_MICRO_RE = re.compile(r"[uµ\u03bc]|micro", re.IGNORECASE)

_TESSERACT_OK: bool | None = None


def _tesseract_available() -> bool:
    """True once the tesseract binary is found (warns once when it is missing)."""
    global _TESSERACT_OK
    if _TESSERACT_OK is None:
        _TESSERACT_OK = shutil.which("tesseract") is not None
        if not _TESSERACT_OK:
            log.warning("tesseract not found: scale-bar text cannot be read; "
                        "install it (apt-get install tesseract-ocr)")
    return _TESSERACT_OK


# ---- second route: text first ------------------------------------------------------------------
# When no bar next to a candidate reads, the label is looked for first: sparse-text OCR of the
# bands where labels sit, then a bar is searched next to each label by its contrast with the local
# (vertical median) ground, which also finds faint bars on grey SEM grounds and bars in label boxes.

TEXT_BANDS = ((0.62, 1.0), (0.0, 0.3))  # row fractions OCRed for labels, in this order
TEXT_BAND_SCALE = 2.0  # upscaling of a band before sparse-text OCR (small labels)
MAX_BAND_WIDTH_PX = 2400  # the upscaled band is not made wider than this
LABEL_MIN_CONF = 40.0  # mean tesseract confidence (0-100) of the words of a label
LABEL_WORD_MIN_CONF = 15.0  # no word of a label below this
LOCAL_BAR_CONTRAST = 22  # grey levels between a bar and its local ground at least
LOCAL_NOISE_FACTOR = 4.0  # ... and this many robust standard deviations of the ground
MAX_LABEL_GAP = 3.0  # text heights between a label and its bar, at most
TEXT_STROKE_PX = 15  # top-hat square for label strokes (wider than the strokes), px
MAX_SPARSE_OCR_CALLS = 8  # sparse-text tesseract calls per image (0.1 s a region, ~0.5 s a band)
GOOD_PAIR_GAP = 1.0  # text heights: a label this near its bar ends the search for variants
MAX_REGION_BARS = 3  # bar candidates whose surroundings are OCRed for a label


def find_scale_labels(gray: np.ndarray, regions: list[tuple[int, int, int, int]] | None = None,
                      budget: list[int] | None = None, accept=None) -> list[dict]:
    """Scale labels (``200 nm``, ``1 µm``, ``0.5 um``) in regions of an image, by sparse-text OCR.

    Each region is OCRed with tesseract ``--psm 11`` (sparse text) on its text-ink image
    (:func:`text_ink_image`): light text first (dark first next to a dark bar), upscaled
    :data:`TEXT_BAND_SCALE` times, then unscaled (regions only), then the other polarity, until a
    label reads. A label is one OCR word that parses as number + unit, or a number word followed
    on the same line by a unit word. Data-bar fields (``WD = 10 mm``) are left out.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
    regions : list of (row0, row1, col0, col1) or (row0, row1, col0, col1, polarity, bar_value)
        Where to look (with the polarity of a bar there: labels usually have the bar's
        colour); default: the label bands :data:`TEXT_BANDS` (lower, then upper), each OCRed
        in both polarities, upscaled :data:`TEXT_BAND_SCALE` times; the upper band only when
        the lower one has no label.
    budget : list of int, optional
        One-item list: tesseract calls still allowed; decremented per call.
    accept : callable, optional
        ``accept(labels) -> bool`` on the labels of one OCR call; False tries the region's next
        variant (default: any label ends the region's tries).

    Returns
    -------
    list of dict
        ``text``, ``value`` (float), ``unit``, ``bbox`` ``(row0, col0, row1, col1)`` in image
        pixels, ``conf`` (0-100); empty when tesseract is missing or nothing reads.
    """
    if gray.ndim != 2:
        raise ValueError(f"gray must be 2-D, got shape {gray.shape}")
    if budget is None:
        budget = [MAX_SPARSE_OCR_CALLS]
    if not _tesseract_available():
        return []
    height, width = gray.shape
    bands = regions is None
    if bands:
        regions = [(int(top * height), int(bottom * height), 0, width) for top, bottom in TEXT_BANDS]
    labels: list[dict] = []
    for region in regions:
        r0, r1, c0, c1 = region[:4]
        r0, r1, c0, c1 = max(0, r0), min(height, r1), max(0, c0), min(width, c1)
        if r1 - r0 < 8 or c1 - c0 < 8:
            continue
        crop = gray[r0:r1, c0:c1]
        # light text first next to a light bar (and in the bands: labels are mostly white)
        first_light = len(region) <= 4 or region[4] != "dark"
        # (scale, light text, cleaned of specks and rules); tesseract reads one variant of a
        # label and not another, so regions next to a bar get several
        tries = [(TEXT_BAND_SCALE, first_light, True), (TEXT_BAND_SCALE, not first_light, True)]
        if not bands:
            tries[1:1] = [(TEXT_BAND_SCALE, first_light, False), (1.0, first_light, True)]
        for scale, light, clean in tries:
            if budget[0] <= 0:
                return labels
            ink_image = text_ink_image(crop, light)
            cleaned = _drop_specks(ink_image)
            if cleaned is None:
                continue  # no glyph-sized ink: nothing to read (no tesseract call)
            budget[0] -= 1
            if clean:
                ink_image = cleaned
            words = _ocr_sparse_words(ink_image, scale)
            found = [dict(lab, bbox=(lab["bbox"][0] + r0, lab["bbox"][1] + c0, lab["bbox"][2] + r0,
                                     lab["bbox"][3] + c0)) for lab in _labels_from_words(words)]
            if found:
                labels += found
                if accept is None or accept(found):
                    break
        if labels and bands:
            break
    return labels


MIN_GLYPHS = 2  # glyph-sized ink blobs a region needs before it is OCRed
MIN_RULE_PX = 31  # horizontal ink runs this long are bars or frames: erased before OCR


def _drop_specks(ink_image: np.ndarray) -> np.ndarray | None:
    """The text-ink image without specks (blobs under 5 px high or 12 px in area) and rules.

    Horizontal ink runs of :data:`MIN_RULE_PX` px and more (bars, frames) are erased too.

    Returns None when fewer than :data:`MIN_GLYPHS` glyph-sized blobs remain (texture, noise):
    such a region is not worth a tesseract call.
    """
    # ink: 30 grey levels of top-hat and more, and well above the region's noise (texture)
    hat = 20.0 + (255.0 - ink_image.astype(float)) * (80.0 / 255.0)
    noise = 1.4826 * float(np.median(np.abs(hat - np.median(hat))))
    ink = hat >= max(30.0, float(np.median(hat)) + 6.0 * noise)
    # long horizontal runs are bars or frames, not glyphs; left in, tesseract takes a bar under
    # the label for part of a word and the word box swallows it
    ink &= ~_rules(ink, MIN_RULE_PX)
    labels, _ = ndimage.label(ink)
    keep = np.zeros_like(ink)
    n_glyphs = 0
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        blob = labels[sl] == index
        if sl[0].stop - sl[0].start >= 5 and blob.sum() >= 12:
            keep[sl] |= blob
            n_glyphs += sl[0].stop - sl[0].start <= 100
    if n_glyphs < MIN_GLYPHS:
        return None
    out = ink_image.copy()
    out[~keep] = 255
    return out


def text_ink_image(gray: np.ndarray, light: bool, stroke_px: int = TEXT_STROKE_PX) -> np.ndarray:
    """Black-on-white image of the text strokes of one polarity, whatever the ground.

    A morphological top-hat (the grey level above an opening, for light text, or below a
    closing, for dark text, with a ``stroke_px`` square) keeps what is narrower than
    ``stroke_px`` and brighter (darker) than its surroundings: white labels over light and dark
    particles alike, black labels in white boxes. Contrast under 20 grey levels is dropped.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
    light : bool
        True for light text, False for dark text.
    stroke_px : int
        Side of the square structuring element, px; wider than any stroke of the text.

    Returns
    -------
    ndarray of uint8, shape (H, W)
        0 = ink, 255 = ground.
    """
    g = gray.astype(np.int16)
    size = (stroke_px, stroke_px)
    hat = g - ndimage.grey_opening(g, size=size) if light else ndimage.grey_closing(g, size=size) - g
    return (255 - np.clip((hat - 20) * (255.0 / 80.0), 0, 255)).astype(np.uint8)


def _ocr_sparse_words(band: np.ndarray, scale: float = 1.0) -> list[dict]:
    """Words of one region by sparse-text OCR: dicts ``text``, ``conf``, ``bbox`` in its pixels."""
    import pytesseract
    from PIL import Image

    h, w = band.shape
    scale = min(scale, MAX_BAND_WIDTH_PX / max(w, 1))
    img = Image.fromarray(band)
    if abs(scale - 1.0) > 0.05:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    pad = 20  # labels touching the image edge are missed without a margin
    ground = int(np.median(np.asarray(img)))  # a margin of the ground's grey: no false edge
    framed = Image.new("L", (img.width + 2 * pad, img.height + 2 * pad), ground)
    framed.paste(img, (pad, pad))
    try:
        data = image_to_data(framed, config="--psm 11", timeout=2 * OCR_TIMEOUT_S)
    except (RuntimeError, pytesseract.TesseractError) as exc:
        log.warning("tesseract failed on a label band (%s)", exc)
        return []
    words = []
    for i, text in enumerate(data["text"]):
        if not text.strip():
            continue
        c0 = (data["left"][i] - pad) / scale
        r0 = (data["top"][i] - pad) / scale
        c1 = c0 + data["width"][i] / scale
        r1 = r0 + data["height"][i] / scale
        words.append({"text": text.strip(), "conf": float(data["conf"][i]),
                      "bbox": (max(0, int(np.floor(r0))), max(0, int(np.floor(c0))),
                               min(h, int(np.ceil(r1))), min(w, int(np.ceil(c1))))})
    return words


_DATA_FIELD_RE = re.compile(r"(?:=|\b(?:WD|EHT|HV|Mag|HFW|Det|kV|Signal|Date|Time|Spot|Pixel))\s*$",
                            re.IGNORECASE)


# found without a bar, "7.6mm" is an SEM working distance and "100 a" a misread "100 nm", not
# 7.6 nm (the bar-first route's "nm read as mm" repair) or 100 Å
_RAW_FIELD_UNIT_RE = re.compile(r"\d\s*(?:mm|[aA])\b|\d\s*[kK][vV]\b|\d\s*[xX]\b")


def _labels_from_words(words: list[dict]) -> list[dict]:
    """Scale labels among OCR words: one word (``200nm``) or a number word + a unit word after it."""
    labels = []
    for i, word in enumerate(words):
        if not re.search(r"\d", word["text"]):
            continue
        r0, c0, r1, c1 = word["bbox"]
        h = max(1, r1 - r0)
        same_line = [o for o in words if o is not word and min(r1, o["bbox"][2]) - max(r0, o["bbox"][0])
                     >= 0.4 * min(h, o["bbox"][2] - o["bbox"][0])]
        before = [o for o in same_line if 0 <= c0 - o["bbox"][3] <= 2 * h]
        if any(_DATA_FIELD_RE.search(o["text"]) for o in before):
            continue  # "WD = 10 mm": a data-bar field
        after = sorted((o for o in same_line if -2 <= o["bbox"][1] - c1 <= 1.5 * h),
                       key=lambda o: o["bbox"][1])
        groups = [[word]] + ([[word, after[0]]] if after else [])
        for group in reversed(groups):  # number + unit word first: "1" alone is no label
            text = " ".join(o["text"] for o in group)
            parsed = _parse_label(text)
            if parsed is None or _RAW_FIELD_UNIT_RE.search(text):
                continue
            confs = [o["conf"] for o in group]
            if np.mean(confs) < LABEL_MIN_CONF or min(confs) < LABEL_WORD_MIN_CONF:
                continue
            box = (min(o["bbox"][0] for o in group), min(o["bbox"][1] for o in group),
                   max(o["bbox"][2] for o in group), max(o["bbox"][3] for o in group))
            labels.append({"text": text, "value": parsed[0], "unit": parsed[1], "bbox": box,
                           "conf": float(np.mean(confs))})
            break
    return labels


def _read_text_first(gray: np.ndarray, arr: np.ndarray, candidates: list[dict],
                     budget: list[int]) -> tuple | None:
    """Second route: labels found by OCR, then a bar next to each; the best checked reading.

    Returns a reading ``(bar, text, text_box, conf, (value, unit))`` as :func:`_check_reading`
    gives it, or None when no label has a bar next to it.
    """
    regions = []
    for bar in candidates[:MAX_REGION_BARS]:
        cr0, c0, cr1, c1 = bar["component"]
        length = c1 - c0
        reach_v = int(np.clip(1.2 * length, 40, 160))
        reach_h = int(np.clip(0.6 * length + 30, 40, 300))
        regions.append((cr0 - reach_v, cr1 + reach_v, c0 - reach_h, c1 + reach_h, bar["polarity"],
                        bar["value"]))
    best: list = []  # [(rank, gap, reading)] of the best pairing so far

    def accept(labels: list[dict]) -> bool:
        pair = _pair_labels(gray, labels, candidates)
        if pair is not None and (not best or pair[0] < best[0][0]):
            best[:] = [pair]
        return pair is not None and pair[1] <= GOOD_PAIR_GAP

    for area in (regions, None):
        if area is not None and not area:
            continue
        find_scale_labels(gray, area, budget, accept)
        if best:
            return best[0][2]
    return None


def _pair_labels(gray: np.ndarray, labels: list[dict], candidates: list[dict]) -> tuple | None:
    """``(rank, gap, reading)`` of the best label paired with its nearest bar (None if none pairs).

    ``gap`` is the label-bar distance in text heights (see :func:`_bars_next_to`), ``rank`` that
    less the label's OCR confidence / 100; the reading is checked by :func:`_check_reading`.
    """
    best = None
    for label in labels:
        for bar, gap in _bars_next_to(gray, label["bbox"], candidates):
            reading = _check_reading(gray, (bar, label["text"], label["bbox"], label["conf"],
                                            (label["value"], label["unit"])))
            if reading[4] is None:
                continue
            rank = gap - label["conf"] / 100.0
            if best is None or rank < best[0]:
                best = (rank, gap, reading)
            break  # the nearest bar that gives a plausible reading
    return best


def _bars_next_to(gray: np.ndarray, box: tuple[int, int, int, int],
                  candidates: list[dict]) -> list[tuple[dict, float]]:
    """Bars above, below, left or right of a label box, nearest first: ``(bar, gap)`` pairs.

    ``gap`` is the distance from the label in text heights (plus a misalignment penalty). Bars
    are the image's candidates (:func:`find_bar_candidates`) and those found by local contrast in
    a window around the label (:func:`_local_bar_candidates`).
    """
    r0, c0, r1, c1 = box
    text_h = max(4, r1 - r0)
    text_w = max(1, c1 - c0)
    bars = list(candidates) + _local_bar_candidates(gray, box)
    pairs = []
    label_mid = (c0 + c1) / 2.0
    for bar in bars:
        b0, bc0, b1, bc1 = bar["bbox"]
        length = bc1 - bc0
        if length < max(MIN_BAR_PX, 0.6 * text_h):
            continue
        # above or below; OCR word boxes sometimes take in the top or bottom rows of the bar
        above = b1 <= r0 + max(1, 0.3 * text_h)
        if above or b0 >= r1 - max(1, 0.3 * text_h):
            v_gap = (r0 - b1) if above else (b0 - r1)
            overlap = min(c1, bc1) - max(c0, bc0)
            if overlap < 0.3 * min(text_w, length):
                continue
            bar_mid = (bc0 + bc1) / 2.0
            # the label is centred on the bar or starts or ends with it
            misalign = min(abs(label_mid - bar_mid), abs(c0 - bc0), abs(c1 - bc1)) / max(text_w, length)
            gap = max(0.0, v_gap) / text_h + 2.0 * misalign
            if v_gap > MAX_LABEL_GAP * text_h + 4:
                continue
            if v_gap <= 2 and length < 1.5 * text_h:  # a piece of a glyph cut by the label box
                continue
        else:  # the same rows: left or right of the label
            bar_row = (b0 + b1) / 2.0
            if not (r0 - 0.5 * text_h <= bar_row <= r1 + 0.5 * text_h):
                continue
            h_gap = max(bc0 - c1, c0 - bc1)
            if h_gap < -1 or h_gap > 2 * text_h + 6:
                continue
            gap = max(0.0, h_gap) / text_h + 1.2  # less usual than above or below
        pairs.append((bar, gap))
    pairs.sort(key=lambda p: (p[1], -p[0]["score"]))
    return pairs


def _local_bar_candidates(gray: np.ndarray, box: tuple[int, int, int, int]) -> list[dict]:
    """Bars near a label box found by contrast with the local ground (vertical median filter).

    The window reaches :data:`MAX_LABEL_GAP` text heights above and below the label and about
    three label widths to each side. A bar is a run of rows (thickness up to the text height)
    that differs from the vertical median of its column by :data:`LOCAL_BAR_CONTRAST` grey levels
    and :data:`LOCAL_NOISE_FACTOR` noise deviations, straight-ended and uniform.
    """
    height, width = gray.shape
    r0, c0, r1, c1 = box
    text_h = max(4, r1 - r0)
    reach_h = int(max(3 * (c1 - c0), 8 * text_h))
    wr0 = max(0, r0 - int(MAX_LABEL_GAP * text_h) - 2 * text_h - 4)
    wr1 = min(height, r1 + int(MAX_LABEL_GAP * text_h) + 2 * text_h + 4)
    wc0, wc1 = max(0, c0 - reach_h), min(width, c1 + reach_h)
    window = gray[wr0:wr1, wc0:wc1].astype(np.int16)
    if window.shape[0] < 5 or window.shape[1] < MIN_BAR_PX:
        return []
    # the ground of a pixel: the median of one text height of its column just above it, and
    # just below it (bars are thinner than half of that); a bar stands out from at least one
    # side (the label's glyphs may fill the other)
    k = text_h | 1
    median = ndimage.median_filter(window, size=(k, 1), mode="nearest")
    edge = np.repeat(median[:1], k // 2 + 1, axis=0), np.repeat(median[-1:], k // 2 + 1, axis=0)
    above = np.concatenate([edge[0], median[:-(k // 2 + 1)]])
    below = np.concatenate([median[k // 2 + 1:], edge[1]])
    centred = window - median
    noise = 1.4826 * float(np.median(np.abs(centred - np.median(centred))))
    level = max(LOCAL_BAR_CONTRAST, LOCAL_NOISE_FACTOR * noise)
    lo, hi = np.minimum(above, below), np.maximum(above, below)
    bars = []
    for polarity, diff, both in (("light", window - lo, window - hi), ("dark", hi - window, lo - window)):
        mask = diff >= level
        mask[max(0, r0 - wr0):max(0, r1 - wr0), max(0, c0 - wc0):max(0, c1 - wc0)] = False
        for body in _stacked_runs(mask, MIN_BAR_PX):
            if body[1] == 0 < wc0 or body[3] == mask.shape[1] and wc1 < width:
                continue  # cut by the window: its ends are unknown
            bar = _measure_local_bar(gray, diff, both, mask, body, (wr0, wc0), polarity, level)
            if bar is not None and bar["bbox"][3] - bar["bbox"][1] <= MAX_BAR_FRACTION * width:
                bars.append(bar)
    return bars


def _stacked_runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int, int, int]]:
    """Rectangles of rows whose runs of True start and end at the same columns (within 2 px).

    Unlike connected components, a bar touched by a particle or a glyph stays a rectangle.
    Returns ``(row0, col0, row1, col1)`` (end exclusive) in mask pixels.
    """
    bodies = []
    open_groups: list[list[int]] = []  # [row0, col0, row1, col1, last_c0, last_c1]
    for row in range(mask.shape[0] + 1):
        runs = [(a, b) for a, b in _runs(mask[row])] if row < mask.shape[0] else []
        runs = [(a, b) for a, b in runs if b - a >= min_len]
        still_open = []
        for group in open_groups:
            match = next(((a, b) for a, b in runs if abs(a - group[4]) <= 2 and abs(b - group[5]) <= 2), None)
            if match is None:
                bodies.append(tuple(group[:4]))
                continue
            runs.remove(match)
            group[1], group[3] = min(group[1], match[0]), max(group[3], match[1])
            group[2], group[4], group[5] = row + 1, match[0], match[1]
            still_open.append(group)
        open_groups = still_open + [[row, a, row + 1, b, a, b] for a, b in runs]
    return bodies


def _measure_local_bar(gray: np.ndarray, diff: np.ndarray, both: np.ndarray, mask: np.ndarray,
                       body: tuple[int, int, int, int], offset: tuple[int, int], polarity: str,
                       level: float) -> dict | None:
    """Check one stacked-run rectangle is a bar (thin, uniform, ending above and below); measure it.

    ``diff`` is the contrast with the nearer-level side (above or below), ``both`` with the other;
    a bar stands out from both sides over at least 40 % of its length (glyphs touching it may
    fill one side elsewhere), an edge of a larger region from one side only.
    """
    b0, bc0, b1, bc1 = body
    w, thickness = bc1 - bc0, b1 - b0
    if thickness * 3 > w or thickness > 40:
        return None
    inner = slice(bc0 + max(1, w // 8), bc1 - max(1, w // 8))
    # the bar ends above and below: a row next to it that is filled between the bar's ends and
    # beyond them is an edge of a larger region (an anti-aliased row of the bar is not)
    flank = max(2, w // 4)
    for row in (b0 - 1, b1):
        if not 0 <= row < mask.shape[0] or mask[row, inner].mean() <= 0.5:
            continue
        sides = [mask[row, max(0, bc0 - flank):bc0], mask[row, bc1:bc1 + flank]]
        if any(side.size and side.mean() > 0.5 for side in sides):
            return None
    contrast = float(diff[b0:b1, inner].mean())
    if float(np.mean(both[b0:b1, inner].mean(axis=0) >= level / 2)) < 0.4:
        return None
    spread = float(gray[b0 + offset[0]:b1 + offset[0],
                        inner.start + offset[1]:inner.stop + offset[1]].std())
    # a one-row run must stand out twice as much: texture makes short faint streaks
    if contrast < level * (2.0 if thickness == 1 else 1.0) or spread > 0.5 * contrast:
        return None
    r0, r1 = b0 + offset[0], b1 + offset[0]
    c0, c1 = bc0 + offset[1], bc1 + offset[1]
    bar_value = float(gray[r0:r1, c0:c1].mean())
    length_px = _subpixel_length(gray, r0, r1, c0, c1, bar_value)
    score = min(1.0, (w / thickness) / 8.0) * (0.6 if thickness == 1 else 1.0) * 0.8
    return {"bbox": (int(r0), int(c0), int(r1), int(c1)),
            "component": (int(r0), int(c0), int(r1), int(c1)),
            "length_px": float(length_px), "thickness_px": int(thickness), "polarity": polarity,
            "value": bar_value, "score": float(score)}
