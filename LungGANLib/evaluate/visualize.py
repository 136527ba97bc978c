"""Overlay pictures of masks on CT: single slices and slice mosaics (PNG).

Used to check reference masks slice by slice and for the README's picture.
Pure numpy; PNG files are written with imageio (a scikit-image dependency).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: Overlay colours (RGB) by label: right lung, left lung, extra (e.g. nodule outlines).
LABEL_COLOURS = {1: (0, 200, 80), 2: (40, 120, 255), 3: (255, 60, 40)}


def window(hu: np.ndarray, low: float = -1200.0, high: float = 400.0) -> np.ndarray:
    """Map HU to grey levels 0..255 (a lung-friendly window by default)."""
    return (np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def _boundary(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_slice(hu_slice: np.ndarray, labels: np.ndarray | None, alpha: float = 0.35) -> np.ndarray:
    """RGB picture of one axial slice with labels tinted and outlined.

    Args:
        hu_slice: (y, x) HU.
        labels: (y, x) integer labels, or None.
        alpha: tint strength inside each label.

    Returns:
        (y, x, 3) uint8 image, anterior up and the patient's right on the left
        (radiological convention, as the canonical LPS array is laid out).
    """
    grey = window(hu_slice).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if labels is not None:
        for value, colour in LABEL_COLOURS.items():
            region = labels == value
            if not region.any():
                continue
            colour_arr = np.asarray(colour, dtype=np.float32)
            rgb[region] = (1 - alpha) * rgb[region] + alpha * colour_arr
            rgb[_boundary(region)] = colour_arr
    return rgb.astype(np.uint8)


def _shrink(image: np.ndarray, size: int) -> np.ndarray:
    step = max(int(np.ceil(max(image.shape[:2]) / size)), 1)
    return image[::step, ::step]


def _draw_box(image: np.ndarray, box, colour=(255, 220, 0)) -> None:
    """Outline a box (rows y0, y1, columns x0, x1; end excluded) on an RGB slice, two pixels wide."""
    y0, y1, x0, x1 = (int(v) for v in box)
    y0, x0 = max(y0 - 2, 0), max(x0 - 2, 0)
    y1, x1 = min(y1 + 2, image.shape[0]), min(x1 + 2, image.shape[1])
    for rows, cols in ((slice(y0, y0 + 2), slice(x0, x1)), (slice(y1 - 2, y1), slice(x0, x1)),
                       (slice(y0, y1), slice(x0, x0 + 2)), (slice(y0, y1), slice(x1 - 2, x1))):
        image[rows, cols] = colour


def mosaic(
    hu: np.ndarray,
    labels: np.ndarray | None,
    slices: list[int] | None = None,
    columns: int = 8,
    tile: int = 256,
    boxes: dict[int, list] | None = None,
    numbers: dict[int, int] | None = None,
    order: str = "top first",
) -> np.ndarray:
    """Tile overlays of several axial slices into one RGB image.

    Args:
        hu: (z, y, x) CT in HU.
        labels: (z, y, x) labels or None.
        slices: slice indices; default: every slice.
        columns: tiles per row.
        tile: largest side of a tile in pixels (slices are subsampled to fit).
        boxes: regions to outline, per slice (rows y0, y1, columns x0, x1).
        numbers: the number stamped on each slice's tile (default: its index ``z``).
        order: ``top first``, or ``as given`` (e.g. most suspicious first).
    """
    if slices is None:
        slices = list(range(hu.shape[0]))
    slices = sorted(slices, reverse=True) if order == "top first" else list(slices)
    tiles = []
    for z in slices:
        image = overlay_slice(hu[z], None if labels is None else labels[z])
        for box in (boxes or {}).get(z, []):
            _draw_box(image, box)
        tiles.append(_shrink(image, tile))
    th, tw = tiles[0].shape[:2]
    rows = int(np.ceil(len(tiles) / columns))
    sheet = np.zeros((rows * (th + 2), columns * (tw + 2), 3), dtype=np.uint8)
    for i, (z, image) in enumerate(zip(slices, tiles)):
        r, c = divmod(i, columns)
        y0, x0 = r * (th + 2), c * (tw + 2)
        sheet[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]] = image
        _stamp_number(sheet, (numbers or {}).get(z, z), y0 + 2, x0 + 2)
    return sheet


# 3x5 pixel digits, to stamp slice numbers without a font.
_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111",
}


def _stamp_number(image: np.ndarray, number: int, y: int, x: int, scale: int = 2) -> None:
    for k, ch in enumerate(str(number)):
        bits = np.array([int(b) for b in _DIGITS[ch]], dtype=bool).reshape(5, 3)
        glyph = np.kron(bits, np.ones((scale, scale), dtype=bool))
        ys, xs = y, x + k * 4 * scale
        region = image[ys : ys + glyph.shape[0], xs : xs + glyph.shape[1]]
        region[glyph[: region.shape[0], : region.shape[1]]] = (255, 255, 0)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an RGB uint8 image as PNG (atomically)."""
    import imageio.v3 as iio

    from ..io.output import atomic_write

    return atomic_write(path, lambda tmp: iio.imwrite(tmp, image), suffix=".png")


def plot_training_curves(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """PNG of a run's curves: generator/BCE/critic losses and validation Dice/IoU per epoch.

    Args:
        history: per-epoch records (see :class:`LungGANLib.train.trainer.EpochRecord`) as dicts.
        path: PNG to write (atomically).
        title: figure title (e.g. the variant).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.output import atomic_write

    epochs = [r["epoch"] for r in history]
    fig, (losses, scores) = plt.subplots(1, 2, figsize=(9, 3.4))
    losses.plot(epochs, [r["train_bce"] for r in history], label="train BCE")
    losses.plot(epochs, [r["val_loss"] for r in history], label="validation BCE")
    if any(r["critic_loss"] for r in history):
        losses.plot(epochs, [r["em_distance"] for r in history], label="critic's EM estimate")
    losses.set_xlabel("epoch")
    losses.set_yscale("symlog", linthresh=1e-2)
    losses.legend(fontsize=8)
    scores.plot(epochs, [r["val_dice"] for r in history], label="validation Dice")
    scores.plot(epochs, [r["val_iou"] for r in history], label="validation IoU")
    if any(r.get("val_lesion_dice") is not None for r in history):
        lesion_dice = [float("nan") if r.get("val_lesion_dice") is None else r["val_lesion_dice"] for r in history]
        scores.plot(epochs, lesion_dice, label="validation Dice, synthetic lesions drawn in")
    scores.set_xlabel("epoch")
    scores.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
