"""Split a multi-panel figure into panels, read their labels and tell EM micrographs from the rest.

The splitter is a recursive XY-cut on gutters: rows of the figure that hold no *large* content
(pixels that are neither near-white nor near-black, grouped into connected components taller or
wider than a label) separate panels; the cut is tried on rows, then on columns, then again inside
each piece. Small components (labels, tick labels, JPEG speckle) do not block a gutter, so labels
sitting in a gutter are tolerated. A gutter must hold at least one flat line from end to end, so
a textured dark stripe inside a micrograph is never cut. Pieces that are too small, thin strips
(colour bars) or small sparse fragments (parts of a schematic) are merged back into their
neighbour. A leaf that still holds several separate image regions with flat gaps between them (an
irregular layout) is split into those regions. Panel boxes end where the panel's ink ends (pixels
unlike the figure background), plus the tick labels of sparse panels.

Labels are read with tesseract on small corner crops only, all crops of a figure batched into a
single tesseract call. The EM / other decision is a logistic model on a handful of measurable cues
(grey-level statistics, flat areas, colour, straight axes lines, centro-symmetry), calibrated with
``benchmarks/calibrate_em.py`` on EMPS micrographs and matplotlib-rendered non-EM panels.
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from idx.errors import ImageError
from miners.images import as_uint8, to_gray
from miners.ocr import image_to_data

log = logging.getLogger(__name__)

WHITE_LEVEL = 243  # grey >= this is gutter white
BLACK_LEVEL = 12  # grey <= this is gutter black
MIN_PANEL_PX = 24  # a panel is at least this many pixels on each side
MIN_PANEL_FRACTION = 0.04  # ... and at least this fraction of the figure's longer side
SMALL_COMPONENT_FRACTION = 0.045  # a component smaller than this (x longer side) is text or speckle
SMALL_COMPONENT_MIN_PX = 24
FLAT_BAND_TOLERANCE = 3  # grey levels around a gutter's level
FLAT_BAND_FRACTION = 0.9  # of a gutter line's pixels at its level (the rest: labels, JPEG noise)
MIN_TEXT_AREA_PX = 6  # smaller specks are noise, not text
MAX_TEXT_COMPONENTS = 3000
DENSE_FILL = 0.6  # large content fills more than this of a panel's box: an image, not a plot
MIN_SPARSE_FRACTION = 0.15  # a sparse panel spans at least this fraction of the figure
MAX_ASPECT = 5.0  # content longer than this times its width is a bar or a line, not a panel
INSET_MIN_FRACTION = 0.12  # an inset is at least this fraction of its panel's side
MAX_SPLIT_PIXELS = 12_000_000  # bigger figures are split on a 2x max-pooled content mask
LABEL_PATTERN = re.compile(r"^\(?([A-Za-z])(\d{0,2})\)?[.:]?$")
LABEL_OCR_HEIGHT_PX = 40
LABEL_CONF_MIN = 20  # tesseract's word confidence (0-100) below which a label is not taken
LABEL_LINE_MIN_PX = 25  # straight runs this long (and LABEL_LINE_FRACTION x figure side, and
LABEL_LINE_FRACTION = 0.05  # ... LABEL_LINE_PANEL_FRACTION x the panel's shorter side) are lines,
LABEL_LINE_PANEL_FRACTION = 0.15  # ... not letters: labels are up to ~12 % of a panel's side tall
GLYPH_DARK_MAX = 70  # mean grey of a dark printed letter is at most this
GLYPH_LIGHT_MIN = 185
GLYPH_STD_MAX = 40
GLYPH_FILL_MAX = 0.74  # a letter wider than a stroke fills at most this of its box
GLYPH_CONTRAST_MIN = 90  # grey difference between a letter and the ring around it
GLYPH_CONTRAST_WEAK = 50  # ... a glyph this faint only joins a crisper one on its text line
TEXTURE_REPEATS = 4  # a lone glyph with this many blobs of its height in the window is texture
LABEL_MAX_SEEDS = 8  # other glyphs near the corner whose text line may hold the nearest one
INSIDE_LABEL_PENALTY = 2.0  # text inside the panel counts as this much farther from its corner
EM_THRESHOLD = 0.5  # em_score >= this: kind "em"


@dataclass
class Panel:
    """One panel of a figure.

    Attributes
    ----------
    bbox : tuple of int
        ``(x0, y0, x1, y1)`` in pixels of the input figure; ``x1`` and ``y1`` are exclusive.
    label : str or None
        Panel label as printed (``"a"``, ``"B"``, ``"d1"``), brackets removed; None if unread.
    kind : str
        ``"em"`` for an electron micrograph, ``"other"`` for plots, spectra, diffraction
        patterns, schematics and photos.
    em_score : float
        Probability-like score in [0, 1] that the panel is an EM micrograph.
    inset : bool
        True for an inset found inside another panel (only with ``insets=True``).
    """

    bbox: tuple[int, int, int, int]
    label: str | None = None
    kind: str = "other"
    em_score: float = 0.0
    inset: bool = False

    @property
    def width_px(self) -> int:
        return self.bbox[2] - self.bbox[0]

    @property
    def height_px(self) -> int:
        return self.bbox[3] - self.bbox[1]

    def to_dict(self) -> dict:
        """JSON-ready ``{"bbox": [x0, y0, x1, y1], "label": ..., "kind": ..., "em_score": ...}``."""
        out = {"bbox": [int(v) for v in self.bbox], "label": self.label, "kind": self.kind,
               "em_score": round(float(self.em_score), 3)}
        if self.inset:
            out["inset"] = True
        return out


# ----------------------------------------------------------------------------------------------
# public API


def split_panels(figure: np.ndarray, read_labels: bool = True, classify: bool = True,
                 insets: bool = False) -> list[Panel]:
    """Split a figure into its panels, in reading order.

    Parameters
    ----------
    figure : ndarray, shape (H, W) or (H, W, 3) or (H, W, 4)
        The figure; any dtype (converted with ``miners.images.as_uint8``).
    read_labels : bool
        Read each panel's letter with tesseract (skipped with a warning if tesseract is missing).
    classify : bool
        Decide EM / other for each panel (``kind``, ``em_score``); otherwise kind is "other".
    insets : bool
        Also return insets (framed sub-images inside a panel) as extra panels with ``inset=True``.

    Returns
    -------
    list of Panel
        Reading order: top to bottom by rows of panels, left to right inside a row. A single
        image gives one panel; a blank figure gives an empty list.
    """
    image = as_uint8(figure)
    gray = _to_gray_fast(image)
    height, width = gray.shape
    if min(height, width) < 8:
        raise ImageError(f"figure of {width}x{height} pixels is too small to split; "
                         "need at least 8 px a side")
    if int(gray.max()) - int(gray.min()) <= 2:
        log.info("figure %dx%d is one flat grey level; no panels", width, height)
        return []
    content = (gray > BLACK_LEVEL) & (gray < WHITE_LEVEL)
    content_full = content
    scale = 1
    if gray.size > MAX_SPLIT_PIXELS:
        scale = 2
        h2, w2 = height // 2 * 2, width // 2 * 2
        content = content[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).any(axis=(1, 3))
    large = _large_content(content)
    if not large.any():
        log.info("figure %dx%d has no image content; no panels", width, height)
        return []
    # "ink": anything that differs from the figure's background (a white plot on a black figure)
    ink = gray < WHITE_LEVEL if _background_is_white(gray) else gray > BLACK_LEVEL
    ink_small = ink
    if scale > 1:
        ink_small = ink[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2).any(axis=(1, 3))
    min_side = max(MIN_PANEL_PX // scale, int(MIN_PANEL_FRACTION * max(content.shape)))
    boxes = _xy_cut(large, (0, content.shape[0], 0, content.shape[1]), min_side, depth=0,
                    gray=gray, scale=scale, ink=ink_small)
    boxes = [b for box in boxes for b in _split_regions(large, box, min_side, gray, scale)]
    limit = max(SMALL_COMPONENT_MIN_PX, SMALL_COMPONENT_FRACTION * max(height, width))
    panels = []
    for r0, r1, c0, c1 in boxes:
        r0, r1, c0, c1 = r0 * scale, min(height, r1 * scale), c0 * scale, min(width, c1 * scale)
        if scale == 1:
            cell_large = large[r0:r1, c0:c1]
        else:  # back to full resolution: pooled large content, kept where there is content
            pooled = large[r0 // 2:-(-r1 // 2), c0 // 2:-(-c1 // 2)]
            up = np.repeat(np.repeat(pooled, 2, axis=0), 2, axis=1)
            up = up[r0 % 2:r0 % 2 + r1 - r0, c0 % 2:c0 % 2 + c1 - c0]
            cell_large = np.zeros((r1 - r0, c1 - c0), dtype=bool)
            cell_large[:up.shape[0], :up.shape[1]] = up
            cell_large &= content_full[r0:r1, c0:c1]
        cell_large = cell_large | _large_content(ink[r0:r1, c0:c1], limit)
        r0, r1, c0, c1 = _tighten(ink, cell_large, (r0, r1, c0, c1))
        if r1 - r0 >= MIN_PANEL_PX // 2 and c1 - c0 >= MIN_PANEL_PX // 2:
            panels.append(Panel(bbox=(c0, r0, c1, r1)))
    if len(panels) == 1 and not _margins_are_flat(gray, panels[0].bbox):
        panels[0].bbox = (0, 0, width, height)  # one image filling the figure, dark or light edges
    panels = sort_reading_order(panels)
    if insets:
        panels = panels + [p for panel in panels for p in _find_insets(gray, panel)]
    if classify:
        for panel in panels:
            panel.kind, panel.em_score = classify_panel(crop_panel(image, panel))
    if read_labels and panels:
        labels = read_panel_labels(gray, panels)
        for panel, label in zip(panels, labels):
            panel.label = label
    return panels


def _background_is_white(gray: np.ndarray) -> bool:
    """Whether the figure's background (its outer ring, else all its flat pixels) is white."""
    ring = np.concatenate([gray[:3].ravel(), gray[-3:].ravel(), gray[:, :3].ravel(), gray[:, -3:].ravel()])
    white, black = int((ring >= WHITE_LEVEL).sum()), int((ring <= BLACK_LEVEL).sum())
    if white + black < 0.5 * ring.size:
        step = max(1, gray.size // 1_000_000)
        sample = gray.ravel()[::step]
        white, black = int((sample >= WHITE_LEVEL).sum()), int((sample <= BLACK_LEVEL).sum())
    return white >= black


def _margins_are_flat(gray: np.ndarray, bbox) -> bool:
    """Whether the strips between a panel and the figure's edges are flat background."""
    x0, y0, x1, y1 = bbox
    strips = [gray[:y0, :], gray[y1:, :][::-1], gray[:, :x0].T, gray[:, x1:].T[::-1]]
    return all(_is_flat_band(strip) for strip in strips if strip.shape[0] >= 3)


def _to_gray_fast(image: np.ndarray) -> np.ndarray:
    """uint8 luminance like ``miners.images.to_gray``, in integer arithmetic (faster)."""
    if image.ndim == 2:
        return image
    rgb = image.astype(np.uint32)
    return ((rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114 + 500) // 1000).astype(np.uint8)


def crop_panel(figure: np.ndarray, panel: Panel) -> np.ndarray:
    """The pixels of one panel, a view into ``figure``.

    Parameters
    ----------
    figure : ndarray, shape (H, W) or (H, W, C)
    panel : Panel
        A panel of this figure (``bbox`` in its pixels).

    Returns
    -------
    ndarray, shape (y1 - y0, x1 - x0) or (y1 - y0, x1 - x0, C)
    """
    x0, y0, x1, y1 = (int(v) for v in panel.bbox)
    height, width = figure.shape[:2]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ImageError(f"panel bbox {panel.bbox} lies outside the {width}x{height} figure; "
                         "pass the figure the panel was split from")
    return figure[y0:y1, x0:x1]


def sort_reading_order(panels: list[Panel]) -> list[Panel]:
    """Panels sorted top to bottom by rows, then left to right.

    Two panels share a row when their vertical extents overlap by more than half of the shorter.
    """
    rows: list[list[Panel]] = []
    for panel in sorted(panels, key=lambda p: (p.bbox[1], p.bbox[0])):
        for row in rows:
            top = min(p.bbox[1] for p in row)
            bottom = max(p.bbox[3] for p in row)
            overlap = min(bottom, panel.bbox[3]) - max(top, panel.bbox[1])
            if overlap > 0.5 * min(panel.height_px, bottom - top):
                row.append(panel)
                break
        else:
            rows.append([panel])
    return [p for row in rows for p in sorted(row, key=lambda p: p.bbox[0])]


# ----------------------------------------------------------------------------------------------
# splitting


def _large_content(content: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Content pixels in connected components bigger than text (bool, same shape).

    A component is large when its box spans ``limit`` px (default: a fraction of the longer side).
    """
    labels, count = ndimage.label(content, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros_like(content)
    if limit is None:
        limit = max(SMALL_COMPONENT_MIN_PX, SMALL_COMPONENT_FRACTION * max(content.shape))
    keep = np.zeros(count + 1, dtype=bool)
    for index, sl in _component_boxes(labels, count, min_area=int(limit)):  # spanning limit px
        if max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) >= limit:
            keep[index] = True
    return keep[labels]


def _component_boxes(labels: np.ndarray, count: int, min_area: int) -> list[tuple[int, tuple]]:
    """(label, slices) of the components with at least ``min_area`` pixels.

    Components are renumbered before ``find_objects`` so that images with many thousands of
    specks (noise, texture) stay fast.
    """
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    areas[0] = 0
    chosen = np.flatnonzero(areas >= max(1, min_area))
    if chosen.size == 0:
        return []
    compact = np.zeros(count + 1, dtype=np.int32)
    compact[chosen] = np.arange(1, chosen.size + 1)
    slices = ndimage.find_objects(compact[labels])
    return [(int(index), sl) for index, sl in zip(chosen, slices) if sl is not None]


def _segments(sub: np.ndarray, axis: int, min_side: int, figure_side: int,
              sub_ink: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Runs of content along ``axis`` of ``sub`` as [start, stop); weak runs merged into a neighbour.

    A run is weak when it is shorter than ``min_side``, when it is sparse (a plot or schematic
    fragment: ink, anything unlike the figure background, fills under ``DENSE_FILL`` of its
    box) and shorter than
    ``MIN_SPARSE_FRACTION`` of ``figure_side``, or when its content is a thin strip
    (a colour bar, a separator line: ``MAX_ASPECT`` times longer across than along the axis).
    """
    profile = sub.sum(axis=1 - axis)
    filled = profile > 0
    if not filled.any():
        return []
    edges = np.flatnonzero(np.diff(np.r_[0, filled.astype(np.int8), 0]))
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]

    def weak(run) -> bool:
        a, b = run
        part = sub[a:b] if axis == 0 else sub[:, a:b]
        across = np.flatnonzero(part.any(axis=axis))
        extent = int(across[-1] + 1 - across[0]) if across.size else 0
        ink_part = (sub_ink[a:b] if axis == 0 else sub_ink[:, a:b]) if sub_ink is not None else part
        if across.size:
            ink_part = ink_part[:, across[0]:across[-1] + 1] if axis == 0 else ink_part[across[0]:across[-1] + 1]
        fill = ink_part.sum() / max(1, (b - a) * extent)
        sparse_small = fill < DENSE_FILL and b - a < MIN_SPARSE_FRACTION * figure_side
        return b - a < min_side or (b - a) * MAX_ASPECT < extent or sparse_small

    while len(runs) > 1:
        flags = [weak(r) for r in runs]
        if not any(flags):
            break
        i = min((k for k in range(len(runs)) if flags[k]), key=lambda k: runs[k][1] - runs[k][0])
        gap_before = runs[i][0] - runs[i - 1][1] if i > 0 else np.inf
        gap_after = runs[i + 1][0] - runs[i][1] if i + 1 < len(runs) else np.inf
        j = i - 1 if gap_before <= gap_after else i + 1
        runs[min(i, j)] = [min(runs[i][0], runs[j][0]), max(runs[i][1], runs[j][1])]
        del runs[max(i, j)]
    return [tuple(r) for r in runs]


def _cut(large: np.ndarray, box, axis: int, min_side: int, gray: np.ndarray | None = None,
         scale: int = 1, ink: np.ndarray | None = None) -> list[tuple[int, int, int, int]]:
    """Cut ``box`` (r0, r1, c0, c1) along rows (axis 0) or columns (axis 1) at empty bands.

    With ``gray`` (the full-resolution figure; ``large`` is ``scale`` times smaller), a band is
    a gutter only if it is flat (``_is_flat_band``): a dark or bright stripe with texture inside
    one micrograph is not cut.
    """
    r0, r1, c0, c1 = box
    sub = large[r0:r1, c0:c1]
    sub_ink = ink[r0:r1, c0:c1] if ink is not None else sub
    runs = _segments(sub, axis, min_side, large.shape[axis], sub_ink)
    if gray is not None and len(runs) > 1:
        kept = [list(runs[0])]
        for a, b in runs[1:]:
            gap = (kept[-1][1], a)
            if axis == 0:
                band = gray[(r0 + gap[0]) * scale:(r0 + gap[1]) * scale, c0 * scale:c1 * scale]
            else:
                band = gray[r0 * scale:r1 * scale, (c0 + gap[0]) * scale:(c0 + gap[1]) * scale].T
            if _is_flat_band(band):
                kept.append([a, b])
            else:
                kept[-1][1] = b
        runs = [tuple(r) for r in kept]
    if len(runs) < 2:
        return [box]
    length = sub.shape[axis]
    out = []
    for i, (a, b) in enumerate(runs):
        start = 0 if i == 0 else (runs[i - 1][1] + a) // 2
        stop = length if i == len(runs) - 1 else (b + runs[i + 1][0]) // 2
        out.append((r0 + start, r0 + stop, c0, c1) if axis == 0 else (r0, r1, c0 + start, c0 + stop))
    return out


def _is_flat_band(band: np.ndarray) -> bool:
    """True if a gutter band (rows run along the cut) holds at least one flat line.

    A gutter has a line from end to end at one grey level (labels in it aside): at least
    ``FLAT_BAND_FRACTION`` of the line's pixels within ``FLAT_BAND_TOLERANCE`` of its median. A
    dark or bright stripe with noise or texture inside one micrograph has no such line.
    """
    if band.size == 0:
        return True
    lines = band.astype(np.int16)
    median = np.median(lines, axis=1, keepdims=True)
    flat = (np.abs(lines - median) <= FLAT_BAND_TOLERANCE).mean(axis=1)
    return bool(flat.max() >= FLAT_BAND_FRACTION)


def _xy_cut(large: np.ndarray, box, min_side: int, depth: int, first_axis: int = 0,
            gray: np.ndarray | None = None, scale: int = 1, ink: np.ndarray | None = None) -> list:
    """Recursive XY-cut of ``box``; returns leaf boxes (r0, r1, c0, c1)."""
    if depth > 12:
        return [box]
    for axis in (first_axis, 1 - first_axis):
        pieces = _cut(large, box, axis, min_side, gray, scale, ink)
        if len(pieces) > 1:
            return [leaf for piece in pieces
                    for leaf in _xy_cut(large, piece, min_side, depth + 1, 1 - axis, gray, scale, ink)]
    if depth == 0:  # a thin frame drawn around the whole figure
        stripped = _strip_frame(large, box)
        if stripped is not None:
            pieces = _xy_cut(stripped, box, min_side, depth + 1, first_axis, gray, scale, ink)
            area = (box[1] - box[0]) * (box[3] - box[2])
            if len(pieces) > 1 and all((b - a) * (d - c) > 0.04 * area for a, b, c, d in pieces):
                return pieces
    return [box]


def _strip_frame(large: np.ndarray, box) -> np.ndarray | None:
    """``large`` without a thin rectangular frame drawn around the whole box, or None if none."""
    r0, r1, c0, c1 = box
    sub = large[r0:r1, c0:c1]
    h, w = sub.shape
    if h < 20 or w < 20:
        return None
    band = 4
    rows_full = sub.mean(axis=1) > 0.9
    cols_full = sub.mean(axis=0) > 0.9
    top = rows_full[:band].any() and rows_full[-band:].any()
    sides = cols_full[:band].any() and cols_full[-band:].any()
    if not (top and sides):
        return None
    out = large.copy()
    inner = out[r0:r1, c0:c1]
    for idx in np.flatnonzero(rows_full[:band]).tolist() + (h - band + np.flatnonzero(rows_full[-band:])).tolist():
        inner[idx, :] = False
    for idx in np.flatnonzero(cols_full[:band]).tolist() + (w - band + np.flatnonzero(cols_full[-band:])).tolist():
        inner[:, idx] = False
    return out


def _split_regions(large: np.ndarray, box, min_side: int, gray: np.ndarray | None = None,
                   scale: int = 1) -> list:
    """Split a leaf into separate image regions when no straight gutter exists (irregular layout).

    Neighbouring regions must be apart by a flat gap (``_is_flat_band``), so a micrograph is not
    cut along a textured dark stripe.
    """
    r0, r1, c0, c1 = box
    sub = large[r0:r1, c0:c1]
    # regions of a 4x max-pooled mask (fast; gaps under 4 px are bridged)
    k = 4
    h4, w4 = -(-sub.shape[0] // k), -(-sub.shape[1] // k)
    pooled = np.zeros((h4 * k, w4 * k), dtype=bool)
    pooled[:sub.shape[0], :sub.shape[1]] = sub
    pooled = pooled.reshape(h4, k, w4, k).any(axis=(1, 3))
    labels, count = ndimage.label(pooled, structure=np.ones((3, 3), bool))
    if count < 2:
        return [box]
    regions = []
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        rs = slice(sl[0].start * k, min(sub.shape[0], sl[0].stop * k))
        cs = slice(sl[1].start * k, min(sub.shape[1], sl[1].stop * k))
        if rs.stop - rs.start >= 2 * min_side and cs.stop - cs.start >= 2 * min_side:
            regions.append([rs.start, rs.stop, cs.start, cs.stop])
        elif (labels[sl] == index).sum() * k * k > 0.02 * sub.size:
            return [box]  # a big part of the leaf that is no panel: not a clean layout
    # merge boxes that overlap (plot curves inside axes, insets inside micrographs)
    merged = True
    while merged:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                a, b = regions[i], regions[j]
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    regions[i] = [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    if len(regions) < 2:
        return [box]
    for a, b, c, d in regions:  # only image-like regions make an irregular layout
        if sub[a:b, c:d].mean() < DENSE_FILL:
            return [box]
    if gray is not None:
        for i, p in enumerate(regions):
            for q in regions[i + 1:]:
                top, bottom = sorted((p, q), key=lambda r: r[0])
                left, right = sorted((p, q), key=lambda r: r[2])
                c_lo, c_hi = max(p[2], q[2]), min(p[3], q[3])
                r_lo, r_hi = max(p[0], q[0]), min(p[1], q[1])
                band = None
                if c_hi > c_lo and bottom[0] > top[1]:
                    band = gray[(r0 + top[1]) * scale:(r0 + bottom[0]) * scale,
                                (c0 + c_lo) * scale:(c0 + c_hi) * scale]
                elif r_hi > r_lo and right[2] > left[3]:
                    band = gray[(r0 + r_lo) * scale:(r0 + r_hi) * scale,
                                (c0 + left[3]) * scale:(c0 + right[2]) * scale].T
                if band is not None and not _is_flat_band(band):
                    return [box]
    return [(r0 + a, r0 + b, c0 + c, c0 + d) for a, b, c, d in regions]


def _tighten(content: np.ndarray, sub_large: np.ndarray, box) -> tuple[int, int, int, int]:
    """Shrink a cell to its content: the large content, plus nearby text for sparse panels.

    ``content`` is the whole figure's content mask; ``sub_large`` the cell's large content.
    """
    r0, r1, c0, c1 = box
    rows = np.flatnonzero(sub_large.any(axis=1))
    cols = np.flatnonzero(sub_large.any(axis=0))
    if rows.size == 0:
        return box
    a, b, c, d = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    fill = sub_large[a:b, c:d].mean()
    if fill < DENSE_FILL:  # a plot or schematic: keep its tick and axis labels
        a, b, c, d = _add_nearby_text(content[r0:r1, c0:c1], (a, b, c, d))
    return r0 + int(a), r0 + int(b), c0 + int(c), c0 + int(d)


def _add_nearby_text(content: np.ndarray, box) -> tuple[int, int, int, int]:
    """Grow ``box`` (r0, r1, c0, c1) by the text left of, below and right of it (tick labels).

    Text above the box, or level with its top-left corner, is left out: that is where panel
    labels sit.
    """
    a, b, c, d = box
    h, w = b - a, d - c
    reach = 0.2 * max(h, w)
    labels, count = ndimage.label(content, structure=np.ones((3, 3), bool))
    boxes = _component_boxes(labels, count, min_area=MIN_TEXT_AREA_PX)
    if len(boxes) > MAX_TEXT_COMPONENTS:
        return box  # texture or noise, not a plot's tick labels
    for _, sl in boxes:
        rs, cs = sl
        if rs.start >= a and rs.stop <= b and cs.start >= c and cs.stop <= d:
            continue
        gap_r = max(a - rs.stop, rs.start - b, 0)
        gap_c = max(c - cs.stop, cs.start - d, 0)
        if gap_r > reach or gap_c > reach or rs.stop <= a + 0.1 * h:
            continue
        if rs.start < a + 0.1 * h and cs.stop <= c + 0.1 * w:  # top-left corner: a panel label
            continue
        a, b, c, d = min(a, rs.start), max(b, rs.stop), min(c, cs.start), max(d, cs.stop)
    return a, b, c, d


def _find_insets(gray: np.ndarray, panel: Panel) -> list[Panel]:
    """Framed insets inside a panel: a white or black rectangle outline around a sub-image."""
    x0, y0, x1, y1 = panel.bbox
    sub = gray[y0:y1, x0:x1]
    h, w = sub.shape
    found = []
    for frame in (sub >= WHITE_LEVEL, sub <= BLACK_LEVEL):
        labels, count = ndimage.label(frame)
        for sl in ndimage.find_objects(labels):
            rs, cs = sl
            bh, bw = rs.stop - rs.start, cs.stop - cs.start
            if bh < INSET_MIN_FRACTION * h or bw < INSET_MIN_FRACTION * w or bh > 0.8 * h or bw > 0.8 * w:
                continue
            comp = frame[sl]
            ring = np.zeros_like(comp)
            ring[:3, :] = ring[-3:, :] = ring[:, :3] = ring[:, -3:] = True
            if comp[ring].mean() > 0.9 and comp[~ring].mean() < 0.3:
                found.append(Panel(bbox=(x0 + cs.start, y0 + rs.start, x0 + cs.stop, y0 + rs.stop),
                                   inset=True))
    return found


# ----------------------------------------------------------------------------------------------
# EM / other

# Logistic model on FEATURE_NAMES, fitted by benchmarks/calibrate_em.py (standardised features).
FEATURE_NAMES = ("colour", "white", "black", "flat", "levels", "entropy", "lines", "symmetry",
                 "std", "edge")
FEATURE_MEAN = np.array([0.09506, 0.3077, 0.05249, 0.3668, 0.4126, 0.5607, 0.01116, 0.04698, 0.355, 0.1747])
FEATURE_SCALE = np.array([0.2082, 0.3903, 0.1616, 0.3887, 0.2873, 0.3036, 0.04704, 0.2197, 0.1418, 0.09304])
FEATURE_WEIGHTS = np.array([-2.88, -2.44, -1.489, -1.145, 0.6578, 1.216, 0.5277, -0.5741, 0.4037, -0.4742])
FEATURE_BIAS = -0.5167
FEATURE_SIDE_PX = 256  # features are measured on a stride-sampled copy about this big


def measure_panel_features(image: np.ndarray) -> np.ndarray:
    """Measurable cues that tell a micrograph from a plot, spectrum, pattern, schematic or photo.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        One panel.

    Returns
    -------
    ndarray of float64, shape (len(FEATURE_NAMES),)
        colour: fraction of saturated pixels; white, black: fractions of near-white / near-black
        pixels; flat: fraction of pixels equal to their right and lower neighbours; levels:
        fraction of the 256 grey levels in use; entropy: of the grey histogram (bits / 8);
        lines: fraction of rows and columns crossed by one long straight dark or bright run
        (axes, frames); symmetry: correlation of the panel with itself turned 180 degrees
        (diffraction patterns are centro-symmetric); std: grey standard deviation / 128;
        edge: mean absolute neighbour difference / 32.
    """
    a = as_uint8(image)
    step = max(1, int(max(a.shape[:2]) // FEATURE_SIDE_PX))
    a = a[::step, ::step]
    if a.ndim == 3:
        spread = a.max(axis=2).astype(np.int16) - a.min(axis=2)
        colour = float((spread > 40).mean())
    else:
        colour = 0.0
    g = to_gray(a).astype(np.int16)
    white = float((g >= WHITE_LEVEL).mean())
    black = float((g <= BLACK_LEVEL).mean())
    dx = np.abs(np.diff(g, axis=1))[:-1, :]
    dy = np.abs(np.diff(g, axis=0))[:, :-1]
    flat = float(((dx == 0) & (dy == 0)).mean()) if dx.size else 1.0
    hist = np.bincount(g.ravel(), minlength=256) / g.size
    levels = float((hist > 0.0005).mean())
    nz = hist[hist > 0]
    entropy = float(-(nz * np.log2(nz)).sum() / 8)
    lines = _line_fraction(g)
    rot = g[::-1, ::-1].astype(np.float64)
    gf = g.astype(np.float64)
    sd = gf.std()
    symmetry = float(((gf - gf.mean()) * (rot - rot.mean())).mean() / (sd * sd)) if sd > 0 else 1.0
    edge = float((dx.mean() + dy.mean()) / 64) if dx.size else 0.0
    return np.array([colour, white, black, flat, levels, entropy, lines, symmetry, sd / 128, edge])


def _line_fraction(g: np.ndarray) -> float:
    """Fraction of rows + columns holding a straight run over 60 % of the side at a flat level."""
    hits = 0
    for arr in (g, g.T):
        if arr.shape[1] < 8:
            continue
        same = np.abs(np.diff(arr, axis=1)) <= 2  # (rows, cols-1)
        dark = arr[:, 1:] < 100
        run_ok = same & dark
        # longest run per row via cumulative trick
        longest = _longest_true_run(run_ok)
        hits += int((longest > 0.6 * arr.shape[1]).sum())
    return hits / float(g.shape[0] + g.shape[1])


def _longest_true_run(mask: np.ndarray) -> np.ndarray:
    """Longest run of True in each row of a 2-D bool array (int, shape (rows,))."""
    rows, cols = mask.shape
    padded = np.zeros((rows, cols + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    best = np.zeros(rows, dtype=np.int64)
    r_start, c_start = np.nonzero(d == 1)
    r_stop, c_stop = np.nonzero(d == -1)
    if r_start.size:
        np.maximum.at(best, r_start, c_stop - c_start)
    return best


def classify_panel(image: np.ndarray) -> tuple[str, float]:
    """Tell an EM micrograph from a plot, spectrum, diffraction pattern, schematic or photo.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        One panel (``crop_panel``).

    Returns
    -------
    kind : str
        ``"em"`` or ``"other"``.
    em_score : float
        In [0, 1]; ``kind == "em"`` when it is at least ``EM_THRESHOLD``.
    """
    a = as_uint8(image)
    if min(a.shape[:2]) < 8:
        return "other", 0.0
    score = em_score_from_features(measure_panel_features(a))
    return ("em" if score >= EM_THRESHOLD else "other"), score


def em_score_from_features(features: np.ndarray) -> float:
    """Logistic EM score of a ``measure_panel_features`` vector (float in [0, 1])."""
    z = (np.asarray(features, dtype=np.float64) - FEATURE_MEAN) / FEATURE_SCALE
    logit = float(z @ FEATURE_WEIGHTS + FEATURE_BIAS)
    return float(1.0 / (1.0 + np.exp(-np.clip(logit, -40, 40))))


# ----------------------------------------------------------------------------------------------
# labels

_TESSERACT_WARNED = False


def normalise_label(text: str) -> str | None:
    """``"(c)"`` -> ``"c"``, ``"d1"`` -> ``"d1"``, ``"B."`` -> ``"B"``; anything else -> None."""
    text = text.strip().replace(" ", "")
    match = LABEL_PATTERN.match(text)
    if not match:
        # both brackets misread: "fa)" / "[b]" / "tc1" for "(a)", "(b)", "(c)"
        bracketed = re.match(r"^[(\[{fFtlI1|]([A-Za-z])[)\]}jJlI1|]$", text)
        if bracketed:
            return bracketed.group(1)
        # tesseract quirks on a lone bracketed letter: "(Cc)" for "(C)", "(ih)" for "(h)"
        quirk = re.match(r"^\(?(?:[iIl1|]?)([A-Za-z])([A-Za-z]?)\)?$", text)
        if not quirk or (quirk.group(2) and quirk.group(2).lower() != quirk.group(1).lower()):
            return None
        return quirk.group(1)
    return match.group(1) + match.group(2)


def read_panel_labels(gray: np.ndarray, panels: list[Panel]) -> list[str | None]:
    """Read the letter in or next to the top-left corner of each panel.

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
        The whole figure in grey levels.
    panels : list of Panel

    Returns
    -------
    list of str or None
        One label per panel; None where no label was read. All corner crops go to tesseract in
        one batched call.
    """
    global _TESSERACT_WARNED
    if shutil.which("tesseract") is None:
        if not _TESSERACT_WARNED:
            log.warning("tesseract is not installed; panel labels are not read "
                        "(apt-get install tesseract-ocr)")
            _TESSERACT_WARNED = True
        return [None] * len(panels)
    others = [[other.bbox for other in panels if other is not panel] for panel in panels]
    crops = [_label_crop(gray, panel, boxes) for panel, boxes in zip(panels, others)]
    labels = [_confident_label(reading) for reading in _ocr_batch(crops)]
    retry = [i for i, label in enumerate(labels) if label is None and crops[i] is not None]
    if retry:
        # thin grey strokes lost at the window's text level ("(e)" read as "(c)"): once more, the
        # letters cut at the grey level halfway between them and their surround
        again = _ocr_batch([_label_crop(gray, panels[i], others[i], midpoint=True) for i in retry])
        for i, reading in zip(retry, again):
            labels[i] = _confident_label(reading)
    return harmonise_labels(labels)


def _confident_label(reading: tuple[str, float] | None) -> str | None:
    """The label of one OCR reading (text, confidence); None when unread or read with low confidence."""
    if reading is None or reading[1] < LABEL_CONF_MIN:
        return None
    return normalise_label(reading[0])


def _label_crop(gray: np.ndarray, panel: Panel, others=(), midpoint: bool = False) -> np.ndarray | None:
    """Black-on-white crop of the text blob nearest the panel's top-left corner, or None.

    ``others``: the figure's other panel boxes; text inside one of them is that panel's. Text
    outside the panel (in the gutter) is preferred to text as near inside it: the gap between
    particles of a micrograph, or an axis's tick label, passes for a letter too (the demo
    figure's "b" and "d" lost to them). ``midpoint``: the letters are cut from their box at the
    grey level halfway between them and their surround, not at the window's text level (which
    loses the thin grey strokes of a serif "e")."""
    x0, y0, x1, y1 = panel.bbox
    height, width = gray.shape
    pw, ph = x1 - x0, y1 - y0
    reach = int(min(max(0.22 * min(pw, ph), 30), max(160, 0.05 * max(height, width))))
    wx0, wy0 = max(0, x0 - reach), max(0, y0 - reach)
    wx1, wy1 = min(width, x0 + reach), min(height, y0 + reach)
    window = gray[wy0:wy1, wx0:wx1]
    if window.size == 0:
        return None
    corner = (y0 - wy0, x0 - wx0)
    inside = gray[y0:min(y1, y0 + reach), x0:min(x1, x0 + reach)]
    dense = bool(((inside > BLACK_LEVEL) & (inside < WHITE_LEVEL)).mean() > DENSE_FILL)
    min_h = max(6, int(0.008 * min(pw, ph)))
    max_h = max(min_h + 4, int(min(0.3 * min(pw, ph), max(120, 0.04 * max(height, width)))))
    best = None
    # the stem of a 40 px "b" or "(" on a 512 px micrograph is no line: runs must outgrow a label
    line_px = max(LABEL_LINE_MIN_PX, int(LABEL_LINE_FRACTION * max(height, width)),
                  int(LABEL_LINE_PANEL_FRACTION * min(pw, ph)))
    for dark_text in (True, False):
        # axis lines and frames a label touches would merge with its letters: drop long straight runs
        raw = _text_mask(window, dark_text)
        mask = _drop_lines(raw, line_px)
        labels, count = ndimage.label(mask)
        cands, contrast, levels = [], {}, {}
        for index, sl in enumerate(ndimage.find_objects(labels), start=1):
            rs, cs = sl
            h, w = rs.stop - rs.start, cs.stop - cs.start
            if not (min_h <= h <= max_h and 2 <= w <= 1.6 * h):
                continue
            at_edge = (rs.start == 0 and wy0 > 0) or (cs.start == 0 and wx0 > 0) \
                or rs.stop == window.shape[0] or cs.stop == window.shape[1]
            top, left = wy0 + rs.start, wx0 + cs.start
            bottom, right = wy0 + rs.stop, wx0 + cs.stop
            if dense and ((left <= x0 < right and bottom > y0) or (top <= y0 < bottom and right > x0)):
                continue  # touches the edge of an image panel: part of the image, not a label
            if any(ox0 <= left and right <= ox1 and oy0 <= top and bottom <= oy1 for ox0, oy0, ox1, oy1 in others):
                continue  # inside another panel: its text, not this panel's label
            glyph = labels[sl] == index
            fill = glyph.mean()
            if at_edge or fill > 0.95 or fill < 0.08:
                continue
            if w > 0.45 * h and fill > GLYPH_FILL_MAX and not _has_hole(glyph):
                continue  # a solid blob (a particle), not a letter; a bold "B" or "D" has holes
            values = window[sl][glyph]
            level = values.mean()
            if (level > GLYPH_DARK_MAX if dark_text else level < GLYPH_LIGHT_MIN) or values.std() > GLYPH_STD_MAX:
                continue  # printed letters are solid black or white; micrograph blobs are not
            ring = window[max(0, rs.start - 2):rs.stop + 2, max(0, cs.start - 2):cs.stop + 2]
            edge = np.ones(ring.shape, dtype=bool)
            edge[2:-2, 2:-2] = False
            glyph_contrast = abs(float(ring[edge].mean()) - level)
            if glyph_contrast < GLYPH_CONTRAST_WEAK:
                continue
            cands.append((rs.start, rs.stop, cs.start, cs.stop))
            contrast[cands[-1]] = glyph_contrast
            levels[cands[-1]] = (float(level), float(ring[edge].mean()))
        strong = [b for b in cands if contrast[b] >= GLYPH_CONTRAST_MIN]
        if not strong:
            continue

        def corner_distance(b):
            inside = b[0] >= corner[0] and b[2] >= corner[1]  # starts within the panel's box
            return (abs(b[0] - corner[0]) + abs(b[2] - corner[1])) * (INSIDE_LABEL_PENALTY if inside else 1)

        seed = min(strong, key=corner_distance)
        group = _grow_label_group(seed, cands)
        if len(group) == 1:
            # half a bracket cut by the figure's edge is too short to reach the letter beside it;
            # the group grown from the letter holds it
            for other in sorted(strong, key=corner_distance)[1:LABEL_MAX_SEEDS + 1]:
                grown = _grow_label_group(other, cands)
                if seed in grown and len(grown) > len(group):
                    group = grown
        r0g, r1g = min(b[0] for b in group), max(b[1] for b in group)
        c0g, c1g = min(b[2] for b in group), max(b[3] for b in group)
        if len(group) == 1 and sum(abs((b[1] - b[0]) - (r1g - r0g)) <= 0.3 * (r1g - r0g)
                                   for b in strong if b != seed) >= TEXTURE_REPEATS:
            continue  # one blob among many alike (ring-shaped particles): texture, not a label
        box = (r0g, r1g, c0g, c1g)
        text = mask[r0g:r1g, c0g:c1g]
        if midpoint:
            cut = (np.mean([levels[b][0] for b in group]) + np.mean([levels[b][1] for b in group])) / 2
            part = window[r0g:r1g, c0g:c1g]
            lines = ndimage.binary_dilation(raw & ~mask)[r0g:r1g, c0g:c1g]
            text = ((part <= cut) if dark_text else (part >= cut)) & ~lines
        found = (corner_distance(seed), min(contrast[b] for b in group), r1g - r0g, text, box,
                 len(group))
        if best is None:
            best = found
        elif (_encloses(found[4], best[4]) or _encloses(best[4], found[4])) and found[5] != best[5]:
            # one inside the other: the letters on a box beat the box, a letter beats its counter
            best = found if found[5] > best[5] else best
        elif abs(found[0] - best[0]) <= max(found[2], best[2]):
            # as near the corner as the other polarity: the crisper text wins (black letters on a
            # white box beat the box's own edges, which line removal may have cut into pieces)
            best = found if found[1] > best[1] else best
        elif found[0] < best[0]:
            best = found
    if best is None:
        return None
    crop = np.where(best[3], 0, 255).astype(np.uint8)
    out_w = max(4, int(round(crop.shape[1] * LABEL_OCR_HEIGHT_PX / crop.shape[0])))
    return np.asarray(Image.fromarray(crop).resize((out_w, LABEL_OCR_HEIGHT_PX), Image.BILINEAR))


def _grow_label_group(seed: tuple, cands: list[tuple]) -> list[tuple]:
    """The seed box and the boxes beside it on one text line, ``(r0, r1, c0, c1)`` each, at most 5."""
    group = [seed]
    grown = True
    while grown and len(group) < 5:
        grown = False
        r0g, r1g = min(b[0] for b in group), max(b[1] for b in group)
        c0g, c1g = min(b[2] for b in group), max(b[3] for b in group)
        gh = r1g - r0g
        for b in cands:
            if b in group:
                continue
            overlap = min(b[1], r1g) - max(b[0], r0g)
            gap = max(b[2] - c1g, c0g - b[3])
            if overlap > 0.3 * min(gh, b[1] - b[0]) and gap < 0.5 * gh and b[1] - b[0] < 1.8 * gh:
                group.append(b)
                grown = True
    return group


def _encloses(outer: tuple, inner: tuple) -> bool:
    """Box ``outer`` (r0, r1, c0, c1) holds box ``inner``."""
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3]


def harmonise_labels(labels: list[str | None]) -> list[str | None]:
    """Make a figure's labels consistent: one letter case, gaps in a clear sequence filled.

    Letters whose two cases look alike (c, o, s, v, w, x, z, ...) take the case most labels of
    the figure use. When at least 60 % of three or more panels follow one alphabetical sequence
    in reading order (a, b, c, ...), the unread and off-sequence single letters get the letter of
    their place in it.
    """
    letters = [lab for lab in labels if lab]
    if not letters:
        return labels
    upper = sum(lab[0].isupper() for lab in letters)
    use_upper = upper * 2 > len(letters)
    out = []
    for lab in labels:
        if lab and lab[0].lower() in "cjkopsuvwxz" and len(lab) == 1:
            lab = lab.upper() if use_upper else lab.lower()
        out.append(lab)
    singles = [(i, lab) for i, lab in enumerate(out) if lab and len(lab) == 1]
    if len(out) >= 3 and singles:
        offsets = [ord(lab.lower()) - ord("a") - i for i, lab in singles]
        values, counts = np.unique(offsets, return_counts=True)
        best = int(values[np.argmax(counts)])
        if counts.max() >= 0.6 * len(out) and best >= 0 and all(len(lab or "x") == 1 for lab in out):
            base = ord("A") if use_upper else ord("a")
            out = [chr(base + best + i) if best + i < 26 else lab for i, lab in enumerate(out)]
    return out


def _drop_lines(mask: np.ndarray, line_px: int) -> np.ndarray:
    """``mask`` without straight horizontal or vertical runs of at least ``line_px`` pixels (bool)."""
    lines = ndimage.binary_opening(mask, structure=np.ones((1, line_px), dtype=bool))
    lines |= ndimage.binary_opening(mask, structure=np.ones((line_px, 1), dtype=bool))
    return mask & ~lines


def _has_hole(glyph: np.ndarray) -> bool:
    """The glyph encloses background (the counters of "B", "D", "a"), unlike a solid particle."""
    holes = ndimage.binary_fill_holes(glyph) & ~glyph
    return int(holes.sum()) >= max(2, int(0.02 * glyph.size))


def _text_mask(window: np.ndarray, dark_text: bool) -> np.ndarray:
    """Pixels of strongly contrasting text of one polarity in a corner window (bool)."""
    w = window.astype(np.int16)
    if dark_text:
        level = min(90, int(np.percentile(w, 8)) + 10)
        return w <= level
    level = max(170, int(np.percentile(w, 92)) - 10)
    return w >= level


def _ocr_batch(crops: list[np.ndarray | None]) -> list[tuple[str, float] | None]:
    """OCR many small black-on-white crops in one tesseract call, one crop per text line.

    Returns (text, confidence) per crop, the confidence being tesseract's lowest word confidence
    (0-100) on the crop's line; None where there is no crop or nothing was read."""
    import pytesseract

    present = [(i, c) for i, c in enumerate(crops) if c is not None]
    out: list[tuple[str, float] | None] = [None] * len(crops)
    if not present:
        return out
    gap = LABEL_OCR_HEIGHT_PX
    width = max(c.shape[1] for _, c in present) + 2 * gap
    height = gap + len(present) * (LABEL_OCR_HEIGHT_PX + gap)
    sheet = np.full((height, width), 255, dtype=np.uint8)
    spans = []
    for k, (i, crop) in enumerate(present):
        top = gap + k * (LABEL_OCR_HEIGHT_PX + gap)
        sheet[top:top + crop.shape[0], gap:gap + crop.shape[1]] = crop
        spans.append((i, top - gap // 2, top + LABEL_OCR_HEIGHT_PX + gap // 2))
    config = ("--psm 6 -c tessedit_char_whitelist="
              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789()[]")
    try:
        data = image_to_data(sheet, config=config)
    except (pytesseract.TesseractError, OSError) as exc:
        log.warning("tesseract failed on panel labels (%s); labels not read", exc)
        return out
    words: dict[int, list[tuple[int, str, float]]] = {}
    for text, top, h, left, conf in zip(data["text"], data["top"], data["height"], data["left"], data["conf"]):
        text = (text or "").strip()
        if not text:
            continue
        centre = top + h / 2
        for i, start, stop in spans:
            if start <= centre < stop:
                words.setdefault(i, []).append((left, text, float(conf)))
    for i, items in words.items():
        out[i] = ("".join(t for _, t, _ in sorted(items)), min(c for _, _, c in items))
    return out
