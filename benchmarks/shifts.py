"""How the shipped models hold up on scans acquired unlike the ones they were trained on.

Scans from another site differ from ours first in how they were acquired and reconstructed. Each scan the
shipped models never trained on (lidc-idri-0001, their validation scan; LUNG1-002, radiation oncologists'
lungs, GTV left out; cip-ct-64, 64 px at 4 mm) is changed the way another scanner or protocol would make it,
then segmented with each shipped model, the default with ``--masses`` and the classical method, with their
defaults (what ``lunggan segment`` does), and scored against its reference changed alike:

- ``noise 40 HU`` and ``noise 80 HU``: a lower dose, as Gaussian noise smoothed over 0.6 mm (a CT's noise is
  correlated over a pixel or so), scaled to that standard deviation;
- ``sharp kernel``: a lung or bone kernel, as the detail finer than 1 mm doubled (unsharp masking) and 50 HU
  of finer noise;
- ``thick slices``: slices of 5 mm or more, each the mean of as many neighbouring slices (the reference: the
  label most of them have; a lesion where any has it);
- ``coarse pixels``: in-plane pixels twice as large (under 1 mm only), each the mean of a 2 x 2 block;
- ``+40 HU`` and ``-40 HU``: a calibration off by that much, or lung denser or lighter than ours (another
  inspiration);
- ``emphysema``: the reference lung's voxels below -500 HU moved 60 % of the way to air (-1000 HU);
- ``field of view at the ribs``: the scan cut in-plane 5 mm outside the reference lungs, as a small field of view
  reconstructs it, the chest wall and the air around the body partly gone;
- ``field of view through the lungs``: cut 5 mm inside them, so that the lungs run into the image's edge (a large
  patient in a small field of view);
- ``round field of view through the lungs``: the same with a round field of view and the scanner's padding
  (-2048 HU) outside it, as LIDC-IDRI's scans are stored;
- ``the same, padded as air``: with -1024 HU outside it instead, where a clip at -1024 met the padding (as
  elastix-00, LUNG1-002 and Lung-PET-CT-Dx A0001 are stored);
- ``a small chest``: the scan scaled to 0.6 in-plane about its centre, the same pixel size, the scan's lowest value
  around it: a small patient, or a chest in a large field of view (PET/CT's 600-700 mm), whose lungs span little
  of the image (under 1 mm pixels only: cip-ct-64's body already runs into its image's edges).

The reference of a cut scan is what the scan still shows.

Not simulated: metal and motion, and contrast in the blood, which two of the three scans have: the tissue between
the lungs (-50 to 400 HU, within their hull, on the middle half of their slices) has a median of 94 HU on
lidc-idri-0001 and 119 on LUNG1-002, against 26-37 on the scans the shipped models trained on and 41 on cip-ct-64,
so the unchanged rows measure it.

Rows (Dice and HD95 outside the marked lesions, spill as in ``benchmarks/folds.py``) go to
``docs/results/shifts.json``; ``--report`` writes the section of ``docs/results.md``.

Usage:
    python benchmarks/shifts.py [--json docs/results/shifts.json] [--report docs/results.md] [--report-only]
        [--shifts SHIFT ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds  # noqa: E402

from LungGANLib.evaluate.summary import SHIFTS_BEGIN, SHIFTS_END  # noqa: E402
from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402

#: The scans no shipped model trained on: the models' validation scan and the two external ones.
CASES = ("lidc-idri-0001", folds.LUNG1, folds.CIP)
#: The shipped models (None: the default), the default with the masses joined (``--masses``) and the classical
#: method, in the table's order.
MODELS = {"default": None, "lunggan-conservative": "Resources/Models/lunggan-conservative.safetensors",
          "lunggan-lesions": "Resources/Models/lunggan-lesions.safetensors", "classical": "classical",
          "default --masses": "masses"}
THICK_MM, FOV_MARGIN_MM, SEED = 5.0, 5.0, 0
#: A scanner's padding outside its round field of view (LIDC-IDRI's: -2048 and -3024).
PADDING_VALUE = -2048.0
#: The same padding where a clip at -1024 HU met it, as elastix-00, LUNG1-002 and Lung-PET-CT-Dx A0001 store it.
AIR_PADDING_VALUE = -1024.0
#: How far the emphysema shift moves the lung towards air.
EMPHYSEMA_SHARE = 0.6
#: The small chest's scale, in-plane.
SMALL_CHEST = 0.6


def noisy(hu: np.ndarray, spacing, sigma: float, correlation_mm: float, seed: int = SEED) -> np.ndarray:
    """``hu`` with Gaussian noise smoothed in-plane over ``correlation_mm``, scaled to ``sigma`` HU."""
    noise = np.random.default_rng(seed).standard_normal(hu.shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, (0, correlation_mm / spacing[1], correlation_mm / spacing[0]))
    return hu + noise * np.float32(sigma / noise.std())


def sharpened(hu: np.ndarray, spacing) -> np.ndarray:
    """A sharp kernel: the detail finer than 1 mm doubled, and 50 HU of noise over 0.4 mm."""
    detail = hu - ndimage.gaussian_filter(hu, (0, 1.0 / spacing[1], 1.0 / spacing[0]))
    return noisy(hu + detail, spacing, 50.0, 0.4)


def _majority(labels: np.ndarray, groups: int, axis: int, block: int) -> np.ndarray:
    """Per block of ``block`` voxels along ``axis``: the label most of them have (0, 1 or 2; ties to the lower)."""
    shape = list(labels.shape)
    shape[axis : axis + 1] = [groups, block]
    blocks = labels.reshape(shape)
    counts = np.stack([(blocks == v).sum(axis=axis + 1) for v in (0, 1, 2)])
    return counts.argmax(axis=0).astype(labels.dtype)


def thick(case: folds.Case) -> folds.Case | None:
    """Slices of THICK_MM or more: each the mean of ``k`` neighbours; None where the slices already are."""
    k = int(np.ceil(THICK_MM / case.ct.spacing[2] - 1e-6))
    if k < 2:
        return None
    n = case.ct.array.shape[0] // k * k
    hu = case.ct.array[:n].astype(np.float32).reshape(-1, k, *case.ct.array.shape[1:]).mean(axis=1)
    ref = _majority(case.ref[:n], n // k, 0, k)
    left_out = case.left_out[:n].reshape(-1, k, *case.left_out.shape[1:]).any(axis=1)
    spacing = (case.ct.spacing[0], case.ct.spacing[1], case.ct.spacing[2] * k)
    return replace(case, ct=replace(case.ct, array=hu, spacing=spacing), ref=ref, left_out=left_out, lesions=[])


def coarse(case: folds.Case) -> folds.Case | None:
    """In-plane pixels twice as large, each the mean of a 2 x 2 block; None for pixels of 1 mm or more."""
    if max(case.ct.spacing[:2]) >= 1.0:
        return None
    z, y, x = case.ct.array.shape
    y, x = y // 2 * 2, x // 2 * 2
    hu = case.ct.array[:, :y, :x].astype(np.float32).reshape(z, y // 2, 2, x // 2, 2).mean(axis=(2, 4))
    ref = case.ref[:, :y, :x].reshape(z, y // 2, 2, x // 2, 2).transpose(0, 1, 3, 2, 4).reshape(z, y // 2, x // 2, 4)
    ref = _majority(ref, 1, 3, 4)[..., 0]
    left_out = case.left_out[:, :y, :x].reshape(z, y // 2, 2, x // 2, 2).any(axis=(2, 4))
    spacing = (case.ct.spacing[0] * 2, case.ct.spacing[1] * 2, case.ct.spacing[2])
    return replace(case, ct=replace(case.ct, array=hu, spacing=spacing), ref=ref, left_out=left_out, lesions=[])


def field_of_view(case: folds.Case, margin_mm: float = FOV_MARGIN_MM) -> folds.Case:
    """The scan cut in-plane ``margin_mm`` outside the reference lungs (inside them where negative): a small field
    of view, as a square; the reference is what it still shows."""
    _, ys, xs = np.nonzero(case.ref)
    my, mx = (int(np.ceil(margin_mm / s)) if margin_mm >= 0 else -int(np.ceil(-margin_mm / s))
              for s in (case.ct.spacing[1], case.ct.spacing[0]))
    rows = slice(max(ys.min() - my, 0), ys.max() + my + 1)
    cols = slice(max(xs.min() - mx, 0), xs.max() + mx + 1)
    cut = (slice(None), rows, cols)
    return replace(case, ct=replace(case.ct, array=np.ascontiguousarray(case.ct.array[cut])), ref=case.ref[cut],
                   left_out=case.left_out[cut], lesions=[])


def round_field_of_view(case: folds.Case, margin_mm: float = -FOV_MARGIN_MM,
                        padding: float | None = None) -> folds.Case:
    """A round field of view centred on the lungs, its radius half their width plus ``margin_mm`` (negative: it
    cuts them), with ``padding`` outside it (None: the scanner's, PADDING_VALUE, as LIDC-IDRI's scans have); the
    reference is what it still shows."""
    _, ys, xs = np.nonzero(case.ref)
    sy, sx = case.ct.spacing[1], case.ct.spacing[0]
    cy, cx = (ys.min() + ys.max()) / 2 * sy, (xs.min() + xs.max()) / 2 * sx
    radius = (xs.max() - xs.min() + 1) / 2 * sx + margin_mm
    yy, xx = np.ogrid[: case.ct.array.shape[1], : case.ct.array.shape[2]]
    outside = (yy * sy - cy) ** 2 + (xx * sx - cx) ** 2 > radius**2
    hu = case.ct.array.astype(np.float32)
    hu[:, outside] = PADDING_VALUE if padding is None else padding
    return replace(case, ct=replace(case.ct, array=hu), ref=np.where(outside[None], 0, case.ref).astype(case.ref.dtype),
                   left_out=case.left_out & ~outside[None], lesions=[])


def small_chest(case: folds.Case, scale: float = SMALL_CHEST) -> folds.Case | None:
    """The scan and its reference scaled by ``scale`` in-plane about the image's centre, at the same pixel size,
    the scan's lowest value around them; None for pixels of 1 mm or more."""
    if max(case.ct.spacing[:2]) >= 1.0:
        return None

    def scaled(a: np.ndarray, order: int, fill: float) -> np.ndarray:
        small = ndimage.zoom(a, (1, scale, scale), order=order)
        out = np.full(a.shape, fill, dtype=small.dtype)
        y0, x0 = ((n - m) // 2 for n, m in zip(a.shape[1:], small.shape[1:]))
        out[:, y0 : y0 + small.shape[1], x0 : x0 + small.shape[2]] = small
        return out

    hu = case.ct.array.astype(np.float32)
    return replace(case, ct=replace(case.ct, array=scaled(hu, 1, float(hu.min()))), ref=scaled(case.ref, 0, 0),
                   left_out=scaled(case.left_out.astype(np.uint8), 0, 0) > 0, lesions=[])


def emphysema(case: folds.Case) -> folds.Case:
    """The reference lung's voxels below -500 HU moved 60 % of the way to air (-1000 HU): emphysema (lung1-002's
    median -799 HU goes to about -920, lidc-idri-0001's -873 to about -950)."""
    hu = case.ct.array.astype(np.float32)
    lung = (case.ref > 0) & (hu < -500)
    hu[lung] = -1000 + (hu[lung] + 1000) * (1 - EMPHYSEMA_SHARE)
    return _hu(case, hu)


def _hu(case: folds.Case, hu: np.ndarray) -> folds.Case:
    return replace(case, ct=replace(case.ct, array=hu.astype(np.float32)), lesions=[])


#: Each shift: a name and what it makes of a case (None: not applicable to it).
SHIFTS = {
    "none": lambda c: c,
    "noise 40 HU": lambda c: _hu(c, noisy(c.ct.array.astype(np.float32), c.ct.spacing, 40.0, 0.6)),
    "noise 80 HU": lambda c: _hu(c, noisy(c.ct.array.astype(np.float32), c.ct.spacing, 80.0, 0.6)),
    "sharp kernel": lambda c: _hu(c, sharpened(c.ct.array.astype(np.float32), c.ct.spacing)),
    "thick slices": thick,
    "coarse pixels": coarse,
    "+40 HU": lambda c: _hu(c, c.ct.array.astype(np.float32) + 40.0),
    "-40 HU": lambda c: _hu(c, c.ct.array.astype(np.float32) - 40.0),
    "emphysema": emphysema,
    "field of view at the ribs": field_of_view,
    "field of view through the lungs": lambda c: field_of_view(c, -FOV_MARGIN_MM),
    "round field of view through the lungs": round_field_of_view,
    "the same, padded as air": lambda c: round_field_of_view(c, padding=AIR_PADDING_VALUE),
    "a small chest": small_chest,
}


def rows_for(name: str, done: set):
    """Every shift of one case, segmented by every model, row by row; ``done``: (case, shift, model) already in the
    rows."""
    case = folds.load_case(name)
    for shift, make in SHIFTS.items():
        if all((name, shift, m) in done for m in MODELS):
            continue
        changed = make(case)
        if changed is None:
            continue
        for model_name, model in MODELS.items():
            if (name, shift, model_name) in done:
                continue
            classical, masses = model == "classical", model == "masses"
            options = SegmentOptions(method="classical" if classical else "gan", masses=masses, device="cpu",
                                     model=None if classical or masses or model is None else str(REPO / model))
            findings: dict = {}
            start = time.perf_counter()
            labels = segment(changed.ct, options, findings=findings)
            findings["removed"] = options.guard_rail
            row = {"case": name, "shift": shift, "model": model_name, "shape": list(changed.ct.array.shape),
                   "spacing_mm": [round(float(s), 3) for s in changed.ct.spacing],
                   "seconds": round(time.perf_counter() - start, 1), **folds.score(changed, labels, findings)}
            print(json.dumps(row), flush=True)
            yield row


def report(rows: list[dict]) -> str:
    """The section of ``docs/results.md``: Dice outside lesions (HD95 mm) per case, shift and model."""
    lines = [
        "## Scans acquired unlike ours: the same scans, changed as another scanner would make them",
        "",
        "Made by `python benchmarks/shifts.py --report docs/results.md`; rows in [`results/shifts.json`](results/shifts.json). "
        "Each scan no shipped model trained on is changed (the script's docstring says how: noise, a sharp kernel, "
        "thick slices, coarse pixels, a calibration offset, emphysema, a small field of view, a small chest), "
        "segmented by each shipped model and the classical method with their defaults, and scored against its "
        "reference changed alike. "
        "Cells: Dice outside "
        "the marked lesions (LUNG1-002: the GTV), then HD95 in mm; *change*: the Dice against the unchanged scan's. "
        "`–`: the change does not apply (the slices or pixels are already that coarse).",
        "",
    ]
    models = list(dict.fromkeys(r["model"] for r in rows))
    for name in dict.fromkeys(r["case"] for r in rows):
        base = {r["model"]: r["dice"] for r in rows if r["case"] == name and r["shift"] == "none"}
        lines += [f"**{name}**", "", "| shift | " + " | ".join(f"{m} | change" for m in models) + " |",
                  "|---|" + "---:|---:|" * len(models)]
        for shift in SHIFTS:
            cells = {r["model"]: r for r in rows if r["case"] == name and r["shift"] == shift}
            if not cells:
                lines.append(f"| {shift} | " + " | ".join("– | –" for _ in models) + " |")
                continue
            out = []
            for m in models:
                r = cells.get(m)
                out.append("– | –" if r is None else
                           f"{r['dice']:.4f} ({r['hd95_mm']:.1f}) | {r['dice'] - base[m]:+.4f}" if m in base else
                           f"{r['dice']:.4f} ({r['hd95_mm']:.1f}) | –")
            lines.append(f"| {shift} | " + " | ".join(out) + " |")
        lines.append("")
    worst = {m: min(r["dice"] - next(b["dice"] for b in rows if b["case"] == r["case"] and b["model"] == m and
                                     b["shift"] == "none") for r in rows if r["model"] == m) for m in models}
    lines.append("Largest fall from the unchanged scan, over every scan and shift: " +
                 ", ".join(f"{m} {worst[m]:+.4f}" for m in models) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    folds.results_arguments(parser, "shifts")
    parser.add_argument("--shifts", nargs="+", choices=list(SHIFTS), default=list(SHIFTS), metavar="SHIFT",
                        help="only these shifts (default: all)")
    args = parser.parse_args()
    path = Path(args.json)
    rows = json.loads(path.read_text()) if path.exists() else []
    if not args.report_only:  # resumable: rows already written are kept
        done = {(r["case"], r["shift"], r["model"]) for r in rows}
        done |= {(name, shift, m) for name in CASES for shift in SHIFTS if shift not in args.shifts for m in MODELS}
        for name in CASES:
            for row in rows_for(name, done):
                rows.append(row)
                text = json.dumps(rows, indent=1) + "\n"
                atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    if args.report:
        folds.write_section(Path(args.report), report(rows), SHIFTS_BEGIN, SHIFTS_END)


if __name__ == "__main__":
    main()
