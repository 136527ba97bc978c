"""The lunggan command line on real files: segmenting, evaluating, and every bad input.

Each bad input must give one clear line on stderr, exit status 2, and leave no file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from safetensors.torch import save_file

from LungGANLib.cli import main
from LungGANLib.models.weights import DEFAULT_MODEL, ModelInfo
from LungGANLib.models import Generator, GeneratorConfig


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, tmp_path, argv, message):
    out_path = tmp_path / "out.nii.gz"
    code, _, err = run(capsys, "segment", *argv, "-o", out_path, "-q")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("lunggan: error: ")
    assert message in lines[-1]
    assert not out_path.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.parametrize("method", ["classical", "gan"])
def test_segment_dicom_folder_writes_mask_with_input_geometry(capsys, data, tmp_path, method):
    out = tmp_path / "lungs.nrrd"
    code, stdout, _ = run(capsys, "segment", data / "fixtures/cip-ct-64/dicom", "-o", out, "--method", method, "--device", "cpu", "-q")
    assert code == 0
    assert "right lung" in stdout and "left lung" in stdout
    mask = sitk.ReadImage(str(out))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(data / "fixtures/cip-ct-64/dicom")))
    ct = reader.Execute()
    assert mask.GetSize() == ct.GetSize()
    assert mask.GetSpacing() == ct.GetSpacing()
    assert mask.GetOrigin() == ct.GetOrigin()
    assert mask.GetDirection() == ct.GetDirection()
    assert set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 1, 2}


def test_evaluate_prints_metrics_and_json(capsys, data, tmp_path):
    pred = tmp_path / "pred.nrrd"
    assert run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", pred, "--method", "classical", "-q")[0] == 0
    ref = data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    code, out, _ = run(capsys, "evaluate", "--pred", pred, "--ref", ref)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["structure", "IoU", "Dice"]
    code, out, _ = run(capsys, "evaluate", "--pred", pred, "--ref", ref, "--json")
    result = json.loads(out)
    assert set(result) == {"lungs", "spill"}  # the reference has one label; spill is always reported
    assert result["spill"]["ml"] >= 0 and result["spill"]["beyond_mm"] == 5.0
    assert result["lungs"]["dice"] > 0.96
    assert {"iou", "dice", "hausdorff_mm", "hd95_mm", "hausdorff_px", "hd95_px"} <= set(result["lungs"])


def test_missing_input(capsys, tmp_path):
    assert_refused(capsys, tmp_path, [tmp_path / "nothing.nii.gz"], "input not found")


def test_folder_without_dicom(capsys, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert_refused(capsys, tmp_path, [folder], "no DICOM series found")


def test_2d_image(capsys, data, tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(data / "ct/elastix-00.nii.gz"))[:, :, 70], str(path))
    assert_refused(capsys, tmp_path, [path], "2D image")


def test_mr_is_refused_and_force_overrides(capsys, data, tmp_path):
    mr = data / "fixtures/mr-not-ct.nii.gz"
    assert_refused(capsys, tmp_path, [mr], "is it an MR? Use --force")
    out = tmp_path / "forced.nii.gz"
    code, _, _ = run(capsys, "segment", mr, "-o", out, "--force", "--method", "classical", "-q")
    assert code == 0 and out.exists()


def test_ct_without_lungs_gives_empty_mask_and_warning(data, tmp_path):
    out = tmp_path / "abdomen.nii.gz"
    # A child process, as a user runs it: its stderr is what the user reads (in-process, pytest takes the log).
    result = subprocess.run([sys.executable, "-m", "LungGANLib.cli", "segment", str(data / "fixtures/abdomen-ct-no-lungs.nii.gz"),
                             "-o", str(out), "--device", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no lungs found") == 1, result.stderr  # said once, with its reason
    assert f"wrote {out}: an empty mask, no lungs found" in result.stdout
    mask = sitk.ReadImage(str(out))
    assert not sitk.GetArrayViewFromImage(mask).any()
    assert mask.GetDirection() == sitk.ReadImage(str(data / "fixtures/abdomen-ct-no-lungs.nii.gz")).GetDirection()


def test_existing_output_is_kept_unless_overwrite(capsys, data, tmp_path):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"the user's segmentation")
    code, _, err = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", out, "--method", "classical", "-q")
    assert code == 2 and "exists: choose another name or pass --overwrite" in err
    assert out.read_bytes() == b"the user's segmentation"
    code, _, _ = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", out, "--method", "classical", "--overwrite", "-q")
    assert code == 0 and sitk.ReadImage(str(out)).GetSize() == (64, 64, 79)


def test_corrupt_model(capsys, data, tmp_path):
    model = tmp_path / "bad.safetensors"
    model.write_bytes(DEFAULT_MODEL.read_bytes()[:1000])
    assert_refused(capsys, tmp_path, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--model", model], "corrupt or truncated")


def test_model_of_the_wrong_shape(capsys, data, tmp_path):
    model = tmp_path / "wrong.safetensors"
    small = Generator(base_channels=4, depth=4)
    claims = ModelInfo(GeneratorConfig(base_channels=8, depth=4))
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(model), metadata=claims.metadata())
    assert_refused(capsys, tmp_path, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--model", model], "does not fit the generator")


def test_file_that_is_not_a_model(capsys, data, tmp_path):
    model = tmp_path / "other.safetensors"
    save_file({"weight": Generator(base_channels=2, depth=1).head.weight.detach().contiguous()}, str(model))
    assert_refused(capsys, tmp_path, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--model", model], "not a LungGAN generator")


def test_unknown_device(capsys, data, tmp_path):
    assert_refused(capsys, tmp_path, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--device", "tpu"], "unknown device 'tpu'")


def test_console_script_runs(data, tmp_path):
    out = tmp_path / "m.nii.gz"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lunggan")), "segment", str(data / "fixtures/cip-ct-64/ct-64.nrrd"), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert out.exists() and "wrote" in result.stdout


def test_overlay_draws_a_png(capsys, data, tmp_path):
    out = tmp_path / "overlay.png"
    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    code, stdout, _ = run(capsys, "overlay", ct, data / "fixtures/cip-ct-64/wholeLung-64.nrrd", "-o", out, "--slices", "6", "--columns", "3")
    assert code == 0 and "wrote" in stdout
    import imageio.v3 as iio

    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] == 2 * (64 + 2) and image.shape[1] == 3 * (64 + 2)
    code, _, err = run(capsys, "overlay", ct, data / "ct/elastix-00.nii.gz", "-o", tmp_path / "x.png")
    assert code == 2 and "give the mask that belongs to this CT" in err


def test_train_resume_and_use_the_model(capsys, data, tmp_path):
    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    mask = data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    model = tmp_path / "tiny.safetensors"
    common = ["train", "--pair", ct, mask, "--val-pair", ct, mask, "--base-channels", "2", "--depth", "2",
              "--input-size", "64", "--run-dir", tmp_path / "run", "-o", model, "--device", "cpu"]
    code, _, err = run(capsys, *common, "--epochs", "1")
    assert code == 0, err
    assert "epoch 1:" in err and model.exists()
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["variant"] == "baseline" and card["generator"]["base_channels"] == 2 and card["input_size"] == 64
    assert card["data"]["train"] == [str(ct)]
    code, _, err = run(capsys, *common, "--epochs", "2", "--resume")
    assert code == 0, err
    assert "epoch 2:" in err and "epoch 1:" not in err
    out = tmp_path / "seg.nii.gz"
    code, _, _ = run(capsys, "segment", ct, "-o", out, "--model", model, "-q")
    assert code == 0 and out.exists()
    code, _, err = run(capsys, *common, "--epochs", "1")
    assert code == 2 and "exists" in err


def test_train_from_a_settings_file_holds_out_a_share_without_validation_data(capsys, data, tmp_path):
    from LungGANLib.train.datasets import VALIDATION_FRACTION
    from LungGANLib.models import GeneratorConfig
    from LungGANLib.train.trainer import TrainConfig

    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    mask = data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    config = TrainConfig(variant="basic", epochs=1, steps_per_epoch=2, input_size=64, seed=3,
                         generator=GeneratorConfig(base_channels=2, depth=2, norm="instance", negative_slope=0.1))
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(config.to_dict()))
    model = tmp_path / "m.safetensors"
    common = ["train", "--pair", ct, mask, "--run-dir", tmp_path / "run", "--device", "cpu", "-q"]
    code, _, err = run(capsys, *common, "--config", settings, "-o", model)
    assert code == 0, err
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["training"] == config.to_dict()  # every setting, the generator's norm and slope too
    assert card["data"]["validation"] == [f"{VALIDATION_FRACTION:.0%} of the training slices held out (seed 3)"]
    from LungGANLib.train.datasets import load_pairs, prepare_slices

    slices = len(prepare_slices(load_pairs([(str(ct), str(mask))]), 64))
    held_out = max(1, round(slices * VALIDATION_FRACTION))
    assert f"training basic on {slices - held_out} slices, validating on {held_out}" in err
    # Settings come from one place: the file, or the options.
    code, _, err = run(capsys, *common, "--config", settings, "--epochs", "3", "-o", tmp_path / "n.safetensors")
    assert code == 2 and "holds the training settings: leave out --epochs, or leave out --config" in err
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**config.to_dict(), "epochs": 0}))
    code, _, err = run(capsys, *common, "--config", broken, "-o", tmp_path / "n.safetensors")
    assert code == 2 and "is not valid training settings (epochs must be at least 1, got 0)" in err
    assert not (tmp_path / "n.safetensors").exists()


@pytest.mark.parametrize("variant", ["baseline", "basic", "product", "early-fusion", "late-fusion", "regression"])
def test_each_variant_trains_from_the_command_line(capsys, data, tmp_path, variant):
    model = tmp_path / f"{variant}.safetensors"
    code, _, err = run(capsys, "train", "--kaggle", "--variant", variant, "--input-size", "64", "--epochs", "1",
                       "--steps-per-epoch", "2", "--base-channels", "2", "--depth", "2", "--critic-channels", "2",
                       "--run-dir", tmp_path / "run", "-o", model, "--device", "cpu", "-q")
    assert code == 0, err
    total = len(np.load(data / "kaggle-finding-lungs/x_train.npy", mmap_mode="r"))
    held_out = round(total * 0.2)  # --val-fraction's default
    assert f"training {variant} on {total - held_out} slices, validating on {held_out}" in err and "epoch 1:" in err
    assert ("critic" in err) == (variant != "baseline")
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["variant"] == variant and card["training"]["n_critic"] == 2
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    critic_loss = float(log[1].split(",")[5])
    assert (critic_loss != 0.0) == (variant != "baseline")


def test_the_last_epoch_of_a_run_can_be_exported_beside_its_best(capsys, data, tmp_path):
    """benchmarks/last_epoch.py writes the checkpoint's generator (the last epoch), with its card; never over a file."""
    import torch
    from safetensors import safe_open

    from LungGANLib.models.weights import load_model

    ct, mask = data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    code, _, err = run(capsys, "train", "--pair", ct, mask, "--epochs", "2", "--steps-per-epoch", "1", "--input-size", "64",
                       "--base-channels", "2", "--depth", "2", "--run-dir", tmp_path / "run", "-o", tmp_path / "best.safetensors",
                       "--device", "cpu", "-q")
    assert code == 0, err
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "last_epoch.py"
    last = tmp_path / "last.safetensors"
    done = subprocess.run([sys.executable, script, tmp_path / "run", "-o", last], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    generator, info = load_model(last)
    with safe_open(str(tmp_path / "run" / "checkpoint.safetensors"), framework="pt") as handle:
        for key, value in generator.state_dict().items():
            assert torch.equal(value, handle.get_tensor(f"generator.{key}").to(value.dtype))
    assert info.card["validation"]["epoch"] == 2 and info.card["validation"]["kept"] == "last epoch"
    assert info.config == load_model(tmp_path / "best.safetensors")[1].config
    again = subprocess.run([sys.executable, script, tmp_path / "run", "-o", last], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr and len(again.stderr.splitlines()) == 1
