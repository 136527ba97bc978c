"""A NIfTI file read to its end before ITK reads it: ITK reads a cut ``.nii.gz`` without a word and
fills the missing voxels with zeros, so a truncated download would be segmented as if it were whole.
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


def check_nifti_complete(path: Path) -> None:
    """Read a NIfTI file to its end: its gzip checksum and length hold, and it has the data its header promises.

    ITK reads a cut ``.nii.gz`` without a word and fills the rest with zeros; this catches it.

    Raises:
        InputError: the file is truncated or corrupt.
    """
    name = path.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii" if name.endswith(".nii") else None
    if suffix is None:
        return
    fix = "copy or export it again"
    try:
        with (gzip.open(path, "rb") if suffix == ".nii.gz" else open(path, "rb")) as handle:
            header = handle.read(540)
            total = len(header)
            while chunk := handle.read(1 << 24):
                total += len(chunk)
    except gzip.BadGzipFile:
        raise InputError(f"could not read {path} as an image: it is not gzip-compressed, as .nii.gz must be; "
                         "give a CT as .nii.gz, .nrrd, .mha/.mhd, .dcm or a DICOM folder") from None
    except (EOFError, OSError, zlib.error) as exc:  # a cut stream, a bad checksum
        reason = "it ends early" if isinstance(exc, EOFError) else str(exc) or type(exc).__name__
        raise InputError(f"{path} is truncated or corrupt ({reason}): {fix}") from None
    expected = _nifti_data_bytes(header)
    if expected is not None and total < expected:
        raise InputError(f"{path} is truncated: {total} bytes where its header promises {expected}: {fix}")
