"""Choose the parameters of the classical baselines on the EMPS validation split only.

Coordinate search: first the polarity rule with the other parameters at their defaults, then a
small grid of the two main parameters with the best rule. Criterion: published-protocol AP.

    nice -n 15 python benchmarks/tune_baselines_val.py [--data /work/shared/data/emps]
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
GRIDS = {
    OtsuWatershed: ("sigma_px", (1.0, 2.0, 4.0), "min_distance_px", (5, 10, 20, 40)),
    GmmCcl: ("sigma_px", (1.0, 2.0, 4.0), "opening_radius_px", (0, 2, 4)),
}


def score(cls, params, data_dir, stems, rows):
    summary = evaluate_segmenter(cls(**params), data_dir, stems, progress=False)
    rows.append((cls.__name__, params, summary))
    print(f"| {cls.__name__} | {params} | {summary['AP']:.3f} | {summary['AP50']:.3f} | "
          f"{summary['AP75']:.3f} | {summary['mean_IoU']:.3f} | {summary['coco_AP']:.3f} |",
          flush=True)
    return summary["AP"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_emps_dir()))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stems = read_split(args.data, "val")
    log.info("%d validation images", len(stems))
    print("| method | parameters | AP | AP50 | AP75 | mean IoU | COCO AP |")
    print("|---|---|---|---|---|---|---|")
    rows, best = [], {}
    for cls, (name_a, values_a, name_b, values_b) in GRIDS.items():
        rule_ap = {rule: score(cls, {"polarity": rule}, args.data, stems, rows)
                   for rule in POLARITY_RULES}
        rule = max(rule_ap, key=rule_ap.get)
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
