"""The code runs on Slicer 5.8's Python, 3.9 (the oldest Slicer this extension supports).

Three checks, none of which installs another PyTorch:
- ``vermin`` finds no language or library feature newer than 3.9 in any module;
- every file compiles with a real Python 3.9 (pyenv's, where this machine has one);
- with that Python and the packages Slicer ships or pip-installs for LungGAN (numpy,
  SimpleITK, scipy, scikit-image), every module that needs neither PyTorch nor Slicer
  imports, and the classical method segments a real CT, writes its mask and its report.

Set LUNGGAN_REQUIRE_PY39=1 to fail rather than skip where no Python 3.9 is found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv39"
#: What the 3.9 check installs: the core's packages that Slicer has or LungGAN pip-installs, no PyTorch.
PACKAGES = ["numpy", "SimpleITK", "scipy", "scikit-image", "tqdm"]


def python39() -> str:
    """A real Python 3.9: pyenv's (its shims do not run a version that is not selected), else one on the PATH."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(pyenv.glob("versions/3.9*/bin/python3.9"), reverse=True)
    on_path = shutil.which("python3.9")
    if on_path and "shims" not in Path(on_path).parts:
        candidates.append(Path(on_path))
    if candidates:
        return str(candidates[0])
    if os.environ.get("LUNGGAN_REQUIRE_PY39"):
        pytest.fail("Python 3.9 is required here but not found (pyenv install 3.9)")
    pytest.skip("no Python 3.9 on this machine")


def test_vermin_finds_nothing_newer_than_python_3_9():
    result = subprocess.run([str(Path(sys.executable).with_name("vermin")), "--no-tips", "--violations", "--target=3.9-",
                             "LungGANLib", "LungGAN", "benchmarks"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_compiles_with_python_3_9():
    files = [str(p) for p in [*(REPO / "LungGANLib").rglob("*.py"), *(REPO / "LungGAN").glob("*.py")]]
    code = "import sys\nfor name in sys.argv[1:]:\n    compile(open(name).read(), name, 'exec')\n"
    result = subprocess.run([python39(), "-c", code, *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def venv39() -> Path:
    """A Python 3.9 environment with the core's packages but no PyTorch (made once, kept in .venv39)."""
    python = VENV / "bin" / "python"
    stamp = VENV / "lunggan-packages.txt"
    if not (python.is_file() and stamp.is_file() and stamp.read_text().split() == PACKAGES):
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([python39(), "-m", "venv", str(VENV)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True, timeout=900)
        stamp.write_text(" ".join(PACKAGES))
    return python


def test_the_core_runs_on_python_3_9(venv39, data, tmp_path):
    code = f"""
import importlib, pkgutil, sys
import LungGANLib
assert sys.version_info[:2] == (3, 9), sys.version
needs = {{"torch", "slicer", "vtk", "safetensors", "qt"}}  # qt: the panel, only inside Slicer
imported = []
for module in pkgutil.walk_packages(LungGANLib.__path__, "LungGANLib."):
    try:
        importlib.import_module(module.name)
        imported.append(module.name)
    except ModuleNotFoundError as exc:
        if exc.name.split(".")[0] not in needs:
            raise
for name in ("LungGANLib.cli", "LungGANLib.io", "LungGANLib.segment.classical", "LungGANLib.segment.report", "LungGANLib.segment.batch"):
    assert name in imported, name
from LungGANLib.segment.classical import segment_classical
from LungGANLib.io import load_ct, mask_to_image
from LungGANLib.io.output import write_image
from LungGANLib.segment.report import lung_figures, write_report
ct = load_ct({str(data / "fixtures/cip-ct-64/ct-64.nrrd")!r})
labels = segment_classical(ct.array, ct.spacing)
write_image(mask_to_image(labels, ct), {str(tmp_path / "m.nii.gz")!r})
figures = lung_figures(ct.array, labels, ct.voxel_volume_ml)
assert figures["right_lung_ml"] > 500 and figures["left_lung_ml"] > 500, figures
write_report([{{"input": "ct-64", "status": "ok", **figures}}], {str(tmp_path / "r.csv")!r})
"""
    result = subprocess.run([str(venv39), "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "m.nii.gz").is_file()
    assert "right_lung_ml" in (tmp_path / "r.csv").read_text()
