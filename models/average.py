"""Average BPartIS weights along a training run (stochastic weight averaging, Izmailov et al. 2018).

    python -m models.average runs/bp10/snapshots/epoch00{21..40}.pt --out runs/bp10/swa.pt

The snapshots' parameters are averaged uniformly; batch-norm statistics are not averaged but
measured again on the fit split (``torch.optim.swa_utils.update_bn``: one pass of augmented
training crops in training mode, as the network sees them in training), since an average of
weights is a new network whose activations have their own statistics.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from idx.errors import IdxError, run_module
from models.data import EVAL_SIZE, default_emps_dir, load_sample, read_split
from models.infer import load_weights
from models.network import BPartIS
from models.train import run_batches

log = logging.getLogger(__name__)


def average_state_dicts(states: list[dict]) -> dict:
    """Uniform mean of the floating-point tensors of ``states`` (same keys and shapes); integer
    tensors (batch-norm sample counters) are taken from the last state."""
    if not states:
        raise IdxError("no weights to average: give at least one checkpoint")
    keys = list(states[-1])
    for state in states[:-1]:
        if list(state) != keys or any(state[k].shape != states[-1][k].shape for k in keys):
            raise IdxError("checkpoints to average differ in their keys or shapes: give snapshots of one network")
    return {k: (torch.stack([s[k].float() for s in states]).mean(0) if states[-1][k].is_floating_point()
                else states[-1][k].clone()) for k in keys}


def recompute_batch_norm(model: BPartIS, data_dir, crop: int = EVAL_SIZE, batch_size: int = 4,
                         seed: int = 0) -> BPartIS:
    """Measure the batch-norm running statistics of ``model`` again on augmented fit images."""
    stems = read_split(data_dir, "fit")
    samples = [load_sample(data_dir, s, EVAL_SIZE) for s in stems]
    batches = run_batches(samples, min(batch_size, len(samples)), crop, seed)
    with torch.no_grad():  # one batch at a time: the 310 augmented 512-px images are ~1 GB at once
        update_bn((images for images, _ in batches), model)
    return model


def average_checkpoints(paths, data_dir, out, crop: int = EVAL_SIZE) -> Path:
    """Average ``paths`` (state dicts or run checkpoints), re-measure batch norm, save a state dict."""
    model = BPartIS()
    model.load_state_dict(average_state_dicts([load_weights(p) for p in paths]))
    recompute_batch_norm(model, data_dir, crop)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--out", required=True, help="where to write the averaged state dict")
    parser.add_argument("--data", default=str(default_emps_dir()), help="EMPS folder (batch-norm pass)")
    parser.add_argument("--crop", type=int, default=EVAL_SIZE, help="crop side of the batch-norm pass")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(average_checkpoints(args.checkpoints, args.data, args.out, args.crop))


if __name__ == "__main__":
    run_module(main)
