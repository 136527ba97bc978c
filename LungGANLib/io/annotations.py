"""Radiologists' nodule outlines from LIDC-IDRI XML reads, placed on the CT grid.

An LIDC read file holds up to four radiologists' sessions; each nodule has one
``<roi>`` per slice with its outline (``<edgeMap>`` points in pixel
coordinates of the original DICOM slice) and the slice's z position in mm.
Nodules under 3 mm are given as a single point.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon

from ..errors import InputError
from .volumes import CTVolume

_NS = {"n": "http://www.nih.gov"}


@dataclass(frozen=True)
class NoduleOutline:
    """One radiologist's outline of one nodule on one slice.

    Attributes:
        reader: index of the reading session in the file.
        nodule_id: the nodule's ID as the reader named it.
        z_mm: the slice's z position (imageZposition), mm.
        xs, ys: outline points, pixel columns and rows of the original slice.
        inclusion: False for an outline that marks an exclusion (a hole).
    """

    reader: int
    nodule_id: str
    z_mm: float
    xs: tuple[int, ...]
    ys: tuple[int, ...]
    inclusion: bool


def read_lidc_outlines(path: str | os.PathLike) -> list[NoduleOutline]:
    """Parse every nodule outline of an LIDC XML read file.

    Raises:
        InputError: the file is missing or is not LIDC read XML.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"could not read LIDC reads {path}: {exc}") from None
    outlines = []
    for reader, session in enumerate(root.findall("n:readingSession", _NS)):
        for nodule in session.findall("n:unblindedReadNodule", _NS):
            nodule_id = (nodule.findtext("n:noduleID", default="", namespaces=_NS) or "").strip()
            for roi in nodule.findall("n:roi", _NS):
                points = roi.findall("n:edgeMap", _NS)
                xs = tuple(int(p.findtext("n:xCoord", namespaces=_NS)) for p in points)
                ys = tuple(int(p.findtext("n:yCoord", namespaces=_NS)) for p in points)
                inclusion = (roi.findtext("n:inclusion", default="TRUE", namespaces=_NS) or "").strip().upper() == "TRUE"
                z_mm = float(roi.findtext("n:imageZposition", namespaces=_NS))
                outlines.append(NoduleOutline(reader, nodule_id, z_mm, xs, ys, inclusion))
    return outlines


def outline_mask(outlines: list[NoduleOutline], volume: CTVolume, include_outline: bool = True) -> np.ndarray:
    """Rasterise outlines (filled, exclusions cut out) onto the volume's canonical (z, y, x) grid.

    The outlines' pixel coordinates are those of the original DICOM slices; the
    volume's geometry maps them, with each slice's z position, to their
    physical points and from there to the canonical grid.

    LIDC's readers drew each outline just outside the nodule, so that the
    outline does not hide the nodule's edge (Armato et al., Med Phys 2011):
    the nodule itself is the outline's interior. ``include_outline=False``
    gives that interior (for measuring what a mask keeps of a nodule); True
    also keeps the outline's own pixels (the reference masks add them, a
    margin on the safe side). Points (nodules under 3 mm) are kept either way.

    Returns:
        Boolean mask of every voxel inside a nodule outline of any reader.
    """
    geometry = volume.geometry
    shape = volume.array.shape
    mask = np.zeros(shape, dtype=bool)
    exclusions = np.zeros(shape, dtype=bool)
    # Index from physical point to the canonical LPS grid (direction identity).
    canonical_origin = _canonical_origin(volume)
    for outline in outlines:
        if not outline.xs:
            continue
        # Pixel (x, y) of the slice at z_mm: take the in-plane physical position
        # from the input's geometry, and z from the read.
        points = []
        for x, y in zip(outline.xs, outline.ys):
            px, py, _ = geometry.index_to_point((float(x), float(y), 0.0))
            points.append((px, py, outline.z_mm))
        idx = np.array(
            [[(p[d] - canonical_origin[d]) / volume.spacing[d] for d in range(3)] for p in points]
        )
        z = int(round(float(np.median(idx[:, 2]))))
        if not 0 <= z < shape[0]:
            continue
        target = mask if outline.inclusion else exclusions
        rows, cols = np.round(idx[:, 1]).astype(int), np.round(idx[:, 0]).astype(int)
        inside = (rows >= 0) & (rows < shape[1]) & (cols >= 0) & (cols < shape[2])
        if len(rows) >= 3:
            rr, cc = fill_polygon(rows, cols, shape=shape[1:])
            plane = np.zeros(shape[1:], dtype=bool)
            plane[rr, cc] = True
            # An exclusion keeps its outline: the outline's pixels are not nodule either way.
            plane[rows[inside], cols[inside]] = include_outline or not outline.inclusion
            target[z] |= plane
        else:
            target[z, rows[inside], cols[inside]] = True
    return mask & ~exclusions


def _canonical_origin(volume: CTVolume) -> tuple[float, float, float]:
    """Physical position (LPS, mm) of the canonical array's voxel (0, 0, 0)."""
    geometry = volume.geometry
    size = geometry.size
    corners = [
        geometry.index_to_point((i, j, k))
        for i in (0, size[0] - 1)
        for j in (0, size[1] - 1)
        for k in (0, size[2] - 1)
    ]
    return tuple(float(min(c[d] for c in corners)) for d in range(3))


@dataclass(frozen=True)
class TumourBox:
    """A tumour bounding box on one slice (Pascal VOC XML), placed by the slice's z position.

    Attributes:
        sop_uid: SOP Instance UID of the annotated slice (the XML file's name).
        z_mm: that slice's z position (ImagePositionPatient), mm.
        xmin, ymin, xmax, ymax: the box in pixel columns and rows, inclusive.
    """

    sop_uid: str
    z_mm: float
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def read_tumour_boxes(folder: str | os.PathLike, dicom_folder: str | os.PathLike) -> list[TumourBox]:
    """Read the Lung-PET-CT-Dx boxes whose slice is in ``dicom_folder`` (matched by SOPInstanceUID).

    Boxes of slices that are not in the folder are skipped: without their
    DICOM file nothing places them.
    """
    import SimpleITK as sitk

    positions = {}
    for path in Path(dicom_folder).iterdir():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue
        if reader.HasMetaDataKey("0008|0018") and reader.HasMetaDataKey("0020|0032"):
            uid = reader.GetMetaData("0008|0018").strip().rstrip("\x00")
            positions[uid] = float(reader.GetMetaData("0020|0032").split("\\")[2])
    boxes = []
    for path in sorted(Path(folder).glob("*.xml")):
        uid = path.stem
        if uid not in positions:
            continue
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise InputError(f"could not read tumour box {path}: {exc}") from None
        for box in root.iter("bndbox"):
            xmin, ymin, xmax, ymax = (int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append(TumourBox(uid, positions[uid], xmin, ymin, xmax, ymax))
    return boxes


def box_slices(boxes: list[TumourBox], volume: CTVolume) -> list[tuple[int, slice, slice]]:
    """Each box as (canonical z, row slice, column slice) on the volume's grid (axis-aligned input only)."""
    origin = _canonical_origin(volume)
    placed = []
    for box in boxes:
        corners = [volume.geometry.index_to_point((float(x), float(y), 0.0)) for x, y in ((box.xmin, box.ymin), (box.xmax, box.ymax))]
        cols = sorted(int(round((c[0] - origin[0]) / volume.spacing[0])) for c in corners)
        rows = sorted(int(round((c[1] - origin[1]) / volume.spacing[1])) for c in corners)
        z = int(round((box.z_mm - origin[2]) / volume.spacing[2]))
        if 0 <= z < volume.array.shape[0]:
            placed.append((z, slice(max(rows[0], 0), rows[1] + 1), slice(max(cols[0], 0), cols[1] + 1)))
    return placed
