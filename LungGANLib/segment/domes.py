"""Soft tissue the generator takes for a mass: the top of the liver's and the spleen's domes.

On one axial slice, the top of a dome rising into the lung base is a round island of soft
tissue inside the lung, which is what a mass looks like; a generator trained to keep masses
takes it in. In 3D it is no mass: it is wide, there is no lung under it, and it is held by
lung all round. :func:`drop_domes` takes such islands out of the generator's lungs, by the
rule the hole filling and the lesion envelope already apply to what they would add
(``DOME_MIN_AREA_MM2``, no lung under most of the footprint). A mass that sits on the
diaphragm as an island of its own is judged the same way; one at the chest wall or the
mediastinum, and dense dependent lung, is not held by lung all round and stays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..config import DEFAULT_CLASSICAL, DOME_MIN_AREA_MM2
from .morphology import (
    IN_PLANE_SQUARE, SLAB, bounding_box, disk, grow_box, in_plane, in_plane_pixels, label_components, opened,
)

#: In-plane opening radius: vessels thinner than twice this fall away from the islands.
VESSEL_MM = 3.0
#: Share of an island's in-plane outline, above its lowest slice, that must be aerated lung (the dome of
#: lidc-idri-0001: 0.80).
MIN_ENCLOSURE = 0.75


def lowest_slice(group: np.ndarray, found: tuple[slice, ...]) -> int:
    """Index of ``group``'s lowest slice (z - 1 is inferior) in the volume its box ``found`` refers to."""
    return found[0].start + int(np.flatnonzero(group.any(axis=(1, 2)))[0])


def lung_under_share(group: np.ndarray, found: tuple[slice, ...], lungs: np.ndarray, lowest: int) -> float:
    """Share of ``group``'s footprint under which the slices below its lowest slice hold lung.

    Args:
        group: the group's voxels within ``found`` (its box in ``lungs``).
        found: the group's box, as :func:`scipy.ndimage.find_objects` gives it.
        lungs: the lung mask the box refers to.
        lowest: the group's lowest slice (:func:`lowest_slice`).

    A dome has no lung under most of its footprint; under a nodule at the lung base the lower lobe goes on.
    """
    return float(lungs[:lowest, found[1], found[2]].any(axis=0)[group.any(axis=0)].mean())


def drop_domes(
    labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
    dense_hu: float = DEFAULT_CLASSICAL.lung_threshold_hu,
) -> int:
    """Remove, in place, the islands of dense tissue in the lungs that are a dome of the diaphragm.

    An island is a 3D group of lung voxels denser than ``dense_hu`` that stays after an in-plane
    opening of ``VESSEL_MM``. It is a dome when its largest cross-section reaches
    ``DOME_MIN_AREA_MM2``, the slices below it hold no lung under most of its footprint, and at
    least ``MIN_ENCLOSURE`` of its in-plane outline above its lowest slice is aerated lung. The dome goes with the dense
    voxels beside it that the opening had taken off.

    Args:
        labels: lung labels (z, y, x), 0 outside; changed in place.
        hu: the CT in HU, same shape.
        spacing: voxel size (x, y, z) in mm.
        dense_hu: denser than this is not aerated lung.

    Returns:
        How many voxels were removed.
    """
    if not labels.any():
        return 0
    box = bounding_box(labels > 0, margin=1)  # views: what changes in them changes in labels
    labels, hu = labels[box], hu[box]
    lungs = labels > 0
    dense = lungs & (hu > dense_hu)
    radius = in_plane_pixels(VESSEL_MM, spacing)
    ball = disk(radius)[None]
    islands = np.zeros(dense.shape, dtype=bool)
    for start in range(0, dense.shape[0], SLAB):  # in-plane, so slab by slab
        islands[start : start + SLAB] = opened(dense[start : start + SLAB], ball)
    groups, _ = label_components(islands)
    del islands
    pixel_mm2 = spacing[0] * spacing[1]
    removed = 0
    for value, found in enumerate(ndimage.find_objects(groups), start=1):
        if found is None:
            continue
        group = groups[found] == value
        if group.sum(axis=(1, 2)).max() * pixel_mm2 < DOME_MIN_AREA_MM2:
            continue
        lowest = lowest_slice(group, found)
        if lung_under_share(group, found, lungs, lowest) >= 0.5:
            continue  # lung goes on under it: a mass, not a dome
        window = grow_box(found, (0, radius + 1, radius + 1), labels.shape)
        inside = np.zeros(labels[window].shape, dtype=bool)
        offset = tuple(f.start - w.start for f, w in zip(found, window))
        inside[tuple(slice(o, o + n) for o, n in zip(offset, group.shape))] = group
        ring = in_plane(inside, IN_PLANE_SQUARE, dilate=True) & ~inside
        if found[0].stop - lowest > 1:
            ring[: lowest - window[0].start + 1] = False  # above its base, where a dome meets what lies below
        if (lungs[window][ring] & ~dense[window][ring]).mean() < MIN_ENCLOSURE:
            continue  # at the chest wall or the mediastinum: not held by lung all round
        dome = in_plane(inside, ball, dilate=True) & dense[window]
        labels[window][dome] = 0
        removed += int(dome.sum())
    return removed
