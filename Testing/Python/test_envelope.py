"""The lesion-aware envelope: nodules in dents at the chest wall come back; mediastinum, fat and domes stay out."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LungGANLib.segment.classical import segment_classical
from LungGANLib.segment.envelope import TISSUE_HU, lesion_envelope
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.evaluate.lesions import lidc_lesions, score_lesions
from LungGANLib.evaluate.references import case_by_name, reference_path

SPACING = (1.0, 1.0, 2.0)


def phantom():
    """A chest of soft tissue with two elliptic lungs and three bumps of tissue pressing into them.

    Returns (hu, labels, bumps): the labels are the lungs as a threshold sees
    them (the bumps cut out); bumps maps a name to its voxels inside the lungs' ellipses.
    """
    shape = (14, 160, 200)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - 80) / 75.0) ** 2 + ((x - 100) / 95.0) ** 2 <= 1
    right = ((y - 80) / 50.0) ** 2 + ((x - 55) / 32.0) ** 2 <= 1
    left = ((y - 80) / 50.0) ** 2 + ((x - 145) / 32.0) ** 2 <= 1
    body, right, left = (np.broadcast_to(m, shape) for m in (body, right, left))
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body] = 40.0
    hu[right | left] = -850.0

    def bump(cy, cx, r):
        return ((z - 7) * 2.0) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r**2

    bumps = {
        "costal nodule": bump(80, 23, 9) & right,  # on the right lung's lateral wall
        "mediastinal mass": bump(80, 113, 9) & left,  # on the left lung's medial wall
        "fat pad": bump(40, 145, 9) & left,  # fat on the left lung's anterior wall
    }
    hu[bumps["costal nodule"] | bumps["mediastinal mass"]] = 40.0
    hu[bumps["fat pad"]] = -100.0
    labels = np.zeros(shape, dtype=np.uint8)
    labels[right & (hu < -320)] = 1
    labels[left & (hu < -320)] = 2
    return hu, labels, bumps


def test_a_nodule_in_a_dent_of_the_chest_wall_comes_back():
    hu, labels, bumps = phantom()
    out, added = lesion_envelope(labels, hu, SPACING)
    nodule = bumps["costal nodule"]
    assert added[nodule].mean() > 0.95
    assert (out[nodule] == 1).mean() > 0.95  # into the right lung
    # Nothing but the nodule (and its rim where it meets the lung's edge) is added.
    assert not (added & ~ndimage.binary_dilation(nodule, iterations=2)).any()


@pytest.mark.parametrize("name", ["mediastinal mass", "fat pad"])
def test_mediastinum_and_fat_stay_out(name):
    hu, labels, bumps = phantom()
    _, added = lesion_envelope(labels, hu, SPACING)
    assert not added[bumps[name]].any()
    assert TISSUE_HU[0] > -100  # fat is below the lesion tissue range


def test_on_slices_with_one_lung_its_medial_side_is_still_the_mediastinum():
    """At the apex or the base a slice may show one lung. The hull of that lung alone puts its medial side on
    the hull, as if it were chest wall; the other lung, mirrored across the midline of the slices that show
    both, keeps the mediastinum inside the hull there, and the lateral side at the chest wall."""
    hu, labels, bumps = phantom()
    shape = labels.shape
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    medial = (((np.arange(shape[0])[:, None, None] - 7) * 2.0) ** 2 + (y - 80) ** 2 + (x - 87) ** 2 <= 81) & (
        labels == 1
    )
    hu[medial] = 40.0
    labels[medial] = 0
    one_lung = slice(3, None)  # the left lung ends above slice 3: the bumps lie on slices with the right lung only
    hu[one_lung][labels[one_lung] == 2] = 40.0
    labels[one_lung][labels[one_lung] == 2] = 0
    assert medial.any() and not (labels[one_lung] == 2).any() and (labels[:3] == 2).any()
    _, added = lesion_envelope(labels, hu, SPACING)
    assert not added[medial].any()
    assert added[bumps["costal nodule"]].mean() > 0.95


def test_an_empty_mask_stays_empty():
    hu, labels, _ = phantom()
    out, added = lesion_envelope(np.zeros_like(labels), hu, SPACING)
    assert not out.any() and not added.any()


def test_the_juxtapleural_lidc_nodule_comes_back_into_the_classical_mask(data):
    """lidc-idri-0001's large nodule touches the posterior chest wall: the threshold cuts part of it out."""
    case = case_by_name("lidc-idri-0001")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    lesions = [l for l in lidc_lesions(data / case.lidc_reads, ct) if l.voxels > 1000]
    without = segment_classical(ct.array, ct.spacing, envelope=False)
    with_envelope = segment_classical(ct.array, ct.spacing, envelope=True)
    before = [s.inside for s in score_lesions(without, ref, lesions, ct.spacing)]
    after = [s.inside for s in score_lesions(with_envelope, ref, lesions, ct.spacing)]
    assert len(lesions) == 4  # the four readers' outlines of that nodule
    assert max(before) < 0.95 and min(after) >= 0.99
    # It adds the nodule, not the rest: the masks differ by little more than the nodule.
    marked = np.zeros(ct.array.shape, dtype=bool)
    for lesion in lesions:
        lesion.paint(marked)
    extra = (with_envelope > 0) & (without == 0) & ~ndimage.binary_dilation(marked, iterations=3)
    assert extra.sum() * ct.voxel_volume_ml < 2.0


def test_no_lesion_no_spill_on_a_scan_with_domes_and_hila(data):
    """elastix-00 has no lesions, and the domes of liver and spleen and two hila: the envelope adds next to nothing."""
    case = case_by_name("elastix-00")
    ct = load_ct(data / case.ct)
    without = segment_classical(ct.array, ct.spacing, envelope=False)
    _, added = lesion_envelope(without, ct.array, ct.spacing)
    assert added.sum() < 0.0005 * (without > 0).sum()
