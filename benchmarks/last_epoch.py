"""Export the generator of a training run's last epoch (not its best by validation Dice).

``lunggan train`` keeps the epoch with the best validation Dice (``best.safetensors``). When a
model is chosen by another rule (the lesion-first rule of ``benchmarks/validate.py``), the last
epoch is a candidate too; its weights are in the run's ``checkpoint.safetensors``.

Usage:
    python benchmarks/last_epoch.py RUN_DIR -o MODEL.safetensors [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.errors import LungGANError  # noqa: E402
from LungGANLib.models import Generator  # noqa: E402
from LungGANLib.models.weights import load_model, save_model  # noqa: E402


def export_last_epoch(run_dir: Path, output: Path, name: str | None = None) -> str:
    """Write the generator of ``run_dir``'s last epoch (its checkpoint) to ``output``, with the run's card; never
    over a file. Returns what was written, in a line."""
    _, info = load_model(run_dir / "best.safetensors")  # the run's architecture and preprocessing
    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
        weights = {key[len("generator."):]: handle.get_tensor(key) for key in handle.keys() if key.startswith("generator.")}
    generator = Generator(info.config)
    generator.load_state_dict(weights)
    history = json.loads(meta["history"])
    last = history[-1]
    card = {**info.card, "name": name or output.stem,
            "validation": {"epoch": int(meta["epoch"]), "val_dice_network_resolution": round(last["val_dice"], 5),
                           "val_iou_network_resolution": round(last["val_iou"], 5), "kept": "last epoch"}}
    save_model(generator, info, output, card, overwrite=False)
    return f"epoch {meta['epoch']} (val Dice {last['val_dice']:.4f}) written to {output}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--name", help="the model's name in its card (default: the output's stem)")
    args = parser.parse_args()
    print(export_last_epoch(args.run_dir, args.output, args.name))


if __name__ == "__main__":
    try:
        main()
    except (LungGANError, OSError, KeyError) as error:
        print(f"last_epoch.py: {error}", file=sys.stderr)
        sys.exit(2)
