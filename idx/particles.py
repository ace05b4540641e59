"""Per-particle measurements and per-panel statistics of an instance map.

``measure_particles`` turns an instance map (``labels``, int, 0 = background) into one table row
per particle, using scikit-image ``regionprops`` for the geometry. ``summarise_panel`` reduces
that table to the numbers stored per panel: counts, diameter statistics, a size histogram and the
radial distribution function g(r) of the centroids (rdfpy).

Every length column carries its unit: ``*_px`` columns are always filled, ``*_nm`` columns only
when the pixel size is known (otherwise NaN, and the row's ``units`` column says ``"px"``).

Feret diameters: scikit-image 0.26 gives only ``feret_diameter_max``, measured on the hull of
``image_convex`` (about 1 px larger than the particle). The ``feret`` package on PyPI computes the
minimum too, but needs OpenCV for a convex hull, so both Feret diameters (and the minimum-area
bounding rectangle used by the shape classifier) are computed here over one polygon, the convex
hull of the region's 0.5 iso-contour (the pixel boundary with the corners cut): rotating calipers
for the minimum, the largest vertex distance for the maximum. One construction for both keeps
``aspect_ratio`` free of a bias of its own (docs/bench/measurements.md).

Perimeter: scikit-image's Crofton estimate (``perimeter_crofton``, 4 directions), within ~1 % of
a disk's true perimeter from ~16 px across (``regionprops``' ``perimeter`` reads large disks ~4 %
long and small ones ~5 % short). ``circularity`` = 4 pi A / P^2 is capped at 1, its value for a
disk: below ~10 px across digitisation can push the estimate a few % over it.
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist
from skimage.measure import find_contours, perimeter_crofton, regionprops

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("sphere", "rod", "cube/rectangle", "triangle", "hexagon", "irregular")

# Shape classifier thresholds (descriptors of the convex hull; see classify_shape).
SOLIDITY_MIN = 0.90  # below: concave outline -> irregular (aggregates, fused particles)
ROD_ELONGATION_MIN = 1.8  # long/short side of the minimum bounding rectangle: rod (or bar)
RECTANGULARITY_MIN = 0.88  # hull area / minimum bounding-rectangle area: cube/rectangle
ELONGATED_MIN = 1.35  # rounded but elongated (short rods, ellipses): rod
SPHERE_CIRCULARITY_MIN = 0.965  # hull circularity: circle 1.0, octagon 0.95, hexagon 0.91
TRIANGLE_RECTANGULARITY_MAX = 0.66  # ideal triangle 0.5
HEXAGON_CIRCULARITY_MIN = 0.86  # ideal hexagon 0.907
HEXAGON_RECTANGULARITY = (0.68, 0.84)  # ideal hexagon 0.75
MIN_PIXELS_TO_CLASSIFY = 12  # smaller particles are too coarse to have a shape
MIN_DIAMETER_FOR_FACETS_PX = 20.0  # below, digitisation hides facets: only sphere / rod

PIXEL_GYRATION_TERM = 1.0 / 6.0  # px^2: a unit square's own second moment (1/12 per axis)

LENGTH_COLUMNS = (
    "diameter",
    "feret_max",
    "feret_min",
    "ellipse_major",
    "ellipse_minor",
    "perimeter",
    "gyration_radius",
    "centroid_row",
    "centroid_col",
)

COLUMNS = (
    ["label", "units", "nm_per_px", "area_px", "area_nm2"]
    + [f"{name}_{unit}" for name in LENGTH_COLUMNS for unit in ("px", "nm")]
    + [
        "aspect_ratio",
        "ellipse_aspect_ratio",
        "circularity",
        "solidity",
        "rectangularity",
        "elongation",
        "hull_circularity",
        "bbox_x0",
        "bbox_y0",
        "bbox_x1",
        "bbox_y1",
        "touches_border",
        "uncertainty_mean",
        "intensity_mean",
        "shape",
    ]
)


SPARSE_LABEL_MAX = 1_000_000  # larger ids are renumbered before measuring (memory grows with the largest)


def measure_particles(
    labels: np.ndarray,
    nm_per_px: float | None = None,
    uncertainty: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
) -> pd.DataFrame:
    """Size, shape and position of each particle in an instance map.

    Parameters
    ----------
    labels : ndarray of int, shape (M, N)
        Instance map, 0 = background, one positive id per particle.
    nm_per_px : float, optional
        Pixel size in nm. If None, ``*_nm`` columns are NaN and ``units`` is ``"px"``.
    uncertainty : ndarray of float, shape (M, N), optional
        Per-pixel uncertainty (e.g. mutual information of MC-dropout samples);
        ``uncertainty_mean`` is its mean over each particle (NaN if not given).
    intensity : ndarray, shape (M, N), optional
        Grey image; ``intensity_mean`` is its mean over each particle (NaN if not given).

    Returns
    -------
    pandas.DataFrame
        One row per particle, ordered by label, columns ``COLUMNS``: ``area_px``/``area_nm2``;
        ``diameter_*`` (equivalent circular diameter = projected-area diameter);
        ``feret_max_*``/``feret_min_*``; ``aspect_ratio`` (Feret max/min);
        ``ellipse_aspect_ratio`` (fitted-ellipse major/minor); ``perimeter_*``;
        ``circularity`` (4 pi A / P^2, Crofton perimeter, at most 1); ``solidity``; ``gyration_radius_*``
        (radius of gyration, for aggregates); ``rectangularity``, ``elongation`` and
        ``hull_circularity`` (convex-hull descriptors used by ``classify_shape``);
        ``centroid_row_*``/``centroid_col_*``;
        ``bbox_x0, bbox_y0, bbox_x1, bbox_y1`` (px, x1/y1 exclusive); ``touches_border``;
        ``uncertainty_mean``; ``intensity_mean``; ``shape`` (one of ``SHAPE_CLASSES``).
        Empty (with these columns) when ``labels`` has no particle.

    Raises
    ------
    ValueError
        If ``labels`` is not a 2-D integer array of non-negative ids, a map's shape differs,
        or ``nm_per_px`` is not a positive finite number.
    """
    labels = np.asarray(labels)
    _check_inputs(labels, nm_per_px, uncertainty, intensity)
    height, width = labels.shape
    present = None
    if labels.max() > SPARSE_LABEL_MAX:
        # regionprops (find_objects) allocates per id up to the largest: ids 1 and 2**31 - 1 ran
        # out of memory. Measure on consecutive ids, report the given ones.
        present = np.unique(labels[labels > 0])
        labels = np.where(labels > 0, np.searchsorted(present, labels) + 1, 0).astype(np.int32)
    regions = regionprops(labels)
    if not regions:
        table = _empty_table()
        table.attrs["nm_per_px"] = None if nm_per_px is None else float(nm_per_px)
        return table
    ids = [region.label for region in regions]
    uncertainty_means = _mean_per_label(uncertainty, labels, ids)
    intensity_means = _mean_per_label(intensity, labels, ids)
    rows = []
    for region, unc, inten in zip(regions, uncertainty_means, intensity_means):
        row = _measure_region(region, height, width)
        row["uncertainty_mean"] = unc
        row["intensity_mean"] = inten
        rows.append(row)
    table = pd.DataFrame(rows)
    if present is not None:
        table["label"] = present[table["label"].to_numpy() - 1]
    scale = float(nm_per_px) if nm_per_px is not None else math.nan
    table["units"] = "nm" if nm_per_px is not None else "px"
    table["nm_per_px"] = scale
    table["area_nm2"] = table["area_px"] * scale**2
    for name in LENGTH_COLUMNS:
        table[f"{name}_nm"] = table[f"{name}_px"] * scale
    table = table[list(COLUMNS)]
    # kept on every table (pandas carries attrs through filters): a selection left empty still
    # knows its scale for summarise_panel
    table.attrs["nm_per_px"] = None if nm_per_px is None else float(nm_per_px)
    return table


def _check_inputs(labels: np.ndarray, nm_per_px, uncertainty, intensity) -> None:
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer instance map, got dtype {labels.dtype}; "
                         "label a binary mask first (skimage.measure.label)")
    if labels.size == 0:
        raise ValueError(f"labels is empty (shape {labels.shape}); pass the instance map of a panel")
    if labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 = background); relabel negative ids")
    if nm_per_px is not None and (isinstance(nm_per_px, (bool, np.bool_))
                                  or not isinstance(nm_per_px, (int, float, np.integer, np.floating))
                                  or not (math.isfinite(nm_per_px) and nm_per_px > 0)):
        raise ValueError(f"nm_per_px must be a positive number or None, got {nm_per_px!r}")
    for name, array in (("uncertainty", uncertainty), ("intensity", intensity)):
        if array is not None and np.shape(array)[:2] != labels.shape:
            raise ValueError(
                f"{name} map has shape {np.shape(array)}, labels {labels.shape}; pass maps of "
                "the same panel"
            )
        if array is not None and np.ndim(array) != 2:
            raise ValueError(f"{name} must be 2-D (grey), got shape {np.shape(array)}")


def _empty_table() -> pd.DataFrame:
    table = pd.DataFrame({name: pd.Series(dtype=float) for name in COLUMNS})
    for name in ("label", "area_px", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
        table[name] = table[name].astype(np.int64)
    table["units"] = table["units"].astype(object)
    table["shape"] = table["shape"].astype(object)
    table["touches_border"] = table["touches_border"].astype(bool)
    return table


def _mean_per_label(values, labels, ids) -> np.ndarray:
    if values is None:
        return np.full(len(ids), np.nan)
    return np.asarray(ndimage.mean(np.asarray(values, dtype=np.float64), labels, ids), float)


def _measure_region(region, height: int, width: int) -> dict:
    """Pixel measurements of one regionprops region (all lengths in px)."""
    row0, col0, row1, col1 = region.bbox
    area_px = int(region.area)
    hull_points = _hull_points(region)
    hull = _describe_hull(hull_points)
    feret_max_px = hull["feret_max"] if len(hull_points) >= 3 else float(region.feret_diameter_max)
    feret_min_px = hull["feret_min"]
    perimeter_px = float(perimeter_crofton(region.image, directions=4))
    # the ellipse of the same second moments, each pixel a unit square (variance 1/12 along each
    # axis, as gyration_radius counts it): a 300 x 1 line is 300 long and 1 wide, not 346 x 0
    low, high = np.clip(np.linalg.eigvalsh(np.asarray(region.inertia_tensor, float)), 0, None)
    major, minor = 4 * math.sqrt(high + 1 / 12), 4 * math.sqrt(low + 1 / 12)
    coords = region.coords.astype(np.float64)
    gyration_px = math.sqrt(
        float(((coords - coords.mean(axis=0)) ** 2).sum(axis=1).mean()) + PIXEL_GYRATION_TERM
    )
    row = {
        "label": int(region.label),
        "area_px": area_px,
        "diameter_px": float(region.equivalent_diameter_area),
        "feret_max_px": feret_max_px,
        "feret_min_px": feret_min_px,
        "ellipse_major_px": major,
        "ellipse_minor_px": minor,
        "perimeter_px": perimeter_px,
        "gyration_radius_px": gyration_px,
        "centroid_row_px": float(region.centroid[0]),
        "centroid_col_px": float(region.centroid[1]),
        "aspect_ratio": _ratio(feret_max_px, feret_min_px),
        "ellipse_aspect_ratio": _ratio(major, minor),
        "circularity": min(_ratio(4 * math.pi * area_px, perimeter_px**2), 1.0),
        "solidity": float(region.solidity),
        "rectangularity": hull["rectangularity"],
        "elongation": hull["elongation"],
        "hull_circularity": hull["circularity"],
        "bbox_x0": int(col0),
        "bbox_y0": int(row0),
        "bbox_x1": int(col1),
        "bbox_y1": int(row1),
        "touches_border": bool(row0 == 0 or col0 == 0 or row1 == height or col1 == width),
    }
    row["shape"] = classify_shape(row)
    return row


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else math.nan


def _hull_points(region) -> np.ndarray:
    """Vertices (row, col), px, of the convex hull of the region's 0.5 iso-contour.

    Built from ``region.image``; scikit-image's ``feret_diameter_max`` uses
    ``region.image_convex``, whose digitised hull is up to ~1 px larger (measured in
    docs/bench/measurements.md).
    """
    padded = np.pad(region.image, 1)
    contours = find_contours(padded.astype(np.uint8), 0.5, fully_connected="high")
    points = np.vstack(contours) - 1.0
    try:
        hull = ConvexHull(points)
    except QhullError:  # degenerate (collinear) outline: no area, no hull
        return np.empty((0, 2))
    return points[hull.vertices]


def _describe_hull(points: np.ndarray) -> dict:
    """Rotating calipers over a convex polygon (vertices in order).

    Returns the minimum and maximum Feret diameters (smallest caliper width and largest vertex
    distance, px), the rectangularity (polygon
    area / minimum-area bounding rectangle), its elongation (long / short side of that
    rectangle) and the circularity of the polygon (4 pi A / P^2).
    """
    nan = {"feret_min": math.nan, "feret_max": math.nan, "rectangularity": math.nan, "circularity": math.nan,
           "elongation": math.nan}
    if len(points) < 3:
        return nan
    edges = np.roll(points, -1, axis=0) - points  # (K, 2)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 1e-9
    directions = edges[keep] / lengths[keep, None]  # (E, 2) unit vectors along each edge
    normals = np.stack([-directions[:, 1], directions[:, 0]], axis=1)
    along = points @ directions.T  # (K, E)
    across = points @ normals.T
    widths = across.max(axis=0) - across.min(axis=0)
    spans = along.max(axis=0) - along.min(axis=0)
    boxes = widths * spans
    best = int(np.argmin(boxes))  # minimum-area bounding rectangle
    rows, cols = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(rows, np.roll(cols, -1)) - np.dot(cols, np.roll(rows, -1))))
    perimeter = float(lengths.sum())
    return {
        "feret_min": float(widths.min()),
        "feret_max": float(pdist(points).max()),
        "rectangularity": _ratio(area, float(boxes.min())),
        "circularity": _ratio(4 * math.pi * area, perimeter**2),
        "elongation": _ratio(max(widths[best], spans[best]), min(widths[best], spans[best])),
    }


def classify_shape(row: dict) -> str:
    """Coarse shape class of one particle from its measured descriptors.

    Parameters
    ----------
    row : dict
        Needs ``area_px``, ``solidity``, ``elongation`` (sides of the minimum-area bounding
        rectangle, long/short), ``rectangularity`` (hull area / that rectangle's area) and
        ``hull_circularity`` (4 pi A / P^2 of the convex hull), see ``measure_particles``.

    Returns
    -------
    str
        One of ``SHAPE_CLASSES``. Rules, in order: too small or concave (solidity <
        ``SOLIDITY_MIN``: aggregates, fused particles) -> irregular; elongation >=
        ``ROD_ELONGATION_MIN`` -> rod; hull filling about half its minimum bounding rectangle
        -> triangle; smaller than ``MIN_DIAMETER_FOR_FACETS_PX`` (facets unresolved) -> rod if
        elongated, else sphere; hull filling its rectangle -> cube/rectangle; elongation >=
        ``ELONGATED_MIN`` -> rod; round hull -> sphere; hexagon-like circularity and
        rectangularity -> hexagon; else irregular. Ideal values (rectangularity, hull
        circularity): triangle (0.50, 0.60), square (1.0, 0.79), hexagon (0.75, 0.91),
        disk (0.785, 1.0).
    """
    values = [row.get(key, math.nan) for key in
              ("solidity", "elongation", "rectangularity", "hull_circularity")]
    if row.get("area_px", 0) < MIN_PIXELS_TO_CLASSIFY or any(math.isnan(v) for v in values):
        return "irregular"
    solidity, elongation, rectangularity, circularity = values
    if solidity < SOLIDITY_MIN:
        return "irregular"
    if elongation >= ROD_ELONGATION_MIN:
        return "rod"
    if rectangularity <= TRIANGLE_RECTANGULARITY_MAX:  # distinctive even when small
        return "triangle"
    if math.sqrt(4 * row["area_px"] / math.pi) < MIN_DIAMETER_FOR_FACETS_PX:
        return "rod" if elongation >= ELONGATED_MIN else "sphere"
    if rectangularity >= RECTANGULARITY_MIN:
        return "cube/rectangle"
    if elongation >= ELONGATED_MIN:
        return "rod"
    if circularity >= SPHERE_CIRCULARITY_MIN:
        return "sphere"
    low, high = HEXAGON_RECTANGULARITY
    if circularity >= HEXAGON_CIRCULARITY_MIN and low <= rectangularity <= high:
        return "hexagon"
    return "irregular"


def summarise_panel(
    particles: pd.DataFrame,
    labels_shape: tuple[int, int],
    min_particles_rdf: int = 20,
    n_bins: int = 20,
) -> dict:
    """Statistics of one panel's particles: counts, diameters, histogram, g(r).

    Parameters
    ----------
    particles : pandas.DataFrame
        Output of ``measure_particles`` for the panel.
    labels_shape : tuple of int
        (rows, cols) of the instance map, px; the box of the radial distribution function.
    min_particles_rdf : int, optional
        g(r) is computed only with at least this many particles (otherwise ``rdf`` is None and
        ``rdf_reason`` says why).
    n_bins : int, optional
        Bins of the size histogram.

    Returns
    -------
    dict
        ``count`` (all particles), ``count_measured`` (not touching the border; the diameter
        statistics use only these), ``count_border``, ``units`` ("nm" or "px"), ``nm_per_px``,
        ``diameter_{mean,median,std,geomean,geostd}_px`` and ``..._nm`` (None without scale;
        ``geostd`` is the dimensionless geometric standard deviation; the two spreads are None
        with one measured particle), ``histogram`` (dict
        ``bin_edges``, ``counts``, ``unit``; None without measured particles), ``shapes``
        (count per shape class), ``rdf`` (dict ``r``, ``g``, ``unit``, ``dr``) or None, and
        ``rdf_reason`` (None when computed).
    """
    if (np.ndim(labels_shape) != 1 or len(labels_shape) < 2
            or not all(isinstance(n, (int, np.integer)) and n > 0 for n in labels_shape[:2])):
        raise ValueError(f"labels_shape must be (rows, cols), positive integers, got {labels_shape!r}")
    missing = {"diameter_px", "touches_border", "centroid_row_px", "units"} - set(particles)
    if missing:
        raise ValueError(f"particles lacks columns {sorted(missing)}; pass measure_particles output")
    if len(particles):
        scaled = bool((particles["units"] == "nm").all())
        nm_per_px = float(particles["nm_per_px"].iloc[0]) if scaled else None
    else:  # no particle: the scale measure_particles was given, kept on the empty table
        nm_per_px = particles.attrs.get("nm_per_px")
        scaled = nm_per_px is not None
    measured = particles[~particles["touches_border"].astype(bool)]
    summary: dict = {
        "count": int(len(particles)),
        "count_measured": int(len(measured)),
        "count_border": int(len(particles) - len(measured)),
        "units": "nm" if scaled else "px",
        "nm_per_px": nm_per_px,
    }
    diameters_px = measured["diameter_px"].to_numpy(dtype=float)
    for unit, scale in (("px", 1.0), ("nm", nm_per_px)):
        stats = _describe_sizes(diameters_px * scale) if scale is not None else {}
        for key in ("mean", "median", "std", "geomean", "geostd"):
            summary[f"diameter_{key}_{unit}"] = stats.get(key)
    summary["histogram"] = _histogram(diameters_px * (nm_per_px or 1.0), n_bins,
                                      summary["units"])
    summary["shapes"] = {k: int(v) for k, v in particles["shape"].value_counts().items()} \
        if "shape" in particles else {}
    summary["rdf"], summary["rdf_reason"] = _radial_distribution(
        particles, labels_shape, min_particles_rdf, nm_per_px
    )
    return summary


def _describe_sizes(diameters: np.ndarray) -> dict:
    if diameters.size == 0:
        return {}
    logs = np.log(diameters[diameters > 0])
    return {
        "mean": float(diameters.mean()),
        "median": float(np.median(diameters)),
        # the sample spread of one particle is undefined, not 0 (a panel of one is no monodisperse sample)
        "std": float(diameters.std(ddof=1)) if diameters.size > 1 else None,
        "geomean": float(np.exp(logs.mean())),
        "geostd": float(np.exp(logs.std(ddof=1))) if logs.size > 1 else None,
    }


def histogram_range(values: np.ndarray) -> tuple[float, float]:
    """The span of a size histogram: the values' range, or +-10 % around a single size (numpy
    would span value +- 0.5 in whatever unit: negative sizes for particles of 0.05 nm)."""
    low, high = float(np.min(values)), float(np.max(values))
    if high - low <= 1e-9 * abs(high):
        low, high = (0.9 * low, 1.1 * high) if high > 0 else (low - 0.5, high + 0.5)
    return low, high


def _histogram(diameters: np.ndarray, n_bins: int, unit: str) -> dict | None:
    if diameters.size == 0:
        return None
    counts, edges = np.histogram(diameters, bins=n_bins, range=histogram_range(diameters))
    return {"bin_edges": edges.tolist(), "counts": counts.tolist(), "unit": unit}


def _radial_distribution(particles, labels_shape, min_particles, nm_per_px):
    """g(r) of all centroids (border particles included: their positions are real)."""
    from rdfpy import rdf

    n = len(particles)
    if n < max(min_particles, 2):
        return None, f"{n} particle{'' if n == 1 else 's'}, fewer than the {min_particles} needed for g(r)"
    scale = nm_per_px or 1.0
    rows, cols = float(labels_shape[0]), float(labels_shape[1])
    centroids = particles[["centroid_col_px", "centroid_row_px"]].to_numpy(float)
    # rdfpy infers its box from the particles' extent; pin the box to the panel by density.
    density = n / (rows * cols * scale**2)
    median_diameter = float(np.median(particles["diameter_px"])) * scale
    dr = max(median_diameter / 4.0, scale)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g, r = rdf(centroids * scale, dr=dr, rho=density)
    except ValueError as exc:
        return None, f"g(r) not computable: {exc}"
    for warning in caught:
        logger.debug("rdfpy: %s", warning.message)
    unit = "nm" if nm_per_px else "px"
    g = [None if not np.isfinite(v) else float(v) for v in g]
    return {"r": [float(v) for v in r], "g": g, "unit": unit, "dr": float(dr)}, None
