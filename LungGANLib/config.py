"""Constants with meaning, in one place.

Units: Hounsfield units (HU) for intensities, millimetres (mm) for lengths,
millilitres (mL) for volumes. Arrays are indexed (z, y, x) in the canonical
LPS orientation (x towards the patient's left, y towards posterior, z towards
superior), so in an axial slice the patient's right lies at low x.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: The folder that holds ``LungGANLib`` and ``Resources``: the repository root, or the scripted-modules
#: folder of the installed Slicer extension.
ROOT = Path(__file__).resolve().parent.parent

#: Where the shared data lies (beside the repository) unless ``LUNGGAN_DATA`` says otherwise.
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"


def data_dir() -> Path:
    """The shared data folder: ``$LUNGGAN_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("LUNGGAN_DATA", DEFAULT_DATA_DIR))


#: Canonical orientation of the arrays the pipeline works on (DICOM convention).
CANONICAL_ORIENTATION = "LPS"

#: Scanners pad the outside of the reconstruction circle with -3024 or -2048:
#: everything below this value is treated as air.
AIR_HU = -1024.0

#: Below this (HU) is a scanner's padding outside its field of view (-2048, -3024...), not air (-1000): no
#: tissue, so never lung.
PADDING_HU = -1500.0

#: Label values written in the output mask.
RIGHT_LUNG_LABEL = 1
LEFT_LUNG_LABEL = 2
LUNG_LABEL = 1  # with --single-label

LABEL_NAMES = {RIGHT_LUNG_LABEL: "right lung", LEFT_LUNG_LABEL: "left lung"}


#: A hole (or a dent) whose cross-section reaches this area (mm²) and that opens
#: downwards out of the lung is a dome of the diaphragm (liver, spleen), not a nodule or a vessel.
DOME_MIN_AREA_MM2 = 300.0
#: A lung this large (mm²) on a scan's lowest or highest slice goes on beyond the scan: the review flags the slice,
#: and a lung's volume under a whole lung's gets no "check the mask" warning (only part of it is in the scan).
RUNS_OFF_MM2 = 300.0


@dataclass(frozen=True)
class HUWindow:
    """The intensity window the generator sees: HU clipped to [low, high], scaled to [0, 1]."""

    low: float = -1024.0
    high: float = 600.0

    @property
    def width(self) -> float:
        """The window's width in HU: one unit of the generator's input scale."""
        return self.high - self.low

    def scale(self, hu):
        """HU (a number or an array) on the generator's input scale: ``low`` is 0, ``high`` is 1; not clipped."""
        return (hu - self.low) / self.width


DEFAULT_WINDOW = HUWindow()

#: The LGAN variants by name: the plain U-Net baseline and the paper's five critics. Torch-free, so the
#: Slicer module lists them before PyTorch is installed; :mod:`LungGANLib.train.variants` builds its registry on them.
VARIANT_NAMES = ("baseline", "basic", "product", "early-fusion", "late-fusion", "regression")

#: Side length (pixels) of the square slice the generator sees.
DEFAULT_INPUT_SIZE = 256

#: Generator probability above which a pixel is lung.
DEFAULT_THRESHOLD = 0.5

#: Default generator shape (the shipped model may differ: its model card rules).
DEFAULT_BASE_CHANNELS = 8
DEFAULT_DEPTH = 4

#: A volume whose fraction of voxels at or below ``CT_AIR_CHECK_HU`` is below
#: ``CT_MIN_AIR_FRACTION`` has no air in it: it is not a chest CT in HU (an MR, say).
CT_AIR_CHECK_HU = -500.0
CT_MIN_AIR_FRACTION = 0.01
#: What a CT's stored integers can give in HU (int16 padding to uint16 metal ranges): values beyond
#: it come from a wrong rescale slope or intercept, not from a scanner.
CT_HU_LIMITS = (-32768.0, 65535.0)


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of the classical (threshold + morphology) lung segmentation.

    Attributes:
        lung_threshold_hu: voxels below this are air or lung parenchyma.
        body_threshold_hu: voxels above this are soft tissue (the body outline).
        airway_threshold_hu: candidate HU thresholds for growing the trachea and
            main bronchi, tried from the highest down until the grown airway is
            no larger than ``max_airway_ml`` (a larger one has leaked into lung).
        max_airway_ml: the largest plausible trachea + main bronchi volume.
        airway_dilation_mm: margin removed around the airway (its wall).
        min_lung_ml: components smaller than this are not lungs (bowel gas).
        second_lung_ratio: the second largest component is the other lung only
            if it is at least this fraction of the largest.
        min_total_lung_ml: when both lungs together are smaller than this the
            scan holds no lungs worth the name (an abdominal CT that grazes the
            lung bases): the mask is emptied and a warning given.
        short_scan_mm: a scan shorter than this (craniocaudal extent: a few
            slices, or one) is judged by its largest lung cross-section instead.
        min_slice_lung_cm2: the smallest largest-cross-section of lungs in a short scan.
        whole_lung_extent_mm: extent of whole lungs; ``min_lung_ml`` is scaled
            down by extent / this for shorter scans.
        closing_radius_mm: in-plane closing radius that pulls juxtapleural
            nodules and vessels at the hilum into the lung.
        min_lung_mean_hu: a lung's mean density is above this; bowel gas is
            pure air, about -1000 HU, while lung parenchyma holds vessels.
        speck_mm: the lung candidates lose specks this wide: a 3 x 3 in-plane
            opening where its 3 pixels span no more, none on coarser pixels.
            There an opening of 3 pixels takes real lung: on cip-ct-64's 4.2 mm
            pixels the thin lung of the bases' recesses behind the domes (of the
            Chest Imaging Platform's mask on its six lowest lung slices it kept
            47 %, without it 96 %), on LUNG1-002 with 2 mm pixels the thin lung
            along the outline (Dice 0.9466 -> 0.9544). The shared scans' pixels
            (0.68-0.98 mm) keep it (docs/models.md, "The classical method on
            coarse pixels").
    """

    lung_threshold_hu: float = -320.0
    body_threshold_hu: float = -500.0
    airway_threshold_hu: tuple[float, ...] = (-900.0, -925.0, -950.0, -975.0)
    max_airway_ml: float = 90.0
    airway_dilation_mm: float = 1.5
    min_lung_ml: float = 50.0
    second_lung_ratio: float = 0.1
    min_total_lung_ml: float = 200.0
    short_scan_mm: float = 50.0
    min_slice_lung_cm2: float = 50.0
    whole_lung_extent_mm: float = 200.0
    closing_radius_mm: float = 4.0
    min_lung_mean_hu: float = -960.0
    speck_mm: float = 3.0


DEFAULT_CLASSICAL = ClassicalParams()
