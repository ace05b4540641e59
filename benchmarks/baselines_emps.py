"""Classical baselines on the EMPS test split with the published BPartIS protocol.

Prints a markdown table: our Otsu + watershed and GMM + CCL (parameters chosen on the
validation split, see ``models/baselines.py``) next to the published Table 1 rows, plus the
protocol sanity check (ground truth scored against itself must give 1.0 everywhere).

    nice -n 15 python benchmarks/baselines_emps.py [--data /work/shared/data/emps] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.baselines import GmmCcl, OtsuWatershed  # noqa: E402
from models.data import default_emps_dir, read_split  # noqa: E402
from models.evaluate import (evaluate_segmenter, image_metrics, load_ground_truth,  # noqa: E402
                             summarise)

log = logging.getLogger("baselines_emps")
# Yildirim & Cole 2021, Table 1 (EMPS test split): AP, AP50, AP75, mean IoU
PUBLISHED = {
    "ImageDataExtractor (published)": (0.327, 0.320, 0.189, 0.249),
    "GMM + CCL (published)": (0.411, 0.289, 0.215, 0.236),
}
KEYS = ("AP", "AP50", "AP75", "mean_IoU", "coco_AP")


def format_row(name, values, seconds=None):
    cells = [f"{v:.3f}" if v is not None else "—" for v in values]
    return f"| {name} | {' | '.join(cells)} | {f'{seconds:.3f}' if seconds is not None else '—'} |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--json", default=None, help="also write the summaries to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    stems = read_split(args.data, "test")
    log.info("%d test images", len(stems))

    oracle = summarise([image_metrics(gt, gt) for gt in
                        (load_ground_truth(args.data, s) for s in stems)])
    results = {"ground truth vs itself (sanity)": (oracle, None)}
    warmup = read_split(args.data, "val")[:1]  # imports and caches outside the timing
    for name, segmenter in (("Otsu + watershed (ours)", OtsuWatershed()),
                            ("GMM + CCL (ours)", GmmCcl())):
        evaluate_segmenter(segmenter, args.data, warmup, progress=False)
        summary = evaluate_segmenter(segmenter, args.data, stems, progress=True)
        results[name] = (summary, segmenter.params)

    print(f"EMPS test split, {len(stems)} images at 512 x 512; {platform.processor() or platform.machine()}")
    print()
    print("| method | AP | AP50 | AP75 | mean IoU | COCO AP | s / image |")
    print("|---|---|---|---|---|---|---|")
    for name, (summary, _) in results.items():
        print(format_row(name, [summary[k] for k in KEYS], summary.get("seconds_per_image")))
    for name, values in PUBLISHED.items():
        print(format_row(name, [*values, None]))
    print()
    for name, (_, params) in results.items():
        if params:
            print(f"- {name}: {params}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {name: {"params": params, **{k: v for k, v in summary.items() if k != "per_image"},
                     "per_image": [{k: m[k] for k in ("stem", "seconds", "n_gt", "n_pred", *KEYS)}
                                   for m in summary.get("per_image", [])]}
             for name, (summary, params) in results.items()}, indent=1))


if __name__ == "__main__":
    main()
