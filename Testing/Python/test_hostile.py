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
from LungGANLib.io import atomic_write, verify_image, write_image

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
    import LungGANLib.io as io

    real = shutil.disk_usage
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    calls = []
    monkeypatch.setattr("LungGANLib.inference.segment", lambda *a, **k: calls.append(1))
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
