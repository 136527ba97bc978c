"""Writing files so that nothing is lost: checked before the work, written aside, verified, published.

Every file LungGAN writes (masks, DICOM SEG, reports, models, checkpoints, pictures) goes
through :func:`atomic_write`; :func:`check_output_path` and :func:`check_writable` refuse
an output before any work is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError, OutputExistsError
from .complete import written_problem
from .native import quiet_c_stderr
from .nifti import read_forms, write_forms
from .volumes import suffix_of

#: Every file this process has published, in order: what an interruption can honestly say was written.
PUBLISHED: list[Path] = []

#: File endings a mask can be written to: single-file formats, so the write can be atomic.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
#: File endings a lung mask can be written to: the image formats and DICOM SEG.
MASK_SUFFIXES = (*OUTPUT_SUFFIXES, ".dcm")


def check_output_path(
    path: str | os.PathLike, overwrite: bool = False, suffixes: tuple[str, ...] = OUTPUT_SUFFIXES, what: str = "output"
) -> Path:
    """Check that an output (``what``: "output", "report"...) can be written, before any work is done.

    Raises:
        OutputExistsError: the file exists and ``overwrite`` is False.
        InputError: the path is a folder, its folder does not exist, or the
            ending is not one of ``suffixes``.
        OutputError: the folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder: give a file name, or give several inputs to fill a folder")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {path} exists: choose another name or pass --overwrite")
    if not path.parent.exists():
        raise InputError(f"{what} folder {path.parent} does not exist: create it first")
    if suffix_of(path) not in suffixes:
        raise InputError(f"{what} {path}: use a file name ending in {', '.join(suffixes)}")
    check_writable(path.parent)
    return path


def check_not_input(output: Path, source: str | os.PathLike) -> None:
    """Refuse an output that is the input itself (``--overwrite`` replaces earlier results, never the scan)."""
    try:
        same = output.exists() and os.path.samefile(output, source)
    except OSError:
        same = False
    if same:
        raise InputError(f"output {output} is the input CT: give the mask another name (--overwrite replaces an "
                         "earlier result, never the scan it came from)")


def mask_bytes(voxels: int, path: str | os.PathLike) -> int:
    """About how many bytes a uint8 mask of ``voxels`` takes in the file ``path`` (for the free-space check).

    ``.nii`` is stored raw; the other formats are written compressed, and a lung mask compresses
    more than 50-fold, so a twentieth of the raw size is a safe margin.
    """
    return voxels if suffix_of(Path(path)) == ".nii" else voxels // 20


def _size(n_bytes: float) -> str:
    """A size in the unit that shows it: bytes, kB, MB or GB (never '0 MB' for a few kilobytes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.{1 if n_bytes < 10 * scale else 0}f} {unit}"
    return f"{int(n_bytes)} bytes"


def check_writable(folder: str | os.PathLike, needed_bytes: int = 0) -> None:
    """Check before the work that a file can be created in ``folder`` and that it has room for ``needed_bytes``.

    Raises:
        OutputError: the folder is read-only, or its disk has less free space than needed.
    """
    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".lunggan-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into {folder}: {exc.strerror}; choose a writable folder") from None
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OutputError(
            f"not enough free space in {folder}: {_size(free)} free, about {_size(needed_bytes)} needed; free some space"
        )


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[str], object],
    suffix: str = "",
    overwrite: bool = True,
    verify: Callable[[str], None] | None = None,
) -> Path:
    """Write a file atomically: ``write(tmp)`` fills a temporary file beside ``path``, then it is published.

    The temporary file is flushed to disk (fsync) and, with ``verify``, read
    back before it takes the file's name, so a full disk or a file-size limit
    that a writer does not report still leaves nothing at ``path``. Without
    ``overwrite`` the publishing step is no-clobber (a hard link, which fails
    if the name exists): of two runs writing one new file, exactly one wins.
    A crash or an interruption (SIGINT, SIGTERM through the command line)
    leaves the old file or the complete new one, and no temporary file. The
    file gets the usual permissions (0666 less the umask).

    Args:
        path: the file to write (its folder must exist).
        write: called with the temporary file's name.
        suffix: ending of the temporary name, for writers that choose the format by it.
        overwrite: replace a file that exists at ``path`` (else OutputExistsError).
        verify: called with the temporary file's name; raises if it is not what was meant.

    Raises:
        OutputError: the write failed (disk full, read-only, a limit), with nothing left behind.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    try:
        try:
            with quiet_c_stderr():  # ITK's C libraries print their write errors raw; the check below speaks instead
                write(tmp)
            _fsync(tmp)
            if verify is not None:
                verify(tmp)
        except Exception as exc:  # writers raise many types (OSError, ITK's RuntimeError, safetensors' own)
            if isinstance(exc, OSError) and exc.strerror:
                reason = exc.strerror
            else:
                lines = str(exc).strip().splitlines()
                reason = lines[-1] if lines else type(exc).__name__
            raise OutputError(f"could not write {path}: {reason}; nothing was written (is the disk full?)") from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _publish(tmp, path, overwrite)
        PUBLISHED.append(path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the new name durable (POSIX); not possible, and not needed, on Windows."""
    if os.name == "nt":
        return
    try:
        _fsync(str(folder))
    except OSError:
        pass


def _publish(tmp: str, path: Path, overwrite: bool) -> None:
    """Give the finished temporary file its name: replacing, or only if the name is free."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if the name exists
    except FileExistsError:
        raise OutputExistsError(f"output {path} exists (written meanwhile by another run?): choose another name or pass --overwrite") from None
    except OSError:  # a file system without hard links: the check and the rename are then two steps
        if path.exists():
            raise OutputExistsError(f"output {path} exists: choose another name or pass --overwrite") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def verify_image(expected: sitk.Image) -> Callable[[str], None]:
    """A ``verify`` for :func:`atomic_write`: the file reads back as an image equal to ``expected``, voxel for voxel."""

    def verify(name: str) -> None:
        problem = written_problem(name)  # ITK would read a short file whole, with zeros for the rest
        if problem:
            raise OutputError(f"the file {problem}")
        try:
            written = sitk.ReadImage(name)
        except RuntimeError:
            raise OutputError("the file does not read back") from None
        if written.GetSize() != expected.GetSize() or not np.array_equal(
            sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(expected)
        ):
            raise OutputError("the file reads back different from what was written")

    return verify


def verify_text(expected: str) -> Callable[[str], None]:
    """A ``verify`` for :func:`atomic_write`: the file reads back as exactly ``expected`` (UTF-8)."""

    def verify(name: str) -> None:
        with open(name, "rb") as handle:
            if handle.read() != expected.encode("utf-8"):
                raise OutputError("the file reads back different from what was written")

    return verify


def verify_tensors(expected: dict, metadata: dict[str, str] | None = None) -> Callable[[str], None]:
    """A ``verify`` for :func:`atomic_write`: the safetensors file reads back whole, with every tensor equal
    to ``expected``'s and the metadata ``metadata`` (a short file fails in safetensors' own reader)."""

    def verify(name: str) -> None:
        from safetensors import safe_open

        try:
            with safe_open(name, framework="pt") as handle:
                keys, written_metadata = set(handle.keys()), handle.metadata() or {}
                same = keys == set(expected) and all(_same_bytes(handle.get_tensor(k), expected[k]) for k in keys)
        except Exception:  # safetensors raises its own error types for a cut or corrupt file
            raise OutputError("the file does not read back") from None
        if not same or (metadata is not None and written_metadata != metadata):
            raise OutputError("the file reads back different from what was written")

    return verify


def _same_bytes(a, b) -> bool:
    """Two tensors of one type and shape with the same bytes (NaN weights included, which ``==`` never finds equal)."""
    import torch

    b = b.detach().cpu()
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                      b.contiguous().reshape(-1).view(torch.uint8))


def write_image(image: sitk.Image, path: str | os.PathLike, overwrite: bool = False, nifti_forms=None) -> Path:
    """Write an image atomically (see :func:`atomic_write`); an existing file is only replaced when asked.

    Args:
        nifti_forms: the qform and sform (:class:`LungGANLib.io.nifti.NiftiForms`) a NIfTI file gets exactly,
            those of the CT the image is a mask of; ignored for other formats.
    """
    path = check_output_path(path, overwrite)
    suffix = suffix_of(path)

    def write(tmp: str) -> None:
        sitk.WriteImage(image, tmp, useCompression=True)
        # ITK writes the forms of an ordinary header as they were; only a file it changed is written again.
        if nifti_forms is not None and suffix in (".nii", ".nii.gz") and read_forms(Path(tmp)) != nifti_forms:
            write_forms(tmp, nifti_forms)

    return atomic_write(path, write, suffix=suffix, overwrite=overwrite, verify=verify_image(image))
