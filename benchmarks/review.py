"""How well the review (``lunggan segment --review``) points at the slices where a mask is wrong.

For each scan with a reference, a mask from a model that never saw it (the first baseline's
generator of the fold that held the patient out; the shipped one for the external scans), and the
classical method's mask: the review's slices are ranked by score, and the share of the mask's
error that lies on the top 10 % of them is compared with what 10 % of the slices hold at random
(0.10) and at best (the slices with the most error first).

The error is the mask's spill and missed voxels against the reference, the marked lesions (the LIDC
readers' outlines, the A0001 tumour, LUNG1-002's GTV) left out, after a one-voxel in-plane opening:
the opening drops the thin rim along the whole outline, a convention of the reference, and keeps
what a reader must see.

The held-out references are the classical method corrected by hand, so "disagrees with the
classical method" finds their errors by construction there; only LUNG1-002 (radiation
oncologists' lungs) and cip-ct-64 (the Chest Imaging Platform's mask) are independent of the
review's signals. Rows are written to ``docs/results/review.json``.

Usage:
    python benchmarks/review.py [--json docs/results/review.json]
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
from LungGANLib.segment.review import review_slices  # noqa: E402

#: The share of the lung's slices a reader is shown first.
TOP_SHARE = 0.10
_CROSS = np.zeros((3, 3, 3), dtype=bool)
_CROSS[1] = ndimage.generate_binary_structure(2, 1)


def capture(ranking: list[int], error: np.ndarray) -> float:
    """The share of the error on the first ``TOP_SHARE`` of the ranked slices."""
    total = float(error[ranking].sum())
    top = ranking[: max(1, int(round(TOP_SHARE * len(ranking))))]
    return round(float(error[top].sum()) / total, 3) if total else float("nan")


def rows_for(case_name: str, fold: str) -> list[dict]:
    case = folds.load_case(case_name)
    recipe = next(r for r in folds.RECIPES if r.name == "first-baseline")
    rows = []
    for method in ("gan", "classical"):
        options = SegmentOptions(method=method, model=folds.fold_model(recipe, fold) if method == "gan" else None,
                                 device="cpu", review=True)
        findings: dict = {}
        labels = segment(case.ct, options, findings=findings)
        review = findings["review"]
        pred, ref = (labels > 0) & ~case.left_out, (case.ref > 0) & ~case.left_out
        error = ndimage.binary_opening(pred ^ ref, structure=_CROSS).sum(axis=(1, 2)) * case.ct.voxel_volume_ml
        ranked = [s["index"] for s in review.slices]
        anatomy = review_slices(labels, case.ct.array, case.ct.spacing, single_label=False)
        by_area = sorted(ranked, key=lambda z: -int((labels[z] > 0).sum()))
        best = sorted(ranked, key=lambda z: -error[z])
        rows.append({
            "case": case_name, "method": method, "model": str(options.model or ""), "slices": len(ranked),
            "flagged": review.flagged, "error_ml": round(float(error[ranked].sum()), 1),
            "top_share": TOP_SHARE, "capture_review": capture(ranked, error),
            "capture_anatomy_only": capture([s["index"] for s in anatomy.slices], error),
            "capture_largest_lung_first": capture(by_area, error), "capture_best": capture(best, error),
            "capture_flagged": round(float(error[[s["index"] for s in review.slices if s["flags"]]].sum() / max(error[ranked].sum(), 1e-9)), 3),
            "flagged_share": round(review.flagged / max(len(ranked), 1), 3),
            "independent_reference": case_name in folds.EXTERNAL,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / "review.json"))
    args = parser.parse_args()
    rows = []
    for fold, names in folds.FOLDS.items():
        for name in names:
            rows += rows_for(name, fold)
    for name in folds.EXTERNAL:
        rows += rows_for(name, "lidc-idri-0001")
    from LungGANLib.io.output import atomic_write

    text = json.dumps(rows, indent=1) + "\n"
    atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
