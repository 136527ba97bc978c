"""Shared fixtures: the real CT data in ../shared/data (see its README)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from LungGANLib.config import data_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared data folder; the suite needs it (CI lays it beside the clone)."""
    path = data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"shared data not found at {path}: put ../shared beside the repository or set LUNGGAN_DATA")
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _quiet_pil() -> None:
    logging.getLogger("PIL").setLevel(logging.WARNING)
