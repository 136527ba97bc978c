"""Which Python packages LungGANLib needs that are not installed (checked before first use in Slicer).

PyTorch is not in the list: inside Slicer it comes from the SlicerPyTorch
extension (``PyTorchUtils``), which picks the CUDA or CPU build that fits the
machine. The rest are installed with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.util

#: The PyTorch LungGAN needs (pyproject's requirement), asked of SlicerPyTorch and checked in an installed one.
TORCH_REQUIREMENT = ">=2.2"
TORCH_MINIMUM = (2, 2)

#: import name -> pip requirement
REQUIRED = {
    "numpy": "numpy>=1.24",
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.11",
    "skimage": "scikit-image>=0.22",
    "safetensors": "safetensors>=0.4",
    "tqdm": "tqdm>=4.60",
    "matplotlib": "matplotlib>=3.7",
}


def missing_packages(required: dict[str, str] | None = None) -> list[str]:
    """pip requirements of the packages that cannot be imported (empty when all are there)."""
    required = REQUIRED if required is None else required
    return [requirement for name, requirement in required.items() if importlib.util.find_spec(name) is None]


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    return importlib.util.find_spec("torch") is not None


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``, ``"2.2.0rc1"`` -> ``(2, 2, 0)``: the leading numbers of a version."""
    import re

    numbers = []
    for part in version.split("+")[0].split("."):
        found = re.match(r"\d+", part)
        if not found:
            break
        numbers.append(int(found.group()))
        if found.end() < len(part):  # "0rc1": the number, then stop
            break
    return tuple(numbers)


def torch_too_old(version: str | None = None) -> str | None:
    """A message when the installed PyTorch (or ``version``) is older than LungGAN needs; None when it will do.

    Only the version is read (from the package's metadata), so an old PyTorch is named before it is imported.
    """
    if version is None:
        import importlib.metadata

        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None
    if version_tuple(version) >= TORCH_MINIMUM:
        return None
    return (f"PyTorch {version} is installed, and LungGAN needs PyTorch {TORCH_REQUIREMENT}: update it in the PyTorch "
            "module (PyTorch Utils), then restart Slicer")
