"""Post-processing of lung masks: keep the lungs, split right/left (:mod:`.split`), fill holes.

Shared by the classical method and the generator: both produce a binary
"lung-like" mask, and this module turns it into the mask a radiologist expects.
All arrays are (z, y, x) in canonical LPS orientation; spacings are (x, y, z) mm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy import ndimage

from ..config import (
    DEFAULT_CLASSICAL,
    DOME_MIN_AREA_MM2,
    LEFT_LUNG_LABEL,
    LUNG_LABEL,
    RIGHT_LUNG_LABEL,
    ClassicalParams,
)
from .envelope import DEFAULT_ENVELOPE, EnvelopeParams, envelope_reach, lesion_envelope
from .morphology import (  # noqa: F401  (bounding_box and in_plane_pixels are part of this module's interface)
    bounding_box,
    cleared_labels,
    close_per_slice,
    component_sizes,
    fill_holes_per_slice,
    in_plane_pixels,
    label_components,
    labels_in,
)
from .split import split_lungs  # noqa: F401  (part of this module's interface, as before it had its own module)

logger = logging.getLogger(__name__)


def select_lungs(
    mask: np.ndarray,
    hu: np.ndarray | None,
    spacing: tuple[float, float, float],
    params: ClassicalParams = DEFAULT_CLASSICAL,
) -> np.ndarray:
    """Keep the one or two connected components that are lungs.

    Components smaller than ``params.min_lung_ml``, or whose mean density is
    that of pure air (bowel gas, below ``params.min_lung_mean_hu``), are
    dropped; of the rest the largest is kept, and the second largest when it is
    at least ``params.second_lung_ratio`` of the largest (the other lung, when
    the two do not touch).

    Args:
        mask: binary candidate mask (z, y, x).
        hu: the CT in HU, for the density check; None skips it.
        spacing: voxel size (x, y, z) in mm.
        params: thresholds.

    Returns:
        A boolean mask with at most two components; empty when nothing is lung.
    """
    labels, n = label_components(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = component_sizes(labels, n)
    order = np.argsort(sizes)[::-1]
    objects = ndimage.find_objects(labels)
    keep: list[int] = []
    for index in order:
        volume_ml = sizes[index] * voxel_ml
        if volume_ml < params.min_lung_ml:
            break
        if hu is not None:
            # Mean density of this component alone, inside its bounding box (no volume-sized temporaries).
            box = objects[index]
            mean_hu = float(hu[box][labels[box] == index + 1].mean(dtype=np.float64))
            if mean_hu < params.min_lung_mean_hu:
                logger.debug("dropping a %.0f mL component of mean %.0f HU (pure air: bowel gas?)", volume_ml, mean_hu)
                continue
        if keep and sizes[index] < params.second_lung_ratio * sizes[keep[0] - 1]:
            break
        keep.append(int(index) + 1)
        if len(keep) == 2:
            break
    return labels_in(labels, keep)


def fill_lung_holes(lung: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Fill a lung's holes slice by slice, except the domes of the diaphragm.

    Vessels and nodules are islands inside the lung slice: they are filled. The
    dome of the liver (or the spleen, or the stomach) rising into the lung base
    is an island too in its top slices, but in 3D it opens downwards into the
    abdomen: a 3D group of hole voxels that touches, just below, tissue outside
    the lung and whose largest cross-section is at least ``DOME_MIN_AREA_MM2``
    is left out.

    Args:
        lung: boolean mask (z, y, x) of one lung.
        spacing: voxel size (x, y, z) in mm.
    """
    filled = fill_holes_per_slice(lung)
    holes = filled & ~lung
    if not holes.any():
        return filled
    # The hole components (6-connected) that open downwards: those with a voxel that has, just below it (z - 1 is
    # inferior in LPS), tissue outside the lung.
    seeds = np.zeros(lung.shape, dtype=bool)
    seeds[1:] = holes[1:] & ~filled[:-1]
    if not seeds.any():
        return filled
    box = bounding_box(holes)
    labels, _ = label_components(holes[box])
    del holes
    opening = np.unique(labels[seeds[box]])
    del seeds
    found = ndimage.find_objects(labels)
    pixel_mm2 = spacing[0] * spacing[1]
    domes = [
        int(value) for value in opening
        if (labels[found[value - 1]] == value).sum(axis=(1, 2)).max() * pixel_mm2 >= DOME_MIN_AREA_MM2
    ]
    if domes:
        filled[box] &= ~labels_in(labels, domes)
    return filled


def finish_lungs(
    labels: np.ndarray, spacing: tuple[float, float, float], closing_radius_mm: float, fill_holes: bool = True,
    in_place: bool = False,
) -> np.ndarray:
    """Close and hole-fill each lung separately, never letting one lung take the other's voxels.

    Args:
        labels: 0/1/2 lung labels (z, y, x).
        spacing: voxel size (x, y, z) in mm.
        closing_radius_mm: in-plane closing radius; 0 for none.
        fill_holes: fill the holes of each lung slice by slice.
        in_place: write into ``labels`` instead of a copy. The result is the same: a lung only
            takes background, so the second lung's voxels are those it had before the first was finished.
    """
    radius_px = in_plane_pixels(closing_radius_mm, spacing)
    out = labels if in_place else labels.copy()
    for value in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        lung = out == value
        if not lung.any():
            continue
        box = bounding_box(lung, margin=radius_px + 1)
        part = close_per_slice(lung[box], radius_px)
        del lung  # before the hole filling's own masks
        if fill_holes:
            part = fill_lung_holes(part, spacing)
        target = out[box]
        target[part & (target == 0)] = value
    return out


def scaled_for_extent(params: ClassicalParams, extent_mm: float) -> ClassicalParams:
    """The minimum component volume scaled down for a scan shorter than the lungs (e.g. one slice)."""
    factor = min(1.0, extent_mm / params.whole_lung_extent_mm)
    return params if factor >= 1.0 else replace(params, min_lung_ml=params.min_lung_ml * factor)


def too_little_lung(
    lungs: np.ndarray, spacing: tuple[float, float, float], params: ClassicalParams, extent_mm: float
) -> str | None:
    """Why the lungs found are too little to be lungs, or None when they are enough.

    A scan of at least ``params.short_scan_mm`` (``extent_mm``: the whole
    scan's craniocaudal extent, not the lungs') needs ``params.min_total_lung_ml``
    of lung; a shorter one (a few slices, a single slice) needs one slice with
    ``params.min_slice_lung_cm2`` of lung.
    """
    if extent_mm >= params.short_scan_mm:
        total_ml = float(lungs.sum()) * float(np.prod(spacing)) / 1000.0
        if total_ml < params.min_total_lung_ml:
            return f"{total_ml:.0f} mL of lung-like tissue is below the {params.min_total_lung_ml:.0f} mL minimum"
        return None
    area_cm2 = float(lungs.sum(axis=(1, 2)).max()) * spacing[0] * spacing[1] / 100.0
    if area_cm2 < params.min_slice_lung_cm2:
        return f"the largest lung cross-section, {area_cm2:.0f} cm², is below the {params.min_slice_lung_cm2:.0f} cm² minimum"
    return None


def crop_margin(
    spacing: tuple[float, float, float],
    params: ClassicalParams = DEFAULT_CLASSICAL,
    envelope: EnvelopeParams | None = DEFAULT_ENVELOPE,
) -> list[int]:
    """Voxels per axis (z, y, x) to keep around a mask's bounding box so that :func:`postprocess` on the crop
    gives the labels it gives on the whole volume (pass it the whole scan's ``extent_mm``).

    It covers :func:`postprocess`'s own box (the closing's reach, on every axis: the hole filling
    also looks at the slice below) and the lesion envelope's rolling ball in-plane.
    """
    margin = in_plane_pixels(params.closing_radius_mm, spacing) + 2
    reach = margin if envelope is None else max(margin, envelope_reach(envelope, spacing))
    return [margin, reach, reach]


def postprocess(
    mask: np.ndarray,
    hu: np.ndarray | None,
    spacing: tuple[float, float, float],
    params: ClassicalParams = DEFAULT_CLASSICAL,
    single_label: bool = False,
    fill_holes: bool = True,
    closing_radius_mm: float | None = None,
    envelope: EnvelopeParams | None = DEFAULT_ENVELOPE,
    extent_mm: float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """From a binary lung-like mask to the final right/left lung labels.

    Args:
        mask: binary mask (z, y, x) from a threshold or the generator.
        hu: the CT in HU (for the bowel-gas density check), or None.
        spacing: voxel size (x, y, z) in mm.
        params: component and closing parameters.
        single_label: give both lungs label 1.
        fill_holes: fill holes slice by slice so vessels and nodules stay in.
        closing_radius_mm: override ``params.closing_radius_mm``.
        envelope: the lesion-aware envelope's settings (nodules in dents of the
            lung's outline taken back, see :mod:`LungGANLib.segment.envelope`); None for none.
            It needs ``hu``.
        extent_mm: the whole scan's craniocaudal extent, when ``mask`` is a crop of it (the
            least lung volume depends on it, see :func:`too_little_lung`); default: the mask's.
        out: a uint8 array of the mask's shape for the labels; it may be the mask's own memory
            (``mask.view(np.uint8)``): the mask is read before ``out`` is written. Default: a new one.

    Returns:
        uint8 labels: 1 right lung, 2 left lung (or 1 for both with ``single_label``);
        all zero when too little lung is found (see :func:`too_little_lung`).
    """
    if not mask.any():
        return cleared_labels(out, mask.shape)
    radius = params.closing_radius_mm if closing_radius_mm is None else closing_radius_mm
    # Work inside the mask's bounding box (plus the closing's reach): a fraction of the volume.
    box = bounding_box(mask, margin=in_plane_pixels(radius, spacing) + 2)
    hu_box = None if hu is None else hu[box]
    if extent_mm is None:
        extent_mm = mask.shape[0] * spacing[2]
    params = scaled_for_extent(params, extent_mm)
    lungs = select_lungs(mask[box].astype(bool, copy=False), hu_box, spacing, params)
    reason = too_little_lung(lungs, spacing, params, extent_mm) if lungs.any() else "nothing lung-like"
    out = cleared_labels(out, mask.shape)  # from here on ``mask`` may be gone (see ``out``)
    if reason:
        logger.info("no lungs: %s", reason)
        return out
    split_lungs(lungs, hu_box, out=out[box])
    del lungs
    finish_lungs(out[box], spacing, radius, fill_holes=fill_holes, in_place=True)
    if envelope is not None and hu is not None:
        out, _ = lesion_envelope(out, hu, spacing, envelope, in_place=True, return_added=False)
    if single_label:
        out[out > 0] = LUNG_LABEL
    return out


def postprocess_in_box(
    only: list[np.ndarray],
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    params: ClassicalParams = DEFAULT_CLASSICAL,
    single_label: bool = False,
    fill_holes: bool = True,
    envelope: EnvelopeParams | None = DEFAULT_ENVELOPE,
    then: Callable[[np.ndarray, np.ndarray], object] | None = None,
    then_reach: int = 0,
) -> np.ndarray:
    """:func:`postprocess` on the mask's bounding box, for a caller that hands over its only reference
    to the whole-scan mask in a one-item list, which this function empties.

    The box is grown by :func:`crop_margin`, so the labels are those of the whole volume. The
    whole-scan mask goes as soon as its crop is made, and the labels take the crop's own memory: a
    long scan's mask and labels are never held twice over the whole volume (issue 9).

    Args:
        only: ``[mask]``, the binary lung-like mask (z, y, x); emptied.
        hu, spacing, params, single_label, fill_holes, envelope: as for :func:`postprocess`.
        then: further steps on the crop, in place, called as ``then(labels, hu)`` with the crop's
            labels and HU (the generator's dome rule, rim trim and outline growth).
        then_reach: how many voxels in-plane those steps may add beyond the labels' box (the box keeps
            that much more).

    Returns:
        uint8 labels of the whole volume (see :func:`postprocess`).
    """
    mask = only.pop()
    shape = mask.shape
    if not mask.any():
        return np.zeros(shape, dtype=np.uint8)
    margin = crop_margin(spacing, params, envelope)
    margin = [margin[0], max(margin[1], then_reach + 1), max(margin[2], then_reach + 1)]
    box = bounding_box(mask, margin=margin)
    part = mask[box].copy()
    del mask
    hu_part = hu[box]
    part = postprocess(
        part, hu_part, spacing, params, single_label=single_label, fill_holes=fill_holes, envelope=envelope,
        extent_mm=shape[0] * spacing[2], out=part.view(np.uint8),
    )
    if then is not None:
        then(part, hu_part)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[box] = part
    return labels
