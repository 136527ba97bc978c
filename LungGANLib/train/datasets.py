"""Training data: network-ready slices from annotated CT volumes or from the Kaggle 2D set.

Slices are brought to the network's input size once (:func:`prepare_slices`).
Only slices that can hold lung (some low-density voxels inside the body) are
used, the same slices inference runs the network on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DEFAULT_INPUT_SIZE, DEFAULT_WINDOW, HUWindow
from ..errors import InputError
from ..io.volumes import CTVolume, clip_air
from ..segment.classical import body_mask
from ..segment.preprocess import context_offset, lung_slices, mask_to_network, network_input, to_network

logger = logging.getLogger(__name__)


@dataclass
class SliceData:
    """Network-ready slices: inputs (n, 1, s, s) in [0, 1] (n, 3, s, s for a 2.5D generator), targets (n, 1, s, s)
    lung fractions.

    ``pixel_mm`` (n,) is each slice's pixel size at network resolution, in mm
    (NaN where unknown, as for the Kaggle slices); synthetic lesions are sized by it.
    ``neighbour_mm`` (n, 2), for 2.5D inputs: how far the slices below and above that a slice's channels hold lie
    from it, in mm (0 where the scan's end slice stands in); synthetic lesions are cut to it.
    """

    images: torch.Tensor
    targets: torch.Tensor
    pixel_mm: torch.Tensor | None = None
    neighbour_mm: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @staticmethod
    def joined(*parts: SliceData) -> SliceData:
        """The slices of several sets, one after another (a pixel size unknown where a set has none)."""
        sizes = [torch.full((len(p),), float("nan")) if p.pixel_mm is None else p.pixel_mm for p in parts]
        if any(p.neighbour_mm is not None for p in parts):
            raise ValueError("2.5D slices cannot be joined: their neighbours' distances differ in kind")
        return SliceData(torch.cat([p.images for p in parts]), torch.cat([p.targets for p in parts]), torch.cat(sizes))

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> SliceData:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        pick = lambda values: None if values is None else values[index]
        return SliceData(self.images[index], self.targets[index], pick(self.pixel_mm), pick(self.neighbour_mm))


def prepare_slices(
    pairs: Sequence[tuple[CTVolume, np.ndarray]], size: int = DEFAULT_INPUT_SIZE, window: HUWindow = DEFAULT_WINDOW,
    context_mm: float = 0.0,
) -> SliceData:
    """Bring the lung-bearing slices of (volume, labels) pairs to the network's size.

    Args:
        pairs: CT volumes with (z, y, x) label arrays on their canonical grid
            (any label > 0 is lung).
        size: network input side.
        window: HU window.
        context_mm: 0, or for a 2.5D generator how far its neighbouring slices lie (three input channels:
            :func:`~LungGANLib.segment.preprocess.network_input`).

    Raises:
        InputError: a mask does not have its volume's shape.
    """
    images, targets, pixel_mm, neighbour_mm = [], [], [], []
    for volume, labels in pairs:
        if labels.shape != volume.array.shape:
            raise InputError(
                f"mask shape {labels.shape} differs from CT shape {volume.array.shape} ({volume.source}): "
                "give each CT its own mask"
            )
        hu = clip_air(volume.array)
        keep = np.union1d(lung_slices(hu, body_mask(hu)), np.flatnonzero(labels.any(axis=(1, 2))))
        offset = context_offset(context_mm, volume.spacing[2])
        for start in range(0, len(keep), 32):
            index = keep[start : start + 32]
            images.append(network_input(hu, index, size, window, offset))
            targets.append(mask_to_network(labels[index] > 0, size))
        # The slice is padded to a square of its longer side, then resized to ``size``.
        side_mm = max(hu.shape[1] * volume.spacing[1], hu.shape[2] * volume.spacing[0])
        pixel_mm.append(torch.full((len(keep),), side_mm / size))
        if offset:
            below, above = np.minimum(keep, offset), np.minimum(hu.shape[0] - 1 - keep, offset)
            neighbour_mm.append(torch.from_numpy(np.stack([below, above], axis=1) * float(volume.spacing[2])).float())
    if not images:
        raise InputError("no training slices: the volumes hold no slice with lung")
    return SliceData(torch.cat(images), torch.cat(targets), torch.cat(pixel_mm),
                     torch.cat(neighbour_mm) if neighbour_mm else None)


def load_pairs(pairs: Sequence[Sequence[str]]) -> list[tuple[CTVolume, np.ndarray]]:
    """Read (CT path, mask path) pairs; each mask is resampled onto its CT's canonical grid.

    Raises:
        InputError: a mask that is no label mask (a CT given as the mask). A mask without lung gets a warning.
    """
    from ..io.masks import check_label_image
    from ..io.volumes import load_ct, mask_from_image, read_image

    loaded = []
    for ct_path, mask_path in pairs:
        volume = load_ct(ct_path)
        mask_image, _ = read_image(mask_path)
        mask = mask_from_image(mask_image, volume)
        check_label_image(mask, str(mask_path))  # a CT given as the mask would train on nonsense
        if not mask.any():
            logger.warning("the mask %s holds no lung: its slices teach the generator to find none", mask_path)
        loaded.append((volume, mask))
    return loaded


KAGGLE_FOLDER = "kaggle-finding-lungs"


def kaggle_slices(split: str, data: str | os.PathLike | None = None, suffix: str = "") -> SliceData:
    """The Kaggle "Finding and Measuring Lungs in CT Data" slices with their human masks.

    Args:
        split: ``"train"`` or ``"test"``.
        data: the shared data folder (default: :func:`LungGANLib.config.data_dir`).
        suffix: ``"_128"`` for the 128x128 copy of the test slices.

    Returns:
        Slices (n, 1, h, w) already windowed to [0, 1] (no HU), masks in {0, 1}.

    Raises:
        InputError: the arrays are missing or do not match.
    """
    from ..config import data_dir

    folder = Path(data) if data else data_dir() / KAGGLE_FOLDER
    if (folder / KAGGLE_FOLDER).is_dir():
        folder = folder / KAGGLE_FOLDER
    x_path, y_path = folder / f"x_{split}{suffix}.npy", folder / f"y_{split}{suffix}.npy"
    for path in (x_path, y_path):
        if not path.is_file():
            raise InputError(f"{path} not found: give the folder holding x_{split}{suffix}.npy and y_{split}{suffix}.npy")
    x, y = np.load(x_path), np.load(y_path)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 1:
        raise InputError(f"{x_path} and {y_path} must both be (N, H, W, 1); got {x.shape} and {y.shape}")
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a[..., 0], dtype=np.float32)).unsqueeze(1)
    return SliceData(to_tensor(x), (to_tensor(y) > 0.5).float())


#: Where :func:`kaggle_hu` puts a Kaggle slice's two figures (:func:`_anchors`): the lung's median and the body's
#: soft tissue. Measured the same way on the shared references' lung slices brought to 64 pixels: the lung
#: -800 to -863 HU per scan (medians of its slices), -851 over all; the body -57 to 2 HU, -10.
KAGGLE_LUNG_HU = -851.0
KAGGLE_BODY_HU = -10.0


def _anchors(image: np.ndarray, lung: np.ndarray) -> tuple[float, float]:
    """One slice's two calibration figures: its lung's median, and the median of its body's soft tissue (the
    pixels outside the lung more than 40 % of the way from the lung's median to their own 99th percentile, that
    top 1 % of bone, metal or a window's clipped end left out). Only pixels brighter than the lung count, so the
    air around the body and the padding outside the field of view do not; a linear scaling moves both figures
    with the slice."""
    inside = float(np.median(image[lung]))
    rest = image[~lung]
    rest = rest[rest > inside]
    if not rest.size:
        return inside, inside
    top = float(np.percentile(rest, 99))
    body = rest[(rest > inside + 0.4 * (top - inside)) & (rest < top)]
    return inside, float(np.median(body)) if body.size else inside


def kaggle_hu(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The Kaggle slices' intensities (n, h, w) in [0, 1] brought back to HU, slice by slice.

    Each slice was windowed on its own: some across the scanner's padding outside the field of view (the lung
    mid-grey), some by a lung window. Each slice is scaled so that its lung's median and its body's soft tissue
    (:func:`_anchors`) land where the shared references' lie (:data:`KAGGLE_LUNG_HU`, :data:`KAGGLE_BODY_HU`);
    what is left is the scans' own differences (the lung's median spans about 60 HU among the shared scans).
    The padding falls below -1024 HU, into the window's floor.

    Raises:
        InputError: a slice with no lung in its mask, or whose two figures coincide.
    """
    out = np.empty(images.shape, dtype=np.float32)
    for i, (image, lung) in enumerate(zip(images, masks > 0.5)):
        if not lung.any():
            raise InputError(f"Kaggle slice {i} has no lung in its mask: its intensities cannot be calibrated")
        inside, body = _anchors(image, lung)
        if not body > inside:
            raise InputError(f"Kaggle slice {i} shows no soft tissue brighter than its lung: its intensities cannot be calibrated")
        out[i] = KAGGLE_LUNG_HU + (image - inside) * ((KAGGLE_BODY_HU - KAGGLE_LUNG_HU) / (body - inside))
    return out


def kaggle_training_slices(size: int = DEFAULT_INPUT_SIZE, window: HUWindow = DEFAULT_WINDOW,
                           data: str | os.PathLike | None = None) -> SliceData:
    """Every Kaggle ``x_train`` slice, with its human mask, as 3D training slices are: in HU (:func:`kaggle_hu`),
    windowed and brought to the network's size (the 64-pixel slices scaled up). Their pixel size is unknown."""
    slices = kaggle_slices("train", data)
    hu = kaggle_hu(slices.images[:, 0].numpy(), slices.targets[:, 0].numpy())
    return SliceData(to_network(hu, size, window), mask_to_network(slices.targets[:, 0] > 0.5, size),
                     torch.full((len(slices),), float("nan")))


#: Share of the training slices held out for choosing the epoch when no validation data is named:
#: ``lunggan train``, :meth:`LungGANLib.slicer.mrml.LungGANLogic.train`, Slicer's background training and
#: ``lunggan compare``'s 3D folds alike.
VALIDATION_FRACTION = 0.15
#: The same for the Kaggle slices' ``x_train``.
KAGGLE_VAL_FRACTION = 0.2


def split_validation(data: SliceData, fraction: float, seed: int = 0) -> tuple[SliceData, SliceData]:
    """Hold out a fixed random ``fraction`` of slices for validation (model selection, never the test set)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = max(1, round(len(data) * fraction))
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))


def augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation (±10°), scale (0.9-1.1), shift (±6 %) and left-right flip, the same for image and mask."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.06
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], dim=1), torch.stack([sin * flip, cos, shift[:, 1]], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Outside the slice is air: 0 in the window, 0 in the mask.
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x, y
