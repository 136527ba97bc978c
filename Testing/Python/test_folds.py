"""The fold protocol's selection rule and report (benchmarks/folds.py), on hand-made rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from LungGANLib.evaluate.summary import FOLDS_BEGIN, FOLDS_END, folds_section, with_folds_section

from benchmark_modules import load_benchmark

REPO = Path(__file__).resolve().parents[2]


def load_folds():
    return load_benchmark("folds")


def rows(folds, candidate: str, dice: dict[str, float], rules: str = "all", spill: float = 0.1, never: float = 0.0) -> list[dict]:
    out = [{"candidate": candidate, "rules": rules, "fold": "f", "case": case, "dice": dice.get(case, 0.99), "hd95_mm": 1.0,
            "spill_percent": spill, "never_lung_ml": never, "never_lung_found_ml": never} for case in folds.HELD_OUT]
    out.append({"candidate": candidate, "rules": rules, "fold": "external", "case": folds.LUNG1, "dice": 0.5, "hd95_mm": 9.0,
                "spill_percent": 50.0, "never_lung_ml": 99.0, "never_lung_found_ml": 99.0, "gtv_kept": 0.1})
    return out


def test_the_worst_fold_decides_within_the_anchors_margin_and_the_external_scans_do_not():
    folds = load_folds()
    weak = "lung-pet-ct-dx-a0001-series2"
    table = (
        rows(folds, "first-baseline", {weak: 0.980})
        + rows(folds, "conservative", {weak: 0.975})
        + rows(folds, "high mean, one bad fold", {c: 0.999 for c in folds.HELD_OUT} | {weak: 0.977})  # 0.003 under an anchor
        + rows(folds, "first-baseline", {weak: 0.981}, rules="no rim trim")
        + rows(folds, "spills", {weak: 0.99}, spill=0.6)
        + rows(folds, "leaves never-lung tissue", {weak: 0.99}, never=2.0)
        + rows(folds, "tie, better mean", {weak: 0.9813} | {"elastix-00": 0.995})
    )
    ranking = folds.choose(table)
    eligible = [(r["candidate"], r["rules"]) for r in ranking if r["eligible"]]
    # 0.9813 ties 0.981 (within 0.0005) and has the better mean; the external row (0.5) counts for nothing.
    assert eligible[:2] == [("tie, better mean", "all"), ("first-baseline", "no rim trim")]
    assert ("first-baseline", "all") in eligible and ("conservative", "all") not in eligible  # 0.975 < 0.980 - 0.002
    ineligible = {r["candidate"] for r in ranking if not r["eligible"]}
    assert {"high mean, one bad fold", "spills", "leaves never-lung tissue"} <= ineligible


def test_a_candidate_missing_a_fold_is_not_ranked():
    folds = load_folds()
    table = rows(folds, "first-baseline", {}) + [r for r in rows(folds, "partial", {}) if r["case"] != "elastix-00"]
    assert [r["candidate"] for r in folds.choose(table)] == ["first-baseline"]


def test_the_fold_section_is_kept_when_the_rest_of_the_report_is_rewritten():
    section = f"{FOLDS_BEGIN}\n## Folds\n| a |\n{FOLDS_END}"
    first = with_folds_section("# Results\nold text\n", section)
    assert first == f"# Results\n\n{section}\nold text\n"
    assert folds_section(first) == section
    newer = with_folds_section(first, section.replace("| a |", "| b |"))
    assert "| b |" in newer and "| a |" not in newer and newer.endswith("old text\n")
    assert with_folds_section("# Rewritten\n", folds_section(first)) == f"# Rewritten\n\n{section}\n"
    assert with_folds_section("# Results\n", None) == "# Results\n"
    # The review's section goes after the folds' and is kept beside it.
    from LungGANLib.evaluate.summary import REVIEW_BEGIN, REVIEW_END

    review = f"{REVIEW_BEGIN}\n## Review\n{REVIEW_END}"
    both = with_folds_section(first, review, REVIEW_BEGIN, REVIEW_END)
    assert both.index(FOLDS_END) < both.index(REVIEW_BEGIN) and both.endswith("old text\n")
    assert folds_section(both, REVIEW_BEGIN, REVIEW_END) == review and folds_section(both) == section


def test_the_readme_and_the_card_quote_the_default_as_the_fold_rows_give_it():
    """The README's table of the default is generated from docs/results/folds.json (folds.shipped_table) for the
    candidate and rules the default's card names; the card's rows are those rows."""
    folds = load_folds()
    card = json.loads((REPO / "Resources" / "Models" / "lunggan.json").read_text())
    rows = json.loads((REPO / "docs" / "results" / "folds.json").read_text())
    chosen = card["selection"]
    assert folds.shipped_table(rows, chosen["candidate"], chosen["rules"]) in (REPO / "README.md").read_text()
    assert card["folds"] == [r for r in rows if r["candidate"] == chosen["candidate"] and r["rules"] == chosen["rules"]]
    assert chosen["rule"] == folds.SELECTION_RULE


def test_the_old_lesion_model_is_one_file_for_the_tests_the_recipe_and_the_review(old_lesion_model):
    """The tests' spilling mask (conftest), the lesions recipe's shipped fold and the review benchmarks' weak mask are
    the same file: the lesion model of 675e7ee, not the lunggan-lesions that ships now."""
    from LungGANLib.models.weights import sha256

    folds = load_folds()
    recipe = folds.recipe_named("lesions")
    assert folds.weak_model() == folds.shipped_path(recipe) == old_lesion_model
    card = json.loads((REPO / "Resources" / "Models" / "lunggan-lesions.json").read_text())
    assert card["training_note"].count(sha256(old_lesion_model)) == 1  # the card of today's names the one it replaced
    assert sha256(old_lesion_model) != card["sha256"]


def test_a_fold_is_trained_into_a_folder_that_does_not_exist_yet_and_a_failed_step_stops_with_a_line(
        tmp_path, monkeypatch, capfd):
    """On a clean checkout ``runs/folds/`` does not exist: each step's folder is made before the trainer (a real
    ``lunggan train`` child process) writes into it. The step here fails in the trainer's own checks, after the
    output folder's: the run stops with a line saying how to resume, and no fold generator is written."""
    import pytest

    folds = load_folds()
    monkeypatch.setattr(folds, "RUNS", tmp_path / "runs" / "folds")
    recipe = folds.Recipe("probe", "unused", ("--epochs 1 --val-case no-such-case",))
    with pytest.raises(SystemExit) as stopped:
        folds.train(recipe, "elastix-00")
    assert "training the probe generator of the fold that holds out elastix-00 failed" in str(stopped.value)
    err = capfd.readouterr().err
    assert "does not exist" not in err and "--val-case among" in err
    assert (tmp_path / "runs" / "folds" / "elastix-00" / "steps").is_dir()
    assert not recipe.model("elastix-00").exists()


def test_a_recipe_that_keeps_the_last_epoch_gives_its_fold_the_last_steps_checkpoint(data, tmp_path, monkeypatch):
    """lunggan-lesions is the last epoch of its last step: its fold generators are too (the run's checkpoint, not
    its best epoch). The step is a real, tiny run, made where the recipe's steps go, so train() only keeps it."""
    import subprocess

    import torch
    from safetensors import safe_open

    from LungGANLib.models.weights import load_model

    folds = load_folds()
    monkeypatch.setattr(folds, "RUNS", tmp_path / "runs" / "folds")
    recipe = folds.Recipe("probe", "unused", ("--epochs 2",), last_epoch=True)
    steps = folds.RUNS / "elastix-00" / "steps"
    steps.mkdir(parents=True)
    ct, mask = data / "fixtures/cip-ct-64/ct-64.nrrd", data / "fixtures/cip-ct-64/wholeLung-64.nrrd"
    command = [sys.executable, "-m", "LungGANLib.cli", "train", "--pair", ct, mask, "--epochs", "2", "--steps-per-epoch", "1",
               "--input-size", "64", "--base-channels", "2", "--depth", "2", "--lr", "0.1", "--run-dir", steps / "_epochs2",
               "-o", steps / "_epochs2.safetensors", "--device", "cpu", "-q"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folds.train(recipe, "elastix-00")
    generator, _ = load_model(recipe.model("elastix-00"))
    with safe_open(str(steps / "_epochs2" / "checkpoint.safetensors"), framework="pt") as handle:
        for key, value in generator.state_dict().items():
            assert torch.equal(value, handle.get_tensor(f"generator.{key}").to(value.dtype))
    _, kept = load_model(steps / "_epochs2-last.safetensors")  # kept beside the step, with its card
    assert kept.card["validation"]["epoch"] == 2 and kept.card["validation"]["kept"] == "last epoch"


def test_a_recipe_that_ships_nothing_is_trained_and_scored_on_the_shipped_fold_too(tmp_path, monkeypatch):
    """A recipe with no shipped generator (the first baseline's last epochs) has no lidc-idri-0001 fold until it is
    trained like the others, and that fold's generator stands for it on the external scans; a shipping recipe's
    lidc-idri-0001 fold stays its shipped generator."""
    folds = load_folds()
    monkeypatch.setattr(folds, "RUNS", tmp_path / "runs" / "folds")
    recipe = folds.recipe_named("first-baseline-last")
    assert recipe.shipped is None and recipe.last_epoch and recipe.steps == (folds.BASELINE_STEP,)
    assert folds.fold_model(recipe, "lidc-idri-0001") is None
    trained = recipe.model("lidc-idri-0001")
    trained.parent.mkdir(parents=True)
    trained.write_bytes(b"weights")
    assert folds.fold_model(recipe, "lidc-idri-0001") == trained == folds.shipped_path(recipe)
    regression = folds.recipe_named("regression")
    assert folds.fold_model(regression, "lidc-idri-0001") == REPO / regression.shipped


def _scored_without_networks(folds, recipe, tmp_path, monkeypatch) -> list:
    """``run_rows`` in ``tmp_path`` with a stand-in weights file for each of ``recipe``'s folds and no case, network or
    score run: the options of every segmentation it asks for go into the returned list."""
    import numpy as np

    monkeypatch.setattr(folds, "REPO", tmp_path)
    monkeypatch.setattr(folds, "RUNS", tmp_path / "runs" / "folds")
    monkeypatch.setattr(folds.inference, "predict_probabilities", folds.inference.predict_probabilities)  # restored
    for fold in folds.FOLDS:
        recipe.model(fold).parent.mkdir(parents=True, exist_ok=True)
        recipe.model(fold).write_bytes(b"weights")
    scored = []
    monkeypatch.setattr(folds, "load_case", lambda name: folds.Case(name, None, None, [], None))
    monkeypatch.setattr(folds, "load_model", lambda path: None)
    monkeypatch.setattr(folds, "segment", lambda ct, options, model=None, findings=None: scored.append(options) or np.zeros(1))
    monkeypatch.setattr(folds, "score", lambda case, labels, findings: {"dice": 1.0})
    return scored


def test_only_the_rule_sets_asked_for_are_scored_and_a_second_run_adds_the_rest(tmp_path, monkeypatch):
    """``--rules``: a new recipe can be scored with the shipped rules alone; the classical method gets the asked rule
    sets it has; a later run with more rule sets adds only the rows that are missing."""
    folds = load_folds()
    recipe = folds.recipe_named("fine-tuned")
    scored = _scored_without_networks(folds, recipe, tmp_path, monkeypatch)
    shipped = "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out but the bronchi"
    rows = folds.run_rows([recipe], tmp_path / "rows.json", (shipped,))
    cases = set(folds.HELD_OUT) | set(folds.EXTERNAL)
    assert {(r["candidate"], r["rules"]) for r in rows} == {("fine-tuned", shipped)}  # not a classical rule set
    assert {r["case"] for r in rows} == cases and len(rows) == len(cases) == len(scored)
    assert all(o.grow_outline and o.keep_bronchi and o.method == "gan" for o in scored)
    rows = folds.run_rows([recipe], tmp_path / "rows.json", (shipped, "none"))
    assert sorted((r["candidate"], r["rules"]) for r in rows) == sorted(
        [("fine-tuned", shipped)] * len(cases) + [("fine-tuned", "none")] * len(cases) + [("classical", "none")] * len(cases))


def test_the_ensemble_benchmark_averages_the_passes_and_mirrors_back():
    import numpy as np
    import torch

    from LungGANLib.models.weights import load_model
    from LungGANLib.segment.inference import predict_probabilities

    load_folds()
    ensemble = load_benchmark("ensemble")
    generator, info = load_model()
    hu = np.full((3, 96, 128), -1000.0, dtype=np.float32)
    hu[:, 10:86, 8:120] = 40.0
    hu[:, 20:76, 16:56] = -850.0  # one lung only: its mirror is another slice
    hu[1, 30:50, 24:40] = 20.0
    cpu = torch.device("cpu")
    one = predict_probabilities(hu, generator, info, cpu, 2)
    assert one.any()
    assert np.array_equal(ensemble.averaged([((generator, info), False)] * 2)(hu, generator, info, cpu, 2), one)
    mirrored = predict_probabilities(np.ascontiguousarray(hu[:, :, ::-1]), generator, info, cpu, 2)[:, :, ::-1]
    assert np.array_equal(ensemble.averaged([((generator, info), True)])(hu, generator, info, cpu, 2), mirrored)
    both = ensemble.averaged([((generator, info), False), ((generator, info), True)])(hu, generator, info, cpu, 2)
    assert np.array_equal(both & ~(one | mirrored), np.zeros_like(both))  # the mean lies between the two passes
    assert np.array_equal((one & mirrored) & ~both, np.zeros_like(both))


def test_a_recipe_from_the_shipped_first_baseline_starts_there_on_lidc_idri_0001_only(tmp_path, monkeypatch):
    """kaggle and kaggle-control fine-tune the shipped first baseline on lidc-idri-0001 (the first-baseline recipe's
    fold there), in step files of their own, and the first baseline's retrained step on the other folds, sharing
    the fine-tuned recipe's files there. The trainer is a stand-in that writes the model it is asked for."""
    import subprocess

    folds = load_folds()
    runs = tmp_path / "runs" / "folds"
    monkeypatch.setattr(folds, "RUNS", runs)
    (runs / "lidc-idri-0001").mkdir(parents=True)
    (runs / "lidc-idri-0001" / "first-baseline.safetensors").write_bytes(b"shipped")  # what shipped_path takes out of git
    commands = []

    def trainer(command, cwd):
        commands.append(command)
        Path(command[command.index("-o") + 1]).write_bytes(b"step")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(folds.subprocess, "run", trainer)
    monkeypatch.setattr(folds, "export_last_epoch", lambda run_dir, out: Path(out).write_bytes(b"last") and out)
    recipes = {r.name: r for r in folds.RECIPES}
    option = lambda command, name: command[command.index(name) + 1]
    for name, last_step in (("kaggle", "--add-kaggle"), ("kaggle-control", None)):
        commands.clear()
        folds.train(recipes[name], "lidc-idri-0001")
        assert len(commands) == 1  # no run of the first step
        assert option(commands[0], "--init-model") == str(runs / "lidc-idri-0001" / "first-baseline.safetensors")
        assert Path(option(commands[0], "-o")).name.startswith("first-baseline-shipped-_epochs24-_lr3e-4_epochs4")
        assert (last_step in commands[0]) == (last_step is not None)
        assert recipes[name].model("lidc-idri-0001").read_bytes() == b"last"
    commands.clear()
    folds.train(recipes["kaggle-control"], "elastix-00")
    assert [Path(option(c, "-o")).name for c in commands] == ["_epochs24.safetensors", "_epochs24-_lr3e-4_epochs4.safetensors"]
    commands.clear()
    folds.train(recipes["fine-tuned"], "elastix-00")  # the same steps: its files are there already
    assert commands == [] and recipes["fine-tuned"].model("elastix-00").read_bytes() == b"last"


def test_the_report_names_the_recipes_without_rows_on_every_fold_from_the_rows_alone(tmp_path, monkeypatch):
    """Rewritten with --report-only on a clone with no fold generators, the report says the same: a recipe is
    unranked when a held-out scan has no row of it, whatever generators the machine holds."""
    folds = load_folds()
    monkeypatch.setattr(folds, "RUNS", tmp_path / "no-runs")
    half = [r for r in rows(folds, "fine-tuned", {}) if r["case"] != folds.HELD_OUT[-1]]
    text = folds.report(rows(folds, "first-baseline", {}) + rows(folds, "conservative", {}) + half, "cmd")
    unranked = next(line for line in text.splitlines() if line.startswith("Not ranked"))
    names = unranked.split(": ", 1)[1].rstrip(".").split(", ")
    assert "fine-tuned" in names and "first-baseline" not in names and "conservative" not in names
    assert set(names) == {r.name for r in folds.RECIPES} - {"first-baseline", "conservative"}


def test_the_masses_rule_set_is_scored_only_where_the_folds_lesion_generator_finds_them(tmp_path, monkeypatch):
    """Each held-out scan's masses come from its own fold's lesion generator (never one that saw the patient); a fold
    without one gets no row, and the external scans get the shipped one."""
    folds = load_folds()
    recipe, finder = folds.recipe_named("fine-tuned"), folds.recipe_named(folds.MASS_RECIPE)
    scored = _scored_without_networks(folds, recipe, tmp_path, monkeypatch)
    trained = ["lung-pet-ct-dx-a0001"]  # the finder of one fold besides lidc-idri-0001's, which ships
    for fold in trained:
        finder.model(fold).write_bytes(b"weights")
    masses = next(r for r in folds.RULES if folds.RULES[r]["masses"])
    rows = folds.run_rows([recipe], tmp_path / "rows.json", (masses,))
    by_case = {r["case"]: r for r in rows}
    held = [case for fold in ["lidc-idri-0001", *trained] for case in folds.FOLDS[fold]]
    assert set(by_case) == set(held) | set(folds.EXTERNAL)
    used = {Path(o.mass_model) for o in scored}
    assert used == {folds.shipped_path(finder)} | {finder.model(fold) for fold in trained}
    assert all(o.masses and o.mass_model for o in scored)
    a0001 = [o for o in scored if Path(o.model) == recipe.model("lung-pet-ct-dx-a0001")]
    assert {Path(o.mass_model) for o in a0001} == {finder.model("lung-pet-ct-dx-a0001")}
