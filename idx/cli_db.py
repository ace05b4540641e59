"""idx commands (see idx/cli.py)."""
from idx.cli import check_output, cli, emit, json_option, segmenter_options  # noqa: F401


# --- query, stats, plot, serve (idx.db, idx.plots) -------------------------------------------

import json  # noqa: E402
import logging  # noqa: E402

import click  # noqa: E402

log = logging.getLogger(__name__)

QUERY_TABLE_COLUMNS = ("panel_id", "label", "doi", "year", "technique", "units", "diameter_nm",
                       "diameter_px", "feret_max_nm", "aspect_ratio", "shape", "touches_border")
PANEL_TABLE_COLUMNS = ("id", "doi", "year", "technique", "label", "nm_per_px", "count",
                       "count_measured", "diameter_mean_nm", "diameter_std_nm",
                       "diameter_mean_px")


def _print_frame(frame, output_format: str, columns=None) -> None:
    """Write a DataFrame to stdout as an aligned table, CSV or a JSON list of records.

    Binary values (BLOBs, e.g. ``panel_maps``) are written as base64 text in CSV / JSON and as
    ``<N bytes>`` in the table.
    """
    import base64

    for name in frame.columns[frame.dtypes == object]:
        if frame[name].map(lambda v: isinstance(v, (bytes, bytearray, memoryview))).any():
            frame = frame.copy()
            frame[name] = frame[name].map(
                lambda v: (f"<{len(v)} bytes>" if output_format == "table"
                           else base64.b64encode(bytes(v)).decode("ascii"))
                if isinstance(v, (bytes, bytearray, memoryview)) else v)
    if output_format == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif output_format == "json":
        click.echo(frame.to_json(orient="records", indent=2))
    else:
        if columns is not None:
            frame = frame[[c for c in columns if c in frame.columns]]
        click.echo("(no rows)" if frame.empty else frame.to_string(index=False, max_colwidth=40))


def warn_if_runs_mix(db, run_id, database) -> None:
    """Log a warning when rows of several extraction runs would be pooled (no ``--run``)."""
    if run_id is None:
        db.warn_if_runs_pooled(f"pick one with --run (ids and settings: `idx stats {database}`)")


@cli.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--material", help="Phrase searched in captions and article titles (full text).")
@click.option("--technique", help="Panel technique, e.g. TEM or SEM.")
@click.option("--min-diameter-nm", type=float, help="Smallest equivalent diameter, nm.")
@click.option("--max-diameter-nm", type=float, help="Largest equivalent diameter, nm.")
@click.option("--year", type=int, help="Publication year.")
@click.option("--doi", help="Article DOI.")
@click.option("--run", "run_id", help="Run id (see `idx stats`).")
@click.option("--shape", type=click.Choice(["sphere", "rod", "cube/rectangle", "triangle",
                                            "hexagon", "irregular"]), help="Shape class.")
@click.option("--panel", "panel_id", help="Panel id.")
@click.option("--panels", "per_panel", is_flag=True, help="One row per panel (statistics).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--sql", "sql_query", help="A read-only SQL query instead of the filters.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]),
              default="table", show_default=True, help="Output format (csv/json: all columns).")
def query(database, material, technique, min_diameter_nm, max_diameter_nm, year, doi, run_id,
          shape, panel_id, per_panel, limit, sql_query, output_format):
    """Particles (or panels) of a database matching filters, or a read-only SQL query.

    \b
        idx query particles.db --material gold --technique TEM --min-diameter-nm 5
        idx query particles.db --panels --year 2020 --format csv > panels.csv
        idx query particles.db --sql "SELECT shape, COUNT(*) FROM particles GROUP BY shape"
    """
    from idx.db import Database
    from idx.errors import IdxError

    particle_filters = {"--min-diameter-nm": min_diameter_nm, "--max-diameter-nm": max_diameter_nm,
                        "--shape": shape}
    if per_panel and any(v is not None for v in particle_filters.values()):
        given = ", ".join(k for k, v in particle_filters.items() if v is not None)
        raise IdxError(f"{given} select particles, not panels; drop --panels, or filter panels "
                       "with --sql (e.g. on diameter_mean_nm)")
    with Database(database, readonly=True) as db:
        if sql_query is None and panel_id is None:
            warn_if_runs_mix(db, run_id, database)
        if sql_query is not None:
            frame, columns = db.sql(sql_query), None
        elif per_panel:
            frame = db.panel_stats(material=material, technique=technique, year=year, doi=doi,
                                   run=run_id, panel=panel_id, limit=limit)
            frame, columns = frame.drop(columns=["summary"]), PANEL_TABLE_COLUMNS
        else:
            frame = db.particles(material=material, technique=technique,
                                 min_diameter_nm=min_diameter_nm, max_diameter_nm=max_diameter_nm,
                                 year=year, doi=doi, run=run_id, shape=shape, panel=panel_id,
                                 limit=limit)
            columns = QUERY_TABLE_COLUMNS
    _print_frame(frame, output_format, columns)


KEY_SETTINGS = ("mc_samples", "filter_kind")  # shown for every run; other settings where runs differ


def run_settings(runs: list[dict]) -> list[str]:
    """One ``name=value`` line per run: its T and filter, then every setting that differs between
    the runs (the rest is the same for all; ``idx stats --json`` has them all)."""
    def shown(value):
        return json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    names = set().union(*(run.get("params", {}) for run in runs)) if runs else set()
    differ = sorted(n for n in names if n not in KEY_SETTINGS
                    and len({shown(run.get("params", {}).get(n)) for run in runs}) > 1)
    return [", ".join(f"{n}={shown(run.get('params', {}).get(n))}" for n in (*KEY_SETTINGS, *differ)
                      if n in run.get("params", {}) or n in differ)
            for run in runs]


@cli.command()
@click.argument("database", type=click.Path(dir_okay=False))
@json_option
def stats(database, as_json):
    """Summarise a database: rows per table, runs, techniques, shapes, years.

    \b
        idx stats particles.db --json
    """
    from idx.db import Database

    with Database(database, readonly=True) as db:
        summary = db.stats()
    tables = ", ".join(f"{name} {count}" for name, count in summary["tables"].items())
    lines = [
        f"{summary['path']}: {summary['size_bytes'] or 0:,} bytes",
        f"rows: {tables}",
        f"particles with a scale: {summary['particles_with_scale']}"
        + (f", mean diameter {summary['diameter_mean_nm']:.3g} nm over the "
           f"{summary['particles_measured']} not cut by a panel's edge"
           if summary["diameter_mean_nm"] is not None else "")
        + (f" (the {len(summary['runs'])} runs below pooled; one run: `idx query --run ID`)"
           if len(summary["runs"]) > 1 else ""),
        "years: " + ("-" if summary["years"][0] is None
                     else f"{summary['years'][0]}-{summary['years'][1]}"),
        "techniques: " + (", ".join(f"{k} {v}" for k, v in summary["techniques"].items()) or "-"),
        "shapes: " + (", ".join(f"{k} {v}" for k, v in summary["shapes"].items()) or "-"),
    ]
    for run, settings in zip(summary["runs"], run_settings(summary["runs"])):
        lines.append(f"run {run['id']}: {run['model_version']} ({run['weights_sha256'][:12]}), "
                     f"{run['panels']} panels, started {run['started_at']}" + (f"; {settings}" if settings else ""))
    emit(summary, as_json, text="\n".join(lines))


@cli.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--panel", "panel_id", help="Plot one panel (id from `idx query --panels`).")
@click.option("--all", "all_panels", is_flag=True, help="Histogram of every particle with a scale.")
@click.option("--kind", type=click.Choice(["histogram", "rdf", "overlay"]), default="histogram",
              show_default=True, help="What to plot.")
@click.option("--run", "run_id", help="With --all: only this run's particles (see `idx stats`).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
def plot(database, panel_id, all_panels, kind, run_id, output):
    """Plot a size histogram, g(r) or the segmentation overlay of a panel.

    \b
        idx plot particles.db --all -o sizes.png
        idx plot particles.db --panel 3f2a9c0d1b2e4f5a --kind overlay -o overlay.png
    """
    from pathlib import Path

    from idx.db import Database
    from idx.errors import IdxError
    from idx.plots import plot_overlay, plot_rdf, plot_size_histogram

    if bool(panel_id) == bool(all_panels):
        raise click.UsageError("pass exactly one of --panel ID or --all")
    if panel_id and run_id:
        raise click.UsageError("--run goes with --all; a panel id already names its run")
    if all_panels and kind != "histogram":
        raise click.UsageError(f"--kind {kind} needs one panel: pass --panel ID")
    check_output(output, "-o")
    output = Path(output)
    with Database(database, readonly=True) as db:
        if all_panels:
            warn_if_runs_mix(db, run_id, database)
            particles = db.particles(min_diameter_nm=0, run=run_id)
            diameters = particles.loc[~particles["touches_border"].astype(bool),
                                      "diameter_nm"].to_numpy()
            if not len(diameters):
                log.warning(
                    "no particle with a scale (nm) to plot in %s; panels without a readable scale "
                    "are in px: plot one with --panel ID", database)
            figure = plot_size_histogram(diameters, "nm", title="all panels")
        else:
            panel_id = db.resolve_panel(panel_id)
            row = db.panel_stats(panel=panel_id).iloc[0]
            if row["kind"] not in (None, "em"):  # None: written by hand, not by idx extract
                raise IdxError(f"panel {panel_id} was not segmented (not an EM micrograph), so it has "
                               f"no particles to plot; list the EM panels with `idx query {database} --panels`")
            summary = json.loads(row["summary"] or "{}")
            title = f"{row['doi'] or ''} {row['figure_label'] or ''} {row['label'] or ''}".strip()
            if kind == "histogram":
                particles = db.particles(panel=panel_id)
                particles = particles[~particles["touches_border"].astype(bool)]
                unit = "nm" if (particles["units"] == "nm").all() and len(particles) else "px"
                figure = plot_size_histogram(particles[f"diameter_{unit}"].to_numpy(), unit,
                                             title=title or None)
            elif kind == "rdf":
                rdf = summary.get("rdf")
                if not rdf:
                    raise IdxError(f"panel {panel_id} has no g(r): "
                                   f"{summary.get('rdf_reason') or 'not computed'}")
                figure = plot_rdf(rdf["r"], rdf["g"], rdf["unit"], title=title or None)
            else:
                labels, uncertainty = db.load_panel_maps(panel_id)
                image = _read_panel_image(_panel_image_path(row["image_path"], database), labels.shape)
                figure = plot_overlay(image, labels, title=title or None)
    figure.savefig(output)  # a file the system refuses is a one-line error (idx.cli.IdxGroup)
    click.echo(str(output))


def _panel_image_path(path, database):
    """Where a panel crop is now: its stored (absolute) path, or, when the database was moved or
    shared with its ``NAME-panels/`` folder, the file of that name in the folder beside it."""
    from pathlib import Path

    from idx.pipeline import default_panel_dir

    if path and not Path(path).exists():
        beside = default_panel_dir(database) / Path(path).name
        if beside.is_file():
            return str(beside)
    return path


def _read_panel_image(path, shape):
    """The panel image if its file is readable and matches the map, else None (logged)."""
    from idx.errors import ImageError
    from miners.images import load_image

    if not path:
        log.warning("panel has no image path; drawing contours on a blank background")
        return None
    try:
        image = load_image(path)
    except ImageError as exc:
        log.warning("%s; drawing contours on a blank background", exc)
        return None
    if image.shape[:2] != tuple(shape):
        log.warning("image %s is %s, the instance map %s; drawing on a blank background",
                    path, image.shape[:2], tuple(shape))
        return None
    return image


@cli.command()
@click.argument("database", type=click.Path(dir_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Port on 127.0.0.1.")
def serve(database, port):
    """Browse and query a database in the browser (datasette, on 127.0.0.1 only).

    \b
        idx serve particles.db --port 8001   # then open http://127.0.0.1:8001/
    """
    import signal
    import sqlite3
    import subprocess
    import sys
    from contextlib import closing, suppress
    from pathlib import Path

    args = datasette_args(database, port)
    sidecars = [Path(f"{database}-wal"), Path(f"{database}-shm")]
    existed = any(p.exists() for p in sidecars)
    # datasette runs in its own process: its read-only connections leave SQLite's -wal / -shm
    # files, which the last connection to close removes, so one is closed here once it has gone
    server = subprocess.Popen([sys.executable, "-m", "datasette", *args])
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signum))
    try:
        while True:
            try:
                server.wait()
                break
            except KeyboardInterrupt:  # pass it on (from a terminal the server has it already)
                server.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.poll() is None:
            server.terminate()
            server.wait()
        if not existed and any(p.exists() for p in sidecars):
            with suppress(sqlite3.Error), closing(sqlite3.connect(database)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def datasette_args(database, port) -> list:
    """``datasette`` arguments serving an idx database on 127.0.0.1 (one-line error if it is not
    one); a clean database in a folder that cannot be written is served immutable, as
    :class:`idx.db.Database` reads it."""
    from idx.db import Database

    with Database(database, readonly=True) as db:
        immutable = db.immutable
    return ["serve", *(["--immutable"] if immutable else []), str(database), "--host", "127.0.0.1",
            "--port", str(port)]


@cli.command()
@click.argument("source", required=False, type=click.Path(exists=True))
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False),
              help="SQLite database to write (created if missing).")
@click.option("--caption", default=None, help="Caption of an image input (techniques, stated scales).")
@click.option("--no-split", is_flag=True, help="Treat each image as one panel.")
@segmenter_options
@json_option
def extract(source, db_path, caption, no_split, device, mc_samples, tu, no_filter, no_tta, min_size,
            zoom, no_snap, smooth, compile_kernels, weights, as_json):
    """Extract particles from an image, figure, article file or folder into a database.

    Without SOURCE, the figures that `idx crawl` stored in the database are processed.
    Re-running skips panels already stored by the same model and parameters.

    \b
        idx extract paper.pdf --db particles.db
        idx extract figures/ --db particles.db --mc-samples 10 --json
    """
    from idx.errors import IdxError
    from idx.pipeline import extract_to_db

    report = extract_to_db(source, db_path, weights=weights, device=device, mc_samples=mc_samples,
                           tu=tu, filter=not no_filter, caption=caption, split=not no_split,
                           tta=False if no_tta else None, min_instance_px=min_size,
                           compile=compile_kernels, zoom=zoom, edges=False if no_snap else None,
                           smooth=smooth)
    failed = report["failed"]
    if source is not None and not report["figures"]:
        unreadable = f"{failed} unreadable files, " if failed else ""
        raise IdxError(f"{source}: no figure could be read from it ({unreadable}the warnings above "
                       "say why); no panel was stored")
    if source is None and failed and not report["figures"]:
        raise IdxError(f"{db_path}: none of the {failed} stored figures' image files could be read "
                       "(the warnings above say why): crawled images live in the crawl cache, so if "
                       "it was moved or cleared run the same `idx crawl` again, which fetches them; "
                       "for your own files, extract them again from where they are now (idx extract PATH)")
    updated = f", {report['updated']} of them updated for a new caption" if report["updated"] else ""
    emit(report, as_json, text=(
        f"{report['figures']} figures, {report['panels']} panels stored{updated} "
        f"({report['em_panels']} EM"
        + (f", {report['unscaled']} of them without a scale: sizes in px" if report["unscaled"] else "")
        + f", {report['particles']} particles), "
        f"{report['skipped']} already stored"
        + (f", {failed} files not readable (see the warnings above)" if failed else "")
        + f" -> {db_path}"))


@cli.command()
@click.option("--out", default="idx-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the database and plots.")
@click.option("--mc-samples", default=30, show_default=True, type=click.IntRange(1, 1000))
@json_option
def demo(out, mc_samples, as_json):
    """Run the whole pipeline on the bundled sample article (PDF with a multi-panel figure).

    Writes OUT/idx-demo.db, prints a per-panel table and writes size histograms, g(r) and
    segmentation overlays as PNG files in OUT.
    """
    from idx.demo import run_demo

    report = run_demo(out, mc_samples=mc_samples)
    emit(report, as_json, text=report["table"])
