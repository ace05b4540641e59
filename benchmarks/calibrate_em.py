"""Calibrate the EM / other panel classifier and report it on held-out panels.

Calibration panels: EMPS train-split micrographs + matplotlib non-EM renders (seed 1).
Held-out panels: EMPS test-split micrographs + non-EM renders with another seed (2).
Prints the fitted constants to paste into ``miners/panels.py`` and a table of held-out
precision / recall of the ``em`` class, by non-EM kind as well.

    nice -n 15 python -m benchmarks.calibrate_em --panels 600
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from miners.figure_synth import NON_EM_KINDS, list_em_images, make_panel_set
from miners.panels import EM_THRESHOLD, FEATURE_NAMES, classify_panel, measure_panel_features

EMPS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"


def fit_logistic(features: np.ndarray, is_em: np.ndarray, strength: float = 1.0):
    """Standardise and fit an L2 logistic regression; returns (mean, scale, weights, bias)."""
    from sklearn.linear_model import LogisticRegression

    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    model = LogisticRegression(C=strength, max_iter=2000, class_weight="balanced")
    model.fit((features - mean) / scale, is_em)
    return mean, scale, model.coef_[0], float(model.intercept_[0])


def report(images, is_em) -> list[tuple[str, float, float, int]]:
    """Held-out precision / recall of the em class (with the constants now in panels.py)."""
    pred = np.array([classify_panel(im)[0] == "em" for im in images])
    truth = is_em.astype(bool)
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    rows = [("all", tp / max(tp + fp, 1), tp / max(tp + fn, 1), len(images))]
    for j, kind in enumerate(NON_EM_KINDS):
        idx = [i for i in range(len(images)) if not truth[i] and ((i // 2) % len(NON_EM_KINDS)) == j]
        rows.append((f"{kind}: false EM", float(pred[idx].mean()) if idx else 0.0, float("nan"), len(idx)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", type=int, default=600)
    parser.add_argument("--fit", action="store_true", help="fit and print new constants")
    args = parser.parse_args()
    if args.fit:
        images, is_em = make_panel_set(args.panels, seed=1, em_paths=list_em_images(EMPS_DIR, "train"))
        feats = np.array([measure_panel_features(im) for im in images])
        mean, scale, weights, bias = fit_logistic(feats, is_em)
        fmt = lambda a: "np.array([" + ", ".join(f"{v:.4g}" for v in a) + "])"  # noqa: E731
        print("# features:", FEATURE_NAMES)
        print("FEATURE_MEAN =", fmt(mean))
        print("FEATURE_SCALE =", fmt(scale))
        print("FEATURE_WEIGHTS =", fmt(weights))
        print(f"FEATURE_BIAS = {bias:.4g}")
        return
    images, is_em = make_panel_set(args.panels, seed=2, em_paths=list_em_images(EMPS_DIR, "test"))
    print(f"held-out panels: {len(images)} ({int(is_em.sum())} EM), threshold {EM_THRESHOLD}")
    print("| subset | EM precision / false-EM rate | EM recall | n |\n|---|---|---|---|")
    for name, p, r, n in report(images, is_em):
        print(f"| {name} | {p:.3f} | {r:.3f} | {n} |")


if __name__ == "__main__":
    main()
