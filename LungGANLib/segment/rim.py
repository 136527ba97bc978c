"""The generator's lung outline, taken back to the lung's edge where it runs one voxel into the pleura.

Fine-tuned to keep nodules and masses that touch the chest wall and the mediastinum, the
generator also takes in the outermost dense voxel along much of the lung's outline: the
pleura, or a partial-volume voxel of it, beside aerated lung. A reader in a lung window
sees that voxel as chest wall. :func:`trim_dense_rim` removes it where it is a rim one voxel
thick: a boundary voxel denser than lung beside plainly aerated lung. Anything dense that
goes deeper into the lung (a nodule, a mass, a vessel cut by the outline, dense dependent
lung) has a dense neighbour inside and is kept whole. Where ground glass meets the pleura
(a ground-glass nodule, hazy dependent lung) the outline's last voxel is partial volume of
the lesion and the wall; it stays, as a reader outlining the lesion draws it.
"""

from __future__ import annotations

import numpy as np

from ..config import DEFAULT_CLASSICAL, PADDING_HU
from .morphology import IN_PLANE_SQUARE, SLAB, bounding_box, disk, in_plane, line_step, overlap

#: Lung at or below this is plainly aerated. Above it, up to the lung threshold, is ground glass: the
#: "high-attenuation area" range of quantitative lung CT, -600 to -250 HU (Podolanczuk et al., Eur Respir J
#: 2016;48:1442-52, the MESA study). Normal parenchyma is about -850.
AERATED_HU = -600.0

#: In-plane 4-neighbourhood: the rim is judged slice by slice, like a reader scrolling axial slices.
_CROSS = disk(1)[None]


def trim_dense_rim(
    labels: np.ndarray,
    hu: np.ndarray,
    dense_hu: float = DEFAULT_CLASSICAL.lung_threshold_hu,
    aerated_hu: float = AERATED_HU,
) -> int:
    """Remove, in place, the lungs' boundary voxels that are a one-voxel dense rim on aerated lung.

    A voxel goes when it is on the lungs' in-plane boundary (4-neighbours), denser than ``dense_hu``,
    next to a plainly aerated lung voxel, at or below ``aerated_hu`` (8-neighbours: the rim's corners
    too), and next to no dense voxel of the lungs' interior (4-neighbours). Applying it twice removes
    nothing more.

    Args:
        labels: lung labels (z, y, x), 0 outside; changed in place.
        hu: the CT in HU, same shape.
        dense_hu: denser than this is not aerated lung (the classical method's lung threshold).
        aerated_hu: at or below this the lung is plainly aerated; between the two is ground glass,
            beside which the rim stays. Never above ``dense_hu``.

    Returns:
        How many voxels were removed.
    """
    if not labels.any():
        return 0
    box = bounding_box(labels > 0, margin=1)  # a view: what changes in it changes in labels
    labels, hu = labels[box], hu[box]
    aerated_hu = min(aerated_hu, dense_hu)
    removed = 0
    for start in range(0, labels.shape[0], SLAB):
        part = labels[start : start + SLAB]
        lung, slab_hu = part > 0, hu[start : start + SLAB]
        dense = slab_hu > dense_hu
        inner = in_plane(lung, _CROSS, dilate=False)
        rim = lung & ~inner & dense
        if not rim.any():
            continue
        aerated = lung & (slab_hu <= aerated_hu)
        rim &= in_plane(aerated, IN_PLANE_SQUARE, dilate=True)  # beside plainly aerated lung
        rim &= ~in_plane(inner & dense, _CROSS, dilate=True)  # not the edge of something dense and deep
        part[rim] = 0
        removed += int(rim.sum())
    return removed


#: How many voxels, at most, the outline moves out into the air beside it (see :func:`grow_outline`).
OUTLINE_STEPS = 4


def grow_outline(
    labels: np.ndarray,
    hu: np.ndarray,
    below_hu: float = DEFAULT_CLASSICAL.lung_threshold_hu,
    steps: int = OUTLINE_STEPS,
) -> int:
    """Move, in place, each lung's in-plane outline out through the voxels beside it that the lung threshold
    calls lung, up to ``steps`` voxels.

    A generator's outline runs on its own threshold of a resized slice, inside the edge a reader draws: often
    by one partial-volume voxel, by several where the lung is darker than any the generator was trained on
    (emphysema on a coarse scan). A voxel of the ring just outside the lungs (4-neighbours, slice by slice)
    below ``below_hu`` joins the lung beside it; the new ring is judged again, up to ``steps`` times. The
    default is the lung threshold of the classical method (-320 HU, a voxel about 40 % air or more), the one
    above which :func:`trim_dense_rim` takes a rim voxel off: the two meet at the same edge, the one the
    classical method and the threshold references draw. The growth stops at the pleura, the mediastinum and
    the bronchial walls; the bound keeps what lies behind a gap in a wall (the lumen of a bronchus beside the
    lung) to a few voxels.

    Args:
        labels: lung labels (z, y, x), 0 outside; changed in place.
        hu: the CT in HU, same shape.
        below_hu: a ring voxel below this joins the lung.
        steps: at most this many rings (1: the one voxel around the outline).

    Returns:
        How many voxels were added.
    """
    if not labels.any() or steps < 1:
        return 0
    box = bounding_box(labels > 0, margin=steps)  # a view: what changes in it changes in labels
    labels, hu = labels[box], hu[box]
    added = 0
    for start in range(0, labels.shape[0], SLAB):
        part = labels[start : start + SLAB]
        airy = _aerated(hu[start : start + SLAB], below_hu)
        for _ in range(steps):
            ring = in_plane(part > 0, _CROSS, dilate=True) & (part == 0) & airy
            if not ring.any():
                break
            part[ring] = _highest_beside(part)[ring]  # the label beside it (the higher where both)
            added += int(ring.sum())
    return added


def _aerated(hu: np.ndarray, below_hu: float) -> np.ndarray:
    """Where a growing lung may go: below ``below_hu``, and not a scanner's padding outside its field of view (below
    ``PADDING_HU``), which is no tissue (a lung the field of view cuts ends at its edge)."""
    return (hu < below_hu) & (hu >= PADDING_HU)


def _highest_beside(labels: np.ndarray) -> np.ndarray:
    """Each voxel's highest label among itself and its four in-plane neighbours: ``ndimage.grey_dilation`` with
    the in-plane cross (beyond the edge it reflects, which is the voxel itself)."""
    return np.maximum(line_step(labels, 1, dilate=True), line_step(labels, 2, dilate=True))


#: How far (mm) the lungs may go on below the generator's mask (see :func:`grow_bases`).
BASE_REACH_MM = 10.0


def grow_bases(
    labels: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    below_hu: float = DEFAULT_CLASSICAL.lung_threshold_hu,
    reach_mm: float = BASE_REACH_MM,
    airways: tuple[tuple[slice, ...], np.ndarray] | None = None,
) -> int:
    """Carry, in place, each lung down through the voxels directly beneath it below ``below_hu``, up to
    ``reach_mm`` below the lung the mask already has in that column.

    The bases of the lungs taper into thin crescents (the costophrenic recesses, the posterior base over the
    dome) that a generator judging one slice at a time leaves out: on a 5 mm scan it stopped three slices above
    the reference's lowest. A voxel joins the lung above it when it is aerated and directly beneath a lung voxel,
    slice by slice downwards, up to ``reach_mm``: beyond that, a column of air under the lung is a tube (a
    bronchus running down beside the hilum), not the lung's base. Nothing grows in-plane; the trachea and main
    bronchi (``airways``: their box and the mask in it) are never entered.

    Args:
        labels: lung labels (z, y, x), z up, 0 outside; changed in place.
        hu: the CT in HU, same shape.
        spacing: voxel size (x, y, z) mm.
        below_hu: a voxel below this is aerated enough to be lung.
        reach_mm: how far below the mask's own lung a column may go on (whole slices).
        airways: the trachea and main bronchi, as their box and the mask in it, or None.

    Returns:
        How many voxels were added.
    """
    reach = int(reach_mm / spacing[2] + 1e-9)
    if reach < 1 or not labels.any():
        return 0
    box = bounding_box(labels > 0)
    bottom = max(box[0].start - reach, 0)
    part = labels[bottom : box[0].stop, box[1], box[2]]  # a view: what changes in it changes in labels
    hu_part = hu[bottom : box[0].stop, box[1], box[2]]
    depth = np.zeros(part.shape[1:], dtype=np.int16)  # slices below the mask's own lung, per column
    added = 0
    for k in range(part.shape[0] - 2, -1, -1):
        above = part[k + 1]
        seed = (above > 0) & (part[k] == 0) & _aerated(hu_part[k], below_hu) & (depth < reach)
        if airways is not None:
            _clear_airways(seed, airways, bottom + k, box[1], box[2])
        depth = np.where(part[k] > 0, 0, np.where(seed, depth + 1, reach)).astype(np.int16)
        part[k][seed] = above[seed]
        added += int(np.count_nonzero(seed))
    return added


def _clear_airways(seed: np.ndarray, airways, z: int, rows: slice, cols: slice) -> None:
    """Clear, in place, the airways' voxels of slice ``z`` from ``seed``, that slice's box (``rows``, ``cols``) of
    the full grid; ``airways``: their box on the full grid and the mask in it."""
    (zs, ys, xs), crop = airways
    meet = overlap((rows, cols), (ys, xs)) if zs.start <= z < zs.stop else None
    if meet is not None:
        in_seed, in_airways = meet
        seed[in_seed] &= ~crop[z - zs.start][in_airways]
