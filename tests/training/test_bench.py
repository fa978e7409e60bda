"""`fexgan bench` end to end on the tiny preset, its one-line errors, and the CPU thread tuner."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fexgan.errors import UserError
from fexgan.training.bench import run_bench
from fexgan.training.threads import ThreadTuner, candidate_threads

FEXGAN = Path(sys.executable).parent / "fexgan"


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"
    proc = subprocess.run([str(FEXGAN), "bench", "--presets", "tiny", "--steps", "3", "--device", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def test_bench_writes_every_figure(bench_run: tuple[subprocess.CompletedProcess, dict]) -> None:
    proc, results = bench_run
    m = results["machine"]
    assert m["cores"] >= 1 and m["torch"] == torch.__version__ and m["device"] == "cpu" and m["cpu"]
    assert list(results["presets"]) == ["tiny"]
    r = results["presets"]["tiny"]
    assert r["image_size"] == 32 and r["batch_size"] == 8 and r["timed_steps"] == 3
    train, flops = r["training"], r["flops"]
    assert train["step_ms"] > 0 and train["images_per_s"] == pytest.approx(8 / (train["step_ms"] / 1000))
    assert train["threads"] in candidate_threads(m["torch_threads"])
    assert train["cpu_ms_per_step"] > 0 and 0 < train["cpu_utilisation"] <= 1.5
    # FLOPs of a step: the tiny networks' convolutions forward and backward, some millions per image
    assert 1e6 < flops["per_image"] < 1e8 and flops["per_step"] == flops["per_image"] * 8
    assert flops["achieved_gflops"] == pytest.approx(flops["per_step"] / (train["step_ms"] / 1000) / 1e9)
    peaks = flops["peaks_by_threads"]
    assert set(peaks) == {str(t) for t in candidate_threads(m["torch_threads"])}
    assert flops["matmul_peak_gflops"] == max(p["mm"] for p in peaks.values()) > 0
    assert flops["peak_gflops"] == max(v for p in peaks.values() for v in p.values()) >= flops["matmul_peak_gflops"]
    assert flops["fraction_of_peak"] == pytest.approx(flops["achieved_gflops"] / flops["peak_gflops"])
    assert flops["fraction_of_matmul_peak"] == pytest.approx(flops["achieved_gflops"] / flops["matmul_peak_gflops"])
    assert 0 < flops["fraction_of_peak_cpu_time"] < 2
    assert flops["peak_dtype"] == "float32"
    assert r["inference"]["latency_ms"] > 0 and r["inference"]["batched_images_per_s"] > 0
    data = r["data"]
    assert data["images"] == 6 * 7 * 10
    assert data["render_images_per_s"] > 0 and data["cache_build_images_per_s"] > 0
    assert data["cache_load_images_per_s"] > data["cache_build_images_per_s"]   # reading beats rendering
    assert 0 < data["make_batch_share_of_step"] < 1
    assert r["memory"]["peak_mb"] > 50 and r["memory"]["kind"].startswith("rss")
    assert "train images/s" in proc.stdout and "tiny" in proc.stdout and "share of peak" in proc.stdout


def test_bench_error_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([str(FEXGAN), "bench", "--presets", "tiny,huge", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "unknown preset(s) huge" in proc.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"presets": []}, "unknown preset(s) (none given)"),
    ({"presets": ["tiny"], "overrides": ["nonsense=1"]}, "unknown configuration key 'nonsense'"),
    ({"presets": ["tiny"], "steps": 0}, "--steps must be at least 1"),
    pytest.param({"presets": ["tiny"], "device": "cuda"}, "no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bench_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        run_bench(log=lambda line: None, **kwargs)


@pytest.fixture
def restore_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def sleeper(seconds_by_threads: dict[int, float]):
    """A step whose duration depends on the thread count it runs with; records the counts it saw."""
    seen: list[int] = []

    def step() -> int:
        seen.append(torch.get_num_threads())
        time.sleep(seconds_by_threads[torch.get_num_threads()])
        return seen[-1]
    return step, seen


def test_candidate_threads() -> None:
    assert candidate_threads(1) == [1]
    assert candidate_threads(2) == [1, 2]
    assert candidate_threads(6) == [1, 2, 4, 6]
    assert candidate_threads(8) == [1, 2, 4, 8]


@pytest.mark.parametrize("fast", [1, 2])
def test_tuner_keeps_the_fastest_thread_count(restore_threads, fast: int) -> None:
    slow = 3 - fast
    torch.set_num_threads(2)
    step, seen = sleeper({fast: 0.001, slow: 0.1})
    tuner = ThreadTuner(2, warmup=2, every_s=3600)
    results = [tuner(step) for _ in range(12)]
    assert results == seen                      # the step's own return value comes back
    assert seen[:2] == [2, 2]                   # warm-up at the default count
    assert tuner.best == fast and torch.get_num_threads() == fast
    assert seen[2:].count(slow) == 1            # more than twice as slow: dropped after one step
    assert seen[2:].count(fast) == 9            # 3 probe steps, then every later step
    assert set(tuner.last_probe) == {1, 2} and tuner.last_probe[fast] < tuner.last_probe[slow]
    assert not tuner.tuning


def test_tuner_probes_again_and_disabled_does_nothing(restore_threads) -> None:
    torch.set_num_threads(2)
    step, seen = sleeper({1: 0.1, 2: 0.001})
    tuner = ThreadTuner(2, warmup=0, every_s=0.0)   # a new round as soon as one ends
    for _ in range(8):
        tuner(step)
    assert seen.count(1) >= 2                        # one probe step of 1 thread in each round
    torch.set_num_threads(2)
    off = ThreadTuner(2, enabled=False)
    step, seen = sleeper({1: 0.0, 2: 0.0})
    for _ in range(5):
        off(step)
    assert seen == [2] * 5 and not off.tuning
