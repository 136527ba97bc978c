"""Where lung never is: real reference masks hold none of it; masks made to spill there are caught and mended."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.morphology import convex_hull_image

from LungGANLib.evaluate.references import case_by_name, reference_path
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment.inference import SegmentOptions, never_lung_figures, segment
from LungGANLib.segment.never_lung import DEFAULT_NEVER_LUNG, KINDS, never_lung, remove_never_lung

LUNG1 = "ct/nsclc-radiomics-lung1-002.nii.gz"
LUNG1_LUNGS = "masks/nsclc-radiomics-lung1-002-lungs.nii.gz"


def reference(data, name):
    case = case_by_name(name)
    ct = load_ct(data / case.ct)
    return ct, mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)


def whole(found, kind, shape):
    """One kind's voxels on the whole volume's grid."""
    out = np.zeros(shape, dtype=bool)
    out[found.box] = found.masks[kind]
    return out


def mm(length, spacing):
    return int(round(length / spacing[0]))


@pytest.mark.parametrize("name", ["elastix-00", "lidc-idri-0001", "clinician"])
def test_real_lungs_hold_no_never_lung(data, name):
    """The references (ours, and the lungs a clinician drew on LUNG1-002, dense lung behind a tumour included)."""
    if name == "clinician":
        ct = load_ct(data / LUNG1)
        labels = mask_from_image(sitk.ReadImage(str(data / LUNG1_LUNGS)), ct)
    else:
        ct, labels = reference(data, name)
    found = never_lung(labels, ct.array, ct.spacing)
    assert found.judged.sum() >= 0.95 * labels.any(axis=(1, 2)).sum()  # the cage was found on nearly every lung slice
    assert found.volumes_ml(ct.voxel_volume_ml)["total"] < 1.0  # at most a vessel's worth (measured 0-0.4 mL)


def test_chest_wall_outside_the_ribs_is_found_and_removed(data):
    """elastix-00: soft tissue from the right lung's lateral edge to 35 mm beyond it, on seven slices."""
    ct, ref = reference(data, "elastix-00")
    hu, spacing = ct.array, ct.spacing
    slices = np.flatnonzero((ref == 1).any(axis=(1, 2)))
    middle = slices[len(slices) // 2]
    made = ref.copy()
    added = np.zeros(ref.shape, dtype=bool)
    far = np.zeros(ref.shape, dtype=bool)  # 15 mm or more beyond the lung: outside the ribs whatever the wall's thickness
    for z in range(middle - 3, middle + 4):
        edge = np.flatnonzero((ref[z] == 1).any(axis=0))[0]
        rows = np.flatnonzero((ref[z, :, edge : edge + mm(5, spacing)] == 1).any(axis=1))
        centre = int(rows.mean())
        band = slice(centre - mm(10, spacing), centre + mm(10, spacing))
        added[z, band, edge - mm(35, spacing) : edge + 1] = True
        far[z, band, : edge - mm(15, spacing)] = True
    added &= (hu > -500) & (ref == 0)
    far &= added
    made[added] = 1
    found = never_lung(made, hu, spacing)
    outside = whole(found, "outside_cage", ref.shape)
    assert not (outside & (ref > 0)).any()  # nothing of the lung
    assert (outside & far).sum() >= 0.9 * far.sum()
    assert found.volumes_ml(ct.voxel_volume_ml)["below_diaphragm"] == 0

    remove_never_lung(made, hu, spacing)
    assert not made[far].any()
    assert (made[ref > 0] == ref[ref > 0]).all()  # the lung is untouched


def test_the_liver_dome_inside_the_right_lung_is_found(data):
    """lidc-idri-0001: the liver's top, where the right lung's base wraps round it, added to the right lung."""
    ct, ref = reference(data, "lidc-idri-0001")
    hu, spacing = ct.array, ct.spacing
    right = ref == 1
    added = np.zeros(ref.shape, dtype=bool)
    for z in np.flatnonzero(right.any(axis=(1, 2)))[:14]:  # the lowest 35 mm of the right lung
        inside = convex_hull_image(right[z]) & ~right[z] & (hu[z] > 0)  # soft tissue the lung's outline holds
        added[z] = ndimage.binary_opening(inside, iterations=3)
    assert added.sum() * ct.voxel_volume_ml > 15  # the test's premise: a dome worth the name
    made = ref.copy()
    made[added] = 1
    found = never_lung(made, hu, spacing)
    below = whole(found, "below_diaphragm", ref.shape)
    assert (below & added).sum() >= 0.75 * added.sum()
    assert (below & (ref > 0)).sum() * ct.voxel_volume_ml < 0.1  # a partial-volume voxel or so of the lung
    assert not whole(found, "outside_cage", ref.shape).any()


def test_dense_lung_at_the_base_is_not_a_dome(data):
    """The same base, but the dense tissue is dependent lung against the posterior chest wall: not judged."""
    ct, ref = reference(data, "lidc-idri-0001")
    hu = ct.array.copy()
    right = ref == 1
    base = np.flatnonzero(right.any(axis=(1, 2)))[:14]
    dependent = np.zeros(ref.shape, dtype=bool)
    for z in base:
        rows = np.flatnonzero(right[z].any(axis=1))
        dependent[z, rows[-1] - mm(15, ct.spacing) :] = right[z, rows[-1] - mm(15, ct.spacing) :]  # the back 15 mm
    hu[dependent] = 20  # atelectasis or consolidation: soft tissue density
    found = never_lung(ref, hu, ct.spacing)
    assert found.volumes_ml(ct.voxel_volume_ml)["total"] < 1.0


def test_soft_tissue_in_front_of_the_spine_is_found_on_exactly_its_slices(data):
    """elastix-00: the tissue in front of the vertebral bodies (oesophagus, aorta's side) added on five slices."""
    ct, ref = reference(data, "elastix-00")
    hu, spacing = ct.array, ct.spacing
    slices = np.flatnonzero((ref > 0).any(axis=(1, 2)))
    spilled = list(range(slices[len(slices) // 2] - 2, slices[len(slices) // 2] + 3))
    added = np.zeros(ref.shape, dtype=bool)
    for z in spilled:
        columns = np.flatnonzero((ref[z] > 0).any(axis=0))
        centre = (columns[0] + columns[-1]) // 2  # between the lungs
        rows = np.flatnonzero((ref[z] > 0).any(axis=1))
        column = hu[z, (rows[0] + rows[-1]) // 2 :, centre]
        front = (rows[0] + rows[-1]) // 2 + int(np.flatnonzero(column >= DEFAULT_NEVER_LUNG.bone_hu)[0])  # the vertebral body
        added[z, front - mm(20, spacing) : front, centre - mm(12, spacing) : centre + mm(12, spacing)] = True
    added &= (hu > -100) & (ref == 0)
    made = ref.copy()
    made[added] = 2
    found = never_lung(made, hu, spacing)
    flagged = whole(found, "mediastinum", ref.shape)
    assert sorted(np.flatnonzero(flagged.any(axis=(1, 2)))) == spilled
    assert not (flagged & (ref > 0)).any()

    remove_never_lung(made, hu, spacing)  # the island and the partial-volume rim the coarse grid left on it
    assert (made[added] == 0).mean() >= 0.9
    assert (made[ref > 0] == ref[ref > 0]).all()


def test_the_pipeline_removes_and_reports(data):
    """LUNG1-002 with the classical method: the guard rail on and off give the same report figures and masks
    that differ by exactly what was found (none here: a threshold mask does not take in soft tissue)."""
    ct = load_ct(data / LUNG1)
    findings: dict = {}
    on = segment(ct, SegmentOptions(method="classical"), findings=findings)
    off_findings: dict = {}
    off = segment(ct, SegmentOptions(method="classical", guard_rail=False), findings=off_findings)
    assert findings == off_findings
    assert set(findings) == {"never_lung_ml", "never_lung_where"}
    changed = (on != off).sum() * ct.voxel_volume_ml
    assert changed <= findings["never_lung_ml"] + 1e-9


def test_never_lung_figures_name_each_kind():
    class Found:
        def volumes_ml(self, voxel_ml):
            return {"outside_cage": 2.0, "below_diaphragm": 0.0, "mediastinum": 0.5, "total": 2.5}

    figures = never_lung_figures(Found(), 1.0)
    assert figures == {"never_lung_ml": 2.5, "never_lung_where": "2.0 mL outside the rib cage; 0.5 mL in the posterior mediastinum"}
    assert never_lung_figures(None, 1.0) == {"never_lung_ml": 0.0, "never_lung_where": ""}
    assert KINDS == ("outside_cage", "below_diaphragm", "mediastinum")


def test_a_tall_mass_on_the_diaphragm_is_no_dome(data, old_lesion_model):
    """LUNG1-002's 358 mL tumour sits on the right hemidiaphragm with no lung under it; the old lesion model keeps most
    of it. It is 75 mm tall, no dome's top held in the lung: the guard rail must leave it (it removed 281 mL of it)."""
    ct = load_ct(data / LUNG1)
    gtv = mask_from_image(sitk.ReadImage(str(data / "masks/nsclc-radiomics-lung1-002-gtv.nii.gz")), ct) > 0
    labels = segment(ct, SegmentOptions(model=old_lesion_model, device="cpu",
                                        guard_rail=False))
    assert (labels[gtv] > 0).mean() > 0.5  # the premise: the model keeps the tumour
    found = never_lung(labels, ct.array, ct.spacing)
    below = whole(found, "below_diaphragm", labels.shape)
    assert (below & gtv).sum() < 0.01 * gtv.sum()
