"""A training run on disk: its checkpoint (to resume exactly) and its log.

The checkpoint holds both networks, both optimisers, the random streams, the epoch, the
best validation Dice and the history, in one safetensors file written atomically;
:func:`load` refuses a checkpoint written with other settings (how long to run,
``epochs`` and ``patience``, may change).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..io.output import atomic_write, verify_tensors
from .train_config import EpochRecord, TrainConfig


def save(trainer) -> Path:
    """Write ``trainer``'s networks, optimisers, random state, epoch and history atomically."""
    tensors: dict[str, torch.Tensor] = {}
    param_groups = {}
    for name, (module, optimizer) in trainer._parts().items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
        state = optimizer.state_dict()
        param_groups[name] = state["param_groups"]
        for index, slots in state["state"].items():
            for slot, value in slots.items():
                tensors[f"{name}_optimizer.{index}.{slot}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.shuffle"] = trainer.rng.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "epoch": str(trainer.epoch),
        "best_dice": repr(float(trainer.best_dice)),
        "config": json.dumps(trainer.config.to_dict()),
        "param_groups": json.dumps(param_groups),
        "history": json.dumps([asdict(r) for r in trainer.history]),
    }
    return atomic_write(trainer.checkpoint_path, lambda tmp: save_file(tensors, tmp, metadata=meta),
                        verify=verify_tensors(tensors, meta))


def load(trainer, path: Path) -> None:
    """Resume ``trainer`` (a :class:`~LungGANLib.train.trainer.Trainer`) from a checkpoint written by :func:`save`.

    Raises:
        InputError: missing or corrupt checkpoint, or one from a run with other settings.
    """
    if not path.is_file():
        raise InputError(f"no checkpoint to resume from at {path}: run without --resume first")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        tensors = load_file(str(path))
        saved = TrainConfig.from_dict(json.loads(meta["config"]))
        param_groups = json.loads(meta["param_groups"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"checkpoint {path} is unreadable ({exc}): start a new run") from None
    mine, theirs = trainer.config.to_dict(), saved.to_dict()
    for name in ("epochs", "patience"):  # how long to run, not how: a resumed run may change them
        mine.pop(name), theirs.pop(name)
    if mine != theirs:
        changed = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise InputError(f"checkpoint {path} was written with other settings ({', '.join(changed)}); resume with the same ones")
    for name, (module, optimizer) in trainer._parts().items():
        prefix, opt_prefix = f"{name}.", f"{name}_optimizer."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        opt_state: dict = {"state": {}, "param_groups": param_groups[name]}
        for key, value in tensors.items():
            if key.startswith(opt_prefix):
                index, slot = key[len(opt_prefix) :].split(".", 1)
                opt_state["state"].setdefault(int(index), {})[slot] = value.to(trainer.device) if slot != "step" else value
        optimizer.load_state_dict(opt_state)
    trainer.rng.set_state(tensors["rng.shuffle"])
    torch.set_rng_state(tensors["rng.torch"])
    trainer.epoch = int(meta["epoch"])
    trainer.best_dice = float(meta["best_dice"])
    trainer.history = [EpochRecord(**r) for r in json.loads(meta["history"])]


def write_log(trainer) -> Path:
    """Write the per-epoch log as CSV and the curves as PNG (atomically)."""
    from ..evaluate.visualize import plot_training_curves

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(EpochRecord.__dataclass_fields__))
            writer.writeheader()
            for record in trainer.history:
                writer.writerow(asdict(record))

    plot_training_curves([asdict(r) for r in trainer.history], trainer.run_dir / "curves.png", title=trainer.config.variant)
    return atomic_write(trainer.run_dir / "log.csv", write)
