"""Where the networks run: the device a name means (checked once for every command and the API), and
whether it computes bf16 natively."""
from __future__ import annotations

from pathlib import Path

import torch

from fexgan.errors import UserError


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; an unknown name or CUDA without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' was asked for but no CUDA GPU is available; use the CPU (device cpu)")
    return torch.device(name)


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 instructions (Linux /proc/cpuinfo: avx512_bf16, amx_bf16); empty where
    it has none (oneDNN then emulates bf16, slower than fp32) or cannot tell."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def bf16_support(device: torch.device) -> str | None:
    """Why bf16 arithmetic is native on `device` ('CUDA', 'CPU avx512_bf16'), or None where it is not."""
    if device.type == "cuda":
        return "CUDA" if torch.cuda.is_bf16_supported() else None
    flags = cpu_bf16_flags() if device.type == "cpu" else []
    return f"CPU {' + '.join(flags)}" if flags else None


def inference_precision(name: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for generating on `device`: 'auto' is bf16 where the device computes it natively."""
    if name not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision '{name}' is not one of auto, fp32, bf16")
    if name == "auto":
        return "bf16" if bf16_support(device) else "fp32"
    return name
