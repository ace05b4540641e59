"""Panel splitting, label reading and EM-class accuracy on generated multi-panel figures.

Figures come from ``miners.figure_synth.make_figure`` with EMPS test-split micrographs (the EM
classifier was calibrated on the train split, see ``benchmarks/calibrate_em.py``), so the EM
numbers are held out.

    nice -n 15 python -m benchmarks.panel_accuracy --figures 120 --seed 1000
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from miners.figure_synth import list_em_images, make_figure
from miners.panels import split_panels

log = logging.getLogger(__name__)

EMPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"
IOU_MATCH = 0.5


def iou_boxes(a, b) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes (x1, y1 exclusive)."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_panels(truth: list[dict], pred: list[dict]) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (truth index, prediction index) with IoU >= ``IOU_MATCH``."""
    pairs = sorted(((iou_boxes(t["bbox"], p["bbox"]), i, j) for i, t in enumerate(truth)
                    for j, p in enumerate(pred)), reverse=True)
    used_t, used_p, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < IOU_MATCH:
            break
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            out.append((i, j))
    return out


def evaluate(n_figures: int, seed: int, split: str = "test") -> dict:
    """Generate ``n_figures`` figures and score ``split_panels`` on them."""
    em_paths = list_em_images(EMPS_DIR, split)
    rng = np.random.default_rng(seed)
    n_true = n_pred = n_match = 0
    label_ok = label_read = 0
    em_tp = em_fp = em_fn = 0
    seconds = []
    failures = []
    for k in range(n_figures):
        fig = make_figure(rng, em_paths)
        start = time.perf_counter()
        panels = split_panels(fig.image)
        seconds.append(time.perf_counter() - start)
        pred = [p.to_dict() for p in panels]
        matches = match_panels(fig.panels, pred)
        n_true += len(fig.panels)
        n_pred += len(pred)
        n_match += len(matches)
        if len(matches) != len(fig.panels) or len(pred) != len(fig.panels):
            failures.append(k)
        for i, j in matches:
            t, p = fig.panels[i], pred[j]
            label_ok += p["label"] == t["label"]
            label_read += p["label"] is not None
            em_tp += p["kind"] == "em" and t["kind"] == "em"
            em_fp += p["kind"] == "em" and t["kind"] != "em"
            em_fn += p["kind"] != "em" and t["kind"] == "em"
    precision = n_match / n_pred if n_pred else 0.0
    recall = n_match / n_true if n_true else 0.0
    return {
        "figures": n_figures, "true_panels": n_true, "predicted_panels": n_pred,
        "panel_precision": precision, "panel_recall": recall,
        "panel_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "label_accuracy": label_ok / n_match if n_match else 0.0,
        "label_read_rate": label_read / n_match if n_match else 0.0,
        "label_precision": label_ok / label_read if label_read else 0.0,
        "em_precision": em_tp / (em_tp + em_fp) if em_tp + em_fp else 0.0,
        "em_recall": em_tp / (em_tp + em_fn) if em_tp + em_fn else 0.0,
        "em_panels": em_tp + em_fn,
        "median_s": float(np.median(seconds)), "max_s": float(np.max(seconds)),
        "imperfect_figures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=120)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--split", default="test", choices=("train", "test"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    r = evaluate(args.figures, args.seed, args.split)
    print("| metric | value |\n|---|---|")
    for key, value in r.items():
        if key == "imperfect_figures":
            value = f"{len(value)} ({value[:15]}{'...' if len(value) > 15 else ''})"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        print(f"| {key} | {value} |")


if __name__ == "__main__":
    main()
