"""Choose the parameters of the classical baselines on the EMPS validation split only.

Coordinate search: first the polarity rule with the other parameters at their defaults, then a
small grid of the two main parameters with the best rule. Criterion: the mean of the four
published metrics (AP, AP50, AP75, mean IoU). The trapezoid AP alone rewards merging (at t = 0
one blob over ten particles makes ten true positives and no false positive), so it would pick
ever larger watershed marker distances and openings. Only the automatic polarity rules
("border", "minority") can be chosen; the fixed ones ("bright", "dark") are scored for reference.

    nice -n 15 python benchmarks/tune_baselines_val.py [--data /work/shared/data/emps]
    nice -n 15 python benchmarks/tune_baselines_val.py --polarity-check fit

``--polarity-check SPLIT`` only reports, for each polarity rule, how often it picks the phase of
the Otsu mask that overlaps the ground-truth particles more (IoU), on a non-test split.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.baselines import POLARITY_RULES, GmmCcl, OtsuWatershed  # noqa: E402
from models.data import default_emps_dir, read_split  # noqa: E402
from models.evaluate import evaluate_segmenter  # noqa: E402

log = logging.getLogger("tune_baselines_val")
CRITERION_KEYS = ("AP", "AP50", "AP75", "mean_IoU")
AUTOMATIC_RULES = ("border", "minority")
GRIDS = {
    OtsuWatershed: ("sigma_px", (1.0, 2.0, 4.0), "min_distance_px", (20, 40, 80)),
    GmmCcl: ("sigma_px", (1.0, 2.0, 4.0), "opening_radius_px", (2, 4, 8, 16)),
}


def score(cls, params, data_dir, stems, rows):
    summary = evaluate_segmenter(cls(**params), data_dir, stems, progress=False)
    rows.append((cls.__name__, params, summary))
    criterion = sum(summary[k] for k in CRITERION_KEYS) / len(CRITERION_KEYS)
    print(f"| {cls.__name__} | {params} | {summary['AP']:.3f} | {summary['AP50']:.3f} | "
          f"{summary['AP75']:.3f} | {summary['mean_IoU']:.3f} | {summary['coco_AP']:.3f} | "
          f"{criterion:.3f} |", flush=True)
    return criterion


def check_polarity(data_dir, split):
    """Print how often each rule picks the Otsu phase that overlaps the ground truth more."""
    from skimage.filters import gaussian, threshold_otsu

    from miners.images import to_gray
    from models.baselines import choose_particles
    from models.data import load_sample

    if split == "test":
        raise SystemExit("--polarity-check must not look at the test split; use fit, val or train")
    hits = {rule: 0 for rule in POLARITY_RULES}
    stems = read_split(data_dir, split)
    for stem in stems:
        sample = load_sample(data_dir, stem)
        grey = gaussian(to_gray(sample.image).astype(float), sigma=2.0)
        bright, truth = grey > threshold_otsu(grey), sample.instances > 0

        def iou(mask):
            return (mask & truth).sum() / max((mask | truth).sum(), 1)

        particles_bright = iou(bright) > iou(~bright)
        for rule in POLARITY_RULES:
            picked_bright = (choose_particles(bright, rule) == bright).all()
            hits[rule] += picked_bright == particles_bright
    print(f"polarity accuracy on {split} ({len(stems)} images):",
          ", ".join(f"{rule} {hits[rule] / len(stems):.3f}" for rule in POLARITY_RULES))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--polarity-check", metavar="SPLIT", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.polarity_check:
        check_polarity(args.data, args.polarity_check)
        return
    stems = read_split(args.data, "val")
    log.info("%d validation images", len(stems))
    print("| method | parameters | AP | AP50 | AP75 | mean IoU | COCO AP | criterion |")
    print("|---|---|---|---|---|---|---|---|")
    rows, best = [], {}
    for cls, (name_a, values_a, name_b, values_b) in GRIDS.items():
        rule_ap = {rule: score(cls, {"polarity": rule}, args.data, stems, rows)
                   for rule in POLARITY_RULES}
        rule = max(AUTOMATIC_RULES, key=rule_ap.get)
        grid = {}
        for a, b in itertools.product(values_a, values_b):
            params = {"polarity": rule, name_a: a, name_b: b}
            grid[(a, b)] = score(cls, params, args.data, stems, rows)
        (a, b) = max(grid, key=grid.get)
        best[cls.__name__] = {"polarity": rule, name_a: a, name_b: b}
    print()
    for name, params in best.items():
        print(f"best on val: {name}({', '.join(f'{k}={v!r}' for k, v in params.items())})")


if __name__ == "__main__":
    main()
