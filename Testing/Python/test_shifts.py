"""benchmarks/shifts.py: each change of a scan does what its docstring says, to the CT and the reference alike, and
the report's change is the Dice against the unchanged scan's; results.md's benchmark sections outlive `compare`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from LungGANLib.evaluate.summary import (
    FOLDS_BEGIN, FOLDS_END, REVIEW_BEGIN, REVIEW_END, SHIFTS_BEGIN, SHIFTS_END, folds_section, with_kept_sections,
)
from LungGANLib.io import load_ct

from benchmark_modules import load_benchmark

@pytest.fixture(scope="module")
def shifts():
    return load_benchmark("shifts")


@pytest.fixture(scope="module")
def case(shifts, data):
    """A real CT's 12 middle slices, cut to 64 x 80 pixels, with a made-up two-label reference and one lesion voxel."""
    ct = load_ct(data / "ct" / "lidc-idri-0001.nii.gz")
    middle = ct.array.shape[0] // 2
    hu = np.ascontiguousarray(ct.array[middle - 6 : middle + 6, 200:264, 100:180]).astype(np.float32)
    ref = np.zeros(hu.shape, np.uint8)
    ref[:, 10:50, 5:35] = 1
    ref[:, 12:48, 45:75] = 2
    left_out = np.zeros(hu.shape, bool)
    left_out[3, 20, 20] = True
    return shifts.folds.Case("made-up", replace(ct, array=hu), ref, [], left_out)


def test_noise_has_the_asked_spread_and_the_same_seed_gives_the_same_scan(shifts, case):
    hu, spacing = case.ct.array, case.ct.spacing
    once, again = shifts.noisy(hu, spacing, 40.0, 0.6), shifts.noisy(hu, spacing, 40.0, 0.6)
    assert np.array_equal(once, again)
    assert (once - hu).std() == pytest.approx(40.0, rel=1e-3)
    assert not np.array_equal(once, shifts.noisy(hu, spacing, 40.0, 0.6, seed=1))
    # The sharp kernel doubles the detail finer than 1 mm: the difference from a 1 mm blur grows.
    sharp = shifts.sharpened(hu, spacing)
    assert (sharp - hu).std() > 50.0  # the 50 HU of noise, and the detail on top


def test_thick_slices_average_the_ct_and_take_the_reference_by_majority(shifts, case):
    k = int(np.ceil(shifts.THICK_MM / case.ct.spacing[2] - 1e-6))
    assert k == 2  # lidc-idri-0001's 2.5 mm slices, two to a 5 mm slice
    ref = case.ref.copy()
    ref[0, 30, 20] = 0  # one of two slices says background, the other right lung: the tie goes to the lower label
    ref[2:4, 30, 20] = 0  # both say background
    thick = shifts.thick(replace(case, ref=ref))
    assert thick.ct.array.shape == (6, 64, 80) and thick.ct.spacing[2] == pytest.approx(2 * case.ct.spacing[2])
    assert np.allclose(thick.ct.array[1], (case.ct.array[2] + case.ct.array[3]) / 2)
    assert thick.ref[0, 30, 20] == 0 and thick.ref[1, 30, 20] == 0 and thick.ref[2, 30, 20] == 1
    assert np.array_equal(thick.ref[:, 30, 60], np.full(6, 2))
    assert thick.left_out[1, 20, 20] and thick.left_out.sum() == 1  # slice 3 is in the second thick slice
    assert shifts.thick(thick) is None  # 5 mm slices stay as they are


def test_coarse_pixels_average_2_x_2_blocks_and_the_reference_follows(shifts, case):
    coarse = shifts.coarse(case)
    assert coarse.ct.array.shape == (12, 32, 40)
    assert coarse.ct.spacing[:2] == pytest.approx((2 * case.ct.spacing[0], 2 * case.ct.spacing[1]))
    assert coarse.ct.array[5, 7, 9] == pytest.approx(case.ct.array[5, 14:16, 18:20].mean())
    # Columns 34-35 hold one right-lung column (34) and one background: a tie, to the lower label (background).
    assert coarse.ref[0, 10, 17] == 0 and coarse.ref[0, 10, 16] == 1 and coarse.ref[0, 10, 30] == 2
    assert coarse.left_out[3, 10, 10] and coarse.left_out.sum() == 1
    assert shifts.coarse(coarse) is None  # 1.4 mm pixels are coarse already


def test_the_field_of_view_is_cut_five_mm_outside_the_reference(shifts, case):
    cut = shifts.field_of_view(case)
    margin = int(np.ceil(shifts.FOV_MARGIN_MM / case.ct.spacing[0]))  # 8 pixels of 0.7 mm
    assert cut.ct.array.shape == (12, min(64, 50 + margin) - max(0, 10 - margin), min(80, 75 + margin) - max(0, 5 - margin))
    assert cut.ref.sum() == case.ref.sum() and cut.left_out.sum() == 1
    assert np.array_equal(cut.ct.array, case.ct.array[:, max(0, 10 - margin) : 50 + margin, 0 : 75 + margin])


def test_a_round_field_of_view_pads_its_outside_as_the_scanner_or_as_air(shifts, case):
    """A circle as wide as the lungs less 5 mm: outside it the scanner's padding, or -1024 HU; the reference and the
    lesion are what it still shows, and inside it nothing changes."""
    scanner = shifts.SHIFTS["round field of view through the lungs"](case)
    air = shifts.SHIFTS["the same, padded as air"](case)
    outside = scanner.ct.array == shifts.PADDING_VALUE
    assert outside.any() and (air.ct.array[outside] == shifts.AIR_PADDING_VALUE).all()
    assert np.array_equal(air.ct.array[~outside], case.ct.array[~outside])
    assert (outside == outside[:1]).all() and outside[0, 0, 0] and not outside[0, 30, 40]  # the same on every slice
    assert np.array_equal(scanner.ct.array[~outside], case.ct.array[~outside])
    assert np.array_equal(air.ref, scanner.ref) and not scanner.ref[outside].any()
    assert np.array_equal(scanner.ref[~outside], case.ref[~outside]) and scanner.left_out.sum() == 1


def test_the_report_gives_each_change_against_the_unchanged_scan(shifts):
    rows = [{"case": "a", "shift": s, "model": m, "dice": d, "hd95_mm": 1.0}
            for s, m, d in (("none", "default", 0.99), ("none", "classical", 0.98), ("+40 HU", "default", 0.97),
                            ("+40 HU", "classical", 0.975))]
    text = shifts.report(rows)
    assert "| +40 HU | 0.9700 (1.0) | -0.0200 | 0.9750 (1.0) | -0.0050 |" in text
    assert "| thick slices | – | – | – | – |" in text  # no rows: not applicable
    assert "default -0.0200, classical -0.0050" in text


def test_compare_keeps_every_benchmark_section_of_the_report():
    sections = {begin: f"{begin}\n## {begin[5:11]}\n{end}" for begin, end in
                ((FOLDS_BEGIN, FOLDS_END), (REVIEW_BEGIN, REVIEW_END), (SHIFTS_BEGIN, SHIFTS_END))}
    before = "# Results\n\n" + "\n\n".join(sections.values()) + "\nold text\n"
    after = with_kept_sections("# Results, rewritten\nnew text\n", before)
    for (begin, end), kept in zip(((FOLDS_BEGIN, FOLDS_END), (REVIEW_BEGIN, REVIEW_END), (SHIFTS_BEGIN, SHIFTS_END)),
                                  sections.values()):
        assert folds_section(after, begin, end) == kept
    assert "old text" not in after and after.endswith("new text\n")
    assert after.index(FOLDS_END) < after.index(SHIFTS_BEGIN) < after.index(REVIEW_BEGIN)


def test_a_field_of_view_through_the_lungs_cuts_them_and_the_reference_is_what_it_shows(shifts, case):
    margin = int(np.ceil(shifts.FOV_MARGIN_MM / case.ct.spacing[0]))
    square = shifts.field_of_view(case, -shifts.FOV_MARGIN_MM)
    assert square.ct.array.shape == (12, 50 - 10 - 2 * margin, 75 - 5 - 2 * margin)
    assert np.array_equal(square.ref, case.ref[:, 10 + margin : 50 - margin, 5 + margin : 75 - margin])
    round_ = shifts.round_field_of_view(case)
    padded = round_.ct.array == shifts.PADDING_VALUE
    assert padded[0, 0, 0] and not padded[0, 30, 40]  # a corner outside, the lungs' middle inside
    assert np.array_equal(padded[0], padded[-1])  # one field of view for every slice
    assert np.array_equal(round_.ct.array[~padded], case.ct.array[~padded].astype(np.float32))
    assert not round_.ref[padded].any() and np.array_equal(round_.ref[~padded], case.ref[~padded])
    # Half the lungs' width (70 columns) less 5 mm: the lungs' outer columns are cut at their middle row.
    assert padded[0, 30, 5] and padded[0, 30, 74] and not padded[0, 30, 5 + margin + 1]


def test_emphysema_moves_only_the_reference_lungs_aerated_voxels_towards_air(shifts, case):
    darker = shifts.emphysema(case).ct.array
    hu = case.ct.array.astype(np.float32)
    moved = (case.ref > 0) & (hu < -500)
    assert moved.any() and (~moved).any()
    assert np.allclose(darker[moved], -1000 + (hu[moved] + 1000) * (1 - shifts.EMPHYSEMA_SHARE))
    assert np.array_equal(darker[~moved], hu[~moved])


def test_a_small_chest_is_the_scan_scaled_about_its_centre_with_its_lowest_value_around(shifts, case):
    small = shifts.small_chest(case)
    hu, ref = small.ct.array, small.ref
    assert hu.shape == case.ct.array.shape and small.ct.spacing == case.ct.spacing
    # 64 x 80 pixels at 0.6: 38 x 48 in the middle (rows 13-50, columns 16-63), the lowest value around them.
    inner = np.zeros(hu.shape[1:], bool)
    inner[13:51, 16:64] = True
    assert (hu[:, ~inner] == case.ct.array.min()).all()
    # Each lung's area scales by 0.36 (to a pixel's rounding along its edges), and the lungs stay apart.
    for value in (1, 2):
        before, after = (case.ref == value).sum(), (ref == value).sum()
        assert abs(after / before - 0.36) < 0.05
    assert not ref[:, ~inner].any()
    coarse = replace(case, ct=replace(case.ct, spacing=(1.0, 1.0, case.ct.spacing[2])))
    assert shifts.small_chest(coarse) is None
