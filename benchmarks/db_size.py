"""Database size per 10 000 particles, with and without the stored instance/uncertainty maps.

Writes synthetic panels (512 x 512 px, particles of 8-30 px diameter at random non-overlapping
positions, an uncertainty map that is smooth noise near particle edges and 0 elsewhere, like a
MC-dropout mutual-information map) through ``Database.add_panel`` into a fresh file, closes it
(WAL checkpointed) and reports bytes per 10 000 particles, broken down by table (sqlite dbstat).

    nice -n 15 python benchmarks/db_size.py [--particles 10000] [--per-panel 100 400]
"""
from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from idx.db import Database
from idx.particles import measure_particles, summarise_panel

PANEL_PX = 512


def synthetic_panel(n_particles: int, rng) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((PANEL_PX, PANEL_PX), np.int32)
    k = 0
    attempts = 0
    while k < n_particles and attempts < 50 * n_particles:
        attempts += 1
        radius = rng.uniform(4, 15) * (0.5 if n_particles > 200 else 1.0)
        r, c = rng.uniform(radius, PANEL_PX - radius, size=2)
        rr, cc = disk((r, c), radius, shape=labels.shape)
        if labels[rr, cc].any():
            continue
        k += 1
        labels[rr, cc] = k
    edges = ndimage.gaussian_filter(find_boundaries(labels).astype(np.float32), 1.5)
    uncertainty = (edges * rng.uniform(0.5, 1.0, labels.shape)).astype(np.float32)
    return labels, uncertainty


def table_sizes(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # SQLite built without dbstat
        return {}
    finally:
        conn.close()
    return dict(rows)


def build(path: Path, n_total: int, per_panel: int, store_maps: bool, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    db = Database(path)
    run_id = db.start_run("bench", "0" * 64, {"maps": store_maps})
    stored = panels = 0
    start = time.perf_counter()
    while stored < n_total:
        article_id = db.add_article({"doi": f"10.9999/bench.{panels}", "title": "Benchmark",
                                     "year": 2020})
        figure_id = db.add_figure(article_id, {"id": "fig1", "caption": "TEM of particles"})
        labels, uncertainty = synthetic_panel(min(per_panel, n_total - stored), rng)
        particles = measure_particles(labels, nm_per_px=0.8, uncertainty=uncertainty)
        summary = summarise_panel(particles, labels.shape)
        db.add_panel(run_id, figure_id, {"bbox": [0, 0, PANEL_PX, PANEL_PX], "technique": "TEM",
                                         "nm_per_px": 0.8},
                     particles, labels if store_maps else np.zeros((1, 1), np.int32),
                     uncertainty if store_maps else None, summary)
        stored += len(particles)
        panels += 1
    seconds = time.perf_counter() - start
    db.close()
    return {"particles": stored, "panels": panels, "bytes": path.stat().st_size,
            "seconds": seconds, "tables": table_sizes(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--per-panel", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("| particles/panel | maps stored | panels | particles | file MB | MB per 10k particles "
          "| particles table MB | panel_maps MB | write s |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for per_panel in args.per_panel:
            for store_maps in (True, False):
                path = Path(folder) / f"bench-{per_panel}-{store_maps}.db"
                result = build(path, args.particles, per_panel, store_maps, args.seed)
                mb = result["bytes"] / 1e6
                tables = result["tables"]
                particle_mb = sum(v for k, v in tables.items()
                                  if k == "particles" or k.startswith("sqlite_autoindex_particles")
                                  or k.startswith("idx_particles")) / 1e6
                maps_mb = sum(v for k, v in tables.items() if "panel_maps" in k) / 1e6
                print(f"| {per_panel} | {'yes' if store_maps else 'no'} | {result['panels']} | "
                      f"{result['particles']} | {mb:.2f} | "
                      f"{mb * 10_000 / result['particles']:.2f} | {particle_mb:.2f} | "
                      f"{maps_mb:.2f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
