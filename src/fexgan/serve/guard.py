"""`FileGuard`: the page's Gradio routes may read, copy or serve files in the server's own folder only.

Gradio moves every file record a client sends (`{"path": ...}` in a request's data) into its cache
before any handler runs, and serves files by path at `.../file=PATH`; its own check of those paths
is made only by `launch()`, which a page mounted into FastAPI never calls. This middleware stands in
front of every route: a file route must name a file inside the folder, and a JSON body must hold no
"path" outside it; anything else is refused before Gradio sees it, with an answer that does not say
whether the path exists.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

MAX_JSON_BYTES = 1 << 20  # the page's own JSON requests are a few kB: uploads go to the upload route


def inside(path: str, folder: str) -> bool:
    """Whether `path` (symbolic links and '..' resolved) is `folder` or lies below it."""
    if "\x00" in path:
        return False
    real = os.path.realpath(path)
    return os.path.commonpath([real, folder]) == folder


def paths_in(data: Any) -> Iterator[str]:
    """Every value of a "path" key in a JSON document (file records at any depth)."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "path":
                yield value if isinstance(value, str) else repr(value)
            else:
                yield from paths_in(value)
    elif isinstance(data, list):
        for item in data:
            yield from paths_in(item)


class FileGuard:
    """ASGI middleware: refuse file routes and file records that name anything outside `folder`."""

    def __init__(self, app: Callable, folder: str | Path):
        self.app, self.folder = app, os.path.realpath(folder)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api"):
            return await self.app(scope, receive, send)
        route, _, target = scope["path"].partition("=")
        if target and route.endswith(("/file", "/proxy")) and not inside(target, self.folder):
            return await JSONResponse({"error": "no such file"}, 404)(scope, receive, send)
        headers = dict(scope["headers"])
        if scope["method"] != "POST" or b"json" not in headers.get(b"content-type", b""):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BYTES:
                return await JSONResponse({"error": "the request is too large"}, 413)(scope, receive, send)
        try:
            refused = any(not inside(p, self.folder) for p in paths_in(json.loads(body or b"null")))
        except ValueError:
            refused = False  # not JSON after all: Gradio answers it
        if refused:
            return await JSONResponse({"error": "a file named in the request was not received by this server; "
                                                "upload it again"}, 403)(scope, receive, send)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
