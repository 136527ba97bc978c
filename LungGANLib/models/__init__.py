"""Networks of LGAN: the U-Net generator (the critics come with adversarial training)."""

from .generator import Generator, GeneratorConfig

__all__ = ["Generator", "GeneratorConfig"]
