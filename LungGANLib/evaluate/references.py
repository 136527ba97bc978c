"""Reference lung masks for the 3D series in ``../shared/data``, made and checked.

None of the shared volumes comes with a lung mask. As the LGAN authors did,
the reference masks are bootstrapped with the classical segmentation and then
corrected. The corrections are data, listed per case below, so one command
(``lunggan references``) regenerates every mask, its overlay mosaic and a JSON
report; ``docs/reference-masks.md`` records what was seen and corrected.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..config import DEFAULT_DATA_DIR, LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL, ROOT, data_dir  # noqa: F401  (data_dir: part of this module's interface)
from ..io.annotations import (
    box_slices,
    outline_mask,
    read_lidc_outlines,
    read_tumour_boxes,
)
from ..io.output import atomic_write, write_image
from ..io.volumes import CTVolume, load_ct, mask_to_image
from ..segment.classical import segment_classical
from .lesions import tumour_tissue
from .visualize import mosaic, save_png

logger = logging.getLogger(__name__)

REPO_ROOT = ROOT
DEFAULT_REFERENCE_DIR = REPO_ROOT / "Testing" / "Data" / "ReferenceMasks"


@dataclass(frozen=True)
class ReferenceCase:
    """One shared 3D series and how its reference mask is made.

    Attributes:
        name: file stem of the mask, e.g. ``lidc-idri-0001``.
        ct: path of the CT, relative to the data folder.
        lidc_reads: LIDC XML read file whose nodule outlines are added to the lungs.
        tumour_boxes: folder of tumour box XML files (Lung-PET-CT-Dx), placed
            through ``boxes_dicom``; the tumour inside each box is added to its lung.
        boxes_dicom: the DICOM series folder whose SOPInstanceUIDs place the boxes.
        clear_slices: (first, last) canonical slice ranges (inclusive) whose
            mask is erased after checking the mosaics: slices where the
            classical method took something that is not lung.
        note: what was seen on the mosaics and corrected.
    """

    name: str
    ct: str
    lidc_reads: str | None = None
    tumour_boxes: str | None = None
    boxes_dicom: str | None = None
    clear_slices: tuple[tuple[int, int], ...] = ()
    note: str = ""
    patient: str = field(default="")


CASES: tuple[ReferenceCase, ...] = (
    ReferenceCase(
        "lidc-idri-0001",
        "ct/lidc-idri-0001.nii.gz",
        lidc_reads="annotations/lidc-idri-0001-reads.xml",
        patient="LIDC-IDRI-0001",
    ),
    ReferenceCase(
        "lidc-idri-0002",
        "ct/lidc-idri-0002.nii.gz",
        lidc_reads="annotations/lidc-idri-0002-reads.xml",
        patient="LIDC-IDRI-0002",
    ),
    ReferenceCase("elastix-00", "ct/elastix-00.nii.gz", patient="ITKElastix-00"),
    # Series 3 is another reconstruction of series 2 on the identical grid (same
    # origin, spacing and size), so series 2's DICOM files place the boxes on both.
    ReferenceCase(
        "lung-pet-ct-dx-a0001-series3",
        "ct/lung-pet-ct-dx-a0001-series3.nii.gz",
        tumour_boxes="annotations/lung-pet-ct-dx-a0001-boxes",
        boxes_dicom="dicom/lung-pet-ct-dx-a0001-series2",
        patient="Lung-PET-CT-Dx-A0001",
    ),
    ReferenceCase(
        "lung-pet-ct-dx-a0001-series2",
        "dicom/lung-pet-ct-dx-a0001-series2",
        tumour_boxes="annotations/lung-pet-ct-dx-a0001-boxes",
        boxes_dicom="dicom/lung-pet-ct-dx-a0001-series2",
        patient="Lung-PET-CT-Dx-A0001",
    ),
)


def case_by_name(name: str) -> ReferenceCase:
    """Look a reference case up by name."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no reference case {name!r}; known: {', '.join(c.name for c in CASES)}")


def reference_path(case: ReferenceCase, reference_dir: str | os.PathLike | None = None) -> Path:
    """Where the reference mask of a case is stored."""
    return Path(reference_dir or DEFAULT_REFERENCE_DIR) / f"{case.name}.nii.gz"


def add_nodules(labels: np.ndarray, nodules: np.ndarray) -> np.ndarray:
    """Add nodule voxels to the lung on their side (the nearest lung label in the slice).

    Voxels already labelled keep their label; a nodule voxel takes the label of
    the nearest lung voxel in its slice, so a juxtapleural nodule joins its lung.
    """
    out = labels.copy()
    for z in np.flatnonzero(nodules.any(axis=(1, 2))):
        lung = labels[z] > 0
        todo = nodules[z] & ~lung
        if not todo.any():
            continue
        if not lung.any():
            mid = labels.shape[2] / 2.0
            xs = np.nonzero(todo)[1]
            out[z][todo] = RIGHT_LUNG_LABEL if xs.mean() < mid else LEFT_LUNG_LABEL
            continue
        _, (iy, ix) = ndimage.distance_transform_edt(~lung, return_indices=True)
        out[z][todo] = labels[z][iy[todo], ix[todo]]
    return out


def add_tumours(labels: np.ndarray, hu: np.ndarray, boxes: list[tuple[int, slice, slice]]) -> np.ndarray:
    """Add the tumour tissue inside each box (see :func:`LungGANLib.evaluate.lesions.tumour_tissue`) to its lung.

    A tumour abutting the mediastinum or the chest wall is cut out by a density
    threshold; inside the radiologist's box, the soft tissue enclosed by the
    convex hull of the lung that fills most of the box is lung with a tumour in it.
    """
    out = labels.copy()
    for z, rows, cols in boxes:
        tissue, side = tumour_tissue(labels, hu, z, rows, cols)
        if side:
            out[z][tissue & (out[z] == 0)] = side
    return out


def make_reference(case: ReferenceCase, data: Path | None = None) -> tuple[CTVolume, np.ndarray, dict, np.ndarray]:
    """Segment one case classically and apply its corrections.

    Returns:
        The volume, the corrected (z, y, x) labels, a report of what changed,
        and the voxels the corrections added (nodule voxels the classical mask missed).
    """
    data = data or data_dir()
    volume = load_ct(data / case.ct)
    # The masks were built and checked without the lesion envelope, which came later: the
    # annotated lesions are added below instead.
    labels = segment_classical(volume.array, volume.spacing, envelope=False)
    report: dict = {"name": case.name, "ct": case.ct, "shape_zyx": list(volume.array.shape)}
    added = np.zeros(labels.shape, dtype=bool)
    if case.lidc_reads:
        nodules = outline_mask(read_lidc_outlines(data / case.lidc_reads), volume)
        nodule_voxels = int(nodules.sum())
        inside = int((nodules & (labels > 0)).sum())
        report["nodule_voxels"] = nodule_voxels
        report["nodule_fraction_inside_classical"] = round(inside / nodule_voxels, 4) if nodule_voxels else None
        report["lesion_slices"] = np.flatnonzero(nodules.any(axis=(1, 2))).tolist()
        added = nodules & (labels == 0)
        labels = add_nodules(labels, nodules)
        report["nodule_voxels_added"] = nodule_voxels - inside
    if case.tumour_boxes:
        boxes = box_slices(read_tumour_boxes(data / case.tumour_boxes, data / case.boxes_dicom), volume)
        before = labels
        labels = add_tumours(labels, volume.array, boxes)
        added |= (labels > 0) & (before == 0)
        report["tumour_boxes"] = len(boxes)
        report["tumour_voxels_added"] = int(((labels > 0) & (before == 0)).sum())
        report["lesion_slices"] = sorted({z for z, _, _ in boxes})
    for first, last in case.clear_slices:
        report.setdefault("cleared_voxels", 0)
        report["cleared_voxels"] += int((labels[first : last + 1] > 0).sum())
        labels[first : last + 1] = 0
    voxel_ml = volume.voxel_volume_ml
    report["right_lung_ml"] = round(float((labels == RIGHT_LUNG_LABEL).sum() * voxel_ml), 1)
    report["left_lung_ml"] = round(float((labels == LEFT_LUNG_LABEL).sum() * voxel_ml), 1)
    return volume, labels, report, added


def _spread(values: list[int], count: int) -> list[int]:
    """At most ``count`` evenly spread items of a sorted list."""
    if len(values) <= count:
        return list(values)
    return [values[int(i)] for i in np.linspace(0, len(values) - 1, count).round()]


def mosaic_slices(labels: np.ndarray, count: int = 40) -> list[int]:
    """Evenly spread slices through the lungs (plus one above and below) for a check mosaic."""
    zs = np.flatnonzero(labels.any(axis=(1, 2)))
    if zs.size == 0:
        return list(np.linspace(0, labels.shape[0] - 1, min(count, labels.shape[0])).round().astype(int))
    lo, hi = max(int(zs[0]) - 1, 0), min(int(zs[-1]) + 1, labels.shape[0] - 1)
    return sorted(set(np.linspace(lo, hi, min(count, hi - lo + 1)).round().astype(int).tolist()))


def build_references(
    output_dir: str | os.PathLike | None = None,
    mosaic_dir: str | os.PathLike | None = None,
    names: list[str] | None = None,
    data: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Regenerate reference masks (and their mosaics and report) for the shared series.

    Args:
        output_dir: where masks go (default ``Testing/Data/ReferenceMasks``).
        mosaic_dir: where overlay mosaics go (default: the output folder).
        names: case names to build (default: all).
        data: the shared data folder.
        progress: called with each case's name before it is built.

    Returns:
        One report per case (also written as ``references.json``).
    """
    output_dir = Path(output_dir or DEFAULT_REFERENCE_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    mosaic_dir = Path(mosaic_dir or output_dir)
    mosaic_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for case in CASES:
        if names and case.name not in names:
            continue
        if progress:
            progress(case.name)
        volume, labels, report, added = make_reference(case, data)
        write_image(mask_to_image(labels, volume), output_dir / f"{case.name}.nii.gz", overwrite=True)
        save_png(mosaic(volume.array, labels, mosaic_slices(labels), columns=8, tile=160), mosaic_dir / f"{case.name}.png")
        if report.get("lesion_slices"):
            # Nodule slices at full size, the voxels the corrections added in red.
            shown = np.where(added, 3, labels).astype(np.uint8)
            save_png(
                mosaic(volume.array, shown, _spread(report["lesion_slices"], 12), columns=4, tile=320),
                mosaic_dir / f"{case.name}-lesions.png",
            )
        reports.append(report)
    summary = output_dir / "references.json"
    known = {r["name"]: r for r in json.loads(summary.read_text())} if summary.exists() else {}
    known.update({r["name"]: r for r in reports})
    ordered = [known[c.name] for c in CASES if c.name in known]
    atomic_write(summary, lambda tmp: Path(tmp).write_text(json.dumps(ordered, indent=2) + "\n"))
    return reports
