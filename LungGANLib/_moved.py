"""The modules' old names, kept for one release.

Up to 0.1.0 the core lay flat (``LungGANLib.inference``, ``LungGANLib.training``, ...); it is now
packaged by stage (``LungGANLib.segment.inference``, ``LungGANLib.train.trainer``, ...; see
``docs/ARCHITECTURE.md``). Importing an old name gives the same module object as the new name,
with a :class:`DeprecationWarning`. The aliases go in the release after the next one.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module (under LungGANLib) -> its new place.
MOVED = {
    "native": "io.native", "nifti": "io.nifti", "dicom_series": "io.dicom_series", "dicom_seg": "io.dicom_seg",
    "output": "io.output", "annotations": "io.annotations",
    "model_io": "models.weights",
    "preprocess": "segment.preprocess", "morphology": "segment.morphology", "envelope": "segment.envelope",
    "postprocess": "segment.postprocess", "classical": "segment.classical", "inference": "segment.inference",
    "report": "segment.report", "batch": "segment.batch",
    "metrics": "evaluate.metrics", "lesions": "evaluate.lesions", "references": "evaluate.references",
    "visualize": "evaluate.visualize",
    "appearance": "train.appearance", "lesion_synthesis": "train.lesion_synthesis", "datasets": "train.datasets",
    "losses": "train.losses", "variants": "train.variants", "train_config": "train.train_config",
    "checkpoints": "train.checkpoints", "training": "train.trainer", "compare": "train.compare",
    "compare_report": "train.compare_report",
    "background": "slicer.background", "jobs": "slicer.jobs", "mrml": "slicer.mrml", "mrml_nodes": "slicer.mrml_nodes",
    "mrml_figures": "slicer.mrml_figures", "widget": "slicer.widget",
}

_PACKAGE = __name__.rpartition(".")[0]


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module at its new place (the same object, its own spec kept)."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.spec  # the import system gave it the old name's spec


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds ``LungGANLib.<old name>`` for every entry of :data:`MOVED`."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        new = f"{_PACKAGE}.{MOVED[old]}"
        warnings.warn(f"{fullname} is now {new}; the old name goes after the next release", DeprecationWarning,
                      stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Let the old names be imported (once per process)."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedFinder())
