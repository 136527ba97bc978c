"""The report of ``lunggan compare`` (``docs/results.md``): tables, plain statements read off the numbers,
plots, and the raw numbers beside it (``results/results.json``), so that ``--report-only`` rebuilds it.

Every number in the prose comes from the runs or the settings (:class:`~LungGANLib.train.compare.CompareConfig`,
the trainer's defaults, the data's own counts), never typed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..evaluate.summary import with_kept_sections
from ..io.output import atomic_write
from .compare import (
    KAGGLE_VAL_FRACTION,
    LOVO_VAL_FRACTION,
    CompareConfig,
    kaggle_counts,
)
from .train_config import TrainConfig


def mean_and_spread(values: Sequence[float], digits: int) -> str:
    """'mean ± standard deviation' of the finite values (just the value for one, n/a for none)."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def kaggle_table(runs: list[dict]) -> str:
    """Markdown: one row per (variant, Lipschitz method), mean ± s.d. over seeds of each run's statistic."""
    lines = [
        "| variant | Lipschitz | seeds | IoU mean | IoU median | Hausdorff mean (px) | Hausdorff median (px) | empty slices |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for run in runs:
        key = (run["variant"], run["lipschitz"])
        if key not in keys:
            keys.append(key)
    for key in keys:
        group = [r for r in runs if (r["variant"], r["lipschitz"]) == key]
        lines.append(
            f"| {key[0]} | {key[1]} | {len(group)} | {mean_and_spread([r['iou']['mean'] for r in group], 4)} | "
            f"{mean_and_spread([r['iou']['median'] for r in group], 4)} | {mean_and_spread([r['hausdorff_px']['mean'] for r in group], 2)} | "
            f"{mean_and_spread([r['hausdorff_px']['median'] for r in group], 2)} | {sum(r['hausdorff_px']['infinite'] for r in group)} |"
        )
    return "\n".join(lines)


def lovo_tables(rows: list[dict]) -> tuple[str, str]:
    """Markdown: Table 4 (per method: Dice and HD95 per held-out volume, mean, median) and the case study."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    head = "| method | " + " | ".join(cases) + " | mean Dice | median Dice | mean HD95 (mm) | median HD95 (mm) |"
    lines = [head, "|" + "---|" * (len(cases) + 5)]
    for method in methods:
        mine = {r["case"]: r for r in rows if r["method"] == method}
        dice = [mine[c]["dice"] for c in cases if c in mine]
        hd = [mine[c]["hd95_mm"] for c in cases if c in mine]
        cells = [f"{mine[c]['dice']:.4f} / {mine[c]['hd95_mm']:.1f}" if c in mine else "" for c in cases]
        lines.append(
            f"| {method} | " + " | ".join(cells)
            + f" | {np.mean(dice):.4f} | {np.median(dice):.4f} | {np.mean(hd):.2f} | {np.median(hd):.2f} |"
        )
    kinds = [(r["case"], kind) for r in rows if r["method"] == methods[0] for kind in r["lesions"]]
    with_spill = all("spill_ml" in r for r in rows)  # results written before the spill was measured lack it
    head = [f"{case}: {kind}" for case, kind in kinds] + (["worst spill"] if with_spill else [])
    study = ["| method | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        by_case = {r["case"]: r for r in mine}
        cells = [_lesion_cell(by_case[c], k) for c, k in kinds]
        if with_spill:
            worst = max(mine, key=lambda r: r["spill_ml"])
            cells.append(f"{worst['spill_ml']:.1f} mL ({worst['spill_percent']:.2f} %)")
        study.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines), "\n".join(study)


def _lesion_cell(row: dict, kind: str) -> str:
    """All marks of a kind together, and the least share of any one reader's mark where it differs."""
    pooled, least = row["lesions"][kind], row.get("lesions_min")
    if least is None or f"{least:.1%}" == f"{pooled:.1%}":
        return f"{pooled:.1%}"
    return f"{pooled:.1%} (least {least:.1%})"


def plot_results(runs: list[dict], rows: list[dict], folder: Path) -> list[Path]:
    """Bar plot of Kaggle test IoU per variant (one dot per seed) and validation curves of seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if runs:
        keys = list(dict.fromkeys((r["variant"], r["lipschitz"]) for r in runs))
        fig, (bars, curves) = plt.subplots(1, 2, figsize=(11, 3.8))
        for i, key in enumerate(keys):
            values = [r["iou"]["mean"] for r in runs if (r["variant"], r["lipschitz"]) == key]
            bars.bar(i, np.mean(values), color="#9bbcd9")
            bars.plot([i] * len(values), values, "k.", ms=6)
        bars.set_xticks(range(len(keys)), [f"{v}\n({l})" if l == "clip" else v for v, l in keys], rotation=30, fontsize=8)
        bars.set_ylabel("mean test IoU (x_test)")
        low = min(r["iou"]["mean"] for r in runs)
        bars.set_ylim(max(0.0, low - 0.05), 1.0)
        for run in runs:
            if run["seed"] == min(r["seed"] for r in runs) and run["lipschitz"] != "clip":
                curves.plot([h["epoch"] for h in run["history"]], [h["val_dice"] for h in run["history"]], label=run["variant"])
        curves.set_xlabel("epoch")
        curves.set_ylabel("validation Dice (20 % of x_train)")
        curves.legend(fontsize=8)
        fig.tight_layout()
        written.append(atomic_write(folder / "kaggle.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100)))
        plt.close(fig)
    if rows:
        methods = list(dict.fromkeys(r["method"] for r in rows))
        fig, ax = plt.subplots(figsize=(7, 3.4))
        for i, method in enumerate(methods):
            values = [r["dice"] for r in rows if r["method"] == method]
            ax.plot([i] * len(values), values, "o", alpha=0.7)
        ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=8)
        ax.set_ylabel("3D Dice, held-out volume")
        fig.tight_layout()
        written.append(atomic_write(folder / "lovo.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100)))
        plt.close(fig)
    return written


def write_report(config: CompareConfig, runs: list[dict], rows: list[dict], seconds: float, output: Path, command: str) -> Path:
    """Write ``results.md`` beside a ``results/`` folder of plots and raw numbers."""
    folder = output.parent / output.stem
    folder.mkdir(parents=True, exist_ok=True)
    raw = {"config": asdict(config), "command": command, "kaggle": runs, "lovo": rows, "seconds": seconds, "torch": torch.__version__}
    atomic_write(folder / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(raw, indent=1, default=float)))
    plot_results(runs, rows, folder)
    trainer = TrainConfig()  # the defaults every run shares, as the prose below states them
    kaggle = kaggle_counts()
    parts = [
        "# LungGAN results: the shipped models, and the LGAN variants compared on real data",
        "",
        f"Regenerated by `{command}` in {seconds / 60:.0f} min on {_machine()} (torch {torch.__version__})"
        + (" in this invocation, with `--resume`: runs that had a checkpoint in the work folder continued from it "
           "(finished ones were only evaluated again)" if config.resume else "")
        + f". Raw numbers: [`{folder.name}/results.json`]({folder.name}/results.json).",
        "",
        f"All runs share one trainer and its defaults: Adam, generator lr {trainer.lr:g} (cosine to 0) and weight decay "
        f"{trainer.weight_decay:g}, batch {config.batch_size}, generator base width {config.base_channels}, augmentation on; "
        f"critics: gradient penalty {trainer.gp_weight:g} unless marked `clip` (weights clipped to ±{trainer.clip:g}), "
        f"{trainer.n_critic} critic steps per generator step, adversarial weight {trainer.adv_weight:g}, critic lr "
        f"{trainer.critic_lr:g}. The best epoch is chosen on validation data, never on the test data.",
        "",
    ]
    summary = summarize_results(runs, rows)
    if summary:
        parts += ["## In short", "", *[f"- {line}" for line in summary], ""]
    parts += shipped_models_section()
    if runs:
        parts += [
            "## Table 2 analogue: Kaggle slices with human lung masks",
            "",
            f"Train on `x_train` ({kaggle['train']} slices at {kaggle['size']}×{kaggle['size']}; a fixed "
            f"{KAGGLE_VAL_FRACTION:.0%} held out for choosing the epoch), {config.kaggle_epochs} epochs; test on the "
            f"{kaggle['test']} `x_test` slices. Per run: mean and median over the test slices "
            "of IoU and of the symmetric Hausdorff distance (pixels); the table gives mean ± standard deviation of "
            "those over the seeds. A slice whose prediction is empty has an infinite Hausdorff distance; it is "
            "left out of the mean, kept in the median and counted in the last column." + _kaggle_time(runs),
            "",
            kaggle_table(runs),
            "",
            f"![Kaggle test IoU per variant and validation curves]({folder.name}/kaggle.png)",
            "",
        ]
    if rows:
        table4, study = lovo_tables(rows)
        parts += [
            "## Table 4 analogue: 3D series, leave one patient out",
            "",
            f"Each fold trains on the other patients' reference masks (`Testing/Data/ReferenceMasks`) at "
            f"{config.lovo_input_size}×{config.lovo_input_size}, {_lovo_length(config)} "
            f"({LOVO_VAL_FRACTION:.0%} of the training slices held out for choosing the epoch), then segments the held-out volume with the "
            "whole pipeline (network, post-processing, right/left split) at native resolution. Cells: 3D Dice / HD95 (mm) "
            "against the reference mask. The references are the classical method plus radiologists' lesion "
            "corrections, so the classical row is high by construction and is not an independent score. "
            + _lovo_caveat(config, rows),
            "",
            table4,
            "",
            f"![3D Dice per method]({folder.name}/lovo.png)",
            "",
            "## Case study: lesions inside the lung mask",
            "",
            "Fraction of lesion voxels inside each method's lung mask on the held-out volumes: every LIDC radiologist's "
            "nodule outlines (`annotations/lidc-idri-000N-reads.xml`, all readers together), and for Lung-PET-CT-Dx the "
            "tumour tissue within the radiologist's boxes (`LungGANLib.evaluate.lesions`); in brackets, the least share "
            "of any one reader's outline where it differs. The last column gives the worst spill over the held-out "
            "volumes: mask more than 5 mm outside the reference lung that is no lesion. A mask that spills beyond "
            "the lungs takes lesions in trivially: read these fractions together with the Dice above. These are the "
            "paper's networks through the plain post-processing (no lesion envelope, dome rule or rim trim), trained "
            "on the reference masks alone; the shipped models' figures, through the whole pipeline, are in \"The shipped "
            "models\" above.",
            "",
            study,
            "",
        ]
    before = output.read_text() if output.exists() else ""
    text = with_kept_sections("\n".join(parts), before)  # the sections benchmarks/folds.py, review.py, shifts.py write
    atomic_write(output, lambda tmp: Path(tmp).write_text(text))
    return output


def _lovo_length(config: CompareConfig) -> str:
    if config.lovo_patience is None:
        return f"{config.lovo_epochs} epochs of {config.lovo_steps} steps"
    return (f"epochs of {config.lovo_steps} steps until the validation Dice had not improved for {config.lovo_patience} "
            f"epochs (at most {config.lovo_epochs}; the learning rate's cosine schedule spans {config.lovo_epochs})")


def _lovo_caveat(config: CompareConfig, rows: list[dict]) -> str:
    if config.lovo_patience is None:
        return (f"The folds are short runs ({config.lovo_epochs * config.lovo_steps} steps of {config.batch_size} slices, "
                "chosen to fit this machine's CPU budget): they compare how fast each variant learns, far from convergence "
                "(the shipped model's card, `Resources/Models/lunggan.json`, records a full training and its scores; "
                "`--lovo-patience N` trains each fold until its validation Dice stalls, as `docs/results.md` does).")
    folds: dict[str, dict[str, str]] = {}  # patient -> method -> "epochs (best)"; a fold's cases share one run
    minutes: dict[str, dict[str, float]] = {}  # patient -> method -> training minutes, as the epochs recorded them
    for r in rows:
        if "epochs" in r:
            folds.setdefault(r.get("patient", "?"), {})[r["method"]] = f"{r['method']} {r['epochs']} (best {r['best_epoch']})"
            if "train_seconds" in r:
                minutes.setdefault(r.get("patient", "?"), {})[r["method"]] = r["train_seconds"] / 60
    if not folds:
        return ""
    text = "Epochs run, per fold (the patient held out) and variant: " + "; ".join(
        f"{patient}: " + ", ".join(ran.values()) for patient, ran in folds.items()) + "."
    if minutes:
        text += (" Training took, per fold, all variants together (the epochs' own recorded times, whichever "
                 "invocation ran them): " + ", ".join(f"{p} {sum(m.values()):.0f} min" for p, m in minutes.items()) + ".")
    return text


def _kaggle_time(runs: list[dict]) -> str:
    timed = [r["train_seconds"] for r in runs if "train_seconds" in r]
    if not timed:
        return ""
    return (f" Training took {sum(timed) / 60:.0f} min for the {len(timed)} runs together (the epochs' own recorded "
            "times, whichever invocation ran them).")


def shipped_models_section(folder: Path | None = None) -> list[str]:
    """Markdown lines: the shipped generators' own scores through the whole pipeline, read from the ``evaluation``
    of their cards (written by ``benchmarks/validate.py --update-card``), the default's first, the classical method
    last; nothing when no card holds one."""
    from ..evaluate.summary import summary_table
    from ..models.weights import DEFAULT_MODEL, ROOT

    folder = Path(folder) if folder is not None else DEFAULT_MODEL.parent
    default_card = DEFAULT_MODEL.with_suffix(".json").name
    rows, classical, unscored, default = [], [], [], {}
    for path in sorted(folder.glob("*.json"), key=lambda p: (p.name != default_card, p.name)):
        card = json.loads(path.read_text())
        if card.get("format") != "lunggan-generator":
            continue
        name = card.get("name", path.stem)
        scored = [r for r in card.get("evaluation", {}).get("cases", []) if r.get("envelope")]
        if not any(r["method"] == "gan" for r in scored):
            unscored.append(f"`{name}`")
            continue
        rows += [{**r, "model": f"{name} ({card.get('sha256', '')[:8]})"} for r in scored if r["method"] == "gan"]
        classical = classical or [{**r, "model": "classical"} for r in scored if r["method"] == "classical"]
        if path.name == default_card:
            default = card
    if not rows:
        return []
    data = default.get("data", {})
    return [
        "## The shipped models, through the whole pipeline",
        "",
        f"Read from the model cards in `{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}/` "
        "(their `evaluation`, written by `python benchmarks/validate.py --synthetic --update-card`; the first eight "
        "digits of each weights file's SHA-256 in brackets): each generator through the whole pipeline (post-processing "
        "with the lesion envelope, the dome rule and the rim trim) at native resolution, against the shared reference "
        "masks and the radiologists' marks, and the classical method through the same post-processing (the references "
        "are the classical method's masks with radiologists' lesion corrections, so its Dice is high by construction). "
        + (f"The default was trained on {', '.join(data.get('train', []))} and chose its epoch on "
           f"{', '.join(data.get('validation', []))} (the held-out column), so the A0001 tumour figures are on "
           "training scans. " if data else "")
        + "cip-ct-64 is an outside reference: a coarse COPDGene scan with the Chest Imaging Platform's lung mask. "
        "Synthetic lesions and dense lung are drawn into the held-out volume's slices with a fixed seed. What each "
        "training ingredient and post-processing step contributed is in [lesions.md](lesions.md).",
        "",
        summary_table(rows + classical),
        "",
        *([f"How the default was chosen (its card's `selection`): {default['selection']['rule']}", ""]
          if default.get("selection") else []),
        *([f"Shipped without an evaluation in its card: {', '.join(unscored)}.", ""] if unscored else []),
    ]


def summarize_results(runs: list[dict], rows: list[dict]) -> list[str]:
    """Plain statements read off the numbers: rankings, and whether a gap exceeds the spread over seeds."""
    lines = []
    groups: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["lipschitz"]), []).append(run["iou"]["mean"])
    if groups:
        spread = float(np.mean([np.std(v, ddof=1) for v in groups.values() if len(v) > 1] or [0.0]))
        ranked = sorted(groups, key=lambda k: -np.mean(groups[k]))
        names = [f"{v}{' (clip)' if l == 'clip' else ''} {np.mean(groups[(v, l)]):.4f}" for v, l in ranked]
        lines.append("Kaggle test IoU, mean over seeds, best first: " + ", ".join(names) + ".")
        if ("baseline", "-") in groups:
            base = np.mean(groups[("baseline", "-")])
            best = ranked[0] if ranked[0] != ("baseline", "-") else ranked[1] if len(ranked) > 1 else None
            if best:
                gap = np.mean(groups[best]) - base
                if any(len(v) > 1 for v in groups.values()):
                    verdict = "larger" if abs(gap) > 2 * spread else "not larger"
                    tail = (f"; the typical spread over seeds (s.d.) is {spread:.4f}, so the gap is {verdict} "
                            "than twice the seed-to-seed spread.")
                else:
                    tail = " (one seed: no spread to judge the gap by)."
                lines.append(f"Best critic ({best[0]}) vs baseline: {gap:+.4f} IoU" + tail)
        for (variant, lipschitz), values in groups.items():
            if lipschitz == "clip" and (variant, "gp") in groups:
                gp = np.mean(groups[(variant, "gp")])
                lines.append(
                    f"{variant}: gradient penalty {gp:.4f} vs weight clipping {np.mean(values):.4f} mean test IoU "
                    f"({'penalty' if gp >= np.mean(values) else 'clipping'} better)."
                )
    if rows:
        methods = list(dict.fromkeys(r["method"] for r in rows))
        means = {m: float(np.mean([r["dice"] for r in rows if r["method"] == m])) for m in methods}
        learned = [m for m in methods if m != "classical"]
        if learned:
            ranked = sorted(learned, key=lambda m: -means[m])
            lines.append(
                "3D, leave one patient out, mean Dice of the trained methods, best first: "
                + ", ".join(f"{m} {means[m]:.4f}" for m in ranked)
                + (f" (classical {means['classical']:.4f}, high by construction)." if "classical" in means else ".")
            )
    return lines


def rebuild_report(output: Path) -> Path:
    """Write ``results.md`` again from its ``results.json`` (no training), e.g. after changing the report's text."""
    source = output.parent / output.stem / "results.json"
    if not source.is_file():
        from ..errors import InputError

        raise InputError(f"{source} not found: run 'lunggan compare' (without --report-only) first")
    raw = json.loads(source.read_text())
    fields = CompareConfig.__dataclass_fields__
    config = CompareConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["config"].items() if k in fields})
    return write_report(config, raw["kaggle"], raw["lovo"], raw["seconds"], output, raw.get("command", "lunggan compare"))


def _machine() -> str:
    import platform

    cpu = f"{os.cpu_count()} CPU cores"
    return f"{cpu}, {platform.machine()}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU")
