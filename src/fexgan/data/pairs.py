"""The split (validation images, held-out characters) and the pair sampler of training."""
from __future__ import annotations

import torch

from fexgan.data.sources import ImageSet
from fexgan.errors import UserError


# ----------------------------------------------------------------------------- split and pairs
def held_out_identities(data: ImageSet, held_out: int) -> list[int]:
    """The identities kept out of training and validation: the last `held_out` (in name order)."""
    if not 0 <= held_out < len(data.identities):
        raise UserError(f"data.held_out={held_out}: the data has {len(data.identities)} identities; hold out fewer "
                        f"(at least one must be left to train on)")
    return list(range(len(data.identities) - held_out, len(data.identities)))


def held_out_indices(data: ImageSet, held_out: int) -> torch.Tensor:
    """Every image of the held-out identities (the `held_out` split of `fexgan evaluate`)."""
    return torch.nonzero(torch.isin(data.identity, torch.tensor(held_out_identities(data, held_out)))).squeeze(1)


def split_indices(data: ImageSet, val_fraction: float, seed: int = 0, held_out: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train/val split, stratified by (identity, expression); groups of one stay in train.
    The last `held_out` identities are in neither (`held_out_indices`)."""
    g = torch.Generator().manual_seed(seed)
    key = data.identity * len(data.classes) + data.expression
    key[torch.isin(data.identity, torch.tensor(held_out_identities(data, held_out), dtype=torch.long))] = -1
    train, val = [], []
    for k in [k for k in torch.unique(key).tolist() if k >= 0]:
        idx = torch.nonzero(key == k).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def seeded_subset(indices: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """At most `n` of `indices`, drawn with `seed`, in ascending order."""
    g = torch.Generator().manual_seed(seed)
    return indices[torch.randperm(len(indices), generator=g)[:n]].sort().values


def one_per_identity(data: ImageSet, indices: torch.Tensor, limit: int | None = None) -> torch.Tensor:
    """Positions in `indices` of one image per identity (identities in order, at most `limit`): its
    first neutral image, else its first. What sample grids, figures and reports show."""
    neutral = data.classes.index("neutral") if "neutral" in data.classes else 0
    chosen = []
    for ident in torch.unique(data.identity[indices]).tolist()[:limit]:
        mine = torch.nonzero(data.identity[indices] == ident).squeeze(1)
        preferred = mine[data.expression[indices][mine] == neutral]
        chosen.append(int((preferred if len(preferred) else mine)[0]))
    return torch.tensor(chosen, dtype=torch.long)


class PairSampler:
    """Draws training batches: source images in a shuffled epoch order, a target expression per image
    and a random real image of the same identity with that expression (the L1 target).

    All randomness comes from one `torch.Generator`, so the data order is part of a resumable state.
    """

    def __init__(self, data: ImageSet, indices: torch.Tensor, batch_size: int, seed: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.data, self.indices, self.batch_size = data, indices, batch_size
        self.rank, self.world = shard
        self.generator = torch.Generator().manual_seed(seed)
        n_id, n_cls = len(data.identities), len(data.classes)
        ident, expr = data.identity[indices], data.expression[indices]
        counts = torch.zeros(n_id, n_cls, dtype=torch.long)
        counts.index_put_((ident, expr), torch.ones_like(ident), accumulate=True)
        # table[i, c, :counts[i, c]] holds the dataset indices of identity i with expression c
        table = torch.zeros(n_id, n_cls, max(int(counts.max()), 1), dtype=torch.long)
        order = torch.argsort(ident * n_cls + expr, stable=True)
        slot = torch.arange(len(indices)) - torch.repeat_interleave(
            torch.cumsum(counts.flatten(), 0) - counts.flatten(), counts.flatten())
        table[ident[order], expr[order], slot] = indices[order]
        self.table, self.counts = table, counts
        self.epoch, self.position, self.order = 0, 0, self._new_order()

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.indices) // (self.batch_size * self.world))

    def _new_order(self) -> torch.Tensor:
        """The epoch's permutation as (steps, processes, batch): every process holds the same order
        (so any rank's state resumes any rank) and takes its own disjoint column."""
        perm = self.indices[torch.randperm(len(self.indices), generator=self.generator)]
        usable = self.steps_per_epoch * self.batch_size * self.world
        return perm[:usable].view(-1, self.world, self.batch_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source indices, target expressions, target image indices), each (batch,).

        Targets are drawn for the global batch of every process and each takes its own part, so the
        processes' generators stay in step and together draw exactly what one process would."""
        if self.position >= len(self.order):
            self.epoch, self.position, self.order = self.epoch + 1, 0, self._new_order()
        src = self.order[self.position].flatten()
        self.position += 1
        ident = self.data.identity[src]
        available = (self.counts[ident] > 0).float()          # expressions this identity has in the split
        target = torch.multinomial(available, 1, generator=self.generator).squeeze(1)
        n = self.counts[ident, target]
        pick = (torch.rand(len(src), generator=self.generator) * n).long().clamp_max(n - 1)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return src[mine], target[mine], self.table[ident, target, pick][mine]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "position": self.position,
                "order": self.order.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position, self.order = state["epoch"], state["position"], state["order"]
