"""Metrics on hand-made masks whose values are known exactly, and against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from LungGANLib.evaluate.metrics import dice, evaluate_labels, hausdorff, iou, mask_metrics, per_slice, summarize


def squares() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[0:10, 0:10] = True  # 100 px
    b[0:10, 5:15] = True  # 100 px, 50 shared
    return a, b


def test_iou_and_dice_of_overlapping_squares():
    a, b = squares()
    assert iou(a, b) == pytest.approx(50 / 150)
    assert dice(a, b) == pytest.approx(100 / 200)


def test_hausdorff_of_shifted_squares_in_pixels_and_mm():
    a, b = squares()
    # Left edge of a (x=0) is 5 px from b's left edge; b's right edge (x=14) is 5 px from a's (x=9).
    assert hausdorff(a, b) == pytest.approx(5.0)
    # Spacing is (x, y) in SimpleITK order: x pixels 2 mm wide.
    assert hausdorff(a, b, spacing=(2.0, 1.0)) == pytest.approx(10.0)
    assert hausdorff(a, b, spacing=(1.0, 3.0)) == pytest.approx(5.0)


def test_hausdorff_of_two_points_is_their_distance():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0, 0] = True
    b[3, 4] = True
    assert hausdorff(a, b) == pytest.approx(5.0)
    assert hausdorff(a, b, percentile=95) == pytest.approx(5.0)


def test_identical_and_empty_masks():
    a, _ = squares()
    empty = np.zeros_like(a)
    assert iou(a, a) == 1.0 and dice(a, a) == 1.0 and hausdorff(a, a) == 0.0
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0 and hausdorff(empty, empty) == 0.0
    assert iou(a, empty) == 0.0 and dice(a, empty) == 0.0
    assert math.isinf(hausdorff(a, empty))


def brute_force_directed(src: np.ndarray, dst: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distances from each surface voxel of src to the nearest surface voxel of dst, by enumeration."""
    from scipy import ndimage

    def surface(m):
        return m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(m.ndim, 1), border_value=0)

    ps = np.argwhere(surface(src)) * spacing
    pd = np.argwhere(surface(dst)) * spacing
    d = np.sqrt(((ps[:, None, :] - pd[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hausdorff_and_hd95_match_brute_force_in_3d(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 12, 14)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[1:5, 2:9, 3:10] = True
    b[2:6, 4:11, 1:8] = True
    a[rng.integers(0, 6), rng.integers(0, 12), rng.integers(0, 14)] = True  # an outlier voxel
    spacing_xyz = (0.7, 0.8, 2.5)
    spacing_zyx = np.array(spacing_xyz[::-1])
    d_ab = brute_force_directed(a, b, spacing_zyx)
    d_ba = brute_force_directed(b, a, spacing_zyx)
    assert hausdorff(a, b, spacing_xyz) == pytest.approx(max(d_ab.max(), d_ba.max()))
    assert hausdorff(a, b, spacing_xyz, percentile=95) == pytest.approx(
        max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    )


def test_per_slice_dice_counts_only_slices_with_foreground():
    a = np.zeros((4, 5, 5), bool)
    b = np.zeros((4, 5, 5), bool)
    a[1, :2] = True
    b[1, :2] = True  # slice 1: identical
    a[2, :2] = True  # slice 2: a only
    assert per_slice(dice, a, b) == [1.0, 0.0]


def test_mask_metrics_report_mm_and_pixels():
    a, b = squares()
    volume_a = np.stack([a, a])
    volume_b = np.stack([b, b])
    m = mask_metrics(volume_a, volume_b, spacing=(2.0, 1.0, 1.0))
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["dice"] == pytest.approx(0.5)
    assert m["slice_dice_mean"] == pytest.approx(0.5)
    assert m["hausdorff_px"] == pytest.approx(5.0)
    assert m["hausdorff_mm"] == pytest.approx(10.0)


def test_evaluate_labels_gives_each_lung():
    pred = np.zeros((2, 10, 10), np.uint8)
    ref = np.zeros((2, 10, 10), np.uint8)
    pred[:, :, :4] = 1
    pred[:, :, 6:] = 2
    ref[:, :, :4] = 1
    ref[:, :, 5:] = 2
    r = evaluate_labels(pred, ref, (1.0, 1.0, 1.0))
    assert r["right lung"]["dice"] == 1.0
    assert r["left lung"]["dice"] == pytest.approx(2 * 80 / (80 + 100))
    assert r["lungs"]["iou"] == pytest.approx(160 / 180)


def test_summarize_mean_and_median():
    s = summarize([{"dice": 0.9}, {"dice": 0.8}, {"dice": 1.0}, {"dice": 0.5}])
    assert s["dice"]["mean"] == pytest.approx(0.8)
    assert s["dice"]["median"] == pytest.approx(0.85)
    assert s["dice"]["n"] == 4
