"""The fold protocol: how the default model is chosen.

Every 3D scan with a reference is held out once (leave one patient out; Lung-PET-CT-Dx A0001's two
series are one patient, one fold). Each candidate recipe has one generator per fold, trained from
scratch without the held-out patient, and is scored on that patient through the whole pipeline with
every post-processing rule on, each one off, and all off. The two external scans, LUNG1-002 (lungs
drawn by clinicians) and cip-ct-64 (the Chest Imaging Platform's mask), are never trained on and
never decide: every candidate is scored on them with its recipe's shipped generator (the
lidc-idri-0001 fold). :data:`SELECTION_RULE` was written before the runs.

Per row: Dice and HD95 outside the marked lesions (the LIDC readers' nodule outlines and the A0001
tumour are left out of both masks: references made by thresholds do not outline them as a reader
would), spill (mask over 5 mm outside the reference that is no lesion, % of the reference lung),
never-lung soft tissue left in the mask (:mod:`LungGANLib.segment.never_lung`) and the least share
of a marked lesion inside. On LUNG1-002 the GTV is the lesion, and the share of it kept is given.

Usage:
    python benchmarks/folds.py [--train [--recipes NAME ...] [--folds FOLD ...]] [--rules RULES ...]
        [--json docs/results/folds.json] [--report docs/results.md] [--report-only]

``--train`` first trains the recipes' missing fold generators into ``runs/folds/`` (resumable: an
interrupted training continues from its checkpoint). The rows are kept in the JSON as they come, so
an interrupted run resumes where it stopped; ``--report-only`` rewrites the report from the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.evaluate.lesions import lesion_report, lesion_union, load_lesions, spill_ml  # noqa: E402
from LungGANLib.evaluate.metrics import dice, hausdorff  # noqa: E402
from LungGANLib.evaluate.references import case_by_name, data_dir, reference_path  # noqa: E402
from LungGANLib.evaluate.summary import FOLDS_BEGIN, FOLDS_END, with_folds_section  # noqa: E402
from LungGANLib.io import load_ct, mask_from_image  # noqa: E402
from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.models.weights import load_model  # noqa: E402
from LungGANLib.segment import inference  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.segment.morphology import IN_PLANE_CROSS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from last_epoch import export_last_epoch  # noqa: E402

#: Held-out cases of each fold.
FOLDS = {
    "lidc-idri-0001": ("lidc-idri-0001",),
    "lidc-idri-0002": ("lidc-idri-0002",),
    "elastix-00": ("elastix-00",),
    "lung-pet-ct-dx-a0001": ("lung-pet-ct-dx-a0001-series3", "lung-pet-ct-dx-a0001-series2"),
}
LUNG1 = "nsclc-radiomics-lung1-002"
CIP = "cip-ct-64"
EXTERNAL = (LUNG1, CIP)
RUNS = REPO / "runs" / "folds"

#: Post-processing rule sets: "all" is every rule of the pipeline before the outline growth was judged; then each
#: rule off, all off, and the outline grown (:func:`LungGANLib.segment.rim.grow_outline`) through the half-air
#: voxels around it (below -400 HU, half way between aerated lung and soft tissue) by one voxel, and by up to
#: four, then also with the trachea and main bronchi taken out of the generator's mask (``remove_airways``); last,
#: that with the growth through the voxels below the lung threshold instead (-320 HU: the edge the classical
#: method and the references draw, and the threshold above which the rim trim takes a voxel off), and that with the
#: lungs carried down through the aerated voxels beneath them up to 10 mm (``grow_bases``), and that with each
#: lung keeping what of the grown airways its own hole filling takes, its lobar and segmental bronchi, as the
#: classical method's does (``keep_bronchi``); and that with the masses joined that the fold's lesion generator (the
#: lesions-negatives recipe's, which ships as lunggan-lesions) finds beyond the lungs (``masses``: the rows exist
#: where that fold's generator is trained); and that with the pieces of plainly aerated lung the mask left out
#: beside a lung joined to it (``join_aerated``). The dome rule, the rim trim, the outline growth, the base growth, the
#: bronchi, the masses and the aerated join act on the generator only. Every flag is spelled out, so a row means the same whatever the
#: pipeline's defaults become.
_ALL = {"envelope": True, "drop_domes": True, "trim_rim": True, "guard_rail": True, "grow_outline": False,
        "outline_steps": 1, "outline_hu": -400.0, "grow_bases": False, "remove_airways": False, "keep_bronchi": False,
        "masses": False, "join_aerated": False}
_SHIPPED = _ALL | {"grow_outline": True, "outline_steps": 4, "outline_hu": -320.0, "grow_bases": True,
                   "remove_airways": True, "keep_bronchi": True}
RULES = {
    "all": _ALL,
    "no envelope": _ALL | {"envelope": False},
    "no dome rule": _ALL | {"drop_domes": False},
    "no rim trim": _ALL | {"trim_rim": False},
    "no guard rail": _ALL | {"guard_rail": False},
    "all + outline growth": _ALL | {"grow_outline": True},
    "all + outline growth to 4 voxels": _ALL | {"grow_outline": True, "outline_steps": 4},
    "all + outline growth to 4 voxels + airways out": _ALL | {"grow_outline": True, "outline_steps": 4, "remove_airways": True},
    "all + outline growth to 4 voxels at the lung threshold + airways out": _ALL | {
        "grow_outline": True, "outline_steps": 4, "outline_hu": -320.0, "remove_airways": True},
    "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out": _ALL | {
        "grow_outline": True, "outline_steps": 4, "outline_hu": -320.0, "grow_bases": True, "remove_airways": True},
    "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out but the bronchi": _SHIPPED,
    "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out but the bronchi + masses":
        _SHIPPED | {"masses": True},
    "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out but the bronchi + aerated "
    "lung beside joined": _SHIPPED | {"join_aerated": True},
    "none": {"envelope": False, "drop_domes": False, "trim_rim": False, "guard_rail": False, "grow_outline": False,
             "grow_bases": False, "remove_airways": False, "keep_bronchi": False, "masses": False, "join_aerated": False},
}
#: The recipe whose fold generator finds the masses of the ``masses`` rule set.
MASS_RECIPE = "lesions-negatives"
CLASSICAL_RULES = ("all", "no envelope", "no guard rail", "none")

SELECTION_RULE = (
    "Written before the fold runs. Candidates: each recipe whose generators exist on all four folds, with each "
    "set of post-processing rules. Eligible: on every held-out scan, Dice outside the marked lesions at least "
    "that of the first baseline's and of lunggan-conservative's recipe with the shipped rules minus 0.002 (those "
    "of the two whose folds exist), spill at most 0.5 % of the reference lung, and no never-lung soft tissue "
    "left in the mask over 1 mL. Among the eligible, the highest worst-scan Dice outside lesions wins; ties within "
    "0.0005 go to the higher mean. The external scans (LUNG1-002, cip-ct-64) are scored and never decide."
)
TIE = 0.0005
MARGIN = 0.002
MAX_SPILL_PERCENT = 0.5
MAX_NEVER_LUNG_ML = 1.0


@dataclass(frozen=True)
class Recipe:
    """A candidate: how its generator for a fold is made.

    Attributes:
        name: as in the tables.
        shipped: the lidc-idri-0001 fold's generator, the one that ships (a path, or ``git:COMMIT:PATH``); None:
            none ships, and that fold is trained like the others (its generator is then scored on the external scans).
        steps: for the other folds, the ``lunggan train`` runs in order, each given the held-out cases as
            ``--val-case`` and the previous step's output as ``--init-model``. None: only the shipped fold exists.
            Each run keeps its epoch with the best Dice on the ``--val-case`` slices: the held-out patient's.
        last_epoch: the last step's last epoch is the fold's generator, not its best by validation Dice (as
            ``benchmarks/last_epoch.py`` made ``lunggan-lesions``); with a single step, no epoch is chosen on the
            held-out patient.
        from_shipped: the recipe whose shipped generator is the first step on the lidc-idri-0001 fold, instead of a
            run of that step: the first baseline's fold there is its shipped generator, and a run of its step today
            is not that generator (the fine-tuned recipe, from such a run, scores 0.9614 on LUNG1-002; from the
            shipped one, 0.9604). The later steps' files there are kept apart from those after such a run.
    """

    name: str
    shipped: str | None
    steps: tuple[str, ...] | None = None
    last_epoch: bool = False
    from_shipped: str | None = None

    def model(self, fold: str) -> Path:
        return RUNS / fold / f"{self.name}.safetensors"


#: The lesion model shipped until 2026-12-06 (commit 675e7ee): the lesions recipe's, and the review benchmarks' weak mask.
OLD_LESION_MODEL = "Testing/Data/Models/lunggan-lesions-675e7ee.safetensors"
#: What the review benchmarks' tables call that weak mask (not lunggan-lesions: that name ships another model now).
WEAK_LABEL = "old lesion model (weak)"
BASELINE_STEP = "--epochs 24"
CONSERVATIVE_STEPS = (BASELINE_STEP, "--lr 3e-4 --epochs 8 --lesions 0.5", "--lr 3e-4 --epochs 6 --lesions 0.5 --appearance 0.3")
LESION_STEPS = CONSERVATIVE_STEPS + ("--lr 3e-4 --epochs 8 --lesions 0.5 --appearance 0.3",)
RECIPES = (
    Recipe("first-baseline", "git:c589d42:Resources/Models/lunggan.safetensors", (BASELINE_STEP,)),
    Recipe("conservative", "Resources/Models/lunggan-conservative.safetensors", CONSERVATIVE_STEPS),
    # The lesion model shipped until 2026-12-06 (lunggan-lesions since is lesions-negatives').
    Recipe("lesions", OLD_LESION_MODEL, LESION_STEPS, last_epoch=True),
    # The shipped lunggan-regression: the first baseline fine-tuned with the regression critic (its card's command).
    Recipe("regression", "Resources/Models/lunggan-regression.safetensors",
           (BASELINE_STEP, "--variant regression --lr 1e-4 --epochs 4")),
    # The first baseline's recipe with its 24th epoch on every fold: no epoch chosen on the held-out patient.
    Recipe("first-baseline-last", None, (BASELINE_STEP,), last_epoch=True),
    # The first baseline fine-tuned with synthetic dense dependent lung and consolidation, label kept (dense lung is
    # lung as a clinician draws it; the references here hold none): the last epoch, none chosen on the patient.
    Recipe("dense-lung", None, (BASELINE_STEP, "--lr 3e-4 --epochs 4 --dense-lung 0.3"), last_epoch=True),
    # Its control: the same fine-tuning with no augmentation. And the same with scans' appearance varied (coarse
    # pixels, soft kernels, noise, emphysema: what kept lunggan-conservative on cip-ct-64, where two runs of the
    # first baseline's recipe scored 0.91 and 0.98 with the rules, 0.76 and 0.94 without).
    Recipe("fine-tuned", None, (BASELINE_STEP, "--lr 3e-4 --epochs 4"), last_epoch=True),
    Recipe("appearance", None, (BASELINE_STEP, "--lr 3e-4 --epochs 4 --appearance 0.3"), last_epoch=True),
    # The same fine-tuning with the Kaggle slices beside the scans: 213 slices of other patients' chests with their
    # lungs drawn by people, at 64 pixels, their intensities calibrated to HU (what the issue asks of them: whether
    # other scans' lungs move the outline and the mediastinum where ours are four patients).
    # Both start from the shipped first baseline on lidc-idri-0001, as the first-baseline recipe's fold there is;
    # kaggle-control is the same fine-tuning without the slices. On the other folds it shares fine-tuned's step
    # files; its rows there are a second run of them (one thread, not two: docs/models.md).
    Recipe("kaggle", None, (BASELINE_STEP, "--lr 3e-4 --epochs 4 --add-kaggle"), last_epoch=True,
           from_shipped="first-baseline"),
    Recipe("kaggle-control", None, (BASELINE_STEP, "--lr 3e-4 --epochs 4"), last_epoch=True, from_shipped="first-baseline"),
    # The first baseline's recipe with another seed: how far one run lies from another on a held-out scan.
    Recipe("first-baseline-seed1", None, (BASELINE_STEP + " --seed 1",)),
    # The first baseline's recipe, the generator seeing the slices 3 mm below and above as well (2.5D input):
    # whether a vessel, which runs on through the neighbouring slices, is told from a nodule or a mass.
    Recipe("2.5d", None, (BASELINE_STEP + " --context-mm 3",)),
    # The conservative recipe with the 2.5D generator: its lesions drawn as bodies through the neighbouring slices,
    # so that a mass, which ends, can be told from a vessel, which runs on (after 2.5d's fold generator).
    Recipe("2.5d-conservative", None, tuple(f"{step} --context-mm 3" for step in CONSERVATIVE_STEPS)),
    # And the lesion recipe's: 8 epochs more of the same, the last epoch kept.
    Recipe("2.5d-lesions", None, tuple(f"{step} --context-mm 3" for step in LESION_STEPS), last_epoch=True),
    # The lesion recipe whose last step also draws hard negatives: mediastinal and hilar structures bulging into the
    # lung, the label cut around them, against its lesions drawn at the mediastinum and kept as lung. Its
    # lidc-idri-0001 fold's generator ships as lunggan-lesions.
    Recipe("lesions-negatives", "Resources/Models/lunggan-lesions.safetensors",
           LESION_STEPS[:-1] + (LESION_STEPS[-1] + " --hard-negatives 0.3",), last_epoch=True),
    # Its control: the lesion recipe with its lidc-idri-0001 fold trained here too, from the same steps before the
    # last (lesions' own fold there is the shipped model, whose earlier steps were trained apart); the other folds'
    # generators are lesions' own.
    Recipe("lesions-control", None, LESION_STEPS, last_epoch=True),
)


def shipped_path(recipe: Recipe) -> Path:
    """The recipe's shipped generator as a file (a committed one is taken out of git into ``runs/folds/``); with
    none shipped, its lidc-idri-0001 fold's."""
    if recipe.shipped is None:
        return recipe.model("lidc-idri-0001")
    if not recipe.shipped.startswith("git:"):
        return REPO / recipe.shipped
    _, commit, path = recipe.shipped.split(":", 2)
    out = RUNS / "lidc-idri-0001" / f"{recipe.name}.safetensors"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO, check=True, capture_output=True).stdout
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(blob))
    return out


def recipe_named(name: str) -> Recipe:
    """The recipe of that name in :data:`RECIPES`."""
    return next(r for r in RECIPES if r.name == name)


def weak_model() -> Path:
    """The review benchmarks' weak mask on the external scans: the old lesion model (``OLD_LESION_MODEL``), which
    takes in what is not lung on scans it has not seen."""
    return REPO / OLD_LESION_MODEL


def fold_model(recipe: Recipe, fold: str) -> Path | None:
    """The recipe's generator for a fold, or None when it has not been trained."""
    if fold == "lidc-idri-0001" and recipe.shipped is not None:
        return shipped_path(recipe)
    path = recipe.model(fold)
    return path if path.exists() else None


def mass_model(fold: str) -> Path | None:
    """The generator that finds the masses for a fold (``fold`` "external": the shipped one), None when not trained."""
    recipe = recipe_named(MASS_RECIPE)
    return shipped_path(recipe) if fold == "external" else fold_model(recipe, fold)


def trained_model(recipe: Recipe, fold: str, how: str = "python benchmarks/folds.py") -> Path:
    """The recipe's generator for a fold, trained; stops with a message when it is not, naming ``how`` to train it
    (never the shipped model in its place: that one saw the held-out patient)."""
    path = fold_model(recipe, fold)
    if path is None:
        raise SystemExit(f"the {recipe.name} generator of the fold that holds out {fold} is not trained "
                         f"({recipe.model(fold)}): train it with {how} first")
    return path


def train(recipe: Recipe, fold: str) -> None:
    """Train the recipe's generator for a fold, step by step, each resumable (``--resume`` from its checkpoint)."""
    if recipe.steps is None or fold_model(recipe, fold):
        return
    previous = None
    parent = recipe_named(recipe.from_shipped) if recipe.from_shipped and fold == "lidc-idri-0001" else None
    for index, step in enumerate(recipe.steps):
        if index == 0 and parent is not None:
            previous = shipped_path(parent)
            continue
        # Steps shared with another recipe (the same options after the same steps) are trained once.
        key = "-".join(s.replace(" ", "").replace("--", "_") for s in recipe.steps[: index + 1])
        key = f"{parent.name}-shipped-{key}" if parent is not None else key
        out = RUNS / fold / "steps" / f"{key}.safetensors"
        run_dir = RUNS / fold / "steps" / key
        if not out.exists():
            command = [sys.executable, "-m", "LungGANLib.cli", "train", "--references", "--device", "cpu", "-q",
                       "--run-dir", str(run_dir), "-o", str(out), *step.split()]
            command += [a for case in FOLDS[fold] for a in ("--val-case", case)]
            if previous is not None:
                command += ["--init-model", str(previous)]
            if run_dir.is_dir() and any(run_dir.iterdir()):
                command.append("--resume")
            print("training:", " ".join(command[2:]), file=sys.stderr, flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)  # the trainer writes into a folder that exists
            if subprocess.run(command, cwd=REPO).returncode != 0:
                raise SystemExit(f"training the {recipe.name} generator of the fold that holds out {fold} failed "
                                 "(its message is above); run the same command again to resume it")
        previous = out
    if recipe.last_epoch:
        last = previous.with_name(f"{previous.stem}-last.safetensors")
        if not last.exists():
            print("keeping the last epoch:", export_last_epoch(run_dir, last), file=sys.stderr, flush=True)
        previous = last
    target = recipe.model(fold)
    atomic_write(target, lambda tmp: Path(tmp).write_bytes(previous.read_bytes()))


@dataclass
class Case:
    """A scan with its reference and the voxels to leave out of the Dice (marked lesions, or the GTV)."""

    name: str
    ct: object
    ref: np.ndarray
    lesions: list
    left_out: np.ndarray


def load_case(name: str) -> Case:
    """A shared reference case, LUNG1-002 (GTV left out) or cip-ct-64."""
    data = data_dir()
    if name == LUNG1:
        ct = load_ct(data / "ct" / f"{LUNG1}.nii.gz")
        ref = mask_from_image(sitk.ReadImage(str(data / "masks" / f"{LUNG1}-lungs.nii.gz")), ct)
        gtv = mask_from_image(sitk.ReadImage(str(data / "masks" / f"{LUNG1}-gtv.nii.gz")), ct) > 0
        return Case(name, ct, ref, [], gtv)
    if name == CIP:
        cip = data / "fixtures" / "cip-ct-64"
        ct = load_ct(cip / "ct-64.nrrd")
        return Case(name, ct, mask_from_image(sitk.ReadImage(str(cip / "wholeLung-64.nrrd")), ct), [], np.zeros(ct.array.shape, bool))
    case = case_by_name(name)
    ct = load_ct(data / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    marks = case.lidc_reads or case.tumour_boxes
    lesions = load_lesions(data / marks, ct, ref, data / case.boxes_dicom if case.boxes_dicom else None) if marks else []
    left_out = lesion_union(lesions, ref.shape) if lesions else np.zeros(ref.shape, bool)
    return Case(name, ct, ref, lesions, left_out)


def score(case: Case, labels: np.ndarray, findings: dict) -> dict:
    """The row's figures for one mask."""
    pred, ref = labels.copy(), case.ref.copy()
    pred[case.left_out] = 0
    ref[case.left_out] = 0
    spill, percent = spill_ml(pred, case.ref, [], case.ct.spacing)  # the left-out voxels (lesions, the GTV) are no spill
    row = {"dice": round(dice(pred, ref), 4), "hd95_mm": round(hausdorff(pred, ref, case.ct.spacing, 95), 2),
           "spill_ml": round(spill, 1), "spill_percent": round(percent, 3),
           "never_lung_ml": round(findings["never_lung_ml"], 2) if not findings.get("removed") else 0.0,
           "never_lung_found_ml": round(findings["never_lung_ml"], 2)}
    if case.lesions:
        report = lesion_report(labels, case.ref, case.lesions, case.ct.spacing)
        row["lesions_min"] = round(report["all"]["min_inside"], 4)
    if case.name == LUNG1:
        row["gtv_kept"] = round(float((labels[case.left_out] > 0).mean()), 4)
        row["outline"] = outline(pred > 0, ref > 0, case.ct.array, case.ct.voxel_volume_ml)
    return row


def outline(mask: np.ndarray, ref: np.ndarray, hu: np.ndarray, voxel_ml: float) -> dict:
    """Where a mask's outline runs against a reference's, slice by slice (in-plane 4-neighbours): the reference
    lung in the one-voxel ring just outside the mask, the mask's own outermost voxels outside the reference, and
    the median HU of each outline's outermost voxels."""
    ring = ndimage.binary_dilation(mask, IN_PLANE_CROSS) & ~mask
    mask_edge = mask & ~ndimage.binary_erosion(mask, IN_PLANE_CROSS)
    ref_edge = ref & ~ndimage.binary_erosion(ref, IN_PLANE_CROSS)
    return {"missed_in_ring_ml": round(float((ring & ref).sum() * voxel_ml), 1),
            "missed_ml": round(float((ref & ~mask).sum() * voxel_ml), 1),
            "spill_in_edge_ml": round(float((mask_edge & ~ref).sum() * voxel_ml), 1),
            "spill_ml": round(float((mask & ~ref).sum() * voxel_ml), 1),
            "mask_edge_median_hu": float(np.median(hu[mask_edge])), "ref_edge_median_hu": float(np.median(hu[ref_edge]))}


class _OnePass:
    """The generator's mask of the last (model, case), reused for each rule set: the rules act after it.

    Stands in for :func:`LungGANLib.segment.inference.predict_probabilities` while the rows are scored.
    """

    def __init__(self) -> None:
        self.key, self.mask, self.original = None, None, inference.predict_probabilities

    def __call__(self, hu, generator, *args, **kwargs):
        key = (generator, hu.shape, float(hu[hu.shape[0] // 2].mean()))  # holding the generator keeps its identity
        if self.key is None or key[0] is not self.key[0] or key[1:] != self.key[1:]:
            self.key, self.mask = key, self.original(hu, generator, *args, **kwargs)
        return self.mask.copy()


def run_rows(recipes: list[Recipe], json_path: Path, rule_sets: tuple[str, ...] = tuple(RULES)) -> list[dict]:
    """Score every candidate, rule set (of ``rule_sets``; the classical method's in them) and case not yet in
    ``json_path``, saving after each row."""
    rows = json.loads(json_path.read_text()) if json_path.exists() else []
    done = {(r["candidate"], r["rules"], r["case"]) for r in rows}
    jobs = []  # (candidate, fold or "external", case, model path, method)
    for recipe in recipes:
        for fold, held_out in FOLDS.items():
            model = fold_model(recipe, fold)
            for name in held_out:
                if model is not None:
                    jobs.append((recipe.name, fold, name, model, "gan"))
        shipped = shipped_path(recipe)
        for name in EXTERNAL if shipped.exists() else ():  # a recipe that ships nothing: once its fold is trained
            jobs.append((recipe.name, "external", name, shipped, "gan"))
    for fold, held_out in FOLDS.items():
        for name in held_out:
            jobs.append(("classical", fold, name, None, "classical"))
    for name in EXTERNAL:
        jobs.append(("classical", "external", name, None, "classical"))
    loaded: dict[str, Case] = {}
    inference.predict_probabilities = _OnePass()
    for candidate, fold, name, model_path, method in jobs:
        rule_names = tuple(r for r in (CLASSICAL_RULES if method == "classical" else RULES) if r in rule_sets)
        if all((candidate, rules, name) in done for rules in rule_names):
            continue
        case = loaded.setdefault(name, load_case(name))
        model = load_model(str(model_path)) if model_path else None
        for rules in rule_names:
            if (candidate, rules, name) in done:
                continue
            options = SegmentOptions(method=method, model=str(model_path) if model_path else None, device="cpu", **RULES[rules])
            if options.masses:  # the fold's lesion generator finds them (on the external scans, the shipped one's)
                finder = mass_model(fold)
                if finder is None:
                    continue
                options = replace(options, mass_model=str(finder))
            findings: dict = {}
            start = time.perf_counter()
            labels = segment(case.ct, options, model=model, findings=findings)
            findings["removed"] = options.guard_rail
            row = {"candidate": candidate, "rules": rules, "fold": fold, "case": name,
                   "model": str(model_path.relative_to(REPO)) if model_path else None,
                   "seconds": round(time.perf_counter() - start, 1), **score(case, labels, findings)}
            rows.append(row)
            done.add((candidate, rules, name))
            print(json.dumps(row), file=sys.stderr, flush=True)
            atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1) + "\n"))
    return rows


def fold_rows(rows: list[dict], candidate: str, rules: str) -> dict[str, dict]:
    """The candidate's rows on the held-out scans, by case (complete only when every fold is there)."""
    return {r["case"]: r for r in rows if r["candidate"] == candidate and r["rules"] == rules and r["fold"] != "external"}


HELD_OUT = [name for names in FOLDS.values() for name in names]


def choose(rows: list[dict]) -> list[dict]:
    """Rank the candidates by :data:`SELECTION_RULE`; the first eligible one is the default."""
    anchors = [fold_rows(rows, name, "all") for name in ("first-baseline", "conservative")]
    anchors = [a for a in anchors if all(case in a for case in HELD_OUT)]
    ranking = []
    for candidate, rules in dict.fromkeys((r["candidate"], r["rules"]) for r in rows if r["candidate"] != "classical"):
        group = fold_rows(rows, candidate, rules)
        if not all(case in group for case in HELD_OUT):
            continue
        dice = [group[case]["dice"] for case in HELD_OUT]
        floor_ok = all(group[case]["dice"] >= a[case]["dice"] - MARGIN for a in anchors for case in HELD_OUT)
        spill = max(group[case]["spill_percent"] for case in HELD_OUT)
        never = max(group[case]["never_lung_ml"] for case in HELD_OUT)
        ranking.append({
            "candidate": candidate, "rules": rules,
            "eligible": floor_ok and spill <= MAX_SPILL_PERCENT and never <= MAX_NEVER_LUNG_ML,
            "worst_dice": min(dice), "mean_dice": round(float(np.mean(dice)), 4),
            "worst_spill_percent": spill, "worst_hd95_mm": max(group[case]["hd95_mm"] for case in HELD_OUT),
        })
    best = max((r["worst_dice"] for r in ranking if r["eligible"]), default=None)
    return sorted(ranking, key=lambda r: (not r["eligible"], -(r["worst_dice"] if best is None or best - r["worst_dice"] > TIE
                                                                else best), -r["mean_dice"]))


def _cell(row: dict | None, key: str, fmt: str) -> str:
    if row is None or row.get(key) is None:
        return "–"
    value = row[key]
    return f"{100 * value:.1f} %" if fmt == "%" else format(value, fmt)


def _least(group: dict[str, dict]) -> str:
    """The least share of a marked lesion inside, per held-out scan that has marks."""
    return " / ".join(_cell(group.get(c), "lesions_min", "%") for c in HELD_OUT if c != "elastix-00")


def report(rows: list[dict], command: str) -> str:
    """The fold section of ``docs/results.md`` (markdown)."""
    short = {"lidc-idri-0001": "lidc-0001", "lidc-idri-0002": "lidc-0002", "elastix-00": "elastix-00",
             "lung-pet-ct-dx-a0001-series3": "A0001 s3", "lung-pet-ct-dx-a0001-series2": "A0001 s2"}
    lines = [
        "## Choosing the default: every patient held out once",
        "",
        f"Made by `{command}`; raw rows in [`results/folds.json`](results/folds.json).",
        "Each recipe's generator for a fold was trained without that patient, but each training run keeps its "
        "epoch with the best Dice on the held-out patient's slices (`--val-case`); the last step of "
        f"{', '.join(r.name for r in RECIPES if r.last_epoch and len(r.steps or ()) > 1)} keeps its last epoch "
        f"instead, and {', '.join(r.name for r in RECIPES if r.last_epoch and len(r.steps or ()) == 1)} every run's "
        "last epoch, so no epoch of it is chosen on the patient it is scored on. The lidc-idri-0001 fold "
        "is the generator that ships (the shipped first baseline kept epoch 18 of 24 by lidc-idri-0001's Dice). "
        "Dice and HD95 are for both lungs with the marked lesions (LIDC readers' nodule "
        "outlines, the A0001 tumour) left out of both masks; spill is mask over 5 mm outside the reference that is "
        "no lesion, as a share of the reference lung; never-lung is soft tissue outside the rib cage, below the "
        "diaphragm or in the posterior mediastinum left in the mask. The references are the classical method "
        "corrected by hand (`docs/reference-masks.md`), so the classical method scores near 1 against them by "
        "construction.",
        "",
        f"**The rule** ({SELECTION_RULE})",
        "",
        "| candidate | rules | " + " | ".join(short[c] for c in HELD_OUT) + " | worst | mean | worst HD95 mm "
        "| worst spill | never-lung mL left (found) | least lesion inside: lidc-0001 / 0002 / A0001 s3 / s2 "
        "| LUNG1-002 Dice (GTV out) | HD95 | GTV kept | cip-ct-64 |",
        "|---|---|" + "---:|" * (len(HELD_OUT) + 10),
    ]
    order = [r.name for r in RECIPES] + ["classical"]
    keys = sorted(dict.fromkeys((r["candidate"], r["rules"]) for r in rows),
                  key=lambda k: (order.index(k[0]) if k[0] in order else len(order), list(RULES).index(k[1])))
    for candidate, rules in keys:
        group = fold_rows(rows, candidate, rules)
        ext = {r["case"]: r for r in rows if r["candidate"] == candidate and r["rules"] == rules and r["fold"] == "external"}
        cells = [_cell(group.get(c), "dice", ".4f") for c in HELD_OUT]
        if all(c in group for c in HELD_OUT):
            dice = [group[c]["dice"] for c in HELD_OUT]
            cells += [f"{min(dice):.4f}", f"{float(np.mean(dice)):.4f}"]
        else:
            cells += ["–", "–"]
        if group:
            rows_ = group.values()
            cells += [f"{max(r['hd95_mm'] for r in rows_):.2f}", f"{max(r['spill_percent'] for r in rows_):.2f} %",
                      f"{max(r['never_lung_ml'] for r in rows_):.1f} ({max(r['never_lung_found_ml'] for r in rows_):.1f})",
                      _least(group)]
        else:
            cells += ["–"] * 4
        lung1 = ext.get(LUNG1)
        cells += [_cell(lung1, "dice", ".4f"), _cell(lung1, "hd95_mm", ".2f"), _cell(lung1, "gtv_kept", "%"),
                  _cell(ext.get(CIP), "dice", ".4f")]
        lines.append(f"| {candidate} | {rules} | " + " | ".join(cells) + " |")
    ranking = choose(rows)
    lines += ["", "Ranking by the rule (first eligible: the default):", "",
              "| # | candidate | rules | eligible | worst Dice | mean Dice | worst spill | worst HD95 mm |",
              "|---:|---|---|---|---:|---:|---:|---:|"]
    for i, r in enumerate(ranking, start=1):
        lines.append(f"| {i} | {r['candidate']} | {r['rules']} | {'yes' if r['eligible'] else 'no'} | {r['worst_dice']:.4f} | "
                     f"{r['mean_dice']:.4f} | {r['worst_spill_percent']:.2f} % | {r['worst_hd95_mm']:.2f} |")
    # From the rows, not from the generators on this machine: the report is the same wherever it is rewritten.
    scored = {(r["candidate"], r["case"]) for r in rows}
    missing = [r.name for r in RECIPES if any((r.name, case) not in scored for case in HELD_OUT)]
    if missing:
        lines += ["", "Not ranked, for want of generators on every fold: " + ", ".join(missing) + "."]
    plain = [r for r in RULES if not RULES[r]["masses"]]  # the masses' rule set needs a second generator per fold
    some = {c: [r for r in plain if (c, r) in keys] for c in dict.fromkeys(k[0] for k in keys) if c != "classical"}
    some = {c: have for c, have in some.items() if len(have) < len(plain)}
    if some:
        lines += ["", "Scored with some rule sets only (`--rules`): " + "; ".join(
            f"{c} ({', '.join(have)})" for c, have in some.items()) + "."]
    masses = [c for c in dict.fromkeys(k[0] for k in keys) if any((c, r) in keys for r in RULES if RULES[r]["masses"])]
    if masses:
        finders = [fold for fold in FOLDS if any(r["candidate"] in masses and RULES[r["rules"]]["masses"]
                                                 and r["fold"] == fold for r in rows)]
        lines += ["", f"With the masses joined (its generator: the {MASS_RECIPE} recipe's of each fold, trained for "
                      f"{', '.join(finders)}): {', '.join(masses)}."]
    return "\n".join(lines) + "\n"


def shipped_table(rows: list[dict], candidate: str, rules: str) -> str:
    """The README's table of the default: its worst and mean held-out scan, and the external scans (markdown)."""
    group = fold_rows(rows, candidate, rules)
    ext = {r["case"]: r for r in rows if r["candidate"] == candidate and r["rules"] == rules and r["fold"] == "external"}
    worst = min(HELD_OUT, key=lambda c: group[c]["dice"])
    lung1, cip = ext[LUNG1], ext[CIP]
    mean = float(np.mean([group[c]["dice"] for c in HELD_OUT]))
    return "\n".join([
        "| | worst held-out scan | mean of the five held-out scans | LUNG1-002, clinicians' lungs (GTV left out) | cip-ct-64 |",
        "|---|---:|---:|---:|---:|",
        f"| Dice | {group[worst]['dice']:.4f} ({worst}) | {mean:.4f} | {lung1['dice']:.4f} | {cip['dice']:.4f} |",
        f"| HD95 | {max(group[c]['hd95_mm'] for c in HELD_OUT):.2f} mm (worst) | "
        f"{float(np.mean([group[c]['hd95_mm'] for c in HELD_OUT])):.2f} mm | {lung1['hd95_mm']:.2f} mm | {cip['hd95_mm']:.2f} mm |",
        f"| spill | {max(group[c]['spill_percent'] for c in HELD_OUT):.2f} % (worst) | "
        f"{float(np.mean([group[c]['spill_percent'] for c in HELD_OUT])):.2f} % | GTV kept: {100 * lung1['gtv_kept']:.1f} % | |",
    ])


def write_section(path: Path, section: str, begin: str = FOLDS_BEGIN, end: str = FOLDS_END) -> None:
    """Put a benchmark's section (the folds' unless ``begin`` and ``end`` say another's) into ``path`` between its
    markers (after the title, the first time)."""
    text = path.read_text() if path.exists() else "# Results\n"
    text = with_folds_section(text, f"{begin}\n{section}{end}", begin, end)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def results_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options of a benchmark that writes ``docs/results/NAME.json`` and a section of ``docs/results.md``."""
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / f"{name}.json"))
    parser.add_argument("--report", help="also write the section of this results page (docs/results.md)")
    parser.add_argument("--report-only", action="store_true", help="write the section from the JSON, without running")


def update_card(card: Path, rows: list[dict], candidate: str, rules: str, note: str) -> None:
    """Write the fold protocol's choice into a model card: the rule, the ranking, what was chosen and its rows."""
    data = json.loads(card.read_text())
    data["selection"] = {
        "protocol": "python benchmarks/folds.py (leave one patient out; rows in docs/results/folds.json)",
        "rule": SELECTION_RULE, "candidate": candidate, "rules": rules, "note": note, "ranking": choose(rows),
    }
    data["folds"] = [r for r in rows if r["candidate"] == candidate and r["rules"] == rules]
    atomic_write(card, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", action="store_true", help="first train the recipes' missing fold generators")
    parser.add_argument("--recipes", nargs="+", default=[r.name for r in RECIPES], choices=[r.name for r in RECIPES])
    parser.add_argument("--folds", nargs="+", default=list(FOLDS), choices=list(FOLDS), help="with --train: only these folds")
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / "folds.json"))
    parser.add_argument("--report", default=str(REPO / "docs" / "results.md"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the JSON, running nothing")
    parser.add_argument("--train-only", action="store_true", help="with --train: train, score nothing")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES), metavar="RULES",
                        help="score only these rule sets (default: all; a candidate is ranked with the rule sets it has on every fold)")
    parser.add_argument("--update-card", nargs=3, metavar=("CARD", "CANDIDATE", "RULES"),
                        help="write the choice of CANDIDATE with RULES, and its rows, into the model card CARD")
    parser.add_argument("--note", default="", help="with --update-card: why, in a sentence")
    args = parser.parse_args()
    recipes = [r for r in RECIPES if r.name in args.recipes]
    json_path = Path(args.json)
    if args.report_only:
        rows = json.loads(json_path.read_text())
    else:
        if args.train:
            for recipe in recipes:
                for fold in args.folds:
                    train(recipe, fold)
            if args.train_only:
                return
        rows = run_rows(recipes, json_path, tuple(args.rules))
    write_section(Path(args.report), report(rows, "python benchmarks/folds.py"))
    if args.update_card:
        card, candidate, rules = args.update_card
        update_card(Path(card), rows, candidate, rules, args.note)
    for r in choose(rows):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
