"""Where lung never is: mask voxels no lung outline can hold, found from the CT alone, with no reference.

A lung mask from any method can be checked against three facts of anatomy that hold on every
chest CT, whatever the scanner or the disease:

- **Outside the rib cage.** The lungs lie inside the ribs. The cage is the convex hull, slice by
  slice, of the bone (at least ``bone_hu``) that lies within ``cage_reach_mm`` of aerated lung:
  ribs, vertebrae, sternum, and the scapula where it lies on the ribs; an arm is further away and
  stays out. Ribs of the slices ``cage_slab_mm`` above and below stand in for the intercostal gaps.
  A slice is judged only when its hull holds ``min_cage_cover`` of the slice's aerated lung (a
  scan cut off above the ribs, or bone too faint to see, leaves its slices unjudged). Mask beyond
  ``cage_margin_mm`` of the hull is chest wall or axilla.
- **Below the diaphragm.** The top of the liver's or the spleen's dome rises into the lung base;
  on an axial slice it is an island of soft tissue that a generator may take for a mass. In 3D it
  rests on solid tissue with no aerated lung under it, and the lung's posterior recess runs
  behind it. Dense lung at the base (atelectasis, consolidation) and pleural fluid lie in the
  dependent part of the chest, against the posterior chest wall, with no lung behind them, and
  are not judged here.
- **The posterior mediastinum.** Just in front of the vertebral bodies, and beside them, lie the
  oesophagus, the azygos vein and the descending aorta. Lung reaches this corridor only as thin
  aerated recesses (the azygo-oesophageal recess); soft tissue there, wider than a vessel, is
  mediastinum. The hila and the heart lie further forward, outside the corridor, so a hilar mass
  is not judged by it.

:func:`never_lung` returns the three as masks inside the lungs' bounding box; the post-processing
removes them (:func:`remove_never_lung`), and the report and the validation give their volumes.
Arrays are (z, y, x) in LPS (z up, y posterior, x to the patient's left); spacings (x, y, z) mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import DEFAULT_CLASSICAL, DOME_MIN_AREA_MM2
from .morphology import (
    IN_PLANE_SQUARE, SLAB, bounding_box, convex_hull_mask, count_values, disk, in_plane, label_components, labels_in,
    opened, pooled, unpooled,
)
from .rim import AERATED_HU


@dataclass(frozen=True)
class NeverLungParams:
    """Settings of :func:`never_lung`; every length in mm, every density in HU.

    Attributes:
        bone_hu: bone is at least this dense (cortical and trabecular bone; ribs on thick slices too).
        cage_reach_mm: bone this near aerated lung belongs to the cage (ribs, spine, sternum).
        cage_slab_mm: bone this far above or below a slice counts for it (intercostal gaps).
        cage_margin_mm: mask this far beyond the cage's hull is still allowed (the hull's chords
            cut the curve of the costal cartilages, which may not be bone-dense).
        min_cage_cover: a slice is judged only when its hull holds this share of its aerated lung.
        work_mm: the cage is found on a grid of about this pixel size (bone is max-pooled onto it).
        dense_hu: denser than this is soft tissue, not aerated lung (the classical lung threshold).
        aerated_hu: at or below this a voxel is plainly aerated lung.
        under_mm: how far below an island the diaphragm test looks for lung or solid tissue.
        behind_mm: how far behind (posterior to) an island the lung's recess is looked for.
        max_dome_mm: the top of a dome held in the lung rises at most this far (craniocaudally); a taller
            island is a mass.
        vertebra_mm: half-width of the band around the cage's midline searched for the vertebral body.
        vertebral_body_mm: depth of the vertebral body behind its anterior edge, whose width makes the corridor.
        corridor_mm: the corridor reaches this far beyond the vertebral body's sides and behind its front.
        prevertebral_mm: the corridor reaches this far in front of the vertebral body.
    """

    bone_hu: float = 200.0
    cage_reach_mm: float = 20.0
    cage_slab_mm: float = 10.0
    cage_margin_mm: float = 5.0
    min_cage_cover: float = 0.95
    work_mm: float = 2.5
    dense_hu: float = DEFAULT_CLASSICAL.lung_threshold_hu
    aerated_hu: float = AERATED_HU
    under_mm: float = 10.0
    behind_mm: float = 40.0
    max_dome_mm: float = 40.0
    vertebra_mm: float = 25.0
    vertebral_body_mm: float = 20.0
    corridor_mm: float = 10.0
    prevertebral_mm: float = 25.0


DEFAULT_NEVER_LUNG = NeverLungParams()

#: The kinds of never-lung voxels, in the order they are reported.
KINDS = ("outside_cage", "below_diaphragm", "mediastinum")

#: Plain words for each kind, for messages and reports.
KIND_WORDS = {
    "outside_cage": "outside the rib cage",
    "below_diaphragm": "below the diaphragm",
    "mediastinum": "in the posterior mediastinum",
}


@dataclass
class NeverLung:
    """Mask voxels where lung never is, by kind, inside the lungs' bounding box.

    Attributes:
        box: the box (slices into the whole volume) the masks refer to.
        masks: ``{kind: boolean mask of the box}`` for each of :data:`KINDS`.
        judged: per slice of the box, whether the rib cage was found there.
    """

    box: tuple[slice, ...]
    masks: dict[str, np.ndarray]
    judged: np.ndarray

    def union(self) -> np.ndarray:
        """Every never-lung voxel of the box, whatever its kind."""
        out = np.zeros(self.judged.shape + self.masks[KINDS[0]].shape[1:], dtype=bool)
        for mask in self.masks.values():
            out |= mask
        return out

    def volumes_ml(self, voxel_ml: float) -> dict[str, float]:
        """Volume of each kind and of all together (``total``), mL."""
        out = {kind: float(self.masks[kind].sum() * voxel_ml) for kind in KINDS}
        out["total"] = float(self.union().sum() * voxel_ml)
        return out


@dataclass
class _Grid:
    """The lungs' box on the work grid (about ``work_mm`` pixels): what every check reads.

    Attributes:
        step: pooling factor from the CT's grid.
        spacing: the work grid's voxel size (x, y, z) mm.
        lungs: work pixels at least half lung.
        dense_lung: work pixels at least half lung denser than ``dense_hu``.
        aerated: work pixels holding plainly aerated lung.
        bone: work pixels holding bone.
        solid: work pixels at least half soft tissue outside the lungs.
        islands: dense lung wider than a vessel: work pixels at least half dense lung, opened in-plane.
    """

    step: int
    spacing: tuple[float, float, float]
    lungs: np.ndarray
    dense_lung: np.ndarray
    aerated: np.ndarray
    bone: np.ndarray
    solid: np.ndarray
    islands: np.ndarray

    @classmethod
    def of(cls, lungs: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], params: NeverLungParams) -> _Grid:
        step = max(1, int(round(params.work_mm / min(spacing[0], spacing[1]))))
        parts: dict[str, list[np.ndarray]] = {"lungs": [], "dense_lung": [], "aerated": [], "bone": [], "solid": []}
        # Slab by slab (each grid is pooled slice by slice): a long scan's full-size temporaries are never all held.
        for start in range(0, lungs.shape[0], SLAB):
            part, hu_part = lungs[start : start + SLAB], hu[start : start + SLAB]
            dense = hu_part > params.dense_hu
            parts["lungs"].append(pooled(part, step, 0.5))
            parts["dense_lung"].append(pooled(part & dense, step, 0.5))
            parts["aerated"].append(pooled(part & (hu_part <= params.aerated_hu), step))
            parts["bone"].append(pooled(hu_part >= params.bone_hu, step))
            parts["solid"].append(pooled(dense & ~part, step, 0.5))
        grids = {name: np.concatenate(arrays) for name, arrays in parts.items()}
        # The opening's cross is one work pixel: what is thinner than two of them (a vessel) falls away.
        islands = opened(grids["dense_lung"], disk(1)[None])
        return cls(step=step, spacing=(spacing[0] * step, spacing[1] * step, spacing[2]), islands=islands, **grids)


def rib_cage(grid: _Grid, params: NeverLungParams = DEFAULT_NEVER_LUNG) -> tuple[np.ndarray, np.ndarray]:
    """The rib cage's convex hull, slice by slice, on the work grid.

    Returns:
        (hull, judged): boolean (z, rows, cols), the hull (True on unjudged slices); boolean (z,),
        the slices whose cage was found.
    """
    judged = np.zeros(grid.lungs.shape[0], dtype=bool)
    hull = np.ones(grid.lungs.shape, dtype=bool)
    if not grid.aerated.any() or not grid.bone.any():
        return hull, judged
    pixel = (grid.spacing[2], grid.spacing[1], grid.spacing[0])
    near = grid.bone & (ndimage.distance_transform_edt(~grid.aerated, sampling=pixel) <= params.cage_reach_mm)
    reach = int(round(params.cage_slab_mm / grid.spacing[2]))
    if reach:
        near = ndimage.maximum_filter1d(near.view(np.uint8), size=2 * reach + 1, axis=0).view(bool)
    for z in np.flatnonzero(grid.aerated.any(axis=(1, 2))):
        inside = convex_hull_mask(near[z])
        lung = grid.aerated[z]
        if inside is None or np.count_nonzero(lung & inside) < params.min_cage_cover * np.count_nonzero(lung):
            continue
        hull[z] = inside
        judged[z] = True
    return hull, judged


def outside_cage(grid: _Grid, hull: np.ndarray, judged: np.ndarray, params: NeverLungParams = DEFAULT_NEVER_LUNG) -> np.ndarray:
    """Soft tissue of the lungs outside the cage's hull that reaches more than ``cage_margin_mm`` beyond it.

    A piece of the mask's soft tissue outside the hull goes whole when part of it lies beyond the
    margin. Lung beyond the hull that is not dense (aerated, or partial volume of lung and wall on a
    coarse grid) is taken as a hull that missed a rib, not as chest wall.
    """
    outside = grid.dense_lung & ~hull & judged[:, None, None]
    if not outside.any():
        return outside
    far = np.zeros(outside.shape, dtype=bool)
    pixel = (grid.spacing[1], grid.spacing[0])
    for z in np.flatnonzero(outside.any(axis=(1, 2))):
        far[z] = outside[z] & (ndimage.distance_transform_edt(~hull[z], sampling=pixel) > params.cage_margin_mm)
    pieces, _ = label_components(outside)
    return labels_in(pieces, np.unique(pieces[far]))  # label 0 never lies in ``far``: it is outside ``outside``


def below_diaphragm(grid: _Grid, params: NeverLungParams = DEFAULT_NEVER_LUNG) -> np.ndarray:
    """Islands of soft tissue in the lungs that are the top of a dome of the diaphragm (see the module), on the work grid.

    An island (a 3D group of ``grid.islands``) is a dome when it is no taller than ``max_dome_mm`` (a
    large mass on the diaphragm is taller) and its widest cross-section reaches ``DOME_MIN_AREA_MM2``; under its lowest slice, within ``under_mm``, lung of the mask (aerated or
    dense: a mass on dense dependent lung is no dome) lies under less than a quarter of its footprint,
    and soft tissue outside the lungs under at least three quarters of it on every slice; and on its
    widest slice aerated lung
    lies behind it (within ``behind_mm``, posteriorly) on at least half its width. An island cut by
    the scan's lowest slice is not judged.
    """
    under = max(1, int(np.ceil(params.under_mm / grid.spacing[2])))
    behind = max(1, int(round(params.behind_mm / grid.spacing[1])))
    pixel_mm2 = grid.spacing[0] * grid.spacing[1]
    out = np.zeros(grid.islands.shape, dtype=bool)
    groups, _ = label_components(grid.islands)
    for value, found in enumerate(ndimage.find_objects(groups), start=1):
        if found is None:
            continue
        group = groups[found] == value
        areas = group.sum(axis=(1, 2))
        if areas.max() * pixel_mm2 < DOME_MIN_AREA_MM2:
            continue
        held = np.flatnonzero(areas)
        if (held[-1] - held[0] + 1) * grid.spacing[2] > params.max_dome_mm:
            continue  # taller than a dome's top held in the lung: a mass
        lowest = found[0].start + int(held[0])
        if lowest - under < 0:
            continue  # the scan ends under it: nothing to judge by
        footprint = group.any(axis=0)
        below = (slice(lowest - under, lowest), found[1], found[2])
        if grid.lungs[below].any(axis=0)[footprint].mean() >= 0.25:
            continue  # lung goes on under it, aerated or dense: a mass in the lower lobe, not a dome
        if grid.solid[below].all(axis=0)[footprint].mean() < 0.75:
            continue  # not resting on solid tissue outside the lungs
        widest = int(np.argmax(areas))
        section = group[widest]
        columns = np.flatnonzero(section.any(axis=0))
        last_rows = found[1].start + section.shape[0] - 1 - np.argmax(section[::-1, columns], axis=0)
        z = found[0].start + widest
        behind_it = [grid.aerated[z, r + 1 : r + 1 + behind, found[2].start + c].any() for r, c in zip(last_rows, columns)]
        if np.mean(behind_it) < 0.5:
            continue  # against the posterior chest wall: dependent dense lung or fluid, not judged here
        out[found] |= group
    return out


def midline_mediastinum(
    grid: _Grid, hull: np.ndarray, judged: np.ndarray, params: NeverLungParams = DEFAULT_NEVER_LUNG
) -> np.ndarray:
    """Islands of soft tissue just in front of and beside the vertebral bodies (the oesophagus, the descending aorta), on the work grid.

    On each judged slice the vertebral body is the bone within ``vertebra_mm`` of the cage's
    midline (the centre of its hull), behind the hull's centre; its anterior edge is that bone's
    front row, and its width is that of the bone within ``vertebral_body_mm`` behind the edge. The
    corridor runs from ``prevertebral_mm`` in front of that edge to ``corridor_mm`` behind it, and
    ``corridor_mm`` beyond each side of the body: there lie the oesophagus, the azygos vein and the
    descending aorta; the hila and the heart lie further forward. An island's in-plane piece goes
    whole when at least half of it lies in the corridor: the part of a hilar mass that reaches into
    it does not make the mass mediastinum.
    """
    out = np.zeros(grid.islands.shape, dtype=bool)
    band = int(round(params.vertebra_mm / grid.spacing[0]))
    body_depth = max(1, int(round(params.vertebral_body_mm / grid.spacing[1])))
    side = int(round(params.corridor_mm / grid.spacing[0]))
    depth = int(round(params.corridor_mm / grid.spacing[1]))
    ahead = int(round(params.prevertebral_mm / grid.spacing[1]))
    for z in np.flatnonzero(judged & grid.islands.any(axis=(1, 2))):
        rows, cols = np.nonzero(hull[z])
        mid_y, mid_x = int(rows.mean()), int(cols.mean())
        x0, x1 = max(mid_x - band, 0), mid_x + band + 1
        bone = grid.bone[z, mid_y:, x0:x1]
        bone_rows = np.flatnonzero(bone.any(axis=1))
        if not bone_rows.size:
            continue
        front = mid_y + int(bone_rows[0])
        body_cols = np.flatnonzero(bone[bone_rows[0] : bone_rows[0] + body_depth].any(axis=0))
        left, right = max(x0 + int(body_cols[0]) - side, 0), x0 + int(body_cols[-1]) + 1 + side
        corridor = np.zeros(hull[z].shape, dtype=bool)
        corridor[max(front - ahead, 0) : front + depth, left:right] = True
        pieces, n = ndimage.label(grid.islands[z])
        inside = np.bincount(pieces[corridor], minlength=n + 1)
        whole = np.bincount(pieces.ravel(), minlength=n + 1)
        keep = np.flatnonzero(inside[1:] * 2 >= whole[1:]) + 1
        out[z] = labels_in(pieces, keep)
    return out


def never_lung(
    labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], params: NeverLungParams = DEFAULT_NEVER_LUNG
) -> NeverLung | None:
    """Find the voxels of a lung mask where lung never is (see the module), by kind.

    The checks run on a work grid of about ``work_mm`` pixels; what they find is put back on the
    CT's grid as the mask's voxels there that are denser than ``dense_hu``.

    Args:
        labels: lung labels or a binary mask (z, y, x), 0 outside the lungs.
        hu: the CT in HU, same shape.
        spacing: voxel size (x, y, z) mm.
        params: thresholds and lengths.

    Returns:
        The never-lung voxels inside the lungs' bounding box, or None for an empty mask.

    Example:
        >>> found = never_lung(labels, ct.array, ct.spacing)
        >>> found.volumes_ml(ct.voxel_volume_ml)["total"]
    """
    lungs_all = labels > 0
    if not lungs_all.any():
        return None
    reach = [int(np.ceil(params.cage_slab_mm / spacing[2])) + 1] + [
        int(np.ceil((params.cage_reach_mm + params.cage_margin_mm) / s)) + 1 for s in (spacing[1], spacing[0])
    ]
    box = bounding_box(lungs_all, margin=reach)
    lungs, hu = lungs_all[box], hu[box]
    del lungs_all
    grid = _Grid.of(lungs, hu, spacing, params)
    hull, judged = rib_cage(grid, params)
    found = {
        "outside_cage": outside_cage(grid, hull, judged, params),
        "below_diaphragm": below_diaphragm(grid, params),
        "mediastinum": midline_mediastinum(grid, hull, judged, params),
    }
    masks = {}
    for kind, small in found.items():
        masks[kind] = np.zeros(lungs.shape, dtype=bool)
        if small.any():
            masks[kind] = unpooled(small, grid.step, lungs.shape) & lungs & (hu > params.dense_hu)
    return NeverLung(box, masks, judged)


def remove_never_lung(
    labels: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], params: NeverLungParams = DEFAULT_NEVER_LUNG
) -> NeverLung | None:
    """The guard rail: remove, in place, the never-lung voxels of ``labels`` (:func:`never_lung`).

    The islands go with the dense voxels beside them that the opening had taken off (their
    rim of partial volume), as the dome rule does; and what the removal cuts off from the largest
    piece of its lung goes too.

    Returns:
        What was found and removed (None for an empty mask).
    """
    found = never_lung(labels, hu, spacing, params)
    if found is None:
        return None
    part, hu_part = labels[found.box], hu[found.box]
    gone = found.union()
    if gone.any():
        rim = in_plane(gone, IN_PLANE_SQUARE, dilate=True) & (hu_part > params.dense_hu)
        gone |= rim & (part > 0)
        part[gone] = 0
        _drop_crumbs(part, gone)
    return found


def _drop_crumbs(part: np.ndarray, gone: np.ndarray) -> None:
    """Remove the pieces of each lung that the removal cut off from that lung's largest piece and that touch ``gone``."""
    grown = np.zeros(gone.shape, dtype=bool)
    near = bounding_box(gone, margin=1)  # the dilation only where it can reach: not a second box-sized temporary
    grown[near] = ndimage.binary_dilation(gone[near], structure=np.ones((3, 3, 3), dtype=bool))
    for value in np.unique(part[grown]):
        if value == 0:
            continue
        pieces, n = label_components(part == value)
        if n < 2:
            continue
        keep = int(np.argmax(count_values(pieces, n + 1)[1:])) + 1  # counted in chunks: bincount widens to int64
        touching = np.unique(pieces[grown])
        for piece in touching:
            if piece and piece != keep:
                part[pieces == piece] = 0


def never_lung_figures(found: NeverLung | None, voxel_ml: float) -> dict[str, float | str]:
    """The report's never-lung columns: ``never_lung_ml`` (all kinds) and ``never_lung_where`` (each kind found, in words)."""
    volumes = found.volumes_ml(voxel_ml) if found is not None else {"total": 0.0}
    where = "; ".join(f"{volumes[kind]:.1f} mL {words}" for kind, words in KIND_WORDS.items() if volumes.get(kind))
    return {"never_lung_ml": volumes["total"], "never_lung_where": where}


__all__ = [
    "DEFAULT_NEVER_LUNG", "KINDS", "KIND_WORDS", "NeverLung", "NeverLungParams", "below_diaphragm",
    "midline_mediastinum", "never_lung", "never_lung_figures", "remove_never_lung", "rib_cage",
]
