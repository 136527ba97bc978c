"""Where a mask and the clinicians' lungs of LUNG1-002 disagree, and whether the outline is biased.

``nsclc-radiomics-lung1-002`` is the one scan here whose lungs a person drew (radiation oncologists,
radiotherapy planning contours; validation only, never trained on or used to tune a rule). This splits a
mask's disagreement with them, the GTV left out of both, into what a rule could still move:

- missed (in the contours, not the mask) and spill (the other way), each by density (HU bands) and by
  in-plane distance from the other outline (1 voxel: the outline's own voxels), and their largest pieces
  beyond 1.5 voxels (a piece, not the outline's wobble);
- the Dice after moving the whole outline: shifted one voxel along each axis, grown by a ring of the
  voxels around it below -100 HU or 100 HU (a partial-volume voxel a reader draws in), and smoothed
  in-plane (a Gaussian of the mask cut at one half, as a hand-drawn polygon smooths corners). A bias
  of the outline (ours inside or outside theirs, or shifted) would show as a gain for one of them.

The mask is the default's (``lunggan segment``'s defaults) unless ``--mask`` gives one. Rows go to
``docs/results/outline.json``; ``docs/models.md`` ("The outline") says what they showed.

Usage:
    python benchmarks/outline.py [--mask MASK] [--method gan|classical] [--json docs/results/outline.json]
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

from folds import LUNG1, load_case  # noqa: E402

from LungGANLib.errors import LungGANError  # noqa: E402
from LungGANLib.evaluate.metrics import dice  # noqa: E402
from LungGANLib.io import mask_from_image, read_image  # noqa: E402
from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.segment.morphology import IN_PLANE_CROSS, component_sizes, label_components  # noqa: E402

HU_BANDS = (-2000, -700, -320, -100, 100, 4000)
DISTANCES = (1, 2, 3, 5, 10)


def in_plane_distance(mask: np.ndarray) -> np.ndarray:
    """Each voxel's in-plane distance (voxels) to ``mask`` on its slice; 99 on a slice without it."""
    out = np.full(mask.shape, 99.0, dtype=np.float32)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        out[z] = ndimage.distance_transform_edt(~mask[z])
    return out


def breakdown(error: np.ndarray, hu: np.ndarray, distance: np.ndarray, voxel_ml: float) -> dict:
    """An error's volume by HU band and by in-plane distance, and its largest pieces beyond 1.5 voxels."""
    hu_e, d_e = hu[error], distance[error]
    bands = {f"{lo}..{hi}": round(float(((hu_e >= lo) & (hu_e < hi)).sum() * voxel_ml), 1)
             for lo, hi in zip(HU_BANDS, HU_BANDS[1:])}
    rings, low = {}, 0
    for d in DISTANCES:
        rings[f"{low}-{d}"] = round(float(((d_e > low) & (d_e <= d)).sum() * voxel_ml), 1)
        low = d
    rings[f">{DISTANCES[-1]}"] = round(float((d_e > DISTANCES[-1]).sum() * voxel_ml), 1)
    pieces, count = label_components(error & (distance > 1.5))
    sizes, boxes = component_sizes(pieces, count) * voxel_ml, ndimage.find_objects(pieces)
    largest = []
    for index in np.argsort(-sizes)[:5]:
        box = boxes[index]
        largest.append({"ml": round(float(sizes[index]), 1), "slices": [box[0].start, box[0].stop - 1],
                        "median_hu": int(np.median(hu[box][pieces[box] == index + 1]))})
    return {"ml": round(float(error.sum() * voxel_ml), 1), "by_hu": bands, "by_distance_voxels": rings, "largest_pieces": largest}


def moved_outlines(labels: np.ndarray, hu: np.ndarray) -> dict[str, np.ndarray]:
    """The mask with its outline moved each way tried (see the module)."""
    lungs = labels > 0
    out = {}
    for axis, name in ((0, "z"), (1, "y"), (2, "x")):
        for step in (-1, 1):
            out[f"shift {name} {step:+d} voxel"] = np.roll(lungs, step, axis=axis)
    grown = ndimage.binary_dilation(lungs, IN_PLANE_CROSS)
    for bound in (-100, 100):
        out[f"ring below {bound} HU"] = lungs | (grown & (hu < bound))
    for sigma in (1.0, 2.0):
        smooth = np.zeros_like(lungs)
        for value in np.unique(labels[labels > 0]):
            smooth |= ndimage.gaussian_filter((labels == value).astype(np.float32), (0, sigma, sigma)) >= 0.5
        out[f"smoothed, sigma {sigma:g} voxels"] = smooth
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mask", help="a mask of LUNG1-002 (default: segment it with --method)")
    parser.add_argument("--method", default="gan", choices=("gan", "classical"))
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / "outline.json"))
    args = parser.parse_args()
    case = load_case(LUNG1)
    hu, voxel_ml = case.ct.array, case.ct.voxel_volume_ml
    if args.mask:
        try:
            labels = mask_from_image(read_image(args.mask)[0], case.ct)
        except LungGANError as error:  # missing, not an image, or of another grid: the message says what to do
            print(f"outline.py: {args.mask}: {error}", file=sys.stderr)
            sys.exit(2)
    else:
        labels = segment(case.ct, SegmentOptions(method=args.method, device="cpu"))
    gtv = case.left_out
    ref = (case.ref > 0) & ~gtv
    lungs = (labels > 0) & ~gtv

    def gtv_out(mask: np.ndarray) -> float:
        return round(dice(mask & ~gtv, ref), 4)

    row = {"case": LUNG1, "mask": args.mask or f"lunggan segment --method {args.method}", "dice_gtv_out": gtv_out(lungs),
           "missed": breakdown(ref & ~lungs, hu, in_plane_distance(lungs), voxel_ml),
           "spill": breakdown(lungs & ~ref, hu, in_plane_distance(ref), voxel_ml),
           "moved": {name: gtv_out(mask) for name, mask in moved_outlines(labels, hu).items()}}
    print(json.dumps(row, indent=1))
    path = Path(args.json)
    rows = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["mask"] != row["mask"]] + [row]
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1) + "\n"))


if __name__ == "__main__":
    main()
