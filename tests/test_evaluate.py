import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from idx.errors import IdxError
from models.data import read_dois, read_split
from models.evaluate import (THRESHOLDS, area_under_pr, coco_average_precision, count_matches,
                             evaluate_segmenter, image_metrics, load_ground_truth, match_instances,
                             summarise)

EMPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"
needs_emps = pytest.mark.skipif(not (EMPS / "test.csv").exists(), reason="EMPS data not present")


def two_squares() -> np.ndarray:
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[10:30, 10:30] = 1  # 400 px
    labels[40:60, 35:55] = 2  # 400 px
    return labels


def disk(center, radius, shape=(96, 96)) -> np.ndarray:
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 < radius**2


def test_match_instances_counts_pixels_with_any_label_values():
    gt = two_squares()
    pred = np.zeros_like(gt)
    pred[10:30, 14:34] = 7  # square 1 shifted by 4 columns: 320 / 480
    pred[0:5, 0:5] = 3  # on background
    iou = match_instances(gt, pred)
    # rows: gt 1, 2; columns: pred labels 3, 7 in increasing order
    np.testing.assert_allclose(iou, [[0.0, 320 / 480], [0.0, 0.0]])


def test_match_instances_without_background_pixels():
    gt = np.ones((4, 4), dtype=np.uint16)
    gt[:, 2:] = 5
    pred = np.full((4, 4), 2, dtype=np.int64)
    np.testing.assert_allclose(match_instances(gt, pred), [[0.5], [0.5]])


def test_perfect_prediction_scores_one_everywhere():
    gt = two_squares()
    relabelled = np.where(gt == 1, 9, np.where(gt == 2, 4, 0))  # label values do not matter
    m = image_metrics(gt, relabelled)
    for key in ("AP", "AP50", "AP75", "mean_IoU", "coco_AP"):
        assert m[key] == pytest.approx(1.0), key
    assert m["precision"] == [1.0] * 20 and m["recall"] == [1.0] * 20


def test_split_particle_adds_one_false_positive():
    gt = two_squares()
    pred = gt.copy()
    pred[10:30, 20:30] = 3  # square 1 cut in two halves of 200 px: IoU exactly 0.5 each
    counts = count_matches(match_instances(gt, pred))
    low, high = THRESHOLDS < 0.5, THRESHOLDS >= 0.5
    # t < 0.5: both halves match gt 1 -> TP 2, FP 1 (the extra half); t >= 0.5: nothing matches gt 1
    assert (counts["tp"][low] == 2).all() and (counts["fp"][low] == 1).all()
    assert (counts["fn"][low] == 0).all()
    assert (counts["tp"][high] == 1).all() and (counts["fp"][high] == 2).all()
    assert (counts["fn"][high] == 1).all()
    m = image_metrics(gt, pred)
    np.testing.assert_allclose(m["precision"], np.where(low, 2 / 3, 1 / 3))
    np.testing.assert_allclose(m["recall"], np.where(low, 1.0, 0.5))
    assert m["AP50"] == pytest.approx(1 / 3) and m["AP75"] == pytest.approx(1 / 3)
    # curve: (0, 1/3) -> (0.5, 1/3) -> (1, 2/3): 0.5 * 1/3 + 0.5 * (1/3 + 2/3) / 2
    assert m["AP"] == pytest.approx(5 / 12)
    assert m["mean_IoU"] == pytest.approx(1 / 3)  # halves (IoU 0.5, not > 0.5) count 0
    # COCO matches at IoU >= t: at 0.5 one half matches (P 2/3, R 1); above, P 1/3 at R 0.5,
    # read at the 51 recall points 0..0.5 of 101
    assert m["coco_AP"] == pytest.approx((2 / 3 + 9 * (1 / 3) * 51 / 101) / 10)


def test_empty_prediction_scores_zero():
    m = image_metrics(two_squares(), np.zeros((64, 64), dtype=np.int32))
    assert (m["AP"], m["AP50"], m["AP75"], m["mean_IoU"], m["coco_AP"]) == (0, 0, 0, 0, 0)
    assert m["recall"] == [0.0] * 20 and (m["n_gt"], m["n_pred"]) == (2, 0)


def test_empty_ground_truth_cases():
    empty = np.zeros((32, 32), dtype=np.int32)
    both = image_metrics(empty, empty)
    assert (both["AP"], both["AP50"], both["mean_IoU"], both["coco_AP"]) == (1, 1, 1, 1)
    spurious = empty.copy()
    spurious[5:9, 5:9] = 1
    m = image_metrics(empty, spurious)
    assert (m["AP"], m["AP50"], m["mean_IoU"], m["coco_AP"]) == (0, 0, 0, 0)
    assert m["recall"] == [1.0] * 20


def test_shifted_square_matches_up_to_its_iou():
    gt = two_squares() * (two_squares() == 1)
    pred = np.zeros_like(gt)
    pred[10:30, 14:34] = 1  # IoU = 320 / 480 = 0.667
    m = image_metrics(gt, pred)
    expected = np.where(THRESHOLDS < 2 / 3, 1.0, 0.0)
    np.testing.assert_allclose(m["precision"], expected)
    np.testing.assert_allclose(m["recall"], expected)
    assert m["AP50"] == 1.0 and m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.5)  # (0, 0) -> (0, 0) ... -> (1, 1): one trapezoid
    assert m["mean_IoU"] == pytest.approx(2 / 3)
    assert m["coco_AP"] == pytest.approx(0.4)  # matched at 0.5, 0.55, 0.6, 0.65


@pytest.mark.parametrize("shift", [3, 5, 8, 11])
def test_shifted_disk_precision_steps_at_its_pixel_iou(shift):
    a, b = disk((48, 40), 16), disk((48, 40 + shift), 16)
    iou = (a & b).sum() / (a | b).sum()  # counted independently of match_instances
    m = image_metrics(a.astype(np.int32), b.astype(np.int32))
    assert match_instances(a.astype(np.int32), b.astype(np.int32))[0, 0] == pytest.approx(iou)
    np.testing.assert_allclose(m["precision"], (iou > THRESHOLDS).astype(float))
    assert m["AP50"] == float(iou > 0.5) and m["AP75"] == float(iou > 0.75)
    assert m["mean_IoU"] == pytest.approx(iou if iou > 0.5 else 0.0)


def test_area_under_pr_uses_running_max_and_trapezoids():
    # given in order of increasing t; reversed: recall 0.2, 0.5, 0.8, 1.0 with precision
    # 0.4, 0.6, 0.8, 0.5 -> monotone 0.4, 0.6, 0.8, 0.8, and (0, 0.4) in front
    precision = np.array([0.5, 0.8, 0.6, 0.4])
    recall = np.array([1.0, 0.8, 0.5, 0.2])
    expected = 0.2 * 0.4 + 0.3 * (0.4 + 0.6) / 2 + 0.3 * (0.6 + 0.8) / 2 + 0.2 * 0.8
    assert area_under_pr(precision, recall) == pytest.approx(expected)
    assert area_under_pr(precision, recall) == pytest.approx(0.60)


def test_count_matches_refuses_negative_thresholds():
    with pytest.raises(ValueError, match="IoU values >= 0"):
        count_matches(np.zeros((2, 2)), np.array([-0.1, 0.5]))


def test_area_under_pr_rejects_mismatched_curves():
    with pytest.raises(ValueError, match="same, non-zero length"):
        area_under_pr(np.ones(3), np.ones(4))


def test_coco_ap_ranks_by_scores_and_ties_do_not_depend_on_label_order():
    gt = two_squares()
    pred = gt.copy()
    pred[50:60, 0:10] = 3  # a false positive
    iou = match_instances(gt, pred)  # columns: labels 1, 2, 3
    # false positive ranked last: precision 1 up to recall 1 -> AP 1
    assert coco_average_precision(iou, np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)
    # ranked first: precision 1/2 at recall 1/2 and 2/3 at recall 1 -> 2/3 everywhere
    assert coco_average_precision(iou, np.array([0.5, 0.4, 0.9])) == pytest.approx(2 / 3)
    # all tied: one operating point, whatever the column order
    tied = coco_average_precision(iou)
    assert tied == pytest.approx(2 / 3)
    assert coco_average_precision(iou[:, ::-1]) == pytest.approx(tied)
    with pytest.raises(ValueError, match="one value per prediction"):
        coco_average_precision(iou, np.ones(2))


def random_instances(rng, shape=(80, 80), n=12) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int32)
    for k in range(1, n + 1):
        r, c = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
        h, w = rng.integers(4, 14, size=2)
        labels[r:r + h, c:c + w] = k
    return labels


@pytest.mark.parametrize("seed", range(5))
def test_coco_ap_agrees_with_pycocotools(seed):
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(seed)
    gt = random_instances(rng)
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.15] = 0  # noisy copy plus some new instances
    extra = random_instances(rng, n=6)
    pred = np.where(pred > 0, pred, np.where(extra > 0, extra + 100, 0))
    gt_ids, pred_ids = np.unique(gt)[1:], np.unique(pred)[1:]
    scores = rng.permutation(len(pred_ids)) / len(pred_ids) + 0.01

    def encode(labels, k):
        rle = mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        return rle

    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": 1, "height": gt.shape[0], "width": gt.shape[1]}],
        "categories": [{"id": 1, "name": "particle"}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": encode(gt, k), "area": float((gt == k).sum()),
                         "bbox": [0, 0, 1, 1]} for i, k in enumerate(gt_ids)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{"image_id": 1, "category_id": 1, "score": float(s),
                                    "segmentation": encode(pred, k)}
                                   for k, s in zip(pred_ids, scores)])
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1000]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    reference = ev.eval["precision"][:, :, 0, 0, 0].mean()
    ours = image_metrics(gt, pred, scores)["coco_AP"]
    assert 0.05 < reference < 0.99  # a case where ranking matters
    assert ours == pytest.approx(reference, abs=1e-9)


def test_invalid_maps_are_refused():
    gt = two_squares()
    with pytest.raises(ValueError, match="differs from pred shape"):
        match_instances(gt, gt[:32])
    with pytest.raises(ValueError, match="integer instance map"):
        match_instances(gt, gt.astype(float))
    with pytest.raises(ValueError, match="2-D instance map"):
        image_metrics(gt[None], gt[None])
    with pytest.raises(ValueError, match="negative labels"):
        match_instances(gt, -gt)


def test_summarise_averages_images_and_refuses_none():
    perfect = image_metrics(two_squares(), two_squares())
    empty = image_metrics(two_squares(), np.zeros((64, 64), dtype=np.int32))
    summary = summarise([perfect, empty])
    assert summary["AP"] == 0.5 and summary["mean_IoU"] == 0.5 and summary["n_images"] == 2
    assert len(summary["precision"]) == 20
    with pytest.raises(IdxError, match="no images to summarise"):
        summarise([])


@dataclass
class _Result:
    labels: np.ndarray


class _ReplaySegmenter:
    """Returns prepared instance maps in turn (the ground truth itself: an oracle)."""

    def __init__(self, maps):
        self.maps = list(maps)

    def segment(self, image):
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8
        return _Result(self.maps.pop(0))


@needs_emps
def test_ground_truth_against_itself_is_perfect_on_emps():
    stems = read_split(EMPS, "test")[:4]
    truth = [load_ground_truth(EMPS, s) for s in stems]
    assert all(t.shape == (512, 512) and t.max() > 0 for t in truth)
    summary = evaluate_segmenter(_ReplaySegmenter(truth), EMPS, stems, progress=False)
    for key in ("AP", "AP50", "AP75", "mean_IoU", "coco_AP"):
        assert summary[key] == pytest.approx(1.0), key
    assert summary["n_images"] == 4 and [m["stem"] for m in summary["per_image"]] == stems


@needs_emps
def test_evaluate_segmenter_errors():
    stems = read_split(EMPS, "test")[:1]
    with pytest.raises(IdxError, match="must return an instance map"):
        evaluate_segmenter(_ReplaySegmenter([np.zeros((256, 256), np.int32)]), EMPS, stems,
                           progress=False)
    with pytest.raises(IdxError, match="not found"):
        load_ground_truth(EMPS, "no-such-image")
    with pytest.raises(IdxError, match="no images to evaluate"):
        evaluate_segmenter(_ReplaySegmenter([]), EMPS, [], progress=False)


def test_clustered_standard_error_counts_articles_not_images():
    from models.evaluate import clustered_se

    # two articles of two images each, every image of one article alike: two independent values,
    # not four; sandwich: sqrt(2 / 1 * (1^2 + 1^2)) / 4 = 0.5, against 0.289 for four independent images
    assert clustered_se([1.0, 1.0, 0.0, 0.0], ["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert clustered_se([1.0, 1.0, 0.0, 0.0], ["a", "b", "c", "d"]) == \
        pytest.approx(np.std([1.0, 1.0, 0.0, 0.0], ddof=1) / 2)
    assert clustered_se([0.3, 0.9], ["a", "a"]) == 0.0  # one article: no estimate


@needs_emps
def test_evaluate_reports_standard_errors_over_source_articles():
    from models.data import article_groups, read_dois

    stems = read_split(EMPS, "test")[:8]
    groups = article_groups(EMPS, stems)
    assert groups == [read_dois(EMPS)[s] for s in stems] and len(set(groups)) < len(stems)
    truth = [load_ground_truth(EMPS, s) for s in stems]
    # the oracle on every other image, nothing on the rest: per-image AP 1, 0, 1, 0, ...
    maps = [t if i % 2 == 0 else np.zeros_like(t) for i, t in enumerate(truth)]
    summary = evaluate_segmenter(_ReplaySegmenter(maps), EMPS, stems, progress=False, groups=groups)
    ap = [m["AP"] for m in summary["per_image"]]
    assert ap == pytest.approx([1.0, 0.0] * 4)
    assert summary["AP"] == pytest.approx(0.5) and summary["n_articles"] == len(set(groups))
    # the sandwich estimate written out: each article's summed deviation from the mean
    articles = sorted(set(groups))
    sums = [sum(a - 0.5 for a, g in zip(ap, groups) if g == name) for name in articles]
    by_hand = np.sqrt(len(articles) / (len(articles) - 1) * np.sum(np.square(sums))) / len(ap)
    assert by_hand > 0 and summary["standard_error"]["AP"] == pytest.approx(by_hand)
    assert set(summary["standard_error"]) == {"AP", "AP50", "AP75", "mean_IoU", "coco_AP"}
    assert "standard_error" not in evaluate_segmenter(_ReplaySegmenter(truth[:1]), EMPS, stems[:1], progress=False)
    one = evaluate_segmenter(_ReplaySegmenter(truth[:1]), EMPS, stems[:1], progress=False, groups=groups[:1])
    assert one["n_articles"] == 1 and "standard_error" not in one  # no spread to estimate from one article
    with pytest.raises(ValueError, match="one per stem"):
        evaluate_segmenter(_ReplaySegmenter(truth), EMPS, stems, progress=False, groups=groups[:3])


def test_article_groups_without_metadata_count_each_image(tmp_path):
    from models.data import article_groups

    assert article_groups(tmp_path, ["x", "y"]) == ["x", "y"]


@needs_emps
def test_evaluate_command_prints_errors_over_articles():
    from click.testing import CliRunner

    from idx.cli import cli

    stems = read_split(EMPS, "test")[:3]
    result = CliRunner().invoke(cli, ["evaluate", "--data", str(EMPS), "--split", "test", "--limit", "3",
                                      "--mc-samples", "1", "--no-tta", "--zoom", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n_images"] == 3 and summary["n_articles"] == len({read_dois(EMPS)[s] for s in stems}) == 2
    assert set(summary["standard_error"]) == {"AP", "AP50", "AP75", "mean_IoU", "coco_AP"}
    assert all(0 <= v < 0.5 for v in summary["standard_error"].values())
    text = CliRunner().invoke(cli, ["evaluate", "--data", str(EMPS), "--limit", "3", "--mc-samples", "1",
                                    "--no-tta", "--zoom", "1"])
    assert "3 images from 2 articles; ± one standard error over articles" in text.stdout
    assert f"AP {summary['AP']:.3f} ± {summary['standard_error']['AP']:.3f}" in text.stdout


@needs_emps
def test_evaluate_writes_one_row_per_image_worst_first(tmp_path):
    import pandas as pd
    from click.testing import CliRunner

    from idx.cli import cli

    args = ["evaluate", "--data", str(EMPS), "--limit", "3", "--mc-samples", "1", "--no-tta", "--zoom", "1"]
    out = tmp_path / "per_image.csv"
    result = CliRunner().invoke(cli, args + ["--per-image", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary, rows = json.loads(result.stdout), pd.read_csv(out)
    stems = read_split(EMPS, "test")[:3]
    assert sorted(rows["stem"]) == sorted(stems) and list(rows["AP"]) == sorted(rows["AP"])
    assert rows["AP"].mean() == pytest.approx(summary["AP"], abs=2e-4)  # 4 decimals in the file
    assert dict(zip(rows["stem"], rows["article"])) == {s: read_dois(EMPS)[s] for s in stems}
    truth = [load_ground_truth(EMPS, s) for s in rows["stem"]]
    assert list(rows["n_gt"]) == [len(np.unique(t)) - 1 for t in truth]
    assert ((rows["recall50"] >= 0) & (rows["recall50"] <= 1)).all() and (rows["seconds"] > 0).all()
    # a folder that is not there is refused before the images are segmented
    bad = CliRunner().invoke(cli, args + ["--per-image", str(tmp_path / "nowhere" / "rows.csv")])
    assert bad.exit_code != 0 and "its folder does not exist" in bad.output and "Traceback" not in bad.output
