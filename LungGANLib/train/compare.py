"""``lunggan compare``: the paper's comparison of the baseline and the five critics, on real data.

Three parts (their report, ``docs/results.md`` with its plots and raw numbers in
``docs/results/``, is :mod:`LungGANLib.train.compare_report`'s):

1. Table 2 analogue: train on the Kaggle slices' ``x_train`` (20 % held out for
   choosing the epoch), report per-slice IoU and Hausdorff distance (pixels) on
   ``x_test``: mean and median per run, then mean ± standard deviation over seeds.
   The same runs with weight clipping instead of the gradient penalty, for the
   regression critic, back the choice of the Lipschitz default.
2. Table 4 analogue: leave one patient out over the shared 3D series (the two
   Lung-PET-CT-Dx series are one patient and leave together); each held-out
   volume is segmented by the whole pipeline at native resolution and compared
   with its reference mask (3D Dice, HD95 in mm). The classical method is a row.
3. The case study: the fraction of the LIDC radiologists' nodule outlines and
   of the Lung-PET-CT-Dx tumour (soft tissue inside the lung within each box)
   that lies inside each method's lung mask, on the held-out volumes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..evaluate.metrics import dice, hausdorff, iou
from ..models import GeneratorConfig
from ..models.weights import load_model
from .datasets import KAGGLE_VAL_FRACTION, VALIDATION_FRACTION, SliceData, kaggle_slices, load_pairs, prepare_slices, split_validation
from .train_config import TrainConfig
from .trainer import Trainer
from .variants import VARIANTS

logger = logging.getLogger(__name__)

#: Patients of the shared 3D series; each fold leaves one out. The first series named is the one tested.
LOVO_PATIENTS: dict[str, tuple[str, ...]] = {
    "LIDC-IDRI-0001": ("lidc-idri-0001",),
    "LIDC-IDRI-0002": ("lidc-idri-0002",),
    "ITKElastix-00": ("elastix-00",),
    "Lung-PET-CT-Dx-A0001": ("lung-pet-ct-dx-a0001-series3", "lung-pet-ct-dx-a0001-series2"),
}


@dataclass
class CompareConfig:
    """What ``lunggan compare`` runs (defaults: the run recorded in ``docs/results.md``).

    Attributes:
        variants: variants to compare (the baseline and the five critics).
        seeds: seeds of the Kaggle runs.
        kaggle_epochs: epochs per Kaggle run (64x64 slices).
        clip_variants: variants also trained with weight clipping on Kaggle (Lipschitz check).
        lovo_variants: variants of the leave-one-patient-out table.
        lovo_epochs, lovo_steps: epochs (at most, with ``lovo_patience``) and steps per epoch of each 3D fold.
        lovo_patience: end a 3D fold once its validation Dice has not improved for this
            many epochs (None: run all ``lovo_epochs``).
        lovo_input_size: network input side for the 3D folds.
        patients: patients held out in turn (default: all in :data:`LOVO_PATIENTS`); each fold trains on all the others.
        resume: continue runs from their checkpoints in the work folder (finished runs are
            only evaluated again) instead of training them from scratch.
        batch_size, base_channels: shared by all runs.
        device: torch device.
    """

    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1, 2)
    kaggle_epochs: int = 20
    clip_variants: tuple[str, ...] = ("regression",)
    lovo_variants: tuple[str, ...] = tuple(VARIANTS)
    lovo_epochs: int = 3
    lovo_steps: int = 25
    lovo_patience: int | None = None
    lovo_input_size: int = 128
    patients: tuple[str, ...] = tuple(LOVO_PATIENTS)
    resume: bool = False
    batch_size: int = 8
    base_channels: int = 8
    device: str = "auto"

    def train_config(self, variant: str, seed: int, **overrides) -> TrainConfig:
        settings = dict(
            variant=variant, seed=seed, batch_size=self.batch_size, generator=GeneratorConfig(base_channels=self.base_channels)
        )
        settings.update(overrides)
        return TrainConfig(**settings)


#: Share of the training slices of a 3D fold held out for choosing the epoch.
LOVO_VAL_FRACTION = VALIDATION_FRACTION


def fit_or_resume(trainer: Trainer, train: SliceData, val: SliceData, resume: bool) -> Path:
    """Train to the end (continuing from the run's checkpoint with ``resume``); the best checkpoint's path."""
    if resume and trainer.checkpoint_path.is_file():
        trainer.load_checkpoint()
    return trainer.fit(train, val)


def kaggle_counts() -> dict[str, int]:
    """Slices in the Kaggle set's train and test files, and their side, read from the files' headers."""
    from ..config import data_dir

    folder = data_dir() / "kaggle-finding-lungs"
    train = np.load(folder / "x_train.npy", mmap_mode="r")
    test = np.load(folder / "x_test.npy", mmap_mode="r")
    return {"train": len(train), "test": len(test), "size": int(train.shape[1])}


# -- Table 2: Kaggle slices ---------------------------------------------------------------------


def slice_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-slice IoU and symmetric Hausdorff distance (pixels) of (n, h, w) masks.

    A slice where one mask is empty and the other is not has Hausdorff ``inf``.
    """
    ious = [iou(p, t) for p, t in zip(pred, truth)]
    hds = [hausdorff(p, t) for p, t in zip(pred, truth)]
    return ious, hds


def predict_slices(generator: torch.nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """Thresholded generator masks (n, h, w) of network-ready slices."""
    generator.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            out.append((generator(images[start : start + 32].to(device)) > 0).cpu().numpy()[:, 0])
    return np.concatenate(out)


def _finite_stats(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    return {
        "mean": float(finite.mean()) if finite.size else math.nan,
        "median": float(np.median(values)),
        "infinite": int(values.size - finite.size),
    }


def _train_seconds(trainer: Trainer) -> float:
    """The seconds the run's epochs took, as each epoch recorded them (also across --resume; 0 for none)."""
    return float(sum(r.seconds for r in trainer.history))


def run_kaggle(config: CompareConfig, work: Path, say: Callable[[str], None]) -> list[dict]:
    """Train every (variant, seed, Lipschitz method) on Kaggle x_train; score on x_test."""
    train_all = kaggle_slices("train")
    test = kaggle_slices("test")
    train, val = split_validation(train_all, KAGGLE_VAL_FRACTION, seed=0)  # one fixed split: seeds vary weights and batches
    size = int(train.images.shape[-1])
    jobs = [(v, s, "gp") for v in config.variants for s in config.seeds]
    jobs += [(v, s, "clip") for v in config.clip_variants if v != "baseline" for s in config.seeds]
    runs = []
    for variant, seed, lipschitz in jobs:
        tag = f"kaggle-{variant}-{lipschitz}-seed{seed}" if variant != "baseline" else f"kaggle-baseline-seed{seed}"
        if variant == "baseline" and lipschitz == "clip":
            continue
        start = time.perf_counter()
        trainer = Trainer(
            config.train_config(variant, seed, epochs=config.kaggle_epochs, input_size=size, lipschitz=lipschitz),
            work / tag,
            config.device,
        )
        best = fit_or_resume(trainer, train, val, config.resume)
        generator, _ = load_model(best, trainer.device)
        ious, hds = slice_scores(predict_slices(generator, test.images, trainer.device), test.targets.numpy()[:, 0] > 0.5)
        run = {
            "variant": variant,
            "lipschitz": lipschitz if variant != "baseline" else "-",
            "seed": seed,
            "best_epoch": max(trainer.history, key=lambda r: r.score).epoch,
            "val_dice": trainer.best_dice,
            "iou": _finite_stats(ious),
            "hausdorff_px": _finite_stats(hds),
            "seconds": time.perf_counter() - start,
            "train_seconds": _train_seconds(trainer),
            "history": [asdict(r) for r in trainer.history],
        }
        runs.append(run)
        say(f"{tag}: test IoU mean {run['iou']['mean']:.4f}, median {run['iou']['median']:.4f}; "
            f"Hausdorff mean {run['hausdorff_px']['mean']:.2f} px ({run['seconds']:.0f} s)")
    return runs


# -- Table 4 and the case study: 3D series, leave one patient out -------------------------------


def case_lesions(case_name: str, volume, reference: np.ndarray) -> list:
    """The radiologists' lesions of a case on its canonical grid (:func:`LungGANLib.evaluate.lesions.load_lesions`):
    one per LIDC reader and nodule, one per Lung-PET-CT-Dx tumour; none for a case without marks."""
    from ..config import data_dir
    from ..evaluate.lesions import load_lesions
    from ..evaluate.references import case_by_name

    case, data = case_by_name(case_name), data_dir()
    marks = case.lidc_reads or case.tumour_boxes
    if not marks:
        return []
    return load_lesions(data / marks, volume, reference, data / case.boxes_dicom if case.boxes_dicom else None)


#: Name of a case's lesions in the case-study table, by lesion kind.
LESION_KIND_NAMES = {"nodule": "nodule outlines", "tumour": "tumour"}


def _score_volume(name: str, labels: np.ndarray, volume, reference: np.ndarray, lesions: list) -> dict:
    """Dice, IoU, HD95; for each kind of lesion the share of all its readers' voxels (their union) inside
    the mask; the least share of any one lesion (and of any juxtapleural one) and the spill (see
    :func:`LungGANLib.evaluate.lesions.lesion_report`)."""
    from ..evaluate.lesions import lesion_report, lesion_union

    lungs, truth = labels > 0, reference > 0  # both lungs together: what the table shows (not each lung's figures)
    row = {"case": name, "dice": dice(lungs, truth), "iou": iou(lungs, truth), "hd95_mm": hausdorff(lungs, truth, volume.spacing, 95)}
    row["lesions"] = {}
    for kind, title in LESION_KIND_NAMES.items():
        union = lesion_union([lesion for lesion in lesions if lesion.kind == kind], labels.shape)
        if union.any():
            row["lesions"][title] = float((labels[union] > 0).mean())
    report = lesion_report(labels, reference, lesions, volume.spacing)
    row["lesions_min"] = report["all"]["min_inside"]
    row["juxtapleural_min"] = report["juxtapleural"]["min_inside"]
    row["spill_ml"], row["spill_percent"] = report["spill_ml"], report["spill_percent"]
    return row


def run_lovo(config: CompareConfig, work: Path, say: Callable[[str], None]) -> list[dict]:
    """Leave-one-patient-out training and whole-pipeline evaluation on the shared 3D series."""
    from ..config import data_dir
    from ..evaluate.references import CASES, reference_path
    from ..segment.inference import SegmentOptions, segment

    by_name = {c.name: c for c in CASES}
    loaded = {}
    # Every fold trains on all the other patients, whichever are held out in turn.
    for name in (n for p in LOVO_PATIENTS for n in LOVO_PATIENTS[p]):
        case = by_name[name]
        loaded[name] = load_pairs([(str(data_dir() / case.ct), str(reference_path(case)))])[0]
    slices = {name: prepare_slices([pair], config.lovo_input_size) for name, pair in loaded.items()}
    rows = []
    for patient in config.patients:
        tested = LOVO_PATIENTS[patient][0]
        volume, reference = loaded[tested]
        lesions = case_lesions(tested, volume, reference)
        start = time.perf_counter()
        # The paper's methods as the paper has them: without LungGAN's lesion envelope (nor, for the
        # generator, its dome rule and rim trim), so that the critics are compared as networks
        # (docs/lesions.md measures these steps on their own).
        labels = segment(volume, SegmentOptions(method="classical", envelope=False))
        rows.append({"patient": patient, "method": "classical", **_score_volume(tested, labels, volume, reference, lesions),
                     "seconds": time.perf_counter() - start})
        others = [n for p in LOVO_PATIENTS if p != patient for n in LOVO_PATIENTS[p]]
        pool = SliceData(
            torch.cat([slices[n].images for n in others]),
            torch.cat([slices[n].targets for n in others]),
            torch.cat([slices[n].pixel_mm for n in others]),
        )
        train, val = split_validation(pool, LOVO_VAL_FRACTION, seed=0)
        for variant in config.lovo_variants:
            start = time.perf_counter()
            tag = f"lovo-{patient}-{variant}"
            trainer = Trainer(
                config.train_config(variant, 0, epochs=config.lovo_epochs, steps_per_epoch=config.lovo_steps,
                                    input_size=config.lovo_input_size, patience=config.lovo_patience),
                work / tag,
                config.device,
            )
            best = fit_or_resume(trainer, train, val, config.resume)
            model = load_model(best, trainer.device)
            options = SegmentOptions(method="gan", device=str(trainer.device), envelope=False, drop_domes=False, trim_rim=False,
                                     grow_outline=False, grow_bases=False, guard_rail=False, remove_airways=False)
            labels = segment(volume, options, model=model)
            row = {"patient": patient, "method": variant, **_score_volume(tested, labels, volume, reference, lesions),
                   "val_dice": trainer.best_dice, "epochs": trainer.epoch,
                   "best_epoch": trainer.epoch - trainer.epochs_without_improvement,
                   "train_seconds": _train_seconds(trainer), "seconds": time.perf_counter() - start}
            rows.append(row)
            say(f"{tag}: {tested} Dice {row['dice']:.4f}, HD95 {row['hd95_mm']:.1f} mm ({row['seconds']:.0f} s)")
    return rows


def run_compare(config: CompareConfig, work: Path, parts: Sequence[str] = ("kaggle", "lovo"),
                say: Callable[[str], None] = print) -> tuple[list[dict], list[dict], float]:
    """Run the comparison's parts: the Kaggle runs, the 3D rows, and the seconds it took
    (:func:`LungGANLib.train.compare_report.write_report` makes the report of them)."""
    start = time.perf_counter()
    runs = run_kaggle(config, work, say) if "kaggle" in parts else []
    rows = run_lovo(config, work, say) if "lovo" in parts else []
    return runs, rows, time.perf_counter() - start
