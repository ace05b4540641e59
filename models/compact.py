"""Shrink a training run's resumable checkpoint so it can travel (in git, by mail) to another sitting.

    python -m models.compact runs/pub256/last.pt --out carry/pub256-last.pt
    # later, elsewhere: copy it back as RUN/last.pt and run the same training command

A run's ``last.pt`` holds the model and Adam's two moment estimates per parameter, three float32
copies of the network (~28 MB for BPartIS). The model stays float32 (the weights are what the run
goes on from); the moments are stored in bfloat16, which halves the file to ~18 MB. Resuming casts
them back to float32 (``Optimizer.load_state_dict`` gives state the parameters' dtype), so a
resumed run differs from an uninterrupted one only by that rounding (8 significant bits of the
moments, which are running averages of noisy gradients).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from idx.errors import IdxError, run_module
from models.train import read_run_state

log = logging.getLogger(__name__)


def compact_checkpoint(state: dict) -> dict:
    """A copy of the run checkpoint ``state`` with the optimiser's float32 tensors in bfloat16.

    Parameters
    ----------
    state : dict
        As saved by :func:`models.train.train` (keys ``model``, ``optimizer``, ``epoch``, ...).
    """
    moments = {  # Adam's 0-d float32 step counters stay as they are
        key: {name: (value.to(torch.bfloat16) if torch.is_tensor(value) and value.dtype == torch.float32
                     and value.dim() > 0 else value) for name, value in slots.items()}
        for key, slots in state["optimizer"]["state"].items()}
    return {**state, "optimizer": {**state["optimizer"], "state": moments}}


def compact_file(src, out) -> Path:
    """Write :func:`compact_checkpoint` of the run checkpoint at ``src`` to ``out``."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise IdxError(f"{src}: no such checkpoint; give a run's last.pt")
    state = read_run_state(src, "give a run's last.pt")
    small = compact_checkpoint(state)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, out.with_suffix(".tmp"))
    out.with_suffix(".tmp").replace(out)
    log.info("%s (%.1f MB) -> %s (%.1f MB), epoch %s", src, src.stat().st_size / 1e6, out,
             out.stat().st_size / 1e6, state.get("epoch"))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkpoint", help="a run's last.pt")
    parser.add_argument("--out", required=True, help="where to write the compact checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(compact_file(args.checkpoint, args.out))


if __name__ == "__main__":
    run_module(main)
