"""The right lung and the left: splitting one lung mask in two where the lungs touch.

The lungs meet at the anterior and posterior junction lines, and on many scans the
mask holds them as one component there. :func:`split_lungs` finds the pleura between
them (denser than the lungs on either side), or erodes the mask until it falls in two,
and grows the two pieces back over the mask. Arrays are (z, y, x), canonical LPS: low
x is the patient's right.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..config import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL
from .morphology import (
    bounding_box,
    cleared_labels,
    component_sizes,
    count_values,
    label_components,
    percentile_of_counts,
)

logger = logging.getLogger(__name__)

_MAX_SPLIT_EROSIONS = 12
#: Stricter thresholds that open the pleural junction line between touching lungs.
_JUNCTION_THRESHOLDS_HU = (-700.0, -800.0, -880.0)


def _grow_labels(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every voxel of ``mask`` the label of the nearest labelled voxel, in place.

    Slice by slice, each voxel takes the label of the nearest seed in its slice
    (a 2D distance transform: cheap, and the lungs meet along a sheet that
    crosses every slice). Voxels of slices without seeds are then reached by
    growing the labels through the mask in 3D, one voxel per step.
    """
    for z in range(labels.shape[0]):
        seeds = labels[z] > 0
        free = mask[z] & ~seeds
        if not free.any() or not seeds.any():
            continue
        rows, cols = ndimage.distance_transform_edt(~seeds, return_distances=False, return_indices=True)
        labels[z][free] = labels[z][rows[free], cols[free]]
    if not any((mask[z] & (labels[z] == 0)).any() for z in range(labels.shape[0])):
        return labels  # every slice had seeds: the common case, without volume-sized temporaries
    values = [v for v in np.flatnonzero(count_values(labels, int(labels.max()) + 1)) if v != 0]  # np.unique sorts a copy
    struct = ndimage.generate_binary_structure(3, 1)
    while True:
        free = mask & (labels == 0)
        if not free.any():
            break
        grew = False
        for value in values:
            claim = ndimage.binary_dilation(labels == value, structure=struct) & free
            if claim.any():
                labels[claim] = value
                free &= ~claim
                grew = True
        if not grew:
            break
    return labels


def _side_labels(labels: np.ndarray, components: list[int], out: np.ndarray) -> None:
    """Label each component right (1) or left (2) by its mean x (low x is the patient's right), into ``out`` (zeros)."""
    xs = np.arange(labels.shape[2])
    centres = []
    for value in components:
        profile = (labels == value).sum(axis=(0, 1))
        centres.append(float((profile * xs).sum() / max(profile.sum(), 1)))
    order = np.argsort(centres)
    sides = (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)
    for rank, index in enumerate(order[:2]):
        out[labels == components[index]] = sides[rank]


def _two_large_pieces(pieces: np.ndarray, total: int) -> np.ndarray | None:
    """Seeds 1 and 2 from the two largest components of ``pieces``, if both are large."""
    labels, n = label_components(pieces)
    del pieces  # often a temporary of the caller's: gone before the seeds are made
    if n < 2:
        return None
    sizes = component_sizes(labels, n)
    big = np.argsort(sizes)[::-1][:2]
    if sizes[big[1]] < 0.1 * total:
        return None
    seeds = (labels == big[0] + 1).view(np.uint8)  # 1 on the largest piece, 0 elsewhere, in place of a bool mask
    seeds[labels == big[1] + 1] = 2
    return seeds


def split_lungs(
    mask: np.ndarray, hu: np.ndarray | None = None, midline_x: float | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Split a lung mask into right (1) and left (2) lung.

    Two components are labelled by side. When the lungs touch (at the anterior
    or posterior junction line) they form one component; it is split at the
    pleura between them: first by keeping only denser-than-pleura voxels
    (stricter HU thresholds, when ``hu`` is given), then by erosion; the two
    large pieces found are grown back over the mask. A single component that
    lies mostly on one side of the midline is one lung (after a pneumonectomy,
    or a scan that holds one lung) and keeps its side.

    Args:
        mask: boolean lung mask (z, y, x), at most two components.
        hu: the CT in HU, or None.
        midline_x: x index of the body's midline; defaults to the mask's median x.
        out: a uint8 array of the mask's shape to write the labels into (it is cleared first);
            default: a new one.

    Returns:
        uint8 labels: 0 background, 1 right lung, 2 left lung (``out`` when given).
    """
    out = cleared_labels(out, mask.shape)
    if not mask.any():
        return out
    box = bounding_box(mask, margin=1)
    crop = mask[box]
    labels, n = label_components(crop)
    if n >= 2:
        sizes = component_sizes(labels, n)
        components = [int(i) + 1 for i in np.argsort(sizes)[::-1][:2]]
        _side_labels(labels, components, out[box])
        return out
    del labels  # one component: its labels say nothing more than the mask

    total = int(crop.sum())
    seeds = None
    if hu is not None:
        hu_crop = hu[box]
        for threshold in _JUNCTION_THRESHOLDS_HU:
            seeds = _two_large_pieces(crop & (hu_crop < threshold), total)
            if seeds is not None:
                logger.debug("lungs separated at the junction line with %.0f HU", threshold)
                break
    if seeds is None:
        eroded = crop
        struct = ndimage.generate_binary_structure(3, 1)
        for _ in range(_MAX_SPLIT_EROSIONS):
            eroded = ndimage.binary_erosion(eroded, structure=struct)
            seeds = _two_large_pieces(eroded, total)
            if seeds is not None or not eroded.any():
                break
    if seeds is not None:
        _side_labels(_grow_labels(seeds, crop), [1, 2], out[box])
        return out

    # No split: one lung, or two joined over a broad front. Decide by the midline.
    profile = mask.sum(axis=(0, 1))  # voxels per x: the median without a list of every voxel's x
    mid = percentile_of_counts(profile, 50) if midline_x is None else float(midline_x)
    right_fraction = float(profile[: int(np.clip(np.ceil(mid), 0, profile.size))].sum() / profile.sum())
    if min(right_fraction, 1.0 - right_fraction) < 0.25:
        out[mask] = RIGHT_LUNG_LABEL if right_fraction >= 0.5 else LEFT_LUNG_LABEL
        return out
    logger.warning("the lungs could not be separated at their junction; splitting them at the midline x=%.0f", mid)
    x_index = np.arange(mask.shape[2])[None, None, :]
    out[mask & (x_index < mid)] = RIGHT_LUNG_LABEL
    out[mask & (x_index >= mid)] = LEFT_LUNG_LABEL
    return out
