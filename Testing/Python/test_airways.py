"""The trachea and main bronchi come out of the generator's mask.

On cip-ct-64 (a coarse COPDGene scan, unlike the training scans) the shipped generator takes in the
trachea on every slice above the carina; the Chest Imaging Platform's lung mask, like a clinician's
outline, leaves it out. The airways found from the CT (grown from the trachea, as the classical method
finds them) are taken out, and the outline growth does not follow into them.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LungGANLib.cli import main
from LungGANLib.config import DEFAULT_CLASSICAL
from LungGANLib.evaluate.metrics import dice
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment.classical import airway_mask, airways_in_box, body_mask, remove_airways, segment_classical
from LungGANLib.segment.inference import SegmentOptions, segment
from LungGANLib.segment.postprocess import fill_lung_holes

CIP = "fixtures/cip-ct-64"


def test_the_trachea_the_generator_took_in_comes_out(data):
    ct = load_ct(data / CIP / "ct-64.nrrd")
    ref = mask_from_image(sitk.ReadImage(str(data / CIP / "wholeLung-64.nrrd")), ct) > 0
    airways = airway_mask(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    kept = segment(ct, SegmentOptions(device="cpu", remove_airways=False)) > 0
    labels = segment(ct, SegmentOptions(device="cpu"))
    out = labels > 0
    ml = ct.voxel_volume_ml
    assert (kept & airways).sum() * ml > 5.0  # the generator's trachea: what the review pictures show
    assert not (out & airways & ~enclosed_by_a_lung(np.where(airways, 0, labels))).any()  # only a lung's bronchi
    assert (out & airways).sum() < 0.1 * (kept & airways).sum()
    assert (ref & airways).sum() < 0.05 * airways.sum()  # the reference leaves it out
    assert dice(out, ref) > dice(kept, ref)
    # Elsewhere the mask is the same, give or take the outline growth beside the airways.
    elsewhere = ~np.asarray(airways)
    assert (kept ^ out)[elsewhere].sum() * ml < 0.1 * (kept & airways).sum() * ml


def enclosed_by_a_lung(labels: np.ndarray) -> np.ndarray:
    """Voxels in a hole of one lung's axial slice, each lung (label) on its own, on the whole slice."""
    out = np.zeros(labels.shape, dtype=bool)
    for z in range(labels.shape[0]):
        for value in np.unique(labels[z])[1:]:
            lung = labels[z] == value
            out[z] |= ndimage.binary_fill_holes(lung) & ~lung
    return out


@pytest.mark.parametrize("name", ["lidc-idri-0001", "elastix-00"])
def test_each_lung_gets_back_the_airways_its_hole_filling_takes_and_no_other(data, name):
    """The airways grown from the trachea reach into the lungs along the bronchi; the lobar and segmental ones,
    inside one lung, are the lung's as a clinician outlines it (and in the references). Taken out of a lung mask
    (the classical method's here, which keeps them) they come back exactly where the lung's own hole filling
    (slice by slice, a wide hole opening downwards left out) takes them, found on the whole lung; the trachea
    and main bronchi, beside the lungs, stay out."""
    ct = load_ct(data / "ct" / f"{name}.nii.gz")
    airways = airways_in_box(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    labels = segment_classical(ct.array, ct.spacing)
    whole = np.zeros(labels.shape, dtype=bool)
    whole[airways[0]] = airways[1]
    before = labels.copy()
    removed = labels.copy()
    remove_airways(removed, airways, ct.spacing, refill=False)
    assert not (removed > 0)[whole].any() and np.array_equal(removed[~whole], before[~whole])
    remove_airways(labels, airways, ct.spacing)
    back = (labels > 0) & whole
    assert back.sum() * ct.voxel_volume_ml > 0.5  # the bronchi inside the lungs
    assert np.array_equal(labels[~whole], before[~whole])  # nothing else changes
    for value in (1, 2):  # each voxel goes back to the lung whose holes hold it
        lung = removed == value
        np.testing.assert_array_equal(labels == value, lung | (fill_lung_holes(lung, ct.spacing) & whole))
    assert not (back & ~enclosed_by_a_lung(removed)).any()  # only what a lung's slice encloses
    # The slices where the airways are one tube outside the lungs (the trachea) get nothing back.
    top = max(z for z in range(whole.shape[0]) if whole[z].any())
    assert not back[top].any()


def test_keep_airways_on_the_command_line_leaves_them(data, tmp_path):
    ct = data / CIP / "ct-64.nrrd"
    for name, flags in (("out", []), ("kept", ["--keep-airways"])):
        assert main(["segment", str(ct), "-o", str(tmp_path / f"{name}.nrrd"), "-q", *flags]) == 0
    out, kept = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{n}.nrrd"))) > 0 for n in ("out", "kept"))
    assert kept.sum() > out.sum()


def test_no_bronchi_on_the_command_line_takes_every_grown_airway_voxel_out(data, tmp_path):
    ct_path = data / "ct/elastix-00.nii.gz"
    for name, flags in (("kept", []), ("out", ["--no-bronchi"])):
        assert main(["segment", str(ct_path), "-o", str(tmp_path / f"{name}.nrrd"), "-q", *flags]) == 0
    kept, out = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{n}.nrrd"))) for n in ("kept", "out"))
    ct = load_ct(ct_path)  # axial and LPS already: the file's array is the canonical one
    airways = airway_mask(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    assert kept.shape == airways.shape
    assert not (out > 0)[airways].any()
    assert (kept > 0)[airways].sum() * ct.voxel_volume_ml > 0.5  # the bronchi the lungs keep
    np.testing.assert_array_equal(kept[~airways], out[~airways])


def test_on_thin_slices_the_airways_are_grown_on_every_few_and_stand_for_the_slices_above(data):
    """elastix-00 (2 mm slices) made into 0.5 mm slices by repeating each slice four times: the airways are
    grown on every fourth slice (AIRWAY_SLICE_MM), which is the scan as it was, and come back four slices each."""
    from LungGANLib.segment.classical import AIRWAY_SLICE_MM, airways_in_box

    ct = load_ct(data / "ct/elastix-00.nii.gz")
    assert ct.spacing[2] == AIRWAY_SLICE_MM
    body = body_mask(ct.array, DEFAULT_CLASSICAL)
    whole = airway_mask(ct.array, body, ct.spacing, DEFAULT_CLASSICAL)
    assert whole.sum() * ct.voxel_volume_ml > 20  # the trachea and main bronchi
    thin_spacing = (ct.spacing[0], ct.spacing[1], ct.spacing[2] / 4)
    box, crop = airways_in_box(np.repeat(ct.array, 4, axis=0), np.repeat(body, 4, axis=0), thin_spacing, DEFAULT_CLASSICAL)
    thin = np.zeros((ct.array.shape[0] * 4, *ct.array.shape[1:]), dtype=bool)
    thin[box] = crop
    np.testing.assert_array_equal(thin, np.repeat(whole, 4, axis=0))


def test_the_classical_method_says_which_airways_it_left_out_and_the_review_hears_it(data, monkeypatch):
    """The airways the classical method leaves out are handed on (box and mask): the review needs them to tell
    an airway's wall from lung left out."""
    from LungGANLib.segment import second_opinion
    from LungGANLib.segment.classical import segment_classical

    ct = load_ct(data / CIP / "ct-64.nrrd")
    whole = airway_mask(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    found: dict = {}
    labels = segment_classical(ct.array, ct.spacing, found=found)
    box, crop = found["airways"]
    assert crop.sum() == whole.sum() > 0 and np.array_equal(crop, whole[box])
    assert labels[box][crop].mean() < 0.01  # out of the mask (the slice's hole filling may give a voxel back)
    heard = {}
    real = second_opinion.review_slices
    monkeypatch.setattr(second_opinion, "review_slices", lambda *a, **k: heard.update(k) or real(*a, **k))
    for method in ("classical", "gan"):
        heard.clear()
        segment(ct, SegmentOptions(method=method, device="cpu", review=True), findings={})
        given_box, given = heard["airways"]  # the generator's grown the same way (slices of 2 mm and more)
        assert given_box == box and np.array_equal(given, crop)


def test_airways_found_on_the_full_grid_are_the_same_voxels_on_a_coarser_one(data):
    """What the review's second opinion is given instead of growing the airways again on its grid."""
    from LungGANLib.segment.classical import airways_in_box, airways_on_grid

    ct = load_ct(data / CIP / "ct-64.nrrd")
    airways = airways_in_box(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    full = np.zeros(ct.array.shape, dtype=bool)
    full[airways[0]] = airways[1]
    for step in (1, 2, 3):
        coarse = full[:, ::step, ::step]
        assert np.array_equal(airways_on_grid(airways, coarse.shape, step), coarse)


def test_the_review_s_second_opinion_takes_airways_grown_on_the_full_grid(data, monkeypatch):
    """On a sub-millimetre scan the review's second opinion runs on every second pixel, where the airway growth
    leaks through the bronchial walls; it is given the airways grown on the full grid, those the mask left out
    or, with --keep-airways, grown for it."""
    from LungGANLib.segment import second_opinion
    from LungGANLib.segment.classical import airways_in_box, airways_on_grid
    from LungGANLib.segment.review import review_step

    ct = load_ct(data / "ct/lidc-idri-0001.nii.gz")
    step = review_step(ct.spacing)
    assert step == 2
    full = airways_in_box(ct.array, body_mask(ct.array, DEFAULT_CLASSICAL), ct.spacing, DEFAULT_CLASSICAL)
    expected = airways_on_grid(full, ct.array[:, ::step, ::step].shape, step)
    given = []
    real = second_opinion.segment_classical
    monkeypatch.setattr(second_opinion, "segment_classical", lambda *a, **k: given.append(k.get("airways")) or real(*a, **k))
    for keep in (False, True):
        segment(ct, SegmentOptions(device="cpu", review=True, remove_airways=not keep), findings={})
        assert given[-1] is not None and np.array_equal(given[-1], expected)


def test_one_label_for_both_lungs_is_the_two_lungs_voxels(data):
    """With one label the lungs are merged only after each has got back its bronchi: the same voxels."""
    ct = load_ct(data / "ct/elastix-00.nii.gz")
    two = segment(ct, SegmentOptions(device="cpu"))
    one = segment(ct, SegmentOptions(device="cpu", single_label=True))
    assert set(np.unique(two).tolist()) == {0, 1, 2} and set(np.unique(one).tolist()) == {0, 1}
    np.testing.assert_array_equal(one > 0, two > 0)
