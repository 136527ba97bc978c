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
    # The trim's own work: the outline and base growth and the guard rail, which come after it, are off in both.
    later_off = {"grow_outline": False, "grow_bases": False, "guard_rail": False}
    untrimmed = segment(ct, SegmentOptions(device="cpu", trim_rim=False, **later_off))
    trimmed = segment(ct, SegmentOptions(device="cpu", **later_off))
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


def test_the_bases_go_on_down_through_the_aerated_voxels_beneath_them_and_no_further_than_their_reach():
    """Two lungs on slices 6-9 (2.5 mm apart, so 10 mm is 4 slices); beneath them, soft tissue, except under the
    right lung's outer half, where aerated voxels go down to the scan's first slice (a recess), under one column
    of the left lung, where dense tissue sits on slice 5 with aerated voxels below it, and at one pixel beside the
    right lung, not under it. The trachea's lumen runs down under the left lung's inner edge."""
    from LungGANLib.segment.rim import BASE_REACH_MM, grow_bases

    spacing = (1.0, 1.0, 2.5)
    hu = np.full((10, 30, 60), TISSUE_HU, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[6:, 10:20, 5:25], labels[6:, 10:20, 35:55] = 1, 2
    hu[6:][labels[6:] > 0] = LUNG_HU
    hu[:6, 10:20, 5:12] = LUNG_HU  # the recess under the right lung
    hu[:6, 10:20, 4] = LUNG_HU  # beside the right lung: under no lung
    hu[:5, 15, 45] = LUNG_HU  # under the left lung, below a dense voxel on slice 5
    hu[:6, 12:15, 35:38] = -1000  # the trachea
    trachea = ((slice(0, 6), slice(12, 15), slice(35, 38)), np.ones((6, 3, 3), dtype=bool))
    before = labels.copy()
    assert BASE_REACH_MM == 10.0
    added = grow_bases(labels, hu, spacing, airways=trachea)
    reach = 4
    assert added == reach * 10 * 7
    assert (labels[6 - reach : 6, 10:20, 5:12] == 1).all() and not labels[: 6 - reach].any()
    assert not labels[:6, :, 4].any() and not labels[:6, 15, 45].any() and not (labels[:6] == 2).any()
    assert np.array_equal(labels[6:], before[6:])
    free = before.copy()  # without the trachea, its lumen too: 3x3 pixels a slice
    assert grow_bases(free, hu, spacing) == added + 9 * reach and (free[6 - reach : 6, 12:15, 35:38] == 2).all()
    assert grow_bases(before.copy(), hu, (1.0, 1.0, 11.0)) == 0  # slices thicker than the reach


def test_neither_growth_enters_a_scanners_padding():
    """A lung (rows 5-14, columns 5-14 of slices 4-7) beside the padding outside a round field of view (columns 15
    on, -2048 HU), with air (-1000 HU) along its other three sides and beneath it: the outline grows into the air,
    up to its steps, and the bases down through it, never into the padding, which is below every threshold."""
    from LungGANLib.config import PADDING_HU
    from LungGANLib.segment.rim import OUTLINE_STEPS, grow_bases, grow_outline

    hu = np.full((8, 20, 20), -1000, dtype=np.int16)
    hu[:, :, 15:] = -2048
    assert (hu[:, :, 15:] < PADDING_HU).all()
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[4:, 5:15, 5:15] = 1
    grown = labels.copy()
    added = grow_outline(grown, hu)
    assert not grown[:, :, 15:].any() and added > 0
    assert (grown[4:, 5:15, 5 - OUTLINE_STEPS : 5] == 1).all()  # into the air, on the side away from the padding
    deeper = labels.copy()
    assert grow_bases(deeper, hu, (1.0, 1.0, 2.5)) == 4 * 10 * 10 and not deeper[:, :, 15:].any()
    beside = labels.copy()
    beside[4:, 5:15, 15:18] = 1  # a mask that already runs into the padding grows no further into it
    grow_outline(beside, hu)
    assert (beside[4:, 5:15, 15:18] == 1).all() and not beside[:, :, 18:].any()


def test_on_a_real_scan_the_bases_grow_only_through_aerated_voxels_under_the_lung(data):
    ct = load_ct(data / "fixtures/cip-ct-64/ct-64.nrrd")
    # Without the join of aerated lung beside the mask: with the growth off it takes in much of what the growth adds.
    without = segment(ct, SegmentOptions(device="cpu", grow_bases=False, join_aerated=False))
    grown = segment(ct, SegmentOptions(device="cpu", grow_bases=True, join_aerated=False))
    added = (grown > 0) & (without == 0)
    assert added.any() and not ((without > 0) & (grown == 0)).any()
    assert (ct.array[added] < -320).all()
    # Every added voxel is directly under lung of its own label, and within two slices (8 mm) of the mask's lung.
    zs, ys, xs = np.nonzero(added)
    assert (grown[zs + 1, ys, xs] == grown[zs, ys, xs]).all()
    assert all(without[z + 1 : z + 3, y, x].any() for z, y, x in zip(zs, ys, xs))
    assert added.sum() < 0.02 * (without > 0).sum()  # the bases' crescents, not a lobe


def test_the_label_beside_a_voxel_is_the_grey_dilation_by_the_in_plane_cross(data):
    """The outline growth gives a new voxel the highest label among it and its four in-plane neighbours: what
    scipy's grey dilation by the cross gives, on real right and left lungs (they meet at the front) and their edges."""
    from LungGANLib.segment.classical import segment_classical
    from LungGANLib.segment.rim import _CROSS, _highest_beside

    ct = load_ct(data / "ct/elastix-00.nii.gz")
    labels = segment_classical(ct.array, ct.spacing, envelope=False)
    assert set(np.unique(labels)) == {0, 1, 2}
    for part in (labels, labels[40:50, :, : labels.shape[2] // 2], labels[60:61]):
        expected = ndimage.grey_dilation(part, footprint=_CROSS)
        assert np.array_equal(_highest_beside(part), expected)
        assert (expected != part).any()
