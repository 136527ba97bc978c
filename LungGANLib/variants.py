"""The LGAN variants by name: the plain U-Net baseline and the five critics.

One registry, looked up by name (``lunggan train --variant NAME``), like
nnU-Net's trainers. Each entry says which critic the generator trains against;
the baseline has none and trains on BCE alone in the same trainer, so the
comparison between them is fair.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models.critics import (
    BasicCritic,
    Critic,
    CriticConfig,
    EarlyFusionCritic,
    LateFusionCritic,
    ProductCritic,
    RegressionCritic,
)


@dataclass(frozen=True)
class Variant:
    """A training variant.

    Attributes:
        name: the name used on the command line and in model cards.
        critic: the critic class, or None for the BCE-only baseline.
        paper_name: the design's name in Tan et al. (2020).
    """

    name: str
    critic: type[Critic] | None
    paper_name: str

    @property
    def adversarial(self) -> bool:
        return self.critic is not None

    def build_critic(self, config: CriticConfig | None = None) -> Critic | None:
        """A fresh critic for this variant (None for the baseline)."""
        return self.critic(config) if self.critic else None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("baseline", None, "U-Net"),
        Variant("basic", BasicCritic, "Basic"),
        Variant("product", ProductCritic, "Product"),
        Variant("early-fusion", EarlyFusionCritic, "EarlyFusion"),
        Variant("late-fusion", LateFusionCritic, "LateFusion"),
        Variant("regression", RegressionCritic, "Regression"),
    )
}


def get_variant(name: str) -> Variant:
    """The variant called ``name``.

    Raises:
        ValueError: no such variant (the message lists the known ones).
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}: available: {', '.join(VARIANTS)}") from None
