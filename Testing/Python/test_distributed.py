"""Two-process training with torchrun (gloo on CPU) matches one process on the same data."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from LungGANLib.cli import main
from LungGANLib.models import Generator, GeneratorConfig

# Instance norm: per-slice statistics, so sharding a batch over processes changes nothing but float rounding.
ARGS = ["train", "--kaggle", "--variant", "regression", "--input-size", "64", "--epochs", "2", "--steps-per-epoch", "3",
        "--norm", "instance", "--base-channels", "4", "--batch-size", "8", "--device", "cpu", "-q"]


def test_torchrun_two_processes_match_one(tmp_path, data):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LUNGGAN_DATA": str(data)}
    one = tmp_path / "one"
    torch.set_num_threads(1)  # as each torchrun process (OMP_NUM_THREADS=1): the same kernels, the same rounding
    assert main([*ARGS, "--run-dir", one, "-o", tmp_path / "one.safetensors"]) == 0
    two = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "LungGANLib.cli", *ARGS, "--run-dir", str(two), "-o", str(tmp_path / "two.safetensors")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes on cpu" in result.stderr
    assert result.stderr.count("epoch 2:") == 1  # only the first process reports

    a, b = load_file(str(one / "checkpoint.safetensors")), load_file(str(two / "checkpoint.safetensors"))
    torch.manual_seed(0)
    start = Generator(GeneratorConfig(base_channels=4, norm="instance")).state_dict()
    for part in ("generator.", "critic."):
        keys = [k for k in a if k.startswith(part)]
        assert keys and set(keys) == {k for k in b if k.startswith(part)}
        gap = sum(float(((a[k] - b[k]) ** 2).sum()) for k in keys) ** 0.5
        if part == "generator.":
            moved = sum(float(((a[k] - start[k[len(part):]]) ** 2).sum()) for k in keys) ** 0.5
            assert moved > 0.1 and gap < 0.02 * moved  # training moved the weights; the two runs moved them alike
        else:
            assert gap < 0.02 * sum(float((a[k] ** 2).sum()) for k in keys) ** 0.5
    log_one = (one / "log.csv").read_text().splitlines()
    log_two = (two / "log.csv").read_text().splitlines()
    val_one = [float(line.split(",")[8]) for line in log_one[1:]]
    val_two = [float(line.split(",")[8]) for line in log_two[1:]]
    assert len(val_one) == len(val_two) == 2
    assert all(abs(p - q) < 2e-3 for p, q in zip(val_one, val_two))  # validation loss per epoch
