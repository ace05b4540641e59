"""Tests of idx.particles: measurements on synthetic shapes of known size, real EMPS maps."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.draw import disk, polygon

from idx.particles import COLUMNS, SHAPE_CLASSES, classify_shape, measure_particles, \
    summarise_panel

SHARED = Path(__file__).resolve().parents[2] / "shared"
EMPS = SHARED / "data" / "emps"


def draw_shape(kind: str, size: float, angle_deg: float = 0.0, canvas: int = 320) -> np.ndarray:
    """One particle of nominal ``size`` px (disk diameter, polygon circumscribed diameter /
    rectangle long side) centred on a ``canvas`` square, rotated by ``angle_deg``."""
    labels = np.zeros((canvas, canvas), dtype=np.int32)
    centre = canvas / 2
    if kind == "disk":
        rr, cc = disk((centre, centre), size / 2, shape=labels.shape)
        labels[rr, cc] = 1
        return labels
    if kind == "rectangle":  # 2:1
        pts = np.array([[-1, -0.5], [1, -0.5], [1, 0.5], [-1, 0.5]]) * size / 2
    elif kind == "triangle":  # equilateral, side = size
        a = np.deg2rad([90, 210, 330])
        pts = np.c_[np.cos(a), np.sin(a)] * size / math.sqrt(3)
    elif kind == "hexagon":  # regular, circumscribed diameter = size
        a = np.deg2rad(np.arange(0, 360, 60))
        pts = np.c_[np.cos(a), np.sin(a)] * size / 2
    else:
        raise ValueError(kind)
    t = np.deg2rad(angle_deg)
    pts = pts @ np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]).T
    # offset so that no edge runs through pixel centres (polygon() would fill both sides)
    rr, cc = polygon(pts[:, 1] + centre + 0.3, pts[:, 0] + centre + 0.3, labels.shape)
    labels[rr, cc] = 1
    return labels


# exact geometry of the continuous shapes, size = 200 px
SIZE = 200.0
EXPECTED = {  # kind: (area, feret_min, feret_max)
    "disk": (math.pi * SIZE**2 / 4, SIZE, SIZE),
    "rectangle": (SIZE * SIZE / 2, SIZE / 2, SIZE * math.sqrt(1.25)),
    "triangle": (math.sqrt(3) / 4 * SIZE**2, math.sqrt(3) / 2 * SIZE, SIZE),
    "hexagon": (3 * math.sqrt(3) / 8 * SIZE**2, math.sqrt(3) / 2 * SIZE, SIZE),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("angle", [0.0, 17.0, 45.0])
def test_area_and_feret_within_one_percent(kind, angle):
    row = measure_particles(draw_shape(kind, SIZE, angle)).iloc[0]
    area, feret_min, feret_max = EXPECTED[kind]
    assert row["area_px"] == pytest.approx(area, rel=0.01)
    assert row["feret_min_px"] == pytest.approx(feret_min, rel=0.01)
    # hexagon: at 0 deg the max Feret runs vertex to vertex = SIZE; rotated it is the same.
    assert row["feret_max_px"] == pytest.approx(feret_max, rel=0.01)


def test_scale_converts_every_length_and_area():
    labels = draw_shape("rectangle", 120, 30)
    px = measure_particles(labels).iloc[0]
    nm = measure_particles(labels, nm_per_px=2.5).iloc[0]
    assert px["units"] == "px" and nm["units"] == "nm"
    assert math.isnan(px["diameter_nm"]) and math.isnan(px["area_nm2"])
    for name in ("diameter", "feret_max", "feret_min", "perimeter", "gyration_radius",
                 "ellipse_major"):
        assert nm[f"{name}_nm"] == pytest.approx(px[f"{name}_px"] * 2.5)
    assert nm["area_nm2"] == pytest.approx(px["area_px"] * 6.25)
    assert nm["aspect_ratio"] == pytest.approx(px["aspect_ratio"])


def test_descriptors_of_a_disk():
    row = measure_particles(draw_shape("disk", 150)).iloc[0]
    assert row["diameter_px"] == pytest.approx(150, rel=0.01)
    assert row["aspect_ratio"] == pytest.approx(1.0, abs=0.03)
    assert row["ellipse_aspect_ratio"] == pytest.approx(1.0, abs=0.01)
    assert 0.9 < row["circularity"] <= 1.05
    assert row["solidity"] > 0.98
    # radius of gyration of a disk is R / sqrt(2)
    assert row["gyration_radius_px"] == pytest.approx(75 / math.sqrt(2), rel=0.01)
    assert row["centroid_row_px"] == pytest.approx(160, abs=0.5)
    assert not row["touches_border"]


@pytest.mark.parametrize("kind,expected", [("disk", "sphere"), ("rectangle", "rod"),
                                           ("triangle", "triangle"), ("hexagon", "hexagon")])
def test_shape_class_of_rotated_shapes(kind, expected):
    for angle in (0, 20, 40):
        assert measure_particles(draw_shape(kind, 80, angle)).iloc[0]["shape"] == expected


def test_square_is_cube_and_aggregate_is_irregular():
    labels = np.zeros((200, 200), np.int32)
    labels[20:80, 20:80] = 1
    for r, c in [(150, 40), (150, 62), (150, 84), (128, 62)]:  # touching spheres: aggregate
        rr, cc = disk((r, c), 12, shape=labels.shape)
        labels[rr, cc] = 2
    table = measure_particles(labels)
    assert list(table["shape"]) == ["cube/rectangle", "irregular"]
    assert table.loc[1, "solidity"] < 0.90
    assert table.loc[1, "gyration_radius_px"] > table.loc[1, "diameter_px"] / 2 / math.sqrt(2)


def test_small_round_particles_are_spheres_whatever_their_digitisation():
    for radius in (3, 4.5, 6, 8, 10):
        for offset in (0.0, 0.3, 0.5):
            labels = np.zeros((40, 40), np.int32)
            rr, cc = disk((20 + offset, 20 + offset * 0.7), radius)
            labels[rr, cc] = 1
            assert measure_particles(labels).iloc[0]["shape"] == "sphere", (radius, offset)


def test_classify_shape_small_or_missing_is_irregular():
    assert classify_shape({"area_px": 5, "solidity": 1, "elongation": 1, "rectangularity": 0.8,
                           "hull_circularity": 1}) == "irregular"
    assert classify_shape({"area_px": 500}) == "irregular"
    assert set(SHAPE_CLASSES) >= {"sphere", "rod", "irregular"}


def test_border_uncertainty_intensity_and_bbox():
    labels = np.zeros((50, 60), np.int32)
    labels[0:10, 5:15] = 1  # touches the top border
    labels[20:30, 20:40] = 2
    uncertainty = np.zeros((50, 60))
    uncertainty[20:30, 20:40] = 0.25
    intensity = np.full((50, 60), 7, np.uint8)
    table = measure_particles(labels, uncertainty=uncertainty, intensity=intensity)
    assert list(table["touches_border"]) == [True, False]
    assert list(table["uncertainty_mean"]) == [0.0, 0.25]
    assert list(table["intensity_mean"]) == [7.0, 7.0]
    assert table.loc[1, ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]].tolist() == [20, 20, 40, 30]
    assert labels[20, 20] == 2  # input untouched
    assert list(table.columns) == list(COLUMNS)


def test_empty_labels_give_empty_table_with_columns():
    table = measure_particles(np.zeros((32, 32), np.int32), nm_per_px=1.0)
    assert len(table) == 0 and list(table.columns) == list(COLUMNS)
    summary = summarise_panel(table, (32, 32))
    assert summary["count"] == 0 and summary["rdf"] is None and summary["histogram"] is None


def test_a_selection_left_empty_keeps_the_scale():
    """Filtering a measured table down to nothing (``table[table.area_px > big]``) still
    summarises in nm: the scale goes with the table, not with its rows."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 1
    table = measure_particles(labels, nm_per_px=2.5)
    summary = summarise_panel(table[table["area_px"] > 10_000], labels.shape)
    assert summary["count"] == 0 and summary["units"] == "nm" and summary["nm_per_px"] == 2.5
    unscaled = measure_particles(labels)
    assert summarise_panel(unscaled[unscaled["area_px"] > 10_000], labels.shape)["units"] == "px"


@pytest.mark.parametrize("kwargs,match", [
    ({"labels": np.zeros((4, 4, 3), np.int32)}, "2-D"),
    ({"labels": np.zeros((4, 4), np.float32)}, "integer"),
    ({"labels": -np.ones((4, 4), np.int32)}, ">= 0"),
    ({"labels": np.zeros((4, 4), np.int32), "nm_per_px": 0.0}, "positive"),
    ({"labels": np.zeros((4, 4), np.int32), "nm_per_px": float("nan")}, "positive"),
    ({"labels": np.zeros((4, 4), np.int32), "uncertainty": np.zeros((5, 4))}, "same panel"),
])
def test_measure_particles_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        measure_particles(**kwargs)


def lattice(n_side: int = 10, spacing: int = 30, radius: float = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_side * spacing, n_side * spacing), np.int32)
    k = 0
    for r in range(spacing // 2, n_side * spacing, spacing):
        for c in range(spacing // 2, n_side * spacing, spacing):
            k += 1
            rr, cc = disk((r + rng.normal(0, 1.5), c + rng.normal(0, 1.5)),
                          radius + rng.normal(0, 0.8), shape=labels.shape)
            labels[rr, cc] = k
    return labels


def test_summarise_panel_statistics_and_rdf_peak():
    labels = lattice()
    table = measure_particles(labels, nm_per_px=0.5)
    summary = summarise_panel(table, labels.shape)
    diameters = table["diameter_nm"].to_numpy()
    assert summary["count"] == 100 and summary["count_measured"] == 100
    assert summary["diameter_mean_nm"] == pytest.approx(diameters.mean())
    assert summary["diameter_median_nm"] == pytest.approx(np.median(diameters))
    assert summary["diameter_geomean_nm"] == pytest.approx(np.exp(np.log(diameters).mean()))
    assert summary["diameter_geostd_nm"] == pytest.approx(np.exp(np.log(diameters).std(ddof=1)))
    assert summary["diameter_mean_px"] == pytest.approx(2 * summary["diameter_mean_nm"])
    assert sum(summary["histogram"]["counts"]) == 100
    rdf = summary["rdf"]
    assert summary["rdf_reason"] is None and rdf["unit"] == "nm"
    g = np.array([np.nan if v is None else v for v in rdf["g"]])
    r = np.array(rdf["r"])
    # lattice spacing 30 px = 15 nm: first neighbour peak there, no pairs closer than a diameter
    assert abs(r[np.nanargmax(g)] - 15.0) < 2 * rdf["dr"]
    assert np.nansum(g[r < 6]) == 0


def test_summarise_panel_excludes_border_and_explains_missing_rdf():
    labels = np.zeros((40, 40), np.int32)
    labels[0:6, 0:6] = 1
    labels[10:20, 10:20] = 2
    summary = summarise_panel(measure_particles(labels), labels.shape, min_particles_rdf=5)
    assert summary["count"] == 2 and summary["count_border"] == 1
    assert summary["diameter_mean_px"] == pytest.approx(math.sqrt(400 / math.pi))
    assert summary["diameter_mean_nm"] is None and summary["units"] == "px"
    assert summary["rdf"] is None and "fewer than the 5" in summary["rdf_reason"]
    # one measured particle: its spread is undefined (None, NULL in the database), not 0
    assert summary["count_measured"] == 1
    assert summary["diameter_std_px"] is None and summary["diameter_geostd_px"] is None


def test_summarise_panel_rejects_foreign_table():
    with pytest.raises(ValueError, match="measure_particles"):
        summarise_panel(pd.DataFrame({"x": [1]}), (10, 10))


@pytest.mark.skipif(not EMPS.exists(), reason="shared EMPS data not present")
def test_measure_real_emps_instance_map():
    name = (EMPS / "test.csv").read_text().split()[0]
    labels = np.array(Image.open(EMPS / "segmaps" / f"{name}.png")).astype(np.int32)
    table = measure_particles(labels, nm_per_px=1.0)
    n_instances = len(np.unique(labels)) - 1
    assert len(table) == n_instances
    assert table["area_px"].sum() == (labels > 0).sum()
    assert (table["feret_max_px"] >= table["feret_min_px"] - 1e-9).all()
    assert table["shape"].isin(SHAPE_CLASSES).all()
    summary = summarise_panel(table, labels.shape)
    assert summary["count"] == n_instances


def test_round_particles_of_any_size_have_circularity_at_most_one_and_an_unbiased_aspect():
    """A digital disk is as round as a particle can be drawn: circularity <= 1 (4 pi A / P^2 of
    a disk), near 1, and Feret max / min taken from one outline (two constructions read it long)."""
    for radius in (3, 4, 6, 10, 20, 40):
        for offset in (0.0, 0.3, 0.5):
            labels = np.zeros((120, 120), np.int32)
            rr, cc = disk((60 + offset, 60 + offset * 0.7), radius)
            labels[rr, cc] = 1
            row = measure_particles(labels).iloc[0]
            assert 0.95 <= row["circularity"] <= 1.0, (radius, offset)
            assert row["aspect_ratio"] == pytest.approx(row["feret_max_px"] / row["feret_min_px"])
            if radius >= 20:
                assert row["aspect_ratio"] < 1.05, (radius, offset)
                assert row["perimeter_px"] == pytest.approx(2 * math.pi * radius, rel=0.01)
    square = np.zeros((100, 100), np.int32)
    square[20:80, 20:80] = 1
    row = measure_particles(square).iloc[0]
    assert row["aspect_ratio"] == pytest.approx(math.sqrt(2), rel=0.02)  # diagonal / side
    assert row["circularity"] < 0.9  # pi / 4 for the continuous square


def test_measure_and_summarise_validate_their_inputs_and_keep_an_empty_panels_scale():
    with pytest.raises(ValueError, match="labels is empty"):
        measure_particles(np.zeros((0, 0), np.int32), 1.0)
    for bad in ("1.5", True, [2.0]):
        with pytest.raises(ValueError, match="nm_per_px must be a positive number"):
            measure_particles(np.zeros((5, 5), np.int32), bad)
    labels = np.zeros((20, 20), np.int64)
    labels[2:8, 2:8] = 1
    assert len(measure_particles(labels.tolist(), 2.0)) == 1  # a nested list is an array too
    empty = measure_particles(np.zeros((10, 10), np.int32), 1.5)
    summary = summarise_panel(empty, (10, 10))
    assert summary["count"] == 0 and summary["units"] == "nm" and summary["nm_per_px"] == 1.5
    assert summarise_panel(measure_particles(np.zeros((10, 10), np.int32)), (10, 10))["units"] == "px"
    for shape in (50, (float("nan"), 50), (0, 10)):
        with pytest.raises(ValueError, match="labels_shape must be"):
            summarise_panel(empty, shape)


def test_huge_label_ids_are_measured_without_huge_memory():
    """regionprops allocates per id up to the largest: ids 1 and 2**31 - 1 raised MemoryError."""
    labels = np.zeros((120, 120), np.int64)
    labels[10:30, 10:30] = 1
    labels[60:100, 50:100] = 2**31 - 1
    uncertainty = np.where(labels == 1, 0.25, 0.5)
    table = measure_particles(labels, uncertainty=uncertainty)
    assert table["label"].tolist() == [1, 2**31 - 1] and table["area_px"].tolist() == [400, 2000]
    assert table["uncertainty_mean"].tolist() == pytest.approx([0.25, 0.5])


def test_a_histogram_of_one_size_spans_that_size_not_negative_ones():
    labels = np.zeros((120, 120), np.int32)
    for k, (r, c) in enumerate([(20, 20), (20, 60), (60, 20), (60, 60)], start=1):
        labels[r - 3:r + 3, c - 3:c + 3] = k
    summary = summarise_panel(measure_particles(labels, nm_per_px=0.01), labels.shape)
    edges = summary["histogram"]["bin_edges"]
    assert edges[0] > 0 and edges[0] < summary["diameter_mean_nm"] < edges[-1]


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_ellipse_aspect_ratio_of_thin_lines(width):
    """Moments without the pixels' own extent gave NaN for a 1-px line and 173 for 300 x 2."""
    labels = np.zeros((40, 360), np.int32)
    labels[10:10 + width, 20:320] = 1
    (ratio,) = measure_particles(labels)["ellipse_aspect_ratio"]
    assert ratio == pytest.approx(300 / width, rel=0.01)
