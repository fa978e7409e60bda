"""Files animation tools read as they are: GIF, APNG and WebP animations that hold every frame they
are given, sprite sheets with a TexturePacker-style JSON of their cells, numbered PNG frames.

Pillow (and libwebp under it) drop a frame identical to the one before and add its time to that
one, so a model that draws the same face twice gave fewer frames than asked for. Here:
- GIF: every frame is written by Pillow's GIF frame writer (`getheader`/`getdata`), never merged;
- APNG: consecutive frames alternate between two dispose operations that look the same (every
  frame covers the whole canvas and replaces it), which Pillow does not merge;
- WebP (lossless): a frame equal to the one before gets one pixel changed by one level (in a
  fully transparent pixel when there is one, where it cannot be seen), which libwebp does not merge.
Files are written whole or not at all (a temporary file, then a rename).
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import GifImagePlugin, Image, PngImagePlugin

from fexgan.errors import UserError

# animation kind -> the file suffixes it is written under (the first by default)
ANIMATIONS = {"gif": (".gif",), "apng": (".png", ".apng"), "webp": (".webp",)}
MEDIA_TYPES = {"gif": "image/gif", "apng": "image/apng", "webp": "image/webp"}
TRANSPARENT = 255  # the GIF palette index kept for transparent pixels


def check_fps(fps: float) -> float:
    """Frames per second of an animation, 0.5 to 50."""
    if not 0.5 <= fps <= 50:
        raise UserError(f"fps must be between 0.5 and 50, got {fps}")
    return fps


def kind_of(path: Path) -> str:
    """The animation kind a file name asks for: .gif, .png/.apng (APNG) or .webp."""
    suffix = path.suffix.lower()
    for kind, suffixes in ANIMATIONS.items():
        if suffix in suffixes:
            return kind
    raise UserError(f"output {path} must be an animation file: .gif, .png or .apng (APNG), or .webp")


def animation_bytes(frames: Sequence[Image.Image], kind: str = "gif", fps: float = 12) -> bytes:
    """`frames` as a looping animation (gif | apng | webp) of exactly len(frames) frames; RGBA
    frames keep their transparency (in a GIF: pixels under half opacity become transparent)."""
    if kind not in ANIMATIONS:
        raise UserError(f"animation format must be one of {', '.join(ANIMATIONS)}, got '{kind}'")
    if not frames:
        raise UserError("an animation needs at least one frame")
    duration = round(1000 / check_fps(fps))
    writer = {"gif": _gif, "apng": _apng, "webp": _webp}[kind]
    return writer(list(frames), duration)


def _gif_frame(frame: Image.Image) -> Image.Image:
    """A palette image of at most 255 colours, with index 255 for pixels under half opacity."""
    quantized = frame.convert("RGB").quantize(255, dither=Image.Dither.NONE)
    palette = quantized.getpalette() or []
    quantized.putpalette(palette[:765] + [0] * (768 - len(palette[:765])))
    if frame.mode == "RGBA":
        clear = Image.fromarray((np.asarray(frame.getchannel("A")) < 128).astype(np.uint8) * 255)
        quantized.paste(TRANSPARENT, mask=clear)
    return quantized


def _gif(frames: list[Image.Image], duration: int) -> bytes:
    transparent = frames[0].mode == "RGBA"
    encoded = [_gif_frame(f) for f in frames]
    params: dict[str, Any] = {"duration": duration, "include_color_table": True,
                              "disposal": 2 if transparent else 1}  # 2: clear to transparent before the next
    if transparent:
        params["transparency"] = TRANSPARENT
    header, _ = GifImagePlugin.getheader(encoded[0].copy(), info={"loop": 0, **params})
    parts = [*header]
    for frame in encoded:
        parts += GifImagePlugin.getdata(frame, (0, 0), **params)
    return b"".join(parts) + b";"


def _apng(frames: list[Image.Image], duration: int) -> bytes:
    disposal = [PngImagePlugin.Disposal.OP_NONE, PngImagePlugin.Disposal.OP_BACKGROUND]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=duration, loop=0,
                   disposal=[disposal[i % 2] for i in range(len(frames))], blend=PngImagePlugin.Blend.OP_SOURCE,
                   default_image=False)
    return buffer.getvalue()


def _webp(frames: list[Image.Image], duration: int) -> bytes:
    kept = [frames[0]]
    for frame in frames[1:]:
        kept.append(_nudged(frame) if frame.tobytes() == kept[-1].tobytes() else frame)
    buffer = io.BytesIO()
    kept[0].save(buffer, format="WEBP", save_all=True, append_images=kept[1:], duration=duration, loop=0,
                 lossless=True, exact=True)
    return buffer.getvalue()


def _nudged(frame: Image.Image) -> Image.Image:
    """A copy with one pixel's blue changed by one level: a fully transparent one where there is one."""
    pixels = np.array(frame)
    clear = np.argwhere(pixels[..., 3] == 0) if frame.mode == "RGBA" else np.empty((0, 2), int)
    y, x = clear[0] if len(clear) else (0, 0)
    pixels[y, x, 2] = pixels[y, x, 2] - 1 if pixels[y, x, 2] else 1
    return Image.fromarray(pixels, frame.mode)


def frame_count(data: bytes) -> int:
    """Frames in an animation file, as Pillow reads them back."""
    with Image.open(io.BytesIO(data)) as im:
        return getattr(im, "n_frames", 1)


def sprite_sheet(images: Sequence[Image.Image], labels: Sequence[str], columns: int | None = None,
                 image_name: str = "sheet.png", **meta: Any) -> tuple[Image.Image, dict[str, Any]]:
    """The images in a grid of equal cells (no labels, no padding; left to right, then down) and its
    layout: TexturePacker's JSON-array form (`frames`: filename, frame x/y/w/h, ...; `meta`: image,
    size, scale), which Phaser, PixiJS, Godot and Unity importers read, plus fexgan's cell, columns,
    rows and order in `meta`. RGBA images give an RGBA sheet."""
    if not images or len(images) != len(labels):
        raise UserError("a sprite sheet needs one label per image, and at least one image")
    columns = len(images) if columns is None else columns
    if columns < 1:
        raise UserError(f"columns must be at least 1, got {columns}")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    mode = "RGBA" if any(im.mode == "RGBA" for im in images) else "RGB"
    sheet = Image.new(mode, (columns * w, rows * h), (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    frames = []
    for i, (image, label) in enumerate(zip(images, labels)):
        x, y = (i % columns) * w, (i // columns) * h
        sheet.paste(image.convert(mode), (x, y))
        frames.append({"filename": label, "frame": {"x": x, "y": y, "w": w, "h": h}, "rotated": False,
                       "trimmed": False, "spriteSourceSize": {"x": 0, "y": 0, "w": w, "h": h},
                       "sourceSize": {"w": w, "h": h}})
    layout = {"frames": frames,
              "meta": {"app": "fexgan", "image": image_name, "format": "RGBA8888" if mode == "RGBA" else "RGB888",
                       "size": {"w": sheet.width, "h": sheet.height}, "scale": "1", "cell": {"w": w, "h": h},
                       "columns": columns, "rows": rows, "order": list(labels), **meta}}
    return sheet, layout


def png_bytes(image: Image.Image) -> bytes:
    """An image as PNG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> Path:
    """Write a file whole or not at all: a temporary file next to it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_image(image: Image.Image, path: Path) -> Path:
    """Save an image (its format from the suffix) whole or not at all."""
    kind = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if kind == "JPEG" and image.mode == "RGBA":
        raise UserError(f"{path}: JPEG has no transparency; write .png or .webp, or give --matte none")
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return write_bytes(path, buffer.getvalue())


def save_sheet(images: Sequence[Image.Image], labels: Sequence[str], path: Path, columns: int | None = None,
               **meta: Any) -> list[Path]:
    """A sprite sheet PNG at `path` and its layout beside it (same name, .json)."""
    sheet, layout = sprite_sheet(images, labels, columns, path.name, **meta)
    return [save_image(sheet, path),
            write_bytes(path.with_suffix(".json"), (json.dumps(layout, indent=1) + "\n").encode())]


def save_frames(frames: Sequence[Image.Image], folder: Path) -> list[Path]:
    """Numbered PNGs folder/frame_0000.png, frame_0001.png, ... (what image-sequence importers read)."""
    return [save_image(frame, folder / f"frame_{i:04d}.png") for i, frame in enumerate(frames)]
