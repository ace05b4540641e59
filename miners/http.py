"""Polite, robust HTTP for the crawler: one session, retries, per-host rate limit, byte caps, cache.

>>> client = HttpClient("~/.cache/idx/crawl", mailto="me@example.org", min_interval_s=1.0)
>>> page = client.get("https://api.crossref.org/works/10.1038/srep01497", accept=JSON_TYPES)
>>> path = client.download_file("https://example.org/fig1.jpg")   # cache/blobs/ab/ab12...ef.jpg

What it guarantees
------------------
- One ``requests.Session`` with a descriptive User-Agent (with ``mailto`` when given), a
  ``(connect, read)`` timeout on every call and urllib3 ``Retry`` with exponential backoff on
  429/500/502/503/504 that honours ``Retry-After`` (capped by ``retry_after_max_s``).
- Bodies are streamed with a byte cap (``max_bytes``) and their content type checked against the
  ``accept`` list; images are also checked by their magic bytes. A truncated body (fewer bytes than
  ``Content-Length``) or a read timeout while streaming is retried the same number of times.
- Redirects are followed by hand (``max_redirects``), only to http(s) URLs, only to ``allowed_hosts``
  when that is set, and a loop is an error.
- Every successful response is cached on disk: ``cache_dir/responses/<sha256(url)>.json`` holds the
  metadata and the body lives at ``cache_dir/blobs/<sha256(body)><ext>``, the extension chosen from a
  fixed table of content types. Nothing from a URL or a server header (``Content-Disposition``,
  ``Location``) ever becomes part of a path, so no response can write outside ``cache_dir``.
  A re-run finds every response in the cache and contacts no server.
- Any failure raises :class:`~idx.errors.CrawlError` naming the URL, with ``kind``, ``status`` and
  ``permanent`` set where it is raised (see :data:`TRANSIENT_STATUSES`), so callers never parse
  the message.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from idx.errors import CrawlError

log = logging.getLogger(__name__)

USER_AGENT = "idx/0.1 (electron-microscopy literature miner; python-requests)"
TIMEOUT_S = (5.0, 30.0)  # seconds: connect, read
RETRY_STATUSES = (429, 500, 502, 503, 504)
TRANSIENT_STATUSES = (408, 425, 429)  # 4xx statuses that may pass: not ``permanent``
MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 10  # doi.org -> publisher chains (cookies, linkinghub) take several hops
CHUNK_BYTES = 64 * 1024

JSON_TYPES = ("application/json",)
XML_TYPES = ("application/xml", "text/xml", "application/atom+xml", "application/jats+xml")
HTML_TYPES = ("text/html", "application/xhtml+xml")
PDF_TYPES = ("application/pdf",)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/tiff", "image/webp", "image/bmp")

# Content type -> file extension of a cached body. Anything else is stored as ``.bin``.
EXTENSIONS = {
    "application/json": ".json",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/atom+xml": ".xml",
    "application/jats+xml": ".xml",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/tiff": ".tif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "text/plain": ".txt",
}
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM")


@dataclass(frozen=True)
class Response:
    """A fetched (or cached) response body with what is known about it.

    Attributes
    ----------
    url : str
        The URL asked for.
    final_url : str
        The URL after redirects (use it as ``base_url`` for relative links).
    content_type : str
        Media type without parameters, lower case (``"application/json"``).
    body : bytes
        The whole body, at most ``max_bytes`` long.
    path : Path
        Cached copy of the body, named by its SHA-256.
    from_cache : bool
        True when no server was contacted.
    """

    url: str
    final_url: str
    content_type: str
    body: bytes
    path: Path
    from_cache: bool
    forget: object = field(default=None, repr=False, compare=False)  # drops the cache entry

    def json(self):
        """The body parsed as JSON; raises CrawlError if it is not JSON (and drops the cached
        copy, so the next run downloads it again: a body cut short can look complete)."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            if callable(self.forget):
                self.forget(self.url)
            raise CrawlError(f"GET {self.url}: body is not valid JSON ({exc}); the API may have changed",
                             kind="not JSON", permanent=True) from None


RETRY_AFTER_LOG_S = 5.0  # Retry-After waits this long or longer are logged


class _CappedRetry(Retry):
    """urllib3 Retry whose Retry-After wait is capped at ``retry_after_max_s`` seconds."""

    retry_after_max_s: float = 60.0

    def get_retry_after(self, response):
        try:
            value = super().get_retry_after(response)
        except InvalidHeader:  # "Retry-After: soon": wait by the backoff instead
            log.info("HTTP %s: unreadable Retry-After %r; backing off instead", response.status,
                     response.headers.get("Retry-After"))
            return None
        if value is None:
            return None
        wait = min(value, self.retry_after_max_s)
        if wait >= RETRY_AFTER_LOG_S:  # a long silent pause looks like a hang
            log.warning("HTTP %s: the server asks to wait %.0f s (Retry-After); waiting",
                        response.status, wait)
        return wait


def make_session(
    retries: int = 3,
    backoff_s: float = 0.5,
    retry_after_max_s: float = 60.0,
    user_agent: str = USER_AGENT,
    mailto: str | None = None,
) -> requests.Session:
    """A ``requests.Session`` with retrying adapters and a descriptive User-Agent.

    A 429/5xx status still answered after the last retry is returned as that last response, not
    raised, so :class:`HttpClient` knows its status.

    Parameters
    ----------
    retries : int
        Retries of a request that failed to connect, timed out or got a 429/5xx status.
    backoff_s : float
        Exponential backoff factor, seconds: waits are ``backoff_s * 2**(n-1)``.
    retry_after_max_s : float
        Longest wait a server's ``Retry-After`` header can impose, seconds.
    user_agent : str
        User-Agent prefix.
    mailto : str, optional
        Contact e-mail appended to the User-Agent (Crossref's "polite pool" asks for it).
    """
    retry_cls = type("CappedRetry", (_CappedRetry,), {"retry_after_max_s": float(retry_after_max_s)})
    retry = retry_cls(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=("GET", "HEAD"),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(max_retries=retry))
    session.headers["User-Agent"] = f"{user_agent}; mailto:{mailto}" if mailto else user_agent
    return session


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder (no half-written files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


class HttpClient:
    """Cached, rate-limited, size-capped GETs for the crawler.

    Parameters
    ----------
    cache_dir : path
        Folder for cached responses; created if missing. Nothing is written outside it.
    mailto : str, optional
        Contact e-mail sent in the User-Agent.
    timeout_s : (float, float)
        Connect and read timeouts, seconds.
    retries : int
        Retries on connection errors, timeouts, 429/5xx and truncated bodies.
    backoff_s : float
        Exponential backoff factor, seconds (tests use ~0.01).
    retry_after_max_s : float
        Cap on a server's ``Retry-After``, seconds.
    min_interval_s : float
        Per-host minimum interval between requests, seconds (0 = no limit). Cache hits are free.
    max_bytes : int
        Largest body accepted, bytes.
    max_redirects : int
        Redirect hops followed before giving up.
    allowed_hosts : iterable of str, optional
        If given, only these host names (or ``host:port``) are ever contacted, redirects included.
    prefix_headers : dict, optional
        ``{url_prefix: {header: value}}``: extra headers sent only to URLs under that prefix (API
        keys). They are never sent to a redirect target outside the prefix and never cached.
    session : requests.Session, optional
        Use this session instead of :func:`make_session`.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        *,
        mailto: str | None = None,
        timeout_s: tuple[float, float] = TIMEOUT_S,
        retries: int = 3,
        backoff_s: float = 0.5,
        retry_after_max_s: float = 60.0,
        min_interval_s: float = 1.0,
        max_bytes: int = MAX_BYTES,
        max_redirects: int = MAX_REDIRECTS,
        allowed_hosts=None,
        prefix_headers: dict | None = None,
        session: requests.Session | None = None,
    ):
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CrawlError(f"cannot create the cache folder {self.cache_dir} ({exc.strerror}); "
                             "pass a writable folder (--cache DIR)") from None
        self.timeout_s = tuple(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.min_interval_s = float(min_interval_s)
        self.max_bytes = int(max_bytes)
        self.max_redirects = int(max_redirects)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.prefix_headers = {
            (p if p.endswith("/") else p + "/"): dict(h) for p, h in (prefix_headers or {}).items()
        }
        self.session = session or make_session(retries, backoff_s, retry_after_max_s, mailto=mailto)
        self.stats = {"requests": 0, "cache_hits": 0, "bytes": 0}
        self._last_request_s: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- cache -------------------------------------------------------------------------------
    def _meta_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.cache_dir / "responses" / digest[:2] / f"{digest}.json"

    def _blob_path(self, sha256: str, content_type: str) -> Path:
        return self.cache_dir / "blobs" / sha256[:2] / f"{sha256}{EXTENSIONS.get(content_type, '.bin')}"

    def _read_cache(self, url: str, max_age_s: float | None = None) -> Response | None:
        meta_path = self._meta_path(url)
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if max_age_s is not None and time.time() - float(meta.get("fetched_ts", 0)) > max_age_s:
                log.debug("cached %s is older than %s s; downloading again", url, max_age_s)
                return None
            sha = str(meta["sha256"])
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError(f"bad sha256 {sha!r}")
            blob = self._blob_path(sha, str(meta["content_type"]))
            body = blob.read_bytes()
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache entry for %s unreadable (%s); downloading again", url, exc)
            return None
        if hashlib.sha256(body).hexdigest() != sha:
            log.warning("cached body of %s is corrupt; downloading again", url)
            return None
        self.stats["cache_hits"] += 1
        return Response(url, meta.get("final_url", url), meta["content_type"], body, blob, True, self.forget)

    def _write_cache(self, url: str, final_url: str, content_type: str, body: bytes) -> Path:
        sha = hashlib.sha256(body).hexdigest()
        blob = self._blob_path(sha, content_type)
        if not blob.is_file():
            _atomic_write(blob, body)
        meta = {"url": url, "final_url": final_url, "content_type": content_type, "sha256": sha,
                "bytes": len(body), "fetched_ts": time.time(), "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _atomic_write(self._meta_path(url), json.dumps(meta, indent=1).encode("utf-8"))
        return blob

    def forget(self, url: str) -> None:
        """Drop the cache entry of ``url`` (its body would not parse), so the next ``get``
        downloads it again; the content-named blob stays (other URLs may share it)."""
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(url).unlink()
            log.info("cached copy of %s dropped: it did not parse", url)

    def is_cached(self, url: str) -> bool:
        """Whether ``url`` has a cache entry (it will not be downloaded again)."""
        return self._meta_path(url).is_file()

    # -- network -----------------------------------------------------------------------------
    def _wait_turn(self, host: str) -> None:
        """Sleep until ``min_interval_s`` has passed since the last request to ``host``."""
        if self.min_interval_s <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._last_request_s.get(host, -1e18) + self.min_interval_s)
            self._last_request_s[host] = start
        if start > now:
            time.sleep(start - now)

    def _check_url(self, url: str, asked: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CrawlError(f"GET {asked}: refusing URL {url!r} (only http and https URLs are fetched)",
                             kind="forbidden URL", permanent=True)
        if self.allowed_hosts is not None and (
            parts.hostname.lower() not in self.allowed_hosts and parts.netloc.lower() not in self.allowed_hosts
        ):
            raise CrawlError(f"GET {asked}: host {parts.netloc!r} is not in allowed_hosts; "
                             f"add it to allowed_hosts to fetch {url}", kind="forbidden URL", permanent=True)
        return parts.netloc.lower()

    def _headers_for(self, url: str) -> dict:
        extra = {}
        for prefix, headers in self.prefix_headers.items():
            if url.startswith(prefix):
                extra.update(headers)
        return extra

    def _open(self, url: str, headers: dict | None):
        """GET ``url`` following redirects by hand; returns (streaming response, final URL)."""
        current, seen = url, {url}
        for _ in range(self.max_redirects + 1):
            host = self._check_url(current, url)
            self._wait_turn(host)
            self.stats["requests"] += 1
            try:
                resp = self.session.get(current, headers={**(headers or {}), **self._headers_for(current)},
                                        timeout=self.timeout_s, stream=True, allow_redirects=False)
            except requests.exceptions.RetryError as exc:  # a session= that raises on status
                raise CrawlError(f"GET {url} failed after {self.retries} retries ({_reason(exc)}); "
                                 "the server is overloaded or refusing, try again later",
                                 kind="too many retries") from None
            except requests.exceptions.RequestException as exc:
                if not _is_timeout(exc):
                    raise CrawlError(f"GET {url} failed: {_reason(exc)}; check the URL and the network",
                                     kind="connection error") from None
                raise CrawlError(f"GET {url} timed out after {self.retries} retries "
                                 f"(timeouts {self.timeout_s} s); try again later", kind="timeout") from None
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                resp.close()
                target = urljoin(current, location)
                if target in seen:
                    raise CrawlError(f"GET {url}: redirect loop at {target}; the server is misconfigured",
                                     kind="bad redirect", permanent=True)
                seen.add(target)
                current = target
                continue
            try:
                resp.raise_for_status()
            except requests.HTTPError:
                status = resp.status_code
                resp.close()
                raise _status_error(url, status, self.retries) from None
            return resp, current
        raise CrawlError(f"GET {url}: more than {self.max_redirects} redirects; the server is misconfigured",
                         kind="bad redirect", permanent=True)

    def _read_body(self, resp, url: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise CrawlError(f"GET {url}: body of {int(declared)} bytes is larger than the "
                             f"{self.max_bytes}-byte limit; raise max_bytes to fetch it", kind="too large",
                             permanent=True)
        chunks, size = [], 0
        for chunk in resp.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > self.max_bytes:
                raise CrawlError(f"GET {url}: body is larger than the {self.max_bytes}-byte limit; "
                                 "raise max_bytes to fetch it", kind="too large", permanent=True)
            chunks.append(chunk)
        body = b"".join(chunks)
        if declared and declared.isdigit() and len(body) < int(declared):
            raise requests.exceptions.ChunkedEncodingError(f"truncated body: {len(body)} of {declared} bytes")
        return body

    def get(self, url: str, *, accept=None, headers: dict | None = None, use_cache: bool = True,
            max_age_s: float | None = None) -> Response:
        """GET ``url`` (or its cached copy).

        Parameters
        ----------
        url : str
            Full URL, query string included (it is the cache key).
        accept : sequence of str, optional
            Media types accepted (``IMAGE_TYPES``...); any other ``Content-Type`` is an error.
        headers : dict, optional
            Extra request headers (not part of the cache key).
        use_cache : bool
            Read and write the on-disk cache.
        max_age_s : float, optional
            Download again if the cached copy is older than this, seconds (search listings);
            None = a cached copy never expires.

        Raises
        ------
        CrawlError
            Naming ``url``: connection failure, timeout, HTTP error after retries, redirect loop,
            body too large or truncated, unexpected content type; its ``kind``, ``status`` and
            ``permanent`` say which.
        """
        if use_cache:
            cached = self._read_cache(url, max_age_s)
            if cached is not None:
                return cached
        last_error, last_timed_out = None, False
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            resp, final_url = self._open(url, headers)
            try:
                content_type = _media_type(resp.headers.get("Content-Type"))
                if accept and content_type not in accept:
                    raise CrawlError(f"GET {url}: content type {content_type or 'none'!r} is not one of "
                                     f"{', '.join(accept)}; the link does not point to what was expected",
                                     kind="wrong content type", permanent=True)
                body = self._read_body(resp, url)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
                    requests.exceptions.Timeout) as exc:
                last_error, last_timed_out = _reason(exc), _is_timeout(exc)
                log.info("GET %s: body read failed (%s); retry %d of %d", url, last_error, attempt + 1,
                         self.retries)
                continue
            finally:
                resp.close()
            wants_image = bool(accept) and all(a.startswith("image/") for a in accept)
            if wants_image and not body.startswith(_IMAGE_MAGIC) \
                    and not (body[:4] == b"RIFF" and body[8:12] == b"WEBP"):
                raise CrawlError(f"GET {url}: body is not a PNG/JPEG/GIF/TIFF/WebP/BMP image although "
                                 f"the server said {content_type}; the link is broken", kind="not an image",
                                 permanent=True)
            if wants_image and not _image_complete(body):
                last_error, last_timed_out = "image data cut short", False
                log.info("GET %s: image data cut short; retry %d of %d", url, attempt + 1, self.retries)
                continue
            self.stats["bytes"] += len(body)
            path = self._write_cache(url, final_url, content_type, body) if use_cache else Path()
            return Response(url, final_url, content_type, body, path, False, self.forget)
        raise CrawlError(f"GET {url}: body incomplete after {self.retries} retries ({last_error}); "
                         "try again later", kind="timeout" if last_timed_out else "truncated body")

    def download_file(self, url: str, *, accept=IMAGE_TYPES, headers: dict | None = None) -> Path:
        """Download ``url`` into the cache and return the local file, named by content hash.

        Returns
        -------
        Path
            ``cache_dir/blobs/<2 hex>/<sha256><ext>``, always inside ``cache_dir``.
        """
        return self.get(url, accept=accept, headers=headers).path


def _image_complete(body: bytes) -> bool:
    """Whether an image body decodes to its end (a cut-short download without a Content-Length
    still starts with the right magic bytes)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
    except Image.DecompressionBombError:
        return True  # whole, only huge: the image loader refuses it with its own message
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def _status_error(url: str, status: int, retries: int) -> CrawlError:
    """The error of an HTTP error status (429/5xx: still answered after ``retries`` retries)."""
    permanent = 400 <= status < 500 and status not in TRANSIENT_STATUSES
    if status in RETRY_STATUSES:
        return CrawlError(f"GET {url} failed after {retries} retries (too many {status} error responses); "
                          "the server is overloaded or refusing, try again later", kind=f"HTTP {status}",
                          status=status, permanent=permanent)
    return CrawlError(f"GET {url}: HTTP {status}; check that the resource exists", kind=f"HTTP {status}",
                      status=status, permanent=permanent)


def _is_timeout(exc: BaseException) -> bool:
    """Whether a requests exception (wrapping urllib3's MaxRetryError or, when a streamed body
    stalls, its ReadTimeoutError) was a timeout. A refused connection is not, although urllib3's
    ``NewConnectionError`` derives from its ``ConnectTimeoutError``."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    inner = exc.args[0] if exc.args else None
    return any(isinstance(e, urllib3.exceptions.TimeoutError) and
               not isinstance(e, urllib3.exceptions.NewConnectionError)
               for e in (inner, getattr(inner, "reason", None)))


def _reason(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain, on one line."""
    text = str(exc)
    incomplete = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected", text)
    if incomplete:
        return f"truncated body: {incomplete[1]} bytes read, {incomplete[2]} more expected"
    reason = getattr(exc, "args", [None])[0]
    inner = getattr(reason, "reason", None)
    if inner is not None:
        text = str(inner)
    return " ".join(text.split())[:300]
