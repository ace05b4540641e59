import numpy as np
import pytest
from scipy import ndimage as ndi

from models.edges import snap_edges


def disks(centres, radius, shape=(96, 96)):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return labels


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("particle, ground", [(200.0, 60.0), (40.0, 180.0)])  # bright or dark particles
def test_rims_a_pixel_off_return_to_the_particles_edge(particle, ground):
    truth = disks([(30, 30), (30, 66), (66, 48)], 14)
    rng = np.random.default_rng(0)
    grey = np.where(truth > 0, particle, ground) + rng.normal(0, 4, truth.shape)
    for radius in (13, 15):  # masks a pixel short of the edge, and a pixel past it
        predicted = disks([(30, 30), (30, 66), (66, 48)], radius)
        snapped = snap_edges(predicted, grey, alpha=0.1)
        for k in (1, 2, 3):
            before, after = iou(predicted == k, truth == k), iou(snapped == k, truth == k)
            assert before < 0.9 and after > 0.97, (radius, k, before, after)


def test_low_contrast_instances_and_other_instances_pixels_are_left_alone():
    truth = disks([(48, 30), (48, 58)], 14)  # two touching particles
    grey = np.where(truth > 0, 200.0, 60.0)
    grey[(disks([(48, 30)], 18) == 1) & (truth != 2)] = 65.0  # the first hardly differs from its ground
    predicted = disks([(48, 30), (48, 58)], 13)
    predicted[ndi.binary_dilation(truth == 1) & (truth == 2)] = 1  # the first claims the second's rim
    snapped = snap_edges(predicted, grey, alpha=0.1)
    assert np.array_equal(snapped == 1, predicted == 1)  # no contrast: as it was
    assert not (snapped[predicted == 1] == 2).any()  # never takes another instance's pixels
    assert set(np.unique(snapped)) == {0, 1, 2}  # numbers kept, none vanished
    assert iou(snapped == 2, truth == 2) > iou(predicted == 2, truth == 2)


def test_empty_maps_and_mismatched_shapes():
    assert not snap_edges(np.zeros((8, 8), int), np.zeros((8, 8)), 0.1).any()
    with pytest.raises(ValueError, match="differ in shape"):
        snap_edges(np.zeros((8, 8), int), np.zeros((8, 9)), 0.1)


def test_annotation_offset_benchmark_measures_a_shifted_annotation():
    from benchmarks.annotation_offset import particle_offsets

    truth = disks([(30, 30), (30, 66), (66, 48)], 12)
    rng = np.random.default_rng(1)
    grey = np.where(truth > 0, 190.0, 70.0) + rng.normal(0, 3, truth.shape)
    shifted = np.roll(truth, 1, axis=1)  # annotations drawn one pixel to the right
    offsets = np.array(particle_offsets(grey, shifted))
    assert len(offsets) == 3
    assert np.allclose(offsets[:, 0], 0, atol=0.05) and np.allclose(offsets[:, 1], -1, atol=0.05)
    assert np.allclose(particle_offsets(grey, truth), 0, atol=0.05)  # the same outline: no offset
