"""Adam `foreach` vs `fused` on the CPU, in whole training steps of a preset.

    .venv/bin/python benchmarks/bench_optimizer.py --preset cpu --threads 2 --steps 40

Sets a preset up as `fexgan bench` does (`fexgan.training.bench.make_rig`), swaps in each optimiser variant,
and times sampler + `make_batch` + `train_step` per step (median after 5 warm-up steps); the two
variants are interleaved `--repeats` times so that a change in the machine's load hits both.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from fexgan.data.sources import load_source
from fexgan.presets import build_config
from fexgan.training.bench import make_rig, timed

CPU = torch.device("cpu")


def step_ms(cfg, data, fused: bool, steps: int) -> float:
    """Median milliseconds per training step (sampler, batch, step) with fused or foreach Adam."""
    rig = make_rig(cfg, CPU, data)
    kind = {"fused": True} if fused else {"foreach": True}
    rig.nets.opt_g = torch.optim.Adam(rig.nets.G.parameters(), lr=cfg.optimiser.lr, betas=cfg.optimiser.betas, **kind)
    rig.nets.opt_d = torch.optim.Adam(rig.nets.D.parameters(), lr=cfg.optimiser.lr, betas=cfg.optimiser.betas, **kind)
    return 1000 * timed(rig.step, CPU, steps, warmup=5).wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = build_config(args.preset, overrides=["run.device=cpu"])
    data = load_source(cfg.data.source, cfg.model.image_size, cfg.model.background, cfg.model.classes)
    results: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(args.repeats):
        for name in results:
            results[name].append(round(step_ms(cfg, data, name == "fused", args.steps), 1))
    print(f"{args.preset} preset, {args.threads} threads, ms per step: {results}; median "
          f"{ {k: statistics.median(v) for k, v in results.items()} }")


if __name__ == "__main__":
    main()
