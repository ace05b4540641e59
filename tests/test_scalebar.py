"""Tests of miners.scalebar: synthetic bars drawn with PIL, parsing, and labelled EMPS images."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from idx.cli import cli
from miners.scalebar import (ScaleBar, find_bar_candidates, normalize_unit, parse_scale_text,
                             read_scalebar, scalebar_mask, to_nm)
from miners.scalebar_synth import draw_scalebar

SHARED = Path(__file__).resolve().parents[2] / "shared"
EMPS = SHARED / "data" / "emps" / "images"
LABELS = Path(__file__).parent / "data" / "scalebars.json"
needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract not installed")
needs_emps = pytest.mark.skipif(not EMPS.is_dir(), reason="EMPS images not in ../shared")


def noisy_background(shape=(400, 500), level=120, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 12, shape), 0, 255).astype(np.uint8)


def bar_image(text="200 nm", bar_px=120, colour=(255, 255, 255), ground=60, **kw) -> tuple:
    image, bbox = draw_scalebar(noisy_background(level=ground), text, bar_px, row=340, col=300,
                                thickness_px=kw.pop("thickness_px", 6), font_px=kw.pop("font_px", 22),
                                colour=colour, **kw)
    return image, bbox


# ---- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("200 nm", (200.0, "nm")),
    ("0.5 µm", (0.5, "µm")),
    ("0.5 μm", (0.5, "µm")),  # Greek mu
    ("1,000 nm", (1000.0, "nm")),
    ("0,5 um", (0.5, "µm")),
    ("500nm", (500.0, "nm")),
    ("10 Å", (10.0, "Å")),
    ("10 \u212b", (10.0, "Å")),  # angstrom sign
    ("2 microns", (2.0, "µm")),
    ("scale bar = 5 mm", (5.0, "mm")),
    ("Scale bars: 50 nm (a) and 1 µm (b)", (50.0, "nm")),
    ("100 pm", (100.0, "pm")),
])
def test_parse_scale_text_reads_value_and_unit(text, expected):
    assert parse_scale_text(text) == expected


@pytest.mark.parametrize("text", ["", "200", "Fig. 2 a", "nm", "TEM image of a particle"])
def test_parse_scale_text_without_length_gives_none(text):
    assert parse_scale_text(text) is None


def test_to_nm_normalises_units():
    assert to_nm(2, "μm") == 2000.0
    assert to_nm(10, "Å") == pytest.approx(1.0)
    assert to_nm(500, "pm") == pytest.approx(0.5)
    assert to_nm(1, "mm") == 1e6
    assert normalize_unit("um") == normalize_unit("\u00b5m") == "µm"
    with pytest.raises(ValueError, match="unknown length unit"):
        to_nm(3, "inch")


# ---- bar geometry --------------------------------------------------------------------------

@pytest.mark.parametrize("bar_px, colour, ground", [(120, (255, 255, 255), 60), (87, (0, 0, 0), 190)])
def test_find_bar_candidates_measures_length(bar_px, colour, ground):
    image, bbox = bar_image(bar_px=bar_px, colour=colour, ground=ground)
    best = find_bar_candidates(image)[0]
    assert best["bbox"] == bbox
    assert best["length_px"] == pytest.approx(bar_px, abs=0.5)


def test_subpixel_length_from_antialiased_edges():
    image = np.full((120, 300), 30, dtype=np.uint8)
    image[100:106, 50:150] = 230
    image[100:106, 49] = 130  # half-covered pixels at both ends: 100 + 2 * 0.5 px
    image[100:106, 150] = 130
    best = find_bar_candidates(image)[0]
    assert best["length_px"] == pytest.approx(101.0, abs=0.15)


def test_end_ticks_do_not_change_the_length():
    image, bbox = bar_image(bar_px=150, ticks=True)
    best = find_bar_candidates(image)[0]
    assert best["length_px"] == pytest.approx(150, abs=0.5)


# ---- reading -------------------------------------------------------------------------------

@needs_tesseract
@pytest.mark.parametrize("text, value, unit, colour, ground, box", [
    ("200 nm", 200.0, "nm", (255, 255, 255), 60, None),
    ("500 nm", 500.0, "nm", (0, 0, 0), 190, None),
    ("2 μm", 2.0, "µm", (0, 0, 0), 100, (255, 255, 255)),
    ("50 nm", 50.0, "nm", (255, 255, 0), 90, None),
])
def test_read_scalebar_reads_synthetic_bar(text, value, unit, colour, ground, box):
    image, bbox = bar_image(text=text, bar_px=140, colour=colour, ground=ground, box_colour=box)
    result = read_scalebar(image)
    assert result.found and result.source == "image"
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(to_nm(value, unit) / 140, rel=0.01)
    r0, c0, r1, c1 = bbox
    assert result.to_dict()["bar_bbox"] == [c0, r0, c1, r1]
    assert result.mask.shape == image.shape[:2] and result.mask[r0:r1, c0:c1].all()
    assert result.mask.sum() < 0.1 * result.mask.size


def test_read_scalebar_without_bar_finds_nothing():
    result = read_scalebar(noisy_background())
    assert result == ScaleBar() and result.to_dict()["found"] is False
    assert result.to_dict()["value"] is None and result.to_dict()["nm_per_px"] is None


def test_caption_scale_used_when_label_unreadable():
    image = noisy_background(level=60)
    image[340:346, 300:420] = 255  # a bar with no text at all
    assert read_scalebar(image).found is False
    result = read_scalebar(image, caption_scale=(100, "nm"))
    assert result.found and result.source == "caption"
    assert (result.value, result.unit) == (100.0, "nm")
    assert result.nm_per_px == pytest.approx(100 / 120, rel=0.01)


def test_caption_with_unknown_unit_is_ignored():
    image = noisy_background(level=60)
    image[340:346, 300:420] = 255
    assert read_scalebar(image, caption_scale=(100, "furlong")).found is False


@pytest.mark.parametrize("image", [
    np.zeros((300, 300), dtype=np.uint8),  # blank
    np.full((5, 5), 200, dtype=np.uint8),  # tiny
    (np.random.default_rng(0).random((200, 200)) * 65535).astype(np.uint16),  # 16-bit
    np.zeros((100, 100, 4), dtype=np.uint8),  # RGBA
    np.zeros((0, 0), dtype=np.uint8),  # empty
    np.ones((10, 10, 7), dtype=np.uint8),  # not an image layout
])
def test_bad_images_give_empty_result(image):
    assert read_scalebar(image).found is False


@needs_tesseract
def test_sixteen_bit_image_with_bar_is_read():
    image, _ = bar_image(text="100 nm")
    image16 = image[..., 0].astype(np.uint16) * 257
    result = read_scalebar(image16)
    assert (result.value, result.unit) == (100.0, "nm")


def test_scalebar_mask_covers_boxes_with_margin():
    bar = ScaleBar(found=True, bar_bbox=(10, 20, 14, 60), text_bbox=(0, 25, 8, 55))
    mask = scalebar_mask(bar, (50, 80), margin_px=1)
    assert mask[9:15, 19:61].all() and mask[0:9, 24:56].all()
    assert mask.sum() == 6 * 42 + 9 * 32  # rows 9-14 and 0-8: the grown boxes just touch


# ---- CLI -----------------------------------------------------------------------------------

@needs_tesseract
def test_scalebar_cli_prints_only_json(tmp_path):
    image, _ = bar_image(text="200 nm")
    path = tmp_path / "bar.png"
    Image.fromarray(image).save(path)
    result = CliRunner().invoke(cli, ["scalebar", str(path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"found", "value", "unit", "text", "bar_px", "nm_per_px", "bar_bbox",
                            "text_bbox", "confidence", "source"}
    assert payload["found"] and payload["unit"] == "nm"


def test_scalebar_cli_refuses_corrupt_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    result = CliRunner().invoke(cli, ["scalebar", str(path)])
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output


# ---- real labelled micrographs ---------------------------------------------------------------

def labelled(has_bar: bool, measured_only: bool = True) -> list[dict]:
    items = json.loads(LABELS.read_text(encoding="utf-8"))["images"]
    return [i for i in items if i["has_bar"] == has_bar and (not measured_only or not has_bar
                                                               or i["bar_px"] is not None)]


def check_reading(item: dict) -> None:
    from miners.images import load_image

    result = read_scalebar(load_image(EMPS / f"{item['stem']}.png"))
    assert result.found, item["stem"]
    assert (result.value, result.unit) == (item["value"], item["unit"])
    true = to_nm(item["value"], item["unit"]) / item["bar_px"]
    assert result.nm_per_px == pytest.approx(true, rel=0.05)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem", ["00655d9628", "1700be1235", "2181ebb330", "2bc87a8698"])
def test_real_micrographs_read(stem):
    item = next(i for i in labelled(True) if i["stem"] == stem)
    check_reading(item)


@needs_emps
@pytest.mark.parametrize("stem", ["1e011bd992", "2daa27a6df"])
def test_real_micrographs_without_bar(stem):
    from miners.images import load_image

    assert read_scalebar(load_image(EMPS / f"{stem}.png")).found is False


@pytest.mark.slow
@needs_tesseract
@needs_emps
def test_labelled_set_accuracy():
    """Value, unit and nm/px within 5 % on the annotated images (all splits).

    The issue's target is 90 %; measured 90.9 % over the 296 measured images and no detection
    on the 63 bar-less ones (twelfth round, docs/bench/scalebar.md), so this guards against
    regressions at 88 % (about 8 images lost) and any false detection.
    """
    from miners.images import load_image

    ok = []
    for item in labelled(True):
        result = read_scalebar(load_image(EMPS / f"{item['stem']}.png"))
        true = to_nm(item["value"], item["unit"]) / item["bar_px"]
        ok.append(result.found and result.value == item["value"] and result.unit == item["unit"]
                  and abs(result.nm_per_px / true - 1) <= 0.05)
    false = [read_scalebar(load_image(EMPS / f"{i['stem']}.png")).found for i in labelled(False)]
    assert sum(false) == 0
    assert np.mean(ok) >= 0.88


# ---- fixes from the tuning half of the labelled set ------------------------------------------

def text_line(text: str, font_px: int = 28, ink: int = 255, ground: int = 60) -> np.ndarray:
    """Grey (H, W) uint8 image of one line of DejaVu text."""
    from PIL import ImageDraw, ImageFont

    from miners.scalebar_synth import font_path

    image = Image.new("L", (16 + font_px * len(text), 3 * font_px), ground)
    ImageDraw.Draw(image).text((8, font_px // 2), text, fill=ink,
                               font=ImageFont.truetype(font_path(), font_px))
    return np.asarray(image)


def ink_box(line: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the light text of a :func:`text_line` image."""
    rows, cols = np.nonzero(line > 160)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.mark.parametrize("text, has_descender", [("20 nm", False), ("20 µm", True),
                                                 ("1.0 µm", True), ("100 nm", False)])
def test_micro_sign_told_from_n_by_its_descender(text, has_descender):
    from miners.scalebar import _unit_has_descender

    line = text_line(text)
    box = ink_box(line)
    assert _unit_has_descender(line, box, "light") is has_descender


def test_dropped_micro_sign_becomes_nm_without_descender():
    from miners.scalebar import _check_reading

    line = text_line("20 nm")
    box = ink_box(line)
    bar = {"polarity": "light", "length_px": 61.0}
    # tesseract reads "20 nm" as "20m"; the repair rules first make it 20 µm
    *_, parsed = _check_reading(line, (bar, "20m", box, 10.0, (20.0, "µm")))
    assert parsed == (20.0, "nm")


@pytest.mark.parametrize("text, letter", [("500 pm", "p"), ("500 µm", "µ"), ("5 nm", "n"), ("5 mm", "m"),
                                           ("0.5 µm", "µ"), ("200 pm", "p")])
def test_unit_prefix_told_by_glyph_shape(text, letter):
    from miners.scalebar import _first_letter, _unit_glyphs

    line = text_line(text)
    box = ink_box(line)
    assert _first_letter(_unit_glyphs(line, box)) == letter


@needs_tesseract
@pytest.mark.parametrize("text, bar_px, unit", [("500 pm", 60, "pm"), ("5 mm", 400, "mm"), ("3 mm", 300, "mm")])
def test_picometre_and_millimetre_labels_keep_their_unit(text, bar_px, unit):
    # tesseract's "pm" and "mm" used to be taken for µm and nm whatever the glyphs: a 500 pm bar
    # gave 8,300 nm/px, a 5 mm one 0.0125 nm/px (a factor 10^6 off, both accepted)
    image, _ = draw_scalebar(noisy_background((500, 700), level=60), text, bar_px, row=440,
                             col=650 - bar_px, font_px=24)
    result = read_scalebar(image)
    value = parse_scale_text(text)[0]
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(to_nm(value, unit) / bar_px, rel=0.03)


def test_nm_read_as_mm_stays_nm_by_its_glyphs():
    from miners.scalebar import _check_reading

    line = text_line("50 nm")
    box = ink_box(line)
    bar = {"polarity": "light", "length_px": 100.0}
    *_, parsed = _check_reading(line, (bar, "50 mm", box, 60.0, (50.0, "nm")))
    assert parsed == (50.0, "nm")
    # and a real "2 mm" read as such but drawn "2 nm" is put right
    line = text_line("2 nm")
    box = ink_box(line)
    *_, parsed = _check_reading(line, (bar, "2 mm", box, 60.0, (2.0, "mm")))
    assert parsed == (2.0, "nm")


@pytest.mark.parametrize("value, unit, bar_px, plausible", [
    (200, "nm", 100, True), (10, "Å", 80, True), (2.9, "mm", 98, False), (1, "pm", 500, False),
])
def test_is_plausible_scale(value, unit, bar_px, plausible):
    from miners.scalebar import is_plausible_scale

    assert is_plausible_scale(value, unit, bar_px) is plausible


def test_data_bar_fields_are_not_scale_labels():
    from miners.scalebar import _check_reading

    bar = {"polarity": "light", "length_px": 98.0}
    image = noisy_background()
    *_, parsed = _check_reading(image, (bar, "WD = 2.9 mm", (10, 10, 20, 60), 80.0, (2.9, "mm")))
    assert parsed is None


@needs_tesseract
def test_dark_label_on_mid_grey_ground_is_read():
    # dark text on a grey (SEM-like) ground: darker than the fixed dark level, read relative to ground
    image, _ = bar_image(text="200 nm", bar_px=100, colour=(20, 20, 20), ground=105, font_px=24)
    result = read_scalebar(image)
    assert (result.value, result.unit) == (200.0, "nm")
    assert result.nm_per_px == pytest.approx(2.0, rel=0.02)


def test_blurred_thick_bar_is_found():
    from scipy import ndimage

    image = noisy_background(level=215)
    image[300:306, 100:326] = 0
    blurred = ndimage.gaussian_filter(image.astype(float), 1.2).astype(np.uint8)
    bars = find_bar_candidates(blurred)
    assert bars and bars[0]["length_px"] == pytest.approx(226, abs=1.5)


@pytest.mark.parametrize("value, is_round", [(200, True), (0.1, True), (2.5, True), (1000, True),
                                             (250, True), (2.35, False), (14.66, False)])
def test_scale_values_have_at_most_two_significant_digits(value, is_round):
    from miners.scalebar import _is_round_value

    assert _is_round_value(value) is is_round


@pytest.mark.parametrize("ocr, expected", [("tpm", (1.0, "µm")), ("l nm", (1.0, "nm")),
                                           ("the nm", None), ("| ym", None)])
def test_lone_one_read_as_letter_is_repaired(ocr, expected):
    from miners.scalebar import _fix_ocr

    assert parse_scale_text(_fix_ocr(ocr)) == expected


def test_dropped_micro_sign_stays_micro_when_nm_is_implausible():
    from miners.scalebar import _check_reading

    line = text_line("20 nm")
    box = ink_box(line)
    bar = {"polarity": "light", "length_px": 61.0}
    # 0.1 nm over 61 px would be 0.0016 nm/px: below any micrograph, so the µm reading stays
    *_, parsed = _check_reading(line, (bar, "0.1m", box, 10.0, (0.1, "µm")))
    assert parsed == (0.1, "µm")


@needs_tesseract
def test_blurred_white_bar_with_bold_label_above_on_grey_particles():
    # like EMPS c61a50a061: bold white "1000 nm" above a thick white bar, everything blurred,
    # on a mid-grey SEM ground with bright disks touching the bar
    from scipy import ndimage

    ground = noisy_background(level=100)
    rr, cc = np.mgrid[:400, :500]
    for r, c in ((330, 320), (380, 420), (360, 250)):
        ground[(rr - r) ** 2 + (cc - c) ** 2 < 35 ** 2] = 165
    image, (r0, c0, r1, c1) = draw_scalebar(ground, "1000 nm", 200, row=350, col=240,
                                            thickness_px=5, font_px=26, colour=(255, 255, 255),
                                            font="DejaVuSans-Bold.ttf")
    blurred = ndimage.gaussian_filter(image.astype(float), (1.0, 1.0, 0)).astype(np.uint8)
    result = read_scalebar(blurred)
    assert (result.value, result.unit) == (1000.0, "nm")
    assert result.nm_per_px == pytest.approx(1000 / 200, rel=0.02)


@needs_tesseract
def test_label_split_over_two_lines_is_read():
    from PIL import ImageDraw, ImageFont

    from miners.scalebar_synth import font_path

    canvas = Image.fromarray(noisy_background(level=60))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(font_path(), 22)
    draw.text((330, 280), "100", fill=255, font=font)  # number above the unit above the bar
    draw.text((336, 306), "nm", fill=255, font=font)
    image = np.asarray(canvas).copy()
    image[340:346, 300:420] = 255
    result = read_scalebar(image)
    assert (result.value, result.unit) == (100.0, "nm")
    assert result.nm_per_px == pytest.approx(100 / 120, rel=0.02)


# ---- fixes from the held-out failures (2026-11-21, third round), real EMPS crops ------------

def emps_crop(stem: str, rows: slice, cols: slice) -> np.ndarray:
    from miners.images import load_image

    return np.ascontiguousarray(load_image(EMPS / f"{stem}.png")[rows, cols])


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, rows, cols, value, unit, nm_per_px, rel", [
    # "1.0 µm" over a 178 px bar: tesseract reads "10 m"; the dot is a blob on the baseline
    pytest.param("15a3ba1c51", slice(380, None), slice(420, None), 1.0, "µm", 1000.0 / 178, 0.03,
                 id="dropped decimal point put back from the glyphs"),
    # the "1" of "100 nm" touches a dark particle, the line box held only "nm"
    pytest.param("31121ca5cf", slice(400, None), slice(380, None), 100.0, "nm", 100.0 / 66, 0.05,
                 id="number left out of the line box found by widening it"),
    # "100 nm" is read "100 n="; only "= <number>" or a field name marks a data bar
    pytest.param("3430b20071", slice(430, None), slice(0, 200), 100.0, "nm", 100.0 / 82, 0.05,
                 id="stray equals sign after the unit is not a data-bar field"),
    # "100 nm" in a white box: the grey image left of the box was read as a leading "1"
    pytest.param("736f1a3eb2", slice(400, None), slice(300, None), 100.0, "nm", 100.0 / 122, 0.05,
                 id="grey image beside a label box is no leading digit"),
    # "200 nm": a speck under "200" made it "2.00"
    pytest.param("8136144eaf", slice(400, None), slice(250, None), 200.0, "nm", 200.0 / 109, 0.05,
                 id="speck under a round number is no decimal point"),
    # "100    nm": the number is a text line of its own, read "100" with no unit
    pytest.param("b8e9061c90", slice(420, None), slice(0, 260), 100.0, "nm", 100.0 / 137, 0.05,
                 id="unit a wide word gap right of the number"),
    # a blurred 1-px grey line with end ticks on white, found only as a faint bar
    pytest.param("4628753cd8", slice(440, None), slice(0, 200), 100.0, "nm", 100.0 / 62, 0.05,
                 id="faint bar with end ticks"),
    # "200 nm" on texture read "“200 im)."; like a dropped micro sign, "im" is settled by the
    # glyph shapes: no descender, so nm
    pytest.param("a45586af89", slice(440, None), slice(0, 250), 200.0, "nm", 200.0 / 126, 0.05,
                 id="blurred nm read im is nm without a descender"),
])
def test_real_label_crops_are_read(stem, rows, cols, value, unit, nm_per_px, rel):
    result = read_scalebar(emps_crop(stem, rows, cols))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=rel)


def test_low_magnification_sem_pixel_sizes_are_plausible():
    from miners.scalebar import NM_PER_PX_RANGE, is_plausible_scale

    # EMPS 0a55e7c93f: 200 µm over 56 px = 3571 nm/px, an SEM overview
    assert is_plausible_scale(200, "µm", 56)
    assert not is_plausible_scale(1, "mm", 40)  # 25 µm/px: beyond any EMPS panel
    assert NM_PER_PX_RANGE[1] == 20000.0


def test_glyph_repair_inserts_point_and_fixes_eight():
    from miners.scalebar import _repair_digits

    line = text_line("1.0 µm")
    box = ink_box(line)
    assert _repair_digits(line, box, "10 µm", 10.0) == 1.0
    line = text_line("200 nm")
    box = ink_box(line)
    assert _repair_digits(line, box, "208 nm", 208.0) == 200.0  # the third glyph has one hole
    assert _repair_digits(line, box, "200 nm", 200.0) == 200.0  # nothing to repair


# ---- text-first route (fourth round, from the fresh set's failures), real EMPS crops ----------

@needs_tesseract
@needs_emps
def test_faint_bar_without_candidate_is_found_under_its_label():
    # "200 nm" over a faint light bar on a light TEM ground: no fixed-level bar candidate; the
    # label is read first (sparse OCR of the lower band) and the bar found by local contrast
    from miners.scalebar import find_bar_candidates

    crop = emps_crop("4b07dbd803", slice(300, None), slice(0, 400))
    assert find_bar_candidates(crop) == []
    result = read_scalebar(crop)
    assert (result.value, result.unit) == (200.0, "nm")
    assert result.nm_per_px == pytest.approx(200.0 / 186, rel=0.05)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, cols, value, unit, nm_per_px", [
    # dark "200 nm" (serif) above a dark bar: the line-box OCR of the bar-first route reads
    # nothing, sparse OCR of the bar's surroundings reads the label
    ("41bb4d19a4", slice(380, None), 200.0, "nm", 200.0 / 131),
    # "1 µm" whose OCR word box reaches down over the white bar under it
    ("6db657d4f7", slice(300, None), 1.0, "µm", 1000.0 / 68),
])
def test_text_first_route_reads_labels_the_line_boxes_miss(stem, cols, value, unit, nm_per_px):
    result = read_scalebar(emps_crop(stem, slice(380, None), cols))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.05)


@needs_tesseract
@needs_emps
def test_label_without_bar_is_no_detection():
    # the same faint-bar image with the bar painted over by its ground: the label alone is no
    # scale bar
    crop = emps_crop("4b07dbd803", slice(300, None), slice(0, 400)).copy()
    r0, c0, r1, c1 = read_scalebar(crop).bar_bbox
    crop[r0 - 2:r1 + 2, c0 - 2:c1 + 2] = np.median(crop[r1 + 3:r1 + 8, c0 - 2:c1 + 2], axis=0).astype(np.uint8)
    assert read_scalebar(crop).found is False


def test_local_bar_touched_by_a_particle_is_a_rectangle():
    from miners.scalebar import _local_bar_candidates

    image = noisy_background(shape=(200, 300), level=120)
    image[150:156, 60:200] = 250  # the bar
    image[120:150, 150:190] = 240  # a light particle touching the bar from above
    image[110:130, 70:130] = 30  # the label's place (dark text)
    bars = _local_bar_candidates(image, (110, 70, 130, 130))
    assert any(abs(b["length_px"] - 140) <= 1.5 and b["bbox"][0] == 150 for b in bars)


def test_region_edge_is_no_local_bar():
    from miners.scalebar import _local_bar_candidates

    image = noisy_background(shape=(200, 300), level=60)
    image[150:, :] = 250  # a white data bar below: its top edge contrasts on one side only
    assert _local_bar_candidates(image, (120, 100, 140, 160)) == []


@pytest.mark.parametrize("words, expected", [
    ([("200", 95, (10, 10, 30, 40)), ("nm", 90, (14, 46, 30, 70))], [(200.0, "nm")]),
    ([("1um", 80, (10, 10, 30, 50))], [(1.0, "µm")]),
    ([("WD", 90, (10, 0, 30, 25)), ("=", 90, (10, 30, 30, 36)), ("10", 90, (10, 42, 30, 60)),
      ("nm", 90, (10, 64, 30, 90))], []),  # a data-bar field
    ([("7.6mm", 90, (10, 10, 30, 60))], []),  # a working distance, not 7.6 nm
    ([("100", 90, (10, 10, 30, 40)), ("a", 90, (14, 44, 30, 54))], []),  # not 100 Å
    ([("200", 20, (10, 10, 30, 40)), ("nm", 25, (14, 46, 30, 70))], []),  # unsure OCR
])
def test_labels_from_sparse_ocr_words(words, expected):
    from miners.scalebar import _labels_from_words

    labels = _labels_from_words([{"text": t, "conf": float(c), "bbox": b} for t, c, b in words])
    assert [(lab["value"], lab["unit"]) for lab in labels] == expected


def test_text_ink_image_keeps_light_text_over_light_and_dark_grounds():
    from miners.scalebar import text_ink_image

    image = np.full((40, 80), 200, dtype=np.uint8)
    image[:, 40:] = 40  # half light, half dark ground
    image[15:25, 30:34] = 255  # a stroke over the light half
    image[15:25, 50:54] = 255  # and one over the dark half
    ink = text_ink_image(image, light=True) < 224  # 30 grey levels of top-hat and more
    assert ink[20, 31] and ink[20, 51]
    assert not ink[5, 10] and not ink[5, 60]  # grounds are no ink
    with pytest.raises(ValueError, match="2-D"):
        from miners.scalebar import find_scale_labels
        find_scale_labels(np.zeros((4, 4, 3), dtype=np.uint8))


# ---- sixth round (fixes from the fresh/fresh2 failures) -------------------------------------

def line_with_speck(text: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A text line with a dot-sized speck on the baseline after the first digit, and its box."""
    line = text_line(text).copy()
    box = ink_box(line)
    digit_cols = np.flatnonzero((line[box[0]:box[2]] > 160).any(axis=0))
    first_end = digit_cols[np.flatnonzero(np.diff(digit_cols) > 1)[0]]
    baseline = int(np.flatnonzero((line[:, box[1]:first_end + 1] > 160).any(axis=1)).max()) + 1
    line[baseline - 3:baseline, first_end + 2:first_end + 4] = 255
    return line, box


def test_speck_under_a_round_number_is_no_decimal_point():
    from miners.scalebar import _repair_digits

    line, box = line_with_speck("10 µm")
    assert _repair_digits(line, box, "10 µm", 10.0) == 1.0  # "1.0": a dropped point is put back
    line, box = line_with_speck("100 nm")
    assert _repair_digits(line, box, "100 nm", 100.0) == 100.0  # "10.0" is no label
    line, box = line_with_speck("200 nm")
    assert _repair_digits(line, box, "200 nm", 200.0) == 200.0  # nor "2.00"


def test_grey_ground_beside_a_label_box_is_no_ink():
    from miners.scalebar import _side_ground

    soft = np.zeros((20, 40))
    ink = np.zeros((20, 40), dtype=bool)
    soft[:, :4] = 0.5  # the image beside a white label box
    ink[5:15, 10:12] = True  # a glyph stroke
    soft[ink] = 1.0
    soft[5:15, 12] = 0.5  # its anti-aliased rim
    soft[8:10, 20:23] = 0.5  # a faint blob inside the box
    ground = _side_ground(soft, ink)
    assert ground[:, :4].all()
    assert not ground[:, 4:].any()


def test_white_bar_on_bright_texture_is_found_at_the_saturated_level():
    # texture reaching the fixed light level glues to the bar there; at 245 the bar stands alone
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(165, 25, (200, 300)), 0, 235).astype(np.uint8)
    image[140:148, 60:180] = 255
    bars = [b for b in find_bar_candidates(image) if b["polarity"] == "light"]
    assert bars and bars[0]["bbox"] == (140, 60, 148, 180)
    assert bars[0]["length_px"] == pytest.approx(120, abs=1.5)


@needs_tesseract
@needs_emps
def test_small_white_label_over_a_white_bar_on_texture():
    # "10 nm" (8 px digits) over a pure white bar on bright TEM texture: the bar is found only at
    # the saturated level, and a speck between "1" and "0" is no decimal point in text this small
    result = read_scalebar(emps_crop("75e968af41", slice(400, None), slice(0, 200)))
    assert (result.value, result.unit) == (10.0, "nm")


def test_low_contrast_bar_length_from_its_half_level_not_its_component():
    # a black bar on a grey (78) ground: its anti-aliased end columns (66) fall under the dark
    # level and widen the component by a column each side; the length is still the half-level one
    image = np.full((120, 300), 78, dtype=np.uint8)
    image[100:104, 50:74] = 5
    image[100:104, 49] = 66
    image[100:104, 74] = 66
    best = find_bar_candidates(image)[0]
    assert best["bbox"][3] - best["bbox"][1] == 26
    assert best["length_px"] == pytest.approx(24.0, abs=0.3)


# ---- sixth round: fixes from the failures of the fresh, fresh2 and fresh3 splits -----------

@needs_emps
def test_blurred_thick_bar_keeps_its_contrast_past_the_edge_rows():
    # an 8-row white bar (254) on a light grey ground (175): its blurred edge rows (217, 206)
    # are within MIN_CONTRAST of the bar's mean, so the rows just above/below showed no contrast
    bars = find_bar_candidates(emps_crop("6d0f510327", slice(400, None), slice(300, None)))
    lengths = [b["length_px"] for b in bars if b["polarity"] == "light"]
    assert lengths and lengths[0] == pytest.approx(129, abs=2)


@needs_emps
def test_blurred_thick_bar_length_from_the_ground_past_its_fade():
    # a white bar fading over ~4 columns into a grey (115) ground: the saturated component is
    # 46 px, the half-level length (the drawn bar) 50 px
    bars = find_bar_candidates(emps_crop("586dc6cc59", slice(400, None), slice(0, 200)))
    lengths = [b["length_px"] for b in bars if b["polarity"] == "light"]
    assert lengths and lengths[0] == pytest.approx(50, abs=1.5)


@needs_tesseract
@needs_emps
def test_blurred_label_read_with_label_characters_only():
    # "5 µm" in big blurred glyphs: free OCR reads "Spm"; limited to LABEL_CHARS it reads "5um"
    result = read_scalebar(emps_crop("482193653a", slice(380, None), slice(380, None)))
    assert (result.value, result.unit) == (5.0, "µm")
    assert result.nm_per_px == pytest.approx(5000 / 118, rel=0.05)


def test_label_chars_route_needs_a_whole_clean_reading():
    # the last route accepts "<number> nm|um|µm" and nothing else
    from miners.scalebar import _STRICT_LABEL_RE

    assert _STRICT_LABEL_RE.fullmatch("5um") and _STRICT_LABEL_RE.fullmatch("0.5 nm")
    assert not _STRICT_LABEL_RE.fullmatch("200m.") and not _STRICT_LABEL_RE.fullmatch("2m")


# ---- seventh round: fixes from the failures of the five development splits ------------------

@pytest.mark.parametrize("value, expected", [
    (168.0, 100.0), (108.0, 100.0), (208.0, 200.0), (299.0, 200.0), (258.0, 250.0),
    (200.0, 200.0), (0.5, 0.5), (123.0, 123.0), (96.0, 96.0), (906.0, 906.0), (1008.0, 1000.0),
])
def test_blurred_zeros_read_as_6_8_9_become_round(value, expected):
    from miners.scalebar import _round_misread_zeros

    assert _round_misread_zeros(value) == expected


@pytest.mark.parametrize("value, expected", [
    # misread labels of the development splits: 30 um, 1 um, 200 nm, 500 nm
    (930.0, 30.0), (41.0, 1.0), (4200.0, 200.0), (5500.0, 500.0),
    # usual values, one-digit values, decimals, and two digits whose rest is no usual value stay
    (35.0, 35.0), (250.0, 250.0), (150.0, 150.0), (75.0, 75.0), (20.0, 20.0), (5.0, 5.0),
    (0.5, 0.5), (2.5, 2.5), (96.0, 96.0), (19.0, 19.0), (123.0, 123.0), (1000.0, 1000.0),
])
def test_a_stray_digit_in_front_of_a_label_is_dropped(value, expected):
    from miners.scalebar import _drop_stray_leading_digit

    assert _drop_stray_leading_digit(value) == expected


def test_pieces_of_one_character_are_joined_and_neighbours_are_not():
    from miners.scalebar import _join_broken_glyphs

    def box(r0, r1, c0, c1):
        return slice(r0, r1), slice(c0, c1)

    def spans(boxes):
        return sorted((b[0].start, b[0].stop, b[1].start, b[1].stop) for b in boxes)

    # a "2" binarised into upper and lower strokes; a slashed "0" cut into left and right halves
    assert spans(_join_broken_glyphs([box(5, 12, 8, 16), box(12, 17, 9, 16)])) == [(5, 17, 8, 16)]
    assert spans(_join_broken_glyphs([box(2, 13, 15, 21), box(3, 14, 17, 24)])) == [(2, 14, 15, 24)]
    # "n" beside an "m" fused with a particle edge reaching over the n: apart; so are two digits
    apart = [box(5, 14, 43, 51), box(0, 14, 45, 58)]
    assert spans(_join_broken_glyphs(apart)) == spans(apart)
    digits = [box(1, 15, 8, 16), box(1, 15, 18, 26)]
    assert spans(_join_broken_glyphs(digits)) == spans(digits)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, text, nm_per_px", [
    ("83fd5c9288", "200m", 1.709),  # the "m" fused with a particle edge; the "n" decides
    ("f98c5fb82a", "20m", 0.2247),  # particles inside the OCR box are taller than the digits
])
def test_dropped_micro_sign_settled_on_the_first_unit_letter(stem, text, nm_per_px):
    """"200 nm" / "20 nm" labels that tesseract reads as "200m" / "20m": the unit's first
    letter sits on the digits' baseline, so nm (they read as 200 µm / 20 µm before)."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert result.text.startswith(text) and result.unit == "nm"
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.02)


@needs_tesseract
@needs_emps
def test_gaps_between_bold_dark_digits_give_no_decimal_point():
    """EMPS fc9e19325c, a bold black "20 nm": read as light text, the gaps between the strokes
    passed for two digits with a speck between them, so "20" became 2.0 (0.039 nm/px). The
    bar's polarity (dark) is now tried first."""
    result = read_scalebar(emps_crop("fc9e19325c", slice(None), slice(None)))
    assert (result.value, result.unit) == (20.0, "nm")
    assert result.nm_per_px == pytest.approx(0.3922, rel=0.02)


@pytest.mark.parametrize("text, count", [("1.0m", 2), ("200 nm", 3), ("“200 im).", 3), ("nm", None)])
def test_digit_count_of_the_label_number(text, count):
    from miners.scalebar import _digit_count

    assert _digit_count(text) == count


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, text, value, unit, nm_per_px", [
    ("8f9db31734", ("930 um", "330 pm"), 30.0, "µm", 196.08),  # a bar end read as a leading 9
    ("ae843e9fc0", "41 um", 1.0, "µm", 7.299),
    ("f485e2051b", "4200 nm", 200.0, "nm", 2.532),
    ("ca780314cd", "S500nm", 500.0, "nm", 3.401),
])
def test_labels_with_a_stray_leading_digit_read_right(stem, text, value, unit, nm_per_px):
    """Whole EMPS micrographs whose label tesseract reads with one digit too many in front (the
    annotated nm/px beside each); before the repair they read 930 µm, 41 µm, 4200 nm, 5500 nm."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert any(t in result.text for t in ((text,) if isinstance(text, str) else text))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.02)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, rows, cols, value, nm_per_px", [
    # slashed zeros of a TEM font: "108 nm" (the blurred 2-row bar is measured 25 px, not 28:
    # its length is not checked)
    ("47286679c2", slice(420, None), slice(260, 440), 100.0, None),
    # blurred serif zeros: "208 am"
    ("173c98ef82", slice(420, None), slice(0, 160), 200.0, 200.0 / 58),
    # slashed zeros and a blurred "nm": free OCR "168 ne", label characters "168n" (no descender)
    ("427ebc9e15", slice(420, None), slice(290, 460), 100.0, None),
])
def test_blurred_zeros_of_a_label_read_as_zeros(stem, rows, cols, value, nm_per_px):
    result = read_scalebar(emps_crop(stem, rows, cols))
    assert (result.value, result.unit) == (value, "nm")
    if nm_per_px is not None:
        assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.05)


@needs_emps
@pytest.mark.parametrize("stem, rows, cols, bar_px", [
    # a blurred 1-px grey line (121) with end ticks on white: no pixel reaches DARK_MAX
    ("4628753cd8", slice(440, None), slice(0, 200), 62),
    # a dark-grey bar (78) on grey texture (160) with short gaps where the texture darkens
    ("74391d74bd", slice(420, None), slice(0, 330), 203),
])
def test_faint_bar_found_against_its_local_ground(stem, rows, cols, bar_px):
    from miners.scalebar import find_faint_bar_candidates

    image = emps_crop(stem, rows, cols)
    assert not [b for b in find_bar_candidates(image) if abs(b["length_px"] - bar_px) <= 3]
    lengths = [b["length_px"] for b in find_faint_bar_candidates(image)]
    assert lengths and lengths[0] == pytest.approx(bar_px, rel=0.03)


def test_faint_bar_candidates_on_plain_texture_are_none():
    from miners.scalebar import find_faint_bar_candidates

    assert find_faint_bar_candidates(noisy_background()) == []


@needs_tesseract
@needs_emps
def test_lone_digit_over_a_short_bar_does_not_take_the_label():
    # the "2" of "2 µm" read alone in a plain band over a 15-px stroke: extending that band to
    # the right read "2um" and gave the label to the stroke instead of the 62-px bar
    result = read_scalebar(emps_crop("a027b64ae9", slice(420, None), slice(0, 200)))
    assert (result.value, result.unit) == (2.0, "µm")
    assert result.bar_px == pytest.approx(62, abs=2)


@needs_tesseract
@needs_emps
def test_stroke_of_a_label_is_no_faint_bar():
    # a big blurred "1 µm": a stroke of its glyphs is a faint-bar candidate whose own label box
    # overlaps it ("1 pm" over 39 px); the label of a bar never covers the bar
    result = read_scalebar(emps_crop("78847f96ee", slice(400, None), slice(0, 260)))
    assert not result.found or result.bar_px == pytest.approx(155, rel=0.05)


# ---- coloured labels (eighth round): bar and text read from the chroma image -----------------
# Failures of the synthetic benchmark (seed 0, cases 7, 12, 43, 84), redrawn on the same EMPS
# backgrounds: a yellow bar on a light image, red on a dark one, green after noise and JPEG. Their
# grey level is near the ground's; only their chroma stands out.

COLOUR_CASES = [
    # stem, text, value, unit, bar_px, (row, col), colour, font, font_px, thickness, text_above, ticks, noise, jpeg
    ("31a727b95d", "100 nm", 100.0, "nm", 132, (469, 460), (255, 255, 0), "DejaVuSans-Bold.ttf", 24, 9,
     True, False, None, None),
    ("5842aa1a32", "0.2 µm", 0.2, "µm", 138, (474, 38), (255, 0, 0), "DejaVuSerif-Bold.ttf", 23, 5,
     True, True, None, 58),
    ("55511ff512", "500 nm", 500.0, "nm", 112, (420, 485), (0, 255, 0), "DejaVuSans.ttf", 30, 12,
     False, False, 8.65, 78),
    ("6752c27137", "100 nm", 100.0, "nm", 103, (471, 39), (255, 0, 0), "DejaVuSans-Bold.ttf", 24, 7,
     True, False, None, None),
]


def coloured_case(stem, text, bar_px, at, colour, font, font_px, thickness, text_above, ticks,
                  noise, jpeg) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    import io

    from miners.images import load_image

    image, bbox = draw_scalebar(load_image(EMPS / f"{stem}.png"), text, bar_px, row=at[0], col=at[1],
                                thickness_px=thickness, font_px=font_px, colour=colour,
                                ticks=ticks, text_above=text_above, font=font)
    if noise:
        rng = np.random.default_rng(0)
        image = np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg)
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return image, bbox


@needs_emps
def test_coloured_bar_grey_as_its_ground_is_found_and_measured():
    from miners.images import to_gray
    from miners.scalebar import MIN_CONTRAST

    stem, text, _, _, bar_px, at, colour, font, font_px, thickness, above, ticks, noise, jpeg = COLOUR_CASES[0]
    image, (r0, c0, r1, c1) = coloured_case(stem, text, bar_px, at, colour, font, font_px, thickness,
                                            above, ticks, noise, jpeg)
    gray = to_gray(image)
    # yellow (grey 226) over a light image: no grey-level contrast with the rows around it
    assert abs(float(gray[r0:r1, c0:c1].mean()) - float(gray[r1 + 2:r1 + 6, c0:c1].mean())) < MIN_CONTRAST
    bars = [b for b in find_bar_candidates(image) if b["polarity"] == "colour"]
    assert bars and bars[0]["bbox"] == (r0, c0, r1, c1)
    assert bars[0]["length_px"] == pytest.approx(bar_px, abs=0.5)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("case", COLOUR_CASES, ids=[c[0] for c in COLOUR_CASES])
def test_coloured_label_is_read_from_its_chroma(case):
    stem, text, value, unit, bar_px, at, colour, font, font_px, thickness, above, ticks, noise, jpeg = case
    image, _ = coloured_case(stem, text, bar_px, at, colour, font, font_px, thickness, above, ticks,
                             noise, jpeg)
    result = read_scalebar(image)
    assert result.found and (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(to_nm(value, unit) / bar_px, rel=0.02)


def test_ocr_label_reads_coloured_text_from_the_chroma_image(monkeypatch):
    import miners.scalebar as scalebar
    from miners.images import to_gray

    seen = []
    monkeypatch.setattr(scalebar, "_ocr_box", lambda image, box, polarity, **kw: seen.append(
        (image.copy(), polarity)) or ("", 0.0))
    rgb = np.full((40, 80, 3), 200, dtype=np.uint8)
    rgb[10:30, 10:20] = (255, 255, 0)  # yellow ink, grey 226 on grey 200
    gray = to_gray(rgb)
    scalebar._ocr_label(gray, rgb, (5, 5, 35, 75), "colour")
    scalebar._ocr_label(gray, rgb, (5, 5, 35, 75), "dark")
    (chroma, polarity), (grey_image, grey_polarity) = seen
    assert polarity == "light" and chroma[20, 15] == 255 and chroma[0, 0] == 0
    assert grey_polarity == "dark" and np.array_equal(grey_image, gray)


def test_synthetic_cases_have_micrograph_pixel_sizes():
    # a "10 Å" label over more than 200 px (0.045 Å/px) is no micrograph; the generator shortens
    # such bars instead of asking the reader for an impossible scale
    from miners.scalebar import NM_PER_PX_RANGE
    from miners.scalebar_synth import make_synthetic_case

    rng = np.random.default_rng(1)
    background = noisy_background(shape=(512, 820), level=120)
    sizes = [to_nm(c.value, c.unit) / c.bar_px
             for c in (make_synthetic_case(background, rng) for _ in range(120))]
    assert min(sizes) >= NM_PER_PX_RANGE[0]


def test_a_glyph_touching_the_bar_is_kept_when_the_bar_leaves_the_crop():
    """A light "µ" whose descender touches the bar under it: bar and glyph are one blob that
    touches the crop border, so the whole blob was dropped as ground and the "µm" came out
    hollow. Cut at the bar's rule, the glyph stays; the bar and real ground still go."""
    from miners.scalebar import _drop_border_blobs

    ink = np.zeros((30, 80), dtype=bool)
    ink[22:27, 0:80] = True  # the bar, across the whole crop
    ink[6:22, 20:24] = True  # a stroke standing on the bar (the descender of a "µ")
    ink[6:16, 40:44] = True  # a free glyph
    ink[0:30, 76:80] |= True  # ground at the right edge, full height
    plain = _drop_border_blobs(ink)
    assert not plain[6:20, 20:24].any()  # the old behaviour: the stroke went with the bar
    kept = _drop_border_blobs(ink, rule_px=24)
    assert kept[6:20, 20:24].all() and kept[6:16, 40:44].all()
    assert not kept[23:26, 30:70].any() and not kept[:, 77:].any()


@pytest.mark.parametrize("text, parsed", [("2 pm_", (2.0, "µm")), ("100 nm_", (100.0, "nm"))])
def test_an_underscore_from_the_bar_does_not_hide_the_unit(text, parsed):
    """The bar under a label comes out as "_" glued to the unit: "pm_" then escaped the µm
    repair (no word boundary) and read as picometres."""
    from miners.scalebar import _fix_ocr

    assert parse_scale_text(_fix_ocr(text)) == parsed


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, value, unit, nm_per_px", [
    ("78847f96ee", 1.0, "µm", 6.452),  # bold "1 µm"; before: "2 pm_" won as a clean reading
    ("ce2f96aae1", 3.0, "µm", 10.909),  # serif "3.0 µm", the µ's tail on the bar
])
def test_labels_whose_micro_sign_touches_the_bar_read_right(stem, value, unit, nm_per_px):
    """Whole EMPS micrographs (annotated nm/px beside each) that read nothing before."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.02)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, value, unit, nm_per_px", [
    ("f068954421", 30.0, "nm", 0.7317),  # bold "30 nm", 27 px tall, 27 px over a 41 px bar
    ("9c68e03e41", 500.0, "nm", 14.286),  # "500 nm" over a 35 px bar; another bar had won
])
def test_a_tall_label_over_a_short_bar_is_found(stem, value, unit, nm_per_px):
    """Glyphs were looked for 0.7 bar lengths (at least 30 px) from a bar, so the top of a tall
    label over a short bar lay outside the window: nothing was read. A bar whose window read
    nothing is now searched again 45 px out."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.03)


def test_a_blurred_bar_seen_in_one_row_keeps_its_faded_ends():
    """A 3-row bar blurred so that only its middle row passes the bar level: its ends fade over
    ~1.5 px each side, so the half-contrast length is 2-3 px longer than the component. That
    used to be taken for a stray crossing and the component's length kept (25 px for a 28 px
    bar, 12 % short)."""
    from miners.scalebar import _subpixel_length

    gray = np.zeros((5, 40))
    gray[2, 10:31] = 200.0
    gray[2, [7, 8, 9]] = [41.0, 102.0, 156.0]
    gray[2, [31, 32, 33]] = [175.0, 126.0, 65.0]
    length = _subpixel_length(gray, 2, 3, 10, 31, 200.0)
    assert length == pytest.approx(31.867 - 8.343, abs=0.01)  # half-contrast crossings
    assert length - 21 > 2.0  # past the old 2 px limit


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, nm_per_px", [("427ebc9e15", 3.5714), ("47286679c2", 3.5714)])
def test_thin_blurred_bars_under_slashed_zero_labels_measure_right(stem, nm_per_px):
    """Two EMPS micrographs with a blurred 28 px bar over a "100 nm" label: 4.0 nm/px before."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert (result.value, result.unit) == (100.0, "nm")
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.05)


def test_the_far_label_search_has_its_own_ocr_budget(monkeypatch):
    """The second, farther search of a short bar's label spends its own tesseract calls: taken
    from the image's budget, it left none for the right bar (synthetic case 186 went unread)."""
    import miners.scalebar as scalebar

    calls = []

    def fake_read(gray, arr, bar, budget, min_reach=scalebar.TEXT_REACH_PX):
        calls.append((min_reach, budget[0], budget))
        budget[0] -= 2
        return "", None, 0.0

    monkeypatch.setattr(scalebar, "_read_text_near", fake_read)
    monkeypatch.setattr(scalebar, "_tesseract_available", lambda: True)
    monkeypatch.setattr(scalebar, "_read_text_first", lambda *args: None)
    monkeypatch.setattr(scalebar, "_read_label_chars", lambda *args: None)
    image = np.full((200, 300), 120, dtype=np.uint8)
    image[180:184, 20:60] = 255  # a 40-px bar: 0.7 x 40 < 45 px
    scalebar.read_scalebar(image)
    near = [c for c in calls if c[0] == scalebar.TEXT_REACH_PX]
    far = [c for c in calls if c[0] == scalebar.FAR_TEXT_REACH_PX]
    assert near and far
    assert near[0][1] == scalebar.MAX_OCR_CALLS and far[0][1] == scalebar.MAX_FAR_OCR_CALLS
    assert all(c[2] is not near[0][2] for c in far)


def test_an_outlined_bar_is_measured_to_the_middle_of_its_stroke():
    """A white bar drawn with a 3-px black stroke on grey ground: the half-level ends of the
    white body are one stroke width short of the rectangle as drawn (to the stroke's middle)."""
    from miners.scalebar import _outlined_length

    gray = np.full((40, 140), 200, dtype=np.uint8)
    gray[15:25, 17:123] = 30  # stroke: 3 px round a body of 100 x 4 px
    gray[18:22, 20:120] = 250
    bars = [b for b in find_bar_candidates(gray) if b["polarity"] == "light"]
    assert len(bars) == 1
    # body 100 px, outline 3 px each end: the stroke's middle 103 px apart
    assert bars[0]["length_px"] == pytest.approx(103.0, abs=0.3)
    assert _outlined_length(gray, 18, 22, 20, 120, 250.0) == pytest.approx(103.0, abs=0.1)


def test_a_sharpening_halo_is_no_outline():
    """A white bar with a grey undershoot beside it (unsharp masking) keeps its own length."""
    from miners.scalebar import _outlined_length

    gray = np.full((40, 140), 200, dtype=np.uint8)
    gray[16:24, 18:122] = 150  # halo 2 px wide, 50 grey levels under the ground
    gray[18:22, 20:120] = 250
    assert _outlined_length(gray, 18, 22, 20, 120, 250.0) is None
    bars = [b for b in find_bar_candidates(gray) if b["polarity"] == "light"]
    assert bars[0]["length_px"] == pytest.approx(100.0, abs=1.0)  # not 102-104


def test_a_black_label_box_round_a_white_bar_is_no_outline():
    """Synthetic case 49 (seed 0): a white bar in a filled black box with text above it in the
    box; taking the box for an outline made the bar 90.5 px for 84."""
    from miners.scalebar import _outlined_length

    gray = np.full((60, 160), 170, dtype=np.uint8)
    gray[10:44, 12:142] = 0  # the box: text rows above the bar, 6-px margins round it
    gray[34:38, 30:124] = 250
    assert _outlined_length(gray, 34, 38, 30, 124, 250.0) is None
    gray[30:44, 12:142] = 170  # box only round the bar, 8 px margin at the ends: still no stroke
    gray[30:42, 22:132] = 0
    gray[34:38, 30:124] = 250
    assert _outlined_length(gray, 34, 38, 30, 124, 250.0) is None


def test_specks_beside_a_label_are_dropped_and_decimal_points_kept():
    from miners.scalebar import _drop_specks_of

    ink = np.zeros((40, 120), dtype=bool)
    ink[5:35, 10:30] = True  # a digit, 600 px
    ink[31:35, 34:38] = True  # a decimal point, 16 px (2.7 %)
    ink[30:32, 100:102] = True  # a speck, 4 px (0.7 %)
    out = _drop_specks_of(ink)
    assert out[31:35, 34:38].all() and out[5:35, 10:30].all()
    assert not out[30:32, 100:102].any()


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, value, unit, nm_per_px", [
    ("a1e18db01a", 5.0, "µm", 19.305),  # serif "5 µm": specks and the bar's rim read "(Sym ,"
    ("b3e7900e39", 100.0, "nm", 0.9901),  # outlined bar: 96 px body, 101 px drawn
    ("ed3547f3da", 5.0, "nm", 0.1389),  # dark bar ending in a dark-grey shoulder: 32.8 px for 36
])
def test_serif_label_outlined_bar_and_shoulder_end_read_right(stem, value, unit, nm_per_px):
    """Whole EMPS micrographs that read 5.4 µm, 1.043 nm/px (5.4 % off) and 0.152 nm/px (9.6 %
    off) before."""
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert (result.value, result.unit) == (value, unit)
    assert result.nm_per_px == pytest.approx(nm_per_px, rel=0.03)


def test_a_bar_end_fading_through_a_shoulder_is_measured_to_the_ground():
    """EMPS ed3547f3da's dark bar (~38) ends in three columns of dark grey (~71) before the
    ground (~170): the half level between bar and that near grey cut it 3 px short (32.8 px for
    36); half-way to the ground beyond the shoulder gives the drawn end. A plain end is kept."""
    from miners.scalebar import _subpixel_length

    gray = np.full((5, 60), 170.0)
    gray[2, 10:40] = 38.0
    gray[2, 40:43] = 71.0  # shoulder
    length = _subpixel_length(gray, 2, 3, 10, 40, 38.0)
    assert length == pytest.approx(42.333 - 9.5, abs=0.02)  # half-level crossings 9.5, 42.33
    gray[2, 40:43] = 170.0
    assert _subpixel_length(gray, 2, 3, 10, 40, 38.0) == pytest.approx(30.0, abs=0.3)


def test_a_bar_cut_in_two_at_one_level_is_measured_whole():
    """JPEG left the last 26 px of a white bar at 244: at the near-white level (245) the bar is a
    134-px piece that scored a little above the whole 160-px bar found at the lower level, and
    won (nm/px 19 % too large in the QA's JPEG case)."""
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(60, 10, (300, 400)), 0, 255).astype(np.uint8)
    image[250:256, 100:234] = 250
    image[250:256, 234:260] = 244
    best = find_bar_candidates(image)[0]
    assert best["bbox"] == (250, 100, 256, 260) and best["length_px"] == pytest.approx(160, abs=0.5)


@pytest.mark.parametrize("ocr, reading", [
    ("o5 um", (0.5, "µm")),  # a dropped point: no label reads "05 µm" (was 5 µm)
    ("05 um", (0.5, "µm")),
    (",20nm ,", (20.0, "nm")),  # a speck read as a leading comma (was 0.2 nm)
    ("0.5 um", (0.5, "µm")), ("500 nm", (500.0, "nm")), ("1O nm", (10.0, "nm")), ("2005 nm", (2005.0, "nm")),
])
def test_ocr_repairs_of_leading_zeros_and_commas(ocr, reading):
    from miners.scalebar import _parse_label

    assert _parse_label(ocr) == reading


def test_scalebar_cli_says_when_a_bar_has_no_readable_label_and_takes_a_caption(tmp_path):
    image, _ = draw_scalebar(noisy_background(level=60), " ", 120, row=340, col=300, font_px=22)
    path = tmp_path / "bar.png"
    Image.fromarray(image).save(path)
    runner = CliRunner()
    plain = runner.invoke(cli, ["scalebar", str(path)])
    assert plain.exit_code == 0 and "a bar of 120" in plain.output and "--caption" in plain.output
    stated = runner.invoke(cli, ["scalebar", str(path), "--caption", "TEM image. Scale bar, 50 nm.", "--json"])
    reading = json.loads(stated.output)
    assert reading["source"] == "caption" and reading["nm_per_px"] == pytest.approx(50 / 120, rel=0.02)
    blank = tmp_path / "blank.png"
    Image.fromarray(noisy_background(level=60)).save(blank)
    assert runner.invoke(cli, ["scalebar", str(blank)]).output.strip() == "no scale bar found"


# ---- QA cases left open by the thirty-first session ------------------------------------------

def label_touching_a_particle(text: str, *, light: bool, font: str = "DejaVuSans.ttf",
                              font_px: int = 26, below: bool = False, seed: int = 0) -> np.ndarray:
    """A 400x520 panel, a 120 px bar with ``text`` above it, and a particle (a disk of the text's
    polarity, fainter than the text) touching the first letter of the unit from above or below."""
    from PIL import ImageDraw, ImageFont

    from miners.scalebar_synth import font_path

    ground = noisy_background((400, 520), level=80 if light else 185, seed=seed).astype(float)
    pil_font = ImageFont.truetype(font_path(font), font_px)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=pil_font)
    row, col, gap = 340, 360, max(3, font_px // 4)
    left = col + 60 - (x1 - x0) / 2 - x0  # where draw_scalebar puts the text
    number = text.split(" ")[0] + " "
    letter_c = left + (pil_font.getlength(number) + pil_font.getlength(number + text[len(number)])) / 2
    baseline = row - gap - (y1 - y0) - y0 + y1
    centre_r = baseline + 0.45 * font_px if below else baseline - 0.85 * font_px
    rr, cc = np.mgrid[:400, :520]
    radius = (0.5 if below else 0.45) * font_px
    ground[(rr - centre_r) ** 2 + (cc - letter_c) ** 2 < radius ** 2] += 65 if light else -70
    colour = (255, 255, 255) if light else (0, 0, 0)
    image, _ = draw_scalebar(np.clip(ground, 0, 255).astype(np.uint8), text, 120, row=row, col=col,
                             thickness_px=max(3, font_px // 4), font_px=font_px, colour=colour,
                             font=font)
    return image


@needs_tesseract
@pytest.mark.parametrize("light, font, font_px, seed", [
    (True, "DejaVuSans.ttf", 32, 0),  # was read "5 im": 5 µm
    (False, "DejaVuSans.ttf", 18, 0),  # "5 Hm"
    (False, "DejaVuSans-Bold.ttf", 18, 1),  # "5 im"
])
def test_five_nm_label_touching_a_particle_is_not_read_as_micrometres(light, font, font_px, seed):
    # the particle makes tesseract misread the "n"; the repair took it for a micro sign (1000x
    # off) because the glyph check could not isolate the "n" (DejaVu Sans' x-height failed the
    # letters' start test by a pixel; specks of the particle joined to the "n" made it a digit)
    # or was not asked ("Hm")
    image = label_touching_a_particle("5 nm", light=light, font=font, font_px=font_px, seed=seed)
    result = read_scalebar(image)
    assert (result.value, result.unit) == (5.0, "nm")
    assert result.nm_per_px == pytest.approx(5 / 120, rel=0.03)


@pytest.mark.parametrize("drawn, ocr, reading", [
    ("5 nm", "5pm", (5.0, "nm")), ("5 nm", "5 Hm", (5.0, "nm")),
    ("5 µm", "5pm", (5.0, "µm")), ("5 µm", "5 Hm", (5.0, "µm")), ("5 um", "5 Hm", (5.0, "µm")),
])
def test_micro_sign_made_of_a_whole_n_is_undone(drawn, ocr, reading):
    from miners.scalebar import _check_reading

    # an "n" with a particle under or over it comes out of tesseract as "p" or "H"; _fix_ocr
    # makes both a micro sign, which only the glyphs (an n: an arch over two legs) can undo
    line = text_line(drawn)
    box = ink_box(line)
    bar = {"polarity": "light", "length_px": 100.0}
    *_, parsed = _check_reading(line, (bar, ocr, box, 60.0, (5.0, "µm")))
    assert parsed == reading


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, text", [("f29baed81b", "1pm"), ("41c25dca24", "lum")])
def test_micro_labels_whose_glyphs_show_no_descender_stay_micrometres(stem, text):
    # a faint µ whose tail the glyph check loses ("1pm") and a typed "u" ("lum"): no "n", so the
    # first version of the rule above, which took any micro sign without a descender for an "n",
    # made both 1 nm
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert result.text == text and (result.value, result.unit) == (1.0, "µm")


@needs_tesseract
@pytest.mark.parametrize("text", ["2 m", "1 cm", "50 m"])
@pytest.mark.parametrize("light", [True, False])
def test_labels_in_metres_or_centimetres_give_no_pixel_size(text, light, caplog):
    # a photograph in a figure: tesseract reads "2m", "1m", "50m", which became 2 µm, 1 nm and
    # 50 nm (the micro sign put back, then taken away again for want of a descender)
    ground = noisy_background((400, 520), level=70 if light else 185, seed=24)
    image, _ = draw_scalebar(ground, text, 150, row=340, col=330, thickness_px=6, font_px=24,
                             colour=(255,) * 3 if light else (0,) * 3)
    result = read_scalebar(image)
    assert not result.found and result.nm_per_px is None
    unit = "centimetres" if "cm" in text else "metres"
    assert any(unit in record.getMessage() for record in caplog.records)


@needs_tesseract
@needs_emps
@pytest.mark.parametrize("stem, text, bar_px", [("8e68b05e0e", "1m", 59), ("7988097925", "1.0m", 177)])
def test_micrometre_labels_read_as_a_bare_m_stay_micrometres(stem, text, bar_px):
    # "1 µm" labels whose micro sign tesseract drops: no metres, whatever their "m" looks like
    result = read_scalebar(emps_crop(stem, slice(None), slice(None)))
    assert result.text == text and (result.value, result.unit) == (1.0, "µm")
    assert result.nm_per_px == pytest.approx(1000 / bar_px, rel=0.03)


def speckled_ground(shape: tuple[int, int], seed: int, level: float = 170.0) -> np.ndarray:
    """Light grey ground with dark particles of 4-25 px radius and noise (the QA pass's panels)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ground = np.full(shape, level)
    rr, cc = np.mgrid[:h, :w]
    for _ in range(max(5, h * w // 8000)):
        r0, c0 = rng.uniform(0, h), rng.uniform(0, w)
        radius = rng.uniform(4, max(6, min(h, w) / 20))
        ground[(rr - r0) ** 2 + (cc - c0) ** 2 < radius ** 2] -= 60 * rng.uniform(0.5, 1)
    ground += rng.normal(0, 12, shape)
    return np.clip(ground, 0, 255).astype(np.uint8)


def twenty_angstrom_panel() -> np.ndarray:
    """A black 120 px bar with "20 Å" (DejaVu Sans, 24 px) above it on :func:`speckled_ground`;
    a particle lies behind the "0 Å"."""
    from PIL import ImageDraw, ImageFont

    from miners.scalebar_synth import font_path

    canvas = Image.fromarray(speckled_ground((512, 512), seed=3))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.truetype(font_path(), 24)
    x0, y0, x1, y1 = draw.textbbox((0, 0), "20 Å", font=font)
    top = 512 - 20 - (12 + y1 - y0)
    draw.rectangle([372, top + y1 - y0 + 6, 491, top + y1 - y0 + 11], fill=0)
    draw.text((372 + (120 - (x1 - x0)) // 2 - x0, top - y0), "20 Å", font=font, fill=0)
    return np.asarray(canvas)


@needs_tesseract
def test_a_twenty_angstrom_label_is_read_over_its_bar_not_over_the_foot_of_its_2():
    # tesseract reads the label "20°A" (the ring of the Å apart), which did not parse; the foot
    # of the "2" (11 px, black at the near-black level) was then a bar with the label "2A": 2 Å
    result = read_scalebar(twenty_angstrom_panel())
    assert (result.value, result.unit) == (20.0, "Å")
    assert result.bar_px == pytest.approx(120, abs=1.0)
    assert result.nm_per_px == pytest.approx(2.0 / 120, rel=0.02)


@needs_tesseract
def test_a_stroke_inside_a_longer_bars_label_is_no_bar(monkeypatch):
    import miners.scalebar as scalebar

    # without the "20°A" repair the label is unread, and the foot of its "2", inside the label's
    # box, must not stand in for the bar
    fix_ocr = scalebar._fix_ocr
    monkeypatch.setattr(scalebar, "_fix_ocr", lambda text: fix_ocr(text.replace("°", "~")))
    result = read_scalebar(twenty_angstrom_panel())
    assert not (result.found and result.bar_px < 20)


def test_a_micro_sign_whose_tail_touches_the_bar_is_not_taken_for_a_missing_one():
    from miners.scalebar import _check_reading

    # like synthetic case 57 of --seed 1 ("2 μm" read "4m"): the µ's tail runs into the bar, so
    # the letter search leaves the µ out and finds the "m" first; without a descender there it
    # made the label nm
    line = text_line("2 µm").copy()
    box = ink_box(line)
    line[box[2]:box[2] + 6, :] = 255  # the bar, right under the µ's tail
    bar = {"polarity": "light", "length_px": 100.0}
    *_, parsed = _check_reading(line, (bar, "2m", box, 60.0, (2.0, "µm")))
    assert parsed == (2.0, "µm")
