"""Model files: generator weights in safetensors, a JSON model card beside them.

A model is two files with one stem: ``NAME.safetensors`` (the generator's
tensors; its header metadata holds the network shape and preprocessing, so the
weights alone rebuild the model) and ``NAME.json`` (the model card: data,
input size, HU window, training command, validation scores). Nothing is
unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..config import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    ROOT,
    HUWindow,
)
from ..errors import ModelError
from ..io.output import atomic_write, verify_tensors, verify_text
from . import Generator, GeneratorConfig

FORMAT = "lunggan-generator"
FORMAT_VERSION = "1"

#: The model shipped with LungGAN.
DEFAULT_MODEL = ROOT / "Resources" / "Models" / "lunggan.safetensors"


@dataclass
class ModelInfo:
    """What a model needs around the network: preprocessing and its card.

    Attributes:
        config: the generator's shape.
        input_size: side of the square slice the generator sees, pixels.
        window: the HU window the input is scaled with.
        threshold: probability above which a pixel is lung.
        card: the model card (empty when the JSON file is absent).
        context_mm: 0, or how far the neighbouring slices a 2.5D generator sees lie from its slice, mm (its input
            has three channels: :func:`LungGANLib.segment.preprocess.network_input`).
    """

    config: GeneratorConfig
    input_size: int = DEFAULT_INPUT_SIZE
    window: HUWindow = DEFAULT_WINDOW
    threshold: float = DEFAULT_THRESHOLD
    card: dict = field(default_factory=dict)
    context_mm: float = 0.0

    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata (strings only)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generator": json.dumps(self.config.to_dict()),
            "input_size": str(self.input_size),
            "window": json.dumps([self.window.low, self.window.high]),
            "threshold": str(self.threshold),
        } | ({"context_mm": str(self.context_mm)} if self.context_mm else {})

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> ModelInfo:
        """Parse header metadata written by :meth:`metadata`."""
        if meta.get("format") != FORMAT:
            raise ModelError(f"{source} is not a LungGAN generator file (its metadata has no format={FORMAT!r})")
        try:
            config = GeneratorConfig.from_dict(json.loads(meta["generator"]))
            low, high = json.loads(meta["window"])
            return cls(config, int(meta["input_size"]), HUWindow(float(low), float(high)), float(meta["threshold"]),
                       context_mm=float(meta.get("context_mm", 0)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{source} has unreadable LungGAN metadata ({exc}): re-export the model") from None


def input_channels(context_mm: float) -> int:
    """The generator's input channels: the slice, and with ``context_mm`` its two neighbours
    (:func:`LungGANLib.segment.preprocess.network_input`)."""
    return 3 if context_mm else 1


#: What a model file may describe: anything outside is refused before a network is built.
LIMITS = {"depth": (1, 8), "base_channels": (1, 256), "input_size": (32, 1024)}
#: The most parameters a model's metadata may imply (the shipped generator has about 0.5 million).
MAX_PARAMETERS = 100_000_000
NORMS = ("batch", "instance", "none")


def implied_parameters(config: GeneratorConfig) -> int:
    """About how many weights a generator of this shape has (3x3 convolutions dominate), without building it."""
    total, previous = 0, config.in_channels
    for level in range(config.depth + 1):
        channels = config.base_channels * 2**level
        total += 9 * (previous * channels + channels * channels)  # encoder block (and bottleneck)
        previous = channels
    for level in reversed(range(config.depth)):
        channels = config.base_channels * 2**level
        total += 4 * 2 * channels * channels + 9 * (2 * channels * channels + channels * channels)  # up-conv, block
    return total


def check_model_info(info: ModelInfo, source: str) -> None:
    """Refuse metadata that describes an impossible, absurd or memory-exhausting model.

    Raises:
        ModelError: naming the setting and its allowed range.
    """
    config = info.config
    values = {"depth": config.depth, "base_channels": config.base_channels, "input_size": info.input_size}
    for name, (low, high) in LIMITS.items():
        value = values[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ModelError(f"{source} describes {name} {value!r}: LungGAN models have {low} to {high}; re-export the model")
    if not (math.isfinite(info.context_mm) and 0 <= info.context_mm <= 100):
        raise ModelError(f"{source} describes neighbouring slices {info.context_mm!r} mm away: LungGAN models have 0 to 100")
    channels = input_channels(info.context_mm)
    if (config.in_channels, config.out_channels) != (channels, 1):
        raise ModelError(f"{source} has {config.in_channels} input and {config.out_channels} output channels: a LungGAN "
                         f"generator {'with' if info.context_mm else 'without'} neighbouring slices needs {channels} and 1")
    if config.norm not in NORMS:
        raise ModelError(f"{source} describes normalisation {config.norm!r}: use one of {', '.join(NORMS)}")
    if not (isinstance(config.negative_slope, (int, float)) and math.isfinite(config.negative_slope) and 0 <= config.negative_slope < 1):
        raise ModelError(f"{source} describes a LeakyReLU slope {config.negative_slope!r}: it must be in [0, 1)")
    if info.input_size % 2**config.depth:
        raise ModelError(f"{source}: input size {info.input_size} is not divisible by 2**depth = {2**config.depth}")
    parameters = implied_parameters(config)
    if parameters > MAX_PARAMETERS:
        raise ModelError(f"{source} implies {parameters / 1e6:.0f} million weights (at most {MAX_PARAMETERS / 1e6:.0f} million): "
                         "not a LungGAN generator")
    low, high = info.window.low, info.window.high
    if not (math.isfinite(low) and math.isfinite(high) and -4000 <= low < high <= 4000):
        raise ModelError(f"{source} has the HU window [{low}, {high}]: it must be finite, low below high, within -4000..4000")
    if not (math.isfinite(info.threshold) and 0 < info.threshold < 1):
        raise ModelError(f"{source} has the threshold {info.threshold}: it must lie strictly between 0 and 1")


def card_path(weights: str | os.PathLike) -> Path:
    """The model card beside a weights file."""
    return Path(weights).with_suffix(".json")


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(generator: Generator, info: ModelInfo, path: str | os.PathLike, card: dict | None = None,
               overwrite: bool = True) -> Path:
    """Write a generator and its model card, each atomically.

    Args:
        generator: the network (its weights are copied to CPU float32).
        info: preprocessing settings stored with it.
        path: the ``.safetensors`` file to write; the card goes beside it.
        card: model card fields (data, training command, scores...).
        overwrite: replace an existing weights file (else it is kept and OutputExistsError raised).

    Returns:
        The weights path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelError(f"model file {path} must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in generator.state_dict().items() if v.is_floating_point()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items() if not v.is_floating_point()})
    metadata = info.metadata()
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), overwrite=overwrite,
                 verify=verify_tensors(tensors, metadata))
    # The fields that describe these weights come from them, whatever ``card`` says.
    described = {
        "format": FORMAT,
        "weights": path.name,
        "sha256": sha256(path),
        "parameters": int(sum(p.numel() for p in generator.parameters())),
        "generator": info.config.to_dict(),
        "input_size": info.input_size,
        "hu_window": [info.window.low, info.window.high],
        "threshold": info.threshold,
    } | ({"context_mm": info.context_mm} if info.context_mm else {})
    full_card = {**described, **{k: v for k, v in (card or {}).items() if k not in described}}
    text = json.dumps(full_card, indent=2) + "\n"
    atomic_write(card_path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), verify=verify_text(text))
    return path


def load_model(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> tuple[Generator, ModelInfo]:
    """Load a generator for inference (eval mode) from a safetensors file.

    Args:
        path: weights file; None for the shipped model.
        device: where to put the network.

    Returns:
        The generator and its :class:`ModelInfo`.

    Raises:
        ModelError: the file is missing, corrupt, not a LungGAN model, or its
            tensors do not fit the generator its metadata describes.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL
    if not path.is_file():
        raise ModelError(f"model file {path} not found: give a .safetensors file written by 'lunggan train'")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file (corrupt or truncated?): {exc}") from None
    info = ModelInfo.from_metadata(meta, str(path))
    check_model_info(info, str(path))
    bad = sorted(k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if bad:
        raise ModelError(f"{path} has weights that are NaN or infinite ({len(bad)} tensors, e.g. {bad[0]}): "
                         "the training diverged; use another checkpoint")
    try:
        generator = Generator(info.config)
    except ValueError as exc:
        raise ModelError(f"{path} describes an impossible generator: {exc}") from None
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} tensors of the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})")
        raise ModelError(f"{path} does not fit the generator it describes: {'; '.join(details)}")
    generator.load_state_dict(state)
    card = card_path(path)
    if card.is_file():
        try:
            info.card = json.loads(card.read_text())
        except ValueError:
            info.card = {}
    return generator.to(device).eval(), info
