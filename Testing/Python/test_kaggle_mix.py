"""The Kaggle slices beside the 3D scans (``lunggan train --add-kaggle``): their intensities brought back to HU, and
the epoch still chosen on the scans."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from LungGANLib.cli import main
from LungGANLib.errors import InputError
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.io.volumes import clip_air
from LungGANLib.train.datasets import KAGGLE_BODY_HU, KAGGLE_LUNG_HU, _anchors, kaggle_hu, kaggle_training_slices

CIP = "fixtures/cip-ct-64"


@pytest.fixture(scope="module")
def slice_64(data):
    """A real slice of cip-ct-64 and its lung, brought to 64 pixels as the Kaggle slices are: HU and mask."""
    ct = load_ct(data / CIP / "ct-64.nrrd")
    lung = mask_from_image(sitk.ReadImage(str(data / CIP / "wholeLung-64.nrrd")), ct) > 0
    z = int(np.argmax(lung.sum(axis=(1, 2))))
    shrink = lambda a: F.interpolate(torch.from_numpy(np.asarray(a, np.float32))[None, None], size=(64, 64), mode="area")[0, 0].numpy()
    return shrink(clip_air(ct.array[z])), shrink(lung[z]) > 0.5


def test_a_real_slice_comes_back_to_the_same_hu_whatever_it_was_windowed_with(slice_64):
    hu, lung = slice_64
    lung_hu, body_hu = _anchors(hu, lung)
    assert body_hu > lung_hu + 500  # the slice shows lung and soft tissue
    # Windowed as the Kaggle slices were: by a wide window that clips nothing of the lung or the soft tissue, and
    # across the scanner's padding outside a round field of view (which hides the body's corners).
    yy, xx = np.mgrid[:64, :64]
    padded = np.where((yy - 31.5) ** 2 + (xx - 31.5) ** 2 > 32**2, -3024.0, hu)
    windowed = {"window": (hu, np.clip((hu + 1100.0) / 2600.0, 0, 1)),
                "padding": (padded, (padded - padded.min()) / (padded.max() - padded.min()))}
    for name, (source, image) in windowed.items():
        # What the calibration must give: the source's HU moved linearly so that its two figures land on the
        # references'.
        source_lung, source_body = _anchors(source, lung)
        expected = KAGGLE_LUNG_HU + (source - source_lung) * (KAGGLE_BODY_HU - KAGGLE_LUNG_HU) / (source_body - source_lung)
        back = kaggle_hu(image[None].astype(np.float32), lung[None])[0]
        assert np.abs(back - expected)[source > -1024].max() < 0.5, name
    # The figures ignore what lies below the lung (air around the body, padding): the field of view's corners
    # moved them only by the body they hid.
    corners = padded == -3024.0
    assert _anchors(padded, lung) == _anchors(np.where(corners, -1024.0, hu), lung)


def test_a_slice_that_cannot_be_calibrated_is_refused(slice_64):
    hu, lung = slice_64
    with pytest.raises(InputError, match="slice 1 has no lung in its mask"):
        kaggle_hu(np.stack([hu, hu]), np.stack([lung, np.zeros_like(lung)]))
    with pytest.raises(InputError, match="slice 0 shows no soft tissue brighter than its lung"):
        kaggle_hu(np.full((1, 64, 64), 0.3, np.float32), lung[None])


def test_the_kaggle_slices_come_as_training_slices_of_the_network_s_size(data):
    slices = kaggle_training_slices(size=128)
    x = np.load(data / "kaggle-finding-lungs/x_train.npy", mmap_mode="r")
    assert slices.images.shape == (len(x), 1, 128, 128) and slices.targets.shape == (len(x), 1, 128, 128)
    assert torch.isnan(slices.pixel_mm).all() and slices.neighbour_mm is None
    # Each lung's median lands where the references' does, in the window (-1024..600 HU: the lung 0.1063).
    lung = slices.targets[:, 0] > 0.99
    medians = [float(torch.median(image[m])) for image, m in zip(slices.images[:, 0], lung)]
    assert np.allclose(medians, (KAGGLE_LUNG_HU + 1024) / 1624, atol=0.03)


def test_add_kaggle_trains_on_both_and_chooses_the_epoch_on_the_scans(capsys, data, tmp_path):
    ct, mask = data / CIP / "ct-64.nrrd", data / CIP / "wholeLung-64.nrrd"
    common = ["train", "--pair", str(ct), str(mask), "--input-size", "64", "--epochs", "1", "--steps-per-epoch", "1",
              "--base-channels", "2", "--depth", "2", "--device", "cpu", "-q"]
    counts = {}
    for extra in ([], ["--add-kaggle"]):
        model = tmp_path / f"m{len(extra)}.safetensors"
        assert main([*common, *extra, "--run-dir", str(tmp_path / f"run{len(extra)}"), "-o", str(model)]) == 0
        err = capsys.readouterr().err
        line = next(line for line in err.splitlines() if line.startswith("training baseline on"))
        counts[bool(extra)] = [int(word) for word in line.replace(",", "").split() if word.isdigit()]
        card = json.loads(model.with_suffix(".json").read_text())
        assert any("kaggle-finding-lungs" in name for name in card["data"]["train"]) == bool(extra)
    kaggle = len(np.load(data / "kaggle-finding-lungs/x_train.npy", mmap_mode="r"))
    assert counts[True][0] == counts[False][0] + kaggle  # every x_train slice added to the training slices
    assert counts[True][1] == counts[False][1]  # and none to the validation slices


def test_add_kaggle_beside_kaggle_is_refused_in_one_line(capsys, tmp_path):
    code = main(["train", "--kaggle", "--add-kaggle", "--input-size", "64", "-o", str(tmp_path / "m.safetensors"),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "give one of them" in err and "Traceback" not in err
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "run").exists()
