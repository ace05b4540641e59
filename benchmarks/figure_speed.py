"""Seconds to turn a ~2000 x 1500 figure into measured-scale panels: split, classify, labels and the
scale bar of every EM panel (no segmentation). Target: under 2 s on 2 cores.

    python -m benchmarks.figure_speed --figures 8
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.panels_speed import figures_2000x1500
from miners.panels import crop_panel, split_panels
from miners.scalebar import read_scalebar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print("| figure | panels | EM panels | scales read | split+classify+labels s | scale bars s | total s |")
    print("|---|---|---|---|---|---|---|")
    totals = []
    for index, (image, _) in enumerate(figures_2000x1500(args.figures, args.seed)):
        start = time.perf_counter()
        panels = split_panels(image)
        split_s = time.perf_counter() - start
        em = [p for p in panels if p.kind == "em"]
        found = sum(read_scalebar(crop_panel(image, p)).found for p in em)
        total = time.perf_counter() - start
        totals.append(total)
        print(f"| {index} | {len(panels)} | {len(em)} | {found} | {split_s:.2f} | {total - split_s:.2f} "
              f"| {total:.2f} |")
    print(f"\nmedian {np.median(totals):.2f} s, max {np.max(totals):.2f} s per 2000 x 1500 figure")


if __name__ == "__main__":
    main()
