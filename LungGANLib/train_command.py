"""``lunggan train``: from the command line's arguments to an exported model.

The glue between :mod:`LungGANLib.cli` and :mod:`LungGANLib.train.trainer`: which
data (pairs, the shared references, the Kaggle slices), the
:class:`~LungGANLib.train.trainer.TrainConfig` the flags describe, progress for
people and for Slicer, and the checks that keep a model that is not this
run's (an existing ``-o`` is replaced only with ``--overwrite``, or by
``--resume`` when it is the very model this run exported).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from .cli_parser import build_parser
from .errors import InputError
from .io.output import atomic_write, check_writable
from .models import GeneratorConfig
from .models.critics import CriticConfig
from .models.weights import input_channels
from .progress import emit_json
from .train.datasets import (
    KAGGLE_VAL_FRACTION, VALIDATION_FRACTION, SliceData, kaggle_slices, kaggle_training_slices, load_pairs, prepare_slices,
    split_validation,
)
from .train.train_config import EpochRecord, StepLosses, TrainConfig
from .train.trainer import Trainer, export_model

logger = logging.getLogger(__name__)


EXPORT_RECORD = "exported.json"


def _record_export(run_dir: Path, output: Path) -> None:
    """Remember in the run folder which model this run exported, so --resume may replace that one only."""
    from .models.weights import sha256

    record = {"output": str(output.resolve()), "sha256": sha256(output)}
    atomic_write(run_dir / EXPORT_RECORD, lambda tmp: Path(tmp).write_text(json.dumps(record)))


def _exported_by(run_dir: Path, output: Path) -> bool:
    """Whether ``output`` is, unchanged, the model this run exported."""
    from .models.weights import sha256

    try:
        record = json.loads((run_dir / EXPORT_RECORD).read_text())
        return record["output"] == str(output.resolve()) and output.is_file() and record["sha256"] == sha256(output)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _training_data(args, config: TrainConfig) -> tuple[SliceData, SliceData, dict[str, list[str]]]:
    """The training and validation slices the command line asks for, and their names for the card.

    Without validation data (``--val-pair``, ``--val-case``), a fixed share of the training slices
    (``--val-fraction``, by default :data:`~LungGANLib.train.datasets.VALIDATION_FRACTION`; Kaggle's own
    :data:`~LungGANLib.train.datasets.KAGGLE_VAL_FRACTION`) is held out, seeded by the run's seed. ``--add-kaggle``
    adds the Kaggle slices to the scans' training slices after that split.
    """
    if args.kaggle:
        if args.add_kaggle:
            raise InputError("--kaggle trains on the Kaggle slices alone and --add-kaggle adds them to 3D scans: give one of them")
        if config.context_mm:
            raise InputError("the Kaggle slices are single 2D slices, with no neighbours to show: leave out --context-mm")
        fraction = args.val_fraction or KAGGLE_VAL_FRACTION
        train, val = split_validation(kaggle_slices("train", args.kaggle if args.kaggle != "shared" else None), fraction, config.seed)
        if train.images.shape[-1] != config.input_size:
            raise InputError(f"the Kaggle slices are {train.images.shape[-1]} pixels wide: pass --input-size {train.images.shape[-1]}")
        names = {"train": ["kaggle-finding-lungs x_train"], "validation": [f"{fraction:.0%} of x_train held out (seed {config.seed})"]}
        return train, val, names
    if args.add_kaggle and config.context_mm:
        raise InputError("the Kaggle slices are single 2D slices, with no neighbours to show: leave out --add-kaggle or --context-mm")
    train, val, names = _scan_data(args, config)
    if args.add_kaggle:
        # After the split: the epoch is still chosen on the scans' slices alone.
        extra = kaggle_training_slices(config.input_size, data=None if args.add_kaggle == "shared" else args.add_kaggle)
        train = SliceData.joined(train, extra)
        names["train"].append(f"kaggle-finding-lungs x_train ({len(extra)} slices, intensities calibrated to HU)")
    return train, val, names


def _scan_data(args, config: TrainConfig) -> tuple[SliceData, SliceData, dict[str, list[str]]]:
    """The training and validation slices of the command line's 3D scans (``--pair``, ``--references``)."""
    from .config import data_dir
    from .evaluate.references import CASES, reference_path

    train_pairs, val_pairs = [list(p) for p in args.pair], [list(p) for p in args.val_pair]
    names: dict[str, list[str]] = {"train": [p[0] for p in train_pairs], "validation": [p[0] for p in val_pairs]}
    if args.references:
        known = {c.name for c in CASES}
        unknown = set(args.val_case) - known
        if unknown or not args.val_case:
            raise InputError(f"--references needs --val-case among: {', '.join(sorted(known))}")
        for case in CASES:
            held_out = case.name in args.val_case
            (val_pairs if held_out else train_pairs).append([str(data_dir() / case.ct), str(reference_path(case))])
            names["validation" if held_out else "train"].append(case.name)
    if not train_pairs:
        raise InputError("training needs --pair CT MASK (or --references, or --kaggle)")
    train = prepare_slices(load_pairs(train_pairs), config.input_size, context_mm=config.context_mm)
    if val_pairs:
        return train, prepare_slices(load_pairs(val_pairs), config.input_size, context_mm=config.context_mm), names
    fraction = args.val_fraction or VALIDATION_FRACTION
    if len(train) < 2:
        raise InputError(f"{len(train)} training slice cannot be split for validation: give a --val-pair")
    names["validation"] = [f"{fraction:.0%} of the training slices held out (seed {config.seed})"]
    train, val = split_validation(train, fraction, config.seed)
    return train, val, names


#: Settings ``config_from_args`` builds from options of other names (all other settings are options of their own name).
BUILT_FROM = ("no_augment", "base_channels", "depth", "norm", "critic_channels", "critic_depth")


def setting_options() -> set[str]:
    """The ``lunggan train`` options that set a :class:`TrainConfig` field, read off the parser; ``--config`` replaces them."""
    parser = build_parser()
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    settings = set(TrainConfig.__dataclass_fields__) | set(BUILT_FROM)
    return {option for action in train._actions if action.dest in settings for option in action.option_strings}


def read_config(path: str | Path, argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` a ``--config`` JSON file holds (:meth:`TrainConfig.to_dict`'s form), validated.

    Raises:
        InputError: unreadable or invalid file, or setting options given beside it.
    """
    given = sorted({a.split("=", 1)[0] for a in argv} & setting_options())
    if given:
        raise InputError(f"--config {path} holds the training settings: leave out {', '.join(given)}, or leave out --config")
    try:
        config = TrainConfig.from_dict(json.loads(Path(path).read_text()))
        config.validate()
    except OSError as exc:
        raise InputError(f"--config {path} cannot be read ({exc.strerror or exc}): give a JSON file of training settings") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"--config {path} is not valid training settings ({exc}): write it with TrainConfig.to_dict") from None
    return config


def config_from_args(args) -> TrainConfig:
    """The :class:`TrainConfig` of a parsed ``lunggan train`` command line (from ``--config`` when given)."""
    if getattr(args, "config", None):
        return read_config(args.config, list(getattr(args, "argv", [])))
    # Options named as the settings they set; the generator's and critic's shapes and --no-augment are built here.
    same = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if hasattr(args, name)}
    return TrainConfig(
        **same,
        augment=not args.no_augment,
        generator=GeneratorConfig(in_channels=input_channels(args.context_mm), base_channels=args.base_channels, depth=args.depth,
                                  norm=args.norm),
        critic=CriticConfig(base_channels=args.critic_channels, depth=args.critic_depth),
    )


def run_training(args) -> Path:
    """``lunggan train``: load the data, fit, export the best generator with its card.

    Args:
        args: the parsed command line (see :mod:`LungGANLib.cli`).

    Returns:
        The exported model path.
    """
    import shlex
    import sys

    from tqdm import tqdm

    output = Path(args.output)
    # --resume may replace only the model this very run exported (continuing it); anything else needs --overwrite.
    own = args.resume and _exported_by(Path(args.run_dir), output)
    if output.exists() and not args.overwrite and not own:
        raise InputError(f"output model {output} exists: choose another name or pass --overwrite")
    if output.suffix != ".safetensors":
        raise InputError(f"output model {output} must end in .safetensors")
    if not output.parent.is_dir():
        raise InputError(f"output folder {output.parent} does not exist: create it first")
    check_writable(output.parent)
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--run-dir {run_dir} is a file: give a folder for the checkpoints and logs")
    created = not run_dir.exists()
    try:
        try:
            config = config_from_args(args)
            trainer = Trainer(config, args.run_dir, args.device, args.init_model)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if args.resume:
            trainer.load_checkpoint()
            logger.info("resuming at epoch %d", trainer.epoch)
        train, val, names = _training_data(args, config)
    except BaseException:
        # Refused before training began: a run folder made for this run goes again, if nothing is in it.
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    say = (lambda text: print(text, file=sys.stderr)) if trainer.is_main else (lambda text: None)
    where = f"{trainer.world} processes on {trainer.device.type}" if trainer.world > 1 else f"device {trainer.device}"
    say(f"training {config.variant} on {len(train)} slices, validating on {len(val)}, {where}")
    card = {
        "name": output.stem,
        "data": names,
        "training_command": "lunggan " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])),
        "torch": torch.__version__,
    }
    bar = None  # this epoch's tqdm bar

    progress_json = getattr(args, "progress_json", False)

    def on_step(step: int, steps: int, losses: StepLosses) -> None:
        nonlocal bar
        if progress_json and trainer.is_main:
            emit_json("step", epoch=trainer.epoch + 1, epochs=config.epochs, step=step, steps=steps, **asdict(losses))
        if not trainer.is_main or args.quiet or progress_json:
            return
        if bar is None:
            bar = tqdm(total=steps, desc=f"epoch {trainer.epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)
        bar.update(1)
        shown = {"bce": f"{losses.bce:.4f}"}
        if trainer.critic is not None:
            shown.update(adv=f"{losses.adversarial:.3f}", critic=f"{losses.critic:.3f}", em=f"{losses.em_distance:.3f}")
        bar.set_postfix(shown)
        if step == steps:
            bar.close()
            bar = None

    def on_epoch(r: EpochRecord) -> None:
        if progress_json and trainer.is_main:
            emit_json("epoch", **asdict(r))
        critic = f", critic {r.critic_loss:.3f}, EM {r.em_distance:.3f}" if trainer.critic is not None else ""
        lesions = ""
        if r.val_lesion_dice is not None:
            kept = "" if r.val_lesions_kept is None else f", {100 * r.val_lesions_kept:.1f} % of their pixels kept"
            lesions = f"; with {config.lesion_options.drawn} drawn in Dice {r.val_lesion_dice:.4f}{kept}"
        say(
            f"epoch {r.epoch}: loss {r.train_loss:.4f} (BCE {r.train_bce:.4f}{critic}), "
            f"val Dice {r.val_dice:.4f}, IoU {r.val_iou:.4f}{lesions} ({r.seconds:.0f} s)"
        )

    best = trainer.fit(train, val, card, on_step, on_epoch)
    if trainer.stalled and trainer.epoch < config.epochs:
        say(f"the validation score has not improved for {config.patience} epochs: stopped after epoch {trainer.epoch}")
    if trainer.is_main:
        export_model(best, output, overwrite=args.overwrite or own)
        _record_export(Path(args.run_dir), output)
        what = f"Dice with {config.lesion_options.drawn} drawn in" if trainer.history and \
            trainer.history[-1].val_lesion_dice is not None else "Dice"
        say(f"best validation {what} {trainer.best_dice:.4f}; model written to {output}")
        if progress_json:
            emit_json("done", output=str(output), best_dice=trainer.best_dice)
    if trainer.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return output

