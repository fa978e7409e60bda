"""The presets, and a training configuration built from a preset (or a run's saved configuration), a JSON
file and `section.key=value` overrides from the command line (`build_config`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fexgan.config import FLAT_KEYS, TrainConfig, merge, migrate
from fexgan.errors import UserError

# The reference's numerics: what its layers, built without arguments, inherit from Keras (its LeakyReLU's slope,
# its batch norms' momentum, epsilon and starting scales, Glorot-uniform dense layers where it names no
# initialiser, Adam's epsilon), with the N(0, 0.02) it gives every convolution and its 0.5 dropout
# (../shared/paper/reference-architecture.md, "Numeric defaults"; docs/ferg.md).
PAPER_NUMERICS: dict[str, Any] = {"leaky_slope": 0.3, "norm_momentum": 0.01, "norm_eps": 1e-3, "conv_init": "normal",
                                  "deconv_init": "normal", "dense_init": "glorot_uniform", "norm_init": "ones",
                                  "dropout": 0.5}

PRESETS: dict[str, dict[str, Any]] = {
    # Exactly the reference layout, its numerics and the paper's schedule.
    "paper": {"model": {"image_size": 128, "width": 1.0, **PAPER_NUMERICS},
              "optimiser": {"batch_size": 32, "adam_eps": 1e-7}, "run": {"epochs": 100}},
    # 64 px, a quarter of the widths: an epoch of the default toon set in a few minutes on 2 cores.
    # The adversarial weight drops after a fifth of the run, not half: on toon faces the judge reads the
    # expressions sooner (benchmarks/RESULTS.md, "Time to quality"). No augmentation: the toon faces'
    # fixed camera keeps every pair aligned, and a shift or zoom blurs the L1 target (docs/toon-faces.md).
    "cpu": {"model": {"image_size": 64, "width": 0.25}, "data": {"augment_shift": 0.0, "augment_scale": 0.0},
            "optimiser": {"batch_size": 32, "lr": 5e-4}, "losses": {"late_fraction": 0.2}, "run": {"epochs": 30},
            "logging": {"sample_every": 250, "checkpoint_every": 250}},
    # Any character: the cpu preset with the edit design (model.generator=edit), trained on 248 of 256
    # toon characters; the last 8 are held out for the zero-shot test (evaluate --split held_out). D's
    # classifier learns from real images only (taught fakes as their target, it calls half-made edits
    # done), and sees random views of every image (d_augment: on clean ones it accepts faint expressions).
    # The decoder draws alone (Fig. 4) on every other step, weighted twice. Measurements: docs/any-character.md.
    "any": {"model": {"image_size": 64, "width": 0.25, "generator": "edit"},
            "data": {"source": "toon:20:256", "held_out": 8, "augment_shift": 0.0, "augment_scale": 0.0},
            "optimiser": {"batch_size": 32, "lr": 5e-4},
            "losses": {"late_fraction": 0.2, "d_classify_fakes": False, "d_augment": True},
            "edit": {"alone_every": 2}, "run": {"epochs": 14},
            "logging": {"sample_every": 500, "checkpoint_every": 500}},
    # 32 px and tiny widths, for tests; fp32 (amp off), so that its numbers are the same on every CPU.
    "tiny": {"model": {"image_size": 32, "width": 0.0625, "latent_dim": 16}, "data": {"source": "toon:4"},
             "optimiser": {"batch_size": 8}, "run": {"epochs": 1, "amp": False},
             "logging": {"log_every": 1, "sample_every": 0, "checkpoint_every": 0}},
}


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


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """The configuration dicts `layers` merged section by section, later ones winning."""
    out: dict[str, Any] = {}
    for layer in layers:
        out = merge(out, migrate(layer))
    return out


def _override(d: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override to the configuration dict `d`."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
        raise UserError(f"override '{item}' must look like section.key=value (e.g. optimiser.lr=1e-4, model.width=0.5)")
    node = d
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if not isinstance(node, dict) or leaf not in node or isinstance(node[leaf], dict):
        hint = f"; it is '{'.'.join(FLAT_KEYS[key])}'" if key in FLAT_KEYS else ""
        raise UserError(f"unknown configuration key '{key}'{hint}")
    try:
        node[leaf] = _coerce(value.strip(), node[leaf])
    except ValueError:
        raise UserError(f"value '{value}' for '{key}' is not a valid {type(node[leaf]).__name__}") from None


def read_file(file: Path, what: str = "config file") -> dict[str, Any]:
    """The JSON object in `file`, in sections (`migrate`)."""
    try:
        values = json.loads(Path(file).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {file} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {file} is not valid JSON: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"{what} {file}: expected a JSON object of settings")
    return migrate(values)


def load_run_config(run: Path) -> TrainConfig:
    """The configuration a run folder was trained with (its config.json, of any fexgan version)."""
    return TrainConfig.from_dict(merged(TrainConfig().to_dict(), read_file(Path(run) / "config.json", "run config")))


def build_config(preset: str = "cpu", file: Path | None = None, overrides: list[str] | None = None,
                 base: dict[str, Any] | None = None) -> TrainConfig:
    """Preset (or a saved run's `base` configuration, sections or flat), then a JSON config file, then
    `section.key=value` overrides (e.g. optimiser.lr=1e-4, model.width=0.5)."""
    if base is None and preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    d = merged(TrainConfig().to_dict(), base if base is not None else PRESETS[preset])
    if file is not None:
        values = read_file(file)
        _check_types(values, d, f"config file {file}")
        d = merge(d, values)
    for item in overrides or []:
        _override(d, item)
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg
