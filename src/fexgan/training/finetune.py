"""`fexgan finetune`: adapt a trained model to a new character from a few images (one neutral face is
enough), in minutes on a CPU.

A fine-tune is a training run (`fexgan.training.loop`) that starts from the model's weights (`init_from`)
with a fresh optimiser at a lower learning rate, on the new character's images mixed with a replay of
the data the model was trained on (`replay`, a `replay_share` of every epoch), so that the characters
it knew do not degrade. The encoder stays fixed (`freeze`): the latent space the known characters
live in does not move, and the decoder, its skips and head learn the newcomer. The discriminator
goes on learning from the replayed characters only (the new images of `fexgan.data.replay.replay_mix` get
no weight in its loss): from one neutral face it would learn that the newcomer is only ever neutral, and pull every
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
    fexgan.training.finetune("toon-any-64", "folder:my_character", "runs/mine", minutes=3)
"""
from __future__ import annotations

from pathlib import Path

from fexgan.config import TrainConfig
from fexgan.errors import UserError
from fexgan.files.checkpoint import read_metadata, resolve_model
from fexgan.nets.designs import design_of
from fexgan.presets import PRESETS, build_config, merged
from fexgan.training.loop import train

# The fine-tune's own defaults, over the preset that trains the model's design.
SETTINGS: dict = {"optimiser": {"lr": 1e-4}, "losses": {"late_fraction": 0.0},
                  "finetune": {"freeze": ("generator.encoder",), "fixed_norms": True},
                  "logging": {"sample_every": 0, "checkpoint_every": 500}}


def finetune_config(model: str | Path, data: str, minutes: float = 3.0, steps: int = 0, replay: str | None = None,
                    overrides: list[str] | None = None) -> TrainConfig:
    """The training configuration of a fine-tune of `model` on `data` (see the module docstring); `overrides`
    are `section.key=value` strings, as `--set` takes them."""
    path = resolve_model(model)
    model_cfg, summary = read_metadata(path)
    replay = replay or summary.get("data")
    if not replay:
        raise UserError(f"{path} does not say what it was trained on; give the data to replay with --replay DATA")
    # the fine-tune's other settings (its losses: `d_classify_fakes`, ...) are those of the preset that trains the design
    this = {"model": model_cfg.to_dict(), "data": {"source": data, "held_out": len(summary.get("held_out", []))},
            "finetune": {"replay": replay, "init_from": str(path)},
            "run": {"steps": steps} if steps else {"minutes": minutes}}
    return build_config(base=merged(PRESETS[design_of(model_cfg.generator).preset], SETTINGS, this),
                        overrides=overrides)


def finetune(model: str | Path, data: str, out: str | Path, minutes: float = 3.0, steps: int = 0,
             replay: str | None = None, overrides: list[str] | None = None, progress: bool = True) -> Path:
    """Fine-tune `model` on `data` into the run folder `out`; returns the new model file."""
    return train(finetune_config(model, data, minutes, steps, replay, overrides), Path(out), progress=progress)
