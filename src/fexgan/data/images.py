"""The one preprocessing path, used by training, inference, evaluation and the web demo alike:
decode -> RGBA -> composite over the background colour -> pad to a square -> resize -> uint8 RGB.
Models see `to_model_input(uint8)` = x / 127.5 - 1 in [-1, 1].
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from fexgan.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
MIN_IMAGE_SIDE = 16
Background = tuple[int, int, int]


# ----------------------------------------------------------------------------- preprocessing
def open_image(source: str | Path | Image.Image | bytes) -> Image.Image:
    """Decode a file, bytes or PIL image into RGBA (any mode: palette, grayscale, 16-bit, EXIF-rotated)."""
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            import io

            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            img.load()
        except FileNotFoundError:
            raise UserError(f"image {source} does not exist") from None
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
            name = "the uploaded data" if isinstance(source, bytes) else str(source)
            raise UserError(f"cannot read {name} as an image ({err.__class__.__name__}: {err})") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGBA")


def check_image_size(img: Image.Image) -> Image.Image:
    """The image, or a UserError when a side is under MIN_IMAGE_SIDE pixels."""
    w, h = img.size
    if min(w, h) < MIN_IMAGE_SIDE:
        raise UserError(f"image is {w}x{h} px; at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed")
    return img


def prepare_image(source: str | Path | Image.Image | bytes, size: int,
                  background: Background = (255, 255, 255)) -> np.ndarray:
    """The one preprocessing path: decode, composite alpha over `background`, pad to square, resize.

    Returns uint8 (size, size, 3).
    """
    img = check_image_size(open_image(source))
    w, h = img.size
    canvas = Image.new("RGBA", (max(w, h),) * 2, tuple(background) + (255,))
    canvas.alpha_composite(img, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    rgb = canvas.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(rgb, dtype=np.uint8)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model output in [-1, 1] (B, 3, H, W) -> uint8 (B, 3, H, W)."""
    return ((images.detach().float().clamp(-1, 1) + 1.0) * 127.5).round_().to(torch.uint8)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Model output in [-1, 1] (B, 3, H, W) -> list of RGB PIL images."""
    arr = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def from_pil(images: Sequence[Image.Image | str | Path | bytes], size: int,
             background: Background = (255, 255, 255)) -> torch.Tensor:
    """Images (any mode/size) -> model input (B, 3, size, size) in [-1, 1], via `prepare_image`."""
    arr = np.stack([prepare_image(im, size, background) for im in images])
    return to_model_input(torch.from_numpy(arr).permute(0, 3, 1, 2))


