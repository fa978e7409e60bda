"""`fexgan serve`: a web demo (Gradio) and a small HTTP API (FastAPI) over one loaded model.

The page, at /: upload a face or pick a toon character, see it turned to all seven expressions,
mix expressions with seven sliders, draw a random face from the decoder, make a morph GIF.
The API, at /api (answers PNG/GIF, or JSON with base64 images for format=json; errors are JSON
{"error": "..."}, 4xx for bad input and 503 when busy):

    GET  /api/info       model name, file size, parameters, configuration, training summary, limits
    POST /api/transfer   image|character [to=all|EXPRESSION|AFFECT] [source] [format=png|json]
    POST /api/mix        image|character affect=anger=0.5,sadness=0.5 [source] [format=png|json]
    POST /api/sample     [expression=neutral] [n=1] [seed=0] [format=png|json]
    POST /api/morph      image|character [from=neutral] [to=joy] [frames=24] [fps=12] [loop] [format=gif|json]
    POST /api/classify   image|character -> {"probabilities": {expression: p}}

Every model call goes through one `Engine`. It checks an upload before decoding it (its bytes,
then its pixel count from the header alone) and lets `workers` calls run at once with at most
`max_waiting` more in line; past that the API answers 503 and the page says the server is busy,
so a crowd cannot pile up memory. Gradio's queue, with the same limits, sits in front of the page.
Nothing is fetched from the internet: analytics are off, and the page's scripts and fonts are local.
"""
from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check

import base64
import functools
import html
import io
import random
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import uvicorn
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException

from fexgan import toon
from fexgan.data import prepare_image
from fexgan.errors import UserError
from fexgan.expressions import MIXED_PAIRS
from fexgan.generate import FExGAN, figure_cells, gif_bytes
from fexgan.visuals import image_grid

API_LINES = [line.strip() for line in __doc__.splitlines() if line.strip().startswith(("GET ", "POST "))]
MB = 2**20
FORM_SLACK = 64 * 1024  # room for the form fields and multipart boundaries around an upload
SHOWN = 256             # the page shows faces at least this large
CSS = ".morph { width: 320px; }"


@dataclass(frozen=True)
class Limits:
    """What the server accepts and how much work it takes on at once."""

    max_upload_bytes: int = 10 * MB
    max_pixels: int = 40_000_000  # width x height of an upload, checked before decoding
    workers: int = 1              # model calls at once
    max_waiting: int = 32         # calls waiting for a worker; more are refused (503)
    max_frames: int = 96          # frames of one morph
    max_samples: int = 16         # faces of one /api/sample


class RequestError(UserError):
    """A user mistake together with the HTTP status that reports it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Face:
    """A face ready for the model: pixels as `prepare_image` makes them, its expression (known or
    read by the classifier) and the classifier's probabilities when the model has a discriminator."""

    pixels: np.ndarray  # (S, S, 3) uint8
    source: str
    probabilities: dict[str, float] | None = None

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
        self._character_pixels: dict[str, np.ndarray] = {}

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
            pixels = prepare_image(data, self.model.config.image_size, self.model.config.background)
            return self._face(pixels, source)

    def character(self, name: str) -> Face:
        """The neutral face of a built-in toon character."""
        key = name.strip().lower()
        if key not in self.characters:
            raise RequestError(f"unknown character '{name}'; choose one of: {', '.join(self.characters)}")
        if key not in self._character_pixels:
            c = self.model.config
            face = toon.render_face(self.characters[key], "neutral", size=max(c.image_size, 128))
            self._character_pixels[key] = prepare_image(face, c.image_size, c.background)
        with self.gate():
            return self._face(self._character_pixels[key], self.neutral)

    def random_face(self, seed: int) -> Face:
        """A neutral face drawn by the decoder alone."""
        with self.gate():
            pixels = np.asarray(self.model.sample(self.neutral, 1, seed)[0])
            return self._face(pixels, self.neutral)

    def _face(self, pixels: np.ndarray, source: str | None) -> Face:
        """(Call inside the gate.) The face with the classifier's reading, when there is a classifier."""
        probabilities = self.model.classify(Image.fromarray(pixels)) if self.model.discriminator is not None else None
        if source is None:
            source = max(probabilities, key=probabilities.get) if probabilities else self.neutral
        return Face(pixels, source, probabilities)

    # ------------------------------------------------------------------------- operations
    def transfer(self, face: Face, to: str = "all") -> tuple[list[Image.Image], list[str]]:
        """The face with another expression (or affect), or with each of them for 'all'."""
        vectors, labels, several = self.model.targets(to)
        with self.gate():
            out = self.model.transfer(face.image, vectors if several else vectors[0], source=face.source)
        return (out if several else [out]), labels

    def mix(self, face: Face, affect: str | dict[str, float]) -> Image.Image:
        """The face with any affect vector, e.g. 'anger=0.5,sadness=0.5'."""
        vector = self.model.affect(affect)
        with self.gate():
            return self.model.mix(face.image, vector, source=face.source)

    def sample(self, expression: str, n: int, seed: int) -> list[Image.Image]:
        """n faces of one expression (or affect) drawn by the decoder alone."""
        if not 1 <= n <= self.limits.max_samples:
            raise RequestError(f"n must be between 1 and {self.limits.max_samples}, got {n}")
        vector = self.model.affect(expression)
        with self.gate():
            return self.model.sample(vector, n, seed)

    def morph(self, face: Face, path: Sequence[str], frames: int, loop: bool) -> list[Image.Image]:
        """Frames moving the face through the expressions of `path`."""
        if not 2 <= frames <= self.limits.max_frames:
            raise RequestError(f"frames must be between 2 and {self.limits.max_frames}, got {frames}")
        for p in path:
            self.model.affect(p)
        with self.gate():
            return self.model.morph(face.image, list(path), frames, loop, source=face.source)

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


def describe(info: dict[str, Any]) -> str:
    """The page's header: model name, size and training summary in two lines of Markdown."""
    c, s, p = info["config"], info["summary"], info["parameters"]
    size = f"{info['bytes'] / MB:.1f} MB file · " if info["bytes"] else ""
    parts = [f"{size}{sum(p.values()) / 1e6:.2f} M parameters",
             f"{c['image_size']} px, width {c['width']:g}, latent {c['latent_dim']}"]
    if s.get("steps"):
        how = ", ".join(x for x in (f"{s['epochs']:g} epochs" if "epochs" in s else "",
                                    f"{s['minutes']:g} min" if "minutes" in s else "",
                                    f"on {s['device']}" if "device" in s else "") if x)
        data = f" on `{s['data']}`" if "data" in s else ""
        if "images" in s:
            data += f" ({s['images']:,} images, {len(s.get('identities', []))} identities)"
        parts.append(f"trained {s['steps']:,} steps ({how}){data}")
    else:
        parts.append("no training summary in this file")
    return (f"## FExGAN · {html.escape(info['name'])}\n{' · '.join(parts)}. "
            f"Expressions: {', '.join(info['classes'])}. HTTP API: `/api`.")


# ----------------------------------------------------------------------------- HTTP API
def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise RequestError(f"format must be one of {', '.join(allowed)}, got '{fmt}'")
    return fmt


def images_response(images: list[Image.Image], labels: list[str], fmt: str, source: str | None = None) -> Response:
    """PNG (several images side by side, their labels in X-Labels) or JSON with base64 PNGs."""
    if check_format(fmt, ("png", "json")) == "json":
        return JSONResponse({"source": source, "images": [{"label": label, "png": b64(png(im))}
                                                          for label, im in zip(labels, images)]})
    sheet = images[0] if len(images) == 1 else image_grid([images], pad=0)
    return Response(png(sheet), media_type="image/png", headers={"X-Labels": ",".join(labels)})


class BodyLimit:
    """ASGI middleware: refuse an /api request whose body is over the upload limit (plus room for
    the form fields) with 413, from its Content-Length before reading it, or as soon as a streamed
    body passes the limit."""

    def __init__(self, app: Callable, max_upload_bytes: int):
        self.app, self.upload, self.limit = app, max_upload_bytes, max_upload_bytes + FORM_SLACK

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api"):
            return await self.app(scope, receive, send)
        refusal = JSONResponse({"error": f"the request is over the upload limit of {self.upload / MB:g} MB"}, 413)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            return await refusal(scope, receive, send)
        seen, over = 0, False

        async def limited_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not over:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if over:
            await refusal(scope, receive, send)


def create_api(engine: Engine) -> FastAPI:
    """The FastAPI app with the /api routes (the page is mounted on it by `create_app`)."""
    app = FastAPI(title="fexgan", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    limit = engine.limits.max_upload_bytes

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        status = getattr(err, "status", 400)
        return JSONResponse({"error": str(err)}, status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def bad_fields(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": f"bad request fields: {problems}"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code, headers=err.headers)

    def face_of(image: UploadFile | None, character: str | None, source: str | None = None) -> Face:
        """The face a request names: an uploaded image, or a toon character."""
        if image is not None:
            return engine.upload(image.file.read(limit + 1), source)
        if character:
            return engine.character(character)
        raise RequestError(f"give an image file (field 'image') or a toon character (field 'character': "
                           f"{', '.join(engine.characters)})")

    @app.get("/api")
    def index() -> dict:
        """The endpoints and their fields."""
        return {"endpoints": API_LINES, "openapi": "/api/openapi.json"}

    @app.get("/api/info")
    def info() -> dict:
        return engine.info()

    @app.post("/api/transfer")
    def transfer(image: UploadFile | None = File(None), character: str | None = Form(None), to: str = Form("all"),
                 source: str | None = Form(None), format: str = Form("png")) -> Response:
        check_format(format, ("png", "json"))
        face = face_of(image, character, source)
        images, labels = engine.transfer(face, to)
        return images_response(images, labels, format, face.source)

    @app.post("/api/mix")
    def mix(affect: str = Form(...), image: UploadFile | None = File(None), character: str | None = Form(None),
            source: str | None = Form(None), format: str = Form("png")) -> Response:
        check_format(format, ("png", "json"))
        engine.model.affect(affect)
        face = face_of(image, character, source)
        return images_response([engine.mix(face, affect)], [affect], format, face.source)

    @app.post("/api/sample")
    def sample(expression: str = Form("neutral"), n: int = Form(1), seed: int = Form(0),
               format: str = Form("png")) -> Response:
        check_format(format, ("png", "json"))
        return images_response(engine.sample(expression, n, seed), [expression] * n, format)

    @app.post("/api/morph")
    def morph(image: UploadFile | None = File(None), character: str | None = Form(None),
              start: str = Form("neutral", alias="from"), end: str = Form("joy", alias="to"),
              frames: int = Form(24), fps: float = Form(12), loop: bool = Form(False),
              source: str | None = Form(None), format: str = Form("gif")) -> Response:
        check_format(format, ("gif", "json"))
        face = face_of(image, character, source)
        data = gif_bytes(engine.morph(face, [start, end], frames, loop), fps)
        if format == "json":
            return JSONResponse({"source": face.source, "frames": frames, "gif": b64(data)})
        return Response(data, media_type="image/gif")

    @app.post("/api/classify")
    def classify(image: UploadFile | None = File(None), character: str | None = Form(None)) -> dict:
        face = face_of(image, character)
        if face.probabilities is None:
            raise RequestError("this model file has no discriminator, so it cannot classify expressions")
        return {"expression": face.source, "probabilities": face.probabilities}

    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(path: str) -> None:
        raise RequestError(f"no such endpoint /api/{path}; see GET /api", 404)

    app.add_middleware(BodyLimit, max_upload_bytes=limit)
    return app


# ----------------------------------------------------------------------------- the page
def enlarge(image: Image.Image, side: int = SHOWN) -> Image.Image:
    """A face scaled up for the page (the model's 32-128 px look tiny on a screen)."""
    return image if image.width >= side else image.resize((side, side), Image.Resampling.LANCZOS)


def build_page(engine: Engine) -> gr.Blocks:
    """The Gradio Blocks page; every model call runs in Gradio's queue and through the engine's gate."""
    classes, neutral = engine.model.classes, engine.neutral
    info = engine.info()
    queued = {"concurrency_id": "model", "concurrency_limit": engine.limits.workers, "api_visibility": "private"}
    default_mix = {c: (1.0 if c == "joy" else 0.0) for c in classes}
    if "joy" not in classes:
        default_mix[classes[0]] = 1.0

    def in_page(fn: Callable) -> Callable:
        """User mistakes (and a busy server) become a message in the page, not a stack trace."""
        @functools.wraps(fn)
        def wrapped(*args: Any) -> Any:
            try:
                return fn(*args)
            except UserError as err:
                raise gr.Error(html.escape(str(err)), print_exception=False) from None
        return wrapped

    def strip(face: Face) -> Image.Image:
        images, labels = engine.transfer(face, "all")
        return image_grid([figure_cells([face.image, *images])], col_labels=["input", *labels],
                          background=engine.model.config.background)

    def mixed(face: Face | None, weights: Sequence[float]) -> Any:
        if face is None:
            return gr.skip()
        return enlarge(engine.mix(face, dict(zip(classes, map(float, weights)))))

    def show(face: Face, weights: Sequence[float]) -> tuple:
        """Everything that changes with the face: state, classifier reading, strip, mix."""
        return face, face.probabilities, strip(face), mixed(face, weights)

    @in_page
    def on_upload(payload: dict | None, *weights: float) -> tuple:
        if not payload or not payload.get("path"):
            return (gr.skip(),) * 5
        with open(payload["path"], "rb") as f:
            data = f.read(engine.limits.max_upload_bytes + 1)  # enough to tell that a file is too large
        return (None, *show(engine.upload(data), weights))

    @in_page
    def on_character(name: str, *weights: float) -> tuple:
        face = engine.character(name)
        return (enlarge(face.image), *show(face, weights))

    @in_page
    def on_random(*weights: float) -> tuple:
        seed = random.randrange(2**31)
        face = engine.random_face(seed)
        gr.Info(f"random face, seed {seed}")
        return (enlarge(face.image), None, *show(face, weights))

    @in_page
    def on_slider(face: Face | None, *weights: float) -> Any:
        return mixed(face, weights)

    def preset(weights: dict[str, float]) -> Callable:
        @in_page
        def apply(face: Face | None) -> tuple:
            values = [weights.get(c, 0.0) for c in classes]
            return (*values, mixed(face, values))
        return apply

    @in_page
    def on_morph(face: Face | None, start: str, end: str, frames: float, fps: float, loop: bool) -> str:
        if face is None:
            raise RequestError("choose a face first on the Expressions tab")
        data = gif_bytes(engine.morph(face, [start, end], int(frames), loop), fps)
        url = f"data:image/gif;base64,{b64(data)}"
        name = f"morph_{start}_{end}.gif"
        return (f'<img src="{url}" alt="morph {start} to {end}" class="morph" />'
                f'<p><a href="{url}" download="{name}">Download {name}</a></p>')

    with gr.Blocks(title=f"fexgan · {info['name']}", analytics_enabled=False, delete_cache=(60, 300)) as page:
        face = gr.State(None)
        gr.Markdown(describe(info))
        with gr.Tab("Expressions"):
            with gr.Row():
                with gr.Column():
                    upload = gr.Image(label="Your face: upload, drop or paste", type="filepath",
                                      sources=["upload", "clipboard"], height=SHOWN, elem_id="face")
                    character = gr.Radio(list(engine.characters), value=next(iter(engine.characters)),
                                         label="…or a toon character", elem_id="character")
                    random_button = gr.Button("Random face (drawn by the decoder)", elem_id="random")
                    reading = gr.Label(label="The model reads this face as", num_top_classes=3,
                                       visible=engine.model.discriminator is not None)
                with gr.Column():
                    mix_image = gr.Image(label="Mixed expression", format="png", interactive=False, height=SHOWN,
                                         elem_id="mix")
                    sliders = [gr.Slider(0, 1, value=default_mix[c], step=0.05, label=c, elem_id=f"slider-{c}")
                               for c in classes]
                    with gr.Row():
                        pairs = [(a, b) for a, b in MIXED_PAIRS if a in classes and b in classes]
                        buttons = {f"{a} + {b}": {a: 0.5, b: 0.5} for a, b in pairs}
                        buttons["reset"] = default_mix
                        preset_buttons = {label: gr.Button(label, size="sm") for label in buttons}
            strip_image = gr.Image(label="All expressions", format="png", interactive=False, elem_id="strip")
        with gr.Tab("Morph"):
            gr.Markdown("An animation of the face chosen on the Expressions tab, from one expression to another.")
            with gr.Row():
                start = gr.Dropdown(list(classes), value=neutral, label="from")
                end = gr.Dropdown(list(classes), value="joy" if "joy" in classes else classes[-1], label="to")
                frames = gr.Slider(4, engine.limits.max_frames, value=24, step=1, label="frames")
                fps = gr.Slider(2, 30, value=12, step=1, label="frames per second")
                loop = gr.Checkbox(value=True, label="loop back to the start")
            make = gr.Button("Make GIF", variant="primary", elem_id="make-gif")
            gif = gr.HTML(elem_id="gif")

        shown = [face, reading, strip_image, mix_image]
        # preprocess=False: the upload arrives as Gradio's file record, so the engine checks and
        # decodes the file itself (a clear message for non-images and huge images)
        upload.upload(on_upload, [upload, *sliders], [character, *shown], preprocess=False, **queued)
        character.input(on_character, [character, *sliders], [upload, *shown], **queued)
        page.load(on_character, [character, *sliders], [upload, *shown], **queued)
        random_button.click(on_random, sliders, [upload, character, *shown], **queued)
        gr.on([s.input for s in sliders], on_slider, [face, *sliders], mix_image, trigger_mode="always_last",
              show_progress="hidden", **queued)
        for label, button in preset_buttons.items():
            button.click(preset(buttons[label]), face, [*sliders, mix_image], **queued)
        make.click(on_morph, [face, start, end, frames, fps, loop], gif, **queued)
    page.queue(max_size=engine.limits.max_waiting, default_concurrency_limit=engine.limits.workers)
    return page


def create_app(engine: Engine) -> FastAPI:
    """The API with the page mounted at /."""
    app = create_api(engine)
    page = build_page(engine)
    return gr.mount_gradio_app(app, page, path="/", footer_links=[], run_history=False, show_error=True,
                               max_file_size=engine.limits.max_upload_bytes, css=CSS)


# ----------------------------------------------------------------------------- the command
def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another --port or --host") from None
    return sock


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(),
          device: str = "auto", log: Callable[[str], None] = print) -> None:
    """Load the model and serve the page and the API until interrupted."""
    if limits.max_upload_bytes < 1 or limits.max_pixels < 1 or limits.workers < 1:
        raise UserError("--max-upload-mb, --max-pixels and --workers must be positive")
    # Pillow's own guard (its error names no size) stays above ours, which names the size
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, limits.max_pixels)
    if limits.workers > 1:  # parallel calls, not threads fighting inside each call
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // limits.workers))
    sock = bind(host, port)  # a port in use fails before the model loads
    engine = Engine(FExGAN.load(model, device), limits)
    url_host = f"[{host}]" if ":" in host else host
    log(f"serving {engine.info()['name']} on http://{url_host}:{sock.getsockname()[1]} (Ctrl+C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: {host} is reachable from other machines and the demo has no login")
    config = uvicorn.Config(create_app(engine), log_level="warning", timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])
