"""benchmarks/outline.py's measures, on hand-made volumes whose answers follow from their shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[2]


def load_outline():
    return load_benchmark("outline")


def square(shape=(3, 20, 20), lo=5, hi=15) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[:, lo:hi, lo:hi] = True
    return out


def test_an_error_is_split_by_density_and_by_its_distance_from_the_other_outline():
    outline = load_outline()
    lungs = square()
    missed = square(lo=4, hi=16) & ~lungs  # one ring of voxels just outside the mask: distance 1
    hu = np.full(lungs.shape, -850.0)
    hu[missed] = 50.0
    hu[:, 4, 4:16] = -200.0  # one side of the ring less dense
    found = outline.breakdown(missed, hu, outline.in_plane_distance(lungs), voxel_ml=1.0)
    assert found["ml"] == missed.sum() == 3 * (12 * 12 - 10 * 10)
    assert found["by_hu"]["-320..-100"] == 3 * 12 and found["by_hu"]["-100..100"] == missed.sum() - 3 * 12
    # A ring's corners lie sqrt(2) from the square, its sides at 1: none beyond 2 voxels, no piece beyond 1.5.
    assert found["by_distance_voxels"]["0-1"] == missed.sum() - 3 * 4
    assert found["by_distance_voxels"]["1-2"] == 3 * 4 and found["largest_pieces"] == []


def test_the_outline_is_moved_as_named():
    outline = load_outline()
    labels = square().astype(np.uint8)
    hu = np.full(labels.shape, -850.0)
    hu[:, :, 15] = 0.0  # the column just right of the mask: soft tissue
    hu[:, :, 4] = -200.0  # the column just left: partly aerated
    moved = outline.moved_outlines(labels, hu)
    assert np.array_equal(moved["shift x +1 voxel"], np.roll(labels > 0, 1, axis=2))
    ring_low = moved["ring below -100 HU"] & ~(labels > 0)
    ring_high = moved["ring below 100 HU"] & ~(labels > 0)
    # Below -100 HU: the ring but its soft-tissue side (x = 15); below 100 HU: the whole ring (a cross, no corners).
    assert ring_high.sum() == 3 * 4 * 10 and ring_low.sum() == 3 * 3 * 10 and not ring_low[:, :, 15].any()


def test_a_mask_of_another_scan_is_refused_in_one_line_and_nothing_is_written(data, tmp_path):
    import subprocess

    rows = tmp_path / "outline.json"
    for mask in (data / "ct" / "lidc-idri-0001.nii.gz", tmp_path / "missing.nii.gz"):
        done = subprocess.run([sys.executable, REPO / "benchmarks" / "outline.py", "--mask", mask, "--json", rows],
                              capture_output=True, text=True)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert str(mask) in done.stderr and "Traceback" not in done.stderr
    assert not rows.exists()
