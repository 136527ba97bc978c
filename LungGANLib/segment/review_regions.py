"""A slice's flagged regions for the review (:mod:`.review`): found, placed in words, and measured.

A flag's region is kept as its pixels on the review's grid (:func:`flat`), so that a slice's score counts tissue that
two flags name once (:func:`shared_ml`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .morphology import bounding_box, count_values, label_components

#: A region is flagged from this size (mL on its slice).
MIN_FLAG_ML = 0.3


def side_text(side: str, component: np.ndarray, lung: np.ndarray) -> str:
    """Where a region lies beside or in its lung on the slice, in words: anterior or posterior, medial or lateral."""
    ys, xs = np.nonzero(component)
    lys, lxs = np.nonzero(lung)
    y_share = (ys.mean() - lys.min()) / max(lys.max() - lys.min(), 1)
    front_back = "anterior" if y_share < 1 / 3 else "posterior" if y_share > 2 / 3 else "middle"
    if side not in ("right", "left"):
        return f"the lungs, {front_back}"
    # x grows towards the patient's left: the right lung's medial side has the larger x.
    x_share = (xs.mean() - lxs.min()) / max(lxs.max() - lxs.min(), 1)
    medial = x_share > 0.5 if side == "right" else x_share < 0.5
    return f"the {side} lung, {front_back} {'medial (hilum, mediastinum)' if medial else 'lateral (chest wall)'}"


def regions(mask2d: np.ndarray, pixel_ml: float, offset: tuple[int, int] = (0, 0)) -> list[tuple[np.ndarray, float, tuple]]:
    """Connected regions of a slice's mask of at least MIN_FLAG_ML: (region, mL, box), the box moved by ``offset``."""
    if not mask2d.any():  # most slices' checks: nothing to label
        return []
    labels, _ = ndimage.label(mask2d)
    out = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        region = labels == index
        ml = float(np.count_nonzero(region[found]) * pixel_ml)
        if ml >= MIN_FLAG_ML:
            box = (found[0].start + offset[0], found[0].stop + offset[0], found[1].start + offset[1], found[1].stop + offset[1])
            out.append((region, ml, tuple(int(v) for v in box)))
    return out


def flat(region: np.ndarray, offset: tuple[int, int], width: int, step: int = 1) -> np.ndarray:
    """A region's pixels (every ``step`` th of a full slice's) as flat indices on a review-grid slice ``width`` wide."""
    ys, xs = np.nonzero(region[::step, ::step])
    return (ys + offset[0]) * width + xs + offset[1]


def shared_ml(pieces: list[np.ndarray], pixel_ml: float) -> float:
    """The mL that a slice's flagged regions (:func:`flat` pixels) cover more than once: a mass that is both
    ``dense_in`` and ``disagree`` is that much tissue to look at once, not twice."""
    if len(pieces) < 2:
        return 0.0
    joined = np.concatenate(pieces)
    return float((joined.size - np.unique(joined).size) * pixel_ml)


def drop_small_pieces(mask: np.ndarray, voxel_ml: float, min_ml: float) -> None:
    """Clear, in place, the pieces of ``mask`` (26-connected: joined across slices) under ``min_ml``, in its box."""
    if not mask.any():
        return
    within = bounding_box(mask)
    pieces, count = label_components(mask[within], structure=np.ones((3, 3, 3), dtype=bool))
    keep = count_values(pieces, count + 1) * voxel_ml >= min_ml
    keep[0] = False
    mask[within] = keep[pieces]


def area_jump(areas: np.ndarray, z: int) -> tuple[float, float]:
    """How far a lung's area on slice ``z`` lies from the median of its neighbours' (two each side), and that
    median; no jump (0) where the area lies between its means on the two slices below and the two above: the lung
    narrowing (or widening) through it, as at its apex and base, not a piece gained or lost on it."""
    below, above = areas[max(z - 2, 0) : z], areas[z + 1 : z + 3]
    neighbours = np.concatenate([below, above])
    typical = float(np.median(neighbours)) if len(neighbours) else 0.0
    if len(below) and len(above):
        low, high = sorted((float(below.mean()), float(above.mean())))
        if low <= float(areas[z]) <= high:
            return 0.0, typical
    return abs(float(areas[z]) - typical), typical
