"""Where a training step's time goes: torch.profiler over a few steps of a preset, as set up by
`fexgan bench` (same networks, data path and step as `fexgan train`).

    .venv/bin/python benchmarks/profile_step.py --preset cpu --steps 5 --threads 1 [--set run.compile=true]

Prints the operators sorted by their own CPU time (and CUDA time on a GPU) and the share of the
step spent in convolutions, batch norm, element-wise ops, the optimiser and the rest.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from fexgan.devices import pick_device
from fexgan.presets import build_config
from fexgan.training.bench import WARMUP, bench_data, make_rig, sync

GROUPS = {  # operator name fragments -> group
    "convolution": ("conv", "mkldnn_convolution"), "batch norm": ("batch_norm",),
    "optimiser": ("_foreach", "adam", "_fused"), "grid sample / batch": ("grid_sampler", "affine_grid", "index"),
}


def group_of(name: str) -> str:
    for group, keys in GROUPS.items():
        if any(k in name for k in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trace", help="also write a Chrome trace (open in chrome://tracing or Perfetto)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg = build_config(args.preset, overrides=[f"run.device={device}", *args.overrides])
    data, _ = bench_data(cfg)
    rig = make_rig(cfg, device, data)
    for _ in range(WARMUP):
        rig.step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(args.steps):
            rig.step()
        sync(device)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.preset} on {device}, {torch.get_num_threads()} threads, {args.steps} steps "
          f"(batch {cfg.optimiser.batch_size}, {cfg.model.image_size} px)")
    print(events.table(sort_by=sort, row_limit=args.rows))
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = defaultdict(float)
    for e in events:
        shares[group_of(e.key)] += e.self_cpu_time_total / total
    print("share of self CPU time: " + ", ".join(f"{g} {s:.0%}" for g, s in sorted(shares.items(), key=lambda x: -x[1])))
    print(f"CPU time per step: {total / args.steps / 1000:.1f} ms")
    if args.trace:
        prof.export_chrome_trace(args.trace)


if __name__ == "__main__":
    main()
