"""Reading real CT in every supported form, keeping geometry, and refusing bad input clearly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from LungGANLib.errors import InputError, OutputExistsError
from LungGANLib.io import load_ct, mask_from_image, mask_to_image, read_image
from LungGANLib.io.output import check_output_path, write_image


def test_nrrd_and_dicom_series_of_the_same_scan_agree(data):
    nrrd = load_ct(data / "fixtures/cip-ct-64/ct-64.nrrd")
    dicom = load_ct(data / "fixtures/cip-ct-64/dicom")
    assert nrrd.array.shape == dicom.array.shape == (79, 64, 64)
    assert dicom.modality == "CT"
    np.testing.assert_allclose(nrrd.spacing, dicom.spacing, rtol=1e-4)
    np.testing.assert_array_equal(nrrd.array, dicom.array)


def test_nifti_volume_keeps_hu_and_padding(data):
    ct = load_ct(data / "ct/lung-pet-ct-dx-a0001-series3.nii.gz")
    assert ct.array.shape == (64, 512, 512)
    assert ct.orientation == "LPS"
    assert ct.spacing == pytest.approx((0.8418, 0.8418, 5.0), abs=1e-3)
    assert ct.array.min() == -1024


def test_single_dicom_file_reads_as_one_slice(data):
    ct = load_ct(data / "fixtures/chest-slice-lungmask.dcm")
    assert ct.array.shape == (1, 512, 512)
    assert ct.array.min() == -2048  # scanner padding kept; the pipeline clips it


def test_ras_volume_is_reoriented_and_mask_goes_back_exactly(data, tmp_path):
    path = data / "fixtures/abdomen-ct-no-lungs.nii.gz"
    original = sitk.ReadImage(str(path))
    ct = load_ct(path)
    assert ct.orientation == "RAS"
    # Canonical LPS: x and y flipped relative to the file's RAS array.
    file_array = sitk.GetArrayFromImage(original)
    np.testing.assert_array_equal(ct.array, file_array[:, ::-1, ::-1])
    mask = np.zeros(ct.array.shape, np.uint8)
    mask[3, 10, 20] = 1  # a voxel at the canonical (z, y, x)
    image = mask_to_image(mask, ct)
    assert image.GetSize() == original.GetSize()
    assert image.GetOrigin() == original.GetOrigin()
    assert image.GetSpacing() == original.GetSpacing()
    assert image.GetDirection() == original.GetDirection()
    # Same physical point in both: the canonical voxel and where it landed in the file's grid.
    back = sitk.GetArrayFromImage(image)
    z, y, x = np.argwhere(back)[0]
    assert (z, y, x) == (3, file_array.shape[1] - 1 - 10, file_array.shape[2] - 1 - 20)
    np.testing.assert_array_equal(mask_from_image(image, ct), mask)
    out = write_image(image, tmp_path / "m.nii.gz")
    assert sitk.ReadImage(str(out)).GetDirection() == original.GetDirection()


def test_a_volume_without_its_voxels_writes_the_same_mask_and_holds_no_hu(data):
    """segment_file lets the CT's HU go before it writes the mask (issue 9: long scans)."""
    ct = load_ct(data / "fixtures/abdomen-ct-no-lungs.nii.gz")  # RAS: the mask is reoriented on the way out
    shell = ct.without_voxels()
    assert shell.array.shape == ct.array.shape and shell.array.strides == (0, 0, 0) and not shell.array.any()
    assert (shell.spacing, shell.geometry, shell.orientation, shell.source) == (ct.spacing, ct.geometry, ct.orientation, ct.source)
    assert ct.array.any()  # the original keeps its HU
    mask = np.zeros(ct.array.shape, np.uint8)
    mask[3, 10:14, 20:30] = 2
    a, b = mask_to_image(mask, ct), mask_to_image(mask, shell)
    assert a.GetSize() == b.GetSize() and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        load_ct(tmp_path / "nope.nii.gz")


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="no DICOM series found"):
        load_ct(tmp_path)


def test_folder_with_two_series_lists_them_and_series_picks(data, tmp_path):
    for folder in ("fixtures/cip-ct-64/dicom", "dicom/lung-pet-ct-dx-a0001-series2"):
        for f in (data / folder).iterdir():
            shutil.copy(f, tmp_path / f"{folder.split('/')[-1]}-{f.name}")
    with pytest.raises(InputError, match="holds 2 DICOM series; pick one with --series") as info:
        read_image(tmp_path)
    assert "(79 files)" in str(info.value) and "(64 files)" in str(info.value)
    uid = "1.2.826.0.1.3680043.2.1125.1.18085492126195434258212517481071422"
    ct = load_ct(tmp_path, series=uid)
    assert ct.array.shape == (79, 64, 64)
    with pytest.raises(InputError, match="series 1.2.3 is not in"):
        read_image(tmp_path, series="1.2.3")


def test_2d_image_is_refused(data, tmp_path):
    slice2d = sitk.ReadImage(str(data / "ct/elastix-00.nii.gz"))[:, :, 70]
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(slice2d, str(path))
    with pytest.raises(InputError, match=r"is a 2D image \(512x512\), not a CT volume"):
        load_ct(path)


def test_mr_is_refused_unless_forced(data):
    path = data / "fixtures/mr-not-ct.nii.gz"
    with pytest.raises(InputError, match="does not look like a CT.*--force"):
        load_ct(path)
    assert load_ct(path, force=True).array.shape == (20, 91, 117)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_text("garbage")
    with pytest.raises(InputError, match="could not read"):
        load_ct(path)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "m.nii.gz"
    out.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="exists: choose another name or pass --overwrite"):
        check_output_path(out)
    assert out.read_bytes() == b"user data"
    assert check_output_path(out, overwrite=True) == out
    with pytest.raises(InputError, match="use a file name ending in"):
        check_output_path(tmp_path / "m.png")
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "no" / "m.nii.gz")


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    from LungGANLib.io.output import atomic_write

    out = tmp_path / "m.nrrd"
    out.write_bytes(b"the old mask")
    image = sitk.Image(4, 4, 4, sitk.sitkUInt8) + 3
    seen = []

    def write(tmp):
        sitk.WriteImage(image, tmp)
        seen.append(out.read_bytes())  # what anyone reading the name sees while the new file is written

    atomic_write(out, write, suffix=".nrrd")
    assert seen == [b"the old mask"]  # a write in place would show a partial or new file here
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).max() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nrrd"]


def test_metaimage_reads_like_the_nrrd(data, tmp_path):
    src = sitk.ReadImage(str(data / "fixtures/cip-ct-64/ct-64.nrrd"))
    for name in ("ct.mha", "ct.mhd"):
        sitk.WriteImage(src, str(tmp_path / name))
        ct = load_ct(tmp_path / name)
        np.testing.assert_array_equal(ct.array, sitk.GetArrayFromImage(src))


def test_int16_ct_stays_int16_and_other_types_become_float(data):
    assert load_ct(data / "fixtures/cip-ct-64/ct-64.nrrd").array.dtype == np.int16
    small = load_ct(data / "fixtures/ct-small-pydicom.dcm")  # int32 pixels
    assert small.array.dtype == np.float32 and small.array.shape == (1, 128, 128)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from LungGANLib.io.output import atomic_write

    target = tmp_path / "card.json"
    target.write_text("old")

    def fail(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
    atomic_write(target, lambda tmp: open(tmp, "w").write("new"))
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != "0o600"
