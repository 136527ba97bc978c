"""Training the generator, alone (baseline) or against one of the five LGAN critics.

:meth:`Trainer.fit` is a short loop of named steps, like nnU-Net's
``run_training``: per batch ``n_critic`` critic steps then one generator step
(the critic's ``requires_grad`` toggled as in pix2pix), then per epoch
validation and a checkpoint; the generator with the best validation score is
kept and exported: the validation Dice, or with lesion training the Dice on the
validation slices with synthetic lesions drawn in (a generator that drops
lesions must not win on references that never had any). Runs are seeded and
deterministic on CPU, and ``--resume`` continues an interrupted run exactly (weights, optimisers,
random streams and history are in the checkpoint).

Scale-out: launched by ``torchrun`` (``WORLD_SIZE`` > 1) the trainer joins the
process group (NCCL on GPUs, gloo on CPU) and wraps the generator and critic
in :class:`torch.nn.parallel.DistributedDataParallel`. Every process draws the
same global batch and augmentation and takes its share (``batch[rank::world]``),
so with per-slice normalisation (``norm="instance"`` in the generator) two
processes compute what one process computes on the whole batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..config import DEFAULT_WINDOW
from ..errors import InputError
from ..evaluate import metrics
from ..models import Generator
from ..models.device import resolve_device
from ..models.weights import ModelInfo, load_model, save_model
from ..segment.preprocess import own_slice
from . import checkpoints
from .appearance import augment_appearance
from .datasets import SliceData, augment, prepare_slices
from .lesion_synthesis import augment_lesions, with_lesions
from .losses import CriticTerms, clip_weights, critic_loss, generator_loss
from .train_config import EpochRecord, StepLosses, TrainConfig
from .variants import get_variant

logger = logging.getLogger(__name__)

#: Lung denser than this (HU) is what a threshold cuts out: nodules, masses, consolidation.
DENSE_LUNG_HU = -320.0
#: The validation slices' synthetic lesions are drawn once, with this seed: every epoch meets the same ones.
LESION_VALIDATION_SEED = 2020

__all__ = ["EpochRecord", "SliceData", "StepLosses", "TrainConfig", "Trainer", "export_model", "prepare_slices"]


def _set_requires_grad(module: torch.nn.Module | None, flag: bool) -> None:
    if module is not None:
        for parameter in module.parameters():
            parameter.requires_grad_(flag)


def _join_process_group(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's process group if there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device)
    if world == 1:
        return 0, 1, resolved
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    if resolved.type == "cuda":
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(resolved)
    return dist.get_rank(), dist.get_world_size(), resolved


class Trainer:
    """Trains a generator, with the critic its variant names; checkpoints every epoch.

    Args:
        config: the run's settings.
        run_dir: folder for ``checkpoint.safetensors``, ``log.csv``, ``curves.png``
            and ``best.safetensors``.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        init_model: generator weights to start from (fine-tuning); None starts from scratch.

    Raises:
        ValueError: unusable settings (see :meth:`TrainConfig.validate`).
        InputError: ``init_model`` has another generator shape.

    Example:
        >>> trainer = Trainer(TrainConfig(variant="regression", epochs=5), "runs/regression")
        >>> best = trainer.fit(train_slices, val_slices)
    """

    def __init__(
        self, config: TrainConfig, run_dir: str | os.PathLike, device: str = "auto", init_model: str | None = None
    ) -> None:
        config.validate()
        self.config = config
        self.variant = get_variant(config.variant)
        self.rank, self.world, self.device = _join_process_group(device)
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of the {self.world} processes")
        self.run_dir = Path(run_dir)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        self.rng = torch.Generator().manual_seed(config.seed)
        if init_model:
            self.generator, info = load_model(init_model, self.device)
            if (info.config, info.context_mm) != (config.generator, config.context_mm):
                raise InputError(f"{init_model} has generator shape {info.config} with neighbouring slices {info.context_mm} mm "
                                 f"away, the run asks for {config.generator} with {config.context_mm}: pass its --context-mm")
        else:
            self.generator = Generator(config.generator).to(self.device)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.critic = self.variant.build_critic(config.critic)
        self.critic_optimizer = None
        if self.critic is not None:
            self.critic.to(self.device)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, betas=(0.5, 0.9))
        # What the steps call: the modules themselves, or their DDP wrappers across processes.
        self._generator, self._critic = self.generator, self.critic
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._generator = DistributedDataParallel(self.generator, device_ids=ids)
            if self.critic is not None:
                self._critic = DistributedDataParallel(self.critic, device_ids=ids)
        self.epoch = 0
        self.best_dice = -1.0
        self.history: list[EpochRecord] = []

    @property
    def is_main(self) -> bool:
        """Only the first process writes files."""
        return self.rank == 0

    def _parts(self) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
        parts = {"generator": (self.generator, self.optimizer)}
        if self.critic is not None:
            parts["critic"] = (self.critic, self.critic_optimizer)
        return parts

    # -- named steps ---------------------------------------------------------------------------

    def lr_at(self, epoch: int) -> float:
        """Cosine schedule from ``lr`` to 0 over the run (stateless, so resuming is exact)."""
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.config.epochs))

    def critic_step(self, fake: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epsilon: torch.Tensor) -> CriticTerms:
        """One critic update on E[D(fake)] - E[D(real)] (+ penalty); clips weights under ``"clip"``."""
        _set_requires_grad(self.critic, True)
        self.critic.train()
        terms = critic_loss(self._critic, fake, x, y, self.config.lipschitz, self.config.gp_weight, epsilon)
        self.critic_optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        self.critic_optimizer.step()
        if self.config.lipschitz == "clip":
            clip_weights(self.critic, self.config.clip)
        return terms

    def pixel_weights(self, x: torch.Tensor, y: torch.Tensor, drawn: torch.Tensor | None = None) -> torch.Tensor | None:
        """BCE weights: ``dense_weight`` on lung pixels denser than ``DENSE_LUNG_HU``, ``lesion_weight`` on
        the pixels the augmentations drew (``drawn`` > 0.5), the larger where both apply; 1 elsewhere."""
        dense_w, lesion_w = self.config.dense_weight, self.config.lesion_weight
        if dense_w == 1.0 and (lesion_w == 1.0 or drawn is None):
            return None
        x = own_slice(x)  # the slice the label is of
        weights = torch.ones_like(x)
        if dense_w != 1.0:
            dense = (y > 0.5) & (x > DEFAULT_WINDOW.scale(DENSE_LUNG_HU))
            weights = torch.where(dense, torch.full_like(x, dense_w), weights)
        if lesion_w != 1.0 and drawn is not None:
            weights = torch.maximum(weights, torch.where(drawn > 0.5, torch.full_like(x, lesion_w), weights))
        return weights

    def generator_step(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, drawn: torch.Tensor | None = None):
        """One generator update on BCE(G(x), y) - lambda * E[D(G(x))], the critic frozen."""
        _set_requires_grad(self.critic, False)
        terms = generator_loss(logits, x, y, self.critic, self.config.adv_weight, self.pixel_weights(x, y, drawn))
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        self.optimizer.step()
        return terms

    def train_step(self, x: torch.Tensor, y: torch.Tensor, drawn: torch.Tensor | None = None) -> StepLosses:
        """One global batch: this process's share, ``n_critic`` critic steps, one generator step.

        ``drawn`` marks the pixels the lesion augmentations drew (for ``lesion_weight``).
        """
        n = x.shape[0]
        epsilons = [torch.rand(n, generator=self.rng) for _ in range(self.config.n_critic if self.critic else 0)]
        share = slice(self.rank, None, self.world)
        x, y = x[share].to(self.device), y[share].to(self.device)
        if drawn is not None:
            drawn = drawn[share].to(self.device)
        self.generator.train()
        logits = self._generator(x)
        critic_terms = []
        if self.critic is not None:
            fake = torch.sigmoid(logits.detach())
            critic_terms = [self.critic_step(fake, x, y, e[share]) for e in epsilons]
        terms = self.generator_step(logits, x, y, drawn)
        losses = StepLosses(float(terms.loss.detach()), terms.bce, terms.adversarial)
        if critic_terms:
            last = critic_terms[-1]
            losses.critic, losses.em_distance, losses.penalty = float(last.loss.detach()), last.em_distance, last.penalty
        return losses

    def batch(self, data: SliceData, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The slices ``index`` as a training batch: lesions and hard negatives drawn in, the random affine,
        then the scan's appearance, each when configured.

        Returns:
            Inputs, targets, and the pixels the lesion augmentations drew (None when they are off).
        """
        part = data.subset(index)
        x, y, drawn = part.images, part.targets, None
        if self.config.lesion_options.active:
            # Drawn before the affine augmentation, on the slice's own pixel grid (its size in mm is known).
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.rng))
            x, y, drawn = augment_lesions(x, y, part.pixel_mm, self.config.lesion_options, np.random.default_rng(seed),
                                          part.neighbour_mm)
        if self.config.augment:
            # The drawn pixels move with the label: warp them as a second target channel.
            x, targets = augment(x, y if drawn is None else torch.cat([y, drawn], dim=1), self.rng)
            y, drawn = (targets, None) if drawn is None else (targets[:, :1], targets[:, 1:])
        # How the scan looks, last: a coarse or noisy scan blurs the lesions and the lung alike.
        x = augment_appearance(x, y, self.config.appearance, self.rng)
        return x, y, drawn

    def train_epoch(self, data: SliceData, on_step: Callable[[int, int, StepLosses], None] | None = None) -> StepLosses:
        """One shuffled pass over the training slices; returns the mean of each loss.

        On several processes the last, incomplete batch is dropped (every process
        needs a share); on one it is used.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.epoch)
        order = torch.randperm(len(data), generator=self.rng)
        bs = self.config.batch_size
        steps = len(data) // bs if self.world > 1 else math.ceil(len(data) / bs)
        if self.config.steps_per_epoch:
            steps = min(steps, self.config.steps_per_epoch)
        if steps == 0:
            raise InputError(f"{len(data)} training slices are fewer than one batch of {bs}")
        records = []
        for step in range(steps):
            records.append(self.train_step(*self.batch(data, order[step * bs : (step + 1) * bs])))
            if on_step:
                on_step(step + 1, steps, records[-1])
        return StepLosses(*(float(np.mean(values)) for values in zip(*(asdict(r).values() for r in records))))

    def _predict(self, data: SliceData) -> tuple[np.ndarray, float]:
        """The generator's masks (probability above 0.5) of all ``data``'s slices, and the mean BCE."""
        self.generator.eval()
        probs, losses = [], []
        with torch.inference_mode():
            for start in range(0, len(data), 32):
                x = data.images[start : start + 32].to(self.device)
                y = data.targets[start : start + 32].to(self.device)
                logits = self.generator(x)
                losses.append(float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum")))
                probs.append(torch.sigmoid(logits).cpu())
        return torch.cat(probs).numpy() > 0.5, sum(losses) / data.targets.numel()

    def validate(self, data: SliceData) -> tuple[float, float, float]:
        """BCE, Dice and IoU at network resolution over all validation slices."""
        pred, loss = self._predict(data)
        target = data.targets.numpy() > 0.5
        dice, iou = float(metrics.dice(pred, target)), float(metrics.iou(pred, target))
        return loss, dice, iou

    def lesion_validation(self, val: SliceData) -> tuple[SliceData, torch.Tensor] | None:
        """``val`` with this run's lesions drawn in (see :func:`~.lesion_synthesis.with_lesions`), or None."""
        return with_lesions(val, self.config.lesion_options, LESION_VALIDATION_SEED)

    def validate_lesions(self, data: SliceData, drawn: torch.Tensor) -> tuple[float, float | None]:
        """Dice on slices with lesions drawn in, and the share of the drawn pixels kept as lung (None: none drawn)."""
        pred, _ = self._predict(data)
        marked = drawn.numpy() > 0.5
        kept = float(pred[marked].mean()) if marked.any() else None
        return float(metrics.dice(pred, data.targets.numpy() > 0.5)), kept

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.safetensors"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.safetensors"

    def save_checkpoint(self) -> Path:
        """Write networks, optimisers, random state, epoch and history atomically (first process only)."""
        return checkpoints.save(self)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> None:
        """Resume from a checkpoint written by :meth:`save_checkpoint` (see :func:`LungGANLib.train.checkpoints.load`)."""
        checkpoints.load(self, Path(path or self.checkpoint_path))

    def write_log(self) -> Path:
        """Write the per-epoch log as CSV and the curves as PNG (atomically)."""
        return checkpoints.write_log(self)

    @property
    def epochs_without_improvement(self) -> int:
        """Epochs run since the best validation score so far (all epochs run when none improved on the start)."""
        if not self.history:
            return 0
        # Scores of one kind only: a run resumed across the change to lesion-aware validation has both.
        lesion_scored = self.history[-1].val_lesion_dice is not None
        scores = [r.score for r in self.history if (r.val_lesion_dice is not None) == lesion_scored]
        return len(scores) - 1 - int(np.argmax(scores))

    @property
    def stalled(self) -> bool:
        """The validation score has not improved for ``config.patience`` epochs."""
        return self.config.patience is not None and self.epochs_without_improvement >= self.config.patience

    def info(self) -> ModelInfo:
        return ModelInfo(self.config.generator, self.config.input_size, DEFAULT_WINDOW, context_mm=self.config.context_mm)

    def checkpoint(self, record: EpochRecord, card: dict | None) -> None:
        """Keep the generator if it is the best so far, then checkpoint and log (first process only)."""
        if record.score > self.best_dice:  # the best score so far (the name is the checkpoints')
            self.best_dice = record.score
            if self.is_main:
                scores = {"epoch": self.epoch, "val_dice_network_resolution": round(record.val_dice, 5), "val_iou_network_resolution": round(record.val_iou, 5)}
                if record.val_lesion_dice is not None:
                    scores["val_dice_with_synthetic_lesions"] = round(record.val_lesion_dice, 5)
                    scores["synthetic_lesion_pixels_kept"] = None if record.val_lesions_kept is None else round(record.val_lesions_kept, 5)
                    scores["kept_by"] = "val_dice_with_synthetic_lesions"
                card = {**(card or {}), "variant": self.config.variant, "validation": scores, "training": self.config.to_dict()}
                save_model(self.generator, self.info(), self.best_path, card)
        if self.is_main:
            self.save_checkpoint()
            self.write_log()
        if self.world > 1:
            dist.barrier()

    # -- the loop ------------------------------------------------------------------------------

    def fit(
        self,
        train: SliceData,
        val: SliceData,
        card: dict | None = None,
        on_step: Callable[[int, int, StepLosses], None] | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Path:
        """Train until ``config.epochs`` (or until validation stalls for ``config.patience`` epochs),
        keeping the generator with the best validation score (:attr:`EpochRecord.score`).

        Args:
            train, val: prepared slices (see :func:`LungGANLib.train.datasets.prepare_slices`).
            card: model card fields for the exported model.
            on_step: called with (step, steps, losses) after each step.
            on_epoch: called with each epoch's record.
            should_stop: polled after each epoch; True ends the run after its checkpoint.

        Returns:
            The best model's weights file (``run_dir/best.safetensors``).
        """
        lesion_val = self.lesion_validation(val)
        if lesion_val is not None and any(r.val_lesion_dice is None for r in self.history):
            logger.warning("this run's earlier epochs were kept by their validation Dice alone; from epoch %d on, the "
                           "Dice with synthetic lesions drawn in keeps the epoch", self.epoch + 1)
            self.best_dice = -1.0  # the two scores do not compare
        while self.epoch < self.config.epochs and not self.stalled:
            start = time.perf_counter()
            lr = self.lr_at(self.epoch)
            losses = self.train_epoch(train, on_step)
            val_loss, val_dice, val_iou = self.validate(val)
            lesion_dice, kept = self.validate_lesions(*lesion_val) if lesion_val is not None else (None, None)
            self.epoch += 1
            record = EpochRecord(
                self.epoch, lr, losses.generator, losses.bce, losses.adversarial, losses.critic, losses.em_distance,
                losses.penalty, val_loss, val_dice, val_iou, time.perf_counter() - start, lesion_dice, kept,
            )
            self.history.append(record)
            self.checkpoint(record, card)
            if on_epoch:
                on_epoch(record)
            if should_stop and should_stop():
                break
        return self.best_path


def export_model(best: str | os.PathLike, output: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write a run's best generator, with its card, under its final name (atomically; no-clobber without ``overwrite``)."""
    generator, info = load_model(best)
    return save_model(generator, info, output, info.card, overwrite=overwrite)
