"""Overlap and distance metrics between a predicted and a reference mask.

IoU and Dice (3D, and per slice as the paper reports them), and the symmetric
Hausdorff distance and HD95, in millimetres (given the spacing) or in pixels.
Masks are boolean arrays of any dimension (a 2D slice or a (z, y, x) volume);
``spacing`` follows SimpleITK's (x, y, z) order and is reversed to the array's.

Conventions, for empty masks: two empty masks agree perfectly (IoU = Dice = 1,
distances 0); one empty mask against a non-empty one gives IoU = Dice = 0 and
infinite distances. HD95 is the larger of the two directed 95th percentiles of
surface distances (as MONAI computes it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..config import LABEL_NAMES
from ..segment.morphology import bounding_box


def _as_bool(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask).astype(bool, copy=False)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two masks."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    union = np.count_nonzero(pred | ref)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & ref) / union


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two masks (3D Dice for volumes)."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & ref) / total


def per_slice(metric, pred: np.ndarray, ref: np.ndarray) -> list[float]:
    """A 2D metric on every axial slice (axis 0) where either mask has foreground."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    keep = pred.any(axis=tuple(range(1, pred.ndim))) | ref.any(axis=tuple(range(1, ref.ndim)))
    return [metric(pred[z], ref[z]) for z in np.flatnonzero(keep)]


def _surface(mask: np.ndarray) -> np.ndarray:
    struct = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=struct, border_value=0)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the nearest surface voxel of the other.

    Args:
        pred, ref: non-empty masks of the same shape.
        spacing: voxel size in SimpleITK (x, y, z) order, mm; None for pixels.

    Returns:
        (distances from pred's surface to ref's, distances from ref's to pred's).
    """
    pred, ref = _as_bool(pred), _as_bool(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} and {ref.shape}")
    sampling = None if spacing is None else tuple(float(s) for s in reversed(tuple(spacing)[: pred.ndim]))
    # The surfaces inside the union's bounding box (plus a margin), then each surface voxel's nearest on the other
    # surface from a k-d tree of the other's voxel centres in mm: the exact Euclidean distance a distance transform
    # of the box gives, at a few times less time on a lung's surfaces (docs/benchmarks.md).
    box = bounding_box(pred | ref, margin=1)
    sp, sr = _surface(pred[box]), _surface(ref[box])
    scale = np.ones(pred.ndim) if sampling is None else np.asarray(sampling)
    points_pred, points_ref = np.argwhere(sp) * scale, np.argwhere(sr) * scale  # in C order, as mask[surface] is
    return cKDTree(points_ref).query(points_pred, workers=-1)[0], cKDTree(points_pred).query(points_ref, workers=-1)[0]


def hausdorff(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None, percentile: float = 100.0
) -> float:
    """Symmetric Hausdorff distance (``percentile`` = 100) or HDp, e.g. HD95.

    Args:
        pred, ref: masks of the same shape.
        spacing: voxel size (x, y, z) in mm; None gives pixels.
        percentile: 100 for the Hausdorff distance, 95 for HD95.

    Returns:
        The distance; 0 for two empty masks, ``inf`` when only one is empty.
    """
    pred, ref = _as_bool(pred), _as_bool(ref)
    has_pred, has_ref = pred.any(), ref.any()
    if not has_pred and not has_ref:
        return 0.0
    if not has_pred or not has_ref:
        return math.inf
    a, b = surface_distances(pred, ref, spacing)
    return float(max(np.percentile(a, percentile), np.percentile(b, percentile)))


def mask_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """IoU, Dice, per-slice means, Hausdorff and HD95 (mm with spacing, and pixels) of two masks."""
    pred, ref = _as_bool(pred), _as_bool(ref)
    out = {"iou": iou(pred, ref), "dice": dice(pred, ref)}
    if pred.ndim == 3:
        slice_dice = per_slice(dice, pred, ref)
        slice_iou = per_slice(iou, pred, ref)
        out["slice_dice_mean"] = float(np.mean(slice_dice)) if slice_dice else 1.0
        out["slice_iou_mean"] = float(np.mean(slice_iou)) if slice_iou else 1.0
    if pred.any() and ref.any():
        a_px, b_px = surface_distances(pred, ref, None)
        out["hausdorff_px"] = float(max(a_px.max(), b_px.max()))
        out["hd95_px"] = float(max(np.percentile(a_px, 95), np.percentile(b_px, 95)))
        if spacing is not None:
            a, b = surface_distances(pred, ref, spacing)
            out["hausdorff_mm"] = float(max(a.max(), b.max()))
            out["hd95_mm"] = float(max(np.percentile(a, 95), np.percentile(b, 95)))
    else:
        empty = 0.0 if not pred.any() and not ref.any() else math.inf
        out["hausdorff_px"] = out["hd95_px"] = empty
        if spacing is not None:
            out["hausdorff_mm"] = out["hd95_mm"] = empty
    return out


def evaluate_labels(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, dict[str, float]]:
    """Metrics for both lungs together, and for each lung when both masks carry right/left labels.

    Args:
        pred, ref: label images (0 background, 1 right lung, 2 left lung; or 0/1).
        spacing: voxel size (x, y, z) in mm.

    Returns:
        ``{"lungs": {...}, "right lung": {...}, "left lung": {...}}`` (the last two
        only when both masks hold label 2).
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    results = {"lungs": mask_metrics(pred > 0, ref > 0, spacing)}
    if (pred == 2).any() and (ref == 2).any():
        for value, name in LABEL_NAMES.items():
            results[name] = mask_metrics(pred == value, ref == value, spacing)
    return results


def summarize(cases: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and median of each metric over cases (infinite values count in the median only)."""
    keys = sorted({k for case in cases for k in case})
    summary: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([case[key] for case in cases if key in case], dtype=float)
        finite = values[np.isfinite(values)]
        summary[key] = {
            "mean": float(finite.mean()) if finite.size == values.size and values.size else math.inf,
            "median": float(np.median(values)) if values.size else math.nan,
            "n": int(values.size),
        }
    return summary
