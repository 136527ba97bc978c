"""The rim trim: the generator's outline comes off a one-voxel dense rim of pleura, never off a lesion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from LungGANLib.io import load_ct
from LungGANLib.segment.inference import SegmentOptions, segment
from LungGANLib.segment.rim import trim_dense_rim

LUNG_HU, TISSUE_HU = -850, 40


def chest():
    """Three slices of chest wall (40 HU) around a square lung (-850 HU), a 6-pixel nodule on its left edge.

    Returns (hu, labels): labels are the lung one pixel wider all round (the rim a generator may take in), nodule
    included; and the rim alone and the nodule as masks.
    """
    hu = np.full((3, 40, 40), TISSUE_HU, dtype=np.int16)
    hu[:, 10:30, 10:30] = LUNG_HU
    nodule = np.zeros(hu.shape, dtype=bool)
    nodule[:, 17:23, 10:16] = True  # against the lung's left edge, six pixels deep
    hu[nodule] = TISSUE_HU
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[:, 9:31, 9:31] = 1
    rim = (labels > 0) & ~ndimage.binary_erosion(labels > 0, structure=np.ones((1, 3, 3), dtype=bool))
    return hu, labels, rim, nodule


def test_a_one_voxel_dense_rim_comes_off_and_a_nodule_on_the_edge_stays():
    hu, labels, rim, nodule = chest()
    cross = np.zeros((1, 3, 3), dtype=bool)
    cross[0, 1, :] = cross[0, :, 1] = True
    nodule_face = rim & ndimage.binary_dilation(nodule, structure=cross)  # the rim right beside the nodule
    removed = trim_dense_rim(labels, hu)
    lung = np.zeros(hu.shape, dtype=bool)
    lung[:, 10:30, 10:30] = True
    assert np.array_equal(labels > 0, lung | nodule_face)  # the square lung, and the nodule up to the chest wall
    assert removed == int(rim.sum() - nodule_face.sum())
    assert (labels[nodule] == 1).all()  # the nodule, up to the chest wall, is still lung
    assert trim_dense_rim(labels, hu) == 0  # twice removes nothing more


def test_the_rim_where_a_ground_glass_nodule_meets_the_wall_stays():
    hu, labels, rim, nodule = chest()
    hu[nodule] = -550  # ground glass, not soft tissue: no dense neighbour inside the lung
    face = rim & ndimage.binary_dilation(nodule, structure=np.ones((1, 3, 3), dtype=bool))  # touching it, corners too
    aerated_face = face & ndimage.binary_dilation(hu == LUNG_HU, structure=np.ones((1, 3, 3), dtype=bool))
    removed = trim_dense_rim(labels, hu)
    assert (labels[face & ~aerated_face] == 1).all()  # beside ground glass alone: the lesion's edge, kept
    assert removed == int(rim.sum() - (face & ~aerated_face).sum())  # the rest of the pleural rim goes
    assert trim_dense_rim(labels, hu) == 0


def test_aerated_boundary_and_dense_interior_are_left_alone():
    hu, labels, _, _ = chest()
    labels[:] = 0
    labels[:, 10:30, 10:30] = 1  # exactly the aerated lung and the nodule: no rim
    before = labels.copy()
    assert trim_dense_rim(labels, hu) == 0 and np.array_equal(labels, before)


def test_on_a_real_scan_only_dense_voxels_of_the_outline_go(data):
    ct = load_ct(data / "ct/lidc-idri-0001.nii.gz")
    # The trim's own work: the outline growth and the guard rail, which come after it, are off in both.
    untrimmed = segment(ct, SegmentOptions(device="cpu", trim_rim=False, grow_outline=False, guard_rail=False))
    trimmed = segment(ct, SegmentOptions(device="cpu", grow_outline=False, guard_rail=False))
    gone = (untrimmed > 0) & (trimmed == 0)
    assert gone.any() and not ((trimmed > 0) & (untrimmed == 0)).any()
    outline = (untrimmed > 0) & ~ndimage.binary_erosion(untrimmed > 0, structure=np.ones((1, 3, 3), dtype=bool))
    assert (ct.array[gone] > -320).all() and not (gone & ~outline).any()
    assert gone.sum() < 0.01 * (untrimmed > 0).sum()  # a rim, not a lobe


def test_the_outline_grows_through_the_voxels_below_the_lung_threshold_and_no_further_than_its_bound():
    """Two lungs inside the wall; the ring round them is partial volume: -300 HU (above the lung threshold)
    except on their outer sides, where two columns lie before the wall, the first at -350 HU (below the threshold,
    though more tissue than air), the second at -500 HU; and from the right lung's outer side an air channel (a
    bronchus through a gap in its wall) runs 10 voxels out."""
    from LungGANLib.config import DEFAULT_CLASSICAL
    from LungGANLib.segment.rim import OUTLINE_STEPS, grow_outline

    hu = np.full((2, 40, 70), TISSUE_HU, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for value, cols in ((1, slice(15, 30)), (2, slice(40, 55))):
        hu[:, 10:30, cols] = LUNG_HU
        labels[:, 10:30, cols] = value
    ring = ndimage.binary_dilation(labels > 0, structure=np.ones((1, 3, 3), dtype=bool)) & (labels == 0)
    hu[ring] = -300
    hu[:, 10:30, 13:15] = hu[:, 10:30, 55:57] = -500  # the outer sides: two columns of partial volume
    hu[:, 10:30, 14] = hu[:, 10:30, 55] = -350  # the first of them more tissue than air, yet below the threshold
    hu[:, 20, 3:13] = -1000  # the channel: 10 voxels of air beyond the right lung's outer columns
    one = labels.copy()
    assert grow_outline(one, hu, steps=1) == 2 * 2 * 20  # the first outer column of each lung, on both slices
    assert (one[:, 10:30, 14] == 1).all() and (one[:, 10:30, 55] == 2).all() and (one[:, :, 13] == 0).all()
    before = labels.copy()
    added = grow_outline(labels, hu)
    assert OUTLINE_STEPS == 4
    # Both outer columns of each lung join it, and the channel its first two voxels (steps three and four).
    assert added == 2 * (2 * 2 * 20 + 2)
    assert (labels[:, 10:30, 13:15] == 1).all() and (labels[:, 10:30, 55:57] == 2).all()  # each joins its own lung
    assert (labels[:, 20, 11:13] == 1).all() and (labels[:, 20, :11] == 0).all()
    changed = labels != before
    assert (hu[changed] < DEFAULT_CLASSICAL.lung_threshold_hu).all() and not (labels[:, :, 57:] > 0).any()
    assert grow_outline(before.copy(), hu, below_hu=-400.0, steps=1) == 0  # half air: the -350 column stays out
    assert grow_outline(labels.copy(), hu, steps=20) == 2 * 8  # unbounded, the channel's other 8 voxels follow
