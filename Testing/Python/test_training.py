"""Training on real CT: a step lowers the loss, checkpoints resume exactly, models round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from LungGANLib.errors import InputError, ModelError
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.models.weights import ModelInfo, card_path, load_model, save_model, sha256
from LungGANLib.models import Generator, GeneratorConfig
from LungGANLib.train.trainer import Trainer, TrainConfig, prepare_slices

SMALL = GeneratorConfig(base_channels=4, depth=2)


@pytest.fixture(scope="module")
def cip_slices(data):
    ct = load_ct(data / "fixtures/cip-ct-64/ct-64.nrrd")
    mask = mask_from_image(sitk.ReadImage(str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd")), ct)
    return ct, mask, prepare_slices([(ct, mask)], size=64)


def small_config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 8, "input_size": 64, "generator": SMALL, **kw})


def test_prepare_slices_keeps_lung_slices_and_soft_targets(cip_slices):
    ct, mask, data = cip_slices
    with_lung = np.flatnonzero(mask.any(axis=(1, 2)))
    assert len(data) >= len(with_lung)
    assert data.images.shape[1:] == (1, 64, 64) and data.targets.shape == data.images.shape
    assert 0.0 <= float(data.images.min()) and float(data.images.max()) <= 1.0
    # The input is already 64x64: the targets are the mask itself, 0 or 1.
    assert set(torch.unique(data.targets).tolist()) == {0.0, 1.0}
    assert float(data.targets.sum()) == float((mask > 0).sum())  # every lung voxel is in a kept slice


def test_prepare_slices_refuses_a_mask_of_another_shape(cip_slices):
    ct, mask, _ = cip_slices
    with pytest.raises(InputError, match="differs from CT shape"):
        prepare_slices([(ct, mask[:-1])], size=64)


def test_one_generator_step_lowers_the_loss(cip_slices, tmp_path):
    _, _, data = cip_slices
    trainer = Trainer(small_config(), tmp_path, device="cpu")
    x, y = data.images[20:28], data.targets[20:28]

    def loss() -> float:
        trainer.generator.train()
        with torch.no_grad():
            return float(F.binary_cross_entropy_with_logits(trainer.generator(x), y))

    before = loss()
    trainer.generator.train()
    terms = trainer.generator_step(trainer.generator(x), x, y)
    assert terms.bce == pytest.approx(before, rel=1e-4) and terms.adversarial == 0.0
    assert loss() < before


@pytest.mark.parametrize("variant, appearance", [("baseline", 0.0), ("baseline", 0.5), ("regression", 0.0)])
def test_resume_ends_with_the_same_weights(cip_slices, tmp_path, variant, appearance):
    _, _, data = cip_slices
    val = data
    config = lambda: small_config(variant=variant, steps_per_epoch=3, appearance=appearance)
    straight = Trainer(config(), tmp_path / "a", device="cpu")
    straight.fit(data, val)

    interrupted = Trainer(config(), tmp_path / "b", device="cpu")
    interrupted.fit(data, val, should_stop=lambda: True)  # stops after epoch 1
    assert interrupted.epoch == 1
    resumed = Trainer(config(), tmp_path / "b", device="cpu")
    resumed.load_checkpoint()
    assert resumed.epoch == 1
    resumed.fit(data, val)
    assert resumed.epoch == 2
    pairs = [(straight.generator, resumed.generator)]
    if variant != "baseline":
        pairs.append((straight.critic, resumed.critic))
    for a_net, b_net in pairs:
        for (name, a), (_, b) in zip(a_net.state_dict().items(), b_net.state_dict().items()):
            assert torch.equal(a, b), name
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    assert [r.critic_loss for r in resumed.history] == [r.critic_loss for r in straight.history]
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss,train_bce,train_adversarial,critic_loss") and len(log) == 3
    assert (tmp_path / "b" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_patience_stops_once_validation_stalls_and_a_resume_may_extend_it(cip_slices, tmp_path):
    _, _, data = cip_slices
    scripted = iter([0.5, 0.6, 0.55, 0.58, 0.7, 0.65, 0.64, 0.66])  # validation Dice per epoch: best at 2, then at 5

    def run(patience: int) -> Trainer:
        trainer = Trainer(small_config(epochs=10, steps_per_epoch=1, patience=patience), tmp_path, device="cpu")
        if trainer.checkpoint_path.is_file():
            trainer.load_checkpoint()
        trainer.validate = lambda val: (0.1, next(scripted), 0.5)
        trainer.fit(data, data)
        return trainer

    first = run(patience=2)
    assert first.epoch == 4 and first.stalled  # epochs 3 and 4 did not beat epoch 2
    assert first.best_dice == 0.6 and first.epochs_without_improvement == 2
    # Patience is how long to run, not how: a resume may raise it and the run goes on where it stopped.
    second = run(patience=3)
    assert second.epoch == 8 and second.best_dice == 0.7  # epoch 5 improved; 6, 7 and 8 did not
    assert second.stalled and second.epochs_without_improvement == 3
    assert [r.val_dice for r in second.history] == [0.5, 0.6, 0.55, 0.58, 0.7, 0.65, 0.64, 0.66]


def test_with_lesion_training_the_kept_epoch_also_answers_for_synthetic_lesions(cip_slices, tmp_path):
    """Threshold-made references never hold a lesion: picked by their Dice alone, a lesion-trained run
    kept an epoch that had barely learned. With lesion training the validation slices are also scored with
    the same synthetic lesions drawn in every epoch (the label includes them), and that Dice keeps the epoch."""
    _, _, data = cip_slices
    trainer = Trainer(small_config(epochs=3, steps_per_epoch=2, lesions=1.0), tmp_path, device="cpu")
    drawn_once, drawn_again = trainer.lesion_validation(data), trainer.lesion_validation(data)
    torch.testing.assert_close(drawn_once[0].images, drawn_again[0].images)  # the same lesions every epoch
    changed = (drawn_once[0].images != data.images)
    assert changed.any() and not (changed & (data.targets <= 0.5)).any()  # drawn into the lung only
    assert torch.equal(drawn_once[0].targets, data.targets)  # lesions are lung: the label stays
    plain, with_lesions = [0.90, 0.89, 0.91], [0.50, 0.70, 0.60]  # validation Dice per epoch
    trainer.validate = lambda val: (0.1, plain[trainer.epoch], 0.5)
    trainer.validate_lesions = lambda images, drawn: (with_lesions[trainer.epoch], 0.25)
    best = trainer.fit(data, data)
    assert [r.score for r in trainer.history] == with_lesions
    assert trainer.best_dice == 0.70  # epoch 2; the plain Dice alone would keep epoch 3
    card = json.loads(card_path(best).read_text())
    assert card["validation"]["epoch"] == 2 and card["validation"]["val_dice_with_synthetic_lesions"] == 0.7
    assert card["validation"]["synthetic_lesion_pixels_kept"] == 0.25


def test_a_lesion_run_resumed_from_before_lesion_scores_keeps_its_next_epoch(cip_slices, tmp_path):
    """A run checkpointed before lesion-aware validation kept its best by plain Dice (about 0.99); the lesion
    Dice (lower: the same lungs plus lesions) must not have to beat that number, nor count its patience."""
    from LungGANLib.train.train_config import EpochRecord

    _, _, data = cip_slices
    trainer = Trainer(small_config(epochs=3, steps_per_epoch=1, lesions=1.0, patience=1), tmp_path, device="cpu")
    trainer.history = [EpochRecord(1, 1e-3, 0.1, 0.1, 0, 0, 0, 0, 0.1, 0.99, 0.98, 1.0)]
    trainer.epoch, trainer.best_dice = 1, 0.99
    trainer.validate = lambda val: (0.1, 0.98, 0.96)
    with_lesions = {1: 0.95, 2: 0.96}
    trainer.validate_lesions = lambda images, drawn: (with_lesions[trainer.epoch], 0.5)
    trainer.fit(data, data)
    assert trainer.epoch == 3 and trainer.best_dice == 0.96  # epoch 2 was kept, and epoch 3 too
    assert json.loads(card_path(trainer.best_path).read_text())["validation"]["epoch"] == 3


def test_a_real_lesion_run_logs_both_scores_and_an_old_history_still_reads(cip_slices, tmp_path):
    from dataclasses import asdict

    from LungGANLib.train.train_config import EpochRecord

    _, _, data = cip_slices
    trainer = Trainer(small_config(epochs=1, steps_per_epoch=1, lesions=1.0), tmp_path, device="cpu")
    trainer.fit(data, data)
    record = trainer.history[0]
    assert 0.0 <= record.val_lesion_dice <= 1.0 and 0.0 <= record.val_lesions_kept <= 1.0
    assert record.score == record.val_lesion_dice
    assert "val_lesion_dice" in (tmp_path / "log.csv").read_text().splitlines()[0]
    old = {k: v for k, v in asdict(record).items() if k not in ("val_lesion_dice", "val_lesions_kept")}
    assert EpochRecord(**old).score == record.val_dice  # a checkpoint from before: picked by Dice, as it was
    without = Trainer(small_config(epochs=1, steps_per_epoch=1), tmp_path / "plain", device="cpu")
    assert without.lesion_validation(data) is None


def test_resume_refuses_other_settings(cip_slices, tmp_path):
    _, _, data = cip_slices
    Trainer(small_config(epochs=1), tmp_path, device="cpu").fit(data, data)
    other = Trainer(small_config(lr=5e-4), tmp_path, device="cpu")
    with pytest.raises(InputError, match="other settings"):
        other.load_checkpoint()


def test_bad_training_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown variant 'wgan': available: baseline, basic, product, early-fusion, late-fusion, regression"):
        Trainer(small_config(variant="wgan"), tmp_path)
    with pytest.raises(ValueError, match="lipschitz must be one of"):
        Trainer(small_config(variant="basic", lipschitz="spectral"), tmp_path)
    with pytest.raises(ValueError, match="n_critic must be at least 1"):
        Trainer(small_config(variant="basic", n_critic=0), tmp_path)
    with pytest.raises(ValueError, match="patience must be at least 1"):
        Trainer(small_config(patience=0), tmp_path)
    with pytest.raises(ValueError, match="multiple of 4"):
        Trainer(small_config(input_size=66), tmp_path)


def test_model_round_trip_with_card(tmp_path):
    g = Generator(SMALL).eval()
    stale = {"variant": "baseline", "weights": "best.safetensors", "input_size": 256}  # e.g. copied from a run's card
    path = save_model(g, ModelInfo(SMALL, input_size=64), tmp_path / "m.safetensors", stale)
    loaded, info = load_model(path)
    assert info.config == SMALL and info.input_size == 64
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(g(x), loaded(x))
    card = json.loads(card_path(path).read_text())
    assert card["variant"] == "baseline" and card["sha256"] == sha256(path)
    assert card["weights"] == "m.safetensors" and card["input_size"] == 64  # described by the weights, not the stale card
    assert card["parameters"] == sum(p.numel() for p in g.parameters())


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "none.safetensors")
