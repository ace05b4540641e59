"""Instance-segmentation metrics: the published BPartIS/EMPS protocol and COCO-style mask AP.

Published protocol (Yildirim & Cole 2021), one image at 512 x 512
-----------------------------------------------------------------
For every IoU threshold ``t`` in ``THRESHOLDS`` = 0, 0.05, ..., 0.95 a prediction/ground-truth
pair *matches* when ``IoU > t``. Then

* TP = ground-truth instances with at least one match; FN = those with none;
* FP = unmatched predictions, plus ``k - 1`` for each ground truth matched by ``k > 1``
  predictions (a split particle);
* ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``.

``AP50`` and ``AP75`` are the *precisions* at t = 0.5 and 0.75. ``AP`` is the area under the
precision-recall curve: the 20 points are taken in order of decreasing ``t`` (so recall grows),
precision is made monotonic by a running maximum along that order, the curve is extended flat
to recall 0 (the point ``(0, precision at t = 0.95)``), and the area is taken with the
trapezoid rule. ``mean_IoU`` is the mean, over predictions, of each prediction's best IoU when
that IoU is > 0.5 and 0 otherwise. Each metric is averaged over images by ``summarise``.

Empty cases (0/0), chosen so that an empty map scored against itself is perfect and an empty
prediction is worth nothing:

* no ground truth and no prediction: precision 1, recall 1, mean IoU 1, COCO AP 1;
* ground truth but no prediction: precision 0, recall 0, mean IoU 0, COCO AP 0;
* predictions but no ground truth: precision 0, recall 1 (nothing was missed), mean IoU 0,
  COCO AP 0.

COCO-style mask AP@[.5:.95]
---------------------------
Predictions are ranked by score (descending); at each threshold 0.5, 0.55, ..., 0.95 every
prediction in turn takes the unmatched ground truth of highest ``IoU >= t`` (greedy, as
pycocotools); precision is made monotone (maximum over higher recall) and read at the 101
recall points 0, 0.01, ..., 1; AP is the mean over recall points and thresholds. With distinct
scores this equals pycocotools' ``COCOeval`` (``iouType="segm"``, no detection cap, area range
"all") on the same image; the test suite checks that. Tied scores (the default, when a
segmenter gives none) are one operating point: precision and recall are only read after a whole
group of tied predictions, so the result does not depend on the order of the labels.
``coco_AP`` is computed per image and averaged over images like the other metrics.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from idx.errors import IdxError
from models.data import EVAL_SIZE, load_sample

log = logging.getLogger(__name__)

THRESHOLDS = np.round(np.linspace(0, 0.95, 20), 3)  # published protocol, IoU > t
COCO_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 3)  # COCO, IoU >= t
COCO_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MEAN_IOU_THRESHOLD = 0.5
AT_50, AT_75 = (int(np.flatnonzero(THRESHOLDS == t)[0]) for t in (0.5, 0.75))  # their indices
SUMMARY_KEYS = ("AP", "AP50", "AP75", "mean_IoU", "coco_AP")


def _check_labels(name: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D instance map, got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be an integer instance map (0 = background), got dtype "
                         f"{labels.dtype}; convert it with .astype(np.int32)")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} has negative labels; use 0 for background and 1..K for instances")
    return labels


def match_instances(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every ground-truth / predicted instance pair, from one contingency table.

    Parameters
    ----------
    gt, pred : ndarray of int, shape (M, N)
        Instance maps, 0 = background; label values need not be consecutive.

    Returns
    -------
    ndarray of float64, shape (G, P)
        ``iou[i, j]`` is the IoU of the i-th ground-truth and j-th predicted instance, both in
        increasing label order (``np.unique`` without 0).
    """
    gt, pred = _check_labels("gt", gt), _check_labels("pred", pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} differs from pred shape {pred.shape}; resize the "
                         "prediction to the ground truth (nearest neighbour) first")
    gt_ids, gt_index = np.unique(gt, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    # with background present index 0 is background; otherwise shift so row/col 0 stays empty
    gt_index = gt_index.ravel() + (0 if gt_ids.size and gt_ids[0] == 0 else 1)
    pred_index = pred_index.ravel() + (0 if pred_ids.size and pred_ids[0] == 0 else 1)
    n_gt, n_pred = int(np.count_nonzero(gt_ids)), int(np.count_nonzero(pred_ids))
    table = np.bincount(gt_index * (n_pred + 1) + pred_index,
                        minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
    intersection = table[1:, 1:].astype(np.float64)  # (G, P) pixels
    area_gt, area_pred = table[1:].sum(1), table[:, 1:].sum(0)  # (G,), (P,)
    union = area_gt[:, None] + area_pred[None, :] - intersection
    return intersection / np.maximum(union, 1.0)


def count_matches(iou: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> dict:
    """TP / FP / FN of the published protocol at every threshold (a pair matches when IoU > t).

    Parameters
    ----------
    iou : ndarray of float, shape (G, P)
        Output of ``match_instances``.
    thresholds : ndarray of float, shape (T,)

    Returns
    -------
    dict of ndarray of int64, each shape (T,)
        ``tp``, ``fp``, ``fn``.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or (thresholds.size and thresholds.min() < 0):
        raise ValueError("thresholds must be a 1-D array of IoU values >= 0")
    n_t, (n_gt, n_pred) = len(thresholds), iou.shape
    gt_index, pred_index = np.nonzero(iou)  # only overlapping pairs can match (t >= 0)
    match = iou[gt_index, pred_index][None, :] > thresholds[:, None]  # (T, pairs)
    t_index = np.broadcast_to(np.arange(n_t)[:, None], match.shape)[match]
    per_gt = np.bincount(t_index * n_gt + np.broadcast_to(gt_index, match.shape)[match],
                         minlength=n_t * n_gt).reshape(n_t, n_gt)  # predictions matching each gt
    per_pred = np.bincount(t_index * n_pred + np.broadcast_to(pred_index, match.shape)[match],
                           minlength=n_t * n_pred).reshape(n_t, n_pred)
    tp = (per_gt > 0).sum(1)
    fn = n_gt - tp
    split_fp = np.maximum(per_gt - 1, 0).sum(1)
    unmatched_fp = (per_pred == 0).sum(1)  # predictions matching no ground truth
    return {"tp": tp, "fp": split_fp + unmatched_fp, "fn": fn}


def precision_recall(iou: np.ndarray,
                     thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the published protocol at every threshold, 0/0 as in the module doc.

    Returns
    -------
    precision, recall : ndarray of float64, shape (T,)
    """
    n_gt, n_pred = iou.shape
    t = len(thresholds)
    if n_gt == 0:
        return np.full(t, 1.0 if n_pred == 0 else 0.0), np.ones(t)
    if n_pred == 0:
        return np.zeros(t), np.zeros(t)
    counts = count_matches(iou, thresholds)
    tp = counts["tp"].astype(np.float64)
    return tp / (tp + counts["fp"]), tp / (tp + counts["fn"])


def area_under_pr(precision: np.ndarray, recall: np.ndarray) -> float:
    """Published AP: trapezoid area under the monotone precision-recall curve.

    Parameters
    ----------
    precision, recall : ndarray of float, shape (T,)
        Values in order of *increasing* threshold (as ``THRESHOLDS``); they are reversed so
        that recall grows, precision becomes its running maximum along that order, and the
        point ``(0, precision[-1])`` is put in front.

    Returns
    -------
    float in [0, 1]
    """
    precision, recall = np.asarray(precision, float)[::-1], np.asarray(recall, float)[::-1]
    if precision.shape != recall.shape or precision.ndim != 1 or precision.size == 0:
        raise ValueError("precision and recall must be 1-D arrays of the same, non-zero length")
    precision = np.maximum.accumulate(precision)
    recall = np.maximum.accumulate(recall)  # recall never falls as t decreases; guard anyway
    precision = np.concatenate([[precision[0]], precision])
    recall = np.concatenate([[0.0], recall])
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def coco_average_precision(iou: np.ndarray, scores: np.ndarray | None = None) -> float:
    """COCO mask AP@[.5:.95] of one image (101-point interpolation, greedy matching by score).

    Parameters
    ----------
    iou : ndarray of float, shape (G, P)
        Output of ``match_instances``.
    scores : ndarray of float, shape (P,), optional
        Confidence of each prediction (higher = surer); None ranks all predictions equally.

    Returns
    -------
    float in [0, 1]; empty cases as in the module doc.
    """
    n_gt, n_pred = iou.shape
    if n_gt == 0 or n_pred == 0:
        return 1.0 if n_gt == n_pred else 0.0
    scores = np.zeros(n_pred) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (n_pred,):
        raise ValueError(f"scores must have one value per prediction ({n_pred}), got shape "
                         f"{scores.shape}")
    order = np.argsort(-scores, kind="mergesort")
    iou, scores = iou[:, order], scores[order]
    thresholds = np.minimum(COCO_THRESHOLDS, 1 - 1e-10)[:, None]  # (T, 1) as pycocotools
    gt_free = np.ones((len(thresholds), n_gt), dtype=bool)  # (T, G)
    is_tp = np.zeros((len(thresholds), n_pred), dtype=bool)  # (T, P)
    for j in np.flatnonzero(iou.max(0) >= thresholds.min()):  # others are FP at every t
        candidate = np.where(gt_free & (iou[:, j] >= thresholds), iou[:, j], -1.0)  # (T, G)
        best = candidate.argmax(1)
        hit = candidate[np.arange(len(thresholds)), best] >= 0
        is_tp[hit, j] = True
        gt_free[np.flatnonzero(hit), best[hit]] = False
    tp = np.cumsum(is_tp, 1)  # (T, P)
    fp = np.cumsum(~is_tp, 1)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)  # read only after a tie group
    tp, fp = tp[:, last_of_tie], fp[:, last_of_tie]
    recall, precision = tp / n_gt, tp / (tp + fp)
    precision = np.maximum.accumulate(precision[:, ::-1], 1)[:, ::-1]  # max over higher recall
    ap = np.zeros(len(thresholds))
    for k in range(len(thresholds)):
        index = np.searchsorted(recall[k], COCO_RECALL_POINTS, side="left")
        ok = index < recall.shape[1]
        ap[k] = precision[k, index[ok]].sum() / len(COCO_RECALL_POINTS)
    return float(ap.mean())


def image_metrics(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None) -> dict:
    """All metrics of one image (published protocol and COCO mask AP).

    Parameters
    ----------
    gt, pred : ndarray of int, shape (M, N)
        Ground-truth and predicted instance maps, 0 = background.
    scores : ndarray of float, shape (P,), optional
        Confidence of each predicted instance in increasing label order; used by ``coco_AP`` only.

    Returns
    -------
    dict
        ``AP``, ``AP50``, ``AP75``, ``mean_IoU``, ``coco_AP``, ``R50`` (recall at t = 0.5; floats),
        ``precision`` and ``recall`` (lists of 20 floats, one per ``THRESHOLDS``), ``n_gt``,
        ``n_pred`` (ints).
    """
    iou = match_instances(gt, pred)
    n_gt, n_pred = iou.shape
    precision, recall = precision_recall(iou)
    if n_pred == 0:
        mean_iou = 1.0 if n_gt == 0 else 0.0
    elif n_gt == 0:
        mean_iou = 0.0
    else:
        best = iou.max(0)  # (P,)
        mean_iou = float(np.where(best > MEAN_IOU_THRESHOLD, best, 0.0).mean())
    return {
        "AP": area_under_pr(precision, recall),
        "AP50": float(precision[AT_50]),
        "AP75": float(precision[AT_75]),
        "R50": float(recall[AT_50]),
        "mean_IoU": mean_iou,
        "coco_AP": coco_average_precision(iou, scores),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "n_gt": int(n_gt),
        "n_pred": int(n_pred),
    }


def summarise(per_image: list[dict]) -> dict:
    """Mean of each metric over images.

    Parameters
    ----------
    per_image : list of dict
        Outputs of ``image_metrics`` (extra keys are ignored).

    Returns
    -------
    dict
        ``AP``, ``AP50``, ``AP75``, ``mean_IoU``, ``coco_AP`` (means), ``precision`` and
        ``recall`` (mean curves, lists of 20), ``n_images``.
    """
    if not per_image:
        raise IdxError("no images to summarise; pass at least one image (check the split or stems)")
    summary = {key: float(np.mean([m[key] for m in per_image])) for key in SUMMARY_KEYS}
    for key in ("precision", "recall"):
        summary[key] = np.mean([m[key] for m in per_image], axis=0).tolist()
    summary["n_images"] = len(per_image)
    return summary


def clustered_se(values, groups) -> float:
    """Standard error of ``mean(values)`` (one value per image) when the images of one group
    (``groups``, one per image: the source article) are correlated: the cluster-robust (sandwich)
    estimate over groups, ``sqrt(G / (G - 1) * sum_g (sum of group g's deviations)^2) / n``.
    With one image per group it is the usual ``std(ddof=1) / sqrt(n)``; 0 with fewer than 2 groups."""
    values = np.asarray(values, float)
    names, group = np.unique(np.asarray(groups), return_inverse=True)
    if len(names) < 2:
        return 0.0
    sums = np.bincount(group, weights=values - values.mean())  # per group
    return float(np.sqrt(len(names) / (len(names) - 1) * np.sum(sums ** 2)) / len(values))


def load_ground_truth(data_dir: str | Path, stem: str, size: int = EVAL_SIZE) -> np.ndarray:
    """Instance map of one EMPS image at ``size`` x ``size`` (nearest-neighbour resize).

    Returns
    -------
    ndarray of int32, shape (size, size)
        0 = background, instances numbered 1..K.
    """
    return _load(data_dir, stem, size).instances


def _load(data_dir, stem, size):
    data_dir = Path(data_dir)
    for folder in ("images", "segmaps"):
        path = data_dir / folder / f"{stem}.png"
        if not path.is_file():
            raise IdxError(f"{path} not found; data_dir must be an EMPS folder with images/ and "
                           f"segmaps/, and {stem!r} one of its file stems")
    return load_sample(data_dir, stem, size)


def evaluate_segmenter(segmenter, data_dir: str | Path, stems: list[str], progress: bool = True,
                       size: int = EVAL_SIZE, groups: list | None = None) -> dict:
    """Segment EMPS images and score them with the published protocol and COCO mask AP.

    Parameters
    ----------
    segmenter : object
        Has ``segment(image)`` taking an ``(size, size, 3)`` uint8 image and returning an object
        whose ``labels`` is an ``(size, size)`` int instance map; an optional ``scores`` array
        (one per instance, increasing label order) ranks instances for ``coco_AP``.
    data_dir : str or Path
        EMPS folder (``images/``, ``segmaps/``).
    stems : list of str
        Images to evaluate, e.g. ``read_split(data_dir, "test")``.
    progress : bool
        Show a tqdm bar on stderr.
    size : int
        Images and ground truth are brought to ``size`` x ``size`` (512 in the protocol).
    groups : list, optional
        The source article of each of ``stems`` (:func:`models.data.article_groups`): then the
        summary also holds ``n_articles`` and, from two articles on, ``standard_error`` (each
        mean's :func:`clustered_se`; images of one article are not independent evidence).

    Returns
    -------
    dict
        ``summarise`` of the images, plus ``seconds_per_image`` (mean wall time of ``segment``)
        and ``per_image`` (list of ``image_metrics`` dicts with ``stem`` and ``seconds``).
    """
    if groups is not None and len(groups) != len(stems):
        raise ValueError(f"groups has {len(groups)} entries for {len(stems)} stems; give one per stem")
    if not stems:
        raise IdxError(f"no images to evaluate in {data_dir}; pass at least one stem")
    per_image = []
    for stem in tqdm(stems, desc="evaluate", disable=not progress, leave=False):
        sample = _load(data_dir, stem, size)
        start = time.perf_counter()
        result = segmenter.segment(sample.image)
        seconds = time.perf_counter() - start
        labels = np.asarray(result.labels)
        if labels.shape != sample.instances.shape:
            raise IdxError(f"{type(segmenter).__name__}.segment returned labels of shape "
                           f"{labels.shape} for a {sample.image.shape} image ({stem}); it must "
                           "return an instance map of the image's height and width")
        scores = getattr(result, "scores", None)
        metrics = image_metrics(sample.instances, labels, scores)
        per_image.append({"stem": stem, "seconds": seconds, **metrics})
        log.debug("%s: AP %.3f AP50 %.3f (%d gt, %d pred)", stem, metrics["AP"], metrics["AP50"],
                  metrics["n_gt"], metrics["n_pred"])
    summary = summarise(per_image)
    summary["seconds_per_image"] = float(np.mean([m["seconds"] for m in per_image]))
    if groups is not None:
        summary["n_articles"] = len(set(groups))
        if summary["n_articles"] > 1:  # one article: no estimate of the spread between articles
            summary["standard_error"] = {key: clustered_se([m[key] for m in per_image], groups)
                                         for key in SUMMARY_KEYS}
    summary["per_image"] = per_image
    return summary
