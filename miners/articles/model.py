"""Small dataclasses every article reader returns, and the text helpers they share."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

_SPACE = re.compile(r"\s+")
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"'<>]+)", re.IGNORECASE)


@dataclass
class Figure:
    """One figure of an article.

    Attributes
    ----------
    id : str
        Identifier inside the article (``"Fig1"``, ``"pone-0046493-g001"``, ``"p3-f1"`` for PDFs).
    label : str
        Printed label, e.g. ``"Figure 1"`` or ``"Fig. 2"``; empty if the source has none.
    caption : str
        Caption text with whitespace normalised (label not repeated where the source keeps it apart).
    image : str or None
        Absolute URL of the highest-resolution image the source links to, or, for PDFs, the
        absolute path of the cropped PNG; None if the source names no image.
    page : int or None
        1-based page number (PDFs only).
    bbox : list of float or None
        ``[x0, y0, x1, y1]`` of the figure region on its page, in PDF points from the top-left
        corner (PDFs only).
    note : str or None
        What to know about ``image`` when it is not simply the image the source links to: one
        of several separate images sharing the caption, a URL built from the publisher's pattern,
        only a thumbnail, or why there is no image. None when there is nothing to say.
    """

    id: str
    label: str
    caption: str
    image: str | None = None
    page: int | None = None
    bbox: list[float] | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        out = {"id": self.id, "label": self.label, "caption": self.caption, "image": self.image}
        if self.page is not None:
            out["page"] = self.page
            out["bbox"] = self.bbox
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Article:
    """Metadata and figures of one article.

    Attributes
    ----------
    doi, title, journal : str or None
    year : int or None
    authors : list of str
        ``"Given Surname"`` strings in author order.
    license : str or None
        Licence URL where the source gives one, else the licence statement.
    figures : list of Figure
        Every figure of the article, in document order (empty when it has none).
    format : str
        Which reader produced it: ``"jats"``, ``"elsevier-xml"``, ``"springer-xml"``,
        ``"html-nature"``, ``"html-rsc"``, ``"html-acs"``, ``"html-elsevier"``, ``"html-wiley"``,
        ``"html"`` (generic) or ``"pdf"``.
    """

    doi: str | None = None
    title: str | None = None
    journal: str | None = None
    year: int | None = None
    authors: list[str] = field(default_factory=list)
    license: str | None = None
    figures: list[Figure] = field(default_factory=list)
    format: str = ""

    def to_dict(self) -> dict:
        return {
            "doi": self.doi,
            "title": self.title,
            "journal": self.journal,
            "year": self.year,
            "authors": list(self.authors),
            "license": self.license,
            "figures": [figure.to_dict() for figure in self.figures],
        }


_POWER = re.compile(r"[-+\u2212\u2013]?\d+(?:\.\d+)?[-+\u2212\u2013]?")


def superscript(text: str, before: str) -> str | None:
    """``"^4"`` for a numeric superscript (an exponent or a charge, ``"4"``, ``"-1"``, ``"3+"``)
    right after a number, letter or bracket (``10<sup>4</sup>``, ``cm<sup>-1</sup>``), so that it
    does not read as more digits ("104 s"); None for any other superscript (footnote marks, words),
    which keeps its text."""
    text, last = text.strip(), before[-1:]
    if text and last and (last.isalnum() or last in ")]") and _POWER.fullmatch(text):
        return "^" + text
    return None


def normalise_text(text: str | None) -> str:
    """Collapse runs of whitespace (including non-breaking spaces) to one space and strip.

    Parameters
    ----------
    text : str or None

    Returns
    -------
    str
        NFC-normalised text; ``""`` for None.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text.replace("\u00a0", " ").replace("\u2009", " "))
    return _SPACE.sub(" ", text).strip()


def clean_doi(text: str | None) -> str | None:
    """Extract a bare, lower-cased DOI (``10.xxxx/...``) from a DOI, ``doi:`` string or DOI URL."""
    if not text:
        return None
    match = _DOI.search(text)
    if not match:
        return None
    return match.group(1).rstrip(".,;)").lower()


def parse_year(text: str | None) -> int | None:
    """First plausible four-digit year (1900-2099) in ``text``, else None."""
    if not text:
        return None
    match = re.search(r"\b(19|20)\d{2}\b", str(text))
    return int(match.group(0)) if match else None
