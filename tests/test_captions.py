"""Caption distribution over panel labels: markers, ranges, techniques and scale statements."""
import json
from pathlib import Path

import pytest

from miners.captions import (
    describe_panels,
    expand_labels,
    find_techniques,
    split_caption,
)


def test_bracketed_labels_with_a_shared_scale_bar():
    parts = split_caption("Fig. 2 (a) SEM image of Au NPs. (b) HRTEM image of one particle. Scale bar 50 nm.")
    assert parts["a"].text == "SEM image of Au NPs"
    assert parts["a"].techniques == ["SEM"]
    assert parts["b"].techniques == ["HRTEM"]  # not also TEM
    assert parts[None].scale == (50.0, "nm")
    assert parts["a"].scale is None


def test_bare_range_markers_and_per_label_scale_bars():
    caption = ("Figure 3. a–c SEM images of Ag nanocubes grown for 1, 2 and 4 h. d HRTEM image of one cube. "
               "e SAED pattern. Scale bars, 5 μm (c), 500 nm (d)")
    parts = split_caption(caption)
    assert {"a", "b", "c", "d", "e"} <= set(parts)
    assert parts["b"].text.startswith("SEM images of Ag nanocubes")
    assert parts["c"].scale == (5.0, "µm")
    assert parts["d"].scale == (500.0, "nm")
    assert parts["a"].scale is None and parts["e"].techniques == ["SAED"]
    assert "4 h" in parts["a"].text  # "1, 2 and 4 h" is not a list of labels


def test_labels_after_their_text():
    parts = split_caption("TEM images of Au nanospheres (a) and Au nanorods (b), and size distribution (c). "
                          "Scale bar: 200 nm")
    assert parts["a"].text == "TEM images of Au nanospheres"
    assert parts["b"].text == "Au nanorods"
    assert parts["b"].techniques == ["TEM"]  # carried over from the first item of the sentence
    assert parts[None].scale == (200.0, "nm")


def test_grouped_markers_sub_labels_and_labels_first_scale_statement():
    parts = split_caption("(a, b) FESEM images and (c) TEM image of the hybrid; (d1) and (d2) HAADF-STEM "
                          "images. Scale bars: (a) 1 µm, (c) 100 nm.")
    assert parts["a"].techniques == parts["b"].techniques == ["FESEM"]
    assert parts["c"].text == "TEM image of the hybrid"
    assert parts["d1"].techniques == ["HAADF"] and parts["d2"].text == "HAADF-STEM images"
    assert parts["a"].scale == (1.0, "µm") and parts["c"].scale == (100.0, "nm")
    assert parts["b"].scale is None


def test_half_bracket_and_capital_markers():
    parts = split_caption("a) TEM image of particles; b) XRD pattern.")
    assert parts["a"].techniques == ["TEM"] and parts["b"].techniques == ["XRD"]
    parts = split_caption("Cryo-EM images of liposomes. A, low magnification. B, high magnification. "
                          "Scale bar = 100 nm.")
    assert parts["A"].text == "low magnification"
    assert parts[None].techniques == ["cryo-EM"] and parts[None].scale == (100.0, "nm")


@pytest.mark.parametrize("caption", ["A TEM image of the particles.", "SEM image of a single particle(s).",
                                     "Size distribution of particle(s) in a sample"])
def test_words_are_not_labels(caption):
    assert set(split_caption(caption)) == {None}


def test_empty_caption():
    assert split_caption("") == {}
    assert split_caption("   ") == {}
    assert describe_panels("", ["a"]) == {"a": {"text": "", "techniques": [], "technique": None,
                                                "em": None, "scale": None}}


def test_describe_panels_applies_shared_technique_and_scale():
    caption = "TEM images of Au NPs: (a) as made, (b) after 2 h, (c) size histogram. Scale bar 100 nm"
    described = describe_panels(caption, ["a", "b", "c", None, "D1"])
    assert described["a"]["technique"] == "TEM" and described["a"]["em"] is True
    assert described["b"]["scale"] == [100.0, "nm"]
    assert described["c"]["text"] == "size histogram"
    assert set(described) == {"a", "b", "c", "D1"}
    assert described["D1"]["scale"] == [100.0, "nm"] and described["D1"]["text"] == ""


def test_describe_panels_own_scale_beats_shared_and_d1_falls_back_to_d():
    caption = "(a) SEM image. (d) XRD pattern. Scale bars, 2 µm (a). Scale bar 50 nm"
    described = describe_panels(caption, ["A", "d1"])
    assert described["A"]["scale"] == [2.0, "µm"]
    assert described["d1"]["technique"] == "XRD" and described["d1"]["em"] is False


@pytest.mark.parametrize("marker, labels", [("a–c", ["a", "b", "c"]), ("a, b and d", ["a", "b", "d"]),
                                            ("d1-d3", ["d1", "d2", "d3"]), ("B", ["B"]), ("a to c", ["a", "b", "c"])])
def test_expand_labels(marker, labels):
    assert expand_labels(marker) == labels


def test_find_techniques_prefers_specific_names():
    assert find_techniques("HR-TEM and FE-SEM images, HAADF-STEM map") == ["HAADF", "HRTEM", "FESEM"]
    assert find_techniques("scanning electron microscopy and transmission electron micrographs") == ["SEM", "TEM"]
    assert find_techniques("system of stems") == []


def test_real_caption_with_sub_label_ranges_and_a_parenthetical_range():
    # Sci. Rep. 3, 1497 (fixture srep01497) and an RSC caption (fixture test_paper)
    parts = split_caption("(a) AP-MSM. (b) Au-seeded MSM. (c) Au seeds-coalesced MSM. (d1–d3) nAg/Au@MSM. "
                          "(e1–e3) nAu/Au@MSM. (f1–f3) nPd/Au@MSM, with further growing from 1 to 3.")
    assert parts["d2"].text == "nAg/Au@MSM" and parts["e3"].text == "nAu/Au@MSM"
    assert parts["c"].text == "Au seeds-coalesced MSM"
    parts = split_caption("(c) First charge/discharge profile of the electrode at 100 mA g −1 . The marked "
                          "points (from a to h) are collected to take XRD tests. (d) Ex situ XRD patterns.")
    assert set(parts) == {None, "c", "d"}
    assert parts["d"].techniques == ["XRD"]


# ------------------------------------------------------------------ labelled captions (tests/data)
CAPTIONS = json.loads((Path(__file__).parent / "data" / "captions.json").read_text())


def real_caption(source: str) -> str:
    """A real caption of a fixture article, as stored in tests/data/captions.json."""
    return next(item["caption"] for item in CAPTIONS if item["source"] == f"fixtures/articles/{source}")


def test_back_references_do_not_start_sub_captions():
    # Nat. Commun. 3, 732 (fixture ncomms1737), Fig. 1: "(i) TEM image of the same device as in (h) after erasing"
    parts = split_caption(real_caption("nature/ncomms1737.html Figure 1"))
    assert parts["h"].text.startswith("TEM image of another device")
    assert "as in (h) after erasing" in parts["i"].text
    assert "after erasing" not in parts["h"].text
    assert parts["d"].text.endswith("led to the image in (b). The applied voltage was 8 V")
    assert parts["b"].text.startswith("TEM image of the same device after the forming process")
    assert "I–t curve" not in parts["b"].text


@pytest.mark.parametrize("caption, label, start", [
    ("(a) TEM image. (b) The same sample as in (a), after heating.", "a", "TEM image"),
    ("(b) HRTEM image compared with (a) (see Fig. 2a). (c) SAED.", "c", "SAED"),
    ("(c) dark-field TEM image of the precipitates shown in (a) and (b); (d) HRTEM image.", "c", "dark-field TEM"),
    ("(d) height profile along the line in (c), (e) TEM image of a folded sheet.", "e", "TEM image of a folded"),
    ("a) TEM image, b) size distribution of the nanocubes in a). Scale bars: a) 50 nm.", "b", "size distribution"),
    ("(d) HRTEM image of PdAu/C, taken from the same region as (c).", "d", "HRTEM image of PdAu/C, taken"),
])
def test_back_reference_stays_in_the_sub_caption_that_mentions_it(caption, label, start):
    parts = split_caption(caption)
    assert parts[label].text.startswith(start)
    later = [k for k in parts if k and k < label]
    assert all(parts[k].text != "" for k in later)
    assert not any(start in parts[k].text for k in later)


def test_labels_after_in_or_of_still_head_an_enumeration():
    parts = split_caption("FE-SEM images of (a) pristine and (b) Ag-decorated TiO2 nanotubes; (c) cross-section "
                          "of the array in (a). Scale bar = 200 nm.")
    assert parts["a"].text == "pristine" and parts["b"].text == "Ag-decorated TiO2 nanotubes"
    assert parts["c"].text == "cross-section of the array in (a)"
    described = describe_panels("The STEM images at (a) the initial state, (b) the low resistance state.", ["a", "b"])
    assert described["b"]["text"] == "the low resistance state" and described["b"]["technique"] == "STEM"


def test_inline_scale_statements_belong_to_their_panel():
    # fixture ncomms1737, Fig. 2: "Scale bar, 50 nm." inside (a), "Scale bar, 100 nm." inside (d)
    described = describe_panels(real_caption("nature/ncomms1737.html Figure 2"), list("abdfhi"))
    assert described["a"]["scale"] == [50.0, "nm"] and described["d"]["scale"] == [100.0, "nm"]
    assert described["h"]["scale"] == [2.0, "nm"] and described["b"]["scale"] is None
    assert described["f"]["technique"] == "HAADF" and described["i"]["technique"] == "STEM"  # not the inset's HRTEM
    # a statement only at the end still applies to every panel
    described = describe_panels("(a) SEM image. (b) TEM image. Scale bar: 1 µm.", ["a", "b"])
    assert described["a"]["scale"] == described["b"]["scale"] == [1.0, "µm"]


def test_half_bracket_scale_list_and_micrometre_is_not_a_label():
    parts = split_caption("a,b) SEM images. c) PXRD patterns. d) TEM image of the carbon from b). "
                          "Scale bars: a) 10 µm, b) 1 µm, d) 200 nm.")
    assert set(parts) == {None, "a", "b", "c", "d"}
    assert parts["b"].scale == (1.0, "µm") and parts["d"].scale == (200.0, "nm")
    assert parts["c"].techniques == ["XRD"] and parts["d"].text == "TEM image of the carbon from b)"


def test_springer_bare_labels_inside_a_sentence():
    parts = split_caption(real_caption("springer/spr_test1.xml Fig. 19"))
    assert parts["a"].text.startswith("Charge–discharge curve for the first time")
    assert parts["b"].text.startswith("cycle life")
    assert set(split_caption("A TEM image of the particles, and a SEM image.")) == {None}


def test_labels_after_their_items_stay_a_list():
    # fixture j.jnoncrysol.2017.07.006, Fig. 13: "... in 1% (a), 2% (b) and 3.5% (c) NaCl solution"
    described = describe_panels(real_caption("elsevier/j.jnoncrysol.2017.07.006.xml Fig. 13"), list("abc"))
    assert described["a"]["text"].startswith("SEM micrographs and EDS analysis")
    assert described["c"]["text"] == "3.5%"
    assert [described[k]["technique"] for k in "abc"] == ["SEM"] * 3


def test_plots_do_not_take_the_shared_technique():
    described = describe_panels("TEM images of Au NPs: (a) as made, (b) the corresponding size distribution.",
                                ["a", "b"])
    assert described["a"]["technique"] == "TEM" and described["b"]["technique"] is None
    described = describe_panels("Size distributions obtained from TEM images, for samples calcined at "
                                "(a) 400 °C and (b) 600 °C.", ["a"])
    assert described["a"]["technique"] is None and described["a"]["em"] is None


def test_labelled_caption_set_accuracy():
    import miners.captions
    from benchmarks.caption_split import evaluate

    result = evaluate(miners.captions, CAPTIONS)
    assert len(CAPTIONS) >= 40 and result["labels"] >= 200
    assert result["sub-caption start"] >= 0.95 and result["technique"] >= 0.95 and result["scale"] >= 0.98


def test_a_scale_statement_in_parentheses_leaves_no_bracket_behind():
    parts = describe_panels("(a,b) TEM images of CdSe QDs (scale bar 10 nm)", ["a", "b"])
    assert parts["a"]["text"] == parts["b"]["text"] == "TEM images of CdSe QDs"
    assert parts["a"]["scale"] == [10.0, "nm"]
    mixed = describe_panels("(a) TEM of QDs (scale bars, 10 nm) and rods. (b) SEM of wires "
                            "(scale bar 1 µm).", ["a", "b"])
    assert mixed["a"]["text"] == "TEM of QDs and rods" and mixed["a"]["scale"] == [10.0, "nm"]
    assert mixed["b"] == {**mixed["b"], "text": "SEM of wires", "technique": "SEM",
                          "scale": [1.0, "µm"]}


def test_roman_numeral_panels_get_their_own_sub_captions():
    caption = ("Fig. 2 (i) TEM image of Ag cubes, (ii) SEM image of Ag wires and (iii) XRD pattern. "
               "Scale bars: 50 nm (i), 1 µm (ii).")
    parts = describe_panels(caption, ["i", "ii", "iii"])
    assert [parts[k]["technique"] for k in ("i", "ii", "iii")] == ["TEM", "SEM", "XRD"]
    assert parts["ii"]["text"] == "SEM image of Ag wires" and parts["ii"]["scale"] == [1.0, "µm"]
    assert parts["i"]["scale"] == [50.0, "nm"] and parts["iii"]["em"] is False
    # letters label the panels: "(i)", "(ii)" inside a sub-caption stay its text
    mixed = describe_panels("(a) TEM of NPs annealed at (i) 300 °C and (ii) 500 °C. (b) SEM.", ["a", "b"])
    assert mixed["a"]["text"] == "TEM of NPs annealed at (i) 300 °C and (ii) 500 °C"
    assert mixed["b"]["technique"] == "SEM"
