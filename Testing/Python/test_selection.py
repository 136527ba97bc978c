"""The default model's selection rule (benchmarks/validate.py), on hand-made score rows."""

from __future__ import annotations

from benchmark_modules import load_benchmark


def load_validate():
    return load_benchmark("validate")


def rows(model: str, held_out: float, outside: float, lesion: float, spill: float = 0.1, synthetic: float = 0.2) -> list[dict]:
    cases = ["lidc-idri-0001", "lidc-idri-0002", "lung-pet-ct-dx-a0001-series2", "lung-pet-ct-dx-a0001-series3", "elastix-00"]
    out = []
    for case in cases:
        row = {"case": case, "method": "gan", "envelope": True, "model": model, "lungs": {"dice": held_out if case == "lidc-idri-0001" else 0.99},
               "spill_percent": spill, "lesions_min": lesion}
        if case == "lidc-idri-0001":
            row["synthetic_kept"] = synthetic
        out.append(row)
    out.append({"case": "cip-ct-64", "method": "gan", "envelope": True, "model": model, "lungs": {"dice": outside},
                "spill_percent": 50.0})  # the outside reference's spill is not the rule's (its mask is not ours)
    out.append({**out[0], "envelope": False, "lesions_min": 1.0})  # envelope-off rows do not count
    return out


def test_lesions_first_among_models_that_keep_dice_the_outside_scan_and_spill():
    validate = load_validate()
    ranking = validate.choose(
        rows("keeps lesions, loses the outside scan", 0.992, 0.90, 0.6)
        + rows("robust", 0.992, 0.98, 0.4)
        + rows("robust, more lesions", 0.991, 0.96, 0.5)
        + rows("spills", 0.995, 0.99, 0.9, spill=1.5)
        + rows("low held-out Dice", 0.985, 0.99, 0.95)
    )
    assert [r["model"] for r in ranking] == [
        "robust, more lesions", "robust", "low held-out Dice", "spills", "keeps lesions, loses the outside scan"]
    assert [r["eligible"] for r in ranking] == [True, True, False, False, False]
    assert ranking[0]["lesion_score"] == round((0.5 * 4 + 0.2) / 5, 4)  # the card keeps 4 digits
    assert ranking[0]["outside_dice"] == 0.96 and ranking[0]["worst_spill_percent"] == 0.1


def test_a_model_not_scored_on_every_case_the_rule_reads_is_not_ranked():
    validate = load_validate()
    partial = [r for r in rows("no outside scan", 0.995, 0.99, 0.9) if r["case"] != "cip-ct-64"]
    assert validate.choose(partial + rows("complete", 0.992, 0.98, 0.4))[0]["model"] == "complete"
    assert len(validate.choose(partial)) == 0
