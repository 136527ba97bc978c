"""From HU slices to the generator's input, and from its output back to the CT grid.

Slices are (z, y, x) HU in canonical orientation. Each batch is windowed
(HU clipped to the window and scaled to [0, 1]; scanner padding below -1024
becomes air), padded with air to a square, and resized to the network's input
size. Probabilities come back the reverse way: resized to the padded square,
then cropped to the slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_WINDOW, HUWindow
from .classical import body_mask


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


def lung_slices(hu: np.ndarray, body: np.ndarray | None = None, min_air_px: int = 16) -> np.ndarray:
    """Indices of slices that can hold lung: some low-density voxels inside the body.

    Slices without such voxels (the neck above the apices, the abdomen below
    the bases) are skipped by the network: their mask is empty anyway.
    """
    if body is None:
        body = body_mask(hu)
    air_inside = ((hu < -500) & body).sum(axis=(1, 2))
    return np.flatnonzero(air_inside >= min_air_px)
