"""A lesion-aware envelope at the lung border: take back nodules that bulge into the lung.

A density threshold, and a generator trained on thresholded masks, cut a
juxtapleural nodule out of the lung and leave a dent in the lung's outline
where it sits. On every axial slice, each lung is closed with a rolling ball
(a disk of ``radius_mm``); each dent the ball bridges (a *gap*: closed, not
lung) is added to the lung only when it looks like a lesion held by the lung:

1. it is soft tissue: most of its pixels lie between ``TISSUE_HU`` (a nodule
   or mass; not air in a bronchus, not fat, not bone or contrast-filled vessels);
2. the lung holds it: at least ``min_enclosure`` of its outline borders the
   lung (a nodule bulging into the lung, not a shallow dent along a flat wall);
3. it opens onto the chest wall: its mouth (the tissue beside it that is not
   lung) lies on the convex hull of both lungs, not deep inside it, where the
   mediastinum, the hilum with its great vessels and the domes of the
   diaphragm are. Lesions there are left to the generator, which is trained
   to keep them (:mod:`LungGANLib.train.lesion_synthesis`). On a slice that
   shows one lung, its mirror image across the midline stands in for the other;
4. it is no bigger than a lesion the ball can bridge, and it is not the dome
   of the diaphragm: a gap whose lowest slice reaches ``DOME_MIN_AREA_MM2``
   and under which there is no lung is the liver or the spleen.

Arrays are (z, y, x) canonical LPS (x towards the patient's left, y posterior,
z superior); spacing (x, y, z) mm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import DOME_MIN_AREA_MM2, LEFT_LUNG_LABEL, PADDING_HU, RIGHT_LUNG_LABEL
from .domes import lowest_slice, lung_under_share
from .morphology import IN_PLANE_CROSS, bounding_box, label_components, labels_in

logger = logging.getLogger(__name__)

#: Density of lesion tissue (HU): solid nodules and masses; not fat (about -100 HU), not bone or contrast.
TISSUE_HU = (-50.0, 200.0)
#: Dents smaller than this (mm²) are left to the pipeline's 4 mm closing.
MIN_GAP_MM2 = 5.0
#: Reach (mm) of an accepted dent towards the lungs' hull, where the rolling ball dipped into it.
CAP_MM = 5.0


@dataclass(frozen=True)
class EnvelopeParams:
    """Settings of :func:`lesion_envelope`.

    Attributes:
        radius_mm: the rolling ball's radius; dents up to about twice this wide are bridged
            (nodules up to 30 mm with 15 mm).
        min_tissue: least share of a gap's pixels in ``TISSUE_HU``.
        min_enclosure: least share of a gap's outline that borders the lung.
        max_mouth_depth_mm: how deep inside the convex hull of both lungs the
            gap's mouth (its outline's pixels that are not lung) may lie on average:
            at the chest wall it lies on the hull; at the mediastinum, the hilum
            and the domes of the diaphragm it lies deep inside.
    """

    radius_mm: float = 15.0
    min_tissue: float = 0.6
    min_enclosure: float = 0.55
    max_mouth_depth_mm: float = 5.0


DEFAULT_ENVELOPE = EnvelopeParams()


def envelope_reach(params: EnvelopeParams, spacing: tuple[float, float, float]) -> int:
    """How far (in-plane pixels) beyond the lungs' bounding box :func:`lesion_envelope` works: the ball and two more."""
    return int(np.ceil(params.radius_mm / min(spacing[0], spacing[1]))) + 2


def _close_in_plane(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Closing of every axial slice with a disk of ``radius_mm``, through two distance transforms per slice.

    Only the lung's bounding box (grown by the radius) is worked on.
    """
    closed = mask.copy()
    if not mask.any():
        return closed
    reach = [int(np.ceil(radius_mm / s)) + 1 for s in (spacing[1], spacing[0])]
    slices, rows, cols = bounding_box(mask, margin=[0, *reach])
    sampling = (spacing[1], spacing[0])
    for z in range(slices.start, slices.stop):
        plane = mask[z, rows, cols]
        if not plane.any():
            continue
        dilated = ndimage.distance_transform_edt(~plane, sampling=sampling) <= radius_mm
        # Pad so the ball can roll beyond the crop's edge.
        dilated = np.pad(dilated, 1, constant_values=False)
        closed[z, rows, cols] |= (ndimage.distance_transform_edt(dilated, sampling=sampling) > radius_mm)[1:-1, 1:-1]
    return closed


def mirror_midlines(lab: np.ndarray) -> np.ndarray:
    """Per slice, the x (column) to mirror a lone lung across; NaN where the slice shows both lungs or none.

    A slice that shows one lung (the apex or the base of some patients) takes the midline of the nearest slice
    that shows both: halfway between the right lung's medial edge and the left lung's. NaN everywhere when no
    slice shows both (after a pneumonectomy: no midline to trust).
    """
    right = (lab == RIGHT_LUNG_LABEL).any(axis=1)  # (z, x): the columns each lung reaches on each slice
    left = (lab == LEFT_LUNG_LABEL).any(axis=1)
    has_right, has_left = right.any(axis=1), left.any(axis=1)
    both = np.flatnonzero(has_right & has_left)
    out = np.full(lab.shape[0], np.nan)
    alone = np.flatnonzero(has_right ^ has_left)
    if both.size == 0 or alone.size == 0:
        return out
    columns = np.arange(lab.shape[2])
    medial_right = np.where(right[both], columns, -1).max(axis=1)  # x grows towards the patient's left
    medial_left = np.where(left[both], columns, lab.shape[2]).min(axis=1)
    midlines = (medial_right + medial_left) / 2.0
    nearest = np.abs(alone[:, None] - both[None, :]).argmin(axis=1)
    out[alone] = midlines[nearest]
    return out


def _fill_depth_in_hull(
    depth: np.ndarray, done: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float], slices: np.ndarray,
    mirror_x: np.ndarray,
) -> None:
    """Write into ``depth`` how deep (mm) each voxel of ``slices`` lies inside the convex hull of both lungs.

    The chest wall lies outside the hull (depth 0); the mediastinum, the hilum
    and the domes of the diaphragm lie deep inside it. On a slice that shows one
    lung, the other is its mirror image across ``mirror_x`` (:func:`mirror_midlines`;
    NaN: the lung alone), so its medial side stays inside the hull. Slices marked in
    ``done`` are skipped, and the others marked.
    """
    from skimage.morphology import convex_hull_image

    for z in slices:
        if done[z]:
            continue
        done[z] = True
        if lungs[z].any():
            both = lungs[z]
            if np.isfinite(mirror_x[z]):
                ys, xs = np.nonzero(lungs[z])
                mirrored = np.rint(2.0 * mirror_x[z] - xs).astype(np.intp)
                inside = (mirrored >= 0) & (mirrored < both.shape[1])
                both = both.copy()
                both[ys[inside], mirrored[inside]] = True
            # On the lungs' box: the hull lies within it, and a ring of one pixel around it holds the nearest
            # pixel outside the hull of every pixel inside (the same depths as on the whole slice, a third the time).
            box = bounding_box(both)
            hull = np.pad(convex_hull_image(both[box]), 1)
            depth[z][box] = ndimage.distance_transform_edt(hull, sampling=(spacing[1], spacing[0]))[1:-1, 1:-1]


def lesion_envelope(
    labels: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    params: EnvelopeParams = DEFAULT_ENVELOPE,
    in_place: bool = False,
    return_added: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Add to each lung the dents of its outline that hold a lesion (see the module's rules).

    Args:
        labels: 0/1/2 lung labels (z, y, x).
        hu: the CT in HU, same shape.
        spacing: voxel size (x, y, z) mm.
        params: the envelope's settings.
        in_place: write into ``labels`` instead of a copy (a volume's worth of memory less).
        return_added: also return the voxels added, as a volume-sized mask (else None).

    Returns:
        The new labels and the boolean mask of the voxels added (or None).
    """
    out = labels if in_place else labels.copy()
    if not labels.any():
        return out, np.zeros(labels.shape, dtype=bool) if return_added else None
    reach = envelope_reach(params, spacing)
    # One slice more above and below: the domes are judged by the slice under a dent.
    box = bounding_box(labels, margin=[1, reach, reach])
    # Sub-millimetre pixels are judged at half resolution: the ball is 15 mm
    # across, a pixel more or less at its edge does not matter, and it is four times cheaper.
    step = 2 if min(spacing[0], spacing[1]) < 1.0 else 1
    # In place, ``fine`` sees the right lung's additions while the left lung is judged: they are
    # not the left lung's to take either way (only background becomes lung), so the result is the same.
    fine = labels[box]
    added_box = np.zeros(fine.shape, dtype=bool) if return_added else None
    added_voxels = 0
    lab = fine[:, ::step, ::step]
    coarse_hu = hu[box][:, ::step, ::step]
    coarse = (spacing[0] * step, spacing[1] * step, spacing[2])
    tissue = (coarse_hu > TISSUE_HU[0]) & (coarse_hu < TISSUE_HU[1])
    lungs = lab > 0
    # Hull depth, computed only on the slices that have dents to judge.
    depth = np.zeros(lab.shape, dtype=np.float32)
    depth_done = np.zeros(lab.shape[0], dtype=bool)
    hull_of = (depth, depth_done, mirror_midlines(lab))
    for value in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        # One function call per lung: its masks are gone before the other lung's are made.
        accepted = _accepted_dents(lab == value, lungs, tissue, hull_of, coarse, params)
        if accepted is None:
            continue
        # Back to full resolution, only around what was accepted (lesions: a small part of the lungs' box).
        where, taken = _to_fine(accepted, step, fine.shape, IN_PLANE_CROSS)
        taken &= (fine[where] == 0) & (hu[box][where] >= PADDING_HU)  # the fine ring's edge: never the padding
        region = out[box][where]
        taken &= region == 0
        region[taken] = value
        added_voxels += int(taken.sum())
        if added_box is not None:
            added_box[where] |= taken
    if added_voxels:
        logger.info("lesion envelope added %.1f mL", added_voxels * float(np.prod(spacing)) / 1000.0)
    if added_box is None:
        return out, None
    added = np.zeros(labels.shape, dtype=bool)
    added[box] = added_box
    return out, added


def _accepted_dents(
    lung: np.ndarray, lungs: np.ndarray, tissue: np.ndarray, hull_of: tuple[np.ndarray, np.ndarray, np.ndarray],
    coarse: tuple[float, float, float], params: EnvelopeParams,
) -> np.ndarray | None:
    """The dents of one lung's outline that the module's rules accept, on the (coarse) grid of ``lung``; None for none.

    Args:
        lung: this lung; ``lungs``: both.
        tissue: voxels of lesion density (``TISSUE_HU``).
        hull_of: the hull depth, which slices have it, and the midlines to mirror a lone lung across, filled in
            here slice by slice as needed (see :func:`_fill_depth_in_hull`).
        coarse: the grid's voxel size (x, y, z) mm.
        params: the envelope's settings.
    """
    if not lung.any():
        return None
    pixel_mm2 = coarse[0] * coarse[1]
    largest_mm2 = np.pi * params.radius_mm**2
    ring_struct = IN_PLANE_CROSS
    gaps = _close_in_plane(lung, params.radius_mm, coarse) & ~lungs
    if not gaps.any():
        return None
    depth, depth_done, mirror_x = hull_of
    _fill_depth_in_hull(depth, depth_done, lungs, coarse, np.flatnonzero(gaps.any(axis=(1, 2))), mirror_x)
    # In-plane components: each slice's dents are judged on their own, all at once.
    components, n = label_components(gaps, structure=ring_struct)
    # Each gap's outline: the pixels next to it (gaps never touch each other: lung or the ball's edge lies between).
    ring = ndimage.grey_dilation(components, footprint=ring_struct)
    ring[gaps] = 0
    del gaps
    on_gap, on_ring = np.flatnonzero(components), np.flatnonzero(ring)
    gap_id, ring_id = components.ravel()[on_gap], ring.ravel()[on_ring]
    del ring
    ring_lung = lung.ravel()[on_ring]

    def count(ids: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(ids, weights=weights, minlength=n + 1)

    area = count(gap_id)
    with np.errstate(invalid="ignore", divide="ignore"):
        tissue_share = count(gap_id, tissue.ravel()[on_gap]) / area
        enclosure = count(ring_id, ring_lung) / count(ring_id)
        # How deep inside both lungs' hull the dent opens: at the chest wall, about 0.
        mouth_depth = count(ring_id, depth.ravel()[on_ring] * ~ring_lung) / count(ring_id, ~ring_lung)
        lesion_like = (
            (np.arange(n + 1) > 0)
            & (area * pixel_mm2 <= largest_mm2)
            & (tissue_share >= params.min_tissue)
            & (mouth_depth <= params.max_mouth_depth_mm)  # NaN, no mouth: a hole by the hilum, not a dent
        )
        keep = lesion_like & (area * pixel_mm2 >= MIN_GAP_MM2) & (enclosure >= params.min_enclosure)
    if not keep.any():
        return None
    # A nodule's top and bottom slices make shallow dents: they join when they touch, in 3D, a slice's dent
    # that passed on its own.
    groups, _ = label_components(lesion_like[components])
    accepted = np.isin(groups, np.unique(groups[keep[components]]))
    del groups, components
    # The ball dips a little into a dent as wide as itself: the cap between the dent it bridged and
    # the lungs' hull (the chest wall's inner surface) is the rest of the nodule.
    near = ndimage.binary_dilation(accepted, structure=ring_struct, iterations=max(int(round(CAP_MM / coarse[0])), 1))
    accepted |= near & (depth > 0) & ~lungs & tissue
    del near
    accepted &= ~_domes(accepted, lungs, coarse)
    return accepted if accepted.any() else None


def _to_fine(
    accepted: np.ndarray, step: int, shape: tuple[int, ...], ring_struct: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The accepted coarse voxels at full resolution, within their own bounding box.

    Each coarse pixel becomes ``step`` x ``step`` fine pixels (clipped to ``shape``), and the
    result is dilated in-plane by ``step - 1`` pixels: the coarse grid loses up to a fine pixel
    at a gap's edge. Returns the fine box and the mask inside it.
    """
    zs, ys, xs = bounding_box(accepted)
    if step == 1:
        return (zs, ys, xs), accepted[zs, ys, xs].copy()
    reach = step - 1
    rows = slice(max(ys.start * step - reach, 0), min(ys.stop * step + reach, shape[1]))
    cols = slice(max(xs.start * step - reach, 0), min(xs.stop * step + reach, shape[2]))
    up = accepted[zs, ys, xs].repeat(step, axis=1).repeat(step, axis=2)
    fine = np.zeros((zs.stop - zs.start, rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    top, left = ys.start * step - rows.start, xs.start * step - cols.start
    height, width = min(up.shape[1], fine.shape[1] - top), min(up.shape[2], fine.shape[2] - left)
    fine[:, top : top + height, left : left + width] = up[:, :height, :width]
    return (zs, rows, cols), ndimage.binary_dilation(fine, structure=ring_struct, iterations=reach)


def _domes(accepted: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Accepted gaps, grouped in 3D, that are the dome of the diaphragm, not a lesion.

    A dome meets the lung base with a wide cross-section (``DOME_MIN_AREA_MM2``
    or more in its lowest slice), and there is no lung under it: under most
    of its footprint, the slices below hold no lung. Under a juxtapleural
    nodule the lower lobe goes on.
    """
    groups, n = label_components(accepted)
    domes = []
    pixel_mm2 = spacing[0] * spacing[1]
    for value, found in enumerate(ndimage.find_objects(groups), start=1):
        if found is None:
            continue
        group = groups[found] == value
        lowest = lowest_slice(group, found)
        if group[lowest - found[0].start].sum() * pixel_mm2 < DOME_MIN_AREA_MM2:
            continue
        if lung_under_share(group, found, lungs, lowest) < 0.5:
            domes.append(value)
    return labels_in(groups, domes) if domes else np.zeros(accepted.shape, dtype=bool)
