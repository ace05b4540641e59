"""Realistic synthetic journal PDFs, with ground truth, for testing and benchmarking the PDF reader.

:func:`make_article_pdf` writes a four-page, two-column article built from EMPS micrographs:

* page 1: title, authors, DOI, abstract; Fig. 1 (one SEM image) in the left column;
* page 2: Fig. 2 across both columns, made of three embedded images side by side (one figure);
  body text with an inline reference that starts a line ("Fig. 2 shows ...", not a caption);
* page 3: a *scanned* page: one raster image covering the page (text, the micrograph and the
  caption are pixels), with an invisible OCR text layer as scanners write it;
* page 4: Figure 4 in the right column with its caption, and body text.

It returns the ground truth: DOI, title, authors and, per figure, label, caption, page and the
bounding box ``[x0, top, x1, bottom]`` (PDF points from the page's top-left corner) of the figure.
:func:`make_encrypted_pdf`, :func:`make_truncated_pdf` and :func:`make_long_pdf` make bad inputs.
reportlab is needed (``pip install reportlab``); it is imported inside the functions.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

PAGE_W_PT, PAGE_H_PT = 595.0, 842.0  # A4
MARGIN_PT = 50.0
GUTTER_PT = 20.0
COL_W_PT = (PAGE_W_PT - 2 * MARGIN_PT - GUTTER_PT) / 2
BODY_SIZE_PT, CAPTION_SIZE_PT = 9.0, 8.0
SCAN_DPI = 150
DOI = "10.5555/idx.synth.2024.0042"
TITLE = "Shape-Controlled Growth of Gold Nanoparticles on Porous Silica Supports"
AUTHORS = ["Ada M. Lovelace", "Rosalind E. Franklin", "Ernst A. F. Ruska"]
SENTENCES = [
    "The nanoparticles were synthesised by seeded growth in aqueous solution at room temperature.",
    "Particle size distributions were obtained from several hundred particles per sample.",
    "The mean diameter increased with the precursor concentration, as expected for diffusion-limited growth.",
    "Surface ligands were exchanged before deposition to avoid aggregation on the support.",
    "Electron micrographs were recorded at several magnifications to cover a wide size range.",
    "The catalytic activity was measured by the reduction of 4-nitrophenol, monitored at 400 nm.",
    "Statistical errors are given as one standard deviation of the measured distribution.",
]
CAPTIONS = {
    1: "Fig. 1 SEM image of gold nanoparticles deposited on the porous silica support after 30 min "
       "of growth. The particles are nearly spherical with a narrow size distribution.",
    2: "Fig. 2 (a) SEM image of the as-synthesised particles, (b) TEM image of the same sample at "
       "higher magnification, and (c) HRTEM image of a single particle showing lattice fringes of "
       "the (111) planes.",
    3: "Fig. 3 TEM micrograph of the particles after calcination at 500 °C, recorded on a scanned "
       "print of the original figure.",
    4: "Figure 4. Bright-field TEM image of aggregated particles after five catalytic cycles; the "
       "aggregates are several hundred nanometres across.",
}


def _emps_images(emps_dir: Path, count: int, first: int = 0) -> list[Image.Image]:
    files = sorted(Path(emps_dir).glob("*.png"))[first:first + count]
    if len(files) < count:
        raise FileNotFoundError(f"need {count} EMPS images in {emps_dir}, found {len(files)}")
    return [Image.open(f).convert("L") for f in files]


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if stringWidth(candidate, font, size) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


class _Writer:
    """Writes text lines top-down on a reportlab canvas, in top-left coordinates (points)."""

    def __init__(self, canvas):
        self.canvas = canvas

    def lines(self, lines, x, top, font="Times-Roman", size=BODY_SIZE_PT, leading=1.25, invisible=False):
        text = self.canvas.beginText()
        text.setFont(font, size)
        if invisible:
            text.setTextRenderMode(3)
        for i, line in enumerate(lines):
            text.setTextOrigin(x, PAGE_H_PT - (top + size + i * size * leading))
            text.textOut(line)
        self.canvas.drawText(text)
        return top + len(lines) * size * leading

    def paragraph(self, text, x, top, width, **kw):
        size = kw.get("size", BODY_SIZE_PT)
        return self.lines(_wrap(text, kw.get("font", "Times-Roman"), size, width), x, top, **kw)

    def image(self, image: Image.Image, x, top, width, height):
        from reportlab.lib.utils import ImageReader

        self.canvas.drawImage(ImageReader(image), x, PAGE_H_PT - top - height, width, height)
        return [round(x, 2), round(top, 2), round(x + width, 2), round(top + height, 2)]


def _body(n_sentences: int, start: int = 0) -> str:
    return " ".join(SENTENCES[(start + i) % len(SENTENCES)] for i in range(n_sentences))


def _fill_column(writer, x, top, bottom, start=0):
    """Body paragraphs in one column from ``top`` down to ``bottom`` (points)."""
    k = start
    while top < bottom - 60:
        lines = _wrap(_body(3, k), "Times-Roman", BODY_SIZE_PT, COL_W_PT)
        room = int((bottom - top) // (BODY_SIZE_PT * 1.25))
        top = writer.lines(lines[:room], x, top) + 6
        k += 3
    return top


def _scanned_page(image: Image.Image) -> tuple[Image.Image, list, list[tuple[str, float, float, float]]]:
    """Raster of a whole page (pixels at ``SCAN_DPI``) with body text, a micrograph and a caption.

    Returns the page image, the micrograph's bbox in points, and the text lines (text, x, top,
    size) to write as the invisible OCR layer.
    """
    px = SCAN_DPI / 72.0
    page = Image.new("L", (int(PAGE_W_PT * px), int(PAGE_H_PT * px)), 250)
    draw = ImageDraw.Draw(page)
    try:
        font = ImageFont.truetype("DejaVuSerif.ttf", int(0.8 * BODY_SIZE_PT * px))
        small = ImageFont.truetype("DejaVuSerif.ttf", int(0.8 * CAPTION_SIZE_PT * px))
    except OSError:
        font = small = ImageFont.load_default()
    layer = []
    top = MARGIN_PT
    for i in range(12):  # body text above the figure, full width
        line = _wrap(_body(2, i), "Times-Roman", BODY_SIZE_PT, PAGE_W_PT - 2 * MARGIN_PT)[0]
        draw.text((MARGIN_PT * px, top * px), line, fill=30, font=font)
        layer.append((line, MARGIN_PT, top, BODY_SIZE_PT))
        top += BODY_SIZE_PT * 1.25
    top += 14
    width_pt = 300.0
    height_pt = width_pt * image.height / image.width
    x0 = (PAGE_W_PT - width_pt) / 2
    micrograph = image.resize((int(width_pt * px), int(height_pt * px)))
    page.paste(micrograph, (int(round(x0 * px)), int(round(top * px))))
    bbox = [round(x0, 2), round(top, 2), round(x0 + width_pt, 2), round(top + height_pt, 2)]
    top += height_pt + 10
    for line in _wrap(CAPTIONS[3], "Times-Roman", CAPTION_SIZE_PT, PAGE_W_PT - 2 * MARGIN_PT):
        draw.text((MARGIN_PT * px, top * px), line, fill=30, font=small)
        layer.append((line, MARGIN_PT, top, CAPTION_SIZE_PT))
        top += CAPTION_SIZE_PT * 1.25
    top += 12
    for i in range(14):
        line = _wrap(_body(2, i + 3), "Times-Roman", BODY_SIZE_PT, PAGE_W_PT - 2 * MARGIN_PT)[0]
        draw.text((MARGIN_PT * px, top * px), line, fill=30, font=font)
        layer.append((line, MARGIN_PT, top, BODY_SIZE_PT))
        top += BODY_SIZE_PT * 1.25
    noise = np.random.default_rng(0).normal(0, 4, (page.height, page.width))
    page = Image.fromarray(np.clip(np.asarray(page, dtype=float) + noise, 0, 255).astype(np.uint8))
    return page, bbox, layer


def make_article_pdf(path: str | Path, emps_dir: str | Path, encrypt_password: str | None = None,
                     first_image: int = 0, scan_text_layer: bool = True, vector_figure: bool = False) -> dict:
    """Write the four-page synthetic article to ``path``; return its ground truth.

    Parameters
    ----------
    path : str or Path
        Output PDF.
    emps_dir : str or Path
        Folder of EMPS micrographs (``shared/data/emps/images``).
    encrypt_password : str, optional
        Encrypt the PDF with this user password.
    first_image : int
        Index (in sorted order) of the first of the six EMPS images used; vary it for
        different figure sizes and contents.
    scan_text_layer : bool
        Give the scanned page 3 an invisible OCR text layer (False: pixels only, as from a
        scanner without OCR; the reader then needs tesseract).
    vector_figure : bool
        Add page 5: a histogram drawn with vector graphics (no raster) whose caption label is bold
        and set in the body font size ("Figure 5: ...").

    Returns
    -------
    dict
        ``{"doi", "title", "authors", "figures": [{"label", "caption", "page", "bbox"}]}``;
        bbox in PDF points, ``[x0, top, x1, bottom]`` from the top-left corner.
    """
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfgen.canvas import Canvas

    images = _emps_images(Path(emps_dir), 6, first_image)
    encrypt = StandardEncryption(encrypt_password, canPrint=0) if encrypt_password else None
    canvas = Canvas(str(path), pagesize=(PAGE_W_PT, PAGE_H_PT), encrypt=encrypt, pageCompression=1)
    canvas.setTitle("")  # real PDFs often carry no title metadata: the reader must find it
    writer = _Writer(canvas)
    left, right = MARGIN_PT, MARGIN_PT + COL_W_PT + GUTTER_PT
    figures = []

    # Page 1: header, abstract, Fig. 1 in the left column.
    top = writer.paragraph(TITLE, left, MARGIN_PT, PAGE_W_PT - 2 * MARGIN_PT, font="Times-Bold", size=16)
    top = writer.lines([", ".join(AUTHORS)], left, top + 8, font="Times-Italic", size=10.5)
    top = writer.lines([f"Journal of Synthetic Nanoscience 2024, 12, 345-352 https://doi.org/{DOI}"],
                       left, top + 4, size=8)
    top = writer.paragraph("Abstract " + _body(4), left, top + 12, PAGE_W_PT - 2 * MARGIN_PT, size=9.5) + 14
    column_top = top
    height = COL_W_PT * images[0].height / images[0].width
    bbox = writer.image(images[0], left, top, COL_W_PT, height)
    cap_top = top + height + 8
    cap_bottom = writer.paragraph(CAPTIONS[1], left, cap_top, COL_W_PT, size=CAPTION_SIZE_PT)
    figures.append({"label": "Fig. 1", "caption": CAPTIONS[1][len("Fig. 1 "):], "page": 1, "bbox": bbox})
    _fill_column(writer, left, cap_bottom + 12, PAGE_H_PT - MARGIN_PT, start=1)
    _fill_column(writer, right, column_top, PAGE_H_PT - MARGIN_PT, start=4)
    canvas.showPage()

    # Page 2: Fig. 2 across both columns, three images side by side, then text.
    top = MARGIN_PT
    top = writer.paragraph(_body(3, 2), left, top, PAGE_W_PT - 2 * MARGIN_PT) + 12
    gap = 6.0
    each_w = (PAGE_W_PT - 2 * MARGIN_PT - 2 * gap) / 3
    each_h = each_w * images[1].height / images[1].width
    boxes = [writer.image(images[1 + i], left + i * (each_w + gap), top, each_w, each_h) for i in range(3)]
    bbox = [boxes[0][0], boxes[0][1], boxes[2][2], max(b[3] for b in boxes)]
    cap_bottom = writer.paragraph(CAPTIONS[2], left, top + each_h + 8, PAGE_W_PT - 2 * MARGIN_PT,
                                  size=CAPTION_SIZE_PT)
    figures.append({"label": "Fig. 2", "caption": CAPTIONS[2][len("Fig. 2 "):], "page": 2, "bbox": bbox})
    top = cap_bottom + 14
    body = writer.paragraph("Fig. 2 shows that the particles keep their shape after the exchange of "
                            "ligands. " + _body(2, 1) + " As seen in Fig. 1, the support is not damaged.",
                            left, top, COL_W_PT)
    _fill_column(writer, left, body + 6, PAGE_H_PT - MARGIN_PT, start=2)
    _fill_column(writer, right, top, PAGE_H_PT - MARGIN_PT, start=5)
    canvas.showPage()

    # Page 3: a scanned page with an invisible OCR text layer.
    scan, bbox, layer = _scanned_page(images[4])
    buffer = io.BytesIO()
    scan.save(buffer, format="JPEG", quality=80)
    from reportlab.lib.utils import ImageReader

    canvas.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 0, 0, PAGE_W_PT, PAGE_H_PT)
    for text, x, line_top, size in layer if scan_text_layer else []:
        writer.lines([text], x, line_top, size=size, leading=1.0, invisible=True)
    figures.append({"label": "Fig. 3", "caption": CAPTIONS[3][len("Fig. 3 "):], "page": 3, "bbox": bbox})
    canvas.showPage()

    # Page 4: text in the left column; Figure 4 at the top of the right column.
    _fill_column(writer, left, MARGIN_PT, PAGE_H_PT - MARGIN_PT, start=0)
    height = COL_W_PT * images[5].height / images[5].width
    bbox = writer.image(images[5], right, MARGIN_PT, COL_W_PT, height)
    cap_bottom = writer.paragraph(CAPTIONS[4], right, MARGIN_PT + height + 8, COL_W_PT, size=CAPTION_SIZE_PT)
    figures.append({"label": "Figure 4", "caption": CAPTIONS[4][len("Figure 4. "):], "page": 4, "bbox": bbox})
    _fill_column(writer, right, cap_bottom + 12, PAGE_H_PT - MARGIN_PT, start=3)
    canvas.showPage()
    if vector_figure:
        figures.append(_vector_page(canvas, writer))
        canvas.showPage()
    canvas.save()
    return {"doi": DOI, "title": TITLE, "authors": list(AUTHORS), "figures": figures}


def _vector_page(canvas, writer) -> dict:
    """Page 5: body text, a vector histogram in the left column, a bold-label caption."""
    left, right = MARGIN_PT, MARGIN_PT + COL_W_PT + GUTTER_PT
    top = writer.paragraph(_body(4, 1), left, MARGIN_PT, COL_W_PT) + 14
    plot_h = 150.0
    x0, y_top = left + 24, top  # axes area, room for tick labels on the left and below
    x1, y_bottom = left + COL_W_PT - 4, top + plot_h - 16
    canvas.setLineWidth(0.8)
    canvas.line(x0, PAGE_H_PT - y_bottom, x1, PAGE_H_PT - y_bottom)
    canvas.line(x0, PAGE_H_PT - y_bottom, x0, PAGE_H_PT - y_top)
    counts = [2, 5, 11, 19, 24, 17, 9, 4, 2, 1]
    bar_w = (x1 - x0 - 10) / len(counts)
    canvas.setFillGray(0.5)
    for i, count in enumerate(counts):
        height = (y_bottom - y_top - 4) * count / max(counts)
        canvas.rect(x0 + 5 + i * bar_w, PAGE_H_PT - y_bottom, bar_w - 2, height, fill=1, stroke=0)
    canvas.setFillGray(0)
    for i, tick in enumerate(("0", "10", "20")):
        writer.lines([tick], left + 4, y_bottom - 4 - i * (y_bottom - y_top - 8) / 2, size=6)
    writer.lines(["Diameter (nm)"], x0 + 60, y_bottom + 3, size=6)
    bbox = [round(left + 4, 2), round(y_top, 2), round(x1, 2), round(y_bottom + 3 + 6 * 1.25, 2)]
    cap_top = top + plot_h + 8
    writer.lines(["Figure 5:"], left, cap_top, font="Times-Bold")
    from reportlab.pdfbase.pdfmetrics import stringWidth

    indent = stringWidth("Figure 5: ", "Times-Bold", BODY_SIZE_PT)
    caption = ("Size distribution of the particles measured on the SEM images of Fig. 1, with a "
               "log-normal fit to the histogram.")
    lines = _wrap(caption, "Times-Roman", BODY_SIZE_PT, COL_W_PT - indent)
    writer.lines(lines[:1], left + indent, cap_top)
    rest = _wrap(" ".join(caption.split()[len(lines[0].split()):]), "Times-Roman", BODY_SIZE_PT, COL_W_PT)
    bottom = writer.lines(rest, left, cap_top + BODY_SIZE_PT * 1.25)
    _fill_column(writer, left, bottom + 12, PAGE_H_PT - MARGIN_PT, start=2)
    _fill_column(writer, right, MARGIN_PT, PAGE_H_PT - MARGIN_PT, start=5)
    return {"label": "Figure 5", "caption": caption, "page": 5, "bbox": bbox}


def make_encrypted_pdf(path: str | Path, password: str = "secret", n_pages: int = 2) -> Path:
    """A short text PDF encrypted with a user password (cannot be opened without it).

    ``make_article_pdf(..., encrypt_password=...)`` encrypts the full article instead (slower).
    """
    return make_long_pdf(path, n_pages=n_pages, encrypt_password=password)


def make_truncated_pdf(path: str | Path, source: str | Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of the bytes of ``source`` (a download cut short)."""
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_long_pdf(path: str | Path, n_pages: int = 300, encrypt_password: str | None = None) -> Path:
    """A text-only PDF of ``n_pages`` pages (a thesis or a proceedings volume)."""
    from reportlab.lib.pdfencrypt import StandardEncryption
    from reportlab.pdfgen.canvas import Canvas

    encrypt = StandardEncryption(encrypt_password, canPrint=0) if encrypt_password else None
    canvas = Canvas(str(path), pagesize=(PAGE_W_PT, PAGE_H_PT), encrypt=encrypt)
    writer = _Writer(canvas)
    for page in range(n_pages):
        writer.lines([f"Chapter {page // 20 + 1}, page {page + 1}", SENTENCES[page % len(SENTENCES)]],
                     MARGIN_PT, MARGIN_PT)
        canvas.showPage()
    canvas.save()
    return Path(path)
