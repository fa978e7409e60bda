"""Toon renderer speed: images/s rendering into memory (and to PNG files) on every core.

Reproduce: .venv/bin/python benchmarks/bench_toon.py [--per-class 60] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from fexgan.data import toon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="images per (character, expression)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    n = 6 * 7 * args.per_class
    print(f"{n} images per run, {workers} worker(s), {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    for size in (64, 128):
        toon.render_arrays(per_class=2, size=size, workers=1)  # warm caches
        t = time.perf_counter()
        toon.render_arrays(per_class=args.per_class, size=size, workers=workers)
        mem = n / (time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            toon.render_dataset(tmp, per_class=args.per_class, size=size, workers=workers, progress=False)
            disk = n / (time.perf_counter() - t)
        print(f"{size:>4} px: {mem:7.0f} images/s in memory, {disk:7.0f} images/s to PNG files")
    print("reproduce: .venv/bin/python benchmarks/bench_toon.py"
          + (f" --per-class {args.per_class}" if args.per_class != 60 else "")
          + (f" --workers {args.workers}" if args.workers else ""))


if __name__ == "__main__":
    main()
