"""Ship a trained BPartIS checkpoint: a plain fp32 state dict plus a JSON sidecar.

    python -m models.export runs/bpartis/snapshots/epoch0040.pt --tu 0.01 \
        --note "selected on validation AP50 + mean IoU"

Writes ``models/weights/bpartis-emps.pt`` (loads with ``load_state_dict(strict=True)``, < 25 MB)
and ``models/weights/bpartis-emps.json`` (t_u tuned on validation, source checkpoint, sha256),
which ``models.infer.default_tu`` reads.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.infer import DEFAULT_WEIGHTS, file_sha256, load_weights

MAX_BYTES = 25 * 1024 * 1024


def export_weights(checkpoint, tu: float, out=DEFAULT_WEIGHTS, extra: dict | None = None) -> Path:
    """Validate ``checkpoint`` as BPartIS, save it as a plain state dict at ``out`` with its sidecar."""
    state = load_weights(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone().contiguous() for k, v in state.items()}, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{out} is {size / 2**20:.1f} MB, over the 25 MB limit")
    card = {"tu": tu, "source_checkpoint": str(checkpoint), "sha256": file_sha256(out),
            "bytes": size, **(extra or {})}
    out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--tu", type=float, required=True)
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--extra", default="{}", help="JSON merged into the sidecar")
    args = parser.parse_args(argv)
    print(export_weights(args.checkpoint, args.tu, args.out, json.loads(args.extra)))


if __name__ == "__main__":
    main()
