"""miners.http against a 127.0.0.1 server replaying responses and faults."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from idx.errors import CrawlError
from miners.http import JSON_TYPES, HttpClient
from replay_server import make_client


def png_bytes(side: int = 16) -> bytes:
    image = np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()




def test_get_caches_response_and_rerun_contacts_no_server(tmp_path, server):
    server.add("/works/1", b'{"message": {"DOI": "10.1/x"}}', "application/json")
    first = make_client(tmp_path, server).get(server.url("/works/1"), accept=JSON_TYPES)
    second = make_client(tmp_path, server).get(server.url("/works/1"), accept=JSON_TYPES)
    assert first.json() == second.json() == {"message": {"DOI": "10.1/x"}}
    assert not first.from_cache and second.from_cache
    assert server.hits["/works/1"] == 1


def test_user_agent_carries_mailto(tmp_path, server):
    server.add("/ua", b"{}", "application/json")
    make_client(tmp_path, server, mailto="curator@example.org").get(server.url("/ua"))
    user_agent = server.log[-1][2]["User-Agent"]
    assert user_agent.startswith("idx/") and "mailto:curator@example.org" in user_agent


def test_500_twice_then_success_is_retried(tmp_path, server):
    server.add("/flaky", b"{}", "application/json", fault="status", times=2, fault_status=500)
    assert make_client(tmp_path, server).get(server.url("/flaky")).json() == {}
    assert server.hits["/flaky"] == 3


def test_persistent_503_raises_crawl_error_naming_url(tmp_path, server):
    server.add("/down", b"{}", "application/json", fault="status", fault_status=503)
    with pytest.raises(CrawlError, match=r"GET http://127\.0\.0\.1:\d+/down failed after 2 retries"):
        make_client(tmp_path, server).get(server.url("/down"))
    assert server.hits["/down"] == 3


def test_429_retry_after_is_honoured(tmp_path, server):
    server.add("/busy", b"{}", "application/json", fault="status", times=1, fault_status=429,
               retry_after="1")
    start = time.monotonic()
    make_client(tmp_path, server).get(server.url("/busy"))
    assert time.monotonic() - start >= 0.9
    assert server.hits["/busy"] == 2


def test_retry_after_is_capped(tmp_path, server):
    server.add("/slow-down", b"{}", "application/json", fault="status", times=1, fault_status=429,
               retry_after="3600")
    start = time.monotonic()
    make_client(tmp_path, server, retry_after_max_s=0.05).get(server.url("/slow-down"))
    assert time.monotonic() - start < 2.0 and server.hits["/slow-down"] == 2


def test_read_timeout_retried_then_recovers(tmp_path, server):
    server.add("/sleepy", b"{}", "application/json", fault="sleep", times=1, delay_s=0.6)
    make_client(tmp_path, server, timeout_s=(1.0, 0.2)).get(server.url("/sleepy"))
    assert server.hits["/sleepy"] == 2


def test_read_timeout_every_time_raises(tmp_path, server):
    server.add("/dead", b"{}", "application/json", fault="sleep", delay_s=0.5)
    with pytest.raises(CrawlError, match=r"/dead (timed out|failed after)"):
        make_client(tmp_path, server, timeout_s=(1.0, 0.1), retries=1).get(server.url("/dead"))
    assert server.hits["/dead"] == 2


def test_truncated_body_is_retried(tmp_path, server):
    body = png_bytes(64)
    server.add("/cut.png", body, "image/png", fault="truncate", times=1)
    path = make_client(tmp_path, server).download_file(server.url("/cut.png"))
    assert path.read_bytes() == body and server.hits["/cut.png"] == 2


def test_always_truncated_body_raises_and_caches_nothing(tmp_path, server):
    server.add("/cut.png", png_bytes(64), "image/png", fault="truncate")
    client = make_client(tmp_path, server)
    with pytest.raises(CrawlError, match=r"/cut\.png: body incomplete after 2 retries"):
        client.download_file(server.url("/cut.png"))
    assert not client.is_cached(server.url("/cut.png"))


def test_oversized_body_refused_by_content_length_and_by_stream(tmp_path, server):
    server.add("/big.png", png_bytes(64), "image/png")
    server.add("/big-stream.png", png_bytes(64), "image/png", chunked=True)
    client = make_client(tmp_path, server, max_bytes=100)
    with pytest.raises(CrawlError, match=r"/big\.png: body of \d+ bytes is larger than the 100-byte limit"):
        client.download_file(server.url("/big.png"))
    with pytest.raises(CrawlError, match=r"/big-stream\.png: body is larger than the 100-byte limit"):
        client.download_file(server.url("/big-stream.png"))


def test_wrong_content_type_and_fake_image_refused(tmp_path, server):
    server.add("/fig.png", b"<html>login page</html>", "text/html")
    server.add("/fake.png", b"<html>login page</html>", "image/png")
    client = make_client(tmp_path, server)
    with pytest.raises(CrawlError, match=r"content type 'text/html' is not one of image/png"):
        client.download_file(server.url("/fig.png"))
    with pytest.raises(CrawlError, match=r"/fake\.png: body is not a PNG"):
        client.download_file(server.url("/fake.png"))
    assert not list((tmp_path / "cache").rglob("*.png"))


def test_redirect_loop_and_foreign_redirect_refused(tmp_path, server):
    server.add("/a", b"", "text/plain", fault="redirect", location="/b")
    server.add("/b", b"", "text/plain", fault="redirect", location="/a")
    server.add("/away", b"", "text/plain", fault="redirect", location="http://192.0.2.1/x.png")
    client = make_client(tmp_path, server)
    with pytest.raises(CrawlError, match=r"/a: redirect loop"):
        client.get(server.url("/a"))
    with pytest.raises(CrawlError, match=r"host '192\.0\.2\.1' is not in allowed_hosts"):
        client.get(server.url("/away"))
    with pytest.raises(CrawlError, match=r"only http and https"):
        client.get("file:///etc/passwd")


def test_redirect_followed_and_final_url_kept(tmp_path, server):
    server.add("/doi/10.1038/srep01497", b"", "text/plain", fault="redirect", location="/articles/srep01497")
    server.add("/articles/srep01497", b"<html></html>", "text/html")
    response = make_client(tmp_path, server).get(server.url("/doi/10.1038/srep01497"))
    assert response.final_url == server.url("/articles/srep01497") and response.body == b"<html></html>"


def test_hostile_names_stay_inside_cache_dir(tmp_path, server):
    body = png_bytes()
    evil = {"Content-Disposition": 'attachment; filename="../../../escaped.png"'}
    server.add("/..%2F..%2F..%2Fescaped.png", body, "image/png", headers=evil)
    server.add("/files/../../escaped2.png", body, "image/png", headers=evil)
    server.add("/go", b"", "text/plain", fault="redirect", location="/../../../../tmp/escaped3.png")
    server.add("/tmp/escaped3.png", body, "image/png", headers=evil)
    client = make_client(tmp_path, server)
    paths = [client.download_file(server.url(p)) for p in
             ("/..%2F..%2F..%2Fescaped.png", "/files/%2e%2e/%2e%2e/escaped2.png", "/go")]
    cache = (tmp_path / "cache").resolve()
    for path in paths:
        assert path.resolve().is_relative_to(cache) and path.read_bytes() == body
        assert all(c in "0123456789abcdef" for c in path.stem)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert not list(tmp_path.rglob("escaped*"))


def test_rate_limit_spaces_requests_to_one_host(tmp_path, server):
    for i in range(4):
        server.add(f"/r{i}", b"{}", "application/json")
    client = make_client(tmp_path, server, min_interval_s=0.15)
    start = time.monotonic()
    for i in range(4):
        client.get(server.url(f"/r{i}"))
    elapsed = time.monotonic() - start
    # client-side clock: the limiter sleeps between sends (server receive times jitter under load)
    assert len(server.log) == 4 and elapsed >= 3 * 0.15


def test_prefix_headers_only_sent_under_prefix(tmp_path, server):
    server.add("/elsevier/article", b"<x/>", "text/xml")
    server.add("/other/article", b"<x/>", "text/xml")
    client = make_client(tmp_path, server, prefix_headers={server.url("/elsevier"): {"X-ELS-APIKey": "k1"}})
    client.get(server.url("/elsevier/article"))
    client.get(server.url("/other/article"))
    sent = {path: headers.get("X-ELS-APIKey") for _, path, headers in server.log}
    assert sent == {"/elsevier/article": "k1", "/other/article": None}


def test_http_404_raises(tmp_path, server):
    with pytest.raises(CrawlError, match=r"/missing: HTTP 404"):
        make_client(tmp_path, server).get(server.url("/missing"))
    assert server.hits["/missing"] == 1


def test_cached_copy_older_than_max_age_is_downloaded_again(tmp_path, server):
    server.add("/search", b'{"page": 1}', "application/json")
    client = make_client(tmp_path, server)
    client.get(server.url("/search"))
    assert client.get(server.url("/search"), max_age_s=3600).from_cache
    time.sleep(0.05)
    assert not client.get(server.url("/search"), max_age_s=0.01).from_cache
    assert server.hits["/search"] == 2


def test_unwritable_cache_dir_is_a_crawl_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CrawlError, match="cannot create the cache folder .*pass a writable folder"):
        HttpClient(blocker / "cache")


def test_a_listing_that_does_not_parse_is_not_kept_in_the_cache(tmp_path, server):
    body = b'{"resultList": {"result": [{"pmcid": "PMC1"}, {"pmcid": "PMC2"}]}}'
    server.add("/search", body[:20], "application/json", chunked=True)  # cut short, no length
    client = make_client(tmp_path, server)
    with pytest.raises(CrawlError, match="not valid JSON"):
        client.get(server.url("/search"), accept=JSON_TYPES).json()
    assert not client.is_cached(server.url("/search"))
    server.routes["/search"].body = body  # the server recovers
    assert len(client.get(server.url("/search"), accept=JSON_TYPES).json()["resultList"]["result"]) == 2
    assert server.hits["/search"] == 2


def test_long_retry_after_waits_are_capped_and_said(caplog):
    from urllib3.response import HTTPResponse

    from miners.http import _CappedRetry

    retry = _CappedRetry(total=2, respect_retry_after_header=True)
    with caplog.at_level("WARNING", logger="miners.http"):
        assert retry.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "1"})) == 1
        assert not caplog.records  # short waits stay quiet
        assert retry.get_retry_after(HTTPResponse(status=429, headers={"Retry-After": "100"})) == 60
    assert "wait 60 s" in caplog.text


def test_unreadable_retry_after_backs_off_and_recovers(tmp_path, server):
    server.add("/busy", b'{"ok": true}', "application/json", fault="status", times=1,
               fault_status=503, retry_after="garbage")
    client = make_client(tmp_path, server)
    assert client.get(server.url("/busy"), accept=JSON_TYPES).json() == {"ok": True}
    assert server.hits["/busy"] == 2
