"""Reading and writing: CT and masks with their geometry, DICOM series and SEG, safe output files, radiologists' marks.

``LungGANLib.io`` itself offers what :mod:`LungGANLib.io.volumes` does (``load_ct``, ``CTVolume``, ...),
as it did when it was one module, and ``write_image`` and ``atomic_write`` of :mod:`LungGANLib.io.output`.
"""

from .output import atomic_write, write_image
from .volumes import (
    IMAGE_SUFFIXES,
    CTVolume,
    Geometry,
    check_is_ct,
    check_same_grid,
    clip_air,
    dicom_series,
    image_stem,
    load_ct,
    mask_from_image,
    mask_to_image,
    read_image,
    read_image_files,
    suffix_of,
    volume_from_image,
)

__all__ = ["IMAGE_SUFFIXES", "CTVolume", "Geometry", "check_is_ct", "check_same_grid", "clip_air", "dicom_series",
           "image_stem", "load_ct", "mask_from_image", "mask_to_image", "read_image", "read_image_files", "suffix_of",
           "volume_from_image", "atomic_write", "write_image"]
