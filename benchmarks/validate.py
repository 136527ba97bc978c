"""Score a generator and the classical method against reference masks, through the whole pipeline.

Cases: the shared 3D series with their reference masks (marked held-out or
training according to the model card) and ``cip-ct-64`` with the Chest Imaging
Platform's whole-lung mask (an outside reference neither method was tuned on).
For each case and method: 3D Dice and IoU, HD95 and Hausdorff in mm, for both
lungs together and each lung.

Usage:
    python benchmarks/validate.py [--model PATH] [--device cpu] [--update-card]
``--update-card`` writes the held-out scores into the model card beside the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.io import atomic_write, load_ct, mask_from_image  # noqa: E402
from LungGANLib.metrics import evaluate_labels  # noqa: E402
from LungGANLib.model_io import DEFAULT_MODEL, card_path, load_model  # noqa: E402
from LungGANLib.references import CASES, data_dir, reference_path  # noqa: E402

KEYS = ("dice", "iou", "hd95_mm", "hausdorff_mm")


def cases() -> list[tuple[str, Path, Path]]:
    out = [(c.name, data_dir() / c.ct, reference_path(c)) for c in CASES]
    out.append(("cip-ct-64", data_dir() / "fixtures/cip-ct-64/ct-64.nrrd", data_dir() / "fixtures/cip-ct-64/wholeLung-64.nrrd"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--update-card", action="store_true")
    args = parser.parse_args()

    model = load_model(args.model)
    card = model[1].card
    held_out = set(card.get("data", {}).get("validation", []))
    trained = set(card.get("data", {}).get("train", []))
    rows = []
    for name, ct_path, ref_path in cases():
        ct = load_ct(ct_path)
        ref = mask_from_image(sitk.ReadImage(str(ref_path)), ct)
        role = "held out" if name in held_out else "training" if name in trained else "outside reference"
        for method in ("gan", "classical"):
            labels = segment(ct, SegmentOptions(method=method, model=args.model, device=args.device), model=model if method == "gan" else None)
            result = evaluate_labels(labels, ref, ct.spacing)
            row = {"case": name, "role": role, "method": method}
            for part, metrics in result.items():
                row[part] = {k: round(float(metrics[k]), 4) for k in KEYS}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    print("| case | role | method | Dice | IoU | HD95 mm | HD mm | Dice right | Dice left |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        right = r.get("right lung", {}).get("dice")
        left = r.get("left lung", {}).get("dice")
        lungs = r["lungs"]
        side = f"{right:.4f} | {left:.4f}" if right is not None else "– | –"
        print(f"| {r['case']} | {r['role']} | {r['method']} | {lungs['dice']:.4f} | {lungs['iou']:.4f} | "
              f"{lungs['hd95_mm']:.2f} | {lungs['hausdorff_mm']:.2f} | {side} |")

    if args.update_card:
        path = card_path(args.model)
        data = json.loads(path.read_text())
        data["evaluation"] = {
            "command": "python benchmarks/validate.py --update-card",
            "note": "whole pipeline (generator + post-processing) at native resolution; 'lungs' = both lungs together",
            "cases": rows,
        }
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))
        print(f"\nupdated {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
