"""When the generator loses lung the classical method finds: the classical method's lung, with a warning.

The generator was trained on four patients' scans, and on a scan far from them it can lose a lung, or all of it.
On cip-ct-64 (64 pixels of 4.2 mm, emphysema: its lung's median -919 HU), 40 HU darker, it kept 2.7 L of the
4.7 L of lung, and with the lung moved towards air (``benchmarks/shifts.py``, "emphysema") it found none; the
classical method, a threshold, found the lungs in both (Dice 0.974 and 0.978). On a chest CT the lungs are
nearly all the aerated tissue inside the body: the default's masks of the shared scans hold 1.01-1.06 times the
tissue below -500 HU inside it. A generator's mask that holds under ``LOST_SHARE`` of it and of the classical
method's lung has lost most of the lung: the classical mask takes its place and a warning says so. Only for the
shipped models: a model of your own keeps its mask, as an evaluation of it needs.

A generator loses a darker lung by degrees: cip-ct-64 10, 20 and 30 HU darker, it held 0.99, 0.90 and 0.78 times the
aerated tissue (Dice 0.960, 0.909 and 0.841, where the classical method scored 0.977-0.975). So wherever its mask
holds less than the aerated tissue (``FOUND_SHARE``: a mask that has the whole lung holds its vessels too) the
classical method is run, and where the generator's mask holds under ``JOIN_SHARE`` of its lung (the two agree
within 1 % on every shared scan, 0.994-1.003), the classical method's lung joins the mask, with a warning. A mask
that holds the aerated tissue, as every shared scan's does, costs no second method.

What it cannot tell from lung: air inside the chest that is no lung. A pneumothorax that the generator leaves out sets
it off once it outweighs what the mask holds beyond the aerated tissue (its vessels and dense lung: a few per cent of
the lung) and 3 % of the classical method's lung; the classical method takes the pneumothorax in.

A field of view that cuts the lungs (:func:`~LungGANLib.segment.preprocess.wall_beside_a_cut_lung`) shows the
generator slices unlike any it was trained on: lung running into the edge of the image or into the scanner's
padding, the chest wall gone. Shown a chest wall beside the cut, it still lost lung there: the anterior right
lung of LUNG1-002 cut 5 mm inside the lungs by a round field of view (0.917 against the classical method's 0.960).
On those slices (:func:`where_the_view_cuts`) the classical method's lung joins the generator's mask, and a
warning says the lungs go on beyond the field of view, so their volume and the report's figures are short. So it
does where the field of view leaves the lung a thin chest wall (within 10 mm of it), which cost the generator the
anterior lungs of the same cut scan on the slices above the cut (up to 12.6 mL a slice).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .classical import segment_classical
from .morphology import count_values
from .preprocess import air_inside_per_slice, lung_slices

logger = logging.getLogger(__name__)

#: The least share of the aerated tissue inside the body (and of the classical method's lung) a generator's mask
#: holds before it counts as having lost lung.
LOST_SHARE = 0.6
#: A mask that holds less than this share of the aerated tissue inside the body may have lost lung: the classical
#: method is run to tell ...
FOUND_SHARE = 1.0
#: ... and where the mask holds under this share of the classical method's lung, that lung joins the mask.
JOIN_SHARE = 0.97


def aerated_inside_ml(hu: np.ndarray, body: np.ndarray, voxel_ml: float) -> float:
    """The volume (mL) of the tissue below -500 HU inside the body: on a chest CT, the lungs and airways."""
    return float(air_inside_per_slice(hu, body).sum()) * voxel_ml


def _lung_ml(labels: np.ndarray, voxel_ml: float) -> float:
    counts = count_values(labels, 3)
    return float(counts[1:].sum()) * voxel_ml


def shipped_model(options) -> bool:
    """Whether ``options`` segment with a shipped model (the default, or one beside it), trained on our four patients."""
    from ..models.weights import DEFAULT_MODEL

    return options.model is None or Path(options.model).resolve().parent == DEFAULT_MODEL.resolve().parent


def _classical(volume, options, held: dict) -> np.ndarray:
    """The classical method's labels of ``volume`` with the segmentation's ``options``, worked out once (``held``)."""
    if "classical" not in held:
        held["classical"] = segment_classical(volume.array, volume.spacing, options.params,
                                              fill_holes=options.fill_holes, single_label=options.single_label,
                                              envelope=options.envelope)
    return held["classical"]


def view_cut_text(slices: int, of: int) -> str:
    """What the warning and the review say of a field of view that cuts the lungs on ``slices`` of ``of`` slices."""
    return (f"the field of view cuts the lungs on {slices} of {of} slices: the lungs go on beyond it, so their volume "
            "and the report's figures are short")


def _say(volume, held: dict, text: str) -> None:
    """A warning, and the same words as one of the review's whole-scan flags (``held["said"]``, in order)."""
    held.setdefault("said", []).append(text)
    logger.warning("%s: %s", volume.source or "the volume", text)


def where_the_view_cuts(
    labels: np.ndarray, volume, options, cut: np.ndarray, near: np.ndarray, held: dict
) -> np.ndarray:
    """``labels`` with, on the slices ``near`` (whose lung the field of view cuts or comes near, holding ``cut``), the
    classical method's lung where a shipped generator's mask has none (see the module); a warning says on how many of
    the slices of ``cut`` they hold lung. A field of view's edge also meets aerated tissue where there is no lung: a
    square one through lidc-idri-0001's lungs meets bowel gas on 12 slices below them (74 cut, 62 with lung).
    ``held``: as :func:`_classical` keeps it, and :func:`_say` what was said."""
    if near.size and shipped_model(options):
        ours, theirs = labels[near], _classical(volume, options, held)[near]
        labels[near] = np.where((ours == 0) & (theirs > 0), theirs, ours)
    holding = sum(1 for z in cut if labels[z].any())  # no copy of the cut slices
    if holding:
        _say(volume, held, view_cut_text(holding, labels.shape[0]))
    return labels


def unless_lung_is_lost(labels: np.ndarray, volume, options, aerated_ml: float, held: dict) -> np.ndarray:
    """The generator's ``labels``; the classical method's where a shipped generator lost most of the lung, and with
    its lung joined (in place) where it lost some (see the module):
    ``options`` are the segmentation's, ``aerated_ml`` from :func:`aerated_inside_ml`, ``held`` as :func:`_classical`
    keeps it, and :func:`_say` what was done."""
    if not shipped_model(options):
        return labels  # your own model's mask stays yours (and its empty mask blames the model)
    found = _lung_ml(labels, volume.voxel_volume_ml)
    if found >= FOUND_SHARE * aerated_ml:
        return labels
    classical = _classical(volume, options, held)
    by_threshold = _lung_ml(classical, volume.voxel_volume_ml)
    said = f"the generator found {found:.0f} mL of lung where the classical method finds {by_threshold:.0f} mL; "
    if found < LOST_SHARE * aerated_ml and found < LOST_SHARE * by_threshold:
        _say(volume, held, said + "the classical method's mask is written instead (check it; --method classical gives it alone)")
        return classical
    if found >= JOIN_SHARE * by_threshold:
        return labels
    joined = (labels == 0) & (classical > 0)
    labels[joined] = classical[joined]
    joined_ml = np.count_nonzero(joined) * volume.voxel_volume_ml
    _say(volume, held, said + f"the classical method's lung joins the mask ({joined_ml:.0f} mL; check it)")
    return labels


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
