"""Score generators and the classical method against reference masks and radiologists' lesion marks.

Cases: the shared 3D series with their reference masks (marked held-out or
training according to the model card) and ``cip-ct-64`` with the Chest Imaging
Platform's whole-lung mask (an outside reference neither method was tuned on).
For each case, method and model, through the whole pipeline:

- 3D Dice, IoU, HD95 and Hausdorff (mm) for both lungs together and each lung;
- lesions (LIDC readers' nodule outlines, Lung-PET-CT-Dx tumour boxes): the
  least share of a lesion inside the mask, the pooled share, the least share
  of a juxtapleural lesion (see ``LungGANLib.evaluate.lesions``);
- spill: mask more than 5 mm outside the reference lung that is no lesion, mL;
- with ``--synthetic``: the share of synthetic lesion pixels, and of synthetic
  dense lung (a dependent density gradient or patchy consolidation), that the
  generator keeps: the training augmentations, drawn with a fixed seed into the
  held-out volume's slices, at network resolution.

Usage:
    python benchmarks/validate.py [--model PATH | --models NAME=PATH ...] [--no-envelope | --envelope both]
        [--methods gan,classical] [--synthetic] [--json OUT] [--update-card]
``--update-card`` writes the scores of the one model into the model card beside its weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.segment.inference import SegmentOptions, segment  # noqa: E402
from LungGANLib.io import load_ct, mask_from_image  # noqa: E402
from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.evaluate.lesions import lesion_report, load_lesions, spill_ml  # noqa: E402
from LungGANLib.evaluate.metrics import evaluate_labels  # noqa: E402
from LungGANLib.evaluate.summary import HELD_OUT_CASE, OUTSIDE_CASE, pct, summary_table, worst_spill_row  # noqa: E402
from LungGANLib.models.weights import DEFAULT_MODEL, card_path, load_model  # noqa: E402
from LungGANLib.evaluate.references import CASES, case_by_name, data_dir, reference_path  # noqa: E402

KEYS = ("dice", "iou", "hd95_mm", "hausdorff_mm")
SYNTHETIC_CASE = HELD_OUT_CASE  # the synthetic lesions are drawn into the held-out volume
SYNTHETIC_SEED = 123


def cases() -> list[tuple[str, Path, Path, str | None, str | None]]:
    """(name, CT, reference mask, lesion marks, DICOM series placing box marks) of every case."""
    out = []
    for c in CASES:
        marks = c.lidc_reads or c.tumour_boxes
        out.append((c.name, data_dir() / c.ct, reference_path(c), data_dir() / marks if marks else None,
                    data_dir() / c.boxes_dicom if c.boxes_dicom else None))
    cip = data_dir() / "fixtures/cip-ct-64"
    out.append((OUTSIDE_CASE, cip / "ct-64.nrrd", cip / "wholeLung-64.nrrd", None, None))
    return out


def synthetic_drawn(model, kind: str = "lesions") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic lesions or dense lung drawn into the held-out volume's slices, and what the generator keeps.

    ``kind`` is ``lesions`` (nodules and masses, :func:`insert_lesions`) or ``dense`` (a dependent density
    gradient or patchy consolidation, :func:`dense_lung`): both are drawn with a fixed seed, the label stays lung.

    Returns:
        (drawn pixels, kept pixels, lung label, pixel size in mm of each slice), at network resolution.
    """
    import torch

    from LungGANLib.train.datasets import prepare_slices
    from LungGANLib.train.lesion_synthesis import DRAWN_MIN, dense_lung, insert_lesions

    case = case_by_name(SYNTHETIC_CASE)
    ct = load_ct(data_dir() / case.ct)
    ref = mask_from_image(sitk.ReadImage(str(reference_path(case))), ct)
    generator, info = model
    if info.context_mm:  # a lesion drawn on the slice and not on its neighbours is no lesion a 2.5D network would see
        raise SystemExit("the synthetic lesions are drawn on one slice: --synthetic does not judge a 2.5D model (--context-mm)")
    data = prepare_slices([(ct, ref)], info.input_size, info.window)
    rng = np.random.default_rng(SYNTHETIC_SEED)
    images = data.images.clone()
    lung = (data.targets[:, 0] > 0.5).numpy()
    drawn = np.zeros(lung.shape, dtype=bool)
    for i in range(len(data)):
        if lung[i].sum() < 2000:
            continue
        before = images[i, 0].numpy().copy()
        if kind == "dense":
            after = dense_lung(before, lung[i], rng, info.window)
        else:
            after = insert_lesions(before, lung[i], float(data.pixel_mm[i]), rng, info.window)
        images[i, 0] = torch.from_numpy(after)
        drawn[i] = (np.abs(after - before) > DRAWN_MIN) & lung[i]
    net = generator.fused().eval()
    with torch.inference_mode():
        prob = torch.cat([torch.sigmoid(net(images[s : s + 16])) for s in range(0, len(images), 16)])
    return drawn, prob[:, 0].numpy() > info.threshold, lung, data.pixel_mm.numpy()


def synthetic_kept(model, kind: str = "lesions") -> float:
    """Share of the synthetic pixels (:func:`synthetic_drawn`) that the generator keeps."""
    drawn, kept, _, _ = synthetic_drawn(model, kind)
    return float((kept & drawn).sum() / drawn.sum())


def synthetic_kept_by_place(model) -> dict[str, float]:
    """Share of synthetic lesion pixels kept, by where each drawn lesion lies and how large it is.

    A lesion (a connected piece of drawn pixels on one slice) is at the lung's border when it comes within two
    pixels of it, medial when its centre is as near the lung's midline as the nearest ``MEDIAL_PERCENTILE`` % of
    the slice's lung pixels (the drawing applies the same cut to its border positions, not to all lung pixels),
    and a mass when its area is that of a 30 mm disk or more.
    """
    from scipy import ndimage

    from LungGANLib.train.lesion_synthesis import MASS_MM, MEDIAL_PERCENTILE, lung_midline

    drawn, kept, lung, pixel_mm = synthetic_drawn(model)
    counts: dict[str, list[int]] = {}
    for i in np.flatnonzero(drawn.any(axis=(1, 2))):
        midline = lung_midline(lung[i])
        medial_cut = np.percentile(np.abs(np.nonzero(lung[i])[1] - midline), MEDIAL_PERCENTILE)
        near_border = ndimage.binary_dilation(lung[i] & ~ndimage.binary_erosion(lung[i]), iterations=2)
        pieces, n = ndimage.label(drawn[i])
        for piece in range(1, n + 1):
            here = pieces == piece
            where = "free" if not (here & near_border).any() else (
                "medial border" if abs(np.nonzero(here)[1].mean() - midline) <= medial_cut else "chest-wall border")
            size = "mass" if here.sum() * float(pixel_mm[i]) ** 2 >= np.pi * (MASS_MM[0] / 2) ** 2 else "nodule"
            for key in (where, size, f"{where}, {size}"):
                total = counts.setdefault(key, [0, 0])
                total[0] += int((here & kept[i]).sum())
                total[1] += int(here.sum())
    return {key: round(kept_pixels / pixels, 4) for key, (kept_pixels, pixels) in sorted(counts.items())}


def score(name: str, method: str, model_path: str | None, model, envelope: bool, loaded: dict) -> dict:
    """One case through the whole pipeline, scored."""
    ct, ref, lesions = loaded[name]
    start = time.perf_counter()
    labels = segment(ct, SegmentOptions(method=method, model=model_path, device="cpu", envelope=envelope),
                     model=model if method == "gan" else None)
    row: dict = {"case": name, "method": method, "envelope": envelope, "seconds": round(time.perf_counter() - start, 2)}
    for part, metrics in evaluate_labels(labels, ref, ct.spacing).items():
        row[part] = {k: round(float(metrics[k]), 4) for k in KEYS}
    spill, percent = spill_ml(labels, ref, lesions, ct.spacing)
    row["spill_ml"], row["spill_percent"] = round(spill, 2), round(percent, 3)
    if lesions:
        report = lesion_report(labels, ref, lesions, ct.spacing)
        row["lesions_min"] = round(report["all"]["min_inside"], 4)
        row["lesions_pooled"] = round(report["all"]["pooled_inside"], 4)
        juxta = report["juxtapleural"]["min_inside"]
        row["juxtapleural_min"] = None if juxta is None else round(juxta, 4)
    return row


#: How the default model is chosen (written into its card): lesions first, subject to Dice and spill.
SELECTION_RULE = (
    "Eligible: Dice >= 0.99 on the held-out volume (lidc-idri-0001), Dice >= 0.95 on cip-ct-64 (the one outside "
    "reference: a coarse COPDGene scan with the Chest Imaging Platform's lung mask; a default must not lose lung on "
    "a scan unlike its training scans) and spill under 1 % of the reference lung on "
    "every shared case, through the whole pipeline with the lesion envelope. Among the eligible, the highest "
    "lesion score wins: the mean of the least share inside of any reader's nodule on lidc-idri-0001 and on "
    "lidc-idri-0002, of the Lung-PET-CT-Dx A0001 tumour on series 2 and 3, and of the synthetic lesions kept on "
    "the held-out slices. Ties go to the higher held-out Dice. When no model is eligible, the default is not changed."
)
LESION_TERMS = (
    ("lidc-idri-0001", "lesions_min"), ("lidc-idri-0002", "lesions_min"),
    ("lung-pet-ct-dx-a0001-series2", "lesions_min"), ("lung-pet-ct-dx-a0001-series3", "lesions_min"),
)


def choose(rows: list[dict]) -> list[dict]:
    """Rank the generators by :data:`SELECTION_RULE` (envelope on); the first eligible one is the default."""
    ranking = []
    for model in dict.fromkeys(r["model"] for r in rows if r["method"] == "gan" and r["envelope"]):
        group = {r["case"]: r for r in rows if r["model"] == model and r["envelope"]}
        if any(case not in group for case, _ in LESION_TERMS) or OUTSIDE_CASE not in group:
            continue  # not scored on every case the rule reads
        held_out = group[HELD_OUT_CASE]["lungs"]["dice"]
        outside = group[OUTSIDE_CASE]["lungs"]["dice"]
        worst_spill = worst_spill_row(list(group.values()))["spill_percent"]
        terms = [group[case][key] for case, key in LESION_TERMS] + [group[HELD_OUT_CASE].get("synthetic_kept", 0.0)]
        ranking.append({
            "model": model, "eligible": held_out >= 0.99 and outside >= 0.95 and worst_spill < 1.0,
            "lesion_score": round(float(np.mean(terms)), 4),
            "held_out_dice": held_out, "outside_dice": outside, "worst_spill_percent": worst_spill,
        })
    return sorted(ranking, key=lambda r: (not r["eligible"], -r["lesion_score"], -r["held_out_dice"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--models", nargs="+", metavar="NAME=PATH", help="several generators to compare (overrides --model)")
    parser.add_argument("--methods", default="gan,classical")
    parser.add_argument("--envelope", choices=("on", "off", "both"), default="on")
    parser.add_argument("--no-envelope", dest="envelope", action="store_const", const="off")
    parser.add_argument("--synthetic", action="store_true", help="also score synthetic lesions and dense lung on the held-out slices")
    parser.add_argument("--synthetic-where", action="store_true",
                        help="print the share of synthetic lesions kept by place (border or free) and size, then stop")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--update-card", action="store_true")
    parser.add_argument("--summary-of", metavar="JSON", help="print the tables of an earlier --json run, without running")
    parser.add_argument("--selection-from", nargs="+", metavar="JSON", default=[],
                        help="with --update-card: rank these earlier --json runs' models by the selection rule into the card")
    args = parser.parse_args()
    if args.summary_of:
        rows = json.loads(Path(args.summary_of).read_text())
        print(summary_table(rows))
        if any(r["envelope"] for r in rows):
            print("\nSelection (" + SELECTION_RULE + ")\n")
            for r in choose(rows):
                print(json.dumps(r))
        return

    models = dict(m.split("=", 1) for m in args.models) if args.models else {"model": args.model}
    if args.synthetic_where:
        for label, path in models.items():
            print(label, json.dumps(synthetic_kept_by_place(load_model(path))))
        return
    envelopes = {"on": [True], "off": [False], "both": [False, True]}[args.envelope]
    loaded = {}
    for name, ct_path, ref_path, marks, boxes_dicom in cases():
        ct = load_ct(ct_path)
        ref = mask_from_image(sitk.ReadImage(str(ref_path)), ct)
        loaded[name] = (ct, ref, load_lesions(marks, ct, ref, boxes_dicom) if marks else [])
    rows = []
    for method in args.methods.split(","):
        for label, path in models.items() if method == "gan" else [("classical", None)]:
            model = load_model(path) if method == "gan" else None
            card = model[1].card if model else {}
            held_out = set(card.get("data", {}).get("validation", []))
            trained = set(card.get("data", {}).get("train", []))
            synthetic = synthetic_kept(model) if args.synthetic and model else None
            dense = synthetic_kept(model, "dense") if args.synthetic and model else None
            for envelope in envelopes:
                for name in loaded:
                    row = score(name, method, path, model, envelope, loaded)
                    row["model"] = label
                    row["role"] = "held out" if name in held_out else "training" if name in trained else (
                        "outside reference" if name == OUTSIDE_CASE else "-")
                    if synthetic is not None:
                        row["synthetic_kept"] = round(synthetic, 4)
                        row["synthetic_dense_kept"] = round(dense, 4)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)

    print("| model | method | envelope | case | role | Dice | HD95 mm | lesions: least inside | pooled | juxtapleural least | spill mL |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lungs = r["lungs"]
        print(f"| {r['model']} | {r['method']} | {'on' if r['envelope'] else 'off'} | {r['case']} | {r['role']} | "
              f"{lungs['dice']:.4f} | {lungs['hd95_mm']:.2f} | {pct(r.get('lesions_min'))} | {pct(r.get('lesions_pooled'))} | "
              f"{pct(r.get('juxtapleural_min'))} | {r['spill_ml']:.1f} |")
    print()
    print(summary_table(rows))
    if args.json:
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2) + "\n"))
    if args.update_card:
        if len(models) != 1:
            sys.exit("--update-card takes one model")
        path = card_path(next(iter(models.values())))
        data = json.loads(path.read_text())
        if args.selection_from:
            candidates = [row for path in args.selection_from for row in json.loads(Path(path).read_text())]
            data["selection"] = {"rule": SELECTION_RULE, "ranking": choose(candidates),
                                 "runs": [str(p) for p in args.selection_from]}
        data["evaluation"] = {
            "command": "python benchmarks/validate.py --synthetic --update-card",
            "note": "whole pipeline (generator + post-processing with the lesion envelope) at native resolution; "
                    "'lungs' = both lungs together; lesions and spill as in LungGANLib.evaluate.lesions",
            "cases": rows,
        }
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))
        print(f"\nupdated {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
