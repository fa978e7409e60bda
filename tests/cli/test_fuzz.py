"""Every error is one line, everywhere: Hypothesis throws arguments at the generation commands (run
in-process through the real entry point, `fexgan.cli.main.main`) and fields at every HTTP endpoint of a real
server, and fails on a traceback, an exit status other than 0 or 2, or an HTTP 500.

FEXGAN_FUZZ_EXAMPLES sets the examples per command or endpoint (the suite's default keeps it short;
benchmarks/RESULTS.md gives a long run)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fexgan.data import toon
from fexgan.expressions import EXPRESSIONS

EXAMPLES = int(os.environ.get("FEXGAN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
numbers = st.one_of(st.integers(-3, 40), st.integers(), st.floats(allow_nan=True)).map(str)
affects = st.one_of(st.sampled_from([*EXPRESSIONS, "all", "joy=0.5,surprise=0.5", "anger=nan", "joy=0.5,joy=0.5",
                                     "joy=-1", "joy=0", "joy=1e400", "joy,anger", "=", ",", "joy=0.5, sadness=0.5"]),
                    words,
                    st.lists(st.tuples(st.sampled_from(EXPRESSIONS), numbers), min_size=1, max_size=3)
                    .map(lambda pairs: ",".join(f"{k}={v}" for k, v in pairs)))
sizes = st.one_of(st.sampled_from(["16", "32", "64", "4096", "5000", "0", "-1", "1e3"]), numbers)
formats = st.one_of(st.sampled_from(["png", "strip", "sheet", "frames", "gif", "apng", "webp", "json"]), words)
mattes = st.one_of(st.sampled_from(["auto", "input", "outline", "key", "none"]), words)


def option(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    """--name VALUE, or nothing."""
    return st.one_of(st.just([]), values.map(lambda v: [name, v]))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-inputs")
    face = toon.render_face(toon.make_characters(1)[0], "neutral", size=48)
    face.save(folder / "face.png")
    (folder / "faces" / "a").mkdir(parents=True)
    face.convert("RGB").save(folder / "faces" / "a" / "f.jpg")
    (folder / "notes.png").write_text("not an image")
    (folder / "empty").mkdir()
    Image.new("L", (200, 2)).save(folder / "line.png")
    return {"face": folder / "face.png", "folder": folder / "faces", "text": folder / "notes.png",
            "empty": folder / "empty", "line": folder / "line.png", "missing": folder / "nope.png"}


def run_cli(args: list[str]) -> tuple[int, str]:
    """`fexgan ARGS` in this process: (exit status, stdout + stderr)."""
    from fexgan.cli.main import main

    out = io.StringIO()
    old = sys.argv
    sys.argv = ["fexgan", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue()


def check_cli(args: list[str], out: Path) -> None:
    try:
        code, text = run_cli(args)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert code in (0, 2), (args, code, text)
    assert "Traceback" not in text, (args, text)
    if code == 2:
        lines = text.splitlines()
        assert lines[-1].startswith("error: ") and all(line.startswith("warning: ") for line in lines[:-1]), (args, text)


def outs(tmp: Path) -> st.SearchStrategy[str]:
    return st.sampled_from(["o", "o.png", "o.gif", "o.webp", "o.jpg", "o.txt", "o/x.png"]).map(lambda n: str(tmp / n))


@pytest.fixture(scope="module")
def model_arg(tiny_model: Path) -> str:
    return str(tiny_model)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-out")


def models(model: str) -> st.SearchStrategy[str]:
    return st.one_of(st.just(model), st.sampled_from(["nope", "/nonexistent/model.safetensors", ""]), words)


def images(inputs: dict[str, Path]) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(inputs)).map(lambda k: str(inputs[k]))


def test_sample_arguments(model_arg: str, out_dir: Path) -> None:
    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        args = ["sample", data.draw(models(model_arg)), "--out", data.draw(outs(out_dir))]
        for name, values in (("--expression", affects), ("--n", numbers), ("--seed", numbers), ("--size", sizes),
                             ("--format", formats), ("--matte", mattes), ("--fps", numbers)):
            args += data.draw(option(name, values))
        check_cli(args, out_dir)
    fuzz()


@pytest.mark.parametrize("command", ["transfer", "mix"])
def test_transfer_and_mix_arguments(command: str, model_arg: str, inputs: dict[str, Path], out_dir: Path) -> None:
    target = "--to" if command == "transfer" else "--affect"

    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        args = [command, data.draw(models(model_arg)), data.draw(images(inputs)), target, data.draw(affects),
                "--out", data.draw(outs(out_dir))]
        for name, values in (("--from", affects), ("--size", sizes), ("--format", formats), ("--matte", mattes),
                             ("--columns", numbers), ("--fps", numbers), ("--seed", numbers)):
            args += data.draw(option(name, values))
        args += data.draw(st.sampled_from([[], ["--keep-size"], ["--sample-latent"]]))
        check_cli(args, out_dir)
    fuzz()


def test_morph_arguments(model_arg: str, inputs: dict[str, Path], out_dir: Path) -> None:
    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        args = ["morph", data.draw(models(model_arg)), data.draw(images(inputs)), "--out", data.draw(outs(out_dir))]
        for name, values in (("--from", affects), ("--to", affects), ("--via", affects), ("--frames", numbers),
                             ("--fps", numbers), ("--size", sizes), ("--format", formats), ("--matte", mattes),
                             ("--source", affects), ("--columns", numbers)):
            args += data.draw(option(name, values))
        args += data.draw(st.sampled_from([[], ["--loop"]]))
        check_cli(args, out_dir)
    fuzz()


# ----------------------------------------------------------------------------- the HTTP API
@pytest.fixture(scope="module")
def api(tiny_model: Path, start_server) -> httpx.Client:
    with httpx.Client(base_url=start_server(tiny_model), timeout=120) as client:
        yield client


ENDPOINTS = {
    "/api/transfer": {"to": affects, "source": affects, "size": sizes, "matte": mattes, "format": formats},
    "/api/mix": {"affect": affects, "source": affects, "size": sizes, "matte": mattes, "format": formats},
    "/api/sample": {"expression": affects, "n": numbers, "seed": numbers, "size": sizes, "matte": mattes,
                    "format": formats},
    "/api/morph": {"from": affects, "to": affects, "frames": numbers, "fps": numbers, "loop": words, "source": affects,
                   "size": sizes, "matte": mattes, "format": formats},
    "/api/classify": {},
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_api_fields(endpoint: str, api: httpx.Client, inputs: dict[str, Path]) -> None:
    fields = {name: st.one_of(st.none(), values) for name, values in ENDPOINTS[endpoint].items()}
    fields["character"] = st.one_of(st.none(), st.sampled_from([*toon.DEFAULT_CHARACTERS, "zed"]), words)

    @FUZZ
    @given(st.fixed_dictionaries(fields), st.one_of(st.none(), st.sampled_from(["face", "text", "line", "folder"])))
    def fuzz(form: dict, upload: str | None) -> None:
        form = {k: v for k, v in form.items() if v is not None}
        files = None
        if upload is not None:
            data = b"" if upload == "folder" else inputs[upload].read_bytes()
            files = {"image": ("upload.png", data, "image/png")}
        response = api.post(endpoint, data=form, files=files)
        assert response.status_code < 500 or response.status_code == 503, (form, upload, response.text)
        if response.status_code >= 400:
            assert list(response.json()) == ["error"] and "\n" not in response.json()["error"], response.text
    fuzz()
