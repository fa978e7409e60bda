"""Configuration as plain dataclasses, the presets, and overrides from the command line or a file.

`ModelConfig` is everything needed to rebuild the networks; it is saved inside every model file.
`TrainConfig` holds a training run's options in sections by concern (`SECTIONS`: data, optimiser, losses,
a design's own options, run, finetune, logging); it is saved in every run folder (`config.json`) so a run
can be reproduced or resumed. A value is named by its section and key, `optimiser.lr`, on the command line
(`--set optimiser.lr=1e-4`) as in files. Configurations written before the sections existed (flat keys,
`{"lr": ..., "data": "toon"}`) are read through `migrate`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
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
class DataConfig:
    """What a run learns from, and how its images are varied."""

    source: str = "toon"             # toon | toon:PER_CLASS[:CHARACTERS][:jitter] | ferg:PATH | folder:PATH
    val_fraction: float = 0.2        # deterministic split, as the paper's 80/20
    held_out: int = 0                # the last N identities are kept out of training and validation
    min_images_per_class: int = 1    # fail clearly when an expression or identity has fewer readable images
    augment_shift: float = 0.06      # random translation as a fraction of the image size (source and L1 target alike)
    augment_scale: float = 0.05      # random zoom +- this fraction (likewise)
    target_jitter: float = 0.0       # std of normal noise added to the target affect vector (paper, Sec. 3.1)

    def validate(self) -> None:
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"validation fraction (data.val_fraction) {self.val_fraction} must be in [0, 1)")
        _at_least(self, "data", {"held_out": 0, "min_images_per_class": 1})
        _finite(self, "data", ("target_jitter",))
        for key in ("augment_shift", "augment_scale"):
            if not 0 <= getattr(self, key) <= 0.5:
                raise UserError(f"data.{key} must be in [0, 0.5], got {getattr(self, key)}")


@dataclass
class OptimiserConfig:
    """Adam, its batches, and the moving average of the generator that model files hold."""

    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adam_eps: float = 1e-8           # Adam's epsilon (PyTorch's default; Keras' is 1e-7, the `paper` preset's)
    ema_decay: float = 0.999         # model files hold this moving average of the generator's weights (0: raw)

    def validate(self) -> None:
        if self.batch_size < 2:
            raise UserError("batch size (optimiser.batch_size) must be at least 2 (batch norm needs two images)")
        if not 0 < self.lr < float("inf"):
            raise UserError(f"learning rate (optimiser.lr) {self.lr} must be a positive number")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise UserError(f"optimiser.betas {self.betas} must be two numbers in [0, 1), e.g. 0.5,0.999")
        if not 0 < self.adam_eps < 1:
            raise UserError(f"optimiser.adam_eps {self.adam_eps} must be in (0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"optimiser.ema_decay {self.ema_decay} must be in [0, 1) (0 turns the moving average off)")


@dataclass
class LossConfig:
    """The weights of the losses (paper, eqs. 5-9) and what the discriminator sees."""

    alpha: float = 1.0               # weight of the generator's adversarial + auxiliary term
    alpha_late: float = 0.1          # ... its binary adversarial part after `late_fraction` of training
    late_fraction: float = 0.5       # the paper lowers the adversarial weight after half the epochs
    beta: float = 0.01               # weight of the KL term
    gamma: float = 100.0             # weight of the L1 reconstruction term
    d_classify_fakes: bool = True    # D's classifier also learns fakes as their target (eqs. 6-7); false: reals only
    d_augment: bool = False          # D sees reals and fakes alike shifted, zoomed, blurred and noised (DiffAugment)

    def validate(self) -> None:
        _finite(self, "losses", ("alpha", "alpha_late", "beta", "gamma"))
        if not 0 <= self.late_fraction <= 1:
            raise UserError(f"losses.late_fraction must be in [0, 1], got {self.late_fraction}")


@dataclass
class EditConfig:
    """The edit design's own options (`fexgan.nets.networks.EditGenerator`): its decoder drawn alone."""

    alone_weight: float = 0.5        # weight of the L1 of the decoder's image drawn alone (times losses.gamma)
    alone_every: int = 1             # drawn alone on every n-th step, weighted n times: the same pull, 1/n the cost

    def validate(self) -> None:
        _finite(self, "edit", ("alone_weight",))
        _at_least(self, "edit", {"alone_every": 1})


@dataclass
class RunConfig:
    """How long a run lasts, where and how it computes. Lengths: `steps` wins over `minutes` over `epochs`."""

    epochs: int = 100
    steps: int = 0                   # > 0: stop after this many steps
    minutes: float = 0.0             # > 0: stop after this much wall time
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda
    amp: bool = True                 # bf16 autocast where the device has native bf16 (CUDA; CPUs with AVX512-BF16/AMX)
    channels_last: bool = True       # NHWC layout for the networks (CPU and CUDA)
    compile: bool = False
    threads: int = 0                 # torch intra-op threads on CPU; 0 = tuned while training (fastest of 1, 2, ..., all)
    sync_batchnorm: bool = False     # under torchrun: batch-norm statistics over all processes
    until: str = ""                  # a quality target (`parse_target`), e.g. gain=3,judge=0.95: the run ends at the
                                     # first checkpoint that reaches it; its length options are then the ceiling
    max_rollbacks: int = 3           # divergence guard: give up after this many rollbacks without progress
    rollback_lr_factor: float = 0.5  # ... each rollback multiplies the learning rate by this

    def validate(self) -> None:
        if self.epochs < 1 and self.steps < 1 and self.minutes <= 0:
            raise UserError("give a positive --epochs, --steps or --minutes")
        if min(self.steps, self.epochs) < 0 or not 0 <= self.minutes < float("inf"):
            raise UserError("--epochs, --steps and --minutes cannot be negative (or infinite)")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"device '{self.device}' is not one of auto, cpu, cuda")
        _at_least(self, "run", {"threads": 0, "max_rollbacks": 0, "seed": 0})
        if self.seed > 2**63 - 1:
            raise UserError(f"seed must be at most 2^63 - 1, got {self.seed}")
        if not 0 < self.rollback_lr_factor < 1:
            raise UserError(f"run.rollback_lr_factor {self.rollback_lr_factor} must be in (0, 1)")
        parse_target(self.until)


# What a quality target (`RunConfig.until`) can ask of the validation pairs at a checkpoint.
QUALITY_KEYS = {"gain": "PSNR of the transfers over that of the copy of their source, in dB, against the "
                        "renderer's truth (toon data)",
                "judge": "share of the transfers that the judge (`fexgan.metrics.judge`) reads as their target"}


def parse_target(text: str) -> dict[str, float]:
    """A quality target: 'gain=3,judge=0.95' -> {'gain': 3.0, 'judge': 0.95}; '' -> {} (none)."""
    target = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if key.strip() not in QUALITY_KEYS or not abs(number) < float("inf"):
            raise UserError(f"quality target '{item}' must look like key=number with key one of "
                            f"{', '.join(QUALITY_KEYS)} (e.g. --until gain=3,judge=0.95)")
        target[key.strip()] = number
    return target


FREEZABLE = ("generator.encoder", "generator.decoder", "generator.skips", "generator.head")


@dataclass
class FinetuneConfig:
    """Starting from a trained model (`fexgan finetune`, docs/any-character.md)."""

    init_from: str = ""              # a model (file, run folder, shipped name) whose weights start the run
    replay: str = ""                 # data replayed beside `data.source` (the base model's), ...
    replay_share: float = 0.75       # ... making up this share of every epoch
    freeze: tuple[str, ...] = ()     # generator parts kept fixed (`FREEZABLE`)
    fixed_norms: bool = False        # every batch norm of the generator keeps the statistics it was trained with

    def validate(self) -> None:
        if not 0 <= self.replay_share < 1:
            raise UserError(f"finetune.replay_share {self.replay_share} must be in [0, 1)")
        if any(f not in FREEZABLE for f in self.freeze):
            raise UserError(f"finetune.freeze {','.join(self.freeze)}: each part must be one of {', '.join(FREEZABLE)}")


@dataclass
class LoggingConfig:
    """What a run writes as it goes: log lines, sample grids, checkpoints (`fexgan.training.runs`)."""

    log_every: int = 20
    sample_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 3        # the newest K step checkpoints (plus checkpoints/best.safetensors)

    def validate(self) -> None:
        _at_least(self, "logging", {"log_every": 1, "keep_checkpoints": 1, "sample_every": 0, "checkpoint_every": 0})


def _at_least(section: Any, name: str, lows: dict[str, int]) -> None:
    for key, low in lows.items():
        if getattr(section, key) < low:
            raise UserError(f"{name}.{key} must be at least {low}, got {getattr(section, key)}")


def _finite(section: Any, name: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if not 0 <= getattr(section, key) < float("inf"):
            raise UserError(f"{name}.{key} must be a finite number >= 0, got {getattr(section, key)}")


@dataclass
class TrainConfig:
    """Everything about a training run, by section (`SECTIONS`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimiser: OptimiserConfig = field(default_factory=OptimiserConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    run: RunConfig = field(default_factory=RunConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        for name in SECTIONS:
            getattr(self, name).validate()
        if self.run.until and not self.logging.checkpoint_every:
            raise UserError("a quality target (--until) is checked at checkpoints: give logging.checkpoint_every > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The configuration of `d` (sections of keys, or the flat keys of old run folders: `migrate`); a key
        this version does not know is an error (`UnknownKeys`), listing every such key."""
        d = migrate(d)
        unknown = sorted(set(d) - set(SECTIONS)) + [f"{name}.{k}" for name, kind in SECTIONS.items()
                                                    for k in sorted(set(d.get(name, {})) - _keys(kind))]
        if unknown:
            raise UnknownKeys(unknown)
        return cls(**{name: _section(kind, d.get(name, {})) for name, kind in SECTIONS.items()})


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optimiser": OptimiserConfig,
                             "losses": LossConfig, "edit": EditConfig, "run": RunConfig,
                             "finetune": FinetuneConfig, "logging": LoggingConfig}


def _keys(kind: type) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)}


def _section(kind: type, values: dict[str, Any]) -> Any:
    """A section from its JSON values: lists become the tuples the dataclass holds."""
    defaults = kind()
    return kind(**{k: tuple(v) if isinstance(getattr(defaults, k), tuple) else v for k, v in values.items()})


# Where each key of the flat configurations written before sections existed went; `data` was the source.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{key: (name, key) for name, kind in SECTIONS.items() if name != "model" for key in _keys(kind) if key != "source"},
    "data": ("data", "source")}


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A configuration in sections: `d` itself, or the flat one of an old run folder moved key by key into
    its sections (`FLAT_KEYS`). Keys it does not know stay where they are, for `TrainConfig.from_dict` to report."""
    if not isinstance(d, dict) or not any(k in FLAT_KEYS and not isinstance(v, dict) for k, v in d.items()):
        return d
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in FLAT_KEYS and not isinstance(value, dict):
            name, new = FLAT_KEYS[key]
            out.setdefault(name, {})[new] = value
        else:
            out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update`'s values, nested dicts merged key by key."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
