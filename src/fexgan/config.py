"""Configuration as plain dataclasses, the presets, and overrides from the command line or a file.

`ModelConfig` is everything needed to rebuild the networks; it is saved inside every model file.
`TrainConfig` holds the data, optimisation and run options; it is saved in every run folder
(`config.json`) so a run can be reproduced or resumed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS

IMAGE_SIZES = (32, 64, 128, 256)
KERNEL_INITS = ("normal", "glorot_uniform")  # normal: N(0, 0.02), DCGAN's; glorot_uniform: Keras' default
NORM_INITS = ("normal", "ones")              # batch-norm scales: normal: N(1, 0.02), DCGAN's; ones: Keras' default


NUMERICS = ("leaky_slope", "norm_momentum", "norm_eps", "conv_init", "deconv_init", "dense_init", "norm_init")


class UnknownKeys(UserError):
    """Configuration keys this version of fexgan does not know (a newer version's, or a typo)."""

    def __init__(self, keys: list[str]):
        super().__init__(f"unknown configuration keys: {', '.join(keys)}")
        self.keys = keys


@dataclass
class ModelConfig:
    """Shape of the networks. `width` multiplies every channel count of the reference layout;
    `generator` names the generator's design (`fexgan.nets.designs`; "paper": the reference layout; "edit": the
    paper's with the source fed to the decoder, which draws a change of it, `fexgan.nets.networks.EditGenerator`)."""

    generator: str = "paper"
    image_size: int = 128
    width: float = 1.0
    latent_dim: int = 128
    dropout: float = 0.5
    classes: tuple[str, ...] = EXPRESSIONS
    # Normalisation of pixels: x in [0, 255] -> x / 127.5 - 1, on RGB composited over `background`.
    background: tuple[int, int, int] = (255, 255, 255)
    # Numerics (`NUMERICS`). The defaults are DCGAN's, what every model before them was trained with; the
    # `paper` preset sets the reference's, which its Keras layers inherit from Keras' defaults.
    leaky_slope: float = 0.2         # LeakyReLU's negative slope (encoder, discriminator); Keras' LeakyReLU(): 0.3
    norm_momentum: float = 0.1       # batch norm's running statistics, PyTorch's sense; Keras' momentum 0.99 is 0.01 here
    norm_eps: float = 1e-5           # batch norm's epsilon; Keras: 1e-3
    conv_init: str = "normal"        # convolution kernels (`KERNEL_INITS`); the reference gives them N(0, 0.02)
    deconv_init: str = "normal"      # transposed-convolution kernels; likewise N(0, 0.02) in the reference
    dense_init: str = "normal"       # the dense layers the reference builds without an initialiser (the encoder's mu,
                                     # the decoder's first affect layer, the discriminator's two heads): Glorot-uniform
                                     # there; its other dense layers are N(0, 0.02) and log-sigma's zeros in every preset
    norm_init: str = "normal"        # batch-norm scales (`NORM_INITS`); Keras starts them at ones. Biases start at zero.

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def custom_numerics(self) -> dict[str, Any]:
        """The numerics (`NUMERICS`) that differ from the defaults: {} for every model made before they existed."""
        default = ModelConfig()
        return {k: getattr(self, k) for k in NUMERICS if getattr(self, k) != getattr(default, k)}

    def stored_dict(self) -> dict[str, Any]:
        """What a model file records: `to_dict` less the numerics left at their defaults, so a model with the
        defaults is described exactly as before they existed (and read by every fexgan)."""
        custom = self.custom_numerics()
        return {k: v for k, v in self.to_dict().items() if k not in NUMERICS or k in custom}

    def validate(self) -> None:
        if self.image_size not in IMAGE_SIZES:
            raise UserError(f"image size {self.image_size} is not supported; choose one of {IMAGE_SIZES}")
        if not 0.05 <= self.width <= 4:
            raise UserError(f"width multiplier {self.width} is out of range [0.05, 4]")
        if not 2 <= self.latent_dim <= 4096:
            raise UserError(f"latent size {self.latent_dim} is out of range [2, 4096]")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout {self.dropout} must be in [0, 1)")
        if len(self.classes) < 2:
            raise UserError("a model needs at least 2 expression classes")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise UserError(f"background {self.background} must be three values in 0-255, e.g. 255,255,255")
        if not 0 <= self.leaky_slope < 1:
            raise UserError(f"leaky_slope {self.leaky_slope} must be in [0, 1)")
        for key in ("norm_momentum", "norm_eps"):
            if not 0 < getattr(self, key) < 1:
                raise UserError(f"{key} {getattr(self, key)} must be in (0, 1)")
        for key in ("conv_init", "deconv_init", "dense_init"):
            if getattr(self, key) not in KERNEL_INITS:
                raise UserError(f"{key} '{getattr(self, key)}' is not one of {', '.join(KERNEL_INITS)}")
        if self.norm_init not in NORM_INITS:
            raise UserError(f"norm_init '{self.norm_init}' is not one of {', '.join(NORM_INITS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The configuration of `d`; a key this version does not know is an error (`UnknownKeys`)."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UnknownKeys(unknown)
        d = dict(d)
        for key in ("classes", "background"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class TrainConfig:
    """Everything about a training run. Lengths: `steps` wins over `minutes` over `epochs`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: str = "toon"               # toon | toon:PER_CLASS[:CHARACTERS][:jitter] | ferg:PATH | folder:PATH
    val_fraction: float = 0.2        # deterministic split, as the paper's 80/20
    held_out: int = 0                # the last N identities are kept out of training and validation
    batch_size: int = 32
    epochs: int = 100
    steps: int = 0                   # > 0: stop after this many steps
    minutes: float = 0.0             # > 0: stop after this much wall time
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adam_eps: float = 1e-8           # Adam's epsilon (PyTorch's default; Keras' is 1e-7, the `paper` preset's)
    alpha: float = 1.0               # weight of the generator's adversarial + auxiliary term
    alpha_late: float = 0.1          # ... its binary adversarial part after `late_fraction` of training
    late_fraction: float = 0.5       # the paper lowers the adversarial weight after half the epochs
    beta: float = 0.01               # weight of the KL term
    gamma: float = 100.0             # weight of the L1 reconstruction term
    d_classify_fakes: bool = True    # D's classifier also learns fakes as their target (eqs. 6-7); false: reals only
    d_augment: bool = False          # D sees reals and fakes alike shifted, zoomed, blurred and noised (DiffAugment)
    alone_weight: float = 0.5        # edit design: weight of the L1 of the decoder's image drawn alone (times gamma)
    alone_every: int = 1             # ... drawn alone on every n-th step, weighted n times: the same pull, 1/n the cost
    ema_decay: float = 0.999         # model files hold this moving average of the generator's weights (0: raw)
    target_jitter: float = 0.0       # std of normal noise added to the target affect vector (paper, Sec. 3.1)
    augment_shift: float = 0.06      # random translation as a fraction of the image size (source and L1 target alike)
    augment_scale: float = 0.05      # random zoom +- this fraction (likewise)
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    amp: bool = True                 # bf16 autocast where the device has native bf16 (CUDA; CPUs with AVX512-BF16/AMX)
    channels_last: bool = True       # NHWC layout for the networks (CPU and CUDA)
    compile: bool = False
    init_from: str = ""              # a model (file, run folder, shipped name) whose weights start the run
    replay: str = ""                 # fine-tunes: data replayed beside `data` (the base model's), ...
    replay_share: float = 0.75       # ... making up this share of every epoch
    freeze: tuple[str, ...] = ()     # generator parts kept fixed: generator.encoder|decoder|skips|head
    fixed_norms: bool = False        # every batch norm of the generator keeps the statistics it was trained with
    sync_batchnorm: bool = False     # under torchrun: batch-norm statistics over all processes
    threads: int = 0                 # torch intra-op threads on CPU; 0 = tuned while training (fastest of 1, 2, ..., all)
    log_every: int = 20
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3        # the newest K step checkpoints (plus checkpoints/best.safetensors)
    min_images_per_class: int = 1    # fail clearly when an expression or identity has fewer readable images
    max_rollbacks: int = 3           # divergence guard: give up after this many rollbacks without progress
    rollback_lr_factor: float = 0.5  # ... each rollback multiplies the learning rate by this

    def validate(self) -> None:
        self.model.validate()
        if self.batch_size < 2:
            raise UserError("batch size must be at least 2 (batch norm needs two images)")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"validation fraction {self.val_fraction} must be in [0, 1)")
        if self.epochs < 1 and self.steps < 1 and self.minutes <= 0:
            raise UserError("give a positive --epochs, --steps or --minutes")
        if min(self.steps, self.epochs) < 0 or not 0 <= self.minutes < float("inf"):
            raise UserError("--epochs, --steps and --minutes cannot be negative (or infinite)")
        if not 0 < self.lr < float("inf"):
            raise UserError(f"learning rate {self.lr} must be a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"betas {self.betas} must be two numbers in [0, 1), e.g. 0.5,0.999")
        if not 0 < self.adam_eps < 1:
            raise UserError(f"adam_eps {self.adam_eps} must be in (0, 1)")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"device '{self.device}' is not one of auto, cpu, cuda")
        at_least = {"log_every": 1, "keep_checkpoints": 1, "min_images_per_class": 1, "sample_every": 0,
                    "checkpoint_every": 0, "threads": 0, "max_rollbacks": 0, "seed": 0, "held_out": 0,
                    "alone_every": 1}
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise UserError(f"{key} must be at least {low}, got {getattr(self, key)}")
        if self.seed > 2**63 - 1:
            raise UserError(f"seed must be at most 2^63 - 1, got {self.seed}")
        for key in ("alpha", "alpha_late", "beta", "gamma", "target_jitter", "alone_weight"):
            if not 0 <= getattr(self, key) < float("inf"):
                raise UserError(f"{key} must be a finite number >= 0, got {getattr(self, key)}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay {self.ema_decay} must be in [0, 1) (0 turns the moving average off)")
        for key, high in (("late_fraction", 1.0), ("augment_shift", 0.5), ("augment_scale", 0.5)):
            if not 0 <= getattr(self, key) <= high:
                raise UserError(f"{key} must be in [0, {high}], got {getattr(self, key)}")
        if not 0 <= self.replay_share < 1:
            raise UserError(f"replay_share {self.replay_share} must be in [0, 1)")
        parts = ("generator.encoder", "generator.decoder", "generator.skips", "generator.head")
        if any(f not in parts for f in self.freeze):
            raise UserError(f"freeze {','.join(self.freeze)}: each part must be one of {', '.join(parts)}")
        if not 0 < self.rollback_lr_factor < 1:
            raise UserError(f"rollback_lr_factor {self.rollback_lr_factor} must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model_d = d.pop("model", {})
        model_known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = (set(d) - {f.name for f in dataclasses.fields(cls)}) | {f"model.{k}" for k in set(model_d) - model_known}
        if unknown:
            raise UnknownKeys(sorted(unknown))
        model = ModelConfig.from_dict(model_d)
        for key in ("betas", "freeze"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(model=model, **d)


# The reference's numerics: what its layers, built without arguments, inherit from Keras (its LeakyReLU's slope,
# its batch norms' momentum, epsilon and starting scales, Glorot-uniform dense layers where it names no
# initialiser, Adam's epsilon), with the N(0, 0.02) it gives every convolution and its 0.5 dropout
# (../shared/paper/reference-architecture.md, "Numeric defaults"; docs/ferg.md).
PAPER_NUMERICS: dict[str, Any] = {"leaky_slope": 0.3, "norm_momentum": 0.01, "norm_eps": 1e-3, "conv_init": "normal",
                                  "deconv_init": "normal", "dense_init": "glorot_uniform", "norm_init": "ones",
                                  "dropout": 0.5}

PRESETS: dict[str, dict[str, Any]] = {
    # Exactly the reference layout, its numerics and the paper's schedule.
    "paper": {"model": {"image_size": 128, "width": 1.0, **PAPER_NUMERICS}, "batch_size": 32, "epochs": 100,
              "adam_eps": 1e-7},
    # 64 px, a quarter of the widths: an epoch of the default toon set in a few minutes on 2 cores.
    # The adversarial weight drops after a fifth of the run, not half: on toon faces the judge reads the
    # expressions sooner (benchmarks/RESULTS.md, "Time to quality"). No augmentation: the toon faces'
    # fixed camera keeps every pair aligned, and a shift or zoom blurs the L1 target (docs/toon-faces.md).
    "cpu": {"model": {"image_size": 64, "width": 0.25}, "batch_size": 32, "epochs": 30,
            "lr": 5e-4, "late_fraction": 0.2, "sample_every": 250, "checkpoint_every": 250,
            "augment_shift": 0.0, "augment_scale": 0.0},
    # Any character: the cpu preset with the edit design (model.generator=edit), trained on 248 of 256
    # toon characters; the last 8 are held out for the zero-shot test (evaluate --split held_out). D's
    # classifier learns from real images only (taught fakes as their target, it calls half-made edits
    # done), and sees random views of every image (d_augment: on clean ones it accepts faint expressions).
    # The decoder draws alone (Fig. 4) on every other step, weighted twice. Measurements: docs/any-character.md.
    "any": {"model": {"image_size": 64, "width": 0.25, "generator": "edit"}, "batch_size": 32, "epochs": 14,
            "data": "toon:20:256", "held_out": 8, "d_classify_fakes": False, "d_augment": True, "alone_every": 2, "lr": 5e-4,
            "late_fraction": 0.2, "sample_every": 500, "checkpoint_every": 500, "augment_shift": 0.0,
            "augment_scale": 0.0},
    # 32 px and tiny widths, for tests; fp32 (amp off), so that its numbers are the same on every CPU.
    "tiny": {"model": {"image_size": 32, "width": 0.0625, "latent_dim": 16}, "batch_size": 8,
             "epochs": 1, "data": "toon:4", "log_every": 1, "sample_every": 0, "checkpoint_every": 0, "amp": False},
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _coerce(text: str, current: Any) -> Any:
    """Turn a command-line string into the type of the value it replaces."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if isinstance(current, (tuple, list)):
        items = [s for s in text.split(",") if s]
        return tuple(_coerce(s, current[0]) if current else s for s in items)
    if current is None:
        return text
    return type(current)(text)


def _check_types(values: Any, current: dict[str, Any], where: str, prefix: str = "") -> None:
    """Values from a file must have the type of the value they replace (an int passes for a float)."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a JSON object of settings{f' for {prefix[:-1]}' if prefix else ''}")
    for key, value in values.items():
        if key not in current:  # unknown keys are reported with all the others by TrainConfig.from_dict
            continue
        old = current[key]
        if isinstance(old, dict):
            _check_types(value, old, where, f"{prefix}{key}.")
            continue
        if isinstance(old, (tuple, list)):
            ok = isinstance(value, list) and (not old or all(_same_type(v, old[0]) for v in value))
        else:
            ok = _same_type(value, old)
        if not ok:
            raise UserError(f"{where}: '{prefix}{key}' should be like {json.dumps(old)}, not {json.dumps(value)}")


def _same_type(value: Any, like: Any) -> bool:
    if isinstance(like, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(like, bool)
    if isinstance(like, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(like))


def build_config(preset: str = "cpu", file: Path | None = None, overrides: list[str] | None = None,
                 base: dict[str, Any] | None = None) -> TrainConfig:
    """Preset (or a saved run's `base` configuration), then a JSON config file, then `key=value`
    overrides (dotted keys reach the model, e.g. model.width=0.5)."""
    if base is None and preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    d = _merge(TrainConfig().to_dict(), base if base is not None else PRESETS[preset])
    if file is not None:
        try:
            values = json.loads(Path(file).read_text())
        except FileNotFoundError:
            raise UserError(f"config file {file} does not exist") from None
        except json.JSONDecodeError as err:
            raise UserError(f"config file {file} is not valid JSON: {err}") from None
        _check_types(values, d, f"config file {file}")
        d = _merge(d, values)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"override '{item}' must look like key=value (e.g. lr=1e-4, model.width=0.5)")
        node = d
        *parents, leaf = key.strip().split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise UserError(f"unknown configuration key '{key}'")
            node = node[p]
        if leaf not in node:
            raise UserError(f"unknown configuration key '{key}'")
        try:
            node[leaf] = _coerce(value.strip(), node[leaf])
        except ValueError:
            raise UserError(f"value '{value}' for '{key}' is not a valid {type(node[leaf]).__name__}") from None
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg
