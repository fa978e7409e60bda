"""What the reliability machinery costs, per preset, on CPU with one thread:
- the divergence guard: the finiteness checks (loss + gradient norm of G and of D) before the two
  optimiser steps, timed alone and as part of a whole `train_step`;
- one checkpoint: `save_checkpoint` (state file, checksummed weights, best copy, fsyncs) with real
  Adam moments, and `latest_checkpoint` (read and re-hash weights and state).

    .venv/bin/python benchmarks/bench_reliability.py [tiny cpu paper]
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fexgan.data.pairs import PairSampler, split_indices
from fexgan.data.sources import load_source
from fexgan.presets import build_config
from fexgan.training import runs
from fexgan.training import step as step_module

CPU = torch.device("cpu")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def measure(preset: str) -> str:
    cfg = build_config(preset, overrides=["run.device=cpu", "run.threads=1", "data.source=toon:4"])
    data = load_source(cfg.data.source, cfg.model.image_size)
    train_idx, _ = split_indices(data, cfg.data.val_fraction)
    nets = step_module.build_nets(cfg, CPU)
    batch = step_module.make_batch(data, data.images, *PairSampler(data, train_idx, cfg.optimiser.batch_size).next_batch(), cfg,
                         torch.Generator(), CPU)
    autocast = step_module.autocast_for(cfg, CPU)
    repeats = 20 if preset == "tiny" else 5
    step = median_ms(lambda: step_module.train_step(nets, batch, cfg, cfg.losses.alpha, autocast), repeats)  # Adam moments now exist
    one = torch.tensor(1.0)
    checks = median_ms(lambda: (step_module.check_finite(one, nets.G, "G", None), step_module.check_finite(one, nets.D, "D", None)), repeats)

    run = Path(tempfile.mkdtemp())
    state = {"step": 0, "torch_rng": [torch.get_rng_state()]}
    count = iter(range(1, 1000))
    write = median_ms(lambda: runs.save_checkpoint(run, nets, cfg, next(count), state, {"val_l1": 1.0 / next(count)}), 5)
    verify = median_ms(lambda: runs.latest_checkpoint(run), 5)
    newest = max((run / "checkpoints").glob("step_*.safetensors"))
    size = (newest.stat().st_size + newest.with_suffix(".state.pt").stat().st_size) / 1e6
    shutil.rmtree(run)
    return (f"| {preset} | {step:.1f} | {checks:.2f} ({100 * checks / step:.1f} %) | {size:.1f} | {write:.0f} | "
            f"{verify:.0f} |")


def main() -> None:
    torch.set_num_threads(1)
    print("| preset | train_step ms | guard checks ms (share) | checkpoint MB | write ms | verify ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in sys.argv[1:] or ["tiny", "cpu", "paper"]:
        print(measure(preset), flush=True)


if __name__ == "__main__":
    main()
