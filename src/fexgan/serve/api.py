"""The HTTP API (FastAPI) at /api: answers PNG/GIF, or JSON with base64 images for format=json;
errors are JSON {"error": "..."}, 4xx for bad input and 503 when busy.

    GET  /api/info       model name, file size, parameters, configuration, training summary, limits
    POST /api/transfer   image|character [to=all|EXPRESSION|AFFECT] [source] [format=png|json]
    POST /api/mix        image|character affect=anger=0.5,sadness=0.5 [source] [format=png|json]
    POST /api/sample     [expression=neutral] [n=1] [seed=0] [format=png|json]
    POST /api/morph      image|character [from=neutral] [to=joy] [frames=24] [fps=12] [loop] [format=gif|json]
    POST /api/classify   image|character -> {"probabilities": {expression: p}}
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from fexgan.errors import UserError
from fexgan.outputs import gif_bytes
from fexgan.serve.engine import MB, Engine, Face, RequestError
from fexgan.visuals import image_grid

API_LINES = [line.strip() for line in __doc__.splitlines() if line.strip().startswith(("GET ", "POST "))]
FORM_SLACK = 64 * 1024  # room for the form fields and multipart boundaries around an upload


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


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON {"error": "..."}: user mistakes 4xx (503 with Retry-After when busy)."""
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


def create_api(engine: Engine) -> FastAPI:
    """The FastAPI app with the /api routes (the page is mounted on it by `create_app`)."""
    app = FastAPI(title="fexgan", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    limit = engine.limits.max_upload_bytes

    add_error_handlers(app)

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
