"""The review's files: written by ``lunggan segment --review`` (JSON or CSV, by the name's ending) and read
back by ``lunggan overlay --review`` (:mod:`LungGANLib.segment.review` makes the review).

Slice indices in a file count along the written mask's third voxel axis, 0-based (SimpleITK's
``GetArrayFromImage`` first axis), when that axis runs foot to head or head to foot; for a file stored in
another orientation they count axial slices from the feet, and say so (:func:`in_file_order`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .review import Review


def canonical_index(index: int, orientation: str, slices: int) -> int:
    """A review's slice index (:func:`in_file_order`) back on the canonical grid (z up)."""
    return slices - 1 - index if len(orientation) == 3 and orientation[2].upper() == "I" else index


def in_file_order(review: Review, orientation: str, slices: int) -> Review:
    """The review with its indices along the written file's third voxel axis (``orientation``: the input's
    orientation code, e.g. ``LPS`` or ``RAI``, the direction each voxel axis runs towards)."""
    third = orientation[2].upper() if len(orientation) == 3 else ""
    if third == "S":
        review.axis = "the mask's third voxel axis (0 = the first slice in the file, the lowest)"
        return review
    if third == "I":
        for s in review.slices:
            s["index"] = canonical_index(s["index"], orientation, slices)
        review.axis = "the mask's third voxel axis (0 = the first slice in the file, the highest)"
        return review
    review.axis = "axial slices counted from the feet (the file's slices are not axial)"
    return review


def review_json(review: Review) -> str:
    """The review as JSON, one line per slice, most suspicious first."""
    head = {k: v for k, v in review.as_dict().items() if k != "slices"}
    lines = ",\n".join("  " + json.dumps(s) for s in review.slices)
    return json.dumps(head, indent=1)[:-2] + ',\n "slices": [\n' + lines + "\n ]\n}\n"


def review_csv(review: Review) -> str:
    """The review as CSV: index, score and the flags' texts, one row per slice, most suspicious first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "score", "flags"])
    for s in review.slices:
        writer.writerow([s["index"], s["score"], "; ".join(f["text"] for f in s["flags"])])
    return out.getvalue()


def review_suffix(path) -> str:
    """``.json`` or ``.csv``: the review file's format, from its name."""
    from ..errors import InputError

    suffix = str(path).lower().rsplit(".", 1)[-1] if "." in str(path) else ""
    if suffix not in ("json", "csv"):
        raise InputError(f"review file {path} must end in .json or .csv")
    return suffix


def write_review(review: Review, path, overwrite: bool = False):
    """Write the review as JSON or CSV (by the name's ending), atomically and read back."""
    from ..io.output import atomic_write, check_output_path, verify_text

    path = check_output_path(path, overwrite, (".json", ".csv"), what="review")
    text = review_csv(review) if review_suffix(path) == "csv" else review_json(review)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite,
                        verify=verify_text(text))


def read_review(path, volume, count: int) -> tuple[list[int], dict[int, list], dict[int, int]]:
    """The ``count`` most suspicious flagged slices of a review file written for ``volume``'s mask, on the
    canonical grid: the slices (most suspicious first), their flags' boxes, and the file's index of each.

    Raises:
        InputError: not a review file, or one written for a CT with another number of slices.
    """
    from ..errors import InputError

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        slices = [s for s in data["slices"] if s["flags"]]
        indices = [int(s["index"]) for s in data["slices"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a review written by lunggan segment --review"
        raise InputError(f"could not read {path} as a review ({reason}): give the .json file of segment --review") from None
    depth = volume.array.shape[0]
    if indices and (min(indices) < 0 or max(indices) >= depth):
        raise InputError(f"{path} names slice {max(indices)}, and the CT has {depth} slices: give the review of this CT's mask")
    chosen = slices[:count]
    canonical = [canonical_index(int(s["index"]), volume.orientation, depth) for s in chosen]
    boxes = {z: [f["box"] for f in s["flags"]] for z, s in zip(canonical, chosen)}
    numbers = {z: int(s["index"]) for z, s in zip(canonical, chosen)}
    return canonical, boxes, numbers
