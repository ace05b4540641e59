"""Seconds per 512 x 512 image for BPartIS inference on this machine, and peak memory.

    python benchmarks/segment_speed.py [--weights W] [--images 5] [--threads 2]

Rows (end to end: model, clustering, uncertainty, filtering, at T = 30 and T = 10), each adding
one speed-up to the row above:
  naive fp32 loop          : T separate fp32 forward passes of the whole network, dropout on
  batched, head once, BN   : samples in batches of 5, everything before the first dropout (the
                             down-samplers and the first residual block's branch) run once,
                             batch norm folded into the convs (fp32)
  + bf16 autocast          : bfloat16 autocast (AMX), channels-last
  + fused upsample-conv    : "bilinear 2x + 3x3 conv" as one transposed conv (exact)
  + bf16-stored weights    : weights kept in bfloat16 (residual stream still float32)
  + bf16 residual stream   : the down-samplers hand bfloat16 on, so no block mixes dtypes
  + test-time augmentation : the samples cycle through the 8 flips / transposes (the default
                             path of weights whose card says ``tta``)
  + allocator keeps memory : glibc malloc keeps freed activations for reuse (no page faults)
  + fused oneDNN graphs    : the passes traced and fused by oneDNN Graph, each conv writing
                             its ELU / mask + skip + ELU (``--compile``, the default of the idx
                             commands; traced in the warm-up image)
  + zoom rule (default)    : the card's rule: a T = 1 pass, and images of small particles
                             segmented at 2x the working size (every row above: zoom 1)
  zoom 2 on every image    : ``--zoom 2``, the cost of a zoomed image
Every variant replays the same dropout masks (drawn per image from one seed), so up to the
bf16 residual stream the differences in AP / AP50 come from arithmetic only; the last column is
the largest of |dAP|, |dAP50| against the naive loop (target: within 0.005), and for the fused
graphs against the row above them (the same samples). The augmented rows
sample other views of the image, so their AP differs by design (measured on the whole splits in
docs/benchmarks.md). The allocator setting cannot be undone in a process, so the rows without it
run first for both T. Also the clustering share and the peak resident memory of segmenting one
2048 x 2048 image with the idx commands' defaults (a subprocess), at zoom 1 and 2.
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.cluster import cluster_instances  # noqa: E402
from models.data import default_emps_dir, load_sample, read_split  # noqa: E402
from models.evaluate import image_metrics  # noqa: E402
from models.infer import (  # noqa: E402
    DEFAULT_WEIGHTS,
    EPS,
    ParticleSegmenter,
    binary_entropy,
    grey_image,
    load_weights,
    prepare_image,
)
import models.infer  # noqa: E402
from models.network import BPartIS, DownsamplerBlock, draw_dropout_masks, interpret  # noqa: E402


@torch.no_grad()
def naive_segment(seg: ParticleSegmenter, model: BPartIS, image: np.ndarray) -> np.ndarray:
    """Reference: T separate fp32 forward passes of the whole (unfolded) ``model``, one sample at
    a time, with the dropout masks ``seg`` draws, then the same clustering and filter."""
    rgb = np.asarray(Image.fromarray(prepare_image(image)).resize((seg.size, seg.size), Image.BICUBIC))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout2d):
            module.train(seg.mc_samples > 1)
    draw_dropout_masks(model, seg.mc_samples, torch.Generator().manual_seed(seg.rng_seed))
    outs = [interpret(model(x)) for _ in range(seg.mc_samples)]
    draw_dropout_masks(model, 0)
    emb = torch.stack([o[0][0] for o in outs]).mean(0)
    sig = torch.stack([o[1][0] for o in outs]).mean(0)
    p = torch.stack([o[2][0, 0] for o in outs]).clamp(EPS, 1 - EPS)
    pm = p.mean(0)
    mi = (binary_entropy(pm) - binary_entropy(p).mean(0)).clamp(min=0).numpy()
    labels = cluster_instances(emb, sig, pm, seg.seed_threshold, seg.min_instance_px, seg.foreground_threshold,
                               seg.phi_threshold).numpy()
    return seg.filter_labels(labels, pm.numpy(), mi, sig.numpy(), lambda: grey_image(rgb))[0]


def without_fused_upsampling(seg: ParticleSegmenter) -> ParticleSegmenter:
    """``seg`` with the decoders back on interpolate + conv (for the speed-up table)."""
    for module in seg.model.modules():
        for name in ("fused_weight", "fused_output_weight"):
            if name in module._buffers:
                del module._buffers[name]
    return seg


def time_call(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def peak_memory_2048(weights: str | None, threads: int, compile: bool = True, zoom: int = 1) -> float:
    """Peak resident memory (MB) of a fresh process segmenting one 2048 x 2048 image at T = 30."""
    code = f"""
import numpy as np, resource, torch, sys
sys.path.insert(0, {str(ROOT)!r})
torch.set_num_threads({threads})
from models.infer import ParticleSegmenter
seg = ParticleSegmenter(weights={weights!r}, mc_samples=30, compile={compile!r}, zoom={zoom!r})
image = (np.random.default_rng(0).random((2048, 2048)) * 255).astype(np.uint8)
seg.segment(image)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so it would report this
# benchmark's own resident size at the moment it started the subprocess (1.7 GB against 0.9)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")]
print(int(hwm[0]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def time_variants(phase: str, t: int, weights, model, samples) -> list:
    """Rows ``(T, variant, s / image, AP, AP50, max |d| vs naive)`` of one phase."""
    make = lambda **kw: ParticleSegmenter(weights=weights, mc_samples=t, **({"zoom": 1} | kw))  # noqa: E731
    if phase == "plain allocator":
        autocast_only = without_fused_upsampling(make(bf16=False, tta=False))
        autocast_only.bf16 = True  # autocast, weights converted on every pass
        autocast_fused = make(bf16=False, tta=False)
        autocast_fused.bf16 = True
        float32_stream = make(tta=False)
        for module in float32_stream.model.modules():
            if isinstance(module, DownsamplerBlock):
                module.low_precision_stream = False
        bf16_stream = make(tta=False)
        variants = {
            "naive fp32 loop": lambda s, seg=bf16_stream: naive_segment(seg, model, s.image),
            "batched, head once, BN folded (fp32)": make(bf16=False, tta=False),
            "+ bf16 autocast, channels-last": autocast_only,
            "+ fused upsample-conv": autocast_fused,
            "+ bf16-stored weights": float32_stream,
            "+ bf16 residual stream": bf16_stream,
            "+ test-time augmentation": make(tta=True),
        }
    else:
        models.infer.keep_freed_memory()
        variants = {"+ allocator keeps freed memory": make(tta=True),
                    "+ fused oneDNN graphs": make(tta=True, compile=True),
                    "+ zoom rule (default)": make(tta=True, compile=True, zoom=None),
                    "zoom 2 on every image": make(tta=True, compile=True, zoom=2)}
    rows, reference = [], None
    for name, fn in variants.items():
        if isinstance(fn, ParticleSegmenter):
            fn = lambda s, seg=fn: seg.segment(s.image).labels  # noqa: E731
        fn(samples[0])  # warm-up
        seconds, metrics = [], []
        for s in samples:
            sec, labels = time_call(lambda fn=fn, s=s: fn(s), 1)
            seconds.append(sec)
            metrics.append(image_metrics(s.instances, labels))
        ap = float(np.mean([m["AP"] for m in metrics]))
        ap50 = float(np.mean([m["AP50"] for m in metrics]))
        reference = reference if reference is not None else (ap, ap50)
        rows.append((t, name, float(np.mean(seconds)), ap, ap50,
                     max(abs(ap - reference[0]), abs(ap50 - reference[1]))))
    if phase == "tuned allocator":  # clustering share of the default path
        default = make(tta=True, compile=True)
        maps = [default.predict_maps(s.image) for s in samples]
        cl = np.mean([time_call(lambda m=m: cluster_instances(m[0], m[1], m[2]), 1)[0] for m in maps])
        rows.append((t, "  of which clustering", float(cl), float("nan"), float("nan"), float("nan")))
    return rows


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
    model = BPartIS()
    model.load_state_dict(load_weights(args.weights or DEFAULT_WEIGHTS))
    models.infer.TUNE_ALLOCATOR = False
    rows = []
    for phase in ("plain allocator", "tuned allocator"):
        for t in (30, 10):
            rows += time_variants(phase, t, args.weights, model, samples)
    rows.sort(key=lambda row: -row[0])  # T = 30 first, in the order measured
    memory_mb = peak_memory_2048(args.weights, args.threads)
    plain_memory_mb = peak_memory_2048(args.weights, args.threads, compile=False)
    zoom_memory_mb = peak_memory_2048(args.weights, args.threads, zoom=2)
    print(f"BPartIS inference, {len(samples)} EMPS test images at 512 x 512, {args.threads} threads "
          f"({torch.get_num_threads()} used), torch {torch.__version__}")
    print(f"{'T':>3}  {'variant':<40}{'s / image':>10}{'AP':>8}{'AP50':>8}{'max |d| vs ref':>18}")
    for t, name, sec, a, a50, d in rows:
        tail = "" if np.isnan(a) else f"{a:8.3f}{a50:8.3f}{d:18.4f}"
        print(f"{t:>3}  {name:<40}{sec:>10.2f}{tail}")
    print(f"peak resident memory, one 2048 x 2048 image at T = 30: {memory_mb:.0f} MB "
          f"(plain model, --no-compile: {plain_memory_mb:.0f} MB; --zoom 2: {zoom_memory_mb:.0f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "peak_mb_2048": memory_mb,
                                               "plain_peak_mb_2048": plain_memory_mb,
                                               "zoom2_peak_mb_2048": zoom_memory_mb}, indent=1))


if __name__ == "__main__":
    main()
