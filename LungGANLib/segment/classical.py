"""The classical lung segmentation: threshold, morphology, connected components.

This is the paper's "Morph" baseline and the bootstrap of the reference masks:

1. the body: soft tissue above ``body_threshold_hu``, holes filled slice by
   slice, largest 3D component (drops the table and air outside the body);
2. lung candidates: voxels below ``lung_threshold_hu`` inside the body, specks
   dropped where the pixels are fine (``speck_mm``);
3. the trachea and main bronchi: grown from a seed found in the upper slices
   and removed with a small margin;
4. the lungs: see :func:`LungGANLib.segment.postprocess.postprocess` (components,
   right/left split, closing and hole filling).

Arrays are (z, y, x) HU in canonical LPS orientation, spacing (x, y, z) mm.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..config import AIR_HU, DEFAULT_CLASSICAL, PADDING_HU, ClassicalParams
from ..io.volumes import clip_air
from .envelope import DEFAULT_ENVELOPE
from .morphology import (
    IN_PLANE_SQUARE, SLAB, bounding_box, component_sizes, disk, fill_holes_per_slice, holes_cut_by_the_edge,
    in_plane_pixels, label_components, opened, overlap,
)
from .postprocess import fill_lung_holes, postprocess_in_box

logger = logging.getLogger(__name__)


def body_mask(hu: np.ndarray, params: ClassicalParams = DEFAULT_CLASSICAL, step: int | None = None) -> np.ndarray:
    """The patient's body, lungs included (holes filled slice by slice).

    The body is found on every ``step``-th row and column and scaled back up:
    it only needs to bound the lungs, which never reach the skin, and this
    makes it ``step``² times cheaper.

    Args:
        hu: CT in HU, (z, y, x).
        params: ``body_threshold_hu`` is used.
        step: in-plane subsampling; default 2 for slices of 512 pixels and more,
            1 (full resolution) below 512.

    Returns:
        Boolean mask of the largest 3D component of tissue, with its holes filled; never the padding
        outside a field of view (below ``PADDING_HU``).
    """
    if step is None:
        step = max(1, min(hu.shape[1], hu.shape[2]) // 256)
    small = hu[:, ::step, ::step]
    tissue = small > params.body_threshold_hu
    # Remove thin structures (table, blanket, cables) before picking the body.
    tissue = opened(tissue, IN_PLANE_SQUARE)
    labels, n = label_components(tissue)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    largest = int(np.argmax(component_sizes(labels, n))) + 1
    tissue = labels == largest
    # A lung the field of view cuts stays inside; scanner padding (far below air) parts it from the air around.
    padding = small < PADDING_HU
    body = holes_cut_by_the_edge(tissue, fill_holes_per_slice(tissue), walls=padding)
    if step > 1:
        body = body.repeat(step, axis=1).repeat(step, axis=2)[:, : hu.shape[1], : hu.shape[2]]
        if padding.any():  # the coarse grid's staircase along a round field of view's edge: no tissue
            body &= hu >= PADDING_HU
    return body


def find_trachea_seed(
    air: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[int, np.ndarray] | None:
    """Find the trachea in the upper slices: a small round air region near the body's midline.

    Args:
        air: boolean mask of air inside the body (HU below the airway threshold).
        body: the body mask.
        spacing: voxel size (x, y, z) in mm.

    Returns:
        The slice index and a 2D mask of the trachea there, or None if not found.
    """
    pixel_mm2 = spacing[0] * spacing[1]
    body_slices = np.flatnonzero(body.any(axis=(1, 2)))
    if body_slices.size == 0:
        return None
    # Look from the top (highest z is superior in LPS) through the upper half.
    top, bottom = int(body_slices[-1]), int(body_slices[0])
    for z in range(top, top - (top - bottom) // 2 - 1, -1):
        if not air[z].any():
            continue
        xs_body = np.flatnonzero(body[z].any(axis=0))
        centre, width = (xs_body[0] + xs_body[-1]) / 2.0, xs_body[-1] - xs_body[0] + 1
        labels, n = label_components(air[z])
        best, best_distance = None, None
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            region = labels[found] == index
            area_mm2 = region.sum() * pixel_mm2
            if not 40.0 <= area_mm2 <= 700.0:
                continue
            height_mm = (found[0].stop - found[0].start) * spacing[1]
            width_mm = (found[1].stop - found[1].start) * spacing[0]
            if max(height_mm, width_mm) > 2.5 * min(height_mm, width_mm):
                continue  # not round: a slit of air, not the trachea
            cx = (found[1].start + found[1].stop) / 2.0
            distance = abs(cx - centre)
            if distance > 0.15 * width:
                continue
            if best_distance is None or distance < best_distance:
                best, best_distance = labels == index, distance
        if best is not None:
            return z, best
    return None


def airway_mask(
    hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float], params: ClassicalParams = DEFAULT_CLASSICAL
) -> np.ndarray:
    """The trachea and main bronchi, grown from the trachea seed.

    Thresholds in ``params.airway_threshold_hu`` are tried from the highest
    down; the first whose grown region stays under ``params.max_airway_ml`` wins
    (a larger region has leaked into the lung parenchyma).

    Returns:
        Boolean mask, empty when no trachea was found or every threshold leaked.
    """
    from skimage.morphology import flood

    voxel_ml = float(np.prod(spacing)) / 1000.0
    for threshold in sorted(params.airway_threshold_hu, reverse=True):
        air = (hu < threshold) & body
        seed = find_trachea_seed(air, body, spacing)
        if seed is None:
            continue
        z, seed2d = seed
        # The air component that holds the seed (6-connected, as labelling every air component would give), flooded
        # from one of its pixels (the seed is one 4-connected piece of its slice): no label image of all the body's
        # air (int32 over a long scan: 1.3 GB), and a queue through the airways alone, not a propagation over the
        # whole volume until nothing changes (lidc-idri-0001: 0.16 s against 1.0 s, the same voxels).
        ys, xs = np.nonzero(seed2d)
        grown = flood(air, (z, int(ys[0]), int(xs[0])), connectivity=1)
        del air
        volume_ml = grown.sum() * voxel_ml
        if volume_ml <= params.max_airway_ml:
            logger.debug("airway grown at %.0f HU: %.1f mL", threshold, volume_ml)
            radius = params.airway_dilation_mm
            iterations = max(int(round(radius / min(spacing))), 1)
            box = bounding_box(grown, margin=iterations + 1)  # the airways' box: a small part of a long scan
            airways = np.zeros(grown.shape, dtype=bool)
            airways[box] = ndimage.binary_dilation(grown[box], iterations=iterations) & body[box]
            return airways
        logger.debug("airway at %.0f HU leaked (%.0f mL)", threshold, volume_ml)
    logger.info("no trachea found or every airway threshold leaked; airways are not removed")
    return np.zeros(hu.shape, dtype=bool)


#: :func:`airways_in_box` grows the airways on slices this far apart at most (mm): the trachea and main bronchi
#: run across the slices, and their walls, through which a growth leaks, are judged in-plane. On a scan of
#: thin slices it is a fraction of the time and memory (1200 slices of 0.27 mm: every seventh slice).
AIRWAY_SLICE_MM = 2.0


def airways_in_box(
    hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float], params: ClassicalParams
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The trachea and main bronchi (:func:`airway_mask`) as their box and the mask inside it, or None when none
    were found: a small part of the scan, kept while a generator's mask is post-processed. On slices thinner
    than half of AIRWAY_SLICE_MM they are grown on every n-th slice and each found slice stands for the n
    slices from it up."""
    step = max(1, int(AIRWAY_SLICE_MM / spacing[2] + 1e-9))
    airways = airway_mask(hu[::step], body[::step], (spacing[0], spacing[1], spacing[2] * step), params)
    if not airways.any():
        return None
    zs, ys, xs = bounding_box(airways)
    crop = airways[zs, ys, xs]
    if step == 1:
        return (zs, ys, xs), crop.copy()
    crop = np.repeat(crop, step, axis=0)
    fine = slice(zs.start * step, min(zs.start * step + crop.shape[0], hu.shape[0]))
    return (fine, ys, xs), crop[: fine.stop - fine.start]


def airways_on_grid(airways: tuple[tuple[slice, ...], np.ndarray], shape: tuple[int, ...], step: int) -> np.ndarray:
    """Airways found on a scan's grid (their box and the mask in it, :func:`airways_in_box`) as a mask of the
    coarser grid of every ``step`` th pixel in-plane (``shape``: that grid's)."""
    (zs, ys, xs), crop = airways
    y0, x0 = -(-ys.start // step), -(-xs.start // step)  # the first coarse pixel inside the box
    part = crop[:, y0 * step - ys.start :: step, x0 * step - xs.start :: step]
    out = np.zeros(shape, dtype=bool)
    out[zs, y0 : y0 + part.shape[1], x0 : x0 + part.shape[2]] = part
    return out


def airway_walls(airways: tuple[tuple[slice, ...], np.ndarray], shape: tuple[int, ...], step: int,
                 spacing: tuple[float, float, float], wall_mm: float) -> np.ndarray:
    """The airways (:func:`airways_in_box`) on the grid of every ``step`` th pixel in-plane (``shape`` and
    ``spacing``: that grid's) grown by ``wall_mm`` in-plane: the airways with their walls."""
    walls = airways_on_grid(airways, shape, step)
    radius = max(1, in_plane_pixels(wall_mm, spacing))
    # Grown within the airways' box and a margin of the wall's width: a small part of each slice.
    zs, ys, xs = airways[0]
    rows = slice(max(ys.start // step - radius, 0), ys.stop // step + radius + 1)
    cols = slice(max(xs.start // step - radius, 0), xs.stop // step + radius + 1)
    for z in range(zs.start, zs.stop):
        walls[z, rows, cols] = ndimage.binary_dilation(walls[z, rows, cols], structure=disk(radius))
    return walls


def remove_airways(
    labels: np.ndarray, airways: tuple[tuple[slice, ...], np.ndarray], spacing: tuple[float, float, float],
    refill: bool = True,
) -> None:
    """Take the trachea and main bronchi (their box and the mask in it, :func:`airways_in_box`) out of a
    generator's ``labels`` (one label per lung) in place. With ``refill``, each lung gets back what of them its
    hole filling takes (:func:`LungGANLib.segment.postprocess.fill_lung_holes`, as the classical method's): the
    grown airways reach into the lung along the lobar and segmental bronchi, which a clinician outlines with the
    lung (on lidc-idri-0002, 18 mL of them lie in the reference); the trachea and the main bronchi lie in the
    mediastinum, never inside one lung, and a wide bronchus that opens downwards out of the lung stays out, as a
    dome does."""
    (zs, ys, xs), crop = airways
    labels[zs, ys, xs][crop] = 0
    if not refill:
        return
    below = max(zs.start - 1, 0)  # the slice under the airways: where a hole opens downwards
    part = labels[below : zs.stop]
    for value in np.unique(part[zs.start - below :, ys, xs])[1:]:  # the lungs in the airways' box
        lung = part == value
        _, rows, cols = bounding_box(lung)
        lung = lung[:, rows, cols]
        back = fill_lung_holes(lung, spacing) & ~lung
        back = back[zs.start - below :]  # on the airways' slices, in the lung's rows and columns
        # Where the lung's box and the airways' box meet, in the airways' voxels no lung has: what goes back.
        meet = overlap((rows, cols), (ys, xs))
        if meet is None:
            continue
        in_lung, in_airways = meet
        given = back[(slice(None), *in_lung)] & crop[(slice(None), *in_airways)]
        target = labels[zs, ys, xs][(slice(None), *in_airways)]  # a view into labels
        target[given & (target == 0)] = value


def lung_candidates(
    hu: np.ndarray, spacing: tuple[float, float, float], params: ClassicalParams = DEFAULT_CLASSICAL,
    found: dict | None = None, airways: np.ndarray | None = None, body: np.ndarray | None = None,
) -> np.ndarray:
    """Low-density voxels inside the body, airways removed (steps 1-3 above); ``found`` (when given) gets
    ``airways``: the airways removed, as their box and the mask in it (None when none were found).
    ``airways``: the airways already found on this grid (not grown again); ``body``: the body already found
    on this grid (:func:`body_mask`; not found again)."""
    thresholds = (params.lung_threshold_hu, params.body_threshold_hu, *params.airway_threshold_hu)
    if min(thresholds) <= AIR_HU:
        hu = clip_air(hu)  # else scanner padding below air compares with every threshold as air does: no copy
    body = body_mask(hu, params) if body is None else body
    airways = airway_mask(hu, body, spacing, params) if airways is None else airways
    candidates = hu < params.lung_threshold_hu
    candidates &= body
    del body
    candidates &= ~airways
    if found is not None:
        box = bounding_box(airways) if airways.any() else None
        found["airways"] = None if box is None else (box, airways[box].copy())
    del airways
    if IN_PLANE_SQUARE.shape[-1] * max(spacing[0], spacing[1]) > params.speck_mm:
        return candidates  # coarse pixels: the opening's width would take real lung
    # Drop specks so the component analysis sees clean shapes; in-plane, so slab by slab in the same memory.
    for start in range(0, candidates.shape[0], SLAB):
        slab = candidates[start : start + SLAB]
        slab[...] = opened(slab, IN_PLANE_SQUARE)
    return candidates


def segment_classical(
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    params: ClassicalParams = DEFAULT_CLASSICAL,
    single_label: bool = False,
    fill_holes: bool = True,
    envelope: bool = True,
    found: dict | None = None,
    airways: np.ndarray | None = None,
    body: np.ndarray | None = None,
) -> np.ndarray:
    """Segment the lungs with thresholds and morphology.

    Args:
        hu: CT in HU, (z, y, x), canonical LPS.
        spacing: voxel size (x, y, z) in mm.
        params: the method's thresholds.
        single_label: one label for both lungs.
        fill_holes: fill holes slice by slice.
        envelope: take back nodules in dents of the lung's outline (:mod:`LungGANLib.segment.envelope`).
        found: when given, gets ``airways``: the trachea and main bronchi left out (box and mask, or None).
        airways: the trachea and main bronchi already found on this grid (a mask): not grown again.
        body: the patient's body already found on this grid (:func:`body_mask`): not found again.

    Returns:
        uint8 labels (z, y, x): 1 right lung, 2 left lung.

    Example:
        >>> from LungGANLib.io import load_ct
        >>> ct = load_ct("../shared/data/ct/elastix-00.nii.gz")
        >>> labels = segment_classical(ct.array, ct.spacing)
        >>> sorted(set(labels.ravel().tolist()))
        [0, 1, 2]
    """
    only = [lung_candidates(hu, spacing, params, found, airways, body)]  # handed over: freed once cropped to their box
    return postprocess_in_box(
        only, hu, spacing, params, single_label=single_label, fill_holes=fill_holes,
        envelope=DEFAULT_ENVELOPE if envelope else None,
    )
