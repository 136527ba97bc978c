"""How a scan looks, changed for training: each change does what it says, the label never changes."""

from __future__ import annotations

import pytest
import torch

from LungGANLib.train.appearance import AERATED_HU, BULLA_HU, augment_appearance, coarse, emphysema, recalibrate
from LungGANLib.config import DEFAULT_WINDOW as W


def hu(values) -> torch.Tensor:
    return W.scale(torch.as_tensor(values, dtype=torch.float64))


def test_recalibrate_keeps_air_and_scales_tissue_about_it():
    out = recalibrate(hu([-1000.0, 0.0, 500.0]), gain=1.04, offset_hu=-20.0)
    expected = [-1000.0 - 20.0, -1000.0 + 1000.0 * 1.04 - 20.0, -1000.0 + 1500.0 * 1.04 - 20.0]
    assert torch.allclose(out * W.width + W.low, torch.tensor(expected, dtype=torch.float64))


def test_emphysema_darkens_only_aerated_lung_and_draws_patches_there():
    image = hu([[-850.0, -850.0, 40.0, -850.0]])  # aerated, aerated, a nodule in the lung, air outside the lung
    lung = torch.tensor([[True, True, True, False]])
    out = emphysema(image, lung, darker_hu=60.0) * W.width + W.low
    assert torch.allclose(out, torch.tensor([[-910.0, -910.0, 40.0, -850.0]], dtype=torch.float64))
    patches = torch.tensor([[1.0, 0.5, 1.0, 1.0]], dtype=torch.float64)
    out = emphysema(image, lung, darker_hu=60.0, patches=patches) * W.width + W.low
    assert torch.allclose(out, torch.tensor([[BULLA_HU, (-910.0 + BULLA_HU) / 2, 40.0, -850.0]], dtype=torch.float64))
    assert AERATED_HU > -850.0  # the test's lung counts as aerated


def test_coarse_averages_detail_away_and_keeps_flat_regions():
    stripes = torch.zeros(1, 1, 32, 32)
    stripes[..., ::2] = 1.0
    assert torch.allclose(coarse(stripes, 2.0), torch.full_like(stripes, 0.5))
    flat = torch.full((1, 1, 32, 32), 0.3)
    assert torch.allclose(coarse(flat, 3.5), flat)


def test_augment_appearance_is_seeded_bounded_and_leaves_the_label():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 64, 64, generator=generator)
    y = (torch.rand(16, 1, 64, 64, generator=generator) > 0.5).float()
    label = y.clone()
    assert augment_appearance(x, y, 0.0, torch.Generator()) is x
    first = augment_appearance(x, y, 1.0, torch.Generator().manual_seed(7))
    again = augment_appearance(x, y, 1.0, torch.Generator().manual_seed(7))
    assert torch.equal(first, again) and torch.equal(y, label)
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    changed = (first != x).flatten(1).any(1)
    assert int(changed.sum()) >= 12  # each slice gets each of four changes with probability 1/2
    other = augment_appearance(x, y, 1.0, torch.Generator().manual_seed(8))
    assert not torch.equal(first, other)


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_appearance_probability_is_checked(probability, tmp_path):
    from LungGANLib.train.trainer import Trainer, TrainConfig

    with pytest.raises(ValueError, match="appearance must be a probability"):
        Trainer(TrainConfig(appearance=probability), tmp_path)
