"""A threaded HTTP server on 127.0.0.1 that replays canned responses and injects faults.

Used by tests/test_http.py, tests/test_crawl.py and benchmarks/crawl_bench.py. Routes are exact
paths (query string included when the route has one, else the path alone).

>>> with ReplayServer() as server:
...     server.add("/a.json", b'{"x": 1}', "application/json")
...     server.add("/flaky", b"ok", "text/plain", fault="status", times=2, status=500)
...     server.url("/a.json")   # 'http://127.0.0.1:PORT/a.json'
...     server.hits["/flaky"]   # requests received on that path

``body`` may be a callable ``f(query: dict) -> bytes`` for answers that depend on the query
string (paged search APIs).

Faults (``fault=``, applied to the first ``times`` requests, then the route answers normally;
``times=None`` = always):
  ``"status"``     answer ``status`` (with ``Retry-After: retry_after`` when given), empty body
  ``"sleep"``      sleep ``delay_s`` before sending headers (client read timeout)
  ``"truncate"``   declare Content-Length larger than the body sent, then close
  ``"redirect"``   302 to ``location``
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Route:
    body: bytes
    content_type: str
    status: int = 200
    headers: dict = field(default_factory=dict)
    fault: str | None = None
    times: int | None = None
    fault_status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    location: str | None = None
    chunked: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else keep-alive + delayed ACK adds ~40 ms per request

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        server: ReplayServer = self.server.replay  # type: ignore[attr-defined]
        path = self.path
        key = path if path in server.routes else path.split("?", 1)[0]
        route = server.routes.get(key)
        with server.lock:
            server.hits[key] += 1
            server.log.append((time.monotonic(), path, dict(self.headers)))
            served = server.served[key]
            server.served[key] += 1
        if route is None:
            return self._send(404, b"not found", "text/plain")
        if callable(route.body):  # body depends on the query string
            query = parse_qs(urlsplit(path).query)
            route = replace(route, body=route.body({k: v[0] for k, v in query.items()}))
        faulty = route.fault is not None and (route.times is None or served < route.times)
        if faulty and route.fault == "status":
            extra = {"Retry-After": route.retry_after} if route.retry_after is not None else {}
            return self._send(route.fault_status, b"", "text/plain", extra)
        if faulty and route.fault == "sleep":
            time.sleep(route.delay_s)
            try:
                return self._send(route.status, route.body, route.content_type, route.headers)
            except OSError:
                return None
        if faulty and route.fault == "redirect":
            return self._send(302, b"", "text/plain", {"Location": route.location})
        if faulty and route.fault == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(route.body) + 1000))
            self.end_headers()
            self.wfile.write(route.body[: len(route.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        if route.chunked:
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for start in range(0, len(route.body), 65536):
                    self.wfile.write(route.body[start:start + 65536])
            except OSError:
                pass
            return None
        return self._send(route.status, route.body, route.content_type, route.headers)

    def _send(self, status, body, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Clients that give up (timeouts, size limits) reset connections: not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ReplayServer:
    """Threaded HTTP server on 127.0.0.1 (ephemeral port) serving :class:`Route` objects."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.served: defaultdict = defaultdict(int)
        self.log: list = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.replay = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "ReplayServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def add(self, path: str, body: bytes, content_type: str, **kwargs) -> Route:
        """Serve ``body`` at ``path`` (see module docstring for faults)."""
        route = Route(body=body, content_type=content_type, **kwargs)
        self.routes[path] = route
        return route

    def total_hits(self) -> int:
        return sum(self.hits.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.hits.clear()
            self.served.clear()
            self.log.clear()


def make_client(tmp_path, server, **kwargs):
    """An ``HttpClient`` for tests: short timeouts, tiny backoff, no rate limit, this server only."""
    from miners.http import HttpClient

    options = dict(timeout_s=(1.0, 1.0), retries=2, backoff_s=0.01, min_interval_s=0.0,
                   allowed_hosts={server.host})
    options.update(kwargs)
    return HttpClient(tmp_path / "cache", **options)
