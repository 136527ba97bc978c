"""Training-time augmentations that teach the generator what a radiologist calls lung.

A generator trained on threshold-made masks learns "dense = not lung" and cuts
nodules, masses and dense lung out where they touch the lung border. These
augmentations change the *image* on the fly and keep the *label*: the lung
stays lung whatever is drawn into it.

- :func:`insert_lesions`: synthetic nodules (3-30 mm) and masses (30-70 mm),
  round, lobulated or spiculated, with the density and noise of the slice's
  own soft tissue, drawn into the lung touching its border (chest wall,
  mediastinum, hilum, diaphragm: wherever the lung's edge is) or free in the
  parenchyma. Only the part inside the lung is painted, so a lesion at the
  border merges with the chest wall or mediastinum beside it, as a
  juxtapleural nodule does.
- :func:`mediastinal_bulge`: the hard negative. Soft tissue of the mediastinum
  or hilum (a vessel, a node) bulging into the lung's medial side, as the aorta
  and the hilar vessels indent it; here the label *does* change, the lung goes
  around it. Its centre lies outside the lung, so less than half of it shows
  inside: a shallow cap, where a lesion touching the border shows more than half.
- :func:`dense_lung`: a dependent (posterior) density gradient, as in
  dependent atelectasis, and patchy consolidation, inside the lung.
- :func:`random_masking`: maskedSeg's idea (Zhuang et al., ISBI 2025): hide a
  share of the input's patches so that the network must use shape, not only
  intensity.

Slices are network inputs (n, 1, s, s) in [0, 1] (the HU window; the lesions
also take a 2.5D generator's (n, 3, s, s)), targets the lung fraction of each
pixel; rows run anterior to posterior (canonical LPS).
Every function takes a :class:`numpy.random.Generator`, so runs are seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..config import DEFAULT_WINDOW, HUWindow
from ..segment.preprocess import own_slice
from .datasets import SliceData

#: In-plane field of view assumed when a slice's pixel size is unknown (the Kaggle slices), mm.
DEFAULT_FOV_MM = 350.0
#: Soft tissue the lesions copy their density from (HU): muscle, vessels, not fat or bone.
SOFT_TISSUE_HU = (-20.0, 120.0)
#: Lesion diameters (mm).
NODULE_MM = (3.0, 30.0)
MASS_MM = (30.0, 70.0)
#: Hard negatives: diameters (mm) of the mediastinal and hilar structures that bulge into the lung (hilar vessels,
#: nodes, the aorta), and how far outside the lung their centre lies, in radii (so 0.3-0.8 of it shows inside).
BULGE_MM = (15.0, 50.0)
BULGE_DEPTH = (0.2, 0.7)
#: What a bulge's centre may be: the mediastinum's fat and soft tissue (HU), not air outside the body or bone.
MEDIASTINUM_HU = (-200.0, 200.0)
#: maskedSeg's share of hidden patches, and the patch side in pixels at 256.
MASK_RATIO = 0.7
MASK_PATCH = 16
#: A slice with less lung than this (pixels at the network's size) gets no lesion or dense lung.
MIN_LUNG_PIXELS = 400
#: A lung pixel raised by more than this (window units, about 80 HU) counts as drawn.
DRAWN_MIN = 0.05
#: The medial side of a slice's lungs: the positions nearest its midline, this percentile of them.
MEDIAL_PERCENTILE = 35


def lung_midline(lung: np.ndarray) -> float:
    """The column halfway between the lungs' outermost columns on one slice."""
    cols = np.flatnonzero(lung.any(axis=0))
    return (cols[0] + cols[-1]) / 2.0


@dataclass(frozen=True)
class LesionOptions:
    """How often each augmentation is applied to a training slice (probabilities in [0, 1]).

    Attributes:
        lesions: a slice gets one or two synthetic lesions.
        dense_lung: a slice gets a dependent density gradient or patchy consolidation.
        masking: a slice gets ``MASK_RATIO`` of its patches hidden.
        hard_negatives: a slice gets a mediastinal bulge (:func:`mediastinal_bulge`), its label cut around it.
    """

    lesions: float = 0.0
    dense_lung: float = 0.0
    masking: float = 0.0
    hard_negatives: float = 0.0

    def validate(self) -> None:
        for name in ("lesions", "dense_lung", "masking", "hard_negatives"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {value}")

    @property
    def active(self) -> bool:
        return self.lesions > 0 or self.dense_lung > 0 or self.masking > 0 or self.hard_negatives > 0

    @property
    def drawn(self) -> str:
        """What :func:`with_lesions` draws into the validation slices, in words for the training log."""
        return {(True, False): "synthetic lesions", (False, True): "synthetic dense lung",
                (True, True): "synthetic lesions and dense lung"}.get((self.lesions > 0, self.dense_lung > 0), "nothing")


def soft_tissue_stats(image: np.ndarray, lung: np.ndarray, window: HUWindow = DEFAULT_WINDOW) -> tuple[float, float]:
    """Median and spread (window units) of the slice's soft tissue outside the lung.

    Falls back to 40 HU with 15 HU of noise when the slice shows too little soft tissue.
    """
    low, high = (window.scale(v) for v in SOFT_TISSUE_HU)
    tissue = image[(image > low) & (image < high) & ~lung]
    if tissue.size < 200:
        return window.scale(40.0), 15.0 / window.width
    spread = float(np.subtract(*np.percentile(tissue, [75, 25]))) / 1.35
    return float(np.median(tissue)), min(max(spread, 5.0 / window.width), 40.0 / window.width)


def lesion_field(radius_px: float, style: str, rng: np.random.Generator) -> np.ndarray:
    """A lesion's outline as a field on a square (float): each pixel's distance from the centre over the
    outline's radius in its direction, so ``field <= r`` is the footprint of mean radius ``r`` (up to
    ``radius_px``; a smaller ``r`` is the same lesion cut nearer its top or bottom).

    Args:
        style: ``round`` (an ellipse), ``lobulated`` (low-frequency bumps) or
            ``spiculated`` (lobulated with thin spikes).
    """
    reach = int(np.ceil(radius_px * 1.8)) + 2
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.75, 1.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / aspect
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    edge = np.ones_like(theta)
    if style in ("lobulated", "spiculated"):
        for k in range(2, 6):
            edge += rng.uniform(0.03, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if style == "spiculated":
        for spike in rng.uniform(0, 2 * np.pi, size=rng.integers(4, 10)):
            edge += rng.uniform(0.3, 0.8) * np.maximum(np.cos(theta - spike), 0.0) ** 300
    return r / edge


def lesion_shape(radius_px: float, style: str, rng: np.random.Generator) -> np.ndarray:
    """A lesion's footprint (boolean, square) of mean radius ``radius_px`` (see :func:`lesion_field`)."""
    return lesion_field(radius_px, style, rng) <= radius_px


def _placed(field: np.ndarray, cy: int, cx: int, shape: tuple[int, ...]) -> np.ndarray:
    """A lesion's field (:func:`lesion_field`) centred on pixel (cy, cx) of a slice of ``shape``, cut at the slice's
    edges; infinite where the field does not reach, so ``_placed(...) <= r`` is the footprint on the slice."""
    out = np.full(shape, np.inf)
    half = field.shape[0] // 2
    top, left = cy - half, cx - half
    ys0, xs0 = max(top, 0), max(left, 0)
    ys1, xs1 = min(top + field.shape[0], shape[0]), min(left + field.shape[1], shape[1])
    out[ys0:ys1, xs0:xs1] = field[ys0 - top : ys1 - top, xs0 - left : xs1 - left]
    return out


def _paint_tissue(
    image: np.ndarray, alpha: np.ndarray, mean: float, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """Blend soft tissue (median ``mean``, noise of about ``spread``, smooth like a CT's) into ``image`` by ``alpha``."""
    texture = mean + spread * ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.7) / 0.4
    return image * (1 - alpha) + np.clip(texture, 0.0, 1.0) * alpha


def neighbour_radii(radius_mm: float, height_mm: float, neighbour_mm: tuple[float, float]) -> tuple[float, float]:
    """A round lesion's radius on the slices below and above (mm; 0 where it does not reach them), when the
    slice cuts it ``height_mm`` above its middle with radius ``radius_mm``: a sphere of radius
    sqrt(radius² + height²), cut ``neighbour_mm`` below and above."""
    full = radius_mm**2 + height_mm**2
    return tuple(float(np.sqrt(max(full - t**2, 0.0))) for t in (height_mm - neighbour_mm[0], height_mm + neighbour_mm[1]))


def insert_lesions(
    image: np.ndarray, lung: np.ndarray, pixel_mm: float, rng: np.random.Generator, window: HUWindow = DEFAULT_WINDOW,
    neighbour_mm: tuple[float, float] | None = None,
) -> np.ndarray:
    """Draw one or two synthetic lesions into the lung of one slice; the label does not change.

    Args:
        image: (s, s) or (1, s, s) network input in [0, 1], or (3, s, s) a 2.5D input: the slice below, the
            slice, the slice above.
        lung: (s, s) boolean lung label of the slice.
        pixel_mm: the slice's pixel size at network resolution.
        rng: random numbers.
        neighbour_mm: with a 2.5D input, how far the slices below and above lie from the slice (mm; 0 where the
            scan's end slice stands in for one beyond it). Each lesion is then a body: the slice cuts it at a
            random height within half its radius of its middle, and a neighbour shows the cut that far away,
            smaller or none (a small nodule ends where a vessel runs on). The neighbours are painted inside the
            slice's lung, whose label is the one known.

    Returns:
        The new image (the input is not changed).
    """
    stack = list(image) if image.ndim == 3 else [image]  # each channel is replaced as it is painted
    middle = len(stack) // 2
    if len(stack) != 1 and (len(stack) != 3 or neighbour_mm is None):
        raise ValueError(f"a (3, s, s) 2.5D input needs neighbour_mm; got an image of shape {image.shape}")
    if lung.sum() < MIN_LUNG_PIXELS:
        return image.copy()
    mean, spread = soft_tissue_stats(stack[middle], lung, window)
    inside = ndimage.distance_transform_edt(lung)
    midline = lung_midline(lung)
    for _ in range(int(rng.integers(1, 3))):
        mass = rng.random() < 0.3
        diameter = rng.uniform(*(MASS_MM if mass else NODULE_MM))
        radius = max(diameter / 2.0 / pixel_mm, 1.0)
        style = rng.choice(("round", "lobulated", "spiculated"), p=(0.4, 0.35, 0.25))
        touching = rng.random() < 0.8
        if touching:
            # Touching the border: the centre lies inside the lung, closer to its edge than the radius.
            ys, xs = np.nonzero(lung & (inside >= 0.2 * radius) & (inside <= 0.8 * radius))
            if ys.size and rng.random() < 0.5:
                # Half of them on the medial side: mediastinum and hilum.
                medial = np.abs(xs - midline)
                keep = medial <= np.percentile(medial, MEDIAL_PERCENTILE)
                ys, xs = ys[keep], xs[keep]
        else:
            ys, xs = np.nonzero(inside > radius + 2)
        if ys.size == 0:
            continue
        pick = int(rng.integers(ys.size))
        cy, cx = int(ys[pick]), int(xs[pick])
        field = lesion_field(radius, str(style), rng)
        radii = [radius]
        if len(stack) == 3:
            below, above = neighbour_radii(radius * pixel_mm, rng.uniform(-0.5, 0.5) * radius * pixel_mm, neighbour_mm)
            radii = [below / pixel_mm, radius, above / pixel_mm]
        placed = _placed(field, cy, cx, lung.shape)
        for channel, r in enumerate(radii):
            if r < 0.5:
                continue  # the lesion ends before this neighbour
            footprint = placed <= r
            alpha = ndimage.gaussian_filter(footprint.astype(np.float32), 0.6) * lung
            stack[channel] = _paint_tissue(stack[channel], alpha, mean, spread, rng)
    return np.stack(stack).reshape(image.shape).astype(image.dtype)


def mediastinal_bulge(
    image: np.ndarray, lung: np.ndarray, pixel_mm: float, rng: np.random.Generator, window: HUWindow = DEFAULT_WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """A hard negative: a round or lobulated structure of the mediastinum or hilum (``BULGE_MM`` across) that
    bulges into the lung's medial side, drawn with the slice's soft tissue; the lung's label goes around it.

    Its centre is a pixel outside the lung (and its holes), between the lungs (``MEDIAL_PERCENTILE``), of fat or
    soft tissue (``MEDIASTINUM_HU``), ``BULGE_DEPTH`` radii from the lung: a cap of at most 0.8 of its radius
    shows inside.
    A lesion touching the border (:func:`insert_lesions`) has its centre inside the lung and shows more than
    its radius, so the two differ in shape, not in density: what bulges in from the mediastinum with a wide
    base is not lung, what sits in the lung is.

    Args:
        image: (s, s) network input in [0, 1]; lung: (s, s) boolean lung label of the slice.

    Returns:
        The new image and the new lung label (the inputs are not changed); both as given where no centre fits.
    """
    out, label = image.copy(), lung.copy()
    if lung.sum() < MIN_LUNG_PIXELS:
        return out, label
    radius = max(rng.uniform(*BULGE_MM) / 2.0 / pixel_mm, 1.0)
    outside = ndimage.distance_transform_edt(~lung)
    filled = ndimage.binary_fill_holes(lung)  # a vessel the label leaves out inside the lung is no centre
    _, cols = np.nonzero(lung)
    midline = lung_midline(lung)
    rows = np.flatnonzero(lung.any(axis=1))
    low, high = (window.scale(v) for v in MEDIASTINUM_HU)
    depth = (outside >= BULGE_DEPTH[0] * radius) & (outside <= BULGE_DEPTH[1] * radius)
    medial = np.abs(np.arange(lung.shape[1]) - midline) <= np.percentile(np.abs(cols - midline), MEDIAL_PERCENTILE)
    between = np.zeros_like(lung)
    between[rows[0] : rows[-1] + 1] = medial[None, :]
    ys, xs = np.nonzero(depth & between & ~filled & (image > low) & (image < high))
    if ys.size == 0:
        return out, label
    pick = int(rng.integers(ys.size))
    field = lesion_field(radius, str(rng.choice(("round", "lobulated"))), rng)
    footprint = _placed(field, int(ys[pick]), int(xs[pick]), lung.shape) <= radius
    mean, spread = soft_tissue_stats(image, lung, window)
    alpha = ndimage.gaussian_filter(footprint.astype(np.float32), 0.6) * lung
    out = _paint_tissue(image, alpha, mean, spread, rng).astype(image.dtype)
    label[footprint] = False
    return out, label


def dense_lung(image: np.ndarray, lung: np.ndarray, rng: np.random.Generator, window: HUWindow = DEFAULT_WINDOW) -> np.ndarray:
    """Denser lung, label unchanged: a dependent (posterior) gradient, or patchy consolidation.

    The gradient raises the lowest (most posterior) part of the lung by up to
    about 900 HU, from a random depth down, as in dependent atelectasis; the
    patches raise random blobs to the density of soft tissue.
    """
    out = image.copy()
    if lung.sum() < MIN_LUNG_PIXELS:
        return out
    mean, spread = soft_tissue_stats(image, lung, window)
    if rng.random() < 0.5:
        rows = np.flatnonzero(lung.any(axis=1))
        depth = (np.arange(lung.shape[0]) - rows[0]) / max(rows[-1] - rows[0], 1)
        start = rng.uniform(0.55, 0.9)
        ramp = np.clip((depth - start) / (1 - start), 0, 1) ** rng.uniform(0.5, 2.0)
        lift = rng.uniform(300.0, 900.0) / window.width * ramp[:, None] * lung
        out = np.minimum(out + lift, np.maximum(out, mean + spread))
    else:
        field = ndimage.gaussian_filter(rng.standard_normal(lung.shape), rng.uniform(4.0, 10.0))
        share = rng.uniform(0.05, 0.25)
        level = np.quantile(field[lung], 1 - share)
        alpha = np.clip((field - level) / (0.3 * field[lung].std() + 1e-6), 0, 1) * lung
        out = _paint_tissue(out, alpha, mean, spread, rng)
    return out.astype(image.dtype)


def random_masking(image: np.ndarray, rng: np.random.Generator, ratio: float = MASK_RATIO) -> np.ndarray:
    """Hide ``ratio`` of the slice's square patches (filled with the slice's mean), as maskedSeg does."""
    side = image.shape[-1]
    patch = max(side * MASK_PATCH // 256, 2)
    n = -(-side // patch)
    hidden = rng.random((n, n)) < ratio
    full = np.kron(hidden, np.ones((patch, patch), dtype=bool))[:side, :side]
    out = image.copy()
    out[full] = image.mean()
    return out


def augment_lesions(
    x: torch.Tensor, y: torch.Tensor, pixel_mm: torch.Tensor | None, options: LesionOptions, rng: np.random.Generator,
    neighbour_mm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the augmentations to a batch of inputs.

    Args:
        x: (n, 1, s, s) inputs in [0, 1], or (n, 3, s, s) 2.5D inputs (lesions only: see :func:`insert_lesions`).
        y: (n, 1, s, s) lung fractions.
        pixel_mm: (n,) pixel size of each slice at network resolution (NaN or None: unknown).
        options: the probabilities.
        rng: random numbers.
        neighbour_mm: with 2.5D inputs, (n, 2): how far each slice's neighbours below and above lie, mm.

    Returns:
        The new inputs; the targets, ``y`` itself unless a hard negative cut the lung around a bulge; and
        (n, 1, s, s) floats that are 1 on the lung pixels the lesions and the dense lung made denser (the
        label still says lung).
    """
    drawn = torch.zeros_like(y)
    if not options.active:
        return x, y, drawn
    if x.shape[1] == 3 and (neighbour_mm is None or options.dense_lung > 0 or options.masking > 0
                            or options.hard_negatives > 0):
        raise ValueError("2.5D inputs take drawn lesions only, and need each slice's distance to its neighbours")
    images = x.numpy().copy()  # (n, c, s, s); the dense lung, the bulges and the masking only ever see one channel
    lungs = (y[:, 0] > 0.5).numpy()
    targets = y
    side = images.shape[-1]
    for i in range(images.shape[0]):
        size = float(pixel_mm[i]) if pixel_mm is not None else float("nan")
        if not np.isfinite(size) or size <= 0:
            size = DEFAULT_FOV_MM / side
        if options.hard_negatives > 0 and rng.random() < options.hard_negatives:
            # First, so that the lesions are drawn into the lung that is left.
            images[i, 0], lung = mediastinal_bulge(images[i, 0], lungs[i], size, rng)
            if targets is y:
                targets = y.clone()
            targets[i, 0][torch.from_numpy(lungs[i] & ~lung)] = 0.0
            lungs[i] = lung
        before = own_slice(images)[i, 0].copy()
        if rng.random() < options.dense_lung:
            images[i, 0] = dense_lung(images[i, 0], lungs[i], rng)
        if rng.random() < options.lesions:
            distances = None if neighbour_mm is None else (float(neighbour_mm[i, 0]), float(neighbour_mm[i, 1]))
            images[i] = insert_lesions(images[i], lungs[i], size, rng, neighbour_mm=distances)
        drawn[i, 0] = torch.from_numpy((own_slice(images)[i, 0] - before > DRAWN_MIN) & lungs[i])
        if rng.random() < options.masking:
            images[i, 0] = random_masking(images[i, 0], rng)
    return torch.from_numpy(images).to(x.dtype), targets, drawn


def with_lesions(val: SliceData, options: LesionOptions, seed: int) -> tuple[SliceData, torch.Tensor] | None:
    """Validation slices with synthetic lesions (and dense lung, when ``options`` draw it) drawn in, the same
    for a given ``seed``, and the pixels drawn; None when ``options`` draw neither. The label is unchanged:
    lesions are lung. No hard negative is drawn: it changes the label, and the held-out label is the reference's."""
    if options.lesions <= 0 and options.dense_lung <= 0:
        return None
    drawing = LesionOptions(lesions=1.0 if options.lesions > 0 else 0.0, dense_lung=options.dense_lung)
    images, _, drawn = augment_lesions(val.images, val.targets, val.pixel_mm, drawing, np.random.default_rng(seed),
                                       val.neighbour_mm)
    return SliceData(images, val.targets, val.pixel_mm, val.neighbour_mm), drawn
