"""Many scans in one call: one mask per input, the model loaded once, a report row per input.

:func:`plan` turns the command line's inputs and output into jobs (one per
CT, or per DICOM series with ``all_series``), checking before any work that
their outputs do not collide and do not replace an input. :func:`run` segments
them in turn; a bad input becomes a "failed" row with its one-line reason and
the others go on. The report, when asked for, is rewritten after each input,
so an interrupted batch keeps the rows of the scans it finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, LungGANError
from ..io.output import MASK_SUFFIXES
from ..io.volumes import dicom_series, image_stem, suffix_of

#: ``--format`` choices: the ending of each mask written into an output folder.
FORMATS = tuple(suffix.lstrip(".") for suffix in (".nii.gz", ".nrrd", ".mha", ".nii", ".dcm"))
#: Appended to the input's name, so that a mask never takes its CT's name.
MASK_NAME_SUFFIX = "_lungs"


@dataclass(frozen=True)
class Job:
    """One scan to segment: the input, the DICOM series in it (or None), and the mask to write."""

    input: Path
    series: str | None
    output: Path


def is_folder_output(output: str, inputs: list[str], all_series: bool) -> bool:
    """Whether ``-o`` names a folder: it is one, ends with a slash, has no ending at all, or several scans need one."""
    path = Path(output)
    return path.is_dir() or output.endswith(("/", os.sep)) or not path.suffix or len(inputs) > 1 or all_series


def plan(inputs: list[str], output: str, fmt: str | None = None, all_series: bool = False,
         series: str | None = None) -> list[Job]:
    """The jobs of one ``lunggan segment`` call.

    Args:
        inputs: CT files and DICOM folders.
        output: a mask file (one input), or a folder for one mask per input.
        fmt: the masks' format in a folder (default ``nii.gz``); with a file, its ending decides.
        all_series: every DICOM series of a folder input is a scan of its own.
        series: the one SeriesInstanceUID to read from folder inputs.

    Raises:
        InputError: the output cannot hold the masks (missing parent, a file
            where a folder is needed, colliding names, a mask over its input).
    """
    if all_series and series:
        raise InputError("--series picks one series and --all-series takes them all: give one of them")
    out = Path(output)
    if not is_folder_output(output, inputs, all_series):
        if fmt is not None and suffix_of(out) != f".{fmt}":
            raise InputError(f"output {out} does not end in .{fmt}: drop --format, or give a folder as -o")
        return [Job(Path(inputs[0]), series, out)]
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, and a folder is needed here (several scans, --all-series, or no "
                         "file ending): give a folder as -o, or one scan and a mask name such as lungs.nii.gz")
    if not out.exists() and not out.parent.is_dir():
        raise InputError(f"output folder {out.parent} does not exist: create it first")
    suffix = f".{fmt or 'nii.gz'}"
    if suffix not in MASK_SUFFIXES:
        raise InputError(f"unknown --format {fmt}: use one of {', '.join(FORMATS)}")
    jobs = []
    for name in inputs:
        path = Path(name)
        found = dicom_series(path) if all_series and path.is_dir() else {}
        if len(found) > 1:
            jobs += [Job(path, uid, out / f"{image_stem(path)}-{uid}{MASK_NAME_SUFFIX}{suffix}") for uid in sorted(found)]
        else:
            jobs.append(Job(path, series, out / f"{image_stem(path)}{MASK_NAME_SUFFIX}{suffix}"))
    _check_names(jobs)
    return jobs


def _check_names(jobs: list[Job]) -> None:
    """Refuse two scans that would write one mask, and a mask that would replace an input."""
    seen: dict[Path, Job] = {}
    inputs = {job.input.resolve() for job in jobs}
    for job in jobs:
        target = job.output.resolve()
        if target in seen:
            raise InputError(f"{seen[target].input} and {job.input} would both write {job.output}: "
                             "segment them into different folders")
        if target in inputs:
            raise InputError(f"the mask of {job.input} would replace the input {job.output}: give another output folder")
        seen[target] = job


Say = Callable[[dict], None]


def run(jobs: list[Job], segment_one: Callable[[Job], object], report: Path | None = None,
        say: Say | None = None, describe: dict | None = None) -> list[dict]:
    """Segment each job in turn; returns one report row per job.

    Args:
        jobs: from :func:`plan`.
        segment_one: segments one job and returns its :class:`~LungGANLib.segment.inference.SegmentResult`;
            a :class:`LungGANError` it raises fails this job only.
        report: CSV or JSON file rewritten after each job (checked beforehand).
        say: called with each finished row.
        describe: columns every row carries (``method``, ``model``).
    """
    from .report import write_report

    rows: list[dict] = []
    for job in jobs:
        start = time.perf_counter()
        row = {"input": str(job.input), "series": job.series or "", "output": str(job.output), **(describe or {})}
        try:
            result = segment_one(job)
        except LungGANError as exc:
            row.update(status="failed", message=str(exc), output="")
        else:
            row.update(status="no lungs" if result.empty else "ok", message="", **result.figures)
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        if report is not None:
            write_report(rows, report)
        if say:
            say(row)
    return rows


def make_output_folder(jobs: list[Job]) -> None:
    """Create the jobs' output folder when it does not exist yet (its parent was checked by :func:`plan`)."""
    for folder in {job.output.parent for job in jobs}:
        if not folder.exists():
            try:
                folder.mkdir()
            except OSError as exc:
                raise InputError(f"cannot create the output folder {folder}: {exc.strerror}") from None
