"""Training-time augmentation of how a scan looks, not of what it shows.

The shared training scans are four 512x512 chest CTs with sharp kernels and
normal-to-mildly emphysematous lungs. Scans in the clinic differ: coarse pixels
and soft kernels (a 4 mm, 64x64 COPDGene scan lost up to 45 % of its lung to
the generator), noise, small HU calibration offsets, and emphysema, whose lung
at -950 HU looks like the air outside the body. :func:`augment_appearance`
changes each of these on the fly, label unchanged:

- **coarse**: the slice is averaged down by a factor of 1.5-4 and brought back
  (bilinear), as a scan with larger pixels, a soft kernel or thick slices looks;
- **noise**: Gaussian noise of 5-40 HU;
- **calibration**: tissue contrast scaled by 0.95-1.05 about air and shifted
  by up to 25 HU;
- **emphysema**: the aerated lung made 20-100 HU darker, and in half of these
  slices smooth low-attenuation patches (-990 HU) drawn into it.

Slices are network inputs (n, 1, s, s) in [0, 1] (the HU window); targets the
lung fraction of each pixel. Random numbers come from a
:class:`torch.Generator`, so a run resumes exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import DEFAULT_WINDOW, HUWindow
from ..segment.preprocess import own_slice

#: How much coarser a slice may look (factor of the pixel size).
COARSE_FACTOR = (1.5, 4.0)
#: Noise standard deviation (HU).
NOISE_HU = (5.0, 40.0)
#: Gain about air, and offset (HU).
GAIN = (0.95, 1.05)
OFFSET_HU = 25.0
#: Darkening of the aerated lung (HU), what counts as aerated (HU), and the patches' density (HU).
EMPHYSEMA_HU = (20.0, 100.0)
AERATED_HU = -700.0
BULLA_HU = -990.0
#: Air, the fixed point of the gain (HU).
AIR_HU = -1000.0


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator)


def coarse(x: torch.Tensor, factor: float) -> torch.Tensor:
    """(1, 1, s, s) averaged down by ``factor`` and brought back to s (bilinear)."""
    side = x.shape[-1]
    small = max(int(round(side / factor)), 4)
    down = F.interpolate(x, size=(small, small), mode="area")
    return F.interpolate(down, size=(side, side), mode="bilinear", align_corners=False)


def recalibrate(x: torch.Tensor, gain: float, offset_hu: float, window: HUWindow = DEFAULT_WINDOW) -> torch.Tensor:
    """Contrast scaled by ``gain`` about air (-1000 HU stays), then shifted by ``offset_hu``; not clipped."""
    air = window.scale(AIR_HU)
    return air + (x - air) * gain + offset_hu / window.width


def emphysema(
    image: torch.Tensor, lung: torch.Tensor, darker_hu: float, patches: torch.Tensor | None = None,
    window: HUWindow = DEFAULT_WINDOW,
) -> torch.Tensor:
    """Aerated lung (``lung`` and below ``AERATED_HU``) made ``darker_hu`` darker; where ``patches`` (weights in
    [0, 1], same shape) are set, blended towards ``BULLA_HU``. Nothing outside the aerated lung changes."""
    aerated = lung & (image < window.scale(AERATED_HU))
    out = torch.where(aerated, image - darker_hu / window.width, image)
    if patches is not None:
        alpha = patches * aerated
        out = out * (1 - alpha) + window.scale(BULLA_HU) * alpha
    return out


def smooth_field(side: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random field (side, side) with about ``cells`` blobs across, zero mean, unit spread."""
    field = torch.randn(1, 1, cells, cells, generator=generator)
    field = F.interpolate(field, size=(side, side), mode="bicubic", align_corners=False)[0, 0]
    return (field - field.mean()) / (field.std() + 1e-6)


def augment_appearance(
    x: torch.Tensor,
    y: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    window: HUWindow = DEFAULT_WINDOW,
) -> torch.Tensor:
    """Change how each slice looks with ``probability``; the targets ``y`` stay as they are.

    A chosen slice gets each of coarse, noise, calibration and emphysema with
    probability one half (see the module's text).

    Args:
        x: (n, 1, s, s) inputs in [0, 1] (a 2.5D generator's: (n, 3, s, s), each slice changed alike).
        y: (n, 1, s, s) lung fractions.
        probability: share of slices changed.
        generator: random numbers.
        window: the inputs' HU window.

    Returns:
        New inputs, clipped to [0, 1].
    """
    if probability <= 0:
        return x
    n, side = x.shape[0], x.shape[-1]
    chosen = torch.rand(n, generator=generator) < probability
    parts = torch.rand(n, 4, generator=generator) < 0.5
    factor = _uniform(n, COARSE_FACTOR, generator)
    noise = _uniform(n, NOISE_HU, generator) / window.width
    gain = _uniform(n, GAIN, generator)
    offset = (torch.rand(n, generator=generator) * 2 - 1) * OFFSET_HU / window.width
    darker = _uniform(n, EMPHYSEMA_HU, generator) / window.width
    patchy = torch.rand(n, generator=generator) < 0.5
    out = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        image = out[i : i + 1]
        lung = y[i : i + 1] > 0.5
        if parts[i, 3] and lung.any():
            patches = None
            # The slice itself (a 2.5D input's middle channel) says where its aerated lung is.
            aerated = lung[0, 0] & (own_slice(image)[0, 0] < window.scale(AERATED_HU))
            if patchy[i]:
                field = smooth_field(side, int(torch.randint(6, 20, (1,), generator=generator)), generator)
                share = float(_uniform(1, (0.05, 0.3), generator))
                if int(aerated.sum()) > 16:  # patches cover the top ``share`` of the field over the aerated lung
                    level = torch.quantile(field[aerated], 1 - share)
                    patches = ((field - level) / 0.3).clamp(0, 1)[None, None]
            image = emphysema(image, lung, float(darker[i]) * window.width, patches, window)
        if parts[i, 0]:
            image = coarse(image, float(factor[i]))
        if parts[i, 2]:
            image = recalibrate(image, float(gain[i]), float(offset[i]) * window.width, window)
        if parts[i, 1]:
            image = image + noise[i] * torch.randn(image.shape, generator=generator)
        out[i : i + 1] = image.clamp(0.0, 1.0)
    return out
