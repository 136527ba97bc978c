"""Where the networks run: CUDA, then Apple's MPS, then the CPU, unless told otherwise."""

from __future__ import annotations

import os
import re

import torch

from ..errors import InputError

DEVICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str = "auto") -> torch.device:
    """Pick the device: ``auto`` takes CUDA, then Apple's MPS, then the CPU.

    Raises:
        InputError: unknown name, or the named device is not available here.
    """
    if name is None:
        name = "auto"
    if not name.strip():
        raise InputError(f"device {name!r} is empty: use one of {', '.join(DEVICES)} (or cuda:N)")
    name = name.lower()
    base = name.split(":")[0]
    if not (name in DEVICES or re.fullmatch(r"cuda:\d+", name)):
        raise InputError(f"unknown device {name!r}: use one of {', '.join(DEVICES)} (or cuda:N)")
    if name.startswith("cuda:") and torch.cuda.is_available() and int(name[5:]) >= torch.cuda.device_count():
        raise InputError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s), cuda:0 first")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    if base == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise InputError("device mps was asked for but Apple's MPS is not available: use --device cpu or auto")
    return torch.device(name)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for the network's tensors on ``device`` (None where it cannot be told)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not Linux
        return None
