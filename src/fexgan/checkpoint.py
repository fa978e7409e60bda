"""Model files and training checkpoints, written atomically and loaded without executing code.

- A model file (`*.safetensors`) holds generator and discriminator weights (`generator.*`,
  `discriminator.*`) and, in its metadata, the `ModelConfig` and a training summary, so the file
  alone rebuilds the model.
- A checkpoint is a model file plus `*.state.pt` (optimisers, RNG and data-order state), loaded with
  `torch.load(weights_only=True)`.
Every write goes to a temporary file that is flushed, fsynced and renamed over the target, so a
crash or a full disk never leaves a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from fexgan.config import ModelConfig
from fexgan.errors import UserError
from fexgan.models import Discriminator, Generator

FORMAT = "fexgan-model-1"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` then fsync and rename tmp over `path`; on failure the old file stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_model(path: Path, generator: Generator, discriminator: Discriminator | None, cfg: ModelConfig,
               summary: dict | None = None) -> None:
    """Write generator (+ discriminator) weights and the configuration into one safetensors file."""
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in unwrap(generator).state_dict().items()}
    if discriminator is not None:
        tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous()
                        for k, v in unwrap(discriminator).state_dict().items()})
    metadata = {"format": FORMAT, "model_config": json.dumps(cfg.to_dict()), "summary": json.dumps(summary or {})}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside a DistributedDataParallel / torch.compile wrapper."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


@dataclass
class LoadedModel:
    generator: Generator
    discriminator: Discriminator | None
    config: ModelConfig
    summary: dict


def read_metadata(path: Path) -> tuple[ModelConfig, dict]:
    """The configuration and summary stored in a model file, checking that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors model file ({err}); it may be truncated or corrupt") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not a fexgan model (format '{meta.get('format')}', expected '{FORMAT}')")
    return ModelConfig.from_dict(json.loads(meta["model_config"])), json.loads(meta.get("summary", "{}"))


def load_model(path: Path, device: str | torch.device = "cpu", discriminator: bool = True) -> LoadedModel:
    """Rebuild the networks from a model file alone; a wrong architecture says what differs."""
    cfg, summary = read_metadata(path)
    tensors = load_file(str(path), device=str(device))
    gen = Generator(cfg).to(device)
    _load_part(gen, tensors, "generator", path)
    disc = None
    if discriminator and any(k.startswith("discriminator.") for k in tensors):
        disc = Discriminator(cfg).to(device)
        _load_part(disc, tensors, "discriminator", path)
        disc.eval()
    gen.eval()
    return LoadedModel(gen, disc, cfg, summary)


def _load_part(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(part))
    if missing:
        raise UserError(f"{path}: {prefix} weights are missing {len(missing)} tensors (e.g. {missing[0]}); "
                        f"the file does not match its own configuration")
    for k, v in expected.items():
        if part[k].shape != v.shape:
            raise UserError(f"{path}: {prefix} tensor {k} has shape {tuple(part[k].shape)}, "
                            f"expected {tuple(v.shape)} for the stored configuration")
    module.load_state_dict(part, strict=False)


def save_state(path: Path, state: dict) -> None:
    """Optimiser/RNG/data-order state next to a checkpoint's weights."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    """Load training state with `weights_only=True`: a pickle carrying code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(f"refusing to load {path}: it contains objects other than tensors and plain data ({err})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{path} is not a readable training state file ({err})") from None
