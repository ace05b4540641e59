"""Accuracy of idx.particles on synthetic shapes of known size, and of its shape classifier.

Part 1: area, minimum/maximum Feret diameter, aspect ratio (Feret max / min) and perimeter of
disks, 2:1 rectangles, equilateral triangles and regular hexagons drawn with skimage.draw (sizes
12-400 px, rotations 0-45 deg) against the exact values of the continuous shapes. Both Feret
diameters come from one polygon, the convex hull of the region's 0.5 iso-contour (what idx
stores); "skimage" columns give, for comparison, scikit-image's ``feret_diameter_max`` (the hull of
``image_convex``) and ``regionprops``' ``perimeter`` (idx stores the Crofton perimeter).

Part 2: shape-class accuracy on randomly sized (20-120 px), rotated shapes with rough edges
(Gaussian noise added to the mask, blurred, re-thresholded): spheres (disks, slightly elliptic),
rods (spherocylinders and bars, aspect 2-5), cubes (squares and rectangles up to 1.5:1),
triangles, hexagons, irregular (aggregates of 3-7 touching spheres).

    nice -n 15 python benchmarks/measurements.py [--per-class 200] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import ndimage
from skimage.draw import disk, ellipse, polygon
from skimage.measure import regionprops

from idx.particles import SHAPE_CLASSES, measure_particles


ACCURACY_KEYS = ("area", "feret_min", "feret_max", "aspect", "perimeter", "skimage_feret_max",
                 "skimage_aspect", "skimage_perimeter")


def regular_polygon(n: int, circum_diameter: float, angle: float) -> np.ndarray:
    a = angle + np.arange(n) * 2 * np.pi / n
    return np.c_[np.cos(a), np.sin(a)] * circum_diameter / 2


def rotated_box(length: float, width: float, angle: float) -> np.ndarray:
    pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [length / 2, width / 2]
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, -s], [s, c]]).T


def fill_polygon(pts: np.ndarray, canvas: int) -> np.ndarray:
    mask = np.zeros((canvas, canvas), bool)
    rr, cc = polygon(pts[:, 1] + canvas / 2 + 0.3, pts[:, 0] + canvas / 2 + 0.3, mask.shape)
    mask[rr, cc] = True
    return mask


def measure_accuracy() -> list[tuple]:
    """Per size: (mean abs %, max abs %, mean signed %) of each quantity in ``ACCURACY_KEYS``."""
    rows = []
    for size in (12, 16, 25, 50, 100, 200, 400):
        canvas = int(size * 1.6) + 8
        errors = {k: [] for k in ACCURACY_KEYS}
        for kind in ("disk", "rectangle", "triangle", "hexagon"):
            for angle_deg in (0, 10, 17, 30, 45):
                angle = math.radians(angle_deg)
                if kind == "disk":
                    mask = np.zeros((canvas, canvas), bool)
                    rr, cc = disk((canvas / 2, canvas / 2), size / 2, shape=mask.shape)
                    mask[rr, cc] = True
                    truth = (math.pi * size**2 / 4, size, size, math.pi * size)
                elif kind == "rectangle":
                    mask = fill_polygon(rotated_box(size, size / 2, angle), canvas)
                    truth = (size**2 / 2, size / 2, size * math.sqrt(1.25), 3 * size)
                elif kind == "triangle":
                    mask = fill_polygon(regular_polygon(3, size * 2 / math.sqrt(3), angle), canvas)
                    truth = (math.sqrt(3) / 4 * size**2, math.sqrt(3) / 2 * size, size, 3 * size)
                else:
                    mask = fill_polygon(regular_polygon(6, size, angle), canvas)
                    truth = (3 * math.sqrt(3) / 8 * size**2, math.sqrt(3) / 2 * size, size, 3 * size)
                row = measure_particles(mask.astype(np.int32)).iloc[0]
                region = regionprops(mask.astype(np.int32))[0]
                true_aspect = truth[2] / truth[1]
                measured = {"area": row["area_px"], "feret_min": row["feret_min_px"],
                            "feret_max": row["feret_max_px"], "aspect": row["aspect_ratio"],
                            "perimeter": row["perimeter_px"],
                            "skimage_feret_max": region.feret_diameter_max,
                            "skimage_aspect": region.feret_diameter_max / row["feret_min_px"],
                            "skimage_perimeter": region.perimeter}
                true = {"area": truth[0], "feret_min": truth[1], "feret_max": truth[2],
                        "aspect": true_aspect, "perimeter": truth[3],
                        "skimage_feret_max": truth[2], "skimage_aspect": true_aspect,
                        "skimage_perimeter": truth[3]}
                for key in ACCURACY_KEYS:
                    errors[key].append(100 * (measured[key] - true[key]) / true[key])
        rows.append((size, *[(np.mean(np.abs(e)), np.max(np.abs(e)), np.mean(e))
                             for e in errors.values()]))
    return rows


def rough(mask: np.ndarray, rng, noise: float) -> np.ndarray:
    """Rough edges: noise on the mask, blurred, thresholded (keeps the largest component)."""
    field = ndimage.gaussian_filter(mask.astype(float) + rng.normal(0, noise, mask.shape), 1.2)
    out = field > 0.5
    labels, n = ndimage.label(out)
    if n > 1:
        sizes = ndimage.sum(out, labels, range(1, n + 1))
        out = labels == (1 + int(np.argmax(sizes)))
    return out


def synthetic_particle(kind: str, rng) -> np.ndarray:
    size = rng.uniform(20, 120)
    angle = rng.uniform(0, np.pi)
    canvas = int(size * 2.6) + 16
    c = canvas / 2
    mask = np.zeros((canvas, canvas), bool)
    if kind == "sphere":
        rr, cc = ellipse(c, c, size / 2, size / 2 * rng.uniform(0.9, 1.0), shape=mask.shape,
                         rotation=angle)
        mask[rr, cc] = True
    elif kind == "rod":
        aspect, width = rng.uniform(2, 5), size / 2.5
        length = width * aspect
        if rng.random() < 0.5:  # spherocylinder
            body = rotated_box(length - width, width, angle)
            mask |= fill_polygon(body, canvas)
            for sign in (-1, 1):
                dx, dy = sign * (length - width) / 2 * math.cos(angle), \
                    sign * (length - width) / 2 * math.sin(angle)
                rr, cc = disk((c + 0.3 + dy, c + 0.3 + dx), width / 2, shape=mask.shape)
                mask[rr, cc] = True
        else:  # bar
            mask = fill_polygon(rotated_box(length, width, angle), canvas)
    elif kind == "cube/rectangle":
        mask = fill_polygon(rotated_box(size, size / rng.uniform(1.0, 1.5), angle), canvas)
    elif kind == "triangle":
        mask = fill_polygon(regular_polygon(3, size * 2 / math.sqrt(3), angle), canvas)
    elif kind == "hexagon":
        mask = fill_polygon(regular_polygon(6, size, angle), canvas)
    else:  # irregular: aggregate of touching spheres, a random walk
        radius = size / 5
        centre = np.array([c, c])
        for _ in range(rng.integers(3, 8)):
            rr, cc = disk(tuple(centre), radius * rng.uniform(0.8, 1.2), shape=mask.shape)
            mask[rr, cc] = True
            step = rng.uniform(0, 2 * np.pi)
            centre = np.clip(centre + 1.6 * radius * np.array([math.cos(step), math.sin(step)]),
                             radius, canvas - radius)
    return rough(mask, rng, noise=0.35)


def classifier_accuracy(per_class: int, seed: int) -> tuple[dict, float]:
    rng = np.random.default_rng(seed)
    confusion = {k: {p: 0 for p in SHAPE_CLASSES} for k in SHAPE_CLASSES}
    for kind in SHAPE_CLASSES:
        for _ in range(per_class):
            mask = synthetic_particle(kind, rng)
            predicted = measure_particles(mask.astype(np.int32)).iloc[0]["shape"]
            confusion[kind][predicted] += 1
    total = sum(confusion[k][k] for k in SHAPE_CLASSES) / (per_class * len(SHAPE_CLASSES))
    return confusion, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    print("Error vs exact continuous shapes (4 shapes x 5 rotations), % of the true value: "
          "mean abs / max abs / mean signed")
    names = ("area", "Feret min", "Feret max", "aspect ratio", "perimeter (Crofton)",
             "skimage Feret max", "skimage aspect ratio", "skimage perimeter")
    print("| size px | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for size, *errors in measure_accuracy():
        print(f"| {size} | " + " | ".join(f"{a:.1f} / {m:.1f} / {s:+.1f}" for a, m, s in errors) + " |")
    confusion, accuracy = classifier_accuracy(args.per_class, args.seed)
    print(f"\nShape classifier: {args.per_class} noisy rotated particles per class, "
          f"seed {args.seed}; rows = truth, columns = predicted")
    print("| truth \\ predicted | " + " | ".join(SHAPE_CLASSES) + " | recall |")
    print("|---" * (len(SHAPE_CLASSES) + 2) + "|")
    for kind in SHAPE_CLASSES:
        row = confusion[kind]
        print(f"| {kind} | " + " | ".join(str(row[p]) for p in SHAPE_CLASSES)
              + f" | {row[kind] / args.per_class:.2f} |")
    print(f"\noverall accuracy {accuracy:.3f}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
