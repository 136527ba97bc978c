"""The ``lunggan`` command line's options: one parser, with argparse types that check ranges and
errors on one line (``lunggan: error: ...``, exit status 2). What each subcommand does is
:mod:`LungGANLib.cli`'s.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

REPO_DOCS = Path(__file__).resolve().parent.parent / "docs"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lunggan: error: ...`` and exit status 2, like every other error."""

    def error(self, message: str):
        self.exit(2, f"lunggan: error: {message} (see: {self.prog} --help)\n")


def _count(low: int, high: int):
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {low} to {high}")
        return value

    return parse


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """An argparse type: a finite number in [low, high] (or open at either end)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: give {'more than' if low_open else 'from'} {low:g} "
                f"{'to less than' if high_open else 'to'} {high:g}"
            )
        return value

    return parse


POSITIVE = _number(0.0, 1e6, low_open=True)
PROBABILITY = _number(0.0, 1.0)


def build_parser() -> argparse.ArgumentParser:
    from .config import DEFAULT_BASE_CHANNELS, DEFAULT_DEPTH, DEFAULT_INPUT_SIZE
    from .models.device import DEVICES
    from .models.weights import LIMITS
    from .segment.batch import FORMATS
    from .segment.inference import METHODS
    from .train.variants import VARIANTS

    parser = Parser(prog="lunggan", description="Lung segmentation of chest CT (LGAN).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    seg = sub.add_parser("segment", help="segment the lungs of one CT or many")
    seg.add_argument("input", nargs="+", help="CT: .nii.gz/.nii/.nrrd/.mha/.mhd/.dcm file or a DICOM folder (several: -o is a folder)")
    seg.add_argument("-o", "--output", required=True,
                     help="mask to write (.nii.gz, .nii, .nrrd, .mha, or .dcm for DICOM SEG), or a folder (OUTDIR/) "
                          "for one mask per input, named INPUT_lungs.FORMAT")
    seg.add_argument("--format", choices=FORMATS, help="the masks' format in an output folder (default: nii.gz; dcm: DICOM SEG)")
    seg.add_argument("--all-series", action="store_true", help="segment every DICOM series of a folder input (-o is a folder)")
    seg.add_argument("--review", nargs="?", const="json", metavar="FILE|json|csv",
                     help="also list the slices most likely wrong, most suspicious first, with their reasons: into FILE "
                          "(.json or .csv), or with 'json'/'csv' (the default) beside each mask as <mask>_review.json")
    seg.add_argument("--report", metavar="FILE", help="lung report, one row per input: volumes, mean HU, LAA-950/-910, PD15 (.csv or .json)")
    seg.add_argument("--method", choices=METHODS, default="gan", help="gan: the trained generator; classical: thresholds and morphology")
    seg.add_argument("--model", help="generator weights (.safetensors); default: the shipped model")
    seg.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: cuda, then mps, then cpu)")
    seg.add_argument("--batch-size", type=_count(1, 4096), default=None, help="slices per forward pass (default: 8 on CPU, 64 on GPU)")
    seg.add_argument("--single-label", action="store_true", help="label both lungs 1 instead of right=1, left=2")
    seg.add_argument("--no-fill-holes", action="store_true", help="keep holes (vessels, nodules) out of the mask")
    seg.add_argument("--no-envelope", action="store_true",
                     help="do not take back nodules that sit in dents of the lung's outline at the chest wall")
    seg.add_argument("--no-rim-trim", action="store_true",
                     help="keep the generator's outline where it runs one dense voxel into the pleura")
    seg.add_argument("--keep-domes", action="store_true",
                     help="keep islands of soft tissue the generator took in that are the top of a diaphragm dome")
    seg.add_argument("--no-outline-growth", action="store_true",
                     help="keep the generator's outline where it is instead of moving it out through the voxels "
                          "around it below the lung threshold")
    seg.add_argument("--no-base-growth", action="store_true",
                     help="stop the lungs where the generator's mask stops instead of carrying them down through the "
                          "aerated voxels beneath them (up to 10 mm)")
    seg.add_argument("--keep-airways", action="store_true",
                     help="leave the trachea and main bronchi in the generator's mask where it took them in")
    seg.add_argument("--no-bronchi", action="store_true",
                     help="take every airway voxel grown from the trachea out of the generator's mask, the lobar and "
                          "segmental bronchi inside the lungs too")
    seg.add_argument("--no-aerated-join", action="store_true",
                     help="leave out the pieces of plainly aerated lung beside the generator's mask that it left out "
                          "(by default they join the lung they touch)")
    seg.add_argument("--no-guard-rail", action="store_true",
                     help="keep soft tissue found outside the rib cage, below the diaphragm or in the posterior "
                          "mediastinum (still reported)")
    seg.add_argument("--masses", action="store_true",
                     help="run the lesion model beside the generator and join the masses (2 cm across or more) it "
                          "finds beyond the lungs: a tumour at the mediastinum or the chest wall")
    seg.add_argument("--series", help="SeriesInstanceUID when the DICOM folder holds several series")
    seg.add_argument("--overwrite", action="store_true", help="replace existing masks and report")
    seg.add_argument("--force", action="store_true", help="segment even if the input does not look like CT")
    seg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    seg.add_argument("--progress-json", action="store_true", help="report progress as JSON lines on stdout (for Slicer)")

    ev = sub.add_parser("evaluate", help="compare a predicted mask with a reference mask")
    ev.add_argument("--pred", required=True, help="predicted mask")
    ev.add_argument("--ref", required=True, help="reference mask")
    ev.add_argument("--lesions", action="append", default=[], metavar="MARKS",
                    help="radiologists' lesion marks: an LIDC XML read file, or a folder of PASCAL-VOC tumour boxes (repeat)")
    ev.add_argument("--ct", help="the CT the masks belong to (needed for tumour boxes; default: the reference's grid)")
    ev.add_argument("--boxes-dicom", metavar="FOLDER",
                    help="the DICOM series the tumour boxes were drawn on (default: --ct when it is a DICOM folder)")
    ev.add_argument("--json", action="store_true", help="print JSON")

    tr = sub.add_parser("train", help="train a generator on CTs with lung masks")
    tr.add_argument("--variant", default="baseline", choices=tuple(VARIANTS), help="baseline (BCE only) or the critic to train against")
    tr.add_argument("--kaggle", nargs="?", const="shared", metavar="FOLDER", help="train on the Kaggle 2D slices (x_train, part held out for validation)")
    tr.add_argument("--add-kaggle", nargs="?", const="shared", metavar="FOLDER",
                    help="add the Kaggle 2D slices (all of x_train, their intensities calibrated to HU) to the 3D scans' "
                    "training slices; the epoch is still chosen on the scans")
    tr.add_argument("--val-fraction", type=_number(0.0, 1.0, low_open=True, high_open=True), default=None,
                    help="share of the training slices held out for validation when no validation data is named "
                    "(default 0.15; 0.2 of x_train with --kaggle)")
    tr.add_argument("--config", metavar="JSON", help="the training settings as one JSON file (TrainConfig.to_dict), "
                    "instead of the setting options")
    tr.add_argument("--pair", nargs=2, action="append", metavar=("CT", "MASK"), default=[], help="a training CT and its mask (repeat)")
    tr.add_argument("--val-pair", nargs=2, action="append", metavar=("CT", "MASK"), default=[], help="a validation CT and its mask (repeat)")
    tr.add_argument("--references", action="store_true", help="train on the shared 3D series with their reference masks")
    tr.add_argument("--val-case", action="append", default=[], help="with --references: reference case(s) held out for validation")
    tr.add_argument("--epochs", type=_count(1, 100_000), default=30)
    tr.add_argument("--batch-size", type=_count(1, 4096), default=8)
    tr.add_argument("--lr", type=POSITIVE, default=1e-3)
    tr.add_argument("--weight-decay", type=_number(0.0, 1.0), default=1e-5)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-augment", action="store_true")
    tr.add_argument("--input-size", type=_count(*LIMITS["input_size"]), default=DEFAULT_INPUT_SIZE)
    tr.add_argument("--base-channels", type=_count(*LIMITS["base_channels"]), default=DEFAULT_BASE_CHANNELS)
    tr.add_argument("--depth", type=_count(*LIMITS["depth"]), default=DEFAULT_DEPTH)
    tr.add_argument("--norm", default="batch", choices=("batch", "instance", "none"), help="generator normalisation")
    tr.add_argument("--steps-per-epoch", type=_count(1, 10_000_000), default=None, help="at most this many steps per epoch")
    tr.add_argument("--patience", type=_count(1, 10_000_000), default=None, metavar="N",
                    help="stop once validation Dice has not improved for N epochs (--epochs stays the schedule's length)")
    tr.add_argument("--n-critic", type=_count(1, 100), default=2, help="critic steps per generator step")
    tr.add_argument("--adv-weight", type=_number(0.0, 1e6), default=0.01, help="weight of the adversarial term (lambda)")
    tr.add_argument("--lipschitz", default="gp", choices=("gp", "clip"), help="gradient penalty or weight clipping")
    tr.add_argument("--gp-weight", type=_number(0.0, 1e6), default=10.0)
    tr.add_argument("--clip", type=POSITIVE, default=0.01, help="weight-clipping bound (with --lipschitz clip)")
    tr.add_argument("--critic-lr", type=POSITIVE, default=1e-4)
    tr.add_argument("--critic-channels", type=_count(1, 256), default=8)
    tr.add_argument("--critic-depth", type=_count(1, 8), default=4)
    tr.add_argument("--lesions", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability that a slice gets synthetic nodules or masses drawn into its lung (label kept)")
    tr.add_argument("--dense-lung", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability of a dependent density gradient or patchy consolidation (label kept)")
    tr.add_argument("--masking", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability that 70%% of a slice's patches are hidden (maskedSeg)")
    tr.add_argument("--hard-negatives", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability that a slice gets a mediastinal vessel or node bulging into its lung, the label "
                         "cut around it (one slice only)")
    tr.add_argument("--dense-weight", type=POSITIVE, default=1.0, metavar="W",
                    help="BCE weight of lung pixels denser than -320 HU (lesions, dense lung, vessels); 1: all pixels alike")
    tr.add_argument("--appearance", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability that a slice is made to look like another scan: coarse, noisy, recalibrated, "
                    "emphysematous (label kept)")
    tr.add_argument("--context-mm", type=_number(0.0, 100.0), default=0.0, metavar="MM",
                    help="2.5D: the generator also sees the slices nearest MM below and above (0: one slice; the baseline, "
                         "with or without --lesions)")
    tr.add_argument("--lesion-weight", type=POSITIVE, default=1.0, metavar="W",
                    help="BCE weight of the lung pixels that --lesions and --dense-lung drew; 1: like the others")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.add_argument("--progress-json", action="store_true", help="report steps and epochs as JSON lines on stdout (for Slicer)")
    tr.add_argument("--init-model", help="start from these weights (fine-tuning)")
    tr.add_argument("--run-dir", required=True, help="folder for checkpoints and logs")
    tr.add_argument("-o", "--output", required=True, help="where the best generator is exported (.safetensors)")
    tr.add_argument("--overwrite", action="store_true", help="replace the output model if it exists")
    tr.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    tr.add_argument("--device", default="auto")

    cmp = sub.add_parser("compare", help="the paper's comparison of the variants on the shared data; writes docs/results.md")
    cmp.add_argument("-o", "--output", default=str(REPO_DOCS / "results.md"), help="report to write (plots go beside it)")
    cmp.add_argument("--work-dir", default="runs/compare", help="folder for the runs' checkpoints and logs")
    cmp.add_argument("--part", action="append", choices=("kaggle", "lovo"), help="run only this part (repeat)")
    cmp.add_argument("--variant", action="append", default=[], help="Kaggle variants (repeat; default: all six)")
    cmp.add_argument("--seed", action="append", type=int, default=[], help="Kaggle seeds (repeat; default: 0 1 2)")
    cmp.add_argument("--kaggle-epochs", type=_count(1, 100_000), default=20)
    cmp.add_argument("--clip-variant", action="append", help="also train this variant with weight clipping (default: regression)")
    cmp.add_argument("--lovo-variant", action="append", default=[], help="3D-table variants (repeat; default: all six)")
    cmp.add_argument("--lovo-epochs", type=_count(1, 100_000), default=3)
    cmp.add_argument("--lovo-steps", type=_count(1, 10_000_000), default=25, help="steps per epoch in the 3D folds")
    cmp.add_argument("--lovo-patience", type=_count(1, 100_000), default=None, metavar="N",
                     help="end a 3D fold once validation Dice has not improved for N epochs (--lovo-epochs: at most)")
    cmp.add_argument("--patient", action="append", default=[], help="3D-table patients left out in turn (default: all four)")
    cmp.add_argument("--report-only", action="store_true", help="rewrite the report from its results.json without training")
    cmp.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints in --work-dir")
    cmp.add_argument("--device", default="auto")

    ov = sub.add_parser("overlay", help="draw a mask over its CT: a PNG mosaic of axial slices")
    ov.add_argument("ct", help="the CT")
    ov.add_argument("mask", help="a mask of that CT")
    ov.add_argument("-o", "--output", required=True, help="PNG to write")
    ov.add_argument("--slices", type=_count(1, 1000), default=None,
                    help="how many slices: spread through the lungs (default 24), or the most suspicious with --review (default 12)")
    ov.add_argument("--review", metavar="FILE.json", help="draw the slices a review flagged (segment --review), most "
                    "suspicious first, each flagged region outlined in yellow; tiles are numbered as in the file")
    ov.add_argument("--columns", type=_count(1, 50), default=6)
    ov.add_argument("--tile", type=_count(16, 4096), default=256, help="largest side of a tile in pixels")
    ov.add_argument("--overwrite", action="store_true")

    ref = sub.add_parser("references", help="regenerate the reference masks of the shared 3D series")
    ref.add_argument("--output-dir", help="default: Testing/Data/ReferenceMasks")
    ref.add_argument("--mosaic-dir", help="overlay mosaics (default: docs/reference-masks)", default=str(REPO_DOCS / "reference-masks"))
    ref.add_argument("--case", action="append", default=[], help="only this case (repeat)")
    return parser
