"""Tests of idx.plots: figures render to PNG with the expected content."""
import io

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from idx.plots import plot_overlay, plot_rdf, plot_size_histogram


def render(figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_histogram_counts_and_marks_mean():
    diameters = np.array([10.0, 11, 12, 12, 13, np.nan])
    figure = plot_size_histogram(diameters, "nm", bins=4)
    axes = figure.axes[0]
    assert sum(patch.get_height() for patch in axes.patches) == 5
    assert axes.get_xlabel() == "equivalent diameter (nm)"
    assert "mean 11.6 nm" in [t.get_text() for t in axes.get_legend().get_texts()]
    assert render(figure).shape[2] == 3
    assert axes.get_title() == "5 particles"
    assert all(float(tick).is_integer() for tick in axes.get_yticks())  # counts
    titled = plot_size_histogram(diameters[:1], "nm", title="Fig. 2b").axes[0]
    assert titled.get_title() == "Fig. 2b: 1 particle"
    assert all(float(tick).is_integer() for tick in titled.get_yticks())


def test_histogram_without_particles_says_so():
    axes = plot_size_histogram(np.array([]), "px").axes[0]
    assert any(t.get_text() == "no particles" for t in axes.texts)


def test_rdf_plots_gaps_for_missing_bins():
    r = np.arange(5) + 0.5
    figure = plot_rdf(r, [None, 0.0, 2.0, 1.1, 1.0], "px")
    line = figure.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), r)
    assert np.isnan(line.get_ydata()[0]) and line.get_ydata()[2] == 2.0
    with pytest.raises(ValueError, match="differ in shape"):
        plot_rdf(r, [1.0, 2.0])


def test_overlay_draws_red_contours_on_the_image():
    labels = np.zeros((80, 100), np.int32)
    rr, cc = disk((40, 50), 20)
    labels[rr, cc] = 1
    image = np.full((80, 100), 90, np.uint8)
    figure = plot_overlay(image, labels)
    pixels = render(figure).reshape(-1, 3).astype(int)
    red = (pixels[:, 0] > 200) & (pixels[:, 1] < 100) & (pixels[:, 2] < 100)
    assert red.sum() > 50
    assert figure.axes[0].get_title() == "1 particle"
    assert render(plot_overlay(None, labels)).shape[2] == 3
    with pytest.raises(ValueError, match="does not match labels"):
        plot_overlay(np.zeros((10, 10), np.uint8), labels)
