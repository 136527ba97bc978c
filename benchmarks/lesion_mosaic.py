"""Before/after pictures of the lesions: what the old pipeline cut out, what the new one keeps.

For each shared case with radiologists' marks, the slices that hold the
largest lesion, cropped around it: the lungs in green (right) and blue
(left), lesion voxels left *outside* the mask in red. The top row is the
"before" pipeline (``--before``, by default the baseline generator without the
lesion envelope), the bottom row the "after" one (``--after``, the default model
with the envelope).

Usage:
    python benchmarks/lesion_mosaic.py --before-model OLD.safetensors [--after-model NEW.safetensors] -o docs/images/lesions-before-after.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.io import load_ct, mask_from_image  # noqa: E402
from LungGANLib.evaluate.lesions import load_lesions  # noqa: E402
from LungGANLib.evaluate.references import case_by_name, data_dir, reference_path  # noqa: E402
from LungGANLib.evaluate.visualize import overlay_slice, save_png  # noqa: E402

CASES = ("lidc-idri-0001", "lidc-idri-0002", "lung-pet-ct-dx-a0001-series2")


def tiles(case_name: str, options: list[SegmentOptions], per_case: int, half: int) -> list[list[np.ndarray]]:
    """One row of crops per pipeline: the largest lesion's slices, missed lesion voxels in red."""
    case = case_by_name(case_name)
    ct = load_ct(data_dir() / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    marks = data_dir() / (case.lidc_reads or case.tumour_boxes)
    lesions = load_lesions(marks, ct, ref, data_dir() / case.boxes_dicom if case.boxes_dicom else None)
    lesion = max(lesions, key=lambda l: l.voxels)
    marked = np.zeros(ct.array.shape, dtype=bool)
    lesion.paint(marked)
    zs = np.flatnonzero(marked.any(axis=(1, 2)))
    zs = zs[np.linspace(0, len(zs) - 1, min(per_case, len(zs))).round().astype(int)]
    ys, xs = np.nonzero(marked.any(axis=0))
    cy, cx = int(ys.mean()), int(xs.mean())
    rows = slice(max(cy - half, 0), cy + half)
    cols = slice(max(cx - half, 0), cx + half)
    out = []
    for option in options:
        labels = segment(ct, option)
        shown = np.where(marked & (labels == 0), 3, labels).astype(np.uint8)
        out.append([overlay_slice(ct.array[z], shown[z])[rows, cols] for z in zs])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before-model", required=True, help="the generator before (e.g. the previous default)")
    parser.add_argument("--after-model", default=None, help="the generator after (default: the shipped default)")
    parser.add_argument("--per-case", type=int, default=4)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    before = SegmentOptions(model=args.before_model, device="cpu", envelope=False, drop_domes=False, trim_rim=False,
                            grow_outline=False, grow_bases=False, guard_rail=False, remove_airways=False)
    after = SegmentOptions(model=args.after_model, device="cpu", envelope=True)
    half = 70
    rows: list[list[np.ndarray]] = [[], []]
    for name in CASES:
        for row, crops in zip(rows, tiles(name, [before, after], args.per_case, half)):
            size = 2 * half
            padded = [np.pad(c, ((0, size - c.shape[0]), (0, size - c.shape[1]), (0, 0))) for c in crops]
            row.extend(padded + [np.full((size, 6, 3), 255, np.uint8)])
    picture = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    picture = np.kron(picture, np.ones((2, 2, 1), dtype=np.uint8))
    save_png(picture, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
