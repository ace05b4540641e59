"""Throughput of ``idx extract`` on a folder of EMPS images, and database size per 10 000 particles.

Copies the first ``--images`` (20) EMPS test micrographs, as published (PNG, full size), into a
temporary folder under /tmp, then runs ``idx.pipeline.extract_to_db(folder, db, ...)`` once per
T in ``--mc-samples`` (30 and 10) into a fresh database each time: the whole pipeline (panel
splitting, scale-bar OCR, BPartIS with Monte-Carlo dropout, measurements, database writes,
panel crops saved beside the database). The model is loaded once per T before timing and run on
one noise image (load time, reported apart, includes tracing the fused graphs, which ``idx
extract`` does on its first panel unless ``--no-compile``), so images/minute is the steady-state
rate of a long extraction.

Sizes: the SQLite file (with any -wal/-shm left) and the ``<db>-panels`` folder; MB per 10 000
particles divides each by the particles stored (1 MB = 10^6 bytes). The temporary folder is
deleted at the end unless ``--keep``.

    nice -n 15 python benchmarks/extract_throughput.py [--weights W] [--images 20]
        [--mc-samples 30 10] [--threads N] [--no-compile] [--keep]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idx.pipeline import default_panel_dir, extract_to_db  # noqa: E402
from models.data import default_emps_dir, read_split  # noqa: E402

log = logging.getLogger("extract_throughput")

MB = 1e6


def copy_images(data_dir: Path, n_images: int, folder: Path) -> list[Path]:
    """Copy the first ``n_images`` EMPS test images into ``folder``; returns the copies."""
    stems = read_split(data_dir, "test")[:n_images]
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for stem in stems:
        source = data_dir / "images" / f"{stem}.png"
        copies.append(Path(shutil.copy2(source, folder / source.name)))
    return copies


def folder_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 if it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def db_bytes(db_path: Path) -> int:
    """Size of an SQLite database with its -wal / -shm files."""
    return sum(p.stat().st_size for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))
               if p.exists())


def measure_run(folder: Path, db_path: Path, weights, mc_samples: int, tu, device: str,
                compile_kernels: bool = True) -> dict:
    """Load the model, extract ``folder`` into ``db_path``; timings, counts and sizes."""
    from models.infer import ParticleSegmenter

    start = time.perf_counter()
    segmenter = ParticleSegmenter(weights=weights, device=device, mc_samples=mc_samples,
                                  tu=tu, compile=compile_kernels)
    segmenter.segment((np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8))
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    counts = extract_to_db(folder, db_path, segmenter=segmenter, progress=False)
    seconds = time.perf_counter() - start
    panels_bytes = folder_bytes(default_panel_dir(db_path))
    params = segmenter.params
    applied = {"learned": f"p>={params['filter_threshold']}", "mi": f"tu {segmenter.tu}"}
    return {"T": mc_samples, "filter": applied.get(params["filter_kind"], "none"), "load_s": load_s,
            "seconds": seconds, **counts, "db_bytes": db_bytes(db_path), "panels_bytes": panels_bytes}


def per_10k(n_bytes: int, particles: int) -> float:
    return n_bytes / MB / particles * 10_000 if particles else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="BPartIS state dict (default: shipped weights)")
    parser.add_argument("--data", type=Path, default=default_emps_dir(), help="EMPS folder")
    parser.add_argument("--images", "--limit", dest="images", type=int, default=20,
                        help="number of EMPS test images to extract")
    parser.add_argument("--mc-samples", type=int, nargs="+", default=[30, 10],
                        help="Monte-Carlo samples T, one run each")
    parser.add_argument("--tu", type=float, default=None,
                        help="published uncertainty filter at this t_u (default: the learned filter of the weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-compile", action="store_true",
                        help="the plain model, no fused graphs (idx extract --no-compile)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.images < 1:
        parser.error("--images must be >= 1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="idx-throughput-", dir="/tmp"))
    try:
        folder = work / "images"
        copies = copy_images(args.data, args.images, folder)
        input_mb = sum(p.stat().st_size for p in copies) / MB
        log.info("%d images (%.1f MB) copied to %s", len(copies), input_mb, folder)
        rows = []
        for t in args.mc_samples:
            log.info("extracting with T = %d ...", t)
            row = measure_run(folder, work / f"T{t}.db", args.weights, t, args.tu, args.device,
                              not args.no_compile)
            log.info("T = %d: %.1f s, %d panels, %d particles", t, row["seconds"], row["panels"],
                     row["particles"])
            rows.append(row)
    finally:
        if args.keep:
            log.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nidx extract on {len(copies)} EMPS test images ({input_mb:.1f} MB of PNG), "
          f"device {args.device}, torch threads {torch.get_num_threads()}, weights "
          f"{args.weights or 'shipped'}, {'plain model' if args.no_compile else 'fused oneDNN graphs'}")
    header = (f"{'T':>3} {'filter':>9} {'load s':>7} {'extract s':>10} {'img/min':>8} {'panels':>7} "
              f"{'EM':>4} {'particles':>10} {'DB MB':>7} {'panels MB':>10} {'DB MB/10k':>10} "
              f"{'total MB/10k':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['T']:>3d} {r['filter']:>9} {r['load_s']:>7.1f} {r['seconds']:>10.1f} "
              f"{60 * r['figures'] / r['seconds']:>8.2f} {r['panels']:>7d} {r['em_panels']:>4d} "
              f"{r['particles']:>10d} {r['db_bytes'] / MB:>7.2f} {r['panels_bytes'] / MB:>10.2f} "
              f"{per_10k(r['db_bytes'], r['particles']):>10.2f} "
              f"{per_10k(r['db_bytes'] + r['panels_bytes'], r['particles']):>13.2f}")
    print("img/min = images (figures) per minute of extraction, model load excluded; "
          "total = DB + <db>-panels folder")


if __name__ == "__main__":
    main()
