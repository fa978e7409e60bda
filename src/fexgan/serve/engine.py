"""The engine behind the page and the API: one loaded model, input checks and a gate.

Every request is one job: its arguments and its upload's header are checked first, then it takes a
place at the gate, which lets `workers` jobs run at once and `max_waiting` more wait in line. A job
costs the pixels it decodes and draws (the upload's width x height plus outputs x side^2, frames of a
morph included); one over `max_work_pixels` is refused (413), and so is a job that would take the
work running and waiting past `max_queued_pixels` or the line past `max_waiting` (429). Decoding,
drawing and encoding the answer all happen inside the job, so the memory in use is bounded by
`workers` jobs and the time a request waits by the work ahead of it.
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

from fexgan.data import toon
from fexgan.data.images import MIN_IMAGE_SIDE, open_image, prepare_image
from fexgan.errors import UserError
from fexgan.generation.inference import FExGAN
from fexgan.generation.matte import MIN_SIZE, upscale_note

MB = 2**20
MPX = 2**20  # a megapixel, as the limits count them


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how much work it takes on at once."""

    max_upload_bytes: int = 10 * MB
    max_pixels: int = 16 * MPX         # width x height of an upload, read from its header before decoding
    max_work_pixels: int = 32 * MPX    # one job: the upload's pixels + outputs x side^2 (about 12 bytes each)
    max_queued_pixels: int = 128 * MPX  # every job running or waiting, together
    workers: int = 1                   # jobs at once
    max_waiting: int = 32              # jobs waiting for a worker; more are refused (429)
    max_frames: int = 96               # frames of one morph
    max_samples: int = 16              # faces of one /api/sample
    max_size: int = 1024               # side of an output in px (and of the kept copy of an upload)


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


@dataclass(frozen=True)
class Task:
    """What a request asks for, checked before it takes a place at the gate: the face (upload bytes or
    a toon character; neither for the decoder alone), its source expression, and its outputs."""

    outputs: int = 1
    size: int | None = None
    upload: bytes | None = None
    character: str | None = None
    source: str | None = None


class Gate:
    """At most `workers` jobs at once, `max_waiting` more waiting and `max_queued_pixels` of work in
    all; a job over `max_work_pixels` alone is refused outright."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.pending = 0  # jobs running or waiting
        self.queued = 0   # their pixels
        self._running = threading.Semaphore(limits.workers)
        self._lock = threading.Lock()
        self._inside = threading.local()

    @contextmanager
    def __call__(self, pixels: int) -> Iterator[None]:
        work, queued = self.limits.max_work_pixels, self.limits.max_queued_pixels
        if pixels > work:
            raise RequestError(f"this request is {pixels / MPX:.1f} megapixels of work (upload + outputs x side^2); "
                               f"the limit is {work / MPX:g}: ask for fewer frames or faces, or a smaller size", 413)
        with self._lock:
            if self.pending >= self.limits.workers + self.limits.max_waiting or self.queued + pixels > queued:
                raise RequestError("the server is busy (too much work waiting); try again in a moment", 429)
            self.pending += 1
            self.queued += pixels
        try:
            with self._running:
                self._inside.held = True
                try:
                    yield
                finally:
                    self._inside.held = False
        finally:
            with self._lock:
                self.pending -= 1
                self.queued -= pixels

    def check_held(self) -> None:
        """Fail (a programming error, not a user's) when the model is called outside a job."""
        if not getattr(self._inside, "held", False):
            raise RuntimeError("model calls of the server run inside `Engine.job`")


class Engine:
    """The loaded model behind the page and the API: input checks, the gate, the operations.
    The operations (`face`, `transfer`, `mix`, `sample`, `morph`) run inside `job`."""

    def __init__(self, model: FExGAN, limits: Limits = Limits()):
        self.model, self.limits = model, limits
        self.gate = Gate(limits)
        self.characters = {c.name: c for c in toon.make_characters(len(toon.DEFAULT_CHARACTERS))}
        self.neutral = "neutral" if "neutral" in model.classes else model.classes[0]
        self._character_faces: dict[str, Image.Image] = {}

    # ------------------------------------------------------------------------- checks before a job
    def check_upload(self, data: bytes) -> int:
        """The pixel count of an upload, read from its header; refuse one that is too large, not an image,
        too small or too many pixels, before decoding it."""
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
            raise RequestError("the uploaded file is not an image (PNG, JPEG, WebP, BMP, GIF or TIFF)", 415) from None
        if w is None or w * h > self.limits.max_pixels:
            size = f"is {w}x{h} px ({w * h / MPX:.1f} megapixels)" if w else "has far too many pixels"
            raise RequestError(f"the image {size}; the limit is {self.limits.max_pixels / MPX:g} megapixels", 413)
        if min(w, h) < MIN_IMAGE_SIDE:
            raise RequestError(f"the image is {w}x{h} px; at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} is needed")
        return w * h

    def check_size(self, size: int | None) -> str | None:
        """Refuse an output side over the limit; the line saying it is upscaled, when it is."""
        if size is None:
            return None
        if not MIN_SIZE <= size <= self.limits.max_size:
            raise RequestError(f"size must be between {MIN_SIZE} and {self.limits.max_size} px, got {size}")
        return upscale_note(self.model.config.image_size, [size])

    def check(self, task: Task, needs_face: bool = True) -> int:
        """Check a request's face and sizes before any work; its cost in pixels."""
        self.check_size(task.size)
        upload = 0
        if needs_face:
            if task.source is not None:
                self.model.affect(task.source)
            if task.upload is not None and task.character:
                raise RequestError("give an image or a toon character, not both")
            if task.upload is not None:
                upload = self.check_upload(task.upload)
            elif task.character:
                self._character_key(task.character)
                if task.source is not None and task.source.strip().lower() != self.neutral:
                    raise RequestError(f"a toon character's face is {self.neutral}; leave out source")
            else:
                raise RequestError(f"give an image file (field 'image') or a toon character (field 'character': "
                                   f"{', '.join(self.characters)})")
        side = task.size or self.model.config.image_size
        return upload + task.outputs * side * side

    @contextmanager
    def job(self, task: Task, needs_face: bool = True) -> Iterator[Face | None]:
        """Check the request, take a place at the gate, and (when it names one) open its face there."""
        pixels = self.check(task, needs_face)
        with self.gate(pixels):
            yield self.face(task) if needs_face else None

    # ------------------------------------------------------------------------- faces (inside a job)
    def face(self, task: Task) -> Face:
        """The face a checked request names: its upload, or a toon character's neutral face."""
        self.gate.check_held()
        if task.upload is not None:
            original = open_image(task.upload)
            if max(original.size) > self.limits.max_size:
                original.thumbnail((self.limits.max_size,) * 2, Image.Resampling.LANCZOS)
            return self._face(original, task.source)
        key = self._character_key(task.character or "")
        if key not in self._character_faces:
            size = max(self.model.config.image_size, 128)
            self._character_faces[key] = toon.render_face(self.characters[key], "neutral", size=size)
        return self._face(self._character_faces[key], self.neutral)

    def random_face(self, seed: int) -> Face:
        """A neutral face drawn by the decoder alone."""
        self.gate.check_held()
        return self._face(self.model.sample(self.neutral, 1, seed)[0].convert("RGBA"), self.neutral)

    def _character_key(self, name: str) -> str:
        key = name.strip().lower()
        if key not in self.characters:
            raise RequestError(f"unknown character '{name}'; choose one of: {', '.join(self.characters)}")
        return key

    def _face(self, original: Image.Image, source: str | None) -> Face:
        """The face with the classifier's reading, when there is a classifier."""
        pixels = prepare_image(original, self.model.config.image_size, self.model.config.background)
        probabilities = self.model.classify(Image.fromarray(pixels)) if self.model.discriminator is not None else None
        if source is None:
            source = max(probabilities, key=probabilities.get) if probabilities else self.neutral
        x = self.model.prepare(Image.fromarray(pixels))
        known = {k: v[0].item() for k, v in self.model.familiarity_tensor(x, source).items()}
        return Face(original, pixels, source, probabilities, known["distance"], known.get("recognised"), known["far"])

    # ------------------------------------------------------------------------- operations (inside a job)
    def transfer(self, face: Face, to: str = "all", size: int | None = None,
                 matte: str = "auto") -> tuple[list[Image.Image], list[str]]:
        """The face with another expression (or affect), or with each of them for 'all'."""
        self.gate.check_held()
        vectors, labels, several = self.model.targets(to)
        out = self.model.transfer(face.original, vectors if several else vectors[0], source=face.source,
                                  size=size, matte=matte)
        return (out if several else [out]), labels

    def mix(self, face: Face, affect: str | dict[str, float], size: int | None = None,
            matte: str = "auto") -> Image.Image:
        """The face with any affect vector, e.g. 'anger=0.5,sadness=0.5'."""
        self.gate.check_held()
        return self.model.mix(face.original, self.model.affect(affect), source=face.source, size=size, matte=matte)

    def check_samples(self, n: int) -> int:
        if not 1 <= n <= self.limits.max_samples:
            raise RequestError(f"n must be between 1 and {self.limits.max_samples}, got {n}")
        return n

    def sample(self, expression: str, n: int, seed: int, size: int | None = None,
               matte: str = "none") -> list[Image.Image]:
        """n faces of one expression (or affect) drawn by the decoder alone."""
        self.gate.check_held()
        return self.model.sample(self.model.affect(expression), self.check_samples(n), seed, size, matte)

    def check_frames(self, frames: int) -> int:
        if not 2 <= frames <= self.limits.max_frames:
            raise RequestError(f"frames must be between 2 and {self.limits.max_frames}, got {frames}")
        return frames

    def morph(self, face: Face, path: Sequence[str], frames: int, loop: bool, size: int | None = None,
              matte: str = "auto") -> list[Image.Image]:
        """Frames moving the face through the expressions of `path`."""
        self.gate.check_held()
        return self.model.morph(face.original, list(path), self.check_frames(frames), loop, source=face.source,
                                size=size, matte=matte)

    # ------------------------------------------------------------------------- about the model
    def info(self) -> dict[str, Any]:
        """Name, file name (never its folder), size, parameter counts, configuration, training summary,
        limits, and the jobs running or waiting right now with their pixels."""
        m = self.model
        path = m.path or Path("model")
        name = path.parent.name if path.stem in ("model", "") else path.stem
        params = {"generator": sum(p.numel() for p in m.generator.parameters())}
        if m.discriminator is not None:
            params["discriminator"] = sum(p.numel() for p in m.discriminator.parameters())
        return {"name": name, "file": path.name, "bytes": path.stat().st_size if path.is_file() else None,
                "parameters": params, "config": m.config.to_dict(), "classes": list(m.classes),
                "summary": m.summary, "characters": list(self.characters), "device": str(m.device),
                "limits": asdict(self.limits), "pending": self.gate.pending,
                "queued_megapixels": round(self.gate.queued / MPX, 3)}
