"""Shared fixtures: a private data cache for the whole session, small real PNG face trees, a tiny
trained model, judges trained in the background and real `fexgan serve` processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from fexgan.expressions import EXPRESSIONS
from fexgan.metrics.judge import Judge, get_judge

# The judges the tests read with, by fixture name: data source and size (64 px: the size a judge looks at).
JUDGES = {"judge": ("toon:8", 64),         # the six default characters, 8 images each (336 faces, 84 held out)
          "any_judge": ("toon:5:256", 64)}  # toon-any-64's 256 characters, 5 images each (its data has 20)
TRAIN_JUDGES = """
import sys, torch
from fexgan.metrics.judge import get_judge
torch.set_num_threads(1)
for spec, size in zip(sys.argv[1::2], sys.argv[2::2]):
    get_judge(spec, int(size))
    print("ready", spec, size, flush=True)
"""


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point FEXGAN_CACHE at a fresh folder so tests never read or fill the user's cache.

    Set in os.environ (not monkeypatch) so `fexgan` subprocesses inherit it too.
    """
    path = tmp_path_factory.mktemp("fexgan-cache")
    old = os.environ.get("FEXGAN_CACHE")
    os.environ["FEXGAN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FEXGAN_CACHE", None)
    else:
        os.environ["FEXGAN_CACHE"] = old


FACE_COLOURS = [(230, 180, 140), (120, 200, 120), (140, 160, 240), (240, 220, 90)]


def draw_face(identity: int, expression: int, n: int = 0, size: int = 40) -> Image.Image:
    """An RGBA cartoon face on a transparent background: the face colour and shape tell the
    identity, the mouth and brows tell the expression, `n` shifts it a little."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 40
    dx = (n % 3 - 1) * s
    box = [4 * s + dx, 4 * s, 36 * s + dx, 36 * s] if identity % 2 == 0 else [7 * s + dx, 2 * s, 33 * s + dx, 38 * s]
    d.ellipse(box, fill=FACE_COLOURS[identity % len(FACE_COLOURS)] + (255,))
    for ex in (14, 26):
        d.ellipse([(ex - 2) * s + dx, 14 * s, (ex + 2) * s + dx, 18 * s], fill=(0, 0, 0, 255))
        tilt = (expression - 3) * 0.8 * s
        d.line([(ex - 3) * s + dx, 11 * s - tilt, (ex + 3) * s + dx, 11 * s + tilt], fill=(60, 30, 0, 255), width=1)
    mouth_w = (4 + expression) * s
    mouth_h = (1 + (expression * 3) % 7) * s
    d.rectangle([20 * s - mouth_w / 2 + dx, 26 * s, 20 * s + mouth_w / 2 + dx, 26 * s + mouth_h],
                fill=(150 + 15 * expression, 20, 40, 255))
    return img


@pytest.fixture(scope="session")
def make_tree() -> Callable[..., Path]:
    """Write a tree of real PNG faces: `folder` layout <identity>/<expression>/<n>.png or
    `ferg` layout <char>/<char>_<expression>/<char>_<expression>_<n>.png."""

    def make(root: Path, layout: str = "folder", identities: int = 2, per_class: int = 2, size: int = 40,
             expressions: tuple[str, ...] = EXPRESSIONS) -> Path:
        for i in range(identities):
            ident = f"char{i}"
            for e, expr in enumerate(expressions):
                sub = root / ident / (expr if layout == "folder" else f"{ident}_{expr}")
                sub.mkdir(parents=True, exist_ok=True)
                for n in range(per_class):
                    name = f"{n}.png" if layout == "folder" else f"{ident}_{expr}_{n}.png"
                    draw_face(i, EXPRESSIONS.index(expr) if expr in EXPRESSIONS else e, n, size).save(sub / name)
        return root

    return make


@pytest.fixture(scope="session")
def face_folder(tmp_path_factory: pytest.TempPathFactory, make_tree: Callable[..., Path]) -> Path:
    """3 identities x 7 expressions x 3 images (63 PNGs) in the folder layout, for training tests."""
    return make_tree(tmp_path_factory.mktemp("faces"), "folder", identities=3, per_class=3)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file of the `tiny` preset trained on `toon:4` (32 px), once per session: 200 steps
    (a few seconds) with a light L1 weight, so that its outputs visibly follow the affect."""
    from fexgan.presets import build_config
    from fexgan.training.loop import train

    cfg = build_config("tiny", overrides=["data.source=toon:4", "run.device=cpu", "run.threads=1", "run.steps=200", "losses.gamma=10",
                                          "optimiser.lr=1e-3"])
    return train(cfg, tmp_path_factory.mktemp("tiny-model") / "run", progress=False)


class BackgroundJudges:
    """Judges trained one after another by `get_judge` in a background process on one thread, into the
    session's cache, while the tests before their first reader run on the other core."""

    def __init__(self, wanted: list[tuple[str, int]], log: Path):
        self.wanted, self.log, self.proc = wanted, log, None
        if wanted:
            with log.open("w") as out:   # a session of its own: `stop` ends its render workers too
                self.proc = subprocess.Popen([sys.executable, "-c", TRAIN_JUDGES, *(str(a) for d in wanted for a in d)],
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, spec: str, size: int) -> Judge:
        """The judge once the background process has trained it, loaded from the session's cache."""
        if (spec, size) in self.wanted:
            while f"ready {spec} {size}" not in self.log.read_text().splitlines():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"training the judges failed:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.5)
        return get_judge(spec, size, log=lambda line: None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="session", autouse=True)
def background_judges(request: pytest.FixtureRequest, private_cache: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundJudges]:
    """Start training the judges that the selected tests read with (`JUDGES`) as the session starts."""
    items = request.session.items
    wanted = [data for name, data in JUDGES.items() if any(name in item.fixturenames for item in items)]
    judges = BackgroundJudges(wanted, tmp_path_factory.mktemp("judges") / "train.log")
    yield judges
    judges.stop()


@pytest.fixture(scope="session")
def judge(background_judges: BackgroundJudges) -> Judge:
    """The judge of the six toon characters; tests/metrics/test_metrics.py checks it and the test of the
    shipped toon-128 model reads with it."""
    return background_judges.get(*JUDGES["judge"])


@pytest.fixture(scope="session")
def any_judge(background_judges: BackgroundJudges) -> Judge:
    """The judge of toon-any-64's characters."""
    return background_judges.get(*JUDGES["any_judge"])


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Start `fexgan serve MODEL ARGS...` on a free localhost port and wait until it answers;
    returns its base URL. Every server started is stopped at the end of the session."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    servers: list[subprocess.Popen] = []

    def start(model: Path, *args: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path_factory.mktemp("serve") / "server.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "fexgan"), "serve", str(model),
                                     "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT)
        servers.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"fexgan serve exited with {proc.returncode}: {log.read_text()}")
            try:
                urllib.request.urlopen(f"{url}/api/info", timeout=2).read()
                return url
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"fexgan serve did not answer within 120 s: {log.read_text()}")

    yield start
    for proc in servers:
        proc.terminate()
    for proc in servers:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Small tensors on a shared 2-core machine: one thread is as fast and never spins.
    Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def losses(run: Path, validation: bool = True) -> list[dict]:
    """Logged records without the wall-clock fields (and without the checkpoints' validation metrics,
    which depend on when checkpoints are taken, with `validation=False`)."""
    return [{k: v for k, v in json.loads(line).items()
             if k not in ("time", "images_per_s") and (validation or not k.startswith("val"))}
            for line in (run / "log.jsonl").read_text().splitlines()]


def same_tensors(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
