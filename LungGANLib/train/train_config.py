"""The settings of a training run and what it records: :class:`TrainConfig`, :class:`EpochRecord`, :class:`StepLosses`.

One :class:`TrainConfig` serves ``lunggan train`` (from its options or a ``--config`` JSON
file), the Python API, ``lunggan compare`` and both ways of training in Slicer; it is
stored in checkpoints and model cards (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..config import DEFAULT_INPUT_SIZE
from ..models import GeneratorConfig
from ..models.critics import CriticConfig
from ..models.weights import input_channels
from .lesion_synthesis import LesionOptions
from .losses import LIPSCHITZ
from .variants import get_variant


@dataclass
class TrainConfig:
    """Settings of a training run (stored in checkpoints and model cards).

    Attributes:
        variant: ``"baseline"`` (BCE only) or a critic: ``basic``, ``product``,
            ``early-fusion``, ``late-fusion``, ``regression``.
        epochs: passes over the training slices.
        batch_size: slices per step (the global batch when run on several processes).
        lr: generator Adam learning rate (cosine-decayed to 0 over the run).
        weight_decay: generator Adam weight decay.
        seed: seeds weights, shuffling, augmentation and the penalty's interpolation.
        augment: random affine and flips.
        input_size: network input side.
        steps_per_epoch: at most this many steps per epoch (None: the whole set).
        n_critic: critic steps per generator step.
        adv_weight: lambda, the weight of the adversarial term in the generator loss.
        lipschitz: ``"gp"`` (gradient penalty) or ``"clip"`` (weight clipping).
        gp_weight: weight of the gradient penalty.
        clip: weight-clipping bound.
        critic_lr: critic Adam learning rate (betas 0.5, 0.9 as in WGAN-GP).
        generator: the generator's shape.
        critic: the critic's shape.
        lesions: probability that a training slice gets synthetic nodules or
            masses drawn into its lung (label unchanged; see
            :mod:`LungGANLib.train.lesion_synthesis`).
        dense_lung: probability of a dependent density gradient or patchy consolidation.
        masking: probability that a slice has most of its patches hidden (maskedSeg).
        hard_negatives: probability that a slice gets a mediastinal or hilar structure bulging into its lung,
            the label cut around it (:func:`~.lesion_synthesis.mediastinal_bulge`).
        dense_weight: BCE weight of *dense lung* pixels (label lung, input denser
            than ``DENSE_LUNG_HU``: nodules, masses, consolidation) against 1
            for the others; 1 weighs all pixels alike.
        lesion_weight: BCE weight of the lung pixels the lesion and dense-lung
            augmentations drew.
        appearance: probability that a slice is made to look like another scan
            (coarse, noisy, recalibrated, emphysematous; see :mod:`LungGANLib.train.appearance`).
        patience: stop once validation Dice has not improved for this many
            epochs (None: run all ``epochs``). ``epochs`` stays the length of the
            learning-rate schedule and the most epochs run.
        context_mm: 0, or 2.5D: the generator also sees the slices nearest this far below and above
            (``generator.in_channels`` 3; :func:`LungGANLib.segment.preprocess.network_input`).
    """

    variant: str = "baseline"
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    augment: bool = True
    input_size: int = DEFAULT_INPUT_SIZE
    steps_per_epoch: int | None = None
    n_critic: int = 2
    adv_weight: float = 0.01
    lipschitz: str = "gp"
    gp_weight: float = 10.0
    clip: float = 0.01
    critic_lr: float = 1e-4
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    lesions: float = 0.0
    dense_lung: float = 0.0
    masking: float = 0.0
    hard_negatives: float = 0.0
    dense_weight: float = 1.0
    lesion_weight: float = 1.0
    patience: int | None = None
    appearance: float = 0.0
    context_mm: float = 0.0

    @property
    def lesion_options(self) -> LesionOptions:
        return LesionOptions(self.lesions, self.dense_lung, self.masking, self.hard_negatives)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["generator"] = self.generator.to_dict()
        data["critic"] = self.critic.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["generator"] = GeneratorConfig.from_dict(data.get("generator", {}))
        data["critic"] = CriticConfig.from_dict(data.get("critic", {}))
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**data)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot train."""
        get_variant(self.variant)
        for name in ("epochs", "batch_size", "input_size", "n_critic"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {getattr(self, name)}")
        if self.input_size % 2**self.generator.depth:
            raise ValueError(f"input_size {self.input_size} must be a multiple of {2**self.generator.depth}")
        for name in ("lr", "critic_lr", "clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("dense_weight", "lesion_weight"):
            if not getattr(self, name) >= 1.0:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("adv_weight", "gp_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.lipschitz not in LIPSCHITZ:
            raise ValueError(f"lipschitz must be one of {LIPSCHITZ}, got {self.lipschitz!r}")
        if not 0.0 <= self.appearance <= 1.0:
            raise ValueError(f"appearance must be a probability between 0 and 1, got {self.appearance}")
        if not 0.0 <= self.context_mm <= 100.0:
            raise ValueError(f"context_mm must be 0 (one slice) to 100, got {self.context_mm}")
        channels = input_channels(self.context_mm)
        if self.generator.in_channels != channels:
            raise ValueError(f"a generator {'with' if self.context_mm else 'without'} neighbouring slices (context_mm "
                             f"{self.context_mm}) has {channels} input channels, not {self.generator.in_channels}")
        if self.context_mm and (self.variant != "baseline" or self.dense_lung or self.masking or self.hard_negatives):
            raise ValueError("neighbouring slices (context_mm) train the baseline, with or without drawn lesions, only: "
                             "the critics, the dense lung, the hard negatives and the masking see one slice")
        self.critic.validate()
        self.lesion_options.validate()
        if self.input_size < 2**self.critic.depth:
            raise ValueError(f"input_size {self.input_size} is too small for a critic of depth {self.critic.depth}")


@dataclass
class EpochRecord:
    """One line of the training log (losses are means over the epoch's steps)."""

    epoch: int
    lr: float
    train_loss: float
    train_bce: float
    train_adversarial: float
    critic_loss: float
    em_distance: float
    gradient_penalty: float
    val_loss: float
    val_dice: float
    val_iou: float
    seconds: float
    val_lesion_dice: float | None = None
    val_lesions_kept: float | None = None

    @property
    def score(self) -> float:
        """What keeps an epoch: the validation Dice; with lesion training, the Dice on the same validation
        slices with synthetic lesions drawn in (``val_lesion_dice``, see ``Trainer.lesion_validation``): their
        label includes the lesions, so an outline that spills or one that drops the lesions both lose."""
        return self.val_dice if self.val_lesion_dice is None else self.val_lesion_dice


@dataclass
class StepLosses:
    """What one training step reports to ``on_step`` callbacks."""

    generator: float
    bce: float
    adversarial: float = 0.0
    critic: float = 0.0
    em_distance: float = 0.0
    penalty: float = 0.0
