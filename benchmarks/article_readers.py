"""Benchmark the article readers against expected outputs.

Real documents (shared/fixtures/articles) are compared with tests/data/articles_expected.json;
synthetic PDFs (miners.pdf_synth, built from different EMPS images) with their ground truth.
For PDFs "image ok" means the figure crop's box overlaps the true figure box with IoU >= 0.9.

    python benchmarks/article_readers.py [--pdfs 6] [--hard 3] [--ocr 1]

Vector-figure boxes in the ground truth are the drawing's extent estimated from the drawing
commands (axes, bars, tick labels), so they are approximate; IoU >= 0.9 allows for that.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from miners.articles import read  # noqa: E402
from miners.articles.model import normalise_text  # noqa: E402

SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "articles"
EMPS = SHARED / "data" / "emps" / "images"
EXPECTED = ROOT / "tests" / "data" / "articles_expected.json"
IOU_OK = 0.9


def iou(a, b) -> float:
    """Intersection over union of two ``[x0, top, x1, bottom]`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def score(name, article, want, seconds, pdf=False) -> dict:
    got = article.figures
    pairs = list(zip(got, want["figures"]))
    captions = sum(normalise_text(g.caption) == normalise_text(w["caption"]) for g, w in pairs)
    if pdf:
        images = sum(g.bbox is not None and iou(g.bbox, w["bbox"]) >= IOU_OK for g, w in pairs)
    else:
        images = sum(g.image == w["image"] for g, w in pairs)
    return {"document": name, "doi": article.doi == want["doi"], "title": article.title == want["title"],
            "figures": f"{len(got)}/{len(want['figures'])}", "captions": f"{captions}/{len(want['figures'])}",
            "images": f"{images}/{len(want['figures'])}", "seconds": seconds,
            "ok": (captions, images, len(got), len(want["figures"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", type=int, default=6, help="number of plain synthetic PDFs")
    parser.add_argument("--hard", type=int, default=3, help="number of PDFs with a vector figure page")
    parser.add_argument("--ocr", type=int, default=1, choices=(0, 1),
                        help="add the PDF whose scanned page has no text layer (needs tesseract, slow)")
    args = parser.parse_args(argv)
    rows = []
    expected = json.loads(EXPECTED.read_text("utf-8"))["documents"]
    for name, want in expected.items():
        start = time.perf_counter()
        article = read(FIXTURES / name)
        rows.append(score(name, article, want, time.perf_counter() - start))
    from miners.pdf_synth import make_article_pdf

    variants = [(f"synthetic PDF #{k} (EMPS {6 * k}-{6 * k + 5})", {"first_image": 6 * k})
                for k in range(args.pdfs)]
    variants += [(f"synthetic PDF #{k} + vector figure p5", {"first_image": 6 * k, "vector_figure": True})
                 for k in range(args.hard)]
    variants += [("synthetic PDF #0, scan without text layer (OCR)", {"scan_text_layer": False})] * args.ocr
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, options) in enumerate(variants):
            path = Path(tmp) / f"synthetic-{k}.pdf"
            truth = make_article_pdf(path, EMPS, **options)
            start = time.perf_counter()
            article = read(path)
            rows.append(score(name, article, truth, time.perf_counter() - start, pdf=True))
    header = "| document | DOI | title | figures found/expected | captions exact | image link / crop ok | s |"
    print(header)
    print("|" + "---|" * 7)
    for r in rows:
        print(f"| {r['document']} | {'yes' if r['doi'] else 'NO'} | {'yes' if r['title'] else 'NO'} | "
              f"{r['figures']} | {r['captions']} | {r['images']} | {r['seconds']:.2f} |")
    totals = [sum(r["ok"][i] for r in rows) for i in range(4)]
    print(f"\nTotal: {totals[2]}/{totals[3]} figures found, {totals[0]}/{totals[3]} captions exact, "
          f"{totals[1]}/{totals[3]} image links / crops correct; DOI {sum(r['doi'] for r in rows)}/{len(rows)}, "
          f"title {sum(r['title'] for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
