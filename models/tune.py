"""Select BPartIS thresholds on validation and report the published-protocol table on test.

    python -m models.tune --weights models/weights/bpartis-emps.pt --out docs/bpartis

* ``sweep``: on the validation split (DOI-grouped, carved from train), Monte-Carlo predictions at
  T = 30 are made once per image; the instance-uncertainty threshold t_u is swept over a grid and
  the one with the best AP (the protocol's area under precision-recall) is kept; AP vs T is
  measured for T in 1, 5, 10, 20, 30. Not AP50 + mean IoU: in this protocol both are precision
  numbers, so they reward a filter that throws away true particles (the first weights' sweep chose
  t_u = 0.004 by AP50 + mean IoU, keeping half the particles at recall 0.51, one grid step from a
  cliff, and size distributions measured worse than at 0.0125).
  With that seed threshold the learned instance filter (:mod:`models.instance_filter`) is
  fitted on the same validation maps (``filter``); its probability threshold is chosen by the
  protocol AP of out-of-fold predictions (5 folds grouped by source article), then the trees are
  refitted on all. It is fitted once per minimum instance size of ``MIN_PX_GRID`` and the size of
  the best out-of-fold AP is kept: the learned filter is the default, and it can drop small
  fragments itself where the t_u filter needs a size cut. With that clustering the zoom rule
  (``ZOOM_GRID``) and then the mask thresholds (``MASK_GRID``: foreground seed and phi, published
  0.5) are chosen the same way. In each of these choices, candidates whose out-of-fold AP is
  within one article-clustered standard error of the best are ties (``AP_se`` in the JSON), and
  the tie goes to the best F1 at IoU 0.5 (nineteenth session: 56 images cannot tell apart AP
  differences of a few thousandths, and AP's own tie-breaks favour precision).
* ``report``: on the test split, the three published rows are measured with the same code:
  discriminative (T = 1, dropout off), Bayesian (T = 30), Bayesian + filter (tuned t_u), plus the
  published t_u and the learned filter.
Both write JSON and plots to ``--out``. ``compare``, ``features``, ``filter`` and ``report`` snap
the learned filter's rims to the image's edge (``--edge-alpha``, default the shipped card's
``edge_alpha``, chosen on validation in the sixteenth session from the default pipeline's labels;
until the eighteenth session the ``filter`` step scored the network's masks), and cluster the
learned filter's instances with the card's ``refine_centre`` (``--refine-centre 0|1``;
seventeenth session; the ``filter`` step clusters its validation and fit-split instances with it
too, since the eighteenth session).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from idx.errors import run_module
from models.cluster import FOREGROUND_THRESHOLD, PHI_THRESHOLD, cluster_instances
from models.data import article_groups, default_emps_dir, load_sample, read_split
from models.evaluate import clustered_se, image_metrics, match_instances, summarise
from models.edges import snap_edges
from models.infer import (
    DEFAULT_WEIGHTS,
    ParticleSegmenter,
    file_sha256,
    ZOOM,
    compact_labels,
    filter_instances,
    grey_image,
    load_weights,
    mean_per_instance,
    resize_labels,
    tuned_params,
)
from models.network import BPartIS
from models.instance_filter import FEATURES, InstanceFilter, apply_filter, fit_filter, instance_features

log = logging.getLogger(__name__)

TU_PUBLISHED = 0.0125
TU_GRID = (0.002, 0.004, 0.006, 0.008, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 1.0)
T_GRID = (1, 5, 10, 20, 30)
METRICS = ("AP", "AP50", "AP75", "mean_IoU", "coco_AP")


def mc_labels(segmenter: ParticleSegmenter, image: np.ndarray):
    """Unfiltered instance map and MI map at the working size, plus the mean seed."""
    embedding, sigma, seed, mi = segmenter.predict_maps(image)
    labels = cluster_instances(embedding, sigma, seed, segmenter.seed_threshold, segmenter.min_instance_px,
                               segmenter.foreground_threshold, segmenter.phi_threshold,
                               segmenter.refine_centre).numpy()
    return labels, mi.numpy().astype(np.float32), seed.numpy()


FILTER_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FILTER_FOLDS = 5
SEED_GRID = (0.5, 0.6, 0.7, 0.8, 0.9)
MIN_PX_GRID = (16, 48, 128)
# zoom rule: images whose T = 1 typical instance area (px at 512) is below this are segmented at 2x
# (0: never); chosen by the learned filter's out-of-fold AP with its clustering
ZOOM_GRID = (0, 400, 800, 1200, 1600, 2400)
# mask thresholds (foreground seed, phi; published 0.5 and 0.5): with the chosen clustering and
# zoom rule, chosen last by the learned filter's out-of-fold AP. Masks at 0.5 came out small (a
# fraction of a pixel inside the true edge, EMPS train and test): the network's seed map and
# Gaussians fall below 0.5 a little inside the particles' edges
MASK_GRID = tuple((fg, phi) for fg in (0.4, 0.45, 0.5) for phi in (0.4, 0.45, 0.5))
# how the filter step chooses (recorded in the sweep JSON; :func:`select_params`)
SELECTION = ("best out-of-fold protocol AP; rows within one article-clustered standard error of it "
             "(AP_se) are ties, settled by F1 at IoU 0.5 (AP50 and R50; nineteenth session; before, by "
             "AP50 + mean IoU on exact ties only)")
# how the t_u sweep chooses (recorded as "tu_selection"; :func:`sweep`)
SWEEP_SELECTION = ("best protocol AP over seed threshold x minimum size x t_u; rows within one "
                   "article-clustered standard error of it (AP_se) are ties, settled by F1 at IoU 0.5 "
                   "(twentieth session; before, by the best AP, AP50 + mean IoU on exact ties)")
# tuned clustering settings; the t_u route's own values are stored under "tu_" + the name
CLUSTERING_KEYS = ("seed_threshold", "min_instance_px", "foreground_threshold", "phi_threshold")
MASK_DEFAULTS = {"foreground_threshold": FOREGROUND_THRESHOLD, "phi_threshold": PHI_THRESHOLD}


def sweep(model, data_dir, stems, tu_grid=TU_GRID, t_grid=T_GRID, progress=True, tta=True) -> dict:
    """Choose the clustering thresholds and t_u on ``stems`` (validation), then measure vs T.

    At T = max(t_grid) every (seed threshold, minimum instance size, t_u) in the grids is scored
    from one set of Monte-Carlo maps per image, chosen as the filter step chooses (:func:`select_params`:
    rows within one article-clustered standard error of the best AP are ties, settled by F1 at IoU
    0.5; twentieth session, before by the best AP alone). With the chosen clustering thresholds,
    metrics are then reported against t_u and against T.
    """
    t_max = max(t_grid)
    grid = [(st, mp) for st in SEED_GRID for mp in MIN_PX_GRID]
    scores = {(st, mp, tu): [] for st, mp in grid for tu in tu_grid}
    cached = []
    segmenter = ParticleSegmenter(model=model, mc_samples=t_max, filter=False, tta=tta)
    discriminative = ParticleSegmenter(model=model, mc_samples=1, filter=False)
    for stem in tqdm(stems, desc="sweep", disable=not progress):
        sample = load_sample(data_dir, stem)
        maps = segmenter.predict_maps_by_t(sample.image, [t for t in t_grid if t > 1])
        single = discriminative.predict_maps(sample.image)
        cached.append((sample.instances, maps, single))
        emb, sig, seed, mi = maps[t_max]
        mi_np = mi.numpy()
        for st, mp in grid:
            labels = cluster_instances(emb, sig, seed, st, mp).numpy()
            for tu in tu_grid:
                kept, _, _ = filter_instances(labels, mi_np, tu)
                scores[(st, mp, tu)].append(image_metrics(sample.instances, kept,
                                                          mean_per_instance(kept, seed.numpy())))
    (seed_threshold, min_px, best_tu), table = choose({key: _image_rows(rows) for key, rows in scores.items()},
                                                      article_groups(data_dir, stems))
    table = public(table)
    by_t, by_t_filtered = {t: [] for t in t_grid}, {t: [] for t in t_grid if t > 1}
    for gt, maps, single in cached:
        for t in t_grid:
            emb, sig, seed, mi = single if t == 1 else maps[t]
            labels = cluster_instances(emb, sig, seed, seed_threshold, min_px).numpy()
            by_t[t].append(image_metrics(gt, labels, mean_per_instance(labels, seed.numpy())))
            if t > 1:
                kept, _, _ = filter_instances(labels, mi.numpy(), best_tu)
                by_t_filtered[t].append(image_metrics(gt, kept, mean_per_instance(kept, seed.numpy())))
    return {"tu": best_tu, "seed_threshold": seed_threshold, "min_instance_px": min_px, "tta": tta, **MASK_DEFAULTS,
            "tu_selection": SWEEP_SELECTION,
            "by_setup": {f"seed>{st} min_px={mp} tu={tu}": row for (st, mp, tu), row in table.items()},
            "by_tu": {tu: table[(seed_threshold, min_px, tu)] for tu in tu_grid},
            "by_cluster_params": {f"seed>{st} min_px={mp}": table[(st, mp, best_tu)] for st, mp in grid},
            "by_T": {t: _mean(rows) for t, rows in by_t.items()},
            "by_T_filtered": {t: _mean(rows) for t, rows in by_t_filtered.items()},
            "n_images": len(stems)}


class MapCache:
    """Monte-Carlo mean maps (embedding, sigma, seed, MI) per EMPS image, optionally kept as
    ``{folder}/{stem}.npz`` so the filter step and the report can share one costly pass.

    ``folder/meta.json`` records the weights' sha256 and the sampling settings; a folder made for
    other weights or settings is refused rather than silently reused.
    """

    def __init__(self, segmenter: ParticleSegmenter, weights_sha256: str, folder: str | Path | None = None):
        self.segmenter, self.folder = segmenter, Path(folder) if folder else None
        meta = {"weights_sha256": weights_sha256, "mc_samples": segmenter.mc_samples,
                "rng_seed": segmenter.rng_seed, "size": segmenter.size, "bf16": segmenter.bf16,
                "tta": segmenter.tta}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / "meta.json"
            if path.exists() and json.loads(path.read_text()) != meta:
                raise ValueError(f"{self.folder} holds maps of other weights or settings "
                                 f"({path.read_text().strip()}); give another --cache folder")
            path.write_text(json.dumps(meta))
        self._areas = None

    def maps(self, stem: str, image: np.ndarray, zoom: int = 1) -> tuple[np.ndarray, ...]:
        """``embedding (2, S, S), sigma (2, S, S), seed (S, S), mi (S, S)`` float32 for ``stem``
        (S: the working size times ``zoom``; zoomed maps sit in ``folder/zoom{zoom}/``)."""
        folder = self.folder if zoom == 1 or self.folder is None else self.folder / f"zoom{zoom}"
        path = folder / f"{stem}.npz" if folder else None
        if path is not None and path.exists():
            with np.load(path) as data:
                return tuple(data[k] for k in ("emb", "sigma", "seed", "mi"))
        maps = tuple(m.numpy().astype(np.float32) for m in self.segmenter.predict_maps(image, zoom))
        if path is not None:  # written whole, then renamed: a stopped run leaves no half file
            folder.mkdir(exist_ok=True)
            partial = path.with_name(path.stem + ".partial.npz")
            np.savez_compressed(partial, **dict(zip(("emb", "sigma", "seed", "mi"), maps)))
            partial.replace(path)
        return maps

    def typical_area(self, data_dir, stem: str, seed_threshold: float, min_px: int) -> float | None:
        """:meth:`ParticleSegmenter.typical_instance_area` of ``stem`` clustered with these
        settings (memoised in ``folder/typical_area.json``; the image is read only when missing)."""
        key = f"{stem} {seed_threshold} {min_px}"
        path = self.folder / "typical_area.json" if self.folder else None
        if self._areas is None:
            self._areas = json.loads(path.read_text()) if path is not None and path.exists() else {}
        if key not in self._areas:
            self._areas[key] = self.segmenter.typical_instance_area(load_sample(data_dir, stem).image,
                                                                    seed_threshold, min_px)
            if path is not None:
                path.write_text(json.dumps(self._areas))
        return self._areas[key]

    def zoom_for(self, data_dir, stem: str, seed_threshold: float, min_px: int, zoom_below_px) -> int:
        """The zoom :class:`ParticleSegmenter` would choose for ``stem`` under ``zoom_below_px``."""
        if not zoom_below_px:
            return 1
        area = self.typical_area(data_dir, stem, seed_threshold, min_px)
        return ZOOM if area is not None and area < zoom_below_px else 1

    def instances(self, data_dir, stem: str, seed_threshold: float, min_px: int, zoom: int = 1,
                  mask=(FOREGROUND_THRESHOLD, PHI_THRESHOLD), refine_centre: bool = False) -> tuple:
        """``(gt, labels, seed, mi, sigma, grey, zoom)`` of one image (see :meth:`instances_by_params`)."""
        return self.instances_by_params(data_dir, stem, [(seed_threshold, min_px)], zoom,
                                        mask, refine_centre)[(seed_threshold, min_px)]

    def instances_by_params(self, data_dir, stem: str, params, zoom: int = 1,
                            mask=(FOREGROUND_THRESHOLD, PHI_THRESHOLD), refine_centre: bool = False) -> dict:
        """``{(seed threshold, min_px): (gt, labels, seed, mi, sigma, grey, zoom)}``: one set of
        maps clustered with each pair of ``params`` (the maps are computed or read once) and the
        mask thresholds ``mask`` (foreground seed, phi), proposals re-assigned around their mean
        embedding with ``refine_centre``. ``gt`` is at the evaluation size (512);
        the rest at the working size times ``zoom`` (``min_px`` is in working-size pixels, as for
        :class:`ParticleSegmenter`)."""
        sample = load_sample(data_dir, stem)
        emb, sig, seed, mi = self.maps(stem, sample.image, zoom)
        grey = grey_image(sample.image if zoom == 1 else self.segmenter.working_rgb(sample.image, zoom))
        return {(st, mp): (sample.instances,
                           cluster_instances(torch.from_numpy(emb), torch.from_numpy(sig), torch.from_numpy(seed),
                                             st, mp * zoom ** 2, *mask, refine_centre).numpy(),
                           seed, mi, sig, grey, zoom)
                for st, mp in params}


def compare_step(cache: MapCache, data_dir, stems, card: dict, progress=True) -> dict:
    """Score candidate weights (a run's snapshots) on validation the way the shipped ones were
    chosen (sessions 12-15): the T = 30 maps of ``cache``'s weights, clustered with the shipped
    ``card``'s seed threshold, minimum size, zoom rule (each candidate's own T = 1 pre-pass) and
    mask thresholds; a learned filter fitted on ``stems`` alone and scored out of fold (5 folds
    grouped by article). Cheaper than :func:`filter_step` (no fit images, no grids), so several
    snapshots can be compared before one is tuned in full. The kept instances' rims are snapped
    as the card says (``edge_alpha``, zoom-1 images), so the score is the default pipeline's.
    Returns the filter's threshold and the out-of-fold metrics at it."""
    alpha = card.get("edge_alpha")
    return public(out_of_fold_scores(cache, data_dir, stems, card, (alpha,), "compare", progress))[alpha]


EDGE_GRID = (None, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)  # rim snapping alphas (None: the network's masks)


def edges_step(cache: MapCache, data_dir, stems, card: dict, alphas=EDGE_GRID, progress=True) -> dict:
    """Choose the rim-snapping ``edge_alpha`` (:mod:`models.edges`) on validation: for each of
    ``alphas`` the :func:`compare_step` score (``card``'s clustering and zoom rule, a filter
    fitted on ``stems`` alone and scored out of fold, the kept rims snapped on zoom-1 images);
    the alpha of the best out-of-fold AP is kept (alphas within one article-clustered standard
    error of it are ties, settled by F1 at IoU 0.5: :func:`select_params`). Returns
    ``{"edge_alpha": best, "by_alpha": {alpha: row}}`` (alpha "none": no snapping)."""
    scores = out_of_fold_scores(cache, data_dir, stems, card, alphas, "edges", progress)
    best, by_alpha = choose({"none" if alpha is None else alpha: row for alpha, row in scores.items()},
                            article_groups(data_dir, stems))
    by_alpha = public(by_alpha)
    log.info("rim snapping: alpha %s chosen out of fold, %s", best, by_alpha[best])
    return {"edge_alpha": None if best == "none" else best, "by_alpha": by_alpha}


def out_of_fold_scores(cache: MapCache, data_dir, stems, card: dict, alphas, desc: str, progress=True) -> dict:
    """``{alpha: {"threshold": ..., metrics}}``: ``stems`` clustered with ``card``
    (:func:`card_instances`), a learned filter scored out of fold (5 article-grouped folds, the
    trees fitted once), its threshold chosen by AP (ties within one standard error to F1 at IoU
    0.5, :func:`select_params`) with the kept rims snapped with each alpha. Each row keeps its
    per-image AP (``_AP``) for comparisons across alphas; :func:`public` drops it."""
    items = card_instances(cache, data_dir, stems, card, desc, progress)
    groups = article_groups(data_dir, stems)
    probability = out_of_fold_probability([labelled_features(*item) for item in items], groups)
    scores = {}
    for alpha in alphas:
        best, table = choose(threshold_table(items, probability, edge_alpha=alpha), groups)
        log.info("learned filter: threshold %s chosen out of fold (rims snapped with %s), %s", best, alpha,
                 public(table)[best])
        scores[alpha] = {"threshold": best, **table[best]}
    return scores


def card_instances(cache: MapCache, data_dir, stems, card: dict, desc: str, progress=True) -> list:
    """:meth:`MapCache.instances` of each of ``stems`` clustered with ``card``'s seed threshold,
    minimum size, mask thresholds and ``refine_centre``, at the zoom its rule (``zoom_below_px``)
    gives each image."""
    mask = (card.get("foreground_threshold", FOREGROUND_THRESHOLD), card.get("phi_threshold", PHI_THRESHOLD))
    setup = (card["seed_threshold"], card["min_instance_px"])
    return [cache.instances(data_dir, stem, *setup, cache.zoom_for(data_dir, stem, *setup, card.get("zoom_below_px")),
                            mask, card.get("refine_centre", False))
            for stem in tqdm(stems, desc=desc, disable=not progress)]


def filter_step(cache: MapCache, data_dir, val_stems, fit_stems, seed_grid=SEED_GRID, min_px_grid=MIN_PX_GRID,
                progress=True, zoom_grid=ZOOM_GRID, mask_grid=MASK_GRID, refine_centre: bool = False,
                edge_alpha: float | None = None) -> dict:
    """Fit the learned filter on the validation images (threshold by out-of-fold AP) with the fit
    split's instances added to every training side, once per clustering set-up (seed threshold of
    ``seed_grid`` x minimum instance size of ``min_px_grid``); the set-up whose filter scores the
    best out-of-fold AP is chosen (set-ups and thresholds within one article-clustered standard
    error of the best AP are ties, settled by F1 at IoU 0.5: :func:`select_params`; nineteenth
    session). The learned filter is the default, so its clustering is chosen for it, not taken
    from the t_u sweep (with the published foreground rule the t_u filter wants seed > 0.9, which
    on validation ties with lower seeds under the learned filter and misses small particles).
    With that clustering the zoom rule is chosen the same way from ``zoom_grid``: images whose
    T = 1 typical (area-weighted median) instance area is below it are segmented at 2x; 0: never.
    Last, with both, the mask thresholds (foreground seed, phi) from ``mask_grid``. Every set-up
    is clustered with ``refine_centre`` (proposals re-assigned around their mean embedding), so
    the filter learns the instances it will be applied to, and every score is taken with the kept
    rims snapped with ``edge_alpha`` on zoom-1 images, as the default pipeline snaps them
    (eighteenth session; before, the network's masks were scored).
    Returns the sweep-JSON entries, ``seed_threshold``, ``min_instance_px``,
    ``zoom_below_px``, ``foreground_threshold`` and ``phi_threshold`` among them."""
    grid = [(st, mp) for st in seed_grid for mp in min_px_grid]
    val = {key: [] for key in grid}
    extra = {key: [] for key in grid}
    for stem in tqdm(val_stems, desc="filter: validation", disable=not progress):
        for key, item in cache.instances_by_params(data_dir, stem, grid, refine_centre=refine_centre).items():
            val[key].append(item)
    for stem in tqdm(fit_stems, desc="filter: fit split", disable=not progress):
        for key, item in cache.instances_by_params(data_dir, stem, grid, refine_centre=refine_centre).items():
            extra[key].append(labelled_features(*item))
    groups = article_groups(data_dir, val_stems)

    def fit_setup(val_items, extra_pairs):
        """The filter fitted out of fold on one set-up's items (validation items; fit-split
        (features, targets) pairs): its chosen row, and ((trees, table by threshold, fit-split
        targets), validation items)."""
        fit_split = training_set(extra_pairs)
        model, table = fit_instance_filter(val_items, groups, extra=fit_split, edge_alpha=edge_alpha)
        return table[model.threshold], ((model, table, fit_split[1]), val_items)

    best, fitted = {}, {}  # per set-up: its chosen row; what fit_setup returns with it
    for key in grid:
        best[key], fitted[key] = fit_setup(val[key], extra[key])
    (seed_threshold, min_px), best = choose(best, groups)
    log.info("learned filter: seed > %s, min %s px chosen out of fold, %s", seed_threshold, min_px,
             public(best))
    # then the zoom rule, with that clustering: images of small particles segmented at 2x
    chosen = (seed_threshold, min_px)
    by_zoom, fitted_zoom = {0: best[chosen]}, {0: fitted[chosen]}
    zoomed = {}  # stem -> its zoomed validation item, or its zoomed fit-split (features, targets)
    for below in sorted(b for b in zoom_grid if b):  # ascending: a stem zoomed stays zoomed
        for stem in tqdm(val_stems + fit_stems, desc=f"filter: zoom below {below} px", disable=not progress):
            if stem not in zoomed and cache.zoom_for(data_dir, stem, *chosen, below) > 1:
                item = cache.instances(data_dir, stem, *chosen, ZOOM, refine_centre=refine_centre)
                zoomed[stem] = item if stem in val_stems else labelled_features(*item)
        by_zoom[below], fitted_zoom[below] = fit_setup(
            [zoomed.get(s, plain) for s, plain in zip(val_stems, val[chosen])],
            [zoomed.get(s, plain) for s, plain in zip(fit_stems, extra[chosen])])
    zoom_below, by_zoom = choose(by_zoom, groups)
    log.info("learned filter: zoom below %s px chosen out of fold, %s", zoom_below, public(by_zoom))
    # then the mask thresholds, with that clustering and zoom rule
    published = (FOREGROUND_THRESHOLD, PHI_THRESHOLD)
    zooms = {stem: cache.zoom_for(data_dir, stem, *chosen, zoom_below) for stem in val_stems + fit_stems}
    by_mask, fitted_mask = {published: by_zoom[zoom_below]}, {published: fitted_zoom[zoom_below]}
    for mask in (tuple(m) for m in mask_grid if tuple(m) != published):
        by_mask[mask], fitted_mask[mask] = fit_setup(
            [cache.instances(data_dir, stem, *chosen, zooms[stem], mask, refine_centre)
             for stem in tqdm(val_stems, desc=f"filter: masks {mask}", disable=not progress)],
            [labelled_features(*cache.instances(data_dir, stem, *chosen, zooms[stem], mask, refine_centre))
             for stem in tqdm(fit_stems, desc=f"filter: masks {mask}, fit split", disable=not progress)])
    (foreground, phi), by_mask = choose(by_mask, groups)
    log.info("learned filter: mask thresholds foreground > %s, phi > %s chosen out of fold, %s", foreground, phi,
             public(by_mask))
    (model, table, extra_y), val_items = fitted_mask[(foreground, phi)]
    val_true = [true_instances(gt, labels) for gt, labels, *_ in val_items]
    by_mask, best, by_zoom = public(by_mask), public(best), public(by_zoom)
    return {"instance_filter": model.to_dict(), "by_filter_threshold": public(table),
            "selection": SELECTION,
            "seed_threshold": seed_threshold, "min_instance_px": min_px, "zoom_below_px": zoom_below or None,
            "foreground_threshold": foreground, "phi_threshold": phi, "refine_centre": refine_centre,
            "scored_with_edge_alpha": edge_alpha,
            "by_mask_thresholds": {f"foreground>{fg} phi>{p}": row for (fg, p), row in by_mask.items()},
            "by_filter_params": {f"seed>{st} min_px={mp}": row for (st, mp), row in best.items()},
            "by_zoom_below_px": {str(b): row for b, row in by_zoom.items()},
            "filter_training": {"validation_images": len(val_stems), "fit_images": len(fit_stems),
                                "instances": sum(map(len, val_true)) + len(extra_y),
                                "true_instances": int(sum(map(np.sum, val_true)) + extra_y.sum())}}


def true_instances(gt: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(K,) bool: each predicted instance (labels 1..K, at ``gt``'s size or a multiple) has IoU
    > 0.5 with a ground-truth one (such pairs are one to one) once brought to ``gt``'s size."""
    n = int(labels.max()) if labels.size else 0
    small = resize_labels(labels, gt.shape)
    iou = match_instances(gt, small)  # (G, P'): P' the labels left at gt's size
    found = iou.max(0) > 0.5 if iou.shape[0] else np.zeros(iou.shape[1], bool)
    out = np.zeros(n, bool)
    out[np.unique(small[small > 0]) - 1] = found
    return out


def protocol_metrics(gt: np.ndarray, labels: np.ndarray, scores: np.ndarray | None) -> dict:
    """:func:`image_metrics` of ``labels`` (1..K, ``scores`` one per label) at ``gt``'s size, as
    ``ParticleSegmenter.segment`` returns them."""
    if labels.shape != gt.shape:
        values = np.zeros(int(labels.max())) if scores is None else np.asarray(scores)
        labels, values = compact_labels(resize_labels(labels, gt.shape), values)
        scores = None if scores is None else values
    return image_metrics(gt, labels, scores)


def labelled_features(gt, labels, seed, mi, sigma, grey, zoom=1) -> tuple[np.ndarray, np.ndarray]:
    """Instance features (K, F) and :func:`true_instances` (K,) of one image."""
    return instance_features(labels, seed, mi, sigma, grey, zoom), true_instances(gt, labels)


def fit_instance_filter(instances: list, groups: list, thresholds=FILTER_GRID, folds: int = FILTER_FOLDS,
                        extra: tuple[np.ndarray, np.ndarray] | None = None,
                        columns=None, labelled: list | None = None,
                        edge_alpha: float | None = None) -> tuple[InstanceFilter, dict]:
    """Fit the learned instance filter and choose its probability threshold on validation images.

    The threshold is chosen by the protocol AP of out-of-fold predictions: validation images are
    split into ``folds`` groups by source article (``groups``, the DOIs), each group scored by trees
    fitted on the others (plus ``extra``), so no instance is scored by trees that saw its article.
    Thresholds within one article-clustered standard error of the best AP are ties, settled by
    F1 at IoU 0.5 (:func:`mark_ties`, :func:`select_params`). The shipped trees are then fitted
    on every image.

    Parameters
    ----------
    instances : list of (gt, labels, seed, mi, sigma, grey, zoom) per validation image
        (:meth:`MapCache.instances_by_params`)
    groups : list of str, one per image
    extra : (features (N, F), targets (N,) bool), optional
        Instances of other images (the fit split), always on the training side.
    columns : sequence of int, optional
        The feature columns the trees may use (:func:`feature_step`); default all.
    labelled : list of (features, targets), optional
        :func:`labelled_features` of each item, when the caller has them already.
    edge_alpha : float, optional
        Snap the kept instances' rims (:func:`models.edges.snap_edges`) on zoom-1 images before
        scoring, as :class:`ParticleSegmenter` does with a card's ``edge_alpha``.

    Returns
    -------
    (InstanceFilter, {threshold: mean metrics of the out-of-fold filtered predictions, with
    ``AP_se`` and the per-image ``_AP``})
    """
    if labelled is None:
        labelled = [labelled_features(*item) for item in instances]
    probability = out_of_fold_probability(labelled, groups, folds, extra, columns)
    best, table = choose(threshold_table(instances, probability, thresholds, edge_alpha), groups)
    log.info("learned filter: threshold %s chosen out of fold, %s", best, public(table)[best])
    return fit_filter(*training_set(labelled, extra), threshold=best, columns=columns), table


def training_set(labelled: list, extra=None) -> tuple[np.ndarray, np.ndarray]:
    """``(features, targets)`` of ``extra`` (an ``(X, y)`` pair, or None) and the images'
    :func:`labelled_features` ``labelled``, stacked."""
    extra_x, extra_y = extra if extra is not None else (np.zeros((0, len(FEATURES))), np.zeros(0, bool))
    return (np.concatenate([extra_x] + [x for x, _ in labelled]),
            np.concatenate([extra_y] + [y for _, y in labelled]))


def out_of_fold_probability(labelled: list, groups: list, folds: int = FILTER_FOLDS, extra=None,
                            columns=None) -> list:
    """Each image's instance probabilities from trees fitted on the other article groups (plus
    ``extra``, always on the training side); ``labelled``: :func:`labelled_features` per image."""
    from sklearn.model_selection import GroupKFold

    probability = [None] * len(labelled)
    splitter = GroupKFold(min(folds, len(set(groups))))
    for fit_idx, held_idx in splitter.split(np.zeros(len(labelled)), groups=groups):
        model = fit_filter(*training_set([labelled[i] for i in fit_idx], extra), columns=columns)
        for i in held_idx:
            probability[i] = model.probability(labelled[i][0])
    return probability


def threshold_table(instances: list, probability: list, thresholds=FILTER_GRID, edge_alpha=None) -> dict:
    """``{threshold: mean protocol metrics}`` of the images' instances kept at each probability
    threshold, rims snapped with ``edge_alpha`` on zoom-1 images (:func:`snapped`). Each row also
    keeps the per-image AP as ``_AP`` (for :func:`mark_ties`; :func:`public` drops it)."""
    table = {}
    for threshold in thresholds:
        rows = []
        for (gt, labels, *_, grey, zoom), p in zip(instances, probability):
            keep = p >= threshold
            rows.append(protocol_metrics(gt, snapped(apply_filter(labels, keep), grey, zoom, edge_alpha), p[keep]))
        table[threshold] = _image_rows(rows)
    return table


# feature sets compared by feature_step: the thirteenth session added the lettering cues
FEATURE_SETS = {"22 cues (thirteenth session)": FEATURES, "14 cues (twelfth session)": FEATURES[:14]}


def feature_step(cache: MapCache, data_dir, stems, card: dict, feature_sets=None, progress=True) -> dict:
    """The learned filter's out-of-fold protocol metrics over ``stems`` (all the train images:
    5 folds grouped by article, no other side) for each feature set (``{name: feature names}``,
    default :data:`FEATURE_SETS`), at the clustering, zoom rule and mask thresholds of ``card``.

    The feature set was chosen here rather than by the filter step's 56 validation images, where
    the filter already keeps AP50 near 0.95 and the few-particle images whose lettering and
    fragments the added cues target number 11. The fit split's maps come from weights trained on
    those images, so this check leans on the filter's transfer across articles, not the network's.
    Returns ``{name: {"threshold": chosen by AP, "metrics": its row, "by_threshold": table}}``."""
    items = card_instances(cache, data_dir, stems, card, "features: train images", progress)
    groups = article_groups(data_dir, stems)
    labelled = [labelled_features(*item) for item in items]  # every set reads the same columns
    out = {}
    for name, names in (feature_sets or FEATURE_SETS).items():
        model, table = fit_instance_filter(items, groups, columns=[FEATURES.index(f) for f in names],
                                           labelled=labelled, edge_alpha=card.get("edge_alpha"))
        table = public(table)
        out[name] = {"threshold": model.threshold, "metrics": table[model.threshold], "by_threshold": table}
        log.info("feature set %s: out of fold over %d train images, p >= %s, %s", name, len(stems),
                 model.threshold, table[model.threshold])
    return out


def snapped(labels: np.ndarray, grey: np.ndarray, zoom: int, edge_alpha: float | None) -> np.ndarray:
    """``labels`` with rims snapped as :class:`ParticleSegmenter` snaps them (zoom-1 images only)."""
    return snap_edges(labels, grey, edge_alpha) if edge_alpha is not None and zoom == 1 else labels


def select_params(table: dict):
    """The key of ``table`` ({key: mean metrics}, e.g. key = (seed threshold, min px, t_u)) with
    the best protocol AP; AP50 + mean IoU break ties.

    Where the rows carry ``AP_se`` (:func:`mark_ties`: the standard error of their AP's difference
    to the best row's), every row whose AP is within one such error of the best is a tie, and of
    those the one with the best F1 at IoU 0.5 (:func:`f1_50`) is chosen (nineteenth session). The
    protocol AP and AP50 + mean IoU lean on precision; within the noise of 56 validation images
    the choice goes to the set-up that best balances particles missed and false ones, which the
    counts, size distributions and RDFs built on them need. (COCO AP would not do: it ranks
    instances by score, so false ones kept at low scores never lower it.)
    """
    best = best_ap(table)
    if not any("AP_se" in row for row in table.values()):
        return best
    tied = [k for k in table if table[k]["AP"] >= table[best]["AP"] - table[k].get("AP_se", 0.0)]
    return max(tied, key=lambda k: (f1_50(table[k]), *_ap_order(table[k])))


def best_ap(table: dict):
    """The key of ``table``'s row with the best protocol AP (AP50 + mean IoU break exact ties)."""
    return max(table, key=lambda k: _ap_order(table[k]))


def _ap_order(row: dict) -> tuple:
    return row["AP"], row["AP50"] + row["mean_IoU"]


def f1_50(row: dict) -> float:
    """Harmonic mean of a row's mean precision (``AP50``) and mean recall (``R50``) at IoU 0.5."""
    precision, recall = row["AP50"], row["R50"]
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def paired_se(values: np.ndarray, reference: np.ndarray, groups) -> float:
    """Standard error of ``mean(values - reference)`` (one value per image) with images of one
    article (``groups``) correlated: the cluster-robust (sandwich) estimate over articles."""
    return clustered_se(np.asarray(values, float) - np.asarray(reference, float), groups)


def choose(table: dict, groups) -> tuple:
    """``(key, marked table)``: ``table``'s rows (each with its per-image ``_AP``) marked with
    their errors against the best (:func:`mark_ties`, articles ``groups``) and the key
    :func:`select_params` chooses among them. Every choice of the tuning goes through here."""
    marked = mark_ties(table, groups)
    return select_params(marked), marked


def mark_ties(table: dict, groups) -> dict:
    """``table`` with each row's ``AP_se`` (4 decimals): :func:`paired_se` of its per-image AP
    (``_AP``, kept by :func:`threshold_table`) against the best-AP row's, articles ``groups``
    (one per image). Rows are copied; :func:`select_params` then treats rows within one error of
    the best as ties, settled by F1 at IoU 0.5."""
    best = best_ap(table)
    return {k: row | {"AP_se": round(paired_se(row["_AP"], table[best]["_AP"], groups), 4)}
            for k, row in table.items()}


def public(table: dict) -> dict:
    """``table``'s rows without the per-image arrays (keys starting with ``_``), for JSON."""
    return {k: {m: v for m, v in row.items() if not m.startswith("_")} for k, row in table.items()}


def report(model, data_dir, stems, tu, mc_samples=30, progress=True, seed_threshold=None,
           min_instance_px=None, instance_filter: InstanceFilter | None = None,
           cache: MapCache | None = None, tta: bool = True, tu_seed_threshold=None,
           tu_min_instance_px=None, zoom_below_px=None, foreground_threshold=FOREGROUND_THRESHOLD,
           phi_threshold=PHI_THRESHOLD, tu_foreground_threshold=FOREGROUND_THRESHOLD,
           tu_phi_threshold=PHI_THRESHOLD, edge_alpha=None, refine_centre=False) -> dict:
    """The three BPartIS rows of the published table on ``stems``, plus the published t_u and,
    given ``instance_filter``, the learned filter. The learned filter's row clusters with
    ``seed_threshold`` and ``min_instance_px`` (chosen with it); the published rows (no filter,
    t_u) cluster with ``tu_seed_threshold`` and ``tu_min_instance_px``, what the t_u sweep chose
    (its grid includes t_u = 1, no filter; default: the others); it also zooms as the filter step
    chose (``zoom_below_px``) and with its mask thresholds (``foreground_threshold``,
    ``phi_threshold``), the others with theirs (``tu_``). ``ParticleSegmenter`` with
    ``filter=False`` keeps the learned filter's clustering instead, so that ``--no-filter``
    shows what the filter removed. ``edge_alpha`` snaps the learned filter's row's rims on zoom-1
    images (the card's ``edge_alpha``; the published rows keep the network's masks), and
    ``refine_centre`` re-assigns its proposals around their mean embedding (the published rows
    cluster as published)."""
    from models.cluster import MIN_INSTANCE_PX, SEED_THRESHOLD

    seed_threshold = SEED_THRESHOLD if seed_threshold is None else seed_threshold
    min_instance_px = MIN_INSTANCE_PX if min_instance_px is None else min_instance_px
    tu_seed_threshold = seed_threshold if tu_seed_threshold is None else tu_seed_threshold
    tu_min_instance_px = min_instance_px if tu_min_instance_px is None else tu_min_instance_px
    params = {"seed_threshold": seed_threshold, "min_instance_px": min_instance_px,
              "tu_seed_threshold": tu_seed_threshold, "tu_min_instance_px": tu_min_instance_px,
              "zoom_below_px": zoom_below_px, "foreground_threshold": foreground_threshold,
              "phi_threshold": phi_threshold, "tu_foreground_threshold": tu_foreground_threshold,
              "tu_phi_threshold": tu_phi_threshold, "edge_alpha": edge_alpha, "refine_centre": refine_centre}
    tu_mask, mask = (tu_foreground_threshold, tu_phi_threshold), (foreground_threshold, phi_threshold)
    rows = {"discriminative": [], "bayesian": [], "bayesian_filter": [], "bayesian_filter_published_tu": [],
            "bayesian_learned_filter": []}
    single = ParticleSegmenter(model=model, mc_samples=1, filter=False, seed_threshold=tu_seed_threshold,
                               min_instance_px=tu_min_instance_px)
    if cache is None:
        cache = MapCache(ParticleSegmenter(model=model, mc_samples=mc_samples, filter=False, tta=tta), "")
    for stem in tqdm(stems, desc="test", disable=not progress):
        sample = load_sample(data_dir, stem)
        gt = sample.instances
        labels, _, seed = mc_labels(single, sample.image)
        rows["discriminative"].append(image_metrics(gt, labels, mean_per_instance(labels, seed)))
        setups = [(tu_seed_threshold, tu_min_instance_px), (seed_threshold, min_instance_px)]
        by_setup = cache.instances_by_params(data_dir, stem, dict.fromkeys(setups), 1, tu_mask)
        _, labels, seed, mi, sig, grey, _ = by_setup[setups[0]]
        rows["bayesian"].append(image_metrics(gt, labels, mean_per_instance(labels, seed)))
        for name, t in (("bayesian_filter", tu), ("bayesian_filter_published_tu", TU_PUBLISHED)):
            kept, _, _ = filter_instances(labels, mi, t)
            rows[name].append(image_metrics(gt, kept, mean_per_instance(kept, seed)))
        if instance_filter is not None:
            zoom = cache.zoom_for(data_dir, stem, seed_threshold, min_instance_px, zoom_below_px)
            item = by_setup[setups[1]] if zoom == 1 and mask == tu_mask and not refine_centre else \
                cache.instances(data_dir, stem, seed_threshold, min_instance_px, zoom, mask, refine_centre)
            _, labels, *maps, zoom = item
            kept, p = instance_filter.apply(labels, instance_features(labels, *maps, zoom))
            rows["bayesian_learned_filter"].append(protocol_metrics(gt, snapped(kept, maps[-1], zoom, edge_alpha), p))
    return {name: _mean(r) for name, r in rows.items() if r} | {"n_images": len(stems), "tu": tu,
                                                                 "tta": cache.segmenter.tta, **params}


def _mean(rows: list[dict]) -> dict:
    """Mean metrics over images, plus R50: mean recall at IoU > 0.5 (how many particles are found)."""
    summary = summarise(rows)
    out = {k: round(float(summary[k]), 4) for k in METRICS}
    out["R50"] = round(float(np.mean([r["R50"] for r in rows])), 4)
    out["pred_per_gt"] = round(float(np.sum([r["n_pred"] for r in rows]) / max(1, np.sum([r["n_gt"] for r in rows]))), 4)
    return out


def _image_rows(rows: list[dict]) -> dict:
    """:func:`_mean` of ``rows`` (one per image), keeping the per-image AP as ``_AP`` for
    :func:`mark_ties` (:func:`public` drops it)."""
    return _mean(rows) | {"_AP": np.array([row["AP"] for row in rows])}


def _save(fig, ax, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
    paths.append(_save(fig, ax, out / "tu_sweep.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = sorted(result["by_T"])
    for metric in ("AP", "AP50", "mean_IoU"):
        ax.plot(ts, [result["by_T"][t][metric] for t in ts], "o-", label=f"{metric} (no filter)")
        ft = [t for t in ts if t in result["by_T_filtered"]]
        ax.plot(ft, [result["by_T_filtered"][t][metric] for t in ft], "s--", label=f"{metric} (filter)")
    ax.set(xlabel="Monte-Carlo samples T", ylabel="validation", ylim=(0, 1))
    paths.append(_save(fig, ax, out / "ap_vs_T.png"))
    if "by_filter_threshold" in result:
        table = {float(k): v for k, v in result["by_filter_threshold"].items()}
        chosen = result["instance_filter"]["threshold"]
        fig, ax = plt.subplots(figsize=(6, 4))
        for metric in METRICS + ("R50",):
            ax.plot(sorted(table), [table[k][metric] for k in sorted(table)], "o-", label=metric)
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen p >= {chosen}")
        ax.set(xlabel="learned filter: kept probability threshold",
               ylabel=f"validation out of fold ({result['n_images']} images)", ylim=(0, 1))
        paths.append(_save(fig, ax, out / "filter_threshold.png"))
    return paths


def _grid(text: str | None, parse) -> tuple | None:
    """``"0.5,0.6"`` -> ``(0.5, 0.6)`` with ``parse`` per item; None stays None (the default grid)."""
    return None if text is None else tuple(parse(item) for item in text.split(",") if item.strip())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--weights", default=None, help="BPartIS weights (default: the shipped ones)")
    parser.add_argument("--data", default=str(default_emps_dir()), help="EMPS folder (default: %(default)s)")
    parser.add_argument("--out", default="docs/bpartis",
                        help="folder for the sweep, plots and report (default: %(default)s, the recorded "
                             "choices of the shipped weights, which a run there replaces)")
    parser.add_argument("--step", choices=["sweep", "filter", "features", "report", "all", "compare", "edges"],
                        default="all",
                        help="features: compare the filter's feature sets out of fold over all train images; "
                             "compare: score --weights on validation with the shipped card's clustering and a "
                             "filter fitted out of fold on validation, to choose among snapshots; edges: "
                             "choose the rim-snapping alpha the same way (none of the three is part of all)")
    parser.add_argument("--tu", type=float, default=None, help="t_u for the report (default: swept)")
    parser.add_argument("--cache", default=None,
                        help="folder for the T = 30 maps of the filter step and the report (reused)")
    parser.add_argument("--no-tta", action="store_true",
                        help="plain Monte-Carlo samples, no flips / transposes (test-time augmentation)")
    parser.add_argument("--seed-grid", default=None, help="filter step: seed thresholds, e.g. 0.5,0.6")
    parser.add_argument("--min-px-grid", default=None, help="filter step: minimum instance sizes, e.g. 16,48")
    parser.add_argument("--zoom-grid", default=None, help="filter step: zoom-rule areas (0: never), e.g. 0,1200")
    parser.add_argument("--mask-grid", default=None,
                        help="filter step: foreground/phi pairs, e.g. 0.5/0.5,0.4/0.4 (the published 0.5/0.5 "
                             "is always scored)")
    parser.add_argument("--edge-alpha", type=float, default=None,
                        help="compare, features, filter and report: snap the learned filter's rims with this alpha "
                             "(default: the shipped card's edge_alpha; a negative value: no snapping)")
    parser.add_argument("--refine-centre", type=int, choices=(0, 1), default=None,
                        help="compare, edges, features, filter and report: re-assign each proposal around its mean "
                             "embedding (default: the shipped card's refine_centre)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    for name in ("limit", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    card = tuned_params()  # the shipped card, with the options' overrides: compare and edges cluster with it
    edge_alpha = card.get("edge_alpha") if args.edge_alpha is None else \
        args.edge_alpha if args.edge_alpha >= 0 else None
    refine = card.get("refine_centre", False) if args.refine_centre is None else bool(args.refine_centre)
    card |= {"edge_alpha": edge_alpha, "refine_centre": refine}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
    model = BPartIS()  # unprocessed: every ParticleSegmenter folds and casts its own copy
    model.load_state_dict(load_weights(weights))
    tta = not args.no_tta
    cache = MapCache(ParticleSegmenter(model=model, mc_samples=30, filter=False, tta=tta), file_sha256(weights),
                     args.cache)
    if args.step == "edges":
        result = {"weights": str(weights), "weights_sha256": file_sha256(weights),
                  **edges_step(cache, args.data, read_split(args.data, "val")[:args.limit], card)}
        (out / "edges.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    if args.step == "compare":
        result = {"weights": str(weights), "weights_sha256": file_sha256(weights), "tta": tta,
                  **compare_step(cache, args.data, read_split(args.data, "val")[:args.limit], card)}
        (out / "compare.json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    sweep_path = out / "sweep.json"
    if args.step in ("sweep", "all"):
        result = sweep(model, args.data, read_split(args.data, "val")[:args.limit], tta=tta)
        sweep_path.write_text(json.dumps(result, indent=1))
        log.info("validation sweep: t_u = %s, seed > %s, min %s px; %s", result["tu"],
                 result["seed_threshold"], result["min_instance_px"], result["by_tu"][result["tu"]])
    swept = json.loads(sweep_path.read_text())
    if swept.get("tta", False) != tta:
        parser.error(f"{sweep_path} was swept with tta={swept.get('tta', False)}; run --step sweep again "
                     "or match its --no-tta")
    if args.step in ("filter", "all"):
        # the sweep's clustering was chosen for the t_u filter; the filter step re-chooses it for
        # the learned filter (the default) and records the sweep's as tu_seed_threshold,
        # tu_min_instance_px and the published mask thresholds (tu_foreground_threshold, tu_phi_threshold)
        for key in CLUSTERING_KEYS:
            swept.setdefault(f"tu_{key}", swept.get(key, MASK_DEFAULTS.get(key)))
        grids = {"seed_grid": _grid(args.seed_grid, float), "min_px_grid": _grid(args.min_px_grid, int),
                 "zoom_grid": _grid(args.zoom_grid, int),
                 "mask_grid": _grid(args.mask_grid, lambda pair: tuple(map(float, pair.split("/"))))}
        swept |= filter_step(cache, args.data, read_split(args.data, "val")[:args.limit],
                             read_split(args.data, "fit")[:args.limit], refine_centre=refine,
                             edge_alpha=edge_alpha,
                             **{name: grid for name, grid in grids.items() if grid is not None})
        sweep_path.write_text(json.dumps(swept, indent=1))
    if args.step == "features":
        stems = read_split(args.data, "val")[:args.limit] + read_split(args.data, "fit")[:args.limit]
        overrides = {key: card[key] for key in ("edge_alpha", "refine_centre")}  # the options', on the card
        (out / "features.json").write_text(json.dumps(feature_step(cache, args.data, stems, swept | overrides),
                                                      indent=1))
    if args.step in ("sweep", "filter", "all"):
        plot_sweep(swept, out)
    if args.step in ("report", "all"):
        params = {k: swept[k] for key in CLUSTERING_KEYS for k in (key, f"tu_{key}") if k in swept}
        if "instance_filter" in swept:
            params["instance_filter"] = InstanceFilter.from_dict(swept["instance_filter"])
            params["zoom_below_px"] = swept.get("zoom_below_px")
        tu = swept["tu"] if args.tu is None else args.tu
        result = report(model, args.data, read_split(args.data, "test")[:args.limit], tu, cache=cache,
                        edge_alpha=edge_alpha, refine_centre=refine, **params)
        (out / "test.json").write_text(json.dumps(result, indent=1))
        log.info("test: %s", result)


if __name__ == "__main__":
    run_module(main)
