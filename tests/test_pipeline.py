import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import idx
from idx.cli import cli
from idx.db import Database
from idx.demo import DEMO_PDF, run_demo
from idx.errors import IdxError
from idx.pipeline import extract, extract_to_db, sniff
from models.infer import ParticleSegmenter
from models.network import BPartIS


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return ParticleSegmenter(model=BPartIS(), mc_samples=2, size=64, min_instance_px=4)


def micrograph(seed=0, size=160):
    """Dark disks on a light, noisy background: an EM-like image."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:size, :size]
    image = np.full((size, size), 200.0)
    for _ in range(12):
        r, c, rad = rng.integers(15, size - 15), rng.integers(15, size - 15), rng.integers(6, 12)
        image[(rr - r) ** 2 + (cc - c) ** 2 < rad ** 2] = 60
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def test_array_source_gives_one_segmented_panel_with_measurements(segmenter):
    results = extract(micrograph(), segmenter=segmenter, progress=False)
    assert len(results) == 1 and results[0].segmented
    result = results[0]
    assert result.labels.shape == (160, 160) and result.uncertainty.shape == (160, 160)
    assert len(result.particles) == result.labels.max()
    assert result.panel["bbox"] == [0, 0, 160, 160]
    assert result.summary["count"] == len(result.particles)
    assert set(results.particles.columns) >= {"figure", "panel", "diameter_px"}
    assert len(repr(result)) < 200 and f"particles={len(result.particles)}" in repr(result)


def test_a_micrograph_too_small_to_segment_says_so(segmenter, caplog):
    with caplog.at_level("WARNING", logger="idx.pipeline"):
        (result,) = extract(np.full((12, 40), 128, np.uint8), segmenter=segmenter, progress=False)
    assert not result.segmented and "40x12 px, too small to segment" in caplog.text
    with pytest.raises(IdxError, match=r"was not segmented \(40x12 px, under 16 px a side\)"):
        result.plot_overlay()


def test_an_article_without_its_images_says_so_once(segmenter, tmp_path, caplog):
    """An article file whose figure images are not beside it: one warning for the article
    naming the figures, not one line per figure."""
    fixture = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "articles" / "elsevier" / \
        "j.jnoncrysol.2017.07.006.xml"
    if not fixture.is_file():
        pytest.skip("shared fixtures missing")
    shutil.copy(fixture, tmp_path / "paper.xml")
    with caplog.at_level("WARNING", logger="idx.pipeline"):
        assert len(extract(tmp_path / "paper.xml", segmenter=segmenter, progress=False)) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "paper.xml: 13 of 13 figures have no image on disk" in warnings[0]
    assert "Fig. 1, Fig. 2" in warnings[0] and "and 9 more" in warnings[0]


def test_a_list_of_sources_is_read_in_turn_and_a_wrong_type_is_a_one_line_error(segmenter, tmp_path):
    Image.fromarray(micrograph(1)).save(tmp_path / "a.png")
    results = extract([tmp_path / "a.png", str(tmp_path / "a.png"), micrograph(2)], segmenter=segmenter,
                      progress=False)
    assert [r.source.figure["id"] for r in results] == ["a", "a", "array"]
    for bad in ([[0, 1], [1, 0]], 3.5):
        with pytest.raises(IdxError, match="cannot read a (list|float) as a source; pass a path"):
            extract(bad, segmenter=segmenter, progress=False)


def test_caption_scale_reaches_the_panel(segmenter):
    results = extract(micrograph(), segmenter=segmenter, progress=False,
                      caption="Fig. 1 TEM image of Au nanoparticles. Scale bar 50 nm.")
    assert results[0].panel["technique"] == "TEM"
    assert results[0].panel["caption_scale"] == [50.0, "nm"]


def test_to_db_twice_does_not_duplicate(segmenter, tmp_path):
    results = extract(micrograph(), segmenter=segmenter, progress=False)
    db_path = tmp_path / "p.db"
    ids_1 = results.to_db(db_path)
    ids_2 = results.to_db(db_path)
    assert ids_1 == ids_2
    with Database(db_path) as db:
        assert db.conn.execute("SELECT count(*) FROM panels").fetchone()[0] == 1
        n = db.conn.execute("SELECT count(*) FROM particles").fetchone()[0]
        assert n == len(results[0].particles)
        labels, _ = db.load_panel_maps(ids_1[0])
        assert np.array_equal(labels, results[0].labels)


def test_folder_extraction_skips_bad_files_and_resumes(segmenter, tmp_path, caplog):
    folder = tmp_path / "figs"
    folder.mkdir()
    Image.fromarray(micrograph(1)).save(folder / "good.png")
    Image.fromarray(micrograph(2)).save(folder / "other.tif")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    (folder / "page.xml").write_text("<root><p>not an article format</p></root>")
    db_path = tmp_path / "p.db"
    first = extract_to_db(folder, db_path, segmenter=segmenter, progress=False)
    assert first["figures"] == 2 and first["panels"] == 2 and first["skipped"] == 0
    # the unreadable files are counted and named (notes.txt is not a candidate at all)
    assert first["failed"] == 2
    assert sorted(Path(f["path"]).name for f in first["failures"]) == ["broken.png", "page.xml"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for name in ("broken.png", "page.xml"):
        assert any(name in w for w in warnings), (name, warnings)
    again = extract_to_db(folder, db_path, segmenter=segmenter, progress=False)
    assert again["panels"] == 0 and again["skipped"] == 2
    with Database(db_path) as db:
        assert db.conn.execute("SELECT count(*) FROM panels").fetchone()[0] == 2
        assert db.conn.execute("SELECT count(*) FROM articles").fetchone()[0] == 2


def test_a_new_caption_updates_the_stored_panel_in_place(segmenter, tmp_path):
    db_path = tmp_path / "p.db"
    image = tmp_path / "m.png"
    Image.fromarray(micrograph()).save(image)
    first = extract_to_db(image, db_path, segmenter=segmenter, progress=False)
    caption = "TEM image of gold nanoparticles. Scale bar 50 nm."
    second = extract_to_db(image, db_path, segmenter=segmenter, progress=False, caption=caption)
    assert second["run_id"] == first["run_id"]
    assert second["panels"] == 1 and second["updated"] == 1 and second["skipped"] == 0
    third = extract_to_db(image, db_path, segmenter=segmenter, progress=False, caption=caption)
    assert third["panels"] == 0 and third["skipped"] == 1
    with Database(db_path) as db:
        rows = db.conn.execute("SELECT id, technique, count FROM panels").fetchall()
        n_particles = db.conn.execute("SELECT count(*) FROM particles").fetchone()[0]
        assert len(rows) == 1 and rows[0][1] == "TEM"
        assert n_particles == rows[0][2]
        assert len(db.particles(technique="TEM")) == n_particles


def test_extract_cli_refuses_sources_that_give_nothing(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "zero.png").write_bytes(b"")
    (folder / "fake.pdf").write_text("not a pdf")
    db_path = tmp_path / "p.db"
    result = CliRunner().invoke(cli, ["extract", str(folder), "--db", str(db_path), "--json"])
    assert result.exit_code == 1
    assert "no figure could be read" in result.output and "2 unreadable files" in result.output
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["extract", "--db", str(missing)])
    assert result.exit_code == 1 and "no such database" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not missing.exists()


def test_changed_parameters_make_a_new_run_not_an_overwrite(segmenter, tmp_path):
    db_path = tmp_path / "p.db"
    image = tmp_path / "m.png"
    Image.fromarray(micrograph()).save(image)
    extract_to_db(image, db_path, segmenter=segmenter, progress=False)
    other = ParticleSegmenter(model=segmenter.model, mc_samples=3, size=64, min_instance_px=4)
    extract_to_db(image, db_path, segmenter=other, progress=False)
    with Database(db_path) as db:
        assert db.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert db.conn.execute("SELECT count(*) FROM panels").fetchone()[0] == 2


def test_demo_article_runs_end_to_end(segmenter, tmp_path):
    report = run_demo(tmp_path / "demo", segmenter=segmenter)
    kinds = [p["kind"] for p in report["panels"]]
    assert len(kinds) == 4 and kinds.count("em") >= 2
    assert all(isinstance(p[key], int) for p in report["panels"] for key in ("count", "count_measured")
               if p[key] is not None)
    # each micrograph's own bar is read (b: a 1000 nm bar whose half-level top row the PDF
    # rendering doubled); expected: the annotated EMPS bar (tests/data/scalebars.json: 124, 205
    # and 176 px) times the panel's scale in the figure (476 px wide from 766, 598 and 775), +-2 %
    scales = {p["label"]: (p["nm_per_px"], p["scale_source"]) for p in report["panels"] if p["kind"] == "em"}
    expected = {"a": 100 / (124 * 476 / 766), "b": 1000 / (205 * 476 / 598), "c": 200 / (176 * 476 / 775)}
    assert {label: source for label, (_, source) in scales.items()} == dict.fromkeys(expected, "image")
    for label, nm_per_px in expected.items():
        assert scales[label][0] == pytest.approx(nm_per_px, rel=0.02), label
    with Database(report["db"]) as db:
        article = db.conn.execute("SELECT doi, title FROM articles").fetchone()
    assert article[0] == "10.5555/idx.demo.2026"
    assert any(p.endswith("-overlay.png") for p in report["plots"])
    assert "panel" in report["table"]


def test_sniff_reads_content_not_names(tmp_path):
    fake = tmp_path / "image.pdf"
    Image.fromarray(micrograph()).save(fake, format="PNG")
    assert sniff(fake) == "image"
    assert sniff(DEMO_PDF) == "article"
    text = tmp_path / "a.dat"
    text.write_text("hello")
    assert sniff(text) is None


def test_bad_sources_give_one_line_errors(segmenter, tmp_path):
    with pytest.raises(IdxError, match="no such file"):
        extract(tmp_path / "missing.png", segmenter=segmenter)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(IdxError, match="neither an image nor an article"):
        extract(junk, segmenter=segmenter)


def test_extract_cli_json_and_rerun(tmp_path):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(BPartIS().state_dict(), weights)
    image = tmp_path / "m.png"
    Image.fromarray(micrograph()).save(image)
    db_path = tmp_path / "p.db"
    args = ["extract", str(image), "--db", str(db_path), "--weights", str(weights),
            "--mc-samples", "2", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["panels"] == 1
    again = json.loads(CliRunner().invoke(cli, args).stdout)
    assert again["panels"] == 0 and again["skipped"] == 1
    # fused graphs (the default) or not is how fast, not what: the same run, nothing added
    plain = json.loads(CliRunner().invoke(cli, [*args, "--no-compile"]).stdout)
    assert plain["panels"] == 0 and plain["skipped"] == 1 and plain["run_id"] == report["run_id"]
    bad = CliRunner().invoke(cli, ["extract", str(image), "--db", str(db_path), "--weights",
                                   str(tmp_path / "none.pt")])
    assert bad.exit_code == 1 and "no BPartIS weights" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_package_exposes_the_api_lazily():
    assert idx.extract is extract and idx.Database is Database


def test_unread_labels_are_filled_from_a_matching_caption():
    from idx.pipeline import assign_caption_labels

    panels = [{"label": "a"}, {"label": None}, {"label": "c"}, {"label": None}]
    assign_caption_labels(panels, ["a", "b", "c", "d"])
    assert [p["label"] for p in panels] == ["a", "b", "c", "d"]
    conflicting = [{"label": "a"}, {"label": None}, {"label": "d"}]
    assign_caption_labels(conflicting, ["a", "b", "c"])
    assert conflicting[1]["label"] is None
    too_few = [{"label": "a"}, {"label": None}]
    assign_caption_labels(too_few, ["a", "b", "c"])
    assert too_few[1]["label"] is None


def test_crawl_then_extract_from_the_database(segmenter, tmp_path):
    """End to end on 127.0.0.1: Europe PMC crawl into the database, then `extract` its figures."""
    from crawl_site import build_site
    from miners.crawl import EuropePMCSource, crawl
    from miners.http import HttpClient
    from replay_server import ReplayServer

    db_path = tmp_path / "corpus.db"
    with ReplayServer() as server:
        site = build_site(server)
        client = HttpClient(tmp_path / "cache", timeout_s=(1.0, 1.0), retries=1, backoff_s=0.01,
                            min_interval_s=0.0, allowed_hosts={server.host})
        source = EuropePMCSource(client, "nanoparticles", base_url=site.europepmc_url,
                                 images_url=site.europepmc_images_url, page_size=2)
        with Database(db_path) as db:
            report = crawl(source, db, all_figures=True, progress=False)
    assert report.stored == 2
    first = extract_to_db(None, db_path, segmenter=segmenter, progress=False)
    assert first["figures"] == report.figures and first["panels"] >= first["figures"]
    again = extract_to_db(None, db_path, segmenter=segmenter, progress=False)
    assert again["panels"] == 0 and again["skipped"] == first["panels"]
    with Database(db_path) as db:
        orphans = db.conn.execute("SELECT count(*) FROM panels p LEFT JOIN figures f ON f.id = p.figure_id "
                                  "LEFT JOIN articles a ON a.id = f.article_id WHERE a.doi IS NULL").fetchone()[0]
        n_articles = db.conn.execute("SELECT count(*) FROM articles").fetchone()[0]
    assert orphans == 0 and n_articles == 2
    # the crawl cache cleared: the stored figures have no image; each is counted, none stored
    import shutil

    shutil.rmtree(tmp_path / "cache")
    gone = extract_to_db(None, db_path, segmenter=segmenter, progress=False)
    assert gone["figures"] == 0 and gone["failed"] == report.figures
    assert all("no such file" in f["error"] or "not found" in f["error"] for f in gone["failures"])


def test_extract_cli_no_tta_is_a_separate_run_of_card_weights(tmp_path):
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(BPartIS().state_dict(), weights)
    (tmp_path / "w.json").write_text(json.dumps({"tta": True}))  # the card beside the weights
    image = tmp_path / "m.png"
    Image.fromarray(micrograph()).save(image)
    db_path = tmp_path / "p.db"
    args = ["extract", str(image), "--db", str(db_path), "--weights", str(weights),
            "--mc-samples", "2", "--json"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    plain = runner.invoke(cli, args + ["--no-tta"])
    assert first.exit_code == 0 and plain.exit_code == 0, first.output + plain.output
    assert json.loads(plain.stdout)["panels"] == 1  # other parameters: stored again, not skipped
    with Database(db_path) as db:
        runs = list(db.db.query("SELECT params FROM runs ORDER BY rowid"))
    assert [json.loads(r["params"])["tta"] for r in runs] == [True, False]


def test_panels_cli_fills_unread_labels_from_the_caption_as_extract_does(tmp_path):
    from miners.articles import read

    figure = read(DEMO_PDF, figure_dir=tmp_path).figures[0]
    result = CliRunner().invoke(cli, ["panels", str(figure.image), "--caption", figure.caption,
                                      "--json"])
    assert result.exit_code == 0, result.output
    panels = json.loads(result.stdout)["panels"]
    assert [p["label"] for p in panels] == ["a", "b", "c", "d"]
    assert [(p["caption"] or {}).get("technique") for p in panels] == ["TEM", "SEM", "TEM", None]
    assert panels[1]["caption"]["scale"] == [1.0, "µm"]
    # without a caption the letters are read from the figure: "b" and "d" used to lose to a gap
    # between particles inside panel b and to the "40" tick label inside the plot d
    plain = CliRunner().invoke(cli, ["panels", str(figure.image), "--json"])
    assert [p["label"] for p in json.loads(plain.stdout)["panels"]] == ["a", "b", "c", "d"]


def test_extract_to_db_writes_beside_the_database_not_the_input(segmenter, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    pdf = inputs / "paper.pdf"
    pdf.write_bytes(DEMO_PDF.read_bytes())
    report = extract_to_db(pdf, out / "p.db", segmenter=segmenter, progress=False)
    assert report["figures"] == 1 and report["panels"] == 4
    assert sorted(p.name for p in inputs.iterdir()) == ["paper.pdf"]
    with Database(out / "p.db") as db:
        (image_path,) = db.conn.execute("SELECT image_path FROM figures").fetchone()
    assert Path(image_path).parent == (out / "p-figures").resolve() and Path(image_path).is_file()


def test_plots_of_a_panel_that_was_not_segmented_say_so(segmenter, tmp_path):
    results = extract(DEMO_PDF, segmenter=segmenter, progress=False, figure_dir=tmp_path)
    (plot_panel,) = [r for r in results if r.panel["kind"] != "em"]  # panel d: a size histogram
    # every panel has a count, as in the database (the README's pattern raised KeyError on it)
    assert [r.summary["count"] for r in results][-1] == 0 and plot_panel.to_dict()["count"] == 0
    for method in (plot_panel.plot_histogram, plot_panel.plot_overlay, plot_panel.plot_rdf):
        with pytest.raises(IdxError, match="was not segmented"):
            method()


def test_a_saved_html_page_finds_its_images_by_their_relative_links(segmenter, tmp_path):
    """"Save page as" keeps images in NAME_files/ with relative links, and the page's canonical
    URL points elsewhere: the images on disk are the ones to read."""
    folder = tmp_path / "saved"
    (folder / "paper_files").mkdir(parents=True)
    Image.fromarray(micrograph(3)).save(folder / "paper_files" / "fig1.png")
    Image.fromarray(micrograph(4)).save(folder / "fig2.png")
    figures = "".join(
        f'<figure id="f{k}"><img src="{src}"><figcaption>Figure {k}. TEM image of gold '
        f"nanoparticles.</figcaption></figure>" for k, src in ((1, "paper_files/fig1.png"), (2, "fig2.png")))
    (folder / "paper.html").write_text(
        '<html><head><title>Gold particles</title><link rel="canonical" '
        f'href="https://publisher.example/article/1"></head><body><article>{figures}</article></body></html>')
    db_path = tmp_path / "p.db"
    report = extract_to_db(folder / "paper.html", db_path, segmenter=segmenter, progress=False)
    assert report["figures"] == 2 and report["failed"] == 0
    with Database(db_path) as db:
        paths = sorted(Path(r[0]).name for r in db.conn.execute("SELECT image_path FROM figures"))
    assert paths == ["fig1.png", "fig2.png"]


def test_ctrl_c_is_one_line_with_the_sigint_exit_status(tmp_path, monkeypatch):
    import idx.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(idx.pipeline, "extract_to_db", interrupted)
    image = tmp_path / "m.png"
    Image.fromarray(micrograph()).save(image)
    result = CliRunner().invoke(cli, ["extract", str(image), "--db", str(tmp_path / "p.db")])
    assert result.exit_code == 130
    assert result.output.strip() == "Error: interrupted; everything stored so far is kept"


def _saved_page(folder: Path, srcs) -> Path:
    figures = "".join(
        f'<figure id="f{k}"><img src="{src}"><figcaption>Figure {k}. TEM image of gold '
        f"nanoparticles.</figcaption></figure>" for k, src in enumerate(srcs, start=1))
    page = folder / "paper.html"
    page.write_text('<html><head><title>Gold particles</title><meta name="citation_doi" content="10.1000/gold.1">'
                    f"</head><body><article>{figures}</article></body></html>")
    return page


def test_a_folder_stores_an_article_image_once_as_the_article_figure(segmenter, tmp_path):
    """An image saved beside its article (also under a site path, "/images/...") was stored twice:
    as the article's figure and again as a figure of its own without DOI or caption."""
    folder = tmp_path / "saved"
    folder.mkdir()
    Image.fromarray(micrograph(3)).save(folder / "a_fig1.png")  # sorts before paper.html
    Image.fromarray(micrograph(4)).save(folder / "b_fig2.png")
    Image.fromarray(micrograph(5)).save(folder / "other.png")  # no article shows it
    _saved_page(folder, ["https://publisher.example/a_fig1.png", "/services/images/b_fig2.png"])
    db_path = tmp_path / "p.db"
    report = extract_to_db(folder, db_path, segmenter=segmenter, progress=False)
    assert report["figures"] == 3 and report["failed"] == 0
    with Database(db_path) as db:
        rows = db.conn.execute("SELECT a.doi, f.image_path FROM figures f JOIN articles a ON a.id = f.article_id "
                               "ORDER BY f.image_path").fetchall()
    assert [(doi, Path(path).name) for doi, path in rows] == [
        ("10.1000/gold.1", "a_fig1.png"), ("10.1000/gold.1", "b_fig2.png"), (None, "other.png")]
    assert all(Path(path).is_absolute() for _, path in rows)


def test_a_moved_or_copied_micrograph_is_not_stored_again(segmenter, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    Image.fromarray(micrograph(1)).save(old / "m.png")
    db_path = tmp_path / "p.db"
    first = extract_to_db(old, db_path, segmenter=segmenter, progress=False)
    shutil.copytree(old, tmp_path / "copy")
    copied = extract_to_db(tmp_path / "copy", db_path, segmenter=segmenter, progress=False)
    (old / "m.png").rename(tmp_path / "moved.png")
    moved = extract_to_db(tmp_path / "moved.png", db_path, segmenter=segmenter, progress=False)
    again = extract_to_db(tmp_path / "moved.png", db_path, segmenter=segmenter, progress=False)
    assert first["panels"] == 1 and copied["panels"] == moved["panels"] == again["panels"] == 0
    assert copied["skipped"] == moved["skipped"] == again["skipped"] == 1  # also once it is re-pointed
    with Database(db_path) as db:
        assert db.conn.execute("SELECT COUNT(*) FROM panels").fetchone()[0] == 1
        assert db.conn.execute("SELECT COUNT(*) FROM particles").fetchone()[0] == first["particles"]
        (path,) = db.conn.execute("SELECT image_path FROM figures").fetchone()
    assert Path(path) == (tmp_path / "moved.png").resolve()  # the stored figure follows the move


def test_a_replaced_image_file_replaces_its_panels(segmenter, tmp_path, caplog):
    image = tmp_path / "x.png"
    Image.fromarray(micrograph(1, size=160)).save(image)
    db_path = tmp_path / "p.db"
    extract_to_db(image, db_path, segmenter=segmenter, progress=False)
    Image.fromarray(micrograph(2, size=192)).save(image)  # another micrograph, another size
    with caplog.at_level("WARNING", logger="idx.db"):
        second = extract_to_db(image, db_path, segmenter=segmenter, progress=False)
    assert "image changed since it was stored" in caplog.text
    with Database(db_path) as db:
        panels = db.conn.execute("SELECT id, bbox_x1, count FROM panels").fetchall()
        particles = db.conn.execute("SELECT COUNT(*) FROM particles").fetchone()[0]
        maps = db.conn.execute("SELECT COUNT(*) FROM panel_maps").fetchone()[0]
    assert [p[1] for p in panels] == [192] and particles == second["particles"] and maps == 1
    assert len(list((tmp_path / "p-panels").glob("*.png"))) == 1  # the old crop went with its panel


def test_extraction_to_db_keeps_copies_and_replaced_files_as_extract_to_db_does(segmenter, tmp_path):
    """The Python route (``extract(...).to_db``) stores what ``idx extract --db`` stores: a copied
    file adds nothing, a replaced file loses its old panels, and the CLI sees the same figure."""
    image = tmp_path / "m.png"
    Image.fromarray(micrograph(1)).save(image)
    db_path = tmp_path / "p.db"
    first = extract(image, segmenter=segmenter, progress=False)
    assert len(first.to_db(db_path)) == 1
    shutil.copy(image, tmp_path / "copy.png")
    assert extract(tmp_path / "copy.png", segmenter=segmenter, progress=False).to_db(db_path) == []
    cli_copy = extract_to_db(tmp_path / "copy.png", db_path, segmenter=segmenter, progress=False)
    assert cli_copy["panels"] == 0 and cli_copy["skipped"] == 1
    Image.fromarray(micrograph(2, size=192)).save(image)  # the file replaced by another micrograph
    replaced = extract(image, segmenter=segmenter, progress=False)
    replaced.to_db(db_path)
    with Database(db_path) as db:
        panels = db.conn.execute("SELECT bbox_x1 FROM panels").fetchall()
        particles = db.conn.execute("SELECT COUNT(*) FROM particles").fetchone()[0]
        figures = db.conn.execute("SELECT COUNT(*) FROM figures").fetchone()[0]
    assert panels == [(192,)] and particles == len(replaced[0].particles) and figures == 1


def test_a_failed_extraction_leaves_no_empty_run(segmenter, tmp_path):
    db_path = tmp_path / "p.db"
    extract_to_db(micrograph(1), db_path, segmenter=segmenter, progress=False)
    empty = tmp_path / "zero.png"
    empty.write_bytes(b"")
    other = ParticleSegmenter(model=BPartIS(), mc_samples=3, size=64)  # another run
    with pytest.raises(IdxError):
        extract_to_db(empty, db_path, segmenter=other, progress=False)
    with Database(db_path) as db:
        assert db.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        run = db.stats()["runs"][0]
    assert run["panels"] == 1


def test_a_bar_that_disagrees_with_the_caption_is_said_and_unscaled_panels_counted(segmenter, tmp_path, caplog):
    from miners.scalebar_synth import draw_scalebar

    image, _ = draw_scalebar(np.stack([micrograph(7, size=320)] * 3, -1), "50 nm", 100, row=290, col=200,
                             font_px=22, colour=(0, 0, 0))
    path = tmp_path / "bar.png"
    Image.fromarray(image).save(path)
    with caplog.at_level("WARNING", logger="idx.pipeline"):
        results = extract(path, segmenter=segmenter, progress=False, split=False,
                          caption="Fig. 1 TEM image of gold particles. Scale bar, 200 nm.")
    assert results[0].scalebar.value == 50 and results[0].scalebar.source == "image"
    assert "reads 50 nm but the caption states 200 nm" in caplog.text
    plain = tmp_path / "plain.png"
    Image.fromarray(micrograph(8)).save(plain)
    report = extract_to_db(plain, tmp_path / "p.db", segmenter=segmenter, progress=False, split=False)
    assert report["em_panels"] == report["unscaled"] == 1


def test_a_database_write_error_names_the_figure_being_stored(segmenter, tmp_path, monkeypatch):
    import sqlite3

    from idx.errors import DatabaseError

    Image.fromarray(micrograph(1)).save(tmp_path / "m.png")

    def full(self, *args, **kwargs):
        with self._errors("store panel 0123abcd"):
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Database, "add_panel", full)
    with pytest.raises(DatabaseError, match=r"m\.png panel \?: cannot store panel .*disk is full"):
        extract_to_db(tmp_path / "m.png", tmp_path / "p.db", segmenter=segmenter, progress=False)


@pytest.mark.parametrize("article_first", [True, False])
def test_an_image_extracted_alone_and_as_its_articles_figure_is_stored_once(segmenter, tmp_path, article_first):
    """Separate runs on the saved page's folder and on its image alone stored the image twice,
    once without DOI or caption; the article's figure is the one kept, in either order."""
    folder = tmp_path / "saved"
    folder.mkdir()
    Image.fromarray(micrograph(3)).save(folder / "fig1.png")
    _saved_page(folder, ["https://publisher.example/fig1.png"])
    db_path = tmp_path / "p.db"
    for source in ([folder, folder / "fig1.png"] if article_first else [folder / "fig1.png", folder]):
        extract_to_db(source, db_path, segmenter=segmenter, progress=False)
    with Database(db_path) as db:
        rows = db.conn.execute("SELECT a.doi, f.caption FROM panels p JOIN figures f ON f.id = p.figure_id "
                               "JOIN articles a ON a.id = f.article_id").fetchall()
        articles = db.conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
    assert rows == [("10.1000/gold.1", "TEM image of gold nanoparticles.")] and articles == 1


def test_a_file_replaced_after_a_move_loses_the_moved_figures_panels(segmenter, tmp_path):
    db_path = tmp_path / "p.db"
    Image.fromarray(micrograph(1)).save(tmp_path / "a.png")
    extract_to_db(tmp_path / "a.png", db_path, segmenter=segmenter, progress=False)
    (tmp_path / "a.png").rename(tmp_path / "b.png")  # moved: the stored figure now points at b.png
    extract_to_db(tmp_path / "b.png", db_path, segmenter=segmenter, progress=False)
    Image.fromarray(micrograph(2)).save(tmp_path / "b.png")  # then replaced by another micrograph
    second = extract_to_db(tmp_path / "b.png", db_path, segmenter=segmenter, progress=False)
    with Database(db_path) as db:
        figures = db.conn.execute("SELECT COUNT(*) FROM figures").fetchone()[0]
        particles = db.conn.execute("SELECT COUNT(*) FROM particles").fetchone()[0]
    assert figures == 1 and particles == second["particles"]


def test_a_copy_given_a_caption_updates_the_stored_micrograph(segmenter, tmp_path):
    """A copy extracted with a new --caption was skipped as already stored, losing the caption."""
    Image.fromarray(micrograph(1)).save(tmp_path / "x.png")
    db_path = tmp_path / "p.db"
    extract_to_db(tmp_path / "x.png", db_path, segmenter=segmenter, progress=False)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "y.png").write_bytes((tmp_path / "x.png").read_bytes())
    report = extract_to_db(tmp_path / "copy" / "y.png", db_path, segmenter=segmenter, progress=False,
                           caption="TEM image of gold nanoparticles.")
    assert report["updated"] == 1
    with Database(db_path) as db:
        rows = db.conn.execute("SELECT p.technique, f.caption FROM panels p JOIN figures f ON f.id = p.figure_id"
                               ).fetchall()
        found = db.particles(material="gold")
    assert rows == [("TEM", "TEM image of gold nanoparticles.")] and len(found) == report["particles"]
