"""Caption distribution accuracy: per-label sub-caption, technique and stated scale.

Scores ``miners.captions.describe_panels`` on ``tests/data/captions.json`` (real captions of the
fixture articles plus captions written in Nature, RSC, ACS, Elsevier and Wiley styles, each label
with the expected start of its sub-caption, its technique and its stated scale).

    nice -n 15 python -m benchmarks.caption_split            # working tree
    nice -n 15 python -m benchmarks.caption_split --rev HEAD  # miners/captions.py at a git revision
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "captions.json"

log = logging.getLogger(__name__)


def load_captions_module(rev: str | None):
    """``miners.captions`` from the working tree, or the file as it was at git revision ``rev``."""
    if rev is None:
        import miners.captions as module
        return module
    source = subprocess.run(["git", "show", f"{rev}:miners/captions.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "captions_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("captions_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def normalise_text(text: str | None) -> str:
    """Lower case, one space between words, the µ sign in one spelling."""
    return re.sub(r"\s+", " ", (text or "").replace("μ", "µ")).strip().lower()


def same_scale(got, want) -> bool:
    """Two ``[value, unit]`` scales (or None) agree."""
    if not got or not want:
        return not got and not want
    unit = {"um": "µm", "μm": "µm"}
    return abs(float(got[0]) - float(want[0])) < 1e-6 and unit.get(got[1], got[1]) == unit.get(want[1], want[1])


def evaluate(module, items: list[dict]) -> dict:
    """Per-label accuracies of sub-caption start, technique and scale; labels found but not expected."""
    n = start_ok = tech_ok = scale_ok = all_ok = spurious = 0
    failures = []
    for item in items:
        expected = item["panels"]
        described = module.describe_panels(item["caption"], list(expected))
        found = {k for k in module.split_caption(item["caption"]) if k}
        spurious += len(found - set(expected))
        for label, want in expected.items():
            got = described[label]
            ok_start = normalise_text(got["text"]).startswith(normalise_text(want["start"]))
            ok_tech = got["technique"] == want["technique"]
            ok_scale = same_scale(got["scale"], want["scale"])
            n += 1
            start_ok += ok_start
            tech_ok += ok_tech
            scale_ok += ok_scale
            all_ok += ok_start and ok_tech and ok_scale
            if not (ok_start and ok_tech and ok_scale):
                failures.append((item["source"], label, got, want))
    return {"captions": len(items), "labels": n, "sub-caption start": start_ok / n, "technique": tech_ok / n,
            "scale": scale_ok / n, "all three": all_ok / n, "labels found but not expected": spurious,
            "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="score miners/captions.py at this git revision (e.g. HEAD~3)")
    parser.add_argument("--failures", action="store_true", help="list the labels that fail")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    items = json.loads(DATA.read_text())
    r = evaluate(load_captions_module(args.rev), items)
    print(f"miners/captions.py at {args.rev or 'working tree'}\n")
    print("| metric | value |\n|---|---|")
    for key, value in r.items():
        if key != "failures":
            print(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if args.failures:
        for source, label, got, want in r["failures"]:
            print(f"\n{source} [{label}]\n  want {want}\n  got  text={got['text'][:70]!r} "
                  f"technique={got['technique']} scale={got['scale']}")


if __name__ == "__main__":
    main()
