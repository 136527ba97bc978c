"""Is a file a label mask? ``evaluate`` and ``overlay`` read masks, and a CT given in a mask's place
would be scored or drawn as if every voxel above 0 HU were lung."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

#: Most distinct values a label mask may hold (TotalSegmentator's multi-label masks hold about 120).
MAX_LABELS = 256


def check_label_image(array: np.ndarray, source: str) -> None:
    """Refuse an image that is no label mask (a CT given as a mask, say): a mask holds whole numbers from
    0 to 65535, and few of them (at most ``MAX_LABELS`` distinct values, counted on a sample of about a
    million voxels: a refusal never rests on values the sample has not seen)."""
    if array.size == 0:
        return
    low, high = float(array.min()), float(array.max())
    whole = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if not whole or low < 0 or high > 65535:
        found = f"values from {low:g} to {high:g}" + ("" if whole else ", not whole numbers")
    else:
        sample = array.reshape(-1)[:: max(1, array.size // 1_000_000)]
        distinct = np.unique(sample).size
        if distinct <= MAX_LABELS:
            return
        found = f"at least {distinct} different values"
    raise InputError(f"{source} is not a label mask ({found}): give a mask (0 background, 1 right lung, "
                     "2 left lung), not the CT")


def check_lung_labels(array: np.ndarray, source: str) -> None:
    """Refuse a label mask with several labels that are not 1 and 2 (a lobe mask, say): its lungs would be
    scored as right (1) and left (2) lung and the rest as background, which gives wrong figures without a
    word. A mask with one label, whatever its value (255, say), is both lungs together.

    Raises:
        InputError: naming the labels found.
    """
    found = np.flatnonzero(np.bincount(array.reshape(-1).astype(np.int64, copy=False), minlength=3))
    labels = found[found > 0]
    if labels.size > 1 and (labels > 2).any():
        shown = ", ".join(map(str, found[:12])) + (", ..." if found.size > 12 else "")
        raise InputError(f"{source} holds the labels {shown}: evaluate reads 0 background, 1 right lung and 2 left "
                         "lung (or 1 for both); relabel it first (a lobe mask: each lung's lobes to 1 or 2)")

