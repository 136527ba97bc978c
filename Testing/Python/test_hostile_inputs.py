"""Hostile input, round two: odd files a hospital's export produces, built at test time from ../shared/data.

Each case ends with one line, exit status 2, nothing at the output path, and no wait.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_hostile import assert_refused

NRRD = "fixtures/cip-ct-64/ct-64.nrrd"


def nrrd_with_header_line(data, tmp_path, field: str, value: str):
    """cip-ct-64's NRRD with one header field's value replaced (the data after the header untouched)."""
    raw = (data / NRRD).read_bytes()
    end = raw.index(b"\n\n")
    lines = raw[:end].split(b"\n")
    found = [i for i, line in enumerate(lines) if line.lower().startswith(field.encode() + b":")]
    assert found, f"the fixture has no {field} field"
    lines[found[0]] = f"{field}: {value}".encode()
    path = tmp_path / "bad.nrrd"
    path.write_bytes(b"\n".join(lines) + raw[end:])
    return path


@pytest.mark.parametrize("value, named", [
    ("(nan,0,0) (0,4.171872,0) (0,0,3.9873417721518987)", "axis 0"),
    ("(4.171872,0,0) (0,inf,0) (0,0,3.9873417721518987)", "axis 1"),
    ("(4.171872,0,0) (0,4.171872,0) (0,0,0)", "axis 2"),
])
def test_an_nrrd_whose_space_directions_hold_no_voxel_size_is_refused(capsys, data, tmp_path, value, named):
    """ITK reads a NaN (or infinite, or zero) direction vector as 1 mm: 601 / 532 mL instead of 2485 / 2196."""
    path = nrrd_with_header_line(data, tmp_path, "space directions", value)
    assert_refused(capsys, [path], f"no usable voxel size in its header (space directions {named}", tmp_path / "m.nii.gz")


def test_the_same_nrrd_with_its_own_directions_is_taken(capsys, data, tmp_path):
    from LungGANLib.cli import main

    raw = (data / NRRD).read_bytes()
    header = raw[: raw.index(b"\n\n")].decode("latin-1")
    directions = next(line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("space directions"))
    path = nrrd_with_header_line(data, tmp_path, "space directions", directions)
    assert main(["segment", str(path), "-o", str(tmp_path / "m.nii.gz"), "--method", "classical", "-q"]) == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_named_pipe_is_refused_at_once(data, tmp_path):
    """Reading a FIFO waits for a writer for ever; a child with a time limit shows it does not."""
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    out = tmp_path / "m.nii.gz"
    result = subprocess.run([sys.executable, "-m", "LungGANLib.cli", "segment", str(fifo), "-o", str(out), "-q",
                             "--method", "classical"], capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("lunggan: error:")]
    assert result.returncode == 2 and len(lines) == 1 and "is not a file or a folder (a pipe" in lines[0], result.stderr
    assert not out.exists()


def test_an_empty_device_is_refused_not_taken_for_auto(capsys, data, tmp_path):
    assert_refused(capsys, [data / NRRD, "--device", ""], "device '' is empty", tmp_path / "m.nii.gz", "gan")


@pytest.mark.parametrize("which", ["--pred", "--ref"])
def test_evaluate_refuses_labels_other_than_the_lungs(capsys, data, tmp_path, which):
    """A lobe mask (1, 2, 4, 5) was scored as left-lung Dice 0.00 with exit 0: its labels are named and it is refused."""
    import numpy as np
    import SimpleITK as sitk

    from LungGANLib.cli import main

    reference = sitk.ReadImage(str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd"))
    lung = sitk.GetArrayFromImage(reference) > 0
    z = np.arange(lung.shape[0])[:, None, None]
    depth = lung.shape[0]
    lobes = np.where(lung, np.select([z < 10, z >= depth - 10, z < depth // 2], [1, 2, 4], 5), 0).astype(np.uint8)
    image = sitk.GetImageFromArray(lobes)
    image.CopyInformation(reference)
    lobe_path = tmp_path / "lobes.nrrd"
    sitk.WriteImage(image, str(lobe_path))
    args = {"--pred": data / "fixtures/cip-ct-64/wholeLung-64.nrrd", "--ref": data / "fixtures/cip-ct-64/wholeLung-64.nrrd"}
    args[which] = lobe_path
    code = main(["evaluate", "--pred", str(args["--pred"]), "--ref", str(args["--ref"])])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lunggan: error:")]
    assert code == 2 and len(lines) == 1 and "holds the labels 0, 1, 2, 4, 5" in lines[0], err
    assert main(["evaluate", "--pred", str(args["--ref" if which == "--pred" else "--pred"]),
                 "--ref", str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd")]) == 0  # the lung mask itself is read


@pytest.mark.parametrize("links", [("dangling",), ("loop",), ("dangling", "loop")])
def test_links_that_lead_nowhere_in_a_dicom_folder_are_skipped(caplog, data, tmp_path, links):
    """A complete series with a dangling link or a link loop beside it was refused as missing slices (GDCM's
    scan failed on most of the folder); the links are skipped with a warning and the series read whole."""
    import shutil

    from LungGANLib.io import load_ct

    folder = tmp_path / "series"
    shutil.copytree(data / "fixtures/cip-ct-64/dicom", folder)
    if "dangling" in links:
        (folder / "zz-dangling.dcm").symlink_to(tmp_path / "gone.dcm")
    if "loop" in links:
        (folder / "loop-a").symlink_to(folder / "loop-b")
        (folder / "loop-b").symlink_to(folder / "loop-a")
    ct = load_ct(folder)
    whole = load_ct(data / "fixtures/cip-ct-64/dicom")
    assert ct.array.shape == whole.array.shape and (ct.array == whole.array).all()
    assert len(ct.dicom_files) == len(whole.dicom_files) and all(str(folder) in f for f in ct.dicom_files)
    assert "lead nowhere" in caplog.text


def test_training_refuses_a_ct_given_as_the_mask(capsys, data, tmp_path):
    from LungGANLib.cli import main

    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    code = main(["train", "--pair", str(ct), str(ct), "--epochs", "1", "--run-dir", str(tmp_path / "run"),
                 "-o", str(tmp_path / "m.safetensors"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a label mask" in err and not (tmp_path / "m.safetensors").exists()


def test_training_on_a_mask_without_lungs_warns(caplog, data, tmp_path):
    import numpy as np
    import SimpleITK as sitk

    from LungGANLib.train.datasets import load_pairs

    mask = sitk.ReadImage(str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd"))
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayViewFromImage(mask).shape, dtype=np.uint8))
    empty.CopyInformation(mask)
    written = tmp_path / "empty.nrrd"
    sitk.WriteImage(empty, str(written))
    ((_, loaded),) = load_pairs([(str(data / "fixtures/cip-ct-64/ct-64.nrrd"), str(written))])
    assert not loaded.any()
    assert f"the mask {written} holds no lung" in caplog.text


def test_a_full_disk_names_the_sizes_it_compared(monkeypatch, tmp_path):
    """'0 MB free, about 0 MB needed' told nothing: small sizes are given in kB or bytes."""
    from collections import namedtuple

    from LungGANLib.errors import OutputError
    from LungGANLib.io import output

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(output.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OutputError, match=r"4\.1 kB free, about 40 kB needed"):
        output.check_writable(tmp_path, 40_000)


def test_a_nii_gz_whose_checksum_fails_is_called_corrupt_not_uncompressed(capsys, data, tmp_path):
    import gzip

    import SimpleITK as sitk

    plain = tmp_path / "ct.nii"
    sitk.WriteImage(sitk.ReadImage(str(data / NRRD)), str(plain))
    packed = bytearray(gzip.compress(plain.read_bytes()))
    packed[-8] ^= 0xFF  # the trailer's CRC-32: the data inflate whole, the checksum does not hold
    path = tmp_path / "crc.nii.gz"
    path.write_bytes(bytes(packed))
    assert_refused(capsys, [path], "is truncated or corrupt (CRC check failed", tmp_path / "m.nii.gz")


def test_an_mha_whose_header_falsely_claims_compression_is_called_corrupt(capsys, data, tmp_path):
    """It was refused as 'not a CT (an MR?)': ITK inflated raw voxels into nonsense."""
    import SimpleITK as sitk

    from LungGANLib.cli import main

    plain, packed = tmp_path / "plain.mha", tmp_path / "packed.mha"
    sitk.WriteImage(sitk.ReadImage(str(data / NRRD)), str(plain))
    sitk.WriteImage(sitk.ReadImage(str(data / NRRD)), str(packed), True)
    fake = tmp_path / "fake.mha"
    fake.write_bytes(plain.read_bytes().replace(b"CompressedData = False", b"CompressedData = True", 1))
    assert_refused(capsys, [fake], "is corrupt: its header says CompressedData = True", tmp_path / "m.nii.gz")
    for good in (plain, packed):  # the honest files, compressed or not, are read
        assert main(["segment", str(good), "-o", str(tmp_path / f"{good.stem}.nii.gz"), "--method", "classical", "-q"]) == 0


def test_a_mask_cut_short_by_a_file_size_limit_is_not_reported_as_written(data, tmp_path):
    """cip-ct-64 as .nii under 'ulimit -f 310': 317,440 of 323,936 bytes, and ITK read the cut file back whole
    (the cut fell in zero voxels), so it was published with exit 0."""
    from test_hostile import lunggan_with_file_size_limit

    out = tmp_path / "m.nii"
    result = lunggan_with_file_size_limit(310 * 1024, "segment", data / NRRD, "-o", out, "--method", "classical", "-q")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the file is truncated: 317440 bytes where its header promises 323936" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
def test_our_reader_finds_every_written_format_cut_short(data, tmp_path, suffix):
    import SimpleITK as sitk

    from LungGANLib.io.complete import written_problem

    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(data / "fixtures/cip-ct-64/wholeLung-64.nrrd")), str(whole), suffix != ".nii")
    assert written_problem(whole) is None
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:-100])
    assert written_problem(cut).startswith("is truncated")


@pytest.mark.parametrize("content", ["empty", "text only"])
def test_a_folder_without_dicom_gets_our_one_line_and_nothing_from_itk(tmp_path, content):
    folder = tmp_path / "export"
    folder.mkdir()
    if content == "text only":
        (folder / "README.TXT").write_text("a CD export's index\n")
        (folder / "DICOMDIR").write_bytes(b"not a real DICOMDIR")
    result = subprocess.run([sys.executable, "-m", "LungGANLib.cli", "segment", str(folder), "-o", str(tmp_path / "m.nii.gz"),
                             "--method", "classical", "-q"], capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("lunggan: error: no DICOM series found"), result.stderr


def test_a_seg_saved_into_its_cts_own_series_is_ignored(caplog, data, tmp_path):
    """A SEG object that shares its CT's SeriesInstanceUID was refused as 'mixes acquisitions'; the README says
    SEG objects in the folder are ignored."""
    import shutil

    import pydicom

    from LungGANLib.cli import main
    from LungGANLib.io import load_ct

    source = data / "fixtures/cip-ct-64/dicom"
    seg = tmp_path / "seg.dcm"
    assert main(["segment", str(source), "-o", str(seg), "--method", "classical", "-q"]) == 0
    folder = tmp_path / "series"
    shutil.copytree(source, folder)
    ct_uid = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    dataset = pydicom.dcmread(seg)
    dataset.SeriesInstanceUID = ct_uid
    for name in ("0000-seg.dcm", "zzzz-seg.dcm"):  # first and last in the folder's order
        dataset.save_as(folder / name)
    ct = load_ct(folder)
    whole = load_ct(source)
    assert (ct.array == whole.array).all() and len(ct.dicom_files) == len(whole.dicom_files)
    assert "not image slices" in caplog.text or "among the series' slices" in caplog.text
