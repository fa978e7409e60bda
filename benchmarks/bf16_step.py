"""bf16 autocast against fp32 on the CPU: a preset's training step three ways, alternating in one run.

    .venv/bin/python benchmarks/bf16_step.py --preset paper --pairs 5
    .venv/bin/python benchmarks/bf16_step.py --preset cpu --pairs 15

- plain:  a plain fp32 PyTorch restatement of the step (the same networks, NCHW, the paper's losses
          written out with torch.nn.functional, torch.optim.Adam): what a user would write;
- fp32:   `fexgan.training.step.train_step` as `fexgan train` runs it with `--set run.amp=false`;
- bf16:   the same with bf16 autocast (the default where the CPU has native bf16).
The three are timed in turns (plain, fp32, bf16, plain, ...) so that a busy machine slows them alike;
prints each one's median step and images/s, the ratios, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from fexgan.nets.designs import build_generator
from fexgan.nets.networks import build_discriminator
from fexgan.presets import build_config
from fexgan.training.bench import WARMUP, bench_data, make_rig


def plain_step(cfg, batch: dict, nets: tuple) -> None:
    """One D and one G update in plain fp32 PyTorch, NCHW."""
    G, D, opt_g, opt_d = nets
    x, y, src, tgt = batch["source"], batch["target"], batch["source_class"], batch["target_class"]
    fake, mu, log_sigma, _ = G(x, batch["source_affect"], batch["target_affect"])
    rl, rc = D(x)
    fl, fc = D(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(rl, torch.ones_like(rl)) + F.cross_entropy(rc, src)
              + F.binary_cross_entropy_with_logits(fl, torch.zeros_like(fl)) + F.cross_entropy(fc, tgt))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    fl, fc = D(fake)
    kl = -0.5 * torch.mean(1 + 2 * log_sigma - mu ** 2 - torch.exp(2 * log_sigma))
    g_loss = (cfg.losses.alpha * (F.binary_cross_entropy_with_logits(fl, torch.ones_like(fl)) + F.cross_entropy(fc, tgt))
              + cfg.losses.beta * kl + cfg.losses.gamma * F.l1_loss(fake, y))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds (each times all three once)")
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rigs = {}
    for name, amp in (("fp32", "false"), ("bf16", "true")):
        cfg = build_config(args.preset, overrides=["run.device=cpu", f"run.amp={amp}"])
        data, _ = bench_data(cfg)
        rigs[name] = make_rig(cfg, torch.device("cpu"), data)
    cfg = rigs["fp32"].cfg
    torch.manual_seed(0)
    G, D = build_generator(cfg.model), build_discriminator(cfg.model)
    plain = (G, D, torch.optim.Adam(G.parameters(), cfg.optimiser.lr, cfg.optimiser.betas), torch.optim.Adam(D.parameters(), cfg.optimiser.lr, cfg.optimiser.betas))
    batch = {k: v.contiguous() for k, v in rigs["fp32"].batch().items()}
    steps = {"plain": lambda: plain_step(cfg, batch, plain), "fp32": rigs["fp32"].step, "bf16": rigs["bf16"].step}
    for _ in range(WARMUP):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.pairs):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.preset} preset, batch {cfg.optimiser.batch_size}, {torch.get_num_threads()} threads, {args.pairs} rounds, "
          f"load average {os.getloadavg()[0]:.2f} after")
    for name, t in med.items():
        print(f"  {name:5s} step {1000 * t:8.1f} ms (min {1000 * min(times[name]):.1f}, max {1000 * max(times[name]):.1f})"
              f"  {cfg.optimiser.batch_size / t:7.1f} images/s")
    print(f"  bf16 vs plain fp32: {med['plain'] / med['bf16']:.2f}x;  bf16 vs fexgan fp32: {med['fp32'] / med['bf16']:.2f}x;"
          f"  fexgan fp32 vs plain: {med['plain'] / med['fp32']:.2f}x")


if __name__ == "__main__":
    main()
