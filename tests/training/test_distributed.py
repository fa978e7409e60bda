"""Distributed training with real torchrun processes (gloo on CPU)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fexgan.files.checkpoint import read_metadata

FEXGAN = str(Path(sys.executable).with_name("fexgan"))
COMMON = ["--preset", "tiny", "--set", "run.threads=1", "--set", "logging.log_every=1", "--quiet"]


def run_train(out: Path, nproc: int, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([FEXGAN, "train", *COMMON, "--out", str(out), "--nproc", str(nproc), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


def losses(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for n in (1, 2):
        res = run_train(root / f"p{n}", n, "--steps", "4")
        assert res.returncode == 0, res.stderr[-2000:]
        out[n] = root / f"p{n}"
    return out


def test_two_processes_keep_identical_weights(runs):
    _, summary = read_metadata(runs[2] / "model.safetensors")
    assert summary["processes"] == 2 and summary["global_batch"] == 8
    assert summary["replicas_identical"] is True


def test_loss_matches_single_process_over_the_same_global_batch(runs):
    one, two = losses(runs[1]), losses(runs[2])
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 4]
    # Same initial weights and the same global batch of sources; targets and noise are drawn per
    # process, and batch norm sees half batches, so the first step agrees closely but not exactly
    # (d_fake and g_cls follow the dropout masks: other masks alone move d_fake by about 8%).
    for key, tolerance in (("rec", 0.08), ("d_real", 0.08), ("d_fake", 0.15), ("g_cls", 0.15)):
        assert abs(one[0][key] - two[0][key]) <= tolerance * abs(one[0][key]), (key, one[0][key], two[0][key])


def test_the_edit_design_draws_alone_on_every_other_step_across_processes(tmp_path: Path) -> None:
    """`alone_every=2`: the decoder's output layer goes unused on every other step, which DDP must allow;
    the log has the design's terms on the steps that drew them, weighted twice."""
    res = run_train(tmp_path / "edit", 2, "--steps", "4", "--set", "model.generator=edit", "--set", "edit.alone_every=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert read_metadata(tmp_path / "edit" / "model.safetensors")[1]["replicas_identical"] is True
    records = losses(tmp_path / "edit")
    assert ["alone_rec" in r for r in records] == [True, False, True, False]  # steps 0 and 2 of 0-3
    for r in records[::2]:
        assert r["design_total"] == pytest.approx(100 * 0.5 * 2 * r["alone_rec"], rel=1e-3)


def test_only_rank_zero_writes(runs):
    run = runs[2]
    assert len(losses(run)) == 4  # one log line per step, not one per process
    assert len(list((run / "tb").iterdir())) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.safetensors", "step_0000000.safetensors", "step_0000000.state.pt", "step_0000004.safetensors",
        "step_0000004.state.pt"]  # step 0: what the divergence guard rolls back to before a periodic checkpoint


def test_resume_under_torchrun_continues_exactly_like_an_uninterrupted_run(tmp_path):
    """Two processes, 8 steps, a checkpoint every 4: the run cut back to its step-4 checkpoint and
    resumed with two processes logs the same records and ends with the same weights."""
    whole = tmp_path / "whole"
    res = run_train(whole, 2, "--steps", "8", "--set", "logging.checkpoint_every=4")
    assert res.returncode == 0, res.stderr[-2000:]
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for name in ["model.safetensors", "checkpoints/step_0000008.safetensors", "checkpoints/step_0000008.state.pt"]:
        (cut / name).unlink()
    (cut / "log.jsonl").write_text("".join((whole / "log.jsonl").read_text().splitlines(keepends=True)[:4]))
    res = run_train(cut, 2, "--resume", str(cut), "--steps", "8")
    assert res.returncode == 0, res.stderr[-2000:]
    strip = ("time", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in losses(cut)] == \
        [{k: v for k, v in r.items() if k not in strip} for r in losses(whole)]
    a, b = load_file(str(cut / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _worker_pids(out: Path) -> dict[int, int]:
    """rank -> pid of the torchrun workers training into `out` (read from /proc)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if str(out).encode() in cmd and b"RANK" in env and b"LOCAL_RANK" in env:
            found[int(env[b"RANK"])] = int(proc.name)
    return found


def test_killing_a_rank_stops_the_job_and_resume_continues(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([FEXGAN, "train", *COMMON, "--out", str(out), "--nproc", "2", "--steps", "100000",
                            "--set", "logging.checkpoint_every=5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("*.state.pt")):
        time.sleep(0.5)
    assert list((out / "checkpoints").glob("*.state.pt")), "no checkpoint appeared"
    pids = _worker_pids(out)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    _, err = job.communicate(timeout=120)  # no hang: the surviving rank is stopped too
    assert job.returncode == 2
    last = err.strip().splitlines()[-1]
    assert "worker process failed" in last and "--resume" in last
    assert not _worker_pids(out)

    saved = max(int(p.stem.split("_")[1].split(".")[0]) for p in (out / "checkpoints").glob("*.state.pt"))
    res = run_train(out, 2, "--resume", str(out), "--steps", str(saved + 3))
    assert res.returncode == 0, res.stderr[-2000:]
    _, summary = read_metadata(out / "model.safetensors")
    assert summary["steps"] == saved + 3 and summary["replicas_identical"] is True
