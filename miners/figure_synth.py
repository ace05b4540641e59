"""Seeded generator of realistic multi-panel figures with ground truth, for tests and benchmarks.

Figures are composed from real EM micrographs (EMPS images) and matplotlib-rendered non-EM
panels (line plots, XRD / spectra, bar charts, histograms, scatter plots, diffraction-like ring
and spot patterns, schematics, colour maps / photos), laid out on white or black backgrounds with
gutters of varied widths, uneven grids, panels of different sizes, labels inside corners or in
the gutter, optional thin frames, scale bars and insets. Everything is deterministic for a seed.

    fig = make_figure(np.random.default_rng(0), em_paths)
    fig.image      # uint8 (H, W, 3)
    fig.panels     # [{"bbox": [x0, y0, x1, y1], "label": "a", "kind": "em"}, ...]
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

NON_EM_KINDS = ("line", "spectrum", "bar", "histogram", "scatter", "diffraction", "schematic",
                "colourmap", "photo")
LABEL_STYLES = ("a", "A", "(a)", "a)", "(A)")


@dataclass
class SynthFigure:
    """A composed figure and its ground truth.

    Attributes
    ----------
    image : ndarray of uint8, shape (H, W, 3)
    panels : list of dict
        ``{"bbox": [x0, y0, x1, y1], "label": str, "kind": "em" | "other", "source": str}``,
        in reading order; insets are not panels. A non-EM panel without a frame is bounded by
        its ink (pixels that differ from the figure background), as a reader would draw it.
    """

    image: np.ndarray
    panels: list[dict] = field(default_factory=list)


def list_em_images(emps_dir: str | Path, split: str | None = None) -> list[Path]:
    """EMPS micrograph paths, optionally only those of ``train.csv`` or ``test.csv``.

    Parameters
    ----------
    emps_dir : path
        The EMPS folder (with ``images/``, ``train.csv``, ``test.csv``).
    split : {"train", "test", None}
    """
    root = Path(emps_dir)
    paths = sorted((root / "images").glob("*.png"))
    if split is None:
        return paths
    names = set((root / f"{split}.csv").read_text().split())
    return [p for p in paths if p.stem in names]


def _font(size_px: int, bold: bool = True) -> ImageFont.FreeTypeFont:
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size_px)


def render_em(path: Path, width_px: int, height_px: int, rng: np.random.Generator) -> np.ndarray:
    """A micrograph tile: a random crop of an EMPS image (its top-left label area cut away).

    Returns
    -------
    ndarray of uint8, shape (height_px, width_px, 3)
    """
    img = Image.open(path).convert("L")
    w, h = img.size
    top = int(0.14 * h)  # EMPS panels carry their own label in the top-left corner
    left = int(0.10 * w) if rng.random() < 0.5 else 0
    box_w = w - left
    box_h = h - top
    aspect = width_px / height_px
    if box_w / box_h > aspect:
        cw, ch = int(box_h * aspect), box_h
    else:
        cw, ch = box_w, int(box_w / aspect)
    x = left + int(rng.integers(0, box_w - cw + 1))
    y = top + int(rng.integers(0, box_h - ch + 1))
    tile = img.crop((x, y, x + cw, y + ch)).resize((width_px, height_px), Image.BILINEAR)
    return np.repeat(np.asarray(tile)[..., None], 3, axis=2)


def render_other(kind: str, width_px: int, height_px: int, rng: np.random.Generator) -> np.ndarray:
    """A non-EM panel rendered with matplotlib.

    Parameters
    ----------
    kind : str
        One of ``NON_EM_KINDS``.

    Returns
    -------
    ndarray of uint8, shape (height_px, width_px, 3)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if kind in ("diffraction", "photo"):
        return _render_image_like(kind, width_px, height_px, rng)
    dpi = 100
    fig = plt.figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    fs = float(rng.uniform(6, 10)) * min(1.0, max(0.6, min(width_px, height_px) / 300))
    try:
        ax = fig.add_subplot(111)
        x = np.linspace(0, 10, 400)
        if kind == "line":
            for k in range(int(rng.integers(1, 4))):
                ax.plot(x, np.sin(x * rng.uniform(0.3, 2) + k) * rng.uniform(0.5, 2) + k,
                        marker="o" if rng.random() < 0.3 else None, markevery=40)
            ax.set_xlabel("Time (h)", fontsize=fs)
            ax.set_ylabel("Absorbance (a.u.)", fontsize=fs)
            if rng.random() < 0.5:
                ax.legend([f"sample {k}" for k in range(3)], fontsize=fs * 0.8)
        elif kind == "spectrum":
            two_theta = np.linspace(10, 80, 1500)
            y = rng.normal(0, 0.01, two_theta.size) + 0.05
            for peak in rng.uniform(20, 75, int(rng.integers(3, 9))):
                y += rng.uniform(0.2, 1.0) * np.exp(-0.5 * ((two_theta - peak) / rng.uniform(0.15, 0.6)) ** 2)
            for k in range(int(rng.integers(1, 3))):
                ax.plot(two_theta, y + 0.6 * k, lw=0.8, color="k" if k == 0 else None)
            ax.set_xlabel("2θ (degree)" if rng.random() < 0.5 else "Wavelength (nm)", fontsize=fs)
            ax.set_ylabel("Intensity (a.u.)", fontsize=fs)
            ax.set_yticks([])
        elif kind == "bar":
            n = int(rng.integers(3, 8))
            ax.bar(np.arange(n), rng.uniform(1, 10, n), yerr=rng.uniform(0.1, 1, n),
                   color=None if rng.random() < 0.5 else "0.5")
            ax.set_ylabel("Cell viability (%)", fontsize=fs)
        elif kind == "histogram":
            d = rng.normal(rng.uniform(10, 60), rng.uniform(2, 10), 500)
            ax.hist(d, bins=int(rng.integers(10, 30)), color="0.6" if rng.random() < 0.5 else "tab:blue",
                    edgecolor="k")
            ax.set_xlabel("Diameter (nm)", fontsize=fs)
            ax.set_ylabel("Count", fontsize=fs)
        elif kind == "scatter":
            n = int(rng.integers(20, 200))
            ax.scatter(rng.normal(0, 1, n), rng.normal(0, 1, n), s=float(rng.uniform(5, 30)),
                       c=rng.random(n) if rng.random() < 0.5 else "k")
            ax.set_xlabel("Zeta potential (mV)", fontsize=fs)
        elif kind == "schematic":
            ax.set_xlim(0, 10)
            ax.set_ylim(0, 10)
            ax.axis("off")
            for k in range(int(rng.integers(2, 5))):
                cx, cy = rng.uniform(1, 9, 2)
                if rng.random() < 0.5:
                    ax.add_patch(matplotlib.patches.Circle((cx, cy), rng.uniform(0.5, 1.5),
                                                           color=rng.random(3)))
                else:
                    ax.add_patch(matplotlib.patches.FancyBboxPatch((cx - 1, cy - 0.6), 2, 1.2,
                                                                   boxstyle="round", fc=rng.random(3)))
                ax.text(cx, cy, ["Au", "PEG", "HAuCl4", "NaBH4", "Ag"][k], fontsize=fs, ha="center")
            ax.annotate("", xy=(8, 5), xytext=(2, 5), arrowprops=dict(arrowstyle="->", lw=2))
        elif kind == "colourmap":
            field_ = ndimage_smooth(rng.random((40, 40)), 3)
            im = ax.imshow(field_, cmap=str(rng.choice(["viridis", "jet", "hot", "RdBu"])))
            if rng.random() < 0.5:
                fig.colorbar(im, ax=ax)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            raise ValueError(f"unknown non-EM kind {kind!r}; use one of {NON_EM_KINDS}")
        ax.tick_params(labelsize=fs)
        fig.tight_layout(pad=0.3)
        fig.canvas.draw()
        rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    if rgb.shape[:2] != (height_px, width_px):
        rgb = np.asarray(Image.fromarray(rgb).resize((width_px, height_px), Image.BILINEAR))
    return rgb


def ndimage_smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smoothed copy of a 2-D float array."""
    from scipy import ndimage

    return ndimage.gaussian_filter(a, sigma)


def _render_image_like(kind: str, width_px: int, height_px: int, rng: np.random.Generator) -> np.ndarray:
    """Diffraction ring/spot patterns (grey, dark background) and colour photos (RGB)."""
    from scipy import ndimage

    rr, cc = np.mgrid[:height_px, :width_px].astype(np.float64)
    if kind == "diffraction":
        cy, cx = height_px / 2 + rng.normal(0, 3), width_px / 2 + rng.normal(0, 3)
        r = np.hypot(rr - cy, cc - cx)
        img = 0.6 * np.exp(-r / (0.05 * min(width_px, height_px)))
        if rng.random() < 0.6:  # polycrystalline rings
            for radius in np.cumsum(rng.uniform(0.06, 0.14, 5)) * min(width_px, height_px):
                img += rng.uniform(0.2, 0.7) * np.exp(-0.5 * ((r - radius) / rng.uniform(1, 3)) ** 2)
        else:  # single-crystal spots on a lattice
            a = rng.uniform(0.07, 0.15) * min(width_px, height_px)
            angle = rng.uniform(0, np.pi)
            for i in range(-5, 6):
                for j in range(-5, 6):
                    py = cy + a * (i * np.sin(angle) + j * np.cos(angle + 1.05))
                    px = cx + a * (i * np.cos(angle) - j * np.sin(angle + 1.05))
                    img += 0.8 * np.exp(-((rr - py) ** 2 + (cc - px) ** 2) / (2 * 2.5 ** 2))
        img += rng.normal(0, 0.03, img.shape)
        img = np.clip(img, 0, 1)
        grey = (img * 255).astype(np.uint8)
        if rng.random() < 0.3:
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=2)
    # colour photo: smooth colour blobs plus texture
    base = np.stack([ndimage.gaussian_filter(rng.random((height_px // 8 + 1, width_px // 8 + 1)), 2)
                     for _ in range(3)], axis=2)
    base = (base - base.min()) / (np.ptp(base) + 1e-9)
    big = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((width_px, height_px),
                                                                          Image.BICUBIC)).astype(float)
    big += rng.normal(0, 6, big.shape)
    return np.clip(big, 0, 255).astype(np.uint8)


def _scale_bar(tile: np.ndarray, rng: np.random.Generator) -> None:
    """Draw a white or black scale bar with text in the bottom-right corner, in place."""
    h, w = tile.shape[:2]
    img = Image.fromarray(tile)
    draw = ImageDraw.Draw(img)
    colour = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
    bar_w = int(w * rng.uniform(0.15, 0.3))
    bar_h = max(2, h // 60)
    x1, y1 = w - int(0.05 * w), h - int(0.06 * h)
    draw.rectangle((x1 - bar_w, y1 - bar_h, x1, y1), fill=colour)
    size = max(8, int(0.06 * h))
    draw.text((x1 - bar_w, y1 - bar_h - size - 2), f"{int(rng.choice([20, 50, 100, 200, 500]))} nm",
              fill=colour, font=_font(size, bold=False))
    tile[:] = np.asarray(img)


def _inset(tile: np.ndarray, em_tile: np.ndarray, rng: np.random.Generator) -> None:
    """Paste a framed inset into the top-right corner of a tile, in place."""
    h, w = tile.shape[:2]
    ih, iw = em_tile.shape[:2]
    frame = 3
    colour = 255 if rng.random() < 0.7 else 0
    y0, x0 = int(0.05 * h), w - iw - int(0.05 * w)
    tile[y0 - frame:y0 + ih + frame, x0 - frame:x0 + iw + frame] = colour
    tile[y0:y0 + ih, x0:x0 + iw] = em_tile


def _label_text(style: str, index: int) -> tuple[str, str]:
    """(printed text, ground-truth label) of the index-th label in a style."""
    letter = "abcdefghijklmnop"[index]
    if "A" in style:
        letter = letter.upper()
    return style.replace("a", letter).replace("A", letter), letter


def _layout(rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """Rows of (relative width, relative height) panel cells."""
    kind = rng.choice(["grid", "grid", "rows", "single", "tall_left"])
    if kind == "single":
        return [[(1.0, 1.0)]]
    if kind == "tall_left":
        return [[(1.0, 2.0), (1.0, 1.0)], [(1.0, 1.0)]]  # marker, handled in make_figure
    n_rows = int(rng.integers(1, 4))
    rows = []
    for _ in range(n_rows):
        n_cols = int(rng.integers(1, 4)) if kind == "rows" else None
        rows.append(n_cols)
    if kind == "grid":
        n_cols = int(rng.integers(2, 4))
        rows = [n_cols] * n_rows
    out = []
    for n in rows:
        widths = rng.uniform(0.7, 1.4, n) if kind == "rows" else np.ones(n)
        h = float(rng.uniform(0.7, 1.3)) if kind == "rows" else 1.0
        out.append([(float(wi), h) for wi in widths])
    return out


def make_figure(rng: np.random.Generator, em_paths: list[Path], width_px: int | None = None,
                em_fraction: float = 0.6) -> SynthFigure:
    """Compose one multi-panel figure.

    Parameters
    ----------
    rng : numpy Generator
        Source of all randomness (seed it for a reproducible figure).
    em_paths : list of Path
        EMPS micrographs to draw EM panels from.
    width_px : int, optional
        Figure width; random in [700, 2000] if None.
    em_fraction : float
        Probability that a panel is a micrograph.
    """
    width_px = int(width_px or rng.integers(700, 2001))
    black_bg = rng.random() < 0.2
    bg = 0 if black_bg else 255
    gutter = int(rng.choice([2, 4, 6, 10, 16, 24, 36]))
    label_style = str(rng.choice(LABEL_STYLES))
    label_where = str(rng.choice(["inside", "inside", "gutter"]))
    label_px = int(np.clip(width_px * rng.uniform(0.018, 0.03), 12, 60))
    if label_where == "gutter":
        gutter = max(gutter, label_px + 8)
    frame = rng.random() < 0.15
    layout = _layout(rng)
    tall_left = len(layout) == 2 and layout[0] == [(1.0, 2.0), (1.0, 1.0)]
    margin = gutter if rng.random() < 0.7 else 0
    if label_where == "gutter":
        margin = max(margin, label_px + 8)
    cells = []  # (x, y, w, h)
    if tall_left:
        usable = width_px - 2 * margin - gutter
        left_w = int(usable * rng.uniform(0.45, 0.65))
        right_w = usable - left_w
        right_h = int(right_w * rng.uniform(0.6, 0.9))
        total_h = 2 * right_h + gutter
        cells = [(margin, margin, left_w, total_h), (margin + left_w + gutter, margin, right_w, right_h),
                 (margin + left_w + gutter, margin + right_h + gutter, right_w, right_h)]
    elif len(layout) == 1 and len(layout[0]) == 1:
        w = width_px - 2 * margin
        cells = [(margin, margin, w, int(w * rng.uniform(0.6, 1.0)))]
    else:
        y = margin
        for row in layout:
            total = sum(wi for wi, _ in row)
            usable = width_px - 2 * margin - gutter * (len(row) - 1)
            base_h = usable / len(row) * rng.uniform(0.65, 0.95) * row[0][1]
            x = margin
            for k, (wi, _) in enumerate(row):
                cw = int(usable * wi / total) if k < len(row) - 1 else width_px - margin - x
                ch = int(base_h * (rng.uniform(0.8, 1.0) if rng.random() < 0.3 else 1.0))
                cells.append((x, y, cw, ch))
                x += cw + gutter
            y += int(base_h) + gutter
    height_px = max(y + h for _, y, _, h in cells) + margin
    canvas = np.full((height_px, width_px, 3), bg, dtype=np.uint8)
    truth = []
    font = _font(label_px)
    for index, (x, y, w, h) in enumerate(cells):
        is_em = rng.random() < em_fraction
        if is_em:
            path = em_paths[int(rng.integers(len(em_paths)))]
            tile = render_em(path, w, h, rng)
            source = path.stem
            if rng.random() < 0.6:
                _scale_bar(tile, rng)
            if rng.random() < 0.15 and min(w, h) > 200:
                ip = em_paths[int(rng.integers(len(em_paths)))]
                _inset(tile, render_em(ip, w // 3, h // 3, rng), rng)
        else:
            kind = str(rng.choice(NON_EM_KINDS))
            tile = render_other(kind, w, h, rng)
            source = kind
        box = [x, y, x + w, y + h]
        if frame:
            tile[:2, :] = tile[-2:, :] = tile[:, :2] = tile[:, -2:] = 0
        elif not is_em:  # a plot on the figure's background ends where its ink ends
            ink = (np.abs(tile.astype(np.int16) - bg) > 8).any(axis=2)
            rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
            if rows.size:
                box = [x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1]
        canvas[y:y + h, x:x + w] = tile
        text, label = _label_text(label_style, index)
        truth.append({"bbox": box, "label": label, "kind": "em" if is_em else "other",
                      "source": source})
        _draw_label(canvas, text, (x, y), label_where, label_px, font, bg, rng)
    return SynthFigure(image=canvas, panels=truth)


def _draw_label(canvas: np.ndarray, text: str, corner: tuple[int, int], where: str, size_px: int,
                font, bg: int, rng: np.random.Generator) -> None:
    """Print a panel label in the gutter above-left of the corner or inside the corner, in place."""
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    x, y = corner
    if where == "gutter":
        pos = (x, max(0, y - size_px - 6))
        fill = (0, 0, 0) if bg == 255 else (255, 255, 255)
        draw.text(pos, text, font=font, fill=fill)
    else:
        pos = (x + max(3, size_px // 3), y + max(2, size_px // 5))
        patch = canvas[pos[1]:pos[1] + size_px, pos[0]:pos[0] + size_px]
        light = patch.size and patch.mean() > 127
        if rng.random() < 0.25:  # label on a box
            box_fill = (255, 255, 255) if light else (0, 0, 0)
            l, t, r, b = draw.textbbox(pos, text, font=font)
            draw.rectangle((l - 3, t - 3, r + 3, b + 3), fill=box_fill)
        fill = (0, 0, 0) if light else (255, 255, 255)
        draw.text(pos, text, font=font, fill=fill)
    canvas[:] = np.asarray(img)


def make_panel_set(n: int, seed: int, em_paths: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
    """Single panels with their truth (1 = EM) for calibrating and testing the EM classifier.

    Half are crops of EMPS micrographs (with scale bars and labels as in figures), half are
    non-EM renders spread over ``NON_EM_KINDS``.

    Returns
    -------
    images : list of ndarray of uint8, shape (h, w, 3)
    is_em : ndarray of int, shape (n,)
    """
    rng = np.random.default_rng(seed)
    images, truth = [], []
    for i in range(n):
        w = int(rng.integers(180, 700))
        h = int(w * rng.uniform(0.6, 1.3))
        if i % 2 == 0:
            path = em_paths[int(rng.integers(len(em_paths)))]
            tile = render_em(path, w, h, rng)
            if rng.random() < 0.6:
                _scale_bar(tile, rng)
            truth.append(1)
        else:
            tile = render_other(NON_EM_KINDS[(i // 2) % len(NON_EM_KINDS)], w, h, rng)
            truth.append(0)
        if rng.random() < 0.3:  # JPEG round trip, as in publisher figures
            buf = io.BytesIO()
            Image.fromarray(tile).save(buf, format="JPEG", quality=int(rng.integers(60, 95)))
            tile = np.asarray(Image.open(buf).convert("RGB"))
        images.append(tile)
    return images, np.array(truth)
