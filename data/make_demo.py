"""Build ``data/demo-article.pdf``, the sample article ``idx demo`` runs on.

One journal-like page: title, authors, DOI, a paragraph, and Fig. 1, a 2 x 2 figure of three
EMPS micrographs (with their own scale bars, MIT licensed, Yildirim & Cole 2021) and a plot, with
panel letters and a multi-line caption that states the scale bars. Needs reportlab and matplotlib.

    python data/make_demo.py --emps ../shared/data/emps
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
# EMPS test images with a scale bar of their own (value read by eye): stem, crop of the top
# (removes the original panel letter), bar value
MICROGRAPHS = [("9246d32fe0", 70, "100 nm"), ("c61a50a061", 60, "1000 nm"), ("d5e8abb61d", 95, "200 nm")]
TITLE = "Size-controlled synthesis of colloidal nanoparticles: an idx demonstration"
AUTHORS = "A. Example, B. Sample and C. Specimen"
DOI = "10.5555/idx.demo.2026"
CAPTION = ("Fig. 1 (a) TEM image of mesoporous silica nanoparticles on a carbon film. (b) SEM image of "
           "close-packed colloidal spheres of two sizes. (c) TEM image of faceted gold nanocrystals. "
           "(d) Particle size distribution of the sample in (a). Scale bars: 100 nm (a), 1 µm (b), "
           "200 nm (c).")
PANEL_PX = 420
GUTTER_PX = 24


def _font(size):
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


def _micrograph(emps: Path, stem: str, crop_top: int) -> Image.Image:
    image = Image.open(emps / "images" / f"{stem}.png").convert("L")
    image = image.crop((0, crop_top, image.width, image.height))
    scale = PANEL_PX / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def _plot() -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=100)
    ax.hist(rng.normal(62, 6, 300), bins=18, color="0.5", edgecolor="k")
    ax.set(xlabel="Diameter (nm)", ylabel="Count")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return Image.open(buf).convert("L")


def make_figure(emps: Path) -> Image.Image:
    tiles = [_micrograph(emps, stem, top) for stem, top, _ in MICROGRAPHS] + [_plot()]
    cell_w = max(t.width for t in tiles)
    cell_h = max(t.height for t in tiles)
    canvas = Image.new("L", (2 * cell_w + 3 * GUTTER_PX, 2 * cell_h + 3 * GUTTER_PX), 255)
    draw = ImageDraw.Draw(canvas)
    for index, tile in enumerate(tiles):
        row, col = divmod(index, 2)
        x = GUTTER_PX + col * (cell_w + GUTTER_PX)
        y = GUTTER_PX + row * (cell_h + GUTTER_PX)
        canvas.paste(tile, (x, y))
        draw.text((x - 18, y - 22), "abcd"[index], fill=0, font=_font(20))
    return canvas


def make_pdf(emps: Path, out: Path) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas as pdf_canvas

    figure = make_figure(emps)
    width, height = A4
    pdf = pdf_canvas.Canvas(str(out), pagesize=A4)
    pdf.setTitle(TITLE)
    pdf.setAuthor(AUTHORS)
    pdf.setFont("Helvetica-Bold", 15)
    pdf.drawString(50, height - 70, TITLE[:62])
    pdf.drawString(50, height - 88, TITLE[62:].strip())
    pdf.setFont("Helvetica", 10)
    pdf.drawString(50, height - 108, AUTHORS)
    pdf.drawString(50, height - 122, f"Journal of Demonstration Materials 1 (2026) 1-2.  https://doi.org/{DOI}")
    text = pdf.beginText(50, height - 150)
    text.setFont("Times-Roman", 10)
    for line in ("Nanoparticle size and shape distributions control optical, catalytic and magnetic",
                 "behaviour. Here we image three colloids by electron microscopy (Fig. 1) and measure",
                 "their particle size distributions."):
        text.textLine(line)
    pdf.drawText(text)
    fig_w = width - 100
    fig_h = fig_w * figure.height / figure.width
    top = height - 200
    buf = io.BytesIO()
    figure.save(buf, format="PNG")
    pdf.drawImage(ImageReader(buf), 50, top - fig_h, fig_w, fig_h)
    text = pdf.beginText(50, top - fig_h - 16)
    text.setFont("Helvetica", 9)
    line = ""
    for word in CAPTION.split():
        if pdf.stringWidth(line + " " + word, "Helvetica", 9) > fig_w:
            text.textLine(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    text.textLine(line)
    pdf.drawText(text)
    pdf.showPage()
    pdf.save()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emps", default=str(HERE.parents[1] / "shared" / "data" / "emps"))
    parser.add_argument("--out", default=str(HERE / "demo-article.pdf"))
    args = parser.parse_args()
    print(make_pdf(Path(args.emps), Path(args.out)))


if __name__ == "__main__":
    main()
