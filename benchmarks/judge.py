"""A learned judge of (CT slice, mask) pairs, measured as the review is: does it point at the slices where a mask is wrong?

Issue 23 asks for a learned signal beside the review's anatomy checks: a network that scores a CT slice with
its mask, trained to regress the slice's error against the reference, from masks of every quality. This
trains one, leave one patient out, and measures it with the review's own measures (``benchmarks/review.py``:
the error on the top 10 % of slices as a share of the perfect ranking's, and the AUROC of slices with 2 mL of
error or more against those under 0.2 mL). It is not shipped; ``docs/review.md`` says what it found.

- Masks of each held-out scan: the default (the first baseline's fold generator with every rule), that
  generator with no rule (``folds.RULES["none"]``), the classical method, and three copies of the reference
  spoiled at random (four discs of 12-35 mm on the outline, added or taken away over 5-15 slices each).
- The error of a slice: spill and missed voxels against the reference, marked lesions left out, after a
  one-voxel in-plane opening (as in ``benchmarks/review.py``), in cm² of the slice, so slices of any
  thickness weigh alike; the network regresses its logarithm (log(1 + cm²)).
- The input: the slice's CT (-1000 to 400 HU) and mask over the body's box, averaged down to 80 × 80.
- The network: four blocks of two 3×3 convolutions (8, 16, 32, 32 channels), the mean and the maximum of the
  last, and two linear layers; AdamW, 12 epochs, batches of 64, left/right flips.
- Leave one patient out over the four training patients (A0001's two series together); then trained on all
  four and scored on LUNG1-002 (radiation oncologists' lungs) with the shipped default, the classical method
  and the lesion model shipped until 2026-12-06 (`folds.weak_model`).

Usage:
    python benchmarks/judge.py [--json docs/results/judge.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import folds  # noqa: E402
from review import auroc, capture, error_voxels  # noqa: E402

from LungGANLib.config import DEFAULT_CLASSICAL  # noqa: E402
from LungGANLib.segment.classical import body_mask  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402

SIZE, WIDTH, EPOCHS, SPOILED = 80, 8, 12, 3


def spoiled(mask: np.ndarray, body: np.ndarray, spacing, rng: np.random.Generator) -> np.ndarray:
    """The mask with four discs of 12-35 mm, centred on its outline, added (within the body) or taken away over
    5-15 slices each."""
    out = mask.copy()
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    yy, xx = np.mgrid[: mask.shape[1], : mask.shape[2]]
    for _ in range(4):
        zc, run = int(rng.choice(zs)), int(rng.integers(2, 8))
        ey, ex = np.nonzero(mask[zc] & ~ndimage.binary_erosion(mask[zc]))
        if not len(ey):
            continue
        i, radius = int(rng.integers(len(ey))), rng.uniform(12, 35) / spacing[0]
        disc = (yy - ey[i]) ** 2 + (xx - ex[i]) ** 2 <= radius**2
        add = rng.random() < 0.5
        for z in range(max(zc - run, 0), min(zc + run + 1, len(mask))):
            out[z] = (out[z] | (disc & body[z])) if add else (out[z] & ~disc)
    return out


def samples(case, masks: dict[str, np.ndarray]) -> dict:
    """Each mask's slices (the CT and the mask over the body's box, SIZE × SIZE) and their errors (cm²)."""
    hu, spacing = case.ct.array, case.ct.spacing
    box = ndimage.find_objects(body_mask(hu, DEFAULT_CLASSICAL).astype(np.uint8))[0]
    window = torch.from_numpy(hu[:, box[1], box[2]].astype(np.float32))[:, None].clamp(-1000, 400).add(1000).div(1400)
    ct = F.interpolate(window, size=(SIZE, SIZE), mode="area")
    rows = {}
    for kind, mask in masks.items():
        error = error_voxels(mask, case).sum(axis=(1, 2))
        keep = np.flatnonzero((mask | (case.ref > 0)).any(axis=(1, 2)))
        small = F.interpolate(torch.from_numpy(mask[keep][:, box[1], box[2]].astype(np.float32))[:, None], size=(SIZE, SIZE), mode="area")
        rows[kind] = {"x": torch.cat([ct[keep], small], 1), "cm2": error[keep] * spacing[0] * spacing[1] / 100.0,
                      "ml": error[keep] * case.ct.voxel_volume_ml}
    return rows


def masks_of(case, fold: str | None, rng: np.random.Generator) -> dict[str, np.ndarray]:
    recipe = folds.recipe_named("first-baseline")
    model = str(folds.trained_model(recipe, fold)) if fold else None
    out = {"default": segment(case.ct, SegmentOptions(model=model, device="cpu")) > 0,
           "classical": segment(case.ct, SegmentOptions(method="classical", device="cpu")) > 0}
    if fold:
        out["no rule"] = segment(case.ct, SegmentOptions(model=model, device="cpu", **folds.RULES["none"])) > 0
        body = body_mask(case.ct.array, DEFAULT_CLASSICAL)
        truth = (case.ref > 0) | (out["default"] & case.left_out)
        for k in range(SPOILED):
            out[f"spoiled {k}"] = spoiled(truth, body, case.ct.spacing, rng)
    else:
        out["lesion model"] = segment(case.ct, SegmentOptions(model=folds.weak_model(), device="cpu")) > 0
    return out


class Judge(nn.Module):
    def __init__(self, width: int = WIDTH):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(2, width), block(width, 2 * width), block(2 * width, 4 * width), block(4 * width, 4 * width))
        self.head = nn.Sequential(nn.Linear(8 * width, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)).squeeze(1)


def train(rows: list[dict]) -> Judge:
    torch.manual_seed(0)
    x = torch.cat([r["x"] for r in rows])
    y = torch.log1p(torch.from_numpy(np.concatenate([r["cm2"] for r in rows])).float())
    net = Judge()
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    steps = EPOCHS * ((len(x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    for _ in range(EPOCHS):
        net.train()
        for batch in torch.randperm(len(x)).split(64):
            xb = x[batch].flip(3) if torch.rand(1) < 0.5 else x[batch]
            loss = F.smooth_l1_loss(net(xb), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


def measured(net: Judge, row: dict) -> dict:
    with torch.no_grad():
        score = torch.cat([net(part) for part in row["x"].split(256)]).numpy()
    error, order = row["ml"], [int(i) for i in np.argsort(-score, kind="stable")]
    best = capture(sorted(range(len(error)), key=lambda i: -error[i]), error)
    got = capture(order, error)
    return {"ranking_of_perfect": round(got / best, 3) if best else None,
            "auroc": auroc({i: float(score[i]) for i in range(len(error))}, error),
            "error_ml": round(float(error.sum()), 1), "slices": len(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(REPO / "docs" / "results" / "judge.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    fold_of = {name: fold for fold, names in folds.FOLDS.items() for name in names}
    data = {}
    for name, fold in fold_of.items():
        case = folds.load_case(name)
        data[name] = samples(case, masks_of(case, fold, rng))
    results = []
    for fold, names in folds.FOLDS.items():
        net = train([row for name in fold_of if name not in names for row in data[name].values()])
        results += [{"scan": name, "mask": kind, "held_out": fold, **measured(net, row)} for name in names
                    for kind, row in data[name].items() if kind in ("default", "no rule", "classical", "spoiled 0")]
    net = train([row for rows in data.values() for row in rows.values()])
    case = folds.load_case(folds.LUNG1)
    lung1 = samples(case, masks_of(case, None, rng))
    results += [{"scan": folds.LUNG1, "mask": kind, "held_out": "all four patients", **measured(net, row)}
                for kind, row in lung1.items()]
    for row in results:
        print(json.dumps(row), flush=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
