"""The five LGAN critics, their losses and one real training step per variant (Kaggle slices with human masks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from LungGANLib.train.datasets import kaggle_slices
from LungGANLib.train.losses import clip_weights, critic_loss, generator_loss
from LungGANLib.models import GeneratorConfig
from LungGANLib.models.critics import (
    BasicCritic,
    Critic,
    CriticConfig,
    EarlyFusionCritic,
    LateFusionCritic,
    ProductCritic,
    RegressionCritic,
)
from LungGANLib.train.trainer import Trainer, TrainConfig
from LungGANLib.train.variants import VARIANTS, get_variant

SMALL_CRITIC = CriticConfig(base_channels=4, depth=3, hidden=16)
CRITICS = [BasicCritic, ProductCritic, EarlyFusionCritic, LateFusionCritic, RegressionCritic]
ADVERSARIAL = [name for name, v in VARIANTS.items() if v.adversarial]


@pytest.fixture(scope="module")
def kaggle(data):
    """Eight real 64x64 slices with their human lung masks."""
    slices = kaggle_slices("train", data / "kaggle-finding-lungs")
    return slices.images[:8], slices.targets[:8]


def test_registry_has_the_baseline_and_five_critics():
    assert list(VARIANTS) == ["baseline", "basic", "product", "early-fusion", "late-fusion", "regression"]
    assert get_variant("baseline").build_critic() is None
    assert [type(get_variant(n).build_critic(SMALL_CRITIC)) for n in ADVERSARIAL] == CRITICS
    with pytest.raises(ValueError, match="available: baseline, basic"):
        get_variant("Regression")


@pytest.mark.parametrize("critic_class", CRITICS)
@pytest.mark.parametrize("size", [16, 64])
def test_critic_scores_one_value_per_slice(critic_class, size):
    critic = critic_class(SMALL_CRITIC)
    m, x, y = torch.rand(3, 1, size, size), torch.rand(3, 1, size, size), torch.rand(3, 1, size, size)
    assert critic(m, x, y).shape == (3,)


# What each design looks at (paper, Fig. 3): (depends on the CT slice, depends on the true mask).
SEES = {
    BasicCritic: (False, False),
    ProductCritic: (True, False),
    EarlyFusionCritic: (True, False),
    LateFusionCritic: (True, False),
    RegressionCritic: (False, True),
}


@pytest.mark.parametrize("critic_class", CRITICS)
def test_each_critic_looks_at_what_the_paper_gives_it(critic_class, kaggle):
    x, y = kaggle
    critic = critic_class(SMALL_CRITIC).eval()
    mask = torch.roll(y, 3, dims=-1)  # a wrong mask, not the truth
    base = critic(mask, x, y)
    sees_ct, sees_truth = SEES[critic_class]
    other_ct = torch.flip(x, dims=[0])
    other_truth = torch.flip(y, dims=[0])
    assert (not torch.allclose(critic(mask, other_ct, y), base)) == sees_ct
    assert (not torch.allclose(critic(mask, x, other_truth), base)) == sees_truth
    assert not torch.allclose(critic(torch.flip(mask, dims=[0]), x, y), base)  # the judged mask always counts


def test_critic_refuses_mismatched_inputs():
    critic = BasicCritic(SMALL_CRITIC)
    with pytest.raises(ValueError, match="one shape"):
        critic(torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 16), torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 8 pixels"):
        critic(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="critic norm must be one of"):
        BasicCritic(CriticConfig(norm="spectral"))


class LinearCritic(Critic):
    """D(m) = sum(w * m): its gradient is w everywhere, so the penalty is known exactly."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(CriticConfig(depth=1))
        self.weight = nn.Parameter(weight)

    def view(self, mask, image, truth):
        return mask

    def score(self, view):
        return (view * self.weight).sum(dim=(1, 2, 3))


def test_critic_loss_and_gradient_penalty_are_exact():
    weight = torch.zeros(1, 1, 2, 2)
    weight[0, 0, 0, 0], weight[0, 0, 1, 1] = 3.0, 4.0  # |w| = 5
    critic = LinearCritic(weight)
    fake = torch.zeros(2, 1, 2, 2)
    truth = torch.ones(2, 1, 2, 2)
    image = torch.rand(2, 1, 2, 2)
    terms = critic_loss(critic, fake, image, truth, "gp", gp_weight=10.0, epsilon=torch.tensor([0.25, 0.75]))
    assert terms.fake == 0.0 and terms.real == 7.0 and terms.em_distance == 7.0
    assert terms.penalty == pytest.approx(16.0)  # (|w| - 1)^2
    assert float(terms.loss.detach()) == pytest.approx(0.0 - 7.0 + 10.0 * 16.0)
    clipped = critic_loss(critic, fake, image, truth, "clip")
    assert clipped.penalty == 0.0 and float(clipped.loss.detach()) == pytest.approx(-7.0)
    clip_weights(critic, 0.5)
    assert float(critic.weight.detach().abs().max()) == 0.5


def test_generator_loss_is_bce_minus_weighted_critic_score(kaggle):
    x, y = kaggle
    logits = torch.randn(8, 1, 64, 64)
    critic = BasicCritic(SMALL_CRITIC).eval()
    terms = generator_loss(logits, x, y, critic, adv_weight=0.5)
    bce = float(F.binary_cross_entropy_with_logits(logits, y))
    d_fake = float(critic(torch.sigmoid(logits), x, y).mean().detach())
    assert terms.bce == pytest.approx(bce) and terms.adversarial == pytest.approx(-d_fake)
    assert float(terms.loss.detach()) == pytest.approx(bce - 0.5 * d_fake, abs=1e-5)
    baseline = generator_loss(logits, x, y)
    assert float(baseline.loss) == pytest.approx(bce) and baseline.adversarial == 0.0


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("lipschitz", ["gp", "clip"])
@pytest.mark.parametrize("variant", ADVERSARIAL)
def test_one_real_critic_step_and_generator_step_per_variant(variant, lipschitz, kaggle, tmp_path):
    """Paper Eqs. 7-11 on real slices: signs and shapes of every term, and which network each step moves."""
    x, y = kaggle
    config = TrainConfig(
        variant=variant, input_size=64, lipschitz=lipschitz, adv_weight=0.1,
        generator=GeneratorConfig(base_channels=4, depth=3), critic=SMALL_CRITIC,
    )
    trainer = Trainer(config, tmp_path, device="cpu")
    g, d = trainer.generator, trainer.critic
    g.train()
    logits = g(x)
    assert logits.shape == y.shape
    fake = torch.sigmoid(logits.detach())

    with torch.no_grad():
        scores_real = d(y, x, y)
        scores_fake = d(fake, x, y)
    assert scores_real.shape == scores_fake.shape == (8,)
    g_before, d_before = _params(g), _params(d)
    terms = trainer.critic_step(fake, x, y, torch.rand(8))
    # Critic loss = E[D(fake)] - E[D(real)] (+ penalty): the negative EM estimate.
    assert terms.fake == pytest.approx(float(scores_fake.mean()), abs=1e-5)
    assert terms.real == pytest.approx(float(scores_real.mean()), abs=1e-5)
    assert terms.em_distance == pytest.approx(terms.real - terms.fake)
    assert float(terms.loss.detach()) == pytest.approx(terms.fake - terms.real + config.gp_weight * terms.penalty, abs=1e-4)
    assert (terms.penalty > 0) == (lipschitz == "gp")
    assert _changed(d_before, d) and not _changed(g_before, g)
    if lipschitz == "clip":
        assert max(float(p.detach().abs().max()) for p in d.parameters()) <= config.clip
    if lipschitz == "gp":  # the step raised the EM estimate on this batch (clipping may undo it)
        with torch.no_grad():
            assert float(d(y, x, y).mean() - d(fake, x, y).mean()) > terms.em_distance

    d_before = _params(d)
    with torch.no_grad():
        d_fake_now = float(d(fake, x, y).mean())
    gterms = trainer.generator_step(logits, x, y)
    # Generator loss = BCE - lambda * E[D(G(x))].
    assert gterms.adversarial == pytest.approx(-d_fake_now, abs=1e-5)
    assert float(gterms.loss.detach()) == pytest.approx(gterms.bce + 0.1 * gterms.adversarial, abs=1e-5)
    assert 0 < gterms.bce < 2
    assert _changed(g_before, g) and not _changed(d_before, d)
    assert all(not p.requires_grad for p in d.parameters())  # frozen during the generator step
