"""Synthetic lesions, dense lung and random masking: the image changes inside the lung, the label never; hard
negatives: a bulge from the mediastinum, cut out of the label."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from LungGANLib.config import DEFAULT_WINDOW
from LungGANLib.segment.preprocess import context_offset
from LungGANLib.train.datasets import prepare_slices
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.train.lesion_synthesis import (
    BULGE_MM,
    MASK_RATIO,
    SOFT_TISSUE_HU,
    LesionOptions,
    augment_lesions,
    dense_lung,
    insert_lesions,
    lesion_shape,
    lung_midline,
    mediastinal_bulge,
    neighbour_radii,
    random_masking,
    soft_tissue_stats,
    with_lesions,
)
from LungGANLib.evaluate.references import case_by_name, reference_path
from LungGANLib.train.trainer import DENSE_LUNG_HU, Trainer, TrainConfig
from LungGANLib.models import GeneratorConfig


window = DEFAULT_WINDOW.scale  # HU on the generator's input scale


@pytest.fixture(scope="module")
def slices(data):
    case = case_by_name("elastix-00")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    prepared = prepare_slices([(ct, ref)], size=256)
    # Pixel size at the network: the 512-pixel slice of 0.977 mm padded to a square and shrunk to 256.
    assert float(prepared.pixel_mm[0]) == pytest.approx(512 * ct.spacing[0] / 256)
    return prepared


def mid_slice(slices):
    lung_area = (slices.targets[:, 0] > 0.5).sum(dim=(1, 2))
    i = int(torch.argmax(lung_area))
    return slices.images[i, 0].numpy(), (slices.targets[i, 0] > 0.5).numpy(), float(slices.pixel_mm[i])


def test_lesions_change_only_lung_pixels_towards_soft_tissue(slices):
    image, lung, pixel_mm = mid_slice(slices)
    out = insert_lesions(image, lung, pixel_mm, np.random.default_rng(0))
    changed = np.abs(out - image) > 1e-6
    assert changed.any()
    assert not changed[~lung].any()  # the chest wall and mediastinum are as they were
    mean, spread = soft_tissue_stats(image, lung)
    core = np.abs(out - image) > 0.5 * (mean - image[lung].mean())  # well inside the lesion, not its soft rim
    assert abs(float(np.median(out[core])) - mean) < 3 * spread
    assert window(SOFT_TISSUE_HU[0]) < mean < window(SOFT_TISSUE_HU[1])


def test_border_lesions_touch_the_lung_edge(slices):
    """Most lesions are drawn at the lung's border, where a threshold would cut them out."""
    image, lung, pixel_mm = mid_slice(slices)
    edge = lung & ~ndimage.binary_erosion(lung)
    touching = 0
    for seed in range(20):
        out = insert_lesions(image, lung, pixel_mm, np.random.default_rng(seed))
        touching += bool((np.abs(out - image) > 0.1)[edge].any())
    assert touching >= 12  # 80 % are placed touching (one or two lesions a slice)


@pytest.mark.parametrize("style", ["round", "lobulated", "spiculated"])
def test_lesion_shapes_have_their_size(style):
    radius = 12.0
    shape = lesion_shape(radius, style, np.random.default_rng(1))
    area = shape.sum()
    # An ellipse of aspect 0.75-1 with radial bumps of at most 12 % each: near pi r^2.
    assert 0.5 * np.pi * radius**2 < area < 1.6 * np.pi * radius**2


def test_a_hard_negative_cuts_the_lung_around_a_shallow_medial_bulge(slices):
    """A mediastinal structure bulging into the lung: drawn as soft tissue over lung pixels, which leave the label;
    its centre lies outside the lung, between the lungs, so it shows as a cap no deeper than 0.8 of its radius."""
    image, lung, pixel_mm = mid_slice(slices)
    cols = np.nonzero(lung)[1]
    midline = lung_midline(lung)
    mean, _ = soft_tissue_stats(image, lung)
    cut_any = 0
    for seed in range(10):
        out, label = mediastinal_bulge(image, lung, pixel_mm, np.random.default_rng(seed))
        assert not (label & ~lung).any()  # nothing becomes lung
        changed = np.abs(out - image) > 1e-6
        assert not changed[~lung].any()  # the mediastinum itself is as it was
        cut = lung & ~label
        if not cut.any():
            continue
        cut_any += 1
        # Soft tissue where the lung was: most of the way there (a thin cap is mostly its blurred edge).
        assert float(np.median((out - image)[cut] / (mean - image)[cut])) > 0.6
        # On the medial side: nearer the midline than most of the lung.
        assert np.abs(np.nonzero(cut)[1] - midline).mean() < np.percentile(np.abs(cols - midline), 50)
        # A cap: no cut pixel lies deeper in the lung than 0.8 of the largest radius drawn (BULGE_MM).
        depth = ndimage.distance_transform_edt(lung)[cut].max()
        assert depth <= 0.8 * BULGE_MM[1] / 2 / pixel_mm * 1.12 + 1  # lobulated: bumps of up to 12 %
        assert ndimage.label(cut)[1] <= 2  # one structure (a lung's edge may part it in two)
    assert cut_any >= 8


def test_a_batch_with_hard_negatives_gets_new_labels_and_keeps_the_old(slices):
    middle = torch.argsort((slices.targets > 0.5).sum(dim=(1, 2, 3)), descending=True)[:4]
    x, y, pixel_mm = slices.images[middle], slices.targets[middle], slices.pixel_mm[middle]
    before = y.clone()
    options = LesionOptions(lesions=1.0, hard_negatives=1.0)
    out, labels, drawn = augment_lesions(x, y, pixel_mm, options, np.random.default_rng(0))
    assert torch.equal(y, before)  # the caller's label is not changed in place
    cut = (y > 0.5) & (labels < 0.5)
    assert cut.any() and torch.equal(labels[~cut], y[~cut])  # the bulges leave the label, nothing else does
    assert not (drawn > 0.5)[cut].any()  # a bulge is no drawn lung: it weighs as a lesion does not
    assert (out - x > 0.05)[cut].float().mean() > 0.9
    # The same random numbers give the same batch.
    again = augment_lesions(x, y, pixel_mm, options, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip((out, labels, drawn), again))


def test_a_training_batch_learns_the_cut_label(slices, tmp_path):
    """--hard-negatives reaches the trainer's batches: the targets it trains on lose the bulges' pixels."""
    config = TrainConfig(hard_negatives=1.0, augment=False, input_size=256, generator=GeneratorConfig(base_channels=4, depth=2))
    index = torch.argsort((slices.targets > 0.5).sum(dim=(1, 2, 3)), descending=True)[:4]
    x, y, _ = Trainer(config, tmp_path, device="cpu").batch(slices, index)
    given = slices.targets[index]
    assert (y <= given).all() and (y < given).any()


def test_dense_lung_raises_lung_density_only(slices):
    image, lung, _ = mid_slice(slices)
    for seed in range(4):  # both kinds: the dependent gradient and patchy consolidation
        out = dense_lung(image, lung, np.random.default_rng(seed))
        assert np.array_equal(out[~lung], image[~lung])
        assert out[lung].mean() > image[lung].mean()
        assert (out >= image - 1e-6).all()


def test_gradient_is_dependent(slices):
    """The gradient raises the posterior lung (high rows in LPS), not the anterior."""
    image, lung, _ = mid_slice(slices)
    rows = np.flatnonzero(lung.any(axis=1))
    for seed in range(10):
        out = dense_lung(image, lung, np.random.default_rng(seed))
        lift = (out - image) * lung
        front, back = lift[rows[0] : rows[0] + 20].sum(), lift[rows[-1] - 20 : rows[-1] + 1].sum()
        if front == 0 and back > 0:
            return
    pytest.fail("no dependent gradient in 10 seeds")


def test_random_masking_hides_about_70_percent_of_patches():
    image = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    out = random_masking(image, np.random.default_rng(3))
    hidden = out == np.float32(image.mean())
    assert abs(hidden.mean() - MASK_RATIO) < 0.08


def test_no_augmentation_returns_the_batch_unchanged(slices):
    middle = torch.argsort((slices.targets > 0.5).sum(dim=(1, 2, 3)), descending=True)[:4]
    x, y, pixel_mm = slices.images[middle], slices.targets[middle], slices.pixel_mm[middle]
    same, labels, drawn = augment_lesions(x, y, pixel_mm, LesionOptions(), np.random.default_rng(0))
    assert same is x and labels is y and not drawn.any()
    out, labels, drawn = augment_lesions(x, y, pixel_mm, LesionOptions(lesions=1.0), np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype and labels is y  # lesions are lung: the label is kept
    # The drawn pixels are the lung pixels the lesions raised, and only those.
    raised = (out - x > 0.05) & (y > 0.5)
    assert drawn.any() and torch.equal(drawn > 0.5, raised)


@pytest.mark.parametrize("field,value", [("lesions", 1.5), ("dense_lung", -0.1), ("masking", 2.0), ("hard_negatives", 1.1),
                                         ("dense_weight", 0.5), ("lesion_weight", 0.0)])
def test_training_refuses_impossible_settings(field, value, tmp_path):
    with pytest.raises(ValueError, match=field):
        Trainer(TrainConfig(**{field: value}), tmp_path, device="cpu")


def test_dense_lung_pixels_weigh_more(tmp_path):
    config = TrainConfig(dense_weight=4.0, input_size=16, generator=GeneratorConfig(base_channels=4, depth=2))
    trainer = Trainer(config, tmp_path, device="cpu")
    x = torch.tensor([[[[window(-900), window(0)], [window(0), window(-900)]]]])
    y = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    weights = trainer.pixel_weights(x, y)
    # Only the lung pixel denser than -320 HU weighs 4.
    assert weights.tolist() == [[[[1.0, 4.0], [1.0, 1.0]]]]
    assert DENSE_LUNG_HU == -320.0
    assert Trainer(TrainConfig(input_size=16, generator=config.generator), tmp_path / "b", device="cpu").pixel_weights(x, y) is None


def test_drawn_pixels_weigh_more_and_real_vessels_do_not(tmp_path):
    config = TrainConfig(lesion_weight=5.0, input_size=16, generator=GeneratorConfig(base_channels=4, depth=2))
    trainer = Trainer(config, tmp_path, device="cpu")
    x = torch.tensor([[[[window(-900), window(0)], [window(0), window(-900)]]]])
    y = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    drawn = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    # The dense lung pixel (a vessel, not drawn) weighs 1; the drawn pixel 5.
    assert trainer.pixel_weights(x, y, drawn).tolist() == [[[[1.0, 1.0], [1.0, 5.0]]]]
    assert trainer.pixel_weights(x, y) is None


def test_a_training_run_with_every_ingredient_is_seeded(slices, tmp_path):
    """Two runs with the same seed draw the same lesions and end with the same weights."""
    data = slices.subset(range(0, len(slices), 8))
    small = GeneratorConfig(base_channels=4, depth=2)
    weights = []
    for run in ("a", "b"):
        config = TrainConfig(epochs=1, batch_size=4, steps_per_epoch=2, input_size=256, generator=small,
                             lesions=1.0, dense_lung=0.5, masking=0.5, dense_weight=3.0, lesion_weight=4.0)
        trainer = Trainer(config, tmp_path / run, device="cpu")
        trainer.fit(data, data.subset(range(2)))
        weights.append(torch.cat([p.detach().flatten() for p in trainer.generator.parameters()]))
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("lesions,dense,words", [
    (0.5, 0.0, "synthetic lesions"), (0.0, 0.3, "synthetic dense lung"), (0.5, 0.3, "synthetic lesions and dense lung"),
])
def test_the_training_log_names_what_the_validation_slices_have_drawn_in(slices, lesions, dense, words):
    """The log's 'with ... drawn in' names what with_lesions draws, which --dense-lung alone also does."""
    options = LesionOptions(lesions=lesions, dense_lung=dense)
    assert options.drawn == words
    _, drawn = with_lesions(slices, LesionOptions(lesions=lesions, dense_lung=1.0 if dense else 0.0), seed=5)
    assert drawn.any()


@pytest.mark.parametrize("radius,height,apart", [(10.0, 0.0, (3.0, 3.0)), (10.0, 4.0, (2.5, 5.0)), (3.0, -1.0, (0.0, 3.0))])
def test_a_lesion_is_a_sphere_cut_by_the_neighbouring_slices(radius, height, apart):
    """The slice cuts a sphere of radius sqrt(r² + h²) at h; a neighbour d away sees sqrt(R² - (h ∓ d)²), or nothing."""
    below, above = neighbour_radii(radius, height, apart)
    full = radius**2 + height**2
    assert below == pytest.approx(np.sqrt(max(full - (height - apart[0]) ** 2, 0.0)))
    assert above == pytest.approx(np.sqrt(max(full - (height + apart[1]) ** 2, 0.0)))
    assert neighbour_radii(radius, height, (0.0, 0.0)) == pytest.approx((radius, radius))
    assert neighbour_radii(radius, height, (2 * radius + abs(height) + 1,) * 2) == (0.0, 0.0)


@pytest.fixture(scope="module")
def stacked(data):
    """elastix-00's slices (2 mm apart) with the slices nearest 3 mm below and above (4 mm) as channels."""
    case = case_by_name("elastix-00")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    prepared = prepare_slices([(ct, ref)], size=256, context_mm=3.0)
    middle = torch.argsort((prepared.targets > 0.5).sum(dim=(1, 2, 3)), descending=True)[:6]
    return prepared.subset(middle), ct.spacing[2]


def test_2_5d_lesions_are_drawn_into_the_neighbours_as_far_as_they_reach(stacked):
    part, slice_mm = stacked
    apart = context_offset(3.0, slice_mm) * slice_mm
    assert part.neighbour_mm.tolist() == [[apart, apart]] * 6  # lung-bearing middles: the whole offset each way
    image, lung, pixel_mm = part.images[0].numpy(), (part.targets[0, 0] > 0.5).numpy(), float(part.pixel_mm[0])
    # Touching slices: the neighbours are cut where the slice is, nearly as wide.
    near = insert_lesions(image, lung, pixel_mm, np.random.default_rng(3), neighbour_mm=(0.01, 0.01))
    changed = np.abs(near - image) > 0.05
    assert changed[1].sum() > 0 and not changed[:, ~lung].any()  # all three painted inside the slice's lung only
    assert abs(int(changed[0].sum()) - int(changed[1].sum())) < 0.1 * changed[1].sum()
    # Slices 100 mm away: no lesion (70 mm across at most, cut within half its radius of its middle) reaches them.
    far = insert_lesions(image, lung, pixel_mm, np.random.default_rng(3), neighbour_mm=(100.0, 100.0))
    assert np.array_equal(far[[0, 2]], image[[0, 2]]) and (np.abs(far[1] - image[1]) > 0.05).any()
    with pytest.raises(ValueError, match="neighbour_mm"):
        insert_lesions(image, lung, pixel_mm, np.random.default_rng(3))


def test_a_2_5d_batch_marks_what_was_drawn_on_the_slice_itself(stacked):
    part, _ = stacked
    x, y = part.images, part.targets
    out, _, drawn = augment_lesions(x, y, part.pixel_mm, LesionOptions(lesions=1.0), np.random.default_rng(0),
                                    part.neighbour_mm)
    assert out.shape == x.shape and drawn.shape == y.shape
    assert torch.equal(drawn > 0.5, (out[:, 1:2] - x[:, 1:2] > 0.05) & (y > 0.5))
    assert (out[:, [0, 2]] != x[:, [0, 2]]).any()  # lesions of 3-70 mm reach a neighbour 4 mm away
    for options in (LesionOptions(lesions=1.0, dense_lung=0.5), LesionOptions(lesions=1.0, masking=0.5),
                    LesionOptions(lesions=1.0, hard_negatives=0.5)):
        with pytest.raises(ValueError, match="2.5D inputs take drawn lesions only"):
            augment_lesions(x, y, part.pixel_mm, options, np.random.default_rng(0), part.neighbour_mm)
    with pytest.raises(ValueError, match="distance to its neighbours"):
        augment_lesions(x, y, part.pixel_mm, LesionOptions(lesions=1.0), np.random.default_rng(0))


def test_a_2_5d_run_with_lesions_weighs_the_slice_itself(stacked, tmp_path):
    part, _ = stacked
    config = TrainConfig(epochs=1, batch_size=3, steps_per_epoch=1, input_size=256, context_mm=3.0, lesions=1.0,
                         lesion_weight=4.0, dense_weight=2.0, generator=GeneratorConfig(in_channels=3, base_channels=4, depth=2))
    trainer = Trainer(config, tmp_path, device="cpu")
    x, y, drawn = trainer.batch(part, torch.arange(3))
    assert x.shape[1] == 3 and drawn.shape == y.shape and drawn.any()
    weights = trainer.pixel_weights(x, y, drawn)
    assert weights.shape == y.shape
    dense = (y > 0.5) & (x[:, 1:2] > window(DENSE_LUNG_HU))
    expected = torch.where(drawn > 0.5, 4.0, torch.where(dense, 2.0, 1.0))
    assert torch.equal(weights, expected)
    trainer.fit(part, part.subset(range(2)))
    assert len(trainer.history) == 1
