"""Time ``split_panels`` on ~2000 x 1500 generated figures: split, classify, labels, total.

    nice -n 15 python -m benchmarks.panels_speed --figures 8
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from miners.figure_synth import list_em_images, make_figure
from miners.panels import classify_panel, crop_panel, read_panel_labels, split_panels, to_gray

EMPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"


def figures_2000x1500(n: int, seed: int):
    """Generated figures 2000 px wide, padded or cropped to 1500 px high (white)."""
    em_paths = list_em_images(EMPS_DIR, "test")
    rng = np.random.default_rng(seed)
    while n > 0:
        fig = make_figure(rng, em_paths, width_px=2000)
        if fig.image.shape[0] < 900 or fig.image.shape[0] > 1500:
            continue
        image = np.full((1500, 2000, 3), fig.image[0, 0], dtype=np.uint8)
        image[:fig.image.shape[0]] = fig.image
        n -= 1
        yield image, len(fig.panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print("| figure | panels (true / found) | split s | classify s | labels s | split_panels s |")
    print("|---|---|---|---|---|---|")
    totals = []
    for k, (image, n_true) in enumerate(figures_2000x1500(args.figures, args.seed)):
        t0 = time.perf_counter()
        panels = split_panels(image, read_labels=False, classify=False)
        t1 = time.perf_counter()
        for panel in panels:
            classify_panel(crop_panel(image, panel))
        t2 = time.perf_counter()
        read_panel_labels(to_gray(image), panels)
        t3 = time.perf_counter()
        split_panels(image)
        t4 = time.perf_counter()
        totals.append(t4 - t3)
        print(f"| {k} {image.shape[1]}x{image.shape[0]} | {n_true} / {len(panels)} | {t1 - t0:.3f} "
              f"| {t2 - t1:.3f} | {t3 - t2:.3f} | {t4 - t3:.3f} |")
    print(f"\nsplit_panels (split + classify + labels): median {np.median(totals):.3f} s, "
          f"max {np.max(totals):.3f} s over {len(totals)} figures")


if __name__ == "__main__":
    main()
