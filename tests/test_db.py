"""Tests of idx.db: schema, stable ids, queries, read-only SQL and every bad-input branch."""
import os
from pathlib import Path
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from idx.db import Database, decode_map, encode_maps, make_id
from idx.errors import DatabaseError
from idx.particles import measure_particles, summarise_panel


def panel_maps(n_side: int = 5, spacing: int = 24, radius: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = n_side * spacing
    labels = np.zeros((size, size), np.int32)
    k = 0
    for r in range(spacing // 2, size, spacing):
        for c in range(spacing // 2, size, spacing):
            k += 1
            rr, cc = disk((r, c), radius + rng.normal(0, 1), shape=labels.shape)
            labels[rr, cc] = k
    uncertainty = rng.random(labels.shape).astype(np.float32) * (labels > 0)
    return labels, uncertainty


ARTICLE = {"doi": "https://doi.org/10.1000/Gold.2020", "title": "Citrate gold nanoparticles",
           "journal": "J. Test", "year": 2020, "authors": ["A. One", "B. Two"], "license": "CC-BY",
           "source_path": "/data/gold.xml"}
FIGURE = {"id": "fig2", "label": "Figure 2", "caption": "TEM images of silica shells",
          "image": "/data/fig2.png", "image_url": "http://example.org/fig2.png"}


def fill(db: Database, nm_per_px=0.5, params=None, technique="TEM", bbox=(0, 0, 120, 120)):
    labels, uncertainty = panel_maps()
    particles = measure_particles(labels, nm_per_px=nm_per_px, uncertainty=uncertainty)
    summary = summarise_panel(particles, labels.shape)
    run_id = db.start_run("bpartis-1.0", "ab" * 32, params or {"mc_samples": 10})
    article_id = db.add_article(ARTICLE)
    figure_id = db.add_figure(article_id, FIGURE)
    panel = {"bbox": list(bbox), "label": "a", "kind": "em", "technique": technique,
             "caption": "gold particles on carbon", "nm_per_px": nm_per_px,
             "scale_source": "scalebar", "scale_text": "50 nm", "image_path": "/data/p.png",
             "image_sha256": "cd" * 32}
    panel_id = db.add_panel(run_id, figure_id, panel, particles, labels, uncertainty, summary)
    return run_id, figure_id, panel_id, particles, labels, uncertainty


def test_schema_tables_fts_wal_and_foreign_keys(tmp_path):
    db = Database(tmp_path / "p.db")
    names = set(db.db.table_names())
    assert {"runs", "articles", "figures", "panels", "panel_maps", "particles",
            "crawl_failures", "figures_fts", "panels_fts", "articles_fts"} <= names
    assert db.db.journal_mode == "wal"
    assert db.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    indexed = {tuple(ix.columns) for ix in db.db.table("particles").indexes}
    assert {("diameter_nm",), ("panel_id",), ("run_id",)} <= indexed
    assert {fk.other_table for fk in db.db.table("panels").foreign_keys} == {"figures", "runs"}


def test_add_panel_round_trip_and_rerun_does_not_duplicate():
    db = Database(memory=True)
    run_id, figure_id, panel_id, particles, labels, uncertainty = fill(db)
    again = fill(db)
    assert again[2] == panel_id and again[0] == run_id
    counts = {t: db.db.table(t).count for t in ("runs", "articles", "figures", "panels",
                                                   "particles")}
    assert counts == {"runs": 1, "articles": 1, "figures": 1, "panels": 1,
                      "particles": len(particles)}
    stored = db.particles()
    np.testing.assert_allclose(stored["diameter_nm"], particles["diameter_nm"])
    assert stored["doi"].iloc[0] == "10.1000/gold.2020" and stored["year"].iloc[0] == 2020
    loaded_labels, loaded_unc = db.load_panel_maps(panel_id)
    np.testing.assert_array_equal(loaded_labels, labels)
    np.testing.assert_allclose(loaded_unc, uncertainty, atol=uncertainty.max() / 500)
    # measurements recomputed from the stored maps agree with the stored rows
    again_table = measure_particles(loaded_labels, 0.5, uncertainty=loaded_unc)
    np.testing.assert_allclose(again_table["area_nm2"], stored["area_nm2"])


def test_changed_parameters_make_a_new_run_not_an_overwrite():
    db = Database(memory=True)
    first = fill(db)
    second = fill(db, params={"mc_samples": 20})
    assert first[0] != second[0] and first[2] != second[2]
    assert db.db.table("runs").count == 2 and db.db.table("panels").count == 2
    assert len(db.particles(run=first[0])) == len(first[3])
    assert len(db.particles()) == 2 * len(first[3])


def test_particle_filters():
    db = Database(memory=True)
    _, _, panel_id, particles, _, _ = fill(db)
    n = len(particles)
    median = float(particles["diameter_nm"].median())
    assert len(db.particles(material="gold")) == n  # panel caption and title
    assert len(db.particles(material="silica")) == n  # figure caption
    assert len(db.particles(material="platinum")) == 0
    assert len(db.particles(material='Au-"NP" OR')) == 0  # FTS syntax is quoted, no error
    assert len(db.particles(technique="tem")) == n and len(db.particles(technique="SEM")) == 0
    assert len(db.particles(min_diameter_nm=median)) == (particles["diameter_nm"] >= median).sum()
    assert len(db.particles(max_diameter_nm=median)) == (particles["diameter_nm"] <= median).sum()
    assert len(db.particles(year=2020, doi="10.1000/GOLD.2020")) == n
    assert len(db.particles(year=2019)) == 0
    assert len(db.particles(shape="sphere")) == (particles["shape"] == "sphere").sum()
    assert len(db.particles(panel=panel_id, limit=3)) == 3
    assert len(db.particles(min_diameter_nm=median, max_diameter_nm=median)) == (
        particles["diameter_nm"] == median).sum()
    for low, high in ((median, median / 2), (None, -1.0), (-1.0, None), (float("nan"), None)):
        with pytest.raises(DatabaseError, match="give 0 <= min_diameter_nm <= max_diameter_nm"):
            db.particles(min_diameter_nm=low, max_diameter_nm=high)
    stats = db.panel_stats(material="gold")
    assert stats["count"].tolist() == [n]
    assert stats["diameter_mean_nm"].iloc[0] == pytest.approx(
        particles.loc[~particles["touches_border"], "diameter_nm"].mean())


def test_panel_without_scale_keeps_pixels():
    db = Database(memory=True)
    fill(db, nm_per_px=None)
    stored = db.particles()
    assert (stored["units"] == "px").all() and stored["diameter_nm"].isna().all()
    assert len(db.particles(min_diameter_nm=0)) == 0


def test_crawler_protocol():
    db = Database(memory=True)
    article = {"title": "Crawled", "figures": [{"id": "f1", "caption": "SEM of ZnO rods",
                                                "image": "/c/f1.png",
                                                "image_url": "http://x.org/f1.png"}]}
    assert not db.has_article("PMC123")
    article_id = db.add_article("PMC123", article, "europepmc")
    assert db.has_article("PMC123") and not db.has_article("PMC999")
    row = db.sql("SELECT key, source, title FROM articles").iloc[0].tolist()
    assert row == ["PMC123", "europepmc", "Crawled"]
    figure = db.sql("SELECT article_id, image_path, image_url FROM figures").iloc[0].tolist()
    assert figure == [article_id, "/c/f1.png", "http://x.org/f1.png"]
    # a DOI key is found again by the DOI the pipeline later stores
    db.add_article("10.5555/ABC", {"title": "By DOI"}, "crossref")
    assert db.add_article({"doi": "10.5555/abc", "title": "By DOI"}) == make_id("doi", "10.5555/abc")
    assert db.db.table("articles").count == 2
    # the pipeline re-adding a crawled article without key or image_url keeps them
    crawled_id = db.add_article("PMC777", {"doi": "10.7/x", "title": "T", "figures": [
        {"id": "f1", "image": "/c/a.png", "image_url": "http://x.org/a.png"}]}, "europepmc")
    assert db.add_article({"doi": "10.7/X", "title": "T2"}) == crawled_id
    db.add_figure(crawled_id, {"id": "f1", "caption": "TEM of Ag cubes", "image": "/c/a.png"})
    assert db.has_article("PMC777")
    assert db.sql(f"SELECT image_url, caption FROM figures WHERE article_id = '{crawled_id}'"
                  ).iloc[0].tolist() == ["http://x.org/a.png", "TEM of Ag cubes"]
    db.record_failure("PMC9", "http://x.org/9", "HTTP 404")
    db.record_failure("PMC9", "http://x.org/9", "HTTP 500")
    assert db.sql("SELECT attempts, reason FROM crawl_failures").iloc[0].tolist() == [2, "HTTP 500"]
    with pytest.raises(DatabaseError, match="needs the article dict"):
        db.add_article("PMC1")
    with pytest.raises(DatabaseError, match="no doi, key"):
        db.add_article({"title": "anonymous"})


def test_sql_is_read_only(tmp_path):
    path = tmp_path / "p.db"
    db = Database(path)
    fill(db)
    n = db.db.table("particles").count
    assert db.sql("SELECT COUNT(*) AS n FROM particles")["n"].iloc[0] == n
    assert db.sql("  -- comment\n WITH x AS (SELECT 1 AS a) SELECT a FROM x")["a"].tolist() == [1]
    for query in ("DELETE FROM particles", "drop table particles", "PRAGMA journal_mode=delete"):
        with pytest.raises(DatabaseError, match="read-only"):
            db.sql(query)
    with pytest.raises(DatabaseError, match="tries to write"):
        db.sql("WITH x AS (SELECT 1) DELETE FROM particles")
    with pytest.raises(DatabaseError, match="syntax error"):
        db.sql("SELEC * FROM particles")
    with pytest.raises(DatabaseError, match="no such table"):
        db.sql("SELECT * FROM missing_table")
    assert db.db.table("particles").count == n
    memory = Database(memory=True)
    with pytest.raises(DatabaseError, match="tries to write"):
        memory.sql("WITH x AS (SELECT 1) INSERT INTO runs(id, model_version) SELECT 'a', 'b'")
    assert memory.db.table("runs").count == 0 and memory.sql("SELECT 1 AS one")["one"][0] == 1


def test_failed_panel_write_leaves_previous_rows(tmp_path):
    db = Database(tmp_path / "p.db")
    run_id, figure_id, panel_id, particles, labels, uncertainty = fill(db)
    before = db.particles()
    broken = particles.copy()
    broken["circularity"] = broken["circularity"].astype(object)
    broken.loc[len(broken) - 1, "circularity"] = {1, 2}  # cannot be stored: fails mid-panel
    with pytest.raises(DatabaseError, match="store panel"):
        db.add_panel(run_id, figure_id, {"bbox": [0, 0, 120, 120]}, broken, labels, uncertainty,
                     {"count": 999})
    after = Database(tmp_path / "p.db").particles()
    pd.testing.assert_frame_equal(before, after)
    assert db.panel_stats()["count"].tolist() == [len(particles)]


def test_missing_foreign_rows_are_reported():
    db = Database(memory=True)
    labels, _ = panel_maps()
    table = measure_particles(labels)
    with pytest.raises(DatabaseError, match="add that first"):
        db.add_panel("norun", "nofigure", {"bbox": [0, 0, 10, 10]}, table, labels, None, {})
    with pytest.raises(DatabaseError, match="bbox"):
        db.add_panel("norun", "nofigure", {"bbox": [5, 0, 1, 10]}, table, labels, None, {})
    with pytest.raises(DatabaseError, match="measure_particles"):
        db.add_panel("norun", "nofigure", {}, pd.DataFrame({"x": [1]}), labels, None, {})
    with pytest.raises(DatabaseError, match="no maps stored"):
        db.load_panel_maps("nopanel")


def test_not_sqlite_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        Database(path)
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        Database(path, readonly=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize("schema", ["CREATE TABLE particles (id INTEGER PRIMARY KEY, name TEXT)",
                                    "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"])
def test_someone_elses_sqlite_database_is_refused_and_untouched(tmp_path, schema):
    """idx used to add its ~25 tables (and rows) to any SQLite file it was given, then fail."""
    path = tmp_path / "mine.db"
    with sqlite3.connect(path) as conn:
        conn.execute(schema)
        conn.execute("INSERT INTO %s VALUES (1, 'mine')" % schema.split()[2])
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="of something else"):
        Database(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:  # an empty SQLite file is fine: idx makes its tables there
        pass
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with Database(empty) as db:
        assert "runs" in db.db.table_names()


def test_locked_database_times_out_with_clear_error(tmp_path):
    path = tmp_path / "p.db"
    Database(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        db = Database(path, readonly=True, busy_timeout_s=0.2)  # WAL readers are not blocked
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="locked by another process"):
            Database(path, busy_timeout_s=0.3).start_run("m", "w", {})
        assert time.monotonic() - started < 10
        assert db.db.table("runs").count == 0
    finally:
        holder.kill()
        holder.wait()
    assert Database(path).start_run("m", "w", {})  # usable again once the lock is gone


def test_read_only_locations(tmp_path):
    with pytest.raises(DatabaseError, match="cannot open|cannot be written"):
        Database("/proc/self/idx-test.db")  # a read-only filesystem, even for root
    with pytest.raises(DatabaseError, match="does not exist"):
        Database(tmp_path / "missing" / "p.db")
    with pytest.raises(DatabaseError, match="no database at"):
        Database(tmp_path / "absent.db", readonly=True)
    path = tmp_path / "p.db"
    fill(Database(path))
    reader = Database(path, readonly=True)
    assert len(reader.particles()) > 0
    with pytest.raises(DatabaseError, match="cannot be written"):
        reader.add_article({"doi": "10.1/new"})
    assert reader.db.table("articles").count == 1
    with pytest.raises(DatabaseError, match="has no idx tables"):
        empty = tmp_path / "empty.db"
        sqlite3.connect(empty).execute("CREATE TABLE t(x)").connection.close()
        Database(empty, readonly=True)


def test_read_only_open_leaves_no_wal_files(tmp_path):
    path = tmp_path / "p.db"
    with Database(path) as writer:
        fill(writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.db"]  # the writer cleans up too
    for _ in range(2):
        with Database(path, readonly=True) as reader:
            assert reader.stats()["tables"]["particles"] > 0
            with pytest.raises(DatabaseError, match="cannot be written"):
                reader.add_article({"doi": "10.1/new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.db"]


def test_stats_summarises_database(tmp_path):
    db = Database(tmp_path / "p.db")
    _, _, _, particles, _, _ = fill(db)
    stats = db.stats()
    assert stats["tables"]["particles"] == len(particles)
    assert stats["particles_with_scale"] == len(particles)
    # the mean diameter is over whole particles, as the panel summary's and `idx plot --all`'s:
    # a large particle cut by the panel's edge is left out
    labels, _ = panel_maps()
    labels[0:5, 40:80] = labels.max() + 1
    cut = measure_particles(labels, nm_per_px=0.5)
    db.add_panel(stats["runs"][0]["id"], db.add_figure(db.add_article(ARTICLE), {**FIGURE, "id": "fig9"}),
                 {"bbox": [0, 0, 120, 120], "label": "b", "kind": "em", "nm_per_px": 0.5}, cut, labels,
                 None, summarise_panel(cut, labels.shape))
    stats = db.stats()
    whole = pd.concat([particles, cut]).query("not touches_border")
    assert stats["particles_measured"] == len(whole) == len(particles) + len(cut) - 1
    assert stats["diameter_mean_nm"] == pytest.approx(whole["diameter_nm"].mean())
    assert stats["techniques"] == {"TEM": 1, "unknown": 1} and stats["years"] == [2020, 2020]
    assert stats["runs"][0]["panels"] == 2 and stats["size_bytes"] > 0


def test_map_encoding_round_trip():
    labels, uncertainty = panel_maps()
    labels_npz, unc_npz = encode_maps(labels, uncertainty)
    np.testing.assert_array_equal(decode_map(labels_npz), labels)
    decoded = decode_map(unc_npz)
    assert decoded.dtype == np.float32 and decoded.max() == pytest.approx(uncertainty.max())
    assert np.abs(decoded - uncertainty).max() <= uncertainty.max() / 510 + 1e-7
    assert decode_map(None) is None and encode_maps(labels, None)[1] is None
    assert not decode_map(encode_maps(labels, np.zeros(labels.shape))[1]).any()
    with pytest.raises(DatabaseError, match="negative"):
        encode_maps(labels, -uncertainty)


def test_figure_failures_counted_and_forgotten_when_stored():
    db = Database(memory=True)
    failure = {"figure_id": "fig2", "url": "http://x.org/2.jpg", "kind": "HTTP 503",
               "reason": "GET http://x.org/2.jpg failed after 2 retries", "permanent": False}
    db.add_article("pmcid:PMC5", {"title": "T", "figures": [{"id": "fig1", "image": "/c/1.jpg"}]}, "europepmc")
    db.record_figure_failure("pmcid:PMC5", failure)
    db.record_figure_failure("pmcid:PMC5", {**failure, "kind": "timeout"})
    db.record_figure_failure("pmcid:PMC5", {**failure, "figure_id": "fig3", "permanent": True})
    rows = db.list_figure_failures("pmcid:PMC5")
    assert [(r["figure_id"], r["kind"], r["permanent"], r["attempts"]) for r in rows] == \
        [("fig2", "timeout", False, 2), ("fig3", "HTTP 503", True, 1)]
    assert db.list_figure_failures("pmcid:PMC6") == [] and len(db.list_figure_failures()) == 2
    # a retry stores the recovered figure only: it joins fig1, and its failure row goes
    db.add_article("pmcid:PMC5", {"title": "T", "figures": [{"id": "fig2", "image": "/c/2.jpg"}]}, "europepmc")
    assert sorted(db.sql("SELECT figure_key FROM figures")["figure_key"]) == ["fig1", "fig2"]
    assert [r["figure_id"] for r in db.list_figure_failures()] == ["fig3"]
    with pytest.raises(DatabaseError, match="needs the article key and the failure's figure_id"):
        db.record_figure_failure("pmcid:PMC5", {"url": "http://x.org/9.jpg"})


def test_database_of_the_previous_version_opens(tmp_path):
    path = tmp_path / "old.db"
    with Database(path) as db:  # the previous schema is today's without crawl_figure_failures
        db.add_article("pmcid:PMC1", {"doi": "10.1/old", "title": "Old",
                                      "figures": [{"id": "fig1", "image": "/c/1.jpg"}]}, "europepmc")
        db.record_failure("pmcid:PMC2", "http://x.org/2", "HTTP 500")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE crawl_figure_failures")
    with Database(path, readonly=True) as db:
        assert db.has_article("pmcid:PMC1") and db.list_figure_failures() == []
        assert db.stats()["tables"]["figures"] == 1
    with Database(path) as db:  # opened for writing: the new table is added, old rows kept
        assert db.has_article("pmcid:PMC1") and db.list_figure_failures("pmcid:PMC1") == []
        db.record_figure_failure("pmcid:PMC1", {"figure_id": "fig2", "url": "http://x.org/f2.jpg",
                                                "kind": "HTTP 404", "reason": "gone", "permanent": True})
        assert db.list_figure_failures()[0]["attempts"] == 1
        assert db.sql("SELECT attempts FROM crawl_failures WHERE key = 'pmcid:PMC2'")["attempts"][0] == 1
        assert db.db.table("figures").count == 1


def test_every_crawl_key_of_an_article_is_found():
    db = Database(memory=True)
    first = db.add_article("pmcid:PMC1", {"doi": "10.1/x", "title": "T", "figures": [{"id": "fig1", "image": "/c/1.jpg"}]},
                           "europepmc")
    second = db.add_article("arxiv:2101.00001", {"doi": "10.1/X", "title": "T",
                                                 "figures": [{"id": "fig1", "image": "/c/1.jpg"}]}, "arxiv")
    third = db.add_article("pmcid:PMC2", {"doi": "https://doi.org/10.1/x", "title": "T"}, "europepmc")
    assert first == second == third
    assert all(db.has_article(k) for k in ("pmcid:PMC1", "arxiv:2101.00001", "pmcid:PMC2", "doi:10.1/x"))
    assert not db.has_article("pmcid:PMC3")
    assert (db.db.table("articles").count, db.db.table("figures").count) == (1, 1)
    keys = db.sql("SELECT key, article_id, source FROM article_keys ORDER BY key").values.tolist()
    assert keys == [["arxiv:2101.00001", first, "arxiv"], ["pmcid:PMC1", first, "europepmc"],
                    ["pmcid:PMC2", first, "europepmc"]]
    db.add_article("pmcid:PMC1", {"doi": "10.1/x", "title": "T"}, "europepmc")  # re-stored: no new row
    assert db.db.table("article_keys").count == 3 and db.db.table("articles").count == 1


def test_failure_deleted_when_the_key_is_stored_and_figure_failure_of_any_key():
    db = Database(memory=True)
    db.record_failure("pmcid:PMC2", "http://x.org/2", "HTTP 500")
    db.record_failure("pmcid:PMC3", "http://x.org/3", "HTTP 404")
    assert db.stats()["crawl"] == {"articles_failed": 2, "figures_missing": 0, "figures_missing_permanent": 0}
    db.add_article("pmcid:PMC2", {"doi": "10.2/y", "title": "T", "figures": [{"id": "fig1", "image": "/c/1.jpg"}]},
                   "europepmc")
    assert db.sql("SELECT key FROM crawl_failures")["key"].tolist() == ["pmcid:PMC3"]
    # fig2 missed under one key, stored under another key of the same article: no longer missing
    db.record_figure_failure("pmcid:PMC2", {"figure_id": "fig2", "url": "http://x.org/f2.jpg", "kind": "HTTP 503",
                                            "reason": "overloaded", "permanent": False})
    stats = db.stats()
    assert stats["crawl"] == {"articles_failed": 1, "figures_missing": 1, "figures_missing_permanent": 0}
    assert (stats["tables"]["crawl_failures"], stats["tables"]["crawl_figure_failures"]) == (1, 1)
    db.add_article("doi:10.2/y", {"doi": "10.2/y", "title": "T", "figures": [{"id": "fig2", "image": "/c/2.jpg"}]},
                   "doi")
    assert db.list_figure_failures() == [] and db.stats()["crawl"]["figures_missing"] == 0


def test_database_without_article_keys_opens_and_is_upgraded(tmp_path):
    path = tmp_path / "old.db"
    with Database(path) as db:
        db.add_article("pmcid:PMC1", {"doi": "10.1/old", "title": "Old"}, "europepmc")
        db.add_article("pmcid:PMC2", {"doi": "10.1/old", "title": "Old"}, "europepmc")
        db.add_article("arxiv:2101.00002", {"title": "No DOI"}, "arxiv")
        db.record_failure("pmcid:PMC9", "http://x.org/9", "HTTP 500")
    with sqlite3.connect(path) as conn:  # what the previous version wrote: no key table, one key per
        conn.execute("DROP TABLE article_keys")  # article, failures of keys stored since, no figure failures
        conn.execute("DROP TABLE crawl_figure_failures")
        conn.execute("INSERT INTO crawl_failures (key, url, reason, attempts) "
                     "VALUES ('pmcid:PMC2', 'http://x.org/2', 'HTTP 503', 1)")
    with Database(path, readonly=True) as db:
        assert db.has_article("pmcid:PMC2") and db.has_article("arxiv:2101.00002")
        assert not db.has_article("pmcid:PMC1")  # the previous version kept only the last key
        stats = db.stats()
        assert stats["tables"]["article_keys"] == 0 and stats["tables"]["crawl_failures"] == 2
        assert stats["crawl"] == {"articles_failed": 1, "figures_missing": 0, "figures_missing_permanent": 0}
    with Database(path) as db:  # writable: keys filled in from articles.key, stored failures deleted
        assert db.sql("SELECT key FROM article_keys ORDER BY key")["key"].tolist() == \
            ["arxiv:2101.00002", "pmcid:PMC2"]
        assert db.sql("SELECT key FROM crawl_failures")["key"].tolist() == ["pmcid:PMC9"]
        db.add_article("pmcid:PMC1", {"doi": "10.1/old", "title": "Old"}, "europepmc")
        assert db.has_article("pmcid:PMC1") and db.has_article("pmcid:PMC2")
        assert db.db.table("articles").count == 2
    with Database(path, readonly=True) as db:
        assert db.has_article("pmcid:PMC1") and db.stats()["tables"]["article_keys"] == 3


def test_failures_of_every_key_of_a_stored_doi_are_deleted(tmp_path):
    path = tmp_path / "idx.db"
    with Database(path) as db:
        db.record_failure("pmcid:PMC2", "http://x.org/2", "HTTP 500", doi="https://doi.org/10.2/Y")
        db.record_failure("doi:10.3/z", "http://x.org/3", "HTTP 500")  # a doi: key is its own DOI
        db.record_failure("pmcid:PMC4", "http://x.org/4", "HTTP 404")
        assert db.conn.execute("SELECT key, doi FROM crawl_failures ORDER BY key").fetchall() == \
            [("doi:10.3/z", "10.3/z"), ("pmcid:PMC2", "10.2/y"), ("pmcid:PMC4", None)]
        db.add_article("doi:10.2/y", {"doi": "10.2/y", "title": "Y"}, "doi")
        db.add_article("arxiv:2101.00003", {"doi": "10.3/Z", "title": "Z"}, "arxiv")
        assert db.sql("SELECT key FROM crawl_failures")["key"].tolist() == ["pmcid:PMC4"]
        db.record_failure("pmcid:PMC2", "http://x.org/2", "HTTP 500", doi="10.2/y")  # stored: not recorded
        assert db.sql("SELECT key FROM crawl_failures")["key"].tolist() == ["pmcid:PMC4"]
        assert db.db.table("articles").count == 2
    with sqlite3.connect(path) as conn:  # the previous version: no doi column, a doi: key stored since
        conn.execute("DROP INDEX idx_crawl_failures_doi")
        conn.execute("ALTER TABLE crawl_failures DROP COLUMN doi")
        conn.execute("INSERT INTO crawl_failures (key, url, reason, attempts) VALUES "
                     "('doi:10.2/y', 'http://x.org/2', 'HTTP 500', 1), ('doi:10.9/new', 'http://x.org/9', 'HTTP 500', 1)")
    with Database(path, readonly=True) as db:  # read-only: a doi: key of a stored DOI is not counted
        assert db.stats()["crawl"]["articles_failed"] == 2
    with Database(path) as db:  # writable: the column is added, filled for doi: keys, stored DOIs deleted
        assert db.conn.execute("SELECT key, doi FROM crawl_failures ORDER BY key").fetchall() == \
            [("doi:10.9/new", "10.9/new"), ("pmcid:PMC4", None)]
        assert db.db.table("articles").count == 2


def read_only_access(path, mode, *args, **kwargs):
    """``os.access`` as a user who may read but not write."""
    return not mode & os.W_OK and os.path.exists(path)


def unwritable_folder(monkeypatch, path):
    """What a read-only share looks like to SQLite, reproduced as root (who may write anywhere):
    the write-ahead log beside the database cannot be created, and the folder reads as
    read-only to idx."""
    path.with_name(path.name + "-wal").mkdir()
    monkeypatch.setattr("idx.db.os.access", read_only_access)


def test_read_only_open_in_unwritable_folder(tmp_path, monkeypatch):
    path = tmp_path / "p.db"
    with Database(path) as writer:
        _, _, _, particles, _, _ = fill(writer)
    unwritable_folder(monkeypatch, path)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):  # SQLite alone fails
        sqlite3.connect(path.as_uri() + "?mode=ro", uri=True).execute("SELECT 1 FROM particles")
    with Database(path, readonly=True) as reader:
        assert reader.stats()["tables"]["particles"] == len(particles)
        assert len(reader.sql("SELECT * FROM particles")) == len(particles)
        with pytest.raises(DatabaseError, match="cannot be written"):
            reader.add_article({"doi": "10.1/new"})


def test_read_only_file_in_a_writable_folder_leaves_no_files(tmp_path, monkeypatch):
    """A database file made read-only (chmod 444) in a writable folder: a mode=ro reader left
    -wal and -shm files beside it, read-only too, which then blocked writing once the file was
    writable again."""
    path = tmp_path / "p.db"
    with Database(path) as writer:
        _, _, _, particles, _, _ = fill(writer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.db"]

    def file_read_only(target, mode, *args, **kwargs):
        return not (mode & os.W_OK and Path(target) == path) and os.path.exists(target)

    monkeypatch.setattr("idx.db.os.access", file_read_only)
    with Database(path, readonly=True) as reader:
        assert reader.stats()["tables"]["particles"] == len(particles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.db"]


def test_read_only_open_refuses_unfolded_log_in_unwritable_folder(tmp_path, monkeypatch):
    path = tmp_path / "p.db"
    with Database(path) as writer:
        fill(writer)
        writer.conn.execute("PRAGMA wal_autocheckpoint = 0")
        writer.add_article({"doi": "10.1/late"})
        log = (tmp_path / "p.db-wal").read_bytes()  # the article is only in the log so far
    (tmp_path / "p.db-wal").write_bytes(log)  # as a writer that crashed would leave it
    (tmp_path / "p.db-shm").unlink(missing_ok=True)
    monkeypatch.setattr("idx.db.os.access", read_only_access)
    connect = sqlite3.connect

    def connect_as_other_user(database, *args, **kwargs):
        # Root reads this log anyway; another user in a read-only folder gets this from SQLite
        # 3.40 (checked with `su nobody`), and an immutable open would silently drop the article.
        if "mode=ro" in str(database) and "immutable" not in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr("idx.db.sqlite3.connect", connect_as_other_user)
    with pytest.raises(DatabaseError, match=r"unsaved changes in p\.db-wal .* cannot be written"):
        Database(path, readonly=True)


def test_material_matches_the_panel_that_names_it_not_its_neighbours():
    db = Database(memory=True)
    labels, uncertainty = panel_maps()
    particles = measure_particles(labels, nm_per_px=0.5)
    summary = summarise_panel(particles, labels.shape)
    run_id = db.start_run("bpartis-1.0", "ab" * 32, {"mc_samples": 10})
    mixed = db.add_article({"doi": "10.1000/mixed", "title": "Particles for catalysis", "year": 2021})
    silica = db.add_article({"doi": "10.1000/silica", "title": "Mesoporous silica", "year": 2021})
    figures = {
        "fig1": ("(a) TEM image of mesoporous silica spheres. (b) SEM image of polystyrene beads.",
                 {"a": "TEM image of mesoporous silica spheres", "b": "SEM image of polystyrene beads"}),
        "fig2": ("TEM images of gold nanoparticles: (a) as made, (b) annealed.",
                 {"a": "as made", "b": "annealed"}),
        "fig3": ("TEM image of the particles.", {"a": None}),
    }
    ids = {}
    for fig, (caption, panels) in figures.items():
        article_id = silica if fig == "fig3" else mixed
        figure_id = db.add_figure(article_id, {"id": fig, "label": fig, "caption": caption})
        for k, (label, sub) in enumerate(panels.items()):
            panel = {"bbox": [200 * k, 0, 200 * k + 120, 120], "label": label, "kind": "em",
                     "technique": "TEM", "caption": sub, "nm_per_px": 0.5}
            ids[fig, label] = db.add_panel(run_id, figure_id, panel, particles, labels,
                                           uncertainty, summary)

    def panels_of(material):
        found = set(db.particles(material=material)["panel_id"])
        return sorted(key for key, panel_id in ids.items() if panel_id in found)

    assert panels_of("silica") == [("fig1", "a"), ("fig3", "a")]  # fig3: by its article's title
    assert panels_of("polystyrene") == [("fig1", "b")]
    assert panels_of("gold") == [("fig2", "a"), ("fig2", "b")]  # the shared part of the caption
    assert len(db.panel_stats(material="polystyrene")) == 1
    # figures stored by the pipeline record the caption's words that no label owns: a panel with
    # a sub-caption of its own takes only those from the figure's caption. Panel b's letter was
    # not read here, so no sibling names silica, and panel a (silver) used to match it.
    from idx.pipeline import FigureSource, _figure_record

    for fig, caption, labels_ in (
            ("fig4", "(a) TEM image of silver nanoparticles. (b) SEM image of silica spheres.", ("a", None)),
            ("fig5", "TEM images of Gold nanoparticles: (a) as made, (b) annealed.", ("a", "b"))):
        source = FigureSource(np.zeros((8, 8), np.uint8), caption, {"id": fig, "caption": caption}, {})
        figure_id = db.add_figure(mixed, _figure_record(source))
        subs = {"a": "TEM image of silver nanoparticles" if fig == "fig4" else "as made", "b": "annealed"}
        for k, label in enumerate(labels_):
            panel = {"bbox": [200 * k, 0, 200 * k + 120, 120], "label": label, "kind": "em",
                     "technique": "TEM", "caption": subs.get(label), "nm_per_px": 0.5}
            ids[fig, label or "?"] = db.add_panel(run_id, figure_id, panel, particles, labels,
                                                  uncertainty, summary)
    assert panels_of("silica") == [("fig1", "a"), ("fig3", "a"), ("fig4", "?")]
    assert panels_of("silver") == [("fig4", "a")]
    assert panels_of("gold") == [("fig2", "a"), ("fig2", "b"), ("fig5", "a"), ("fig5", "b")]


def test_a_writer_waits_for_another_process_lock_then_writes(tmp_path):
    """Two extractions on one database: the second waits for the first's write lock."""
    import subprocess
    import sys
    import time

    path = tmp_path / "p.db"
    Database(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         f"c = sqlite3.connect({str(path)!r}); c.execute('BEGIN IMMEDIATE')\n"
         "c.execute(\"INSERT INTO runs (id, model_version) VALUES ('other', 'v')\")\n"
         "print('locked', flush=True); time.sleep(1.5); c.commit()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with Database(path, busy_timeout_s=20) as db:  # opening writes the schema: waits too
            run_id = db.start_run("bpartis-1.0", "ab" * 32, {"mc_samples": 10})
        waited = time.monotonic() - start
    finally:
        holder.wait(timeout=20)
    assert 0.5 < waited < 15
    with Database(path, readonly=True) as db:
        ids = {r[0] for r in db.conn.execute("SELECT id FROM runs")}
    assert ids == {"other", run_id}
    db = Database(path, busy_timeout_s=0.3)  # open before the lock: a short wait, then the error
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, time\n"
         f"c = sqlite3.connect({str(path)!r}); c.execute('BEGIN IMMEDIATE')\n"
         "print('locked', flush=True); time.sleep(5)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(DatabaseError, match=r"locked by another process \(waited 0.3 s\)"):
            db.start_run("bpartis-1.0", "cd" * 32, {"mc_samples": 5})
        assert time.monotonic() - start >= 0.25  # it waited before giving up
    finally:
        holder.kill()
        holder.wait()
        db.close()


def test_bad_filter_arguments_are_one_line_database_errors():
    db = Database(memory=True)
    fill(db)
    for kwargs, match in ((dict(min_diameter_nm="abc"), "min_diameter_nm must be a number"),
                          (dict(year="twenty"), "year must be a whole number"),
                          (dict(year=2020.5), "year must be a whole number"),
                          (dict(limit="x"), "limit must be a whole number"),
                          (dict(limit=-1), "limit must be at least 1")):
        with pytest.raises(DatabaseError, match=match):
            db.particles(**kwargs)
    assert len(db.particles(year="2020")) == len(db.particles(year=2020)) > 0
    with pytest.raises(DatabaseError, match="must be SQL text"):
        db.sql(None)
