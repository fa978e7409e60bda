"""Faults, really done: kill -9 and resume, SIGINT/SIGTERM, damaged checkpoints, malicious pickles,
wrong architectures, bad image folders, NaNs, a full disk and bad command-line values."""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw_face, losses, same_tensors
from PIL import Image
from safetensors.torch import load_file, save_file

from fexgan.cli.main import main
from fexgan.config import TrainConfig
from fexgan.data.pairs import split_indices
from fexgan.data.sources import load_source
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.files import checkpoint as ckpt
from fexgan.files.checkpoint import latest_checkpoint
from fexgan.presets import build_config
from fexgan.training import loop
from fexgan.training.loop import train
from fexgan.training.monitor import validation, validation_batch

FEXGAN = Path(sys.executable).parent / "fexgan"
TINY = ["--preset", "tiny", "--device", "cpu", "--quiet", "--set", "run.threads=1"]
STEPS, EVERY = 6, 2  # the reference run: checkpoints at 0, 2, 4, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(*overrides: str) -> TrainConfig:
    """The tiny preset on its built-in `toon:4` faces, on one CPU thread."""
    return build_config("tiny", overrides=["run.device=cpu", "run.threads=1", *overrides])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 steps with checkpoints every 2: what the damaged, poisoned and diverging copies are compared with."""
    out = tmp_path_factory.mktemp("reliability") / "ref"
    train(tiny(f"run.steps={STEPS}", f"logging.checkpoint_every={EVERY}"), out, progress=False)
    return out


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# ----------------------------------------------------------------------------- kill -9, SIGINT, SIGTERM
def test_kill_9_at_a_random_moment_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL a real `fexgan train` (checkpointing every 2 steps, so it is often mid-write), resume it,
    and get the uninterrupted run's losses and weights exactly."""
    settings = ["--set", "logging.checkpoint_every=2", "--set", "logging.keep_checkpoints=2"]
    steps = 40
    train(tiny(f"run.steps={steps}", "logging.checkpoint_every=2", "logging.keep_checkpoints=2"), tmp_path / "whole", progress=False)

    run = tmp_path / "killed"
    job = subprocess.Popen([str(FEXGAN), "train", *TINY, *settings, "--steps", str(steps), "--out", str(run)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("step_000000[4-9].safetensors")):
        time.sleep(0.02)
    delay = random.Random(int(os.environ.get("FEXGAN_TEST_SEED", "0"))).uniform(0.0, 0.6)  # FEXGAN_TEST_SEED=N: another moment
    time.sleep(delay)
    assert job.poll() is None, f"the run ended before the kill ({delay:.2f} s after step 4)"
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    assert job.returncode == -signal.SIGKILL
    killed_at = len((run / "log.jsonl").read_text().splitlines())
    assert 4 <= killed_at < steps

    proc = subprocess.run([str(FEXGAN), "train", "--resume", str(run), "--quiet"], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout, proc.stdout
    assert losses(run) == losses(tmp_path / "whole"), f"killed {delay:.2f} s after step 4, near step {killed_at}"
    assert same_tensors(run / "model.safetensors", tmp_path / "whole" / "model.safetensors")
    leftovers = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary files of the killed write are cleaned up


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_save_a_checkpoint_and_exit_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    run = tmp_path / "run"
    job = subprocess.Popen([str(FEXGAN), "train", *TINY, "--steps", "100000", "--out", str(run)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not (run / "log.jsonl").exists()
                                      or len((run / "log.jsonl").read_text().splitlines()) < 3):
        time.sleep(0.02)
    job.send_signal(sig)
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130, err
    assert "Traceback" not in err
    line = next(l for l in out.splitlines() if l.startswith("interrupted"))
    assert f"({sig.name})" in line and f"--resume {run}" in line
    stopped = int(line.split("checkpoint saved at step ")[1].split(";")[0])
    assert stopped >= 3 and latest_checkpoint(run).name == f"step_{stopped:07d}.safetensors"
    assert [r["step"] for r in losses(run)] == list(range(1, stopped + 1))  # stopped between steps
    assert not (run / "model.safetensors").exists()
    if sig == signal.SIGTERM:
        train(tiny(f"run.steps={stopped + 2}"), run, resume=True, progress=False)
        assert [r["step"] for r in losses(run)] == list(range(1, stopped + 3))


# ----------------------------------------------------------------------------- damaged checkpoints
def flip_tensor_byte(path: Path) -> None:
    """Change one byte inside the tensor data: the safetensors header still reads fine."""
    raw = bytearray(path.read_bytes())
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[header + (len(raw) - header) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_middle_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = {
    "flipped weights": (lambda c: flip_tensor_byte(c / "step_0000006.safetensors"), "sha256"),
    "truncated weights": (lambda c: truncate(c / "step_0000006.safetensors"), "truncated or corrupt"),
    "empty weights": (lambda c: (c / "step_0000006.safetensors").write_bytes(b""), "truncated or corrupt"),
    "truncated state": (lambda c: truncate(c / "step_0000006.state.pt"), "sha256"),
    "flipped state": (lambda c: flip_middle_byte(c / "step_0000006.state.pt"), "sha256"),
    "missing state": (lambda c: (c / "step_0000006.state.pt").unlink(), "missing"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_good_one(
        ref: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage: str) -> None:
    run = copy_run(ref, tmp_path / "run")
    harm, words = DAMAGE[damage]
    harm(run / "checkpoints")
    assert latest_checkpoint(run) == run / "checkpoints" / "step_0000004.safetensors"
    warning = capsys.readouterr().err
    assert "warning: skipping checkpoint step_0000006.safetensors" in warning and words in warning, warning


def test_resume_after_a_damaged_checkpoint_continues_exactly_from_the_previous_one(ref: Path, tmp_path: Path) -> None:
    run = copy_run(ref, tmp_path / "run")
    flip_tensor_byte(run / "checkpoints" / "step_0000006.safetensors")
    (run / "model.safetensors").unlink()
    train(tiny(f"run.steps={STEPS}", f"logging.checkpoint_every={EVERY}"), run, resume=True, progress=False)
    assert losses(run) == losses(ref)  # the log was cut back to step 4, then steps 5-6 logged again
    assert same_tensors(run / "model.safetensors", ref / "model.safetensors")
    assert same_tensors(run / "checkpoints" / "step_0000006.safetensors", ref / "checkpoints" / "step_0000006.safetensors")


def test_the_last_k_and_the_best_by_validation_l1_are_kept(ref: Path) -> None:
    names = sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert names == ["best.safetensors"] + [f"step_{s:07d}.{ext}" for s in (2, 4, 6) for ext in ("safetensors", "state.pt")]
    best = ckpt.load_model(ref / "checkpoints" / "best.safetensors")
    cfg = TrainConfig.from_dict(json.loads((ref / "config.json").read_text()))
    data = load_source(cfg.data.source, cfg.model.image_size)
    _, val_idx = split_indices(data, cfg.data.val_fraction, cfg.run.seed)
    batch = validation_batch(data, val_idx, cfg, torch.device("cpu"))
    assert best.summary["val_l1"] == pytest.approx(validation(best.generator, batch)["val_l1"], abs=1e-6)  # honest
    kept = [ckpt.read_metadata(ref / "checkpoints" / f"step_{s:07d}.safetensors")[1]["val_l1"] for s in (2, 4, 6)]
    assert best.summary["val_l1"] <= min(kept)
    assert ckpt.read_metadata(ref / "model.safetensors")[1]["val_l1"] == kept[-1]


# ----------------------------------------------------------------------------- safe loading
class RunsCode:
    """Unpickling this calls os.system: what a malicious 'checkpoint' would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(ref: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.state.pt"
    torch.save({"step": 1, "payload": RunsCode(marker)}, evil)
    with pytest.raises(UserError, match=r"refusing to load .*system.*nothing in it was run"):
        ckpt.load_state(evil)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(RunsCode(marker), protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        ckpt.load_state(tmp_path / "plain.pkl")
    with pytest.raises(UserError, match="not a readable safetensors"):  # a pickle passed as a model file
        ckpt.load_model(tmp_path / "plain.pkl")

    # An attacker who controls the run folder: the poisoned state with its sha256 recorded beside it.
    run = copy_run(ref, tmp_path / "run")
    weights, state = run / "checkpoints" / "step_0000006.safetensors", run / "checkpoints" / "step_0000006.state.pt"
    good = torch.load(state, weights_only=True)
    torch.save({**good, "payload": RunsCode(marker)}, state)
    meta = ckpt.raw_metadata(weights)
    save_file(load_file(str(weights)), str(weights), {**meta, "state_sha256": ckpt.file_sha256(state)})
    with pytest.raises(UserError, match="refusing to load"):
        train(tiny(f"run.steps={STEPS + 2}", f"logging.checkpoint_every={EVERY}"), run, resume=True, progress=False)
    assert not marker.exists()


def test_resuming_with_another_architecture_says_what_it_expected_and_found(ref: Path, tmp_path: Path) -> None:
    run = copy_run(ref, tmp_path / "run")
    with pytest.raises(UserError, match=r"width 0\.0625 \(run: 0\.125\)"):
        train(tiny(f"run.steps={STEPS + 2}", "model.width=0.125"), run, resume=True, progress=False)


# ----------------------------------------------------------------------------- bad data
def bomb_png() -> bytes:
    """A valid little PNG whose header claims 60000 x 60000 pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[16:24] = struct.pack(">II", 60000, 60000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


UNREADABLE = {"truncated.png": "cannot read", "empty.png": "cannot read", "notes.png": "cannot read",
              "tiny.png": "8x8", "bomb.png": "decompression bomb"}
READABLE = ["gray.png", "palette.png", "deep16.png", "UPPER.PNG", "with space.png", "ünïcødé 表情.png", "photo.JPG"]


def bad_tree(root: Path) -> Path:
    """2 identities x 7 expressions x 2 good faces, plus every kind of odd file in char0/anger."""
    for i in range(2):
        for e, expr in enumerate(EXPRESSIONS):
            (root / f"char{i}" / expr).mkdir(parents=True)
            for n in range(2):
                draw_face(i, e, n).save(root / f"char{i}" / expr / f"{n}.png")
    d = root / "char0" / "anger"
    buf = io.BytesIO()
    draw_face(0, 0).save(buf, "PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("a text file with an image's name")
    Image.new("RGB", (8, 8)).save(d / "tiny.png")
    (d / "bomb.png").write_bytes(bomb_png())
    Image.fromarray(np.full((40, 40), 90, np.uint8), "L").save(d / "gray.png")
    draw_face(0, 0).convert("P").save(d / "palette.png")
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(d / "deep16.png")
    for name in ("UPPER.PNG", "with space.png", "ünïcødé 表情.png"):
        draw_face(0, 0, 1).save(d / name)
    draw_face(0, 0).convert("RGB").save(d / "photo.JPG")
    return root


def test_bad_files_are_converted_or_skipped_and_reported_in_the_run_folder(tmp_path: Path) -> None:
    root = bad_tree(tmp_path / "faces")
    run = tmp_path / "run"
    train(tiny(f"data.source=folder:{root}", "run.steps=1"), run, progress=False)
    report = json.loads((run / "data.json").read_text())
    skipped = {Path(path).name: reason for path, reason in report["skipped_files"]}
    assert report["skipped"] == len(UNREADABLE) and set(skipped) == set(UNREADABLE)
    for name, words in UNREADABLE.items():
        assert words in skipped[name].lower(), (name, skipped[name])
    kept = {Path(n).name for n in report["train"] + report["val"] if n.startswith("char0/anger/")}
    assert kept == {"0.png", "1.png", *READABLE}
    assert report["images"] == 28 + len(READABLE) and report["per_expression"]["anger"] == 4 + len(READABLE)


def test_too_few_readable_images_fail_clearly_and_write_nothing(tmp_path: Path) -> None:
    root = bad_tree(tmp_path / "faces")
    with pytest.raises(UserError, match=r"disgust \(4\).*fewer than 5 readable images.*5 unreadable file\(s\) were skipped"):
        train(tiny(f"data.source=folder:{root}", "run.steps=1", "data.min_images_per_class=5"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    for f in (root / "char1").rglob("*.png"):  # an identity whose files are all unreadable
        f.write_bytes(b"")
    with pytest.raises(UserError, match=r"identity\(ies\) char1 \(0\)"):
        load_source(f"folder:{root}", 32)


def test_the_cache_follows_added_removed_and_changed_files(tmp_path: Path) -> None:
    root = bad_tree(tmp_path / "faces")
    first = load_source(f"folder:{root}", 32)
    (root / "char0" / "anger" / "with space.png").unlink()
    draw_face(1, 3).save(root / "char1" / "joy" / "new.png")
    second = load_source(f"folder:{root}", 32)
    assert "char0/anger/with space.png" in first.names and "char0/anger/with space.png" not in second.names
    assert "char1/joy/new.png" in second.names and len(second) == len(first)
    (root / "char0" / "anger" / "empty.png").write_bytes((root / "char0" / "anger" / "0.png").read_bytes())
    third = load_source(f"folder:{root}", 32)  # a repaired file is read, not remembered as skipped
    assert "char0/anger/empty.png" in third.names and len(third.skipped) == len(UNREADABLE) - 1


# ----------------------------------------------------------------------------- divergence guard
def test_a_nan_rolls_back_to_the_last_checkpoint_with_a_lower_learning_rate(
        ref: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    batches = []

    def third_batch_poisoned(*args: object) -> dict[str, torch.Tensor]:
        batch = make_batch(*args)
        batches.append(batch)
        if len(batches) == 3:  # once: the replayed step 3 gets a clean batch
            batch["source"][0, 0, 0, 0] = float("nan")
        return batch

    make_batch = loop.make_batch
    monkeypatch.setattr(loop, "make_batch", third_batch_poisoned)
    run = tmp_path / "run"
    train(tiny(f"run.steps={STEPS}", f"logging.checkpoint_every={EVERY}"), run, progress=False)
    out = capsys.readouterr().err
    assert ("non-finite discriminator loss or gradient at step 3: rolled back to step_0000002.safetensors with "
            "learning rate 0.0001 (rollback 1 of 3)") in out
    got, want = losses(run), losses(ref)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))   # every step logged once
    assert got[:2] == want[:2]
    # step 3 is replayed from the step-2 state and batch without the NaN: D's loss and G's reconstruction
    # (both before any update) are the same; G's adversarial terms see D after its half-learning-rate update
    assert all(got[2][k] == want[2][k] for k in ("d_total", "d_real", "d_fake", "rec", "kl"))
    assert got[2]["g_total"] != want[2]["g_total"] and got[3]["d_total"] != want[3]["d_total"]
    loaded = ckpt.load_model(run / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in {**loaded.generator.state_dict(), **loaded.discriminator.state_dict()}.values())
    assert ckpt.load_state(run / "checkpoints" / "step_0000006.state.pt")["lr_scale"] == 0.5


def test_a_run_that_keeps_diverging_gives_up_clearly_and_never_writes_a_nan_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(UserError, match=r"diverged at step \d+ .* after 2 rollback\(s\).*no model was written.*"
                                        r"step_0000000.safetensors"):
        train(tiny("run.steps=6", "optimiser.lr=1e6", "run.max_rollbacks=2", "logging.checkpoint_every=2"), run, progress=False)
    assert not (run / "model.safetensors").exists()
    for f in (run / "checkpoints").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in ckpt.read_tensors(f).values()), f


# ----------------------------------------------------------------------------- disk and input limits
def small_files_only() -> None:
    """In the child: files may not grow past 100 kB (EFBIG instead of SIGXFSZ), like a nearly full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(ref: Path, tmp_path: Path) -> None:
    run = copy_run(ref, tmp_path / "run")
    before, model = snapshot(run / "checkpoints"), (run / "model.safetensors").read_bytes()
    proc = subprocess.run([str(FEXGAN), "train", "--resume", str(run), "--steps", str(STEPS + 4), "--quiet"],
                          capture_output=True, text=True, timeout=180, preexec_fn=small_files_only)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: could not write checkpoint step_0000008 (File too large); the previous checkpoint "
        f"step_0000006.safetensors is intact; free some disk space and continue with --resume {run}"]
    assert snapshot(run / "checkpoints") == before and (run / "model.safetensors").read_bytes() == model
    train(tiny(f"run.steps={STEPS + 4}", f"logging.checkpoint_every={EVERY}"), run, resume=True, progress=False)
    assert [r["step"] for r in losses(run)] == list(range(1, STEPS + 5))


@pytest.mark.parametrize("args, words", [
    (["--steps", "0"], "--steps"), (["--minutes", "inf"], "infinite"), (["--nproc", "0"], "--nproc"),
    (["--set", "logging.log_every=0"], "log_every"), (["--set", "optimiser.lr=nan"], "learning rate"), (["--seed", "-1"], "seed"),
    (["--set", "logging.keep_checkpoints=0"], "keep_checkpoints"), (["--set", "run.rollback_lr_factor=2"], "rollback_lr_factor"),
    (["--set", "data.min_images_per_class=0"], "min_images_per_class"), (["--set", "losses.gamma=-1"], "gamma"),
    (["--set", "data.augment_shift=3"], "augment_shift"), (["--bogus"], "No such option"),
    (["--data", "folder:/nonexistent/faces"], "does not exist"), (["--config", "/nonexistent.json"], "does not exist"),
    (["--out", "FILE", "--steps", "1"], "is a file"),
])
def test_every_bad_train_argument_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture, args: list[str], words: str) -> None:
    (tmp_path / "FILE").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["fexgan", "train", *TINY, *args])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after the toon renderer's progress bar, when the cache is cold)
    assert stop.value.code == 2 and last.startswith("error: ") and words in last and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]  # nothing written


def test_an_output_path_that_cannot_be_written_is_one_clear_line(ref: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "FILE").write_text("not a folder")
    monkeypatch.setattr(sys, "argv", ["fexgan", "sample", str(ref), "--n", "1", "--device", "cpu",
                                      "--out", str(tmp_path / "FILE" / "x.png")])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert str(tmp_path / "FILE") in err
