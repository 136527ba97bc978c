"""From HU slices to the generator's input, and from its output back to the CT grid.

Slices are (z, y, x) HU in canonical orientation. Each batch is windowed
(HU clipped to the window and scaled to [0, 1]; scanner padding below -1024
becomes air), padded with air to a square, and resized to the network's input
size. Probabilities come back the reverse way: resized to the padded square,
then cropped to the slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..config import AIR_HU, DEFAULT_WINDOW, HUWindow
from .classical import PADDING_HU, body_mask
from .morphology import touching_the_edge


def normalize(hu: torch.Tensor, window: HUWindow = DEFAULT_WINDOW) -> torch.Tensor:
    """Clip HU to the window and scale to [0, 1] (float32)."""
    hu = hu.to(torch.float32)
    return window.scale(hu.clamp(window.low, window.high)).contiguous()


@dataclass(frozen=True)
class SliceGeometry:
    """How a (y, x) slice was padded to a square before resizing.

    Attributes:
        height, width: the slice's size.
        side: the padded square's side.
        top, left: padding before the slice's first row and column.
    """

    height: int
    width: int
    side: int
    top: int
    left: int

    @classmethod
    def of(cls, height: int, width: int) -> SliceGeometry:
        """Centre a (height, width) slice in the smallest enclosing square."""
        side = max(height, width)
        return cls(height, width, side, (side - height) // 2, (side - width) // 2)


def to_network(hu: np.ndarray | torch.Tensor, size: int, window: HUWindow = DEFAULT_WINDOW) -> torch.Tensor:
    """Slices (n, y, x) HU -> network input (n, 1, size, size) in [0, 1].

    Args:
        hu: a batch of slices.
        size: the network's input side.
        window: the HU window.
    """
    # Padding with 0 is padding with the bottom of the window: air.
    return _square_resize(normalize(torch.as_tensor(hu), window)[:, None], size)


def context_offset(context_mm: float, slice_mm: float) -> int:
    """Slices between a slice and each neighbour a 2.5D generator sees: the nearest to ``context_mm`` away, at
    least the next one; 0 for a generator that sees one slice (``context_mm`` 0)."""
    if context_mm <= 0:
        return 0
    if not slice_mm > 0:
        raise ValueError(f"a generator that sees neighbouring slices needs the slice spacing, got {slice_mm}")
    return max(1, round(context_mm / slice_mm))


def network_input(hu: np.ndarray, index: np.ndarray, size: int, window: HUWindow = DEFAULT_WINDOW, offset: int = 0) -> torch.Tensor:
    """Slices ``index`` of a (z, y, x) HU volume -> network input: (n, 1, size, size), or with ``offset`` (n, 3,
    size, size), the slice ``offset`` below, the slice itself and the one ``offset`` above as channels (the
    volume's first or last slice standing in beyond its ends)."""
    if not offset:
        return to_network(hu[index], size, window)
    index = np.asarray(index)
    return torch.cat([to_network(hu[np.clip(index + step, 0, hu.shape[0] - 1)], size, window)
                      for step in (-offset, 0, offset)], dim=1)


def own_slice(x):
    """The slice itself of network inputs (n, c, size, size), as (n, 1, size, size): a 2.5D input's middle
    channel (:func:`network_input`'s order), a one-slice input as it is. Tensor or array, a view."""
    middle = x.shape[1] // 2
    return x[:, middle : middle + 1]


def _square_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (n, c, h, w) to a centred square, then resize to (n, c, size, size)."""
    geo = SliceGeometry.of(x.shape[2], x.shape[3])
    if geo.side != geo.height or geo.side != geo.width:
        x = F.pad(x, (geo.left, geo.side - geo.width - geo.left, geo.top, geo.side - geo.height - geo.top))
    if geo.side > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    elif geo.side < size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


def from_network(prob: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Network output (n, 1, size, size) -> (n, height, width) on the slice grid (bilinear)."""
    geo = SliceGeometry.of(height, width)
    if prob.shape[-1] != geo.side:
        prob = F.interpolate(prob, size=(geo.side, geo.side), mode="bilinear", align_corners=False)
    return prob[:, 0, geo.top : geo.top + height, geo.left : geo.left + width]


def mask_to_network(mask: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Binary masks (n, y, x) -> soft targets (n, 1, size, size): the lung fraction of each network pixel."""
    return _square_resize(torch.as_tensor(mask).to(torch.float32)[:, None], size)


def air_inside_per_slice(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """How many voxels below -500 HU lie inside the body, per slice: on a chest CT, the lungs and airways."""
    return np.count_nonzero((hu < -500) & body, axis=(1, 2))


def lung_slices(hu: np.ndarray, body: np.ndarray | None = None, min_air_px: int = 16,
                air_inside: np.ndarray | None = None) -> np.ndarray:
    """Indices of slices that can hold lung: some low-density voxels inside the body (``air_inside``, from
    :func:`air_inside_per_slice`, where it is already counted).

    Slices without such voxels (the neck above the apices, the abdomen below
    the bases) are skipped by the network: their mask is empty anyway.
    """
    if air_inside is None:
        air_inside = air_inside_per_slice(hu, body_mask(hu) if body is None else body)
    return np.flatnonzero(air_inside >= min_air_px)


#: What the generator is shown beside a lung its field of view cuts: soft tissue (HU), as a chest wall there would
#: look, within this distance (mm) of the cut lung. It was trained on lungs the chest wall holds, and it takes a
#: lung that runs straight into the padding outside a round field of view, or into the image's edge (beyond which
#: it pads with air), for the air around the body. A cut is aerated lung along the padding or the edge for
#: CUT_MIN_MM on a slice; less, or denser, is the partial volume of the skin at the field of view's edge (10 mm of
#: it on one slice of lidc-idri-0002, at -750 to -500 HU).
CHEST_WALL_HU, CUT_BAND_MM, CUT_MIN_MM = 40.0, 10.0, 10.0
#: A lung the field of view comes near: this much of it (mm², a patch 10 mm across) within CUT_BAND_MM of the
#: padding or the image's edge on a slice; less is the skin's partial volume (one pixel of lidc-idri-0001's neck).
NEAR_MIN_MM2 = CUT_MIN_MM**2
#: Aerated lung (HU): the skin's partial volume at the field of view's edge lies above it.
AERATED_HU = -700.0


def _near_the_view_edge(aerated: np.ndarray, padding: np.ndarray, pixel: float) -> tuple[np.ndarray, list[bool]]:
    """The slices with NEAR_MIN_MM2 or more of ``aerated`` within CUT_BAND_MM (in-plane) of ``padding`` or of the
    image's edge, and for each edge (top, bottom, left, right) whether it lies within CUT_BAND_MM of that edge on one
    of them. ``pixel``: the grid's (mm)."""
    def within(outside: np.ndarray) -> np.ndarray:  # within the band of ``outside`` or of the image's edge
        distance = ndimage.distance_transform_edt(~np.pad(outside, 1, constant_values=True))[1:-1, 1:-1]
        return distance * pixel <= CUT_BAND_MM

    near = []  # candidates by the padding of every slice together (the pixels in its band), then each by its own
    for z in np.flatnonzero(aerated[:, within(padding.any(axis=0))].any(axis=1)):
        if (aerated[z] & within(padding[z])).sum() * pixel**2 >= NEAR_MIN_MM2:
            near.append(z)
    reach = max(1, int(CUT_BAND_MM // pixel))
    lung = aerated[np.asarray(near, dtype=int)]
    return np.asarray(near, dtype=int), [bool(part.any()) for part in (
        lung[:, :reach], lung[:, -reach:], lung[:, :, :reach], lung[:, :, -reach:])]


def wall_beside_a_cut_lung(
    hu: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray]:
    """``hu`` for the generator, where the CT lies in it (rows and columns added before it), the slices whose lung
    the field of view cuts and those whose lung it comes within CUT_BAND_MM of (indices; the second holds the
    first). On the second, CHEST_WALL_HU within CUT_BAND_MM of the lung, in the padding outside a round field of
    view (below ``PADDING_HU``) and, where the lung comes near the image's edge, in a band of that width added
    beyond the edge (air elsewhere). A field of view that leaves a thin chest wall costs the generator lung too
    (the anterior lungs of LUNG1-002 under a round field of view 5 mm inside them, where the wall runs 1-10 mm
    from the lung). ``hu`` itself, at (0, 0), when no lung comes that near (the field of view holds the chest wall,
    as on most scans). Lungs are looked for on every second pixel in-plane."""
    step = 2 if min(hu.shape[1:]) >= 256 else 1
    grid = hu[:, ::step, ::step]
    padding = grid < PADDING_HU
    aerated = body[:, ::step, ::step] & (grid < AERATED_HU) & ~padding
    padding &= touching_the_edge(padding.any(axis=0))  # not a sharp kernel's undershoot within the lung
    pixel = step * min(spacing[0], spacing[1])
    beside = np.zeros_like(padding)  # padding beside a pixel, in-plane
    beside[:, 1:] |= padding[:, :-1]
    beside[:, :-1] |= padding[:, 1:]
    beside[:, :, 1:] |= padding[:, :, :-1]
    beside[:, :, :-1] |= padding[:, :, 1:]
    cut = (aerated & beside).sum(axis=(1, 2)) * pixel >= CUT_MIN_MM
    edges = [aerated[:, 0, :], aerated[:, -1, :], aerated[:, :, 0], aerated[:, :, -1]]  # top, bottom, left, right
    at_edge = [edge.sum(axis=1) * pixel >= CUT_MIN_MM for edge in edges]
    cut_slices = np.flatnonzero(cut | np.logical_or.reduce(at_edge))
    near_slices, near_edge = _near_the_view_edge(aerated, padding, pixel)
    near_slices = np.union1d(near_slices, cut_slices)
    if not near_slices.size:
        return hu, (0, 0), cut_slices, near_slices
    band_y, band_x = (int(np.ceil(CUT_BAND_MM / s)) for s in (spacing[1], spacing[0]))
    by_edge = [near_it or bool(cut_it.any()) for near_it, cut_it in zip(near_edge, at_edge)]
    pads = ((0, 0), (band_y * by_edge[0], band_y * by_edge[1]), (band_x * by_edge[2], band_x * by_edge[3]))
    out = np.pad(hu, pads, constant_values=AIR_HU)
    added = np.pad(np.zeros(hu.shape[1:], dtype=bool), pads[1:], constant_values=True)
    sampling = (spacing[1], spacing[0])
    for z in near_slices:
        lung = np.pad(body[z] & (hu[z] < AERATED_HU) & (hu[z] >= PADDING_HU), pads[1:])
        near = ndimage.distance_transform_edt(~lung, sampling=sampling) <= CUT_BAND_MM
        out[z][(added | (out[z] < PADDING_HU)) & near] = CHEST_WALL_HU
    return out, (pads[1][0], pads[2][0]), cut_slices, near_slices


#: The least share of the generator's square input that the lungs span (their larger extent): the narrowest it was
#: trained on, measured as :func:`lung_frame` measures it (elastix-00 and Lung-PET-CT-Dx A0001 0.61, lidc-idri-0002
#: 0.72; lidc-idri-0001 0.67, LUNG1-002 0.54). Narrower lungs (a small patient, a large field of view such as
#: PET/CT's) are shown framed closer: LUNG1-002 scaled to 0.6 in-plane (0.34) lost 108 mL of lung beside the
#: mediastinum, 0.9255 against the classical method's 0.9564, and 0.9593 framed. For the shipped models only: a
#: model of your own saw your scans as they are.
FRAME_MIN_SHARE = 0.6


def lung_frame(
    hu: np.ndarray, body: np.ndarray, slices: np.ndarray, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> tuple[slice, slice] | None:
    """The rows and columns of an image of ``shape`` (``hu``'s in-plane, grown as :func:`wall_beside_a_cut_lung`
    grows it: ``hu`` lies at ``offset`` in it) to show the generator where the lungs span less than FRAME_MIN_SHARE of
    its larger side: a window around them that they span FRAME_MIN_SHARE of; None: the whole image. The lungs'
    extent: the aerated tissue inside the body on ``slices``, all together, from its 0.5th to its 99.5th percentile
    along each axis (air beside an arm or in a fold of skin does not widen it)."""
    count = np.zeros(hu.shape[1:], dtype=np.int64)
    for z in slices:
        count += body[z] & (hu[z] < -500) & (hu[z] >= PADDING_HU)
    total = count.sum()
    if not total:
        return None
    bounds = [np.searchsorted(np.cumsum(count.sum(axis=axis)) / total, (0.005, 0.995)) for axis in (1, 0)]
    extent = max(int(hi - lo) + 1 for lo, hi in bounds)
    if extent >= FRAME_MIN_SHARE * max(shape):
        return None
    side, frame = int(np.ceil(extent / FRAME_MIN_SHARE)), []
    for (lo, hi), dim, at in zip(bounds, shape, offset):
        length = min(side, dim)
        start = int(np.clip(at + (int(lo) + int(hi)) // 2 - length // 2, 0, dim - length))
        frame.append(slice(start, start + length))
    return frame[0], frame[1]


#: What a field of view's exterior stored as air is set to while a scan is segmented (see :func:`padding_told_from_air`).
TOLD_PADDING_HU = -2048
#: Fewer slices than this, and a pixel at the lowest value on all of them may be air: nothing is told.
TOLD_MIN_SLICES = 5


@contextmanager
def padding_told_from_air(hu: np.ndarray) -> Iterator[np.ndarray]:
    """While in the block, ``hu``'s exterior of a field of view stored at air's value is set to TOLD_PADDING_HU, in
    place, then put back exactly.

    Many scans store the outside of a round field of view not as padding far below air (-2048, -3024) but at the
    lowest value the file holds, often -1024, where a clip at -1024 HU met the padding (elastix-00, LUNG1-002 and
    Lung-PET-CT-Dx A0001 here). That cannot be told from the air around the body by its value, and a lung the field
    of view cuts then opens onto it and is lost (lidc-idri-0001 cut 5.6 mm inside its lungs by a round field of
    view padded at -1024: Dice 0.69). It is told by where it is: pixels at the scan's lowest value (from -1500 to
    -1000 HU) on every slice, in pieces that reach the image's edge. Air around a body is noise about -1000 HU and
    is not at the lowest value on every slice, nor is a bulla, which does not reach the edge.

    Yields ``hu``; nothing changes where its lowest value is already padding (below ``PADDING_HU``), above -1000 HU,
    where the scan has fewer than TOLD_MIN_SLICES slices, or where the array is read-only.
    """
    exterior = None
    if hu.ndim == 3 and hu.shape[0] >= TOLD_MIN_SLICES and hu.size and hu.flags.writeable:
        low = hu.min()
        if PADDING_HU <= low <= -1000:
            fixed = np.ones(hu.shape[1:], dtype=bool)
            for plane in hu:  # slice by slice: no volume-sized temporary
                fixed &= plane == low
            exterior = touching_the_edge(fixed) if fixed.any() else None
    if exterior is None or not exterior.any():
        yield hu
        return
    hu[:, exterior] = TOLD_PADDING_HU
    try:
        yield hu
    finally:
        hu[:, exterior] = low
