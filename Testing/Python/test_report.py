"""The lung report's figures, from values a reader can check by hand, and its files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from LungGANLib.errors import InputError, OutputExistsError
from LungGANLib.segment.report import COLUMNS, check_report_path, lung_figures, report_text, write_report


def test_figures_of_each_lung_from_known_voxels():
    # Right lung: five voxels; left lung: four; the rest is body at 40 HU.
    hu = np.full((1, 3, 5), 40, np.int16)
    labels = np.zeros(hu.shape, np.uint8)
    hu[0, 0] = [-1000, -960, -940, -900, -500]
    labels[0, 0] = 1
    hu[0, 1, :4] = [-990, -970, -920, -800]
    labels[0, 1, :4] = 2
    figures = lung_figures(hu, labels, voxel_ml=0.5)
    assert figures["right_lung_ml"] == 2.5
    assert figures["right_lung_mean_hu"] == pytest.approx(-860.0)
    assert figures["right_lung_laa950_percent"] == pytest.approx(40.0)  # -1000, -960
    assert figures["right_lung_laa910_percent"] == pytest.approx(60.0)  # and -940
    assert figures["right_lung_perc15_hu"] == pytest.approx(-976.0)  # 0.6 of the way from -1000 to -960
    assert figures["left_lung_ml"] == 2.0
    assert figures["left_lung_mean_hu"] == pytest.approx(-920.0)
    assert figures["left_lung_laa950_percent"] == pytest.approx(50.0)
    assert figures["left_lung_laa910_percent"] == pytest.approx(75.0)
    assert figures["left_lung_perc15_hu"] == pytest.approx(-981.0)  # 0.45 of the way from -990 to -970
    assert figures["total_lung_ml"] == 4.5
    assert figures["total_lung_mean_hu"] == pytest.approx((-4300 - 3680) / 9)
    assert figures["total_lung_laa950_percent"] == pytest.approx(100 * 4 / 9)


def test_single_label_reports_only_the_total_and_an_empty_mask_no_density():
    hu = np.array([[[-1000, -900, 30]]], np.int16)
    labels = np.array([[[1, 1, 0]]], np.uint8)
    single = lung_figures(hu, labels, 1.0, single_label=True)
    assert single["right_lung_ml"] is None and single["left_lung_mean_hu"] is None
    assert single["total_lung_ml"] == 2.0 and single["total_lung_mean_hu"] == -950.0
    empty = lung_figures(hu, np.zeros_like(labels), 1.0)
    assert empty["total_lung_ml"] == 0.0
    assert empty["total_lung_mean_hu"] is None and empty["right_lung_perc15_hu"] is None


def test_report_files_have_every_column_and_blanks_for_missing_values(tmp_path):
    rows = [{"input": "a.nii.gz", "status": "ok", "right_lung_ml": 2500.123456, "left_lung_mean_hu": None},
            {"input": "b.nii.gz", "status": "failed", "message": "bad, with a comma"}]
    csv_path = write_report(rows, tmp_path / "r.csv")
    with open(csv_path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert tuple(read[0]) == COLUMNS
    assert read[0]["right_lung_ml"] == "2500.12" and read[0]["left_lung_mean_hu"] == ""
    assert read[1]["message"] == "bad, with a comma"
    data = json.loads(report_text(rows, ".json"))
    assert data[0]["right_lung_ml"] == 2500.123456 and data[0]["left_lung_mean_hu"] is None
    assert list(data[1]) == list(COLUMNS)


def test_report_path_is_checked_before_work(tmp_path):
    with pytest.raises(InputError, match=".csv or .json"):
        check_report_path(tmp_path / "r.txt")
    with pytest.raises(InputError, match="does not exist"):
        check_report_path(tmp_path / "no" / "r.csv")
    (tmp_path / "r.csv").write_text("mine")
    with pytest.raises(OutputExistsError):
        check_report_path(tmp_path / "r.csv")
    assert check_report_path(tmp_path / "r.csv", overwrite=True) == tmp_path / "r.csv"


def test_the_integer_percentile_is_numpys_linear_one_exactly():
    from LungGANLib.segment.report import percentile

    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 1000, 12345):
        values = rng.integers(-1024, 400, size).astype(np.int16)
        for q in (0, 15, 50, 99.5, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-9), (size, q)
    floats = rng.normal(-800, 100, 999).astype(np.float32)
    assert percentile(floats, 15) == float(np.percentile(floats, 15))
