"""Threshold selection of models.tune (the full sweep is measured by `python -m models.tune`)."""
import json
import re
from pathlib import Path

import pytest

from models.tune import select_params

SWEEP = Path(__file__).resolve().parents[1] / "docs" / "bpartis" / "sweep.json"


def test_selection_prefers_the_precision_recall_area_over_precision_only_numbers():
    # a strict filter: high AP50 / mean IoU (precision) but half the particles lost -> lower AP
    table = {(0.5, 128, 0.004): {"AP": 0.42, "AP50": 0.80, "mean_IoU": 0.72},
             (0.5, 128, 0.006): {"AP": 0.43, "AP50": 0.73, "mean_IoU": 0.65},
             (0.5, 128, 0.0125): {"AP": 0.38, "AP50": 0.63, "mean_IoU": 0.56}}
    assert select_params(table) == (0.5, 128, 0.006)


def test_ties_in_ap_go_to_the_better_ap50_plus_mean_iou():
    table = {(0.5, 64, 0.01): {"AP": 0.40, "AP50": 0.60, "mean_IoU": 0.55},
             (0.6, 64, 0.01): {"AP": 0.40, "AP50": 0.66, "mean_IoU": 0.58}}
    assert select_params(table) == (0.6, 64, 0.01)


def test_rows_within_one_standard_error_of_the_best_ap_tie_and_f1_at_iou_half_settles_them():
    # the eighteenth session's seed > 0.6 table (validation, out of fold), rounded
    table = {0.2: {"AP": 0.691, "AP50": 0.948, "R50": 0.921, "mean_IoU": 0.879, "AP_se": 0.012},
             0.3: {"AP": 0.701, "AP50": 0.957, "R50": 0.908, "mean_IoU": 0.889, "AP_se": 0.0036},
             0.4: {"AP": 0.705, "AP50": 0.961, "R50": 0.902, "mean_IoU": 0.893, "AP_se": 0.0},
             0.5: {"AP": 0.702, "AP50": 0.961, "R50": 0.890, "mean_IoU": 0.893, "AP_se": 0.0032},
             0.6: {"AP": 0.697, "AP50": 0.966, "R50": 0.863, "mean_IoU": 0.902, "AP_se": 0.009}}
    assert select_params(table) == 0.4  # 0.2 and 0.3 are surely worse; 0.5 and 0.6 find fewer
    table[0.3]["AP_se"] = 0.005  # 0.004 below the best: now a tie, and a better balance (F1 0.932)
    assert select_params(table) == 0.3
    # F1, not recall: among ties, keeping false instances costs as much as missing true ones
    table[0.1] = {"AP": 0.700, "AP50": 0.800, "R50": 0.990, "mean_IoU": 0.75, "AP_se": 0.02}
    assert select_params(table) == 0.3
    # without recorded errors only the AP counts, as before the nineteenth session
    assert select_params({k: {m: v for m, v in row.items() if m != "AP_se"} for k, row in table.items()}) == 0.4


def test_paired_error_counts_articles_not_images():
    import numpy as np

    from models.tune import paired_se

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.7, 0.05, 12), rng.normal(0.7, 0.05, 12)
    one_per_article = paired_se(a, b, [f"doi{i}" for i in range(12)])
    assert one_per_article == pytest.approx(np.std(a - b, ddof=1) / np.sqrt(12))  # the usual paired error
    # four copies of each article's image: no more evidence, so no smaller error
    copies = paired_se(np.repeat(a, 4), np.repeat(b, 4), [f"doi{i // 4}" for i in range(48)])
    assert copies == pytest.approx(one_per_article)
    assert paired_se(np.repeat(a, 4), np.repeat(b, 4), [f"img{i}" for i in range(48)]) < one_per_article / 1.8
    assert paired_se(a, a, [f"doi{i}" for i in range(12)]) == 0.0


def test_mark_ties_measures_each_row_against_the_best_and_public_drops_the_per_image_arrays():
    import numpy as np

    from models.tune import mark_ties, public

    groups = ["a", "a", "b", "c", "d"]
    best = np.array([0.8, 0.7, 0.9, 0.6, 0.75])
    row = {"AP50": 0.9, "mean_IoU": 0.8, "R50": 0.5}
    table = {1: row | {"AP": best.mean(), "_AP": best},
             2: row | {"AP": best.mean() - 0.01, "_AP": best - [0.0, 0.0, 0.05, 0.0, 0.0]},
             3: row | {"AP": best.mean() - 0.01, "_AP": best - 0.01}}
    marked = mark_ties(table, groups)
    assert marked[1]["AP_se"] == 0.0 and marked[3]["AP_se"] == 0.0  # the same loss on every image
    assert marked[2]["AP_se"] > 0.005
    assert "AP_se" not in table[2]  # rows are copied
    assert select_params(marked) == 1
    shown = public(marked)
    assert set(shown[2]) == {"AP", "AP50", "mean_IoU", "R50", "AP_se"}


def without_se(row: dict) -> dict:
    """A recorded row's metrics, without the standard error of the comparison it was recorded in."""
    return {k: v for k, v in row.items() if k != "AP_se"}


def test_shipped_thresholds_are_the_selection_of_the_recorded_sweep():
    sweep = json.loads(SWEEP.read_text())
    weights = json.loads((SWEEP.parents[2] / "models" / "weights" / "bpartis-emps.json").read_text())
    setup = re.compile(r"seed>([\d.]+) min_px=(\d+) tu=([\d.]+)")  # "seed>0.9 min_px=16 tu=0.02"
    by_setup = {(float(m[1]), int(m[2]), float(m[3])): row for k, row in sweep["by_setup"].items()
                if (m := setup.fullmatch(k))}
    assert len(by_setup) == len(sweep["by_setup"]) > 1
    assert all("AP_se" in row for row in by_setup.values())  # chosen with ties within one error
    assert select_params(by_setup) == (sweep["tu_seed_threshold"], sweep["tu_min_instance_px"], sweep["tu"]) == \
        (weights["tu_seed_threshold"], weights["tu_min_instance_px"], weights["tu"])
    assert {float(tu): row for tu, row in sweep["by_tu"].items()} == \
        {tu: row for (st, mp, tu), row in by_setup.items() if (st, mp) == (sweep["tu_seed_threshold"],
                                                                          sweep["tu_min_instance_px"])}
    assert sweep.get("tta", False) == weights.get("tta", False)  # the maps the thresholds were tuned on


def test_shipped_instance_filter_is_the_one_the_recorded_sweep_fitted_and_chose():
    sweep = json.loads(SWEEP.read_text())
    weights_dir = SWEEP.parents[2] / "models" / "weights"
    card = json.loads((weights_dir / "bpartis-emps.json").read_text())
    shipped = json.loads((weights_dir / card["instance_filter"]).read_text())
    table = {float(k): row for k, row in sweep["by_filter_threshold"].items()}
    assert all("AP_se" in row for row in table.values())  # chosen with ties within one error
    assert select_params(table) == shipped["threshold"] == sweep["instance_filter"]["threshold"]
    assert shipped == sweep["instance_filter"]


def test_shipped_clustering_is_the_one_the_learned_filter_chose_out_of_fold():
    sweep = json.loads(SWEEP.read_text())
    card = json.loads((SWEEP.parents[2] / "models" / "weights" / "bpartis-emps.json").read_text())
    setup = re.compile(r"seed>([\d.]+) min_px=(\d+)")  # "seed>0.7 min_px=16" -> (0.7, 16)
    by_params = {(float(m[1]), int(m[2])): row for k, row in sweep["by_filter_params"].items()
                 if (m := setup.fullmatch(k))}
    assert len(by_params) == len(sweep["by_filter_params"]) > 1
    chosen = select_params(by_params)
    assert chosen == (sweep["seed_threshold"], sweep["min_instance_px"])
    assert chosen == (card["seed_threshold"], card["min_instance_px"])
    # then the zoom rule, with that clustering, by the same out-of-fold AP
    by_zoom = {int(k): row for k, row in sweep["by_zoom_below_px"].items()}
    assert without_se(by_zoom[0]) == without_se(by_params[chosen]) and len(by_zoom) > 1
    assert select_params(by_zoom) == (sweep["zoom_below_px"] or 0) == (card.get("zoom_below_px") or 0)
    # last the mask thresholds, with that clustering and zoom rule
    mask = re.compile(r"foreground>([\d.]+) phi>([\d.]+)")
    by_mask = {(float(m[1]), float(m[2])): row for k, row in sweep["by_mask_thresholds"].items()
               if (m := mask.fullmatch(k))}
    assert len(by_mask) == len(sweep["by_mask_thresholds"]) > 1
    assert without_se(by_mask[(0.5, 0.5)]) == without_se(by_zoom[select_params(by_zoom)])
    chosen_mask = select_params(by_mask)
    assert chosen_mask == (sweep["foreground_threshold"], sweep["phi_threshold"]) == \
        (card["foreground_threshold"], card["phi_threshold"])
    assert without_se(sweep["by_filter_threshold"][str(sweep["instance_filter"]["threshold"])]) == \
        without_se(by_mask[chosen_mask])
    # the t_u route keeps what the t_u sweep chose, and the published mask thresholds
    assert (card["tu_seed_threshold"], card["tu_min_instance_px"]) == \
        (sweep["tu_seed_threshold"], sweep["tu_min_instance_px"])
    assert (card["tu_foreground_threshold"], card["tu_phi_threshold"]) == (0.5, 0.5)


def test_map_cache_clusters_one_set_of_maps_with_each_setup(emps_dir, tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from models.data import read_split
    from models.tune import MapCache
    from test_cluster import embed

    # cached maps of three particles of 25, 64 and 196 px at the 512 x 512 working size
    inst = torch.zeros(512, 512, dtype=torch.long)
    inst[10:15, 10:15], inst[100:108, 100:108], inst[300:314, 200:214] = 1, 2, 3
    emb, sigma, seed = embed(inst)
    stem = read_split(emps_dir, "test")[0]
    segmenter = SimpleNamespace(mc_samples=30, rng_seed=0, size=512, bf16=True, tta=True,
                                predict_maps=None)  # calling it would fail: the maps must come from the cache
    cache = MapCache(segmenter, "sha", tmp_path)
    np.savez_compressed(tmp_path / f"{stem}.npz", emb=emb.numpy(), sigma=sigma.numpy(), seed=seed.numpy(),
                        mi=np.zeros((512, 512), np.float32))
    by_setup = cache.instances_by_params(emps_dir, stem, [(0.5, 16), (0.5, 48), (0.5, 128), (0.99, 16)])
    assert {key: int(item[1].max()) for key, item in by_setup.items()} == \
        {(0.5, 16): 3, (0.5, 48): 2, (0.5, 128): 1, (0.99, 16): 3}
    assert by_setup[(0.5, 16)][2] is by_setup[(0.5, 128)][2]  # one set of maps, clustered four times
    assert (by_setup[(0.5, 128)][1] > 0).sum() == 196


def test_map_cache_writes_whole_files_only(tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from models.tune import MapCache

    maps = tuple(torch.full(shape, 0.5) for shape in ((2, 8, 8), (2, 8, 8), (8, 8), (8, 8)))
    segmenter = SimpleNamespace(mc_samples=30, rng_seed=0, size=8, bf16=True, tta=True,
                                predict_maps=lambda image, zoom=1: maps)
    cache = MapCache(segmenter, "sha", tmp_path)
    first = cache.maps("a", np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "meta.json"]  # no partial file left
    segmenter.predict_maps = None  # a second call must read the file
    assert all(np.array_equal(a, b) for a, b in zip(first, cache.maps("a", None)))


def test_zoomed_predictions_are_scored_at_the_ground_truths_size():
    import numpy as np

    from models.tune import protocol_metrics, true_instances

    gt = np.zeros((64, 64), np.int32)
    gt[2:10, 2:10], gt[20:30, 20:26], gt[40:60, 40:60] = 1, 2, 3
    zoomed = np.kron(gt, np.ones((2, 2), np.int32))  # the prediction, made at twice the size
    zoomed[100:110, 10:20] = 4  # a false instance
    zoomed[0:1, 126:127] = 5  # one pixel at 2x: gone at 1x, so it cannot count as found
    assert true_instances(gt, zoomed).tolist() == [True, True, True, False, False]
    metrics = protocol_metrics(gt, zoomed, np.array([0.9, 0.8, 0.7, 0.6, 0.5]))
    assert metrics["n_pred"] == 4 and metrics["n_gt"] == 3  # the vanished instance is not predicted
    index = int(np.argmin(np.abs(np.linspace(0, 0.95, 20) - 0.5)))
    assert metrics["precision"][index] == 0.75 and metrics["recall"][index] == 1.0


def test_map_cache_keeps_zoomed_maps_apart_and_remembers_typical_areas(emps_dir, tmp_path):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from models.data import read_split
    from models.tune import MapCache
    from test_cluster import embed

    stem = read_split(emps_dir, "test")[0]
    inst = torch.zeros(1024, 1024, dtype=torch.long)  # particles of 16, 36 and 100 px at 512
    inst[10:18, 10:18], inst[200:212, 200:212], inst[600:620, 400:420] = 1, 2, 3
    emb, sigma, seed = embed(inst)
    calls = []
    segmenter = SimpleNamespace(mc_samples=30, rng_seed=0, size=512, bf16=True, tta=True,
                                predict_maps=lambda image, zoom=1: calls.append(zoom) or (emb, sigma, seed,
                                                                                         torch.zeros(1024, 1024)),
                                working_rgb=lambda image, zoom=1: np.zeros((512 * zoom, 512 * zoom, 3), np.uint8),
                                typical_instance_area=lambda image, *thresholds: calls.append("area") or 50.0,
                                seed_threshold=0.5, min_instance_px=16)
    cache = MapCache(segmenter, "sha", tmp_path)
    gt, labels, *_, zoom = cache.instances(emps_dir, stem, 0.5, 16, zoom=2)
    assert zoom == 2 and gt.shape == (512, 512) and labels.shape == (1024, 1024)
    assert int(labels.max()) == 3  # 16 px at 512 = 64 px at 1024: kept at --min-size 16
    assert int(cache.instances(emps_dir, stem, 0.5, 17, zoom=2)[1].max()) == 2
    assert (tmp_path / "zoom2" / f"{stem}.npz").exists() and not (tmp_path / f"{stem}.npz").exists()
    assert calls == [2]  # computed once, then read from zoom2/
    assert [cache.zoom_for(emps_dir, stem, 0.6, 16, below) for below in (0, 40, 60)] == [1, 1, 2]
    assert calls == [2, "area"]  # one T = 1 pass, remembered
    assert MapCache(segmenter, "sha", tmp_path).typical_area(emps_dir, stem, 0.6, 16) == 50.0
    assert calls == [2, "area"]  # read back from typical_area.json


def test_filter_step_grids_come_from_the_command_line(tmp_path, monkeypatch):
    import models.tune as tune
    from tests.conftest import EMPS

    if not (EMPS / "train.csv").exists():
        pytest.skip("EMPS not found")
    (tmp_path / "sweep.json").write_text(SWEEP.read_text())
    seen = {}

    def fake_filter_step(cache, data_dir, val_stems, fit_stems, **grids):
        seen.update(grids, n_val=len(val_stems))
        return {}

    monkeypatch.setattr(tune, "filter_step", fake_filter_step)
    monkeypatch.setattr(tune, "plot_sweep", lambda swept, out: [])
    tune.main(["--step", "filter", "--out", str(tmp_path), "--limit", "3", "--seed-grid", "0.5,0.6",
               "--min-px-grid", "16", "--zoom-grid", "0,1200", "--mask-grid", "0.5/0.5,0.4/0.4",
               "--refine-centre", "0", "--edge-alpha", "-1"])
    assert seen == {"seed_grid": (0.5, 0.6), "min_px_grid": (16,), "zoom_grid": (0, 1200),
                    "mask_grid": ((0.5, 0.5), (0.4, 0.4)), "refine_centre": False, "edge_alpha": None,
                    "n_val": 3}
    seen.clear()
    tune.main(["--step", "filter", "--out", str(tmp_path), "--limit", "3"])
    # the module's default grids; the filter learns the instances of the card's clustering
    card = tune.tuned_params()  # scored as the default pipeline scores, rims snapped
    assert seen == {"refine_centre": card["refine_centre"], "edge_alpha": card["edge_alpha"], "n_val": 3}


def synthetic_map_cache(emps_dir, folder, stems):
    """A :class:`MapCache` in ``folder`` holding made-up maps of ``stems``: each image's true
    particles, plus two 12 x 12 squares of background made into instances with a high mutual
    information (the false positives); no image is zoomed. Returns ``(cache, the perfect AP of
    each image)``."""
    import json
    from types import SimpleNamespace

    import numpy as np
    import torch

    from models.data import load_sample
    from models.tune import MapCache, protocol_metrics
    from test_cluster import embed

    segmenter = SimpleNamespace(mc_samples=30, rng_seed=0, size=512, bf16=True, tta=True, predict_maps=None)
    cache = MapCache(segmenter, "sha", folder)
    areas, perfect = {}, []
    for stem in stems:
        gt = load_sample(emps_dir, stem).instances
        inst, mi = torch.from_numpy(gt.astype(np.int64)), np.zeros((512, 512), np.float32)
        added = 0
        for r in range(0, 500, 12):
            for c in range(0, 500, 12):
                if added < 2 and not (inst[r:r + 12, c:c + 12] > 0).any():
                    added += 1
                    inst[r:r + 12, c:c + 12] = int(inst.max()) + 1
                    mi[r:r + 12, c:c + 12] = 0.3
        emb, sigma, seed = embed(inst)
        np.savez_compressed(folder / f"{stem}.npz", emb=emb.numpy(), sigma=sigma.numpy(), seed=seed.numpy(), mi=mi)
        areas[f"{stem} 0.6 16"] = 5000.0  # no image is zoomed (no zoomed maps are cached)
        perfect.append(protocol_metrics(gt, gt, None)["AP"])
    (folder / "typical_area.json").write_text(json.dumps(areas))
    return cache, perfect


def test_compare_step_scores_candidate_maps_with_the_cards_clustering_and_an_out_of_fold_filter(
        emps_dir, tmp_path):
    import numpy as np

    from models.data import read_split
    from models.tune import compare_step, edges_step

    card = {"seed_threshold": 0.6, "min_instance_px": 16, "zoom_below_px": 1200,
            "foreground_threshold": 0.4, "phi_threshold": 0.4}
    stems = read_split(emps_dir, "val")[:8]
    cache, perfect = synthetic_map_cache(emps_dir, tmp_path, stems)
    result = compare_step(cache, emps_dir, stems, card, progress=False)
    assert result["threshold"] > 0
    assert result["pred_per_gt"] == pytest.approx(1.0, abs=0.05)  # the squares are filtered out
    assert result["AP"] == pytest.approx(float(np.mean(perfect)), abs=0.05)
    # with the card's edge_alpha the kept masks are snapped before scoring (and the filter's
    # threshold chosen on those scores): the annotated masks move by a pixel here and there
    snapped = compare_step(cache, emps_dir, stems, card | {"edge_alpha": 0.1}, progress=False)
    assert snapped["pred_per_gt"] == pytest.approx(1.0, abs=0.1)
    assert snapped["mean_IoU"] != result["mean_IoU"]
    # the edges step scores each alpha the same way and keeps the best out-of-fold AP
    chosen = edges_step(cache, emps_dir, stems, card, alphas=(None, 0.1), progress=False)
    assert chosen["by_alpha"]["none"]["AP"] == result["AP"] and chosen["by_alpha"][0.1]["AP"] == snapped["AP"]
    assert chosen["edge_alpha"] == (0.1 if snapped["AP"] > result["AP"] else None)
    # the alphas' errors are taken against the best alpha (its own is 0), and no per-image array
    # reaches the JSON
    best = max(chosen["by_alpha"], key=lambda a: chosen["by_alpha"][a]["AP"])
    assert chosen["by_alpha"][best]["AP_se"] == 0.0
    assert all(not key.startswith("_") for row in chosen["by_alpha"].values() for key in row)
    assert all(not key.startswith("_") for key in result)


def test_filter_step_fits_the_filter_on_instances_clustered_as_the_card_clusters(emps_dir, tmp_path, monkeypatch):
    import numpy as np

    import models.tune as tune
    from models.data import read_split

    val, fit = read_split(emps_dir, "val")[:8], read_split(emps_dir, "fit")[:4]
    cache, perfect = synthetic_map_cache(emps_dir, tmp_path, val + fit)
    clustered = []
    cluster = tune.cluster_instances

    def spy(*args):
        clustered.append(args[-1])  # refine_centre, the last argument
        return cluster(*args)

    monkeypatch.setattr(tune, "cluster_instances", spy)
    for refine in (False, True):
        clustered.clear()
        result = tune.filter_step(cache, emps_dir, val, fit, seed_grid=(0.6,), min_px_grid=(16,), zoom_grid=(0,),
                                  mask_grid=(), refine_centre=refine, progress=False)
        assert clustered == [refine] * len(val + fit)  # every validation and fit-split image, once
        assert result["refine_centre"] is refine and result["filter_training"]["fit_images"] == 4
        row = result["by_filter_threshold"][result["instance_filter"]["threshold"]]
        assert row["pred_per_gt"] == pytest.approx(1.0, abs=0.05)  # the squares are filtered out
        assert row["AP"] == pytest.approx(float(np.mean(perfect[:len(val)])), abs=0.05)
    # scored with the kept rims snapped, as the default pipeline snaps them: the annotated masks
    # move by a pixel here and there, the same trees are fitted
    snapped = tune.filter_step(cache, emps_dir, val, fit, seed_grid=(0.6,), min_px_grid=(16,), zoom_grid=(0,),
                               mask_grid=(), refine_centre=True, edge_alpha=0.1, progress=False)
    assert snapped["scored_with_edge_alpha"] == 0.1 and result["scored_with_edge_alpha"] is None
    threshold = snapped["instance_filter"]["threshold"]
    assert snapped["by_filter_threshold"][threshold]["mean_IoU"] != result["by_filter_threshold"][threshold]["mean_IoU"]


def test_tuning_scores_snap_rims_as_the_segmenter_does_on_zoom_1_images_only():
    import numpy as np

    from models.edges import snap_edges
    from models.tune import snapped

    labels = np.zeros((40, 40), np.int32)
    labels[10:29, 10:29] = 1  # a square a pixel short of the particle below
    grey = np.full((40, 40), 50.0)
    grey[9:30, 9:30] = 200.0
    assert np.array_equal(snapped(labels, grey, 1, 0.1), snap_edges(labels, grey, 0.1))
    assert (snapped(labels, grey, 1, 0.1) == 1).sum() == 21 * 21 - 4  # grown to the edge (corners: 4-neighbours)
    assert snapped(labels, grey, 2, 0.1) is labels and snapped(labels, grey, 1, None) is labels


def test_edges_step_compares_alphas_by_their_own_error_not_the_one_of_their_threshold_table(monkeypatch):
    import numpy as np

    import models.tune as tune

    # each alpha's row as out_of_fold_scores gives it: its AP_se is the error against the best
    # threshold of its own table; alpha None's row is a tie there (0.02), with the better F1
    base = np.array([0.6, 0.7, 0.8, 0.75, 0.65, 0.7])
    rows = {None: {"threshold": 0.3, "AP": 0.70, "AP50": 0.96, "R50": 0.95, "mean_IoU": 0.88,
                   "AP_se": 0.02, "_AP": base},
            0.1: {"threshold": 0.4, "AP": 0.72, "AP50": 0.95, "R50": 0.90, "mean_IoU": 0.89,
                  "AP_se": 0.0, "_AP": base + 0.02}}
    monkeypatch.setattr(tune, "out_of_fold_scores", lambda *args, **kwargs: rows)
    monkeypatch.setattr(tune, "article_groups", lambda data_dir, stems: [f"doi{i // 2}" for i in range(6)])
    chosen = tune.edges_step(None, None, [f"s{i}" for i in range(6)], {}, alphas=(None, 0.1), progress=False)
    # against alpha 0.1, None loses 0.02 on every image: error 0, surely worse
    assert chosen["by_alpha"]["none"]["AP_se"] == 0.0 and chosen["edge_alpha"] == 0.1
    rows[None]["_AP"] = base + np.array([0.1, 0.1, -0.1, -0.1, 0.0, 0.0])  # 0.02 below again, but noisy by article
    chosen = tune.edges_step(None, None, [f"s{i}" for i in range(6)], {}, alphas=(None, 0.1), progress=False)
    assert chosen["by_alpha"]["none"]["AP_se"] > 0.02 and chosen["edge_alpha"] is None  # a tie; better F1
