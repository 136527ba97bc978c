"""A lung the field of view cuts stays a lung: the body keeps it (classical.body_mask,
morphology.holes_cut_by_the_edge), the generator is shown a wall beside it (preprocess.wall_beside_a_cut_lung), a
field of view's exterior stored as air is told from air (preprocess.padding_told_from_air), on a real scan cut three
ways."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from field_of_view_cuts import INSIDE_MM, box_inside_the_lungs

from LungGANLib.evaluate.metrics import dice, hausdorff
from LungGANLib.evaluate.references import case_by_name, reference_path
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.segment.classical import PADDING_HU, body_mask
from LungGANLib.segment.fallback import view_cut_text
from LungGANLib.segment.inference import SegmentOptions, segment
from LungGANLib.segment.morphology import fill_holes_per_slice, holes_cut_by_the_edge
from LungGANLib.config import AIR_HU
from LungGANLib.segment.preprocess import (
    AERATED_HU, CHEST_WALL_HU, CUT_BAND_MM, TOLD_PADDING_HU, padding_told_from_air, wall_beside_a_cut_lung,
)


def test_a_piece_the_edge_cuts_joins_where_the_neighbouring_slices_hold_it_as_a_hole():
    """Five slices of a body (rows 2-17, out to the right edge) round a lung (rows 5-14, columns 5-14); on slices
    1-3 the lung runs out to the right edge, as a field of view cut at the lungs shows it. The air around the body
    never joins, and padding walls a piece off from the air it would otherwise be one piece with."""
    mask = np.zeros((5, 20, 20), dtype=bool)
    mask[:, 2:18, 2:] = True
    mask[:, 5:15, 5:15] = False  # the lung
    mask[1:4, 5:15, 15:] = False  # cut: the lung runs to the right edge
    filled = fill_holes_per_slice(mask)
    assert filled[0, 10, 10] and not filled[2, 10, 10]  # hole filling alone loses the lung where it is cut
    out = holes_cut_by_the_edge(mask, filled)
    assert out[1:4, 5:15, 5:].all()  # the cut lung, out to the edge, on all three slices (2 through 1 and 3)
    assert not out[:, :2].any() and not out[:, :, :2].any() and not out[:, 18:].any()  # the air around the body
    assert np.array_equal(out[[0, 4]], filled[[0, 4]])
    # The body's top right corner gone on slices 1-3: the cut lung opens onto the air above the body, one piece
    # with it, and does not join; padding there (outside a round field of view), given as walls, parts them.
    joined = mask.copy()
    joined[1:4, 2:5, 15:] = False
    walls = np.zeros_like(mask)
    walls[1:4, :5, 15:] = True
    filled = fill_holes_per_slice(joined)
    assert not holes_cut_by_the_edge(joined, filled)[2, 10, 17]
    parted = holes_cut_by_the_edge(joined, filled, walls=walls)
    assert parted[1:4, 5:15, 5:].all() and not parted[walls].any() and not parted[:, :2, :15].any()


@pytest.fixture(scope="module")
def lidc(data):
    ct = load_ct(data / "ct" / "lidc-idri-0001.nii.gz")
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case_by_name("lidc-idri-0001")))), ct) > 0
    return ct, ref


def _cut(ct, ref, round_view: bool):
    """A scan cut 5 mm inside its lungs' width: as a square (the lungs run into the edge) or a round field of view
    with LIDC's padding outside; the reference is what is still shown."""
    s = ct.spacing[0]
    if not round_view:
        cut = (slice(None), *box_inside_the_lungs(ref, s))
        return replace(ct, array=np.ascontiguousarray(ct.array[cut])), ref[cut]
    _, ys, xs = np.nonzero(ref)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    radius = (xs.max() - xs.min() + 1) / 2 - INSIDE_MM / s
    yy, xx = np.ogrid[: ct.array.shape[1], : ct.array.shape[2]]
    outside = (yy - cy) ** 2 + (xx - cx) ** 2 > radius**2
    hu = ct.array.copy()
    hu[:, outside] = -2048
    return replace(ct, array=hu), ref & ~outside[None]


@pytest.mark.parametrize("round_view", [False, True], ids=["square", "round"])
def test_the_body_keeps_a_lung_the_field_of_view_cuts_and_the_classical_method_finds_it(lidc, round_view):
    ct, ref = lidc
    cut, shown = _cut(ct, ref, round_view)
    assert (shown & ~fill_holes_per_slice(cut.array > -500)).sum() > 0.05 * shown.sum()  # the cut opens the lung
    body = body_mask(cut.array)
    assert (shown & ~body).sum() <= 0.005 * shown.sum()
    whole = segment(ct, SegmentOptions(method="classical", device="cpu")) > 0
    labels = segment(cut, SegmentOptions(method="classical", device="cpu")) > 0
    assert dice(labels, shown) >= dice(whole, ref) - 0.002


def test_the_generator_is_shown_a_wall_where_a_field_of_view_cuts_a_lung(lidc):
    ct, ref = lidc
    shown, at, cut_slices, near_slices = wall_beside_a_cut_lung(ct.array, body_mask(ct.array), ct.spacing)
    assert shown is ct.array and at == (0, 0) and not cut_slices.size and not near_slices.size  # a whole chest wall
    # A round field of view: the padding within CUT_BAND_MM of the cut lung becomes chest wall, nothing else changes.
    cut, visible = _cut(ct, ref, round_view=True)
    body = body_mask(cut.array)
    seen, at, cut_slices, near_slices = wall_beside_a_cut_lung(cut.array, body, cut.spacing)
    assert at == (0, 0) and seen.shape == cut.array.shape
    assert cut_slices.size and set(cut_slices) < set(near_slices)  # slices above and below a cut come near it
    assert np.array_equal(near_slices, np.flatnonzero((seen != cut.array).any(axis=(1, 2))))  # a wall on each
    changed = seen != cut.array
    assert changed.any() and (cut.array[changed] < PADDING_HU).all() and (seen[changed] == CHEST_WALL_HU).all()
    for z in np.flatnonzero(changed.any(axis=(1, 2)))[::10]:
        lung = body[z] & (cut.array[z] < AERATED_HU) & (cut.array[z] >= PADDING_HU)
        reach = ndimage.distance_transform_edt(~lung, sampling=cut.spacing[:2][::-1])
        assert reach[changed[z]].max() <= CUT_BAND_MM
    # A square one: a band CUT_BAND_MM wide is added beyond each edge the lungs run into (all four here), chest
    # wall beside the lung, air elsewhere; the CT itself is not changed.
    square, visible_square = _cut(ct, ref, round_view=False)
    seen, (top, left), _, _ = wall_beside_a_cut_lung(square.array, body_mask(square.array), square.spacing)
    band = int(np.ceil(CUT_BAND_MM / square.spacing[0]))
    assert (top, left) == (band, band) and seen.shape == (square.array.shape[0], square.array.shape[1] + 2 * band,
                                                          square.array.shape[2] + 2 * band)
    assert np.array_equal(seen[:, band:-band, band:-band], square.array)
    assert set(np.unique(seen[:, :band])) <= {AIR_HU, CHEST_WALL_HU} and (seen[:, :band] == CHEST_WALL_HU).any()
    # The default keeps the lung either field of view cuts, within 0.002 of its Dice on the whole scan (with the
    # classical method's lung on the slices cut).
    whole = dice(segment(ct, SegmentOptions(device="cpu")) > 0, ref)
    for scan, shown_ref in ((cut, visible), (square, visible_square)):
        labels = segment(scan, SegmentOptions(device="cpu")) > 0
        assert dice(labels, shown_ref) >= whole - 0.002
        assert not labels[scan.array < PADDING_HU].any()  # the outline and the bases never grow into the padding


def test_the_cut_is_counted_on_the_slices_that_hold_lung(lidc, caplog):
    """A square field of view through lidc-idri-0001's lungs meets bowel gas below them: those slices are cut, not
    counted (the warning and the review's scan flag say the slices with lung)."""
    ct, ref = lidc
    cut, shown = _cut(ct, ref, round_view=False)
    findings: dict = {}
    with caplog.at_level(logging.WARNING):
        labels = segment(cut, SegmentOptions(device="cpu", review=True), findings=findings)
    _, _, cut_slices, _ = wall_beside_a_cut_lung(cut.array, body_mask(cut.array), cut.spacing)
    counted = cut_slices[labels[cut_slices].any(axis=(1, 2))]
    below = [z for z in cut_slices if not shown[z].any()]
    assert below and max(below) < min(counted) and shown[counted].any(axis=(1, 2)).all()
    said = view_cut_text(counted.size, cut.array.shape[0])
    assert said in caplog.text and findings["review"].scan == [said]


def test_where_a_round_field_of_view_leaves_the_lungs_a_thin_wall_the_default_keeps_them(data):
    """LUNG1-002 (radiation oncologists' lungs, its GTV left out) in a round field of view 5 mm inside its lungs'
    width: on the slices above the cut, where the circle leaves 1-10 mm of chest wall in front of the lungs, the
    generator lost the anterior lungs (up to 12.6 mL a slice, HD95 7.5 mm against the classical method's 3.6) until
    the slices the field of view comes near got the classical method's lung too."""
    ct = load_ct(data / "ct/nsclc-radiomics-lung1-002.nii.gz")
    ref = mask_from_image(sitk.ReadImage(str(data / "masks/nsclc-radiomics-lung1-002-lungs.nii.gz")), ct) > 0
    gtv = mask_from_image(sitk.ReadImage(str(data / "masks/nsclc-radiomics-lung1-002-gtv.nii.gz")), ct) > 0
    cut, shown = _cut(ct, ref, round_view=True)
    shown &= ~gtv
    _, _, cut_slices, near_slices = wall_beside_a_cut_lung(cut.array, body_mask(cut.array), cut.spacing)
    above = [z for z in near_slices if z > cut_slices.max()]
    assert above  # slices above the cut the field of view comes near
    scores = {}
    for method in ("gan", "classical"):
        labels = (segment(cut, SegmentOptions(method=method, device="cpu")) > 0) & ~gtv
        kept_above = (labels[above] & shown[above]).sum() / shown[above].sum()  # the lungs there, in the mask
        scores[method] = (dice(labels, shown), hausdorff(labels, shown, ct.spacing, 95), kept_above)
    gan, classical = scores["gan"], scores["classical"]
    assert gan[0] >= classical[0] - 0.002 and gan[1] <= classical[1] and gan[2] >= classical[2] - 0.01, scores


def test_a_lung_the_field_of_view_comes_near_is_told_by_its_area_within_the_band():
    """Five slices of 2 mm pixels: padding (-2048) above row 10, 4 mm of chest wall, then a body with a lung (-850
    HU) whose top lies 6 mm from the padding on slices 1-2 (near: 240 mm² of it within CUT_BAND_MM) and 34 mm on the
    others; on slice 3 a single aerated pixel of skin beside the padding (4 mm², under NEAR_MIN_MM2), and on slice 4
    a sharp kernel's undershoot below the padding's value inside the lung, which is neither padding nor a cut."""
    hu = np.full((5, 40, 40), 40.0, dtype=np.float32)
    hu[:, :10] = -2048
    hu[:, 26:34, 10:30] = -850  # 32 mm below the padding on every slice
    hu[1:3, 12:20, 10:30] = -850  # 4 mm below it on slices 1 and 2
    hu[3, 10, 5] = -850  # the skin's partial volume beside the padding
    hu[4, 28:30, 15:17] = -1800  # an undershoot within the lung
    body = np.zeros(hu.shape, dtype=bool)
    body[:, 10:] = True
    body &= hu >= PADDING_HU
    seen, at, cut, near = wall_beside_a_cut_lung(hu, body, (2.0, 2.0, 2.0))
    assert not cut.size and near.tolist() == [1, 2] and at == (0, 0)
    assert (seen[1:3, 7:10, 10:30] == CHEST_WALL_HU).all()  # the padding within CUT_BAND_MM of the lung
    assert (seen[1:3, :7] == -2048).all() and (seen[1:3, 7:10, :5] == -2048).all()  # and no more
    assert np.array_equal(seen[[0, 3, 4]], hu[[0, 3, 4]]) and np.array_equal(seen[1:3, 10:], hu[1:3, 10:])


def test_a_field_of_views_exterior_stored_as_air_is_told_from_air_and_put_back():
    """Six slices: a round field of view stored at -1024 outside, the air around the body inside it noise about -1000
    HU (at -1024 on some slices, as a clip at -1024 leaves it), and a bulla at -1024 on every slice that does not reach
    the edge. Only the exterior is told, and the array is put back exactly."""
    rng = np.random.default_rng(0)
    hu = np.clip(rng.normal(-1000, 15, (6, 40, 40)), -1024, None).astype(np.int16)
    yy, xx = np.ogrid[:40, :40]
    exterior = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 > 19**2
    hu[:, exterior] = -1024
    hu[:, 10:30, 10:30] = 40  # the body
    hu[:, 15:18, 15:18] = -1024  # a bulla: at the lowest value on every slice, away from the edge
    assert ((hu == -1024).all(axis=0) & ~exterior).sum() == 9  # the air itself is not
    before = hu.copy()
    with padding_told_from_air(hu) as seen:
        assert seen is hu
        assert (hu[:, exterior] == TOLD_PADDING_HU).all() and np.array_equal(hu[:, ~exterior], before[:, ~exterior])
    assert np.array_equal(hu, before)
    frozen = before.copy()
    frozen.setflags(write=False)
    for untold in (before[:4].copy(), np.where(before == -1024, -2048, before).astype(np.int16), before + 30, frozen):
        kept = untold.copy()  # too few slices; padding already below air; lowest value above -1000; read-only
        with padding_told_from_air(untold):
            assert np.array_equal(untold, kept)


def test_a_lung_cut_by_a_field_of_view_padded_as_air_is_kept_and_the_ct_is_left_as_it_was(lidc):
    """lidc-idri-0001 cut 5 mm inside its lungs by a round field of view whose outside is stored at -1024 HU, as a
    clip at -1024 leaves a scanner's padding (hole filling took the cut lung for the air around the body)."""
    ct, ref = lidc
    cut, visible = _cut(ct, ref, round_view=True)
    cut = replace(cut, array=np.where(cut.array < -1024, -1024, cut.array).astype(cut.array.dtype))
    before = cut.array.copy()
    whole = dice(segment(ct, SegmentOptions(device="cpu")) > 0, ref)
    assert dice(segment(cut, SegmentOptions(device="cpu")) > 0, visible) >= whole - 0.01
    assert np.array_equal(cut.array, before)


def test_on_real_scans_only_the_field_of_views_exterior_is_told(data):
    """elastix-00 stores the outside of its field of view at -1024 HU: what is told lies outside the body, at -1024 on
    every slice, in the image's four corners; lidc-idri-0001 stores it at -2048 and nothing changes."""
    ct = load_ct(data / "ct" / "elastix-00.nii.gz")
    before = ct.array.copy()
    body = body_mask(before)
    with padding_told_from_air(ct.array) as hu:
        told = (hu == TOLD_PADDING_HU).all(axis=0)
        assert told[0, 0] and told[0, -1] and told[-1, 0] and told[-1, -1] and not told[told.shape[0] // 2].any()
        assert (before[:, told] == -1024).all() and not body[:, told].any()
        assert np.array_equal(hu[:, ~told], before[:, ~told])
    assert np.array_equal(ct.array, before)
    lidc = load_ct(data / "ct" / "lidc-idri-0001.nii.gz")
    kept = lidc.array.copy()
    with padding_told_from_air(lidc.array):
        assert np.array_equal(lidc.array, kept)
