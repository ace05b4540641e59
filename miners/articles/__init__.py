"""Read articles (publisher HTML, full-text XML, PDF) into an :class:`Article` with its figures.

>>> from miners.articles import read
>>> article = read("srep01497.html")
>>> [f.label for f in article.figures]

The format is detected from the content, never from the file name.
"""
from __future__ import annotations

import codecs
import logging
import os
import re
from pathlib import Path

from idx.errors import ArticleError
from miners.articles.classify import EmScore, is_em_caption, score_em_caption
from miners.articles.model import Article, Figure, normalise_text

log = logging.getLogger(__name__)

__all__ = ["Article", "Figure", "ArticleError", "EmScore", "read", "detect_format", "normalise_text",
           "is_em_caption", "score_em_caption"]

MAX_BYTES = 200 * 1024 * 1024
# First element start tag (skips <?xml ...?>, <!DOCTYPE ...>, comments).
_ROOT = re.compile(r"<([A-Za-z_][\w:.-]*)[\s>/]")


def _load(source) -> tuple[bytes, str, Path | None]:
    """Bytes, display name and path (None for bytes) of ``source``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>", None
    if not isinstance(source, (str, os.PathLike)):
        raise ArticleError(f"read() takes a path or bytes, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ArticleError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ArticleError(f"{path}: is a folder; pass one HTML, XML or PDF file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ArticleError(f"{path}: {size / 1e6:.0f} MB is too large for an article; check the file")
    return path.read_bytes(), str(path), path


def detect_format(data: bytes) -> str:
    """Which reader fits ``data``, judged from the content.

    Returns
    -------
    str
        ``"pdf"``, ``"jats"``, ``"elsevier-xml"``, ``"springer-xml"`` or ``"html"``.

    Raises
    ------
    ArticleError
        For empty, binary or unrecognised content.
    """
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise ArticleError("the document is empty (0 bytes or only whitespace); re-download it")
    if head.startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return "pdf"
    sample = data[:65536]
    controls = sum(sample.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13))
    utf16 = sample.startswith((b"\xff\xfe", b"\xfe\xff"))
    if not utf16 and (b"\x00" in sample or controls > len(sample) // 20):
        raise ArticleError("the document is binary, not HTML, XML or PDF; check what was downloaded")
    text = _decode_head(sample)
    match = _ROOT.search(text)
    if not match:
        raise ArticleError("the document is not HTML, XML or PDF (no markup found); check what was downloaded")
    root = match.group(1).lower().rsplit(":", 1)[-1]
    lower = text.lower()
    if root in {"html", "head", "body", "meta", "div", "title"} or "<html" in lower[:4096]:
        return "html"
    if root == "full-text-retrieval-response":
        return "elsevier-xml"
    if root == "response" and "springer" in lower[:8192] and "<article" in lower:
        return "springer-xml"
    if root in {"article", "pmc-articleset", "response", "records", "oai-pmh"} and (
        "<article-meta" in lower or "<front" in lower
    ):
        return "jats"
    raise ArticleError(
        f"XML document with root <{match.group(1)}> is neither JATS/NLM, Elsevier full-text nor "
        "Springer XML; download the JATS or publisher full text"
    )


def _decode_head(data: bytes) -> str:
    """The first bytes of a document as text, to find its root element: UTF-16 only with its
    byte-order mark (any even number of bytes "decodes" as UTF-16), UTF-8 even when the sample
    ends inside a character, else Latin-1 (every byte is a character; markup is ASCII)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # a multi-byte character cut by the sample's end
            return data[:exc.start].decode("utf-8", errors="replace")
    return data.decode("latin-1")


def read(
    source: str | os.PathLike | bytes,
    base_url: str | None = None,
    figure_dir: str | os.PathLike | None = None,
    max_pages: int | None = None,
) -> Article:
    """Read an article and its figures from publisher HTML, full-text XML or a PDF.

    Parameters
    ----------
    source : str, Path or bytes
        File path or the document's bytes. The format is detected from the content.
    base_url : str, optional
        URL the document was downloaded from; relative figure links are resolved against it
        (else ``<base href>``, the canonical link, or the publisher's URL derived from the DOI).
    figure_dir : str or Path, optional
        PDFs only: folder for the cropped figure PNGs (default: ``<pdf name>_figures`` beside a
        PDF file, a temporary folder for bytes).
    max_pages : int, optional
        PDFs only: scan at most this many pages (default ``miners.articles.pdf.MAX_PAGES``).

    Returns
    -------
    Article
        With every figure found, in document order; zero figures is not an error.

    Raises
    ------
    ArticleError
        For empty, binary, malformed, encrypted or truncated documents.
    """
    data, name, path = _load(source)
    kind = detect_format(data)
    log.debug("%s: detected %s", name, kind)
    if kind == "pdf":
        from miners.articles import pdf

        return pdf.read_pdf(data, name=name, path=path, figure_dir=figure_dir, max_pages=max_pages)
    if kind == "html":
        from miners.articles import html

        return html.read_html(data, base_url=base_url, name=name)
    from miners.articles import xml

    tree = xml.parse_xml(data, name)
    if kind == "elsevier-xml":
        return xml.read_elsevier_xml(tree, base_url=base_url)
    if kind == "springer-xml":
        return xml.read_springer_xml(tree, base_url=base_url)
    return xml.read_jats(tree, base_url=base_url)
