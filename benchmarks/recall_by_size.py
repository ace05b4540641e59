"""Share of EMPS particles found (IoU > 0.5), by particle size, with and without the zoom rule.

    python benchmarks/recall_by_size.py [--split val] [--mc-samples 10] [--weights W]

Particles are binned by their ground-truth area at the 512 x 512 protocol size. For each bin the
table prints how many particles the shipped pipeline finds (learned filter on) at zoom 1 (every
image at 512 x 512) and with the card's zoom rule (the default: images whose typical particle is
small segmented at 1024 x 1024), plus the protocol AP of both and how many images the rule zoomed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.data import default_emps_dir, load_sample, read_split  # noqa: E402
from models.evaluate import image_metrics, match_instances, summarise  # noqa: E402
from models.infer import ParticleSegmenter  # noqa: E402

BINS = (0, 100, 400, 1600, 6400, np.inf)


def found_by_bin(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(len(BINS) - 1, 2): particles found (IoU > 0.5 with a prediction) and particles, per bin."""
    areas = np.bincount(gt.ravel())[1:]
    present = areas > 0
    iou = match_instances(gt, labels)
    found = (iou > 0.5).any(1) if iou.shape[1] else np.zeros(int(present.sum()), bool)
    areas = areas[present]
    bins = np.digitize(areas, BINS[1:-1])
    return np.stack([np.bincount(bins, weights=found, minlength=len(BINS) - 1),
                     np.bincount(bins, minlength=len(BINS) - 1)], axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--split", default="val", choices=["val", "fit", "test", "train"])
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stems = read_split(args.data, args.split)
    segmenters = {"zoom 1": ParticleSegmenter(args.weights, mc_samples=args.mc_samples, zoom=1, compile=True),
                  "zoom rule": ParticleSegmenter(args.weights, mc_samples=args.mc_samples, compile=True)}
    if not segmenters["zoom rule"].zoom_below_px:
        parser.error("these weights' card has no zoom rule (zoom_below_px)")
    counts = {name: np.zeros((len(BINS) - 1, 2)) for name in segmenters}
    metrics = {name: [] for name in segmenters}
    zoomed = 0
    for stem in tqdm(stems, desc=args.split):
        sample = load_sample(args.data, stem)
        for name, segmenter in segmenters.items():
            result = segmenter.segment(sample.image)
            zoomed += name == "zoom rule" and result.zoom > 1
            counts[name] += found_by_bin(sample.instances, result.labels)
            metrics[name].append(image_metrics(sample.instances, result.labels, result.scores))
    rule = segmenters["zoom rule"].zoom_below_px
    print(f"EMPS {args.split}: {len(stems)} images, T = {args.mc_samples}, learned filter; zoom rule: "
          f"2x below a typical particle of {rule:.0f} px ({zoomed} images zoomed)")
    print(f"{'particle area (px at 512)':<28}{'particles':>10}" + "".join(f"{n + ' found':>18}" for n in segmenters))
    for i in range(len(BINS) - 1):
        label = f"{BINS[i]:.0f}-{BINS[i + 1]:.0f}" if np.isfinite(BINS[i + 1]) else f">= {BINS[i]:.0f}"
        total = counts["zoom 1"][i, 1]
        cells = "".join(f"{int(c[i, 0]):>10} ({c[i, 0] / max(total, 1):.2f})" for c in counts.values())
        print(f"{label:<28}{int(total):>10}{cells}")
    for name, rows in metrics.items():
        s = summarise(rows)
        print(f"{name}: AP {s['AP']:.3f}  AP50 {s['AP50']:.3f}  AP75 {s['AP75']:.3f}  mean IoU {s['mean_IoU']:.3f}")


if __name__ == "__main__":
    main()
