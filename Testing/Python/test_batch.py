"""Many scans in one call: one mask per input, bad inputs skipped with exit 2, and a report that agrees with the files."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from LungGANLib.cli import main

SERIES = "dicom/lung-pet-ct-dx-a0001-series2"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_ct(path) -> sitk.Image:
    """The CT as SimpleITK reads it, without LungGAN's loader."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def expected_figures(ct_path, mask_path) -> dict[str, float]:
    """The report's figures recomputed from the written mask and the CT, voxel by voxel on the input's grid."""
    ct, mask = read_ct(ct_path), sitk.ReadImage(str(mask_path))
    assert ct.GetSize() == mask.GetSize()
    hu, labels = sitk.GetArrayFromImage(ct).astype(float), sitk.GetArrayFromImage(mask)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000
    out = {}
    for region, lung in (("right_lung", labels == 1), ("left_lung", labels == 2), ("total_lung", labels > 0)):
        values = hu[lung]
        out.update({
            f"{region}_ml": lung.sum() * voxel_ml,
            f"{region}_mean_hu": values.mean(),
            f"{region}_laa950_percent": 100 * (values < -950).mean(),
            f"{region}_laa910_percent": 100 * (values < -910).mean(),
            f"{region}_perc15_hu": np.percentile(values, 15),
        })
    return out


def test_two_good_inputs_and_one_bad_write_two_masks_exit_2_and_a_true_report(capsys, data, tmp_path):
    good = [data / SERIES, data / "fixtures/cip-ct-64/ct-64.nrrd"]
    bad = data / "fixtures/mr-not-ct.nii.gz"
    out = tmp_path / "masks"
    code, stdout, err = run(capsys, "segment", good[0], bad, good[1], "-o", f"{out}/", "--report", tmp_path / "r.csv",
                            "--device", "cpu", "-q")
    assert code == 2
    masks = {p.name for p in out.iterdir()}
    assert masks == {"lung-pet-ct-dx-a0001-series2_lungs.nii.gz", "ct-64_lungs.nii.gz"}
    assert [line for line in err.splitlines() if line.startswith("lunggan: error: ")] == [
        line for line in err.splitlines() if str(bad) in line and "MR" in line]
    assert "segmented 2 of 3 scans; 1 failed" in stdout
    with open(tmp_path / "r.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["input"] for row in rows] == [str(good[0]), str(bad), str(good[1])]
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert rows[1]["output"] == "" and "MR" in rows[1]["message"] and rows[1]["right_lung_ml"] == ""
    for row, ct in zip((rows[0], rows[2]), good):
        assert row["model"] == "lunggan" and row["method"] == "gan" and float(row["seconds"]) > 0
        for column, value in expected_figures(ct, row["output"]).items():
            assert float(row[column]) == pytest.approx(value, rel=1e-5, abs=1e-3), column


def test_json_report_and_dicom_seg_format_in_a_folder(capsys, data, tmp_path):
    code, _, err = run(capsys, "segment", data / SERIES, data / "fixtures/cip-ct-64/ct-64.nrrd", "-o", tmp_path / "out",
                       "--format", "dcm", "--method", "classical", "--report", tmp_path / "r.json", "-q")
    assert code == 2  # the NRRD has no DICOM instances for a SEG to refer to
    assert "is not DICOM" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["lung-pet-ct-dx-a0001-series2_lungs.dcm"]
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert rows[0]["model"] == "classical" and rows[1]["right_lung_ml"] is None
    assert pydicom.dcmread(rows[0]["output"]).Modality == "SEG"


def two_series_folder(data, tmp_path):
    """The Lung-PET-CT-Dx series twice in one folder, the copy given new series and instance UIDs."""
    folder = tmp_path / "study"
    folder.mkdir()
    new_series = pydicom.uid.generate_uid()
    for n, source in enumerate(sorted((data / SERIES).iterdir())):
        shutil.copy(source, folder / f"a{n:03d}.dcm")
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = new_series, pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"b{n:03d}.dcm")
    return folder, {pydicom.dcmread(next((data / SERIES).iterdir())).SeriesInstanceUID, new_series}


def test_all_series_segments_each_series_of_a_folder(capsys, data, tmp_path):
    folder, uids = two_series_folder(data, tmp_path)
    code, _, err = run(capsys, "segment", folder, "-o", tmp_path / "out", "--method", "classical", "-q")
    assert code == 2 and "--all-series" in err  # several series, none chosen
    assert not any((tmp_path / "out").iterdir())
    code, stdout, _ = run(capsys, "segment", folder, "-o", tmp_path / "out", "--all-series", "--method", "classical", "-q")
    assert code == 0, stdout
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"study-{uid}_lungs.nii.gz" for uid in uids)
    first, second = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / n))) for n in names)
    np.testing.assert_array_equal(first, second)  # the same voxels under two series


def test_an_existing_mask_is_kept_and_reported_while_the_others_are_written(capsys, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "ct-64_lungs.nii.gz"
    mine.write_bytes(b"the user's own mask")
    code, _, err = run(capsys, "segment", data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/dicom",
                       "-o", out, "--method", "classical", "-q")
    assert code == 2 and "exists" in err
    assert mine.read_bytes() == b"the user's own mask"
    assert (out / "dicom_lungs.nii.gz").is_file()


@pytest.mark.parametrize("case", ["collision", "replaces-input", "format-mismatch", "report-exists", "file-as-folder"])
def test_a_bad_call_is_refused_before_any_work(capsys, data, tmp_path, case):
    ct = data / "fixtures/cip-ct-64/ct-64.nrrd"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if case == "collision":
        for folder in ("a", "b"):
            shutil.copy(ct, tmp_path / folder / "ct.nrrd")
        argv, message = [tmp_path / "a/ct.nrrd", tmp_path / "b/ct.nrrd", "-o", tmp_path / "out"], "would both write"
    elif case == "replaces-input":
        shutil.copy(ct, tmp_path / "a/ct.nrrd")
        shutil.copy(ct, tmp_path / "a/ct_lungs.nrrd")
        argv, message = [tmp_path / "a/ct.nrrd", tmp_path / "a/ct_lungs.nrrd", "-o", tmp_path / "a", "--format", "nrrd"], "would replace the input"
    elif case == "format-mismatch":
        argv, message = [ct, "-o", tmp_path / "out.nii.gz", "--format", "nrrd"], "does not end in .nrrd"
    elif case == "report-exists":
        (tmp_path / "r.csv").write_text("mine")
        argv, message = [ct, "-o", tmp_path / "out.nii.gz", "--report", tmp_path / "r.csv"], "exists"
    else:
        (tmp_path / "out").write_text("a file")
        argv, message = [ct, ct, "-o", tmp_path / "out"], "is a file"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, _, err = run(capsys, "segment", *argv, "--method", "classical", "-q")
    assert code == 2
    assert err.strip().splitlines() == [err.strip().splitlines()[-1]] and message in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_one_scan_that_fails_writes_no_report(capsys, data, tmp_path):
    code, _, err = run(capsys, "segment", data / "fixtures/mr-not-ct.nii.gz", "-o", tmp_path / "m.nii.gz",
                       "--report", tmp_path / "r.csv", "-q")
    assert code == 2 and err.startswith("lunggan: error: ")
    assert list(tmp_path.iterdir()) == []
