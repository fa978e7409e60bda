"""The engine behind the page and the API: one loaded model, input checks and a gate.

It checks an upload before decoding it (its bytes, then its pixel count from the header alone) and
lets `workers` calls run at once with at most `max_waiting` more in line; past that it refuses
(the API answers 503 and the page says the server is busy), so a crowd cannot pile up memory.
An upload is kept as decoded (alpha included), scaled down to `max_size` px when larger, so every
call cuts the face out and sizes it as `FExGAN.transfer` does for a file.
"""
from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fexgan import toon
from fexgan.data import open_image, prepare_image
from fexgan.errors import UserError
from fexgan.generate import FExGAN
from fexgan.matte import MIN_SIZE, upscale_note

MB = 2**20


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how much work it takes on at once."""

    max_upload_bytes: int = 10 * MB
    max_pixels: int = 40_000_000  # width x height of an upload, checked before decoding
    workers: int = 1              # model calls at once
    max_waiting: int = 32         # calls waiting for a worker; more are refused (503)
    max_frames: int = 96          # frames of one morph
    max_samples: int = 16         # faces of one /api/sample
    max_size: int = 1024          # side of an output in px (and of the kept copy of an upload)


class RequestError(UserError):
    """A user mistake together with the HTTP status that reports it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Face:
    """A face ready for the model: the decoded image (RGBA, at most `max_size` px), its pixels as
    `prepare_image` makes them, its expression (known or read by the classifier) and the classifier's
    probabilities when the model has a discriminator."""

    original: Image.Image
    pixels: np.ndarray  # (S, S, 3) uint8
    source: str
    probabilities: dict[str, float] | None = None
    distance: float = 0.0  # from the characters the model knows (`FExGAN.familiarity_tensor`) ...
    recognised: float | None = None  # ... how surely its classifier reads the model's edits of the face
    far: bool = False  # ... and whether the face is unlike every character the model knows

    @property
    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels)


class Gate:
    """At most `workers` model calls at once and `max_waiting` more waiting; the rest are refused."""

    def __init__(self, workers: int, max_waiting: int):
        self.capacity = workers + max_waiting
        self.pending = 0  # calls running or waiting
        self._running = threading.Semaphore(workers)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self.pending >= self.capacity:
                raise RequestError("the server is busy (too many requests waiting); try again in a moment", 503)
            self.pending += 1
        try:
            with self._running:
                yield
        finally:
            with self._lock:
                self.pending -= 1


class Engine:
    """The loaded model behind the page and the API: input checks, the gate, the operations."""

    def __init__(self, model: FExGAN, limits: Limits = Limits()):
        self.model, self.limits = model, limits
        self.gate = Gate(limits.workers, limits.max_waiting)
        self.characters = {c.name: c for c in toon.make_characters(len(toon.DEFAULT_CHARACTERS))}
        self.neutral = "neutral" if "neutral" in model.classes else model.classes[0]
        self._character_faces: dict[str, Image.Image] = {}

    # ------------------------------------------------------------------------- faces
    def check_upload(self, data: bytes) -> None:
        """Refuse an upload that is too large, not an image, or too many pixels, before decoding it."""
        limit = self.limits.max_upload_bytes
        if len(data) > limit:
            raise RequestError(f"the file is over the limit of {limit / MB:g} MB", 413)
        if not data:
            raise RequestError("the uploaded file is empty")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:  # reads the header only
                    w, h = im.size
        except Image.DecompressionBombError:
            w = h = None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise RequestError("the uploaded file is not an image (PNG, JPEG, WebP, BMP or GIF)", 415) from None
        if w is None or w * h > self.limits.max_pixels:
            size = f"is {w}x{h} px ({w * h / 1e6:.1f} megapixels)" if w else "has far too many pixels"
            raise RequestError(f"the image {size}; the limit is {self.limits.max_pixels / 1e6:g} megapixels", 413)

    def upload(self, data: bytes, source: str | None = None) -> Face:
        """A face from uploaded bytes; its expression is `source` or, when None, the classifier's reading."""
        self.check_upload(data)
        if source is not None:
            self.model.affect(source)  # a bad name fails before any work
        with self.gate():
            original = open_image(data)
            if max(original.size) > self.limits.max_size:
                original.thumbnail((self.limits.max_size,) * 2, Image.Resampling.LANCZOS)
            return self._face(original, source)

    def character(self, name: str) -> Face:
        """The neutral face of a built-in toon character."""
        key = name.strip().lower()
        if key not in self.characters:
            raise RequestError(f"unknown character '{name}'; choose one of: {', '.join(self.characters)}")
        if key not in self._character_faces:
            size = max(self.model.config.image_size, 128)
            self._character_faces[key] = toon.render_face(self.characters[key], "neutral", size=size)
        with self.gate():
            return self._face(self._character_faces[key], self.neutral)

    def random_face(self, seed: int) -> Face:
        """A neutral face drawn by the decoder alone."""
        with self.gate():
            return self._face(self.model.sample(self.neutral, 1, seed)[0].convert("RGBA"), self.neutral)

    def _face(self, original: Image.Image, source: str | None) -> Face:
        """(Call inside the gate.) The face with the classifier's reading, when there is a classifier."""
        pixels = prepare_image(original, self.model.config.image_size, self.model.config.background)
        probabilities = self.model.classify(Image.fromarray(pixels)) if self.model.discriminator is not None else None
        if source is None:
            source = max(probabilities, key=probabilities.get) if probabilities else self.neutral
        x = self.model.prepare(Image.fromarray(pixels))
        known = {k: v[0].item() for k, v in self.model.familiarity_tensor(x, source).items()}
        return Face(original, pixels, source, probabilities, known["distance"], known.get("recognised"), known["far"])

    def check_size(self, size: int | None) -> str | None:
        """Refuse an output side over the limit; the line saying it is upscaled, when it is."""
        if size is None:
            return None
        if not MIN_SIZE <= size <= self.limits.max_size:
            raise RequestError(f"size must be between {MIN_SIZE} and {self.limits.max_size} px, got {size}")
        return upscale_note(self.model.config.image_size, [size])

    # ------------------------------------------------------------------------- operations
    def transfer(self, face: Face, to: str = "all", size: int | None = None,
                 matte: str = "auto") -> tuple[list[Image.Image], list[str]]:
        """The face with another expression (or affect), or with each of them for 'all'."""
        vectors, labels, several = self.model.targets(to)
        self.check_size(size)
        with self.gate():
            out = self.model.transfer(face.original, vectors if several else vectors[0], source=face.source,
                                      size=size, matte=matte)
        return (out if several else [out]), labels

    def mix(self, face: Face, affect: str | dict[str, float], size: int | None = None,
            matte: str = "auto") -> Image.Image:
        """The face with any affect vector, e.g. 'anger=0.5,sadness=0.5'."""
        vector = self.model.affect(affect)
        self.check_size(size)
        with self.gate():
            return self.model.mix(face.original, vector, source=face.source, size=size, matte=matte)

    def sample(self, expression: str, n: int, seed: int, size: int | None = None,
               matte: str = "none") -> list[Image.Image]:
        """n faces of one expression (or affect) drawn by the decoder alone."""
        if not 1 <= n <= self.limits.max_samples:
            raise RequestError(f"n must be between 1 and {self.limits.max_samples}, got {n}")
        vector = self.model.affect(expression)
        self.check_size(size)
        with self.gate():
            return self.model.sample(vector, n, seed, size, matte)

    def morph(self, face: Face, path: Sequence[str], frames: int, loop: bool, size: int | None = None,
              matte: str = "auto") -> list[Image.Image]:
        """Frames moving the face through the expressions of `path`."""
        if not 2 <= frames <= self.limits.max_frames:
            raise RequestError(f"frames must be between 2 and {self.limits.max_frames}, got {frames}")
        for p in path:
            self.model.affect(p)
        self.check_size(size)
        with self.gate():
            return self.model.morph(face.original, list(path), frames, loop, source=face.source, size=size,
                                    matte=matte)

    # ------------------------------------------------------------------------- about the model
    def info(self) -> dict[str, Any]:
        """Name, file, size, parameter counts, configuration, training summary, limits and the
        model calls running or waiting right now."""
        m = self.model
        path = m.path or Path("model")
        name = path.parent.name if path.stem in ("model", "") else path.stem
        params = {"generator": sum(p.numel() for p in m.generator.parameters())}
        if m.discriminator is not None:
            params["discriminator"] = sum(p.numel() for p in m.discriminator.parameters())
        return {"name": name, "file": str(path), "bytes": path.stat().st_size if path.is_file() else None,
                "parameters": params, "config": m.config.to_dict(), "classes": list(m.classes),
                "summary": m.summary, "characters": list(self.characters), "device": str(m.device),
                "limits": asdict(self.limits), "pending": self.gate.pending}
