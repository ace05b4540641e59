"""Panel letters read on real EMPS micrographs against the labelled set tests/data/panel_letters.json.

    python -m benchmarks.panel_letters_real [--half dev|heldout|both] [--failures]

Each image goes through ``split_panels(image, classify=False)``, as ``idx extract`` splits a
figure. An image with a letter counts as right when a panel's label is that letter (case ignored
for letters whose two cases look alike, c o s v w x z ...) and no panel got another letter;
wrong when some panel got another letter; unread otherwise. On an image without a letter, any
label is an invented letter. Ambiguous entries (numerals, sample names, cut glyphs) are not
scored. The halves are fixed in the JSON (first byte of sha1(stem) even: ``dev``, odd:
``heldout``); ``--failures`` lists the misses of the chosen half.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from miners.images import load_image
from miners.panels import split_panels

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
LETTERS_JSON = ROOT / "tests" / "data" / "panel_letters.json"
SHARED = Path(os.environ.get("IDX_SHARED", ROOT.parent / "shared"))
IMAGES = SHARED / "data" / "emps" / "images"
CASE_ALIKE = "cjkopsuvwxz"


def same_letter(read: str, truth: str) -> bool:
    """Whether a read label is the annotated one (case ignored where the two cases look alike)."""
    if read == truth:
        return True
    return len(truth) == 1 and truth.lower() in CASE_ALIKE and read.lower() == truth.lower()


def score_image(entry: dict, labels: list[str | None]) -> str:
    """``right``, ``wrong``, ``unread`` (image with a letter) or ``invented``, ``none`` (without)."""
    read = [lab for lab in labels if lab]
    truth = entry["letter"]
    if truth is None:
        return "invented" if read else "none"
    if not read:
        return "unread"
    return "right" if all(same_letter(lab, truth) for lab in read) else "wrong"


def evaluate(half: str, images: Path = IMAGES) -> list[dict]:
    """Read the labels of every scored image of ``half`` (``dev``, ``heldout``)."""
    entries = json.loads(LETTERS_JSON.read_text())["images"]
    rows = []
    for entry in entries:
        if entry["half"] != half or entry.get("ambiguous"):
            continue
        image = load_image(images / f"{entry['stem']}.png")
        labels = [p.label for p in split_panels(image, classify=False)]
        rows.append({**entry, "read": labels, "outcome": score_image(entry, labels)})
    return rows


def summarise(rows: list[dict]) -> dict:
    """Counts of one half: images with a letter, right, wrong, unread; letter-less, invented."""
    count = {k: sum(r["outcome"] == k for r in rows) for k in ("right", "wrong", "unread", "invented", "none")}
    return {"with_letter": count["right"] + count["wrong"] + count["unread"], "right": count["right"],
            "wrong": count["wrong"], "unread": count["unread"],
            "letterless": count["invented"] + count["none"], "invented": count["invented"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", default="both", choices=("dev", "heldout", "both"))
    parser.add_argument("--failures", action="store_true", help="list the misses of the half")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not IMAGES.is_dir():
        raise SystemExit(f"EMPS images not found at {IMAGES}; set IDX_SHARED to the shared folder")
    halves = ("dev", "heldout") if args.half == "both" else (args.half,)
    print("| half | images with a letter | read right | wrong letter | unread | letter-less images "
          "| letters invented |\n|---|---|---|---|---|---|---|")
    failures = []
    for half in halves:
        rows = evaluate(half)
        s = summarise(rows)
        print(f"| {half} | {s['with_letter']} | {s['right']} | {s['wrong']} | {s['unread']} "
              f"| {s['letterless']} | {s['invented']} |")
        failures += [r for r in rows if r["outcome"] not in ("right", "none")]
    if args.failures:
        print()
        for r in failures:
            print(f"{r['half']} {r['stem']} {r['outcome']}: printed {r['printed']!r}, "
                  f"expected {r['letter']!r}, read {r['read']}  ({r['note']})")


if __name__ == "__main__":
    main()
