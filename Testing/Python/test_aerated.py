"""Aerated lung the generator's mask left out beside it joins the lung it touches; air alone, the airways, specks
and what reaches beyond the lungs' surroundings do not (LungGANLib/segment/aerated.py).

On cip-ct-64, a real chest CT (64 pixels of 4.2 mm: the pieces are judged on its own grid), with the default's mask.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment.aerated import AIR_HU, JOIN_BELOW_HU, JOIN_MIN_ML, join_aerated
from LungGANLib.segment.inference import SegmentOptions, segment

CT = "fixtures/cip-ct-64/ct-64.nrrd"
REFERENCE = "fixtures/cip-ct-64/wholeLung-64.nrrd"


@pytest.fixture(scope="module")
def case(data):
    ct = load_ct(data / CT)
    return ct, segment(ct, SegmentOptions(device="cpu"))


def _hole(labels: np.ndarray, hu: np.ndarray, value: int, spacing, radius_mm: float) -> np.ndarray:
    """What is aerated of ``value``'s lung in a ball (:func:`_ball`), in one piece: its largest."""
    pieces, _ = ndimage.label(_ball(labels, value, spacing, radius_mm) & (labels == value) & (hu <= JOIN_BELOW_HU))
    return pieces == np.bincount(pieces[pieces > 0]).argmax()


def _ball(labels: np.ndarray, value: int, spacing, radius_mm: float) -> np.ndarray:
    """A ball around the pixel of ``value``'s lung farthest from its edge, on its middle slice."""
    zs = np.flatnonzero((labels == value).any(axis=(1, 2)))
    z = int(zs[len(zs) // 2])
    depth = ndimage.distance_transform_edt(labels[z] == value)
    y, x = np.unravel_index(int(depth.argmax()), depth.shape)
    zz, yy, xx = np.ogrid[: labels.shape[0], : labels.shape[1], : labels.shape[2]]
    return ((zz - z) * spacing[2]) ** 2 + ((yy - y) * spacing[1]) ** 2 + ((xx - x) * spacing[0]) ** 2 <= radius_mm**2


@pytest.mark.parametrize("value", [1, 2])
def test_aerated_lung_left_out_joins_the_lung_it_touches_and_nothing_else(case, value):
    ct, labels = case
    hole = _hole(labels, ct.array, value, ct.spacing, 12.0)
    assert hole.sum() * ct.voxel_volume_ml >= 2 * JOIN_MIN_ML
    missed = labels.copy()
    missed[hole] = 0
    joined = join_aerated(missed, ct.array, ct.spacing)
    assert joined == pytest.approx(hole.sum() * ct.voxel_volume_ml)
    assert np.array_equal(missed, labels)  # back, with its own lung's label


def test_air_alone_a_speck_and_the_airways_are_not_joined(case):
    ct, labels = case
    hole = _hole(labels, ct.array, 1, ct.spacing, 12.0)
    missed = labels.copy()
    missed[hole] = 0
    air = ct.array.copy()
    air[hole] = -1000  # a pneumothorax: air with no lung in it
    assert AIR_HU > -1000 and join_aerated(missed.copy(), air, ct.spacing) == 0.0
    airways = (tuple(slice(0, n) for n in labels.shape), hole)  # the trachea and main bronchi, as segment() finds them
    assert join_aerated(missed.copy(), ct.array, ct.spacing, airways) == 0.0
    speck = _hole(labels, ct.array, 1, ct.spacing, 4.5)
    assert 0 < speck.sum() * ct.voxel_volume_ml < JOIN_MIN_ML
    small = labels.copy()
    small[speck] = 0
    assert join_aerated(small, ct.array, ct.spacing) == 0.0 and not np.array_equal(small, labels)


def test_a_piece_that_runs_beyond_the_lungs_surroundings_is_not_joined(case):
    """Aerated tissue that goes on to the edge of the lungs' box grown by 20 mm (the air around the body, or bowel
    gas below the lungs) is not lung, whatever its density."""
    ct, labels = case
    hole = _ball(labels, 1, ct.spacing, 12.0) & (labels == 1)
    missed = labels.copy()
    missed[hole] = 0
    hu = ct.array.copy()
    hu[hole] = -850
    z, y, x = (int(v.mean()) for v in np.nonzero(hole))
    assert join_aerated(missed.copy(), hu, ct.spacing) == pytest.approx(hole.sum() * ct.voxel_volume_ml)
    hu[: z + 1, y, x] = -850  # a channel of aerated tissue from the piece down through the abdomen, to the scan's end
    missed[: z + 1, y, x] = 0
    pieces, _ = ndimage.label((hu <= JOIN_BELOW_HU) & (missed == 0))
    assert np.median(hu[pieces == pieces[z, y, x]]) >= AIR_HU  # not air: only its reach keeps it out
    assert join_aerated(missed.copy(), hu, ct.spacing) == 0.0


def test_the_lungs_a_field_of_view_at_the_ribs_cost_come_back_and_are_lung(data, case):
    """cip-ct-64 cut 5 mm outside its reference lungs, as a small field of view: the default's mask loses pieces of
    aerated lung at its edge; those joined lie in the Chest Imaging Platform's mask, and on the whole scan nothing
    joins."""
    ct, labels = case
    reference = mask_from_image(sitk.ReadImage(str(data / REFERENCE)), ct) > 0
    _, ys, xs = np.nonzero(reference)
    my, mx = (int(np.ceil(5.0 / s)) for s in (ct.spacing[1], ct.spacing[0]))
    cut = (slice(None), slice(max(ys.min() - my, 0), ys.max() + my + 1), slice(max(xs.min() - mx, 0), xs.max() + mx + 1))
    small = replace(ct, array=np.ascontiguousarray(ct.array[cut]))
    without = segment(small, SegmentOptions(device="cpu", join_aerated=False))
    joined = (segment(small, SegmentOptions(device="cpu", join_aerated=True)) > 0) & (without == 0)
    assert joined.sum() * ct.voxel_volume_ml >= 10.0
    assert (joined & reference[cut]).sum() >= 0.95 * joined.sum()
    assert np.array_equal(segment(ct, SegmentOptions(device="cpu", join_aerated=False)), labels)  # labels: joined


@pytest.mark.parametrize("flags, joined", [([], True), (["--no-aerated-join"], False)])
def test_the_join_is_on_unless_the_command_line_turns_it_off(flags, joined):
    from LungGANLib.cli import segment_options
    from LungGANLib.cli_parser import build_parser

    options = segment_options(build_parser().parse_args(["segment", "ct.nii.gz", "-o", "lungs.nii.gz", *flags]))
    assert options == replace(SegmentOptions(), join_aerated=joined)
