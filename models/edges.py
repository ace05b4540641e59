"""Snap the outline of each instance to the micrograph's own edge, one pixel deep.

The network's masks are right to about a pixel; the protocol's top IoU thresholds (0.9, 0.95) are
decided by that pixel. Each instance's rim is therefore re-decided from the grey levels: with
``inside`` the median grey level of the instance's interior (its pixels whose four neighbours are
its own) and ``outside`` the median of the background 2-4 px (city block) around it, a pixel on
either side of the outline belongs to the instance when its grey level lies past
``outside + alpha * (inside - outside)`` on the instance's side. A small ``alpha`` takes in the
blurred rim that a particle's edge spreads over (the EMPS annotations include it). Instances
with too little contrast to their surroundings, or too few pixels to measure it, are left as they
are; only background pixels are taken in, never another instance's.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

RING_PX = (2, 4)  # the background ring whose median is the "outside" level, px from the outline
MIN_CONTRAST = 10.0  # grey levels (0-255) between inside and outside, below which an instance is left alone
MIN_PIXELS = 10  # interior and ring pixels needed to measure the two levels


def _interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours carry their own label (the image's border counts as other)."""
    padded = np.pad(labels, 1, constant_values=-1)
    same = labels > 0
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        same &= padded[dr:dr + labels.shape[0], dc:dc + labels.shape[1]] == labels
    return same


def snap_edges(labels: np.ndarray, grey: np.ndarray, alpha: float, min_contrast: float = MIN_CONTRAST,
               ring_px: tuple[int, int] = RING_PX) -> np.ndarray:
    """Re-decide the one-pixel rim inside and outside every instance from the grey levels.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Instance map, 0 = background, instances 1..K.
    grey : ndarray of float, shape (H, W)
        The image the instances were found on, grey levels 0-255.
    alpha : float
        Where between the outside (0) and inside (1) level a rim pixel's grey level must lie to
        belong to the instance (the card's ``edge_alpha``, chosen on validation).
    min_contrast : float
        Instances whose inside and outside levels differ by less are left as they are.
    ring_px : (int, int)
        The background ring (city-block distance from the instance, inclusive) giving the outside.

    Returns
    -------
    ndarray of int, shape (H, W)
        The same instances (same numbers) with their rims re-decided; an instance keeps its
        interior, so none vanishes.
    """
    labels = np.asarray(labels)
    grey = np.asarray(grey, dtype=np.float32)
    if labels.shape != grey.shape:
        raise ValueError(f"labels {labels.shape} and grey image {grey.shape} differ in shape")
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return labels.copy()
    interior = _interior(labels)
    distance, (rows, cols) = ndi.distance_transform_cdt(labels == 0, metric="taxicab", return_indices=True)
    nearest = labels[rows, cols]  # background pixel -> label of the closest instance pixel
    ring = np.where((distance >= ring_px[0]) & (distance <= ring_px[1]), nearest, 0)
    index = np.arange(1, n + 1)
    inner_label = np.where(interior, labels, 0)
    n_inner = np.bincount(inner_label.ravel(), minlength=n + 1)[1:]
    n_ring = np.bincount(ring.ravel(), minlength=n + 1)[1:]
    inside = np.asarray(ndi.median(grey, inner_label, index), dtype=np.float64)
    outside = np.asarray(ndi.median(grey, ring, index), dtype=np.float64)
    usable = (n_inner >= MIN_PIXELS) & (n_ring >= MIN_PIXELS) & (np.abs(inside - outside) >= min_contrast)
    usable = np.concatenate([[False], usable])
    threshold = np.concatenate([[0.0], np.nan_to_num(outside + alpha * (inside - outside))])
    side = np.concatenate([[0.0], np.sign(np.nan_to_num(inside - outside))])
    rim = np.where((labels > 0) & ~interior, labels, np.where(distance == 1, nearest, 0))  # both sides
    rim = np.where(usable[rim], rim, 0)
    joins = (grey - threshold[rim]) * side[rim] > 0
    out = labels.copy()
    out[(rim > 0) & ~joins & (labels > 0)] = 0
    out[(rim > 0) & joins & (labels == 0)] = rim[(rim > 0) & joins & (labels == 0)]
    return out
