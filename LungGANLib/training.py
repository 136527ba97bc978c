"""Training the generator on CT volumes with lung masks.

The trainer's :meth:`Trainer.fit` is a short loop of named steps: one epoch of
generator steps, validation, checkpoint, export of the best model. This file
trains the baseline (BCE only); the adversarial variants add a critic step to
the same loop.

Data are slices of annotated volumes, brought to the network's input size once
(:func:`prepare_slices`). Only slices that can hold lung (some low-density
voxels inside the body) are used, the same slices inference runs the network on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .classical import body_mask
from .config import DEFAULT_INPUT_SIZE, DEFAULT_WINDOW, HUWindow
from .errors import InputError
from .inference import lung_slices, resolve_device
from .io import CTVolume, atomic_write, clip_air
from .model_io import ModelInfo, load_model, save_model
from .models import Generator, GeneratorConfig
from .preprocess import mask_to_network, to_network

logger = logging.getLogger(__name__)


@dataclass
class SliceData:
    """Network-ready slices: inputs (n, 1, s, s) in [0, 1], targets (n, 1, s, s) lung fractions."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def prepare_slices(
    pairs: Sequence[tuple[CTVolume, np.ndarray]], size: int = DEFAULT_INPUT_SIZE, window: HUWindow = DEFAULT_WINDOW
) -> SliceData:
    """Bring the lung-bearing slices of (volume, labels) pairs to the network's size.

    Args:
        pairs: CT volumes with (z, y, x) label arrays on their canonical grid
            (any label > 0 is lung).
        size: network input side.
        window: HU window.

    Raises:
        InputError: a mask does not have its volume's shape.
    """
    images, targets = [], []
    for volume, labels in pairs:
        if labels.shape != volume.array.shape:
            raise InputError(
                f"mask shape {labels.shape} differs from CT shape {volume.array.shape} ({volume.source}): "
                "give each CT its own mask"
            )
        hu = clip_air(volume.array)
        keep = np.union1d(lung_slices(hu, body_mask(hu)), np.flatnonzero(labels.any(axis=(1, 2))))
        for start in range(0, len(keep), 32):
            index = keep[start : start + 32]
            images.append(to_network(hu[index], size, window))
            targets.append(mask_to_network(labels[index] > 0, size))
    if not images:
        raise InputError("no training slices: the volumes hold no slice with lung")
    return SliceData(torch.cat(images), torch.cat(targets))


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


def soft_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Dice of thresholded predictions against thresholded targets over the whole set."""
    p, t = pred > 0.5, target > 0.5
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


@dataclass
class TrainConfig:
    """Settings of a training run (stored in checkpoints and model cards).

    Attributes:
        variant: ``"baseline"`` (BCE only) here; the adversarial variants come with their critics.
        epochs: passes over the training slices.
        batch_size: slices per step.
        lr: Adam learning rate (cosine-decayed to 0 over the run).
        weight_decay: Adam weight decay.
        seed: seeds weights, shuffling and augmentation.
        augment: random affine and flips.
        input_size: network input side.
        generator: the generator's shape.
    """

    variant: str = "baseline"
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    augment: bool = True
    input_size: int = DEFAULT_INPUT_SIZE
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["generator"] = self.generator.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["generator"] = GeneratorConfig.from_dict(data.get("generator", {}))
        return cls(**data)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train."""
        if self.variant != "baseline":
            raise ValueError(f"unknown variant {self.variant!r}: available: baseline")
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.input_size % 2**self.generator.depth:
            raise ValueError(f"input_size {self.input_size} must be a multiple of {2**self.generator.depth}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class EpochRecord:
    """One line of the training log."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    val_dice: float
    seconds: float


class Trainer:
    """Trains a generator; checkpoints every epoch so a run can resume.

    Args:
        config: the run's settings.
        run_dir: folder for ``checkpoint.safetensors``, ``log.csv`` and the best model.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        init_model: weights file to start from (fine-tuning); None starts from scratch.
    """

    def __init__(
        self, config: TrainConfig, run_dir: str | os.PathLike, device: str = "auto", init_model: str | None = None
    ) -> None:
        config.validate()
        self.config = config
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(device)
        torch.manual_seed(config.seed)
        self.rng = torch.Generator().manual_seed(config.seed)
        if init_model:
            self.generator, info = load_model(init_model, self.device)
            if info.config != config.generator:
                raise InputError(f"{init_model} has generator shape {info.config}, the run asks for {config.generator}")
        else:
            self.generator = Generator(config.generator).to(self.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.epoch = 0
        self.best_dice = -1.0
        self.history: list[EpochRecord] = []

    # -- named steps ---------------------------------------------------------------------------

    def lr_at(self, epoch: int) -> float:
        """Cosine schedule from ``lr`` to 0 over the run (stateless, so resuming is exact)."""
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.config.epochs))

    def generator_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on BCE(G(x), y)."""
        self.generator.train()
        logits = self.generator(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def train_epoch(self, data: SliceData, on_step: Callable[[int, int, float], None] | None = None) -> float:
        """One shuffled pass over the training slices; returns the mean loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.epoch)
        order = torch.randperm(len(data), generator=self.rng)
        bs = self.config.batch_size
        steps = math.ceil(len(data) / bs)
        losses = []
        for step in range(steps):
            index = order[step * bs : (step + 1) * bs]
            x, y = data.images[index], data.targets[index]
            if self.config.augment:
                x, y = augment(x, y, self.rng)
            losses.append(self.generator_step(x.to(self.device), y.to(self.device)))
            if on_step:
                on_step(step + 1, steps, losses[-1])
        return float(np.mean(losses))

    def validate(self, data: SliceData) -> tuple[float, float]:
        """BCE and Dice (at network resolution, over all validation slices)."""
        self.generator.eval()
        probs, losses = [], []
        with torch.inference_mode():
            for start in range(0, len(data), 32):
                x = data.images[start : start + 32].to(self.device)
                y = data.targets[start : start + 32].to(self.device)
                logits = self.generator(x)
                losses.append(float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum")))
                probs.append(torch.sigmoid(logits).cpu())
        loss = sum(losses) / data.targets.numel()
        return loss, soft_dice(torch.cat(probs), data.targets)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.safetensors"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.safetensors"

    def save_checkpoint(self) -> Path:
        """Write generator, optimiser, RNG state and epoch atomically."""
        tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        state = self.optimizer.state_dict()
        for index, slots in state["state"].items():
            for name, value in slots.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["rng.shuffle"] = self.rng.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "epoch": str(self.epoch),
            "best_dice": repr(self.best_dice),
            "config": json.dumps(self.config.to_dict()),
            "param_groups": json.dumps(state["param_groups"]),
            "history": json.dumps([asdict(r) for r in self.history]),
        }
        return atomic_write(self.checkpoint_path, lambda tmp: save_file(tensors, tmp, metadata=meta))

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Resume from a checkpoint written by :meth:`save_checkpoint`.

        Raises:
            InputError: missing or corrupt checkpoint, or one from a run with other settings.
        """
        path = Path(path or self.checkpoint_path)
        if not path.is_file():
            raise InputError(f"no checkpoint to resume from at {path}: run without --resume first")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata()
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InputError(f"checkpoint {path} is unreadable ({exc}): start a new run") from None
        saved = TrainConfig.from_dict(json.loads(meta["config"]))
        mine, theirs = self.config.to_dict(), saved.to_dict()
        mine.pop("epochs"), theirs.pop("epochs")
        if mine != theirs:
            raise InputError(f"checkpoint {path} was written with other settings ({theirs}); resume with the same ones")
        self.generator.load_state_dict({k[len("generator.") :]: v for k, v in tensors.items() if k.startswith("generator.")})
        opt_state: dict = {"state": {}, "param_groups": json.loads(meta["param_groups"])}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                opt_state["state"].setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
        self.optimizer.load_state_dict(opt_state)
        self.rng.set_state(tensors["rng.shuffle"])
        torch.set_rng_state(tensors["rng.torch"])
        self.epoch = int(meta["epoch"])
        self.best_dice = float(meta["best_dice"])
        self.history = [EpochRecord(**r) for r in json.loads(meta["history"])]

    def write_log(self) -> Path:
        """Write the per-epoch log as CSV (atomically)."""
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(EpochRecord.__dataclass_fields__))
                writer.writeheader()
                for record in self.history:
                    writer.writerow(asdict(record))

        return atomic_write(self.run_dir / "log.csv", write)

    def info(self) -> ModelInfo:
        return ModelInfo(self.config.generator, self.config.input_size, DEFAULT_WINDOW)

    # -- the loop ------------------------------------------------------------------------------

    def fit(
        self,
        train: SliceData,
        val: SliceData,
        card: dict | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Path:
        """Train until ``config.epochs``, keeping the generator with the best validation Dice.

        Args:
            train, val: prepared slices (see :func:`prepare_slices`).
            card: model card fields for the exported model.
            on_step: called with (step, steps, loss) after each step.
            on_epoch: called with each epoch's record.
            should_stop: polled after each epoch; True ends the run after its checkpoint.

        Returns:
            The best model's weights file (``run_dir/best.safetensors``).
        """
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            lr = self.lr_at(self.epoch)
            train_loss = self.train_epoch(train, on_step)
            val_loss, val_dice = self.validate(val)
            self.epoch += 1
            record = EpochRecord(self.epoch, lr, train_loss, val_loss, val_dice, time.perf_counter() - start)
            self.history.append(record)
            if val_dice > self.best_dice:
                self.best_dice = val_dice
                scores = {"epoch": self.epoch, "val_dice_network_resolution": round(val_dice, 5)}
                save_model(self.generator, self.info(), self.best_path, {**(card or {}), "validation": scores, "training": self.config.to_dict()})
            self.save_checkpoint()
            self.write_log()
            if on_epoch:
                on_epoch(record)
            if should_stop and should_stop():
                break
        return self.best_path


def _load_pairs(pairs: Sequence[Sequence[str]]) -> list[tuple[CTVolume, np.ndarray]]:
    from .io import load_ct, mask_from_image, read_image

    loaded = []
    for ct_path, mask_path in pairs:
        volume = load_ct(ct_path)
        mask_image, _ = read_image(mask_path)
        loaded.append((volume, mask_from_image(mask_image, volume)))
    return loaded


def export_model(best: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write a run's best generator, with its card, under its final name (atomically)."""
    generator, info = load_model(best)
    return save_model(generator, info, output, info.card)


def run_training(args) -> Path:
    """``lunggan train``: load the data, fit, export the best generator with its card.

    Args:
        args: the parsed command line (see :mod:`LungGANLib.cli`).

    Returns:
        The exported model path.
    """
    import shlex
    import sys

    from tqdm import tqdm

    from .references import CASES, data_dir, reference_path

    output = Path(args.output)
    if output.exists() and not args.overwrite and not args.resume:
        raise InputError(f"output model {output} exists: choose another name or pass --overwrite")
    if output.suffix != ".safetensors":
        raise InputError(f"output model {output} must end in .safetensors")
    train_pairs, val_pairs = [list(p) for p in args.pair], [list(p) for p in args.val_pair]
    data_names: dict[str, list[str]] = {"train": [], "validation": []}
    if args.references:
        names = {c.name for c in CASES}
        unknown = set(args.val_case) - names
        if unknown or not args.val_case:
            raise InputError(f"--references needs --val-case among: {', '.join(sorted(names))}")
        for case in CASES:
            pair = [str(data_dir() / case.ct), str(reference_path(case))]
            (val_pairs if case.name in args.val_case else train_pairs).append(pair)
            data_names["validation" if case.name in args.val_case else "train"].append(case.name)
    else:
        data_names = {"train": [p[0] for p in train_pairs], "validation": [p[0] for p in val_pairs]}
    if not train_pairs or not val_pairs:
        raise InputError("training needs --pair CT MASK (or --references) and at least one validation pair (--val-pair or --val-case)")

    config = TrainConfig(
        variant=args.variant,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        augment=not args.no_augment,
        input_size=args.input_size,
        generator=GeneratorConfig(base_channels=args.base_channels, depth=args.depth),
    )
    try:
        trainer = Trainer(config, args.run_dir, args.device, args.init_model)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.resume:
        trainer.load_checkpoint()
        logger.info("resuming at epoch %d", trainer.epoch)
    train = prepare_slices(_load_pairs(train_pairs), config.input_size)
    val = prepare_slices(_load_pairs(val_pairs), config.input_size)
    print(f"training on {len(train)} slices, validating on {len(val)}, device {trainer.device}", file=sys.stderr)
    card = {
        "name": output.stem,
        "variant": config.variant,
        "data": data_names,
        "training_command": "lunggan " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])),
        "torch": torch.__version__,
    }
    bar = {"bar": None}

    def on_step(step: int, steps: int, loss: float) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=steps, desc=f"epoch {trainer.epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
        bar["bar"].update(1)
        bar["bar"].set_postfix(loss=f"{loss:.4f}")
        if step == steps:
            bar["bar"].close()
            bar["bar"] = None

    def on_epoch(r: EpochRecord) -> None:
        print(
            f"epoch {r.epoch}: train loss {r.train_loss:.4f}, val loss {r.val_loss:.4f}, val Dice {r.val_dice:.4f} ({r.seconds:.0f} s)",
            file=sys.stderr,
        )

    best = trainer.fit(train, val, card, on_step, on_epoch)
    export_model(best, output)
    print(f"best validation Dice {trainer.best_dice:.4f}; model written to {output}", file=sys.stderr)
    return output
