"""Where the EMPS annotations sit relative to the micrograph's own particle edges (no network).

For every annotated particle of the chosen split (default ``fit``: training images only; the test
split is for reporting), at the image's original resolution, the particle is also outlined from
the grey levels alone: in a window 6 px around it, the pixels past the level half-way between the
particle's interior (its annotation eroded 3 px, median) and its surroundings (2-5 px outside it,
median), the connected part overlapping the annotation. Particles touching the image border,
smaller than 200 px, with less than 30 grey levels of contrast, or whose grey-level outline has
IoU < 0.8 with the annotation (a neighbour glued on, texture) are left out.

Prints, per image-width range and overall, the mean offset (rows, columns) of the grey-level
outline's centroid from the annotation's, with its standard error, and the median area
difference. A systematic offset along one axis is a property of the annotations, which a network
trained with flips (as BPartIS is) cannot learn: a flipped image flips the offset's sign.

    python benchmarks/annotation_offset.py [--data DIR] [--split fit|val|train]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.data import default_emps_dir, read_split  # noqa: E402

MARGIN_PX = 6
MIN_AREA_PX = 200
MIN_CONTRAST = 30.0
MIN_IOU = 0.8
WIDTHS = ((0, 520), (520, 700), (700, 100_000))


def particle_offsets(grey: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, int]]:
    """``(d_row, d_col, area difference)`` of each usable particle of one image: the grey-level
    outline's centroid minus the annotation's (px), and its area minus the annotation's."""
    out = []
    for label, box in enumerate(ndi.find_objects(labels), 1):
        if box is None:
            continue
        r0, r1 = box[0].start - MARGIN_PX, box[0].stop + MARGIN_PX
        c0, c1 = box[1].start - MARGIN_PX, box[1].stop + MARGIN_PX
        if r0 < 0 or c0 < 0 or r1 > labels.shape[0] or c1 > labels.shape[1]:
            continue  # touches the border: the outline would be cut
        window, image = labels[r0:r1, c0:c1], grey[r0:r1, c0:c1]
        mask = window == label
        if mask.sum() < MIN_AREA_PX:
            continue
        inner = ndi.binary_erosion(mask, iterations=3)
        ring = ndi.binary_dilation(mask, iterations=5) & ~ndi.binary_dilation(mask, iterations=2) & (window == 0)
        if inner.sum() < 20 or ring.sum() < 20:
            continue
        inside, outside = np.median(image[inner]), np.median(image[ring])
        if abs(inside - outside) < MIN_CONTRAST:
            continue
        band = ndi.binary_dilation(mask, iterations=4) & ((window == 0) | mask)
        parts, n = ndi.label(((image - (inside + outside) / 2) * np.sign(inside - outside) > 0) & band)
        if n == 0:
            continue
        part = np.bincount(parts[mask], minlength=n + 1)[1:].argmax() + 1
        outline = parts == part
        if (outline & mask).sum() / (outline | mask).sum() < MIN_IOU:
            continue
        (gr, gc), (ar, ac) = ndi.center_of_mass(outline), ndi.center_of_mass(mask)
        out.append((gr - ar, gc - ac, int(outline.sum() - mask.sum())))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--split", default="fit", choices=("fit", "val", "train"))
    args = parser.parse_args(argv)
    rows = []  # (width, d_row, d_col, d_area)
    for stem in read_split(args.data, args.split):
        grey = np.asarray(Image.open(Path(args.data) / "images" / f"{stem}.png").convert("L"), np.float32)
        labels = np.asarray(Image.open(Path(args.data) / "segmaps" / f"{stem}.png")).astype(np.int64)
        labels = labels[..., 0] if labels.ndim == 3 else labels
        rows += [(grey.shape[1], *r) for r in particle_offsets(grey, labels)]
    data = np.array(rows, float)
    print(f"EMPS {args.split} split, {len(data)} particles: grey-level outline minus annotation, "
          "px at the original resolution")
    print(f"{'image width':>14} {'particles':>9} {'d_row':>7} {'+-':>6} {'d_col':>7} {'+-':>6} {'median d_area':>14}")
    for lo, hi in WIDTHS + ((0, 100_000),):
        part = data[(data[:, 0] >= lo) & (data[:, 0] < hi)]
        if not len(part):
            continue
        sem = part[:, 1:3].std(0) / np.sqrt(len(part))
        name = "all" if (lo, hi) == (0, 100_000) else f"{lo}-{hi if hi < 100_000 else ''}"
        print(f"{name:>14} {len(part):9d} {part[:, 1].mean():7.3f} {sem[0]:6.3f} {part[:, 2].mean():7.3f} "
              f"{sem[1]:6.3f} {np.median(part[:, 3]):14.0f}")


if __name__ == "__main__":
    main()
