"""``lunggan compare``: its scores on hand-made masks, and small real runs of both tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from LungGANLib.cli import main
from LungGANLib.train.compare import CompareConfig, _score_volume, run_lovo, slice_scores
from LungGANLib.train.compare_report import write_report
from LungGANLib.evaluate.lesions import Lesion

REPO = Path(__file__).resolve().parents[2]


def test_slice_scores_on_hand_made_masks():
    truth = np.zeros((3, 10, 10), dtype=bool)
    truth[:, 2:6, 2:6] = True  # 16 pixels
    pred = truth.copy()
    pred[1, 2:6, 6:8] = True  # 8 more pixels, 2 columns to the right
    pred[2] = False  # nothing found
    ious, hds = slice_scores(pred, truth)
    assert ious == [1.0, 16 / 24, 0.0]
    assert hds[0] == 0.0 and hds[1] == 2.0 and math.isinf(hds[2])


def test_volume_score_pools_readers_and_keeps_the_least_lesion_and_the_spill():
    class Volume:
        spacing = (1.0, 1.0, 2.0)  # x, y, z mm: a voxel is 2 mm3

    reference = np.zeros((6, 20, 20), dtype=np.uint8)
    reference[1:5, 4:16, 4:16] = 1
    labels = reference.copy()
    labels[1:5, 4:10, 4:16] = 2  # the other lung: still lung
    labels[2, 4:6, 4:6] = 0  # misses 4 voxels of both readers' nodule
    labels[1:5, 0:1, 0:20] = 1  # 4 x 20 voxels of 'lung' 4 mm beyond the reference: within 5 mm, no spill
    labels[1:5, 19, 0:20] = 1  # 3 voxels beyond it, 6 mm away at the far rows: spill where x is also far
    box = (slice(2, 3), slice(4, 8), slice(4, 8))
    first = Lesion("reader 1 nodule", "nodule", box, np.ones((1, 4, 4), dtype=bool))  # 16 voxels, 4 outside
    second_mask = np.zeros((1, 4, 4), dtype=bool)
    second_mask[0, :2, :2] = True  # the 4 missed voxels only
    second = Lesion("reader 2 nodule", "nodule", box, second_mask)
    row = _score_volume("case", labels, Volume(), reference, [first, second])
    assert row["lesions"] == {"nodule outlines": 12 / 16}  # the readers' union
    assert row["lesions_min"] == 0.0  # reader 2 drew only what the mask misses
    # Spill: mask voxels more than 5 mm from the reference lung, counted from the distance map by hand.
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(reference == 0, sampling=(2.0, 1.0, 1.0))
    far = int(((labels > 0) & (distance > 5.0)).sum())
    assert far > 0
    assert row["spill_ml"] == pytest.approx(far * 2 / 1000)
    assert row["spill_percent"] == pytest.approx(100 * far / int((reference > 0).sum()))
    assert row["dice"] == pytest.approx(2 * int(((labels > 0) & (reference > 0)).sum()) / int((labels > 0).sum() + (reference > 0).sum()))


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
    # The classical mask misses part of the juxtapleural nodule: the least reader's share and the spill agree with
    # what benchmarks/validate.py recorded for the same method on the same volume (docs/lesions/ablation-1.json).
    recorded = next(r for r in json.loads((REPO / "docs/lesions/ablation-1.json").read_text())
                    if r["case"] == "lidc-idri-0001" and r["method"] == "classical" and not r["envelope"])
    assert lidc_classical["lesions_min"] == pytest.approx(recorded["lesions_min"], abs=5e-5)
    assert lidc_classical["juxtapleural_min"] == pytest.approx(recorded["juxtapleural_min"], abs=5e-5)
    assert lidc_classical["spill_ml"] == pytest.approx(recorded["spill_ml"], abs=0.005)
    assert lidc_classical["lesions_min"] < lidc_classical["lesions"]["nodule outlines"] < 1.0
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
    report = write_report(config, [], rows, 60.0, tmp_path / "results.md", "lunggan compare --part lovo")
    text = report.read_text()
    classical_row = next(line for line in text.splitlines() if line.startswith("| classical | ") and " / " in line)
    assert classical_row.count(" / ") == 2  # Dice / HD95 for both held-out volumes
    share = lidc_classical["lesions"]["nodule outlines"]
    assert "| lidc-idri-0001: nodule outlines | worst spill |" in text
    worst = max(r["spill_ml"] for r in rows if r["method"] == "classical")
    assert f"| classical | {share:.1%} (least {lidc_classical['lesions_min']:.1%}) | {worst:.1f} mL" in text
    # Each fold's training time is what its epochs recorded in the run's log.
    for r in rows[1::2]:
        log = np.genfromtxt(tmp_path / f"lovo-{r['patient']}-baseline" / "log.csv", delimiter=",", names=True)
        assert r["train_seconds"] == pytest.approx(float(np.sum(log["seconds"])), rel=1e-6)


def test_the_epochs_each_fold_ran_are_named_by_the_patient_held_out():
    """A fold with two held-out series (A0001) trained one run per variant: its epochs are listed once."""
    from LungGANLib.train.compare_report import _lovo_caveat

    config = CompareConfig(lovo_patience=4)
    rows = [
        {"patient": "LIDC-IDRI-0001", "method": "classical", "case": "lidc-idri-0001"},
        {"patient": "LIDC-IDRI-0001", "method": "baseline", "case": "lidc-idri-0001", "epochs": 18, "best_epoch": 14},
        {"patient": "A0001", "method": "baseline", "case": "s3", "epochs": 9, "best_epoch": 5},
        {"patient": "A0001", "method": "baseline", "case": "s2", "epochs": 9, "best_epoch": 5},
        {"patient": "A0001", "method": "basic", "case": "s3", "epochs": 12, "best_epoch": 8},
    ]
    assert _lovo_caveat(config, rows) == (
        "Epochs run, per fold (the patient held out) and variant: LIDC-IDRI-0001: baseline 18 (best 14); "
        "A0001: baseline 9 (best 5), basic 12 (best 8)."
    )
    assert _lovo_caveat(config, rows[:1]) == ""
    # With the runs' recorded training seconds, each fold's minutes over its variants (A0001's two series: one run).
    timed = [dict(r, train_seconds=s) for r, s in zip(rows[1:], (600.0, 90.0, 90.0, 150.0))]
    assert _lovo_caveat(config, timed).endswith(
        "(the epochs' own recorded times, whichever invocation ran them): LIDC-IDRI-0001 10 min, A0001 4 min.")


def test_the_shipped_models_section_reads_the_cards(tmp_path):
    """The results' first table comes from the cards' evaluation rows: the default's first, the classical method
    last, a card without an evaluation named, files that are no generator card skipped."""
    from LungGANLib.models.weights import DEFAULT_MODEL
    from LungGANLib.train.compare_report import shipped_models_section

    def row(case, method, dice, spill=0.0, least=None, **extra):
        return {"case": case, "method": method, "envelope": True, "lungs": {"dice": dice}, "spill_ml": spill,
                "spill_percent": spill / 10, "lesions_min": least, **extra}

    def card(name, sha, rows, **extra):
        return {"format": "lunggan-generator", "name": name, "sha256": sha, "evaluation": {"cases": rows}, **extra}

    other = card("aaa-other", "1" * 64, [row("lidc-idri-0001", "gan", 0.95, 3.0, 0.5)])
    default = card("shipped", "abcdef0123" + "0" * 54, [
        row("lidc-idri-0001", "gan", 0.991, 1.0, 0.97, synthetic_kept=0.8),
        row("lung-pet-ct-dx-a0001-series2", "gan", 0.98, 4.5, 0.9),
        row("lidc-idri-0001", "classical", 0.999, 0.0, 0.88),
    ], data={"train": ["x"], "validation": ["lidc-idri-0001"]}, selection={"rule": "Lesions first."})
    (tmp_path / DEFAULT_MODEL.with_suffix(".json").name).write_text(json.dumps(default))
    (tmp_path / "aaa-other.json").write_text(json.dumps(other))
    (tmp_path / "bare.json").write_text(json.dumps(card("bare", "2" * 64, [])))
    (tmp_path / "notes.json").write_text(json.dumps({"format": "something else"}))
    text = "\n".join(shipped_models_section(tmp_path))
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [line.split(" | ")[0] for line in table] == ["| shipped (abcdef01)", "| aaa-other (11111111)", "| classical"]
    assert table[0].split(" | ")[2:7] == ["0.9910", "–", "97.0 % / –", "90.0 % / –", "4.5 mL (0.45 %)"]
    assert table[0].split(" | ")[7] == "80.0 %"
    assert table[2].split(" | ")[2] == "0.9990"
    assert "its card's `selection`): Lesions first." in text
    assert "Shipped without an evaluation in its card: `bare`." in text
    assert "trained on x and chose its epoch on lidc-idri-0001" in text
    assert shipped_models_section(tmp_path / "nothing-here") == []
