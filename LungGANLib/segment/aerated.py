"""Aerated lung the generator's mask left out beside it, joined to the lung it touches.

On a chest CT, plainly aerated tissue (below ``JOIN_BELOW_HU``) that touches a lung and is not an airway is that
lung: parenchyma with its vessels, about -850 HU, -920 in emphysema. The generator, shown slices unlike those it was
trained on, can stop short of it. cip-ct-64 (64 pixels of 4.2 mm) with its field of view cut 5 mm outside the lungs
(``benchmarks/shifts.py``, "field of view at the ribs") lost 18, 9, 6 and 2 mL of its left and right lungs this way
(median -911 to -916 HU, every voxel in the reference): more than the outline's growth reaches (4 voxels,
:func:`~LungGANLib.segment.rim.grow_outline`), and less than the 3 % of the lung at which the classical method's lung
joins (:mod:`~LungGANLib.segment.fallback`). On the held-out and external scans as they are, the fold table's rows
with and without it agree to the fourth decimal (``benchmarks/folds.py``): after the outline's growth, the voxels
beside the mask are denser than lung wherever the growth did not stop short.

A piece joins when it touches the lung (a face), holds ``JOIN_MIN_ML`` or more, lies inside the lungs' box grown by
``JOIN_MARGIN_MM`` without reaching its faces (the air around the body, bowel gas and the trachea above the lungs
reach them), and its median is ``AIR_HU`` or more: air with no lung in it (a pneumothorax, the oesophagus, bowel gas,
the air around the body) is darker, about -1000 HU, and a clinician leaves a pneumothorax out of the lung. The
trachea and main bronchi the mask leaves out are never candidates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .morphology import bounding_box, label_components, line_step, overlap, unpooled
from .review import review_step

#: Plainly aerated lung: at or below this (HU); partial volume along the outline and dense lung are left to the
#: outline's growth.
JOIN_BELOW_HU = -800.0
#: A piece whose median lies below this (HU) is air with no lung in it.
AIR_HU = -960.0
#: Smaller pieces (mL) are the outline's own business.
JOIN_MIN_ML = 1.0
#: How far beyond the lungs' box (mm) a piece may reach.
JOIN_MARGIN_MM = 20.0


def join_aerated(
    labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], airways=None,
) -> float:
    """Join, in place, the pieces of aerated lung ``labels`` left out beside a lung (see the module) to the lung
    they touch most. ``spacing``: (x, y, z) mm; ``airways``: the trachea and main bronchi left out of the mask, as
    their box and mask (:func:`~LungGANLib.segment.classical.airways_in_box`), or None. Returns the mL joined.

    The pieces are told apart every few pixels in-plane, as the review looks (pixels up to 1.5 mm,
    :func:`~LungGANLib.segment.review.review_step`): a piece of a millilitre is some 10 mm across, and labelling a
    0.7 mm scan's lungs and their surroundings whole took 2.5 s. What joins is every candidate voxel under a chosen
    piece's pixels."""
    lungs = labels > 0
    if not lungs.any():
        return 0.0
    margin = [int(np.ceil(JOIN_MARGIN_MM / s)) for s in (spacing[2], spacing[1], spacing[0])]
    box = bounding_box(lungs, margin)
    part, part_hu, lungs = labels[box], hu[box], lungs[box]  # views: what changes in part changes in labels
    candidates = (part_hu <= JOIN_BELOW_HU) & ~lungs
    met = None if airways is None else overlap(box, airways[0])
    if met is not None:
        candidates[met[0]] &= ~airways[1][met[1]]
    step = review_step(spacing)
    grid = (slice(None), slice(None, None, step), slice(None, None, step))
    coarse, coarse_labels = candidates[grid], part[grid]
    seeds = _beside(coarse, coarse_labels > 0)
    if not seeds.any():
        return 0.0
    pieces, _ = label_components(coarse)
    boxes = ndimage.find_objects(pieces)
    pixel_ml = float(np.prod(spacing)) * step * step / 1000.0
    lung_of = np.zeros(len(boxes) + 1, dtype=labels.dtype)
    for piece in np.unique(pieces[seeds]):
        lung_of[piece] = _lung_of(coarse_labels, part_hu[grid], pieces, int(piece), boxes[piece - 1], pixel_ml)
    if not lung_of.any():
        return 0.0
    joined = unpooled(lung_of[pieces], step, part.shape)
    joined[~candidates] = 0
    part[joined > 0] = joined[joined > 0]
    return float(np.count_nonzero(joined)) * float(np.prod(spacing)) / 1000.0


def _lung_of(labels: np.ndarray, hu: np.ndarray, pieces: np.ndarray, piece: int, where: tuple[slice, ...],
             pixel_ml: float) -> int:
    """The lung ``piece`` (its box ``where``) joins, the one it touches most; 0 where it is no aerated lung (see
    the module)."""
    if any(s.start == 0 or s.stop == n for s, n in zip(where, pieces.shape)):
        return 0  # it reaches beyond the lungs' surroundings
    inside = pieces[where] == piece
    if np.count_nonzero(inside) * pixel_ml < JOIN_MIN_ML or float(np.median(hu[where][inside])) < AIR_HU:
        return 0
    grown = tuple(slice(s.start - 1, s.stop + 1) for s in where)  # within the box: it reaches none of its faces
    around = labels[grown][ndimage.binary_dilation(np.pad(inside, 1))]
    return int(np.bincount(around[around > 0]).argmax())


def _beside(candidates: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The candidates that share a face with the lungs (the lungs grown by a 3-pixel line along each axis)."""
    return candidates & (line_step(lungs, 0, True) | line_step(lungs, 1, True) | line_step(lungs, 2, True))
