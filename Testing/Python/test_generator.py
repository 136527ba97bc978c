"""The U-Net generator: shapes over a table of configurations, and validated arguments."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from LungGANLib.models import Generator, GeneratorConfig


@pytest.mark.parametrize(
    "base, depth, size, norm",
    [(2, 1, 16, "batch"), (4, 2, 32, "none"), (4, 3, 64, "batch"), (8, 4, 64, "batch"), (3, 2, 48, "none")],
)
def test_output_has_input_size(base, depth, size, norm):
    g = Generator(base_channels=base, depth=depth, norm=norm).eval()
    with torch.no_grad():
        y = g(torch.zeros(2, 1, size, size))
    assert y.shape == (2, 1, size, size)


def test_structure_follows_the_paper():
    g = Generator(base_channels=4, depth=3, norm="none")
    convs = [m for m in g.modules() if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    # Two 3x3 convs per encoder block (3), bottleneck (1) and decoder block (3), then the 1x1 head.
    assert sum(c.kernel_size == (3, 3) for c in convs) == 2 * (3 + 1 + 3)
    assert convs[-1].kernel_size == (1, 1)
    assert len(deconvs) == 3 and all(d.stride == (2, 2) and d.kernel_size == (2, 2) for d in deconvs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in g.modules()) == 1  # one module, used at each level
    assert all(isinstance(m, nn.LeakyReLU) for m in g.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU)))
    # Decoder convs see the upsampled features concatenated with the skip: twice the width.
    assert g.decoders[-1][0].in_channels == 2 * 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"base_channels": 0}, "base_channels must be a positive integer"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"in_channels": 1.5}, "in_channels must be a positive integer"),
        ({"norm": "layer"}, "norm must be one of"),
        ({"negative_slope": -0.1}, "negative_slope must be >= 0"),
        ({"widht": 3}, "unknown generator settings"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Generator(**kwargs)


def test_input_side_must_fit_the_depth():
    g = Generator(base_channels=2, depth=3)
    with pytest.raises(ValueError, match="multiples of 8"):
        g(torch.zeros(1, 1, 60, 60))
    with pytest.raises(ValueError, match=r"expected input \(N, 1, H, W\)"):
        g(torch.zeros(1, 2, 64, 64))


def test_config_round_trips_through_a_dict():
    config = GeneratorConfig(base_channels=6, depth=2, norm="none")
    assert GeneratorConfig.from_dict(config.to_dict()) == config


def test_fused_copy_computes_the_same_function():
    g = Generator(base_channels=4, depth=2)
    g.train()
    with torch.no_grad():
        g(torch.rand(4, 1, 32, 32))  # give batch norm non-trivial running statistics
    g.eval()
    fused = g.fused()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())  # the original is untouched
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), g(x), rtol=1e-4, atol=1e-5)
