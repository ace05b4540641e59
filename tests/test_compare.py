import math

import numpy as np
import pytest
from PIL import Image

from idx.compare import compare_distributions, histogram_distance, rdf_rmse
from models.data import default_emps_dir, load_sample, read_split

EMPS = default_emps_dir()


def squares(sides: list[int], size: int = 256, pitch: int = 20) -> np.ndarray:
    """Instance map of squares with the given sides, one per grid cell, none on the border."""
    labels = np.zeros((size, size), dtype=np.int32)
    per_row = (size - 8) // pitch
    for i, side in enumerate(sides):
        row, col = 4 + (i // per_row) * pitch, 4 + (i % per_row) * pitch
        labels[row:row + side, col:col + side] = i + 1
    return labels


def test_identical_maps_give_zero_distances():
    labels = squares([4] * 15 + [7] * 15 + [12] * 10)
    result = compare_distributions(labels, labels.copy())
    assert result["reason"] is None and result["n_gt"] == result["n_pred"] == 40
    for name in ("size_cosine", "aspect_cosine", "rdf_rmse"):
        assert result[name] == pytest.approx(0.0, abs=1e-12)
    assert result["n_rdf_radii"] > 5


def test_identical_emps_ground_truth_gives_zero_distances():
    stem = read_split(EMPS, "test")[0]
    labels = load_sample(EMPS, stem).instances
    result = compare_distributions(labels, labels, min_particles=2)
    assert result["size_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert result["rdf_rmse"] == pytest.approx(0.0, abs=1e-12)


def test_shifted_size_distribution_matches_hand_computed_distance():
    # Squares of side 4, 7, 12 px; 4 bins over the pooled diameter range put them in
    # bins 0, 1 (7 sits 3/8 of the way) and 3: GT counts [15, 15, 0, 10], prediction
    # (shifted to larger sizes) [5, 15, 0, 20].
    gt = squares([4] * 15 + [7] * 15 + [12] * 10)
    pred = squares([4] * 5 + [7] * 15 + [12] * 20)
    result = compare_distributions(gt, pred, n_bins=4)
    dot = 15 * 5 + 15 * 15 + 10 * 20
    by_hand = 1 - dot / math.sqrt((15**2 + 15**2 + 10**2) * (5**2 + 15**2 + 20**2))
    assert result["size_cosine"] == pytest.approx(by_hand, rel=1e-9)
    assert result["size_cosine"] == pytest.approx(0.16376, abs=1e-5)
    assert 0 < result["rdf_rmse"] < math.inf


def test_histogram_distance_uses_shared_edges():
    # pooled range [0, 4], 2 bins [0, 2) [2, 4]: gt -> [2, 0], pred -> [1, 1]; cos = 2 / (2 sqrt 2)
    distance, reason = histogram_distance(np.array([0.0, 1.0]), np.array([1.0, 4.0]), n_bins=2)
    assert reason is None
    assert distance == pytest.approx(1 - 1 / math.sqrt(2))


def test_border_particles_are_left_out_of_histograms_on_both_sides():
    gt = squares([6] * 30)
    pred = gt.copy()
    pred[0:3, 100:140] = 99  # a flat sliver cut by the border: would be a new size and shape
    result = compare_distributions(gt, pred)
    assert result["n_pred"] == 31 and result["n_pred_hist"] == 30
    assert result["size_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert result["aspect_cosine"] == pytest.approx(0.0, abs=1e-12)
    kept = compare_distributions(gt, pred, exclude_border=False)
    assert kept["size_cosine"] > 0.0 and kept["aspect_cosine"] > 0.0


def test_too_few_ground_truth_particles_gives_nan_with_reason():
    gt = squares([6] * 10)
    result = compare_distributions(gt, gt)
    assert all(math.isnan(result[k]) for k in ("size_cosine", "aspect_cosine", "rdf_rmse"))
    assert "10 particles, fewer than 30" in result["reason"]


def test_empty_prediction_gives_nan_with_reason():
    gt = squares([6] * 30)
    result = compare_distributions(gt, np.zeros_like(gt))
    assert math.isnan(result["size_cosine"]) and math.isnan(result["rdf_rmse"])
    assert "no measurable particle in the prediction" in result["reason"]
    assert "0 particle(s) in the prediction" in result["reason"]


def test_rdf_rmse_single_particle_is_nan():
    rmse, n, reason = rdf_rmse(np.array([[5.0, 5.0]]), np.array([[5.0, 5.0], [9.0, 9.0]]), (32, 32), 1.0)
    assert math.isnan(rmse) and n == 0 and "needs at least 2" in reason


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        compare_distributions(squares([6] * 30), squares([6] * 30, size=128))


def test_bad_options_are_refused():
    labels = squares([6] * 30)
    with pytest.raises(ValueError, match="n_bins must be >= 1"):
        compare_distributions(labels, labels, n_bins=0)
    with pytest.raises(ValueError, match="dr_px must be a positive"):
        compare_distributions(labels, labels, dr_px=-1.0)
    with pytest.raises(ValueError, match="integer instance map"):
        compare_distributions(labels.astype(float), labels)


def test_ground_truth_png_roundtrip_is_unchanged():
    # the comparison never modifies its inputs
    stem = read_split(EMPS, "test")[1]
    labels = np.asarray(Image.open(EMPS / "segmaps" / f"{stem}.png")).astype(np.int32)
    before = labels.copy()
    compare_distributions(labels, labels, min_particles=2)
    np.testing.assert_array_equal(labels, before)
