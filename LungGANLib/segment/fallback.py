"""When the generator loses lung the classical method finds: the classical method's mask, with a warning.

The generator was trained on four patients' scans, and on a scan far from them it can lose a lung, or all of it.
On cip-ct-64 (64 pixels of 4.2 mm, emphysema: its lung's median -919 HU), 40 HU darker, it kept 2.7 L of the
4.7 L of lung, and with the lung moved towards air (``benchmarks/shifts.py``, "emphysema") it found none; the
classical method, a threshold, found the lungs in both (Dice 0.974 and 0.977). On a chest CT the lungs are
nearly all the aerated tissue inside the body: the default's masks of the shared scans hold 1.01-1.06 times the
tissue below -500 HU inside it. A generator's mask that holds under ``LOST_SHARE`` of it has lost lung; the
classical method is then run, and where the generator's mask holds under ``LOST_SHARE`` of the classical method's
lung too, the classical mask takes its place and a warning says so. Only for the shipped models: a model of
your own keeps its mask, as an evaluation of it needs.

What it cannot tell from lung: air inside the chest that is no lung. A pneumothorax of more than about 40 % of the
air in the chest would set it off, and the classical method takes the pneumothorax in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .classical import segment_classical
from .morphology import count_values
from .preprocess import lung_slices

logger = logging.getLogger(__name__)

#: The least share of the aerated tissue inside the body (and of the classical method's lung) a generator's mask
#: holds before it counts as having lost lung.
LOST_SHARE = 0.6


def aerated_inside_ml(hu: np.ndarray, body: np.ndarray, voxel_ml: float) -> float:
    """The volume (mL) of the tissue below -500 HU inside the body: on a chest CT, the lungs and airways."""
    return float(np.count_nonzero((hu < -500) & body)) * voxel_ml


def _lung_ml(labels: np.ndarray, voxel_ml: float) -> float:
    counts = count_values(labels, 3)
    return float(counts[1:].sum()) * voxel_ml


def unless_lung_is_lost(labels: np.ndarray, volume, options, aerated_ml: float) -> np.ndarray:
    """The generator's ``labels``, or the classical method's where a shipped generator lost lung (see the module):
    ``options`` are the segmentation's, ``aerated_ml`` from :func:`aerated_inside_ml`."""
    from ..models.weights import DEFAULT_MODEL

    if options.model is not None and Path(options.model).resolve().parent != DEFAULT_MODEL.resolve().parent:
        return labels  # your own model's mask stays yours (and its empty mask blames the model)
    found = _lung_ml(labels, volume.voxel_volume_ml)
    if found >= LOST_SHARE * aerated_ml:
        return labels
    classical = segment_classical(volume.array, volume.spacing, options.params, single_label=options.single_label,
                                  fill_holes=options.fill_holes, envelope=options.envelope)
    by_threshold = _lung_ml(classical, volume.voxel_volume_ml)
    if found >= LOST_SHARE * by_threshold:
        return labels
    logger.warning("%s: the generator found %.0f mL of lung where the classical method finds %.0f mL; the classical "
                   "method's mask is written instead (check it; --method classical gives it alone)",
                   volume.source or "the volume", found, by_threshold)
    return classical


def warn_if_empty(labels: np.ndarray, volume, options) -> None:
    """A warning when no lung was found, saying whether the model or the scan is the likelier cause."""
    if labels.any():
        return
    from ..models.weights import DEFAULT_MODEL

    own_model = options.method == "gan" and options.model is not None and Path(options.model).resolve() != DEFAULT_MODEL.resolve()
    if own_model and lung_slices(volume.array).size:  # air inside a body: a chest, and the model found nothing in it
        logger.warning(
            "no lungs found in %s with the model %s, though the CT has air inside the body: the model may be at "
            "fault; try the shipped model (leave out --model) or --method classical", volume.source or "the volume",
            options.model,
        )
    else:
        logger.warning(
            "no lungs found in %s: the mask is empty. Is it a chest CT (lungs in the field of view)?",
            volume.source or "the volume",
        )
