"""A NIfTI file read to its end before ITK reads it: ITK reads a cut ``.nii.gz`` without a word and
fills the missing voxels with zeros, so a truncated download would be segmented as if it were whole.
It also takes a voxel size of 0, NaN or infinity in the header for 1 mm; that is refused here too.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError


def _nifti_data_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1 or NIfTI-2 header promises (offset of the data plus the voxels), or None if it is not one."""
    for order in "<>":
        if len(header) >= 348 and np.frombuffer(header[:4], f"{order}i4")[0] == 348:
            dim = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            bitpix = int(np.frombuffer(header[72:74], f"{order}i2")[0])
            offset = int(np.frombuffer(header[108:112], f"{order}f4")[0])
        elif len(header) >= 540 and np.frombuffer(header[:4], f"{order}i4")[0] == 540:
            dim = np.frombuffer(header[16:80], f"{order}i8")
            bitpix = int(np.frombuffer(header[14:16], f"{order}i2")[0])
            offset = int(np.frombuffer(header[168:176], f"{order}i8")[0])
        else:
            continue
        rank = int(dim[0])
        if not 1 <= rank <= 7 or (dim[1 : rank + 1] < 0).any():
            return None
        return offset + int(np.prod(dim[1 : rank + 1])) * bitpix // 8
    return None


def _missing_voxel_size(header: bytes) -> str | None:
    """The first spatial ``pixdim`` of a NIfTI header that is 0, NaN or infinite (ITK takes it for 1 mm), as
    ``pixdim[i] = v``; None when all are usable or the header is not NIfTI."""
    for order in "<>":
        if len(header) >= 348 and np.frombuffer(header[:4], f"{order}i4")[0] == 348:
            rank = int(np.frombuffer(header[40:42], f"{order}i2")[0])
            pixdim = np.frombuffer(header[76:108], f"{order}f4").astype(np.float64)
        elif len(header) >= 540 and np.frombuffer(header[:4], f"{order}i4")[0] == 540:
            rank = int(np.frombuffer(header[16:24], f"{order}i8")[0])
            pixdim = np.frombuffer(header[104:168], f"{order}f8")
        else:
            continue
        for axis in range(1, min(max(rank, 0), 3) + 1):
            if pixdim[axis] == 0 or not np.isfinite(pixdim[axis]):
                return f"pixdim[{axis}] = {pixdim[axis]:g}"
        return None
    return None


#: What a reader of a truncated or corrupt input is told to do.
FIX = "copy or export it again"


def check_nifti_complete(path: Path) -> None:
    """Read a NIfTI file to its end: its gzip checksum and length hold, it has the data its header promises,
    and its header gives a voxel size on each spatial axis.

    ITK reads a cut ``.nii.gz`` without a word and fills the rest with zeros; this catches it.

    Raises:
        InputError: the file is truncated or corrupt, or its voxel size is missing.
    """
    name = path.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii" if name.endswith(".nii") else None
    if suffix is None:
        return
    fix = FIX
    try:
        with (gzip.open(path, "rb") if suffix == ".nii.gz" else open(path, "rb")) as handle:
            header = handle.read(540)
            total = len(header)
            while chunk := handle.read(1 << 24):
                total += len(chunk)
    except gzip.BadGzipFile as exc:
        if not str(exc).startswith("Not a gzipped file"):  # a checksum or length that does not hold
            raise InputError(f"{path} is truncated or corrupt ({exc}): {fix}") from None
        raise InputError(f"could not read {path} as an image: it is not gzip-compressed, as .nii.gz must be; "
                         "give a CT as .nii.gz, .nrrd, .mha/.mhd, .dcm or a DICOM folder") from None
    except (EOFError, OSError, zlib.error) as exc:  # a cut stream, a bad checksum
        reason = "it ends early" if isinstance(exc, EOFError) else str(exc) or type(exc).__name__
        raise InputError(f"{path} is truncated or corrupt ({reason}): {fix}") from None
    expected = _nifti_data_bytes(header)
    if expected is not None and total < expected:
        raise InputError(f"{path} is truncated: {total} bytes where its header promises {expected}: {fix}")
    missing = _missing_voxel_size(header)
    if missing:
        raise InputError(f"{path} has no voxel size in its header ({missing}; it would be read as 1 mm and every "
                         "volume would be wrong): export the CT again with its spacing")
