"""How well the review (``lunggan segment --review``) points at the slices where a mask is wrong.

For each scan with a reference, a mask from a model that never saw it (the first baseline's
generator of the fold that held the patient out; the shipped one for the external scans), the
classical method's mask, and a weak one: on the held-out scans the first baseline's recipe stopped
after two epochs (``WEAK_FOLD``, its last epoch, trained without the patient: ``--train``), on the
external scans the lesion model shipped until 2026-12-06 (``folds.weak_model``, which takes in what
is not lung on scans it has not seen): the
review's slices are ranked by score, and the share of the mask's error that lies on the top 10 % of
them is compared with what 10 % of the slices hold at random (0.10) and at best (the slices with the
most error first); also the AUROC of the scores (slices with 2 mL of error or more against slices
under 0.2 mL), the share of gross errors (connected
error regions of 5 mL or more) with a flagged slice, and the share of slices flagged. As a yardstick,
the slices ranked by the lung's area alone (``capture_largest_lung_first``, ``auroc_largest_lung_first``), and
the AUROC of the flags' mL alone, without the score's outline term (``auroc_flags_only``). That term's width,
the review's ``OUTLINE_ERROR_MM``, is fitted here (``outline_error_mm``): the error on the slices with no flag
per mm² of outline, over the held-out generators' masks.

The error is the mask's spill and missed voxels against the reference, the marked lesions (the LIDC
readers' outlines, the A0001 tumour, LUNG1-002's GTV) left out, after a one-voxel in-plane opening:
the opening drops the thin rim along the whole outline, a convention of the reference, and keeps
what a reader must see.

The held-out references are the classical method corrected by hand, so "disagrees with the
classical method" finds their errors by construction there; only LUNG1-002 (radiation
oncologists' lungs) and cip-ct-64 (the Chest Imaging Platform's mask) are independent of the
review's signals. Rows are written to ``docs/results/review.json``.

Usage:
    python benchmarks/review.py [--train] [--json docs/results/review.json] [--report docs/results.md] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds  # noqa: E402

from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.segment.morphology import IN_PLANE_CROSS  # noqa: E402
from LungGANLib.segment.review import OUTLINE_ERROR_MM, outline_mm, review_slices, review_step  # noqa: E402

#: The share of the lung's slices a reader is shown first.
TOP_SHARE = 0.10
#: The held-out scans' weak mask: the first baseline's recipe stopped after two of its 24 epochs, its last epoch kept
#: (no epoch chosen on the patient): slice Dice 0.91-0.96 on the held-out patient's slices, against 0.98-0.99 at 24.
WEAK_FOLD = folds.Recipe("weak", None, ("--epochs 2",), last_epoch=True)
#: What the table calls it.
WEAK_FOLD_LABEL = "first baseline, 2 epochs (weak)"


def auroc(scores: dict[int, float], error: np.ndarray) -> float:
    """AUROC of the scores: slices with at least 2 mL of error against slices with under 0.2 mL (ties count half)."""
    bad = [scores[z] for z in scores if error[z] >= 2.0]
    good = [scores[z] for z in scores if error[z] < 0.2]
    if not bad or not good:
        return float("nan")
    bad_a, good_a = np.asarray(bad)[:, None], np.asarray(good)[None, :]
    return round(float(((bad_a > good_a).sum() + 0.5 * (bad_a == good_a).sum()) / (len(bad) * len(good))), 3)


def gross_recall(error_mask: np.ndarray, flagged: set[int], voxel_ml: float) -> tuple[int, int]:
    """Gross errors (connected error regions of 5 mL or more) and how many have a flagged slice."""
    components, _ = ndimage.label(error_mask)
    sizes = np.bincount(components.ravel()) * voxel_ml
    gross = [i for i in range(1, len(sizes)) if sizes[i] >= 5.0]
    caught = 0
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        if index in gross:
            zs = found[0].start + np.flatnonzero((components[found] == index).any(axis=(1, 2)))
            caught += bool(set(zs.tolist()) & flagged)
    return len(gross), caught


def capture(ranking: list[int], error: np.ndarray) -> float:
    """The share of the error on the first ``TOP_SHARE`` of the ranked slices."""
    total = float(error[ranking].sum())
    top = ranking[: max(1, int(round(TOP_SHARE * len(ranking))))]
    return round(float(error[top].sum()) / total, 3) if total else float("nan")


def error_voxels(mask: np.ndarray, case) -> np.ndarray:
    """A mask's error against the case's reference: spill and missed voxels, its marked lesions left out, after a
    one-voxel in-plane opening (which drops the thin rim along the outline, the reference's convention)."""
    pred, ref = (mask > 0) & ~case.left_out, (case.ref > 0) & ~case.left_out
    return ndimage.binary_opening(pred ^ ref, structure=IN_PLANE_CROSS)


def rows_for(case_name: str, fold: str) -> list[dict]:
    case = folds.load_case(case_name)
    recipe = folds.recipe_named("first-baseline")
    rows = []
    generator = folds.trained_model(recipe, fold)
    candidates = [("gan", generator), ("classical", generator)]  # the classical mask's second opinion: that generator
    if case_name in folds.EXTERNAL:  # a weak mask: the lesion model takes in what is not lung on unseen scans
        candidates.append(("gan", folds.weak_model()))
    else:
        candidates.append(("gan", folds.trained_model(WEAK_FOLD, fold, "python benchmarks/review.py --train")))
    for method, model in candidates:
        options = SegmentOptions(method=method, model=model, device="cpu", review=True)
        findings: dict = {}
        labels = segment(case.ct, options, findings=findings)
        review = findings["review"]
        error_mask = error_voxels(labels, case)
        error = error_mask.sum(axis=(1, 2)) * case.ct.voxel_volume_ml
        ranked = [s["index"] for s in review.slices]
        anatomy = review_slices(labels, case.ct.array, case.ct.spacing, single_label=False)
        by_area = sorted(ranked, key=lambda z: -int((labels[z] > 0).sum()))
        best = sorted(ranked, key=lambda z: -error[z])
        flagged = {s["index"] for s in review.slices if s["flags"]}
        unflagged = sorted(set(ranked) - flagged)
        step, (sx, sy, sz) = review_step(case.ct.spacing), case.ct.spacing  # the outline as the review measures it
        outline_mm2 = outline_mm(labels[:, ::step, ::step] > 0, (sx * step, sy * step, sz)) * sz
        gross, caught = gross_recall(error_mask, flagged, case.ct.voxel_volume_ml)
        perfect = capture(best, error)
        rows.append({
            "case": case_name, "method": method, "model": str(options.model or ""), "slices": len(ranked),
            "flagged": review.flagged, "error_ml": round(float(error[ranked].sum()), 1),
            "top_share": TOP_SHARE, "capture_review": capture(ranked, error),
            "capture_anatomy_only": capture([s["index"] for s in anatomy.slices], error),
            "capture_largest_lung_first": capture(by_area, error), "capture_best": capture(best, error),
            "capture_flagged": round(float(error[[s["index"] for s in review.slices if s["flags"]]].sum() / max(error[ranked].sum(), 1e-9)), 3),
            "flagged_share": round(review.flagged / max(len(ranked), 1), 3),
            "wrong_share": round(float((error[ranked] >= 1.0).mean()) if ranked else 0.0, 3),
            "independent_reference": case_name in folds.EXTERNAL,
            "ranking_of_perfect": round(capture(ranked, error) / perfect, 3) if perfect and perfect == perfect else None,
            "auroc": auroc({s["index"]: s["score"] for s in review.slices}, error),
            # The flags' mL as the score counts them (tissue two flags name once): the score less its outline term.
            "auroc_flags_only": auroc({s["index"]: s["score"] - OUTLINE_ERROR_MM * outline_mm2[s["index"]] / 1000.0
                                       for s in review.slices}, error),
            "unflagged_error_ml": round(float(error[unflagged].sum()), 2),
            "unflagged_outline_mm2": round(float(outline_mm2[unflagged].sum())),
            "auroc_largest_lung_first": auroc({z: float((labels[z] > 0).sum()) for z in ranked}, error),
            "gross_errors": gross, "gross_flagged": caught,
            "good_mask": bool((error[ranked] < 1.0).all()),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def outline_error_mm(rows: list[dict]) -> float:
    """The review's ``OUTLINE_ERROR_MM``: the unflagged error per mm² of outline (length x thickness) of the fold
    generators' masks on the patients they never saw (the external scans and the weak masks left out: the external
    scans never tune, and the weak masks are no generator a reader is given)."""
    held_out = [r for r in rows if r["method"] == "gan" and not r["independent_reference"]
                and Path(r.get("model", "")).stem != WEAK_FOLD.name]
    return 1000.0 * sum(r["unflagged_error_ml"] for r in held_out) / sum(r["unflagged_outline_mm2"] for r in held_out)


def _cell(value, fmt: str = ".2f") -> str:
    return "–" if value is None or value != value else format(value, fmt)


def report(rows: list[dict]) -> str:
    """The section of ``docs/results.md``: the measures per scan and mask."""
    lines = [
        "## Where to look: how well the review points (`lunggan segment --review`)",
        "",
        "Made by `python benchmarks/review.py --report docs/results.md`; rows in [`results/review.json`](results/review.json); "
        "what the review is: [`review.md`](review.md). Error: spill and missed voxels against the reference, marked lesions "
        "and LUNG1-002's GTV left out, after a one-voxel in-plane opening. *Ranking*: the error on the top 10 % of the "
        "lung's slices as the review ranks them, as a share of what the perfect ranking puts there; *AUROC*: slices with "
        "2 mL of error or more against slices under 0.2 mL; *gross errors*: connected error regions of 5 mL or more, and "
        "how many have a flagged slice; *flagged*: the share of the lung's slices with a flag; *wrong*: the share with 1 mL "
        "of error or more (a good mask has none). The held-out references "
        "are the classical method corrected by hand, so where the review compares with the classical method it finds "
        "their errors by construction; LUNG1-002 (radiation oncologists) and cip-ct-64 (the Chest Imaging Platform) are "
        "independent. Targets (issue 23): ranking ≥ 70 % of perfect, AUROC ≥ 0.85, ≥ 95 % of gross errors flagged, at "
        "most 30 % of a weak mask's slices flagged and 5 % of a good one's. A slice's score is its flags' mL (tissue two "
        "flags name counted once) and "
        f"`OUTLINE_ERROR_MM` along its outline: the held-out generators' error on slices with no flag over their outline's "
        f"length times thickness, {outline_error_mm(rows):.3f} mm here; *AUROC, flags*: that of the flags' mL alone (the "
        "score less its outline term).",
        "",
        "| scan | mask | error mL | ranking (of perfect) | AUROC | AUROC, flags | gross errors flagged | flagged | wrong | good mask |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    names = {"first-baseline": "first baseline (fold)", folds.weak_model().stem: folds.WEAK_LABEL,
             WEAK_FOLD.name: WEAK_FOLD_LABEL}
    for r in rows:
        mask = "classical" if r["method"] == "classical" else names.get(Path(r["model"]).stem, Path(r["model"]).stem)
        lines.append(f"| {r['case']} | {mask} | {r['error_ml']:.1f} | {_cell(r['ranking_of_perfect'])} | {_cell(r['auroc'])} | "
                     f"{_cell(r['auroc_flags_only'])} | "
                     f"{r['gross_flagged']} / {r['gross_errors']} | {100 * r['flagged_share']:.0f} % | "
                     f"{100 * r['wrong_share']:.0f} % | "
                     f"{'yes' if r['good_mask'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    folds.results_arguments(parser, "review")
    parser.add_argument("--train", action="store_true", help="first train the weak fold generators that are missing")
    args = parser.parse_args()
    from LungGANLib.evaluate.summary import REVIEW_BEGIN, REVIEW_END
    from LungGANLib.io.output import atomic_write

    if args.report_only:
        rows = json.loads(Path(args.json).read_text())
    else:
        for fold in folds.FOLDS if args.train else ():
            folds.train(WEAK_FOLD, fold)  # resumable; nothing to do once trained
        rows = []
        for fold, names in folds.FOLDS.items():
            for name in names:
                rows += rows_for(name, fold)
        for name in folds.EXTERNAL:
            rows += rows_for(name, "lidc-idri-0001")
        text = json.dumps(rows, indent=1) + "\n"
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))
    if args.report:
        folds.write_section(Path(args.report), report(rows), REVIEW_BEGIN, REVIEW_END)


if __name__ == "__main__":
    main()
