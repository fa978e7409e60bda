"""`fexgan finetune`: adapt a trained model to a new character from a few images (one neutral face is
enough), in minutes on a CPU.

A fine-tune is a training run (`fexgan.train`) that starts from the model's weights (`init_from`)
with a fresh optimiser at a lower learning rate, on the new character's images mixed with a replay of
the data the model was trained on (`replay`, a `replay_share` of every epoch), so that the characters
it knew do not degrade. The encoder stays fixed (`freeze`): the latent space the known characters
live in does not move, and the decoder, its skips and head learn the newcomer. The discriminator
goes on learning from the replayed characters only (`replay_mix`'s new images get no weight in its
loss): from one neutral face it would learn that the newcomer is only ever neutral, and pull every
edit of it back to that face (karu's judge fell to 0.80-0.87 from 0.94; docs/any-character.md).
The fine-tune goes on where its base model's training ended rather than starting over: at the late,
lower adversarial weight from its first step (`late_fraction=0`), and with every batch norm of the
generator normalising with the statistics the model was trained with and keeping them (`fixed_norms`).
Without either, the first thousand steps took 0.036 off the judge's expression accuracy on the
known characters (zevi's fine-tune: 0.952 -> 0.916) and 0.37 dB; with both, +0.23 dB and -0.001
(2,600 steps on each of 8 new characters: the known ones +0.18 dB / -0.008, was -0.26 / -0.025).
It writes a run folder like `train` (with `init_from` in its config and its model's summary); the
result loads, serves and exports like any model.

    fexgan finetune toon-any-64 --data folder:my_character --minutes 3 --out runs/mine
    fexgan.finetune("toon-any-64", "folder:my_character", "runs/mine", minutes=3)
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from fexgan.checkpoint import read_metadata, resolve_model
from fexgan.config import PRESETS, TrainConfig, build_config
from fexgan.data import ImageSet, check_coverage, load_source, split_indices
from fexgan.errors import UserError

# The fine-tune's other settings (its losses: `d_classify_fakes`, ...) are those of the preset that trains the design.
DESIGN_PRESET = {"paper": "cpu", "edit": "any"}
SETTINGS = ["lr=1e-4", "sample_every=0", "checkpoint_every=500", "freeze=generator.encoder", "fixed_norms=true",
            "late_fraction=0"]  # the fine-tune's defaults


def finetune_config(model: str | Path, data: str, minutes: float = 3.0, steps: int = 0, replay: str | None = None,
                    overrides: list[str] | None = None) -> TrainConfig:
    """The training configuration of a fine-tune of `model` on `data` (see the module docstring)."""
    path = resolve_model(model)
    model_cfg, summary = read_metadata(path)
    replay = replay or summary.get("data")
    if not replay:
        raise UserError(f"{path} does not say what it was trained on; give the data to replay with --replay DATA")
    base = {**PRESETS[DESIGN_PRESET[model_cfg.generator]], "model": model_cfg.to_dict(),
            "held_out": len(summary.get("held_out", []))}
    length = [f"steps={steps}"] if steps else [f"minutes={minutes}"]
    return build_config(base=base, overrides=[*SETTINGS, f"data={data}", f"replay={replay}", f"init_from={path}",
                                              *length, *(overrides or [])])


def replay_mix(cfg: TrainConfig) -> tuple[ImageSet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(data, train indices, val indices, which images are new) of a fine-tune: the new character's
    images first, then the replayed data (whose last `held_out` identities stay out, as in the base
    model's run); the new images are repeated so that they make up 1 - `replay_share` of every epoch."""
    size, background, classes = cfg.model.image_size, cfg.model.background, cfg.model.classes
    new = load_source(cfg.data, size, background, classes, complete=False)
    data = new + load_source(cfg.replay, size, background, classes)
    check_coverage(data, cfg.min_images_per_class)
    train_idx, val_idx = split_indices(data, cfg.val_fraction, cfg.seed, cfg.held_out)
    is_new = data.identity[train_idx] < len(new.identities)
    mine, old = train_idx[is_new], train_idx[~is_new]
    if not len(mine):
        raise UserError(f"{cfg.data} has no image to fine-tune on")
    repeat = max(1, math.ceil((1 - cfg.replay_share) * len(old) / (cfg.replay_share * len(mine)))) if cfg.replay_share else 1
    return (data, torch.cat([mine.repeat(repeat), old]) if cfg.replay_share else mine, val_idx,
            data.identity < len(new.identities))


def finetune(model: str | Path, data: str, out: str | Path, minutes: float = 3.0, steps: int = 0,
             replay: str | None = None, overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Fine-tune `model` on `data` into the run folder `out`; returns the new model file."""
    from fexgan.train import train

    return train(finetune_config(model, data, minutes, steps, replay, overrides), Path(out), progress=progress)
