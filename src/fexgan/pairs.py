"""Training pairs: the sampler that draws each batch's sources, target expressions and L1 targets."""
from __future__ import annotations

import torch

from fexgan.data import ImageSet


class PairSampler:
    """Draws training batches: source images in a shuffled epoch order, a target expression per image
    and a random real image of the same identity with that expression (the L1 target). Where the data
    pairs moments (`ImageSet.moment`, `toon:...:paired`) and `aligned`, the target is the source's own
    moment in an expression that `indices` hold it in: the exact true transfer, so that nothing in the
    target (gaze, blinks, intensity) is a guess the generator can only blur.

    All randomness comes from one `torch.Generator`, so the data order is part of a resumable state.
    """

    def __init__(self, data: ImageSet, indices: torch.Tensor, batch_size: int, seed: int = 0,
                 shard: tuple[int, int] = (0, 1), aligned: bool = True):
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
        self.partners = self._partners(indices) if aligned and data.moment is not None else None
        self.epoch, self.position, self.order = 0, 0, self._new_order()

    def _partners(self, indices: torch.Tensor) -> torch.Tensor:
        """partners[identity, moment, expression]: the dataset index of that image if `indices` hold it, else -1."""
        moment = self.data.moment[indices]
        partners = torch.full((len(self.data.identities), int(moment.max().clamp_min(0)) + 1, len(self.data.classes)),
                              -1, dtype=torch.long)
        ok = moment >= 0
        partners[self.data.identity[indices][ok], moment[ok], self.data.expression[indices][ok]] = indices[ok]
        return partners

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
        if self.partners is not None:                          # ... or the source's moment has, where it has one
            moment = self.data.moment[src]
            own = self.partners[ident, moment.clamp_min(0)]
            available = torch.where((moment >= 0)[:, None], (own >= 0).float(), available)
        target = torch.multinomial(available, 1, generator=self.generator).squeeze(1)
        n = self.counts[ident, target]
        pick = (torch.rand(len(src), generator=self.generator) * n).long().clamp_max(n - 1)
        chosen = self.table[ident, target, pick]
        if self.partners is not None:
            partner = own.gather(1, target[:, None]).squeeze(1)
            chosen = torch.where((moment >= 0) & (partner >= 0), partner, chosen)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return src[mine], target[mine], chosen[mine]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "position": self.position,
                "order": self.order.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position, self.order = state["epoch"], state["position"], state["order"]
