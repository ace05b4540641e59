"""Train BPartIS within a wall-clock budget: the full 512-px schedule on a lent GPU.

A lent GPU machine runs one command for at most 10 minutes and cannot read ``../shared``. So:

1. here, pack the EMPS training images at the working size into an ignored folder that travels
   with the command (48.6 MiB for the 366 train images, against 119 MB for all 465 originals)::

       python -m models.budget pack --out .gpu/emps512

2. there, time an epoch, plan as many epochs as fit the budget (the poly schedule needs its
   length in advance), train them, and copy the log, the plot and the snapshots to ``--out``
   (the budget covers the validation passes too, every 4 epochs and at each snapshot, their
   cost measured by the probe)::

       python -m models.budget run --data .gpu/emps512 --seconds 360 --out $OUT \\
           --device cuda --workers 14 -- --crop 512 --batch-size 8

   Everything after ``--`` goes to :mod:`models.train` unchanged (``--init``, ``--lr``,
   ``--augment``, ...). The snapshots come back as state dicts; pick one on validation here
   (``models.tune``), as for a CPU run.
"""
from __future__ import annotations

import argparse
import csv
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from idx.errors import run_module
from models.data import EVAL_SIZE, default_emps_dir, load_sample, read_split
from models.train import main as train_main
from models.train_defaults import VAL_LOSS_EVERY

log = logging.getLogger(__name__)

# the second of three is timed: the first pays for start-up (cuDNN's kernel search, workers); the last
# ends with a whole validation pass (loss and AP, as at a snapshot), whose cost is the difference
PROBE_EPOCHS = 3
TIMED_EPOCH = 2
SNAPSHOTS = 5  # snapshots brought back, evenly spread and always the last; each is a 9 MB state dict


def pack_emps(src, out, splits=("train",), size: int = EVAL_SIZE) -> Path:
    """Copy the images of ``splits`` (with ``metadata.csv`` and the split files) to ``out`` at
    ``size`` x ``size``, as :func:`models.data.load_sample` reads them: loading a packed image
    gives the same arrays as loading the original. Grey images are stored with one channel."""
    src, out = Path(src), Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "segmaps").mkdir(exist_ok=True)
    stems = []
    for split in splits:
        split_stems = read_split(src, split)
        (out / f"{split}.csv").write_text("\n".join(split_stems) + "\n")
        stems += split_stems
    for stem in tqdm(stems, desc="pack", leave=False):
        sample = load_sample(src, stem, size)
        image = sample.image
        grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())
        Image.fromarray(image[..., 0] if grey else image).save(out / "images" / f"{stem}.png", optimize=True)
        Image.fromarray(sample.instances.astype(np.uint16)).save(out / "segmaps" / f"{stem}.png")
    wanted = {f"{s}.png" for s in stems}
    with open(src / "metadata.csv", newline="") as fh, open(out / "metadata.csv", "w", newline="") as dst:
        reader = csv.DictReader(fh)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["filename"] in wanted)
    return out


def epoch_seconds(run_dir: Path, epoch: int) -> float:
    """Seconds of ``epoch`` in ``run_dir/log.csv``."""
    with open(run_dir / "log.csv", newline="") as fh:
        return next(float(row["seconds"]) for row in csv.DictReader(fh) if int(row["epoch"]) == epoch)


def snapshot_every(epochs: int) -> int:
    """Epochs between snapshots (and validation AP passes) so that :data:`SNAPSHOTS` come back."""
    return max(1, epochs // SNAPSHOTS)


def validation_passes(epochs: int, every: int) -> int:
    """Epochs of a run that end with a validation pass: the loss every :data:`VAL_LOSS_EVERY`
    (:mod:`models.train`), the AP every ``every``, and the last."""
    return sum(1 for e in range(1, epochs + 1) if e % VAL_LOSS_EVERY == 0 or e % every == 0 or e == epochs)


def plan_epochs(seconds: float, per_epoch: float, per_pass: float = 0.0, minimum: int = 1) -> int:
    """The most epochs of ``per_epoch`` seconds whose training and validation passes (``per_pass``
    seconds each, counted as whole passes) fit in ``seconds``; at least ``minimum``."""
    epochs = int(seconds // max(per_epoch, 1e-6))
    while epochs > minimum and (epochs * per_epoch + per_pass * validation_passes(epochs, snapshot_every(epochs))
                                > seconds):
        epochs -= 1
    return max(minimum, epochs)


def run_budget(data, out, seconds: float, train_args=(), device="cuda", workers=0) -> dict:
    """Probe the speed, train the planned epochs, copy the results to ``out``; returns the plan."""
    common = ["--data", str(data), "--device", device, "--workers", str(workers)] + list(train_args)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        train_main(common + ["--out", str(probe), "--epochs", str(PROBE_EPOCHS), "--eval-every",
                             str(PROBE_EPOCHS), "--snapshot-every", "0"])
        per_epoch = epoch_seconds(probe, TIMED_EPOCH)
        per_pass = max(0.0, epoch_seconds(probe, PROBE_EPOCHS) - per_epoch)
        epochs = plan_epochs(seconds, per_epoch, per_pass)
        every = snapshot_every(epochs)
        log.info("%.1f s per epoch, %.1f s per validation pass: %d epochs in %g s, a snapshot every %d",
                 per_epoch, per_pass, epochs, seconds, every)
        run = Path(tmp) / "run"
        train_main(common + ["--out", str(run), "--epochs", str(epochs), "--snapshot-every", str(every),
                             "--eval-every", str(every)])
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("log.csv", "loss.png", "best.pt"):
            if (run / name).exists():
                shutil.copy(run / name, out / name)
        snapshots = sorted((run / "snapshots").glob("epoch*.pt"))[-SNAPSHOTS:]
        for path in snapshots:
            shutil.copy(path, out / path.name)
    return {"seconds_per_epoch": per_epoch, "seconds_per_validation": per_pass, "epochs": epochs,
            "snapshot_every": every,
            "snapshots": [p.name for p in snapshots]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="EMPS training images at 512 px in a folder that can travel")
    pack.add_argument("--data", default=str(default_emps_dir()), help="EMPS folder")
    pack.add_argument("--out", default=".gpu/emps512")
    run = commands.add_parser("run", help="train as many epochs as fit --seconds")
    run.add_argument("--data", default=".gpu/emps512", help="EMPS folder (packed or not)")
    run.add_argument("--out", required=True, help="where the log, plot and snapshots go")
    run.add_argument("--seconds", type=float, required=True, help="training time after the probe, validation passes included")
    run.add_argument("--device", default="cuda")
    run.add_argument("--workers", type=int, default=0, help="batch-making processes (models.train)")
    run.add_argument("train_args", nargs="*", help="after --: more options for models.train")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "pack":
        print(pack_emps(args.data, args.out))
    else:
        print(run_budget(args.data, args.out, args.seconds, args.train_args, args.device, args.workers))


if __name__ == "__main__":
    run_module(main)
