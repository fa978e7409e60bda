"""The HTTP API of `fexgan serve`, against the real server process with a real HTTP client:
every operation, the bad inputs (each a 4xx JSON error, the server answering afterwards), the
upload limits, the bounded queue and the command's own errors."""
from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from fexgan.data import toon
from fexgan.expressions import EXPRESSIONS

SIZE = 32  # the tiny preset's image size
FEXGAN = Path(sys.executable).parent / "fexgan"


@pytest.fixture(scope="module")
def api(tiny_model: Path, start_server) -> httpx.Client:
    url = start_server(tiny_model, "--max-upload-mb", "1", "--max-pixels", "1")
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def face() -> bytes:
    """A toon face as a user would upload it: 100 px RGBA PNG."""
    return png_bytes(toon.render_face(toon.make_characters(2)[1], "neutral", size=100))


def header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header that claims width x height pixels, with (almost) no pixel data: a tiny
    file that would need gigabytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def image_of(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def test_info_describes_the_model_and_the_limits(api: httpx.Client, tiny_model: Path) -> None:
    info = api.get("/api/info").json()
    assert info["name"] == tiny_model.parent.name  # a run folder's model.safetensors is named after the run
    assert info["bytes"] == tiny_model.stat().st_size
    assert info["classes"] == list(EXPRESSIONS)
    assert info["config"]["image_size"] == SIZE and info["parameters"]["generator"] > 0
    assert info["summary"]["steps"] == 200 and info["summary"]["data"] == "toon:4"
    assert info["characters"] == list(toon.DEFAULT_CHARACTERS)
    assert info["limits"]["max_upload_bytes"] == 2**20 and info["limits"]["max_pixels"] == 2**20
    assert info["file"] == "model.safetensors" and info["pending"] == 0  # a name, never a server folder
    assert len(api.get("/api").json()["endpoints"]) == 6


def test_listens_on_localhost_only_by_default(api: httpx.Client) -> None:
    tcp = Path("/proc/net/tcp")
    if not tcp.exists():
        pytest.skip("needs Linux /proc/net/tcp")
    port = f"{httpx.URL(str(api.base_url)).port:04X}"
    listening = [line.split()[1] for line in tcp.read_text().splitlines()[1:]
                 if line.split()[1].endswith(f":{port}") and line.split()[3] == "0A"]
    assert listening == [f"0100007F:{port}"]  # 127.0.0.1, not 0.0.0.0


def test_transfer_a_character_to_every_expression(api: httpx.Client) -> None:
    response = api.post("/api/transfer", data={"character": "bo"})
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-labels"].split(",") == list(EXPRESSIONS)
    assert image_of(response).size == (7 * SIZE, SIZE)


def test_transfer_an_upload_as_png_and_as_json(api: httpx.Client, face: bytes) -> None:
    one = api.post("/api/transfer", files={"image": ("face.png", face, "image/png")}, data={"to": "joy"})
    assert image_of(one).size == (SIZE, SIZE)
    body = api.post("/api/transfer", files={"image": ("face.png", face)},
                    data={"source": "neutral", "format": "json"}).json()
    assert body["source"] == "neutral" and [i["label"] for i in body["images"]] == list(EXPRESSIONS)
    faces = [Image.open(io.BytesIO(base64.b64decode(i["png"]))) for i in body["images"]]
    assert all(f.size == (SIZE, SIZE) for f in faces)
    assert len({f.tobytes() for f in faces}) == 7  # seven different pictures
    # without a source the classifier reads the face's expression
    assert api.post("/api/transfer", files={"image": ("face.png", face)},
                    data={"format": "json"}).json()["source"] in EXPRESSIONS


def test_mix_sample_morph_classify(api: httpx.Client, face: bytes) -> None:
    mixed = api.post("/api/mix", data={"character": "ada", "affect": "anger=0.5,sadness=0.5"})
    pure = api.post("/api/mix", data={"character": "ada", "affect": "anger"})
    assert image_of(mixed).size == image_of(pure).size == (SIZE, SIZE) and mixed.content != pure.content

    three = api.post("/api/sample", data={"expression": "joy", "n": 3, "seed": 7})
    assert image_of(three).size == (3 * SIZE, SIZE)
    assert api.post("/api/sample", data={"expression": "joy", "n": 3, "seed": 7}).content == three.content
    assert api.post("/api/sample", data={"expression": "joy", "n": 3, "seed": 8}).content != three.content

    gif = api.post("/api/morph", files={"image": ("face.png", face)},
                   data={"from": "neutral", "to": "surprise", "frames": 6, "fps": 10})
    assert gif.headers["content-type"] == "image/gif"
    assert image_of(gif).n_frames == 6 and gif.headers["x-frames"] == "6"  # every frame, identical ones too
    body = api.post("/api/morph", data={"character": "cleo", "frames": 4, "format": "json"}).json()
    assert body["frames"] == 4 and Image.open(io.BytesIO(base64.b64decode(body["gif"]))).n_frames == 4

    reading = api.post("/api/classify", files={"image": ("face.png", face)}).json()
    assert set(reading["probabilities"]) == set(EXPRESSIONS)
    assert abs(sum(reading["probabilities"].values()) - 1) < 1e-4
    assert reading["expression"] == max(reading["probabilities"], key=reading["probabilities"].get)


def test_the_api_returns_what_the_library_computes(api: httpx.Client, face: bytes, tiny_model: Path) -> None:
    """/api/transfer, /api/mix and /api/classify on an uploaded face: the same pixels and probabilities as
    `FExGAN.transfer` / `mix` / `classify` on the same bytes (one preprocessing, one encode/decode path)."""
    import fexgan

    model = fexgan.load(tiny_model, "cpu")
    upload = {"image": ("face.png", face, "image/png")}
    body = api.post("/api/transfer", files=upload, data={"source": "neutral", "format": "json"}).json()
    served = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i["png"])))) for i in body["images"]]
    library = [np.asarray(im) for im in model.transfer(face, to="all", source="neutral")]
    assert len(served) == len(library) == 7 and served[0].shape == (SIZE, SIZE, 4)   # RGBA: the upload is
    assert all(np.array_equal(a, b) for a, b in zip(served, library))

    mixed = np.asarray(image_of(api.post("/api/mix", files=upload, data={"affect": "anger=0.5,sadness=0.5",
                                                                          "source": "neutral", "size": 64})))
    assert np.array_equal(mixed, np.asarray(model.mix(face, "anger=0.5,sadness=0.5", source="neutral", size=64)))

    reading = api.post("/api/classify", files=upload).json()
    served_p, library_p = reading["probabilities"], model.classify(face)
    assert set(served_p) == set(library_p)
    assert all(abs(served_p[k] - library_p[k]) < 1e-4 for k in served_p), (served_p, library_p)
    known = model.familiarity_tensor(model.prepare(face))
    assert abs(reading["distance"] - known["distance"][0].item()) < 1e-3
    assert abs(reading["recognised"] - known["recognised"][0].item()) < 1e-3 and reading["far"] == known["far"][0].item()


def test_a_transparent_face_stays_transparent_in_every_endpoint(api: httpx.Client) -> None:
    """A 128 px transparent PNG in, transparent PNG/APNG/WebP/GIF out at 128 px: every pixel clear in the
    input is clear in the output, every opaque one opaque."""
    face = toon.render_face(toon.make_characters(3)[2], "neutral", size=128)
    a = np.asarray(face.getchannel("A"))
    clear, solid = a == 0, a == 255
    upload = {"image": ("face.png", png_bytes(face), "image/png")}

    def cut_out(image: Image.Image) -> bool:
        got = np.asarray(image.convert("RGBA").getchannel("A"))
        return got.shape == a.shape and got[clear].max() == 0 and got[solid].min() == 255

    strip = api.post("/api/transfer", files=upload, data={"size": 128})
    assert "upscaled from the model's 32 px to 128 px" in strip.headers["x-upscaled"]
    sheet = image_of(strip)
    assert sheet.size == (7 * 128, 128) and all(cut_out(sheet.crop((x, 0, x + 128, 128))) for x in range(0, 896, 128))
    body = api.post("/api/transfer", files=upload, data={"to": "joy", "size": 128, "format": "sheet"}).json()
    assert body["layout"]["frames"][0]["filename"] == "joy" and body["layout"]["meta"]["size"] == {"w": 128, "h": 128}
    assert cut_out(Image.open(io.BytesIO(base64.b64decode(body["png"]))))
    assert cut_out(image_of(api.post("/api/mix", files=upload, data={"affect": "joy=0.5,surprise=0.5", "size": 128})))
    for kind in ("gif", "apng", "webp"):  # joy to joy: five identical frames, all kept
        anim = image_of(api.post("/api/morph", files=upload, data={"from": "joy", "to": "joy", "frames": 5,
                                                                   "size": 128, "format": kind}))
        assert anim.n_frames == 5, kind
        anim.seek(4)
        assert cut_out(anim), kind
    assert np.asarray(image_of(api.post("/api/transfer", files=upload, data={"to": "joy", "matte": "none"}))).shape == (
        SIZE, SIZE, 3)
    drawn = image_of(api.post("/api/sample", data={"expression": "joy", "n": 2, "matte": "key"}))
    assert drawn.mode == "RGBA" and drawn.size == (2 * SIZE, SIZE)


BAD_REQUESTS = {
    # name: (endpoint, form fields, uploaded file or None, status, words in the message)
    "not an image": ("/api/transfer", {}, b"hello, this is text", 415, ["not an image"]),
    "empty file": ("/api/transfer", {}, b"", 400, ["empty"]),
    "truncated image": ("/api/transfer", {}, "truncated", 400, ["cannot read"]),
    "too large": ("/api/transfer", {}, b"\0" * (2**20 + 100_000), 413, ["limit", "MB"]),
    "too many pixels": ("/api/transfer", {}, "1500x1500", 413, ["1500x1500", "1 megapixels"]),
    "pixel bomb": ("/api/classify", {}, "bomb", 413, ["too many pixels"]),
    "unknown expression": ("/api/transfer", {"character": "ada", "to": "smirk"}, None, 400, ["smirk", *EXPRESSIONS]),
    "unknown source": ("/api/transfer", {"source": "smirk"}, "face", 400, ["smirk"]),
    "unknown affect": ("/api/mix", {"character": "ada", "affect": "joy=0.5,glee=0.5"}, None, 400, ["glee"]),
    "bad weight": ("/api/mix", {"character": "ada", "affect": "joy=lots"}, None, 400, ["lots"]),
    "unknown character": ("/api/transfer", {"character": "zed"}, None, 400, ["zed", "ada"]),
    "no face": ("/api/transfer", {}, None, 400, ["image", "character"]),
    "missing affect": ("/api/mix", {"character": "ada"}, None, 422, ["affect"]),
    "bad number": ("/api/sample", {"n": "many"}, None, 422, ["n"]),
    "too many samples": ("/api/sample", {"n": 1000}, None, 400, ["16"]),
    "too many frames": ("/api/morph", {"character": "ada", "frames": 5000}, None, 400, ["frames", "96"]),
    "bad format": ("/api/transfer", {"character": "ada", "format": "xml"}, None, 400, ["xml", "json"]),
    "bad animation format": ("/api/morph", {"character": "ada", "format": "mp4"}, None, 400, ["mp4", "apng", "webp"]),
    "size too large": ("/api/transfer", {"character": "ada", "size": 5000}, None, 400, ["size", "1024"]),
    "unknown matte": ("/api/mix", {"character": "ada", "affect": "joy", "matte": "green"}, None, 400, ["green", "key"]),
    "negative weight": ("/api/mix", {"character": "ada", "affect": "joy=-1"}, None, 400, ["negative"]),
    "bare list": ("/api/transfer", {"character": "ada", "to": "joy,anger"}, None, 400, ["without weights"]),
    "unknown source of a character": ("/api/transfer", {"character": "ada", "source": "smirk"}, None, 400, ["smirk"]),
    "image and character": ("/api/transfer", {"character": "ada"}, "face", 400, ["not both"]),
    "weight not a number": ("/api/mix", {"character": "ada", "affect": "joy=nan"}, None, 400, ["not a number"]),
    "weight given twice": ("/api/mix", {"character": "ada", "affect": "joy=0.5,joy=0.5"}, None, 400, ["twice"]),
    "seed too large": ("/api/sample", {"seed": str(10**23)}, None, 400, ["seed", "9223372036854775807"]),
    "negative seed": ("/api/sample", {"seed": -1}, None, 400, ["seed"]),
    "a line of pixels": ("/api/transfer", {}, "10000x1", 400, ["10000x1"]),
    "unknown endpoint": ("/api/smile", {"character": "ada"}, None, 404, ["/api/smile"]),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(api: httpx.Client, face: bytes, case: str) -> None:
    endpoint, fields, upload, status, words = BAD_REQUESTS[case]
    if isinstance(upload, str):
        upload = {"face": face, "truncated": face[: len(face) // 2], "bomb": header_only_png(100_000, 100_000),
                  "1500x1500": png_bytes(Image.new("L", (1500, 1500))),
                  "10000x1": png_bytes(Image.new("L", (10000, 1)))}[upload]
    files = {"image": ("upload.png", upload, "image/png")} if upload is not None else None
    response = api.post(endpoint, data=fields, files=files)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert all(w in message for w in words), message
    assert api.post("/api/transfer", data={"character": "ada", "to": "joy"}).status_code == 200


def test_a_streamed_body_over_the_limit_is_cut_off(api: httpx.Client) -> None:
    """No Content-Length (chunked): the limit applies while the body arrives."""
    boundary = b"fexganboundary"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")

    def body():
        yield head
        for _ in range(40):  # 2.5 MB in 64 KiB pieces
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    response = api.post("/api/transfer", content=body(),
                        headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert api.get("/api/info").status_code == 200


def test_many_clients_at_once_are_all_served(api: httpx.Client, face: bytes) -> None:
    def call(i: int) -> int:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            return client.post("/api/mix", files={"image": ("f.png", face)},
                               data={"affect": f"joy={i / 16},surprise={1 - i / 16}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(call, range(16))) == [200] * 16


def test_the_gate_bounds_running_and_waiting_calls_and_their_pixels() -> None:
    from fexgan.serve import Gate, Limits, RequestError

    gate = Gate(Limits(workers=1, max_waiting=1, max_work_pixels=100, max_queued_pixels=150))
    inside, release = threading.Event(), threading.Event()

    def hold(pixels: int) -> None:
        with gate(pixels):
            inside.set()
            release.wait(10)

    def refused(pixels: int) -> RequestError:
        with pytest.raises(RequestError) as err, gate(pixels):
            pass
        return err.value

    assert refused(101).status == 413 and "megapixels of work" in str(refused(101))  # too much alone
    first, second = threading.Thread(target=hold, args=(100,)), threading.Thread(target=hold, args=(40,))
    first.start()
    assert inside.wait(10)
    assert refused(60).status == 429  # 100 + 60 would pass the 150 in line
    inside.clear()
    second.start()
    while gate.pending < 2:  # until the second call waits in line
        time.sleep(0.01)
    assert gate.queued == 140
    busy = refused(1)  # the line is full
    assert busy.status == 429 and "busy" in str(busy)
    release.set()
    first.join(10)
    second.join(10)
    assert gate.pending == gate.queued == 0
    with gate(100):  # free again
        pass


def test_model_calls_outside_a_job_are_refused(tiny_model: Path) -> None:
    """The engine's operations run only inside the gate, so no caller can skip it."""
    import torch

    from fexgan.files.checkpoint import load_model
    from fexgan.generation.inference import FExGAN
    from fexgan.serve import Engine, Task

    engine = Engine(FExGAN(load_model(tiny_model, "cpu"), torch.device("cpu"), tiny_model))
    with pytest.raises(RuntimeError, match="inside"):
        engine.sample("joy", 1, 0)
    with engine.job(Task(character="ada")) as face:
        assert engine.sample("joy", 1, 0)[0].size == (SIZE, SIZE)
    with pytest.raises(RuntimeError, match="inside"):
        engine.transfer(face, "joy")


def test_command_errors_are_one_line(tmp_path: Path, api: httpx.Client, tiny_model: Path) -> None:
    cases = {(str(tmp_path / "nope.safetensors"),): ["nope.safetensors", "not found"],
             (str(tiny_model), "--port", str(httpx.URL(str(api.base_url)).port)): ["cannot listen", "in use", "--port"]}
    procs = {args: subprocess.Popen([str(FEXGAN), "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for args in cases}  # side by side: each starts Python, torch, gradio
    for args, proc in procs.items():
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr
        assert all(w in lines[0] for w in cases[args]), lines[0]


def test_a_generator_only_model_assumes_neutral_faces(tiny_model: Path, face: bytes) -> None:
    """A model file without its discriminator cannot read expressions: faces count as neutral."""
    import torch

    from fexgan.files.checkpoint import load_model
    from fexgan.generation.inference import FExGAN
    from fexgan.serve import Engine, Task, describe

    engine = Engine(FExGAN(load_model(tiny_model, "cpu", discriminator=False), torch.device("cpu"), tiny_model))
    with engine.job(Task(upload=face)) as upload:
        assert upload.source == "neutral" and upload.probabilities is None
        images, labels = engine.transfer(upload, "all")
    assert labels == list(EXPRESSIONS) and all(im.size == (SIZE, SIZE) for im in images)
    assert "discriminator" not in engine.info()["parameters"]
    assert "trained 200 steps" in describe(engine.info())
