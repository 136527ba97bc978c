"""The LGAN generator: a U-Net that maps one CT slice to a lung mask.

As in Tan et al. (2020): encoder blocks of two 3x3 convolutions followed by
2x2 max-pooling; decoder blocks of one stride-2 deconvolution followed by two
3x3 convolutions, with the encoder's features concatenated (skip connections);
LeakyReLU activations; a final 1x1 convolution to the mask. Batch
normalisation after each 3x3 convolution is an addition of ours (``norm``),
which trains faster from scratch; ``norm="none"`` gives the paper's plain form.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

_NORMS = ("batch", "instance", "none")


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of a :class:`Generator`; stored in model files so they rebuild exactly.

    Attributes:
        in_channels: input channels (1: a CT slice).
        out_channels: output channels (1: lung logit).
        base_channels: channels of the first encoder block; doubled at each level.
        depth: number of pooling steps (the input side must be divisible by 2**depth).
        norm: ``"batch"``, ``"instance"`` (per-slice statistics: what two-process
            training needs to match one process exactly) or ``"none"``.
        negative_slope: LeakyReLU slope.
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 8
    depth: int = 4
    norm: str = "batch"
    negative_slope: float = 0.2

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        """Build a config from a dict, refusing unknown keys."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown generator settings {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)


def _conv_block(cin: int, cout: int, norm: str, slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, kernel_size=3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        elif norm == "instance":
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """U-Net generator producing one lung logit per pixel.

    Args:
        config: the network's shape; keyword arguments override its fields.

    Raises:
        ValueError: a channel count or the depth is not a positive integer, the
            norm is unknown, or the slope is negative.

    Example:
        >>> g = Generator(base_channels=4, depth=2)
        >>> g(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, config: GeneratorConfig | None = None, **overrides) -> None:
        super().__init__()
        config = GeneratorConfig.from_dict({**(config or GeneratorConfig()).to_dict(), **overrides})
        for name in ("in_channels", "out_channels", "base_channels", "depth"):
            value = getattr(config, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if config.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {config.norm!r}")
        if config.negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {config.negative_slope}")
        self.config = config
        widths = [config.base_channels * 2**level for level in range(config.depth + 1)]
        norm, slope = config.norm, config.negative_slope
        self.encoders = nn.ModuleList()
        cin = config.in_channels
        for width in widths[:-1]:
            self.encoders.append(_conv_block(cin, width, norm, slope))
            cin = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _conv_block(widths[-2], widths[-1], norm, slope)
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(config.depth - 1, -1, -1):
            self.upsamplers.append(nn.ConvTranspose2d(widths[level + 1], widths[level], kernel_size=2, stride=2))
            self.decoders.append(_conv_block(2 * widths[level], widths[level], norm, slope))
        self.head = nn.Conv2d(widths[0], config.out_channels, kernel_size=1)

    def fused(self) -> Generator:
        """A copy for inference with each batch norm folded into its convolution.

        The copy is in eval mode and computes the same function (up to float
        rounding) with fewer operations and memory passes.
        """
        import copy

        from torch.nn.utils.fusion import fuse_conv_bn_eval

        model = copy.deepcopy(self).eval()
        for block in [*model.encoders, model.bottleneck, *model.decoders]:
            layers = list(block)
            fused_layers: list[nn.Module] = []
            i = 0
            while i < len(layers):
                if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    fused_layers.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
                    i += 2
                else:
                    fused_layers.append(layers[i])
                    i += 1
            block._modules.clear()
            for index, layer in enumerate(fused_layers):
                block.add_module(str(index), layer)
        return model

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map slices (N, C, H, W) to mask logits (N, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input (N, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.multiple or x.shape[3] % self.multiple:
            raise ValueError(f"input height and width must be multiples of {self.multiple}, got {tuple(x.shape[2:])}")
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)
