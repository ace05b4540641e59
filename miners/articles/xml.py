"""Readers for full-text XML: JATS/NLM (PMC, Europe PMC, bioRxiv), Elsevier full-text API, Springer.

Each reader takes a parsed lxml tree and returns an :class:`~miners.articles.model.Article`.
Namespaces differ between sources, so elements are matched on their local name.
"""
from __future__ import annotations

import html.entities
import itertools
import logging
import re
from urllib.parse import quote, urljoin

from lxml import etree

from idx.errors import ArticleError
from miners.articles.model import Article, Figure, clean_doi, normalise_text, parse_year, superscript

log = logging.getLogger(__name__)

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
EUROPEPMC_BIN = "https://europepmc.org/articles/PMC{pmcid}/bin/{name}"
SPRINGER_MEDIA = "https://media.springernature.com/full/springer-static/image/art%3A{doi}/{href}"
ELSEVIER_CDN = "https://ars.els-cdn.com/content/image/{eid}-{locator}_lrg.jpg"  # eid = 1-s2.0-{PII}
# Block-level children of a caption: their texts are joined with a space, inline ones without.
BLOCK_TAGS = {"title", "p", "list-item", "caption", "simple-para", "para", "list"}
SKIP_TAGS = {"object-id", "graphic", "alternatives"}  # inside a caption: not text
_API_HOST = re.compile(r"webservices|eutils|/api/|/rest/", re.IGNORECASE)


def parse_xml(data: bytes, name: str) -> etree._ElementTree:
    """Parse XML bytes without network access or entity expansion.

    Raises
    ------
    ArticleError
        If the document is not well-formed XML.
    """
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, recover=False)
    try:
        return etree.fromstring(_html_entities_as_numbers(data), parser).getroottree()
    except etree.XMLSyntaxError as exc:
        raise ArticleError(f"{name}: malformed XML ({exc}); re-download the full text") from None


_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES = {b"amp", b"lt", b"gt", b"quot", b"apos"}


def _html_entities_as_numbers(data: bytes) -> bytes:
    """``&nbsp;``, ``&ldquo;``, ``&micro;`` ... as character references: full texts use HTML's
    named entities, which XML without their DTD (never fetched) leaves out, gluing the words
    around them ("HRTEM&nbsp;of" read "HRTEMof")."""
    def number(match):
        name = match.group(1)
        code = html.entities.name2codepoint.get(name.decode("ascii"))
        return match.group(0) if code is None or name in _XML_ENTITIES else b"&#%d;" % code

    return _NAMED_ENTITY.sub(number, data)


def local(element) -> str:
    """Local name of an element (namespace dropped); ``""`` for comments and PIs."""
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def iter_local(root, *names):
    """Every descendant of ``root`` whose local name is one of ``names``, in document order."""
    wanted = set(names)
    for element in root.iter():
        if local(element) in wanted:
            yield element


def find_local(root, *path):
    """First element reached by following local names ``path`` (each step searches descendants)."""
    current = root
    for name in path:
        current = next(iter_local(current, name), None)
        if current is None:
            return None
    return current


def text_of(element) -> str:
    """Text of an element: block children joined by a space, inline markup joined tight."""
    if element is None:
        return ""
    parts: list[str] = []

    def walk(node):
        name = local(node)
        block = name in BLOCK_TAGS
        if block:
            parts.append(" ")
        if name and node.text:
            parts.append(node.text)
        for child in node:
            if local(child) == "hsp":  # Elsevier's thin space: "0.5<ce:hsp sp="0.25"/>nm"
                parts.append(" ")
            elif local(child) == "sup" and (power := superscript("".join(child.itertext()), "".join(parts[-3:]))):
                parts.append(power)  # 10<sup>4</sup> s: "10^4 s", not "104 s"
            elif local(child) not in SKIP_TAGS:
                walk(child)
            if child.tail:
                parts.append(child.tail)
        if block:
            parts.append(" ")

    walk(element)
    return normalise_text("".join(parts))


def graphic_url(href: str | None, base_url: str | None, pmcid: str | None) -> str | None:
    """Absolute URL of a JATS ``<graphic xlink:href>``.

    Absolute hrefs are kept; relative ones are resolved against ``base_url`` (unless it is an API
    endpoint), else against the standard Europe PMC figure folder of the article's PMCID. PMC
    serves figures as JPEG, so a missing or TIFF/EPS extension becomes ``.jpg``.
    """
    if not href:
        return None
    href = href.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*://", href, re.IGNORECASE):
        return href
    stem, dot, ext = href.rpartition(".")
    if not dot or ext.lower() not in {"jpg", "jpeg", "png", "gif", "tif", "tiff", "eps"}:
        name = href + ".jpg"
    elif ext.lower() in {"tif", "tiff", "eps"}:
        name = stem + ".jpg"
    else:
        name = href
    if base_url and not _API_HOST.search(base_url):
        return urljoin(base_url, name)
    if pmcid:
        return EUROPEPMC_BIN.format(pmcid=pmcid, name=name)
    log.debug("figure %s: relative link and no base URL or PMCID; image left empty", href)
    return None


def read_jats(tree, base_url: str | None = None) -> Article:
    """Article from a JATS/NLM XML document (PMC ``.nxml``, Europe PMC ``fullTextXML``, bioRxiv).

    A Springer Nature article's own JATS (``<graphic xlink:href="MediaObjects/...">``, what the
    Springer API serves, here without the API's ``<response>`` wrapper) gets the figure URLs of
    :func:`read_springer_xml`, built from the href and the DOI; PMC's copies of such articles
    name their figures without ``MediaObjects/`` and keep the Europe PMC links.

    Parameters
    ----------
    tree : lxml ElementTree
    base_url : str, optional
        URL the document came from; relative figure links are resolved against it.
    """
    article = _jats_article(tree.getroot())
    image_url = _springer_media_or_graphic_url if _is_springer_nature(article) else None
    return _read_jats_root(article, base_url, image_url=image_url)


def read_springer_xml(tree, base_url: str | None = None) -> Article:
    """Article from the Springer Nature API response (JATS wrapped in ``<response><records>``).

    Relative ``MediaObjects/...`` links become ``media.springernature.com/full/...`` URLs, the
    largest rendition Springer serves, unless ``base_url`` is given.
    """
    result = _read_jats_root(_jats_article(tree.getroot()), base_url, image_url=springer_media_url)
    result.format = "springer-xml"
    return result


def springer_media_url(href: str | None, base_url: str | None, pmcid: str | None, doi: str | None) -> str | None:
    """Springer's static-content URL of a relative ``<graphic xlink:href>``:
    ``SPRINGER_MEDIA`` with the article's DOI, unless ``base_url`` is a page to resolve it
    against (then, and without a DOI, as :func:`graphic_url`)."""
    if href and not re.match(r"^[a-z]+://", href) and doi and not (base_url and not _API_HOST.search(base_url)):
        return SPRINGER_MEDIA.format(doi=quote(doi, safe=""), href=href.lstrip("/"))
    return graphic_url(href, base_url, pmcid)


# Springer Nature's DOI prefixes (Springer, BioMed Central, Nature, EPJ, Materials and Structures,
# Palgrave) and publisher names.
SPRINGER_NATURE_DOI = ("10.1007/", "10.1186/", "10.1038/", "10.1140/", "10.1617/", "10.1057/")
_SPRINGER_NATURE = re.compile(r"springer|nature|biomed central", re.IGNORECASE)


def _is_springer_nature(article) -> bool:
    """Whether a JATS ``<article>`` is Springer Nature's: by its journal's publisher or its DOI."""
    journal = find_local(article, "journal-meta")
    publisher = text_of(find_local(journal, "publisher-name")) if journal is not None else ""
    doi = next((normalise_text(el.text) for el in iter_local(article, "article-id")
                if el.get("pub-id-type") == "doi"), "").lower()
    return bool(_SPRINGER_NATURE.search(publisher)) or doi.startswith(SPRINGER_NATURE_DOI)


def _springer_media_or_graphic_url(href, base_url, pmcid, doi):
    """:func:`springer_media_url` for the links into ``MediaObjects/``, Springer's folder of
    figures; :func:`graphic_url` for the others (PMC's copies: ``1471-2180-11-174-1``)."""
    if href and href.lstrip("/").startswith("MediaObjects/"):
        return springer_media_url(href, base_url, pmcid, doi)
    return graphic_url(href, base_url, pmcid)


def _jats_article(root):
    """The ``<article>`` element of a JATS document or of a wrapper (API response, article set)."""
    if local(root) == "article":
        return root
    article = next(iter_local(root, "article"), None)
    if article is None:
        raise ArticleError("XML has no <article> element; download the JATS full text")
    return article


def _read_jats_root(root, base_url, image_url=None) -> Article:
    meta = find_local(root, "article-meta")
    if meta is None:
        meta = root
    ids = {el.get("pub-id-type", ""): normalise_text(el.text) for el in iter_local(meta, "article-id")}
    pmcid = (ids.get("pmc") or ids.get("pmcid") or "").upper().removeprefix("PMC") or None
    title = text_of(find_local(meta, "title-group", "article-title")) or None
    journal = text_of(find_local(root, "journal-meta", "journal-title")) or None
    year = None
    dates = list(iter_local(meta, "pub-date"))
    dates.sort(key=lambda d: 0 if d.get("pub-type", d.get("date-type", "")) in {"epub", "ppub", "pub"} else 1)
    for date in dates:
        year = parse_year(text_of(find_local(date, "year")))
        if year:
            break
    authors = []
    for contrib in iter_local(meta, "contrib"):
        if contrib.get("contrib-type", "author") != "author":
            continue
        name = find_local(contrib, "name")
        if name is not None:
            given = text_of(find_local(name, "given-names"))
            surname = text_of(find_local(name, "surname"))
            authors.append(normalise_text(f"{given} {surname}"))
        else:  # a name in one string ("Bob K. Lee"), or a group
            other = find_local(contrib, "string-name")
            other = other if other is not None else find_local(contrib, "collab")
            if other is not None:
                authors.append(text_of(other))
    doi = clean_doi(ids.get("doi"))
    license_ = None
    lic = find_local(meta, "permissions", "license")
    if lic is not None:
        ref = next(iter_local(lic, "license_ref"), None)
        license_ = (
            lic.get(XLINK_HREF)
            or (normalise_text(ref.text) if ref is not None else None)
            or text_of(lic)
            or None
        )
    figures = []
    for number, fig in enumerate(iter_local(root, "fig"), start=1):
        graphic = next(iter_local(fig, "graphic"), None)
        href = graphic.get(XLINK_HREF) if graphic is not None else None
        label, caption = text_of(find_local(fig, "label")), text_of(find_local(fig, "caption"))
        group = fig.getparent()
        if group is not None and local(group) == "fig-group":
            # a figure of a <fig-group>: "Figure 1" and the group's caption belong to it too
            group_label = text_of(next((c for c in group if local(c) == "label"), None))
            group_caption = text_of(next((c for c in group if local(c) == "caption"), None))
            label = normalise_text(f"{group_label} {label}") if group_label else label
            caption = normalise_text(f"{group_caption} {caption}") if group_caption else caption
        figures.append(
            Figure(
                id=fig.get("id") or f"fig{number}",
                label=label,
                caption=caption,
                image=image_url(href, base_url, pmcid, doi) if image_url else graphic_url(href, base_url, pmcid),
            )
        )
    return Article(
        doi=doi,
        title=title,
        journal=journal,
        year=year,
        authors=authors,
        license=license_,
        figures=figures,
        format="jats",
    )


def read_elsevier_xml(tree, base_url: str | None = None) -> Article:
    """Article from an Elsevier full-text API response (``<full-text-retrieval-response>``).

    Each ``<ce:figure>`` links to its image through ``<ce:link locator="gr1">``; the API lists
    every rendition of that image in ``<objects>`` as ``<object ref="gr1">``: a thumbnail
    (``IMAGE-THUMBNAIL``, ~200 px), a downsampled one (``IMAGE-DOWNSAMPLED``) and, for most
    articles, a high-resolution one (``IMAGE-HIGH-RES``, ``..._lrg.jpg``). The figure's image is
    the best rendition for measuring particles: high-resolution before downsampled before
    thumbnail (by ``type``, else ``category``), then the most pixels; a figure whose only listed
    rendition is a thumbnail keeps it, with a note saying so.

    A ``<ce:figure>`` with several ``<ce:link>`` is made of several separate images (not
    renditions of one). Each becomes its own :class:`Figure`, in document order, with the
    figure's label and caption (the caption describes all of them), the id ``"<figure id>-<locator>"``
    (the first keeps ``"<figure id>"``)
    and a note "image 2 of 3 of Fig. 4 ...": every image is measured, none is lost, and the shared
    caption is not mistaken for a caption of that image alone. Links inside the caption (an
    inline formula image) are not images of the figure.

    A locator with no ``<object>`` (a document saved without its ``<objects>``) gets the URL of
    ScienceDirect's high-resolution rendition, ``https://ars.els-cdn.com/content/image/
    1-s2.0-{PII}-{locator}_lrg.jpg`` (the link of "Download high-res image", the pattern the
    HTML reader also uses), built from the article's PII, with a note saying it was built;
    without a PII the image is None, with a note and a warning saying the image cannot be
    located.
    """
    root = tree.getroot()
    core = find_local(root, "coredata")
    if core is None:
        raise ArticleError("Elsevier XML has no <coredata>; download the full text with view=FULL")
    fields: dict[str, list[str]] = {}
    for child in core:
        fields.setdefault(local(child), []).append(normalise_text("".join(child.itertext())))
    first = lambda key: (fields.get(key) or [None])[0]  # noqa: E731
    authors = []
    for creator in fields.get("creator", []):
        surname, _, given = creator.partition(",")
        authors.append(normalise_text(f"{given} {surname}"))
    doi = clean_doi(first("doi") or first("identifier"))
    renditions = _elsevier_renditions(root)
    eid = _elsevier_eid(first("eid"), first("pii"), root)
    figures, unlocated = [], 0
    for number, fig in enumerate(iter_local(root, "figure"), start=1):
        if any(local(up) == "abstract" for up in fig.iterancestors()):
            continue  # the graphical abstract's image: no figure of the article (as ACS's TOC image)
        fig_id = fig.get("id") or f"fig{number}"
        label, caption = text_of(find_local(fig, "label")), text_of(find_local(fig, "caption"))
        locators = list(dict.fromkeys(link.get("locator") for link in _figure_links(fig)))
        if not locators:
            figures.append(Figure(id=fig_id, label=label, caption=caption, image=None,
                                  note="the figure links no image (no <ce:link locator>)"))
            continue
        for part, locator in enumerate(locators, start=1):
            image, note = _elsevier_image(locator, renditions, eid, base_url)
            unlocated += image is None
            figure = Figure(id=fig_id, label=label, caption=caption, image=image, note=note)
            if len(locators) > 1:
                # the first image keeps the figure's id (the one figure read before, so databases
                # crawled then gain the others instead of a second copy of it)
                figure.id = fig_id if part == 1 else f"{fig_id}-{locator}"
                figure.note = normalise_text(
                    f"image {part} of {len(locators)} of {label or fig_id} (locator {locator}), "
                    f"each a figure of its own; the caption describes all of them. {note or ''}")
            figures.append(figure)
    if unlocated:
        log.warning("Elsevier XML %s: %d figure images cannot be located (no <object> for their "
                    "locator and no PII to build the URL from); download the full text with its "
                    "<objects> (API view=FULL)", doi or "(no DOI)", unlocated)
    return Article(
        doi=doi,
        title=first("title") or None,
        journal=first("publicationName"),
        year=parse_year(first("coverDate")),
        authors=authors,
        license=first("openaccessUserLicense") or first("copyright") or None,
        figures=figures,
        format="elsevier-xml",
    )


# Elsevier renditions of one image, worst to best for measuring: thumbnail, downsampled, high-res.
_RENDITION_RANK = {"IMAGE-THUMBNAIL": 0, "THUMBNAIL": 0, "IMAGE-DOWNSAMPLED": 1, "STANDARD": 1,
                   "IMAGE-HIGH-RES": 2, "HIGH": 2}
# Parts of a <ce:figure> whose <ce:link>s are no image of the figure (inline formula images).
_FIGURE_TEXT_TAGS = {"caption", "label", "legend", "alt-text", "source", "copyright", "inline-figure"}
_PII = re.compile(r"[SB][0-9X]{15,20}")  # S0022309317303496, B9780128093887000155


def _elsevier_renditions(root) -> dict[str, tuple[str, int, int, int]]:
    """Best image rendition of each ``<object ref>``: ``ref -> (url, rank, width_px, height_px)``.

    Rank is that of the ``type`` (else ``category``) in ``_RENDITION_RANK`` (1 when unknown);
    among equal ranks the most pixels win, then the first listed. Formula images (``ALTIMG``)
    and non-image objects (supplementary PDFs, videos) are left out.
    """
    best: dict[str, tuple[str, int, int, int]] = {}
    for obj in iter_local(root, "object"):
        ref, url = obj.get("ref"), normalise_text(obj.text)
        kind, mime = obj.get("type", "").upper(), obj.get("mimetype", "image/").lower()
        if not ref or not url or kind == "ALTIMG" or not mime.startswith("image/"):
            continue
        rank = _RENDITION_RANK.get(kind, _RENDITION_RANK.get(obj.get("category", "").upper(), 1))
        try:
            width_px, height_px = int(obj.get("width", 0)), int(obj.get("height", 0))
        except ValueError:
            width_px = height_px = 0
        if ref not in best or (rank, width_px * height_px) > (best[ref][1], best[ref][2] * best[ref][3]):
            best[ref] = (url, rank, width_px, height_px)
    return best


def _elsevier_eid(eid: str | None, pii: str | None, root) -> str | None:
    """``"1-s2.0-{PII}"`` of the article, from ``<eid>``, else ``<pii>`` (``S0022-3093(17)30349-6``
    written without punctuation), else a ``<ce:link xlink:href="pii:S.../gr1">``; None if none."""
    links = ((link.get(XLINK_HREF) or "").removeprefix("pii:").split("/")[0] for link in iter_local(root, "link"))
    for candidate in itertools.chain([(eid or "").strip().removeprefix("1-s2.0-"), pii or ""], links):
        compact = re.sub(r"[^0-9A-Za-z]", "", candidate).upper()
        if _PII.fullmatch(compact):
            return f"1-s2.0-{compact}"
    return None


def _figure_links(fig) -> list:
    """The ``<ce:link locator>`` elements naming images of a ``<ce:figure>``, in document order."""
    links = []
    for link in iter_local(fig, "link"):
        inside = []
        for up in link.iterancestors():
            if up is fig:
                break
            inside.append(local(up))
        if link.get("locator") and not _FIGURE_TEXT_TAGS.intersection(inside):
            links.append(link)
    return links


def _elsevier_image(locator: str, renditions: dict, eid: str | None,
                    base_url: str | None) -> tuple[str | None, str | None]:
    """URL of the image ``locator`` names and a note on it (None when it is the high-resolution or
    downsampled rendition the document lists)."""
    if locator in renditions:
        url, rank, width_px, height_px = renditions[locator]
        if base_url and not url.startswith("http"):
            url = urljoin(base_url, url)
        if rank == 0:
            size = f" ({width_px}x{height_px} px)" if width_px and height_px else ""
            return url, (f"only a thumbnail{size} of {locator} is listed in <objects>; small "
                         "particles may be unmeasurable on it")
        return url, None
    if eid:
        return ELSEVIER_CDN.format(eid=eid, locator=locator), (
            f"image URL built from the PII and locator {locator} (ScienceDirect's high-resolution "
            "rendition): the document lists no <object> for it")
    return None, (f"image cannot be located: the document lists no <object> for locator {locator} "
                  "and names no PII to build its URL from")
