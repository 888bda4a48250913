"""The only place that opens user images.

Everything (CLI, trainer, Space, explanations) goes through :func:`open_image`, so that a
painting is decoded the same way everywhere and every bad input ends in one error type.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ArtlensError

__all__ = ["ImageError", "open_image", "IMAGE_EXTENSIONS", "list_images", "judge_problem"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Decoding more pixels than this is refused (or, for JPEG, decoded at a reduced scale), so a
# 20000 x 20000 upload can neither blow up memory nor trip PIL's decompression-bomb error.
MAX_PIXELS = 64_000_000
# Images are shrunk (aspect kept) so that the longer side is at most this; every model here
# works at <= 512 px, and heat maps are returned at this size.
MAX_SIDE = 4096

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class ImageError(ArtlensError, ValueError):
    """A user-supplied image cannot be used; the message says why and what to do."""


# below these an image holds too little to say who made it (a 1x1 pixel, a single colour)
MIN_JUDGE_SIDE = 32
MIN_JUDGE_STD = 2.0


def judge_problem(img: Image.Image) -> str | None:
    """Why ``img`` cannot be judged human- or AI-made, or None: too small, or one flat colour."""
    w, h = img.size
    if min(w, h) < MIN_JUDGE_SIDE:
        return (f"too small to judge ({w}x{h} px): the detector needs at least {MIN_JUDGE_SIDE} px on the "
                "shorter side; upload the picture at a larger size")
    small = img.convert("RGB")
    if max(w, h) > 256:
        small = small.copy()
        small.thumbnail((256, 256))
    std = float(np.asarray(small, dtype=np.float32).reshape(-1, 3).std(0).max())
    if std < MIN_JUDGE_STD:
        return ("a single flat colour (no detail or texture to judge: pixel spread "
                f"{std:.1f} of 255); upload the picture itself")
    return None


def _fit(img: Image.Image, max_side: int | None) -> Image.Image:
    if max_side and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.BICUBIC)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: rescale to 8 bit instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white, like paper, rather than whatever colour they hide.
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {arr.shape} is not an image; pass HxW, HxWx3 or HxWx4")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max() <= 1.0 and arr.min() >= 0.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def open_image(src: ImageLike, max_side: int | None = MAX_SIDE, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a file path, bytes, PIL image or numpy array as an RGB ``PIL.Image``.

    Applies the EXIF orientation, takes the first frame of animations, converts CMYK, 16-bit,
    RGBA, palette and greyscale images to RGB, and limits the decoded size. Raises
    :class:`ImageError` with a message naming the problem for anything that is not a usable image.
    """
    if isinstance(src, Image.Image):
        img = src
        name = "image"
    elif isinstance(src, np.ndarray):
        return _fit(_to_rgb(_from_array(src)), max_side)
    else:
        if isinstance(src, (bytes, bytearray)):
            data, name = bytes(src), "image bytes"
        else:
            path = Path(src)
            name = str(path)
            if not path.exists():
                raise ImageError(f"{name}: no such file; check the path")
            if path.is_dir():
                raise ImageError(f"{name}: is a folder; pass image files, or a folder to commands that take one")
            data = path.read_bytes()
        if not data:
            raise ImageError(f"{name}: the file is empty (0 bytes); upload the image again")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                old = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None  # we enforce max_pixels ourselves, before decoding
                try:
                    img = Image.open(io.BytesIO(data))
                finally:
                    Image.MAX_IMAGE_PIXELS = old
        except UnidentifiedImageError:
            raise ImageError(
                f"{name}: not an image file PIL can read (is it a text or PDF file renamed?); "
                f"use JPEG, PNG, WebP, GIF, BMP or TIFF") from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file for the user
            raise ImageError(f"{name}: cannot be opened ({e}); re-save it as JPEG or PNG") from None

    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: has no pixels ({w}x{h})")
    if w * h > max_pixels:
        if getattr(img, "format", None) == "JPEG":
            # draft() makes libjpeg decode at 1/2, 1/4 or 1/8 scale: cheap and bounded. It keeps
            # the result at least as large as the request, so ask for the power-of-two reduction
            # that fits (asking for the exact fit gives 1/2 for 20000x20000, still too many pixels).
            k = 2
            while k < 8 and -(-w // k) * -(-h // k) > max_pixels:
                k *= 2
            img.draft("RGB", (w // k, h // k))
        if img.size[0] * img.size[1] > max_pixels:
            raise ImageError(
                f"{name}: {w}x{h} pixels is more than the {max_pixels:,} this tool decodes; "
                f"downscale it (or save it as JPEG, which is decoded at reduced scale)")
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        img.load()
    except Exception as e:  # noqa: BLE001
        # Truncated files: PIL raises OSError("image file is truncated"); be explicit.
        raise ImageError(f"{name}: the image data is corrupt or truncated ({e}); re-export or re-download it") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a good image unusable
        pass
    return _fit(_to_rgb(img), max_side)


def list_images(paths) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files."""
    out: list[Path] = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise ImageError(f"{p}: no such file or folder")
    return out


ImageFile.LOAD_TRUNCATED_IMAGES = False
