"""Speed of generation as users call it (fexgan.generation.inference), against the issue's bars:
one 128 px PIL image through `transfer` with the `paper` model (< 100 ms on the CI CPU), and
batched `transfer_tensor` at 64 px with the `cpu` model (>= 400 images/s).

Weights are freshly initialised (speed does not depend on them); the model goes through a real
model file and `FExGAN.load`, as a trained one would.

    .venv/bin/python benchmarks/bench_generate.py [--device cpu] [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fexgan.data.toon import make_characters, render_face
from fexgan.files.checkpoint import save_model
from fexgan.generation.inference import FExGAN
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import build_config


def model_for(preset: str, folder: Path, device: str) -> FExGAN:
    cfg = build_config(preset).model
    path = folder / f"{preset}.safetensors"
    save_model(path, Generator(cfg), Discriminator(cfg), cfg)
    return FExGAN.load(path, device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds of `fn`, after two warm-up calls.

    On a machine shared with other jobs the wall time grows with the load; with --threads 1 the
    CPU time stays close to what an idle machine's wall time would be on one core."""
    walls, cpus = [], []
    for i in range(repeats + 2):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    face = render_face(make_characters(1)[0], "neutral", size=128)
    with tempfile.TemporaryDirectory() as tmp:
        paper, cpu = model_for("paper", Path(tmp), args.device), model_for("cpu", Path(tmp), args.device)
    one = timed(lambda: paper.transfer(face, to="joy", source="neutral"), args.repeats, paper.device)
    one_pred = timed(lambda: paper.transfer(face, to="joy"), args.repeats, paper.device)
    strip = timed(lambda: paper.transfer(face, to="all", source="neutral"), args.repeats, paper.device)
    batch = 64 if paper.device.type == "cpu" else 512
    x = cpu.prepare([face] * batch)
    joy = torch.eye(7)[3:4]
    many = timed(lambda: cpu.transfer_tensor(x, joy, source="neutral"), max(3, args.repeats // 4), cpu.device)
    print(f"device {paper.device}, torch {torch.__version__}, threads {torch.get_num_threads()}; wall | process CPU")
    print(f"paper 128 px, one PIL image -> joy (given source):     {1000 * one[0]:7.1f} | {1000 * one[1]:7.1f} ms  (bar < 100 ms)")
    print(f"paper 128 px, one PIL image -> joy (predicted source): {1000 * one_pred[0]:7.1f} | {1000 * one_pred[1]:7.1f} ms")
    print(f"paper 128 px, one PIL image -> all 7 expressions:      {1000 * strip[0]:7.1f} | {1000 * strip[1]:7.1f} ms")
    print(f"cpu 64 px, batch of {batch} tensors -> joy:  {batch / many[0]:7.0f} | {batch / many[1]:7.0f} images/s per wall | CPU second (bar >= 400)")


if __name__ == "__main__":
    main()
