"""Reading chest CT, and masks on its grid, keeping the geometry.

Every image is read with SimpleITK and reoriented to the canonical LPS
orientation (see :mod:`LungGANLib.config`) so that the network and the
post-processing always see the same anatomy layout; masks are turned back into
the input's own orientation and geometry (size, spacing, origin, direction)
before they are written (writing: :mod:`LungGANLib.io.output`). Inputs are checked
on the way in: NIfTI read to its end (:mod:`LungGANLib.io.nifti`), DICOM series along the slice normal
(:mod:`LungGANLib.io.dicom_series`), NaN/Inf voxels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..config import AIR_HU, CANONICAL_ORIENTATION, CT_AIR_CHECK_HU, CT_HU_LIMITS, CT_MIN_AIR_FRACTION
from ..errors import InputError
from .dicom_series import checked_series, dicom_series, image_series, regularized
from .native import quiet_c_stderr
from .nifti import NiftiForms, check_forms, check_nifti_complete
from .nonfinite import mend_nonfinite, with_nan
from .metaimage import check_metaimage_data
from .nrrd import check_nrrd_geometry

logger = logging.getLogger(__name__)

#: File endings SimpleITK reads as one image.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels lie: SimpleITK's size, spacing, origin and direction.

    Kept instead of the image itself so that the input's voxels are not held
    in memory twice.
    """

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` (of the same size) exactly this geometry."""
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"image size {image.GetSize()} differs from {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def index_to_point(self, index: tuple[float, ...]) -> tuple[float, ...]:
        """Physical point (LPS, mm) of a continuous (x, y, z) voxel index."""
        n = len(self.size)
        matrix = np.asarray(self.direction, dtype=float).reshape(n, n)
        return tuple(np.asarray(self.origin) + matrix @ (np.asarray(index, dtype=float) * np.asarray(self.spacing)))


@dataclass
class CTVolume:
    """A CT volume in canonical orientation, with what is needed to go back.

    Attributes:
        array: HU values, shape (z, y, x), canonical LPS orientation; int16 as
            scanners store them, float32 for other pixel types.
        spacing: voxel size (x, y, z) in mm, in canonical orientation.
        geometry: the input's own geometry (original orientation), which
            every output mask gets.
        orientation: the original orientation code, e.g. ``"RAS"``.
        modality: the DICOM modality tag where the file has one, else None.
        source: where the volume was read from.
        dicom_files: the DICOM files read, in slice order (empty for other formats);
            a DICOM SEG refers to them.
        nifti_forms: a NIfTI input's qform and sform, which a NIfTI mask gets exactly (None for
            other formats).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    geometry: Geometry
    orientation: str
    modality: str | None = None
    source: str = ""
    dicom_files: tuple[str, ...] = ()
    nifti_forms: NiftiForms | None = None

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0

    def without_voxels(self) -> CTVolume:
        """This volume without its HU: the same shape, geometry and source, for writing masks once the
        CT's values are no longer needed (the array is a read-only zero of that shape that takes no memory)."""
        return replace(self, array=np.broadcast_to(np.zeros((), dtype=self.array.dtype), self.array.shape))


def clip_air(hu: np.ndarray) -> np.ndarray:
    """HU with scanner padding (below -1024) set to air, in the array's own dtype."""
    return np.maximum(hu, hu.dtype.type(AIR_HU))


def suffix_of(path: Path) -> str:
    """The file's image ending, double ones included (``.nii.gz``), lower case."""
    name = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def image_stem(path: str | os.PathLike) -> str:
    """The input's name without its image ending (``ct.nii.gz`` gives ``ct``); a DICOM folder keeps its name."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name or "input"
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix in IMAGE_SUFFIXES else path.stem


def _read_modality(filename: str) -> str | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(filename)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    if reader.HasMetaDataKey("0008|0060"):
        return reader.GetMetaData("0008|0060").strip() or None
    return None


def read_image(path: str | os.PathLike, series: str | None = None) -> tuple[sitk.Image, str | None]:
    """Read an image file or a DICOM series folder (see :func:`read_image_files`)."""
    image, modality, _ = read_image_files(path, series)
    return image, modality


def read_image_files(path: str | os.PathLike, series: str | None = None) -> tuple[sitk.Image, str | None, tuple[str, ...]]:
    """Read an image file or a DICOM series folder.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.mha``/``.mhd``/``.dcm`` file,
            or a folder holding one DICOM series.
        series: the SeriesInstanceUID to read when the folder holds several.

    Returns:
        The image as SimpleITK reads it, the DICOM modality (or None) and the
        DICOM files read in slice order (empty for other formats).

    Raises:
        InputError: the path is missing, holds no readable image, or holds
            several DICOM series and ``series`` does not pick one.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path} (give a CT file such as .nii.gz/.nrrd/.mha or a DICOM folder)")
    if not path.is_dir() and not path.is_file():  # reading a pipe would wait for a writer for ever
        raise InputError(f"{path} is not a file or a folder (a pipe, a socket or a device): give a CT file such as "
                         ".nii.gz/.nrrd/.mha or a DICOM folder")
    if path.is_dir():
        listed = dicom_series(path)
        found = image_series(listed, path)
        if not found:
            raise InputError(
                f"no DICOM series found in folder {path}: give a folder of .dcm files of one CT series, "
                "or a .nii.gz/.nrrd/.mha file"
            )
        if series is None and len(found) > 1:
            listing = "; ".join(f"{uid} ({len(files)} files)" for uid, files in sorted(found.items()))
            raise InputError(
                f"folder {path} holds {len(found)} DICOM series; pick one with --series (or take all with --all-series): {listing}"
            )
        if series is not None and series not in found:
            raise InputError(f"series {series} is not in {path}; it holds: {', '.join(sorted(found))}")
        uid = series if series is not None else next(iter(found))
        if len(found[uid]) == 1:  # one file: an enhanced multi-frame CT holds the whole volume (or a lone slice)
            return read_image_files(found[uid][0])
        in_folder = sum(1 for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
        unreadable = max(0, in_folder - sum(len(files) for files in listed.values()))
        files, tilt = checked_series(found[uid], path, unreadable)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        # ITK warns on stderr about slice spacing varying by a micrometre; keep the console clean.
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            with quiet_c_stderr():
                image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"could not read the DICOM series in {path}: {str(exc).strip().splitlines()[-1]}") from None
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        if tilt is not None:
            image = regularized(image, tilt, path)
        return image, _read_modality(files[0]), tuple(files)
    nonfinite = check_nifti_complete(path)
    check_nrrd_geometry(path)
    check_metaimage_data(path)
    try:
        with quiet_c_stderr():  # ITK prints its reasons raw; the message below says it in one line
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        text = str(exc)
        if any(word in text for word in ("fread", "expected", "not read completely", "received")):
            raise InputError(f"{path} is truncated or corrupt (its image data is shorter than its header says): "
                             "copy or export it again") from None
        raise InputError(
            f"could not read {path} as an image: give a CT as .nii.gz, .nrrd, .mha/.mhd, .dcm or a DICOM folder"
        ) from None
    if nonfinite.size:
        image = with_nan(image, nonfinite)
    is_dicom = suffix_of(path) == ".dcm"
    modality = _read_modality(str(path)) if is_dicom else None
    return image, modality, (str(path),) if is_dicom else ()


def check_is_ct(array: np.ndarray, modality: str | None, source: str) -> None:
    """Refuse what is evidently not a CT in Hounsfield units.

    Args:
        array: the voxel values.
        modality: the DICOM modality, when known.
        source: the input's name, for the message.

    Raises:
        InputError: the DICOM modality is not CT, the values lie beyond ``CT_HU_LIMITS`` (a
            wrong rescale), or the volume has no air (no voxel near -1000 HU), as in MR or a CT not in HU.
    """
    if modality is not None and modality.upper() != "CT":
        raise InputError(f"{source} is a {modality} image, not CT: LungGAN segments CT (use --force to try anyway)")
    if array.dtype != np.int16 and array.size:
        low, high = float(array.min()), float(array.max())
        if low < CT_HU_LIMITS[0] or high > CT_HU_LIMITS[1]:
            raise InputError(
                f"{source} has values from {low:.3g} to {high:.3g}, beyond any CT in Hounsfield units "
                f"({CT_HU_LIMITS[0]:.0f} to {CT_HU_LIMITS[1]:.0f}): is its rescale slope or intercept wrong? "
                "Use --force to segment it anyway"
            )
    air_fraction = float(np.mean(array <= CT_AIR_CHECK_HU))
    if air_fraction < CT_MIN_AIR_FRACTION:
        raise InputError(
            f"{source} does not look like a CT in Hounsfield units ({air_fraction:.1%} of voxels at or below "
            f"{CT_AIR_CHECK_HU:.0f} HU, where a chest CT has air): is it an MR? Use --force to segment it anyway"
        )


def load_ct(path: str | os.PathLike, series: str | None = None, force: bool = False) -> CTVolume:
    """Read a CT and bring it to the canonical orientation.

    Args:
        path: image file or DICOM folder (see :func:`read_image`).
        series: DICOM SeriesInstanceUID when the folder holds several.
        force: skip the is-it-CT check.

    Returns:
        The volume, HU as float32, (z, y, x) in LPS.

    Raises:
        InputError: unreadable, not 3D, not single-channel, or not CT.

    Example:
        >>> ct = load_ct("../shared/data/ct/elastix-00.nii.gz")
        >>> ct.array.shape
        (141, 512, 512)
    """
    image, modality, files = read_image_files(path, series)
    forms = None if Path(path).is_dir() else check_forms(Path(path), image)
    # Hand the only reference over, so the file's voxels can be freed once reoriented.
    holder = [image]
    del image
    volume = _volume_from_only_reference(holder, modality=modality, source=str(path), force=force)
    volume.dicom_files = files
    volume.nifti_forms = forms
    return volume


def volume_from_image(image: sitk.Image, modality: str | None = None, source: str = "image", force: bool = False) -> CTVolume:
    """Wrap an in-memory SimpleITK image as a canonical :class:`CTVolume` (see :func:`load_ct`); ``image`` is not changed.

    (A one-item list is still taken, and emptied, for one release: the old way to hand over the only reference.)
    """
    return _volume_from_only_reference(image if isinstance(image, list) else [image], modality, source, force)


def _volume_from_only_reference(
    holder: list[sitk.Image], modality: str | None = None, source: str = "image", force: bool = False
) -> CTVolume:
    """:func:`volume_from_image` for a caller that hands over its only reference to the image in a one-item
    list, which this function empties: the image's voxels are freed as soon as the reoriented copy exists
    (a long scan's peak memory counts them once, not twice)."""
    image = holder.pop()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source} has {image.GetNumberOfComponentsPerPixel()} channels per voxel (colour?): give a grey-level CT")
    if image.GetDimension() != 3:
        size = "x".join(str(s) for s in image.GetSize())
        raise InputError(
            f"{source} is a {image.GetDimension()}D image ({size}), not a CT volume: give a 3D CT "
            "(a DICOM series folder or a .nii.gz/.nrrd/.mha volume)"
        )
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    canonical = sitk.DICOMOrient(image, CANONICAL_ORIENTATION)
    geometry = Geometry.of(image)
    del image
    spacing = tuple(float(s) for s in canonical.GetSpacing())
    array = sitk.GetArrayFromImage(canonical)
    del canonical
    if array.dtype != np.int16:
        array = array.astype(np.float32)
        mend_nonfinite(array, source)
    if not force:
        check_is_ct(array, modality, source)
    return CTVolume(
        array=array,
        spacing=spacing,
        geometry=geometry,
        orientation=orientation,
        modality=modality,
        source=source,
    )


def mask_to_image(mask: np.ndarray, volume: CTVolume) -> sitk.Image:
    """Turn a canonical (z, y, x) mask into an image with the input's exact geometry.

    Args:
        mask: labels, shape equal to ``volume.array.shape``.
        volume: the volume the mask was computed on.

    Returns:
        A uint8 image with the size, spacing, origin and direction of the input.
    """
    if mask.shape != volume.array.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the volume's {volume.array.shape}")
    canonical = sitk.GetImageFromArray(mask.astype(np.uint8, copy=False))
    canonical.SetSpacing(volume.spacing)
    canonical.SetDirection(np.eye(3).ravel().tolist())
    out = sitk.DICOMOrient(canonical, volume.orientation)
    # DICOMOrient only permutes and flips, so the voxels are in place; set the
    # input's geometry bit for bit so no rounding drifts in.
    return volume.geometry.apply(out)


def check_same_grid(image: sitk.Image, reference: sitk.Image | Geometry, what: str = "mask", of: str = "CT") -> None:
    """Refuse an image whose voxels do not lie where the reference's do (size, spacing, origin, direction).

    Origins may differ by 1 % of a voxel and directions by 1e-4 (file formats round them).
    """
    ref = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    hint = f"give the {what} that belongs to this {of} (or resample it onto the {of}'s grid first)"
    if tuple(image.GetSize()) != ref.size:
        raise InputError(f"{what} size {image.GetSize()} differs from the {of}'s {ref.size}: {hint}")
    if not np.allclose(image.GetSpacing(), ref.spacing, rtol=1e-4, atol=0):
        raise InputError(f"{what} spacing {image.GetSpacing()} differs from the {of}'s {ref.spacing}: {hint}")
    tolerance = 0.01 * min(ref.spacing)
    if not np.all(np.abs(np.subtract(image.GetOrigin(), ref.origin)) <= tolerance):
        shown = tuple(round(v, 2) for v in image.GetOrigin()), tuple(round(v, 2) for v in ref.origin)
        raise InputError(f"the {what} and the {of} lie in different places (origins {shown[0]} and {shown[1]} mm): {hint}")
    if not np.allclose(image.GetDirection(), ref.direction, atol=1e-4, rtol=0):
        raise InputError(f"the {what} and the {of} have different directions: {hint}")


def mask_from_image(image: sitk.Image, volume: CTVolume | None = None) -> np.ndarray:
    """Read a mask image into canonical (z, y, x) order, checking it lies on ``volume``'s voxels.

    The mask may be saved in another axis order (RAS, say): it is compared with the CT in the
    CT's own orientation, in physical space.
    """
    if volume is not None:
        check_same_grid(sitk.DICOMOrient(image, volume.orientation), volume.geometry)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, CANONICAL_ORIENTATION))


