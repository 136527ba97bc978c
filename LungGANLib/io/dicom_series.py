"""DICOM series folders: which series hold images, and whether their slices make one regular volume.

ITK stacks a series' files in position order and assumes even spacing: a
missing slice (a gap) or a duplicate would silently move every slice after it.
So before reading, each slice's position along the slice normal is checked:

- exact duplicates (the same SOPInstanceUID twice) are dropped, with a note;
- two different slices at one position, a gap, uneven spacing, or slices with
  another orientation or size are refused, naming the positions;
- SEG, RTSTRUCT and other objects without an image grid are ignored, with a note;
- links in the folder that lead nowhere are skipped, with a note;
- slices that lie off their own normal (a tilted gantry: each slice shifted
  in its plane against the one before) are resampled onto a regular grid
  along the normal, with a warning, as 3D Slicer's acquisition geometry
  regularization and dcm2niix do: ITK would stack them as if untilted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .native import quiet_c_stderr

logger = logging.getLogger(__name__)

#: Modalities of DICOM objects that are not image slices (segmentations, structure sets, reports...).
NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "PLAN", "FID"}
#: In-plane drift (mm) of the slices' positions, over the whole series, below which a series counts as untilted.
TILT_TOLERANCE_MM = 0.1
#: Spacing may vary by this share of the usual step (scanners round positions) before it counts as uneven.
SPACING_TOLERANCE = 0.05


@dataclass(frozen=True)
class Slice:
    """What the series check needs from one file's header."""

    file: str
    uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class Tilt:
    """Where each slice of a tilted series lies in its own plane, against the first slice.

    Attributes:
        offsets: (slices, 2) shift in mm along the rows (the first ImageOrientationPatient vector) and along
            the columns (the second), in slice order.
        origin: the first slice's position (mm, LPS).
        orientation: the six direction cosines.
        step: the spacing of the slices along their normal (mm).
        degrees: the tilt of the stack against the normal, from the drift between the first and the last slice.
    """

    offsets: np.ndarray
    origin: tuple[float, float, float]
    orientation: tuple[float, ...]
    step: float
    degrees: float


def _header(file: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return {}
    return {key: reader.GetMetaData(key).strip() for key in reader.GetMetaDataKeys()}


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return ()


def dicom_series(folder: Path) -> dict[str, list[str]]:
    """The DICOM series in a folder: SeriesInstanceUID to its files.

    Links that lead nowhere (dangling, or in a loop) are skipped with a warning: GDCM's scan of a
    folder that holds one fails on most of the folder's other files.
    """
    dead = sorted(p.name for p in folder.iterdir() if p.is_symlink() and not p.exists())
    if not dead:
        return _scan_series(folder, folder)
    shown = ", ".join(dead[:3]) + (", ..." if len(dead) > 3 else "")
    logger.warning("skipping %d link(s) in %s that lead nowhere (%s)", len(dead), folder, shown)
    with tempfile.TemporaryDirectory() as tmp:
        for path in folder.iterdir():
            if path.name not in dead:
                os.symlink(path.resolve(), Path(tmp) / path.name)
        return _scan_series(Path(tmp), folder)


def _scan_series(scanned: Path, folder: Path) -> dict[str, list[str]]:
    """GDCM's series of the folder ``scanned``, with each file named in ``folder`` (the same names)."""
    reader = sitk.ImageSeriesReader()
    series = {}
    # GDCM warns on stderr for a folder without a series; the caller's one line says so instead.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        with quiet_c_stderr():
            for uid in reader.GetGDCMSeriesIDs(str(scanned)) or ():
                series[uid] = [str(folder / Path(f).name) for f in reader.GetGDCMSeriesFileNames(str(scanned), uid)]
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    return series


def image_series(found: dict[str, list[str]], folder: Path) -> dict[str, list[str]]:
    """The series that hold image slices; the others (SEG, RTSTRUCT, ...) are dropped with a note."""
    kept = {}
    for uid, files in found.items():
        modality = _modality(files[0])
        if modality in NON_IMAGE_MODALITIES:
            # A SEG saved into its CT's own series shares the series' UID: keep the series' image files.
            images = [f for f in files[1:] if _modality(f) not in NON_IMAGE_MODALITIES]
            ignored = len(files) - len(images)
            logger.warning("ignoring %d %s object(s) in %s (not image slices)", ignored, modality or "non-image", folder)
            if not images:
                continue
            files = images
        kept[uid] = files
    return kept


def _modality(file: str) -> str:
    return _header(file).get("0008|0060", "").upper()


def read_slices(files: list[str]) -> list[Slice]:
    """Each image file's position, orientation and size (files without a position are refused; a SEG,
    RTSTRUCT or other non-image object saved into the series is left out with a note)."""
    slices = []
    for file in files:
        header = _header(file)
        if header.get("0008|0060", "").upper() in NON_IMAGE_MODALITIES:
            logger.warning("ignoring %s: a %s object among the series' slices", file, header["0008|0060"])
            continue
        position = _floats(header.get("0020|0032", ""))
        orientation = _floats(header.get("0020|0037", ""))
        if len(position) != 3 or len(orientation) != 6:
            raise InputError(f"{file} has no slice position or orientation: cannot place it in the volume")
        size = (int(header.get("0028|0010", 0) or 0), int(header.get("0028|0011", 0) or 0))
        slices.append(Slice(file, header.get("0008|0018", file), position, orientation, size))
    return slices


def checked_series(files: list[str], folder: Path, unreadable: int = 0) -> tuple[list[str], Tilt | None]:
    """The series' files in slice order, exact duplicates dropped, after checking they make one regular volume.

    Args:
        files: the series' files (as GDCM lists them).
        folder: for messages.
        unreadable: files in the folder that could not be read as DICOM, named in the message of a gap.

    Returns:
        The files, and where the slices lie off their normal (:class:`Tilt`; None for a regular stack).

    Raises:
        InputError: mixed orientations or sizes, two slices at one position, a gap, or uneven spacing.
    """
    slices = read_slices(files)
    unique: dict[str, Slice] = {}
    for item in slices:
        unique.setdefault(item.uid, item)
    if len(unique) < len(slices):
        logger.warning("dropped %d exact duplicate slice file(s) in %s", len(slices) - len(unique), folder)
    slices = list(unique.values())
    if len(slices) < 2:
        return [s.file for s in slices], None
    reference = slices[0]
    for item in slices[1:]:
        if item.size != reference.size:
            raise InputError(f"{folder} mixes slice sizes ({reference.size} and {item.size}): give one series of one size")
        if not np.allclose(item.orientation, reference.orientation, atol=1e-4):
            raise InputError(f"{folder} mixes slice orientations: give one series with one orientation")
    row, column = np.asarray(reference.orientation[:3]), np.asarray(reference.orientation[3:])
    normal = np.cross(row, column)
    order = sorted(slices, key=lambda s: float(np.dot(normal, s.position)))
    where = np.array([np.dot(normal, s.position) for s in order])
    steps = np.diff(where)
    same = np.flatnonzero(np.abs(steps) < 1e-3)
    if same.size:
        raise InputError(
            f"{folder} has two different slices at position {where[same[0]]:.2f} mm: "
            "it mixes acquisitions; give one series of one acquisition"
        )
    step = float(np.median(steps))
    off = np.flatnonzero(np.abs(steps - step) > SPACING_TOLERANCE * step)
    if off.size:
        gaps = [i for i in off if steps[i] > 1.5 * step]
        if gaps:
            missing = [where[i] + k * step for i in gaps for k in range(1, int(round(steps[i] / step)))]
            shown = ", ".join(f"{m:.2f}" for m in missing[:8]) + (" ..." if len(missing) > 8 else "")
            cause = f"; {unreadable} file(s) in the folder could not be read (truncated?)" if unreadable else ""
            raise InputError(
                f"{folder} is missing {len(missing)} slice(s) at {shown} mm along the slice normal (every {step:.2f} mm)"
                f"{cause}: give the complete series"
            )
        raise InputError(
            f"{folder} has uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm): "
            "resample it to even spacing first (e.g. in 3D Slicer) and save it as .nrrd"
        )
    # Ascending along the normal, as GDCM sorts a clean series (its order falls back to file names when
    # positions repeat): the same slices give the same volume and geometry, duplicates or not.
    return [s.file for s in order], _tilt(order, row, column, step)


def _tilt(order: list[Slice], row: np.ndarray, column: np.ndarray, step: float) -> Tilt | None:
    """Where the slices lie in their own planes against the first one; None when they lie on its normal."""
    first = np.asarray(order[0].position)
    moved = np.array([s.position for s in order]) - first
    offsets = np.stack([moved @ row, moved @ column], axis=1)
    if np.abs(offsets).max() < TILT_TOLERANCE_MM:
        return None
    along = float(np.dot(np.cross(row, column), moved[-1]))
    degrees = float(np.degrees(np.arctan2(np.linalg.norm(offsets[-1]), along)))
    return Tilt(offsets, tuple(float(v) for v in first), order[0].orientation, step, degrees)


def regularized(image: sitk.Image, tilt: Tilt, folder: Path) -> sitk.Image:
    """A tilted series (as ITK stacked it) resampled onto the regular grid along its slices' normal.

    Each slice is shifted back in its plane by its own offset (linear interpolation). The grid keeps the pixel
    spacing and the slices' direction cosines, steps along the normal by the slice spacing, and is widened in
    its plane to hold every slice whole; what no slice covers is the series' lowest value (outside the field
    of view, as the scanner pads).
    """
    from scipy import ndimage

    logger.warning(
        "%s is tilted by %.1f degrees (gantry tilt: each slice lies shifted in its plane): resampled onto a regular "
        "grid along the slice normal, as 3D Slicer and dcm2niix do; the mask lies on that grid", folder, tilt.degrees,
    )
    array = sitk.GetArrayFromImage(image)  # (slice, column index, row index)
    spacing = image.GetSpacing()
    # Offsets in pixels, (column index, row index) as the array's last two axes.
    pixels = tilt.offsets[:, ::-1] / np.array([spacing[1], spacing[0]])
    low = np.floor(pixels.min(axis=0)).astype(int)
    grow = np.ceil(pixels.max(axis=0)).astype(int) - low
    fill = float(array.min())
    out = np.full((array.shape[0], array.shape[1] + grow[0], array.shape[2] + grow[1]), fill, dtype=array.dtype)
    for k in range(array.shape[0]):
        # The grid's pixel p of slice k is the slice's own pixel p + low - offset.
        padded = np.full(out.shape[1:], fill, dtype=np.float32)
        padded[: array.shape[1], : array.shape[2]] = array[k]
        moved = ndimage.shift(padded, pixels[k] - low, order=1, mode="constant", cval=fill)
        out[k] = np.rint(moved) if np.issubdtype(out.dtype, np.integer) else moved
    row, column = np.asarray(tilt.orientation[:3]), np.asarray(tilt.orientation[3:])
    normal = np.cross(row, column)
    origin = np.asarray(tilt.origin) + low[1] * spacing[0] * row + low[0] * spacing[1] * column
    result = sitk.GetImageFromArray(out)
    result.SetSpacing((spacing[0], spacing[1], tilt.step))
    result.SetOrigin(tuple(float(v) for v in origin))
    result.SetDirection(tuple(float(v) for v in np.stack([row, column, normal], axis=1).ravel()))
    return result
