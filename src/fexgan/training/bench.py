"""Speed of the presets, side by side in one process: training, inference, data and memory.

For each preset `run_bench` measures
- training: time per step (sampler + `make_batch` + `train_step`, median after warm-up) and images/s;
- efficiency: FLOPs per training image (`torch.utils.flop_counter` over one real `train_step`),
  achieved GFLOP/s, and that as a share of this machine's peak, measured right after the preset
  (so both see the same load on a shared machine) with a large `torch.mm` and, because MKL's
  matrix multiply can be 2x below what the CPU does (AMD), also with a large convolution, in the
  precision the step runs in (bf16 autocast where the device has native bf16, else fp32), and the
  convolution peak in fp32 and bf16 side by side;
- inference: latency of one transfer and images/s of batched transfers (the evaluation path);
- data: images/s of the toon renderer, of building and of loading the data cache, and the time of
  `make_batch` as a share of a step (the loader must not be the bottleneck);
- peak memory: resident set size on CPU (reset before each preset where Linux allows it), max
  allocated memory on CUDA.
Everything goes through the training code itself (`fexgan.training.step.build_nets / make_batch /
train_step`), so the numbers are those of `fexgan train`. On CUDA every timer is bracketed by
`torch.cuda.synchronize()`.
"""
from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fexgan.config import TrainConfig
from fexgan.data.pairs import PairSampler, split_indices
from fexgan.data.sources import ImageSet, load_source
from fexgan.devices import bf16_support, pick_device
from fexgan.errors import UserError
from fexgan.files import checkpoint as ckpt
from fexgan.metrics.generated import transfer
from fexgan.presets import PRESETS, build_config
from fexgan.training.step import (
    Nets,
    autocast_for,
    build_nets,
    make_batch,
    precision,
    train_step,
)
from fexgan.training.threads import ThreadTuner

DATA_PER_CLASS = 10    # toon:10 = 6 characters x 7 expressions x 10 = 420 images: enough for any preset's batch
WARMUP = 3             # untimed steps first: oneDNN / cuDNN pick their kernels, torch.compile compiles


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Median wall-clock and process CPU seconds of repeated calls. On a shared machine the CPU time
    (with one thread) shows the work done, the wall time also the share of the cores we were given."""

    wall: float
    cpu: float


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    """Medians over `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus))


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 7) -> Timing:
    """GFLOP/s of a large square `torch.mm` (medians of `repeats`), per wall and per CPU second."""
    n = 8192 if device.type == "cuda" else 1024 if torch.get_num_threads() <= 8 else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    t = timed(lambda: torch.mm(a, b), device, repeats, warmup=2)
    return Timing(2 * n ** 3 / t.wall / 1e9, 2 * n ** 3 / t.cpu / 1e9)


def conv_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 7) -> Timing:
    """GFLOP/s of a large 3x3 convolution (oneDNN on CPU, cuDNN on CUDA). On some CPUs it beats
    `torch.mm` by 2x: MKL's matrix multiply takes a slower code path on AMD processors."""
    batch, size = (128, 64) if device.type == "cuda" else (4 * max(1, torch.get_num_threads() // 2), 32)
    x = torch.randn(batch, 256, size, size, device=device).to(dtype)
    w = torch.randn(256, 256, 3, 3, device=device).to(dtype)
    t = timed(lambda: F.conv2d(x, w, padding=1), device, repeats, warmup=2)
    flops = 2 * batch * size * size * 256 * 256 * 9
    return Timing(flops / t.wall / 1e9, flops / t.cpu / 1e9)


def peaks_by_threads(device: torch.device, dtype: torch.dtype, threads: list[int]) -> dict[int, dict[str, Timing]]:
    """{threads: {"mm": ..., "conv": ...}} for each thread count (one entry on CUDA); the current
    thread setting is restored afterwards."""
    old, peaks = torch.get_num_threads(), {}
    for n in threads if device.type == "cpu" else [old]:
        torch.set_num_threads(n)
        peaks[n] = {"mm": matmul_peak(device, dtype), "conv": conv_peak(device, dtype)}
    torch.set_num_threads(old)
    return peaks


# ----------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> str:
    """Start a fresh peak-memory window; returns what `peak_memory_mb` will measure."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda max allocated"
    try:  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return "rss peak of this preset"
    except OSError:
        return "rss peak of the process so far"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource  # Unix only; Linux answered above

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2 ** 20 if platform.system() == "Darwin" else 1024)


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (runnable processes; above the core count the CPU is shared)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine(device: torch.device) -> dict:
    """What the figures were measured on."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(device), "load_average": load_average()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info


# ----------------------------------------------------------------------------- one preset
@dataclass
class Rig:
    """A preset's networks, data and pair sampler, set up the way `fexgan.training.loop.train` sets them up."""

    cfg: TrainConfig
    device: torch.device
    data: ImageSet
    images: torch.Tensor
    nets: Nets
    sampler: PairSampler
    generator: torch.Generator
    autocast: torch.autocast
    steps: int = 0  # steps taken, for the steps that differ (`alone_every`)

    def batch(self) -> dict[str, torch.Tensor]:
        return make_batch(self.data, self.images, *self.sampler.next_batch(), self.cfg, self.generator, self.device)

    def step(self, batch: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        batch = self.batch() if batch is None else batch
        self.steps += 1
        return train_step(self.nets, batch, self.cfg, self.cfg.losses.alpha, self.autocast, step=self.steps - 1)


def make_rig(cfg: TrainConfig, device: torch.device, data: ImageSet) -> Rig:
    train_idx, _ = split_indices(data, cfg.data.val_fraction, cfg.run.seed)
    torch.manual_seed(cfg.run.seed)
    nets = build_nets(cfg, device)
    images = data.images.to(device)
    return Rig(cfg, device, data, images, nets, PairSampler(data, train_idx, cfg.optimiser.batch_size, seed=cfg.run.seed),
               torch.Generator().manual_seed(cfg.run.seed + 1), autocast_for(cfg, device))


def step_flops(rig: Rig) -> int:
    """FLOPs of one training step, counted on the eager networks (a compiled graph hides its ops)."""
    eager = replace(rig, nets=replace(rig.nets, G=ckpt.unwrap(rig.nets.G), D=ckpt.unwrap(rig.nets.D)))
    batch = eager.batch()
    with FlopCounterMode(display=False) as counter:
        eager.step(batch)
    return counter.get_total_flops()


@contextlib.contextmanager
def private_cache() -> Iterator[Path]:
    """An empty, temporary data cache (FEXGAN_CACHE), so the cache build is measured from scratch."""
    old = os.environ.get("FEXGAN_CACHE")
    with tempfile.TemporaryDirectory(prefix="fexgan-bench-") as tmp:
        os.environ["FEXGAN_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("FEXGAN_CACHE", None)
            else:
                os.environ["FEXGAN_CACHE"] = old


def bench_data(cfg: TrainConfig) -> tuple[ImageSet, dict]:
    """The bench's training data, and images/s of rendering it, building its cache and loading that."""
    from fexgan.data import toon

    spec, size = f"toon:{DATA_PER_CLASS}", cfg.model.image_size
    start = time.perf_counter()
    n = len(toon.render_arrays(per_class=DATA_PER_CLASS, size=size).images)
    render_s = time.perf_counter() - start
    with private_cache():
        start = time.perf_counter()
        load_source(spec, size, cfg.model.background, cfg.model.classes)         # render, preprocess, write
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        data = load_source(spec, size, cfg.model.background, cfg.model.classes)  # read back
        load_s = time.perf_counter() - start
    return data, {"images": n, "render_images_per_s": n / render_s, "cache_build_images_per_s": n / build_s,
                  "cache_load_images_per_s": n / load_s}


def bench_inference(rig: Rig, repeats: int) -> dict:
    """Transfers as evaluation and the generate commands run them: eval mode, latent mean, uint8 out."""
    G, data, n_cls = ckpt.unwrap(rig.nets.G), rig.data, rig.cfg.model.num_classes
    batch = 256 if rig.device.type == "cuda" else 64
    idx = torch.arange(batch) % len(data)
    target = F.one_hot(torch.arange(batch) % n_cls, n_cls).float()
    one = timed(lambda: transfer(G, data.images[:1], data.expression[:1], target[:1]), rig.device, repeats, warmup=2)
    many = timed(lambda: transfer(G, data.images[idx], data.expression[idx], target), rig.device,
                 max(2, repeats // 3), warmup=1)
    G.train()
    return {"latency_ms": 1000 * one.wall, "batch": batch, "batched_images_per_s": batch / many.wall}


def bench_preset(preset: str, device: torch.device, steps: int, overrides: list[str] | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Every measurement of one preset (see the module docstring)."""
    cfg = build_config(preset, overrides=[f"run.device={device}", *(overrides or [])])
    cpu = device.type == "cpu"
    if cfg.run.threads > 0:
        torch.set_num_threads(cfg.run.threads)
    mode = precision(cfg, device)
    amp = mode.startswith("bf16")
    peak_dtype = torch.bfloat16 if amp else torch.float32
    log(f"{preset}: data")
    data, data_stats = bench_data(cfg)
    memory_kind = reset_peak_memory(device)
    rig = make_rig(cfg, device, data)
    tuner = ThreadTuner(torch.get_num_threads(), enabled=cpu and cfg.run.threads == 0, warmup=WARMUP)
    log(f"{preset}: training ({WARMUP} warm-up steps, a thread-count probe on CPU, {steps} timed steps)")
    start = time.perf_counter()
    tuner(rig.step)  # the first step: kernel selection and, with compile=true, compilation
    sync(device)
    first_step_s = time.perf_counter() - start
    for _ in range(WARMUP - 1):
        tuner(rig.step)
    while tuner.tuning:  # as `fexgan train` does: keep the fastest thread count
        tuner(rig.step)
    threads = torch.get_num_threads()
    step_t = timed(rig.step, device, steps, warmup=0)
    batch_t = timed(rig.batch, device, steps)
    memory_mb = peak_memory_mb(device)
    flops = step_flops(rig)
    log(f"{preset}: inference and the machine's peak")
    inference = bench_inference(rig, steps)
    peaks = peaks_by_threads(device, peak_dtype, tuner.candidates)
    mm_peak = max(p["mm"].wall for p in peaks.values())
    peak = max(mm_peak, *(p["conv"].wall for p in peaks.values()))
    # the convolution peak in both precisions: the step's is measured above, the other one here
    other = [d for d in (torch.float32, torch.bfloat16) if d != peak_dtype and (d == torch.float32 or bf16_support(device))]
    conv_peaks = {str(d).removeprefix("torch."): conv_peak(device, d).wall for d in other}
    conv_peaks[str(peak_dtype).removeprefix("torch.")] = max(p["conv"].wall for p in peaks.values())
    achieved = flops / step_t.wall / 1e9
    training = {"step_ms": 1000 * step_t.wall, "images_per_s": cfg.optimiser.batch_size / step_t.wall,
                "first_step_s": first_step_s, "threads": threads,
                "thread_probe_ms": {str(t): 1000 * s for t, s in tuner.last_probe.items()}}
    efficiency = {"per_step": flops, "per_image": flops / cfg.optimiser.batch_size, "achieved_gflops": achieved,
                  "peak_dtype": str(peak_dtype).removeprefix("torch."), "matmul_peak_gflops": mm_peak,
                  "peak_gflops": peak, "fraction_of_matmul_peak": achieved / mm_peak, "fraction_of_peak": achieved / peak,
                  "conv_peak_fp32_gflops": conv_peaks["float32"], "conv_peak_bf16_gflops": conv_peaks.get("bfloat16"),
                  "peaks_by_threads": {str(t): {k: v.wall for k, v in p.items()} for t, p in peaks.items()}}
    if cpu:  # CPU seconds: the work itself, whatever share of the cores other processes took
        training.update(cpu_ms_per_step=1000 * step_t.cpu, cpu_utilisation=step_t.cpu / step_t.wall / threads)
        per_cpu_s = flops / step_t.cpu / 1e9
        efficiency.update(gflops_per_cpu_second=per_cpu_s,
                          fraction_of_peak_cpu_time=per_cpu_s / max(p.cpu for p in peaks[threads].values()))
    return {
        "preset": preset, "image_size": cfg.model.image_size, "width": cfg.model.width,
        "batch_size": cfg.optimiser.batch_size, "amp_bf16": amp, "precision": mode, "channels_last": cfg.run.channels_last,
        "compile": cfg.run.compile, "timed_steps": steps, "load_average_after": load_average(),
        "training": training, "flops": efficiency, "inference": inference,
        "data": {**data_stats, "make_batch_ms": 1000 * batch_t.wall, "make_batch_share_of_step": batch_t.wall / step_t.wall},
        "memory": {"peak_mb": memory_mb, "kind": memory_kind},
    }


def run_bench(presets: list[str], device: str = "auto", steps: int = 10, overrides: list[str] | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Benchmark each preset in turn; returns {"machine": ..., "presets": {name: results}}."""
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        raise UserError(f"unknown preset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PRESETS)}")
    if steps < 1:
        raise UserError("--steps must be at least 1")
    dev = pick_device(device)
    results = {"machine": machine(dev), "presets": {}}
    threads = torch.get_num_threads()
    for preset in presets:
        torch.set_num_threads(threads)  # each preset starts from the default; its own probe decides
        results["presets"][preset] = bench_preset(preset, dev, steps, overrides, log)
    results["machine"]["load_average_end"] = load_average()
    return results


# ----------------------------------------------------------------------------- report
ROWS: list[tuple[str, str, str]] = [   # (label, path in a preset's results, format)
    ("image size / batch", "image_size/batch_size", "{} px / {}"),
    ("precision", "precision", "{}"),
    ("train images/s", "training.images_per_s", "{:.1f}"),
    ("time per step (median)", "training.step_ms", "{:.1f} ms"),
    ("threads", "training.threads", "{}"),
    ("first step (warm-up)", "training.first_step_s", "{:.2f} s"),
    ("FLOPs per train image", "flops.per_image", "{:.3g}"),
    ("achieved GFLOP/s", "flops.achieved_gflops", "{:.1f}"),
    ("matmul peak GFLOP/s (torch.mm)", "flops.matmul_peak_gflops", "{:.1f}"),
    ("share of matmul peak", "flops.fraction_of_matmul_peak", "{:.0%}"),
    ("conv peak GFLOP/s, fp32", "flops.conv_peak_fp32_gflops", "{:.1f}"),
    ("conv peak GFLOP/s, bf16", "flops.conv_peak_bf16_gflops", "{:.1f}"),
    ("peak GFLOP/s (max of mm, conv; in the step's precision)", "flops.peak_gflops", "{:.1f}"),
    ("share of that peak", "flops.fraction_of_peak", "{:.0%}"),
    ("share of peak, CPU time", "flops.fraction_of_peak_cpu_time", "{:.0%}"),
    ("CPU utilisation", "training.cpu_utilisation", "{:.0%}"),
    ("transfer latency (1 image)", "inference.latency_ms", "{:.1f} ms"),
    ("transfer images/s (batched)", "inference.batched_images_per_s", "{:.1f}"),
    ("toon render images/s", "data.render_images_per_s", "{:.0f}"),
    ("cache build images/s", "data.cache_build_images_per_s", "{:.0f}"),
    ("cache load images/s", "data.cache_load_images_per_s", "{:.0f}"),
    ("make_batch share of step", "data.make_batch_share_of_step", "{:.1%}"),
    ("peak memory", "memory.peak_mb", "{:.0f} MB"),
]


def _get(results: dict, path: str) -> object:
    for key in path.split("."):
        results = results.get(key) if isinstance(results, dict) else None
    return results


def table(results: dict):
    """The results as a Rich table: one column per preset ("-" where a figure does not apply)."""
    from rich.table import Table

    m = results["machine"]
    load = f", load {m['load_average'][0]:.1f}" if m.get("load_average") else ""
    t = Table(title=f"fexgan bench on {m.get('gpu', m['cpu'])} ({m['cores']} cores), torch {m['torch']}, "
                    f"{m['device']}{load}")
    t.add_column("")
    for name in results["presets"]:
        t.add_column(name, justify="right")
    for label, path, fmt in ROWS:
        cells = []
        for r in results["presets"].values():
            values = [_get(r, p) for p in path.split("/")]
            cells.append("-" if None in values else fmt.format(*values))
        t.add_row(label, *cells)
    return t
