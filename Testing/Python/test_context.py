"""2.5D generators: the neighbouring slices as input channels, from the model file to the mask and back to training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from LungGANLib.errors import ModelError
from LungGANLib.io.volumes import volume_from_image
from LungGANLib.models import Generator, GeneratorConfig
from LungGANLib.models.weights import ModelInfo, card_path, load_model, save_model
from LungGANLib.segment.inference import probability_batches, segment, SegmentOptions
from LungGANLib.segment.preprocess import context_offset, from_network, network_input, to_network
from LungGANLib.train.appearance import augment_appearance
from LungGANLib.train.datasets import prepare_slices
from LungGANLib.train.train_config import TrainConfig


def _volume(depth=9, spacing=(0.8, 0.8, 1.5)):
    """A body of soft tissue with two air-filled 'lungs' that move from slice to slice (each slice differs)."""
    hu = np.full((depth, 48, 64), -1000.0, dtype=np.float32)
    hu[:, 6:42, 4:60] = 30.0
    for z in range(depth):
        hu[z, 12:36, 8 + z : 26 + z] = -850.0
        hu[z, 12:36, 36:52] = -850.0 + 20 * z
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing(spacing)
    return volume_from_image(image, "CT", "synthetic", force=True)


@pytest.mark.parametrize("context_mm,slice_mm,expected", [(0, 0.7, 0), (3, 0.7, 4), (3, 1.5, 2), (3, 3.0, 1), (3, 5.0, 1)])
def test_the_neighbours_are_the_slices_nearest_the_distance_and_never_the_slice_itself(context_mm, slice_mm, expected):
    assert context_offset(context_mm, slice_mm) == expected


def test_a_2_5d_input_is_the_slice_below_itself_and_the_slice_above_clipped_at_the_ends():
    hu = _volume().array
    index = np.array([0, 4, 8])
    x = network_input(hu, index, 32, offset=2)
    assert x.shape == (3, 3, 32, 32)
    for channel, rows in enumerate(([0, 2, 6], [0, 4, 8], [2, 6, 8])):
        assert torch.equal(x[:, channel : channel + 1], to_network(hu[rows], 32))
    assert torch.equal(network_input(hu, index, 32), to_network(hu[index], 32))  # no offset: one channel


def test_a_2_5d_model_keeps_its_distance_through_the_file_and_refuses_a_mismatch(tmp_path):
    config = GeneratorConfig(in_channels=3, base_channels=2, depth=2)
    path = save_model(Generator(config), ModelInfo(config, 32, context_mm=3.0), tmp_path / "m.safetensors")
    _, info = load_model(path)
    assert info.context_mm == 3.0 and info.config.in_channels == 3
    assert json.loads(card_path(path).read_text())["context_mm"] == 3.0
    one = GeneratorConfig(base_channels=2, depth=2)
    plain = save_model(Generator(one), ModelInfo(one, 32), tmp_path / "plain.safetensors")
    assert "context_mm" not in json.loads(card_path(plain).read_text()) and load_model(plain)[1].context_mm == 0.0
    save_model(Generator(config), ModelInfo(config, 32), tmp_path / "bad.safetensors")
    with pytest.raises(ModelError, match="needs 1 and 1"):  # three channels, but no distance for the neighbours
        load_model(tmp_path / "bad.safetensors")


def test_the_pipeline_feeds_a_2_5d_generator_its_neighbours(tmp_path):
    volume = _volume()
    torch.manual_seed(0)
    config = GeneratorConfig(in_channels=3, base_channels=4, depth=2)
    generator = Generator(config).eval()
    info = ModelInfo(config, 32, context_mm=3.0, threshold=0.5)
    slices = np.arange(volume.array.shape[0])
    got = torch.cat([p for _, p in probability_batches(volume.array, generator, info, torch.device("cpu"), 4, slices, 1.5)])
    with torch.inference_mode():
        x = network_input(volume.array, slices, 32, info.window, 2)
        expected = torch.sigmoid(generator(x))
    assert got.shape == volume.array.shape
    assert torch.allclose(got, from_network(expected, 48, 64), atol=1e-5)
    # Only the neighbours changed: the slice's own probabilities change with them.
    shuffled = volume.array.copy()
    shuffled[[2, 6]] = shuffled[[6, 2]]
    moved = torch.cat([p for _, p in probability_batches(shuffled, generator, info, torch.device("cpu"), 4, slices, 1.5)])
    assert not torch.allclose(moved[4], got[4])
    with pytest.raises(ValueError, match="slice spacing"):
        next(probability_batches(volume.array, generator, info, torch.device("cpu"), 4, slices))
    path = save_model(generator, info, tmp_path / "m.safetensors")
    labels = segment(volume, SegmentOptions(model=str(path), device="cpu", review=False))
    assert labels.shape == volume.array.shape


def test_training_slices_carry_the_neighbours_and_the_settings_stay_consistent():
    volume = _volume()
    labels = (volume.array < -500).astype(np.uint8)
    data = prepare_slices([(volume, labels)], 32, context_mm=3.0)
    assert data.images.shape[1:] == (3, 32, 32) and data.targets.shape[1] == 1
    assert torch.equal(data.images[:, 1:2], prepare_slices([(volume, labels)], 32).images)
    changed = augment_appearance(data.images, data.targets, 1.0, torch.Generator().manual_seed(0))
    assert changed.shape == data.images.shape and 0 <= changed.min() and changed.max() <= 1
    assert not torch.equal(changed, data.images)
    TrainConfig(input_size=32, generator=GeneratorConfig(in_channels=3, depth=2), context_mm=3.0).validate()
    with pytest.raises(ValueError, match="3 input channels, not 1"):
        TrainConfig(context_mm=3.0).validate()
    TrainConfig(generator=GeneratorConfig(in_channels=3), context_mm=3.0, lesions=0.5).validate()
    for one_slice in ({"variant": "product"}, {"dense_lung": 0.3}, {"masking": 0.2}, {"hard_negatives": 0.3}):
        with pytest.raises(ValueError, match="the critics, the dense lung, the hard negatives and the masking see one slice"):
            TrainConfig(generator=GeneratorConfig(in_channels=3), context_mm=3.0, **one_slice).validate()


@pytest.mark.parametrize("data,message", [(["--variant", "product", "--pair", "x.nii.gz", "x.nii.gz"], "see one slice"),
                                          (["--hard-negatives", "0.3", "--pair", "x.nii.gz", "x.nii.gz"], "see one slice"),
                                          (["--kaggle"], "single 2D slices"),
                                          (["--add-kaggle", "--pair", "x.nii.gz", "x.nii.gz"], "single 2D slices")])
def test_the_command_line_refuses_neighbours_it_cannot_train_in_one_line(tmp_path, data, message):
    result = subprocess.run([sys.executable, "-m", "LungGANLib.cli", "train", *data, "--context-mm", "3", "--input-size", "64",
                             "-o", str(tmp_path / "m.safetensors"), "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "run").exists()
