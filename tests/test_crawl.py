"""miners.crawl: the real crawler against hand-made service responses on 127.0.0.1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from idx.cli import cli
from idx.errors import CrawlError
from miners import crawl as crawl_module
from miners.articles import is_em_caption, read
from miners.crawl import (FIGURE_MAX_ATTEMPTS, ArxivSource, DoiSource, EuropePMCSource, MemoryStore, clean_doi,
                          crawl, download_figures, figure_key, read_doi_file, safe_name)
from crawl_site import (ELSEVIER_DOI, ELSEVIER_XML, JATS, NATURE, build_site, build_three_figure_site, jpeg_bytes,
                        three_figure_jats)
from replay_server import make_client



def europepmc(client, site):
    return EuropePMCSource(client, "nanoparticles", base_url=site.europepmc_url,
                           images_url=site.europepmc_images_url, page_size=2)


def dois(client, site, items, **kwargs):
    return DoiSource(client, items, crossref_url=site.crossref_url, doi_url=site.doi_url,
                     elsevier_url=site.elsevier_url, **kwargs)


def test_europepmc_crawl_stores_articles_with_local_figures(tmp_path, server):
    site = build_site(server, broken=True)
    client = make_client(tmp_path, server)
    store = MemoryStore()
    report = crawl(europepmc(client, site), store, all_figures=True, progress=False)
    assert sorted(store.articles) == ["pmcid:PMC3166277", "pmcid:PMC3460867"]
    assert report.stored == 2 and report.failed == 1 and report.skipped == 0
    assert store.failures[0]["key"] == "pmcid:PMC9999999"
    assert "PMC9999999/fullTextXML" in store.failures[0]["reason"]
    for pmcid, path in JATS.items():
        entry = store.articles[f"pmcid:{pmcid}"]
        expected = read(path)
        assert entry["source"] == "europepmc" and entry["article"]["doi"] == expected.doi
        figures = entry["article"]["figures"]
        assert [f["id"] for f in figures] == [f.id for f in expected.figures if f.image]
        for figure in figures:
            served = server.routes[figure["image_url"].split(server.host, 1)[1]].body
            assert open(figure["image"], "rb").read() == served
            assert figure["image"].startswith(str(client.cache_dir))
    assert report.figures == sum(len(site.figure_paths[k]) for k in store.articles)
    assert server.hits["/europepmc/rest/search"] == 3  # three pages, cursor followed
    assert not any("passwd" in path for _, path, _ in server.log)  # hostile PMCID never used


def test_rerun_downloads_nothing(tmp_path, server):
    site = build_site(server)
    store = MemoryStore()
    crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    first_hits = server.total_hits()
    assert first_hits > 5
    again = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert again.skipped == 2 and again.stored == 0
    fresh = MemoryStore()  # database lost, cache kept: everything is rebuilt from the cache
    rebuilt = crawl(europepmc(make_client(tmp_path, server), site), fresh, all_figures=True, progress=False)
    assert server.total_hits() == first_hits
    assert rebuilt.stored == 2 and fresh.articles == store.articles


class CrashingStore(MemoryStore):
    """A store whose process 'dies' when the n-th article is added."""

    def __init__(self, crash_at: int, exc=RuntimeError):
        super().__init__()
        self.crash_at, self.exc = crash_at, exc

    def add_article(self, key, article, source):
        if self.add_calls + 1 == self.crash_at:
            self.add_calls += 1
            raise self.exc("simulated crash")
        super().add_article(key, article, source)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_resume_after_interruption_without_duplicates(tmp_path, server, exc):
    site = build_site(server)
    store = CrashingStore(crash_at=2, exc=exc)
    with pytest.raises(exc, match="simulated crash"):
        crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert list(store.articles) == ["pmcid:PMC3460867"]
    store.crash_at = None
    report = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert report.skipped == 1 and report.stored == 1
    assert sorted(store.articles) == ["pmcid:PMC3166277", "pmcid:PMC3460867"]
    assert store.add_calls == 3  # 1 stored + 1 crashed + 1 stored on resume: no article added twice
    assert server.hits["/europepmc/rest/PMC3460867/fullTextXML"] == 1
    assert server.hits["/europepmc/rest/PMC3166277/fullTextXML"] == 1  # resumed from the cache


def test_default_keeps_only_em_figures(tmp_path, server):
    site = build_site(server)
    store = MemoryStore()
    crawl(dois(make_client(tmp_path, server), site, ["10.1038/srep01497"]), store, progress=False)
    figures = store.articles["doi:10.1038/srep01497"]["article"]["figures"]
    html = server.routes["/nature/articles/srep01497"].body
    em_ids = [f.id for f in read(html, base_url=server.url("/nature/articles/srep01497")).figures
              if is_em_caption(f.caption)]
    assert em_ids and [f["id"] for f in figures] == em_ids
    downloaded = {p for p in site.figure_paths["doi:10.1038/srep01497"] if server.hits[p]}
    assert len(downloaded) == len(em_ids)  # non-EM figures are never downloaded


def test_doi_crawl_uses_crossref_links_redirects_and_records_bad_dois(tmp_path, server):
    site = build_site(server)
    store = MemoryStore()
    items = ["https://doi.org/10.1038/SREP01497", "doi:10.1038/ncomms1737", "not-a-doi", ELSEVIER_DOI]
    report = crawl(dois(make_client(tmp_path, server), site, items), store, all_figures=True, progress=False)
    assert sorted(store.articles) == ["doi:10.1038/ncomms1737", "doi:10.1038/srep01497"]
    srep = store.articles["doi:10.1038/srep01497"]["article"]
    assert srep["license"] == "http://creativecommons.org/licenses/by-nc-nd/3.0/"
    assert srep["doi"] == "10.1038/srep01497" and srep["journal"]
    assert len(store.articles["doi:10.1038/ncomms1737"]["article"]["figures"]) == \
        len(site.figure_paths["doi:10.1038/ncomms1737"])
    reasons = {f["key"]: f["reason"] for f in store.failures}
    assert "is not a DOI" in reasons["doi:not-a-doi"]
    assert f"no readable full text for DOI {ELSEVIER_DOI}" in reasons[f"doi:{ELSEVIER_DOI}"]
    assert report.failed == 2
    assert not any("/elsevier/" in path for _, path, _ in server.log)  # no key: Elsevier never asked


def test_elsevier_key_from_environment_only_sent_to_elsevier(tmp_path, server, monkeypatch):
    monkeypatch.setenv("ELSEVIER_API_KEY", "secret-key")
    site = build_site(server)
    store = MemoryStore()
    crawl(dois(make_client(tmp_path, server), site, [ELSEVIER_DOI, "10.1038/srep01497"]), store,
          all_figures=True, progress=False)
    article = store.articles[f"doi:{ELSEVIER_DOI}"]["article"]
    assert len(article["figures"]) == len(read(ELSEVIER_XML).figures)
    keyed = {path.split("?")[0] for _, path, headers in server.log if headers.get("X-ELS-APIKey") == "secret-key"}
    assert keyed and all(p.startswith("/elsevier/") for p in keyed)
    assert len(keyed) == 1 + len(article["figures"])  # full text + every figure


def test_bad_figure_is_left_out_and_not_retried_unless_asked(tmp_path, server):
    site = build_site(server)
    bad = site.figure_paths["pmcid:PMC3460867"][0]
    server.add(bad, b"<html>Access denied</html>", "text/html")
    store = MemoryStore()
    report = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert sorted(store.articles) == ["pmcid:PMC3166277", "pmcid:PMC3460867"] and report.failed == 0
    kept = store.articles["pmcid:PMC3460867"]["article"]["figures"]
    assert len(kept) == len(site.figure_paths["pmcid:PMC3460867"]) - 1
    assert not any(f["image_url"].endswith(bad) for f in kept)
    pmc_figures = len(site.figure_paths["pmcid:PMC3460867"]) + len(site.figure_paths["pmcid:PMC3166277"])
    assert report.figures_failed == 1 and report.figures == pmc_figures - 1
    (failure,) = store.list_figure_failures("pmcid:PMC3460867")
    assert failure["kind"] == "wrong content type" and failure["permanent"] and failure["attempts"] == 1
    assert bad in failure["reason"] and "content type 'text/html'" in failure["reason"]
    assert report.figure_failures[0]["will_retry"] is False
    again = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert again.skipped == 2 and again.retried == 0 and server.hits[bad] == 1  # permanent: not retried
    server.add(bad, server.routes[site.figure_paths["pmcid:PMC3460867"][1]].body, "image/jpeg")  # fixed
    forced = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, retry_failed=True,
                   progress=False)
    assert forced.retried == 1 and forced.figures == 1 and forced.figures_failed == 0 and server.hits[bad] == 2
    assert len(store.articles["pmcid:PMC3460867"]["article"]["figures"]) == len(site.figure_paths["pmcid:PMC3460867"])
    assert store.list_figure_failures("pmcid:PMC3460867") == [] and len(store.articles) == 2


def test_max_articles_and_failing_listing(tmp_path, server):
    site = build_site(server)
    store = MemoryStore()
    report = crawl(europepmc(make_client(tmp_path, server), site), store, max_articles=1, progress=False)
    assert report.stored == 1 and server.hits["/europepmc/rest/search"] == 1
    with pytest.raises(CrawlError, match="max_articles must be at least 1"):
        crawl(europepmc(make_client(tmp_path, server), site), store, max_articles=0, progress=False)
    down = EuropePMCSource(make_client(tmp_path, server), "x", base_url=server.url("/down"))
    with pytest.raises(CrawlError, match=r"/down/search\?.*HTTP 404"):
        crawl(down, store, progress=False)
    with pytest.raises(CrawlError, match="needs a search query"):
        EuropePMCSource(make_client(tmp_path, server), "  ")


def test_faults_on_the_way_are_recovered(tmp_path, server):
    site = build_site(server)
    route = server.routes["/europepmc/rest/search"]
    route.fault, route.times, route.fault_status, route.retry_after = "status", 1, 429, "0"
    figure = server.routes[site.figure_paths["pmcid:PMC3166277"][0]]
    figure.fault, figure.times = "truncate", 1
    full_text = server.routes["/europepmc/rest/PMC3460867/fullTextXML"]
    full_text.fault, full_text.times, full_text.fault_status = "status", 2, 503
    store = MemoryStore()
    report = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert report.stored == 2 and report.failed == 0
    assert server.hits["/europepmc/rest/PMC3460867/fullTextXML"] == 3
    assert server.hits[site.figure_paths["pmcid:PMC3166277"][0]] == 2


def test_identifiers_are_cleaned():
    assert clean_doi("https://doi.org/10.1038/SREP01497") == "10.1038/srep01497"
    assert clean_doi("doi: 10.1021/acs.jmedchem.6b00723") == "10.1021/acs.jmedchem.6b00723"
    assert clean_doi("../../etc/passwd") is None
    assert safe_name("arxiv:../../2101.00001v1") == "arxiv_.._.._2101.00001v1"
    assert "/" not in safe_name("a/b") and safe_name("..") == "_"


def test_read_doi_file(tmp_path):
    path = tmp_path / "dois.txt"
    path.write_text("# my list\n10.1038/srep01497\n\n10.1038/ncomms1737  # Nature Comms\n")
    assert read_doi_file(path) == ["10.1038/srep01497", "10.1038/ncomms1737"]
    path.write_text("# nothing\n")
    with pytest.raises(CrawlError, match="holds no DOI"):
        read_doi_file(path)
    with pytest.raises(CrawlError, match="cannot read DOI file"):
        read_doi_file(tmp_path / "missing.txt")


def test_cli_crawl_rejects_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["crawl", "--db", str(tmp_path / "x.db")])
    assert result.exit_code != 0 and "--query" in result.output
    result = runner.invoke(cli, ["crawl", "--source", "doi", "--db", str(tmp_path / "x.db")])
    assert result.exit_code != 0 and "--doi-file" in result.output
    result = runner.invoke(cli, ["crawl", "--query", "tem", "--max-articles", "0", "--db", str(tmp_path / "x.db")])
    assert result.exit_code != 0


def test_cli_crawl_against_local_services(tmp_path, server, monkeypatch):
    db = pytest.importorskip("idx.db")
    if not all(hasattr(db.Database, m) for m in ("has_article", "add_article", "record_failure")):
        pytest.skip("idx.db.Database does not implement the crawl store protocol yet")
    site = build_site(server)
    monkeypatch.setattr(crawl_module, "CROSSREF_URL", site.crossref_url)
    monkeypatch.setattr(crawl_module, "DOI_URL", site.doi_url)
    doi_file = tmp_path / "dois.txt"
    doi_file.write_text("\n".join(NATURE) + "\n")
    args = ["crawl", "--source", "doi", "--doi-file", str(doi_file), "--db", str(tmp_path / "idx.db"),
            "--cache", str(tmp_path / "cache"), "--rate", "0", "--all-figures", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 2
    hits = server.total_hits()
    again = json.loads(CliRunner().invoke(cli, args).stdout)
    assert again["skipped"] == 2 and again["stored"] == 0 and server.total_hits() == hits
    # a crawl where every article fails (an unknown DOI here) exits 1, with the summary first
    doi_file.write_text("10.9999/no-such-article\n")
    failed = CliRunner().invoke(cli, args[:-1])
    assert failed.exit_code == 1 and "0 articles stored" in failed.output
    assert failed.output.strip().splitlines()[-1].startswith("Error: all 1 articles failed"), failed.output


def test_arxiv_crawl_reads_pdfs_and_pages_the_feed(tmp_path, server):
    from crawl_site import ARXIV_ENTRIES

    site = build_site(server)
    client = make_client(tmp_path, server)
    source = ArxivSource(client, "gold nanoparticles", base_url=site.arxiv_url, pdf_url=site.arxiv_pdf_url,
                         page_size=1)
    assert source.query == "all:gold nanoparticles"
    store = MemoryStore()
    report = crawl(source, store, progress=False)
    assert sorted(store.articles) == ["arxiv:2101.00001", "arxiv:2101.00002"] and report.failed == 0
    assert server.hits["/arxiv/api/query"] == 2 and server.hits["/arxiv/pdf/2101.00002v1"] == 1
    for arxiv_id, title, caption, doi, _ in ARXIV_ENTRIES:
        entry = store.articles["arxiv:" + arxiv_id.split("v")[0]]
        article = entry["article"]
        assert entry["source"] == "arxiv" and article["title"] == title and article["year"] == 2021
        assert article["doi"] == doi and article["authors"] == ["Ada Lovelace", "Ernst Ruska"]
        assert article["url"] == server.url(f"/arxiv/pdf/{arxiv_id}")
        kept = [f for f in article["figures"]]
        assert len(kept) == int(is_em_caption(caption.split(". ", 1)[1])) == 1
        assert kept[0]["image_url"] is None and kept[0]["image"].startswith(str(client.cache_dir))
        assert open(kept[0]["image"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# -- figures that fail: three-figure articles, stored in a real SQLite database ---------------------
def three_figure_crawl(tmp_path, server, site, store, **kwargs):
    client = make_client(tmp_path, server, timeout_s=(1.0, 0.3))
    source = EuropePMCSource(client, "nanoparticles", base_url=site.europepmc_url,
                             images_url=site.europepmc_images_url)
    return crawl(source, store, progress=False, **kwargs)


def count_rows(db_path) -> dict:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("articles", "figures", "crawl_failures", "crawl_figure_failures")}


def test_404_figure_article_stored_with_the_other_two(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    dead = site.figure_paths["pmcid:PMC1000001"][1]
    server.routes[dead].status = 404
    with Database(tmp_path / "idx.db") as db:
        report = three_figure_crawl(tmp_path, server, site, db)
        assert (report.stored, report.failed, report.figures, report.figures_failed) == (2, 0, 5, 1)
        (failure,) = db.list_figure_failures()
        assert failure["key"] == "pmcid:PMC1000001" and failure["figure_id"] == "fig2"
        assert failure["kind"] == "HTTP 404" and failure["permanent"] and failure["attempts"] == 1
        assert failure["url"] == server.url(dead) and "HTTP 404" in failure["reason"]
        stored = db.sql("SELECT f.figure_key FROM figures f JOIN articles a ON a.id = f.article_id "
                        "WHERE a.key = 'pmcid:PMC1000001' ORDER BY 1")["figure_key"].tolist()
        assert stored == ["fig1", "fig3"]
        hits = server.total_hits()
        again = three_figure_crawl(tmp_path, server, site, db)
    assert (again.skipped, again.retried, again.stored, again.figures_failed) == (2, 0, 0, 0)
    assert server.total_hits() == hits  # the 404 is not asked again (search page cached)
    assert count_rows(tmp_path / "idx.db") == {"articles": 2, "figures": 5, "crawl_failures": 0,
                                               "crawl_figure_failures": 1}


TRANSIENT_FAULTS = {  # route changes, kind recorded
    "timeout": ({"fault": "sleep", "delay_s": 0.5}, "timeout"),
    "HTTP 500": ({"fault": "status", "fault_status": 500}, "HTTP 500"),
    "HTTP 429": ({"fault": "status", "fault_status": 429, "retry_after": "0"}, "HTTP 429"),
    "truncated": ({"fault": "truncate"}, "truncated body"),
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT_FAULTS))
def test_transient_figure_failure_recovered_by_rerun_without_duplicates(tmp_path, server, fault):
    from idx.db import Database

    changes, kind = TRANSIENT_FAULTS[fault]
    site = build_three_figure_site(server)
    paths = site.figure_paths["pmcid:PMC1000001"]
    route = server.routes[paths[2]]
    for name, value in changes.items():
        setattr(route, name, value)
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = three_figure_crawl(tmp_path, server, site, db)
        assert (first.stored, first.failed, first.figures, first.figures_failed) == (2, 0, 5, 1)
        (failure,) = first.figure_failures
        assert failure["kind"] == kind and not failure["permanent"] and failure["will_retry"]
        assert server.hits[paths[2]] == 3  # the client's own 2 retries, then given up for this run
        assert count_rows(db_path) == {"articles": 2, "figures": 5, "crawl_failures": 0,
                                       "crawl_figure_failures": 1}
        route.fault = None  # the server recovers
        second = three_figure_crawl(tmp_path, server, site, db)
    assert (second.skipped, second.retried, second.stored, second.failed) == (1, 1, 0, 0)
    assert (second.figures, second.figures_failed, second.figure_failures) == (1, 0, [])
    assert count_rows(db_path) == {"articles": 2, "figures": 6, "crawl_failures": 0, "crawl_figure_failures": 0}
    assert server.hits[paths[2]] == 4
    assert server.hits["/epmc3/rest/PMC1000001/fullTextXML"] == 1  # re-read from the cache
    assert server.hits[paths[0]] == server.hits[paths[1]] == 1  # figures already stored not asked again
    with Database(db_path, readonly=True) as db:
        images = db.sql("SELECT image_path, image_url FROM figures WHERE figure_key = 'fig3' "
                        "AND image_url LIKE '%PMC1000001-3.jpg'")
    assert len(images) == 1 and open(images["image_path"][0], "rb").read() == route.body


def test_transient_figure_failure_given_up_after_max_attempts(tmp_path, server):
    site = build_three_figure_site(server, pmcids=("PMC1000001",))
    always = site.figure_paths["pmcid:PMC1000001"][0]
    server.routes[always].fault, server.routes[always].fault_status = "status", 503
    store = MemoryStore()
    reports = [three_figure_crawl(tmp_path, server, site, store) for _ in range(FIGURE_MAX_ATTEMPTS + 1)]
    assert [r.stored for r in reports] == [1] + [0] * FIGURE_MAX_ATTEMPTS
    assert [r.retried for r in reports] == [0] + [1] * (FIGURE_MAX_ATTEMPTS - 1) + [0]
    assert reports[-1].skipped == 1 and [f["will_retry"] for r in reports[:-1] for f in r.figure_failures] == \
        [True] * (FIGURE_MAX_ATTEMPTS - 1) + [False]
    assert server.hits[always] == 3 * FIGURE_MAX_ATTEMPTS  # 3 requests per run, then no more
    assert store.list_figure_failures("pmcid:PMC1000001")[0]["attempts"] == FIGURE_MAX_ATTEMPTS
    assert store.add_calls == 1 and len(store.articles["pmcid:PMC1000001"]["article"]["figures"]) == 2


def test_all_figures_failing_fails_the_article(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    for path, status in zip(site.figure_paths["pmcid:PMC1000002"], (404, 500, 410)):
        server.routes[path].status = status
    with Database(tmp_path / "idx.db") as db:
        report = three_figure_crawl(tmp_path, server, site, db)
        assert (report.stored, report.failed, report.figures, report.figures_failed) == (1, 1, 3, 0)
        assert not db.has_article("pmcid:PMC1000002")
        reason = db.sql("SELECT reason FROM crawl_failures WHERE key = 'pmcid:PMC1000002'")["reason"][0]
    assert "none of the 3 figure images could be downloaded (fig1: HTTP 404; fig2: HTTP 500; fig3: HTTP 410)" \
        in reason
    assert count_rows(tmp_path / "idx.db") == {"articles": 1, "figures": 3, "crawl_failures": 1,
                                               "crawl_figure_failures": 0}


def test_document_failure_still_fails_the_article(tmp_path, server):
    site = build_three_figure_site(server)
    server.routes["/epmc3/rest/PMC1000002/fullTextXML"].body = b"<article><front>"
    store = MemoryStore()
    report = three_figure_crawl(tmp_path, server, site, store)
    assert list(store.articles) == ["pmcid:PMC1000001"] and report.failed == 1
    assert "malformed XML" in store.failures[0]["reason"]
    assert not any("PMC1000002-" in path for _, path, _ in server.log)  # no figure asked


def test_bodies_cut_short_without_a_length_are_fetched_again_once_whole(tmp_path, server):
    """A 200 whose body ends early and declares no length looks complete to HTTP: the full text
    must not stay cached as malformed, nor the image count as stored."""
    site = build_three_figure_site(server)
    xml_path = "/epmc3/rest/PMC1000002/fullTextXML"
    image_path = site.figure_paths["pmcid:PMC1000001"][2]
    whole = {path: server.routes[path].body for path in (xml_path, image_path)}
    for path, body in whole.items():
        server.routes[path].body, server.routes[path].chunked = body[: len(body) // 2], True
    store = MemoryStore()
    first = three_figure_crawl(tmp_path, server, site, store)
    assert list(store.articles) == ["pmcid:PMC1000001"] and first.failed == 1
    assert "malformed XML" in store.failures[0]["reason"]
    (failure,) = first.figure_failures
    assert failure["kind"] == "truncated body" and failure["will_retry"]
    assert server.hits[image_path] == 3  # retried within the run, then left for the next
    for path, body in whole.items():  # the server recovers
        server.routes[path].body = body
    second = three_figure_crawl(tmp_path, server, site, store)
    assert sorted(store.articles) == ["pmcid:PMC1000001", "pmcid:PMC1000002"]
    assert (second.stored, second.failed, second.figures_failed) == (1, 0, 0)
    assert server.hits[xml_path] == 2  # downloaded again, not read from the cache
    figures = {f["image_url"].rsplit("/", 1)[-1]: f["image"]
               for f in store.articles["pmcid:PMC1000001"]["article"]["figures"]}
    assert open(figures[image_path.rsplit("/", 1)[-1]], "rb").read() == whole[image_path]


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FIGURE = jpeg_bytes(7)
HTTP_ERRORS = {  # case: (route options, client options, (kind, status, permanent), the one-line message)
    "404": ({"status": 404}, {}, ("HTTP 404", 404, True), r"x\.jpg: HTTP 404; check that the resource exists$"),
    "410": ({"status": 410}, {}, ("HTTP 410", 410, True), r"x\.jpg: HTTP 410; check"),
    "408": ({"status": 408}, {}, ("HTTP 408", 408, False), r"x\.jpg: HTTP 408; check"),
    "503 every time": ({"fault": "status", "fault_status": 503}, {}, ("HTTP 503", 503, False),
                       r"x\.jpg failed after 2 retries \(too many 503 error responses\); the server is overloaded"),
    "429 every time": ({"fault": "status", "fault_status": 429, "retry_after": "0"}, {}, ("HTTP 429", 429, False),
                       r"x\.jpg failed after 2 retries \(too many 429 error responses\)"),
    "timeout": ({"fault": "sleep", "delay_s": 0.5}, {"timeout_s": (1.0, 0.2)}, ("timeout", None, False),
                r"x\.jpg timed out after 2 retries \(timeouts \(1\.0, 0\.2\) s\); try again later$"),
    "truncated": ({"fault": "truncate"}, {}, ("truncated body", None, False),
                  r"x\.jpg: body incomplete after 2 retries \(truncated body: .*\); try again later$"),
    "not an image": ({"body": b"<html>login</html>"}, {}, ("not an image", None, True),
                     r"x\.jpg: body is not a PNG/JPEG/GIF/TIFF/WebP/BMP image although the server said image/jpeg"),
    "wrong type": ({"content_type": "text/html"}, {}, ("wrong content type", None, True),
                   r"x\.jpg: content type 'text/html' is not one of image/png"),
    "too large": ({}, {"max_bytes": 100}, ("too large", None, True),
                  r"x\.jpg: body of \d+ bytes is larger than the 100-byte limit; raise max_bytes"),
    "redirect loop": ({"fault": "redirect", "location": "/figs/x.jpg"}, {}, ("bad redirect", None, True),
                      r"x\.jpg: redirect loop at .*/figs/x\.jpg; the server is misconfigured$"),
    "foreign host": ({"fault": "redirect", "location": "http://192.0.2.1/x.jpg"}, {}, ("forbidden URL", None, True),
                     r"x\.jpg: host '192\.0\.2\.1' is not in allowed_hosts"),
    "refused": (None, {}, ("connection error", None, False), r"x\.jpg failed: .*; check the URL and the network$"),
}


@pytest.mark.parametrize("case", list(HTTP_ERRORS))
def test_http_errors_carry_kind_status_and_permanence(tmp_path, server, case):
    route, options, expected, message = HTTP_ERRORS[case]
    if route is None:  # nothing listens there
        host = f"127.0.0.1:{closed_port()}"
        options = {**options, "allowed_hosts": {server.host, host}}
        url = f"http://{host}/figs/x.jpg"
    else:
        route = {"body": FIGURE, "content_type": "image/jpeg", **route}
        server.add("/figs/x.jpg", route.pop("body"), route.pop("content_type"), **route)
        url = server.url("/figs/x.jpg")
    with pytest.raises(CrawlError, match=message) as caught:
        make_client(tmp_path, server, **options).download_file(url)
    error = caught.value
    assert (error.kind, error.status, error.permanent) == expected
    assert "\n" not in str(error)
    # the figure-failure path records the error's own attributes
    article = {"doi": "10.5555/x", "figures": [{"id": "fig1", "label": "Figure 1", "image": url}]}
    kept, (failure,) = download_figures(article, make_client(tmp_path, server, **options), all_figures=True)
    assert kept["figures"] == [] and (failure["kind"], failure["permanent"]) == expected[::2]
    assert failure["reason"] == str(error) and failure["figure_id"] == "fig1"


def test_cli_crawl_counts_failed_figures(tmp_path, server, monkeypatch):
    site = build_site(server)
    monkeypatch.setattr(crawl_module, "CROSSREF_URL", site.crossref_url)
    monkeypatch.setattr(crawl_module, "DOI_URL", site.doi_url)
    dead = site.figure_paths["doi:10.1038/srep01497"][0]
    server.routes[dead].status = 404
    doi_file = tmp_path / "dois.txt"
    doi_file.write_text("10.1038/srep01497\n")
    args = ["crawl", "--doi-file", str(doi_file), "--db", str(tmp_path / "idx.db"), "--cache", str(tmp_path / "c"),
            "--rate", "0", "--all-figures"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    figures = len(site.figure_paths["doi:10.1038/srep01497"])
    assert f"1 articles stored, 0 revisited for missing figures ({figures - 1} figures added, 1 figures " \
           "failed)" in result.stdout
    assert "doi:10.1038/srep01497" in result.stdout and "HTTP 404, not retried" in result.stdout
    summary = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert (summary["skipped"], summary["figures_failed"], summary["retried"]) == (1, 0, 0)


def test_retry_of_a_figure_gone_or_an_unreadable_article(tmp_path, server):
    import shutil

    site = build_three_figure_site(server)
    flaky = site.figure_paths["pmcid:PMC1000002"][0]
    server.routes[flaky].fault = "status"
    store = MemoryStore()
    three_figure_crawl(tmp_path, server, site, store)
    store.record_figure_failure("pmcid:PMC1000001", {"figure_id": "fig9", "url": "http://x/9.jpg", "kind": "timeout",
                                                     "reason": "timed out", "permanent": False})
    shutil.rmtree(tmp_path / "cache")  # cache lost and the full text now broken: the retry cannot re-read it
    server.routes["/epmc3/rest/PMC1000002/fullTextXML"].fault = "status"
    report = three_figure_crawl(tmp_path, server, site, store)
    assert (report.retried, report.skipped, report.failed) == (1, 0, 0)  # PMC1000001 retried, PMC1000002 not
    assert "cannot re-read the article to retry 1 missing figures" in report.failures[0]["reason"]
    assert report.failures[0]["key"] == "pmcid:PMC1000002" and "pmcid:PMC1000002" in store.articles
    (gone,) = store.list_figure_failures("pmcid:PMC1000001")
    assert gone["kind"] == "gone" and gone["permanent"] and "no longer in the article" in gone["reason"]
    server.routes["/epmc3/rest/PMC1000002/fullTextXML"].fault = server.routes[flaky].fault = None
    last = three_figure_crawl(tmp_path, server, site, store)  # PMC1000002 retried again, fig9 never
    assert (last.retried, last.skipped, last.figures, last.figures_failed) == (1, 1, 1, 0)
    assert len(store.articles["pmcid:PMC1000002"]["article"]["figures"]) == 3


def count_keys(db_path) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM article_keys").fetchone()[0]


def test_two_keys_of_one_doi_are_not_fetched_again(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    text = "/epmc3/rest/PMC1000002/fullTextXML"  # PMC1000002 now has PMC1000001's DOI
    server.routes[text].body = server.routes[text].body.replace(b"10.5555/pmc1000002", b"10.5555/pmc1000001")
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = three_figure_crawl(tmp_path, server, site, db)
    assert (first.stored, first.failed, first.figures) == (2, 0, 6)
    rows = {"articles": 1, "figures": 3, "crawl_failures": 0, "crawl_figure_failures": 0}
    assert count_rows(db_path) == rows and count_keys(db_path) == 2
    hits = server.total_hits()
    with Database(db_path) as db:  # a new cache: any document request would reach the server
        second = three_figure_crawl(tmp_path / "second", server, site, db)
    assert (second.skipped, second.stored, second.retried, second.figures) == (2, 0, 0, 0)
    assert server.total_hits() == hits + 1  # the search page only
    assert server.hits["/epmc3/rest/PMC1000001/fullTextXML"] == server.hits[text] == 1
    assert count_rows(db_path) == rows and count_keys(db_path) == 2


def test_failed_article_no_longer_listed_once_stored(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    text = server.routes["/epmc3/rest/PMC1000002/fullTextXML"]
    text.fault = "status"
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = three_figure_crawl(tmp_path, server, site, db)
        assert (first.stored, first.failed) == (1, 1) and db.stats()["crawl"]["articles_failed"] == 1
        text.fault = None
        second = three_figure_crawl(tmp_path, server, site, db)
        assert (second.stored, second.skipped, second.failed) == (1, 1, 0)
        assert db.stats()["crawl"]["articles_failed"] == 0
    assert count_rows(db_path) == {"articles": 2, "figures": 6, "crawl_failures": 0, "crawl_figure_failures": 0}


def cli_europepmc_args(tmp_path, monkeypatch, site, *extra):
    monkeypatch.setattr(crawl_module, "EUROPEPMC_URL", site.europepmc_url)
    monkeypatch.setattr(crawl_module, "EUROPEPMC_IMAGES_URL", site.europepmc_images_url)
    return ["crawl", "--query", "nanoparticles", "--db", str(tmp_path / "idx.db"), "--cache",
            str(tmp_path / "cache"), "--rate", "0", *extra]


def test_cli_retry_failed_retries_permanent_figure_failures(tmp_path, server, monkeypatch):
    site = build_three_figure_site(server, pmcids=("PMC1000001",))
    dead = server.routes[site.figure_paths["pmcid:PMC1000001"][1]]
    dead.status = 404
    args = cli_europepmc_args(tmp_path, monkeypatch, site, "--json")
    first = json.loads(CliRunner().invoke(cli, args).stdout)
    assert (first["stored"], first["figures"], first["figures_failed"]) == (1, 2, 1)
    dead.status = 200  # the publisher fixed the link; a 404 is permanent, so only --retry-failed asks again
    plain = json.loads(CliRunner().invoke(cli, args).stdout)
    assert (plain["skipped"], plain["retried"], server.hits[site.figure_paths["pmcid:PMC1000001"][1]]) == (1, 0, 1)
    result = CliRunner().invoke(cli, [*args, "--retry-failed"])
    assert result.exit_code == 0, result.output
    retried = json.loads(result.stdout)
    assert (retried["retried"], retried["figures"], retried["figures_failed"]) == (1, 1, 0)
    assert count_rows(tmp_path / "idx.db") == {"articles": 1, "figures": 3, "crawl_failures": 0,
                                               "crawl_figure_failures": 0}


def test_cli_crawl_prints_at_most_20_figure_failures(tmp_path, server, monkeypatch):
    pmcids = [f"PMC10000{n:02d}" for n in range(11)]
    site = build_three_figure_site(server, pmcids=pmcids)
    for pmcid in pmcids:  # 2 of 3 figures answer 404: 22 failed figures
        for path in site.figure_paths[f"pmcid:{pmcid}"][1:]:
            server.routes[path].status = 404
    result = CliRunner().invoke(cli, cli_europepmc_args(tmp_path, monkeypatch, site))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "11 articles stored" in lines[0] and "22 figures failed" in lines[0]
    assert sum("HTTP 404, not retried" in line for line in lines) == 20
    assert "... and 2 more failed figures" in lines[-1] and "SELECT * FROM crawl_figure_failures" in lines[-1]
    stats = json.loads(CliRunner().invoke(cli, ["stats", str(tmp_path / "idx.db"), "--json"]).stdout)
    assert stats["tables"]["crawl_figure_failures"] == 22 and stats["crawl"]["figures_missing_permanent"] == 22


class IdlessSource(EuropePMCSource):
    """Europe PMC whose figures come, as from a reader that names none, without ids: ``fig2`` keeps
    only its label, ``fig3`` has neither."""

    def fetch_article(self, record):
        article = super().fetch_article(record)
        for figure in article["figures"]:
            if figure["id"] == "fig2":
                figure["id"] = None
            elif figure["id"] == "fig3":
                figure["id"], figure["label"] = "", ""
        return article


def test_crawler_failures_and_database_rows_agree_on_figure_keys(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server, pmcids=("PMC1000001",))
    text = server.routes["/epmc3/rest/PMC1000001/fullTextXML"]  # a fourth figure, always served
    text.body = text.body.replace(b"</sec>", b'<fig id="fig4"><label>Figure 4</label><caption><p>TEM image of '
                                  b'silica shells.</p></caption><graphic xlink:href="PMC1000001-4"/></fig></sec>')
    server.add("/epmc3/articles/PMC1000001/bin/PMC1000001-4.jpg", jpeg_bytes(99), "image/jpeg")
    paths = site.figure_paths["pmcid:PMC1000001"]
    for path in paths:  # figures 1 to 3 answer 500 until the client's retries run out
        server.routes[path].fault = "status"
    source = IdlessSource(make_client(tmp_path, server), "nanoparticles", base_url=site.europepmc_url,
                          images_url=site.europepmc_images_url)
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = crawl(source, db, progress=False)
        missed = [f["figure_id"] for f in first.figure_failures]
        assert (first.stored, first.figures) == (1, 1) and missed == ["fig1", "Figure 2", "figure-3"]
        assert sorted(f["figure_id"] for f in db.list_figure_failures()) == sorted(missed)
        # the same figures stored straight into a database (the crawler names no id) get the same keys
        raw = source.fetch_article(next(source.iter_records()))  # from the cache
        assert [figure_key(f, i) for i, f in enumerate(raw["figures"])] == [*missed, "fig4"]
        with Database(memory=True) as direct:
            direct.add_article("pmcid:PMC1000001", raw, "europepmc")
            assert sorted(direct.sql("SELECT figure_key FROM figures")["figure_key"]) == sorted([*missed, "fig4"])
        for path in paths:
            server.routes[path].fault = None
        second = crawl(source, db, progress=False)  # the missing figures are retried and stored
        assert (second.retried, second.figures, second.figures_failed) == (1, 3, 0)
        stored = sorted(db.sql("SELECT figure_key FROM figures")["figure_key"])
    assert stored == sorted([*missed, "fig4"])
    assert count_rows(db_path) == {"articles": 1, "figures": 4, "crawl_failures": 0, "crawl_figure_failures": 0}


# -- a key that failed, stored later under another key of the same DOI ------------------------------
def count_articles(db, doi: str) -> int:
    return int(db.sql(f"SELECT COUNT(*) AS n FROM articles WHERE doi = '{doi}'")["n"][0])


def test_failed_doi_key_cleared_when_the_article_is_stored_under_its_pmcid(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    crossref = "/crossref/works/10.5555/pmc1000002"
    server.add(crossref, b"", "application/json", fault="status", fault_status=500)  # Crossref down

    def by_doi():
        return DoiSource(make_client(tmp_path, server), ["https://doi.org/10.5555/PMC1000002"],
                         crossref_url=site.crossref_url, doi_url=site.doi_url)

    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = crawl(by_doi(), db, progress=False)
        assert first.failed == 1 and server.hits[crossref] == 3  # 500 until the client's 2 retries run out
        assert db.sql("SELECT key, doi FROM crawl_failures").values.tolist() == \
            [["doi:10.5555/pmc1000002", "10.5555/pmc1000002"]]
        second = three_figure_crawl(tmp_path, server, site, db)  # Europe PMC: the same article, its pmcid key
        assert (second.stored, second.failed) == (2, 0)
        assert db.sql("SELECT key FROM crawl_failures").empty and db.stats()["crawl"]["articles_failed"] == 0
        third = crawl(by_doi(), db, progress=False)  # the DOI key is found now: nothing asked, nothing added
        assert (third.skipped, third.stored, third.failed) == (1, 0, 0) and server.hits[crossref] == 3
        assert count_articles(db, "10.5555/pmc1000002") == 1
    assert count_rows(db_path) == {"articles": 2, "figures": 6, "crawl_failures": 0, "crawl_figure_failures": 0}


def test_failed_pmcid_key_cleared_when_its_doi_is_stored(tmp_path, server):
    from idx.db import Database

    site = build_three_figure_site(server)
    text = server.routes["/epmc3/rest/PMC1000002/fullTextXML"]
    text.fault = "status"  # Europe PMC answers 500 for this full text
    copy = "/epmc3/articles/PMC1000002/bin/fulltext.xml"  # the same JATS, linked from Crossref
    server.add(copy, text.body, "application/xml")
    message = {"DOI": "10.5555/pmc1000002", "link": [{"URL": server.url(copy), "content-type": "text/xml"}]}
    server.add("/crossref/works/10.5555/pmc1000002", json.dumps({"status": "ok", "message": message}).encode(),
               "application/json")
    by_doi = DoiSource(make_client(tmp_path, server), ["10.5555/pmc1000002"], crossref_url=site.crossref_url,
                       doi_url=site.doi_url)
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = three_figure_crawl(tmp_path, server, site, db)
        assert (first.stored, first.failed) == (1, 1) and server.hits["/epmc3/rest/PMC1000002/fullTextXML"] == 3
        assert db.sql("SELECT key, doi FROM crawl_failures").values.tolist() == \
            [["pmcid:PMC1000002", "10.5555/pmc1000002"]]  # the DOI of the listing
        second = crawl(by_doi, db, progress=False)
        assert (second.stored, second.failed, second.figures) == (1, 0, 3)
        assert db.sql("SELECT key FROM crawl_failures").empty and db.stats()["crawl"]["articles_failed"] == 0
        third = three_figure_crawl(tmp_path, server, site, db)  # the pmcid key fails again: its DOI is stored
        assert (third.skipped, third.failed) == (1, 1) and db.sql("SELECT key FROM crawl_failures").empty
        text.fault = None
        fourth = three_figure_crawl(tmp_path, server, site, db)  # stored under the pmcid key too: one article
        assert (fourth.stored, fourth.skipped, fourth.failed) == (1, 1, 0)
        assert count_articles(db, "10.5555/pmc1000002") == 1
        assert db.sql("SELECT k.key FROM article_keys k JOIN articles a ON a.id = k.article_id "
                      "WHERE a.doi = '10.5555/pmc1000002' ORDER BY 1")["key"].tolist() == \
            ["doi:10.5555/pmc1000002", "pmcid:PMC1000002"]
    assert count_rows(db_path) == {"articles": 2, "figures": 6, "crawl_failures": 0, "crawl_figure_failures": 0}


def test_stored_figures_whose_files_are_gone_are_fetched_again(tmp_path, server):
    """The crawl cache holds the downloaded images; clearing it must not lose them for good."""
    import shutil

    from idx.db import Database

    site = build_three_figure_site(server)
    db_path = tmp_path / "idx.db"
    with Database(db_path) as db:
        first = three_figure_crawl(tmp_path, server, site, db)
        assert (first.stored, first.figures) == (2, 6)
        rows_before = count_rows(db_path)
        shutil.rmtree(make_client(tmp_path, server).cache_dir)
        assert len(db.list_missing_images("pmcid:PMC1000001")) == 3
        second = three_figure_crawl(tmp_path, server, site, db)
        assert (second.retried, second.stored, second.figures, second.figures_failed) == (2, 0, 6, 0)
        assert db.list_missing_images("pmcid:PMC1000001") == []
        third = three_figure_crawl(tmp_path, server, site, db)
        assert (third.skipped, third.retried, third.figures) == (2, 0, 0)
        paths = [row[0] for row in db.conn.execute("SELECT image_path FROM figures")]
    assert count_rows(db_path) == rows_before and all(Path(p).is_file() for p in paths)
