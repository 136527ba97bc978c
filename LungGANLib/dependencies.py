"""Which Python packages LungGANLib needs that are not installed (checked before first use in Slicer).

PyTorch is not in the list: inside Slicer it comes from the SlicerPyTorch
extension (``PyTorchUtils``), which picks the CUDA or CPU build that fits the
machine. The rest are installed with ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.util

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
