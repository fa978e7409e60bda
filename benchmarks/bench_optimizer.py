"""Adam `foreach` vs `fused` on the CPU, in whole training steps of a preset.

    .venv/bin/python benchmarks/bench_optimizer.py --preset cpu --threads 2 --steps 40

Builds the networks as `fexgan train` does (`build_nets`), swaps in each optimiser variant, and
times sampler + `make_batch` + `train_step` per step (median after 5 warm-up steps); the two
variants are interleaved `--repeats` times so that a change in the machine's load hits both.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fexgan.config import build_config
from fexgan.data import PairSampler, load_source, split_indices
from fexgan.train import build_nets, ema_decay_at, make_batch, train_step

CPU = torch.device("cpu")


def step_ms(cfg, data, train_idx, fused: bool, steps: int) -> float:
    """Median milliseconds per training step with fused or foreach Adam."""
    torch.manual_seed(0)
    nets = build_nets(cfg, CPU)
    kind = {"fused": True} if fused else {"foreach": True}
    nets.opt_g = torch.optim.Adam(nets.G.parameters(), lr=cfg.lr, betas=cfg.betas, **kind)
    nets.opt_d = torch.optim.Adam(nets.D.parameters(), lr=cfg.lr, betas=cfg.betas, **kind)
    sampler, gen = PairSampler(data, train_idx, cfg.batch_size, seed=0), torch.Generator().manual_seed(1)
    no_autocast, times = torch.autocast("cpu", enabled=False), []
    for i in range(steps + 5):
        start = time.perf_counter()
        batch = make_batch(data, data.images, *sampler.next_batch(), cfg, gen, CPU)
        train_step(nets, batch, cfg, cfg.alpha, no_autocast, None, ema_decay_at(cfg, i))
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = build_config(args.preset, overrides=["device=cpu"])
    data = load_source(cfg.data, cfg.model.image_size, cfg.model.background, cfg.model.classes)
    train_idx, _ = split_indices(data, cfg.val_fraction, cfg.seed)
    results: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(args.repeats):
        for name in results:
            results[name].append(round(step_ms(cfg, data, train_idx, name == "fused", args.steps), 1))
    print(f"{args.preset} preset, {args.threads} threads, ms per step: {results}; median "
          f"{ {k: statistics.median(v) for k, v in results.items()} }")


if __name__ == "__main__":
    main()
