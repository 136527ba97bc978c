"""The LGAN variants by name: the plain U-Net baseline and the five critics.

One registry, looked up by name (``lunggan train --variant NAME``), like
nnU-Net's trainers. Each entry says which critic the generator trains against;
the baseline has none and trains on BCE alone in the same trainer, so the
comparison between them is fair.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import VARIANT_NAMES
from ..models.critics import BasicCritic, Critic, CriticConfig, EarlyFusionCritic, LateFusionCritic, ProductCritic, RegressionCritic


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


#: Each variant's critic and the paper's name for it.
_CRITICS = {
    "baseline": (None, "U-Net"),
    "basic": (BasicCritic, "Basic"),
    "product": (ProductCritic, "Product"),
    "early-fusion": (EarlyFusionCritic, "EarlyFusion"),
    "late-fusion": (LateFusionCritic, "LateFusion"),
    "regression": (RegressionCritic, "Regression"),
}
assert tuple(_CRITICS) == VARIANT_NAMES, "a variant needs its critic here and its name in config.VARIANT_NAMES"

VARIANTS: dict[str, Variant] = {name: Variant(name, *_CRITICS[name]) for name in VARIANT_NAMES}


def get_variant(name: str) -> Variant:
    """The variant called ``name``.

    Raises:
        ValueError: no such variant (the message lists the known ones).
    """
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}: available: {', '.join(VARIANTS)}") from None
