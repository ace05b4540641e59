"""Figures of the measurements: size histogram, radial distribution function, contour overlay.

Each function returns a matplotlib ``Figure`` on an Agg canvas (no display needed); the CLI saves
it with ``figure.savefig(path)``. The figures are not registered with pyplot, so they are freed
like any object once unreferenced (no ``plt.close`` needed).
"""
from __future__ import annotations

import logging

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from idx.particles import histogram_range

logger = logging.getLogger(__name__)

FIGURE_SIZE_IN = (5.0, 3.6)  # inches
DPI = 120


def _particles(count: int) -> str:
    return f"{count} particle" + ("" if count == 1 else "s")


def _new_figure(size=FIGURE_SIZE_IN) -> tuple[Figure, object]:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def plot_size_histogram(diameters: np.ndarray, unit: str = "nm", bins: int = 20,
                        title: str | None = None) -> Figure:
    """Histogram of particle diameters.

    Parameters
    ----------
    diameters : ndarray of float, shape (N,)
        Equivalent circular diameters, in ``unit``; NaN values are dropped.
    unit : str, optional
        ``"nm"`` or ``"px"``, shown on the x axis.
    bins : int, optional
        Number of bins.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        With mean and median marked; an empty axis saying "no particles" when N = 0.
    """
    values = np.asarray(diameters, dtype=float)
    values = values[np.isfinite(values)]
    figure, axes = _new_figure()
    axes.set_xlabel(f"equivalent diameter ({unit})")
    axes.set_ylabel("particles")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 17.5 particles
    if values.size == 0:
        axes.text(0.5, 0.5, "no particles", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.hist(values, bins=bins, range=histogram_range(values), color="0.6", edgecolor="0.2")
        axes.axvline(values.mean(), color="tab:red", label=f"mean {values.mean():.3g} {unit}")
        axes.axvline(np.median(values), color="tab:blue", linestyle="--",
                     label=f"median {np.median(values):.3g} {unit}")
        axes.legend(frameon=False)
    axes.set_title(f"{title}: {_particles(values.size)}" if title else _particles(values.size))
    return figure


def plot_rdf(r: np.ndarray, g: np.ndarray, unit: str = "nm", title: str | None = None) -> Figure:
    """Radial distribution function g(r) of particle centroids.

    Parameters
    ----------
    r : ndarray of float, shape (K,)
        Bin centres, in ``unit``.
    g : ndarray of float, shape (K,)
        g(r); NaN (no valid origin particle) is left as a gap.
    unit : str, optional
        Unit of ``r``.
    title : str, optional
        Axes title.
    """
    r = np.asarray(r, dtype=float)
    g = np.asarray([np.nan if v is None else v for v in g], dtype=float)
    if r.shape != g.shape:
        raise ValueError(f"r and g differ in shape: {r.shape} vs {g.shape}")
    figure, axes = _new_figure()
    axes.plot(r, g, color="k", marker=".", linewidth=1)
    axes.axhline(1.0, color="0.6", linestyle=":")
    axes.set_xlabel(f"r ({unit})")
    axes.set_ylabel("g(r)")
    axes.set_title(title or "radial distribution function")
    return figure


def plot_overlay(image: np.ndarray | None, labels: np.ndarray, title: str | None = None,
                 uncertainty: np.ndarray | None = None) -> Figure:
    """Contours of an instance map over its panel image.

    Parameters
    ----------
    image : ndarray of uint8, shape (M, N) or (M, N, 3), optional
        Panel image; if None, the contours are drawn on a blank background.
    labels : ndarray of int, shape (M, N)
        Instance map, 0 = background.
    title : str, optional
        Axes title.
    uncertainty : ndarray of float, shape (M, N), optional
        Shown semi-transparent under the contours when given.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if image is not None and np.shape(image)[:2] != labels.shape:
        raise ValueError(f"image shape {np.shape(image)} does not match labels {labels.shape}; "
                         "pass the panel image the labels were computed on")
    height, width = labels.shape
    scale = 6.0 / max(height, width)
    figure, axes = _new_figure((max(width * scale, 2.0), max(height * scale, 2.0) + 0.4))
    if image is not None:
        axes.imshow(image, cmap="gray", interpolation="nearest")
    else:
        axes.imshow(np.ones(labels.shape), cmap="gray", vmin=0, vmax=1)
    if uncertainty is not None:
        axes.imshow(np.asarray(uncertainty, dtype=float), cmap="magma", alpha=0.35)
    boundaries = find_boundaries(labels, mode="inner")
    overlay = np.zeros((height, width, 4))
    overlay[boundaries] = (1.0, 0.15, 0.1, 1.0)
    axes.imshow(overlay, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title or _particles(len(np.unique(labels[labels > 0]))))
    return figure
