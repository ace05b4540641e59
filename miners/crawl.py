"""Crawl open-access full text (Europe PMC, arXiv, DOIs via Crossref) into a store, resumably.

>>> client = HttpClient("~/.cache/idx/crawl", mailto="me@example.org")
>>> source = EuropePMCSource(client, "gold nanoparticles TEM")
>>> report = crawl(source, MemoryStore(), max_articles=20)
>>> report.to_dict()
{'listed': 20, 'skipped': 0, 'stored': 18, 'failed': 2, 'figures': 41, 'figures_failed': 1,
 'retried': 0, 'failures': [...], 'figure_failures': [...]}

Sources
-------
:class:`EuropePMCSource`
    REST search restricted to ``OPEN_ACCESS:y``; full text from ``/{PMCID}/fullTextXML`` (JATS);
    figure images from ``https://europepmc.org/articles/{PMCID}/bin/{name}.jpg``.
:class:`ArxivSource`
    Atom API ``export.arxiv.org/api/query``; full text is the PDF (figures cropped by the PDF reader).
    arXiv asks for at most one request every 3 s (``ARXIV_MIN_INTERVAL_S``).
:class:`DoiSource`
    A DOI list. Crossref metadata (``api.crossref.org/works/{doi}``) gives licence, title and
    full-text links; candidates are tried in order: the Elsevier API (only when
    ``ELSEVIER_API_KEY`` is set), Crossref's XML links, Crossref's HTML links, the landing page and
    the DOI resolver. The first candidate whose document has figures wins.

Every base URL is a constructor argument (None = the public service), so tests point them at
127.0.0.1.

The store protocol
------------------
``crawl`` never imports the database; it takes any ``store`` object with these methods
(``idx.db.Database`` implements them; :class:`MemoryStore` is the in-memory version):

``has_article(key: str) -> bool``
    True if the article ``key`` (``"pmcid:PMC3460867"``, ``"arxiv:2101.00001"``,
    ``"doi:10.1038/srep01497"``) is already stored; the crawler then skips it without a request
    (unless some of its figures are still to be retried, see below). Several keys can name one
    article (a PMCID and the DOI, two sources): every key passed to ``add_article`` must be found.
``add_article(key: str, article: dict, source: str) -> None``
    Store one article. ``article`` is ``miners.articles.Article.to_dict()``:
    ``{"doi", "title", "journal", "year", "authors", "license", "figures": [{"id", "label",
    "caption", "image", "image_url"}], "url"}`` where ``url`` is the full text's URL and
    ``image`` is now the local downloaded file (absolute path inside the cache folder) and
    ``image_url`` where it came from (None for figures cropped from a PDF). ``source`` is
    ``"europepmc"``, ``"arxiv"`` or ``"doi"``. Must be idempotent, and figures are *merged* by
    ``id`` with those stored before (a retry passes only the recovered figures); storing a figure
    forgets its recorded figure failure.
``record_failure(key: str, url: str, reason: str, doi: str | None = None) -> None``
    Remember that article ``key`` (fetched from ``url``) failed and why; ``doi`` is the DOI the
    source's listing gave for it (None if unknown). A failed article is not stored, so the next
    run tries it again (everything already downloaded comes from the cache); once ``key``, or
    another key of the same DOI, is stored it is no longer listed as failed.

Optional (without them a store still gets articles with figures missing, but the missing figures
are only in the report and never retried):

``record_figure_failure(key: str, failure: dict) -> None``
    Remember that one figure image of article ``key`` could not be downloaded. ``failure`` is
    ``{"figure_id", "url", "kind", "reason", "permanent"}`` (``kind`` and ``permanent`` are the
    attributes of the :class:`~idx.errors.CrawlError`); the store counts ``attempts``.
``list_figure_failures(key: str) -> list[dict]``
    The figures of ``key`` still missing: the same dicts plus ``attempts``.

Figures that fail
-----------------
One figure image that cannot be downloaded no longer fails its article: the article is stored
with every figure that did download, and each missing figure is recorded with its ``kind``
(``"HTTP 404"``, ``"HTTP 503"``, ``"timeout"``, ``"truncated body"``, ``"not an image"``, ...)
and the full error. The article fails as a whole (nothing stored, ``record_failure``) only when
its document cannot be fetched or read, or when *none* of its kept figures could be downloaded.

A re-run (same store) re-reads such an article from the cache and retries only its missing
figures; recovered figures are added, never duplicated:

- *transient* failures (timeouts, 429, 5xx, truncated bodies, connection errors; each already
  retried ``client.retries`` times inside one run) are retried by later runs until a figure has
  failed in ``FIGURE_MAX_ATTEMPTS`` runs;
- *permanent* failures (404, 410 and other 4xx, not an image, wrong content type, too large,
  redirect loop, forbidden host) are tried once and never again;
- ``crawl(..., retry_failed=True)`` retries every missing figure whatever its kind and count.

A retry whose article cannot be re-read (cache lost and the server failing) counts no attempt and
is listed in the report's ``failures``; the stored article is left as it was.

Each article is stored as soon as its figures were tried, so Ctrl-C or a crash loses nothing fetched so far;
re-running skips the keys already stored and re-reads the rest from the on-disk cache. Search
listings are cached too, but asked again once older than ``LISTING_MAX_AGE_S`` (a week), so a
later run sees newly published articles; full texts, metadata and images never expire.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol
from urllib.parse import quote, urlencode, urlsplit

from lxml import etree

from idx.errors import ArticleError, CrawlError, IdxError
from miners.http import HTML_TYPES, JSON_TYPES, PDF_TYPES, XML_TYPES, HttpClient

log = logging.getLogger(__name__)

EUROPEPMC_URL = "https://www.ebi.ac.uk/europepmc/webservices/rest"
EUROPEPMC_IMAGES_URL = "https://europepmc.org/articles"
ARXIV_URL = "https://export.arxiv.org/api/query"
ARXIV_PDF_URL = "https://arxiv.org/pdf"
ARXIV_MIN_INTERVAL_S = 3.0
CROSSREF_URL = "https://api.crossref.org"
DOI_URL = "https://doi.org"
ELSEVIER_URL = "https://api.elsevier.com"
ELSEVIER_KEY_ENV = "ELSEVIER_API_KEY"
LISTING_MAX_AGE_S = 7 * 24 * 3600.0  # search pages older than a week are asked again (new articles)
FIGURE_MAX_ATTEMPTS = 3  # crawl runs that try a transiently failing figure image before giving up

_PMCID = re.compile(r"^PMC\d{1,12}$")
_ARXIV_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_ATOM = {"a": "http://www.w3.org/2005/Atom", "arxiv": "http://arxiv.org/schemas/atom",
         "os": "http://a9.com/-/spec/opensearch/1.1/"}


def _parse_or_forget(response, parse):
    """``parse()``; when it raises ArticleError, the cached copy of ``response`` is dropped first,
    so the next crawl downloads the document again (a body cut short can look complete)."""
    try:
        return parse()
    except ArticleError:
        if callable(response.forget):
            response.forget(response.url)
        raise


def _read_article(source, base_url: str | None = None, figure_dir: Path | None = None) -> dict:
    """``miners.articles.read(...).to_dict()`` (imported lazily: the reader is heavy)."""
    from miners.articles import read

    if figure_dir is not None:
        return read(source, base_url=base_url, figure_dir=figure_dir).to_dict()
    return read(source, base_url=base_url).to_dict()


def _is_em_caption(caption: str | None) -> bool:
    """``miners.articles.is_em_caption`` (imported lazily with the readers)."""
    from miners.articles import is_em_caption

    return bool(is_em_caption(caption))


def safe_name(text: str, max_chars: int = 80) -> str:
    """A file-name-safe version of an identifier: ``[A-Za-z0-9._-]`` only, never ``.``/``..``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:max_chars]
    return name or "_"


# -- store ----------------------------------------------------------------------------------------
class Store(Protocol):
    """What :func:`crawl` needs from a store (see the module docstring)."""

    def has_article(self, key: str) -> bool: ...

    def add_article(self, key: str, article: dict, source: str) -> None: ...

    def record_failure(self, key: str, url: str, reason: str, doi: str | None = None) -> None: ...

    # optional: def record_figure_failure(self, key: str, failure: dict) -> None
    #           def list_figure_failures(self, key: str) -> list[dict]


class MemoryStore:
    """In-memory store implementing the crawl store protocol (tests, dry runs).

    Attributes
    ----------
    articles : dict
        ``{key: {"article": dict, "source": str}}``; figures are merged by ``id`` across calls.
    failures : list of dict
        ``{"key", "url", "reason", "doi"}`` in the order they happened (a log: entries stay when
        the key is stored later).
    figure_failures : dict
        ``{key: {figure_id: {"figure_id", "url", "kind", "reason", "permanent", "attempts"}}}``
        for the figures still missing.
    add_calls : int
        How many times ``add_article`` was called (a duplicate shows as ``add_calls > len(articles)``).
    """

    def __init__(self):
        self.articles: dict[str, dict] = {}
        self.failures: list[dict] = []
        self.figure_failures: dict[str, dict[str, dict]] = {}
        self.add_calls = 0

    def has_article(self, key: str) -> bool:
        return key in self.articles

    def add_article(self, key: str, article: dict, source: str) -> None:
        self.add_calls += 1
        old = self.articles.get(key)
        figures = {f.get("id"): f for f in (old["article"].get("figures") or [])} if old else {}
        for figure in article.get("figures") or []:
            figures[figure.get("id")] = figure
            self.figure_failures.get(key, {}).pop(figure.get("id"), None)
        self.articles[key] = {"article": {**article, "figures": list(figures.values())}, "source": source}

    def record_failure(self, key: str, url: str, reason: str, doi: str | None = None) -> None:
        self.failures.append({"key": key, "url": url, "reason": reason, "doi": doi})

    def record_figure_failure(self, key: str, failure: dict) -> None:
        figures = self.figure_failures.setdefault(key, {})
        old = figures.get(failure["figure_id"])
        figures[failure["figure_id"]] = {**failure, "attempts": (old["attempts"] if old else 0) + 1}

    def list_figure_failures(self, key: str) -> list[dict]:
        return [dict(f) for f in self.figure_failures.get(key, {}).values()]


# -- sources --------------------------------------------------------------------------------------
@dataclass
class Record:
    """One article a source listed: stable ``key``, full-text ``url`` and the listing's metadata."""

    key: str
    url: str
    meta: dict = field(default_factory=dict)


class EuropePMCSource:
    """Open-access articles from a Europe PMC search, full text as JATS XML.

    Parameters
    ----------
    client : HttpClient
    query : str
        Europe PMC query syntax (``"gold nanoparticles AND TEM"``); ``AND OPEN_ACCESS:y`` is added.
    base_url : str, optional
        REST root (default ``EUROPEPMC_URL``).
    images_url : str, optional
        Root of the figure folders (default ``EUROPEPMC_IMAGES_URL``): ``{images_url}/{PMCID}/bin/``.
    page_size : int
        Results per search request (Europe PMC allows up to 1000).
    listing_max_age_s : float, optional
        Cached search pages older than this are downloaded again (None: never).
    """

    name = "europepmc"

    def __init__(self, client: HttpClient, query: str, base_url: str | None = None,
                 images_url: str | None = None, page_size: int = 100,
                 listing_max_age_s: float | None = LISTING_MAX_AGE_S):
        if not query or not query.strip():
            raise CrawlError("Europe PMC crawl needs a search query; pass --query TEXT")
        self.client = client
        self.query = query.strip()
        self.base_url = (base_url or EUROPEPMC_URL).rstrip("/")
        self.images_url = (images_url or EUROPEPMC_IMAGES_URL).rstrip("/")
        self.page_size = int(page_size)
        self.listing_max_age_s = listing_max_age_s

    def iter_records(self) -> Iterator[Record]:
        cursor = "*"
        while True:
            params = {"query": f"({self.query}) AND OPEN_ACCESS:y", "format": "json", "resultType": "lite",
                      "pageSize": self.page_size, "cursorMark": cursor}
            data = self.client.get(f"{self.base_url}/search?{urlencode(params)}", accept=JSON_TYPES,
                                   max_age_s=self.listing_max_age_s).json()
            results = (data.get("resultList") or {}).get("result") or []
            for result in results:
                pmcid = str(result.get("pmcid") or "")
                if not _PMCID.match(pmcid):
                    log.debug("Europe PMC result %s has no PMCID; no full text, skipped", result.get("id"))
                    continue
                yield Record(f"pmcid:{pmcid}", f"{self.base_url}/{pmcid}/fullTextXML", result)
            next_cursor = data.get("nextCursorMark")
            if not results or not next_cursor or next_cursor == cursor:
                return
            cursor = next_cursor

    def fetch_article(self, record: Record) -> dict:
        pmcid = record.key.split(":", 1)[1]
        response = self.client.get(record.url, accept=XML_TYPES)
        article = _parse_or_forget(response, lambda: _read_article(
            response.body, base_url=f"{self.images_url}/{pmcid}/bin/"))
        article["url"] = response.final_url
        meta = record.meta
        _fill(article, doi=meta.get("doi"), title=meta.get("title"), journal=meta.get("journalTitle"),
              year=_int_or_none(meta.get("pubYear")))
        return article


class ArxivSource:
    """arXiv search results, full text as PDF.

    Parameters
    ----------
    client : HttpClient
        Give it ``min_interval_s >= ARXIV_MIN_INTERVAL_S`` for the real service.
    query : str
        arXiv search query (``"all:electron microscopy"``); a query without a field prefix gets ``all:``.
    base_url : str, optional
        API endpoint (default ``ARXIV_URL``).
    pdf_url : str, optional
        PDF root used when an entry has no PDF link (default ``ARXIV_PDF_URL``).
    page_size : int
        Entries per API request.
    listing_max_age_s : float, optional
        Cached feed pages older than this are downloaded again (None: never).
    """

    name = "arxiv"

    def __init__(self, client: HttpClient, query: str, base_url: str | None = None,
                 pdf_url: str | None = None, page_size: int = 50,
                 listing_max_age_s: float | None = LISTING_MAX_AGE_S):
        if not query or not query.strip():
            raise CrawlError("arXiv crawl needs a search query; pass --query TEXT")
        query = query.strip()
        self.client = client
        self.query = query if re.match(r"^\(?\w+:", query) else f"all:{query}"
        self.base_url = base_url or ARXIV_URL
        self.pdf_url = (pdf_url or ARXIV_PDF_URL).rstrip("/")
        self.page_size = int(page_size)
        self.listing_max_age_s = listing_max_age_s

    def iter_records(self) -> Iterator[Record]:
        start = 0
        while True:
            params = {"search_query": self.query, "start": start, "max_results": self.page_size}
            url = f"{self.base_url}?{urlencode(params)}"
            body = self.client.get(url, accept=XML_TYPES, max_age_s=self.listing_max_age_s).body
            try:
                feed = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
            except etree.XMLSyntaxError as exc:
                self.client.forget(url)
                raise CrawlError(f"GET {url}: the arXiv feed is not valid XML ({exc}); try again later") from None
            entries = feed.findall("a:entry", _ATOM)
            for entry in entries:
                record = self._record(entry)
                if record is not None:
                    yield record
            total = _int_or_none(feed.findtext("os:totalResults", namespaces=_ATOM))
            start += len(entries)
            if not entries or (total is not None and start >= total):
                return

    def _record(self, entry) -> Record | None:
        abs_url = (entry.findtext("a:id", namespaces=_ATOM) or "").strip()
        arxiv_id = abs_url.rsplit("/abs/", 1)[-1]
        if not _ARXIV_ID.match(arxiv_id):
            log.debug("arXiv entry %r has no usable id; skipped", abs_url)
            return None
        pdf = next((link.get("href") for link in entry.findall("a:link", _ATOM)
                    if link.get("title") == "pdf" or link.get("type") == "application/pdf"), None)
        meta = {
            "id": arxiv_id,
            "title": " ".join((entry.findtext("a:title", namespaces=_ATOM) or "").split()) or None,
            "authors": [" ".join((a.findtext("a:name", namespaces=_ATOM) or "").split())
                        for a in entry.findall("a:author", _ATOM)],
            "year": _int_or_none((entry.findtext("a:published", namespaces=_ATOM) or "")[:4]),
            "doi": entry.findtext("arxiv:doi", namespaces=_ATOM),
            "journal": entry.findtext("arxiv:journal_ref", namespaces=_ATOM) or "arXiv",
            "license": entry.findtext("arxiv:license", namespaces=_ATOM),
        }
        key = "arxiv:" + re.sub(r"v\d+$", "", arxiv_id)
        return Record(key, pdf or f"{self.pdf_url}/{arxiv_id}", meta)

    def fetch_article(self, record: Record) -> dict:
        response = self.client.get(record.url, accept=PDF_TYPES)
        figure_dir = self.client.cache_dir / "pdf-figures" / safe_name(record.key)
        article = _parse_or_forget(response, lambda: _read_article(response.path, figure_dir=figure_dir))
        article["url"] = response.final_url
        meta = record.meta  # the feed knows better than PDF metadata (creation dates, producer titles)
        _fill(article, override=True, doi=meta["doi"], title=meta["title"], journal=meta["journal"],
              year=meta["year"], authors=meta["authors"], license=meta["license"])
        return article


class DoiSource:
    """Articles from a DOI list, through Crossref metadata and the publisher's full text.

    Parameters
    ----------
    client : HttpClient
    dois : iterable of str
        Bare DOIs, ``doi:`` strings or DOI URLs.
    crossref_url, doi_url, elsevier_url : str, optional
        Service roots (defaults ``CROSSREF_URL``, ``DOI_URL``, ``ELSEVIER_URL``).
    elsevier_api_key : str, optional
        Elsevier API key (default: ``$ELSEVIER_API_KEY``; never required). It is only sent to
        ``elsevier_url`` (the client's ``prefix_headers`` is extended for that).
    mailto : str, optional
        Contact e-mail added to Crossref requests.
    """

    name = "doi"

    def __init__(self, client: HttpClient, dois, crossref_url: str | None = None, doi_url: str | None = None,
                 elsevier_url: str | None = None, elsevier_api_key: str | None = None,
                 mailto: str | None = None):
        self.client = client
        self.dois = [d for d in (str(x).strip() for x in dois) if d]
        self.crossref_url = (crossref_url or CROSSREF_URL).rstrip("/")
        self.doi_url = (doi_url or DOI_URL).rstrip("/")
        self.elsevier_url = (elsevier_url or ELSEVIER_URL).rstrip("/")
        self.elsevier_api_key = elsevier_api_key or os.environ.get(ELSEVIER_KEY_ENV) or None
        self.mailto = mailto
        if self.elsevier_api_key:
            client.prefix_headers[self.elsevier_url + "/"] = {"X-ELS-APIKey": self.elsevier_api_key,
                                                              "Accept": "text/xml"}

    def iter_records(self) -> Iterator[Record]:
        for raw in self.dois:
            doi = clean_doi(raw)
            key = f"doi:{doi or raw}"
            yield Record(key, f"{self.crossref_url}/works/{quote(doi or raw, safe='/')}", {"doi": doi})

    def fetch_article(self, record: Record) -> dict:
        doi = record.meta.get("doi")
        if not doi:
            raise CrawlError(f"{record.key[4:]!r} is not a DOI (expected 10.NNNN/...); fix the DOI list")
        url = record.url + (f"?{urlencode({'mailto': self.mailto})}" if self.mailto else "")
        message = self.client.get(url, accept=JSON_TYPES).json().get("message") or {}
        errors, best = [], None
        for candidate, accept in self._candidates(doi, message):
            try:
                response = self.client.get(candidate, accept=accept)
                figure_dir = self.client.cache_dir / "pdf-figures" / safe_name(record.key)
                source = response.path if response.content_type in PDF_TYPES else response.body
                article = _parse_or_forget(response, lambda: _read_article(
                    source, base_url=response.final_url,
                    figure_dir=figure_dir if response.content_type in PDF_TYPES else None))
            except (CrawlError, ArticleError) as exc:
                errors.append(str(exc))
                continue
            article["url"] = response.final_url
            if best is None or len(article["figures"]) > len(best["figures"]):
                best = article
            if article["figures"]:
                break
        if best is None:
            raise CrawlError(f"no readable full text for DOI {doi}: " + " | ".join(errors[-3:]))
        if self.elsevier_url != ELSEVIER_URL:  # readers link Elsevier figures to the public API
            for figure in best["figures"]:
                if str(figure.get("image") or "").startswith(ELSEVIER_URL + "/"):
                    figure["image"] = self.elsevier_url + figure["image"][len(ELSEVIER_URL):]
        _fill_from_crossref(best, doi, message)
        return best

    def _candidates(self, doi: str, message: dict) -> list[tuple[str, tuple]]:
        """Full-text URLs to try, best first, without duplicates."""
        urls: list[tuple[str, tuple]] = []
        if self.elsevier_api_key and doi.startswith("10.1016/"):
            urls.append((f"{self.elsevier_url}/content/article/doi/{quote(doi, safe='/')}?httpAccept=text/xml",
                         XML_TYPES))
        links = [link for link in message.get("link") or [] if isinstance(link, dict) and link.get("URL")]
        for wanted, accept in ((("text/xml", "application/xml"), XML_TYPES), (("text/html",), HTML_TYPES)):
            for link in links:
                if link.get("content-type") in wanted:
                    if link["URL"].startswith(ELSEVIER_URL) and not self.elsevier_api_key:
                        continue  # needs a key
                    urls.append((link["URL"], accept))
        page_types = HTML_TYPES + XML_TYPES + PDF_TYPES
        primary = ((message.get("resource") or {}).get("primary") or {}).get("URL")
        if primary:
            urls.append((primary, page_types))
        urls.append((f"{self.doi_url}/{quote(doi, safe='/')}", page_types))
        seen, unique = set(), []
        for url, accept in urls:
            if url not in seen and urlsplit(url).scheme in ("http", "https"):
                seen.add(url)
                unique.append((url, accept))
        return unique


def clean_doi(text: str) -> str | None:
    """Bare lower-case DOI from ``10.x/y``, ``doi:10.x/y`` or ``https://doi.org/10.x/y``; None if not a DOI."""
    text = re.sub(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)", "", text.strip(), flags=re.IGNORECASE)
    return text.lower() if _DOI.match(text) else None


def read_doi_file(path: str | os.PathLike) -> list[str]:
    """DOIs of a text file, one a line; blank lines and ``#`` comments are ignored.

    Raises
    ------
    CrawlError
        If the file is missing, unreadable or holds no DOI.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CrawlError(f"cannot read DOI file {path} ({exc}); pass a UTF-8 text file, one DOI a line") from None
    dois = [line.split("#", 1)[0].strip() for line in lines]
    dois = [d for d in dois if d]
    if not dois:
        raise CrawlError(f"DOI file {path} holds no DOI; write one DOI (10.NNNN/...) a line")
    return dois


def _int_or_none(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _fill(article: dict, override: bool = False, **values) -> None:
    """Fill the article's empty fields from listing metadata (the document's own values win
    unless ``override``)."""
    for name, value in values.items():
        if value and (override or not article.get(name)):
            article[name] = value
    if article.get("doi"):
        article["doi"] = str(article["doi"]).lower()


def _fill_from_crossref(article: dict, doi: str, message: dict) -> None:
    licenses = [lic.get("URL") for lic in message.get("license") or [] if isinstance(lic, dict)]
    parts = ((message.get("issued") or {}).get("date-parts") or [[None]])[0]
    authors = [" ".join(filter(None, (a.get("given"), a.get("family")))) for a in message.get("author") or []
               if isinstance(a, dict)]
    _fill(article, doi=doi, title=(message.get("title") or [None])[0],
          journal=(message.get("container-title") or [None])[0],
          year=_int_or_none(parts[0] if parts else None), authors=[a for a in authors if a],
          license=next((lic for lic in licenses if lic), None))


# -- crawl loop -----------------------------------------------------------------------------------
@dataclass
class CrawlReport:
    """What one crawl did.

    Attributes
    ----------
    listed : int
        Articles the source listed that were looked at (at most ``max_articles`` new ones).
    skipped : int
        Already stored with nothing left to retry (no request made).
    stored, failed : int
        New articles stored / recorded as failed in this run.
    retried : int
        Articles stored by an earlier run whose missing figures were tried again.
    figures : int
        Figure images added to the store in this run (downloaded or found in the cache): every
        figure of a new article, the recovered ones of a retried article.
    figures_failed : int
        Figure images that could not be downloaded for the articles stored or retried in this run
        (the figures of an article that failed as a whole are in its ``failures`` reason instead).
    failures : list of dict
        ``{"key", "url", "reason"}`` of this run's failures.
    figure_failures : list of dict
        ``{"key", "figure_id", "url", "kind", "reason", "permanent", "attempts", "will_retry"}`` of
        this run's missing figures (``attempts`` and ``will_retry`` as far as the store tells).
    """

    listed: int = 0
    skipped: int = 0
    stored: int = 0
    failed: int = 0
    retried: int = 0
    figures: int = 0
    figures_failed: int = 0
    failures: list = field(default_factory=list)
    figure_failures: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"listed": self.listed, "skipped": self.skipped, "stored": self.stored, "failed": self.failed,
                "retried": self.retried, "figures": self.figures, "figures_failed": self.figures_failed,
                "failures": list(self.failures), "figure_failures": list(self.figure_failures)}


def figure_key(figure: dict, index: int) -> str:
    """The key of a figure inside its article: its id, else its label, else ``figure-N``.

    The crawler's figure failures and the database's ``figures.figure_key`` both use it, so a
    failure and the stored figure agree.

    Parameters
    ----------
    figure : dict
        ``Figure.to_dict()``: ``id`` and ``label`` may be missing, None or empty.
    index : int
        0-based position of the figure in its article (``figure-N`` is 1-based).
    """
    return str(figure.get("id") or figure.get("label") or f"figure-{index + 1}")


def download_figures(article: dict, client: HttpClient, all_figures: bool = False,
                     only=None) -> tuple[dict, list[dict]]:
    """Keep the EM figures (all with ``all_figures``) and download their images into the cache.

    A figure whose image cannot be downloaded is left out and reported; the others are kept.

    Parameters
    ----------
    article : dict
        ``Article.to_dict()`` with figure ``image`` URLs (or local paths for PDF crops).
    client : HttpClient
    all_figures : bool
        Keep every figure, not only those whose caption :func:`miners.articles.is_em_caption` accepts.
    only : set of str, optional
        Try only the figures with these ids (retrying missing figures; captions not checked).

    Returns
    -------
    article : dict
        A copy of ``article`` whose figures are those downloaded, each with ``id`` =
        :func:`figure_key`, ``image`` = local file and ``image_url`` = source URL (None for
        local crops).
    failures : list of dict
        ``{"figure_id", "url", "kind", "reason", "permanent"}`` per figure that could not be
        downloaded: ``kind`` and ``permanent`` are those of the :class:`~idx.errors.CrawlError`
        (``"error"`` and False when it names none).
    """
    figures, failures = [], []
    for index, figure in enumerate(article.get("figures") or []):
        figure_id = figure_key(figure, index)
        if only is not None:
            if figure_id not in only:
                continue
        elif not all_figures and not _is_em_caption(figure.get("caption")):
            continue
        image = figure.get("image")
        if not image:
            log.info("figure %s of %s names no image; dropped", figure_id, article.get("doi"))
            continue
        url = str(image) if urlsplit(str(image)).scheme in ("http", "https") else None
        try:
            if url is not None:
                local = str(client.download_file(url))
            elif Path(image).is_file():
                local = str(Path(image).resolve())
            else:
                raise CrawlError(f"figure {figure_id}: image {image!r} is neither a URL nor a file; "
                                 "the article reader lost it, re-run the crawl", kind="missing file",
                                 permanent=True)
        except CrawlError as exc:
            kind, permanent = exc.kind or "error", exc.permanent
            log.warning("figure %s of %s not downloaded (%s): %s", figure_id, article.get("doi"), kind, exc)
            failures.append({"figure_id": figure_id, "url": url or str(image), "kind": kind,
                             "reason": str(exc), "permanent": permanent})
            continue
        figures.append({**figure, "id": figure_id, "image": local, "image_url": url})
    return {**article, "figures": figures}, failures


def _figures_to_retry(store, key: str, retry_failed: bool) -> list[dict]:
    """Recorded figure failures of a stored article that this run should try again, and its
    stored figures whose image file has gone (when the store can tell)."""
    list_failures = getattr(store, "list_figure_failures", None)
    if list_failures is None:
        return []
    pending = [f for f in list_failures(key)
               if retry_failed or (not f["permanent"] and int(f["attempts"]) < FIGURE_MAX_ATTEMPTS)]
    list_missing = getattr(store, "list_missing_images", None)
    if list_missing is not None:  # stored, but the downloaded file is gone: fetch it again
        known = {f["figure_id"] for f in pending}
        pending += [f for f in list_missing(key) if f["figure_id"] not in known]
    return pending


def _record_figure_failures(store, key: str, failures: list[dict], report: CrawlReport) -> None:
    """Pass figure failures to the store (when it keeps them) and to the report."""
    if not failures:
        return
    record = getattr(store, "record_figure_failure", None)
    list_failures = getattr(store, "list_figure_failures", None)
    before = {f["figure_id"]: int(f["attempts"]) for f in list_failures(key)} if list_failures else {}
    for failure in failures:
        if record is not None:
            record(key, failure)
        attempts = before.get(failure["figure_id"], 0) + 1
        report.figure_failures.append({
            "key": key, **failure, "attempts": attempts,
            "will_retry": record is not None and not failure["permanent"] and attempts < FIGURE_MAX_ATTEMPTS})
    report.figures_failed += len(failures)


def _none_downloaded(failures: list[dict]) -> CrawlError:
    kinds = "; ".join(f"{f['figure_id']}: {f['kind']}" for f in failures[:5])
    return CrawlError(f"none of the {len(failures)} figure images could be downloaded ({kinds}); first error: "
                      f"{failures[0]['reason']}")


def _retry_figures(source, store, record: Record, pending: list[dict], report: CrawlReport) -> None:
    """Re-read a stored article (from the cache) and try its missing figures again."""
    wanted = {f["figure_id"] for f in pending}
    try:
        article = source.fetch_article(record)
    except IdxError as exc:
        reason = f"cannot re-read the article to retry {len(wanted)} missing figures: {exc}"
        log.warning("%s: %s", record.key, reason)
        report.failures.append({"key": record.key, "url": record.url, "reason": reason})
        return
    article, failures = download_figures(article, source.client, only=wanted)
    found = {f["id"] for f in article["figures"]} | {f["figure_id"] for f in failures}
    failures += [{**f, "kind": "gone", "permanent": True,
                  "reason": f"figure {f['figure_id']} is no longer in the article {record.url}"}
                 for f in pending if f["figure_id"] not in found]
    _record_figure_failures(store, record.key, failures, report)
    if article["figures"]:
        store.add_article(record.key, article, source.name)
    report.retried += 1
    report.figures += len(article["figures"])
    log.info("%s: %d of %d missing figures recovered", record.key, len(article["figures"]), len(wanted))


def crawl(source, store: Store, *, max_articles: int | None = None, all_figures: bool = False,
          retry_failed: bool = False, progress: bool = True) -> CrawlReport:
    """Fetch the articles a source lists into ``store``, one article at a time.

    Parameters
    ----------
    source : EuropePMCSource, ArxivSource or DoiSource
        Anything with ``name``, ``client``, ``iter_records()`` and ``fetch_article(record)``.
    store : Store
        See the module docstring; already stored keys are skipped unless figures of theirs are
        to be retried.
    max_articles : int, optional
        Stop after this many new articles were attempted (stored or failed); None = all listed.
        Stored articles whose missing figures are retried do not count.
    all_figures : bool
        Keep every figure, not only electron-microscopy ones.
    retry_failed : bool
        Retry every missing figure of the stored articles, permanent failures and those already
        tried ``FIGURE_MAX_ATTEMPTS`` times included.
    progress : bool
        Show a tqdm bar (articles, with a figure count) on stderr.

    Returns
    -------
    CrawlReport

    Raises
    ------
    CrawlError
        If the listing itself (search API) fails; articles stored so far are kept. A failing
        article does not raise: it is passed to ``store.record_failure`` and the crawl goes on;
        a failing figure is passed to ``store.record_figure_failure`` and its article is stored
        with the other figures.
    """
    from tqdm import tqdm

    if max_articles is not None and max_articles < 1:
        raise CrawlError(f"max_articles must be at least 1, got {max_articles}")
    report, seen = CrawlReport(), set()
    bar = tqdm(total=max_articles, unit="article", desc=f"crawl {source.name}", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for record in source.iter_records():
            if record.key in seen:
                continue
            seen.add(record.key)
            report.listed += 1
            if store.has_article(record.key):
                pending = _figures_to_retry(store, record.key, retry_failed)
                if pending:
                    _retry_figures(source, store, record, pending, report)
                else:
                    report.skipped += 1
                continue
            try:
                article, failures = download_figures(source.fetch_article(record), source.client, all_figures)
                if failures and not article["figures"]:
                    raise _none_downloaded(failures)
            except IdxError as exc:
                reason = str(exc)
                log.warning("%s failed: %s", record.key, reason)
                store.record_failure(record.key, record.url, reason, doi=record.meta.get("doi"))
                report.failed += 1
                report.failures.append({"key": record.key, "url": record.url, "reason": reason})
            else:
                # failures first: a crash in between leaves the article unstored, so it is redone
                _record_figure_failures(store, record.key, failures, report)
                store.add_article(record.key, article, source.name)
                report.stored += 1
                report.figures += len(article["figures"])
            bar.update(1)
            bar.set_postfix(figures=report.figures, failed=report.failed, refresh=False)
            if max_articles is not None and report.stored + report.failed >= max_articles:
                break  # before asking the source for more (no needless search page)
    finally:
        bar.close()
    log.info("crawl %s: %s", source.name, {k: v for k, v in report.to_dict().items()
                                            if k not in ("failures", "figure_failures")})
    return report
