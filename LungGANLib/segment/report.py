"""The lung report: volume and density figures of each lung, and the report file.

Every figure is computed from a label mask (1 right lung, 2 left lung, or 1 for
both with ``--single-label``) and the CT in Hounsfield units on the same voxels:

- ``*_ml``: volume, voxels x voxel volume.
- ``*_mean_hu``: mean density of the lung's voxels.
- ``*_laa950_percent`` / ``*_laa910_percent``: low-attenuation area, the share
  of the lung's voxels below -950 HU (the usual emphysema index on inspiratory
  CT) and below -910 HU (used on thicker or noisier reconstructions).
- ``*_perc15_hu``: the 15th percentile of the lung's HU (PD15, lower means more
  emphysema; numpy's linear interpolation between voxel values).

Prefixes are ``right_lung``, ``left_lung`` and ``total_lung`` (both together).
Two more columns come from the never-lung checks (:mod:`LungGANLib.segment.never_lung`) on
the method's mask: ``never_lung_ml``, its soft tissue outside the rib cage, below the
diaphragm or in the posterior mediastinum, and ``never_lung_where``, each of these in words.
The guard rail removed it from the written mask unless ``--no-guard-rail`` was given.
With ``--review``, ``review_flagged_slices`` counts the slices the review flags
(:mod:`LungGANLib.segment.review`); empty without it.
A region without voxels (no lungs found, or right/left with ``--single-label``)
has no figures: empty in CSV, null in JSON.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..config import RUNS_OFF_MM2
from ..errors import InputError, OutputError
from ..io.output import atomic_write, check_output_path
from .morphology import bounding_box, count_values, labels_in, percentile_of_counts

logger = logging.getLogger(__name__)

#: Low-attenuation thresholds (HU) and the percentile reported.
LAA_THRESHOLDS_HU = (-950, -910)
PERCENTILE = 15

#: Report regions: name and the label values they hold (the total is both lungs).
REGIONS = (("right_lung", (1,)), ("left_lung", (2,)), ("total_lung", (1, 2)))
#: Figures per region, in column order.
FIGURES = ("ml", "mean_hu", *(f"laa{-t}_percent" for t in LAA_THRESHOLDS_HU), f"perc{PERCENTILE}_hu")

#: Report columns before the figures.
RUN_COLUMNS = ("input", "series", "output", "status", "message", "seconds", "method", "model")
#: Report columns after the figures: the never-lung checks' findings.
CHECK_COLUMNS = ("never_lung_ml", "never_lung_where", "review_flagged_slices")
COLUMNS = RUN_COLUMNS + tuple(f"{region}_{figure}" for region, _ in REGIONS for figure in FIGURES) + CHECK_COLUMNS

REPORT_SUFFIXES = (".csv", ".json")


def percentile(values: np.ndarray, q: float) -> float:
    """The q-th percentile with numpy's linear interpolation, exactly; for integer HU without sorting a copy.

    Integer values (CT as scanners store it) are counted, value by value, in chunks, so a
    1200-slice lung costs kilobytes here, not the 8 bytes a voxel that sorting would.
    """
    if not np.issubdtype(values.dtype, np.integer):
        return float(np.percentile(values, q))
    flat = values.reshape(-1)
    low = int(flat.min())
    return percentile_of_counts(count_values(flat, int(flat.max()) - low + 1, offset=low), q, offset=low)


def region_figures(hu: np.ndarray, voxel_ml: float) -> dict[str, float | None]:
    """Volume and density figures of one region, from the HU values of its voxels (no float copy of them)."""
    if hu.size == 0:
        return {figure: (0.0 if figure == "ml" else None) for figure in FIGURES}
    figures: dict[str, float | None] = {"ml": float(hu.size * voxel_ml), "mean_hu": float(hu.mean(dtype=np.float64))}
    for threshold in LAA_THRESHOLDS_HU:
        figures[f"laa{-threshold}_percent"] = float(100.0 * np.count_nonzero(hu < threshold) / hu.size)
    figures[f"perc{PERCENTILE}_hu"] = percentile(hu, PERCENTILE)
    return figures


def lung_figures(hu: np.ndarray, labels: np.ndarray, voxel_ml: float, single_label: bool = False) -> dict[str, float | None]:
    """Every region's figures, as report columns (``right_lung_ml``, ...).

    Args:
        hu: the CT in HU, same shape as ``labels``.
        labels: 1 right lung, 2 left lung (or 1 for both with ``single_label``).
        voxel_ml: volume of one voxel in mL.
        single_label: the mask does not tell right from left; only the total is reported.
    """
    if hu.shape != labels.shape:
        raise ValueError(f"CT shape {hu.shape} differs from the mask's {labels.shape}")
    if labels.any():  # the lungs' box: the same figures, without masks of the whole scan
        box = bounding_box(labels)
        hu, labels = hu[box], labels[box]
    figures: dict[str, float | None] = {}
    for region, values in REGIONS:
        if single_label and region != "total_lung":
            region_values = {figure: None for figure in FIGURES}
        else:
            region_values = region_figures(hu[labels_in(labels, values)], voxel_ml)
        figures.update({f"{region}_{figure}": value for figure, value in region_values.items()})
    return figures


def check_report_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check a report path before any work: a known ending, an existing folder, no file to replace unasked."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(f"report {path}: use a file name ending in .csv or .json")
    if path.is_dir():
        raise InputError(f"report {path} is a folder: give a file name ending in .csv or .json")
    return check_output_path(path, overwrite, REPORT_SUFFIXES, what="report")


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def report_text(rows: list[dict], suffix: str) -> str:
    """The report as CSV (one row per input, :data:`COLUMNS`) or JSON (a list of objects)."""
    if suffix.lower() == ".json":
        return json.dumps([{column: row.get(column) for column in COLUMNS} for row in rows], indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def write_report(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write the report atomically (rewritten whole after each input, so an interrupted batch keeps its rows).

    The path was checked before the work (:func:`check_report_path`); each rewrite replaces the last one.
    """
    path = Path(path)
    text = report_text(rows, path.suffix)

    def verify(name: str) -> None:
        if Path(name).read_text(encoding="utf-8") != text:
            raise OutputError("the file reads back incomplete")

    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), verify=verify)


#: Plausible ranges: one lung's volume (L) and a voxel side (mm). Outside them the result gets a warning.
LUNG_LITRES = (0.2, 10.0)
SPACING_MM = (0.2, 10.0)


def _where_it_runs_off(lung_on_ends: tuple[int, int], pixel_mm2: float) -> str | None:
    """Which end of the scan a lung runs off, from its pixels on the lowest and the highest slice; None for neither."""
    ends = [name for name, pixels in zip(("lowest", "highest"), lung_on_ends) if pixels * pixel_mm2 >= RUNS_OFF_MM2]
    return " and ".join(ends) or None


def warn_implausible(labels: np.ndarray, volume) -> None:
    """Warn, naming the figure, when a lung's volume or the voxel spacing is outside what a chest CT has."""
    low, high = SPACING_MM
    for axis, mm in zip("xyz", volume.spacing):
        if not low <= mm <= high:
            logger.warning("%s: voxel spacing %s = %.3g mm is outside %g-%g mm; is the header's spacing right?",
                           volume.source or "the volume", axis, mm, low, high)
    if not labels.any():
        return  # said separately
    low, high = LUNG_LITRES
    counts = count_values(labels, 3)  # in chunks: no mask of the whole scan per lung
    pixel_mm2 = volume.spacing[0] * volume.spacing[1]
    for value, name in ((1, "right lung"), (2, "left lung")):
        litres = float(counts[value]) * volume.voxel_volume_ml / 1000
        ends = _where_it_runs_off((int((labels[0] == value).sum()), int((labels[-1] == value).sum())), pixel_mm2)
        if litres and litres < low and ends:  # a scan that holds part of the lungs (a base, an apex)
            logger.warning("%s: the %s measures %.2f L, less than a whole lung: it goes on beyond the scan's %s "
                           "slice, so its figures are of the part the scan holds", volume.source or "the volume", name,
                           litres, ends)
        elif litres and not low <= litres <= high:
            logger.warning("%s: the %s measures %.2f L, outside %g-%g L; check the mask (and the CT's spacing)",
                           volume.source or "the volume", name, litres, low, high)
