"""Crawler throughput and fault behaviour against a local replay server (127.0.0.1 only).

    python benchmarks/crawl_bench.py --articles 60

1. Throughput: a Europe PMC search listing ``--articles`` open-access articles (the two real JATS
   fixtures served under many PMCIDs, 4 figure JPEGs each, all figures kept), crawled with the
   per-host rate limit off: cold cache (every response downloaded), warm cache with an empty
   store (everything re-read from the cache) and a re-run on the same store (all skipped).
   Then one cold run with ``--rate`` spacing to show the limiter's cost.
2. Faults: one article per scenario with a fault injected on its full text or its first figure;
   the table says whether the client retried, whether the article was stored anyway, and whether
   a failure was recorded (with the reason).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from crawl_site import JATS, _figure_urls, jpeg_bytes  # noqa: E402
from miners.crawl import EuropePMCSource, MemoryStore, crawl  # noqa: E402
from miners.http import HttpClient  # noqa: E402
from replay_server import ReplayServer  # noqa: E402

PAGE = 25


def serve_articles(server: ReplayServer, n_articles: int, first_id: int = 1000000) -> list[str]:
    """Register a paged search of ``n_articles`` PMCIDs, their full text and figure images."""
    pmcids = [f"PMC{first_id + i}" for i in range(n_articles)]
    fixtures = list(JATS.values())
    for i, pmcid in enumerate(pmcids):
        path = fixtures[i % len(fixtures)]
        server.add(f"/rest/{pmcid}/fullTextXML", path.read_bytes(), "application/xml")
        for url in _figure_urls(path, f"http://127.0.0.1:1/articles/{pmcid}/bin/"):
            server.add(url.split("127.0.0.1:1", 1)[1], jpeg_bytes(len(server.routes), side=256), "image/jpeg")

    def page(query: dict) -> bytes:
        start = int(query.get("cursorMark", "*").replace("*", "0"))
        results = [{"id": p, "pmcid": p, "isOpenAccess": "Y"} for p in pmcids[start:start + PAGE]]
        return json.dumps({"nextCursorMark": str(start + PAGE) if results else query.get("cursorMark"),
                           "resultList": {"result": results}}).encode()

    server.add("/rest/search", page, "application/json")
    return pmcids


def make_client(cache: Path, server: ReplayServer, **kwargs) -> HttpClient:
    options = dict(timeout_s=(1.0, 0.3), retries=2, backoff_s=0.05, min_interval_s=0.0,
                   retry_after_max_s=5.0, allowed_hosts={server.host})
    options.update(kwargs)
    return HttpClient(cache, **options)


def timed_crawl(server, cache, store, **client_kwargs):
    source = EuropePMCSource(make_client(cache, server, **client_kwargs), "nanoparticles",
                             base_url=server.url("/rest"), images_url=server.url("/articles"), page_size=PAGE)
    hits0 = server.total_hits()
    start = time.perf_counter()
    report = crawl(source, store, all_figures=True, progress=False)
    seconds = time.perf_counter() - start
    return report, seconds, server.total_hits() - hits0


def run_throughput(n_articles: int, rate_s: float) -> list[dict]:
    rows = []
    with ReplayServer() as server, tempfile.TemporaryDirectory() as tmp:
        serve_articles(server, n_articles)
        cache, store = Path(tmp) / "cache", MemoryStore()
        for name, the_store, kwargs in (("cold cache (downloads)", store, {}),
                                        ("warm cache, empty store", MemoryStore(), {}),
                                        ("re-run, same store (skips)", store, {})):
            report, seconds, hits = timed_crawl(server, cache, the_store, **kwargs)
            rows.append({"run": name, "articles": report.stored + report.skipped, "figures": report.figures,
                         "requests": hits, "seconds": seconds,
                         "articles_per_min": 60 * (report.stored + report.skipped) / seconds})
    n_rate = min(n_articles, 10)
    with ReplayServer() as server, tempfile.TemporaryDirectory() as tmp:
        serve_articles(server, n_rate)
        report, seconds, hits = timed_crawl(server, Path(tmp) / "cache", MemoryStore(), min_interval_s=rate_s)
        rows.append({"run": f"cold cache, --rate {rate_s}", "articles": report.stored, "figures": report.figures,
                     "requests": hits, "seconds": seconds, "articles_per_min": 60 * report.stored / seconds})
    return rows


FAULTS = [
    # name, target ("text" = full text, "figure" = first figure), route changes, client options
    ("read timeout once", "text", {"fault": "sleep", "times": 1, "delay_s": 0.6}, {}),
    ("read timeout always", "text", {"fault": "sleep", "delay_s": 0.6}, {}),
    ("429 + Retry-After: 1, once", "text", {"fault": "status", "times": 1, "fault_status": 429,
                                            "retry_after": "1"}, {}),
    ("500 twice, then 200", "text", {"fault": "status", "times": 2, "fault_status": 500}, {}),
    ("503 always", "text", {"fault": "status", "fault_status": 503}, {}),
    ("truncated body once", "figure", {"fault": "truncate", "times": 1}, {}),
    ("truncated body always", "figure", {"fault": "truncate"}, {}),
    ("oversized body (> max_bytes)", "text", {}, {"max_bytes": 50_000}),
    ("wrong content type (text/html)", "text", {"content_type": "text/html"}, {}),
    ("HTML body sent as image/jpeg", "figure", {"body": b"<html>Please log in</html>"}, {}),
    ("redirect loop", "figure", {"fault": "redirect", "location": "LOOP"}, {}),
    ("redirect to a foreign host", "figure", {"fault": "redirect", "location": "http://192.0.2.7/x.jpg"}, {}),
    ("hostile Content-Disposition", "figure",
     {"headers": {"Content-Disposition": 'attachment; filename="../../../../tmp/evil.jpg"'}}, {}),
]


def run_faults() -> list[dict]:
    rows = []
    for name, target, changes, client_kwargs in FAULTS:
        with ReplayServer() as server, tempfile.TemporaryDirectory() as tmp:
            (pmcid,) = serve_articles(server, 1)
            text = f"/rest/{pmcid}/fullTextXML"
            path = text if target == "text" else next(p for p in server.routes if "/bin/" in p)
            route = server.routes[path]
            for key, value in changes.items():
                setattr(route, key, value)
            if changes.get("location") == "LOOP":  # path -> path.loop -> path
                route.location = path + ".loop"
                server.add(path + ".loop", b"", "text/plain", fault="redirect", location=path)
            store = MemoryStore()
            report, seconds, _ = timed_crawl(server, Path(tmp) / "cache", store, **client_kwargs)
            stray = [p.name for p in Path(tmp).iterdir() if p.name != "cache"]
            reason = store.failures[0]["reason"] if store.failures else ""
            reason = re.sub(r"^GET \S+?:?\s", "", reason)  # the URL is long and always the same
            rows.append({"fault": name, "on": target, "requests": server.hits[path],
                         "retried": server.hits[path] > 1, "stored": report.stored == 1,
                         "failure_recorded": bool(store.failures), "seconds": seconds,
                         "outside_cache": stray, "reason": reason[:90]})
    return rows


def print_tables(throughput: list[dict], faults: list[dict]) -> None:
    print("| run | articles | figures | requests | seconds | articles/min |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in throughput:
        per_min = f"{r['articles_per_min']:.0f}" if r["seconds"] >= 0.05 else "(instant)"
        print(f"| {r['run']} | {r['articles']} | {r['figures']} | {r['requests']} | {r['seconds']:.3f} | "
              f"{per_min} |")
    print()
    print("| fault | on | requests | retried | stored | failure recorded | seconds | reason |")
    print("|---|---|---:|---|---|---|---:|---|")
    yes = {True: "yes", False: "no"}
    for r in faults:
        print(f"| {r['fault']} | {r['on']} | {r['requests']} | {yes[r['retried']]} | {yes[r['stored']]} | "
              f"{yes[r['failure_recorded']]} | {r['seconds']:.2f} | {r['reason'].replace('|', '/')} |")
    stray = [r["fault"] for r in faults if r["outside_cache"]]
    print(f"\nfiles written outside the cache folder: {stray or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=60, help="articles in the throughput search")
    parser.add_argument("--rate", type=float, default=0.05, help="per-host interval (s) for the rate row")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print_tables(run_throughput(args.articles, args.rate), run_faults())


if __name__ == "__main__":
    main()
