"""Where to look: the slices of a lung mask most likely wrong, each with its reasons.

A reader checks an automatic mask by paging through hundreds of slices; the errors that matter
sit on a few of them. Every slice that holds lung gets a score (mL of tissue a reader should look
at: the flags' regions, tissue two flags name counted once, and ``OUTLINE_ERROR_MM`` along the
outline; higher: look first) and flags, each a
reason with its figure and where it is, from signals of the CT and the mask alone (no reference):

- ``dense_in``: soft tissue inside the mask wider than a vessel (a 3 mm in-plane opening drops
  the vessels): a mass or dense lung kept, or the hilum, the aorta, the heart or a dome taken in;
- ``left_out``: partly aerated tissue (-700 to -150 HU) beside the lung, within 15 mm, and not in
  the mask, wider than the partial-volume rim and not between aerated lung and soft tissue on the
  slices either side (a dome's top cut by a thick slice): dense or ground-glass lung left out, or
  the airway or fat beside it;
- ``between``: tissue the mask leaves out among small pieces of one lung on a slice (pockets of
  air), in gaps up to 1 cm wide (what an in-plane closing of ``BETWEEN_MM`` radius adds): dense
  lung (consolidation, atelectasis) whose aerated lobules and air bronchograms the mask follows;
- ``guard_rail``: soft tissue the guard rail removed (:mod:`LungGANLib.segment.never_lung`),
  and ``never_lung``: what it would remove, left in the mask (checked when the guard rail did not run);
- ``area_jump``: a lung's area on the slice against its neighbours' (two each side), unless it lies
  between theirs below and above (the lung narrowing through it): a piece gained or lost on a slice or two;
- ``cut_off``: lung on the scan's first or last slice: the lung goes on beyond the scan;
- ``disagree``: where a second, independent method (the classical one for the generator's
  mask, the generator for the classical method's) finds lung and the mask has none, or the other
  way round, wider than a 2 mm disk and 1 mL or more joined across slices.

Not flagged: soft tissue the lung surrounds on its slice and no wider than a nodule (3 cm across;
a nodule or a vessel within the lung, which the outline holds), and partly aerated tissue at the
wall of the trachea and main bronchi, which the mask leaves out on purpose.

Whole-scan flags: a right/left volume ratio outside ``RATIO_RANGE``, and one lung missing.

Arrays and slice indices here are canonical (z, y, x) LPS: x to the patient's left, y posterior, z up;
:func:`LungGANLib.segment.review_files.in_file_order` counts them along the written mask's third voxel axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..config import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, RUNS_OFF_MM2
from .classical import airway_walls
from .morphology import bounding_box, count_values, disk, grow_box, in_plane_pixels, opened
from .never_lung import DEFAULT_NEVER_LUNG, NeverLung, never_lung
from .review_regions import area_jump, drop_small_pieces, flat, regions, shared_ml, side_text

#: Soft tissue: denser than this (HU) is not aerated or ground-glass lung.
DENSE_HU = -100.0
#: Soft tissue inside the mask that the lung surrounds on its slice (this share of a band this wide, mm, around it)
#: and no wider than a nodule (NODULE_MM across: radiology's bound between a nodule and a mass) is a nodule or a
#: vessel within the lung, which the lung's outline holds: not flagged. What a mask takes in by mistake (the
#: hilum, the aorta, the chest wall) lies at its edge; a larger island (a mass, or a liver dome rising into the
#: lung's base, which on its top slices the lung surrounds) is worth a look.
ENCLOSED_RING_MM, ENCLOSED_SHARE, NODULE_MM = 3.0, 0.95, 30.0
#: Partly aerated tissue, for what is left out (HU): denser than aerated lung, less dense than fat.
PARTLY_AERATED_HU = (-700.0, -150.0)
#: Left out among a lung's pockets of air: what an in-plane closing of this radius (mm) adds to the lung's slice
#: (gaps up to twice as wide, with lung on both sides), within that radius of a piece of the lung smaller than
#: POCKET_MM2 (a pocket: some 16 mm across at most). Consolidated or atelectatic lung keeps pockets of air (air bronchograms,
#: aerated lobules) that a mask follows as small pieces; at the hilum the pieces either side of a vessel are lobes,
#: and effusion, the chest wall and the mediastinum lie beside the lung, not among its pieces. Bone (the guard rail's
#: ``bone_hu`` and denser) is never lung.
BETWEEN_MM, POCKET_MM2 = 5.0, 200.0
#: The wall of the trachea and the main bronchi, beyond their lumen (mm, in-plane): partly aerated by partial volume.
AIRWAY_WALL_MM = 3.0
#: How far beside the lung (mm, in-plane) left-out tissue is looked for.
BESIDE_MM = 15.0
#: The in-plane opening (mm radius) that drops vessels and the partial-volume rim.
OPENING_MM = 3.0
#: A lung's area that changes by this share of its neighbours' median, and by MIN_JUMP_MM2, is a jump.
JUMP_SHARE, MIN_JUMP_MM2 = 0.3, 300.0
#: The slices are judged on an in-plane grid with pixels of at most this size (mm), every ``review_step`` th
#: pixel: the smallest flag (``review_regions.MIN_FLAG_ML``) is a region some 15 mm across on a slice, and on a
#: 0.7 mm scan the checks and the second opinion cost a third of what they cost on its own grid. Not coarser: the
#: classical method's airway growth leaks into the hilum when the bronchial walls fall between the pixels
#: (Lung-PET-CT-Dx A0001 at 1.7 mm: 200 mL of airway against 79 mL on its own grid).
GRID_MM = 1.5
#: Right/left lung volume ratios of normal chests lie well inside this range.
RATIO_RANGE = (0.6, 1.8)
SIDES = {RIGHT_LUNG_LABEL: "right", LEFT_LUNG_LABEL: "left"}
#: A disagreement with the second method that a disk of this radius (mm, in-plane) does not fit in is the
#: outline's convention (where the edge is drawn, a vessel at the hilum), not a flag; at least one pixel.
DISAGREE_OPENING_MM = 2.0
#: ... and one that holds less than this (mL) joined across slices: a fifth of a gross error (5 mL connected).
MIN_APART_ML = 1.0
#: An error no flag sees lies along the outline: a slice's score adds this width (mm) x its outline's length x its
#: thickness: the fold generators' unflagged error per mm² of outline on unseen patients (benchmarks/review.py).
OUTLINE_ERROR_MM = 0.022


@dataclass
class Flag:
    """One reason to look at a slice: its kind, its figure (mL), where, and its box on the slice."""

    kind: str
    ml: float
    text: str
    #: rows y0, y1 and columns x0, x1 (end excluded) on the canonical axial slice (LPS: the patient's right at
    #: column 0, anterior at row 0), as ``lunggan overlay`` draws it.
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: its region's pixels on the review's grid (flat indices on the slice), for the score: None where it has no
    #: region (``area_jump``, ``cut_off``).
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "ml": round(float(self.ml), 2), "text": self.text, "box": [int(v) for v in self.box]}


@dataclass
class Review:
    """Every slice with lung, most suspicious first, and the whole scan's flags."""

    slices: list[dict] = field(default_factory=list)
    scan: list[str] = field(default_factory=list)
    axis: str = ""

    @property
    def flagged(self) -> int:
        """How many slices carry at least one flag."""
        return sum(1 for s in self.slices if s["flags"])

    def as_dict(self) -> dict:
        """The review as written (:mod:`LungGANLib.segment.review_files`): head and slices."""
        return {"axis": self.axis, "flagged_slices": self.flagged, "scan_flags": self.scan, "slices": self.slices}


def _enclosed(region: np.ndarray, lung: np.ndarray, ring: int) -> bool:
    """Whether the lung surrounds a region on its slice: ENCLOSED_SHARE of the band ``ring`` steps wide around it."""
    band = ndimage.binary_dilation(region, iterations=ring) & ~region
    return bool(lung[band].mean() >= ENCLOSED_SHARE) if band.any() else False


def _among_pockets(lung: np.ndarray, outside: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray | None:
    """What an in-plane closing of BETWEEN_MM adds to a lung's slice within BETWEEN_MM of its pockets (pieces under
    POCKET_MM2, not its largest); None where it has none. ``outside``: each pixel's distance (mm) to the lung."""
    pieces, count = ndimage.label(lung)
    areas = count_values(pieces, count + 1) * spacing[0] * spacing[1]
    small = areas < POCKET_MM2
    small[0] = small[int(areas[1:].argmax()) + 1] = False  # the background, and the lung's largest piece
    if not small.any():
        return None
    sampling, margin = (spacing[1], spacing[0]), max(1, in_plane_pixels(BETWEEN_MM, spacing)) + 1
    # The closing by distances: grown by BETWEEN_MM, then what lies over BETWEEN_MM inside the grown lung; it adds
    # nothing beyond the lung's box, so the second distance is taken there (with a margin, and a border).
    inner = bounding_box(lung, margin=margin)
    grown = np.pad(outside[inner] <= BETWEEN_MM, 1)
    closed = np.zeros_like(lung)
    closed[inner] = ndimage.distance_transform_edt(grown, sampling=sampling)[1:-1, 1:-1] > BETWEEN_MM
    pockets = small[pieces]
    near = bounding_box(pockets, margin=margin)
    among = np.zeros_like(lung)
    among[near] = closed[near] & (ndimage.distance_transform_edt(~pockets[near], sampling=sampling) <= BETWEEN_MM)
    return among


def _across_an_interface(hu: np.ndarray, z: int, rows: slice, cols: slice) -> np.ndarray:
    """Pixels of slice ``z`` (within ``rows`` and ``cols``) with aerated lung on one neighbouring slice and soft
    tissue on the other: where an interface runs along the slice (the top of a dome or of the heart, under the
    lung), a thick slice averages the two into partly aerated tissue, which is no lung left out."""
    if z == 0 or z == hu.shape[0] - 1:
        return np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
    below, above = hu[z - 1, rows, cols], hu[z + 1, rows, cols]
    return (np.minimum(below, above) < PARTLY_AERATED_HU[0]) & (np.maximum(below, above) > PARTLY_AERATED_HU[1])


def outline_mm(lungs: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """The length (mm) of the outline on each slice of a boolean (z, y, x) mask: its pixels' edges with not lung."""
    rows, cols = (np.count_nonzero(np.diff(lungs, axis=a), axis=(1, 2)) for a in (1, 2))
    return rows * spacing[0] + cols * spacing[1]


def review_step(spacing: tuple[float, float, float]) -> int:
    """Every how many pixels, in-plane, the review looks: the most that keeps its pixels within GRID_MM (1 for
    pixels of over half of it)."""
    return max(1, int(GRID_MM / max(spacing[0], spacing[1]) + 1e-9))


def review_grid(hu: np.ndarray, spacing: tuple[float, float, float], step: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The CT on the review's grid (every ``step`` th pixel in-plane) and that grid's voxel size: what a second
    opinion is computed on."""
    if step == 1:
        return hu, spacing
    return np.ascontiguousarray(hu[:, ::step, ::step]), (spacing[0] * step, spacing[1] * step, spacing[2])


def _fine_box(box: tuple[int, int, int, int], step: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A box on the review's grid as rows and columns of the full slice (``shape``: the slice's)."""
    y0, y1, x0, x1 = box
    return (y0 * step, min(y1 * step, shape[0]), x0 * step, min(x1 * step, shape[1]))


def review_slices(
    labels: np.ndarray,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    removed: NeverLung | None = None,
    single_label: bool = False,
    other: np.ndarray | None = None,
    other_name: str = "the classical method",
    step: int | None = None,
    airways: tuple[tuple[slice, ...], np.ndarray] | None = None,
) -> Review:
    """Score and flag every slice of a lung mask (see the module); indices are canonical z.

    Args:
        labels: lung labels (z, y, x): 1 right, 2 left (1 for both lungs with one label).
        hu: the CT in HU, same shape.
        spacing: voxel size (x, y, z) mm.
        removed: what the guard rail found and removed from this mask (None: nothing, or not run).
        single_label: one label for both lungs (no right and left in the flags).
        other: another method's labels of the same CT, for ``disagree``: on the mask's grid, or already on the
            review's (every ``step`` th pixel in-plane, see :func:`review_grid`); None: not used.
        other_name: that method, in words.
        step: judge every ``step`` th pixel in-plane (None: :func:`review_step`); the flags' boxes are on the
            full slice either way.
        airways: the trachea and main bronchi the mask leaves out, as their box on the mask's grid and the mask
            in it (:func:`LungGANLib.segment.classical.airways_in_box`); None: not known. Partly aerated tissue
            at their walls is not ``left_out``.
    """
    review = Review()
    if not labels.any():
        return review
    full_shape = labels.shape[1:]
    # What the guard rail found is judged on the full grid, where it was found; the rest every step-th pixel.
    left_in = never_lung(labels, hu, spacing) if removed is None else None  # the guard rail has just looked
    full_labels, full_ml = labels, spacing[0] * spacing[1] * spacing[2] / 1000.0
    step = review_step(spacing) if step is None else max(1, int(step))
    zs = np.flatnonzero(labels.any(axis=(1, 2)))
    values = [v for v in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL) if (labels == v).any()]
    if step > 1:
        labels, hu = labels[:, ::step, ::step], hu[:, ::step, ::step]
        spacing = (spacing[0] * step, spacing[1] * step, spacing[2])
    if other is not None and other.shape != labels.shape:
        if other.shape != full_labels.shape:
            raise ValueError(f"the other mask's shape {other.shape} is neither the mask's {full_labels.shape} nor the "
                             f"review grid's {labels.shape}")
        other = other[:, ::step, ::step]
    lungs, width = labels > 0, labels.shape[2]
    pixel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    opening = disk(max(1, in_plane_pixels(OPENING_MM, spacing)))
    reach_px = [int(np.ceil(BESIDE_MM / s)) + 1 for s in (spacing[1], spacing[0])]
    ring = max(1, in_plane_pixels(ENCLOSED_RING_MM, spacing))
    nodule_ml = np.pi * (NODULE_MM / 2) ** 2 * spacing[2] / 1000.0  # a nodule's largest cross-section, on a slice
    walls = None if airways is None else airway_walls(airways, lungs.shape, step, spacing, AIRWAY_WALL_MM)
    flags: dict[int, list[Flag]] = {}  # boxes on the review's grid
    fine_flags: dict[int, list[Flag]] = {}  # boxes on the full slice
    areas = {v: (labels == v).sum(axis=(1, 2)) * spacing[0] * spacing[1] for v in values}
    for z in zs:
        found = flags.setdefault(int(z), [])
        for value in values:
            whole = labels[z] == value
            if not whole.any():
                continue
            side = "lungs" if single_label else SIDES[value]
            tight = bounding_box(whole)
            rows, cols = grow_box(tight, reach_px, whole.shape)
            lung, plane, any_lung = whole[rows, cols], hu[z, rows, cols], lungs[z, rows, cols]
            offset = (rows.start, cols.start)
            dense = opened(lung & (plane > DENSE_HU), opening)
            for region, ml, box in regions(dense, pixel_ml, offset):
                if ml <= nodule_ml and _enclosed(region, lung, ring):
                    continue  # a nodule or a vessel within the lung: kept, as a clinician draws it
                found.append(Flag("dense_in", ml, f"{ml:.1f} mL of soft tissue inside {side_text(side, region, lung)}", box,
                                  flat(region, offset, width)))
            outside = ndimage.distance_transform_edt(~lung, sampling=(spacing[1], spacing[0]))  # mm to the lung
            near = outside <= BESIDE_MM
            partly = near & ~any_lung & (plane > PARTLY_AERATED_HU[0]) & (plane < PARTLY_AERATED_HU[1])
            if walls is not None:
                partly &= ~walls[z, rows, cols]  # the walls of the trachea and main bronchi, left out on purpose
            partly &= ~_across_an_interface(hu, z, rows, cols)  # partial volume of a dome's top or the apex
            partly = opened(partly, opening)
            for region, ml, box in regions(partly, pixel_ml, offset):
                found.append(Flag("left_out", ml, f"{ml:.1f} mL of partly aerated tissue left out beside "
                                  f"{side_text(side, region, lung)}", box, flat(region, offset, width)))
            between = _among_pockets(lung, outside, spacing)
            if between is not None:
                between = opened(between & ~any_lung & ~partly & (plane < DEFAULT_NEVER_LUNG.bone_hu), disk(1))
                if walls is not None:
                    between &= ~walls[z, rows, cols]
                for region, ml, box in regions(between, pixel_ml, offset):
                    found.append(Flag("between", ml, f"{ml:.1f} mL left out among pockets of air in "
                                      f"{side_text(side, region, lung)}: dense lung (consolidation, atelectasis)?", box,
                                      flat(region, offset, width)))
            jump, typical = area_jump(areas[value], int(z))
            if jump >= MIN_JUMP_MM2 and jump >= JUMP_SHARE * max(typical, 1.0):
                gained = areas[value][z] > typical
                found.append(Flag("area_jump", jump * spacing[2] / 1000.0, f"the {side} lung{'s' if side == 'lungs' else ''} "
                                  f"{'gain' if gained else 'lose'}{'' if side == 'lungs' else 's'} {jump / 100:.0f} cm² against "
                                  "the neighbouring slices", (tight[0].start, tight[0].stop, tight[1].start, tight[1].stop)))
    if other is not None:
        radius = max(1, in_plane_pixels(DISAGREE_OPENING_MM, spacing))
        apart = opened(lungs ^ (other > 0), disk(radius)[None])
        drop_small_pieces(apart, pixel_ml, MIN_APART_ML)  # less, in all, is the edge's convention
        for z in np.flatnonzero(apart.any(axis=(1, 2))):
            for region, ml, box in regions(apart[z], pixel_ml):
                ours = bool(lungs[z][region].mean() >= 0.5)
                value = int(np.bincount((labels[z] if ours else other[z])[region]).argmax())
                side = "lungs" if single_label else SIDES.get(value, "lungs")
                lung = (labels[z] if ours else other[z]) == value
                says = "finds no lung" if ours else "finds lung"
                flags.setdefault(int(z), []).append(Flag("disagree", ml, f"{ml:.1f} mL where {other_name} {says} "
                                                         f"({side_text(side, region, lung)})", box,
                                                         flat(region, (0, 0), width)))
    for z, name in ((0, "first (lowest)"), (lungs.shape[0] - 1, "last (highest)")):
        area = float(lungs[z].sum() * spacing[0] * spacing[1])
        if area >= RUNS_OFF_MM2:
            ys, xs = np.nonzero(lungs[z])
            flags.setdefault(z, []).append(Flag("cut_off", area * spacing[2] / 1000.0, f"lung on the scan's {name} slice "
                                                f"({area / 100:.0f} cm²): the lung goes on beyond the scan", (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)))
    for kind, what, source in (("guard_rail", "removed by the guard rail", removed), ("never_lung", "left in the mask", left_in)):
        if source is None:
            continue
        union = source.union()
        for k in np.flatnonzero(union.any(axis=(1, 2))):
            z = int(k + source.box[0].start)
            plane = np.zeros(full_shape, dtype=bool)
            plane[source.box[1], source.box[2]] = union[k]
            for region, ml, box in regions(plane, full_ml):
                where = next((w for w, m in source.masks.items() if (m[k] & region[source.box[1], source.box[2]]).any()), "")
                held = full_labels[z][region]
                held = held[held > 0]
                side = "" if held.size == 0 else " in the lungs" if single_label else \
                    f" in the {SIDES.get(int(np.bincount(held).argmax()), 'right')} lung"
                fine_flags.setdefault(z, []).append(
                    Flag(kind, ml, f"{ml:.1f} mL of soft tissue where lung never is ({where.replace('_', ' ')}){side}, {what}", box,
                         flat(region, (0, 0), width, step)))
    for z, found in flags.items():
        for flag in found:
            flag.box = _fine_box(flag.box, step, full_shape)
    for z, found in fine_flags.items():
        flags.setdefault(z, []).extend(found)
    # Every slice with lung, and any other slice a flag names (the second method's lung where the mask has none).
    score = {int(z): float(e) for z, e in enumerate(OUTLINE_ERROR_MM * outline_mm(lungs, spacing) * spacing[2] / 1000.0)}
    for z in sorted({int(z) for z in zs} | set(flags)):
        found = flags.get(int(z), [])
        # Tissue that two flags name (a mass kept: dense_in and disagree) counts once.
        score[z] += sum(f.ml for f in found) - shared_ml([f.pixels for f in found if f.pixels is not None], pixel_ml)
        review.slices.append({"index": int(z), "score": round(score[z], 3),
                              "flags": [f.as_dict() for f in sorted(found, key=lambda f: -f.ml)]})
    review.slices.sort(key=lambda s: (-score[s["index"]], s["index"]))  # by the score before it is rounded
    volumes = {v: float((full_labels == v).sum() * full_ml) for v in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)}
    if len(values) == 2 and volumes[LEFT_LUNG_LABEL] > 0:
        ratio = volumes[RIGHT_LUNG_LABEL] / volumes[LEFT_LUNG_LABEL]
        if not RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]:
            review.scan.append(f"right/left volume ratio {ratio:.2f} ({volumes[RIGHT_LUNG_LABEL]:.0f} / "
                               f"{volumes[LEFT_LUNG_LABEL]:.0f} mL), outside {RATIO_RANGE[0]}-{RATIO_RANGE[1]}: "
                               "a lung partly missed or spilled, or a real loss of volume")
    elif not single_label and len(values) == 1:
        review.scan.append(f"only the {SIDES[values[0]]} lung was found")
    return review

