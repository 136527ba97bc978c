"""Two generators' probabilities averaged (or one generator's with its left-right mirror), through the shipped pipeline,
on every fold and the external scans: whether an ensemble of the fold candidates, or flipping at test time, is worth
the second pass through the network.

    python benchmarks/ensemble.py first-baseline+appearance "first-baseline+first-baseline~" first-baseline+regression

Each argument names two recipes of ``benchmarks/folds.py`` joined by ``+``; ``~`` after a name mirrors the slices
left to right before that generator and mirrors its probabilities back (the generators were trained with left-right
flips). On a fold both are that fold's generators; on the external scans, the ones the recipes ship (as
``folds.py`` scores them). The mask is the mean probability above the first generator's threshold, then the
shipped post-processing. Rows go to ``docs/results/ensemble.json`` (resumable), in ``folds.py``'s figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from folds import EXTERNAL, FOLDS, RECIPES, REPO, RULES, fold_model, load_case, score, shipped_path  # noqa: E402

from LungGANLib.io.output import atomic_write  # noqa: E402
from LungGANLib.models.weights import load_model  # noqa: E402
from LungGANLib.segment import inference  # noqa: E402
from LungGANLib.segment.inference import SegmentOptions, probability_batches, segment  # noqa: E402

SHIPPED_RULES = "all + outline growth to 4 voxels at the lung threshold + bases grown + airways out but the bronchi"
JSON = REPO / "docs" / "results" / "ensemble.json"


def averaged(members: list[tuple[tuple, bool]]):
    """A stand-in for :func:`inference.predict_probabilities`: the members' mean probability, thresholded."""

    def predict(hu, generator, info, device, batch_size=16, slices=None, progress=None, slice_mm=0.0):
        total = np.zeros(hu.shape, np.float32)
        for (member, member_info), mirrored in members:
            volume = np.ascontiguousarray(hu[:, :, ::-1]) if mirrored else hu
            for index, prob in probability_batches(volume, member, member_info, device, batch_size, slices, slice_mm):
                total[index] += prob.cpu().numpy()[:, :, ::-1] if mirrored else prob.cpu().numpy()
        return total / len(members) > info.threshold

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", metavar="RECIPE+RECIPE[~]")
    args = parser.parse_args()
    recipes = {r.name: r for r in RECIPES}
    rows = json.loads(JSON.read_text()) if JSON.exists() else []
    done = {(r["candidate"], r["case"]) for r in rows}
    cases: dict = {}
    for pair in args.pairs:
        names = pair.split("+")
        unknown = [n.rstrip("~") for n in names if n.rstrip("~") not in recipes]
        if len(names) != 2 or unknown:
            raise SystemExit(f"{pair}: give two recipes of benchmarks/folds.py joined by + ({', '.join(recipes)})")
        for fold, held_out in [*FOLDS.items(), ("external", EXTERNAL)]:
            paths = [shipped_path(recipes[n.rstrip("~")]) if fold == "external" else fold_model(recipes[n.rstrip("~")], fold)
                     for n in names]
            if None in paths:
                print(f"{pair}: no generator of the fold that holds out {fold}; skipped", file=sys.stderr)
                continue
            members = [(load_model(str(p)), n.endswith("~")) for p, n in zip(paths, names)]
            for name in held_out:
                if (pair, name) in done:
                    continue
                case = cases.setdefault(name, load_case(name))
                inference.predict_probabilities = averaged(members)
                findings: dict = {}
                start = time.perf_counter()
                options = SegmentOptions(method="gan", model=str(paths[0]), device="cpu", **RULES[SHIPPED_RULES])
                labels = segment(case.ct, options, model=members[0][0], findings=findings)
                findings["removed"] = options.guard_rail
                row = {"candidate": pair, "rules": SHIPPED_RULES, "fold": fold, "case": name,
                       "models": [str(p.relative_to(REPO)) for p in paths],
                       "seconds": round(time.perf_counter() - start, 1), **score(case, labels, findings)}
                row.pop("outline", None)
                rows.append(row)
                done.add((pair, name))
                print(json.dumps(row), file=sys.stderr, flush=True)
                atomic_write(JSON, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1) + "\n"))
    for pair in args.pairs:
        got = {r["case"]: r["dice"] for r in rows if r["candidate"] == pair}
        held = [got[c] for cs in FOLDS.values() for c in cs if c in got]
        if held:
            print(f"{pair}: held-out worst {min(held):.4f}, mean {np.mean(held):.4f} ({len(held)} scans); "
                  + ", ".join(f"{c} {got[c]:.4f}" for c in EXTERNAL if c in got))


if __name__ == "__main__":
    main()
