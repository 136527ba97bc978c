"""A written image read back to its end by our own reader, before it is given its name.

ITK reads a short file without a word and fills what is missing with zeros, so a file cut by a
full disk or a file-size limit reads back "equal" wherever the cut falls in zero voxels. Here
each format the masks are written in is checked on its own terms: a NIfTI's data against the size
its header promises and its gzip stream to its end with its checksum (:func:`check_nifti_complete`);
an NRRD's or a MetaImage's raw data against the size their header gives, or their gzip or zlib
stream inflated to its end to that size.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from .nifti import FIX, check_nifti_complete
from .nrrd import header_fields

#: Bytes per voxel of the NRRD and MetaImage element types ITK writes.
_NRRD_BYTES = {"uchar": 1, "unsigned char": 1, "uint8": 1, "char": 1, "signed char": 1, "int8": 1, "short": 2, "int16": 2,
               "ushort": 2, "unsigned short": 2, "uint16": 2, "int": 4, "int32": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
               "float": 4, "double": 8, "longlong": 8, "int64": 8, "ulonglong": 8, "uint64": 8}
_MET_BYTES = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8}


def _data_complete(data: bytes, expected: int, compressed: str | None) -> str | None:
    """Why ``data`` is not ``expected`` bytes of voxels (raw, or a ``gzip`` or ``zlib`` stream), or None."""
    if compressed is None:
        return None if len(data) >= expected else f"{len(data)} bytes of voxels where the header promises {expected}"
    try:
        inflated = gzip.decompress(data) if compressed == "gzip" else zlib.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        return f"its {compressed} stream is cut or corrupt ({exc or type(exc).__name__})"
    return None if len(inflated) == expected else f"{len(inflated)} bytes of voxels where the header promises {expected}"


def _nrrd_problem(path: Path) -> str | None:
    raw = path.read_bytes()
    end = raw.find(b"\n\n")
    fields = header_fields(path)
    if end < 0 or "sizes" not in fields or fields.get("type", "").lower() not in _NRRD_BYTES or "data file" in fields:
        return None if end >= 0 else "is truncated: its header does not end"
    expected = int(np.prod([int(v) for v in fields["sizes"].split()])) * _NRRD_BYTES[fields["type"].lower()]
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz"):
        return None
    problem = _data_complete(raw[end + 2 :], expected, None if encoding == "raw" else "gzip")
    return None if problem is None else f"is truncated or corrupt: {problem}"


def _metaimage_problem(path: Path) -> str | None:
    raw = path.read_bytes()
    marker = raw.find(b"ElementDataFile")
    end = raw.find(b"\n", marker)
    if marker < 0 or end < 0 or b"LOCAL" not in raw[marker:end]:
        return None if marker >= 0 else "is truncated: its header does not end"
    fields = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in raw[:marker].decode("latin-1").splitlines())}
    if "DimSize" not in fields or fields.get("ElementType") not in _MET_BYTES:
        return None
    channels = int(fields.get("ElementNumberOfChannels", "1"))
    expected = int(np.prod([int(v) for v in fields["DimSize"].split()])) * _MET_BYTES[fields["ElementType"]] * channels
    compressed = "zlib" if fields.get("CompressedData", "False").lower() == "true" else None
    problem = _data_complete(raw[end + 1 :], expected, compressed)
    return None if problem is None else f"is truncated or corrupt: {problem}"


def written_problem(path: str | Path) -> str | None:
    """Why an image file just written is not whole, in words (see the module); None when it is."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        try:
            check_nifti_complete(path)
        except InputError as exc:
            return str(exc).removeprefix(f"{path} ").removesuffix(f": {FIX}")
        return None
    if name.endswith(".nrrd"):
        return _nrrd_problem(path)
    return _metaimage_problem(path) if name.endswith(".mha") else None
