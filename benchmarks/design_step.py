"""The edit design's cost against the paper design's at the same size and width, alternating in one run.

    .venv/bin/python benchmarks/design_step.py --steps 80           # the `any` preset (64 px, width 0.25)
    .venv/bin/python benchmarks/design_step.py --steps 80 --set run.amp=false

1. Training steps (`fexgan.training.step.train_step`, as `fexgan train` runs them, step numbers and all) of
   each design on the same random batch, one of each in turn (paper, edit, paper, ...), so that this
   shared machine's slow spells, which last from a few to hundreds of steps, fall on both alike.
2. One 128 px transfer (`Generator.transfer` of one image, fp32, eval mode) of each design on one
   CPU thread, also in turns.
Prints the lower quartile and the median of each and their ratios, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from fexgan.nets.designs import build_generator
from fexgan.presets import build_config
from fexgan.training.step import autocast_for, build_nets, train_step

DESIGNS = ("paper", "edit")


def random_batch(cfg, generator: torch.Generator) -> dict[str, torch.Tensor]:
    b, s, n = cfg.optimiser.batch_size, cfg.model.image_size, cfg.model.num_classes
    source_class, target_class = torch.randint(0, n, (b,), generator=generator), torch.randint(0, n, (b,), generator=generator)
    return {"source": (torch.rand(b, 3, s, s, generator=generator) * 2 - 1).contiguous(memory_format=torch.channels_last),
            "target": torch.rand(b, 3, s, s, generator=generator) * 2 - 1, "source_class": source_class,
            "target_class": target_class, "source_affect": F.one_hot(source_class, n).float(),
            "target_affect": F.one_hot(target_class, n).float()}


def step_ms(preset: str, overrides: list[str], steps: int) -> dict[str, list[float]]:
    rigs = {}
    for design in DESIGNS:
        cfg = build_config(preset, overrides=[f"model.generator={design}", "run.device=cpu", *overrides])
        rigs[design] = (cfg, build_nets(cfg, torch.device("cpu")), random_batch(cfg, torch.Generator().manual_seed(0)),
                        autocast_for(cfg, torch.device("cpu")))
    times: dict[str, list[float]] = {d: [] for d in DESIGNS}
    for step in range(steps + 4):  # the first 4 warm up
        for design, (cfg, nets, batch, autocast) in rigs.items():
            start = time.perf_counter()
            train_step(nets, batch, cfg, 1.0, autocast, step=step)
            if step >= 4:
                times[design].append((time.perf_counter() - start) * 1000)
    return times


def transfer_ms(preset: str, pairs: int, repeats: int = 20) -> dict[str, list[float]]:
    torch.set_num_threads(1)
    gens = {}
    for design in DESIGNS:
        cfg = build_config(preset, overrides=[f"model.generator={design}", "model.image_size=128"]).model
        gens[design] = build_generator(cfg).eval()
    x, a = torch.rand(1, 3, 128, 128) * 2 - 1, torch.eye(7)[[4]]
    times: dict[str, list[float]] = {d: [] for d in DESIGNS}
    with torch.no_grad():
        for gen in gens.values():
            gen.transfer(x, a, a)
        for _ in range(pairs):
            for design, gen in gens.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    gen.transfer(x, a, torch.eye(7)[[3]])
                times[design].append((time.perf_counter() - start) / repeats * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="any")
    parser.add_argument("--steps", type=int, default=80, help="training steps of each design")
    parser.add_argument("--pairs", type=int, default=7, help="timings of 20 transfers of each design")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    for what, times in (("training step", step_ms(args.preset, args.overrides, args.steps)),
                        ("128 px transfer, 1 thread, fp32", transfer_ms(args.preset, args.pairs))):
        q = {d: (statistics.quantiles(t, n=4)[0], statistics.median(t)) for d, t in times.items()}
        print(f"{what}: " + ", ".join(f"{d} {lo:.1f} / {med:.1f} ms" for d, (lo, med) in q.items())
              + f" (lower quartile / median); edit / paper = {q['edit'][0] / q['paper'][0]:.2f}x / "
              f"{q['edit'][1] / q['paper'][1]:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; preset {args.preset} {args.overrides}")


if __name__ == "__main__":
    main()
