"""Does a figure caption describe electron micrographs?

The crawler keeps only figures whose caption names an electron-microscopy imaging technique
(SEM, TEM, HRTEM, STEM, HAADF, cryo-EM, FE-SEM, "electron micrograph", ...). Mentions that are
not images are discounted: "TEM grid" (sample preparation), "SEM" as the standard error of the
mean, and EDS/EDX spectra recorded in an electron microscope.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

EM_THRESHOLD = 1.0
IMAGE_BONUS = 0.5
SPECTRUM_WEIGHT = 0.3

# (canonical technique, pattern). Acronyms are case-sensitive: "stem cells", "sem" are not EM.
_TECHNIQUES: list[tuple[str, re.Pattern]] = [
    ("cryo-EM", re.compile(r"\bcryo-?(?:electron micro\w*|EM|TEM|ET)\b", re.IGNORECASE)),
    ("HAADF-STEM", re.compile(r"\bHAADF(?:-STEM)?\b")),
    ("HRTEM", re.compile(r"\bHR-?TEM\b|\bhigh[- ]resolution (?:TEM|transmission electron micro\w*)", re.IGNORECASE)),
    ("STEM", re.compile(r"\bSTEM\b")),
    ("FE-SEM", re.compile(r"\bFE-?SEM\b|\bfield[- ]emission (?:SEM|scanning electron micro\w*)", re.IGNORECASE)),
    ("SEM", re.compile(r"\bSEM\b")),
    ("TEM", re.compile(r"\bTEM\b")),
]
_LOWER_PHRASES = [  # long forms written in lower case, matched case-insensitively
    ("STEM", re.compile(r"\bscanning transmission electron micro\w*", re.IGNORECASE)),
    ("SEM", re.compile(r"\bscanning electron micro\w*", re.IGNORECASE)),
    ("TEM", re.compile(r"\btransmission electron micro\w*", re.IGNORECASE)),
    ("EM", re.compile(r"\belectron micro(?:graph|scop)\w*|\b(?:negative[- ]stain(?:ed|ing)?|immuno-?(?:gold)?)"
                      r"[- ]EM\b|\bEM (?:image|micrograph)s?\b", re.IGNORECASE)),
]
# Mentions that are not micrographs: removed before matching.
_NOT_IMAGES = [
    re.compile(r"\b(?:TEM|EM|SEM|cryo-EM)[- ](?:grids?|stubs?|holders?|sample preparation)\b", re.IGNORECASE),
    re.compile(r"(?:±|\+/-|\bmeans?\b[^.;]{0,20}?)\s*(?:\(?SEM\)?|S\.E\.M\.)", re.IGNORECASE),
    re.compile(r"\bSEM\s*(?:\(n\s*=|of (?:the mean|\d+|three|triplicate|independent))", re.IGNORECASE),
    re.compile(r"\berror bars?[^.;]{0,40}?\bSEM\b", re.IGNORECASE),
]
_IMAGE_WORDS = re.compile(r"^[\w\s/,()-]{0,40}?\b(?:images?|micrographs?|photographs?|pictures?|views?|"
                          r"tomograms?|observations?|morpholog\w+)\b", re.IGNORECASE)
_SPECTRUM_AFTER = re.compile(r"^[-/ ]?(?:EDS|EDX|EELS|EDXS)\b[\w\s-]{0,20}?\b(?:spectr\w+|line[- ]?scans?|"
                             r"profiles?|maps?|mapping)\b", re.IGNORECASE)


@dataclass
class EmScore:
    """How strongly a caption points to electron micrographs.

    Attributes
    ----------
    is_em : bool
        ``score >= EM_THRESHOLD``.
    score : float
        1 per technique mention, +0.5 when an image word follows it, 0.3 for a mention that only
        qualifies an EDS/EDX/EELS spectrum or map.
    techniques : list of str
        Canonical names found, in order of first mention (``"SEM"``, ``"HRTEM"``, ...).
    """

    is_em: bool = False
    score: float = 0.0
    techniques: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"is_em": self.is_em, "score": self.score, "techniques": list(self.techniques)}


def score_em_caption(caption: str | None) -> EmScore:
    """Score a caption for electron-microscopy content.

    Parameters
    ----------
    caption : str or None
        Figure caption (label included or not).

    Returns
    -------
    EmScore
    """
    if not caption:
        return EmScore()
    text = caption
    for pattern in _NOT_IMAGES:
        text = pattern.sub(lambda m: " " * len(m.group(0)), text)
    spans: list[tuple[int, int, str]] = []
    for name, pattern in _TECHNIQUES + _LOWER_PHRASES:
        for match in pattern.finditer(text):
            if any(start <= match.start() < end or match.start() <= start < match.end() for start, end, _ in spans):
                continue  # already counted as a more specific technique (HRTEM before TEM)
            spans.append((match.start(), match.end(), name))
    spans.sort()
    score = 0.0
    techniques: list[str] = []
    for start, end, name in spans:
        after = text[end:end + 60]
        if _SPECTRUM_AFTER.match(after) and not _IMAGE_WORDS.match(after):
            weight = SPECTRUM_WEIGHT
        else:
            weight = 1.0 + (IMAGE_BONUS if _IMAGE_WORDS.match(after) else 0.0)
        score += weight
        if weight >= 1.0 and name not in techniques:
            techniques.append(name)
    return EmScore(is_em=score >= EM_THRESHOLD and bool(techniques), score=round(score, 2),
                   techniques=techniques)


def is_em_caption(caption: str | None) -> bool:
    """True if the caption describes electron micrographs (see :func:`score_em_caption`)."""
    return score_em_caption(caption).is_em
