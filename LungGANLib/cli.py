"""The ``lunggan`` command line: what segment, evaluate, train, compare, overlay and references do.

The options are :mod:`LungGANLib.cli_parser`'s. Errors the user can fix are printed as one
line (``lunggan: error: ...``) with exit status 2, and no output file is left behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path

from .cli_parser import build_parser
from .errors import LungGANError
from .progress import ProgressBar, emit_json

logger = logging.getLogger("lunggan")


def segment_options(args: argparse.Namespace):
    """The :class:`~LungGANLib.segment.inference.SegmentOptions` of a ``lunggan segment`` command line."""
    from .segment.inference import SegmentOptions

    return SegmentOptions(
        method=args.method,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        single_label=args.single_label,
        fill_holes=not args.no_fill_holes,
        envelope=not args.no_envelope,
        trim_rim=not args.no_rim_trim,
        drop_domes=not args.keep_domes,
        guard_rail=not args.no_guard_rail,
        grow_outline=not args.no_outline_growth,
        grow_bases=not args.no_base_growth,
        remove_airways=not args.keep_airways,
        keep_bronchi=not args.no_bronchi,
        join_aerated=not args.no_aerated_join,
        masses=args.masses,
    )


def cmd_segment(args: argparse.Namespace) -> int:
    from .io.output import MASK_SUFFIXES, check_output_path
    from .models.weights import load_model
    from .segment.batch import is_folder_output, make_output_folder, plan, run
    from .segment.inference import model_name, resolve_device, segment_file
    from .io.volumes import image_stem
    from .segment.report import check_report_path, write_report
    from .segment.review_files import review_suffix

    options = segment_options(args)
    many = is_folder_output(args.output, args.input, args.all_series)
    if not many and len(args.input) > 1:
        raise LungGANError("several inputs need an output folder as -o")
    jobs = plan(args.input, args.output, args.format, args.all_series, args.series)
    report = check_report_path(args.report, args.overwrite) if args.report else None
    review_format = args.review if args.review in ("json", "csv") else None
    if args.review and not review_format:
        if many:
            raise LungGANError("with several inputs give --review json or --review csv: one file goes beside each mask")
        review_suffix(args.review)
    if not many:  # one scan: a bad output is refused before any work, as before
        check_output_path(jobs[0].output, args.overwrite, MASK_SUFFIXES)
    model = None
    if options.method == "gan" or args.review:  # loaded once for all scans (a classical mask's review runs it)
        device = resolve_device(options.device)
        model = load_model(options.model, device)
    make_output_folder(jobs)
    scans = ProgressBar("scans", unit="scan") if many and not (args.quiet or args.progress_json) else None

    def review_path(job):
        if not args.review:
            return None
        if review_format is None:
            return Path(args.review)
        return job.output.with_name(f"{image_stem(job.output)}_review.{review_format}")

    def segment_one(job):
        if args.progress_json:
            progress = lambda done, total: emit_json("progress", input=str(job.input), done=done, total=total)  # noqa: E731
        else:
            progress = None if (args.quiet or many) else ProgressBar("segmenting")
        return segment_file(job.input, job.output, options, overwrite=args.overwrite, force=args.force,
                            series=job.series, progress=progress, model=model, review_path=review_path(job))

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
        # The warning that says why came from the segmentation; this line says what was written.
        print(f"wrote {row['output']}: an empty mask, no lungs found ({row['seconds']:.1f} s)")
    elif single_label:
        print(f"wrote {row['output']}: lungs {row['total_lung_ml']:.0f} mL ({row['seconds']:.1f} s)")
    else:
        print(f"wrote {row['output']}: right lung {row['right_lung_ml']:.0f} mL, left lung {row['left_lung_ml']:.0f} mL "
              f"({row['seconds']:.1f} s)")
    if row["status"] != "failed" and row.get("review_file"):
        print(f"wrote {row['review_file']}: {row['review_flagged_slices']} slices flagged for review")


def cmd_evaluate(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from .config import CANONICAL_ORIENTATION
    from .evaluate.lesions import (
        JUXTAPLEURAL_MM,
        SPILL_MM,
        lesion_report,
        load_lesions,
        spill_ml,
    )
    from .evaluate.metrics import evaluate_labels
    from .io.masks import check_label_image, check_lung_labels
    from .io.volumes import check_same_grid, load_ct, read_image, volume_from_image

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
    check_label_image(pred, str(args.pred))
    check_label_image(ref, str(args.ref))
    check_lung_labels(pred, str(args.pred))
    check_lung_labels(ref, str(args.ref))
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
    from .evaluate.references import build_references

    reports = build_references(args.output_dir, args.mosaic_dir, args.case or None, progress=lambda n: print(f"building {n}", file=sys.stderr))
    for r in reports:
        print(f"{r['name']}: right {r['right_lung_ml']:.0f} mL, left {r['left_lung_ml']:.0f} mL")
    return 0


def cmd_overlay(args: argparse.Namespace) -> int:
    from .evaluate.references import mosaic_slices
    from .evaluate.visualize import mosaic, save_png
    from .io.masks import check_label_image
    from .io.volumes import load_ct, mask_from_image, read_image

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
    check_label_image(labels, str(args.mask))
    if args.review:
        from .segment.review_files import read_review

        slices, boxes, numbers = read_review(args.review, volume, args.slices or 12)
        if not slices:
            print(f"{args.review} flags no slice: nothing to draw")
            return 0
        picture = mosaic(volume.array, labels, slices, columns=args.columns, tile=args.tile, boxes=boxes, numbers=numbers,
                         order="as given")
    else:
        picture = mosaic(volume.array, labels, mosaic_slices(labels, args.slices or 24), columns=args.columns, tile=args.tile)
    save_png(picture, out)
    print(f"wrote {out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train_command import run_training

    run_training(args)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from .train.compare import LOVO_PATIENTS, CompareConfig, run_compare
    from .train.compare_report import rebuild_report, write_report
    from .train.variants import get_variant

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


#: The function behind each subcommand (the parser is :func:`LungGANLib.cli_parser.build_parser`).
COMMANDS = {
    "segment": cmd_segment,
    "evaluate": cmd_evaluate,
    "train": cmd_train,
    "compare": cmd_compare,
    "overlay": cmd_overlay,
    "references": cmd_references,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lunggan`` console script."""
    parser = build_parser()
    console = argv is None
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    args.argv = argv
    # Without -v only warnings show, as one plain line each; -v adds where they come from.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "lunggan: warning: %(message)s")
    from .io.output import PUBLISHED

    if not args.verbose:
        # ITK's own warnings come raw, several lines each; what matters in them is said in our own lines.
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalWarningDisplay(False)
    PUBLISHED.clear()  # this run's files only
    previous = _exit_cleanly_on_sigterm()
    try:
        return COMMANDS[args.command](args)
    except LungGANError as exc:
        print(f"lunggan: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"lunggan: interrupted; {_written_before_interruption()}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            # From the console the process ends next, and shutting down takes a moment: a SIGTERM then
            # still gets its message and 143, not a silent death by the signal.
            signal.signal(signal.SIGTERM, _terminated_after_the_work if console else previous)


def _written_before_interruption() -> str:
    """What this run wrote completely, from what was published (a file in progress is never at its name)."""
    from .io.output import PUBLISHED

    if not PUBLISHED:
        return "nothing was written"
    # A batch rewrites its report after each scan: each file is named once, where it was last written.
    files = list(reversed(dict.fromkeys(reversed(PUBLISHED))))
    shown = ", ".join(str(p) for p in files[-SHOWN_WRITTEN:])
    earlier = f"{len(files) - SHOWN_WRITTEN} earlier file(s) and " if len(files) > SHOWN_WRITTEN else ""
    return f"written completely before it: {earlier}{shown}; nothing else was written"


#: How many of the files written before an interruption are named (the last ones; the others are counted).
SHOWN_WRITTEN = 10


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; it unwinds like Ctrl-C, so temporary files are removed on the way out."""


def _terminated(signum, frame) -> None:
    raise Terminated


def _terminated_after_the_work(signum, frame) -> None:
    """SIGTERM once the command has finished, while the process shuts down: say so, and exit 143 at once."""
    sys.stdout.flush()
    print(f"lunggan: terminated as it was exiting; {_written_before_interruption()}", file=sys.stderr, flush=True)
    os._exit(143)


def _exit_cleanly_on_sigterm():
    """Make SIGTERM (Slicer's Cancel, a batch system's stop) end the run like Ctrl-C; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminated)


if __name__ == "__main__":
    sys.exit(main())
