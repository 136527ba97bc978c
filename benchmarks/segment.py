"""Benchmark: `segment` end to end on shared CTs, beside lungmask's R231 pipeline.

Each (method, CT) pair runs in a fresh child process, which reports its wall
time (reading, segmenting, writing) and its peak resident memory, so the runs
do not share caches or allocations. Methods:

- ``gan``: LungGAN's generator (the shipped model) + post-processing with the lesion envelope;
- ``gan-before``: the pipeline as it was before the lesion work: ``--before-model``
  (the previous default generator) and no lesion envelope, for a side-by-side
  timing in the same run;
- ``gan-previous``: ``--before-model`` through the post-processing it shipped with (no outline growth, no
  never-lung guard rail): the previous default as it shipped, side by side;
- ``gan-review``: ``gan`` with ``--review`` (the slices most likely wrong, written beside the mask), for the
  review's cost side by side;
- ``gan-masses``: ``gan`` with ``--masses`` (the lesion generator run beside it to find masses), for that
  pass's cost side by side;
- ``classical``: LungGAN's threshold/morphology method;
- ``classical-review``: ``classical`` with ``--review``, whose second opinion is the shipped generator's mask;
- ``lungmask``: lungmask's R231 pipeline (``LMInferer.apply``: its preprocessing,
  U-Net and post-processing). Its weights cannot be downloaded here, so its
  U-Net gets random weights: the same cost, a meaningless mask.

The 600- and 1200-slice cases are lidc-idri-0002 resampled along z to 600 slices
(0.54 mm) and 1200 slices (0.27 mm), real thin-slice-like chest CTs of that size,
written to a temporary folder.

Usage:
    python benchmarks/segment.py [--methods gan classical lungmask] [--cases ...] [--device cpu]
Writes a Markdown table on stdout (copy it to docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.evaluate.references import data_dir  # noqa: E402

CASES = {
    "elastix-00": "ct/elastix-00.nii.gz",
    "lidc-idri-0001": "ct/lidc-idri-0001.nii.gz",
    "lidc-idri-0002": "ct/lidc-idri-0002.nii.gz",
    "lidc-idri-0002-600": 600,  # made on the fly: this many slices
    "lidc-idri-0002-1200": 1200,
}


def make_resampled(tmp: Path, slices: int) -> Path:
    """lidc-idri-0002 resampled to ``slices`` slices (linear in z), as a .nii.gz."""
    import SimpleITK as sitk

    src = sitk.ReadImage(str(data_dir() / CASES["lidc-idri-0002"]))
    size = list(src.GetSize())
    spacing = list(src.GetSpacing())
    new_spacing = spacing[2] * (size[2] - 1) / (slices - 1)
    out = sitk.Resample(
        src,
        [size[0], size[1], slices],
        sitk.Transform(),
        sitk.sitkLinear,
        src.GetOrigin(),
        [spacing[0], spacing[1], new_spacing],
        src.GetDirection(),
        -1024,
        sitk.sitkInt16,
    )
    path = tmp / f"lidc-idri-0002-{slices}.nii.gz"
    sitk.WriteImage(out, str(path))
    return path


def run_one(method: str, ct: str, out: str, device: str, batch_size: int, before_model: str | None = None) -> dict:
    """Run one segmentation in this process and report time and peak memory."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    if method in ("gan", "classical", "gan-before", "gan-previous", "gan-review", "gan-masses", "classical-review"):
        from LungGANLib.segment.inference import SegmentOptions, segment_file

        if method in ("gan-before", "gan-previous") and not before_model:
            raise SystemExit(f"{method} needs --before-model")
        if method == "gan-before":
            options = SegmentOptions(model=before_model, envelope=False, drop_domes=False, trim_rim=False, device=device,
                                     batch_size=batch_size or None, guard_rail=False,
                                     grow_outline=False, grow_bases=False, remove_airways=False)  # as before the lesion work
        elif method == "gan-previous":
            options = SegmentOptions(model=before_model, device=device, batch_size=batch_size or None, guard_rail=False,
                                     grow_outline=False, grow_bases=False, remove_airways=False)
        else:
            options = SegmentOptions(method="classical" if method.startswith("classical") else "gan", device=device,
                                     batch_size=batch_size or None, masses=method == "gan-masses")
        review = str(Path(out).with_name("review.json")) if method.endswith("-review") else None
        result = segment_file(ct, out, options, overwrite=True, review_path=review)
        extra = {"right_ml": round(result.right_ml), "left_ml": round(result.left_ml)}
    elif method == "lungmask":
        import SimpleITK as sitk
        from lungmask.mask import LMInferer
        from lungmask.resunet import UNet

        inferer = LMInferer.__new__(LMInferer)
        inferer.fillmodel, inferer.fillmodelm, inferer.modelname = None, None, "R231-random-weights"
        inferer.force_cpu, inferer.batch_size = device == "cpu", batch_size or 20
        inferer.volume_postprocessing, inferer.tqdm_disable = True, True
        inferer.device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        inferer.model = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
        inferer.model.eval().to(inferer.device)
        image = sitk.ReadImage(ct)
        mask = inferer.apply(image)
        written = sitk.GetImageFromArray(mask)
        written.CopyInformation(image)
        sitk.WriteImage(written, out)
        extra = {}
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, "seconds": seconds, "peak_mb": peak_mb, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["gan", "classical", "lungmask"])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=0, help="0: LungGAN's default (lungmask: 20)")
    parser.add_argument("--before-model", help="for gan-before and gan-previous: the previous default generator")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.out, args.device, args.batch_size, args.before_model)))
        return

    import SimpleITK as sitk
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            ct = make_resampled(tmp, CASES[case]) if isinstance(CASES[case], int) else data_dir() / CASES[case]
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(ct))
            reader.ReadImageInformation()
            size = reader.GetSize()
            for method in args.methods:
                out = tmp / f"{case}-{method}.nii.gz"
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", method, str(ct), "--out", str(out), "--device", args.device,
                     "--batch-size", str(args.batch_size), *(["--before-model", args.before_model] if args.before_model else [])],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if proc.returncode != 0:
                    print(f"{case} {method} failed:\n{proc.stderr}", file=sys.stderr)
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                result.update(case=case, size="x".join(map(str, size)), slices=size[2])
                result["slices_per_s"] = size[2] / result["seconds"]
                rows.append(result)
                print(json.dumps(result), file=sys.stderr)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; device {args.device}\n")
    print("| case | size (x×y×z) | method | seconds | slices/s | peak memory (MB) |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['size']} | {r['method']} | {r['seconds']:.1f} | {r['slices_per_s']:.1f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
