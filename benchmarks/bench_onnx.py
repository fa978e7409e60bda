"""ONNX vs PyTorch on this CPU: latency of one transfer (batch 1) and throughput at batch 32.

Each model's full generator graph (image, source_affect, target_affect -> generated, from the
latent mean) is exported with `fexgan.generation.export` (which checks parity) and timed against the same
network in PyTorch (eval mode, inference_mode), with the same number of threads, calls interleaved
so that load from other processes hits both alike. Medians over the timed calls.

Reproduce: .venv/bin/python benchmarks/bench_onnx.py [--models toon-128,paper] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import fexgan
from fexgan.files.checkpoint import save_model, shipped_models
from fexgan.generation.export import MeanTransfer, export
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import build_config


def model_file(name: str, folder: Path) -> str:
    """A shipped model name as it is, or a preset name: that preset's networks with random weights."""
    if name in shipped_models():
        return name
    cfg = build_config(name).model
    path = folder / f"{name}.safetensors"
    save_model(path, Generator(cfg), Discriminator(cfg), cfg, {"note": "random weights, for timing only"})
    return str(path)


def time_pair(torch_fn, ort_fn, calls: int) -> tuple[float, float]:
    """Median seconds per call of each, calls interleaved, after 3 warm-up calls each."""
    for _ in range(3):
        torch_fn(), ort_fn()
    a, b = [], []
    for _ in range(calls):
        t = time.perf_counter()
        torch_fn()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        ort_fn()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toon-128,paper", help="shipped model names or presets (random weights)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads of both runtimes")
    parser.add_argument("--calls", type=int, default=200, help="timed calls at batch 1 (a tenth of them at batch 32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    print(f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, {args.threads} "
          f"thread(s), load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print("| model | image | batch | PyTorch ms | onnxruntime ms | speed-up | PyTorch images/s | onnxruntime images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    parity = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = fexgan.load(model_file(name, Path(tmp)), "cpu")
            result = export(model, "onnx", Path(tmp) / name)
            net = MeanTransfer(model.generator.encoder, model.generator.decoder).eval()
            session = ort.InferenceSession(str(Path(tmp) / name / "generator.onnx"), options,
                                           providers=["CPUExecutionProvider"])
            size, n_cls = model.config.image_size, model.config.num_classes
            for batch, calls in ((1, args.calls), (32, max(3, args.calls // 10))):
                g = torch.Generator().manual_seed(batch)
                x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
                src, tgt = torch.eye(n_cls)[torch.randint(n_cls, (batch,), generator=g)], torch.eye(n_cls)[[3] * batch]
                feed = {"image": x.numpy(), "source_affect": src.numpy(), "target_affect": tgt.numpy()}

                def run_torch() -> None:
                    with torch.inference_mode():
                        net(x, src, tgt)

                t_torch, t_ort = time_pair(run_torch, lambda: session.run(None, feed), calls)
                print(f"| {name} | {size} px | {batch} | {t_torch * 1e3:.2f} | {t_ort * 1e3:.2f} | "
                      f"{t_torch / t_ort:.2f}x | {batch / t_torch:.0f} | {batch / t_ort:.0f} |", flush=True)
            parity[name] = max(result.parity.values())
    print(f"load average at the end {os.getloadavg()[0]:.1f}; largest parity difference of the exports: "
          + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
    print("reproduce: .venv/bin/python benchmarks/bench_onnx.py"
          + (f" --models {args.models}" if args.models != "toon-128,paper" else ""))


if __name__ == "__main__":
    main()
