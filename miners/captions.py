"""Distribute a figure caption over its panels: per-label text, techniques and stated scale.

    >>> parts = split_caption("Fig. 2 (a) SEM image of Au NPs. (b) HRTEM image. Scale bar 50 nm.")
    >>> parts["a"].techniques, parts["b"].techniques, parts[None].scale
    (['SEM'], ['HRTEM'], (50.0, 'nm'))

Labels are found as bracketed markers ``(a)``, ``(a,b)``, ``(a–c)``, ``a)`` and as bare markers at
the start of a sentence (``a–c SEM images of ...``, ``b, TEM ...``). A marker at the start of a
clause owns the text after it; a marker closing a clause (``Au NPs (a) and Au NRs (b)``) owns the
clause before it. Scale-bar statements are read apart: ``Scale bars, 5 μm (c), 500 nm (d)`` gives
each listed panel its scale, ``Scale bar: 200 nm`` applies to all panels. Scale strings are parsed
with ``miners.scalebar.parse_scale_text``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from miners.scalebar import parse_scale_text

log = logging.getLogger(__name__)

# (canonical name, regex); longer / more specific names first so "HRTEM" is not read as "TEM"
TECHNIQUES = (
    ("cryo-EM", r"cryo[- ]?(?:EM|TEM|electron\s+micro(?:scop|graph)\w*)"),
    ("HAADF", r"HAADF(?:[- ]STEM)?|high[- ]angle\s+annular\s+dark[- ]field"),
    ("HRTEM", r"HR[- ]?TEM|(?<!low- and )(?<!low and )high[- ]resolution\s+(?:TEM|transmission\s+electron\s+micro(?:scop|graph)\w*)"),
    ("STEM", r"STEM|scanning\s+transmission\s+electron\s+micro(?:scop|graph)\w*"),
    ("FESEM", r"FE[- ]?SEM|field[- ]emission\s+(?:SEM|scanning\s+electron\s+micro(?:scop|graph)\w*)"),
    ("SEM", r"SEM|scanning\s+electron\s+micro(?:scop|graph)\w*"),
    ("TEM", r"TEM|transmission\s+electron\s+micro(?:scop|graph)\w*"),
    ("SAED", r"SAED|selected[- ]area\s+(?:electron\s+)?diffraction"),
    ("EDS", r"EDS|EDX|energy[- ]dispersive\s+X[- ]ray"),
    ("EELS", r"EELS"),
    ("AFM", r"AFM|atomic\s+force\s+micro(?:scop|graph)\w*"),
    ("XRD", r"P?XRD|X[- ]ray\s+diffraction"),
    ("UV-vis", r"UV[-–‐ ]?vis\w*"),
    ("DLS", r"DLS|dynamic\s+light\s+scattering"),
    ("XPS", r"XPS"),
    ("FTIR", r"FT[- ]?IR"),
    ("Raman", r"Raman"),
)
EM_TECHNIQUES = frozenset({"cryo-EM", "HAADF", "HRTEM", "STEM", "FESEM", "SEM", "TEM"})
_TECHNIQUE_RE = [(name, re.compile(r"(?<![A-Za-z0-9-])(?:" + rx + r")(?![A-Za-z0-9])", re.IGNORECASE
                                   if not rx.isupper() else 0)) for name, rx in TECHNIQUES]

_LABEL = r"[A-Za-z]\d{0,2}"
_LIST = _LABEL + r"(?:\s*(?:[-–—‒,&]|and|to)\s*" + _LABEL + r")*"
# bracketed marker "(a)", "(a, b)", "(a–c)", "(d1)", not "particle(s)"
_BRACKET_RE = re.compile(r"(?<![A-Za-z0-9])\((" + _LIST + r")\)")
# "a)" at a clause start, or after a comma / "and" when it continues "a) ..., b) ..." (checked later)
_HALF_BRACKET_RE = re.compile(r"(?:^|(?<=[.;:]\s)|(?<=[.;:])|(?P<joint>,\s*|\band\s+|&\s*))(?<![\w(])(?P<label>"
                              + _LIST + r")\)\s")
_SCALE_HALF_BRACKET_RE = re.compile(r"(?<![\w(])(" + _LIST + r")\)")
# words after which a bracketed label refers back to a panel instead of heading its sub-caption
_REFERENCE_BEFORE_RE = re.compile(
    r"(?:\b(?:in|of|as|from|see|than|with|to|vs\.?|versus|like|by|for|on|at|inset|panels?)"
    r"|\bFig(?:ure)?s?\.?\s*S?\d+[A-Za-z]?(?:\s*(?:,|and|or|&))?|[(\[])\s*$", re.IGNORECASE)
# bare marker at a sentence start: "a–c SEM images", "b, TEM", "A: ..."
_BARE_RE = re.compile(r"(?:^|(?<=[.;:]\s)|(?<=[.;:]))\s*(" + _LIST + r")(?:\s*[,.:|]\s+|\s+(?=[A-Z0-9(]))")
PLOT_HEAD_WORDS = 5  # a plot word among a sub-caption's first words names what the panel shows
# a panel described by these words is a plot or drawing; it does not take the shared technique
_PLOT_RE = re.compile(r"\b(?:spectr(?:um|a)|histograms?|distributions?|curves?|profiles?|plots?|isotherms?|"
                      r"voltammograms?|characteristics|schem(?:e|atics?)|illustrations?|diagrams?)\b", re.IGNORECASE)
# a bare label inside a sentence, after a comma or "and": ", b shows ...", ", and c for ..."
_BARE_CONTINUED_RE = re.compile(r"(?:,\s*(?:and\s+)?|\band\s+)(" + _LABEL + r")\s+(?=[A-Za-z0-9(])")
_FIGURE_PREFIX_RE = re.compile(r"^\s*(?:Fig(?:ure)?\.?|Scheme)\s*S?\d+[A-Za-z]?\s*[.:|]?\s*", re.IGNORECASE)
_SCALE_SENTENCE_RE = re.compile(r"(?:^|(?<=[\s.;(]))scale\s+bars?\b(?:[^.;]|\.(?=\d))*", re.IGNORECASE)
_SCALE_VALUE = r"\d+(?:[.,]\d+)?\s*(?:nm|µm|μm|um|mm|pm|Å|nanomet\w*|micromet\w*|microns?)"


@dataclass
class SubCaption:
    """The part of a caption that describes one panel label (or the whole figure for None).

    Attributes
    ----------
    text : str
        Caption text for this label.
    techniques : list of str
        Canonical technique names found in ``text`` (``TECHNIQUES`` order), e.g. ``["HRTEM"]``.
    scale : (float, str) or None
        Stated scale-bar length and unit (``(200.0, "nm")``), if the caption gives one.
    """

    text: str = ""
    techniques: list[str] = field(default_factory=list)
    scale: tuple[float, str] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict: text, techniques, scale ``[value, unit]`` or None."""
        return {"text": self.text, "techniques": list(self.techniques),
                "scale": list(self.scale) if self.scale else None}


def find_techniques(text: str) -> list[str]:
    """Canonical names of the techniques named in ``text``, each once, in ``TECHNIQUES`` order.

    A specific name hides the general one it contains: "HRTEM" does not also give "TEM".
    """
    found, masked = [], text
    for name, rx in _TECHNIQUE_RE:
        if rx.search(masked):
            found.append(name)
            masked = rx.sub(" ", masked)
    return found


def first_technique(text: str) -> str | None:
    """The technique named first in ``text`` ("HAADF-STEM image ... inset: HRTEM" -> "HAADF"), or None.

    Where names overlap the more specific one wins, as in ``find_techniques``.
    """
    best = None
    for name, rx in _TECHNIQUE_RE:
        match = rx.search(text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    return best[1] if best else None


def _technique_position(text: str, name: str) -> int:
    """Where technique ``name`` is first named in ``text`` (``len(text)`` if it is not)."""
    match = dict(_TECHNIQUE_RE)[name].search(text)
    return match.start() if match else len(text)


def expand_labels(marker: str) -> list[str]:
    """``"a–c"`` -> ``["a", "b", "c"]``, ``"a, b and d"`` -> ``["a", "b", "d"]``, ``"d1"`` -> ``["d1"]``."""
    cleaned = re.sub(r"\band\b|&", ",", marker)
    tokens = re.findall(r"\bto\b|" + _LABEL + r"|[-–—‒]", cleaned)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in ("-", "–", "—", "‒", "to") and out and i + 1 < len(tokens):
            start, stop = out[-1], tokens[i + 1]
            if len(start) == 1 and len(stop) == 1 and start.isupper() == stop.isupper() and start < stop:
                out.extend(chr(c) for c in range(ord(start) + 1, ord(stop) + 1))
            elif start[:1] == stop[:1] and start[1:].isdigit() and stop[1:].isdigit():
                out.extend(f"{start[0]}{n}" for n in range(int(start[1:]) + 1, int(stop[1:]) + 1))
            else:
                out.append(stop)
            i += 2
            continue
        if tok not in ("-", "–", "—", "‒", "to"):
            out.append(tok)
        i += 1
    return list(dict.fromkeys(out))


def _scale_statements(text: str) -> list[tuple[int, int]]:
    """(start, stop) of each scale-bar statement; one in parentheses ("QDs (scale bar 10 nm) and
    ...") spans its parentheses and no further."""
    spans = []
    for match in _SCALE_SENTENCE_RE.finditer(text):
        start, stop = match.span()
        if start > 0 and text[start - 1] == "(":
            close = text.find(")", start, stop)
            if close >= 0:
                start, stop = start - 1, close + 1
        spans.append((start, stop))
    return spans


def split_caption(caption: str) -> dict[str | None, SubCaption]:
    """Split a caption into per-label parts.

    Parameters
    ----------
    caption : str
        The whole figure caption, e.g. ``"Fig. 3 (a) TEM image ... (b) size distribution ..."``.

    Returns
    -------
    dict
        ``label -> SubCaption``; key None holds the text shared by all panels (the part before
        the first label and text no label owns) and a scale stated for all panels. A caption
        without labels gives only the None entry; an empty caption gives ``{}``.
    """
    if caption is None or not str(caption).strip():
        return {}
    text = re.sub(r"\s+", " ", str(caption)).strip()
    text = _FIGURE_PREFIX_RE.sub("", text, count=1)
    text, roman = _roman_to_placeholders(text)

    # scale-bar statements are read on their own and removed from the label text
    label_scales: dict[str, tuple[float, str]] = {}
    global_scale = None
    unlabelled = []  # (position, scale) of statements that name no label
    statements = _scale_statements(text)
    for start, stop in statements:
        scales, common = _read_scale_statement(text[start:stop])
        for label, scale in scales.items():
            label_scales.setdefault(label, scale)
        if common:
            unlabelled.append((start, common))
    # blanked with spaces of the same length: marker positions stay positions in ``text``
    body = text
    for start, stop in statements:
        body = body[:start] + " " * (stop - start) + body[stop:]

    markers = _find_markers(body)
    owners = _scale_owners(markers, unlabelled, len(body))
    for (position, scale), owner in zip(unlabelled, owners):
        if owner is None:
            global_scale = global_scale or scale
        else:
            for label in owner:
                label_scales.setdefault(label, scale)
    pieces: dict[str | None, list[str]] = {}
    owned = [False] * len(body)
    for k, (start, stop, labels, pre) in enumerate(markers):
        if pre:
            end = markers[k + 1][0] if k + 1 < len(markers) else len(body)
            span = (stop, end)
        else:
            begin = markers[k - 1][1] if k > 0 else 0
            # the first label after its item in a sentence owns the sentence so far ("SEM images and
            # EDS maps of ... in 1% (a), 2% (b)"); later ones the clause since the previous label
            same_sentence = k > 0 and not re.search(r"[.;:]\s", body[begin:start])
            seps = (". ", "; ", ", ", " and ") if same_sentence else (". ", "; ", ": ")
            clause = max(body.rfind(sep, begin, start) for sep in seps)
            begin = max(begin, clause + 1) if clause >= 0 else begin
            span = (begin, start)
        piece = re.sub(r"\s+", " ", body[span[0]:span[1]]).strip(" ,;:.")
        piece = re.sub(r"^(?:and|&)\s+|\s*,?\s+(?:and|&)$", "", piece).strip(" ,;:")
        for i in range(span[0], span[1]):
            owned[i] = True
        for i in range(start, stop):
            owned[i] = True
        for label in labels:
            pieces.setdefault(label, []).append(piece)
    shared = "".join(ch if not owned[i] else " " for i, ch in enumerate(body))
    shared = re.sub(r"\s+", " ", shared).strip(" ,;:.")
    result: dict[str | None, SubCaption] = {}
    global_scale = global_scale or _scale_of(shared)
    result[None] = SubCaption(text=shared, techniques=find_techniques(shared), scale=global_scale)
    for label, texts in pieces.items():
        joined = "; ".join(t for t in texts if t)
        result[label] = SubCaption(text=joined, techniques=find_techniques(joined),
                                   scale=label_scales.get(label) or _scale_of(joined))
    # "TEM images of spheres (a) and rods (b)": a post-positive item without a technique takes
    # the technique of the item before it in the same sentence
    previous, previous_end = None, -1
    for start, stop, labels, pre in markers:
        sentence_break = previous_end >= 0 and re.search(r"[.;]\s", body[previous_end:start])
        for label in labels:
            sub = result.get(label)
            if sub is not None and not sub.techniques and previous and not pre and not sentence_break:
                sub.techniques = list(previous)
        last = result.get(labels[-1])
        previous = last.techniques if last is not None else None
        previous_end = stop
    for label, scale in label_scales.items():
        if label not in result:
            result[label] = SubCaption(text="", techniques=[], scale=scale)
    return _placeholders_to_roman(result) if roman else result


ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
_ROMAN_MARKER_RE = re.compile(r"\((" + "|".join(sorted(ROMAN, key=len, reverse=True)) + r")\)", re.IGNORECASE)
_ROMAN_PLACEHOLDER_RE = re.compile(r"\(r(\d{1,2})\)")


def _roman_to_placeholders(text: str) -> tuple[str, bool]:
    """Roman panel markers "(i)", "(ii)", ... as "(r1)", "(r2)", ... (the label form the marker
    rules read), when the caption numbers its panels so: it has "(ii)" and no "(b)"."""
    if not re.search(r"\(ii\)", text, re.IGNORECASE) or re.search(r"\([bB]\)", text):
        return text, False
    return _ROMAN_MARKER_RE.sub(lambda m: f"(r{ROMAN.index(m.group(1).lower()) + 1})", text), True


def _placeholders_to_roman(result: dict) -> dict:
    def roman(match):
        return f"({ROMAN[int(match.group(1)) - 1]})"

    out = {}
    for label, sub in result.items():
        if label is not None and re.fullmatch(r"r\d{1,2}", label):
            label = ROMAN[int(label[1:]) - 1]
        sub.text = _ROMAN_PLACEHOLDER_RE.sub(roman, sub.text)
        out[label] = sub
    return out


def describe_panels(caption: str, labels: list[str | None]) -> dict[str, dict]:
    """Each panel label's sub-caption, technique and stated scale.

    Parameters
    ----------
    caption : str
        The figure caption.
    labels : list of str or None
        Panel labels as read from the figure (``Panel.label``); None entries are skipped.

    Returns
    -------
    dict
        ``label -> {"text", "techniques", "technique", "em", "scale"}``. ``technique`` is the
        technique named first in the panel's own text, else in the shared text; ``em`` is True when
        that technique is an EM technique (None when no technique is named); ``scale`` is the
        panel's stated scale ``[value, unit]``, else the scale stated for all panels, else None.
        Matching is case-insensitive and ``"d1"`` falls back to ``"d"``.
    """
    parts = split_caption(caption)
    shared = parts.get(None, SubCaption())
    lookup = {str(k).lower(): v for k, v in parts.items() if k is not None}
    # "Size distributions obtained from TEM images of ... (a) 400 °C": the panels are plots
    plot = _PLOT_RE.search(shared.text)
    named = first_technique(shared.text)
    shared_is_plot = bool(plot and named and plot.start() < _technique_position(shared.text, named))
    out: dict[str, dict] = {}
    for label in labels:
        if not label:
            continue
        key = str(label).lower()
        own = lookup.get(key) or lookup.get(key[:1]) or SubCaption()
        if not own.techniques and (_PLOT_RE.search(" ".join(own.text.split()[:PLOT_HEAD_WORDS]))
                                   or shared_is_plot):
            techniques = []  # "size distribution", "I–t curves": a plot, not an image of the shared technique
        else:
            techniques = own.techniques or shared.techniques
        technique = (first_technique(own.text) if own.techniques else first_technique(shared.text)) \
            or (techniques[0] if techniques else None)
        technique = technique if techniques else None
        scale = own.scale or shared.scale
        out[label] = {
            "text": own.text,
            "techniques": list(techniques),
            "technique": technique,
            "em": (technique in EM_TECHNIQUES) if technique else None,
            "scale": list(scale) if scale else None,
        }
    return out


def _scale_of(text: str) -> tuple[float, str] | None:
    """A scale stated as "scale bar ... 50 nm" inside a piece of text, else None."""
    match = re.search(r"scale\s+bars?\b[^.;]*", text, re.IGNORECASE)
    return parse_scale_text(match.group(0)) if match else None


def _read_scale_statement(statement: str) -> tuple[dict[str, tuple[float, str]], tuple[float, str] | None]:
    """Scales per label and a common scale from one "Scale bar(s) ..." statement.

    ``"Scale bars, 5 μm (c), 500 nm (d)"`` -> ``({"c": (5, "µm"), "d": (500, "nm")}, None)``;
    ``"Scale bars: (a) 100 nm, (b, c) 50 nm"`` likewise with labels first;
    ``"Scale bar: 200 nm"`` -> ``({}, (200, "nm"))``; "Scale bars, 1 µm (a) and 100 nm (other
    panels)": the unlabelled value becomes the common scale.
    """
    tokens = []  # ("scale", pos, value) / ("labels", pos, [labels])
    for m in re.finditer(_SCALE_VALUE, statement):
        value = parse_scale_text(m.group(0))
        if value:
            tokens.append(("scale", m.start(), m.end(), value))
    for m in _BRACKET_RE.finditer(statement):
        tokens.append(("labels", m.start(), m.end(), expand_labels(m.group(1))))
    for m in _SCALE_HALF_BRACKET_RE.finditer(statement):  # "Scale bars: a) 50 nm, b) 5 nm"
        tokens.append(("labels", m.start(), m.end(), expand_labels(m.group(1))))
    tokens.sort(key=lambda t: t[1])
    per_label: dict[str, tuple[float, str]] = {}
    common = None
    used = set()
    labels_after = any(t[0] == "labels" and i > 0 and tokens[i - 1][0] == "scale"
                       for i, t in enumerate(tokens))
    labels_first = tokens and tokens[0][0] == "labels"
    for i, tok in enumerate(tokens):
        if tok[0] != "scale":
            continue
        partner = None
        if labels_first:
            partner = i - 1 if i > 0 and tokens[i - 1][0] == "labels" else None
        elif labels_after:
            partner = i + 1 if i + 1 < len(tokens) and tokens[i + 1][0] == "labels" else None
        if partner is not None and partner not in used:
            used.add(partner)
            for label in tokens[partner][3]:
                per_label[label] = tok[3]
        elif common is None:
            common = tok[3]
    return per_label, common


def _scale_owners(markers: list[tuple[int, int, list[str], bool]], statements: list[tuple[int, tuple]],
                  length: int) -> list[list[str] | None]:
    """Labels each unlabelled scale statement belongs to (None: all panels).

    A statement inside a panel's sub-caption ("(a) TEM image. Scale bar, 200 nm. (b) ...") is that
    panel's. One after the last sub-caption is that panel's only when the caption also states scales
    inside sub-captions (Nature Communications style); otherwise it applies to every panel.
    """
    owners: list[list[str] | None] = []
    inline = False
    for position, _ in statements:
        before = [m for m in markers if m[0] < position]
        after = [m for m in markers if m[0] > position and m[3]]
        last = before[-1] if before else None
        owner = list(last[2]) if last is not None and last[3] else None
        inline = inline or (owner is not None and bool(after))
        owners.append((owner, bool(after)))
    return [owner if (trailing_ok or inline) else None for owner, trailing_ok in owners]


def _find_markers(body: str) -> list[tuple[int, int, list[str], bool]]:
    """Label markers as (start, stop, labels, owns_text_after), in text order, no overlaps."""
    found = []
    brackets = [(m.start(), m.end(), expand_labels(m.group(1))) for m in _BRACKET_RE.finditer(body)]
    brackets = [b for b in brackets if _plausible(b[2])]
    # back-references first, one bracket at a time: "as in (a)", "compared with (b)", "Fig. 2(c)",
    # and what they chain to: "shown in (a) and (b)"; "annealed in (a) air, (b) N2" is a list of heads
    kept, back_ref = [], False
    for k, (start, stop, labels) in enumerate(brackets):
        before = body[:start].rstrip()
        following = brackets[k + 1] if k + 1 < len(brackets) else None
        if before == "" or before[-1] in ".;:":
            back_ref = False
        elif _REFERENCE_BEFORE_RE.search(before):
            back_ref = not _starts_enumeration(body, labels, stop, following)
        elif back_ref and re.fullmatch(r"\s*(?:and|or|&|,\s*and|,\s*or)\s*", body[brackets[k - 1][1]:start]):
            back_ref = True  # "(a) and (b)" after "in"
        elif back_ref and re.fullmatch(r"\s*,\s*", body[brackets[k - 1][1]:start]):
            back_ref = _closes_clause(body[stop:].lstrip())  # "in (a), (b)." vs "in (c), (e) TEM image"
        else:
            back_ref = False
        if not back_ref:
            kept.append((start, stop, labels))
    # "(a) and (b) TEM images", "(a), (b)": neighbouring markers form one group
    groups: list[list] = []
    for start, stop, labels in kept:
        if groups and re.fullmatch(r"\s*(?:,|and|&|,\s*and)?\s*", body[groups[-1][1]:start]):
            groups[-1][1] = stop
            groups[-1][2] = groups[-1][2] + [lab for lab in labels if lab not in groups[-1][2]]
        else:
            groups.append([start, stop, list(labels)])
    previous = None  # (stop, labels, pre) of the group before
    for start, stop, labels in groups:
        before = body[:start].rstrip()
        leading = before == "" or before[-1] in ".;:"
        pre = leading or not _closes_clause(body[stop:].lstrip())
        if pre and not leading and previous is not None and not previous[2] and _follows(previous[1], labels) \
                and not re.search(r"[.;:]\s", body[previous[0]:start]):
            pre = False  # "C1s (a), O1s (b) ... Cu2p (f) for the plate": a list of labels after their items
        found.append((start, stop, labels, pre))
        previous = (stop, labels, pre)
    previous = None
    for m in _HALF_BRACKET_RE.finditer(body):
        labels = expand_labels(m.group("label"))
        if not _plausible(labels):
            continue
        if m.group("joint") and not (previous and _follows(previous, labels)):
            continue  # "..., b) HRTEM" inside a sentence only continues a sequence "a) ..., b) ..."
        previous = labels
        found.append((m.start("label"), m.end("label") + 1, labels, True))
    bare = []
    for m in _BARE_RE.finditer(body):
        labels = expand_labels(m.group(1))
        token = m.group(1)
        if not _plausible(labels):
            continue
        rest = body[m.end(1):m.end()]
        word_like = len(labels) == 1 and token in ("a", "A", "I") and not re.match(r"\s*[,.:|]", rest)
        next_label = r"(?:^|[.;:,]\s*|\band\s+)" + chr(ord(token[0]) + 1) + r"\b[,.:|]?\s+\w"
        if word_like and (token == "I" or not re.search(next_label, body[m.end():])):
            continue  # the article "a" / "A", the pronoun "I" -- unless "b" follows as a label too
        bare.append((m.start(1), m.end(), labels, True))
    # Springer style "a Shows ..., b shows ..., and c for ...": a bare label after a comma continues a sequence
    for first in list(bare):
        last = first
        for m in _BARE_CONTINUED_RE.finditer(body, first[1]):
            labels = expand_labels(m.group(1))
            if re.search(r"[.;]\s", body[last[1]:m.start(1)]):
                break
            if _follows(last[2], labels):
                last = (m.start(1), m.end(), labels, True)
                bare.append(last)
    found.extend(bare)
    found.sort(key=lambda f: (f[0], -f[1]))
    out = []
    for item in found:
        if out and item[0] < out[-1][1]:
            continue
        out.append(item)
    return out


def _closes_clause(after: str) -> bool:
    """The text after a marker ends its clause: "(a), ...", "(a).", "(a) and ...", end of caption."""
    return after == "" or after[0] in ",.;:)" or after.startswith(("and ", "& "))


def _follows(previous: list[str], labels: list[str]) -> bool:
    """``labels`` starts right after ``previous`` in the alphabet (``["a"]`` then ``["b", "c"]``)."""
    last, first = previous[-1], labels[0]
    return len(last) == len(first) == 1 and ord(first) == ord(last) + 1


def _starts_enumeration(body: str, labels: list[str], stop: int, following: list | None) -> bool:
    """A marker after "in"/"of" still heads a sub-caption when the next marker of its sentence
    continues the sequence after ", " or "and": "annealed in (a) air, (b) N2 and (c) Ar"."""
    if following is None:
        return False
    between = body[stop:following[0]]
    if re.fullmatch(r"\s*(?:,|and|or|&|,\s*and)?\s*", between):
        return False  # "as in (a) and (b)": one back-reference to two panels
    return (not re.search(r"[.;]\s", between) and _follows(labels, following[2])
            and re.search(r"(?:,|\band|&)\s*$", between) is not None)


def _plausible(labels: list[str]) -> bool:
    """A marker lists a few panel letters of one case (not "(s)" or a word)."""
    if not labels or len(labels) > 12:
        return False
    letters = [lab[0] for lab in labels]
    same_case = all(c.islower() for c in letters) or all(c.isupper() for c in letters)
    return same_case and all(c.lower() <= "t" for c in letters)
