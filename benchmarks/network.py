"""Benchmark: slices per second through the generator alone, by batch size.

Real slices (elastix-00, windowed and resized as in inference) go through the
shipped generator, batch-norm folded, on the chosen device; CUDA timings are
synchronised and, with ``--half``, also taken under float16 autocast.

Usage:
    python benchmarks/network.py [--device cpu|cuda|mps] [--batch-sizes 1 8 16 64] [--repeats 3] [--half]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from LungGANLib.models.device import resolve_device  # noqa: E402
from LungGANLib.io import load_ct  # noqa: E402
from LungGANLib.models.weights import load_model  # noqa: E402
from LungGANLib.segment.preprocess import to_network  # noqa: E402
from LungGANLib.config import data_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--half", action="store_true", help="also time float16 autocast (CUDA)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    generator, info = load_model(device=device)
    net = generator.fused()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    ct = load_ct(data_dir() / "ct/elastix-00.nii.gz")
    slices = to_network(ct.array, info.input_size, info.window)  # (141, 1, s, s)
    modes = [False, True] if args.half and device.type == "cuda" else [False]
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, input {info.input_size}²\n")
    print("| batch | precision | slices/s |")
    print("|---:|---|---:|")
    for half in modes:
        for bs in args.batch_sizes:
            reps = max(1, (bs + slices.shape[0] - 1) // slices.shape[0])
            batch = slices.repeat(reps, 1, 1, 1)[:bs].to(device)
            if device.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=half):
                net(batch)  # warm up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                n = 0
                while time.perf_counter() - start < 2.0 or n < args.repeats:
                    net(batch)
                    n += 1
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            print(f"| {bs} | {'float16' if half else 'float32'} | {n * bs / seconds:.0f} |")


if __name__ == "__main__":
    main()
