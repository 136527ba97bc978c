"""Reference masks: stored ones are what the command regenerates, with the CT's geometry; nodules are in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from LungGANLib.io.annotations import outline_mask, read_lidc_outlines
from LungGANLib.io import load_ct, mask_from_image, read_image
from LungGANLib.evaluate.references import CASES, DEFAULT_REFERENCE_DIR, build_references, case_by_name, reference_path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stored_reference_has_the_geometry_of_its_ct(data, case):
    ct, _ = read_image(data / case.ct)
    mask = sitk.ReadImage(str(reference_path(case)))
    assert mask.GetSize() == ct.GetSize()
    assert mask.GetOrigin() == pytest.approx(ct.GetOrigin())
    assert mask.GetSpacing() == pytest.approx(ct.GetSpacing())
    assert mask.GetDirection() == pytest.approx(ct.GetDirection())
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    assert values.tolist() == [0, 1, 2]


def test_regenerating_a_reference_gives_the_stored_mask(data, tmp_path):
    case = case_by_name("lung-pet-ct-dx-a0001-series3")
    reports = build_references(tmp_path, tmp_path, [case.name], data)
    assert [r["name"] for r in reports] == [case.name]
    fresh = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{case.name}.nii.gz")))
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_path(case))))
    np.testing.assert_array_equal(fresh, stored)
    assert (tmp_path / f"{case.name}.png").stat().st_size > 10_000
    stored_report = {r["name"]: r for r in json.loads((DEFAULT_REFERENCE_DIR / "references.json").read_text())}
    assert reports[0]["right_lung_ml"] == stored_report[case.name]["right_lung_ml"]


def test_lidc_reads_are_parsed(data):
    outlines = read_lidc_outlines(data / "annotations/lidc-idri-0001-reads.xml")
    assert {o.reader for o in outlines} == {0, 1, 2, 3}
    assert len(outlines) == 8 + 1 + 1 + 1 + 7 + 1 + 1 + 1 + 8 + 9 + 1 + 1 + 1
    assert all(o.inclusion for o in outlines)
    assert outlines[0].z_mm == -125.0 and outlines[0].xs[:2] == (312, 311)


def test_every_lidc_nodule_is_inside_the_reference_lungs(data):
    for name in ("lidc-idri-0001", "lidc-idri-0002"):
        case = case_by_name(name)
        ct = load_ct(data / case.ct)
        nodules = outline_mask(read_lidc_outlines(data / case.lidc_reads), ct)
        reference = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
        assert nodules.sum() > 1000
        assert (reference[nodules] > 0).all()
