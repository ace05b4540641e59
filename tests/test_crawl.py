"""miners.crawl: the real crawler against hand-made service responses on 127.0.0.1."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from idx.cli import cli
from idx.errors import CrawlError
from miners import crawl as crawl_module
from miners.articles import is_em_caption, read
from miners.crawl import (ArxivSource, DoiSource, EuropePMCSource, MemoryStore, clean_doi, crawl, read_doi_file,
                          safe_name)
from crawl_site import ELSEVIER_DOI, ELSEVIER_XML, JATS, NATURE, build_site
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


def test_bad_figure_fails_article_and_crawl_goes_on(tmp_path, server):
    site = build_site(server)
    bad = site.figure_paths["pmcid:PMC3460867"][0]
    server.add(bad, b"<html>Access denied</html>", "text/html")
    store = MemoryStore()
    report = crawl(europepmc(make_client(tmp_path, server), site), store, all_figures=True, progress=False)
    assert list(store.articles) == ["pmcid:PMC3166277"] and report.failed == 1
    assert bad in store.failures[0]["reason"] and "content type 'text/html'" in store.failures[0]["reason"]


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
