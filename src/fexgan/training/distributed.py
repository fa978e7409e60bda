"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

`torchrun --nproc_per_node N -m fexgan train ...` starts N processes; each calls `setup()`, which
joins the process group (gloo on CPU, NCCL on CUDA, one GPU per process) from torchrun's
environment variables. `fexgan train --nproc N` is a shortcut that runs torchrun for you.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fexgan.errors import UserError


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Context:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a 1-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                            f"use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, local_rank, device)


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def all_mean(ctx: Context, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average a dict of scalar tensors over all processes (one collective for all of them)."""
    if not ctx.enabled or not values:
        return values
    keys = list(values)
    packed = torch.stack([torch.as_tensor(values[k], dtype=torch.float32, device=ctx.device) for k in keys])
    dist.all_reduce(packed)
    return dict(zip(keys, packed / ctx.world))


def all_true(ctx: Context, flag: bool) -> bool:
    """True only when `flag` holds on every process (so all ranks take the same branch)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=ctx.device)
    dist.all_reduce(t)
    return bool(t.item() == 0)


def cleanup(ctx: Context) -> None:
    """Leave the process group together: a barrier first, so no rank tears down its
    communication threads while a peer still talks to it."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def leave(code: int = 0) -> None:
    """End a torchrun worker whose run is complete (files written, process group destroyed) without the
    interpreter's teardown: there a rank aborted now and then (`terminate called without an active
    exception`, SIGABRT) while its peer was still writing the model, and torchrun then stopped the job
    (1 in 25-30 two-process runs on a loaded machine: benchmarks/RESULTS.md, "Seams")."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(nproc: int, train_args: list[str]) -> int:
    """Run `torchrun --nproc_per_node nproc -m fexgan train ARGS` and explain a failure in one line."""
    if nproc < 1:
        raise UserError("--nproc must be at least 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "fexgan", "train", *train_args]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    code = subprocess.call(cmd, env=env)
    if code != 0:
        raise UserError(f"distributed training stopped: a worker process failed (exit {code}); "
                        f"the other workers were stopped. Continue with `fexgan train --resume RUN --nproc {nproc}`")
    return code


def gather(ctx: Context, state: torch.Tensor) -> list[torch.Tensor]:
    """Every process's copy of a (CPU) state tensor, in rank order (one element without torchrun)."""
    if not ctx.enabled:
        return [state]
    out: list = [None] * ctx.world
    dist.all_gather_object(out, state)
    return out


def agreed_max(ctx: Context, value: float) -> float:
    """The largest `value` over all processes, so time-based decisions are the same everywhere."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def replicas_identical(ctx: Context, module: torch.nn.Module) -> bool:
    """Check that every process holds the same weights (DDP's promise), by comparing checksums."""
    if not ctx.enabled:
        return True
    flat = torch.cat([p.detach().float().flatten() for p in module.parameters()])
    mine = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, device=flat.device) % 7919).sum()])
    everyone = [torch.zeros_like(mine) for _ in range(ctx.world)]
    dist.all_gather(everyone, mine)
    return all(torch.equal(e, mine) for e in everyone)
