"""LGAN losses (Tan et al. 2020, Eqs. 7-11) and the two ways of keeping a critic Lipschitz.

With ``D`` a critic, ``x`` a CT slice, ``y`` its true mask and ``G(x)`` the
generator's mask probabilities:

- generator: ``BCE(G(x), y) - lambda * E[D(G(x))]`` (lambda = 0: the baseline);
- critic: ``E[D(G(x))] - E[D(y)]`` (+ the gradient penalty), i.e. the negative
  of its Earth Mover distance estimate, which it maximises.

For the regression critic ``D`` sees ``(mask, y)`` pairs: it minimises
``D(G(x), y)`` (Eq. 11), and the generator's adversarial term pushes it up.
The paper's Eq. 11 has no second term; on its own it is unbounded below (a
constant shift lowers it at no Lipschitz cost), so the true mask paired with
itself, ``D(y, y)``, enters as the zero-distance reference. With that, all
five critics share one loss and differ only in what they look at.

The paper does not say how the critic is kept 1-Lipschitz. Both are here:
``"clip"`` (the original WGAN: every critic weight clipped to [-c, c] after
each step) and ``"gp"`` (WGAN-GP: ``gp_weight * E[(|grad D(m)| - 1)^2]`` at
random points ``m`` between true and generated masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.critics import Critic

LIPSCHITZ = ("gp", "clip")


@dataclass
class CriticTerms:
    """The critic loss and its parts (floats for logging)."""

    loss: torch.Tensor
    fake: float
    real: float
    penalty: float

    @property
    def em_distance(self) -> float:
        """The critic's Earth Mover distance estimate, E[D(real)] - E[D(fake)]."""
        return self.real - self.fake


def critic_loss(
    critic: Critic,
    fake: torch.Tensor,
    image: torch.Tensor,
    truth: torch.Tensor,
    lipschitz: str = "gp",
    gp_weight: float = 10.0,
    epsilon: torch.Tensor | None = None,
) -> CriticTerms:
    """``E[D(fake)] - E[D(real)]`` (+ gradient penalty) in one forward pass.

    Args:
        critic: the critic.
        fake: (N, 1, H, W) generated mask probabilities (detached).
        image: (N, 1, H, W) CT slices.
        truth: (N, 1, H, W) true masks.
        lipschitz: ``"gp"`` adds the gradient penalty; ``"clip"`` adds nothing
            here (see :func:`clip_weights`).
        gp_weight: weight of the penalty.
        epsilon: (N,) interpolation weights in [0, 1] for the penalty (drawn
            by the caller, so runs are reproducible).

    Returns:
        The loss to minimise and its parts.
    """
    if lipschitz not in LIPSCHITZ:
        raise ValueError(f"lipschitz must be one of {LIPSCHITZ}, got {lipschitz!r}")
    n = fake.shape[0]
    masks = [fake, truth]
    if lipschitz == "gp":
        if epsilon is None:
            epsilon = torch.rand(n, device=fake.device)
        e = epsilon.to(fake.device, fake.dtype).view(n, 1, 1, 1)
        between = (e * truth + (1 - e) * fake).requires_grad_(True)
        masks.append(between)
    k = len(masks)
    scores = critic(torch.cat(masks), image.repeat(k, 1, 1, 1), truth.repeat(k, 1, 1, 1))
    d_fake, d_real = scores[:n].mean(), scores[n : 2 * n].mean()
    loss = d_fake - d_real
    penalty = torch.zeros((), device=fake.device)
    if lipschitz == "gp":
        (grad,) = torch.autograd.grad(scores[2 * n :].sum(), between, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        loss = loss + gp_weight * penalty
    return CriticTerms(loss, float(d_fake.detach()), float(d_real.detach()), float(penalty.detach()))


@torch.no_grad()
def clip_weights(critic: Critic, clip: float) -> None:
    """Clip every critic parameter to [-clip, clip] (original WGAN)."""
    for parameter in critic.parameters():
        parameter.clamp_(-clip, clip)


@dataclass
class GeneratorTerms:
    loss: torch.Tensor
    bce: float
    adversarial: float


def generator_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    truth: torch.Tensor,
    critic: Critic | None = None,
    adv_weight: float = 0.0,
    pixel_weight: torch.Tensor | None = None,
) -> GeneratorTerms:
    """``BCE(G(x), y) - adv_weight * E[D(G(x))]``; plain BCE without a critic.

    Args:
        logits: (N, 1, H, W) generator logits.
        image: CT slices; truth: true masks (same shape).
        critic: the critic (its parameters should not require grad here).
        adv_weight: lambda.
        pixel_weight: per-pixel BCE weights (same shape), normalised to mean 1; None weighs all pixels alike.
    """
    if pixel_weight is None:
        bce = F.binary_cross_entropy_with_logits(logits, truth)
    else:
        bce = F.binary_cross_entropy_with_logits(logits, truth, weight=pixel_weight / pixel_weight.mean())
    if critic is None:
        return GeneratorTerms(bce, float(bce.detach()), 0.0)
    adversarial = -critic(torch.sigmoid(logits), image, truth).mean()
    return GeneratorTerms(bce + adv_weight * adversarial, float(bce.detach()), float(adversarial.detach()))
