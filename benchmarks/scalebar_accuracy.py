"""Accuracy and speed of the scale-bar reader on labelled EMPS micrographs and synthetic bars.

    python benchmarks/scalebar_accuracy.py [--synthetic N] [--seed S] [--times]
        [--failures [tune|held|fresh|fresh2|fresh3|fresh4|all|synthetic]] [--skip SPLIT ...]
        [--json PATH] [--ocr-timeout S]

The first labelled set is split by stem hash (:func:`split_of`: first byte of the MD5 of the stem,
even = ``tune``, odd = ``held``); the reader was tuned looking only at the ``tune`` half's failures,
so the ``held`` half estimates accuracy on unseen images. Entries marked ``"split": "fresh"`` were
annotated later, before the reader was run on them (they became a development set in the fourth
round); ``"fresh2"`` entries were annotated before the fourth round changed the reader and were read
only in its final run; ``"fresh3"`` entries (stems 258-347) were annotated before the fifth round and
were the held-out number of the fifth round; ``"fresh4"`` entries (stems 348-464) were annotated before
the sixth round and read only once before and once after it. ``--skip fresh4`` keeps a split unread.

``--failures synthetic`` lists the misread synthetic cases only, each with how it was drawn (font,
font px, bar thickness, colour, label box, ticks, noise, JPEG quality) and the expected vs read
value, unit and bar length; ``--json PATH`` writes every per-image row (real and synthetic) there.

Prints one table: text (value) accuracy, unit accuracy, nm/px within 2 % and 5 %, false
detections on bar-less images, seconds per image. Real set: tests/data/scalebars.json over
/work/shared/data/emps/images (or $IDX_SHARED/data/emps/images).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miners.images import load_image  # noqa: E402
from miners.scalebar import read_scalebar, to_nm  # noqa: E402
from miners.scalebar_synth import make_synthetic_case  # noqa: E402

SHARED = Path(os.environ.get("IDX_SHARED", ROOT.parent / "shared"))
IMAGES = SHARED / "data" / "emps" / "images"
LABELS = ROOT / "tests" / "data" / "scalebars.json"


def split_of(stem: str, split: str | None = None) -> str:
    """``"tune"``, ``"held"`` or ``"fresh"``: the part of the real set a labelled image belongs to.

    ``split`` is the entry's ``"split"`` field (``"fresh"`` for the later annotated set); without
    it the first byte of the MD5 of the stem decides: even = ``"tune"``, odd = ``"held"``.
    """
    if split is not None:
        return split
    return "tune" if hashlib.md5(stem.encode("utf-8")).digest()[0] % 2 == 0 else "held"


def score(rows: list[dict]) -> dict:
    """Summary of per-image results (dicts with truth and reading)."""
    with_bar = [r for r in rows if r["has_bar"]]
    measured = [r for r in with_bar if r["true_nm_per_px"] is not None]
    without = [r for r in rows if not r["has_bar"]]

    def frac(items, test):
        return (sum(bool(test(r)) for r in items) / len(items)) if items else float("nan")

    def close(r, tol):
        return r["nm_per_px"] is not None and abs(r["nm_per_px"] / r["true_nm_per_px"] - 1) <= tol

    return {
        "n_bar": len(with_bar), "n_measured": len(measured), "n_nobar": len(without),
        "found": frac(with_bar, lambda r: r["found"]),
        "value": frac(with_bar, lambda r: r["value"] is not None and abs(r["value"] - r["true_value"]) < 1e-6),
        "unit": frac(with_bar, lambda r: r["unit"] == r["true_unit"]),
        "nm_px_2": frac(measured, lambda r: close(r, 0.02)),
        "nm_px_5": frac(measured, lambda r: close(r, 0.05)),
        "false_det": frac(without, lambda r: r["found"]),
        "s_per_image": float(np.mean([r["seconds"] for r in rows])) if rows else float("nan"),
    }


def run_real(skip: tuple[str, ...] = ()) -> list[dict]:
    """Read every labelled EMPS image whose split is not in ``skip``."""
    labels = json.loads(LABELS.read_text(encoding="utf-8"))["images"]
    rows = []
    for item in labels:
        if split_of(item["stem"], item.get("split")) in skip:
            continue
        image = load_image(IMAGES / f"{item['stem']}.png")
        t0 = time.perf_counter()
        result = read_scalebar(image)
        seconds = time.perf_counter() - t0
        true_nm_per_px = None
        if item["has_bar"] and item.get("bar_px"):
            true_nm_per_px = to_nm(item["value"], item["unit"]) / item["bar_px"]
        rows.append(dict(stem=item["stem"], split=split_of(item["stem"], item.get("split")),
                         has_bar=item["has_bar"], true_value=item.get("value"),
                         true_unit=item.get("unit"), true_nm_per_px=true_nm_per_px,
                         found=result.found, value=result.value, unit=result.unit,
                         nm_per_px=result.nm_per_px, text=result.text, seconds=seconds,
                         confidence=result.confidence, source=result.source))
    return rows


def run_synthetic(n: int, seed: int) -> list[dict]:
    """Synthetic bars on EMPS backgrounds (the bar-less images of the first labelled set)."""
    labels = json.loads(LABELS.read_text(encoding="utf-8"))["images"]
    backgrounds = [load_image(IMAGES / f"{item['stem']}.png") for item in labels
                   if not item["has_bar"] and item.get("split") not in ("fresh", "fresh3", "fresh4")]
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        case = make_synthetic_case(backgrounds[i % len(backgrounds)], rng)
        t0 = time.perf_counter()
        result = read_scalebar(case.image)
        seconds = time.perf_counter() - t0
        rows.append(dict(stem=f"synth{i}", has_bar=True, true_value=case.value, true_unit=case.unit,
                         true_nm_per_px=to_nm(case.value, case.unit) / case.bar_px, found=result.found,
                         value=result.value, unit=result.unit, nm_per_px=result.nm_per_px,
                         text=result.text, seconds=seconds, true_text=case.text,
                         true_bar_px=case.bar_px, bar_px=result.bar_px,
                         true_bar_bbox=case.bar_bbox, bar_bbox=result.bar_bbox, params=case.params,
                         confidence=result.confidence))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=100, help="number of synthetic cases")
    parser.add_argument("--times", action="store_true", help="print median and max s/image (real)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures", nargs="?", const="tune",
                        choices=("tune", "held", "fresh", "fresh2", "fresh3", "fresh4", "all",
                                 "synthetic"),
                        help="list misread real images of this split (default: tune only) and the "
                             "synthetic ones; 'synthetic': only those, with how they were drawn")
    parser.add_argument("--ocr-timeout", type=float, default=None,
                        help="seconds a tesseract call may take (default: the reader's "
                             "OCR_TIMEOUT_S); raise it on a loaded machine, where calls time out")
    parser.add_argument("--json", type=Path, help="write every per-image row to this JSON file")
    parser.add_argument("--skip", nargs="*", default=(),
                        choices=("tune", "held", "fresh", "fresh2", "fresh3", "fresh4"),
                        help="splits not to read at all (e.g. a held-out split during development)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.ocr_timeout is not None:
        import miners.scalebar

        miners.scalebar.OCR_TIMEOUT_S = args.ocr_timeout
    real = run_real(tuple(args.skip))
    synth = run_synthetic(args.synthetic, args.seed)
    header = (f"{'set':<12} {'n bar':>5} {'n no':>4} {'found':>6} {'value':>6} {'unit':>6} "
              f"{'nm/px2%':>8} {'nm/px5%':>8} {'false':>6} {'s/img':>6}")
    print(header)
    print("-" * len(header))
    tune = [r for r in real if r["split"] == "tune"]
    held = [r for r in real if r["split"] == "held"]
    fresh = [r for r in real if r["split"] == "fresh"]
    fresh2 = [r for r in real if r["split"] == "fresh2"]
    fresh3 = [r for r in real if r["split"] == "fresh3"]
    fresh4 = [r for r in real if r["split"] == "fresh4"]
    sets = (("real", real), ("real-tune", tune), ("real-held", held), ("real-fresh", fresh),
            ("real-fresh2", fresh2), ("real-fresh3", fresh3), ("real-fresh4", fresh4),
            ("synthetic", synth))
    for name, rows in sets:
        s = score(rows)
        if not rows:
            continue
        print(f"{name:<12} {s['n_bar']:>5} {s['n_nobar']:>4} {s['found']:>6.1%} {s['value']:>6.1%} "
              f"{s['unit']:>6.1%} {s['nm_px_2']:>8.1%} {s['nm_px_5']:>8.1%} "
              f"{s['false_det']:>6.1%} {s['s_per_image']:>6.3f}")
    print(f"(real: nm/px scored on the {score(real)['n_measured']} images with annotated bar end-points)")
    if args.times:
        for name, rows in sets[:-1]:
            seconds = [r["seconds"] for r in rows]
            if seconds:
                print(f"{name} s/image: median {np.median(seconds):.3f}, max {np.max(seconds):.3f}")
    if args.json:
        args.json.write_text(json.dumps(real + synth, indent=1, default=str), encoding="utf-8")
    if args.failures == "synthetic":
        for r in synth:
            if is_failure(r):
                print_synthetic_failure(r)
    elif args.failures:
        shown = {"tune": tune, "held": held, "fresh": fresh, "fresh2": fresh2, "fresh3": fresh3,
                 "fresh4": fresh4, "all": real}[args.failures]
        for r in shown + synth:
            if is_failure(r):
                print(f"  {r['stem']}: truth {r['true_value']} {r['true_unit']} "
                      f"{r['true_nm_per_px']}; read {r['value']} {r['unit']} {r['nm_per_px']} {r['text']!r}")


def is_failure(r: dict) -> bool:
    """True when a row's bar presence, value, unit or nm/px (beyond 5 %) is wrong."""
    bad = (r["has_bar"] != r["found"] or (r["has_bar"] and (r["value"] != r["true_value"]
           or r["unit"] != r["true_unit"])))
    if r["has_bar"] and r["true_nm_per_px"] and r["nm_per_px"]:
        bad = bad or abs(r["nm_per_px"] / r["true_nm_per_px"] - 1) > 0.05
    return bool(bad)


def print_synthetic_failure(r: dict) -> None:
    """One line per misread synthetic case: how it was drawn, expected vs read."""
    p = r["params"]
    box = "-" if p["box_colour"] is None else "box" + "".join(f"{c:02x}" for c in p["box_colour"])
    colour = "".join(f"{c:02x}" for c in p["colour"])
    noise = "-" if p["noise_sigma"] is None else f"{p['noise_sigma']:.0f}"
    jpeg = "-" if p["jpeg_quality"] is None else str(p["jpeg_quality"])
    bar = "-" if r["bar_px"] is None else f"{r['bar_px']:.1f}"
    print(f"  {r['stem']:>8}: {p['font'][:-4]:<18} {p['font_px']:>3}px thick {p['thickness_px']:>2} "
          f"#{colour} {box:<10} {'ticks' if p['ticks'] else '     '} "
          f"{'above' if p['text_above'] else 'below'} noise {noise:>2} jpeg {jpeg:>2} | "
          f"truth {r['true_text']!r} {r['true_bar_px']} px; read {r['value']} {r['unit']} "
          f"{bar} px {r['text']!r}")


if __name__ == "__main__":
    main()
