"""Model files and training checkpoints, written atomically and loaded without executing code, and
the model file a name means (`resolve_model`: a run folder, a file or a shipped model).

- A model file (`*.safetensors`) holds generator and discriminator weights (`generator.*`,
  `discriminator.*`) and, in its metadata, the `ModelConfig` (its numerics only where they differ from
  the defaults), a training summary, the design's name and the fexgan that made it, so the file alone
  rebuilds the model. Its format version is the oldest reader that understands it: 1 for the paper's
  design (every fexgan reads it), 2 for the other designs (an older fexgan refuses them instead of
  loading them as the paper's model), 3 for a model whose numerics are not the defaults (the `paper`
  preset's Keras numerics: an older fexgan would build it with the wrong slope and batch-norm epsilon).
  Loading refuses what this version does not understand (a newer format, an unknown setting, an
  unknown tensor) with one line naming the fexgan that made the file.
- A checkpoint is a model file plus `*.state.pt` (optimisers, RNG and data-order state), loaded with
  `torch.load(weights_only=True)`.
Every write goes to a temporary file that is flushed, fsynced and renamed over the target, so a
crash or a full disk never leaves a half-written file under the final name. Every model file
records a sha256 of its tensors (and a checkpoint's the sha256 of its state file) in its metadata,
so a file damaged after it was written is detected when it is read.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from fexgan import __version__
from fexgan.config import ModelConfig, UnknownKeys
from fexgan.errors import UserError, warn
from fexgan.nets.designs import build_generator, design_of
from fexgan.nets.networks import Discriminator, Generator, build_discriminator

FORMAT = "fexgan-model-"  # + the format version
READS = 3                 # the newest format version this fexgan reads
MADE_BY = f"fexgan {__version__}"
# Shipped models that were replaced (old name -> new name, why): the old name fails with a line naming the new one.
RENAMED = {"toon-64": ("toon-128", "128 px like the paper, trained on the aligned toon faces of renderer version 3")}


def format_version(cfg: ModelConfig) -> int:
    """The oldest format version that describes a model of `cfg`: 3 when its numerics are not the defaults,
    else its design's (1 for the paper's)."""
    if cfg.custom_numerics():
        return 3
    return design_of(cfg.generator).file_format


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` then fsync and rename tmp over `path`; on failure the old file stays intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # mkstemp makes 0600 files: the usual permissions
        os.chmod(tmp, 0o666 & ~umask)
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


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically. The bytes are made in memory and written by `atomic_write`:
    safetensors' own `save_file` writes through a temporary file of its own, which a kill leaves behind."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(save(tensors, metadata=metadata)))


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_model(path: Path, generator: Generator, discriminator: Discriminator | None, cfg: ModelConfig,
               summary: dict | None = None, metadata: dict[str, str] | None = None) -> None:
    """Write generator (+ discriminator) weights, the configuration and a checksum into one safetensors
    file (`metadata`: extra string entries). Non-finite weights are refused: a NaN model is never written."""
    tensors = {f"generator.{k}": v.detach().cpu().contiguous() for k, v in unwrap(generator).state_dict().items()}
    if discriminator is not None:
        tensors.update({f"discriminator.{k}": v.detach().cpu().contiguous()
                        for k, v in unwrap(discriminator).state_dict().items()})
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"refusing to write {path}: {len(bad)} tensors hold NaN or inf (e.g. {bad[0]}); "
                        f"train with a lower learning rate")
    meta = {**(metadata or {}), "format": f"{FORMAT}{format_version(cfg)}", "made_by": MADE_BY,
            "design": cfg.generator, "model_config": json.dumps(cfg.stored_dict()),
            "summary": json.dumps(summary or {}), "sha256": tensors_sha256(tensors)}
    save_tensors(path, tensors, meta)


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


def raw_metadata(path: Path) -> dict[str, str]:
    """The metadata strings of a fexgan model file (only its header is read)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors model file ({err}); it may be truncated or corrupt") from None
    found = str(meta.get("format", ""))
    version = int(found[len(FORMAT):]) if found.startswith(FORMAT) and found[len(FORMAT):].isdigit() else None
    if version is None:
        raise UserError(f"{path} is a safetensors file but not a fexgan model (format '{found or None}', "
                        f"expected '{FORMAT}1' to '{FORMAT}{READS}')")
    if version > READS:
        raise UserError(f"{path} was made by {made_by(meta)} in model format {version}, newer than this "
                        f"{MADE_BY} reads (up to {READS}); upgrade fexgan to load it")
    return meta


def made_by(meta: dict[str, str]) -> str:
    """Which fexgan wrote a file, from its metadata ('an older fexgan' for files from before it was recorded)."""
    return meta.get("made_by", "an older fexgan")


def read_metadata(path: Path) -> tuple[ModelConfig, dict]:
    """The configuration and summary stored in a model file, checking that it is one of ours."""
    meta = raw_metadata(path)
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["model_config"]))
        summary = json.loads(meta.get("summary", "{}"))
    except UnknownKeys as err:
        raise UserError(f"{path} was made by {made_by(meta)} and has model settings this {MADE_BY} does not know "
                        f"({', '.join(err.keys)}); load it with the fexgan that made it, or a newer one") from None
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: the model configuration in its metadata is damaged ({err.__class__.__name__}: {err})") from None
    try:
        cfg.validate()
    except UserError as err:
        raise UserError(f"{path} (made by {made_by(meta)}): the stored model configuration is not valid here ({err})") from None
    return cfg, summary


def describe(cfg: ModelConfig) -> str:
    """The architecture in a few words, for messages: 'image_size=32 width=0.0625 latent_dim=16 classes=7'."""
    return (f"generator={cfg.generator} image_size={cfg.image_size} width={cfg.width} latent_dim={cfg.latent_dim} "
            f"classes={cfg.num_classes}")


def read_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a model file, checked against the sha256 recorded when it was written."""
    expected = raw_metadata(path).get("sha256")  # files written before checksums have none
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a readable safetensors model file ({err}); it may be truncated or corrupt") from None
    if expected is not None and tensors_sha256(tensors) != expected:
        raise UserError(f"{path} is corrupt: its tensors do not match the sha256 recorded when it was written")
    return {k: v.to(device) for k, v in tensors.items()}


def load_model(path: Path, device: str | torch.device = "cpu", discriminator: bool = True) -> LoadedModel:
    """Rebuild the networks from a model file alone; a wrong architecture says what differs, and a
    tensor this version has no place for is refused (a newer design's, or a damaged file)."""
    cfg, summary = read_metadata(path)
    tensors = read_tensors(path, device)
    strays = sorted(k for k in tensors if not k.startswith(("generator.", "discriminator.")))
    if strays:
        raise UserError(f"{path} (made by {made_by(raw_metadata(path))}) holds tensors this {MADE_BY} has no place "
                        f"for ({len(strays)}, e.g. {strays[0]}); load it with the fexgan that made it")
    gen = build_generator(cfg).to(device)
    _load_part(gen, tensors, "generator", path, cfg)
    disc = None
    if any(k.startswith("discriminator.") for k in tensors):
        disc = build_discriminator(cfg).to(device)
        _load_part(disc, tensors, "discriminator", path, cfg)
        disc = disc.eval() if discriminator else None
    return LoadedModel(gen.eval(), disc, cfg, summary)


def _load_part(module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path,
               cfg: ModelConfig) -> None:
    part = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(part)), sorted(set(part) - set(expected))
    if missing:
        raise UserError(f"{path}: {prefix} weights are missing {len(missing)} tensors (e.g. {missing[0]}); "
                        f"the file does not match its own configuration ({describe(cfg)})")
    if extra:
        raise UserError(f"{path} (made by {made_by(raw_metadata(path))}): {prefix} has {len(extra)} tensors this "
                        f"{MADE_BY} has no place for in the {cfg.generator} design (e.g. {extra[0]}); load it with "
                        f"the fexgan that made it")
    for k, v in expected.items():
        if part[k].shape != v.shape:
            raise UserError(f"{path}: {prefix} tensor {k} has shape {tuple(part[k].shape)}, expected "
                            f"{tuple(v.shape)} for the stored configuration ({describe(cfg)})")
    module.load_state_dict(part)


def save_state(path: Path, state: dict) -> str:
    """Optimiser/RNG/data-order state next to a checkpoint's weights; returns the file's sha256."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_state(path: Path, sha256: str | None = None) -> dict:
    """Load training state with `weights_only=True`: a pickle carrying code is refused and never run.
    With `sha256`, a file that differs from the one written is refused before it is unpickled."""
    path = Path(path)
    if sha256 is not None and path.is_file() and file_sha256(path) != sha256:
        raise UserError(f"{path} is corrupt: it does not match the sha256 recorded in its checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on pickle protocols is noise here
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"it asks to call or build {found.group(1)}" if found else "it holds more than tensors and plain data"
        raise UserError(f"refusing to load {path}: {what}; a training state holds only tensors and plain data, "
                        f"so this file is damaged or crafted to run code (nothing in it was run)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise UserError(f"{path} is not a readable training state file ({first})") from None


# ----------------------------------------------------------------------------- where model files are
def latest_checkpoint(run: Path) -> Path | None:
    """Newest checkpoint of a run folder whose weights and state both match their checksums; broken
    ones are skipped with a warning."""
    for weights in sorted((Path(run) / "checkpoints").glob("step_*.safetensors"), reverse=True):
        state = weights.with_suffix(".state.pt")
        try:
            read_tensors(weights)
            if not state.is_file():
                raise UserError(f"{state.name} is missing")
            expected = raw_metadata(weights).get("state_sha256")
            if expected is not None and file_sha256(state) != expected:
                raise UserError(f"{state.name} does not match the sha256 recorded in {weights.name}")
            return weights
        except UserError as err:
            warn(f"skipping checkpoint {weights.name}: {err}")
    return None


def shipped_models() -> list[str]:
    """Names of the models that ship inside the package (src/fexgan/pretrained/<name>.safetensors)."""
    folder = resources.files("fexgan") / "pretrained"
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".safetensors")] for p in folder.iterdir() if p.name.endswith(".safetensors"))


def resolve_model(model: str | Path) -> Path:
    """The model file behind MODEL: a run folder (its model.safetensors, else its newest checkpoint),
    a model file, or the name of a shipped model."""
    path = Path(model).expanduser()
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        newest = latest_checkpoint(path)
        if newest is None:
            raise UserError(f"run folder {path} has no model.safetensors and no checkpoint in checkpoints/ yet")
        return newest
    if path.exists():
        return path
    shipped = resources.files("fexgan") / "pretrained" / f"{model}.safetensors"
    if Path(model).name == str(model) and shipped.is_file():
        return Path(str(shipped))
    if str(model) in RENAMED:
        new, why = RENAMED[str(model)]
        raise UserError(f"the shipped model '{model}' was replaced by '{new}' ({why}); use {new}")
    names = ", ".join(shipped_models()) or "none yet"
    raise UserError(f"model '{model}' not found: MODEL is a run folder (with model.safetensors or checkpoints/), "
                    f"a .safetensors model file, or a shipped model name (shipped: {names})")
