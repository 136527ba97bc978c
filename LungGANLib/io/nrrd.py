"""An NRRD header checked before ITK reads it: ITK takes a voxel size of NaN, infinity or 0 in
``space directions`` (or ``spacings``) for 1 mm, so every volume measured on the scan would be wrong.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import InputError

#: An NRRD header is text up to its first blank line; no real one is longer than this.
HEADER_BYTES = 1 << 16


def header_fields(path: Path) -> dict[str, str]:
    """The fields of an NRRD header (``key: value`` lines before the first blank line)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    fields = {}
    for raw in head.split(b"\n")[1:]:
        line = raw.decode("latin-1").rstrip("\r")
        if not line:
            break
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip().lower()] = value.lstrip("=").strip()
    return fields


def _bad_axis(fields: dict[str, str]) -> str | None:
    """The first spatial axis whose voxel size is NaN, infinite or 0, in the header's own words; None if all are usable."""
    directions = fields.get("space directions")
    if directions is not None:
        for axis, vector in enumerate(directions.split()):
            if vector.lower() == "none":
                continue
            try:
                numbers = [float(v) for v in vector.strip("()").split(",")]
            except ValueError:
                return f"space directions {directions}"
            if not all(math.isfinite(v) for v in numbers) or not any(numbers):
                return f"space directions axis {axis}: {vector}"
        return None
    spacings = fields.get("spacings", "").split()
    for axis, value in enumerate(spacings):
        try:
            number = float(value)
        except ValueError:
            return f"spacings {fields['spacings']}"
        if len(spacings) > 3 and math.isnan(number):
            continue  # a non-spatial axis (a vector's components)
        if not math.isfinite(number) or number == 0:
            return f"spacings axis {axis}: {value}"
    return None


def check_nrrd_geometry(path: Path) -> None:
    """Refuse an ``.nrrd``/``.nhdr`` whose header gives a spatial voxel size of NaN, infinity or 0.

    Raises:
        InputError: naming the field, and what to do.
    """
    if path.suffix.lower() not in (".nrrd", ".nhdr"):
        return
    try:
        bad = _bad_axis(header_fields(path))
    except (OSError, ValueError):
        return  # ITK's reading says what is wrong
    if bad:
        raise InputError(f"{path} has no usable voxel size in its header ({bad}; it would be read as 1 mm and every "
                         "volume would be wrong): export the CT again with its spacing")
