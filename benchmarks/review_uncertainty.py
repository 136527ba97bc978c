"""Does the generator's own uncertainty point at the slices where its mask is wrong? (issue 23, "cheap uncertainty")

The review (``lunggan segment --review``) ranks slices by its flags' mL and a band along the outline. A signal
that costs nothing more: the generator's probabilities, which the pipeline thresholds and throws away. Per slice,
the *band* is the mL where the generator is unsure (probability between 0.1 and 0.9). Ranked here, on the masks
``benchmarks/review.py`` measures from a generator (the first baseline's fold generator on the patient its fold held
out, the shipped one on the external scans, and the lesion model shipped until 2026-12-06 as a weak mask there):

- ``review``: the review's score, as shipped;
- ``flags + band``: the flags' mL and ``band_weight`` x the band, in place of the outline term;
- ``review + band``: the review's score and ``band_weight`` x the band;
- ``band``: the band alone.

``band_weight`` is fitted as the outline term's width is: the error on the slices with no flag over their band's
mL, on the held-out fold rows only (the external scans never tune). Each ranking is scored as in
``benchmarks/review.py``: the error on the top 10 % of slices as a share of the perfect ranking's, and the AUROC.

Usage:
    python benchmarks/review_uncertainty.py [--json docs/results/review-uncertainty.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds  # noqa: E402
from review import auroc, capture, error_voxels  # noqa: E402

from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.models.weights import load_model  # noqa: E402
from LungGANLib.segment.classical import body_mask  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, probability_batches, segment  # noqa: E402
from LungGANLib.segment.preprocess import lung_slices  # noqa: E402

#: Probabilities between these are the generator being unsure.
UNSURE = (0.1, 0.9)


def band_ml(ct, model: tuple) -> np.ndarray:
    """Per slice of the CT volume, the mL where the generator's probability lies within UNSURE (in the body, on the
    slices the pipeline runs it on, as the pipeline runs it)."""
    generator, info = model
    hu, voxel_ml = ct.array, ct.voxel_volume_ml
    body = body_mask(hu)
    band = np.zeros(hu.shape[0])
    todo = lung_slices(hu, body)
    for index, prob in probability_batches(hu, generator, info, torch.device("cpu"), 16, todo, ct.spacing[2]):
        unsure = (prob > UNSURE[0]) & (prob < UNSURE[1])
        band[index] = (unsure.numpy() & body[index]).sum(axis=(1, 2)) * voxel_ml
    return band


def slices_for(case: folds.Case, model_path: Path, mask: str) -> dict:
    """Per slice of the review: its score, its flags' mL, the band and the error."""
    model = load_model(str(model_path))
    findings: dict = {}
    labels = segment(case.ct, SegmentOptions(method="gan", model=model_path, device="cpu", review=True), model=model,
                     findings=findings)
    error = error_voxels(labels, case).sum(axis=(1, 2)) * case.ct.voxel_volume_ml
    band = band_ml(case.ct, model)
    return {"case": case.name, "mask": mask, "independent_reference": case.name in folds.EXTERNAL,
            "slices": [{"index": s["index"], "score": s["score"], "flags_ml": sum(f["ml"] for f in s["flags"]),
                        "band_ml": round(float(band[s["index"]]), 3), "error_ml": round(float(error[s["index"]]), 3)}
                       for s in findings["review"].slices]}


def band_weight(rows: list[dict]) -> float:
    """The error on the slices with no flag per mL of band, over the held-out fold rows."""
    held_out = [s for r in rows if not r["independent_reference"] and r["mask"] == "first baseline (fold)"
                for s in r["slices"] if not s["flags_ml"]]
    return sum(s["error_ml"] for s in held_out) / max(sum(s["band_ml"] for s in held_out), 1e-9)


def rankings(row: dict, weight: float) -> dict:
    """Each ranking's share of the perfect ranking's error on its top 10 % of slices, and its AUROC."""
    error = np.zeros(max(s["index"] for s in row["slices"]) + 1)
    for s in row["slices"]:
        error[s["index"]] = s["error_ml"]
    scores = {
        "review": {s["index"]: s["score"] for s in row["slices"]},
        "flags + band": {s["index"]: s["flags_ml"] + weight * s["band_ml"] for s in row["slices"]},
        "review + band": {s["index"]: s["score"] + weight * s["band_ml"] for s in row["slices"]},
        "band": {s["index"]: s["band_ml"] for s in row["slices"]},
    }
    indices = [s["index"] for s in row["slices"]]
    perfect = capture(sorted(indices, key=lambda z: -error[z]), error)
    out = {}
    for name, score in scores.items():
        ranked = sorted(indices, key=lambda z: -score[z])
        out[name] = {"ranking_of_perfect": round(capture(ranked, error) / perfect, 3) if perfect else None,
                     "auroc": auroc(score, error)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / "review-uncertainty.json"))
    args = parser.parse_args()
    recipe = folds.recipe_named("first-baseline")
    rows = [slices_for(folds.load_case(name), folds.trained_model(recipe, fold), "first baseline (fold)")
            for fold, names in folds.FOLDS.items() for name in names]
    for name in folds.EXTERNAL:
        case = folds.load_case(name)  # read once for both masks
        rows.append(slices_for(case, folds.shipped_path(recipe), "first baseline (shipped)"))
        rows.append(slices_for(case, folds.weak_model(), folds.WEAK_LABEL))
    weight = band_weight(rows)
    for row in rows:
        row["rankings"] = rankings(row, weight)
    result = {"unsure": UNSURE, "band_weight": round(weight, 4), "rows": rows}
    atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    print(f"band weight {weight:.4f} (error mL per mL of band, held-out fold rows)")
    print("| scan | mask | " + " | ".join(rows[0]["rankings"]) + " |")
    for row in rows:
        cells = [f"{v['ranking_of_perfect']:.2f} ({v['auroc']:.2f})" if v["auroc"] == v["auroc"]
                 else f"{v['ranking_of_perfect']:.2f}" for v in row["rankings"].values()]
        print(f"| {row['case']} | {row['mask']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
