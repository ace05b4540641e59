"""Ship a trained BPartIS checkpoint: a plain fp32 state dict plus a JSON sidecar.

    python -m models.export runs/bpartis/snapshots/epoch0090.pt --sweep docs/bpartis/sweep.json \
        --extra '{"selected_by": "validation protocol AP"}'

Writes ``models/weights/bpartis-emps.pt`` (loads with ``load_state_dict(strict=True)``, < 25 MB),
``models/weights/bpartis-emps.json`` (the card: t_u and clustering thresholds tuned on validation,
the rim-snapping alpha the filter was chosen with, source checkpoint, sha256), which
``models.infer.tuned_params`` reads, and, when the sweep fitted one, the learned instance filter
``models/weights/bpartis-emps-filter.json`` the card names.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from idx.errors import run_module
from models.infer import DEFAULT_WEIGHTS, file_sha256, load_weights

MAX_BYTES = 25 * 1024 * 1024


def export_weights(checkpoint, tu: float, out=DEFAULT_WEIGHTS, extra: dict | None = None,
                   instance_filter: dict | None = None) -> Path:
    """Validate ``checkpoint`` as BPartIS, save it as a plain state dict at ``out`` with its card
    and, given ``instance_filter`` (``InstanceFilter.to_dict()``), the filter file beside it."""
    state = load_weights(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone().contiguous() for k, v in state.items()}, out)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{out} is {size / 2**20:.1f} MB, over the 25 MB limit")
    card = {"tu": tu, "source_checkpoint": str(checkpoint), "sha256": file_sha256(out),
            "bytes": size, **(extra or {})}
    if instance_filter is not None:
        trees = out.with_name(out.stem + "-filter.json")
        trees.write_text(json.dumps(instance_filter) + "\n")
        card["instance_filter"] = trees.name
    out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--sweep", default=None,
                        help="models.tune sweep JSON: t_u, clustering thresholds and instance filter")
    parser.add_argument("--tu", type=float, default=None, help="t_u (default: the sweep's)")
    parser.add_argument("--out", default=str(DEFAULT_WEIGHTS),
                        help="weights file to write, its card and filter beside it (default: the shipped "
                             "%(default)s, which it replaces)")
    parser.add_argument("--extra", default="{}", help="JSON merged into the card")
    args = parser.parse_args(argv)
    try:
        extra_card = json.loads(args.extra)
    except ValueError as exc:
        parser.error(f"--extra is not JSON ({exc}); give an object such as '{{\"key\": 1}}'")
    if not isinstance(extra_card, dict):
        parser.error("--extra must be a JSON object ({...})")
    sweep = json.loads(Path(args.sweep).read_text()) if args.sweep else {}
    tu = args.tu if args.tu is not None else sweep.get("tu")
    if tu is None:
        parser.error("give --tu or --sweep")
    from models.tune import CLUSTERING_KEYS

    keys = [k for key in CLUSTERING_KEYS for k in (key, f"tu_{key}")] + ["tta", "zoom_below_px", "refine_centre"]
    extra = {k: sweep[k] for k in keys if sweep.get(k) is not None}
    if sweep.get("scored_with_edge_alpha") is not None:  # the filter's threshold was chosen with these rims
        extra["edge_alpha"] = sweep["scored_with_edge_alpha"]
    print(export_weights(args.checkpoint, tu, args.out, extra | extra_card,
                         sweep.get("instance_filter")))


if __name__ == "__main__":
    run_module(main)
