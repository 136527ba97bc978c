"""segment.masses: a mass the default leaves out joins the lung beside it, from the lesion generator's mask; thin tissue
beside the lungs and a thick piece away from them do not. On Lung-PET-CT-Dx A0001 (series 2, its DICOM files), whose
tumour abuts the mediastinum, placed from the collection's tumour boxes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LungGANLib.evaluate.lesions import box_lesions
from LungGANLib.evaluate.references import case_by_name, reference_path
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment import masses
from LungGANLib.segment.inference import SegmentOptions, segment
from LungGANLib.segment.masses import join_masses, mass_finder


@pytest.fixture(scope="module")
def a0001(data):
    case = case_by_name("lung-pet-ct-dx-a0001-series2")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    [tumour] = box_lesions(data / case.tumour_boxes, data / case.boxes_dicom, ct, ref)
    mask = np.zeros(ref.shape, dtype=bool)
    mask[tumour.box] = tumour.mask
    return ct, ref, mask


def _lung_beside(labels: np.ndarray, piece: np.ndarray) -> int:
    """The lung label bordering ``piece`` most, slice by slice."""
    ring = ndimage.binary_dilation(piece, np.ones((1, 3, 3), dtype=bool)) & ~piece
    return int(np.bincount(labels[ring & (labels > 0)]).argmax())


def test_a_mass_left_out_joins_the_lung_beside_it_and_thin_or_distant_tissue_does_not(a0001):
    ct, ref, tumour = a0001
    labels = np.where(tumour, 0, ref).astype(np.uint8)  # the lungs with the tumour left out, as the default leaves it
    lungs = labels > 0
    # A shell two pixels thick around the lungs, the tumour's outline too: the pleura, a rim of the mediastinum, in one
    # piece with the tumour. Beyond a ball's reach from the tumour (the opening's, 2 * OPEN_MM) none of it may join.
    rim = ndimage.binary_dilation(lungs, np.ones((1, 5, 5), dtype=bool)) & ~lungs
    beyond = ndimage.distance_transform_edt(~tumour, sampling=ct.spacing[::-1]) > 2 * masses.OPEN_MM
    # A ball 3 cm across whose edge lies half a millimetre from a lung: a thick piece the lungs border on a few pixels
    # of its outline, far under CONTACT_SHARE (a piece of the mediastinum or the chest wall beside them).
    far_from_lungs = ndimage.distance_transform_edt(~lungs, sampling=ct.spacing[::-1])
    zz, yy, xx = np.ogrid[: lungs.shape[0], : lungs.shape[1], : lungs.shape[2]]
    centres = np.argwhere(np.abs(far_from_lungs - 15.5) < 0.2)  # its edge half a millimetre from a lung
    z, y, x = centres[len(centres) // 2]
    distant = (((zz - z) * ct.spacing[2]) ** 2 + ((yy - y) * ct.spacing[1]) ** 2 + ((xx - x) * ct.spacing[0]) ** 2) <= 15.0**2
    outline = ndimage.binary_dilation(distant, np.ones((1, 3, 3), dtype=bool)) & ~distant
    assert not (distant & lungs).any() and 0 < np.count_nonzero(outline & lungs) < 0.05 * np.count_nonzero(outline)

    only_thin = labels.copy()
    assert join_masses(only_thin, lungs | (rim & ~tumour) | distant, ct.spacing) == 0
    assert np.array_equal(only_thin, labels)

    joined = labels.copy()
    count = join_masses(joined, lungs | tumour | rim | distant, ct.spacing)
    added = joined != labels
    assert count == np.count_nonzero(added)
    assert not (added & (beyond | distant)).any()  # nothing of the rim away from the tumour, or of the distant ball
    assert np.count_nonzero(added & ~tumour) < 0.05 * np.count_nonzero(added)  # the rim at its edge, a little
    assert np.count_nonzero(added) >= 0.8 * np.count_nonzero(tumour)  # the tumour, but for its thin edges
    assert set(np.unique(joined[added])) == {_lung_beside(labels, tumour)}
    assert np.array_equal(joined[~added], labels[~added])


def test_a_joined_mass_keeps_the_outline_the_opening_rounds_off(a0001):
    """The opening rounds a mass off by up to its ball's radius, and the work grid by a pixel; on each slice, what of
    the lesion generator's mask lies within OPEN_MM of the joined mass and touches it comes back with it: here the
    lesion generator's mask is the lungs and the tumour, and nine tenths of the tumour join (its narrow parts stay
    out, over OPEN_MM from any part a ball fits in)."""
    ct, ref, tumour = a0001
    labels = np.where(tumour, 0, ref).astype(np.uint8)
    joined = labels.copy()
    join_masses(joined, (labels > 0) | tumour, ct.spacing)
    added = joined != labels
    assert not (added & ~tumour).any()
    assert np.count_nonzero(added) >= 0.9 * np.count_nonzero(tumour)


def test_a_mass_joins_only_inside_its_lung_s_convex_hull(a0001, monkeypatch):
    """The tumour with 10 mm more of tissue around it on each slice, where that lies beyond the convex hull of the
    lung it abuts (the mediastinum beside the hilum): one thick piece with the tumour. The tumour joins; nothing
    beyond the hull does. Without the hull, the mediastinal part joins with it."""
    from LungGANLib.segment.morphology import convex_hull_mask

    ct, ref, tumour = a0001
    labels = np.where(tumour, 0, ref).astype(np.uint8)
    side = _lung_beside(labels, tumour)
    hulls = np.zeros(tumour.shape, dtype=bool)
    for z in np.flatnonzero((labels == side).any(axis=(1, 2))):
        hull = convex_hull_mask(labels[z] == side)
        hulls[z] = False if hull is None else hull
    near = ndimage.distance_transform_edt(~tumour, sampling=(1e6, ct.spacing[1], ct.spacing[0])) <= 10.0
    beyond = near & ~hulls & (labels == 0) & ~tumour
    # The tumour marks lie in the hull of the reference lung; the lung without the tumour leaves 0.7 % of them out.
    assert np.count_nonzero(beyond) * ct.voxel_volume_ml > 10.0 and np.count_nonzero(tumour & ~hulls) < 0.01 * tumour.sum()
    found = (labels > 0) | tumour | beyond
    joined = labels.copy()
    join_masses(joined, found, ct.spacing)
    added = joined != labels
    assert not (added & ~hulls).any() and np.count_nonzero(added & tumour) >= 0.8 * np.count_nonzero(tumour)
    monkeypatch.setattr(masses, "_within_hulls", lambda labels, beside: np.ones(beside.shape, dtype=bool))
    unclipped = labels.copy()
    join_masses(unclipped, found, ct.spacing)
    assert np.count_nonzero((unclipped != labels) & beyond) * ct.voxel_volume_ml > 5.0


def test_a_plate_one_centimetre_thick_is_no_mass(a0001):
    """The tumour cut to two of its 5 mm slices: the lungs border it, but no ball of RADIUS_MM fits in it."""
    ct, ref, tumour = a0001
    labels = np.where(tumour, 0, ref).astype(np.uint8)
    middle = int(np.flatnonzero(tumour.any(axis=(1, 2))).mean())
    plate = np.zeros_like(tumour)
    plate[middle : middle + 2] = tumour[middle : middle + 2]
    assert 2 * ct.spacing[2] < 2 * masses.RADIUS_MM and np.count_nonzero(plate) * ct.voxel_volume_ml > 10.0
    assert join_masses(labels.copy(), (labels > 0) | plate, ct.spacing) == 0
    assert join_masses(labels.copy(), (labels > 0) | tumour, ct.spacing) > 0  # the whole tumour does


def test_asked_for_masses_the_tumour_the_lesion_model_finds_joins_the_default_s_lungs(a0001, caplog):
    ct, ref, tumour = a0001
    without = segment(ct, SegmentOptions(device="cpu"))  # the default: no masses
    with caplog.at_level(logging.INFO, logger="LungGANLib.segment.inference"):
        labels = segment(ct, SegmentOptions(device="cpu", masses=True))
    added = (labels > 0) & ~(without > 0)
    kept, kept_without = ((labels > 0) & tumour).mean() / tumour.mean(), ((without > 0) & tumour).mean() / tumour.mean()
    assert kept_without < 0.2 and kept > 0.7  # the shipped models saw this patient: a check of the joining, no score
    assert ((without > 0) <= (labels > 0)).all()  # nothing taken away
    assert f"{np.count_nonzero(added) * ct.voxel_volume_ml:.1f} mL of masses" in caplog.text


def test_which_generator_finds_the_masses(own_copy_of_the_default):
    from LungGANLib.models.weights import DEFAULT_MODEL

    shipped = DEFAULT_MODEL.parent / masses.MASS_MODEL_NAME
    assert mass_finder(SegmentOptions(device="cpu"), "cpu") is None  # not asked for
    assert mass_finder(SegmentOptions(method="classical", masses=True), "cpu") is None
    assert mass_finder(SegmentOptions(model=str(shipped), masses=True), "cpu") is None  # it is the segmenting model
    mine = mass_finder(SegmentOptions(model=str(own_copy_of_the_default), masses=True), "cpu")
    assert mine is not None and mine[2]  # the shipped lesion model, shown the lungs' frame as shipped models are
    theirs = mass_finder(SegmentOptions(masses=True, mass_model=str(own_copy_of_the_default)), "cpu")
    assert theirs is not None and not theirs[2]  # a generator of your own finds them, shown the whole slice
