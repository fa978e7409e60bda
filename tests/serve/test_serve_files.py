"""The page of `fexgan serve` opens, copies and serves no server file that a client names: requests
replayed against the real server process, as an attacker would send them to Gradio's routes."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

UPLOAD_FN, UPLOAD_TRIGGER = 0, 6  # the page's upload handler and its trigger, as /config lists them


@pytest.fixture(scope="module")
def server(tiny_model: Path, start_server) -> str:
    return start_server(tiny_model)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Server files no client may reach: an image and a text file, and symbolic links to them."""
    folder = tmp_path_factory.mktemp("secrets")
    image, text = folder / "secret.png", folder / "secret.txt"
    Image.new("RGB", (64, 64), (201, 13, 77)).save(image)
    text.write_text("the server's private words")
    (folder / "link.png").symlink_to(image)
    return {"image": image, "text": text, "link": folder / "link.png"}


def file_record(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def join(url: str, data: list, fn: int = UPLOAD_FN, trigger: int = UPLOAD_TRIGGER) -> httpx.Response:
    """Put a call of the page's function `fn` in Gradio's queue, as the browser does."""
    body = {"fn_index": fn, "trigger_id": trigger, "data": data, "session_hash": os.urandom(6).hex()}
    return httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=30)


def server_folder(url: str) -> Path:
    """The folder the server keeps uploads in, from an upload of its own."""
    png = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(png, format="PNG")
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": ("face.png", png.getvalue(), "image/png")})
    return Path(response.json()[0]).parent.parent


def copies_of(folder: Path, secret: Path) -> list[Path]:
    data = secret.read_bytes()
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == data]


def paths_to(secrets: dict[str, Path]) -> list[str]:
    image = secrets["image"]
    relative = os.path.relpath(image, Path.cwd())
    return [str(image), str(secrets["text"]), str(secrets["link"]), relative, f"../../../..{image}",
            f"{image.parent}/./secret.png", f"file={image}", "/nonexistent/face.png", f"http://127.0.0.1/{image}"]


def test_a_file_record_naming_a_server_path_is_refused(server: str, secrets: dict[str, Path]) -> None:
    folder = server_folder(server)
    for path in paths_to(secrets):
        for data in ([file_record(path), 0, 0, 0, 1, 0, 0, 0],           # the upload's own input
                     [[file_record(path)], 0, 0, 0, 1, 0, 0, 0],         # nested in a list
                     [{"value": file_record(path)}, 0, 0, 0, 1, 0, 0, 0]):  # nested as a property
            response = join(server, data)
            assert response.status_code == 403, (path, response.text)
            assert "not received by this server" in response.json()["error"]  # the same words for every path
        response = join(server, [None, file_record(path), 0, 0, 1, 0, 0, 0], fn=4, trigger=13)  # in a slider
        assert response.status_code == 403, (path, response.text)
    for secret in (secrets["image"], secrets["text"]):
        assert copies_of(folder, secret) == []


def test_a_link_planted_in_the_upload_folder_is_not_followed(server: str, secrets: dict[str, Path]) -> None:
    folder = server_folder(server)
    planted = folder / "planted.png"
    planted.symlink_to(secrets["image"])
    try:
        assert join(server, [file_record(str(planted)), 0, 0, 0, 1, 0, 0, 0]).status_code == 403
        assert httpx.get(f"{server}/gradio_api/file={planted}").status_code == 404
    finally:
        planted.unlink()


def test_the_file_route_serves_only_what_the_page_received_or_made(server: str, secrets: dict[str, Path]) -> None:
    for path in [*paths_to(secrets), "/etc/passwd"]:
        for route in ("/gradio_api/file=", "/file=", "/gradio_api/proxy="):
            response = httpx.get(f"{server}{route}{path}")
            assert response.status_code in (403, 404), (route, path, response.status_code)
            assert b"private words" not in response.content and response.content[:4] != b"\x89PNG"
    png = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(png, format="PNG")
    mine = httpx.post(f"{server}/gradio_api/upload", files={"files": ("me.png", png.getvalue(), "image/png")}).json()[0]
    assert httpx.get(f"{server}/gradio_api/file={mine}").content == png.getvalue()


def test_an_upload_the_server_received_is_transferred(server: str) -> None:
    """The guard lets the page's own flow through: upload, then the strip of the uploaded face."""
    png = io.BytesIO()
    Image.new("RGB", (48, 48), (250, 220, 200)).save(png, format="PNG")
    path = httpx.post(f"{server}/gradio_api/upload", files={"files": ("f.png", png.getvalue(), "image/png")}).json()[0]
    body = {"fn_index": UPLOAD_FN, "trigger_id": UPLOAD_TRIGGER, "data": [file_record(path), 0, 0, 0, 1, 0, 0, 0],
            "session_hash": "guardok"}
    assert httpx.post(f"{server}/gradio_api/queue/join", json=body, timeout=30).status_code == 200
    with httpx.stream("GET", f"{server}/gradio_api/queue/data?session_hash=guardok", timeout=120) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                assert message["success"], message
                strip = message["output"]["data"][3]
                assert strip["path"].startswith(str(server_folder(server)))
                break
