"""The classical segmentation and the shared post-processing, on real CT and hand-made shapes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from LungGANLib.segment.classical import airway_mask, body_mask, segment_classical
from LungGANLib.config import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.evaluate.metrics import dice
from LungGANLib.segment.postprocess import fill_holes_per_slice, finish_lungs, select_lungs, split_lungs


@pytest.fixture(scope="module")
def cip(data):
    ct = load_ct(data / "fixtures/cip-ct-64/ct-64.nrrd")
    ref = mask_from_image(sitk.ReadImage(str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd")), ct)
    return ct, ref


def test_classical_matches_the_chest_imaging_platform_mask(cip):
    ct, ref = cip
    labels = segment_classical(ct.array, ct.spacing)
    # Measured 0.977 at 4 mm voxels: a drop below 0.96 means the method broke.
    assert dice(labels > 0, ref > 0) > 0.96
    assert set(np.unique(labels)) == {0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL}


def test_coarse_pixels_keep_the_thin_lung_of_the_bases(cip):
    """On 4.2 mm pixels no speck opening runs (``ClassicalParams.speck_mm``): a 3-pixel one cut the thin lung of
    the recesses behind the domes, which the Chest Imaging Platform's mask holds (47 % of it kept on the six
    lowest lung slices with the opening, 96 % without)."""
    ct, ref = cip
    labels = segment_classical(ct.array, ct.spacing)
    lowest = np.flatnonzero((ref > 0).any(axis=(1, 2)))[:6]
    kept = ((labels > 0) & (ref > 0))[lowest].sum() / (ref > 0)[lowest].sum()
    assert kept > 0.9


def test_the_speck_opening_follows_the_pixel_size():
    """A lung candidate two pixels wide is a speck on 0.7 mm pixels (1.4 mm) and lung on 4 mm pixels (8 mm)."""
    from LungGANLib.segment.classical import lung_candidates

    hu = np.full((3, 40, 40), 40.0)
    hu[:, 5:35, 5:35] = -80.0  # fat inside the body
    hu[:, 10:30, 10:12] = -850.0  # a strip of lung two pixels wide
    for pixel, kept in ((0.7, False), (4.0, True)):
        candidates = lung_candidates(hu, (pixel, pixel, 2.0))
        assert candidates[:, 10:30, 10:12].all() == kept
        assert not candidates[:, :, 13:].any()


def test_right_lung_is_on_the_patients_right(cip):
    ct, _ = cip
    labels = segment_classical(ct.array, ct.spacing)
    x_right = np.nonzero(labels == RIGHT_LUNG_LABEL)[2].mean()
    x_left = np.nonzero(labels == LEFT_LUNG_LABEL)[2].mean()
    # Canonical LPS: x grows towards the patient's left.
    assert x_right < ct.array.shape[2] / 2 < x_left


def test_single_label_gives_one_label(cip):
    ct, _ = cip
    labels = segment_classical(ct.array, ct.spacing, single_label=True)
    assert set(np.unique(labels)) == {0, 1}


def test_abdomen_without_lungs_gives_an_empty_mask(data):
    ct = load_ct(data / "fixtures/abdomen-ct-no-lungs.nii.gz")
    labels = segment_classical(ct.array, ct.spacing)
    assert labels.shape == ct.array.shape
    assert not labels.any()


def test_trachea_is_found_and_kept_out_of_the_lungs(data):
    ct = load_ct(data / "ct/lung-pet-ct-dx-a0001-series3.nii.gz")
    hu = np.maximum(ct.array, -1024)
    airway = airway_mask(hu, body_mask(hu), ct.spacing)
    volume_ml = airway.sum() * ct.voxel_volume_ml
    assert 10 < volume_ml < 90  # trachea and main bronchi, not a leak into the lung
    labels = segment_classical(ct.array, ct.spacing)
    # The top slices hold the trachea but no lung; where the lungs are, the airway is not lung.
    top = np.flatnonzero(airway.any(axis=(1, 2)))[-1]
    assert not labels[top].any()
    # Only bronchi deep inside the lung come back with hole filling: measured 1 %.
    assert (labels[airway & (hu < -950)] > 0).mean() < 0.05


@pytest.mark.parametrize("name", ["ct/lung-pet-ct-dx-a0001-series3.nii.gz", "ct/lidc-idri-0001.nii.gz"])
def test_the_airways_grow_to_the_air_components_that_hold_the_trachea_seed(data, name):
    """The airways are grown from the seed instead of labelling all the body's air (a long scan's int32
    labels took 1.3 GB); they must be the very components the labelling found."""
    from scipy import ndimage

    from LungGANLib.config import DEFAULT_CLASSICAL
    from LungGANLib.segment.classical import find_trachea_seed

    ct = load_ct(data / name)
    hu, params = ct.array, DEFAULT_CLASSICAL
    body = body_mask(hu, params)
    airway = airway_mask(hu, body, ct.spacing, params)
    assert airway.any()
    # The labelling it replaces, threshold by threshold as airway_mask tries them.
    for threshold in sorted(params.airway_threshold_hu, reverse=True):
        air = (hu < threshold) & body
        z, seed = find_trachea_seed(air, body, ct.spacing)
        labels, _ = ndimage.label(air)
        grown = np.isin(labels, np.unique(labels[z][seed]))
        if grown.sum() * ct.voxel_volume_ml <= params.max_airway_ml:
            break
    iterations = max(int(round(params.airway_dilation_mm / min(ct.spacing))), 1)
    np.testing.assert_array_equal(airway, ndimage.binary_dilation(grown, iterations=iterations) & body)


def test_classical_post_processing_in_the_candidates_box_gives_the_labels_of_the_whole_scan(data):
    from LungGANLib.segment.classical import lung_candidates
    from LungGANLib.segment.postprocess import postprocess

    ct = load_ct(data / "ct/lidc-idri-0001.nii.gz")
    whole = postprocess(lung_candidates(ct.array, ct.spacing), ct.array, ct.spacing)
    assert whole.any()
    np.testing.assert_array_equal(segment_classical(ct.array, ct.spacing), whole)


def test_touching_lungs_are_split_at_the_junction_line():
    # Two boxes of "lung" (-850 HU) joined across a 1-voxel pleural sheet of -750 HU.
    hu = np.full((6, 40, 60), 0.0)
    mask = np.zeros(hu.shape, bool)
    mask[:, 5:35, 5:55] = True
    hu[mask] = -850.0
    hu[:, 5:35, 29] = -750.0
    labels = split_lungs(mask, hu)
    assert (labels[:, 5:35, 5:29] == RIGHT_LUNG_LABEL).all()
    assert (labels[:, 5:35, 30:55] == LEFT_LUNG_LABEL).all()


def test_lungs_joined_by_a_neck_are_split_by_erosion():
    mask = np.zeros((8, 40, 60), bool)
    mask[1:7, 5:35, 5:25] = True
    mask[1:7, 5:35, 35:55] = True
    mask[3:5, 18:21, 25:35] = True  # a thin bridge
    labels = split_lungs(mask)
    assert (labels[1:7, 5:35, 5:25] == RIGHT_LUNG_LABEL).all()
    assert (labels[1:7, 5:35, 35:55] == LEFT_LUNG_LABEL).all()
    assert (labels[mask] > 0).all()


def test_a_single_lung_keeps_its_side():
    mask = np.zeros((8, 40, 60), bool)
    mask[1:7, 5:35, 35:55] = True
    labels = split_lungs(mask, midline_x=30)
    assert set(np.unique(labels[mask])) == {LEFT_LUNG_LABEL}


def test_select_lungs_drops_small_and_pure_air_components():
    spacing = (1.0, 1.0, 1.0)
    mask = np.zeros((60, 60, 60), bool)
    hu = np.zeros(mask.shape)
    mask[5:55, 5:55, 5:28] = True  # 57.5 mL lung
    hu[5:55, 5:55, 5:28] = -850
    mask[5:55, 5:55, 32:55] = True  # the other lung
    hu[5:55, 5:55, 32:55] = -850
    mask[0:2, 0:2, 0:2] = True  # a speck
    hu[0:2, 0:2, 0:2] = -850
    from LungGANLib.config import ClassicalParams

    params = ClassicalParams(min_lung_ml=1.0)
    kept = select_lungs(mask, hu, spacing, params)
    assert kept.sum() == 2 * 50 * 50 * 23
    hu[5:55, 5:55, 32:55] = -1000  # now that one is pure air: bowel gas
    kept = select_lungs(mask, hu, spacing, params)
    assert kept.sum() == 50 * 50 * 23 and kept[10, 10, 10]


def test_fill_holes_and_closing_bring_nodules_back_in():
    labels = np.zeros((3, 50, 50), np.uint8)
    labels[:, 10:40, 10:40] = RIGHT_LUNG_LABEL
    labels[:, 20:25, 20:25] = 0  # a nodule inside the lung
    labels[:, 10:14, 24:28] = 0  # a juxtapleural nodule: a notch in the border
    out = finish_lungs(labels, (1.0, 1.0, 1.0), closing_radius_mm=3.0)
    # The notch is filled below its rim (a digital disk's tip still dips into the rim row).
    assert (out[:, 11:40, 10:40] == RIGHT_LUNG_LABEL).all()
    assert (out[:, :10] == 0).all() and (out[:, 40:] == 0).all()
    no_close = finish_lungs(labels, (1.0, 1.0, 1.0), closing_radius_mm=0.0)
    assert (no_close[:, 20:25, 20:25] == RIGHT_LUNG_LABEL).all()
    assert (no_close[:, 10:14, 24:28] == 0).all()
    assert fill_holes_per_slice(labels > 0)[:, 22, 22].all()


def test_finishing_the_lungs_in_place_gives_what_a_copy_gets():
    """The pipeline finishes the lungs in place (a long scan's labels are not held twice); a lung only
    takes background, so the left lung is finished as it was before the right one was."""
    labels = np.zeros((4, 60, 60), np.uint8)
    labels[:, 10:50, 5:29] = RIGHT_LUNG_LABEL
    labels[:, 10:50, 31:55] = LEFT_LUNG_LABEL
    labels[:, 12:16, 27:29] = 0  # notches that each lung's closing would fill towards the other
    labels[:, 12:16, 31:33] = 0
    labels[:, 30:34, 40:44] = 0  # a hole
    copy = finish_lungs(labels, (1.0, 1.0, 1.0), closing_radius_mm=4.0)
    assert (copy != labels).any()  # there was something to finish
    work = labels.copy()
    in_place = finish_lungs(work, (1.0, 1.0, 1.0), closing_radius_mm=4.0, in_place=True)
    assert in_place is work
    np.testing.assert_array_equal(in_place, copy)


@pytest.mark.parametrize("counts", [[3], [0, 2, 0, 5], [1, 1], [4, 0, 0, 0, 1], [0, 0, 7, 0], [2, 3, 0, 1, 6]])
def test_the_midline_from_voxel_counts_per_x_is_the_median_of_every_voxels_x(counts):
    from LungGANLib.segment.morphology import percentile_of_counts

    xs = np.repeat(np.arange(len(counts)), counts)
    assert percentile_of_counts(np.array(counts), 50) == np.median(xs)


def test_holes_fill_but_a_diaphragm_dome_does_not():
    from LungGANLib.segment.postprocess import fill_lung_holes

    lung = np.zeros((12, 60, 60), bool)
    lung[2:12, 5:55, 5:55] = True
    lung[6:9, 10:14, 10:14] = False  # a nodule, enclosed in 3D: filled
    # A dome: soft tissue rising from below (z=0,1 are under the lung) into slices 2-5,
    # an island in each of those slices, 30x30 mm at 1 mm pixels.
    lung[2:6, 20:50, 20:50] = False
    lung[5, 20:50, 20:50] = True  # capped: the dome's top is inside the lung
    filled = fill_lung_holes(lung, (1.0, 1.0, 1.0))
    assert filled[6:9, 10:14, 10:14].all()
    assert not filled[2:5, 20:50, 20:50].any()
    # A small island that opens downwards (a vessel) is still filled.
    vessel = np.zeros_like(lung)
    vessel[2:12, 5:55, 5:55] = True
    vessel[2:5, 30:33, 30:33] = False
    assert fill_lung_holes(vessel, (1.0, 1.0, 1.0))[2:5, 30:33, 30:33].all()


def test_a_single_slice_is_segmented_by_area_not_volume(data):
    ct = load_ct(data / "fixtures/chest-slice-lungmask.dcm")
    labels = segment_classical(ct.array, ct.spacing)
    area_cm2 = {v: (labels == v).sum() * ct.spacing[0] * ct.spacing[1] / 100 for v in (1, 2)}
    # One 1 mm slice holds ~12 mL of lung, under the volume minimum; its cross-section is ~190 cm².
    assert area_cm2[1] > 80 and area_cm2[2] > 50


def test_too_little_lung_judges_the_whole_scan_not_the_lungs_extent():
    from LungGANLib.config import DEFAULT_CLASSICAL
    from LungGANLib.segment.postprocess import too_little_lung

    lungs = np.zeros((3, 100, 100), bool)
    lungs[:, 10:90, 10:90] = True  # 64 cm² a slice, 58 mL at 3 mm slices
    spacing = (1.0, 1.0, 3.0)
    # Three slices of a 90 mm scan: too little lung for a scan that long.
    assert "below the 200 mL minimum" in too_little_lung(lungs, spacing, DEFAULT_CLASSICAL, extent_mm=90.0)
    # The same three slices as the whole scan (9 mm): judged by cross-section, enough.
    assert too_little_lung(lungs, spacing, DEFAULT_CLASSICAL, extent_mm=9.0) is None


def test_a_body_found_before_is_used_as_given(cip):
    """The review's second opinion reuses the body the generator's segmentation found: given the body
    :func:`body_mask` finds, the method finds what it finds alone; given half a body, lung only in that half."""
    ct, _ = cip
    alone = segment_classical(ct.array, ct.spacing)
    assert np.array_equal(segment_classical(ct.array, ct.spacing, body=body_mask(ct.array)), alone)
    half = body_mask(ct.array)
    half[:, :, : half.shape[2] // 2] = False  # the patient's right (x runs to the patient's left)
    labels = segment_classical(ct.array, ct.spacing, body=half)
    assert not labels[:, :, : half.shape[2] // 2].any() and labels.any()


def test_the_opening_in_the_box_of_what_the_erosion_keeps_is_the_opening(cip):
    """``opened`` runs the dilation only around what the erosion kept: the same voxels as scipy's opening, on the
    real lungs and their dense voxels (in-plane disks of 1-3 pixels), and nothing when the erosion keeps nothing."""
    from scipy import ndimage

    from LungGANLib.segment.morphology import disk, opened

    ct, ref = cip
    lungs = ref > 0
    for mask in (lungs, lungs & (ct.array > -700), ~lungs):
        for radius in (1, 2, 3):
            footprint = disk(radius)[None]
            assert np.array_equal(opened(mask, footprint), ndimage.binary_opening(mask, structure=footprint))
    thin = np.zeros((3, 20, 20), dtype=bool)
    thin[:, 5, :] = True  # one pixel wide: a disk of radius 1 fits nowhere
    assert not opened(thin, disk(1)[None]).any()


def test_where_two_boxes_meet_each_box_s_slices_address_the_same_voxels():
    """``overlap`` gives, for two boxes of one grid, the slices into each box's own array that hold the voxels
    both boxes hold: checked against the voxels' own coordinates, and None when the boxes only touch or miss."""
    from LungGANLib.segment.morphology import overlap

    grid = np.arange(12 * 15).reshape(12, 15)  # each voxel's own number
    a, b = (slice(2, 10), slice(0, 6)), (slice(5, 12), slice(3, 15))
    in_a, in_b = overlap(a, b)
    np.testing.assert_array_equal(grid[a][in_a], grid[5:10, 3:6])
    np.testing.assert_array_equal(grid[b][in_b], grid[5:10, 3:6])
    assert overlap((slice(0, 3), slice(0, 4)), (slice(3, 5), slice(0, 4))) is None  # touching rows share no voxel
    assert overlap((slice(0, 3), slice(0, 4)), (slice(1, 5), slice(6, 9))) is None


def test_in_plane_dilation_and_erosion_are_scipy_s(cip):
    """``in_plane`` builds a disk, a square or a cross from 3-pixel steps: the same voxels as scipy's dilation and
    erosion on the real lungs, their dense voxels and the background (disks of 0-6 pixels, 3D and one slice),
    with the erosion empty beyond the edge; a footprint that is no union of centred rectangles goes to scipy."""
    from scipy import ndimage

    from LungGANLib.segment.morphology import _rectangles, close_per_slice, disk, in_plane

    ct, ref = cip
    lungs = ref > 0
    square, cross = np.ones((3, 3), dtype=bool), ndimage.generate_binary_structure(2, 1)
    corners = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=bool)
    assert _rectangles(square) == [(1, 1)] and _rectangles(cross) == [(0, 1), (1, 0)] and _rectangles(corners) is None
    for mask in (lungs, lungs & (ct.array > -700), ~lungs):
        for footprint in [disk(r) for r in range(7)] + [square, cross, corners]:
            for part, shaped in ((mask, footprint[None]), (mask[mask.shape[0] // 2], footprint)):
                for dilate, scipy_op in ((True, ndimage.binary_dilation), (False, ndimage.binary_erosion)):
                    assert np.array_equal(in_plane(part, shaped, dilate), scipy_op(part, structure=shaped))
    for radius in (2, 5):
        pad = radius + 1
        padded = np.pad(lungs, ((0, 0), (pad, pad), (pad, pad)))
        closed = ndimage.binary_closing(padded, structure=disk(radius)[None])[:, pad:-pad, pad:-pad]
        assert np.array_equal(close_per_slice(lungs, radius), closed | lungs)


def test_holes_filled_from_one_labelling_are_scipy_s_slice_by_slice(cip):
    """``fill_holes_per_slice`` labels the background once: on every slice the holes scipy fills, on the real
    lungs, their aerated voxels (many small holes), a mask that touches the slice's edges, and empty slices."""
    from scipy import ndimage

    ct, ref = cip
    lungs = ref > 0
    edge = lungs.copy()
    edge[:, :, 0] = edge[:, 0, :] = True  # the mask runs along two edges of every slice
    edge[:2] = False
    for mask in (lungs, lungs & (ct.array < -900), edge, np.zeros((2, 5, 5), dtype=bool)):
        expected = np.stack([ndimage.binary_fill_holes(plane) for plane in mask])
        assert np.array_equal(fill_holes_per_slice(mask), expected)
    assert (fill_holes_per_slice(lungs) & ~lungs).any()


def test_pooling_a_mask_counts_each_block_s_pixels(cip):
    """``pooled`` sets a coarse pixel when any (or the given share) of its ``step`` x ``step`` block is set, the
    blocks past the edge counted as empty: checked block by block on the real lungs and their dense voxels, on
    slices whose size no step divides."""
    from LungGANLib.segment.morphology import pooled

    ct, ref = cip
    for mask in ((ref > 0)[:, :61, :63], ((ref > 0) & (ct.array > -700))[:, 1:, 2:]):
        for step in (1, 2, 3, 4):
            for share in (None, 0.5, 1.0):
                rows, cols = -(-mask.shape[1] // step), -(-mask.shape[2] // step)
                count = np.array([[[mask[z, y * step : (y + 1) * step, x * step : (x + 1) * step].sum()
                                    for x in range(cols)] for y in range(rows)] for z in range(0, mask.shape[0], 9)])
                expected = count > 0 if share is None else count >= share * step * step
                assert np.array_equal(pooled(mask, step, share)[::9], expected)
