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


def _square_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (n, 1, h, w) to a centred square, then resize to (n, 1, size, size)."""
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
