"""Inference in bf16 autocast against fp32: do the outputs stay within 1/255 of fp32, and is it faster?

    .venv/bin/python benchmarks/bf16_inference.py --model toon-128 --faces 32 --rounds 5

Transfers `--faces` toon faces (every character, neutral) to all seven expressions through the
model's `transfer` (the path of `fexgan transfer`, `serve` and `evaluate`), in fp32 and under bf16
autocast, timed in turns; prints the share of output pixels (uint8) within 1 of fp32, the largest
difference, each one's median time, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import fexgan
from fexgan.data import toon
from fexgan.data.images import to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toon-128")
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = fexgan.load(args.model, device="cpu")
    chars = toon.make_characters(min(args.faces, 64))
    faces = [toon.render_face(chars[i % len(chars)], "neutral", toon.variation_for(0, i, 4, i), size=model.config.image_size)
             for i in range(args.faces)]
    x, targets = model.prepare(faces), torch.eye(len(model.classes))

    def run(bf16: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return to_uint8(model.transfer_tensor(x, targets, source="neutral").float().flatten(0, 1))

    outputs = {False: run(False), True: run(True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for bf16 in (False, True):
            start = time.perf_counter()
            run(bf16)
            times[bf16].append(time.perf_counter() - start)
    diff = (outputs[True].int() - outputs[False].int()).abs()
    med = {k: statistics.median(v) for k, v in times.items()}
    n = diff.numel()
    print(f"{args.model}: {args.faces} faces x {len(targets)} expressions, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} after")
    print(f"  pixels within 1/255 of fp32: {(diff <= 1).sum().item() / n:.2%}; within 2/255: "
          f"{(diff <= 2).sum().item() / n:.2%}; largest difference {diff.max().item()}/255; mean {diff.float().mean():.3f}")
    print(f"  fp32 {1000 * med[False]:.0f} ms, bf16 {1000 * med[True]:.0f} ms per batch: bf16 is "
          f"{med[False] / med[True]:.2f}x")


if __name__ == "__main__":
    main()
