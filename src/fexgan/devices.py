"""Where the networks run: the device a name means, checked once for every command and the API."""
from __future__ import annotations

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
