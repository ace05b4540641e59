"""Train BPartIS on EMPS: resumable, a checkpoint every epoch, a CSV log and a loss plot.

    python -m models.train --data ../shared/data/emps --out runs/bpartis --epochs 200
"""
from __future__ import annotations

import argparse
import csv
import itertools
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from idx.errors import IdxError, run_module
from models.data import (EVAL_SIZE, MOSAIC_P, augment, colour_jitter, default_emps_dir, em_degrade,
                         load_sample, mosaic, read_split, to_tensor)
from models.infer import ParticleSegmenter, load_weights, read_checkpoint
from models.loss import SpatialEmbeddingLoss
from models.network import BPartIS, usable_device
from models.train_defaults import (AUGMENTATIONS, BATCH_SIZE, CROP, DEVICE, EPOCHS, EVAL_EVERY, IMAGE_SIZE,
                                   LEARNING_RATE, OUT, SCHEDULES, SNAPSHOT_EVERY, VAL_LOSS_EVERY, WORKERS)

log = logging.getLogger(__name__)

JITTER = 0.3


def _check_choice(what: str, value: str, choices: tuple) -> None:
    """Refuse ``value`` unless it is one of ``choices``, naming ``what`` and the choices."""
    if value not in choices:
        raise IdxError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")


class RunBatches(torch.utils.data.Dataset):
    """The batches of a run's ``epochs`` (an iterable of epoch numbers), epoch after epoch: item
    ``i`` is batch ``i % per_epoch`` of the ``i // per_epoch``-th epoch, ``(images (B, 3, crop, crop),
    instances (B, crop, crop) int64)``.

    Each epoch's order comes from ``(seed, epoch)`` and each batch's augmentation from its own
    generators seeded by ``(seed, epoch, batch)``, so the batches are the same whether one process
    makes them or a :class:`~torch.utils.data.DataLoader`'s workers do (:func:`run_batches`), and a
    resumed run sees what an unbroken one would. ``augmentation``: one of :data:`AUGMENTATIONS`.
    """

    def __init__(self, samples, batch_size, crop, seed=0, epochs=(1,), augmentation="published"):
        _check_choice("augmentation", augmentation, AUGMENTATIONS)
        self.samples, self.batch_size, self.crop = samples, batch_size, crop
        self.seed, self.epochs, self.em = seed, list(epochs), augmentation == "em"
        self.per_epoch = len(samples) // batch_size
        self.orders = [np.random.default_rng([seed, epoch]).permutation(len(samples)) for epoch in self.epochs]

    def __len__(self):
        return len(self.epochs) * self.per_epoch

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        epoch, b = self.epochs[i // self.per_epoch], i % self.per_epoch
        order = self.orders[i // self.per_epoch]
        rng = np.random.default_rng([self.seed, epoch, b])
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        samples, crop, pairs = self.samples, self.crop, []
        for k in order[b * self.batch_size:(b + 1) * self.batch_size]:
            if self.em and len(samples) >= 4 and rng.random() < MOSAIC_P:
                others = rng.choice(np.delete(np.arange(len(samples)), k), 3, replace=False)
                pairs.append(mosaic([augment(samples[j], crop, rng) for j in (k, *others)]))
            else:
                pairs.append(augment(samples[k], crop, rng))
        images = colour_jitter(to_tensor(np.stack([p[0] for p in pairs])), JITTER, generator)
        if self.em:
            images = em_degrade(images, generator)
        instances = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        return images, instances


def run_batches(samples, batch_size, crop, seed=0, epochs=(1,), augmentation="published", workers=0,
                pin_memory=False):
    """Iterate over :class:`RunBatches`: in this process (``workers`` 0, the CPU default: on
    2 cores the network needs both), or in ``workers`` processes started once for the whole run
    (a GPU run, where one process cannot augment 512-px images as fast as the GPU trains)."""
    batches = RunBatches(samples, batch_size, crop, seed, epochs, augmentation)
    if not workers:
        return (batches[i] for i in range(len(batches)))
    return iter(torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                                            pin_memory=pin_memory, prefetch_factor=4))


def freeze_batch_norm(model: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode (dropout stays on): they normalise with
    their running statistics and stop updating them, as the published BPartIS fine-tune does; their
    scale and shift still learn."""
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.eval()


def train_one_epoch(model, loader, optimizer, loss_fn, device, total=None, bf16=True, freeze_bn=False):
    """One pass over ``loader``; returns the mean loss and its three terms.

    The forward pass runs under bfloat16 autocast (AMX on recent Xeons, tensor cores on GPUs) with
    channels-last tensors; the loss and the optimiser work in float32. ``freeze_bn``: batch-norm
    layers keep their running statistics (:func:`freeze_batch_norm`).
    """
    model.train()
    if freeze_bn:
        freeze_batch_norm(model)
    sums, n = np.zeros(4), 0
    device_type = torch.device(device).type
    for images, instances in tqdm(loader, total=total, desc="train", leave=False):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            output = model(images)
        loss, terms = loss_fn(output, instances.to(device, non_blocking=True), return_terms=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += np.array([loss.item(), *terms.tolist()])
        n += 1
    return sums / max(n, 1)


@torch.no_grad()
def validation_loss(model, samples, loss_fn, device, batch_size=4):
    """Mean loss over whole 512 x 512 validation images, dropout off."""
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        images = to_tensor(np.stack([s.image for s in chunk])).to(device)
        images = images.contiguous(memory_format=torch.channels_last)
        instances = torch.from_numpy(np.stack([s.instances for s in chunk]).astype(np.int64))
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            output = model(images)
        total += loss_fn(output, instances.to(device)).item() * len(chunk)
        n += len(chunk)
    return total / max(n, 1)


def plot_log(log_path: Path, png_path: Path, snapshot_metrics: Path | None = None) -> None:
    """Loss (train, validation) and validation AP50 / mean IoU against epoch.

    ``snapshot_metrics``: optional CSV (epoch, AP, AP50, mean_IoU, coco_AP) of snapshots evaluated
    after training (``idx evaluate --split val``), plotted when the log has no validation AP.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(log_path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(table["epoch"], table["train_loss"], label="train")
    val = table.dropna(subset=["val_loss"])
    axes[0].plot(val["epoch"], val["val_loss"], "o-", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", yscale="log")
    axes[0].legend()
    ap = table.dropna(subset=["val_ap50"])
    if len(ap):
        axes[1].plot(ap["epoch"], ap["val_ap50"], "o-", label="AP50")
        axes[1].plot(ap["epoch"], ap["val_miou"], "s-", label="mean IoU")
        axes[1].plot(ap["epoch"], ap["val_ap"], "^-", label="AP")
    elif snapshot_metrics is not None:
        snap = pd.read_csv(snapshot_metrics)
        for column, style in (("AP50", "o-"), ("mean_IoU", "s-"), ("AP", "^-"), ("coco_AP", "d-")):
            axes[1].plot(snap["epoch"], snap[column], style, label=f"{column} (snapshots)")
    axes[1].set(xlabel="epoch", ylabel="validation (T = 1)", ylim=(0, 1))
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


LOG_COLUMNS = ["epoch", "seconds", "lr", "train_loss", "instance", "seed", "smooth",
               "val_loss", "val_ap", "val_ap50", "val_miou"]


def validation_metrics(model, stems, data_dir, device):
    """Published-protocol AP / AP50 / mean IoU on validation images with T = 1 (fast)."""
    from models.evaluate import evaluate_segmenter

    segmenter = ParticleSegmenter(model=model, device=device, mc_samples=1, filter=False)
    summary = evaluate_segmenter(segmenter, data_dir, stems, progress=False)
    return summary["AP"], summary["AP50"], summary["mean_IoU"]


# settings a resumed run keeps: the value of checkpoints saved before each existed, and the warning
# given when another value is asked for (the stored value, the asked one)
KEPT_SETTINGS = {
    "augmentation": ("published", "%s was trained with augmentation %r: it goes on with it, not %r (a new "
                                  "--out starts a new run)"),
    "freeze_bn": (False, "%s was trained with freeze_bn=%s: it goes on with it (not %s)"),
    "image_size": (EVAL_SIZE, "%s was trained on images resized to %d px: it goes on with them, not %d"),
}


def _kept_setting(state: dict, last: Path, key: str, asked):
    """The value of ``key`` that the run saved in ``last`` was started with (a warning if ``asked``
    differs)."""
    default, warning = KEPT_SETTINGS[key]
    stored = state.get(key, default)
    if stored != asked:
        log.warning(warning, last, stored, asked)
    return stored


def read_run_state(path: Path, remedy: str = "delete it to start the run again, or copy the run's "
                                              "last.pt back") -> dict:
    """The resumable state a run saved at ``path`` (its ``last.pt``: model, optimiser, epoch and the
    settings it was started with); an unreadable file, or one that holds only weights, is a one-line
    :class:`IdxError` ending in ``remedy``."""
    state = read_checkpoint(path, remedy)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch"} <= set(state):
        raise IdxError(f"{path}: not a resumable training checkpoint (no model, optimizer and epoch; a weights "
                       f"file?); {remedy}")
    return state


def train(data_dir, out_dir, epochs, batch_size=BATCH_SIZE, crop=CROP, lr=LEARNING_RATE, device=DEVICE,
          eval_every=EVAL_EVERY, seed=0, threads=None, bf16=True, init=None, schedule=SCHEDULES[0],
          snapshot_every=SNAPSHOT_EVERY, augmentation=AUGMENTATIONS[0], workers=WORKERS, freeze_bn=False,
          image_size=IMAGE_SIZE):
    """Train (or resume) a BPartIS model; writes ``last.pt``, ``best.pt``, ``log.csv``, ``loss.png``.

    ``out_dir/last.pt`` (model, optimiser, epoch) is resumed when present; otherwise ``init``
    (a state dict, e.g. the shipped weights) warm-starts the model with a fresh optimiser.
    ``schedule``: "poly" (power 0.9 over ``epochs``) or "constant" (for weight averaging, with
    ``snapshot_every=1``; see :mod:`models.average`). ``augmentation``: "published" or "em"
    (:class:`RunBatches`); a resumed run keeps the one it was started with. ``workers``:
    processes that make the batches (0: this one; see :func:`run_batches`). ``freeze_bn``: batch-norm
    layers keep the running statistics they start with (for warm starts, as the published fine-tune
    does); a resumed run keeps its setting. ``image_size``: the side the training images are resized
    to before the crops (512: the inference scale; 256 with ``crop=256``: whole micrographs as
    published); a resumed run keeps it. Validation always runs at the inference size, 512.
    """
    _check_choice("learning-rate schedule", schedule, SCHEDULES)
    _check_choice("augmentation", augmentation, AUGMENTATIONS)  # before minutes of loading
    for name, value, ok, rule in (("--epochs", epochs, epochs >= 1, "at least 1"),
                                  ("--batch-size", batch_size, batch_size >= 1, "at least 1"),
                                  ("--crop", crop, crop >= 16 and crop % 8 == 0,
                                   "a multiple of 8 from 16 up (the encoder halves it 3 times)"),
                                  ("--lr", lr, math.isfinite(lr) and lr > 0, "a finite number above 0"),
                                  ("--workers", workers, workers >= 0, "0 or more"),
                                  ("--threads", threads, threads is None or threads >= 1, "at least 1"),
                                  ("--eval-every", eval_every, eval_every >= 0, "0 (never) or more"),
                                  ("--snapshot-every", snapshot_every, snapshot_every >= 0,
                                   "0 (never) or more"),
                                  ("--image-size", image_size, image_size >= crop,
                                   f"at least --crop ({crop})")):
        if not ok:
            raise IdxError(f"{name} {value}: must be {rule}")
    if freeze_bn and not init and not (Path(out_dir) / "last.pt").exists():
        raise IdxError("--freeze-bn keeps the batch-norm statistics of a trained network: give its weights "
                       "with --init (or resume a run that has last.pt)")
    if threads:
        torch.set_num_threads(threads)
    device = usable_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its kernels once
    fit_stems, val_stems = read_split(data_dir, "fit"), read_split(data_dir, "val")
    if len(fit_stems) < batch_size:
        raise IdxError(f"--batch-size {batch_size}: more than the {len(fit_stems)} training images of "
                       f"{data_dir}; give a smaller batch")
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    state = read_run_state(last) if last.exists() else None
    if state is not None:  # a resumed run keeps the settings it was started with
        augmentation, freeze_bn, image_size = (
            _kept_setting(state, last, "augmentation", augmentation),
            _kept_setting(state, last, "freeze_bn", freeze_bn),
            _kept_setting(state, last, "image_size", image_size))
    (out_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    log.info("loading %d training and %d validation images", len(fit_stems), len(val_stems))
    fit = [load_sample(data_dir, s, image_size) for s in tqdm(fit_stems, desc="load", leave=False)]
    val = [load_sample(data_dir, s, EVAL_SIZE) for s in val_stems]

    torch.manual_seed(seed)
    model = BPartIS().to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = SpatialEmbeddingLoss()
    start_epoch, best = 0, -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"], state.get("best", -1.0)
        log.info("resumed from %s at epoch %d", last, start_epoch)
        if start_epoch >= epochs:
            log.warning("%s is already at epoch %d of %d: nothing to train; raise --epochs to go on",
                        last, start_epoch, epochs)
    elif init:
        model.load_state_dict(load_weights(init))
        log.info("warm start from %s", init)
    log_path = out_dir / "log.csv"
    if not log_path.exists():
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_COLUMNS)

    n_batches = len(fit) // batch_size
    batches = run_batches(fit, batch_size, crop, seed, range(start_epoch + 1, epochs + 1), augmentation,
                          workers, pin_memory=device.type == "cuda")
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.time()
        epoch_lr = lr * (1 - (epoch - 1) / epochs) ** 0.9 if schedule == "poly" else lr
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        train_terms = train_one_epoch(model, itertools.islice(batches, n_batches), optimizer, loss_fn,
                                      device, total=n_batches, bf16=bf16, freeze_bn=freeze_bn)
        if not math.isfinite(train_terms[0]):  # before anything is saved: last.pt stays resumable
            raise IdxError(f"training diverged at epoch {epoch} (loss {train_terms[0]}); {last} still "
                           f"holds epoch {epoch - 1}: resume with a lower --lr (this run: {lr:g})"
                           if epoch > 1 else f"training diverged at epoch 1 (loss {train_terms[0]}); "
                           f"nothing was saved: start again with a lower --lr (this run: {lr:g})")
        row = {"epoch": epoch, "lr": epoch_lr, "train_loss": train_terms[0],
               "instance": train_terms[1], "seed": train_terms[2], "smooth": train_terms[3]}
        if epoch % VAL_LOSS_EVERY == 0 or epoch == epochs:
            row["val_loss"] = validation_loss(model, val, loss_fn, device)
        if eval_every and (epoch % eval_every == 0 or epoch == epochs):
            row["val_ap"], row["val_ap50"], row["val_miou"] = validation_metrics(
                model, val_stems, data_dir, device)
            if row["val_ap50"] + row["val_miou"] > best:
                best = row["val_ap50"] + row["val_miou"]
                torch.save(model.state_dict(), out_dir / "best.pt")
        row["seconds"] = round(time.time() - t0, 1)
        with open(log_path, "a", newline="") as fh:
            csv.writer(fh).writerow([row.get(c, "") for c in LOG_COLUMNS])
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "best": best, "epochs": epochs, "crop": crop,
                 "batch_size": batch_size, "lr": lr, "bf16": bf16, "schedule": schedule,
                 "augmentation": augmentation, "freeze_bn": freeze_bn, "image_size": image_size}
        torch.save(state, out_dir / "last.tmp")
        (out_dir / "last.tmp").replace(last)
        if snapshot_every and (epoch % snapshot_every == 0 or epoch == epochs):  # and the last
            torch.save(model.state_dict(), out_dir / "snapshots" / f"epoch{epoch:04d}.pt")
        if "val_loss" in row:  # every VAL_LOSS_EVERY epochs and at the end (a GPU epoch takes seconds)
            plot_log(log_path, out_dir / "loss.png")
        log.info("epoch %d: %s", epoch, {k: (round(v, 4) if isinstance(v, float) else v)
                                         for k, v in row.items()})
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m models.train`` options (their defaults are :mod:`models.train_defaults`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default=str(default_emps_dir()), help="EMPS folder")
    parser.add_argument("--out", default=OUT, help="run folder (resumes if it has last.pt)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--crop", type=int, default=CROP, help="training crop side, px of the training image")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                        help="side the training images are resized to before cropping (512: the inference "
                             "scale; 256 with --crop 256: whole micrographs, as published)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE)
    parser.add_argument("--device", default=DEVICE)
    parser.add_argument("--eval-every", type=int, default=EVAL_EVERY, help="validation AP every N epochs (0: never)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--fp32", action="store_true", help="no bfloat16 autocast in training")
    parser.add_argument("--init", default=None, help="warm-start from these weights (new run folder)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=SCHEDULES[0],
                        help="learning rate: poly decay over --epochs, or constant (weight averaging)")
    parser.add_argument("--snapshot-every", type=int, default=SNAPSHOT_EVERY,
                        help="keep the weights every N epochs and at the last in snapshots/ (0: never)")
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=AUGMENTATIONS[0],
                        help="published: the paper's flips, turns, crops and colour jitter; em: also "
                             "mosaics of half-size images, gamma, blur and noise")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help="processes making the augmented batches (0: this one; a GPU wants several)")
    parser.add_argument("--freeze-bn", action="store_true",
                        help="batch-norm layers keep their running statistics (for a warm start with --init, "
                             "as the published fine-tune does)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train(args.data, args.out, args.epochs, args.batch_size, args.crop, args.lr, args.device,
          args.eval_every, threads=args.threads, bf16=not args.fp32, init=args.init,
          schedule=args.schedule, snapshot_every=args.snapshot_every, augmentation=args.augment,
          workers=args.workers, freeze_bn=args.freeze_bn, image_size=args.image_size)


if __name__ == "__main__":
    run_module(main)
