"""Training throughput with 1 vs N torchrun processes (each with one thread) on this machine.

    .venv/bin/python benchmarks/bench_ddp.py [--preset cpu] [--steps 60] [--nproc 1,2]

Every process trains on `global batch / N` images per step; images/s counts all processes.
Reports the median of the logged images/s after the first quarter of the steps (warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FEXGAN = str(Path(sys.executable).with_name("fexgan"))


def throughput(preset: str, steps: int, nproc: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [FEXGAN, "train", "--preset", preset, "--steps", str(steps), "--out", str(out), "--nproc", str(nproc),
               "--device", device, "--quiet", "--set", "run.threads=1", "--set", "logging.log_every=5",
               "--set", "logging.sample_every=0", "--set", "logging.checkpoint_every=0"]
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return statistics.median(r["images_per_s"] for r in rows[len(rows) // 4:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--nproc", default="1,2")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"preset {args.preset}, {args.steps} steps, device {args.device}; load average {os.getloadavg()[0]:.2f}")
    base = None
    for n in (int(x) for x in args.nproc.split(",")):
        ips = throughput(args.preset, args.steps, n, args.device)
        base = base or ips
        print(f"{n} process(es): {ips:8.1f} images/s  (x{ips / base:.2f})")


if __name__ == "__main__":
    main()
