"""Seconds per 512 x 512 image for BPartIS inference on this machine, and peak memory.

    python benchmarks/segment_speed.py [--weights W] [--images 5] [--threads 2]

Rows (end to end: model, clustering, uncertainty, filtering, at T = 30 and T = 10):
  naive fp32    : T separate fp32 forward passes of the whole network, dropout on
  + batched     : samples in batches of 10, layers before the first dropout run once (fp32)
  + bf16        : as above under bfloat16 autocast with channels-last input (the default)
Also: the clustering share, AP50 of the fast path vs the naive path on the same images (must agree
within 0.005), and the peak resident memory of segmenting one 2048 x 2048 image (a subprocess).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.cluster import cluster_instances  # noqa: E402
from models.data import default_emps_dir, load_sample, read_split  # noqa: E402
from models.evaluate import image_metrics  # noqa: E402
from models.infer import EPS, ParticleSegmenter, filter_instances  # noqa: E402
from models.network import interpret  # noqa: E402


@torch.no_grad()
def naive_segment(seg: ParticleSegmenter, image: np.ndarray) -> np.ndarray:
    """Reference: T full fp32 forward passes one at a time, then the same clustering and filter."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    seg._set_mode(seg.mc_samples > 1)
    torch.manual_seed(0)
    outs = [interpret(seg.model(x)) for _ in range(seg.mc_samples)]
    emb = torch.stack([o[0][0] for o in outs]).mean(0)
    sig = torch.stack([o[1][0] for o in outs]).mean(0)
    p = torch.stack([o[2][0, 0] for o in outs]).clamp(EPS, 1 - EPS)
    pm = p.mean(0)
    ent = lambda q: -(q * q.log() + (1 - q) * (1 - q).log())  # noqa: E731
    mi = (ent(pm) - ent(p).mean(0)).clamp(min=0).numpy()
    labels = cluster_instances(emb, sig, pm, seg.seed_threshold, seg.min_instance_px).numpy()
    return filter_instances(labels, mi, seg.tu if seg.filter else None)[0]


def time_call(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def peak_memory_2048(weights: str | None, threads: int) -> float:
    code = f"""
import numpy as np, resource, torch, sys
sys.path.insert(0, {str(ROOT)!r})
torch.set_num_threads({threads})
from models.infer import ParticleSegmenter
seg = ParticleSegmenter(weights={weights!r}, mc_samples=30)
image = (np.random.default_rng(0).random((2048, 2048)) * 255).astype(np.uint8)
seg.segment(image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stems = read_split(args.data, "test")[: args.images]
    samples = [load_sample(args.data, s) for s in stems]
    rows, ap = [], {}
    for t in (30, 10):
        fast = ParticleSegmenter(weights=args.weights, mc_samples=t)
        batched32 = ParticleSegmenter(weights=args.weights, mc_samples=t, bf16=False)
        variants = {
            "naive fp32 loop": lambda s, seg=fast: naive_segment(seg, s.image),
            "batched, head once (fp32)": lambda s, seg=batched32: seg.segment(s.image).labels,
            "batched, head once, bf16 (default)": lambda s, seg=fast: seg.segment(s.image).labels,
        }
        for name, fn in variants.items():
            fn(samples[0])  # warm-up
            seconds, metrics = [], []
            for s in samples:
                sec, labels = time_call(lambda: fn(s), 1)
                seconds.append(sec)
                metrics.append(image_metrics(s.instances, labels)["AP50"])
            rows.append((t, name, float(np.mean(seconds)), float(np.mean(metrics))))
            ap[(t, name)] = float(np.mean(metrics))
        # clustering share of the default path
        maps = [fast.predict_maps(s.image) for s in samples]
        cl = np.mean([time_call(lambda m=m: cluster_instances(m[0], m[1], m[2]), 1)[0] for m in maps])
        rows.append((t, "  of which clustering", float(cl), float("nan")))
    memory_mb = peak_memory_2048(args.weights, args.threads)
    print(f"BPartIS inference, {len(samples)} EMPS test images at 512 x 512, {args.threads} threads "
          f"({torch.get_num_threads()} used), torch {torch.__version__}")
    print(f"{'T':>3}  {'variant':<38}{'s / image':>10}{'AP50':>8}")
    for t, name, sec, a in rows:
        print(f"{t:>3}  {name:<38}{sec:>10.2f}{'' if a != a else f'{a:8.3f}'}")
    print(f"peak resident memory, one 2048 x 2048 image at T = 30: {memory_mb:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_mb_2048": memory_mb}, indent=1))


if __name__ == "__main__":
    main()
