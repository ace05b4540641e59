"""Reader for article PDFs (pdfplumber): figure captions, the region each figure occupies, crops.

For every page (at most ``max_pages``):

1. words are grouped into lines, split at column gutters;
2. a caption is a line starting with ``Fig. N`` / ``Figure N`` that is set apart from body text
   (punctuation after the number, a bold label, a smaller font or ``(a)`` next); following lines
   of the same column and font size belong to it. "Fig. 2 shows ..." in body text is not one;
3. the figure is above the caption (else below it), in the caption's column: the union of the
   embedded raster images between the caption and the nearest body-text line, so a figure made of
   several images side by side is one figure. With no image there (vector graphics, or a scanned
   page that is one big raster) the band between body text and caption is rendered instead and
   its blank margins trimmed;
4. the region is rendered at the embedded images' native resolution and written as a PNG named
   by the hash of its content.

Coordinates are PDF points from the top-left corner of the page, ``[x0, top, x1, bottom]``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from statistics import median

import numpy as np

from idx.errors import ArticleError
from miners.articles.model import Article, Figure, clean_doi, normalise_text, parse_year

log = logging.getLogger(__name__)

MAX_PAGES = int(os.environ.get("IDX_PDF_MAX_PAGES", "60"))
MIN_DPI, MAX_DPI, VECTOR_DPI = 150, 600, 300
MIN_FIGURE_PT = 30.0  # a figure region lower than this is not a figure
MAX_CROP_PIXELS = 40_000_000
BACKGROUND_AREA = 0.6  # an image covering more of the page than this is a scan, not a figure
BLANK_LEVEL = 235  # grey level above which a rendered pixel counts as paper
INK_FRACTION = 0.005  # a rendered row/column with more ink than this is part of the figure
OCR_DPI = 200
OCR_MIN_CONFIDENCE = 30.0
OCR_SIZE_PER_HEIGHT = 1.0  # font size ~ height of the word box (x-height words are smaller)
OCR_SIZE_TOLERANCE = 0.3  # caption lines of one font, by OCR: sizes within 30 % (measured 7.2-9.0)
CAPTION_START = re.compile(  # "Fig. 2", "FIGURE 3b", "Supplementary Fig. S1", "Scheme 1"
    r"^(?P<label>(?:(?:Supplementary |Extended Data )?(?:Fig(?:ure)?s?\.?|FIG(?:URE)?S?\.?)|Scheme|SCHEME)"
    r"\s*(?P<number>S?\d{1,3}[A-Za-z]?))"
    r"(?P<punct>\s*[.:|\u2014\u2013]|\s*(?=\())?\s*"
)


def read_pdf(
    data: bytes,
    name: str = "<bytes>",
    path: Path | None = None,
    figure_dir: str | os.PathLike | None = None,
    max_pages: int | None = None,
) -> Article:
    """Article with cropped figures from the bytes of a PDF.

    Parameters
    ----------
    data : bytes
        The PDF.
    name : str
        Name for messages.
    path : Path, optional
        The PDF's path; the default ``figure_dir`` is ``<stem>_figures`` beside it.
    figure_dir : str or Path, optional
        Folder for the figure PNGs (created if missing); a temporary folder when ``path`` is None.
    max_pages : int, optional
        Scan at most this many pages (default :data:`MAX_PAGES`, env ``IDX_PDF_MAX_PAGES``).

    Returns
    -------
    Article
        ``format="pdf"``; each figure's ``image`` is the absolute path of its PNG crop, ``page`` and
        ``bbox`` give its place.

    Raises
    ------
    ArticleError
        Encrypted, truncated or otherwise unreadable PDFs.
    """
    import pdfplumber
    from pdfplumber.utils.exceptions import MalformedPDFException, PdfminerException

    max_pages = MAX_PAGES if max_pages is None else int(max_pages)
    if max_pages < 1:
        raise ArticleError(f"max_pages must be at least 1, got {max_pages}")
    try:
        pdf = pdfplumber.open(io.BytesIO(data))
        n_pages = len(pdf.pages)
    except (PdfminerException, MalformedPDFException) as exc:
        raise ArticleError(_pdf_problem(name, exc)) from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ArticleError(f"{name}: broken PDF ({type(exc).__name__}: {exc}); re-download it") from None
    with pdf:
        if n_pages == 0:
            raise ArticleError(f"{name}: PDF has no pages; re-download it")
        if n_pages > max_pages:
            log.warning("%s: scanning only the first %d of %d pages (raise max_pages or "
                        "IDX_PDF_MAX_PAGES to scan more)", name, max_pages, n_pages)
        out_dir = _figure_dir(figure_dir, path)
        figures: list[Figure] = []
        seen: set[str] = set()
        texts: list[str] = []
        first_lines: list[dict] = []
        for page_number, page in enumerate(pdf.pages[:max_pages], start=1):
            try:
                lines = page_lines(page)
                if page_number <= 2:
                    texts.append("\n".join(line["text"] for line in lines))
                if page_number == 1:
                    first_lines = lines
                for figure in find_page_figures(page, lines, page_number, out_dir):
                    key = figure.label.lower().replace("figure", "fig").replace(".", "").replace(" ", "")
                    if key in seen:
                        continue
                    seen.add(key)
                    figures.append(figure)
            except (PdfminerException, MalformedPDFException) as exc:
                log.warning("%s: page %d unreadable (%s); skipped", name, page_number, _pdf_problem(name, exc))
            except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
                log.warning("%s: page %d unreadable (%s: %s); skipped", name, page_number, type(exc).__name__, exc)
        meta = _pdf_metadata(pdf)
    article = _article_metadata(meta, texts, first_lines)
    article.figures = figures
    log.info("%s: %d pages scanned, %d figures, crops in %s", name, min(n_pages, max_pages), len(figures), out_dir)
    return article


def _pdf_problem(name: str, exc: Exception) -> str:
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    kind = type(inner).__name__
    if "Password" in kind or "Encrypt" in kind:
        return f"{name}: PDF is encrypted with a password; save an unencrypted copy and read that"
    return f"{name}: broken or truncated PDF ({kind}: {inner}); re-download it"


def _pdf_metadata(pdf) -> dict:
    out = {}
    for key, value in (pdf.metadata or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        if isinstance(value, str):
            value = normalise_text(value)
            if value.lower() not in {"", "unspecified", "untitled", "anonymous", "unknown", "none"}:
                out[key.lower()] = value
    return out


def _figure_dir(figure_dir, path: Path | None) -> Path:
    if figure_dir is not None:
        out = Path(figure_dir)
    elif path is not None:
        out = path.with_name(f"{path.stem}_figures")
    else:
        out = Path(tempfile.mkdtemp(prefix="idx-figures-"))
    return out.resolve()


def _write_png(out_dir: Path, png: bytes) -> Path:
    """Write ``png`` as ``<sha1[:16]>.png`` in ``out_dir`` (created on first use); return its path."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        file = out_dir / f"{hashlib.sha1(png).hexdigest()[:16]}.png"
        if not file.exists():
            file.write_bytes(png)
    except OSError as exc:
        raise ArticleError(f"cannot write figure crops to {out_dir} ({exc}); give a folder you may write "
                           "(--figure-dir DIR, or figure_dir= in Python)") from None
    return file


# ----------------------------------------------------------------------------------------- lines
def page_lines(page, ocr: bool = True) -> list[dict]:
    """Text lines of a page, split at column gutters.

    A page without a text layer that is one big raster (a scan) is read by OCR (tesseract) when
    ``ocr`` is true and tesseract is installed.

    Returns
    -------
    list of dict
        ``{"text", "x0", "x1", "top", "bottom", "size", "bold", "ocr"}`` sorted top-down,
        left-right (``ocr``: the words came from tesseract, so ``size`` is a word-box height).
    """
    words = page.extract_words(extra_attrs=["size", "fontname"], keep_blank_chars=False, use_text_flow=False)
    if not words and ocr and _is_scanned(page):
        words = ocr_words(page)
    words.sort(key=lambda w: (round(w["top"]), w["x0"]))
    rows: list[list[dict]] = []
    for word in words:
        if rows and abs(word["top"] - rows[-1][0]["top"]) < 0.5 * max(word["size"], 1):
            rows[-1].append(word)
        else:
            rows.append([word])
    lines = []
    for row in rows:
        row.sort(key=lambda w: w["x0"])
        current = [row[0]]
        for word in row[1:]:
            gap = word["x0"] - current[-1]["x1"]
            if gap > max(10.0, 1.2 * word["size"]):
                lines.append(_make_line(current))
                current = [word]
            else:
                current.append(word)
        lines.append(_make_line(current))
    lines.sort(key=lambda line: (line["top"], line["x0"]))
    return lines


def _is_scanned(page) -> bool:
    area = float(page.width) * float(page.height)
    return any((float(im["x1"]) - float(im["x0"])) * (float(im["bottom"]) - float(im["top"]))
               > BACKGROUND_AREA * area for im in page.images)


def ocr_words(page, dpi: int = OCR_DPI) -> list[dict]:
    """Words of a scanned page by tesseract OCR, in page points (like ``extract_words``).

    Returns an empty list (and logs why) when tesseract is not installed.
    """
    try:
        import pytesseract

        from miners.ocr import image_to_data

        image = page.to_image(resolution=dpi).original.convert("L")
        data = image_to_data(image, config="--psm 3")
    except (ImportError, OSError, RuntimeError) as exc:
        log.warning("page %s is a scan without text and OCR is unavailable (%s); install tesseract-ocr",
                    page.page_number, exc)
        return []
    except pytesseract.TesseractNotFoundError:
        log.warning("page %s is a scan without text; install tesseract-ocr to read it", page.page_number)
        return []
    scale = 72.0 / dpi
    words = []
    for text, conf, left, top, width, height in zip(data["text"], data["conf"], data["left"], data["top"],
                                                    data["width"], data["height"]):
        if not text.strip() or float(conf) < OCR_MIN_CONFIDENCE:
            continue
        words.append({"text": text.strip(), "x0": left * scale, "x1": (left + width) * scale,
                      "top": top * scale, "bottom": (top + height) * scale,
                      "size": OCR_SIZE_PER_HEIGHT * height * scale, "fontname": "ocr"})
    log.info("page %s: scanned, %d words by OCR", page.page_number, len(words))
    return words


def _make_line(words: list[dict]) -> dict:
    return {
        "text": " ".join(w["text"] for w in words),
        "x0": min(w["x0"] for w in words),
        "x1": max(w["x1"] for w in words),
        "top": min(w["top"] for w in words),
        "bottom": max(w["bottom"] for w in words),
        "size": median(w["size"] for w in words),
        "bold": "bold" in words[0]["fontname"].lower(),
        "ocr": words[0]["fontname"] == "ocr",
    }


# -------------------------------------------------------------------------------------- captions
def find_captions(lines: list[dict], page_width: float) -> list[dict]:
    """Caption blocks on a page.

    Returns
    -------
    list of dict
        ``{"label", "caption", "x0", "x1", "top", "bottom", "size"}``.
    """
    if not lines:
        return []
    body_size = median(line["size"] for line in lines)
    captions = []
    used: set[int] = set()
    for i, line in enumerate(lines):
        match = CAPTION_START.match(line["text"])
        if not match or i in used:
            continue
        rest = line["text"][match.end():]
        set_apart = (
            bool(match.group("punct"))
            or line["bold"]
            or line["size"] < body_size - 0.4
            or rest.startswith("(")
        )
        if not set_apart or not rest:
            continue
        block = [line]
        for j in range(i + 1, len(lines)):
            candidate = lines[j]
            previous = block[-1]
            if candidate["top"] - previous["bottom"] > 0.9 * line["size"]:
                break
            if candidate["top"] <= previous["top"] + 0.3 * line["size"]:
                continue  # a line beside this one (other column)
            same_column = candidate["x0"] >= line["x0"] - 3 and candidate["x0"] <= line["x0"] + 3 * line["size"]
            # a font change ends the caption; OCR sizes are word-box heights, which vary with the
            # letters (x-height, ascenders) by ~20 % within one font
            size_tolerance = OCR_SIZE_TOLERANCE * line["size"] if line.get("ocr") else 0.6
            if (not same_column or abs(candidate["size"] - line["size"]) > size_tolerance
                    or CAPTION_START.match(candidate["text"])):
                if same_column:
                    break
                continue
            block.append(candidate)
            used.add(j)
        text = ""
        for part in [rest] + [b["text"] for b in block[1:]]:
            text = text + part if text.endswith("-") else f"{text} {part}"
        captions.append({
            "label": normalise_text(match.group("label")),
            "caption": normalise_text(text),
            "x0": min(b["x0"] for b in block),
            "x1": max(b["x1"] for b in block),
            "top": block[0]["top"],
            "bottom": block[-1]["bottom"],
            "size": line["size"],
        })
    return captions


# --------------------------------------------------------------------------------------- regions
def _column(caption: dict, lines: list[dict], page_width: float) -> tuple[float, float]:
    """Horizontal span of the caption's column (points)."""
    left = min((line["x0"] for line in lines), default=0.0)
    right = max((line["x1"] for line in lines), default=page_width)
    middle = page_width / 2
    if caption["x1"] - caption["x0"] > 0.6 * (right - left) or (caption["x0"] < middle - 20 < caption["x1"] - 20):
        return left, right
    if caption["x1"] <= middle + 10:
        return left, middle
    return middle, right


def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def find_region(caption: dict, captions: list[dict], lines: list[dict], images: list[dict],
                page_size: tuple[float, float], below: bool = False) -> tuple[list[float], list[dict]] | None:
    """Region of the figure belonging to ``caption``: above it (or below, with ``below=True``).

    Returns
    -------
    (bbox, images) or None
        bbox ``[x0, top, x1, bottom]`` in points and the embedded images inside it (empty for a
        rendered band).
    """
    width, height = page_size
    col0, col1 = _column(caption, lines, width)
    col_w = col1 - col0

    def in_column(x0, x1):
        return _overlap(x0, x1, col0, col1) > 0.5 * min(x1 - x0, col_w)

    figure_images = [im for im in images if in_column(im["x0"], im["x1"])]

    def inside_image(line):
        return any(im["x0"] - 2 <= line["x0"] and line["x1"] <= im["x1"] + 2 and im["top"] - 2 <= line["top"]
                   and line["bottom"] <= im["bottom"] + 2 for im in figure_images)

    barriers = [
        (line["top"], line["bottom"]) for line in lines
        if in_column(line["x0"], line["x1"]) and line["x1"] - line["x0"] > 0.5 * col_w and not inside_image(line)
        and not (caption["top"] - 1 <= line["top"] <= caption["bottom"] + 1)
    ]
    barriers += [(c["top"], c["bottom"]) for c in captions
                 if c is not caption and in_column(c["x0"], c["x1"])]
    if not below:
        lo = max([b for t, b in barriers if b <= caption["top"] + 1] + [0.0])
        hi = caption["top"]
    else:
        lo = caption["bottom"]
        hi = min([t for t, b in barriers if t >= caption["bottom"] - 1] + [height])
    chosen = [im for im in figure_images if im["top"] >= lo - 2 and im["bottom"] <= hi + 2]
    if chosen:
        bbox = [min(im["x0"] for im in chosen), min(im["top"] for im in chosen),
                max(im["x1"] for im in chosen), max(im["bottom"] for im in chosen)]
        return bbox, chosen
    pad = 2.0
    if hi - lo - 2 * pad < MIN_FIGURE_PT:
        return None
    return [col0, lo + pad, col1, hi - pad], []


def find_page_figures(page, lines: list[dict], page_number: int, out_dir: Path) -> list[Figure]:
    """Figures (caption, region, PNG crop) of one page."""
    width, height = float(page.width), float(page.height)
    captions = find_captions(lines, width)
    if not captions:
        return []
    images, scans = [], []
    for im in page.images:
        box = {k: float(im[k]) for k in ("x0", "x1", "top", "bottom")}
        box["srcsize"] = im.get("srcsize") or (0, 0)
        box["x0"], box["top"] = max(box["x0"], 0.0), max(box["top"], 0.0)
        box["x1"], box["bottom"] = min(box["x1"], width), min(box["bottom"], height)
        area = (box["x1"] - box["x0"]) * (box["bottom"] - box["top"])
        if area <= 4:
            continue
        (scans if area > BACKGROUND_AREA * width * height else images).append(box)
    figures = []
    for number, caption in enumerate(captions, start=1):
        found = find_region(caption, captions, lines, images, (width, height))
        if found is None:
            found = find_region(caption, captions, lines, images, (width, height), below=True)
        if found is None:
            log.debug("page %d: no region for %s", page_number, caption["label"])
            continue
        bbox, inside = found
        dpi = _native_dpi(inside or scans) if (inside or scans) else VECTOR_DPI
        image, bbox = render_region(page, bbox, dpi, trim=not inside)
        if image is None:
            continue
        file = _write_png(out_dir, _png_bytes(image))
        figures.append(Figure(
            id=f"p{page_number}-f{number}", label=caption["label"], caption=caption["caption"],
            image=str(file), page=page_number, bbox=[round(float(v), 2) for v in bbox],
        ))
    return figures


def _native_dpi(images: list[dict]) -> float:
    dpis = []
    for im in images:
        width_pt = im["x1"] - im["x0"]
        src_w = (im.get("srcsize") or (0, 0))[0] or 0
        if width_pt > 0 and src_w:
            dpis.append(src_w / (width_pt / 72.0))
    dpi = max(dpis) if dpis else VECTOR_DPI
    return float(min(MAX_DPI, max(MIN_DPI, dpi)))


def render_region(page, bbox: list[float], dpi: float, trim: bool):
    """Render ``bbox`` of ``page`` at ``dpi``; optionally trim blank margins.

    Returns
    -------
    (PIL.Image or None, bbox)
        The crop (RGB) and its bbox in points after trimming; None if it is blank or too small.
    """
    x0, top, x1, bottom = bbox
    scale = dpi / 72.0
    pixels = (x1 - x0) * scale * (bottom - top) * scale
    if pixels > MAX_CROP_PIXELS:
        dpi = dpi * (MAX_CROP_PIXELS / pixels) ** 0.5
        scale = dpi / 72.0
    image = page.crop((x0, top, x1, bottom)).to_image(resolution=dpi).original.convert("RGB")
    if not trim:
        return image, bbox
    gray = np.asarray(image.convert("L"))
    ink = gray < BLANK_LEVEL
    rows = np.flatnonzero(ink.sum(axis=1) > max(2, INK_FRACTION * ink.shape[1]))
    cols = np.flatnonzero(ink.sum(axis=0) > max(2, INK_FRACTION * ink.shape[0]))
    if rows.size == 0 or cols.size == 0:
        return None, bbox
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if (r1 - r0) / scale < MIN_FIGURE_PT / 2 or (c1 - c0) / scale < MIN_FIGURE_PT / 2:
        return None, bbox
    sx, sy = (x1 - x0) / image.width, (bottom - top) / image.height
    new_bbox = [x0 + c0 * sx, top + r0 * sy, x0 + c1 * sx, top + r1 * sy]
    return image.crop((int(c0), int(r0), int(c1), int(r1))), new_bbox


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------- metadata
_NAME = re.compile(r"^[A-Z][\w'\u2019-]*\.?(?: [A-Z][\w'\u2019-]*\.?){1,4}$")


def _article_metadata(meta: dict, texts: list[str], first_lines: list[dict]) -> Article:
    text = "\n".join(texts)
    doi = clean_doi(meta.get("doi")) or clean_doi(text)
    title = meta.get("title")
    if not title or len(title) < 12 or re.search(r"\.(?:docx?|pdf|tex|dvi)$|^untitled|microsoft", title, re.I):
        title = None
    authors: list[str] = []
    # the title sits in the upper part of the first page; a page whose only text is low (a
    # footer, a scan's last line) has none there
    upper = [line for line in first_lines if line["top"] < 0.5 * max(line["bottom"] for line in first_lines) + 200] \
        if first_lines else []
    if upper:
        biggest = max(line["size"] for line in upper)
        body = median(line["size"] for line in first_lines)
        if biggest >= body + 2:
            idx = [i for i, line in enumerate(first_lines) if abs(line["size"] - biggest) < 0.3]
            start = idx[0]
            block = [first_lines[start]]
            for line in first_lines[start + 1:]:
                if abs(line["size"] - biggest) < 0.3 and line["top"] - block[-1]["bottom"] < line["size"]:
                    block.append(line)
                else:
                    break
            title = title or normalise_text(" ".join(line["text"] for line in block))
            following = first_lines[start + len(block): start + len(block) + 3]
            for line in following:
                parts = [p.strip() for p in re.split(r",|;|\band\b|&", re.sub(r"[\d*†‡§]+", "", line["text"]))]
                parts = [p for p in parts if p]
                if parts and all(_NAME.match(p) for p in parts):
                    authors = parts
                    break
    if not authors and meta.get("author"):
        authors = [normalise_text(p) for p in re.split(r";|,| and ", meta["author"]) if p.strip()]
    year = None
    for line in text.splitlines()[:40]:
        if doi and doi in line.lower() or re.search(r"©|\(c\)|received|published", line, re.I):
            year = parse_year(line)
            if year:
                break
    year = year or parse_year(meta.get("creationdate", "")[2:6] if meta.get("creationdate") else None)
    match = re.search(r"creativecommons\.org/licen[cs]es/[\w./-]+", text)
    license_ = "https://" + match.group(0) if match else (
        re.search(r"\bCC[ -]BY(?:[ -](?:NC|ND|SA))*(?: \d\.\d)?", text).group(0)
        if re.search(r"\bCC[ -]BY", text) else None)
    return Article(doi=doi, title=title, journal=meta.get("subject") or None, year=year,
                   authors=authors, license=license_, format="pdf")
