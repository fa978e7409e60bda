"""What a model output becomes before it is handed over: its size, and an alpha channel (a matte).

The networks see and draw RGB over the model's background colour; they predict no alpha. The
matte is made here, at the output's own resolution, from:
- `input`: the input's alpha (its silhouette), padded and scaled exactly as the face was, so every
  pixel that was fully transparent in the input is fully transparent in the output. Edge pixels
  (partly transparent) get their colour back from the model's output by un-compositing it from
  the background colour.
- `outline`: the input's alpha, plus the pixels near the silhouette (within 1/16 of the image)
  that the model drew away from the background colour: what an expression adds to the outline,
  such as an opened jaw. Background there may turn opaque where the model drew noise.
- `key`: the model's output alone: the pixels close to the background colour that connect to the
  image's border are transparent (closed regions, like the whites of the eyes, stay opaque), with a
  soft edge. The only choice for the decoder drawing alone (`sample`). Wrong where the face itself
  touches the border in the background colour, and, for a weak model, where it leaves noise.
- `auto` (the default): `input` when the input has any pixel that is not fully opaque, else none.
- `none`: RGB over the background colour, as the model drew it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from fexgan.errors import UserError

MATTES = ("auto", "input", "outline", "key", "none")
MIN_SIZE, MAX_SIZE = 16, 4096
KEY_LOW, KEY_HIGH = 16, 48      # distance from the background colour (largest channel difference, 0-255):
                                # at most KEY_LOW is background, from KEY_HIGH on it is the face
OUTLINE_REACH = 1 / 16          # how far outside the input's silhouette `outline` may add opaque pixels
Background = tuple[int, int, int]


def check_matte(matte: str, has_input: bool = True) -> str:
    """A known matte name; without an input image only `key` (and `none`/`auto`) make sense."""
    if matte not in MATTES:
        raise UserError(f"unknown matte '{matte}'; choose one of: {', '.join(MATTES)}")
    if not has_input and matte in ("input", "outline"):
        raise UserError(f"the decoder draws alone here, so there is no input silhouette for --matte {matte}; "
                        f"use --matte key (a matte from the background colour) or none")
    return matte


def check_size(size: int | None, keep_size: bool = False) -> int | None:
    """An output side in pixels (None: the model's size); not together with keep_size."""
    if size is None:
        return None
    if keep_size:
        raise UserError("give either --size (a square output of that side) or --keep-size (each input's size), not both")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}")
    return size


def upscale_note(model_size: int, sides: Sequence[int]) -> str | None:
    """A plain line when outputs are larger than what the model draws, else None."""
    largest = max(sides, default=model_size)
    if largest <= model_size:
        return None
    return (f"outputs are upscaled from the model's {model_size} px to {largest} px: larger, not more detailed "
            f"(a model trained at a larger size draws more detail)")


def has_transparency(image: Image.Image) -> bool:
    """Whether an image has any pixel that is not fully opaque."""
    return image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255


def resolve(matte: str, original: Image.Image | None) -> str:
    """The matte actually made: `auto` becomes `input` for an input with transparency, else `none`."""
    check_matte(matte, original is not None)
    if matte == "auto":
        return "input" if original is not None and has_transparency(original) else "none"
    return matte


def geometry(original: tuple[int, int] | None, model_size: int, size: int | None,
             keep_size: bool) -> tuple[int, tuple[int, int, int, int]]:
    """(side of the square the output is scaled to, the box cropped from it): the model's size, a
    square of `size`, or (keep_size) the input's padded square cropped back to the input's size."""
    if keep_size and original is not None:
        w, h = original
        side = max(w, h)
        left, top = (side - w) // 2, (side - h) // 2
        return side, (left, top, left + w, top + h)
    side = size or model_size
    return side, (0, 0, side, side)


def _fit(image: Image.Image, side: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Scale to side x side (Lanczos), then crop to box."""
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.LANCZOS)
    return image if box == (0, 0, side, side) else image.crop(box)


def _fit_alpha(alpha: Image.Image, side: int, box: tuple[int, int, int, int]) -> Image.Image:
    """Scale a matte without ringing: a box filter down, bilinear up, so a pixel whose
    neighbourhood was fully transparent stays exactly 0."""
    if alpha.size != (side, side):
        filt = Image.Resampling.BOX if side < alpha.width else Image.Resampling.BILINEAR
        alpha = alpha.resize((side, side), filt)
    return alpha if box == (0, 0, side, side) else alpha.crop(box)


def square_alpha(original: Image.Image) -> Image.Image:
    """The input's alpha padded to a square with transparency, centred as `prepare_image` pads."""
    alpha = original.convert("RGBA").getchannel("A")
    w, h = alpha.size
    side = max(w, h)
    square = Image.new("L", (side, side), 0)
    square.paste(alpha, ((side - w) // 2, (side - h) // 2))
    return square


def _border_connected(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` joined to the image border through `mask` (4-neighbours)."""
    reached = np.zeros_like(mask)
    reached[0], reached[-1], reached[:, 0], reached[:, -1] = mask[0], mask[-1], mask[:, 0], mask[:, -1]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def key_alpha(face: Image.Image, background: Background) -> np.ndarray:
    """A matte (float, 0-1) from the background colour: near-background pixels joined to the border
    are transparent, with a soft ramp from KEY_LOW to KEY_HIGH; everything else is opaque."""
    pixels = np.asarray(face.convert("RGB"), dtype=np.int16)
    distance = np.abs(pixels - np.array(background, dtype=np.int16)).max(axis=2)
    soft = np.clip((distance - KEY_LOW) / (KEY_HIGH - KEY_LOW), 0.0, 1.0)
    return np.where(_border_connected(distance < KEY_HIGH), soft, 1.0)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` grown by `steps` pixels (8-neighbours)."""
    grown = mask.copy()
    for _ in range(steps):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= step[:, :-1].copy()
        step[:, :-1] |= step[:, 1:].copy()
        grown = step
    return grown


def _model_matte(face: Image.Image, original: Image.Image | None, matte: str, background: Background) -> Image.Image:
    """The part of the matte that comes from the model's output, at the model's size (`key`, and
    `outline`'s additions near the silhouette)."""
    alpha = key_alpha(face, background)
    if matte == "outline":
        silhouette = np.asarray(_fit_alpha(square_alpha(original), face.width, (0, 0, face.width, face.width))) > 0
        alpha = alpha * _dilate(silhouette, max(1, round(face.width * OUTLINE_REACH)))
    return Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L")


def uncomposite(rgb: Image.Image, alpha: Image.Image, background: Background) -> Image.Image:
    """RGBA from a face drawn over `background` and its matte: partly transparent pixels get the colour
    that, composited over the background with that alpha, gives what the model drew."""
    c = np.asarray(rgb.convert("RGB"), dtype=np.float32)
    a = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    bg = np.array(background, dtype=np.float32)
    colour = np.where((a > 0) & (a < 1), (c - (1 - a) * bg) / np.maximum(a, 1e-6), c)
    rgba = np.dstack([np.clip(np.round(colour), 0, 255).astype(np.uint8), np.asarray(alpha, dtype=np.uint8)])
    return Image.fromarray(rgba, "RGBA")


def _alpha(face: Image.Image, original: Image.Image | None, kind: str, background: Background, side: int,
           box: tuple[int, int, int, int]) -> Image.Image:
    """The matte of one output (`kind` input | outline | key) at the output's geometry."""
    silhouette = _fit_alpha(square_alpha(original), side, box) if kind in ("input", "outline") else None
    if kind == "input":
        return silhouette
    drawn = _fit_alpha(_model_matte(face, original, kind, background), side, box)
    return drawn if silhouette is None else Image.fromarray(np.maximum(np.asarray(silhouette), np.asarray(drawn)))


def finish(faces: Sequence[Image.Image], original: Image.Image | None, background: Background, matte: str = "auto",
           size: int | None = None, keep_size: bool = False) -> list[Image.Image]:
    """Model outputs of one input (RGB at the model's size) -> what the user gets: scaled (the model's
    size, a square of `size`, or the input's size with keep_size) and, as `matte` says, with alpha."""
    kind = resolve(matte, original)
    side, box = geometry(original.size if original is not None else None, faces[0].width, size, keep_size)
    results = [_fit(face, side, box) for face in faces]
    if kind == "none":
        return results
    return [uncomposite(result, _alpha(face, original, kind, background, side, box), background)
            for face, result in zip(faces, results)]


def finish_between(faces: Sequence[Image.Image], a: Image.Image, b: Image.Image, weights: Sequence[float],
                   background: Background, matte: str = "auto", size: int | None = None) -> list[Image.Image]:
    """`finish` for frames moving from face a to face b: each frame's matte is a's and b's blended by
    its weight (0: a's, 1: b's), so what is clear in both stays clear throughout."""
    kind = resolve(matte, a if has_transparency(a) or not has_transparency(b) else b)
    side, box = geometry(None, faces[0].width, size, False)
    results = [_fit(face, side, box) for face in faces]
    if kind == "none":
        return results
    out = []
    for face, result, t in zip(faces, results, weights):
        pa, pb = (np.asarray(_alpha(face, im, kind, background, side, box), dtype=np.float32) for im in (a, b))
        out.append(uncomposite(result, Image.fromarray(np.round(pa * (1 - t) + pb * t).astype(np.uint8)), background))
    return out
