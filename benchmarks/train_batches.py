"""How fast augmented training batches are made, per augmentation and number of worker processes.

A GPU trains BPartIS on 512-px crops faster than one process can augment them; this table says
how many ``--workers`` a run needs (images/s per process x workers >= the GPU's images/s).

    python -m benchmarks.train_batches --images 64 --workers 0,2
"""
from __future__ import annotations

import argparse
import time

import torch

from models.data import default_emps_dir, load_sample, read_split
from models.train import run_batches
from models.train_defaults import AUGMENTATIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_emps_dir()), help="EMPS folder (packed or not)")
    parser.add_argument("--images", type=int, default=64, help="fit images to load")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0", help="comma-separated worker counts to time")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of batches timed per row")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    samples = [load_sample(args.data, s) for s in read_split(args.data, "fit")[:args.images]]
    print(f"{len(samples)} images, crop {args.crop}, batch {args.batch_size}, {args.epochs} epochs per row")
    print("| augmentation | workers | batches | seconds | images/s |")
    print("|---|---|---|---|---|")
    for augmentation in AUGMENTATIONS:
        for workers in map(int, args.workers.split(",")):
            start, n = time.perf_counter(), 0
            for images, _ in run_batches(samples, args.batch_size, args.crop, epochs=range(1, args.epochs + 1),
                                         augmentation=augmentation, workers=workers):
                n += len(images)
            seconds = time.perf_counter() - start
            print(f"| {augmentation} | {workers} | {n // args.batch_size} | {seconds:.2f} | {n / seconds:.1f} |")


if __name__ == "__main__":
    main()
