"""Hostile conditions (issue 9): full disks, size limits, races, corrupt and odd input.

Every input is built at test time from ../shared/data. Each case must end with one
line, exit status 2 and nothing at the output path: no partial file, no temporary,
and a user's existing file untouched.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from LungGANLib.cli import main
from LungGANLib.errors import OutputError, OutputExistsError
from LungGANLib.io.output import atomic_write, verify_image, write_image

CT = "ct/elastix-00.nii.gz"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def lunggan_with_file_size_limit(limit_bytes: int, *argv) -> subprocess.CompletedProcess:
    """The command line in a child whose files may not grow beyond ``limit_bytes`` (``ulimit -f``), like a full disk."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "LungGANLib.cli", *map(str, argv)], capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)


@pytest.mark.parametrize("name", ["m.nii", "m.nii.gz", "m.nrrd", "m.mha"])
def test_a_full_disk_gives_exit_2_and_nothing_at_the_output(data, tmp_path, name):
    out = tmp_path / name
    result = lunggan_with_file_size_limit(40_000, "segment", data / CT, "-o", out, "--method", "classical", "-q")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lunggan: error: could not write {out}"), result.stderr
    assert "wrote" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_never_replaces_a_good_mask(data, tmp_path):
    out = tmp_path / "m.nii"
    assert main(["segment", str(data / CT), "-o", str(out), "--method", "classical", "-q"]) == 0
    good = out.read_bytes()
    result = lunggan_with_file_size_limit(40_000, "segment", data / CT, "-o", out, "--method", "gan", "--overwrite", "-q")
    assert result.returncode == 2
    assert out.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.nii"]


def test_a_full_disk_during_a_dicom_seg_leaves_nothing(data, tmp_path):
    out = tmp_path / "s.dcm"
    result = lunggan_with_file_size_limit(100_000, "segment", data / "dicom/lung-pet-ct-dx-a0001-series2", "-o", out,
                                          "--method", "classical", "-q")
    assert result.returncode == 2 and "could not write" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_the_work(capsys, monkeypatch, data, tmp_path):
    import LungGANLib.io.output as output

    real = shutil.disk_usage
    monkeypatch.setattr(output.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    calls = []
    monkeypatch.setattr("LungGANLib.segment.inference.segment", lambda *a, **k: calls.append(1))
    code, _, err = run(capsys, "segment", data / CT, "-o", tmp_path / "m.nii", "-q")
    assert code == 2 and "not enough free space" in err and "37 MB needed" in err
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_of_two_runs_writing_one_new_file_exactly_one_wins(tmp_path):
    out = tmp_path / "m.nrrd"
    theirs = sitk.Image(3, 3, 3, sitk.sitkUInt8) + 7

    def write_while_another_run_finishes_first(tmp):
        sitk.WriteImage(sitk.Image(3, 3, 3, sitk.sitkUInt8), tmp)
        sitk.WriteImage(theirs, str(out))  # the other run publishes between our check and our rename

    with pytest.raises(OutputExistsError, match="written meanwhile"):
        atomic_write(out, write_while_another_run_finishes_first, suffix=".nrrd", overwrite=False)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).max() == 7  # theirs, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.nrrd"]


def test_a_writer_that_fails_silently_is_caught_by_reading_back(tmp_path):
    image = sitk.GetImageFromArray(np.arange(64, dtype=np.uint8).reshape(4, 4, 4))
    with pytest.raises(OutputError, match="could not write"):
        atomic_write(tmp_path / "m.nrrd", lambda tmp: Path(tmp).write_bytes(b"NRRD0004\n"), suffix=".nrrd",
                     verify=verify_image(image))
    assert list(tmp_path.iterdir()) == []
    write_image(image, tmp_path / "m.nrrd")  # a real write reads back equal
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nrrd"))), np.arange(64).reshape(4, 4, 4))


@pytest.mark.parametrize("what", ["model", "checkpoint"])
def test_a_model_or_checkpoint_cut_short_by_its_writer_is_caught_and_nothing_is_left(tmp_path, what):
    import torch
    from safetensors.torch import save_file

    from LungGANLib.io.output import verify_tensors

    tensors = {"w": torch.arange(4096, dtype=torch.float32), "nan": torch.tensor([float("nan")])}

    def cut(tmp):  # a full disk that the writer does not report: the file ends early
        save_file(tensors, tmp, metadata={"epoch": "3"})
        Path(tmp).write_bytes(Path(tmp).read_bytes()[:-1000])

    out = tmp_path / f"{what}.safetensors"
    with pytest.raises(OutputError, match="could not write"):
        atomic_write(out, cut, verify=verify_tensors(tensors, {"epoch": "3"}))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="could not write"):  # whole, but other metadata than meant
        atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"epoch": "2"}), verify=verify_tensors(tensors, {"epoch": "3"}))
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata={"epoch": "3"}), verify=verify_tensors(tensors, {"epoch": "3"}))
    assert out.is_file()  # a whole file with NaN in it reads back equal


def test_a_model_card_cut_short_is_caught(tmp_path):
    from LungGANLib.io.output import verify_text

    with pytest.raises(OutputError, match="could not write"):
        atomic_write(tmp_path / "m.json", lambda tmp: Path(tmp).write_text('{"name": '), verify=verify_text('{"name": "m"}\n'))
    assert list(tmp_path.iterdir()) == []


# -- input integrity ------------------------------------------------------------------------------


def copy_series(data, tmp_path) -> Path:
    folder = tmp_path / "series"
    shutil.copytree(data / "dicom/lung-pet-ct-dx-a0001-series2", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


def assert_refused(capsys, argv, message, out, method="classical"):
    code, stdout, err = run(capsys, "segment", *argv, "-o", out, "--method", method, "-q")
    lines = [line for line in err.splitlines() if line.startswith("lunggan: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and "WARNING: In" not in err  # nothing raw from ITK
    assert not out.exists()


@pytest.mark.parametrize("how", ["gzip-cut", "raw-cut", "gzip-corrupt"])
def test_a_truncated_or_corrupt_nifti_is_refused(capsys, data, tmp_path, how):
    import gzip

    source = (data / "ct/lung-pet-ct-dx-a0001-series3.nii.gz").read_bytes()
    if how == "gzip-cut":
        path, content = tmp_path / "t.nii.gz", source[: len(source) // 2]
    elif how == "raw-cut":
        raw = gzip.decompress(source)
        path, content = tmp_path / "t.nii", raw[: len(raw) * 2 // 3]
    else:
        middle = len(source) // 2
        path, content = tmp_path / "t.nii.gz", source[:middle] + bytes(b ^ 0xFF for b in source[middle : middle + 64]) + source[middle + 64 :]
    path.write_bytes(content)
    assert_refused(capsys, [path], "truncated", tmp_path / "m.nii.gz") if how != "gzip-corrupt" else \
        assert_refused(capsys, [path], "corrupt", tmp_path / "m.nii.gz")


@pytest.mark.parametrize("axis, value, gz", [(1, 0.0, False), (2, float("nan"), True), (3, float("inf"), False)])
def test_a_nifti_without_a_voxel_size_is_refused(capsys, data, tmp_path, axis, value, gz):
    """ITK reads a pixdim of 0, NaN or infinity as 1 mm: the mask would be written and every volume wrong."""
    import gzip
    import struct

    plain = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd")), str(plain))
    header = bytearray(plain.read_bytes())
    struct.pack_into("<f", header, 76 + 4 * axis, value)  # NIfTI-1 pixdim[axis]
    path = tmp_path / ("bad.nii.gz" if gz else "bad.nii")
    path.write_bytes(gzip.compress(bytes(header)) if gz else bytes(header))
    assert_refused(capsys, [path], f"no voxel size in its header (pixdim[{axis}] = ", tmp_path / "m.nii.gz")
    code, _, _ = run(capsys, "segment", plain, "-o", tmp_path / "ok.nii.gz", "--method", "classical", "-q")
    assert code == 0  # the file as written, with its pixdim, is taken


def test_a_rescale_slope_that_makes_no_hounsfield_units_is_refused(capsys, data, tmp_path):
    """A NIfTI's scl_slope of 1e30 gave values of 1e33: an empty mask was written with exit 0."""
    import struct

    plain = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd")), str(plain))
    header = bytearray(plain.read_bytes())
    struct.pack_into("<f", header, 112, 1e30)  # NIfTI-1 scl_slope
    path = tmp_path / "slope.nii"
    path.write_bytes(bytes(header))
    assert_refused(capsys, [path], "beyond any CT in Hounsfield units", tmp_path / "m.nii.gz")
    struct.pack_into("<f", header, 112, 1.0)
    path.write_bytes(bytes(header))  # a slope of 1 in a float file: HU, taken
    assert run(capsys, "segment", path, "-o", tmp_path / "ok.nii.gz", "--method", "classical", "-q")[0] == 0


def test_overwrite_never_replaces_the_input_ct_with_its_mask(capsys, data, tmp_path):
    ct = tmp_path / "ct.nrrd"
    shutil.copyfile(data / "fixtures/cip-ct-64/ct-64.nrrd", ct)
    before = ct.read_bytes()
    code, _, err = run(capsys, "segment", ct, "-o", ct, "--overwrite", "--method", "classical", "-q")
    assert code == 2 and "is the input CT" in err and "Traceback" not in err
    assert ct.read_bytes() == before


@pytest.mark.parametrize("command", ["evaluate", "overlay"])
def test_a_ct_given_as_a_mask_is_refused(capsys, data, tmp_path, command):
    ct, mask = data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    image = sitk.ReadImage(str(ct))
    shifted = tmp_path / "ct-uint16.nrrd"  # stored without a rescale: no negative value, but thousands of them
    sitk.WriteImage(sitk.Cast(image + 1024, sitk.sitkUInt16), str(shifted))
    float_mask = tmp_path / "mask-float.nrrd"  # a label map saved as floats, another label value: a mask
    sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(mask)), sitk.sitkFloat32) * 512, str(float_mask))
    for bad, found in ((ct, "values from -"), (shifted, "different values")):
        argv = ["--pred", bad, "--ref", mask] if command == "evaluate" else [ct, bad, "-o", tmp_path / "o.png"]
        code, _, err = run(capsys, command, *argv)
        assert code == 2 and "is not a label mask" in err and found in err and "Traceback" not in err
        assert not (tmp_path / "o.png").exists()
    argv = ["--pred", float_mask, "--ref", mask] if command == "evaluate" else [ct, float_mask, "-o", tmp_path / "o.png"]
    assert run(capsys, command, *argv)[0] == 0


def test_a_nifti2_header_without_a_voxel_size_is_found():
    import struct

    from LungGANLib.io.nifti import _missing_voxel_size

    header = bytearray(540)
    struct.pack_into("<i", header, 0, 540)
    struct.pack_into("<8q", header, 16, 3, 64, 64, 79, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, 1.0, 0.7, 0.7, 2.5, 0, 0, 0, 0)
    assert _missing_voxel_size(bytes(header)) is None
    struct.pack_into("<d", header, 104 + 8 * 3, 0.0)
    assert _missing_voxel_size(bytes(header)) == "pixdim[3] = 0"


def test_a_dicom_series_with_missing_slices_is_refused_naming_them(capsys, data, tmp_path):
    folder = copy_series(data, tmp_path)
    files = sorted(folder.iterdir())
    for f in files[30:35]:
        f.unlink()
    assert_refused(capsys, [folder], "missing 5 slice(s) at", tmp_path / "m.nii.gz")


def test_a_truncated_slice_file_is_refused_as_a_gap(capsys, data, tmp_path):
    folder = copy_series(data, tmp_path)
    victim = sorted(folder.iterdir())[20]
    victim.write_bytes(victim.read_bytes()[:-100_000])
    assert_refused(capsys, [folder], "could not be read (truncated?)", tmp_path / "m.nii.gz")


def test_duplicates_are_dropped_and_other_objects_ignored_with_a_note(capsys, caplog, data, tmp_path):
    folder = copy_series(data, tmp_path)
    shutil.copy(sorted(folder.iterdir())[10], folder / "zz-copy.dcm")
    assert main(["segment", str(data / "dicom/lung-pet-ct-dx-a0001-series2"), "-o", str(tmp_path / "seg.dcm"),
                 "--method", "classical", "-q"]) == 0
    shutil.move(tmp_path / "seg.dcm", folder / "zz-seg.dcm")  # a SEG object in the series folder
    capsys.readouterr()
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "m.nii.gz", "--method", "classical", "-q")
    assert code == 0
    assert "dropped 1 exact duplicate" in caplog.text and "ignoring 1 SEG object" in caplog.text
    code, _, _ = run(capsys, "segment", data / "dicom/lung-pet-ct-dx-a0001-series2", "-o", tmp_path / "ref.nii.gz",
                     "--method", "classical", "-q")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ref.nii.gz"))))


def test_two_different_slices_at_one_position_are_refused(capsys, data, tmp_path):
    import pydicom

    folder = copy_series(data, tmp_path)
    ds = pydicom.dcmread(sorted(folder.iterdir())[10])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # another acquisition's slice at the same place
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(folder / "zz-other.dcm")
    assert_refused(capsys, [folder], "two different slices at position", tmp_path / "m.nii.gz")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])  # ITK's NIfTI reader turns NaN into 0 unless caught first
def test_nan_and_infinite_slices_at_the_end_become_air_and_the_labels_stay_right(capsys, caplog, data, tmp_path, suffix):
    image = sitk.Cast(sitk.ReadImage(str(data / "ct/lung-pet-ct-dx-a0001-series3.nii.gz")), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[-6:] = np.nan  # the last slices, as a broken reconstruction would leave them
    array[-8:-6] = np.inf
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(image)
    sitk.WriteImage(broken, str(tmp_path / f"nan{suffix}"))
    sitk.WriteImage(image, str(tmp_path / f"ok{suffix}"))
    code, _, err = run(capsys, "segment", tmp_path / f"nan{suffix}", "-o", tmp_path / "nan-m.nrrd", "--method", "classical", "-q")
    assert code == 0 and f"{8 * 512 * 512} voxels that are NaN or infinite" in caplog.text
    assert "8 slice(s) at the scan's ends with no image set to air" in caplog.text
    assert main(["segment", str(tmp_path / f"ok{suffix}"), "-o", str(tmp_path / "ok-m.nrrd"), "--method", "classical", "-q"]) == 0
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan-m.nrrd")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ok-m.nrrd")))
    assert not got[-8:].any()  # no lung where there is no image
    for label in (1, 2):  # each lung stays on its side, elsewhere as without the broken slices
        kept = ref[:-8] == label
        assert (got[:-8][kept] == label).mean() > 0.97, label
        assert ((got[:-8] == label) & (ref[:-8] == 3 - label)).sum() == 0


def float_cip(data, tmp_path, suffix, spoil) -> tuple[Path, Path]:
    """cip-ct-64 as float voxels in ``suffix``, intact and with ``spoil(array)`` applied."""
    image = sitk.Cast(sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd")), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    spoil(array)
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / f"ok{suffix}"))
    sitk.WriteImage(broken, str(tmp_path / f"broken{suffix}"))
    return tmp_path / f"ok{suffix}", tmp_path / f"broken{suffix}"


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha"])
def test_nan_slices_inside_the_scan_are_refused(capsys, data, tmp_path, suffix):
    def spoil(array):
        array[30:33] = np.nan  # three slices through the lungs
        array[33, :40] = np.inf  # and most of the next one

    _, broken = float_cip(data, tmp_path, suffix, spoil)
    assert_refused(capsys, [broken], "4 slice(s) inside the scan that are NaN or infinite", tmp_path / "m.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_scattered_nan_voxels_are_mended_and_the_volumes_stay_right(capsys, caplog, data, tmp_path, suffix):
    rng = np.random.default_rng(7)

    def spoil(array):
        flat = array.reshape(-1)
        flat[rng.choice(flat.size, 300, replace=False)] = np.nan

    ok, broken = float_cip(data, tmp_path, suffix, spoil)
    code, _, _ = run(capsys, "segment", ok, "-o", tmp_path / "ok-m.nrrd", "--method", "classical", "-q")
    assert code == 0 and "NaN" not in caplog.text
    code, _, err = run(capsys, "segment", broken, "-o", tmp_path / "m.nrrd", "--method", "classical", "-q")
    assert code == 0 and "has 300 voxels that are NaN or infinite" in caplog.text, err
    assert "300 scattered voxel(s) given the value of their nearest intact neighbour" in caplog.text
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.nrrd")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ok-m.nrrd")))
    for label in (1, 2):
        assert abs(int((got == label).sum()) - int((ref == label).sum())) <= 0.005 * (ref == label).sum(), label


def test_warnings_reach_the_console_as_one_plain_line(data, tmp_path):
    folder = copy_series(data, tmp_path)
    shutil.copy(sorted(folder.iterdir())[10], folder / "zz-copy.dcm")
    result = subprocess.run([sys.executable, "-m", "LungGANLib.cli", "segment", str(folder), "-o", str(tmp_path / "m.nii.gz"),
                             "--method", "classical", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert result.stderr.strip().splitlines() == [f"lunggan: warning: dropped 1 exact duplicate slice file(s) in {folder}"]


# -- crafted models -------------------------------------------------------------------------------


def crafted_model(tmp_path, change) -> Path:
    """The shipped model's weights with its metadata (or a tensor) changed by ``change(meta, tensors)``."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from LungGANLib.models.weights import DEFAULT_MODEL

    with safe_open(str(DEFAULT_MODEL), framework="pt") as handle:
        meta = dict(handle.metadata())
    tensors = load_file(str(DEFAULT_MODEL))
    generator = json.loads(meta["generator"])
    change(meta, generator, tensors)
    meta["generator"] = json.dumps(generator)
    path = tmp_path / "crafted.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


CRAFTED = {
    "depth 40": (lambda m, g, t: g.update(depth=40), "depth 40"),
    "width 10^7": (lambda m, g, t: g.update(base_channels=10_000_000), "base_channels 10000000"),
    "input size 0": (lambda m, g, t: m.update(input_size="0"), "input_size 0"),
    "input size -256": (lambda m, g, t: m.update(input_size="-256"), "input_size -256"),
    "input size 100": (lambda m, g, t: m.update(input_size="100"), "not divisible by 2**depth"),
    "inverted window": (lambda m, g, t: m.update(window="[400, -1000]"), "low below high"),
    "zero window": (lambda m, g, t: m.update(window="[0, 0]"), "low below high"),
    "threshold NaN": (lambda m, g, t: m.update(threshold="nan"), "strictly between 0 and 1"),
    "threshold 2": (lambda m, g, t: m.update(threshold="2"), "strictly between 0 and 1"),
    "NaN weights": (lambda m, g, t: t["head.weight"].fill_(float("nan")), "NaN or infinite"),
    "too many weights": (lambda m, g, t: g.update(base_channels=256, depth=8), "million weights"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_model_is_refused_before_a_network_is_built(capsys, monkeypatch, data, tmp_path, case):
    import LungGANLib.models.weights as model_io

    change, message = CRAFTED[case]
    model = crafted_model(tmp_path, change)
    built = []
    monkeypatch.setattr(model_io, "Generator", lambda *a, **k: built.append(1))
    assert_refused(capsys, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--model", model], message, tmp_path / "m.nii.gz", "gan")
    assert built == []


def test_an_empty_mask_from_another_model_blames_the_model_not_the_ct(capsys, caplog, data, tmp_path):
    def silence(meta, generator, tensors):  # a model that answers "no lung" everywhere
        tensors["head.bias"].fill_(-50.0)
        tensors["head.weight"].zero_()

    model = crafted_model(tmp_path, silence)
    code, _, _ = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", tmp_path / "m.nii.gz", "--model", model, "-q")
    assert code == 0 and "the model may be at fault" in caplog.text and "Is it a chest CT" not in caplog.text


# -- arguments ------------------------------------------------------------------------------------


def bad_values_of_every_checked_option():
    """(subcommand, option, bad value) for every option whose type checks a range, from the parser itself."""
    import argparse

    from LungGANLib.cli import build_parser

    cases = []
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.option_strings and action.type not in (None, str, int, float):
                for bad in ("abc", "nan", "-1e9", "1e12"):
                    cases.append((name, action.option_strings[-1], bad))
    return cases


@pytest.mark.parametrize("command,option,bad", bad_values_of_every_checked_option())
def test_every_checked_option_refuses_bad_values_in_one_line(capsys, command, option, bad):
    with pytest.raises(SystemExit) as exit_:
        main([command, option, bad])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith(f"lunggan: error: argument {option}")


def test_the_options_that_failed_before_are_all_checked():
    checked = {(c, o) for c, o, _ in bad_values_of_every_checked_option()}
    for case in [("segment", "--batch-size"), ("overlay", "--slices"), ("overlay", "--columns"), ("overlay", "--tile"),
                 ("train", "--val-fraction"), ("train", "--batch-size"), ("train", "--epochs"), ("train", "--lesions")]:
        assert case in checked, case


def test_a_batch_larger_than_memory_is_refused_before_the_work(capsys, data, tmp_path):
    assert_refused(capsys, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--batch-size", "4096"], "needs about",
                   tmp_path / "m.nii.gz", "gan")


@pytest.mark.parametrize("device", ["cpu:x", "cuda:x", "gpu"])
def test_a_malformed_device_is_refused(capsys, data, tmp_path, device):
    assert_refused(capsys, [data / "fixtures/cip-ct-64/ct-64.nrrd", "--device", device], "unknown device",
                   tmp_path / "m.nii.gz", "gan")


def test_resume_keeps_an_unrelated_model_unless_overwrite(capsys, data, tmp_path):
    theirs = tmp_path / "theirs.safetensors"
    theirs.write_bytes(b"someone's model")
    code, _, err = run(capsys, "train", "--pair", data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd",
                       "--val-pair", data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd",
                       "--epochs", "1", "--run-dir", tmp_path / "run", "-o", theirs, "--resume", "--device", "cpu", "-q")
    assert code == 2 and "exists" in err
    assert theirs.read_bytes() == b"someone's model"


def test_a_run_dir_that_is_a_file_is_refused(capsys, data, tmp_path):
    (tmp_path / "run").write_text("a file")
    code, _, err = run(capsys, "train", "--kaggle", "--epochs", "1", "--run-dir", tmp_path / "run", "-o", tmp_path / "m.safetensors")
    assert code == 2 and "is a file" in err and not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("why", ["a CT as the mask", "a missing mask", "a missing starting model"])
def test_a_refused_training_leaves_no_run_folder_it_made_but_keeps_one_that_was_there(capsys, data, tmp_path, why):
    ct, mask = data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    extra = {"a CT as the mask": ["--pair", ct, ct], "a missing mask": ["--pair", ct, tmp_path / "none.nrrd"],
             "a missing starting model": ["--pair", ct, mask, "--init-model", tmp_path / "none.safetensors"]}[why]
    for run_dir, existed in ((tmp_path / "new-run", False), (tmp_path / "old-run", True)):
        if existed:
            run_dir.mkdir()
        code, _, err = run(capsys, "train", *extra, "--epochs", "1", "--run-dir", run_dir, "-o", tmp_path / "m.safetensors",
                           "--device", "cpu", "-q")
        assert code == 2 and err.startswith("lunggan: error:"), err
        assert run_dir.is_dir() == existed
        assert not (tmp_path / "m.safetensors").exists()


def test_implausible_spacing_and_lung_volumes_are_named(capsys, caplog, data, tmp_path):
    image = sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd"))
    image.SetSpacing([s * 3 for s in image.GetSpacing()])  # a header with the wrong unit, say
    sitk.WriteImage(image, str(tmp_path / "tiny.nrrd"))
    code, _, _ = run(capsys, "segment", tmp_path / "tiny.nrrd", "-o", tmp_path / "m.nrrd", "--method", "classical", "-q")
    assert code == 0
    x_mm = image.GetSpacing()[0]
    assert f"voxel spacing x = {x_mm:.3g} mm is outside 0.2-10 mm" in caplog.text
    assert "the right lung measures" in caplog.text and "outside 0.2-10 L" in caplog.text


def test_a_lung_the_scan_holds_part_of_is_said_to_go_on_beyond_it_not_to_be_checked(caplog):
    """A right lung of 0.16 L (1 x 1 x 10 mm voxels): in the middle of the scan, too small for a lung; running off the
    scan's lowest slice (a scan of the apices, or an abdomen's CT with the bases), part of a lung. The left lung,
    0.40 L, through every slice, gets no warning."""
    import logging
    from types import SimpleNamespace

    from LungGANLib.segment.report import warn_implausible

    volume = SimpleNamespace(spacing=(1.0, 1.0, 10.0), voxel_volume_ml=0.01, source="scan")
    labels = np.zeros((40, 60, 60), dtype=np.uint8)
    labels[10:26, 10:30, 10:60] = 1  # 16 slices of 20 x 50 mm: 0.16 L
    labels[:, 35:55, 5:55] = 2  # 40 slices of 20 x 50 mm: 0.40 L
    with caplog.at_level(logging.WARNING):
        warn_implausible(labels, volume)
    assert "the right lung measures 0.16 L, outside 0.2-10 L; check the mask" in caplog.text
    assert "left lung" not in caplog.text
    caplog.clear()
    labels[labels == 1] = 0
    labels[:16, 10:30, 10:60] = 1  # now on the lowest slice: 1000 mm² of it
    with caplog.at_level(logging.WARNING):
        warn_implausible(labels, volume)
    assert ("the right lung measures 0.16 L, less than a whole lung: it goes on beyond the scan's lowest slice"
            in caplog.text) and "check the mask" not in caplog.text


# -- overlay and masks in physical space ----------------------------------------------------------


def test_overlay_takes_a_mask_saved_in_another_axis_order_and_refuses_one_moved_away(capsys, data, tmp_path):
    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    assert main(["segment", str(ct), "-o", str(tmp_path / "m.nrrd"), "--method", "classical", "-q"]) == 0
    mask = sitk.ReadImage(str(tmp_path / "m.nrrd"))
    sitk.WriteImage(sitk.DICOMOrient(mask, "RAS"), str(tmp_path / "ras.nrrd"))
    code, _, err = run(capsys, "overlay", ct, tmp_path / "ras.nrrd", "-o", tmp_path / "ras.png", "--slices", "2")
    assert code == 0, err
    moved = sitk.Image(mask)
    moved.SetOrigin([o + 500 for o in mask.GetOrigin()])
    sitk.WriteImage(moved, str(tmp_path / "moved.nrrd"))
    code, _, err = run(capsys, "overlay", ct, tmp_path / "moved.nrrd", "-o", tmp_path / "moved.png")
    assert code == 2 and "lie in different places" in err and not (tmp_path / "moved.png").exists()


# -- interruptions --------------------------------------------------------------------------------


def test_an_interruption_after_the_mask_was_published_says_it_was_written(capsys, monkeypatch, data, tmp_path):
    import LungGANLib.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C just after the mask took its name, before "wrote ..." was printed

    monkeypatch.setattr(cli, "_say_row", interrupted)
    out = tmp_path / "m.nii.gz"
    code, stdout, err = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", out, "--method", "classical", "-q")
    assert code == 130 and out.is_file()
    assert err.strip() == f"lunggan: interrupted; written completely before it: {out}; nothing else was written"


def test_an_interruption_in_a_batch_names_each_file_written_once(capsys, monkeypatch, data, tmp_path):
    import LungGANLib.cli as cli

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C as the second scan is reported: its mask and the report are written

    monkeypatch.setattr(cli, "_say_row", interrupted)
    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    shutil.copy(ct, tmp_path / "a.nrrd")
    shutil.copy(ct, tmp_path / "b.nrrd")
    shutil.copy(ct, tmp_path / "c.nrrd")
    out, report = tmp_path / "masks", tmp_path / "lungs.csv"
    code, _, err = run(capsys, "segment", tmp_path / "a.nrrd", tmp_path / "b.nrrd", tmp_path / "c.nrrd", "-o", f"{out}/",
                       "--report", report, "--method", "classical", "-q")
    masks = sorted(out.iterdir())
    assert code == 130 and [m.name for m in masks] == ["a_lungs.nii.gz", "b_lungs.nii.gz"]
    # The report was rewritten after each scan; it is named once, after the masks, where it was last written.
    assert err.strip() == (f"lunggan: interrupted; written completely before it: {masks[0]}, {masks[1]}, {report}; "
                           "nothing else was written")


def test_a_sigterm_while_the_command_line_exits_gives_143_and_names_what_was_written(data, tmp_path):
    out = tmp_path / "m.nii.gz"
    # The console entry point, as `lunggan` runs it; SIGTERM comes once the command has returned.
    child = (
        "import os, signal, sys, time\n"
        "from LungGANLib.cli import main\n"
        f"sys.argv = ['lunggan', 'segment', {str(data / 'fixtures/cip-ct-64/ct-64.nrrd')!r}, '-o', {str(out)!r},"
        " '--method', 'classical', '-q']\n"
        "code = main()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert f"lunggan: terminated as it was exiting; written completely before it: {out}" in done.stderr
    assert out.is_file()


def test_an_interruption_before_anything_was_written_says_so(capsys, monkeypatch, data, tmp_path):
    import LungGANLib.segment.inference as inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "segment", interrupted)
    code, _, err = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", tmp_path / "m.nii.gz", "-q")
    assert code == 130 and err.strip() == "lunggan: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def tilted_series(data, tmp_path, degrees: float) -> Path:
    """cip-ct-64's series as a gantry tilted by ``degrees`` about x writes it: the orientation tilted, the slice
    positions as they were (so each slice lies shifted in its own plane against the one before)."""
    import math

    import pydicom

    folder = tmp_path / f"tilt-{degrees:g}"
    folder.mkdir()
    angle = math.radians(degrees)
    for f in sorted((data / "fixtures/cip-ct-64/dicom").iterdir()):
        ds = pydicom.dcmread(f)
        ds.ImageOrientationPatient = [1, 0, 0, 0, math.cos(angle), -math.sin(angle)]
        ds.GantryDetectorTilt = degrees
        ds.save_as(folder / f.name)
    return folder


def mask_at_source_pixels(mask: sitk.Image, folder: Path) -> np.ndarray:
    """The mask sampled (nearest voxel) at each pixel of the series' own slices, by each slice's own header:
    (slices, rows, columns) in file-name order, which is slice order for this fixture."""
    import pydicom

    array = sitk.GetArrayFromImage(mask)
    frames = []
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        origin, cosines = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
        rows, columns = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
        step_x, step_y = (float(v) for v in ds.PixelSpacing)  # along the rows (x), along the columns (y)
        points = origin + columns[..., None] * step_x * cosines[:3] + rows[..., None] * step_y * cosines[3:]
        index = np.rint([mask.TransformPhysicalPointToContinuousIndex(p) for p in points.reshape(-1, 3)]).astype(int)
        inside = ((index >= 0) & (index < mask.GetSize())).all(axis=1)
        frame = np.zeros(len(index), dtype=bool)
        frame[inside] = array[index[inside, 2], index[inside, 1], index[inside, 0]] > 0
        frames.append(frame.reshape(rows.shape))
    return np.stack(frames)


def test_a_tilted_gantry_series_is_resampled_and_the_mask_lies_on_the_ct(capsys, caplog, data, tmp_path):
    straight = data / "fixtures/cip-ct-64/dicom"
    tilted = tilted_series(data, tmp_path, 15.0)
    assert run(capsys, "segment", straight, "-o", tmp_path / "straight.nii.gz", "--method", "classical", "-q")[0] == 0
    assert "tilted" not in caplog.text
    code, _, err = run(capsys, "segment", tilted, "-o", tmp_path / "tilted.nii.gz", "--method", "classical", "-q")
    assert code == 0 and "tilted by 15.0 degrees" in caplog.text, err
    # The pixels are the straight series' own: at each source pixel's position, the two masks must agree
    # (ITK stacks the tilted slices as if straight, up to 80 mm off: Dice 0.53 on this fixture).
    expected = mask_at_source_pixels(sitk.ReadImage(str(tmp_path / "straight.nii.gz")), straight)
    got = mask_at_source_pixels(sitk.ReadImage(str(tmp_path / "tilted.nii.gz")), tilted)
    assert expected.sum() > 1000
    assert 2 * (got & expected).sum() / (got.sum() + expected.sum()) > 0.9
    # A DICOM SEG must reference the source slices, which the resampled grid does not hold.
    assert_refused(capsys, [tilted], "tilted gantry", tmp_path / "m.dcm")


def test_positions_that_jitter_within_a_tenth_of_a_millimetre_are_not_a_tilt():
    from LungGANLib.io.dicom_series import Slice, _tilt

    rng = np.random.default_rng(0)
    row, column = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    jitter = rng.uniform(-0.04, 0.04, size=(20, 2))
    slices = [Slice(str(k), str(k), (jitter[k, 0], jitter[k, 1], 2.5 * k), (1, 0, 0, 0, 1, 0), (8, 8)) for k in range(20)]
    assert _tilt(slices, row, column, 2.5) is None
    tilted = [Slice(s.file, s.uid, (s.position[0], s.position[1] + 0.5 * k, s.position[2]), s.orientation, s.size)
              for k, s in enumerate(slices)]
    found = _tilt(tilted, row, column, 2.5)
    assert found is not None and found.degrees == pytest.approx(np.degrees(np.arctan(0.5 / 2.5)), abs=0.05)


def nifti_with_forms(data, tmp_path, name, change) -> Path:
    """cip-ct-64 as a .nii.gz whose forms are ``change(forms)`` (a :class:`NiftiForms`)."""
    from LungGANLib.io.nifti import read_forms, write_forms

    path = tmp_path / name
    sitk.WriteImage(sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd")), str(path))
    write_forms(str(path), change(read_forms(path)))
    return path


def test_a_nifti_whose_qform_and_sform_agree_gives_its_mask_both_forms_without_a_word(capsys, caplog, data, tmp_path):
    from LungGANLib.io.nifti import read_forms

    ct = nifti_with_forms(data, tmp_path, "ct.nii.gz", lambda f: f)
    assert run(capsys, "segment", ct, "-o", tmp_path / "m.nii.gz", "--method", "classical", "-q")[0] == 0
    assert "qform" not in caplog.text
    assert read_forms(tmp_path / "m.nii.gz") == read_forms(ct)


@pytest.mark.parametrize("how", ["mirrored", "300 mm apart"])
def test_a_nifti_whose_qform_and_sform_disagree_is_named_and_its_mask_carries_both(capsys, caplog, data, tmp_path, how):
    import dataclasses

    from LungGANLib.io.nifti import read_forms

    def change(forms):
        srow = np.reshape(forms.srow, (3, 4)).copy()
        if how == "mirrored":
            srow[0, 0] = -srow[0, 0]  # the sform mirrors x
        else:
            srow[0, 3] += 300.0
        return dataclasses.replace(forms, sform_code=2, srow=tuple(srow.ravel()))

    ct = nifti_with_forms(data, tmp_path, "ct.nii.gz", change)
    code, _, err = run(capsys, "segment", ct, "-o", tmp_path / "m.nii.gz", "--method", "classical", "-q")
    assert code == 0, err
    warned = [r.getMessage() for r in caplog.records if "qform" in r.getMessage()]
    assert len(warned) == 1 and "qform (code 1) and an sform (code 2) that disagree" in warned[0]
    said = "mirrors the qform along voxel axis i" if how == "mirrored" else "up to 300 mm apart"
    assert said in warned[0]
    # Which one ITK believed is named: the one whose affine its geometry matches.
    forms = read_forms(ct)
    image = sitk.ReadImage(str(ct))
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.reshape(image.GetDirection(), (3, 3))
    used = "sform" if np.allclose(lps, forms.sform()[:3, :3] / np.asarray(image.GetSpacing()), atol=1e-4) and \
        np.allclose(np.diag([-1.0, -1.0, 1.0]) @ image.GetOrigin(), forms.sform()[:3, 3], atol=1e-2) else "qform"
    assert f"The {used} was used" in warned[0]
    # The mask carries the CT's two forms exactly, so every reader puts it on the CT.
    assert read_forms(tmp_path / "m.nii.gz") == forms


def enhanced_multiframe(data, folder: Path) -> Path:
    """cip-ct-64's slices as one Enhanced CT object (every frame's position in its per-frame group)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slices = sorted((pydicom.dcmread(f) for f in (data / "fixtures/cip-ct-64/dicom").iterdir()),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    first = slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, key, getattr(first, key))
    ds.Modality, ds.Rows, ds.Columns, ds.NumberOfFrames = "CT", first.Rows, first.Columns, len(slices)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, first.PixelRepresentation
    orientation, measures, rescale = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = first.RescaleIntercept, first.RescaleSlope, "HU"
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for item in slices:
        position, frame = Dataset(), Dataset()
        position.ImagePositionPatient = item.ImagePositionPatient
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack([item.pixel_array for item in slices]).tobytes()
    folder.mkdir()
    ds.save_as(folder / "enhanced.dcm", enforce_file_format=True)
    return folder


def test_a_folder_holding_one_enhanced_multiframe_ct_is_read_as_the_file_is(capsys, data, tmp_path):
    folder = enhanced_multiframe(data, tmp_path / "enhanced")
    for source, out in ((folder / "enhanced.dcm", "file.nii.gz"), (folder, "folder.nii.gz"),
                        (data / "fixtures/cip-ct-64/dicom", "series.nii.gz")):
        code, _, err = run(capsys, "segment", source, "-o", tmp_path / out, "--method", "classical", "-q")
        assert code == 0, err
    masks = [sitk.ReadImage(str(tmp_path / name)) for name in ("file.nii.gz", "folder.nii.gz", "series.nii.gz")]
    assert sitk.GetArrayFromImage(masks[0]).any()
    for mask in masks[1:]:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(masks[0]))
        assert np.allclose(mask.GetOrigin(), masks[0].GetOrigin(), atol=1e-3)


def test_a_nifti_with_a_negative_voxel_size_gets_one_plain_warning_and_no_raw_itk_lines(capfd, caplog, data, tmp_path):
    import dataclasses

    ct = nifti_with_forms(data, tmp_path, "ct.nii.gz", lambda f: dataclasses.replace(f, pixdim=(f.pixdim[0], -f.pixdim[1], *f.pixdim[2:])))
    code = main(["segment", str(ct), "-o", str(tmp_path / "m.nii.gz"), "--method", "classical", "-q"])
    err = capfd.readouterr().err
    assert code == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "qform (code 1) and an sform (code 1) that disagree" in warned[0]
    assert "WARNING: In" not in err and "itk" not in err.lower()  # ITK's "unexpected scales in sform", raw
