"""Islands of soft tissue the generator takes in: the top of a dome goes, a mass stays."""

from __future__ import annotations

import numpy as np

from LungGANLib.evaluate.lesions import lidc_lesions
from LungGANLib.evaluate.references import case_by_name
from LungGANLib.io import load_ct
from LungGANLib.segment.domes import drop_domes
from LungGANLib.segment.inference import SegmentOptions, segment

SPACING = (1.0, 1.0, 2.0)
LUNG_HU, TISSUE_HU = -850, 50


def base_of_a_lung():
    """40 slices, 2 mm apart: abdomen below slice 10, lung above it, a liver dome rising into the lung (slices
    10-19), a 24 mm nodule in the lung higher up, and a mass at the base against the chest wall.

    Returns (hu, labels, parts): labels are what a generator that keeps masses gives (the lung with the dome,
    the nodule and the mass in it); parts maps a name to its voxels.
    """
    shape = (40, 120, 120)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    hu = np.full(shape, TISSUE_HU, dtype=np.int16)
    lung = np.broadcast_to((z >= 10) & ((y - 60) ** 2 + (x - 60) ** 2 <= 45**2), shape)
    hu[lung] = LUNG_HU
    dome = lung & (((z - 9) * 2.0) ** 2 + (y - 60) ** 2 + (x - 60) ** 2 <= 20**2)  # rising 20 mm into the lung
    nodule = lung & (((z - 28) * 2.0) ** 2 + (y - 50) ** 2 + (x - 55) ** 2 <= 12**2)
    mass = lung & (z >= 10) & (z <= 16) & ((y - 60) ** 2 + (x - 17) ** 2 <= 12**2)  # at the wall, on the diaphragm
    parts = {"dome": dome, "nodule": nodule, "mass": mass}
    for part in parts.values():
        hu[part] = TISSUE_HU
    labels = lung.astype(np.uint8)
    return hu, labels, parts


def test_the_top_of_a_dome_goes_and_masses_stay():
    hu, labels, parts = base_of_a_lung()
    removed = drop_domes(labels, hu, SPACING)
    assert (labels[parts["dome"]] == 0).mean() > 0.9  # all but the thinnest tip
    assert removed == int((parts["dome"] & (labels == 0)).sum())  # the dome, nothing else
    assert (labels[parts["nodule"]] == 1).all()  # lung goes on under it
    assert (labels[parts["mass"]] == 1).all()  # held by the chest wall, not by lung all round
    assert drop_domes(labels, hu, SPACING) == 0


def test_an_island_with_lung_under_it_is_a_mass():
    hu, labels, parts = base_of_a_lung()
    lifted = np.roll(parts["dome"], 12, axis=0)  # the same island 24 mm higher: lung under it now
    hu[parts["dome"]] = LUNG_HU
    hu[lifted] = TISSUE_HU
    assert drop_domes(labels, hu, SPACING) == 0


def test_on_a_real_scan_the_liver_dome_goes_and_no_nodule_with_it(data, old_lesion_model):
    """lidc-idri-0001: the old lesion model takes in the top of the liver's dome in the right lung's base. The guard
    rail, which would take it out too, is off: this is the dome rule's own work."""
    lesions = old_lesion_model
    case = case_by_name("lidc-idri-0001")
    ct = load_ct(data / case.ct)
    kept = segment(ct, SegmentOptions(model=lesions, device="cpu", drop_domes=False, guard_rail=False))
    dropped = segment(ct, SegmentOptions(model=lesions, device="cpu", guard_rail=False))
    gone = (kept > 0) & (dropped == 0)
    assert gone.sum() * ct.voxel_volume_ml > 5.0 and not ((dropped > 0) & (kept == 0)).any()
    assert (kept[gone] == 1).all()  # the right lung
    lung_slices = np.flatnonzero(kept.any(axis=(1, 2)))
    assert np.flatnonzero(gone.any(axis=(1, 2))).max() < np.median(lung_slices)  # its lower half
    assert (ct.array[gone] > -320).all()
    marked = np.zeros(ct.array.shape, dtype=bool)
    for lesion in lidc_lesions(data / case.lidc_reads, ct):
        lesion.paint(marked)
    assert not (gone & marked).any()
