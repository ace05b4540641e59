"""Threshold selection of models.tune (the full sweep is measured by `python -m models.tune`)."""
import json
from pathlib import Path

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


def test_shipped_thresholds_are_the_selection_of_the_recorded_sweep():
    sweep = json.loads(SWEEP.read_text())
    weights = json.loads((SWEEP.parents[2] / "models" / "weights" / "bpartis-emps.json").read_text())
    by_tu = {(0, 0, float(tu)): row for tu, row in sweep["by_tu"].items()}
    assert select_params(by_tu)[2] == sweep["tu"] == weights["tu"]
    assert sweep.get("tta", False) == weights.get("tta", False)  # the maps the thresholds were tuned on


def test_shipped_instance_filter_is_the_one_the_recorded_sweep_fitted_and_chose():
    sweep = json.loads(SWEEP.read_text())
    weights_dir = SWEEP.parents[2] / "models" / "weights"
    card = json.loads((weights_dir / "bpartis-emps.json").read_text())
    shipped = json.loads((weights_dir / card["instance_filter"]).read_text())
    table = sweep["by_filter_threshold"]
    best = max(table, key=lambda k: (table[k]["AP"], table[k]["AP50"] + table[k]["mean_IoU"]))
    assert float(best) == shipped["threshold"] == sweep["instance_filter"]["threshold"]
    assert shipped == sweep["instance_filter"]


def test_shipped_minimum_size_is_the_one_the_learned_filter_chose_out_of_fold():
    sweep = json.loads(SWEEP.read_text())
    card = json.loads((SWEEP.parents[2] / "models" / "weights" / "bpartis-emps.json").read_text())
    by_size = {int(k): row for k, row in sweep["by_filter_min_px"].items()}
    assert select_params(by_size) == sweep["min_instance_px"] == card["min_instance_px"]
    best = sweep["by_filter_threshold"][str(sweep["instance_filter"]["threshold"])]
    assert best == by_size[sweep["min_instance_px"]]
