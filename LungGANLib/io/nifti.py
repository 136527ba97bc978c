"""A NIfTI file read to its end before ITK reads it: ITK reads a cut ``.nii.gz`` without a word and
fills the missing voxels with zeros, so a truncated download would be segmented as if it were whole.
It also takes a voxel size of 0, NaN or infinity in the header for 1 mm; that is refused here too.

A NIfTI header holds two geometries, the qform and the sform. Where they disagree, ITK believes one and
other readers (nibabel, FSL: the sform first) the other; the reader is warned, naming both, and a NIfTI
mask gets the CT's two forms exactly, so it lies on the CT whichever a viewer believes.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


#: Where the header fields read or written here lie, by header size (348: NIfTI-1, 540: NIfTI-2):
#: byte offset, numpy type, count (``nifti1.h``, ``nifti2.h``). ``form_codes`` is qform_code and sform_code;
#: ``quatern`` is quatern_b, c, d and qoffset_x, y, z; ``srow`` is srow_x, y, z.
_FIELDS = {
    348: {"datatype": (70, "i2", 1), "bitpix": (72, "i2", 1), "dim": (40, "i2", 8), "pixdim": (76, "f4", 8),
          "vox_offset": (108, "f4", 1), "form_codes": (252, "i2", 2), "quatern": (256, "f4", 6),
          "srow": (280, "f4", 12)},
    540: {"datatype": (12, "i2", 1), "bitpix": (14, "i2", 1), "dim": (16, "i8", 8), "pixdim": (104, "f8", 8),
          "vox_offset": (168, "i8", 1), "form_codes": (344, "i4", 2), "quatern": (352, "f8", 6),
          "srow": (400, "f8", 12)},
}


@dataclass(frozen=True)
class _Header:
    """A NIfTI-1 or NIfTI-2 header's bytes, with its byte order and size, read field by field (:data:`_FIELDS`)."""

    raw: bytes
    order: str
    size: int

    @classmethod
    def of(cls, header: bytes) -> _Header | None:
        """The header, or None if the bytes do not start a NIfTI file."""
        for order in "<>":
            for size in _FIELDS:
                if len(header) >= size and np.frombuffer(header[:4], f"{order}i4")[0] == size:
                    return cls(bytes(header[:size]), order, size)
        return None

    def where(self, name: str) -> tuple[int, np.dtype, int]:
        """A field's byte offset, its type in this header's byte order and its count."""
        at, kind, count = _FIELDS[self.size][name]
        return at, np.dtype(f"{self.order}{kind}"), count

    def __getitem__(self, name: str) -> np.ndarray:
        at, kind, count = self.where(name)
        return np.frombuffer(self.raw[at : at + count * kind.itemsize], kind)


def _nifti_data_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1 or NIfTI-2 header promises (offset of the data plus the voxels), or None if it is not one."""
    found = _Header.of(header)
    if found is None:
        return None
    dim = found["dim"].astype(np.int64)
    bitpix = int(found["bitpix"][0])
    offset = int(found["vox_offset"][0])
    rank = int(dim[0])
    if not 1 <= rank <= 7 or (dim[1 : rank + 1] < 0).any():
        return None
    return offset + int(np.prod(dim[1 : rank + 1])) * bitpix // 8


def _missing_voxel_size(header: bytes) -> str | None:
    """The first spatial ``pixdim`` of a NIfTI header that is 0, NaN or infinite (ITK takes it for 1 mm), as
    ``pixdim[i] = v``; None when all are usable or the header is not NIfTI."""
    found = _Header.of(header)
    if found is None:
        return None
    rank = int(found["dim"][0])
    pixdim = found["pixdim"].astype(np.float64)
    for axis in range(1, min(max(rank, 0), 3) + 1):
        if pixdim[axis] == 0 or not np.isfinite(pixdim[axis]):
            return f"pixdim[{axis}] = {pixdim[axis]:g}"
    return None


#: What a reader of a truncated or corrupt input is told to do.
FIX = "copy or export it again"


#: NIfTI datatype codes of floating-point voxels, which may hold NaN or infinity: their numpy type.
_FLOAT_TYPES = {16: "f4", 64: "f8"}


def _float_voxels(header: bytes) -> tuple[str, int] | None:
    """The numpy type and the data's offset of a NIfTI whose voxels are floating point; None otherwise."""
    found = _Header.of(header)
    if found is None:
        return None
    code, offset = int(found["datatype"][0]), int(found["vox_offset"][0])
    return (f"{found.order}{_FLOAT_TYPES[code]}", offset) if code in _FLOAT_TYPES else None


def check_nifti_complete(path: Path) -> np.ndarray:
    """Read a NIfTI file to its end: its gzip checksum and length hold, it has the data its header promises,
    and its header gives a voxel size on each spatial axis.

    ITK reads a cut ``.nii.gz`` without a word and fills the rest with zeros; this catches it. ITK also
    hands NaN and infinite voxels over as 0 (water): they are found here, on the way through the file.

    Returns:
        The indices (in file order, i fastest) of the voxels that are NaN or infinite; empty for a file
        without any, for integer voxels, and for other formats.

    Raises:
        InputError: the file is truncated or corrupt, or its voxel size is missing.
    """
    name = path.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii" if name.endswith(".nii") else None
    nonfinite: list[np.ndarray] = []
    if suffix is None:
        return np.zeros(0, dtype=np.int64)
    fix = FIX
    try:
        with (gzip.open(path, "rb") if suffix == ".nii.gz" else open(path, "rb")) as handle:
            header = handle.read(540)
            total = len(header)
            floats = _float_voxels(header)
            # The voxels seen so far, and the bytes of one cut in two by the end of a chunk.
            seen, rest = 0, b""
            if floats is not None:
                rest = header[floats[1] :]
            while True:
                chunk = handle.read(1 << 24)
                if floats is not None and (rest or chunk):
                    size = np.dtype(floats[0]).itemsize
                    block = rest + chunk
                    whole = len(block) // size * size
                    values = np.frombuffer(block[:whole], floats[0])
                    nonfinite.append(np.flatnonzero(~np.isfinite(values)) + seen)
                    seen += values.size
                    rest = block[whole:]
                if not chunk:
                    break
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
    return np.concatenate(nonfinite) if nonfinite else np.zeros(0, dtype=np.int64)


# -- the two geometries of a NIfTI header ----------------------------------------------------------------

#: Two forms that place any corner of the volume this far apart (mm) disagree.
FORMS_TOLERANCE_MM = 0.5


@dataclass(frozen=True)
class NiftiForms:
    """A NIfTI header's qform and sform, as written (see the NIfTI-1 standard, ``nifti1.h``).

    Attributes:
        qform_code, sform_code: 0 when the form is unset.
        pixdim: pixdim[0] (qfac, the sign of the third axis) to pixdim[3], the voxel size.
        quatern: quatern_b, c, d and qoffset_x, y, z.
        srow: the sform's three rows (3 x 4).
        dim: the voxels along i, j, k.
    """

    qform_code: int
    sform_code: int
    pixdim: tuple[float, ...]
    quatern: tuple[float, ...]
    srow: tuple[float, ...]
    dim: tuple[int, int, int]

    def qform(self) -> np.ndarray:
        """The qform's voxel-to-RAS affine (4 x 4)."""
        b, c, d = self.quatern[:3]
        a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
        rotation = np.array([
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ])
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        affine = np.eye(4)
        affine[:3, :3] = rotation * np.array([self.pixdim[1], self.pixdim[2], qfac * self.pixdim[3]])
        affine[:3, 3] = self.quatern[3:]
        return affine

    def sform(self) -> np.ndarray:
        """The sform's voxel-to-RAS affine (4 x 4)."""
        affine = np.eye(4)
        affine[:3] = np.reshape(self.srow, (3, 4))
        return affine

    def corners(self, affine: np.ndarray) -> np.ndarray:
        """Where the volume's eight corner voxels lie under ``affine`` (8 x 3 mm)."""
        grid = np.array([[i, j, k, 1.0] for i in (0, self.dim[0] - 1) for j in (0, self.dim[1] - 1)
                         for k in (0, self.dim[2] - 1)])
        return (grid @ affine.T)[:, :3]

    def apart_mm(self) -> float:
        """How far apart the two forms place the farthest corner of the volume (0 unless both are set)."""
        if self.qform_code <= 0 or self.sform_code <= 0:
            return 0.0
        return float(np.linalg.norm(self.corners(self.qform()) - self.corners(self.sform()), axis=1).max())


def read_forms(path: Path) -> NiftiForms | None:
    """The qform and sform of a ``.nii``/``.nii.gz`` file; None for other files."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as handle:
        header = handle.read(540)
    found = _Header.of(header)
    if found is None:
        return None
    codes = found["form_codes"]
    return NiftiForms(
        qform_code=int(codes[0]), sform_code=int(codes[1]),
        pixdim=tuple(float(v) for v in found["pixdim"][:4]),
        quatern=tuple(float(v) for v in found["quatern"]),
        srow=tuple(float(v) for v in found["srow"]),
        dim=tuple(int(max(v, 1)) for v in found["dim"][1:4]),
    )


def write_forms(path: str, forms: NiftiForms) -> None:
    """Give the NIfTI file at ``path`` (written by ITK, same voxel grid) exactly the qform and sform of ``forms``.

    The mask of a CT then lies on the CT in every reader, whichever of the two forms the reader believes.
    """
    gz = path.lower().endswith(".gz")
    with open(path, "rb") as handle:
        raw = handle.read()
    # zlib in one call each way: several times faster than GzipFile on a mask of mostly zeros.
    data = bytearray(zlib.decompress(raw, 16 + zlib.MAX_WBITS) if gz else raw)
    found = _Header.of(bytes(data[:540]))
    if found is None:
        raise ValueError(f"{path} is not a NIfTI file")

    def put(name: str, values) -> None:
        at, kind, _ = found.where(name)
        raw = np.asarray(values, dtype=kind).tobytes()
        data[at : at + len(raw)] = raw

    put("pixdim", forms.pixdim)
    put("form_codes", [forms.qform_code, forms.sform_code])
    put("quatern", forms.quatern)
    put("srow", forms.srow)
    if gz:
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip stream, with its header and CRC
        data = packer.compress(bytes(data)) + packer.flush()
    with open(path, "wb") as handle:
        handle.write(bytes(data))


def _ras(image) -> np.ndarray:
    """An ITK image's voxel-to-RAS affine (ITK keeps LPS)."""
    affine = np.eye(4)
    affine[:3, :3] = np.reshape(image.GetDirection(), (3, 3)) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _how_apart(forms: NiftiForms) -> str:
    qform, sform = forms.qform(), forms.sform()
    flips = [axis for axis in range(3) if np.dot(qform[:3, axis], sform[:3, axis]) < 0]
    if flips:
        return "the sform mirrors the qform along voxel axis " + " and ".join("ijk"[a] for a in flips)
    return f"they place the volume up to {forms.apart_mm():.0f} mm apart"


def check_forms(path: Path, image) -> NiftiForms | None:
    """Warn when a NIfTI file's qform and sform disagree, naming both and the one ITK used.

    Returns:
        The file's forms (for the mask's header), or None when ``path`` is not NIfTI.
    """
    import logging

    forms = read_forms(path)
    if forms is None or forms.apart_mm() <= FORMS_TOLERANCE_MM:
        return forms
    used = _ras(image)
    errors = {name: float(np.abs(forms.corners(affine) - forms.corners(used)).max())
              for name, affine in (("qform", forms.qform()), ("sform", forms.sform()))}
    chosen = min(errors, key=errors.get)
    logging.getLogger(__name__).warning(
        "%s has a qform (code %d) and an sform (code %d) that disagree: %s. The %s was used, so right and left "
        "follow it; the mask's header carries both forms as the CT's, so it lies on the CT in every viewer. Check "
        "the CT's orientation against the anatomy, and fix the header that is wrong",
        path, forms.qform_code, forms.sform_code, _how_apart(forms), chosen,
    )
    return forms
