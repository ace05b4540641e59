"""End to end: particle sizes in nm from the whole pipeline against the truth, on real micrographs.

A materials scientist wants the particles' sizes in nanometres, which takes every stage: the panel
split, the scale bar (bar length and OCR'd label), BPartIS and the measurements. The EMPS test
images keep their published scale bars, and ``tests/data/scalebars.json`` holds each bar's value,
unit and length in pixels, annotated by eye; with the EMPS instance maps that gives the true size
of every particle in nm. For each test image with an annotated bar this runs ``idx.extract`` on the
PNG exactly as a user would (defaults: panel split, scale bar read from the image, T = 30, the
learned filter) and compares the particles of its EM panels (not touching a panel's border) with
the ground-truth particles (not touching the image's border), both in nm:

- the scale: found, within 2 % of the annotated nm/px;
- the median and mean equivalent diameter: relative error, image by image;
- the same with the annotated scale (segmentation alone) and with the ground-truth masks at the
  read scale (scale bar alone), which tells which stage an error comes from;
- the particle count, and the cosine distance between the size histograms (10 shared bins;
  images with at least 30 true particles, as in the BPartIS paper).

The scale-bar reader was developed on these images' bars (all EMPS bars were annotated, in rounds;
``benchmarks/scalebar_accuracy.py`` keeps the held-out accounting); BPartIS never saw the test
split. Prints one table; ``--csv`` writes the per-image rows and ``--plot`` draws idx's median
diameter against the truth.

    nice -n 15 python benchmarks/end_to_end.py [--mc-samples 30] [--limit N] [--csv F] [--plot F.png]
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idx.compare import MIN_PARTICLES, N_BINS, histogram_distance  # noqa: E402
from idx.particles import measure_particles  # noqa: E402
from miners.scalebar import NM_PER_UNIT  # noqa: E402
from models.data import default_emps_dir, read_split, relabel  # noqa: E402

log = logging.getLogger("end_to_end")

ANNOTATIONS = ROOT / "tests" / "data" / "scalebars.json"
SCALE_TOLERANCE = 0.02
CSV_FIELDS = ["stem", "true_nm_per_px", "read_nm_per_px", "scale_source", "scale_ok", "panels",
              "em_panels", "n_gt", "n_pred", "gt_median_nm", "pred_median_nm", "median_error",
              "median_error_true_scale", "median_error_gt_masks", "gt_mean_nm", "pred_mean_nm",
              "mean_error", "size_cosine", "seconds"]


def annotated_test_images(data_dir: Path) -> list[dict]:
    """Annotations (stem, value, unit, bar_px, true nm/px) of the test images with a measured bar."""
    test = set(read_split(data_dir, "test"))
    rows = []
    for entry in json.loads(ANNOTATIONS.read_text())["images"]:
        if entry["stem"] in test and entry.get("has_bar") and entry.get("bar_px"):
            nm_per_px = entry["value"] * NM_PER_UNIT[entry["unit"]] / entry["bar_px"]
            rows.append({**entry, "nm_per_px": nm_per_px})
    return sorted(rows, key=lambda row: row["stem"])


def ground_truth(data_dir: Path, stem: str) -> np.ndarray:
    """The EMPS instance map of ``stem`` at the image's own resolution, numbered 1..K."""
    return relabel(np.asarray(Image.open(data_dir / "segmaps" / f"{stem}.png")).astype(np.int64))


def interior(table):
    """Particles not touching the border of their image or panel."""
    return table[~table["touches_border"].astype(bool)] if len(table) else table


def relative_error(value: float, truth: float) -> float:
    return value / truth - 1 if math.isfinite(value) and truth > 0 else math.nan


def score_image(entry: dict, extraction, gt_labels: np.ndarray) -> dict:
    """Per-image row: the read scale and the particle sizes against the truth."""
    true_scale = entry["nm_per_px"]
    gt = interior(measure_particles(gt_labels, true_scale))
    gt_diam = gt["diameter_nm"].to_numpy() if len(gt) else np.zeros(0)
    em = [result for result in extraction if result.segmented]
    # the scale of the image: the largest EM panel's (one panel for nearly all of these)
    main = max(em, key=lambda r: r.image.shape[0] * r.image.shape[1]) if em else None
    read_scale = main.nm_per_px if main is not None else None
    pred_px = np.concatenate([interior(r.particles)["diameter_px"].to_numpy() for r in em]
                             if em else [np.zeros(0)])
    pred_nm = pred_px * read_scale if read_scale else np.full(pred_px.shape, math.nan)
    gt_median = float(np.median(gt_diam)) if gt_diam.size else math.nan
    median_px = float(np.median(pred_px)) if pred_px.size else math.nan
    row = {
        "stem": entry["stem"], "true_nm_per_px": true_scale, "read_nm_per_px": read_scale,
        "scale_source": main.scalebar.source if main is not None and main.scalebar.found else None,
        "scale_ok": bool(read_scale and abs(read_scale / true_scale - 1) <= SCALE_TOLERANCE),
        "panels": len(extraction), "em_panels": len(em), "n_gt": int(gt_diam.size),
        "n_pred": int(pred_px.size), "gt_median_nm": gt_median,
        "pred_median_nm": float(np.median(pred_nm)) if pred_nm.size else math.nan,
        "gt_mean_nm": float(gt_diam.mean()) if gt_diam.size else math.nan,
        "pred_mean_nm": float(pred_nm.mean()) if pred_nm.size else math.nan,
        "median_error_true_scale": relative_error(median_px * true_scale, gt_median),
        "median_error_gt_masks": relative_error(gt_median * (read_scale or math.nan) / true_scale,
                                                gt_median),
    }
    row["median_error"] = relative_error(row["pred_median_nm"], gt_median)
    row["mean_error"] = relative_error(row["pred_mean_nm"], row["gt_mean_nm"])
    # per-image histograms mean something only with enough particles (the paper's 30)
    row["size_cosine"] = (histogram_distance(gt_diam, pred_nm, N_BINS)[0]
                          if gt_diam.size >= MIN_PARTICLES else math.nan)
    return row


def fraction_within(errors, tolerance: float) -> str:
    """``k / n`` of images whose |relative error| is at most ``tolerance`` (NaN counts as a miss)."""
    errors = np.asarray(errors, float)
    hits = int(np.sum(np.abs(errors[np.isfinite(errors)]) <= tolerance))
    return f"{hits} / {errors.size} ({100 * hits / max(errors.size, 1):.0f} %)"


def median_abs(errors) -> str:
    errors = np.abs(np.asarray(errors, float))
    finite = errors[np.isfinite(errors)]
    if not finite.size:
        return "-"
    return f"{100 * np.median(finite):.1f} % (n = {finite.size})"


def print_table(rows: list[dict], params: str, seconds: float) -> None:
    """The summary table (Markdown) of the per-image rows."""
    def column(name):
        return [row[name] for row in rows]

    n = len(rows)
    found = sum(1 for row in rows if row["read_nm_per_px"])
    ok = sum(1 for row in rows if row["scale_ok"])
    counts = np.array([row["n_pred"] / row["n_gt"] for row in rows if row["n_gt"]], float)
    cosine = np.array([v for v in column("size_cosine") if math.isfinite(v)], float)
    lines = [
        f"{n} EMPS test images with an annotated scale bar; {params}; {seconds / max(n, 1):.1f} s per image",
        "",
        "| quantity | idx (whole pipeline) | annotated scale, idx masks | read scale, true masks |",
        "|---|---|---|---|",
        f"| scale found | {found} / {n} | - | {found} / {n} |",
        f"| scale within 2 % | {ok} / {n} ({100 * ok / max(n, 1):.0f} %) | - | {ok} / {n} |",
        "| median diameter within 5 % | " + " | ".join(fraction_within(column(c), 0.05) for c in
                                                   ("median_error", "median_error_true_scale", "median_error_gt_masks")) + " |",
        "| median diameter within 10 % | " + " | ".join(fraction_within(column(c), 0.10) for c in
                                                    ("median_error", "median_error_true_scale", "median_error_gt_masks")) + " |",
        "| median diameter within 25 % | " + " | ".join(fraction_within(column(c), 0.25) for c in
                                                    ("median_error", "median_error_true_scale", "median_error_gt_masks")) + " |",
        "| median diameter, median abs. error | " + " | ".join(median_abs(column(c)) for c in
                                                           ("median_error", "median_error_true_scale", "median_error_gt_masks")) + " |",
        f"| mean diameter within 10 % | {fraction_within(column('mean_error'), 0.10)} | - | - |",
        f"| particles found / true, median | {np.median(counts):.2f} | - | - |" if counts.size else "",
        f"| size histogram cosine distance, median | {np.median(cosine):.3f} (n = {cosine.size}) | - | - |"
        if cosine.size else "",
    ]
    print("\n".join(line for line in lines if line is not None))


def plot_medians(rows: list[dict], path: Path) -> None:
    """Log-log scatter of idx's median diameter against the truth, coloured by the scale's status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    truth = np.array([row["gt_median_nm"] for row in rows], float)
    ok = np.array([row["scale_ok"] for row in rows], bool)
    for mask, colour, name, key in ((ok, "tab:blue", "scale read within 2 %", "pred_median_nm"),
                                    (~ok, "tab:red", "scale off by more than 2 %", "pred_median_nm")):
        values = np.array([row[key] or math.nan for row in rows], float)[mask]
        keep = np.isfinite(values) & np.isfinite(truth[mask])
        ax.scatter(truth[mask][keep], values[keep], s=18, c=colour, label=f"{name} ({keep.sum()})")
    finite = truth[np.isfinite(truth) & (truth > 0)]
    lo, hi = finite.min() / 2, finite.max() * 2
    line = np.array([lo, hi])
    ax.plot(line, line, "k-", lw=0.8)
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="±10 %")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="true median diameter (nm)", ylabel="idx median diameter (nm)",
           title="EMPS test images, whole pipeline")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_emps_dir(), help="EMPS folder")
    parser.add_argument("--weights", default=None, help="BPartIS state dict (default: shipped weights)")
    parser.add_argument("--mc-samples", type=int, default=30, help="Monte-Carlo samples T")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-image rows here")
    parser.add_argument("--plot", type=Path, default=None, help="write the median-diameter scatter here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)

    import torch
    from tqdm import tqdm

    from idx.pipeline import extract
    from models.infer import ParticleSegmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = ParticleSegmenter(weights=args.weights, mc_samples=args.mc_samples)
    entries = annotated_test_images(args.data)[:args.limit]
    rows, start = [], time.perf_counter()
    for entry in tqdm(entries, desc="images", unit="image"):
        began = time.perf_counter()
        extraction = extract(args.data / "images" / f"{entry['stem']}.png", segmenter=segmenter,
                             progress=False)
        row = score_image(entry, extraction, ground_truth(args.data, entry["stem"]))
        row["seconds"] = time.perf_counter() - began
        rows.append(row)
    params = (f"T = {args.mc_samples}, filter {segmenter.params.get('filter_kind')}, "
              f"weights {segmenter.weights_sha256[:8] if segmenter.weights_sha256 else 'given'}")
    print_table(rows, params, time.perf_counter() - start)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        plot_medians(rows, args.plot)


if __name__ == "__main__":
    main()
