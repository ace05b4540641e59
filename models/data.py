"""EMPS data: the published train/test split, a DOI-grouped validation split, augmentation."""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from idx.errors import IdxError

EVAL_SIZE = 512  # images and instance maps are brought to 512 x 512, as in the published protocol
VALIDATION_FRACTION = 0.15
SPLIT_SEED = 0


def default_emps_dir() -> Path:
    """``../shared/data/emps`` beside the checkout (where developers and CI have it)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "emps"


def read_split(data_dir: str | Path, split: str) -> list[str]:
    """File stems of ``split``: 'train' / 'test' (published), 'fit' / 'val' (train grouped by DOI).

    The validation split holds whole articles (DOIs) drawn with a fixed seed, so one article
    never sits on both sides.
    """
    data_dir = Path(data_dir)
    if split in ("train", "test"):
        path = data_dir / f"{split}.csv"
        if not path.exists():
            raise IdxError(f"{path}: split file missing; --data must be an EMPS folder "
                           "with train.csv, test.csv, images/ and segmaps/")
        return [s.strip() for s in path.read_text().split() if s.strip()]
    if split not in ("fit", "val"):
        raise IdxError(f"unknown split {split!r}; use train, test, fit or val")
    train = read_split(data_dir, "train")
    doi = read_dois(data_dir)
    dois = sorted({doi[s] for s in train})
    rng = random.Random(SPLIT_SEED)
    rng.shuffle(dois)
    n_val_target = int(round(VALIDATION_FRACTION * len(train)))
    val_dois, n_val = set(), 0
    for d in dois:
        if n_val >= n_val_target:
            break
        val_dois.add(d)
        n_val += sum(1 for s in train if doi[s] == d)
    return [s for s in train if (doi[s] in val_dois) == (split == "val")]


def read_dois(data_dir: str | Path) -> dict[str, str]:
    """``{stem: source article DOI}`` from EMPS ``metadata.csv``."""
    with open(Path(data_dir) / "metadata.csv", newline="") as fh:
        return {row["filename"].rsplit(".", 1)[0]: row["doi"] for row in csv.DictReader(fh)}


def article_groups(data_dir: str | Path, stems) -> list[str]:
    """The source article (DOI, from ``metadata.csv``) of each of ``stems``; a stem without one,
    or a folder without ``metadata.csv``, counts each image as its own article."""
    path = Path(data_dir) / "metadata.csv"
    dois = read_dois(data_dir) if path.is_file() else {}
    return [dois.get(stem, stem) for stem in stems]


@dataclass
class Sample:
    stem: str
    image: np.ndarray  # (S, S, 3) uint8
    instances: np.ndarray  # (S, S) int32, 0 = background, 1..K


def load_sample(data_dir: str | Path, stem: str, size: int = EVAL_SIZE) -> Sample:
    """One EMPS image and its instance map resized to ``size`` x ``size`` (nearest for labels)."""
    data_dir = Path(data_dir)
    image = Image.open(data_dir / "images" / f"{stem}.png").convert("RGB")
    labels = np.asarray(Image.open(data_dir / "segmaps" / f"{stem}.png")).astype(np.int32)
    image = np.asarray(image.resize((size, size), Image.BICUBIC))
    labels = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))
    return Sample(stem, image, relabel(labels))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Number the instances of ``labels`` 1..K consecutively (0 stays background)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:
        inverse += 1
    return inverse


def augment(sample: Sample, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips, 90-degree rotations and a random crop (half of the time a half-size crop
    scaled back up: bicubic for the image, nearest for the instance map).

    Returns ``(crop, crop, 3)`` uint8 and ``(crop, crop)`` int32 consecutively numbered.
    """
    image, labels = sample.image, sample.instances
    h, w = labels.shape
    win = crop // 2 if rng.random() < 0.5 else crop
    win = min(win, h, w)
    r, c = rng.integers(0, h - win + 1), rng.integers(0, w - win + 1)
    image, labels = image[r:r + win, c:c + win], labels[r:r + win, c:c + win]
    if win != crop:
        image = np.asarray(Image.fromarray(image).resize((crop, crop), Image.BICUBIC))
        labels = np.asarray(Image.fromarray(labels).resize((crop, crop), Image.NEAREST))
    k = int(rng.integers(4))
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if rng.random() < 0.5:
        image, labels = image[::-1], labels[::-1]
    return np.ascontiguousarray(image), relabel(np.ascontiguousarray(labels))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def colour_jitter(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of ``(B, 3, H, W)`` in [0, 1], each ±strength."""
    b = x.shape[0]

    def factor():
        return 1.0 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * strength

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - grey) * factor() + grey
    # hue: rotate chroma in YIQ space by up to ±strength * 180 degrees
    theta = (torch.rand(b, generator=generator) * 2 - 1) * strength * np.pi
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    cos, sin = torch.cos(theta).view(b, 1, 1), torch.sin(theta).view(b, 1, 1)
    i, q = yiq[:, 1] * cos - yiq[:, 2] * sin, yiq[:, 1] * sin + yiq[:, 2] * cos
    yiq = torch.stack([yiq[:, 0], i, q], 1)
    x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
    return x.clamp(0.0, 1.0)


# "em" augmentation (beyond the published set): the ways micrographs of different articles differ
MOSAIC_P = 0.25  # a training image is 2 x 2 other images at half size (smaller particles, more scenes)
GAMMA_P, GAMMA_RANGE = 0.3, (0.67, 1.5)
BLUR_P, BLUR_SIGMA = 0.3, (0.5, 1.5)  # px of the training crop (focus, compression)
NOISE_P, NOISE_STD = 0.3, (0.01, 0.06)  # Gaussian shot-like noise, in [0, 1] grey units


def mosaic(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Four ``(image (c, c, 3), labels (c, c))`` pairs as one ``(c, c)`` pair: each shrunk to half
    size (area average for the image, nearest for the labels) in one quadrant, labels renumbered."""
    crop = pairs[0][1].shape[0]
    half = crop // 2
    image = np.zeros((crop, crop, 3), np.uint8)
    labels = np.zeros((crop, crop), np.int32)
    offset = 0
    for k, (im, lab) in enumerate(pairs[:4]):
        r, c = (k // 2) * half, (k % 2) * half
        image[r:r + half, c:c + half] = np.asarray(Image.fromarray(im).resize((half, half), Image.BOX))
        small = np.asarray(Image.fromarray(lab.astype(np.int32)).resize((half, half), Image.NEAREST))
        labels[r:r + half, c:c + half] = np.where(small > 0, small + offset, 0)
        offset += int(lab.max())
    return image, relabel(labels)


def em_degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per image of ``(B, 3, H, W)`` in [0, 1], each with its own chance: a gamma curve, a Gaussian
    blur, additive Gaussian noise (in that order, as a detector would add noise after the optics)."""
    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(1, generator=generator).item()

    def chance(p):
        return uniform(0.0, 1.0) < p

    out = []
    for image in x:
        if chance(GAMMA_P):
            image = image.clamp_min(0).pow(uniform(*GAMMA_RANGE))
        if chance(BLUR_P):
            sigma = uniform(*BLUR_SIGMA)
            radius = int(np.ceil(3 * sigma))
            t = torch.arange(-radius, radius + 1, dtype=image.dtype)
            kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
            kernel = kernel / kernel.sum()
            padded = torch.nn.functional.pad(image[None], (radius, radius, radius, radius), mode="reflect")
            image = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
            image = torch.nn.functional.conv2d(image, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
        if chance(NOISE_P):
            noise = torch.randn(image.shape[1:], generator=generator, dtype=image.dtype)
            image = image + uniform(*NOISE_STD) * noise  # the same noise in each channel (grey)
        out.append(image.clamp(0.0, 1.0))
    return torch.stack(out)
