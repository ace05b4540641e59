"""Select BPartIS thresholds on validation and report the published-protocol table on test.

    python -m models.tune --weights models/weights/bpartis-emps.pt --out docs/bpartis

* ``sweep``: on the validation split (DOI-grouped, carved from train), Monte-Carlo predictions at
  T = 30 are made once per image; the instance-uncertainty threshold t_u is swept over a grid and
  the one with the best AP (the protocol's area under precision-recall) is kept; AP vs T is
  measured for T in 1, 5, 10, 20, 30. Not AP50 + mean IoU: in this protocol both are precision
  numbers, so they reward a filter that throws away true particles (the first weights' sweep chose
  t_u = 0.004 by AP50 + mean IoU, keeping half the particles at recall 0.51, one grid step from a
  cliff, and size distributions measured worse than at 0.0125).
  With those clustering thresholds the learned instance filter (:mod:`models.instance_filter`) is
  fitted on the same validation maps; its probability threshold is chosen by the protocol AP of
  out-of-fold predictions (5 folds grouped by source article), then the trees are refitted on all.
* ``report``: on the test split, the three published rows are measured with the same code:
  discriminative (T = 1, dropout off), Bayesian (T = 30), Bayesian + filter (tuned t_u), plus the
  published t_u and the learned filter.
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
from models.data import default_emps_dir, load_sample, read_dois, read_split
from models.evaluate import THRESHOLDS, image_metrics, match_instances, summarise
from models.infer import ParticleSegmenter, filter_instances, grey_image, mean_per_instance
from models.instance_filter import InstanceFilter, apply_filter, fit_filter, instance_features

log = logging.getLogger(__name__)

TU_PUBLISHED = 0.0125
TU_GRID = (0.002, 0.004, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 1.0)
T_GRID = (1, 5, 10, 20, 30)
METRICS = ("AP", "AP50", "AP75", "mean_IoU", "coco_AP")


def mc_labels(segmenter: ParticleSegmenter, image: np.ndarray):
    """Unfiltered instance map and MI map at the working size, plus the mean seed."""
    embedding, sigma, seed, mi = segmenter.predict_maps(image)
    labels = cluster_instances(embedding, sigma, seed, segmenter.seed_threshold,
                               segmenter.min_instance_px).numpy()
    return labels, mi.numpy().astype(np.float32), seed.numpy()


FILTER_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FILTER_FOLDS = 5
SEED_GRID = (0.5, 0.6, 0.7)
MIN_PX_GRID = (16, 48, 128)


def sweep(model, data_dir, stems, tu_grid=TU_GRID, t_grid=T_GRID, progress=True) -> dict:
    """Choose the clustering thresholds and t_u on ``stems`` (validation), then measure vs T.

    At T = max(t_grid) every (seed threshold, minimum instance size, t_u) in the grids is scored
    from one set of Monte-Carlo maps per image; the best AP wins (AP50 + mean IoU break ties). With the chosen
    clustering thresholds, metrics are then reported against t_u and against T.
    """
    t_max = max(t_grid)
    grid = [(st, mp) for st in SEED_GRID for mp in MIN_PX_GRID]
    scores = {(st, mp, tu): [] for st, mp in grid for tu in tu_grid}
    cached = []
    for stem in tqdm(stems, desc="sweep", disable=not progress):
        sample = load_sample(data_dir, stem)
        segmenter = ParticleSegmenter(model=model, mc_samples=t_max, filter=False)
        maps = segmenter.predict_maps_by_t(sample.image, [t for t in t_grid if t > 1])
        single = ParticleSegmenter(model=model, mc_samples=1, filter=False).predict_maps(sample.image)
        cached.append((sample.instances, maps, single, grey_image(sample.image)))
        emb, sig, seed, mi = maps[t_max]
        mi_np = mi.numpy()
        for st, mp in grid:
            labels = cluster_instances(emb, sig, seed, st, mp).numpy()
            for tu in tu_grid:
                kept, _, _ = filter_instances(labels, mi_np, tu)
                scores[(st, mp, tu)].append(image_metrics(sample.instances, kept,
                                                          mean_per_instance(kept, seed.numpy())))
    table = {key: _mean(rows) for key, rows in scores.items()}
    seed_threshold, min_px, best_tu = select_params(table)
    by_t, by_t_filtered = {t: [] for t in t_grid}, {t: [] for t in t_grid if t > 1}
    for gt, maps, single, _ in cached:
        for t in t_grid:
            emb, sig, seed, mi = single if t == 1 else maps[t]
            labels = cluster_instances(emb, sig, seed, seed_threshold, min_px).numpy()
            by_t[t].append(image_metrics(gt, labels, mean_per_instance(labels, seed.numpy())))
            if t > 1:
                kept, _, _ = filter_instances(labels, mi.numpy(), best_tu)
                by_t_filtered[t].append(image_metrics(gt, kept, mean_per_instance(kept, seed.numpy())))
    instances = []
    for gt, maps, _, grey in cached:
        emb, sig, seed, mi = maps[t_max]
        labels = cluster_instances(emb, sig, seed, seed_threshold, min_px).numpy()
        instances.append((gt, labels, seed.numpy(), mi.numpy(), sig.numpy(), grey))
    dois = read_dois(data_dir)
    instance_filter, by_threshold = fit_instance_filter(instances, [dois.get(s, s) for s in stems])
    return {"tu": best_tu, "seed_threshold": seed_threshold, "min_instance_px": min_px,
            "instance_filter": instance_filter.to_dict(), "by_filter_threshold": by_threshold,
            "by_tu": {tu: table[(seed_threshold, min_px, tu)] for tu in tu_grid},
            "by_cluster_params": {f"seed>{st} min_px={mp}": table[(st, mp, best_tu)] for st, mp in grid},
            "by_T": {t: _mean(rows) for t, rows in by_t.items()},
            "by_T_filtered": {t: _mean(rows) for t, rows in by_t_filtered.items()},
            "n_images": len(stems)}


def fit_instance_filter(instances: list, groups: list, thresholds=FILTER_GRID,
                        folds: int = FILTER_FOLDS) -> tuple[InstanceFilter, dict]:
    """Fit the learned instance filter on validation images and choose its probability threshold.

    The threshold is chosen by the protocol AP of out-of-fold predictions: images are split into
    ``folds`` groups by source article (``groups``, the DOIs), each group scored by trees fitted on
    the others, so no instance is scored by trees that saw its article. The shipped trees are then
    fitted on every image.

    Parameters
    ----------
    instances : list of (gt, labels, seed, mi, sigma, grey) per image at the working size
    groups : list of str, one per image

    Returns
    -------
    (InstanceFilter, {threshold: mean metrics of the out-of-fold filtered predictions})
    """
    from sklearn.model_selection import GroupKFold

    features, targets = [], []
    for gt, labels, seed, mi, sigma, grey in instances:
        features.append(instance_features(labels, seed, mi, sigma, grey))
        iou = match_instances(gt, labels)  # (G, P); IoU > 0.5 pairs are one to one
        targets.append(iou.max(0) > 0.5 if iou.shape[0] else np.zeros(iou.shape[1], bool))
    probability = [None] * len(instances)
    splitter = GroupKFold(min(folds, len(set(groups))))
    for fit_idx, held_idx in splitter.split(np.zeros(len(instances)), groups=groups):
        model = fit_filter(np.concatenate([features[i] for i in fit_idx]),
                           np.concatenate([targets[i] for i in fit_idx]))
        for i in held_idx:
            probability[i] = model.probability(features[i])
    table = {}
    for threshold in thresholds:
        rows = []
        for (gt, labels, *_), p in zip(instances, probability):
            keep = p >= threshold
            rows.append(image_metrics(gt, apply_filter(labels, keep), p[keep]))
        table[threshold] = _mean(rows)
    best = max(table, key=lambda k: (table[k]["AP"], table[k]["AP50"] + table[k]["mean_IoU"]))
    log.info("learned filter: threshold %s chosen out of fold, %s", best, table[best])
    return fit_filter(np.concatenate(features), np.concatenate(targets), threshold=best), table


def select_params(table: dict) -> tuple:
    """The key of ``table`` ({(seed threshold, min px, t_u): mean metrics}) with the best protocol
    AP; AP50 + mean IoU break ties."""
    return max(table, key=lambda k: (table[k]["AP"], table[k]["AP50"] + table[k]["mean_IoU"]))


def report(model, data_dir, stems, tu, mc_samples=30, progress=True, seed_threshold=None,
           min_instance_px=None, instance_filter: InstanceFilter | None = None) -> dict:
    """The three BPartIS rows of the published table on ``stems``, plus the published t_u and,
    given ``instance_filter``, the learned filter."""
    rows = {"discriminative": [], "bayesian": [], "bayesian_filter": [], "bayesian_filter_published_tu": [],
            "bayesian_learned_filter": []}
    params = {"seed_threshold": seed_threshold, "min_instance_px": min_instance_px}
    for stem in tqdm(stems, desc="test", disable=not progress):
        sample = load_sample(data_dir, stem)
        gt = sample.instances
        labels, _, seed = mc_labels(ParticleSegmenter(model=model, mc_samples=1, filter=False, **params),
                                    sample.image)
        rows["discriminative"].append(image_metrics(gt, labels, mean_per_instance(labels, seed)))
        segmenter = ParticleSegmenter(model=model, mc_samples=mc_samples, filter=False, **params)
        emb, sig, seed_t, mi_t = segmenter.predict_maps(sample.image)
        labels = cluster_instances(emb, sig, seed_t, segmenter.seed_threshold,
                                   segmenter.min_instance_px).numpy()
        mi, seed = mi_t.numpy().astype(np.float32), seed_t.numpy()
        rows["bayesian"].append(image_metrics(gt, labels, mean_per_instance(labels, seed)))
        if instance_filter is not None:
            p = instance_filter.probability(instance_features(labels, seed, mi, sig.numpy(),
                                                              grey_image(sample.image)))
            keep = p >= instance_filter.threshold
            rows["bayesian_learned_filter"].append(image_metrics(gt, apply_filter(labels, keep), p[keep]))
        kept, _, _ = filter_instances(labels, mi, tu)
        rows["bayesian_filter"].append(image_metrics(gt, kept, mean_per_instance(kept, seed)))
        kept, _, _ = filter_instances(labels, mi, TU_PUBLISHED)
        rows["bayesian_filter_published_tu"].append(image_metrics(gt, kept, mean_per_instance(kept, seed)))
    return {name: _mean(r) for name, r in rows.items() if r} | {"n_images": len(stems), "tu": tu, **params}


def _mean(rows: list[dict]) -> dict:
    """Mean metrics over images, plus R50: mean recall at IoU > 0.5 (how many particles are found)."""
    summary = summarise(rows)
    out = {k: round(float(summary[k]), 4) for k in METRICS}
    index = int(np.argmin(np.abs(THRESHOLDS - 0.5)))
    out["R50"] = round(float(np.mean([r["recall"][index] for r in rows])), 4)
    out["pred_per_gt"] = round(float(np.sum([r["n_pred"] for r in rows]) / max(1, np.sum([r["n_gt"] for r in rows]))), 4)
    return out


def plot_sweep(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a result read back from sweep.json has string keys
    result = result | {"by_tu": {float(k): v for k, v in result["by_tu"].items()},
                       "by_T": {int(k): v for k, v in result["by_T"].items()},
                       "by_T_filtered": {int(k): v for k, v in result["by_T_filtered"].items()}}
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
    if "by_filter_threshold" in result:
        table = {float(k): v for k, v in result["by_filter_threshold"].items()}
        chosen = result["instance_filter"]["threshold"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for metric in METRICS + ("R50",):
            ax.plot(sorted(table), [table[k][metric] for k in sorted(table)], "o-", label=metric)
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen p >= {chosen}")
        ax.set(xlabel="learned filter: kept probability threshold",
               ylabel=f"validation out of fold ({result['n_images']} images)", ylim=(0, 1))
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "filter_threshold.png")
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
    params = {}
    if args.step in ("sweep", "both"):
        result = sweep(model, args.data, read_split(args.data, "val")[:args.limit])
        (out / "sweep.json").write_text(json.dumps(result, indent=1))
        plot_sweep(result, out)
        tu = result["tu"] if tu is None else tu
        params = {k: result[k] for k in ("seed_threshold", "min_instance_px")}
        params["instance_filter"] = InstanceFilter.from_dict(result["instance_filter"])
        log.info("validation sweep: t_u = %s, seed > %s, min %s px; %s", tu, params["seed_threshold"],
                 params["min_instance_px"], result["by_tu"][result["tu"]])
    if args.step in ("report", "both"):
        if not params:
            swept = json.loads((out / "sweep.json").read_text())
            tu = swept["tu"] if tu is None else tu
            params = {k: swept[k] for k in ("seed_threshold", "min_instance_px")}
            if "instance_filter" in swept:
                params["instance_filter"] = InstanceFilter.from_dict(swept["instance_filter"])
        result = report(model, args.data, read_split(args.data, "test")[:args.limit], tu, **params)
        (out / "test.json").write_text(json.dumps(result, indent=1))
        log.info("test: %s", result)


if __name__ == "__main__":
    main()
