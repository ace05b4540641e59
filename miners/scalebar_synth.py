"""Synthetic scale bars drawn on micrographs, with their ground truth, for tests and benchmarks.

:func:`draw_scalebar` paints a bar and its label (DejaVu fonts shipped with matplotlib) onto a
background image; :func:`make_synthetic_case` picks random text, size, colours, position, label
box, end ticks, noise and JPEG quality.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from miners.images import to_rgb
from miners.scalebar import NM_PER_PX_RANGE, NM_PER_UNIT

FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf")
LABELS = (
    (200, "nm", "200 nm"), (100, "nm", "100 nm"), (50, "nm", "50 nm"), (20, "nm", "20nm"),
    (500, "nm", "500 nm"), (0.5, "µm", "0.5 µm"), (1, "µm", "1 µm"), (2, "µm", "2 μm"),
    (1000, "nm", "1,000 nm"), (10, "Å", "10 Å"), (5, "nm", "5 nm"), (1, "µm", "1 um"),
    (10, "µm", "10 µm"), (0.2, "µm", "0.2 µm"),
)




@dataclass
class SyntheticCase:
    """One synthetic micrograph and what its scale bar says."""

    image: np.ndarray  # uint8 (H, W, 3)
    value: float
    unit: str
    text: str
    bar_px: int
    bar_bbox: tuple[int, int, int, int]  # (row0, col0, row1, col1), end exclusive
    # how it was drawn: font, font_px, thickness_px, colour, box_colour, ticks, text_above,
    # noise_sigma (None: no noise), jpeg_quality (None: not compressed)
    params: dict = field(default_factory=dict)


def font_path(name: str = "DejaVuSans.ttf") -> str:
    """Path of a DejaVu font shipped with matplotlib."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)


def draw_scalebar(background: np.ndarray, text: str, bar_px: int, *, row: int, col: int,
                  thickness_px: int = 6, font_px: int = 20, colour=(255, 255, 255),
                  box_colour=None, ticks: bool = False, text_above: bool = True,
                  font: str = "DejaVuSans.ttf") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw a bar of ``bar_px`` pixels with ``text`` centred above or below it.

    Parameters
    ----------
    background : ndarray, shape (H, W) or (H, W, 3)
        Image to draw on (not changed).
    row, col : int
        Top-left pixel of the bar body.
    box_colour : tuple of int, optional
        Fill a label box behind bar and text.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)
    bar_bbox : (row0, col0, row1, col1)
        Bar body, end exclusive.
    """
    img = Image.fromarray(to_rgb(background).copy())
    draw = ImageDraw.Draw(img)
    pil_font = ImageFont.truetype(font_path(font), font_px)
    tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), text, font=pil_font)
    text_w, text_h = tx1 - tx0, ty1 - ty0
    gap = max(3, font_px // 4)
    text_x = col + bar_px / 2 - text_w / 2 - tx0
    text_y = row - gap - text_h - ty0 if text_above else row + thickness_px + gap - ty0
    if box_colour is not None:
        pad = max(4, font_px // 3)
        top = min(row, text_y + ty0) - pad
        bottom = max(row + thickness_px, text_y + ty0 + text_h) + pad
        left = min(col, text_x + tx0) - pad
        right = max(col + bar_px, text_x + tx0 + text_w) + pad
        draw.rectangle([left, top, right, bottom], fill=tuple(box_colour))
    draw.rectangle([col, row, col + bar_px - 1, row + thickness_px - 1], fill=tuple(colour))
    if ticks:
        tick = max(3, thickness_px)
        for x in (col, col + bar_px - max(1, thickness_px // 2)):
            draw.rectangle([x, row - tick, x + max(1, thickness_px // 2) - 1, row + thickness_px + tick - 1],
                           fill=tuple(colour))
    draw.text((text_x, text_y), text, font=pil_font, fill=tuple(colour))
    return np.asarray(img), (row, col, row + thickness_px, col + bar_px)


def make_synthetic_case(background: np.ndarray, rng: np.random.Generator) -> SyntheticCase:
    """Random bar, label, style and degradation on ``background`` (uint8, (H, W) or (H, W, 3))."""
    base = to_rgb(background)
    height, width = base.shape[:2]
    value, unit, text = LABELS[rng.integers(len(LABELS))]
    bar_px = int(rng.integers(max(20, width // 12), max(21, width // 3)))
    # no micrograph has pixels finer than the reader's bound, NM_PER_PX_RANGE[0] (a "10 Å" bar over
    # 220 px would be 0.045 Å/px): such a bar is shortened (no extra random draw, so every other
    # case stays as it was)
    bar_px = min(bar_px, int(value * NM_PER_UNIT[unit] / NM_PER_PX_RANGE[0]))
    font_px = int(rng.integers(max(11, height // 40), max(12, height // 16)))
    thickness = int(rng.integers(2, max(3, font_px // 2)))
    margin = font_px * 2 + 10
    right = rng.random() < 0.5
    col = width - bar_px - margin // 2 - 10 if right else margin // 2 + 10
    top = rng.random() < 0.15
    row = margin + 5 if top else height - margin // 2 - thickness - 5
    # authors pick a colour that shows: dark bars on light ground and the reverse
    region = base[max(0, row - margin):row + margin, max(0, col - 10):col + bar_px + 10]
    ground_light = float(region.mean()) > 127
    style = rng.integers(4)
    if style in (0, 1):
        colour, box = ((0, 0, 0) if ground_light else (255, 255, 255)), None
    elif style == 2:
        colour, box = ((0, 0, 0), (255, 255, 255)) if rng.random() < 0.5 else ((255, 255, 255), (0, 0, 0))
    else:
        colour, box = [(255, 255, 0), (255, 0, 0), (0, 255, 0)][rng.integers(3)], None
    text_above = rng.random() < 0.7
    if not text_above:
        row -= font_px + 10
    font = FONTS[rng.integers(len(FONTS))]
    ticks = bool(rng.random() < 0.2)
    image, bbox = draw_scalebar(base, text, bar_px, row=row, col=col, thickness_px=thickness,
                                font_px=font_px, colour=colour, box_colour=box,
                                ticks=ticks, text_above=text_above, font=font)
    noise_sigma = jpeg_quality = None
    if rng.random() < 0.5:
        noise_sigma = float(rng.uniform(2, 10))
        noise = rng.normal(0, noise_sigma, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        jpeg_quality = int(rng.integers(50, 95))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
        image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    params = dict(font=font, font_px=font_px, thickness_px=thickness, colour=tuple(colour),
                  box_colour=None if box is None else tuple(box), ticks=ticks,
                  text_above=bool(text_above), noise_sigma=noise_sigma, jpeg_quality=jpeg_quality)
    return SyntheticCase(image=image, value=float(value), unit=unit, text=text, bar_px=bar_px,
                         bar_bbox=bbox, params=params)
