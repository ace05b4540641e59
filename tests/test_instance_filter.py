"""The learned instance filter: features, the exported trees, fitting, and use by the segmenter."""
import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from models.instance_filter import FEATURES, InstanceFilter, apply_filter, fit_filter, instance_features
from models.infer import DEFAULT_WEIGHTS, ParticleSegmenter, tuned_params
from models.tune import FILTER_GRID, fit_instance_filter


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def synthetic_image(rng, size=96, n_true=6, n_false=4):
    """Ground truth disks; predictions = the disks (confident, low MI) + blobs (unsure, high MI)."""
    shape = (size, size)
    gt = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    seed = rng.uniform(0.0, 0.2, shape)
    mi = rng.uniform(0.0, 0.002, shape)
    grey = rng.normal(60, 5, shape)
    centres = [(16 + 32 * (i // 3), 16 + 32 * (i % 3)) for i in range(n_true + n_false)]
    for k, (cy, cx) in enumerate(centres, 1):
        inside = disk(shape, cy, cx, rng.integers(6, 11))
        pred[inside] = k
        if k <= n_true:
            gt[inside] = k
            seed[inside] = rng.uniform(0.7, 1.0)
            mi[inside] = rng.uniform(0.0, 0.004)
            grey[inside] += 120
        else:  # a background fragment
            seed[inside] = rng.uniform(0.5, 0.75)
            mi[inside] = rng.uniform(0.01, 0.05)
            grey[inside] += rng.normal(0, 10)
    sigma = np.full((2, size, size), -0.3)
    return gt, pred, seed, mi, sigma, grey


def test_features_measure_each_instance_in_label_order():
    labels = np.zeros((40, 40), np.int32)
    labels[0:10, 0:10] = 1  # a square in the corner: touches the border, fills its box
    labels[20:30, 20:25] = 2  # an inner rectangle
    seed = np.where(labels > 0, 0.9, 0.1)
    mi = np.where(labels == 2, 0.02, 0.001)
    grey = np.where(labels > 0, 200.0, 50.0)
    x = instance_features(labels, seed, mi, np.zeros((2, 40, 40)), grey)
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    assert x.shape == (2, len(FEATURES))
    np.testing.assert_allclose(np.exp(col["log_area"]), [100, 50])
    np.testing.assert_allclose(col["border"], [1, 0])
    np.testing.assert_allclose(col["extent"], [1, 1])
    np.testing.assert_allclose(col["seed_mean"], [0.9, 0.9])
    assert col["log_mi"][1] - col["log_mi"][0] == pytest.approx(np.log(0.02 / 0.001), rel=1e-3)
    assert col["contrast_z"][0] > 1  # brighter than the background
    assert instance_features(np.zeros((8, 8), np.int32), np.zeros((8, 8)), np.zeros((8, 8)),
                             np.zeros((2, 8, 8)), np.zeros((8, 8))).shape == (0, len(FEATURES))


def test_lettering_features_tell_letters_bars_and_loners_from_particles():
    """Panel letters, scale bars and lone fragments (most of the false positives left on images of
    few particles) against a population of round particles."""
    from skimage.draw import disk as draw_disk

    shape = (200, 200)
    labels = np.zeros(shape, np.int32)
    grey = np.full(shape, 100.0)
    grey[::2] += 8  # texture, so the image's median gradient is not zero
    for k, (cy, cx) in enumerate([(60, 60), (60, 110), (110, 60), (110, 110)], 1):  # 4 particles
        rr, cc = draw_disk((cy, cx), 15, shape=shape)
        labels[rr, cc] = k
        grey[rr, cc] = 60.0 + 20 * ((rr // 3) % 2)  # darker than the support, textured, low-contrast rim
    labels[4:20, 4:20] = 5  # an "o" panel letter in the corner, pure white on the grey
    labels[9:15, 9:15] = 0
    grey[labels == 5] = 255.0
    labels[170:176, 100:190] = 6  # a scale bar
    grey[170:176, 100:190] = 255.0
    labels[150:158, 20:22] = 7  # an L-shaped stroke
    labels[156:158, 20:30] = 7
    x = instance_features(labels, np.where(labels > 0, 0.9, 0.1), np.full(shape, 0.001),
                          np.zeros((2,) + shape), grey)
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    particles, letter, bar, stroke = slice(0, 4), 4, 5, 6
    assert np.all(col["solidity"][particles] > 0.95) and col["solidity"][stroke] < 0.6
    np.testing.assert_allclose(col["filled"][particles], 1.0)
    assert col["filled"][letter] == pytest.approx((256 - 36) / 256)  # its hole filled: 256 px
    assert col["log_elongation"][bar] > 2 and np.all(np.abs(col["log_elongation"][particles]) < 0.1)
    assert col["corner_dist"][letter] < 0.1 < col["corner_dist"][particles].min()
    assert col["edge_dist"][letter] == pytest.approx(11.5 / 200, abs=0.01)
    assert col["log_rim_gradient"][letter] > col["log_rim_gradient"][particles].max()  # a hard drawn edge
    # within a factor of 2 in area: the 4 particles (~700 px) and the bar (540 px) are peers;
    # the letter (220 px) and the stroke (32 px) are alone
    np.testing.assert_allclose(col["area_peers"][[0, 1, 2, 3, bar]], 5 / 7)
    np.testing.assert_allclose(col["area_peers"][[letter, stroke]], 1 / 7)
    assert col["area_z"][stroke] < -1.5


def test_features_of_a_zoomed_image_read_in_working_size_units():
    from models.network import SIGMA_SCALE

    gt, pred, seed, mi, sigma, grey = synthetic_image(np.random.default_rng(4))
    plain = instance_features(pred, seed, mi, sigma, grey)
    # the same image segmented at twice the size: 4x the pixels, and (coordinates do not change
    # with the size) a 2x wider Gaussian, i.e. a quarter of the bandwidth exp(10 s)
    up = lambda a: np.kron(a, np.ones((2, 2), a.dtype))  # noqa: E731
    sigma2 = np.stack([up(c) for c in sigma]) - np.log(4.0) / SIGMA_SCALE
    zoomed = instance_features(up(pred), up(seed), up(mi), sigma2, up(grey), zoom=2)
    col = FEATURES.index("log_zoom")
    np.testing.assert_allclose(zoomed[:, col], np.log(2.0))
    np.testing.assert_allclose(plain[:, col], 0.0)
    # the pixelated outlines and the rim's gradient change a little with the pixel grid
    approx = {"solidity": 0.03, "filled": 0.02, "log_elongation": 0.05, "corner_dist": 0.01, "edge_dist": 0.01,
              "log_rim_gradient": 0.25}
    other = [i for i, name in enumerate(FEATURES) if i != col and name not in approx]
    np.testing.assert_allclose(zoomed[:, other], plain[:, other], atol=1e-4)  # log(bandwidth + 1e-6)
    for name, tolerance in approx.items():
        i = FEATURES.index(name)
        np.testing.assert_allclose(zoomed[:, i], plain[:, i], atol=tolerance, err_msg=name)
    # without the zoom the areas would read 4x too large
    unscaled = instance_features(up(pred), up(seed), up(mi), sigma2, up(grey))
    area = FEATURES.index("log_area")
    np.testing.assert_allclose(unscaled[:, area] - plain[:, area], np.log(4.0))


def test_exported_trees_give_scikit_learns_probabilities_and_survive_json():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.instance_filter import HGB_PARAMS

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, len(FEATURES)))
    y = x[:, 0] + x[:, 3] * x[:, 5] + rng.normal(0, 0.3, 600) > 0
    ours = fit_filter(x, y, threshold=0.4)
    reference = HistGradientBoostingClassifier(**HGB_PARAMS, class_weight="balanced",
                                               early_stopping=False, random_state=0).fit(x, y)
    new = rng.normal(size=(200, len(FEATURES)))
    np.testing.assert_allclose(ours.probability(new), reference.predict_proba(new)[:, 1], atol=1e-12)
    again = InstanceFilter.from_dict(json.loads(json.dumps(ours.to_dict())))
    np.testing.assert_array_equal(again.probability(new), ours.probability(new))
    assert again.threshold == 0.4
    with pytest.raises(ValueError, match="features"):
        InstanceFilter.from_dict({**ours.to_dict(), "features": ["area"]})


def test_fitted_filter_removes_fragments_and_keeps_particles_on_unseen_images():
    rng = np.random.default_rng(0)
    images = [synthetic_image(rng) for _ in range(12)]
    instances = [(gt, pred, seed, mi, sigma, grey) for gt, pred, seed, mi, sigma, grey in images]
    model, table = fit_instance_filter(instances, [f"doi{i // 2}" for i in range(12)])
    assert table[model.threshold]["AP50"] > table[0.1]["AP50"] - 1e-9
    assert table[model.threshold]["AP50"] > 0.9  # out of fold: fragments are told apart
    gt, pred, seed, mi, sigma, grey = synthetic_image(np.random.default_rng(99))
    keep = model.keep(instance_features(pred, seed, mi, sigma, grey))
    assert keep[:6].sum() >= 5 and keep[6:].sum() <= 1
    kept = apply_filter(pred, keep)
    assert kept.max() == keep.sum() and set(np.unique(kept[pred == 0])) == {0}


@pytest.fixture(scope="module")
def emps_image():
    from tests.conftest import EMPS

    path = EMPS / "images" / "d5e8abb61d.png"
    if not path.exists():
        pytest.skip("EMPS not found")
    return np.asarray(Image.open(path).convert("L"))


def weights_with_filter(tmp_path, value, threshold=0.5):
    """The shipped weights, with a card naming a one-leaf filter of constant raw score ``value``."""
    weights = tmp_path / "w.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text()) | {"instance_filter": "w-filter.json"}
    weights.with_suffix(".json").write_text(json.dumps(card))
    leaf = {"feature": [0], "threshold": [0.0], "left": [0], "right": [0], "leaf": [True], "value": [value]}
    (tmp_path / "w-filter.json").write_text(json.dumps(
        {"features": list(FEATURES), "baseline": 0.0, "threshold": threshold, "trees": [leaf]}))
    return weights


def test_segmenter_applies_the_filter_its_weights_name(tmp_path, emps_image, caplog):
    card = tuned_params()  # without a filter the t_u clustering is used: take the learned filter's
    unfiltered = ParticleSegmenter(mc_samples=2, filter=False, seed_threshold=card["seed_threshold"],
                                   min_instance_px=card["min_instance_px"]).segment(emps_image)
    assert unfiltered.count > 10
    keep_all = ParticleSegmenter(weights_with_filter(tmp_path, 3.0), mc_samples=2).segment(emps_image)
    assert keep_all.params["filter_kind"] == "learned"
    assert keep_all.count == unfiltered.count and keep_all.n_removed == 0
    np.testing.assert_allclose(keep_all.scores, 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    remove_all = ParticleSegmenter(weights_with_filter(tmp_path, -3.0), mc_samples=2).segment(emps_image)
    assert remove_all.count == 0 and remove_all.n_removed == unfiltered.count
    explicit_tu = ParticleSegmenter(weights_with_filter(tmp_path, -3.0), mc_samples=2, tu=1.0,
                                    min_instance_px=unfiltered.params["min_instance_px"],
                                    seed_threshold=unfiltered.params["seed_threshold"])
    assert explicit_tu.params["filter_kind"] == "mi"
    # the t_u route clusters with its own (published) mask thresholds; t_u = 1 removes none of it
    tu_unfiltered = ParticleSegmenter(mc_samples=2, filter=False, tu=1.0,
                                      min_instance_px=unfiltered.params["min_instance_px"],
                                      seed_threshold=unfiltered.params["seed_threshold"]).segment(emps_image)
    assert tu_unfiltered.params["phi_threshold"] == explicit_tu.params["phi_threshold"] == 0.5
    assert explicit_tu.segment(emps_image).count == tu_unfiltered.count > 10  # MI never exceeds 1 nat
    (tmp_path / "w-filter.json").write_text("{broken")
    with caplog.at_level(logging.WARNING):
        assert "instance_filter" not in tuned_params(tmp_path / "w.pt")
    assert "instance filter unreadable" in caplog.text


def test_extra_training_instances_join_every_fold_but_are_never_scored():
    rng = np.random.default_rng(3)
    val = [synthetic_image(rng) for _ in range(6)]
    extra_images = [synthetic_image(rng) for _ in range(6)]
    extra_x = np.concatenate([instance_features(p, s, m, sg, g) for _, p, s, m, sg, g in extra_images])
    extra_y = np.concatenate([np.arange(1, p.max() + 1) <= 6 for _, p, *_ in extra_images])
    model, table = fit_instance_filter(val, [f"doi{i // 2}" for i in range(6)], extra=(extra_x, extra_y))
    assert set(table) == set(FILTER_GRID)
    gt, pred, seed, mi, sigma, grey = synthetic_image(np.random.default_rng(7))
    keep = model.keep(instance_features(pred, seed, mi, sigma, grey))
    assert keep[:6].sum() >= 5 and keep[6:].sum() <= 1


def test_map_cache_reuses_its_maps_and_refuses_a_folder_of_other_weights(tmp_path, emps_image):
    from models.tune import MapCache

    segmenter = ParticleSegmenter(mc_samples=2, filter=False, size=96)
    cache = MapCache(segmenter, "sha-a", tmp_path / "maps")
    first = cache.maps("d5e8abb61d", emps_image)
    assert (tmp_path / "maps" / "d5e8abb61d.npz").exists()
    again = MapCache(segmenter, "sha-a", tmp_path / "maps").maps("d5e8abb61d", np.zeros((8, 8), np.uint8))
    for a, b in zip(first, again):  # read back, not recomputed from the blank image
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="other weights or settings"):
        MapCache(segmenter, "sha-b", tmp_path / "maps")


def test_a_filter_fitted_on_some_columns_reads_whole_rows_and_ignores_the_rest():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.instance_filter import HGB_PARAMS

    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, len(FEATURES)))
    y = x[:, 2] - x[:, 7] + rng.normal(0, 0.3, 500) > 0
    columns = [2, 7, 11]
    ours = fit_filter(x, y, columns=columns)
    used = set(np.concatenate([t["feature"][~t["leaf"]] for t in ours.trees]).tolist())
    assert used and used <= set(columns)
    reference = HistGradientBoostingClassifier(**HGB_PARAMS, class_weight="balanced", early_stopping=False,
                                               random_state=0).fit(x[:, columns], y)
    new = rng.normal(size=(100, len(FEATURES)))
    np.testing.assert_allclose(ours.probability(new), reference.predict_proba(new[:, columns])[:, 1], atol=1e-12)
    scrambled = new.copy()
    scrambled[:, [i for i in range(len(FEATURES)) if i not in columns]] = 1e6  # unused columns: no effect
    np.testing.assert_array_equal(ours.probability(scrambled), ours.probability(new))


def test_feature_step_scores_each_feature_set_out_of_fold_over_the_train_images(tmp_path):
    from models.tune import feature_step

    rng = np.random.default_rng(6)
    images = {f"img{i}": synthetic_image(rng) for i in range(10)}
    (tmp_path / "metadata.csv").write_text("filename,doi\n" + "".join(f"{s}.png,doi{i // 2}\n"
                                                                      for i, s in enumerate(images)))

    class Cache:  # a MapCache stand-in: the card's set-up and zoom reach it
        calls = []

        def zoom_for(self, data_dir, stem, seed_threshold, min_px, zoom_below_px):
            return 1

        def instances(self, data_dir, stem, seed_threshold, min_px, zoom, mask, refine_centre):
            self.calls.append((seed_threshold, min_px, zoom, mask, refine_centre))
            return images[stem] + (zoom,)

    card = {"seed_threshold": 0.6, "min_instance_px": 16, "zoom_below_px": 1200, "foreground_threshold": 0.4,
            "phi_threshold": 0.45, "refine_centre": True}
    sets = {"confidence": ("seed_mean", "log_mi"), "position only": ("corner_dist", "edge_dist")}
    result = feature_step(Cache(), tmp_path, list(images), card, feature_sets=sets, progress=False)
    assert Cache.calls == [(0.6, 16, 1, (0.4, 0.45), True)] * 10
    assert set(result) == set(sets)
    for row in result.values():
        assert set(row["by_threshold"]) == set(FILTER_GRID)
        assert row["metrics"] == row["by_threshold"][row["threshold"]]
    # the true disks are confident, the fragments are not; where they sit says nothing
    assert result["confidence"]["metrics"]["AP50"] > 0.9 > result["position only"]["metrics"]["AP50"]
