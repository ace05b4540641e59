"""Select BPartIS thresholds on validation and report the published-protocol table on test.

    python -m models.tune --weights models/weights/bpartis-emps.pt --out docs/bpartis

* ``sweep``: on the validation split (DOI-grouped, carved from train), Monte-Carlo predictions at
  T = 30 are made once per image; the instance-uncertainty threshold t_u is swept over a grid and
  the one with the best AP50 + mean IoU is kept; AP vs T is measured for T in 1, 5, 10, 20, 30.
* ``report``: on the test split, the three published rows are measured with the same code:
  discriminative (T = 1, dropout off), Bayesian (T = 30), Bayesian + filter (tuned t_u).
Both write JSON and plots to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.cluster import cluster_instances
from models.data import default_emps_dir, read_split
from models.evaluate import image_metrics, load_ground_truth, summarise
from models.infer import ParticleSegmenter, filter_instances
from models.data import load_sample

log = logging.getLogger(__name__)

TU_GRID = (0.002, 0.004, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 1.0)
T_GRID = (1, 5, 10, 20, 30)
METRICS = ("AP", "AP50", "AP75", "mean_IoU", "coco_AP")


def mc_labels(segmenter: ParticleSegmenter, image: np.ndarray):
    """Unfiltered instance map and MI map at the working size, plus the mean seed."""
    embedding, sigma, seed, mi = segmenter.predict_maps(image)
    return _cluster(segmenter, embedding, sigma, seed, mi)


def _cluster(segmenter, embedding, sigma, seed, mi):
    labels = cluster_instances(embedding, sigma, seed, segmenter.seed_threshold,
                               segmenter.min_instance_px).numpy()
    return labels, mi.numpy().astype(np.float32), seed.numpy()


@torch.no_grad()
def mc_labels_by_t(segmenter: ParticleSegmenter, image: np.ndarray, ts) -> dict:
    """``{T: (labels, mi, seed)}`` for every T in ``ts`` (> 1) from ONE run of max(ts) samples:
    the estimate at T uses the first T samples (they are i.i.d.), so the sweep costs max(ts) passes."""
    import torch.nn.functional  # noqa: F401
    from PIL import Image

    from models.infer import EPS, prepare_image
    from models.network import interpret

    rgb = prepare_image(image)
    if segmenter.size:
        rgb = np.asarray(Image.fromarray(rgb).resize((segmenter.size, segmenter.size), Image.BICUBIC))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)
    model = segmenter.model
    segmenter._set_mode(True)
    torch.manual_seed(segmenter.rng_seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=segmenter.bf16):
        head, sizes = model.encode_head(x)
    sums, done, out = None, 0, {}
    for t in sorted(ts):
        while done < t:
            n = min(5, t - done)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=segmenter.bf16):
                raw = model.forward_from_head(head.expand(n, -1, -1, -1), sizes)
            embedding, sigma, seed = interpret(raw.float())
            p = seed[:, 0].clamp(EPS, 1 - EPS)
            entropy = -(p * p.log() + (1 - p) * (1 - p).log())
            parts = [embedding.sum(0), sigma.sum(0), p.sum(0), entropy.sum(0)]
            sums = parts if sums is None else [a + b for a, b in zip(sums, parts)]
            done += n
        emb, sig, seed_mean, ent = (v / t for v in sums)
        pm = seed_mean.clamp(EPS, 1 - EPS)
        mi = (-(pm * pm.log() + (1 - pm) * (1 - pm).log()) - ent).clamp(min=0.0)
        out[t] = _cluster(segmenter, emb, sig, seed_mean, mi)
    return out


def instance_scores(labels: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Mean seed probability of each instance (label order), used to rank instances for COCO AP."""
    n = int(labels.max())
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sums = np.bincount(labels.ravel(), weights=seed.ravel(), minlength=n + 1)[1:]
    return (sums / np.maximum(counts, 1))[counts > 0]


def sweep(model, data_dir, stems, tu_grid=TU_GRID, t_grid=T_GRID, progress=True) -> dict:
    """Metrics vs t_u (T = 30) and vs T (no filter, and filter at each t_u) on ``stems``."""
    by_tu = {tu: [] for tu in tu_grid}
    by_t = {t: [] for t in t_grid}
    by_t_filtered = {t: {tu: [] for tu in tu_grid} for t in t_grid if t > 1}
    for stem in tqdm(stems, desc="sweep", disable=not progress):
        sample = load_sample(data_dir, stem)
        gt = sample.instances
        maps = {}
        if 1 in t_grid:
            maps[1] = mc_labels(ParticleSegmenter(model=model, mc_samples=1, filter=False), sample.image)
        maps.update(mc_labels_by_t(ParticleSegmenter(model=model, mc_samples=max(t_grid), filter=False),
                                   sample.image, [t for t in t_grid if t > 1]))
        for t in t_grid:
            labels, mi, seed = maps[t]
            by_t[t].append(image_metrics(gt, labels, instance_scores(labels, seed)))
            if t == 1:
                continue
            for tu in tu_grid:
                kept, _, _ = filter_instances(labels, mi, tu)
                metrics = image_metrics(gt, kept, instance_scores(kept, seed))
                by_t_filtered[t][tu].append(metrics)
                if t == max(t_grid):
                    by_tu[tu].append(metrics)
    tu_table = {tu: _mean(rows) for tu, rows in by_tu.items()}
    best_tu = max(tu_table, key=lambda tu: tu_table[tu]["AP50"] + tu_table[tu]["mean_IoU"])
    return {"tu": best_tu, "by_tu": tu_table, "by_T": {t: _mean(rows) for t, rows in by_t.items()},
            "by_T_filtered": {t: _mean(rows[best_tu]) for t, rows in by_t_filtered.items()},
            "n_images": len(stems)}


def report(model, data_dir, stems, tu, mc_samples=30, progress=True) -> dict:
    """The three BPartIS rows of the published table on ``stems``."""
    rows = {"discriminative": [], "bayesian": [], "bayesian_filter": []}
    for stem in tqdm(stems, desc="test", disable=not progress):
        sample = load_sample(data_dir, stem)
        gt = sample.instances
        labels, _, seed = mc_labels(ParticleSegmenter(model=model, mc_samples=1, filter=False), sample.image)
        rows["discriminative"].append(image_metrics(gt, labels, instance_scores(labels, seed)))
        labels, mi, seed = mc_labels_by_t(ParticleSegmenter(model=model, mc_samples=mc_samples,
                                                            filter=False), sample.image, [mc_samples])[mc_samples]
        rows["bayesian"].append(image_metrics(gt, labels, instance_scores(labels, seed)))
        kept, _, _ = filter_instances(labels, mi, tu)
        rows["bayesian_filter"].append(image_metrics(gt, kept, instance_scores(kept, seed)))
    return {name: _mean(r) for name, r in rows.items()} | {"n_images": len(stems), "tu": tu}


def _mean(rows: list[dict]) -> dict:
    summary = summarise(rows)
    return {k: round(float(summary[k]), 4) for k in METRICS}


def plot_sweep(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    tus = [tu for tu in result["by_tu"] if tu < 1.0]
    for metric in METRICS:
        ax.plot(tus, [result["by_tu"][tu][metric] for tu in tus], "o-", label=metric)
    ax.axvline(result["tu"], color="k", ls="--", lw=1, label=f"chosen t_u = {result['tu']}")
    ax.set(xscale="log", xlabel="instance uncertainty threshold t_u (mean MI, nats)",
           ylabel=f"validation ({result['n_images']} images), T = 30", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "tu_sweep.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = sorted(result["by_T"])
    for metric in ("AP", "AP50", "mean_IoU"):
        ax.plot(ts, [result["by_T"][t][metric] for t in ts], "o-", label=f"{metric} (no filter)")
        ft = [t for t in ts if t in result["by_T_filtered"]]
        ax.plot(ft, [result["by_T_filtered"][t][metric] for t in ft], "s--", label=f"{metric} (filter)")
    ax.set(xlabel="Monte-Carlo samples T", ylabel="validation", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "ap_vs_T.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default=str(default_emps_dir()))
    parser.add_argument("--out", default="docs/bpartis")
    parser.add_argument("--step", choices=["sweep", "report", "both"], default="both")
    parser.add_argument("--tu", type=float, default=None, help="t_u for the report (default: swept)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = ParticleSegmenter(weights=args.weights).model
    tu = args.tu
    if args.step in ("sweep", "both"):
        result = sweep(model, args.data, read_split(args.data, "val")[:args.limit])
        (out / "sweep.json").write_text(json.dumps(result, indent=1))
        plot_sweep(result, out)
        tu = result["tu"] if tu is None else tu
        log.info("validation sweep: t_u = %s; %s", tu, result["by_tu"][result["tu"]])
    if args.step in ("report", "both"):
        if tu is None:
            tu = json.loads((out / "sweep.json").read_text())["tu"]
        result = report(model, args.data, read_split(args.data, "test")[:args.limit], tu)
        (out / "test.json").write_text(json.dumps(result, indent=1))
        log.info("test: %s", result)


if __name__ == "__main__":
    main()
