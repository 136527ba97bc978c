"""Benchmark: the surface distances behind HD95 and the Hausdorff distance (``evaluate.metrics.surface_distances``).

``metrics.surface_distances`` finds each surface voxel's nearest voxel of the other surface with a k-d tree of
voxel centres in mm. The yardstick is the distance transform of the union's box that it replaced (the exact
Euclidean distance too): both are timed on the same real masks, and their distances are checked to be equal.
Masks: a shared case's reference lungs against the classical method's mask of the same CT (the folds' kind of
pair, close surfaces), and against the reference dilated by two voxels with 1 % of its voxels dropped at random
(a noisy surface, many more surface voxels).

Usage:
    python benchmarks/surface_distances.py [--cases lidc-idri-0001 elastix-00] [--repeat 2]
Writes a Markdown table on stdout (copy it to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds  # noqa: E402

from LungGANLib.evaluate import metrics  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.segment.morphology import bounding_box  # noqa: E402


def by_distance_transform(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """The yardstick: both surfaces' distance transforms over the union's box, read at the other's surface."""
    sampling = tuple(float(s) for s in reversed(tuple(spacing)))
    box = bounding_box(pred | ref, margin=1)
    sp, sr = metrics._surface(pred[box]), metrics._surface(ref[box])
    return (ndimage.distance_transform_edt(~sr, sampling=sampling)[sp],
            ndimage.distance_transform_edt(~sp, sampling=sampling)[sr])


def best_of(repeat: int, run) -> tuple[float, tuple]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["lidc-idri-0001", "elastix-00"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest is reported")
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"`python benchmarks/surface_distances.py --cases {' '.join(args.cases)} --repeat {args.repeat}`\n")
    print("| case | mask | surface voxels (mask / reference) | distance transform s | k-d tree s | equal |")
    print("|---|---|---:|---:|---:|---|")
    for name in args.cases:
        case = folds.load_case(name)
        ref = case.ref > 0
        noisy = ndimage.binary_dilation(ref, iterations=2) & ~(np.random.default_rng(0).random(ref.shape) < 0.01)
        masks = {"classical": segment(case.ct, SegmentOptions(method="classical")) > 0, "noisy": noisy}
        for label, mask in masks.items():
            slow, (a, b) = best_of(args.repeat, lambda: by_distance_transform(mask, ref, case.ct.spacing))
            fast, (c, d) = best_of(args.repeat, lambda: metrics.surface_distances(mask, ref, case.ct.spacing))
            equal = bool(np.array_equal(a, c) and np.array_equal(b, d))
            print(f"| {name} | {label} | {a.size} / {b.size} | {slow:.2f} | {fast:.2f} | {'yes' if equal else 'NO'} |",
                  flush=True)


if __name__ == "__main__":
    main()
