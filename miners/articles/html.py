"""Reader for publisher HTML: Nature / Springer Nature, RSC, ACS, Elsevier ScienceDirect, Wiley.

Metadata comes from the ``citation_*`` / Dublin Core / PRISM ``<meta>`` tags every publisher
writes. Figures are found with publisher-specific selectors first, then generically (``<figure>``
elements, ``div.figure``). Each figure's image is the largest rendition the page links to; the
publisher URL patterns used to reach it are named in :data:`HIRES_REWRITES`.
"""
from __future__ import annotations

import codecs
import logging
import re
import warnings
from urllib.parse import urljoin, urlparse

from bs4 import BeautifulSoup, NavigableString, Tag, XMLParsedAsHTMLWarning

from idx.errors import ArticleError
from miners.articles.model import Article, Figure, clean_doi, normalise_text, parse_year, superscript

log = logging.getLogger(__name__)

BLOCK_TAGS = {
    "p", "div", "br", "li", "ul", "ol", "td", "th", "tr", "table", "figcaption", "section",
    "h1", "h2", "h3", "h4", "h5", "h6", "dd", "dt", "dl", "blockquote",
}
FOOTNOTE_MARK = re.compile(r"[a-z*\u2020\u2021\u00a7\u00b6#]")  # a, *, †, ‡, §, ¶, #
SKIP_TAGS = {"script", "style", "noscript", "button", "svg", "math-renderer"}
# Figure label at the start of a caption: "Figure 1", "Fig. 2", "Scheme 3", "Extended Data Fig. 4".
LABEL = re.compile(
    r"^\s*((?:Extended Data |Supplementary )?(?:Fig(?:ure)?s?\.?|Scheme|Chart|Plate)\s*"
    r"S?\d+[A-Za-z]?)\s*[.:|\u2014\u2013-]?\s*",
    re.IGNORECASE,
)
# (pattern, replacement): thumbnail URL -> the publisher's largest rendition.
HIRES_REWRITES = [
    (re.compile(r"(media\.springernature\.com/)(?:lw|m|w|lh)\d+(?:h\d+)?/"), r"\1full/"),  # Nature, Springer
    (re.compile(r"/images/(?:small|medium)/"), "/images/large/"),  # ACS
    (re.compile(r"(ars\.els-cdn\.com/content/image/[^?#]*-gr\d+)(?:_lrg)?\.(jpg|gif|png)"), r"\1_lrg.jpg"),  # Elsevier
]
DOI_BASES = {
    "10.1038": "https://www.nature.com/articles/{suffix}",
    "10.1007": "https://link.springer.com/article/{doi}",
    "10.1186": "https://link.springer.com/article/{doi}",
    "10.1039": "https://pubs.rsc.org/en/content/articlehtml/{doi}",
    "10.1021": "https://pubs.acs.org/doi/{doi}",
    "10.1016": "https://www.sciencedirect.com/science/article/",
    "10.1002": "https://onlinelibrary.wiley.com/doi/full/{doi}",
}
IMAGE_EXT = re.compile(r"\.(?:jpe?g|png|gif|tiff?|webp)(?:[?#].*)?$", re.IGNORECASE)
LARGE_ATTRS = ("data-lg-src", "data-large-src", "data-hi-res-src", "data-full-src", "data-zoom-src",
               "data-original", "data-src")


def html_text(node) -> str:
    """Visible text of an element: block elements separated by a space, inline markup joined tight."""
    if node is None:
        return ""
    parts: list[str] = []

    def walk(element):
        for child in element.children:
            if isinstance(child, NavigableString):
                if type(child).__name__ in {"Comment", "ProcessingInstruction", "Doctype", "CData"}:
                    continue
                parts.append(str(child))
            elif isinstance(child, Tag):
                if child.name in SKIP_TAGS:
                    continue
                if child.name == "sup":
                    mark, before = child.get_text(), "".join(parts[-3:])
                    if power := superscript(mark, before):
                        parts.append(power)  # 10<sup>4</sup> s: "10^4 s", not "104 s"
                        continue
                    if FOOTNOTE_MARK.fullmatch(mark.strip()) and (not before or before[-1].isspace()):
                        continue  # a footnote mark opening a note: "<sup>a</sup>Conditions" read "aConditions"
                block = child.name in BLOCK_TAGS
                if block:
                    parts.append(" ")
                walk(child)
                if block:
                    parts.append(" ")

    if isinstance(node, NavigableString):
        return normalise_text(str(node))
    walk(node)
    return normalise_text("".join(parts))


def split_label(text: str) -> tuple[str, str]:
    """Split ``"Fig. 2 (a) SEM ..."`` into ``("Fig. 2", "(a) SEM ...")``; no label -> ``("", text)``."""
    match = LABEL.match(text)
    if not match:
        return "", text
    return normalise_text(match.group(1)), text[match.end():].strip()


def decode_html(data: bytes) -> str:
    """Decode HTML bytes: a byte-order mark, else the declared charset, else UTF-8, else cp1252
    (never fails)."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    head = data[:4096].decode("ascii", errors="replace")
    match = re.search(r"""charset\s*=\s*["']?([\w-]+)""", head, re.IGNORECASE)
    candidates = ([match.group(1)] if match else []) + ["utf-8", "cp1252"]
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("utf-8", errors="replace")


def _meta(soup) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for tag in soup.find_all("meta"):
        key = tag.get("name") or tag.get("property")
        value = tag.get("content")
        if key and value and value.strip():
            found.setdefault(key.lower(), []).append(normalise_text(value))
    return found


def _first(meta, *keys) -> str | None:
    for key in keys:
        if meta.get(key):
            return meta[key][0]
    return None


def publisher_of(doi: str | None, soup, meta) -> str:
    """``"nature"``, ``"rsc"``, ``"acs"``, ``"elsevier"``, ``"wiley"`` or ``"generic"``."""
    prefix = (doi or "").split("/", 1)[0]
    by_prefix = {"10.1038": "nature", "10.1007": "nature", "10.1186": "nature", "10.1039": "rsc",
                 "10.1021": "acs", "10.1016": "elsevier", "10.1002": "wiley", "10.1111": "wiley"}
    if prefix in by_prefix:
        return by_prefix[prefix]
    publisher = " ".join(meta.get("dc.publisher", []) + meta.get("citation_publisher", [])).lower()
    for needle, name in (("springer", "nature"), ("nature", "nature"), ("royal society of chemistry", "rsc"),
                         ("american chemical society", "acs"), ("elsevier", "elsevier"), ("wiley", "wiley")):
        if needle in publisher:
            return name
    if soup.select_one("div.image_table"):
        return "rsc"
    return "generic"


def find_base_url(soup, meta, doi: str | None, base_url: str | None) -> str | None:
    """Base for relative links: argument, ``<base href>``, canonical link, ``og:url``, DOI-derived."""
    if base_url:
        return base_url
    base = soup.find("base", href=True)
    if base and base["href"].startswith("http"):
        return base["href"]
    canonical = soup.find("link", rel="canonical", href=True)
    if canonical and canonical["href"].startswith("http"):
        return canonical["href"]
    og_url = _first(meta, "og:url", "citation_fulltext_html_url", "citation_abstract_html_url")
    if og_url and og_url.startswith("http"):
        return og_url
    if doi:
        prefix, _, suffix = doi.partition("/")
        if prefix in DOI_BASES:
            return DOI_BASES[prefix].format(doi=doi, suffix=suffix)
    return None


def absolute_url(url: str | None, base: str | None) -> str | None:
    """Resolve ``url`` against ``base``; protocol-relative links get ``https:``."""
    if not url:
        return None
    url = url.strip()
    if url.startswith("//"):
        return "https:" + url
    if urlparse(url).scheme in {"http", "https"}:
        return url
    if url.startswith(("data:", "javascript:", "#")):
        return None
    if base:
        return urljoin(base, url)
    log.debug("relative image link %s and no base URL; left empty", url)
    return None


def largest_rendition(url: str | None) -> str | None:
    """Apply the publisher rewrites in :data:`HIRES_REWRITES` (thumbnail -> full size)."""
    if not url:
        return url
    for pattern, replacement in HIRES_REWRITES:
        url = pattern.sub(replacement, url)
    return url


def _srcset_largest(srcset: str) -> str | None:
    best, best_size = None, -1.0
    for item in srcset.split(","):
        bits = item.strip().split()
        if not bits:
            continue
        size = 0.0
        if len(bits) > 1 and bits[1][:-1].replace(".", "", 1).isdigit():
            size = float(bits[1][:-1])
        if size > best_size:
            best, best_size = bits[0], size
    return best


def figure_image(container: Tag, base: str | None) -> str | None:
    """Absolute URL of the largest image a figure container links to."""
    links = []
    for a in container.find_all("a", href=True):
        href = a["href"]
        text = html_text(a).lower()
        if IMAGE_EXT.search(href.split("?")[0] + ("" if "?" not in href else "")) or "high-res" in text:
            score = 2 if re.search(r"hi-?res|_lrg|large|full", href + " " + text, re.IGNORECASE) else 1
            links.append((score, href))
    if links:
        links.sort(key=lambda item: -item[0])
        return absolute_url(largest_rendition(links[0][1]), base)
    img = container.find("img")
    if img is None:
        source = container.find("source", srcset=True)
        return absolute_url(largest_rendition(_srcset_largest(source["srcset"])), base) if source else None
    for attr in LARGE_ATTRS:
        if img.get(attr):
            return absolute_url(largest_rendition(img[attr]), base)
    if img.get("srcset"):
        return absolute_url(largest_rendition(_srcset_largest(img["srcset"])), base)
    return absolute_url(largest_rendition(img.get("src")), base)


def _nature_figures(soup, base):
    figures = []
    for container in soup.find_all("figure"):
        head = (container.select_one(".c-article-section__figure-caption")
                or container.select_one("figcaption b") or container.select_one("figcaption"))
        description = container.select_one(".c-article-section__figure-description")
        if head is None:
            continue
        label, title = split_label(html_text(head))
        caption = normalise_text(" ".join(t for t in (title, html_text(description)) if t))
        fig_id = head.get("id") or container.get("id") or ""
        figures.append(Figure(fig_id, label, caption, figure_image(container, base)))
    return figures


def _rsc_figures(soup, base):
    figures = []
    for container in soup.select("div.image_table"):
        title_cell = container.select_one("td.image_title") or container
        bold = title_cell.find("b")
        label = html_text(bold) if bold else ""
        caption_node = title_cell.select_one(".graphic_title") or title_cell
        caption = html_text(caption_node)
        if not bold:
            label, caption = split_label(caption)
        holder = container.select_one("td.imgHolder")
        fig_id = (holder.get("id", "").removeprefix("img") if holder else "") or container.get("id", "")
        if not caption and not container.find("img"):
            continue
        figures.append(Figure(fig_id, label.rstrip(". "), caption, figure_image(container, base)))
    return figures


def _acs_figures(soup, base):
    figures = []
    for container in soup.select("div.figure, figure.article__inlineFigure"):
        caption_node = container.select_one(".caption, figcaption")
        if caption_node is None:
            continue  # abstract graphic
        label, caption = split_label(html_text(caption_node))
        notes = [html_text(p) for p in container.find_all("p", recursive=False)]
        notes = [n for n in notes if n]
        if notes:
            if re.fullmatch(r"[a-z*\u2020\u2021]?", caption):
                caption = ""
            caption = normalise_text(" ".join([caption] + notes))
        fig_id = container.get("id", "")
        figures.append(Figure(fig_id, label, caption, figure_image(container, base)))
    return figures


def _generic_figures(soup, base):
    figures = []
    seen = set()
    for container in soup.select("figure, div.figure, div.fig"):
        if any(id(parent) in seen for parent in container.parents):
            continue  # nested figure inside an already-read one
        caption_node = container.select_one("figcaption, .caption, .captions, .figure__caption")
        if caption_node is None:
            continue
        seen.add(id(container))
        label_node = caption_node.select_one(".label, .figure__title, .captions .label, b, strong")
        text = html_text(caption_node)
        label, caption = split_label(text)
        if not label and label_node is not None:
            label = html_text(label_node).rstrip(".: ")
            if text.startswith(html_text(label_node)):
                caption = text[len(html_text(label_node)):].lstrip(".: |")
        figures.append(Figure(container.get("id", ""), label, normalise_text(caption),
                              figure_image(container, base)))
    return figures


READERS = {"nature": _nature_figures, "rsc": _rsc_figures, "acs": _acs_figures}


def read_html(data: bytes, base_url: str | None = None, name: str = "<bytes>") -> Article:
    """Article from publisher HTML.

    Parameters
    ----------
    data : bytes
        The HTML page (any declared encoding; undecodable bytes are replaced).
    base_url : str, optional
        URL the page came from; relative figure links are resolved against it.
    name : str
        File name for error messages.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        try:
            text = decode_html(data)
            soup = BeautifulSoup(text, "lxml")
        except Exception as exc:  # lxml raises many parser error types
            raise ArticleError(f"{name}: cannot parse HTML ({exc}); re-download the page") from None
    tail = text[-2048:].lower()
    if "</html" not in tail and "</body" not in tail:
        # HTML may leave both out, publishers' pages never do: most likely a download cut short
        log.warning("%s: the page ends without </body> or </html>; it may be cut short (a partial "
                    "download), so figures may be missing: download it again", name)
    meta = _meta(soup)
    doi = clean_doi(_first(meta, "citation_doi", "dc.identifier", "prism.doi", "doi", "dc.identifier.doi"))
    title = _first(meta, "citation_title", "dc.title", "og:title")
    page_title = html_text(soup.title) if soup.title else ""
    title = title or page_title or None
    heading = re.sub(r"[\s\u2020\u2021\u00a7\u00b6*]+$", "", html_text(soup.find("h1")))  # html_text(None) is ""
    if title and heading and heading != title and re.sub(r"\s", "", heading) == re.sub(r"\s", "", title):
        title = heading  # the page's own heading spaces formulas right: "Ni12P5", not "Ni 12 P 5"
    journal = _first(meta, "citation_journal_title", "prism.publicationname", "citation_journal_abbrev")
    match = re.search(r" - ([^-]+?) \((?:ACS|Wiley) [^)]*\)$", page_title)
    if not journal and match:  # ACS: "<title> - Journal of Medicinal Chemistry (ACS Publications)"
        journal = match.group(1).strip()
    year = parse_year(_first(meta, "citation_publication_date", "citation_date", "citation_online_date",
                             "prism.publicationdate", "dc.date", "citation_cover_date"))
    authors = meta.get("citation_author") or meta.get("dc.creator") or []
    authors = [_author_name(a) for a in authors]
    license_ = None
    link = soup.find(["a", "link"], rel="license", href=True)
    if link is None:
        link = soup.find("a", href=re.compile(r"creativecommons\.org/licen[cs]es/"))
    if link is not None:
        license_ = link["href"]
    else:
        license_ = _first(meta, "dc.rights", "citation_license", "prism.copyright")
    publisher = publisher_of(doi, soup, meta)
    base = find_base_url(soup, meta, doi, base_url)
    reader = READERS.get(publisher, _generic_figures)
    figures = reader(soup, base)
    if not figures and reader is not _generic_figures:
        figures = _generic_figures(soup, base)
    figures = _drop_repeats(figures)
    for number, figure in enumerate(figures, start=1):
        figure.id = figure.id or f"fig{number}"
    log.debug("%s: %s HTML, %d figures, base %s", name, publisher, len(figures), base)
    if not figures and not doi and not any(key.startswith(("citation_", "dc.", "prism.")) for key in meta):
        log.warning("%s: no figure and no article metadata (DOI, citation tags): is it a landing, "
                    "login or cookie page rather than the article? Download the full text", name)
    return Article(doi=doi, title=title, journal=journal, year=year, authors=authors,
                   license=license_, figures=figures,
                   format="html" if publisher == "generic" else f"html-{publisher}")


_THUMBNAIL = re.compile(r"thumb|small|preview|_lw\d|/lw\d", re.IGNORECASE)


def _drop_repeats(figures: list) -> list:
    """One figure per label and caption: pages that show a figure twice (a thumbnail in the text,
    the full size in a viewer) gave it twice; the first stays, with the image that is not a
    thumbnail where one of them is."""
    kept: dict[tuple, Figure] = {}
    for figure in figures:
        key = (figure.label, figure.caption)
        if not figure.caption or key not in kept:
            kept[key if figure.caption else (id(figure),)] = figure
        elif figure.image and (not kept[key].image or _THUMBNAIL.search(kept[key].image)) \
                and not _THUMBNAIL.search(figure.image):
            kept[key].image = figure.image
    return list(kept.values())


def _author_name(name: str) -> str:
    """``"Surname, Given"`` -> ``"Given Surname"``; other forms unchanged."""
    if name.count(",") == 1:
        surname, given = (part.strip() for part in name.split(","))
        return normalise_text(f"{given} {surname}")
    return normalise_text(name)
