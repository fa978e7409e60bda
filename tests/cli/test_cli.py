"""`fexgan train` as a user runs it: the real executable, bad input -> one line, exit 2, nothing written."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fexgan.expressions import EXPRESSIONS
from fexgan.presets import build_config
from fexgan.training.loop import train

FEXGAN = Path(sys.executable).parent / "fexgan"


def fexgan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEXGAN), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for w in words:
        assert w in lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, face_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    cfg = build_config("tiny", overrides=[f"data.source=folder:{face_folder}", "run.device=cpu", "run.threads=1", "run.steps=1"])
    train(cfg, out, progress=False)
    return out


@pytest.mark.parametrize("case", ["missing", "empty", "unknown"])
def test_bad_data_folder_is_one_line_and_writes_nothing(tmp_path: Path, make_tree: Callable[..., Path],
                                                        case: str) -> None:
    data = tmp_path / "data [v2]"  # brackets must survive the terminal markup
    if case == "empty":
        data.mkdir()
    if case == "unknown":
        make_tree(data, "folder", identities=1, per_class=1)
        (data / "char0" / "smirk").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    proc = fexgan("train", "--preset", "tiny", "--data", f"folder:{data}", "--out", str(work / "run"), "--quiet",
                  cwd=work)
    expect = {"missing": ["does not exist", str(data)], "empty": ["no images found", str(data)],
              "unknown": ["char0/smirk", *EXPRESSIONS]}[case]
    assert_one_line_error(proc, *expect)
    assert list(work.iterdir()) == []  # no run folder, not even the default runs/


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    proc = fexgan("train", "--resume", str(tmp_path), "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "not a run folder")
    assert list(tmp_path.iterdir()) == []
    proc = fexgan("train", "--resume", str(tmp_path / "nope"), "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "not a run folder")


def test_an_existing_run_is_never_overwritten(finished_run: Path, face_folder: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    proc = fexgan("train", "--preset", "tiny", "--data", f"folder:{face_folder}", "--out", str(finished_run),
                  "--steps", "1", "--device", "cpu", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "already holds a run", "--resume")
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before


def test_bad_option_values_are_one_line(tmp_path: Path) -> None:
    proc = fexgan("train", "--preset", "huge", cwd=tmp_path)
    assert_one_line_error(proc, "unknown preset", "paper")
    proc = fexgan("train", "--preset", "tiny", "--set", "model.widht=2", cwd=tmp_path)
    assert_one_line_error(proc, "model.widht")
    assert list(tmp_path.iterdir()) == []


def test_tiny_preset_trains_on_its_default_toon_data(tmp_path: Path) -> None:
    proc = fexgan("train", "--preset", "tiny", "--steps", "2", "--out", "run", "--device", "cpu", "--quiet",
                  "--set", "run.threads=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "toon:4" in (tmp_path / "run" / "config.json").read_text()
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "samples" / "final.png").is_file()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("command", [["sample", "RUN", "--expression", "joy", "--out", "o.png"],
                                     ["transfer", "RUN", "FACE", "--to", "joy", "--out", "o"],
                                     ["mix", "RUN", "FACE", "--affect", "joy", "--out", "o.png"],
                                     ["morph", "RUN", "FACE", "--to", "joy", "--out", "o.gif"], ["figures", "RUN"]])
def test_an_unknown_device_is_one_line_in_every_command(tmp_path: Path, finished_run: Path, command: list[str]) -> None:
    from fexgan.data import toon

    toon.render_face(toon.make_characters(1)[0], "neutral", size=32).save(tmp_path / "face.png")
    work = tmp_path / "work"
    work.mkdir()
    args = [{"RUN": str(finished_run), "FACE": str(tmp_path / "face.png")}.get(a, a) for a in command]
    proc = fexgan(*args, "--device", "gpu", cwd=work)
    assert_one_line_error(proc, "gpu", "cpu", "cuda")
    assert list(work.iterdir()) == []
