"""``idx demo``: the whole pipeline on the bundled sample article, with a table and plots."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from idx.errors import IdxError

log = logging.getLogger(__name__)

DEMO_PDF = Path(__file__).resolve().parents[1] / "data" / "demo-article.pdf"


def run_demo(out: str | Path = "idx-demo", mc_samples: int = 30, segmenter=None) -> dict:
    """Extract the demo article into ``out/idx-demo.db`` and draw its plots.

    Returns
    -------
    dict
        ``db``, ``seconds``, ``panels`` (one dict per panel), ``plots`` (PNG paths) and
        ``table`` (the printed summary).
    """
    from idx.db import Database
    from idx.pipeline import extract_to_db
    from idx.plots import plot_overlay, plot_rdf, plot_size_histogram

    if not DEMO_PDF.exists():
        raise IdxError(f"demo article missing at {DEMO_PDF}; rebuild it with `python data/make_demo.py`")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "idx-demo.db"
    start = time.perf_counter()
    report = extract_to_db(DEMO_PDF, db_path, segmenter=segmenter, mc_samples=mc_samples,
                           figure_dir=out / "figures")
    seconds = time.perf_counter() - start
    plots, panels = [], []
    with Database(db_path, readonly=True) as db:
        table = db.sql("SELECT id, label, kind, technique, nm_per_px, scale_source, scale_text, count, "
                       "count_measured, diameter_mean_nm, diameter_std_nm, diameter_mean_px, summary "
                       f"FROM panels WHERE run_id = '{report['run_id']}' ORDER BY bbox_y0, bbox_x0")
        for row in table.to_dict("records"):
            import json

            summary = json.loads(row.pop("summary") or "{}")
            for key in ("count", "count_measured"):  # pandas reads an int column with NULLs as floats
                if row[key] is not None and row[key] == row[key]:
                    row[key] = int(row[key])
            panels.append(row)
            if row["kind"] != "em":
                continue
            name = f"panel-{row['label'] or row['id'][:8]}"
            labels, uncertainty = db.load_panel_maps(row["id"])
            image_path = db.conn.execute("SELECT image_path FROM panels WHERE id = ?",
                                         [row["id"]]).fetchone()[0]
            from miners.images import load_image

            figure = plot_overlay(load_image(image_path), labels, title=f"{name}: {row['count']} particles")
            plots.append(_save(figure, out / f"{name}-overlay.png"))
            particles = db.particles(panel=row["id"])
            unit = "nm" if row["nm_per_px"] else "px"
            column = "diameter_nm" if unit == "nm" else "diameter_px"
            measured = particles[~particles["touches_border"].astype(bool)] if len(particles) else particles
            if len(measured):
                figure = plot_size_histogram(measured[column].to_numpy(), unit=unit, title=name)
                plots.append(_save(figure, out / f"{name}-sizes.png"))
            rdf = summary.get("rdf")
            if rdf:
                plots.append(_save(plot_rdf(rdf["r"], rdf["g"], rdf["unit"], title=name),
                                   out / f"{name}-rdf.png"))
    lines = [f"idx demo: {DEMO_PDF.name} -> {db_path} in {seconds:.1f} s "
             f"({report['panels']} panels stored, {report['skipped']} already stored)",
             f"{'panel':<6}{'kind':<7}{'technique':<10}{'scale':<22}{'particles':>10}{'mean d':>12}{'std d':>10}"]
    for p in panels:
        p.update({k: (None if _missing(v) else v) for k, v in p.items()})
        if p["nm_per_px"]:
            scale = f"{p['nm_per_px']:.3g} nm/px ({p['scale_source']})"
            mean, std = p["diameter_mean_nm"], p["diameter_std_nm"]
            unit = "nm"
        else:
            scale, mean, std, unit = "none found", p["diameter_mean_px"], None, "px"
        mean_s = "-" if _missing(mean) else f"{mean:.1f} {unit}"
        std_s = "-" if _missing(std) else f"{std:.1f}"
        count = p["count"] if p["kind"] == "em" else "-"
        lines.append(f"{(p['label'] or '?'):<6}{p['kind']:<7}{(p['technique'] or '-'):<10}{scale:<22}"
                     f"{count!s:>10}{mean_s:>12}{std_s:>10}")
    lines.append("plots: " + ", ".join(str(p) for p in plots))
    return {"db": str(db_path), "seconds": round(seconds, 1), "panels": panels,
            "plots": [str(p) for p in plots], "table": "\n".join(lines)}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
