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
def old_lesion_model() -> Path:
    """The lesion model shipped until 2026-12-06, which takes in what is not lung on scans it has not seen
    (Testing/Data/Models/README.md): a real mask for the rules that take such tissue out."""
    return REPO / "Testing" / "Data" / "Models" / "lunggan-lesions-675e7ee.safetensors"


@pytest.fixture
def own_copy_of_the_default(tmp_path) -> Path:
    """The shipped default's weights and card copied to a folder of the test's own: to LungGAN, a model of your own
    (no fallback, no framing: what is only for the shipped models)."""
    from LungGANLib.models.weights import DEFAULT_MODEL, card_path

    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(DEFAULT_MODEL.read_bytes())
    if card_path(DEFAULT_MODEL).exists():
        card_path(mine).write_bytes(card_path(DEFAULT_MODEL).read_bytes())
    return mine


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
