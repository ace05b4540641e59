"""Load images from disk or bytes into plain uint8 arrays, refusing bad input politely.

Every stage of idx works on the arrays returned here: ``(H, W)`` greyscale or ``(H, W, 3)``
RGB, dtype uint8. 16-bit, palette, CMYK, alpha and greyscale-with-alpha files are converted.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from idx.errors import ImageError

log = logging.getLogger(__name__)

MAX_PIXELS = int(os.environ.get("IDX_MAX_PIXELS", "60000000"))  # ~7700 x 7700
MIN_SIDE_PX = 8


def load_image(source: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file into a uint8 array.

    Parameters
    ----------
    source : path or bytes
        Image file (PNG, JPEG, TIFF, GIF, BMP, ...) or its bytes.
    max_pixels : int
        Refuse images with more pixels than this (set ``IDX_MAX_PIXELS`` to change the default).

    Returns
    -------
    ndarray of uint8, shape (H, W) or (H, W, 3)
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such file; check the path")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image file")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: file is empty (0 bytes); re-download or re-export it")
        data = path.read_bytes()
    else:
        data = bytes(source)
        if not data:
            raise ImageError("image bytes are empty")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{name}: {width}x{height} pixels is over the limit of {max_pixels}; "
                    "downscale it or raise IDX_MAX_PIXELS / max_pixels"
                )
            img.load()
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image file PIL can read (PNG, JPEG, TIFF, ...)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: corrupt or truncated image ({exc}); re-export it") from None
    if min(img.size) < MIN_SIDE_PX:
        raise ImageError(f"{name}: {img.size[0]}x{img.size[1]} pixels is too small to analyse "
                         f"(need at least {MIN_SIDE_PX} px a side)")
    return pil_to_array(img)


def pil_to_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to a uint8 ``(H, W)`` or ``(H, W, 3)`` array."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return as_uint8(np.asarray(img))
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode == "L":
        return np.asarray(img)
    if mode in ("LA", "PA", "RGBA", "P") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    else:
        rgb = np.asarray(img.convert("RGB"))
    if _is_grey(rgb):
        return np.ascontiguousarray(rgb[..., 0])
    return rgb


def as_uint8(array: np.ndarray) -> np.ndarray:
    """Bring any numeric image array to uint8 ``(H, W)`` or ``(H, W, 3)``.

    uint8 is kept; float images with values in [0, 1] are scaled by 255 and those in [0, 255]
    are read as 8-bit grey levels (``np.asarray(image, float)`` of an 8-bit image gives the same
    uint8 back); other float images and integer images wider than 8 bits (16-bit micrographs,
    which often use a fraction of their range) are stretched from their minimum to their maximum.
    RGBA drops alpha. The input is never changed.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.size == 0:
        raise ImageError("image array is empty")
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if np.issubdtype(np.asarray(array).dtype, np.floating) and lo >= 0.0 and hi <= 255.0:
        lo, hi = (0.0, 1.0) if hi <= 1.0 else (0.0, 255.0)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255).astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` luminance of an image array of any supported layout."""
    a = as_uint8(image)
    if a.ndim == 2:
        return a
    return np.round(a @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` copy of an image array of any supported layout."""
    a = as_uint8(image)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    return a


def _is_grey(rgb: np.ndarray) -> bool:
    step = max(1, rgb.shape[0] // 256)
    sample = rgb[::step].astype(np.int16)
    return bool(np.abs(sample[..., 0] - sample[..., 1]).max() <= 2
                and np.abs(sample[..., 0] - sample[..., 2]).max() <= 2)
