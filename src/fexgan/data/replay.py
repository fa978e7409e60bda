"""A fine-tune's training data (`replay_mix`): the new character's images mixed with a replay of the
data the base model was trained on. Data only: `fexgan.training.loop` reads it for a run with `replay`, and
`fexgan.training.finetune` sets such runs up."""
from __future__ import annotations

import math

import torch

from fexgan.config import TrainConfig
from fexgan.data.pairs import split_indices
from fexgan.data.sources import ImageSet, check_coverage, load_source
from fexgan.errors import UserError


def replay_mix(cfg: TrainConfig) -> tuple[ImageSet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(data, train indices, val indices, which images are new) of a fine-tune: the new character's
    images first, then the replayed data (whose last `held_out` identities stay out, as in the base
    model's run); the new images are repeated so that they make up 1 - `replay_share` of every epoch."""
    size, background, classes = cfg.model.image_size, cfg.model.background, cfg.model.classes
    new = load_source(cfg.data.source, size, background, classes, complete=False)
    data = new + load_source(cfg.finetune.replay, size, background, classes)
    check_coverage(data, cfg.data.min_images_per_class)
    train_idx, val_idx = split_indices(data, cfg.data.val_fraction, cfg.run.seed, cfg.data.held_out)
    is_new = data.identity[train_idx] < len(new.identities)
    mine, old = train_idx[is_new], train_idx[~is_new]
    if not len(mine):
        raise UserError(f"{cfg.data.source} has no image to fine-tune on")
    share = cfg.finetune.replay_share
    repeat = max(1, math.ceil((1 - share) * len(old) / (share * len(mine)))) if share else 1
    return (data, torch.cat([mine.repeat(repeat), old]) if cfg.finetune.replay_share else mine, val_idx,
            data.identity < len(new.identities))
