import numpy as np
import pytest

from idx.errors import ImageError
from models.baselines import (GmmCcl, OtsuWatershed, choose_particles, remove_small_instances)
from models.evaluate import image_metrics


def particles_image(dark_particles=False, seed=0):
    """(160, 160, 3) uint8 noisy micrograph with 5 disks (two of them touching) and its truth."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:160, :160]
    truth = np.zeros((160, 160), dtype=np.int32)
    centres = [(40, 40), (40, 68), (110, 40), (110, 115), (40, 120)]  # first two touch
    for k, (r, c) in enumerate(centres, start=1):
        truth[((rr - r) ** 2 + (cc - c) ** 2 < 15**2) & (truth == 0)] = k
    grey = np.where(truth > 0, 190.0, 60.0) + rng.normal(0, 12, truth.shape)
    if dark_particles:
        grey = 255.0 - grey
    image = np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, truth


@pytest.mark.parametrize("dark", [False, True])
def test_otsu_watershed_splits_touching_particles(dark):
    image, truth = particles_image(dark_particles=dark)
    result = OtsuWatershed(sigma_px=1.0, min_distance_px=10).segment(image)
    assert result.labels.shape == truth.shape and result.labels.dtype == np.int32
    assert result.count == 5
    m = image_metrics(truth, result.labels)
    assert m["AP50"] == 1.0 and m["mean_IoU"] > 0.8


@pytest.mark.parametrize("dark", [False, True])
def test_gmm_ccl_finds_particles_and_merges_touching_ones(dark):
    image, truth = particles_image(dark_particles=dark)
    result = GmmCcl(sigma_px=1.0, opening_radius_px=2).segment(image)
    assert result.count == 4  # connected components cannot split the touching pair
    m = image_metrics(truth, result.labels)
    assert m["AP50"] == pytest.approx(3 / 4)  # 3 matched, the merged blob matches neither
    assert result.to_dict()["params"]["method"] == "gmm_ccl"


def test_baselines_accept_grey_images_and_return_empty_on_flat_ones():
    image, truth = particles_image()
    assert OtsuWatershed(min_distance_px=10).segment(image[..., 0]).count == 5
    flat = np.full((64, 64), 128, dtype=np.uint8)
    for segmenter in (OtsuWatershed(), GmmCcl()):
        result = segmenter.segment(flat)
        assert result.count == 0 and result.labels.shape == (64, 64)


def test_choose_particles_rules():
    bright = np.zeros((20, 20), dtype=bool)
    bright[2:18, 2:18] = True  # dense particles: 256 of 400 px, none on the border
    assert choose_particles(bright, "bright").sum() == 256
    assert choose_particles(bright, "dark").sum() == 144
    assert choose_particles(bright, "minority").sum() == 144  # minority picks the gaps
    assert choose_particles(bright, "border").sum() == 256  # border picks the particles
    bright = np.zeros((20, 20), dtype=bool)
    bright[:, :12] = True  # 42 of the 76 border pixels are bright: bright is the background
    assert (choose_particles(bright, "border") == ~bright).all()
    with pytest.raises(ValueError, match="unknown polarity rule"):
        choose_particles(bright, "auto")


def test_remove_small_instances_renumbers():
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[0:5, 0:5] = 4  # 25 px
    labels[6:8, 6:8] = 9  # 4 px
    labels[6:10, 0:4] = 2  # 16 px
    out = remove_small_instances(labels, 10)
    assert sorted(np.unique(out)) == [0, 1, 2]
    assert (out[0:5, 0:5] == 2).all() and (out[6:10, 0:4] == 1).all() and (out[6:8, 6:8] == 0).all()


def test_baselines_refuse_bad_input():
    with pytest.raises(ValueError, match="unknown polarity rule"):
        OtsuWatershed(polarity="minor")
    with pytest.raises(ValueError, match="min_distance_px >= 1"):
        OtsuWatershed(min_distance_px=0)
    with pytest.raises(ValueError, match="must be >= 0"):
        GmmCcl(opening_radius_px=-1)
    with pytest.raises(ImageError, match="H, W >= 8"):
        GmmCcl().segment(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ImageError, match=r"\(H, W\) or \(H, W, 3\)"):
        OtsuWatershed().segment(np.zeros(100, dtype=np.uint8))
