"""``lunggan compare``: its scores on hand-made masks, and small real runs of both tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from LungGANLib.cli import main
from LungGANLib.references import DEFAULT_REFERENCE_DIR as REFERENCES
from LungGANLib.compare import CompareConfig, lesion_fraction_inside, run_lovo, slice_scores, write_report


def test_slice_scores_on_hand_made_masks():
    truth = np.zeros((3, 10, 10), dtype=bool)
    truth[:, 2:6, 2:6] = True  # 16 pixels
    pred = truth.copy()
    pred[1, 2:6, 6:8] = True  # 8 more pixels, 2 columns to the right
    pred[2] = False  # nothing found
    ious, hds = slice_scores(pred, truth)
    assert ious == [1.0, 16 / 24, 0.0]
    assert hds[0] == 0.0 and hds[1] == 2.0 and math.isinf(hds[2])


def test_lesion_fraction_inside():
    lesion = np.zeros((2, 4, 4), dtype=bool)
    lesion[0, 1:3, 1:3] = True  # 4 voxels
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[0, 1, 1:3] = 2  # 2 of them in the left lung
    assert lesion_fraction_inside(lesion, labels) == 0.5
    assert math.isnan(lesion_fraction_inside(np.zeros_like(lesion), labels))


def test_compare_kaggle_table_from_the_command_line(tmp_path, capsys):
    report = tmp_path / "results.md"
    code = main(["compare", "-o", report, "--work-dir", tmp_path / "runs", "--part", "kaggle", "--variant", "baseline",
                 "--variant", "product", "--seed", "0", "--seed", "1", "--kaggle-epochs", "1", "--clip-variant", "product",
                 "--device", "cpu"])
    assert code == 0
    text = report.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| baseline") or line.startswith("| product")]
    assert [r.split(" | ")[:3] for r in rows] == [["| baseline", "-", "2"], ["| product", "gp", "2"], ["| product", "clip", "2"]]
    assert all(" ± " in r for r in rows)  # spread over the two seeds
    assert "Table 4" not in text
    raw = json.loads((tmp_path / "results" / "results.json").read_text())
    assert len(raw["kaggle"]) == 6 and {r["seed"] for r in raw["kaggle"]} == {0, 1}
    assert all(0.0 <= r["iou"]["mean"] <= 1.0 for r in raw["kaggle"])
    assert (tmp_path / "results" / "kaggle.png").read_bytes()[:4] == b"\x89PNG"
    # The summary reads the same numbers; --report-only rebuilds the report from results.json alone.
    means = {}
    for r in raw["kaggle"]:
        means.setdefault((r["variant"], r["lipschitz"]), []).append(r["iou"]["mean"])
    best = max(means, key=lambda k: np.mean(means[k]))
    assert f"best first: {best[0]}{' (clip)' if best[1] == 'clip' else ''} {np.mean(means[best]):.4f}" in text
    report.write_text("stale")
    assert main(["compare", "-o", report, "--report-only"]) == 0
    assert report.read_text() == text
    assert main(["compare", "--variant", "wgan", "-o", report]) == 2
    assert "unknown variant 'wgan'" in capsys.readouterr().err


def test_leave_one_patient_out_on_real_volumes(tmp_path):
    config = CompareConfig(lovo_variants=("baseline",), lovo_epochs=1, lovo_steps=2, lovo_input_size=64,
                           patients=("ITKElastix-00", "LIDC-IDRI-0001"), device="cpu")
    rows = run_lovo(config, tmp_path, say=lambda text: None)
    assert [(r["patient"], r["method"]) for r in rows] == [
        ("ITKElastix-00", "classical"), ("ITKElastix-00", "baseline"),
        ("LIDC-IDRI-0001", "classical"), ("LIDC-IDRI-0001", "baseline"),
    ]
    lidc_classical = rows[2]
    # The references are the classical masks plus corrections: near-perfect by construction.
    assert lidc_classical["dice"] > 0.999
    assert set(lidc_classical["lesions"]) == {"nodule outlines"} and rows[0]["lesions"] == {}
    # The classical mask misses part of the nodules: the same fraction 'lunggan references' recorded.
    recorded = {c["name"]: c for c in json.loads((REFERENCES / "references.json").read_text())}
    assert lidc_classical["lesions"]["nodule outlines"] == pytest.approx(recorded["lidc-idri-0001"]["nodule_fraction_inside_classical"], abs=5e-5)
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
    report = write_report(config, [], rows, 60.0, tmp_path / "results.md", "lunggan compare --part lovo")
    text = report.read_text()
    classical_row = next(line for line in text.splitlines() if line.startswith("| classical | ") and " / " in line)
    assert classical_row.count(" / ") == 2  # Dice / HD95 for both held-out volumes
    share = recorded["lidc-idri-0001"]["nodule_fraction_inside_classical"]
    assert "| lidc-idri-0001: nodule outlines |" in text and f"| classical | {share:.1%} |" in text
