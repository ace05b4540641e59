"""Measurement accuracy against ground truth on the EMPS test images, as in the BPartIS paper.

For each EMPS test image (512 x 512, ``models.data.load_sample``) whose ground truth has at least
``--min-particles`` particles (30, as in the paper), segment it with BPartIS (T = ``--mc-samples``
Monte-Carlo samples, uncertainty threshold ``--tu``, default the tuned one of the weights), and
compare the particles measured on the ground-truth and on the predicted instance map with
``idx.compare.compare_distributions`` (pixels):

- size: cosine distance between histograms of the equivalent circular diameter,
- aspect ratio: cosine distance between histograms of max/min Feret diameter,
  both on ``--bins`` equal-width bins shared per image (pooled range of GT and prediction),
  particles touching the border left out on both sides (``--include-border`` keeps them);
- g(r): RMSE between the centroid RDFs (rdfpy, dr = median GT diameter / 4, same r grid).

The paper states neither its bins nor its border rule, and the histogram distances depend
strongly on the bins; so the table also gives a reference row per metric: the ground truth
against itself grown by 1 px (``skimage.segmentation.expand_labels``), i.e. what one pixel of
systematic boundary disagreement costs under the same settings.

Prints mean, median and number of images per metric next to the published averages over the
32 test images with >= 30 particles. Images where a metric is NaN (e.g. nothing predicted) are
counted apart and listed in the CSV with the reason.

    nice -n 15 python benchmarks/measurement_vs_gt.py [--weights W] [--mc-samples 30] [--tu X]
        [--smooth SIGMA] [--limit N] [--csv per_image.csv]
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
from skimage.segmentation import expand_labels

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idx.compare import METRICS, MIN_PARTICLES, N_BINS, compare_distributions  # noqa: E402
from models.data import default_emps_dir, load_sample, read_split  # noqa: E402

log = logging.getLogger("measurement_vs_gt")

PUBLISHED = {"size_cosine": 0.02111, "aspect_cosine": 0.03261, "rdf_rmse": 0.63646}
PUBLISHED_IMAGES = 32
LABELS = {"size_cosine": "size histogram cosine distance",
          "aspect_cosine": "aspect-ratio histogram cosine distance",
          "rdf_rmse": "RDF RMSE"}
CSV_FIELDS = ["stem", "n_gt", "n_pred", "n_gt_hist", "n_pred_hist", *METRICS, "dr_px",
              "n_rdf_radii", "seconds", "reason", *[f"grown_{name}" for name in METRICS]]


def select_images(data_dir: Path, min_particles: int, limit: int | None) -> list:
    """Test samples whose ground truth has at least ``min_particles`` instances (first ``limit``)."""
    chosen = []
    for stem in read_split(data_dir, "test"):
        sample = load_sample(data_dir, stem)
        if len(np.unique(sample.instances[sample.instances > 0])) >= min_particles:
            chosen.append(sample)
            if limit and len(chosen) >= limit:
                break
    return chosen


def summarise(rows: list[dict], prefix: str = "") -> list[tuple]:
    """(metric, mean, median, n images with a value, n NaN) per metric (columns ``prefix + metric``)."""
    table = []
    for name in METRICS:
        values = np.array([row[prefix + name] for row in rows], float)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        median = float(np.median(finite)) if finite.size else math.nan
        table.append((name, mean, median, int(finite.size), int(values.size - finite.size)))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="BPartIS state dict (default: shipped weights)")
    parser.add_argument("--data", type=Path, default=default_emps_dir(), help="EMPS folder")
    parser.add_argument("--mc-samples", type=int, default=30, help="Monte-Carlo samples T")
    parser.add_argument("--tu", type=float, default=None,
                        help="published uncertainty filter at this t_u (default: the learned filter of the weights)")
    parser.add_argument("--no-filter", action="store_true", help="switch the filter off")
    parser.add_argument("--smooth", type=float, default=None,
                        help="Gaussian sigma (px at 512) for the network's input, as idx segment --smooth")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--min-particles", type=int, default=MIN_PARTICLES)
    parser.add_argument("--bins", type=int, default=N_BINS, help="histogram bins per image")
    parser.add_argument("--include-border", action="store_true",
                        help="keep particles touching the border in the histograms")
    parser.add_argument("--limit", type=int, default=None, help="only the first N qualifying images")
    parser.add_argument("--csv", type=Path, default=None, help="write per-image values here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    from models.infer import ParticleSegmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    segmenter = ParticleSegmenter(weights=args.weights, device=args.device,
                                  mc_samples=args.mc_samples, tu=args.tu, filter=not args.no_filter,
                                  smooth=args.smooth)
    params = segmenter.params
    filter_name = {"none": "off", "mi": f"t_u = {segmenter.tu}",
                   "learned": f"learned, p >= {params['filter_threshold']}"}[params["filter_kind"]]
    samples = select_images(args.data, args.min_particles, args.limit)
    log.info("%d test images with >= %d ground-truth particles", len(samples), args.min_particles)
    rows = []
    for i, sample in enumerate(samples, 1):
        start = time.perf_counter()
        labels = segmenter.segment(sample.image).labels
        seconds = time.perf_counter() - start
        result = compare_distributions(sample.instances, labels, n_bins=args.bins,
                                       min_particles=args.min_particles,
                                       exclude_border=not args.include_border)
        grown = compare_distributions(sample.instances, expand_labels(sample.instances, 1),
                                      n_bins=args.bins, min_particles=args.min_particles,
                                      exclude_border=not args.include_border)
        rows.append({"stem": sample.stem, **result, "seconds": round(seconds, 2),
                     **{f"grown_{name}": grown[name] for name in METRICS}})
        log.info("[%d/%d] %s: %d GT, %d predicted, size %.4f, aspect %.4f, RDF %.4f%s", i,
                 len(samples), sample.stem, result["n_gt"], result["n_pred"],
                 result["size_cosine"], result["aspect_cosine"], result["rdf_rmse"],
                 f" ({result['reason']})" if result["reason"] else "")

    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        log.info("per-image values written to %s", args.csv)

    print(f"\nEMPS test images with >= {args.min_particles} GT particles: {len(samples)} "
          f"(published: {PUBLISHED_IMAGES}); weights {segmenter.weights_path}, "
          f"T = {args.mc_samples}, filter {filter_name}" + (f", input smoothed (sigma {args.smooth} px)"
                                                             if args.smooth else ""))
    print(f"bins: {args.bins} equal-width per image over the pooled GT+prediction range; border "
          f"particles {'kept' if args.include_border else 'excluded on both sides'} in histograms; "
          "g(r): all centroids, dr = median GT diameter / 4\n")
    header = (f"{'metric':<40} {'mean':>9} {'median':>9} {'n':>4} {'NaN':>4} {'published':>10} "
              f"{'GT vs GT+1px':>13}")
    print(header)
    print("-" * len(header))
    for (name, mean, median, n, n_nan), grown in zip(summarise(rows), summarise(rows, "grown_")):
        print(f"{LABELS[name]:<40} {mean:>9.5f} {median:>9.5f} {n:>4d} {n_nan:>4d} "
              f"{PUBLISHED[name]:>10.5f} {grown[1]:>13.5f}")
    if rows:
        print(f"\nmean GT / predicted particles per image: "
              f"{np.mean([r['n_gt'] for r in rows]):.1f} / {np.mean([r['n_pred'] for r in rows]):.1f}; "
              f"segmentation {np.mean([r['seconds'] for r in rows]):.2f} s per image")


if __name__ == "__main__":
    main()
