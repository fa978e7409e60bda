"""`fexgan serve`: a web demo (Gradio, `fexgan.serve.page`) and a small HTTP API (FastAPI,
`fexgan.serve.api`) over one loaded model (`fexgan.serve.engine`), on one port.
"""
from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from PIL import Image

from fexgan.errors import UserError, warn
from fexgan.generation.inference import FExGAN
from fexgan.serve.api import create_api
from fexgan.serve.engine import Engine, Limits
from fexgan.serve.guard import FileGuard
from fexgan.serve.page import CSS, build_page, gradio


def create_app(engine: Engine, uploads: Path) -> FastAPI:
    """The API with the page mounted at /. `uploads` (a folder of this server's own) is where Gradio
    keeps what the page received and produced; its routes touch no file outside it (`FileGuard`)."""
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)  # read by Gradio's routes and components as they are built
    app = create_api(engine)
    page = build_page(engine, uploads)
    app = gradio().mount_gradio_app(app, page, path="/", footer_links=[], run_history=False, show_error=True,
                                    max_file_size=engine.limits.max_upload_bytes, css=CSS)
    app.add_middleware(FileGuard, folder=uploads)
    return app


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
    if min(limits.max_upload_bytes, limits.max_pixels, limits.max_work_pixels, limits.workers) < 1 \
            or limits.max_queued_pixels < limits.max_work_pixels:
        raise UserError("--max-upload-mb, --max-pixels, --max-work and --workers must be positive, and --max-queued "
                        "at least --max-work")
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
        warn(f"{host} is reachable from other machines and the demo has no login")
    with tempfile.TemporaryDirectory(prefix="fexgan-serve-") as uploads:
        config = uvicorn.Config(create_app(engine, Path(uploads)), log_level="warning", timeout_graceful_shutdown=3)
        uvicorn.Server(config).run(sockets=[sock])
