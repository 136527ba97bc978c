"""Lesions as radiologists marked them: hand-made cases with known answers, the real LIDC reads and tumour boxes."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import SimpleITK as sitk

from LungGANLib.io.annotations import outline_mask, read_lidc_outlines
from LungGANLib.cli import main
from LungGANLib.io import load_ct, mask_from_image
from LungGANLib.evaluate.lesions import (
    JUXTAPLEURAL_MM,
    SPILL_MM,
    TUMOUR_HU,
    Lesion,
    box_lesions,
    largest_diameter_mm,
    lesion_report,
    lidc_lesions,
    score_lesions,
    spill_ml,
)
from LungGANLib.evaluate.references import case_by_name, reference_path

SPACING = (1.0, 1.0, 2.0)  # x, y, z mm


def lesion_from(mask: np.ndarray, name: str = "lesion") -> Lesion:
    from scipy import ndimage

    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return Lesion(name, "nodule", box, mask[box].copy())


def ball(shape, centre, radius_px) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) * 2.0) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius_px**2


@pytest.fixture
def lung():
    """A box of lung (z 2..17, y 10..49, x 10..49) in a 20x60x60 volume."""
    ref = np.zeros((20, 60, 60), dtype=np.uint8)
    ref[2:18, 10:50, 10:50] = 1
    return ref


def test_share_inside_is_the_share_of_lesion_voxels_in_the_mask(lung):
    deep = ball(lung.shape, (10, 30, 30), 4) & (lung > 0)
    pred = lung.copy()
    pred[:, :, :30] = 0  # the mask lost the left half of the volume: half the lesion
    [score] = score_lesions(pred, lung, [lesion_from(deep)], SPACING)
    expected = (deep & (pred > 0)).sum() / deep.sum()
    assert score.inside == pytest.approx(expected) and 0 < expected < 1
    assert score.voxels == deep.sum()


def test_juxtapleural_means_within_2_mm_of_tissue_that_is_neither_lung_nor_lesion(lung):
    deep = ball(lung.shape, (10, 30, 30), 4)  # 16 mm from the lung's edge
    at_wall = np.zeros(lung.shape, dtype=bool)
    at_wall[8:12, 26:34, 10:14] = True  # x=10, next to the wall (x <= 9 is not lung): 1 mm
    near = np.zeros(lung.shape, dtype=bool)
    near[8:12, 26:34, 11:15] = True  # its first column x=11 is 2 mm from the wall's last, x=9
    beyond = np.zeros(lung.shape, dtype=bool)
    beyond[8:12, 26:34, 13:17] = True  # 4 mm from the wall
    scores = score_lesions(lung, lung, [lesion_from(m) for m in (deep, at_wall, near, beyond)], SPACING)
    assert [s.juxtapleural for s in scores] == [False, True, True, False]
    assert JUXTAPLEURAL_MM == 2.0


def test_a_lesion_the_reference_cut_out_is_still_juxtapleural_only_by_its_surroundings(lung):
    """The reference need not contain the lesion: lesion voxels never count as the tissue around it."""
    ref = lung.copy()
    nodule = ball(lung.shape, (10, 30, 30), 4)
    ref[nodule] = 0  # a reference without the nodule
    [score] = score_lesions(lung, ref, [lesion_from(nodule)], SPACING)
    assert not score.juxtapleural and score.inside == 1.0


def test_diameter_of_a_disk_and_of_a_single_voxel():
    disk = np.zeros((3, 40, 40), dtype=bool)
    yy, xx = np.mgrid[:40, :40]
    disk[1] = (yy - 20) ** 2 + (xx - 20) ** 2 <= 10**2
    # Pixel centres 20 apart (from x=10 to x=30), plus one pixel: 21 pixels of 0.5 mm.
    assert largest_diameter_mm(lesion_from(disk), (0.5, 0.5, 2.0)) == pytest.approx(10.5)
    point = np.zeros((3, 5, 5), dtype=bool)
    point[1, 2, 2] = True
    assert largest_diameter_mm(lesion_from(point), (0.7, 0.7, 2.0)) == pytest.approx(0.7)


def test_spill_counts_only_mask_beyond_5_mm_that_is_no_lesion(lung):
    pred = lung.copy()
    pred[8:10, 30:40, 52:58] = 1  # x 52..57: 3 to 8 mm from the lung (last lung column x=49)
    far = np.zeros(lung.shape, dtype=bool)
    far[8:10, 30:40, 55:58] = True  # 6, 7 and 8 mm away: beyond 5 mm
    voxel_ml = np.prod(SPACING) / 1000
    spill, percent = spill_ml(pred, lung, [], SPACING)
    assert spill == pytest.approx(far.sum() * voxel_ml)
    assert percent == pytest.approx(100 * far.sum() / (lung > 0).sum())
    # The same voxels marked as a lesion are no spill.
    lesion = np.zeros(lung.shape, dtype=bool)
    lesion[8:10, 30:40, 56:58] = True
    spill_with_lesion, _ = spill_ml(pred, lung, [lesion_from(lesion)], SPACING)
    assert spill_with_lesion == pytest.approx((far & ~lesion).sum() * voxel_ml)
    assert SPILL_MM == 5.0


def test_report_summarises_the_least_and_the_pooled_share(lung):
    a = np.zeros(lung.shape, dtype=bool)
    a[5:7, 20:24, 20:24] = True  # 32 voxels
    b = np.zeros(lung.shape, dtype=bool)
    b[12:14, 30:32, 30:32] = True  # 8 voxels
    pred = lung.copy()
    pred[5:7, 20:24, 20:22] = 0  # half of a
    report = lesion_report(pred, lung, [lesion_from(a, "a"), lesion_from(b, "b")], SPACING)
    assert report["all"]["count"] == 2
    assert report["all"]["min_inside"] == pytest.approx(0.5)
    assert report["all"]["pooled_inside"] == pytest.approx((16 + 8) / 40)
    assert report["juxtapleural"]["count"] == 0 and report["juxtapleural"]["min_inside"] is None


# -- the real marks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lidc1(data):
    case = case_by_name("lidc-idri-0001")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    return ct, ref, data / case.lidc_reads


def test_one_lesion_per_reader_and_nodule_of_the_lidc_file(lidc1):
    ct, _, reads = lidc1
    ns = {"n": "http://www.nih.gov"}
    root = ET.parse(reads).getroot()
    expected = sorted(
        (reader + 1, (nodule.findtext("n:noduleID", namespaces=ns) or "").strip())
        for reader, session in enumerate(root.findall("n:readingSession", ns))
        for nodule in session.findall("n:unblindedReadNodule", ns)
        if nodule.findall("n:roi", ns)
    )
    lesions = lidc_lesions(reads, ct)
    assert sorted((int(l.name.split()[1]), l.name.split(" nodule ", 1)[1]) for l in lesions) == expected


def test_a_nodule_is_the_interior_of_its_outline(lidc1):
    """LIDC outlines are drawn just outside the nodule: scoring uses the interior, the references add the outline too."""
    ct, _, reads = lidc1
    outlines = [o for o in read_lidc_outlines(reads) if o.reader == 0 and len(o.xs) >= 3]
    interior = outline_mask(outlines, ct, include_outline=False)
    with_outline = outline_mask(outlines, ct)
    assert interior.sum() > 0 and not (interior & ~with_outline).any()
    # The difference is the drawn outline: one ring of pixels per slice.
    ring_pixels = sum(len(set(zip(o.xs, o.ys))) for o in outlines)
    assert 0 < with_outline.sum() - interior.sum() <= ring_pixels


def test_the_reference_holds_every_nodule_and_the_report_says_so(lidc1, tmp_path):
    """Scoring the reference against itself: every nodule entirely inside, no spill; the JSON is valid JSON."""
    ct, ref, reads = lidc1
    ref_path = reference_path(case_by_name("lidc-idri-0001"))
    out = tmp_path / "report.json"
    import contextlib
    import io as stdio

    buffer = stdio.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["evaluate", "--pred", str(ref_path), "--ref", str(ref_path), "--lesions", str(reads), "--json"]) == 0
    out.write_text(buffer.getvalue())
    report = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    assert all(l["inside"] == 1.0 for l in report["lesions"]["lesions"])
    assert report["spill"]["ml"] == 0.0
    # The large nodule touches the posterior chest wall: juxtapleural, over 20 mm.
    big = [l for l in report["lesions"]["lesions"] if l["voxels"] > 1000]
    assert big and all(l["juxtapleural"] and l["diameter_mm"] > 20 for l in big)


def test_a_mask_without_one_readers_nodule_scores_it_zero(lidc1, tmp_path):
    ct, ref, reads = lidc1
    lesions = lidc_lesions(reads, ct)
    target = max(lesions, key=lambda l: l.voxels)
    pred = ref.copy()
    pred[target.box][target.mask] = 0
    report = lesion_report(pred, ref, lesions, ct.spacing)
    scores = {l["name"]: l["inside"] for l in report["lesions"]}
    assert scores[target.name] == 0.0
    others = [l for l in lesions if l.name != target.name]
    for other in others:
        overlap = (pred[other.box][other.mask] > 0).mean()
        assert scores[other.name] == pytest.approx(overlap)


def test_tumour_boxes_give_one_tumour_of_soft_tissue_inside_its_boxes(data):
    case = case_by_name("lung-pet-ct-dx-a0001-series2")
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    [tumour] = box_lesions(data / case.tumour_boxes, data / case.boxes_dicom, ct, ref)
    hu = ct.array[tumour.box][tumour.mask]
    assert tumour.kind == "tumour" and tumour.voxels > 1000
    assert hu.min() > TUMOUR_HU[0] and hu.max() < TUMOUR_HU[1]
    [score] = score_lesions(ref, ref, [tumour], ct.spacing)
    assert score.juxtapleural  # it abuts the mediastinum
    assert score.inside > 0.95  # the reference took the tumour in (its own correction)


def test_evaluate_refuses_tumour_boxes_without_the_ct(data, tmp_path, capsys):
    case = case_by_name("lung-pet-ct-dx-a0001-series3")
    ref = str(reference_path(case))
    code = main(["evaluate", "--pred", ref, "--ref", ref, "--lesions", str(data / case.tumour_boxes)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--ct" in err[0]


def test_evaluate_places_boxes_of_a_nifti_through_the_named_dicom_series(data, capsys):
    case = case_by_name("lung-pet-ct-dx-a0001-series3")
    ref = str(reference_path(case))
    args = ["evaluate", "--pred", ref, "--ref", ref, "--lesions", str(data / case.tumour_boxes), "--ct", str(data / case.ct)]
    assert main(args) == 2  # a NIfTI keeps no SOPInstanceUIDs
    assert "--boxes-dicom" in capsys.readouterr().err
    assert main([*args, "--boxes-dicom", str(data / case.boxes_dicom), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [l["name"] for l in report["lesions"]["lesions"]] == ["tumour 1"]
    assert not math.isinf(report["spill"]["ml"])



def test_evaluate_compares_in_physical_space(lidc1, tmp_path, capsys):
    """The same mask in another axis order scores 1; a mask moved 500 mm away is refused, not scored."""
    ref_path = reference_path(case_by_name("lidc-idri-0001"))
    image = sitk.ReadImage(str(ref_path))
    ras = tmp_path / "ras.nii.gz"
    sitk.WriteImage(sitk.DICOMOrient(image, "RAS"), str(ras))
    assert main(["evaluate", "--pred", str(ras), "--ref", str(ref_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lungs"]["dice"] == 1.0
    moved = sitk.Image(image)
    moved.SetOrigin(tuple(o + 500.0 for o in image.GetOrigin()))
    far = tmp_path / "far.nii.gz"
    sitk.WriteImage(moved, str(far))
    assert main(["evaluate", "--pred", str(far), "--ref", str(ref_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different places" in err[0]
