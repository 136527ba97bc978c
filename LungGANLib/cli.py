"""The ``lunggan`` command line: segment, evaluate, train, references.

Errors the user can fix are printed as one line (``lunggan: error: ...``) with
exit status 2, and no output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from pathlib import Path

from .errors import LungGANError
from .progress import ProgressBar, emit_json

logger = logging.getLogger("lunggan")

REPO_DOCS = Path(__file__).resolve().parent.parent / "docs"


def cmd_segment(args: argparse.Namespace) -> int:
    from .batch import is_folder_output, make_output_folder, plan, run
    from .inference import SegmentOptions, model_name, resolve_device, segment_file
    from .output import MASK_SUFFIXES, check_output_path
    from .model_io import load_model
    from .report import check_report_path, write_report

    options = SegmentOptions(
        method=args.method,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        single_label=args.single_label,
        fill_holes=not args.no_fill_holes,
        envelope=not args.no_envelope,
    )
    many = is_folder_output(args.output, args.input, args.all_series)
    if not many and len(args.input) > 1:
        raise LungGANError("several inputs need an output folder as -o")
    jobs = plan(args.input, args.output, args.format, args.all_series, args.series)
    report = check_report_path(args.report, args.overwrite) if args.report else None
    if not many:  # one scan: a bad output is refused before any work, as before
        check_output_path(jobs[0].output, args.overwrite, MASK_SUFFIXES)
    model = None
    if options.method == "gan":  # loaded once for all scans
        device = resolve_device(options.device)
        model = load_model(options.model, device)
    make_output_folder(jobs)
    scans = ProgressBar("scans", unit="scan") if many and not (args.quiet or args.progress_json) else None

    def segment_one(job):
        if args.progress_json:
            progress = lambda done, total: emit_json("progress", input=str(job.input), done=done, total=total)  # noqa: E731
        else:
            progress = None if (args.quiet or many) else ProgressBar("segmenting")
        return segment_file(job.input, job.output, options, overwrite=args.overwrite, force=args.force,
                            series=job.series, progress=progress, model=model)

    done = []

    def say(row: dict) -> None:
        done.append(row)
        if args.progress_json and row["status"] != "failed":
            emit_json("done", input=row["input"], output=row["output"], right_ml=row["right_lung_ml"],
                      left_ml=row["left_lung_ml"], empty=row["status"] == "no lungs", seconds=row["seconds"])
        _say_row(row, many, args.single_label)
        if scans:
            scans(len(done), len(jobs))

    # One scan writes its report only when it succeeded: a failed call writes nothing.
    rows = run(jobs, segment_one, report if many else None, say, {"method": options.method, "model": model_name(options)})
    failed = sum(row["status"] == "failed" for row in rows)
    if report and not many and not failed:
        write_report(rows, report)
    if many:
        print(f"segmented {len(rows) - failed} of {len(rows)} scans" + (f"; {failed} failed" if failed else ""))
    if report and (many or not failed):
        print(f"wrote {report}")
    return 2 if failed else 0


def _say_row(row: dict, many: bool, single_label: bool) -> None:
    """One line per scan: what was written, or why it failed."""
    if row["status"] == "failed":
        print(f"lunggan: error: {row['input']}: {row['message']}" if many else f"lunggan: error: {row['message']}",
              file=sys.stderr, flush=True)
    elif row["status"] == "no lungs":
        print(f"warning: no lungs found in {row['input']}; wrote an empty mask to {row['output']}", file=sys.stderr)
    elif single_label:
        print(f"wrote {row['output']}: lungs {row['total_lung_ml']:.0f} mL ({row['seconds']:.1f} s)")
    else:
        print(f"wrote {row['output']}: right lung {row['right_lung_ml']:.0f} mL, left lung {row['left_lung_ml']:.0f} mL "
              f"({row['seconds']:.1f} s)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from .config import CANONICAL_ORIENTATION
    from .io import check_same_grid, load_ct, read_image, volume_from_image
    from .lesions import JUXTAPLEURAL_MM, SPILL_MM, lesion_report, load_lesions, spill_ml
    from .metrics import evaluate_labels

    pred_image, _ = read_image(args.pred)
    ref_image, _ = read_image(args.ref)
    # Compare in physical space: both on the same canonical (LPS) grid, whatever axis order each was saved in.
    pred_image = sitk.DICOMOrient(pred_image, CANONICAL_ORIENTATION)
    ref_image = sitk.DICOMOrient(ref_image, CANONICAL_ORIENTATION)
    check_same_grid(pred_image, ref_image, what="prediction", of="reference")
    if args.lesions and args.ct is None and any(Path(p).is_dir() for p in args.lesions):
        raise LungGANError("tumour boxes need the CT (their tissue is measured in HU): pass --ct")
    # Everything on the canonical grid of the CT (or of the reference, when no CT is given).
    volume = load_ct(args.ct, force=True) if args.ct else volume_from_image(ref_image, source=str(args.ref), force=True)
    pred, ref = sitk.GetArrayFromImage(pred_image), sitk.GetArrayFromImage(ref_image)
    if volume.array.shape != ref.shape:
        raise LungGANError(f"the CT {args.ct} is not the masks' grid ({volume.array.shape} voxels, not {ref.shape}): give their CT")
    results: dict = evaluate_labels(pred, ref, volume.spacing)
    lesions = []
    for marks in args.lesions:
        lesions += load_lesions(marks, volume, ref, args.boxes_dicom)
    spill, spill_percent = spill_ml(pred, ref, lesions, volume.spacing)
    results["spill"] = {"ml": spill, "percent_of_reference": spill_percent, "beyond_mm": SPILL_MM}
    if args.lesions:
        results["lesions"] = lesion_report(pred, ref, lesions, volume.spacing)
    if args.json:
        print(json.dumps(_json_safe(results), indent=2))
        return 0
    print(f"{'structure':<12} {'IoU':>7} {'Dice':>7} {'HD mm':>8} {'HD95 mm':>8} {'HD px':>7} {'HD95 px':>8}")
    for name, m in results.items():
        if name in ("spill", "lesions"):
            continue
        print(
            f"{name:<12} {m['iou']:7.4f} {m['dice']:7.4f} {m['hausdorff_mm']:8.2f} {m['hd95_mm']:8.2f} "
            f"{m['hausdorff_px']:7.2f} {m['hd95_px']:8.2f}"
        )
    print(f"spill: {spill:.1f} mL ({spill_percent:.2f} % of the reference lung) more than {SPILL_MM:g} mm outside it")
    if args.lesions:
        report = results["lesions"]
        print(f"\n{'lesion':<34} {'voxels':>7} {'inside':>7} {'diam mm':>8} juxtapleural (within {JUXTAPLEURAL_MM:g} mm)")
        for lesion in report["lesions"]:
            print(f"{lesion['name']:<34} {lesion['voxels']:7d} {lesion['inside']:7.1%} {lesion['diameter_mm']:8.1f} "
                  f"{'yes' if lesion['juxtapleural'] else 'no'}")
        for group in ("all", "juxtapleural"):
            summary = report[group]
            if summary["count"]:
                print(f"{group} lesions: {summary['count']}, least inside {summary['min_inside']:.1%}, "
                      f"pooled {summary['pooled_inside']:.1%}")
    return 0


def _json_safe(value):
    """Replace infinities and NaN (not JSON) by null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def cmd_references(args: argparse.Namespace) -> int:
    from .references import build_references

    reports = build_references(args.output_dir, args.mosaic_dir, args.case or None, progress=lambda n: print(f"building {n}", file=sys.stderr))
    for r in reports:
        print(f"{r['name']}: right {r['right_lung_ml']:.0f} mL, left {r['left_lung_ml']:.0f} mL")
    return 0


def cmd_overlay(args: argparse.Namespace) -> int:
    from .io import load_ct, mask_from_image, read_image
    from .references import mosaic_slices
    from .visualize import mosaic, save_png

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise LungGANError(f"overlay {out} must end in .png")
    if out.exists() and not args.overwrite:
        raise LungGANError(f"output {out} exists: choose another name or pass --overwrite")
    if not out.parent.exists():
        raise LungGANError(f"output folder {out.parent} does not exist: create it first")
    volume = load_ct(args.ct, force=True)
    mask_image, _ = read_image(args.mask)
    labels = mask_from_image(mask_image, volume)
    save_png(mosaic(volume.array, labels, mosaic_slices(labels, args.slices), columns=args.columns, tile=args.tile), out)
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train_command import run_training

    run_training(args)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from .compare import LOVO_PATIENTS, CompareConfig, run_compare
    from .compare_report import rebuild_report, write_report
    from .variants import get_variant

    for name in [*args.variant, *args.lovo_variant]:
        try:
            get_variant(name)
        except ValueError as exc:
            raise LungGANError(str(exc)) from None
    unknown = set(args.patient) - set(LOVO_PATIENTS)
    if unknown:
        raise LungGANError(f"unknown patient(s) {sorted(unknown)}: choose among {', '.join(LOVO_PATIENTS)}")
    defaults = CompareConfig()
    config = CompareConfig(
        variants=tuple(args.variant) or defaults.variants,
        seeds=tuple(args.seed) or defaults.seeds,
        kaggle_epochs=args.kaggle_epochs,
        clip_variants=tuple(args.clip_variant) if args.clip_variant is not None else defaults.clip_variants,
        lovo_variants=tuple(args.lovo_variant) or defaults.lovo_variants,
        lovo_epochs=args.lovo_epochs,
        lovo_steps=args.lovo_steps,
        lovo_patience=args.lovo_patience,
        patients=tuple(args.patient) or defaults.patients,
        resume=args.resume,
        device=args.device,
    )
    output = Path(args.output)
    if not output.parent.is_dir():
        raise LungGANError(f"output folder {output.parent} does not exist: create it first")
    if args.report_only:
        print(f"wrote {rebuild_report(output)}")
        return 0
    command = "lunggan " + " ".join(shlex.quote(a) for a in args.argv)
    runs, rows, seconds = run_compare(config, Path(args.work_dir), args.part or ("kaggle", "lovo"),
                                      say=lambda text: print(text, file=sys.stderr, flush=True))
    report = write_report(config, runs, rows, seconds, output, command)
    print(f"wrote {report}")
    return 0


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
    from .batch import FORMATS
    from .config import DEFAULT_BASE_CHANNELS, DEFAULT_DEPTH, DEFAULT_INPUT_SIZE
    from .inference import DEVICES, METHODS
    from .variants import VARIANTS

    from .model_io import LIMITS

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
    seg.add_argument("--report", metavar="FILE", help="lung report, one row per input: volumes, mean HU, LAA-950/-910, PD15 (.csv or .json)")
    seg.add_argument("--method", choices=METHODS, default="gan", help="gan: the trained generator; classical: thresholds and morphology")
    seg.add_argument("--model", help="generator weights (.safetensors); default: the shipped model")
    seg.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} (auto: cuda, then mps, then cpu)")
    seg.add_argument("--batch-size", type=_count(1, 4096), default=None, help="slices per forward pass (default: 8 on CPU, 64 on GPU)")
    seg.add_argument("--single-label", action="store_true", help="label both lungs 1 instead of right=1, left=2")
    seg.add_argument("--no-fill-holes", action="store_true", help="keep holes (vessels, nodules) out of the mask")
    seg.add_argument("--no-envelope", action="store_true",
                     help="do not take back nodules that sit in dents of the lung's outline at the chest wall")
    seg.add_argument("--series", help="SeriesInstanceUID when the DICOM folder holds several series")
    seg.add_argument("--overwrite", action="store_true", help="replace existing masks and report")
    seg.add_argument("--force", action="store_true", help="segment even if the input does not look like CT")
    seg.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    seg.add_argument("--progress-json", action="store_true", help="report progress as JSON lines on stdout (for Slicer)")
    seg.set_defaults(func=cmd_segment)

    ev = sub.add_parser("evaluate", help="compare a predicted mask with a reference mask")
    ev.add_argument("--pred", required=True, help="predicted mask")
    ev.add_argument("--ref", required=True, help="reference mask")
    ev.add_argument("--lesions", action="append", default=[], metavar="MARKS",
                    help="radiologists' lesion marks: an LIDC XML read file, or a folder of PASCAL-VOC tumour boxes (repeat)")
    ev.add_argument("--ct", help="the CT the masks belong to (needed for tumour boxes; default: the reference's grid)")
    ev.add_argument("--boxes-dicom", metavar="FOLDER",
                    help="the DICOM series the tumour boxes were drawn on (default: --ct when it is a DICOM folder)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="train a generator on CTs with lung masks")
    tr.add_argument("--variant", default="baseline", choices=tuple(VARIANTS), help="baseline (BCE only) or the critic to train against")
    tr.add_argument("--kaggle", nargs="?", const="shared", metavar="FOLDER", help="train on the Kaggle 2D slices (x_train, part held out for validation)")
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
    tr.add_argument("--dense-weight", type=POSITIVE, default=1.0, metavar="W",
                    help="BCE weight of lung pixels denser than -320 HU (lesions, dense lung, vessels); 1: all pixels alike")
    tr.add_argument("--appearance", type=PROBABILITY, default=0.0, metavar="P",
                    help="probability that a slice is made to look like another scan: coarse, noisy, recalibrated, "
                    "emphysematous (label kept)")
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
    tr.set_defaults(func=cmd_train)

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
    cmp.set_defaults(func=cmd_compare)

    ov = sub.add_parser("overlay", help="draw a mask over its CT: a PNG mosaic of axial slices")
    ov.add_argument("ct", help="the CT")
    ov.add_argument("mask", help="a mask of that CT")
    ov.add_argument("-o", "--output", required=True, help="PNG to write")
    ov.add_argument("--slices", type=_count(1, 1000), default=24, help="how many slices, spread through the lungs")
    ov.add_argument("--columns", type=_count(1, 50), default=6)
    ov.add_argument("--tile", type=_count(16, 4096), default=256, help="largest side of a tile in pixels")
    ov.add_argument("--overwrite", action="store_true")
    ov.set_defaults(func=cmd_overlay)

    ref = sub.add_parser("references", help="regenerate the reference masks of the shared 3D series")
    ref.add_argument("--output-dir", help="default: Testing/Data/ReferenceMasks")
    ref.add_argument("--mosaic-dir", help="overlay mosaics (default: docs/reference-masks)", default=str(REPO_DOCS / "reference-masks"))
    ref.add_argument("--case", action="append", default=[], help="only this case (repeat)")
    ref.set_defaults(func=cmd_references)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lunggan`` console script."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    args.argv = argv
    # Without -v only warnings show, as one plain line each; -v adds where they come from.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "lunggan: warning: %(message)s")
    from .output import PUBLISHED

    PUBLISHED.clear()  # this run's files only
    previous = _exit_cleanly_on_sigterm()
    try:
        return args.func(args)
    except LungGANError as exc:
        print(f"lunggan: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"lunggan: interrupted; {_written_before_interruption()}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _written_before_interruption() -> str:
    """What this run wrote completely, from what was published (a file in progress is never at its name)."""
    from .output import PUBLISHED

    if not PUBLISHED:
        return "nothing was written"
    shown = ", ".join(str(p) for p in PUBLISHED[-3:])
    more = f" and {len(PUBLISHED) - 3} more" if len(PUBLISHED) > 3 else ""
    return f"written completely before it: {shown}{more}; nothing else was written"


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; it unwinds like Ctrl-C, so temporary files are removed on the way out."""


def _terminated(signum, frame) -> None:
    raise Terminated


def _exit_cleanly_on_sigterm():
    """Make SIGTERM (Slicer's Cancel, a batch system's stop) end the run like Ctrl-C; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminated)


if __name__ == "__main__":
    sys.exit(main())
