"""The generator's pass over a CT's axial slices: a batch at a time, its probabilities thresholded to a mask."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError
from ..models import Generator
from ..models.device import free_memory
from ..models.weights import ModelInfo
from .preprocess import context_offset, from_network, network_input

#: Slices per forward pass: 8 on the CPU (the fastest in benchmarks/network.py on 2 cores), 64 on a GPU.
CPU_BATCH_SIZE, GPU_BATCH_SIZE = 8, 64

#: Progress callback: (slices done, slices in all).
Progress = Callable[[int, int], None]


def check_batch_fits(batch_size: int, info: ModelInfo, device: torch.device) -> None:
    """Refuse a batch whose activations would not fit in the free memory (a crash after minutes otherwise): a
    slice's activations are about 8 float32 maps of the first level's width at the input size (the deeper levels
    add less than that); half the free memory may go to them."""
    per_slice = info.input_size**2 * 4 * info.config.base_channels * 8
    free = free_memory(device)
    if free is not None and batch_size * per_slice > free // 2:
        most = max(1, free // 2 // per_slice)
        raise InputError(
            f"--batch-size {batch_size} needs about {batch_size * per_slice / 1e9:.1f} GB, more than half the "
            f"{free / 1e9:.1f} GB free on {device.type}: use at most {most}"
        )


def probability_batches(
    hu: np.ndarray,
    generator: Generator,
    info: ModelInfo,
    device: torch.device,
    batch_size: int = 16,
    slices: np.ndarray | None = None,
    slice_mm: float = 0.0,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Run the generator over axial slices, a batch at a time (batch norm folded in, channels last on the CPU).

    Args:
        hu: (z, y, x) HU, canonical orientation.
        generator, info: the network, in eval mode, on ``device``, and its preprocessing settings.
        device, batch_size: where to compute, and slices per forward pass.
        slices: indices of slices to run (default: all).
        slice_mm: the slice spacing, mm: where a 2.5D generator's neighbouring slices lie (``info.context_mm``).

    Yields:
        Each batch's slice indices and the generator's lung probabilities on their slice grid, (n, y, x) float32
        on ``device``. Torch's inference mode is on while the caller holds a batch.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    depth, height, width = hu.shape
    todo = np.arange(depth) if slices is None else np.asarray(slices, dtype=int)
    channels_last, offset = device.type == "cpu", context_offset(info.context_mm, slice_mm)
    generator = generator.fused()
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            index = todo[start : start + batch_size]
            x = network_input(hu, index, info.input_size, info.window, offset)
            x = x.to(device, memory_format=torch.channels_last) if channels_last else x.to(device)
            yield index, from_network(torch.sigmoid(generator(x)).float(), height, width)


def predict_probabilities(
    hu: np.ndarray,
    generator: Generator,
    info: ModelInfo,
    device: torch.device,
    batch_size: int = 16,
    slices: np.ndarray | None = None,
    progress: Progress | None = None,
    slice_mm: float = 0.0,
    frame: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """Run the generator over axial slices (:func:`probability_batches`) and return binary lung masks.

    Args:
        hu, generator, info, device, batch_size, slice_mm: as :func:`probability_batches` takes them.
        slices: indices of slices to run (default: all); the rest stay empty.
        progress: called with (done, total) after each batch.
        frame: the rows and columns shown to the generator (:func:`~.preprocess.lung_frame`); None: all.

    Returns:
        Boolean (z, y, x) mask: probability above ``info.threshold``.
    """
    out = np.zeros(hu.shape, dtype=bool)
    total = hu.shape[0] if slices is None else len(slices)
    done, (rows, cols) = 0, frame or (slice(None), slice(None))
    for index, prob in probability_batches(hu[:, rows, cols], generator, info, device, batch_size, slices, slice_mm):
        out[index, rows, cols] = (prob > info.threshold).cpu().numpy()
        done += len(index)
        if progress:
            progress(done, total)
    return out
