"""The HTTP API (FastAPI) at /api: answers PNG (a sprite sheet of one row, RGBA when the face is
transparent), GIF/APNG/WebP, or JSON with base64 images; errors are JSON {"error": "..."}: 4xx for
bad input, 413 for a request over the limits, 429 (with Retry-After) when the server is busy. `size`
is the output side (default the model's); `matte` as in `fexgan.generation.matte`. An upscaled answer
says so in the X-Upscaled header (JSON: "upscaled").

    GET  /api/info       model name, file size, parameters, configuration, training summary, limits
    POST /api/transfer   image|character [to=all|EXPRESSION|AFFECT] [source] [size] [matte] [format=png|json|sheet]
    POST /api/mix        image|character affect=anger=0.5,sadness=0.5 [source] [size] [matte] [format=png|json|sheet]
    POST /api/sample     [expression=neutral] [n=1] [seed=0] [size] [matte=none|key] [format=png|json|sheet]
    POST /api/morph      image|character [from=neutral] [to=joy] [frames=24] [fps=12] [loop] [size] [matte] [format=gif|apng|webp|json]
    POST /api/classify   image|character -> {"probabilities": {expression: p}, "distance": d, "recognised": r, "far": bool}
"""
from __future__ import annotations

import base64
from collections.abc import Callable

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from fexgan.errors import UserError, one_line
from fexgan.generation.animation import (
    ANIMATIONS,
    MEDIA_TYPES,
    animation_bytes,
    check_fps,
    frame_count,
    png_bytes,
    sprite_sheet,
)
from fexgan.generation.inference import generator_of
from fexgan.generation.matte import check_matte
from fexgan.serve.engine import MB, Engine, RequestError, Task

API_LINES = [line.strip() for line in __doc__.splitlines() if line.strip().startswith(("GET ", "POST "))]
FORM_SLACK = 64 * 1024  # room for the form fields and multipart boundaries around an upload


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    if fmt not in allowed:
        raise RequestError(f"format must be one of {', '.join(allowed)}, got '{fmt}'")
    return fmt


IMAGE_FORMATS = ("png", "json", "sheet")


def images_response(images: list[Image.Image], labels: list[str], fmt: str, source: str | None = None,
                    upscaled: str | None = None) -> Response:
    """PNG (several images side by side, their labels in X-Labels), JSON with base64 PNGs, or (sheet)
    JSON with the sprite sheet's PNG and its layout."""
    check_format(fmt, IMAGE_FORMATS)
    extra = {"upscaled": upscaled} if upscaled else {}
    sheet, layout = sprite_sheet(images, labels, image_name="sheet.png")
    if fmt == "json":
        return JSONResponse({"source": source, **extra, "images": [{"label": label, "png": b64(png_bytes(im))}
                                                                   for label, im in zip(labels, images)]})
    if fmt == "sheet":
        return JSONResponse({"source": source, **extra, "png": b64(png_bytes(sheet)), "layout": layout})
    headers = {"X-Labels": ",".join(labels), **({"X-Upscaled": upscaled} if upscaled else {})}
    return Response(png_bytes(sheet), media_type="image/png", headers=headers)


def animation_response(frames: list[Image.Image], fmt: str, fps: float, source: str,
                       upscaled: str | None = None) -> Response:
    """The frames as a GIF, APNG or WebP (their count read back in X-Frames), or JSON with a base64 GIF."""
    kind = "gif" if fmt == "json" else fmt
    data = animation_bytes(frames, kind, fps)
    count = frame_count(data)
    if fmt == "json":
        return JSONResponse({"source": source, "frames": count, "gif": b64(data),
                             **({"upscaled": upscaled} if upscaled else {})})
    return Response(data, media_type=MEDIA_TYPES[kind], headers={"X-Frames": str(count),
                                                     **({"X-Upscaled": upscaled} if upscaled else {})})


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


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON {"error": "..."}: user mistakes 4xx (429 with Retry-After when busy)."""
    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        status = getattr(err, "status", 400)
        return JSONResponse({"error": one_line(str(err))}, status, headers={"Retry-After": "1"} if status == 429 else None)

    @app.exception_handler(RequestValidationError)
    async def bad_fields(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": one_line(f"bad request fields: {problems}")}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": one_line(str(err.detail))}, err.status_code, headers=err.headers)


def create_api(engine: Engine) -> FastAPI:
    """The FastAPI app with the /api routes (the page is mounted on it by `create_app`). Each request
    is one `Engine.job`: checked, then decoded, drawn and encoded inside the gate."""
    app = FastAPI(title="fexgan", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    add_error_handlers(app)

    @app.get("/api")
    def index() -> dict:
        """The endpoints and their fields."""
        return {"endpoints": API_LINES, "openapi": "/api/openapi.json"}

    @app.get("/api/info")
    def info() -> dict:
        return engine.info()

    add_image_routes(app, engine)
    add_animation_routes(app, engine)

    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(path: str) -> None:
        raise RequestError(f"no such endpoint /api/{path}; see GET /api", 404)

    app.add_middleware(BodyLimit, max_upload_bytes=engine.limits.max_upload_bytes)
    return app


def reader(engine: Engine) -> Callable[[UploadFile | None], bytes | None]:
    """An upload's bytes, read to one byte past the limit (enough to tell that it is too large)."""
    limit = engine.limits.max_upload_bytes
    return lambda image: None if image is None else image.file.read(limit + 1)


def add_image_routes(app: FastAPI, engine: Engine) -> None:
    """transfer, mix and sample: answers of still images."""
    read = reader(engine)

    @app.post("/api/transfer")
    def transfer(image: UploadFile | None = File(None), character: str | None = Form(None), to: str = Form("all"),
                 source: str | None = Form(None), size: int | None = Form(None), matte: str = Form("auto"),
                 format: str = Form("png")) -> Response:
        check_format(format, IMAGE_FORMATS)
        check_matte(matte)
        _, labels, _ = engine.model.targets(to)
        with engine.job(Task(len(labels), size, read(image), character, source)) as face:
            images, labels = engine.transfer(face, to, size, matte)
            return images_response(images, labels, format, face.source, engine.check_size(size))

    @app.post("/api/mix")
    def mix(affect: str = Form(...), image: UploadFile | None = File(None), character: str | None = Form(None),
            source: str | None = Form(None), size: int | None = Form(None), matte: str = Form("auto"),
            format: str = Form("png")) -> Response:
        check_format(format, IMAGE_FORMATS)
        check_matte(matte)
        engine.model.affect(affect)
        with engine.job(Task(1, size, read(image), character, source)) as face:
            return images_response([engine.mix(face, affect, size, matte)], [affect], format, face.source,
                                   engine.check_size(size))

    @app.post("/api/sample")
    def sample(expression: str = Form("neutral"), n: int = Form(1), seed: int = Form(0), size: int | None = Form(None),
               matte: str = Form("none"), format: str = Form("png")) -> Response:
        check_format(format, IMAGE_FORMATS)
        check_matte(matte, has_input=False)
        engine.model.affect(expression)
        generator_of(seed)
        with engine.job(Task(engine.check_samples(n), size), needs_face=False):
            images = engine.sample(expression, n, seed, size, matte)
            return images_response(images, [f"{expression}_{i}" for i in range(n)], format,
                                   upscaled=engine.check_size(size))


def add_animation_routes(app: FastAPI, engine: Engine) -> None:
    """morph, and classify (which reads a face as the others do)."""
    read = reader(engine)

    @app.post("/api/morph")
    def morph(image: UploadFile | None = File(None), character: str | None = Form(None),
              start: str = Form("neutral", alias="from"), end: str = Form("joy", alias="to"),
              frames: int = Form(24), fps: float = Form(12), loop: bool = Form(False),
              source: str | None = Form(None), size: int | None = Form(None), matte: str = Form("auto"),
              format: str = Form("gif")) -> Response:
        check_format(format, (*ANIMATIONS, "json"))
        check_fps(fps)
        check_matte(matte)
        for name in (start, end):
            engine.model.affect(name)
        with engine.job(Task(engine.check_frames(frames), size, read(image), character, source)) as face:
            clip = engine.morph(face, [start, end], frames, loop, size, matte)
            return animation_response(clip, format, fps, face.source, engine.check_size(size))

    @app.post("/api/classify")
    def classify(image: UploadFile | None = File(None), character: str | None = Form(None)) -> dict:
        if engine.model.discriminator is None:
            raise RequestError("this model file has no discriminator, so it cannot classify expressions")
        with engine.job(Task(1, None, read(image), character)) as face:
            return {"expression": face.source, "probabilities": face.probabilities,
                    "distance": round(face.distance, 4), "recognised": round(face.recognised, 4), "far": face.far}
