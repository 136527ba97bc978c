"""A field of view that cuts a scan's lungs, as the tests make it: the box 5 mm inside the reference lungs."""

from __future__ import annotations

import numpy as np

#: How far inside the reference lungs' widest extent (mm) the field of view runs.
INSIDE_MM = 5.0


def box_inside_the_lungs(ref: np.ndarray, pixel_mm: float, inside_mm: float = INSIDE_MM) -> tuple[slice, slice]:
    """Rows and columns of the box ``inside_mm`` inside the lungs of ``ref`` ((z, y, x), lung > 0) on every side,
    for square pixels of ``pixel_mm``: a square field of view through the lungs."""
    _, ys, xs = np.nonzero(ref)
    m = int(np.ceil(inside_mm / pixel_mm))
    return slice(int(ys.min()) + m, int(ys.max()) - m + 1), slice(int(xs.min()) + m, int(xs.max()) - m + 1)
