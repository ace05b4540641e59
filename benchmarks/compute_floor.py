"""The least time BPartIS inference can take on this machine: network FLOPs x samples / the
machine's measured matrix-multiply throughput.

    python benchmarks/compute_floor.py [--threads 2] [--size 512]

The issue's speed target (<= 2 s per 512 x 512 image at T = 30 on 2 cores) came with a floor of
about 1.3 s, from ~37 GFLOP per pass and ~870 GFLOP/s of bfloat16 matrix work on an Intel host
with AMX. This prints the same arithmetic with both numbers measured here:

- FLOPs of one forward pass (``torch.utils.flop_counter``: convolutions, 2 FLOPs per
  multiply-add) split into the head that runs once per image (everything before the first
  dropout, :meth:`BPartIS.encode_head`) and the tail that runs once per Monte-Carlo sample;
- GFLOP/s of a 2048 x 2048 x 2048 matrix product in float32 and bfloat16 (the best of 5 timed
  repeats after a warm-up), the most a convolution lowered to matrix work can reach;
- the floor ``(head + T x tail) / throughput`` for T = 30 and 10.

Run it on an idle machine: a second process on the same cores halves the throughput.
``benchmarks/segment_speed.py`` gives the measured seconds to set beside the floor.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.network import BPartIS, skip_sizes  # noqa: E402


@torch.no_grad()
def count_flops(size: int) -> tuple[float, float]:
    """GFLOPs of the head (once per image) and of the tail (once per sample) at ``size`` px."""
    model = BPartIS().eval()
    x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        head, branch = model.encode_head(x)
    head_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.forward_from_head(head, branch, skip_sizes(size, size))
    return head_flops / 1e9, counter.get_total_flops() / 1e9


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an ``n`` x ``n`` x ``n`` matrix product in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=512, help="image side in px")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    head, tail = count_flops(args.size)
    print(f"host: {cpu_name()}, torch {torch.__version__}, "
          f"{args.threads} threads, {args.size} x {args.size} px")
    print(f"one pass: {head + tail:.1f} GFLOP (head, once per image: {head:.2f}; tail, per sample: {tail:.2f})")
    print(f"{'dtype':<10}{'GFLOP/s':>9}{'floor T=30 (s)':>16}{'floor T=10 (s)':>16}")
    for dtype in (torch.float32, torch.bfloat16):
        rate = matmul_gflops(dtype)
        floors = [(head + t * tail) / rate for t in (30, 10)]
        print(f"{str(dtype).removeprefix('torch.'):<10}{rate:>9.0f}{floors[0]:>16.2f}{floors[1]:>16.2f}")


if __name__ == "__main__":
    main()
