"""The five LGAN critics (Tan et al. 2020, Fig. 3).

Every critic has the same call, ``critic(mask, image, truth) -> (N,)`` scores,
where ``mask`` is the mask being judged (the generator's probabilities or the
true mask), ``image`` the CT slice and ``truth`` the true mask; each design
looks at what the paper gives it:

- :class:`BasicCritic`: the mask alone.
- :class:`ProductCritic`: the mask multiplied pixel-wise with the CT slice.
- :class:`EarlyFusionCritic`: mask and CT slice as two channels.
- :class:`LateFusionCritic`: a shallow mask branch and a deeper CT branch whose
  features are concatenated, then more convolutions.
- :class:`RegressionCritic`: the judged mask and the true mask together, so it
  regresses the Earth Mover distance between a prediction and its truth.

Blocks are convolution, normalisation, LeakyReLU and 2x2 average-pool
down-sampling, then fully connected layers to one score. Normalisation is
layer norm (``GroupNorm`` with one group) by default, not the paper's batch
norm: the gradient penalty of WGAN-GP is a per-sample constraint, and batch
norm makes each score depend on the rest of the batch (Gulrajani et al. 2017,
section 4, recommend layer norm for this reason). It also lets real, fake and
interpolated masks share one forward pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

_NORMS = ("layer", "batch", "none")


@dataclass(frozen=True)
class CriticConfig:
    """Shape of a critic.

    Attributes:
        base_channels: channels of the first block; doubled at each down-sampling.
        depth: number of 2x2 down-samplings (inputs must be at least ``2**depth`` pixels wide).
        hidden: width of the fully connected layer.
        norm: ``"layer"``, ``"batch"`` or ``"none"``.
        negative_slope: LeakyReLU slope.
    """

    base_channels: int = 8
    depth: int = 4
    hidden: int = 64
    norm: str = "layer"
    negative_slope: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CriticConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown critic settings {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def validate(self) -> None:
        for name in ("base_channels", "depth", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"critic {name} must be a positive integer, got {value!r}")
        if self.norm not in _NORMS:
            raise ValueError(f"critic norm must be one of {_NORMS}, got {self.norm!r}")
        if self.negative_slope < 0:
            raise ValueError(f"critic negative_slope must be >= 0, got {self.negative_slope}")


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _tower(in_channels: int, config: CriticConfig, convs_per_level: int = 1) -> tuple[nn.Sequential, int]:
    """Convolution blocks with a down-sampling after each level; returns (layers, out channels)."""
    layers: list[nn.Module] = []
    cin = in_channels
    for level in range(config.depth):
        cout = config.base_channels * 2**level
        for _ in range(convs_per_level):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), _norm(cout, config.norm), nn.LeakyReLU(config.negative_slope)]
            cin = cout
        layers.append(nn.AvgPool2d(2))
    return nn.Sequential(*layers), cin


def _head(channels: int, config: CriticConfig) -> nn.Sequential:
    """Fixed 4x4 pooling (any input size), then two fully connected layers to one score."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(channels * 16, config.hidden),
        nn.LeakyReLU(config.negative_slope),
        nn.Linear(config.hidden, 1),
    )


class Critic(nn.Module):
    """Base of the critics: checks inputs, builds the critic's own view, scores it."""

    #: What the critic looks at, for the model card and error messages.
    looks_at = ""

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = config or CriticConfig()
        self.config.validate()

    def view(self, mask: torch.Tensor, image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def score(self, view) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, mask: torch.Tensor, image: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Score masks.

        Args:
            mask: (N, 1, H, W) mask being judged, in [0, 1].
            image: (N, 1, H, W) CT slices in [0, 1].
            truth: (N, 1, H, W) true masks in [0, 1].

        Returns:
            (N,) scores; higher means "more like the truth".

        Raises:
            ValueError: the three inputs differ in shape or are not (N, 1, H, W).
        """
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape != image.shape or mask.shape != truth.shape:
            raise ValueError(
                f"critic needs mask, image and truth of one shape (N, 1, H, W); got {tuple(mask.shape)}, "
                f"{tuple(image.shape)}, {tuple(truth.shape)}"
            )
        if min(mask.shape[2:]) < 2**self.config.depth:
            raise ValueError(f"critic of depth {self.config.depth} needs slices at least {2**self.config.depth} pixels wide")
        return self.score(self.view(mask, image, truth)).reshape(-1)


class _SingleTower(Critic):
    in_channels = 1

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__(config)
        self.features, channels = _tower(self.in_channels, self.config)
        self.head = _head(channels, self.config)

    def score(self, view: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(view))


class BasicCritic(_SingleTower):
    """Judges the mask alone (paper's "Basic" design)."""

    looks_at = "mask"

    def view(self, mask, image, truth):
        return mask


class ProductCritic(_SingleTower):
    """Judges the mask multiplied with the CT slice: the lung's own texture (paper's "Product")."""

    looks_at = "mask x CT"

    def view(self, mask, image, truth):
        return mask * image


class EarlyFusionCritic(_SingleTower):
    """Judges mask and CT slice stacked as two channels (paper's "EarlyFusion")."""

    looks_at = "mask, CT (2 channels)"
    in_channels = 2

    def view(self, mask, image, truth):
        return torch.cat([mask, image], dim=1)


class RegressionCritic(_SingleTower):
    """Judges the mask together with the true mask (paper's "Regression" design, Eq. 11).

    Seeing both, it can regress how far a mask is from its truth: the true
    mask paired with itself is the zero-distance reference.
    """

    looks_at = "mask, true mask (2 channels)"
    in_channels = 2

    def view(self, mask, image, truth):
        return torch.cat([mask, truth], dim=1)


class LateFusionCritic(Critic):
    """Two branches, features concatenated (paper's "LateFusion").

    The CT branch is deeper (two convolutions per level) than the mask branch
    (one per level); after concatenation one more convolution block and the
    fully connected head.
    """

    looks_at = "mask and CT (separate branches)"

    def __init__(self, config: CriticConfig | None = None) -> None:
        super().__init__(config)
        self.mask_branch, mask_channels = _tower(1, self.config, convs_per_level=1)
        self.image_branch, image_channels = _tower(1, self.config, convs_per_level=2)
        fused = mask_channels + image_channels
        self.fusion = nn.Sequential(
            nn.Conv2d(fused, mask_channels, 3, padding=1),
            _norm(mask_channels, self.config.norm),
            nn.LeakyReLU(self.config.negative_slope),
        )
        self.head = _head(mask_channels, self.config)

    def view(self, mask, image, truth):
        return mask, image

    def score(self, view) -> torch.Tensor:
        mask, image = view
        return self.head(self.fusion(torch.cat([self.mask_branch(mask), self.image_branch(image)], dim=1)))
