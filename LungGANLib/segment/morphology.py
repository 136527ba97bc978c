"""Generic morphology on (z, y, x) masks: bounding boxes, disks, per-slice closing and hole filling, components.

Shared by the classical method, the post-processing, the lesion envelope and
the metrics; nothing here knows what a lung is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.draw import polygon


#: Slices per slab in the per-slice operations (their temporaries stay a slab's size).
SLAB = 32

#: In-plane 8-neighbourhood (one slice, 3 x 3).
IN_PLANE_SQUARE = np.ones((1, 3, 3), dtype=bool)
#: In-plane 4-neighbourhood as a 3D structure (a 3 x 3 cross on the middle slice of 3 x 3 x 3), for what is judged
#: slice by slice: how ``ndimage.binary_fill_holes`` joins a slice's background, a slice's dents and outlines.
IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)


def grow_box(box: tuple[slice, ...], margin: int | Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """A box grown by ``margin`` voxels (one number, or one per axis) on each side, clipped to ``shape``."""
    margins = [margin] * len(box) if isinstance(margin, (int, np.integer)) else list(margin)
    return tuple(slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margins, shape))


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask, grown by ``margin`` voxels (one number, or one per axis) and clipped."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return grow_box(tuple(slices), margin, mask.shape)


def overlap(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where two boxes of one grid (slices with a start and a stop) meet, as slices into each box's own array
    (``a``'s, then ``b``'s); None where they do not meet."""
    starts = [max(p.start, q.start) for p, q in zip(a, b)]
    stops = [min(p.stop, q.stop) for p, q in zip(a, b)]
    if any(start >= stop for start, stop in zip(starts, stops)):
        return None
    return tuple(
        tuple(slice(start - p.start, stop - p.start) for p, start, stop in zip(box, starts, stops)) for box in (a, b)
    )


def in_plane_pixels(length_mm: float, spacing: tuple[float, float, float]) -> int:
    """A length in mm as a whole number of in-plane pixels (the finer of x and y)."""
    return int(round(length_mm / min(spacing[0], spacing[1])))


def disk(radius_px: int) -> np.ndarray:
    """A 2D disk structuring element of the given radius in pixels."""
    r = max(int(radius_px), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r


def _rectangles(footprint: np.ndarray) -> list[tuple[int, int]] | None:
    """An in-plane footprint as centred rectangles (half height, half width) whose union it is, or None when it is
    not such a union (a disk, a square and a cross are: each row a centred run no wider than the row nearer the
    middle, the same above and below)."""
    flat = footprint.reshape(footprint.shape[-2:]).astype(bool)
    rows, cols = flat.shape
    if rows % 2 == 0 or cols % 2 == 0 or footprint.size != flat.size:
        return None
    r = rows // 2
    half = [int(flat[r + k].sum()) // 2 for k in range(r + 1)]
    found = [(k, half[k]) for k in range(r + 1) if flat[r + k].any() and (k == r or half[k + 1] < half[k])]
    union = np.zeros(flat.shape, dtype=bool)
    for k, w in found:
        union[r - k : r + k + 1, cols // 2 - w : cols // 2 + w + 1] = True
    return found if np.array_equal(union, flat) else None


def line_step(mask: np.ndarray, axis: int, dilate: bool) -> np.ndarray:
    """One step of a 3-pixel line along ``axis``: a dilation (of labels too: each voxel's highest among it and its
    two neighbours), or an erosion of a mask with nothing beyond the edge."""
    n = mask.shape[axis]
    lead = (slice(None),) * (axis % mask.ndim)
    if dilate:
        out = mask.copy()
        for to, of in ((slice(1, n), slice(0, n - 1)), (slice(0, n - 1), slice(1, n))):
            np.maximum(out[lead + (to,)], mask[lead + (of,)], out=out[lead + (to,)])
        return out
    if n < 3:
        return np.zeros_like(mask)
    out = np.empty_like(mask)
    middle = out[lead + (slice(1, n - 1),)]
    np.logical_and(mask[lead + (slice(0, n - 2),)], mask[lead + (slice(1, n - 1),)], out=middle)
    middle &= mask[lead + (slice(2, n),)]
    out[lead + (0,)] = out[lead + (n - 1,)] = False
    return out


def in_plane(mask: np.ndarray, footprint: np.ndarray, dilate: bool) -> np.ndarray:
    """``ndimage.binary_dilation`` (or ``binary_erosion``) of ``mask`` with an in-plane ``footprint`` of as many
    axes (a disk, a square or a cross on the last two), the same voxels in a fraction of the time.

    The footprint is a union of centred rectangles (:func:`_rectangles`); a dilation (erosion) by a union is the
    union (intersection) of the dilations (erosions) by each, and by a rectangle it is by a vertical line after a
    horizontal one, made of 3-pixel steps; the horizontal ones are shared between the rectangles.
    """
    mask = np.asarray(mask, dtype=bool)
    rectangles = _rectangles(footprint)
    if rectangles is None:
        return (ndimage.binary_dilation if dilate else ndimage.binary_erosion)(mask, structure=footprint)
    out, across, done = None, mask, 0
    for k, w in sorted(rectangles, key=lambda kw: kw[1]):
        for _ in range(w - done):
            across = line_step(across, -1, dilate)
        done = w
        part = across
        for _ in range(k):
            part = line_step(part, -2, dilate)
        out = part if out is None else (out | part if dilate else out & part)
    return out.copy() if out is mask else out


def opened(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """``ndimage.binary_opening(mask, structure=footprint)`` for an in-plane footprint (:func:`in_plane`), the
    erosion run only in the mask's box and the dilation only in the box of what the erosion kept: an opening that
    drops most of a sparse mask (vessels, a partial-volume rim) costs about its erosion in its box."""
    eroded = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return eroded
    within = bounding_box(mask)  # nothing beyond it: its edge erodes as the array's does
    eroded[within] = in_plane(mask[within], footprint, dilate=False)
    if not eroded.any():
        return eroded
    box = bounding_box(eroded, margin=[n // 2 for n in footprint.shape])
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = in_plane(eroded[box], footprint, dilate=True)
    return out


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial slice (vessels, nodules inside the lung): what ``ndimage.binary_fill_holes``
    gives on each slice, from one labelling of the background of a slab of slices, 4-connected in-plane.

    A hole is background not joined to the slice's edge. Outside the mask's in-plane box all is background
    joined to the edge, so the box's own edge stands for the slice's.
    """
    out = np.zeros(mask.shape, dtype=bool)
    if not mask.any():
        return out
    slices, rows, cols = bounding_box(mask)
    for start in range(slices.start, slices.stop, SLAB):
        part = mask[start : min(start + SLAB, slices.stop), rows, cols]
        labels, n = ndimage.label(~part, structure=IN_PLANE_CROSS)
        edge = np.zeros(n + 1, dtype=bool)
        for side in (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
            edge[side] = True
        edge[0] = False  # the mask itself
        out[start : start + part.shape[0], rows, cols] = ~edge[labels]
    return out


#: A piece cut by a slice's edge joins the filled mask when at least this share of it lies on the mask's holes
#: on a neighbouring slice.
EDGE_CUT_SHARE = 0.5


def holes_cut_by_the_edge(mask: np.ndarray, filled: np.ndarray, walls: np.ndarray | None = None) -> np.ndarray:
    """What :func:`fill_holes_per_slice` left out because the slice's edge cuts it: ``filled`` (the holes of
    ``mask`` filled) with each piece of the background joined to a slice's edge added where at least
    ``EDGE_CUT_SHARE`` of it lies on a hole, or on a piece so added, of the slice below or above. ``walls``:
    background that parts the pieces and is never added (a scanner's padding outside a round field of view, which
    joins a lung it cuts to the air around the body).

    A field of view cut at the ribs opens the lung to the image's edge on the slices where it is widest, and hole
    filling then takes it for the air around the body; on the slices above and below, where the field of view
    holds the chest wall, it is a hole, and the lung moves little from one slice to the next. The air around the
    body overlaps the holes of its neighbouring slices only along the skin, a sliver of itself.
    """
    inside = filled & ~mask  # the holes, and then the pieces that join them
    # Only a slice whose background touches a neighbour's holes can gain a piece (on most scans none does); a
    # slice that gains one may make its neighbours' pieces join in turn.
    touching = np.zeros(mask.shape[0], dtype=bool)
    touching[1:] |= (~filled[1:] & inside[:-1]).any(axis=(1, 2))
    touching[:-1] |= (~filled[:-1] & inside[1:]).any(axis=(1, 2))
    todo = set(np.flatnonzero(touching).tolist())
    if not todo:
        return filled
    out, pieces = filled.copy(), {}
    while todo:
        z = todo.pop()
        if z not in pieces:
            pieces[z] = ndimage.label(~out[z] if walls is None else ~(out[z] | walls[z]), structure=IN_PLANE_CROSS[1])
        labels, n = pieces[z]
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        on_holes = np.zeros(n + 1)
        for k in (z - 1, z + 1):
            if 0 <= k < mask.shape[0]:
                on_holes = np.maximum(on_holes, np.bincount(labels.ravel(), weights=inside[k].ravel(), minlength=n + 1))
        join = on_holes >= EDGE_CUT_SHARE * np.maximum(sizes, 1)
        join[0] = False
        if join.any():
            added = join[labels]
            inside[z] |= added
            out[z] |= added
            labels[added] = 0  # joined: not looked at again
            todo.update(k for k in (z - 1, z + 1) if 0 <= k < mask.shape[0])
    return out


def touching_the_edge(mask: np.ndarray) -> np.ndarray:
    """The pieces of a 2D ``mask`` (4-connected) that reach the image's edge."""
    labels, _ = ndimage.label(mask, structure=IN_PLANE_CROSS[1])
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, edge[edge > 0])


def close_per_slice(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """In-plane morphological closing of every axial slice with a disk.

    The mask is padded first, so the closing does not erode at the image border.
    """
    if radius_px < 1 or not mask.any():
        return mask.astype(bool, copy=True)
    slices, rows, cols = bounding_box(mask)
    struct = disk(radius_px)[None]
    pad = radius_px + 1
    out = np.zeros(mask.shape, dtype=bool)
    # A slab of slices at a time: the disk is flat, so slabs close exactly as the whole would, in less memory.
    for start in range(slices.start, slices.stop, SLAB):
        part = mask[start : min(start + SLAB, slices.stop), rows, cols]
        crop = np.pad(part, ((0, 0), (pad, pad), (pad, pad)))
        closed = in_plane(in_plane(crop, struct, dilate=True), struct, dilate=False)[:, pad:-pad, pad:-pad]
        out[start : start + part.shape[0], rows, cols] = closed | part
    return out


def label_components(mask: np.ndarray, structure: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Connected components (6-connectivity, or ``structure``), as uint16 labels when they fit (half of int32)."""
    labels = np.empty(mask.shape, dtype=np.uint16)
    try:
        n = ndimage.label(mask, structure=structure, output=labels)
    except RuntimeError:  # more than 65535 components
        del labels  # before the int32 labels, not beside them
        return ndimage.label(mask, structure=structure)
    return labels, int(n)


#: Voxels per chunk when counting labels: bincount widens its input to int64, so a whole
#: 1200-slice volume at once would cost 8 bytes a voxel.
_COUNT_CHUNK = 1 << 22


def count_values(values: np.ndarray, size: int, offset: int = 0) -> np.ndarray:
    """How many of ``values`` (integers) equal ``offset``, ``offset + 1``, ... ``offset + size - 1``, counted in chunks."""
    flat = values.reshape(-1)
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):
        chunk = flat[start : start + _COUNT_CHUNK]
        if offset:
            chunk = chunk.astype(np.int64) - offset
        counts += np.bincount(chunk, minlength=size)[:size]
    return counts


def cleared_labels(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` set to 0 (an ``out=`` argument), or new uint8 zeros of ``shape`` when it is None."""
    if out is None:
        return np.zeros(shape, dtype=np.uint8)
    out.fill(0)
    return out


def percentile_of_counts(counts: np.ndarray, q: float, offset: int = 0) -> float:
    """The q-th percentile, with numpy's linear interpolation, of the values ``offset``, ``offset + 1``, ...
    each repeated as often as ``counts`` says (``np.percentile`` of that list, without the list)."""
    cumulative = np.cumsum(counts)
    rank = q / 100.0 * (int(cumulative[-1]) - 1)
    below, above = int(np.floor(rank)), int(np.ceil(rank))
    value_below = offset + int(np.searchsorted(cumulative, below, side="right"))
    value_above = offset + int(np.searchsorted(cumulative, above, side="right"))
    return float(value_below + (rank - below) * (value_above - value_below))


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of components 1..n of a label image (index 0 is label 1)."""
    return count_values(labels, n + 1)[1:]


def labels_in(labels: np.ndarray, values) -> np.ndarray:
    """Boolean mask of the voxels whose label is one of ``values`` (few), without np.isin's wide temporaries."""
    out = np.zeros(labels.shape, dtype=bool)
    for value in values:
        out |= labels == value
    return out


def pooled(mask: np.ndarray, step: int, share: float | None = None) -> np.ndarray:
    """Pool each slice of a mask over ``step`` x ``step`` blocks onto a coarser grid.

    Without ``share`` a coarse pixel is set when any pixel of its block is (thin structures survive);
    with it, when at least that share of its block is.
    """
    if step == 1:
        return mask.copy()
    depth, rows, cols = mask.shape
    # The block's pixels counted as ``step`` x ``step`` strided views added up (beyond the edge: none).
    count = np.zeros((depth, -(-rows // step), -(-cols // step)), dtype=np.uint8)
    pixels = mask.view(np.uint8)
    for dy in range(step):
        for dx in range(step):
            part = pixels[:, dy::step, dx::step]
            count[:, : part.shape[1], : part.shape[2]] += part
    return count > 0 if share is None else count >= share * step * step


def unpooled(small: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    """A mask of the coarser grid of :func:`pooled` back on the fine grid of ``shape`` (each coarse pixel covers
    ``step`` x ``step`` fine ones)."""
    if step == 1:
        return small
    return small.repeat(step, axis=1).repeat(step, axis=2)[:, : shape[1], : shape[2]]


def convex_hull_mask(points: np.ndarray) -> np.ndarray | None:
    """The convex hull of a 2D mask's true pixels as a mask, or None when they span no area."""
    rows, cols = np.nonzero(points)
    if rows.size < 3:
        return None
    # A pixel is a unit square: its four corners make the hull cover every pixel it holds.
    corners = np.stack([rows, cols], axis=1)[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    corners = corners.reshape(-1, 2)
    try:
        vertices = corners[ConvexHull(corners).vertices]
    except QhullError:  # collinear: no area
        return None
    out = np.zeros(points.shape, dtype=bool)
    out[polygon(vertices[:, 0], vertices[:, 1], shape=points.shape)] = True
    return out
