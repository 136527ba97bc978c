"""Lesions as radiologists marked them, and how much of each a lung mask keeps.

The lung we segment holds its nodules and masses, also where they touch the
pleura, the mediastinum or the hilum. This module turns the radiologists'
marks into lesions on the CT's canonical grid and scores a mask against them:

- LIDC-IDRI XML reads: one lesion per reader and nodule, rasterised from every
  inclusion outline minus the exclusion outlines; the nodule is the outline's
  interior (LIDC's readers drew outlines just outside the nodule), and
  nodules under 3 mm are a single point;
- Lung-PET-CT-Dx PASCAL-VOC boxes (one XML file per slice, named by the
  slice's SOPInstanceUID, placed through that DICOM series): one lesion per
  tumour (boxes that touch across slices are one tumour); its voxels are the
  tumour's tissue: -320 to 200 HU inside the box and inside the convex hull of
  the reference lung on that side (the part of the box that is neither
  aerated lung nor the mediastinum or chest wall beside it).

Per lesion: its voxels, the share inside the mask, its largest in-plane
diameter, and whether it is juxtapleural (within ``JUXTAPLEURAL_MM`` of tissue
that is neither lung nor lesion in the reference). For the whole mask: the
*spill*, mask voxels more than ``SPILL_MM`` from the reference lung that are no
lesion, in mL and as a share of the reference lung volume.

Arrays are (z, y, x) on the canonical LPS grid; spacing is (x, y, z) mm.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..io.annotations import (
    box_slices,
    outline_mask,
    read_lidc_outlines,
    read_tumour_boxes,
)
from ..io.volumes import CTVolume
from ..segment.morphology import bounding_box, grow_box

#: A lesion within this distance (mm) of tissue that is neither lung nor lesion is juxtapleural.
JUXTAPLEURAL_MM = 2.0
#: Mask voxels further than this (mm) from the reference lung, and no lesion, are spill.
SPILL_MM = 5.0
#: Tumour tissue inside a box: denser than aerated lung, not bone or contrast (HU).
TUMOUR_HU = (-320.0, 200.0)


@dataclass
class Lesion:
    """One lesion on the canonical grid, stored as its bounding box and the mask inside it.

    Attributes:
        name: e.g. ``reader 2 nodule IL057_127364`` or ``tumour 1``.
        kind: ``nodule`` (LIDC outline) or ``tumour`` (boxes).
        box: (z, y, x) slices of its bounding box.
        mask: boolean mask inside ``box``.
    """

    name: str
    kind: str
    box: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())

    def paint(self, target: np.ndarray, value: bool = True) -> None:
        """Set this lesion's voxels in a full-size array."""
        target[self.box][self.mask] = value


def _crop(mask: np.ndarray) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """A full-size mask as (its bounding box, the mask inside it); None when empty."""
    if not mask.any():
        return None
    box = bounding_box(mask)
    return box, mask[box].copy()


def lesion_union(lesions: list[Lesion], shape: tuple[int, ...]) -> np.ndarray:
    """Every lesion's voxels in one full-size boolean mask."""
    union = np.zeros(shape, dtype=bool)
    for lesion in lesions:
        lesion.paint(union)
    return union


def lidc_lesions(path: str | os.PathLike, volume: CTVolume) -> list[Lesion]:
    """One lesion per reader and nodule of an LIDC XML read file, on ``volume``'s grid.

    Raises:
        InputError: the file is not readable LIDC XML.
    """
    outlines = read_lidc_outlines(path)
    groups: dict[tuple[int, str], list] = {}
    for outline in outlines:
        groups.setdefault((outline.reader, outline.nodule_id), []).append(outline)
    lesions = []
    for (reader, nodule_id), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1])):
        cropped = _crop(outline_mask(group, volume, include_outline=False))
        if cropped is not None:
            lesions.append(Lesion(f"reader {reader + 1} nodule {nodule_id}", "nodule", *cropped))
    return lesions


def tumour_tissue(labels: np.ndarray, hu: np.ndarray, z: int, rows: slice, cols: slice) -> tuple[np.ndarray, int]:
    """The tumour tissue inside one box on slice ``z``, and the lung it belongs to.

    The lung (label) that fills most of the box is the tumour's; its tissue is
    the box's voxels of ``TUMOUR_HU`` inside that lung's convex hull on the slice.

    Returns:
        A boolean slice-sized mask (empty when no lung is in the box) and the label (0 for none).
    """
    from skimage.morphology import convex_hull_image

    out = np.zeros(labels.shape[1:], dtype=bool)
    inside = labels[z, rows, cols]
    counts = np.bincount(inside[inside > 0].ravel(), minlength=3)[1:]
    if not counts.any():
        return out, 0
    side = int(counts.argmax()) + 1
    hull = convex_hull_image(labels[z] == side)
    out[rows, cols] = True
    out &= hull & (hu[z] > TUMOUR_HU[0]) & (hu[z] < TUMOUR_HU[1])
    return out, side


def box_lesions(
    folder: str | os.PathLike, dicom_folder: str | os.PathLike, volume: CTVolume, reference: np.ndarray
) -> list[Lesion]:
    """Tumours from PASCAL-VOC boxes placed through ``dicom_folder``; one lesion per group of touching boxes.

    Raises:
        InputError: no box belongs to a slice of ``dicom_folder``.
    """
    boxes = box_slices(read_tumour_boxes(folder, dicom_folder), volume)
    if not boxes:
        raise InputError(
            f"no tumour box in {folder} belongs to a slice of {dicom_folder}: give the DICOM series the boxes were drawn on"
        )
    drawn = np.zeros(volume.array.shape, dtype=bool)
    tissue = np.zeros(volume.array.shape, dtype=bool)
    for z, rows, cols in boxes:
        drawn[z, rows, cols] = True
        tissue[z] |= tumour_tissue(reference, volume.array, z, rows, cols)[0]
    groups, n = ndimage.label(drawn)
    lesions = []
    for index in range(1, n + 1):
        cropped = _crop(tissue & (groups == index))
        if cropped is not None:
            lesions.append(Lesion(f"tumour {index}", "tumour", *cropped))
    return lesions


def load_lesions(
    path: str | os.PathLike, volume: CTVolume, reference: np.ndarray, boxes_dicom: str | os.PathLike | None = None
) -> list[Lesion]:
    """Lesions from an LIDC XML read file or a folder of PASCAL-VOC box files.

    Args:
        path: ``*.xml`` LIDC reads, or a folder of box XML files.
        volume: the CT the marks belong to.
        reference: its reference labels (for the tumour tissue of boxes).
        boxes_dicom: the DICOM series the boxes were drawn on (default: the CT, when it is a DICOM folder).

    Raises:
        InputError: the file or folder is missing or of an unknown kind.
    """
    path = Path(path)
    if path.is_file():
        return lidc_lesions(path, volume)
    if path.is_dir():
        series = boxes_dicom or (volume.source if Path(volume.source).is_dir() else None)
        if series is None:
            raise InputError(
                f"tumour boxes in {path} are placed by their slices' SOPInstanceUIDs: give the DICOM series "
                "they were drawn on with --boxes-dicom (or the CT as that DICOM folder)"
            )
        return box_lesions(path, series, volume, reference)
    raise InputError(f"lesion marks {path} not found: give an LIDC XML read file or a folder of tumour box XML files")


@dataclass
class LesionScore:
    """How much of one lesion a mask keeps."""

    name: str
    kind: str
    voxels: int
    inside: float
    juxtapleural: bool
    diameter_mm: float
    z_range: tuple[int, int]


def largest_diameter_mm(lesion: Lesion, spacing: tuple[float, float, float]) -> float:
    """The largest in-plane extent (mm) of the lesion over its slices: the longest distance between two of its pixels."""
    best = 0.0
    for plane in lesion.mask:
        ys, xs = np.nonzero(plane)
        if ys.size == 0:
            continue
        points = np.stack([xs * spacing[0], ys * spacing[1]], axis=1)
        if len(points) > 400:  # the farthest pair lies on the convex hull
            from scipy.spatial import ConvexHull, QhullError

            try:
                points = points[ConvexHull(points).vertices]
            except QhullError:
                pass
        diffs = points[:, None, :] - points[None, :, :]
        # Pixel centres; add one pixel so a single pixel measures one pixel wide.
        best = max(best, float(np.sqrt((diffs**2).sum(-1)).max()) + spacing[0])
    return best


def score_lesions(
    mask: np.ndarray, reference: np.ndarray, lesions: list[Lesion], spacing: tuple[float, float, float]
) -> list[LesionScore]:
    """The share of each lesion inside ``mask``, its diameter and whether it is juxtapleural.

    Args:
        mask: predicted lung mask (z, y, x), any value > 0 is lung.
        reference: reference labels on the same grid.
        lesions: from :func:`load_lesions`.
        spacing: voxel size (x, y, z) mm.
    """
    if mask.shape != reference.shape:
        raise InputError(f"mask shape {mask.shape} differs from reference shape {reference.shape}")
    all_lesions = lesion_union(lesions, mask.shape)
    sampling = tuple(float(s) for s in reversed(spacing))
    reach = [int(np.ceil(JUXTAPLEURAL_MM / s)) + 1 for s in sampling]
    scores = []
    for lesion in lesions:
        grown = grow_box(lesion.box, reach, mask.shape)
        other = ~((reference[grown] > 0) | all_lesions[grown])
        near = ndimage.distance_transform_edt(~other, sampling=sampling) if other.any() else None
        here = np.zeros(other.shape, dtype=bool)
        inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(lesion.box, grown))
        here[inner] = lesion.mask
        juxta = bool(near is not None and near[here].min() <= JUXTAPLEURAL_MM)
        inside = float((mask[lesion.box][lesion.mask] > 0).mean()) if lesion.voxels else 0.0
        scores.append(
            LesionScore(
                lesion.name, lesion.kind, lesion.voxels, inside, juxta,
                round(largest_diameter_mm(lesion, spacing), 2), (lesion.box[0].start, lesion.box[0].stop - 1),
            )
        )
    return scores


def spill_ml(
    mask: np.ndarray, reference: np.ndarray, lesions: list[Lesion], spacing: tuple[float, float, float]
) -> tuple[float, float]:
    """Mask volume more than ``SPILL_MM`` from the reference lung that is no lesion.

    Returns:
        (spill in mL, spill as a percentage of the reference lung volume).
    """
    lung, ref = mask > 0, reference > 0
    if not lung.any():
        return 0.0, 0.0
    if not ref.any():
        return float(lung.sum()) * float(np.prod(spacing)) / 1000.0, float("inf")
    sampling = tuple(float(s) for s in reversed(spacing))
    box = bounding_box(lung | ref, margin=[int(np.ceil(SPILL_MM / s)) + 1 for s in sampling])
    distance = ndimage.distance_transform_edt(~ref[box], sampling=sampling)
    far = lung[box] & (distance > SPILL_MM)
    if lesions:
        far &= ~lesion_union(lesions, mask.shape)[box]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    spill = float(far.sum()) * voxel_ml
    return spill, 100.0 * spill / (float(ref.sum()) * voxel_ml)


def lesion_report(
    mask: np.ndarray, reference: np.ndarray, lesions: list[Lesion], spacing: tuple[float, float, float]
) -> dict:
    """Per-lesion scores and a summary: the least and the pooled share inside, for all and juxtapleural lesions, and spill."""
    scores = score_lesions(mask, reference, lesions, spacing)
    spill, spill_percent = spill_ml(mask, reference, lesions, spacing)

    def summary(chosen: list[LesionScore]) -> dict:
        voxels = sum(s.voxels for s in chosen)
        return {
            "count": len(chosen),
            "min_inside": min((s.inside for s in chosen), default=None),
            "pooled_inside": (sum(s.inside * s.voxels for s in chosen) / voxels) if voxels else None,
        }

    return {
        "lesions": [asdict(s) for s in scores],
        "all": summary(scores),
        "juxtapleural": summary([s for s in scores if s.juxtapleural]),
        "spill_ml": spill,
        "spill_percent": spill_percent,
    }
