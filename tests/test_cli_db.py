"""Tests of `idx query`, `idx stats`, `idx plot` and `idx serve` on a real database file."""
import io
import json
import sqlite3
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from click.testing import CliRunner
from PIL import Image
from skimage.draw import disk

from idx.cli import cli
from idx.db import Database
from idx.errors import DatabaseError
from idx.particles import measure_particles, summarise_panel

REPO = Path(__file__).resolve().parents[1]
EMPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"


def lattice_labels(n_side=6, spacing=24, radius=6):
    labels = np.zeros((n_side * spacing, n_side * spacing), np.int32)
    for k, (r, c) in enumerate(
            [(r, c) for r in range(12, n_side * spacing, spacing)
             for c in range(12, n_side * spacing, spacing)], start=1):
        rr, cc = disk((r, c), radius, shape=labels.shape)
        labels[rr, cc] = k
    return labels


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A database with a real EMPS panel (image on disk) and a synthetic 36-particle lattice."""
    path = tmp_path_factory.mktemp("cli") / "particles.db"
    db = Database(path)
    run_id = db.start_run("bpartis-test", "0" * 64, {"mc_samples": 4})
    article_id = db.add_article({"doi": "10.1000/emps", "title": "Gold nanoparticles",
                                 "year": 2019})
    figure_id = db.add_figure(article_id, {"id": "fig1", "label": "Figure 1",
                                           "caption": "TEM images of Au particles"})
    panel_ids = {}
    if EMPS.exists():
        for name in (EMPS / "test.csv").read_text().split():  # one with too few for g(r)
            labels = np.array(Image.open(EMPS / "segmaps" / f"{name}.png")).astype(np.int32)
            if 2 <= len(np.unique(labels)) - 1 < 20:
                break
        image_path = EMPS / "images" / f"{name}.png"
        table = measure_particles(labels, nm_per_px=1.5)
        panel_ids["emps"] = db.add_panel(
            run_id, figure_id, {"bbox": [0, 0, labels.shape[1], labels.shape[0]], "label": "a",
                                "technique": "TEM", "nm_per_px": 1.5,
                                "image_path": str(image_path)},
            table, labels, None, summarise_panel(table, labels.shape))
    labels = lattice_labels()
    table = measure_particles(labels, nm_per_px=0.5)
    panel_ids["lattice"] = db.add_panel(
        run_id, figure_id, {"bbox": [1000, 0, 1144, 144], "label": "b", "technique": "SEM",
                            "nm_per_px": 0.5, "image_path": "/nonexistent/panel.png"},
        table, labels, None, summarise_panel(table, labels.shape))
    db.close()
    return path, panel_ids


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_query_formats(database):
    path, _ = database
    as_csv = run("query", path, "--technique", "SEM", "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    frame = pd.read_csv(io.StringIO(as_csv.output))
    assert len(frame) == 36 and (frame["technique"] == "SEM").all()
    assert frame["diameter_nm"].between(5, 7).all()  # radius 6 px at 0.5 nm/px
    as_json = json.loads(run("query", path, "--shape", "sphere", "--format", "json",
                             "--limit", "5").output)
    assert len(as_json) == 5 and {row["shape"] for row in as_json} == {"sphere"}
    table = run("query", path, "--material", "gold", "--max-diameter-nm", "7")
    assert table.exit_code == 0 and "diameter_nm" in table.output.splitlines()[0]
    assert run("query", path, "--year", "1990").output.strip() == "(no rows)"


def test_query_refusals_and_binary_columns_are_not_tracebacks(database, tmp_path):
    path, _ = database
    result = run("query", path, "--panels", "--min-diameter-nm", "5")
    assert result.exit_code == 1 and "select particles, not panels" in result.output
    for output_format in ("json", "csv", "table"):
        result = run("query", path, "--sql", "SELECT panel_id, labels_npz FROM panel_maps LIMIT 1",
                     "--format", output_format)
        assert result.exit_code == 0, result.output
    blob = json.loads(run("query", path, "--sql", "SELECT x'00ff' AS b", "--format", "json").output)
    assert blob == [{"b": "AP8="}]  # base64
    partial = tmp_path / "partial.db"
    conn = sqlite3.connect(partial)
    conn.execute("CREATE TABLE particles (id TEXT, diameter_nm REAL)")
    conn.commit()
    conn.close()
    for args in (["query", partial], ["query", partial, "--panels"],
                 ["query", partial, "--material", "gold"]):
        result = run(*args)
        assert result.exit_code == 1 and "not a complete idx database" in result.output, args
        assert len(result.output.strip().splitlines()) == 1


def test_query_panels_and_sql(database):
    path, panel_ids = database
    panels = pd.read_csv(io.StringIO(run("query", path, "--panels", "--format", "csv").output))
    assert set(panels["id"]) == set(panel_ids.values())
    assert "summary" not in panels.columns
    result = run("query", path, "--sql", "SELECT COUNT(*) AS n FROM particles WHERE units='nm'",
                 "--format", "json")
    n = json.loads(result.output)[0]["n"]
    assert n == len(pd.read_csv(io.StringIO(run("query", path, "--format", "csv").output)))


@pytest.mark.parametrize("sql,match", [
    ("DELETE FROM particles", "read-only"),
    ("WITH x AS (SELECT 1) DELETE FROM particles", "tries to write"),
    ("SELECT * FROM WHERE x", "syntax error"),
])
def test_query_bad_sql_is_one_line_and_changes_nothing(database, sql, match):
    path, _ = database
    before = run("query", path, "--sql", "SELECT COUNT(*) AS n FROM particles").output
    result = run("query", path, "--sql", sql)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and match in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert run("query", path, "--sql", "SELECT COUNT(*) AS n FROM particles").output == before


def test_commands_refuse_a_file_that_is_not_sqlite(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not a database at all " * 50)
    for args in (["query", bad], ["stats", bad], ["plot", bad, "--all", "-o", tmp_path / "x.png"],
                 ["serve", bad]):
        result = run(*args)
        assert result.exit_code == 1 and "not an SQLite database" in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = run("query", tmp_path / "missing.db")
    assert result.exit_code == 1 and "no database at" in result.output


def test_stats_text_and_json(database):
    path, panel_ids = database
    data = json.loads(run("stats", path, "--json").output)
    assert data["tables"]["panels"] == len(panel_ids) and data["years"] == [2019, 2019]
    assert data["techniques"]["SEM"] == 1
    text = run("stats", path).output
    assert "run " in text and "bpartis-test" in text and "particles" in text


def test_plot_kinds(database, tmp_path):
    path, panel_ids = database
    lattice = panel_ids["lattice"]
    for kind in ("histogram", "rdf", "overlay"):
        out = tmp_path / f"{kind}.png"
        result = run("plot", path, "--panel", lattice, "--kind", kind, "-o", out)
        assert result.exit_code == 0, result.output
        assert Image.open(out).size[0] > 100
    all_out = tmp_path / "all.png"
    assert run("plot", path, "--all", "-o", all_out).exit_code == 0 and all_out.exists()


@pytest.mark.skipif(not EMPS.exists(), reason="shared EMPS data not present")
def test_plot_overlay_uses_the_real_panel_image(database, tmp_path):
    path, panel_ids = database
    out = tmp_path / "overlay.png"
    result = run("plot", path, "--panel", panel_ids["emps"], "--kind", "overlay", "-o", out)
    assert result.exit_code == 0, result.output
    pixels = np.array(Image.open(out).convert("RGB")).astype(int)
    grey = (np.abs(pixels[..., 0] - pixels[..., 1]) < 3) & (pixels[..., 0] < 240)
    assert grey.mean() > 0.3  # the micrograph is drawn, not a blank background
    rdf = run("plot", path, "--panel", panel_ids["emps"], "--kind", "rdf", "-o", out)
    assert rdf.exit_code == 1 and "no g(r)" in rdf.output and "fewer than" in rdf.output


def test_overlay_finds_its_crop_beside_a_moved_database(tmp_path, caplog):
    """Crops are stored by absolute path; a database moved or shared with its NAME-panels/
    folder drew its overlays on a blank background."""
    from idx.pipeline import extract_to_db
    from models.infer import ParticleSegmenter
    from models.network import BPartIS

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    image = np.full((96, 96), 200, np.uint8)
    image[20:40, 20:40] = 40
    folder = tmp_path / "A"
    folder.mkdir()
    Image.fromarray(image).save(folder / "m.png")
    segmenter = ParticleSegmenter(model=BPartIS(), mc_samples=2, size=64)
    extract_to_db(folder / "m.png", folder / "p.db", segmenter=segmenter, progress=False)
    moved = folder.rename(tmp_path / "B")
    panel = run("query", moved / "p.db", "--panels", "--format", "csv").output.splitlines()[1].split(",")[0]
    with caplog.at_level("WARNING"):
        result = run("plot", moved / "p.db", "--panel", panel, "--kind", "overlay", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    assert "blank background" not in caplog.text and "no such file" not in caplog.text


def test_plot_takes_a_panel_id_prefix_and_refuses_a_panel_that_was_not_segmented(tmp_path):
    """`--panel` takes a unique start of an id (as --run does); a panel idx did not segment (not
    EM) is a one-line error, not an empty '0 particles' plot."""
    labels = lattice_labels()
    table = measure_particles(labels, nm_per_px=0.5)
    path = tmp_path / "k.db"
    with Database(path) as db:
        run_id = db.start_run("bpartis-test", "0" * 64, {})
        figure_id = db.add_figure(db.add_article({"doi": "10.1000/k"}), {"id": "fig1"})
        em = db.add_panel(run_id, figure_id, {"bbox": [0, 0, 144, 144], "label": "a", "kind": "em",
                                              "nm_per_px": 0.5},
                          table, labels, None, summarise_panel(table, labels.shape))
        empty = measure_particles(np.zeros_like(labels))
        other = db.add_panel(run_id, figure_id, {"bbox": [150, 0, 300, 144], "label": "b", "kind": "other"},
                             empty, np.zeros_like(labels), None, {"count": 0})
    drawn = run("plot", path, "--panel", em[:6], "-o", tmp_path / "h.png")
    assert drawn.exit_code == 0, drawn.output
    for kind in ("histogram", "overlay", "rdf"):
        refused = run("plot", path, "--panel", other, "--kind", kind, "-o", tmp_path / "o.png")
        assert refused.exit_code == 1 and "was not segmented (not an EM micrograph)" in refused.output
    assert not (tmp_path / "o.png").exists()
    unknown = run("plot", path, "--panel", "zz", "-o", tmp_path / "o.png")
    assert unknown.exit_code == 1 and "'zz' is no panel" in unknown.output


def test_plot_bad_usage(database, tmp_path):
    path, _ = database
    out = tmp_path / "x.png"
    assert "exactly one of" in run("plot", path, "-o", out).output
    assert "needs one panel" in run("plot", path, "--all", "--kind", "rdf", "-o", out).output
    missing = run("plot", path, "--panel", "nope", "-o", out)
    assert missing.exit_code == 1 and "'nope' is no panel" in missing.output
    nowhere = run("plot", path, "--all", "-o", tmp_path / "no" / "x.png")
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_renders_pages_on_localhost(database):
    path, _ = database
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from idx.cli import main; main()", "serve", str(path),
         "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                index = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"datasette did not start: {server.stdout.read()}")
                time.sleep(0.3)
        assert index.status_code == 200 and "particles" in index.text
        table = requests.get(f"http://127.0.0.1:{port}/particles/particles.json?_shape=array"
                             "&_size=5", timeout=10)
        assert table.status_code == 200 and len(table.json()) == 5
        assert "diameter_nm" in table.json()[0]
        page = requests.get(f"http://127.0.0.1:{port}/particles/panels", timeout=10)
        assert page.status_code == 200 and "<table" in page.text
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert not any(Path(f"{path}-{ext}").exists() for ext in ("wal", "shm"))  # reads leave no files


def test_commands_read_a_database_in_a_folder_that_cannot_be_written(database, tmp_path,
                                                                        monkeypatch):
    """A clean database on a read-only share: as root (who may write anywhere) the share is
    reproduced by a -wal path SQLite cannot create and a folder that reads as read-only."""
    from datasette.cli import cli as datasette_cli

    from idx.cli_db import datasette_args
    from test_db import read_only_access

    path = tmp_path / "particles.db"
    path.write_bytes(database[0].read_bytes())
    path.with_name("particles.db-wal").mkdir()
    monkeypatch.setattr("idx.db.os.access", read_only_access)
    result = run("query", path, "--sql", "SELECT count(*) AS n FROM particles", "--format", "json")
    assert result.exit_code == 0, result.output
    n = json.loads(result.output)[0]["n"]
    assert n >= 36
    args = datasette_args(path, free_port())
    assert "--immutable" in args
    get = ["--get", "/particles.json?sql=select+count(*)+as+n+from+particles&_shape=array"]
    served = CliRunner().invoke(datasette_cli, args + get)
    assert served.exit_code == 0 and json.loads(served.output) == [{"n": n}], served.output
    plain = CliRunner().invoke(datasette_cli, ["serve", str(path)] + get)  # as datasette alone
    assert plain.exit_code != 0


def unprivileged(folder: Path) -> list:
    """A command prefix that runs a process which cannot override file permissions: nothing for a
    user other than root; for root, ``setpriv`` without the capabilities that let root read and
    write anyway (the files stay root's, so the interpreter under /root still runs). Skips where
    neither holds, after checking that ``folder`` (mode 555) really refuses a new file."""
    import os
    import shutil

    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    probe = subprocess.run(prefix + ["sh", "-c", f"touch '{folder}/probe'"], capture_output=True)
    if probe.returncode == 0:
        (folder / "probe").unlink()
        pytest.skip(f"{folder} (mode 555) could still be written by the test's process")
    return prefix


def test_read_only_share_with_real_permissions(database, tmp_path):
    """What the tests above simulate, with the file system refusing for real: the database (mode
    444) in a folder of mode 555, the commands run as a process that may not override that.
    Reading works; an extraction into it fails with one line and changes nothing."""
    import hashlib

    share = tmp_path / "share"
    share.mkdir()
    path = share / "particles.db"
    path.write_bytes(database[0].read_bytes())
    image = tmp_path / "particles.png"
    Image.fromarray(np.where(lattice_labels() > 0, 60, 200).astype(np.uint8)).save(image)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    path.chmod(0o444)
    share.chmod(0o555)
    try:
        prefix = unprivileged(share)

        def idx(*args):
            return subprocess.run(prefix + [sys.executable, "-m", "idx", *map(str, args)],
                                  capture_output=True, text=True, timeout=300)

        query = idx("query", path, "--sql", "SELECT count(*) AS n FROM particles", "--format", "json")
        assert query.returncode == 0, query.stderr
        assert json.loads(query.stdout)[0]["n"] >= 36
        stats = idx("stats", path)
        assert stats.returncode == 0, stats.stderr
        assert "particles" in stats.stdout
        extract = idx("extract", image, "--db", path, "--no-split", "--mc-samples", "1", "--no-compile",
                      "--caption", "TEM image; scale bar 10 nm")
        assert extract.returncode == 1
        errors = [line for line in extract.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "cannot be written" in errors[0], extract.stderr
        assert str(path) in errors[0] and "Traceback" not in extract.stderr
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
        assert sorted(p.name for p in share.iterdir()) == ["particles.db"]  # no -wal or -shm left
    finally:
        share.chmod(0o755)
        path.chmod(0o644)


def test_readers_say_when_several_runs_are_pooled(tmp_path, caplog):
    path = tmp_path / "two.db"
    labels = lattice_labels()
    table = measure_particles(labels, nm_per_px=0.5)
    runs = []
    with Database(path) as db:
        article_id = db.add_article({"doi": "10.1000/two", "title": "Gold", "year": 2020})
        figure_id = db.add_figure(article_id, {"id": "fig1", "caption": "TEM of Au"})
        for samples in (4, 8):  # the same panel extracted with two settings
            run_id = db.start_run("bpartis-test", "0" * 64, {"mc_samples": samples})
            runs.append(run_id)
            db.add_panel(run_id, figure_id, {"bbox": [0, 0, 144, 144], "label": "a",
                                             "technique": "TEM", "nm_per_px": 0.5},
                         table, labels, None, summarise_panel(table, labels.shape))
    pooled = run("query", path, "--format", "csv")
    assert len(pd.read_csv(io.StringIO(pooled.stdout))) == 2 * len(table)
    assert caplog.text.count("holds 2 extraction runs") == 1 and "--run" in caplog.text
    caplog.clear()
    # the Python route says it too, once per connection, naming its own argument
    with Database(path, readonly=True) as db, caplog.at_level("WARNING", logger="idx.db"):
        assert len(db.particles()) == 2 * len(table) and len(db.panel_stats()) == 2
        assert len(db.particles(run=runs[1])) == len(table)
    assert caplog.text.count("holds 2 extraction runs") == 1 and "run=ID" in caplog.text
    with Database(path, readonly=True) as db:
        with pytest.raises(DatabaseError, match="'cube' is no shape class; use one of sphere"):
            db.particles(shape="cube")
        assert len(db.particles(shape="cube/rectangle", run=runs[0])) <= len(table)
    caplog.clear()
    one = run("query", path, "--format", "csv", "--run", runs[0])
    assert len(pd.read_csv(io.StringIO(one.stdout))) == len(table) and not caplog.text
    stats = run("stats", path).stdout
    assert "2 runs below pooled" in stats
    # each run's settings, so that --run can be chosen: the ones that tell them apart
    assert f"run {runs[0]}" in stats and "mc_samples=4" in stats and "mc_samples=8" in stats
    assert [r["params"] for r in json.loads(run("stats", path, "--json").stdout)["runs"]] == [
        {"mc_samples": 4}, {"mc_samples": 8}]
    # an unknown run is an error naming the runs; a unique start of an id is that run
    unknown = run("query", path, "--run", "nosuch")
    assert unknown.exit_code == 1 and "'nosuch' is no run" in unknown.output and runs[0] in unknown.output
    assert run("plot", path, "--all", "--run", "nosuch", "-o", tmp_path / "n.png").exit_code == 1
    assert run("query", path, "--run", "").exit_code == 1  # an empty id is no run, not every run
    assert not (tmp_path / "n.png").exists()
    short = run("query", path, "--format", "csv", "--run", runs[1][:6])
    assert len(pd.read_csv(io.StringIO(short.stdout))) == len(table)
    assert run("plot", path, "--panel", "x", "--run", runs[0], "-o", tmp_path / "m.png").exit_code == 2
    plotted = run("plot", path, "--all", "--run", runs[1], "-o", tmp_path / "h.png")
    assert plotted.exit_code == 0 and (tmp_path / "h.png").stat().st_size > 0 and not caplog.text
    run("plot", path, "--all", "-o", tmp_path / "g.png")
    assert "extraction runs" in caplog.text and "no particle with a scale" not in caplog.text
    caplog.clear()
    pixels = tmp_path / "px.db"
    with Database(pixels) as db:
        article_id = db.add_article({"doi": "10.1000/px", "title": "Gold", "year": 2020})
        figure_id = db.add_figure(article_id, {"id": "fig1", "caption": "TEM of Au"})
        run_id = db.start_run("bpartis-test", "0" * 64, {"mc_samples": 4})
        unscaled = measure_particles(labels)
        db.add_panel(run_id, figure_id, {"bbox": [0, 0, 144, 144], "label": "a", "technique": "TEM"},
                     unscaled, labels, None, summarise_panel(unscaled, labels.shape))
    assert run("plot", pixels, "--all", "-o", tmp_path / "p.png").exit_code == 0
    assert "no particle with a scale" in caplog.text
