"""The pair sampler: each batch's sources, target expressions and L1 targets, on small real image
trees and on paired toon data (each image's true transfers in the data itself)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from fexgan import checkpoint, data
from fexgan.data import load_source, split_indices
from fexgan.expressions import EXPRESSIONS
from fexgan.metrics.groundtruth import render_truth
from fexgan.pairs import PairSampler


def _draw(sampler: PairSampler, n: int) -> list[tuple[torch.Tensor, ...]]:
    return [sampler.next_batch() for _ in range(n)]


def test_pair_sampler_targets_share_identity_and_have_the_sampled_expression(five_per_class: data.ImageSet) -> None:
    ds = five_per_class
    train, _ = split_indices(ds, 0.2)
    # identity 1 has no 'fear' images in this split: it must never get fear as a target
    fear = EXPRESSIONS.index("fear")
    train = train[~((ds.identity[train] == 1) & (ds.expression[train] == fear))]
    sampler = PairSampler(ds, train, batch_size=8, seed=3)
    allowed = set(train.tolist())
    seen_targets, epoch_sources = set(), []
    for _ in range(sampler.steps_per_epoch):
        src, target, tgt_idx = sampler.next_batch()
        assert src.shape == target.shape == tgt_idx.shape == (8,)
        assert torch.equal(ds.identity[tgt_idx], ds.identity[src])
        assert torch.equal(ds.expression[tgt_idx], target)
        assert set(tgt_idx.tolist()) <= allowed
        assert not ((ds.identity[src] == 1) & (target == fear)).any()
        seen_targets |= set(target.tolist())
        epoch_sources += src.tolist()
    assert seen_targets == set(range(7))
    assert len(set(epoch_sources)) == len(epoch_sources) and set(epoch_sources) <= allowed  # each once per epoch
    sampler.next_batch()
    assert sampler.epoch == 1


def test_pair_sampler_state_reproduces_the_sequence(five_per_class: data.ImageSet, tmp_path: Path) -> None:
    train, _ = split_indices(five_per_class, 0.2)
    a = PairSampler(five_per_class, train, batch_size=8, seed=5)
    _draw(a, 3)
    # through a real state file, as checkpoints store it
    checkpoint.save_state(tmp_path / "s.pt", {"sampler": a.state_dict()})
    state = checkpoint.load_state(tmp_path / "s.pt")["sampler"]
    expected = _draw(a, 2 * a.steps_per_epoch)      # crosses epoch boundaries
    b = PairSampler(five_per_class, train, batch_size=8, seed=99)
    b.load_state_dict(state)
    got = _draw(b, 2 * b.steps_per_epoch)
    assert all(torch.equal(x, y) for e, g in zip(expected, got) for x, y in zip(e, g))
    assert (b.epoch, b.position) == (a.epoch, a.position)
    c = PairSampler(five_per_class, train, batch_size=8, seed=99)
    assert not all(torch.equal(x, y) for e, g in zip(expected, _draw(c, 2)) for x, y in zip(e, g))


def test_the_ranks_shards_are_disjoint_and_together_make_the_one_process_batch(five_per_class: data.ImageSet) -> None:
    """Two processes with half batches draw, step by step, two disjoint halves of the very pairs
    (sources, targets, target images) a single process draws with the whole batch, epoch after epoch."""
    train, _ = split_indices(five_per_class, 0.2)
    one = PairSampler(five_per_class, train, batch_size=8, seed=4)
    ranks = [PairSampler(five_per_class, train, batch_size=4, seed=4, shard=(r, 2)) for r in (0, 1)]
    assert one.steps_per_epoch == ranks[0].steps_per_epoch == ranks[1].steps_per_epoch
    for _ in range(2 * one.steps_per_epoch + 1):
        whole = one.next_batch()
        a, b = (r.next_batch() for r in ranks)
        assert not set(a[0].tolist()) & set(b[0].tolist())
        assert all(torch.equal(torch.cat([x, y]), w) for x, y, w in zip(a, b, whole))


# ----------------------------------------------------------------------------- paired toon data
@pytest.fixture(scope="module")
def paired() -> data.ImageSet:
    return load_source("toon:3:4:paired", 32)


def partner_of(ds: data.ImageSet, i: int, expression: int) -> int:
    """The image of `i`'s identity and moment with `expression`."""
    (j,) = torch.nonzero((ds.identity == ds.identity[i]) & (ds.moment == ds.moment[i])
                         & (ds.expression == expression)).squeeze(1).tolist()
    return j


def test_paired_toon_data_holds_every_images_true_transfers(paired: data.ImageSet) -> None:
    """Image n of a character shows one moment in every expression: the renderer's truth of its
    transfer to another expression is, pixel for pixel, the data's image of that moment."""
    assert sorted(set(paired.moment.tolist())) == [1, 2, 3]
    targets = torch.arange(len(paired)) % 7
    truth = render_truth(paired, "toon:3:4:paired", torch.arange(len(paired)), F.one_hot(targets, 7).float())
    partners = [partner_of(paired, i, int(t)) for i, t in enumerate(targets)]
    assert torch.equal(truth, paired.images[partners])
    unpaired = load_source("toon:3:4", 32)  # image n of each expression: moments of its own
    assert unpaired.moment is None
    neutral = unpaired.expression == EXPRESSIONS.index("neutral")
    assert not torch.equal(unpaired.images[~neutral], paired.images[~neutral])
    again = load_source("toon:3:4:paired", 32)  # from the cache
    assert torch.equal(again.moment, paired.moment) and torch.equal(again.images, paired.images)


def test_the_sampler_takes_the_sources_own_moment_from_the_split(paired: data.ImageSet) -> None:
    train, val = split_indices(paired, 0.34)
    sampler = PairSampler(paired, train, batch_size=8, seed=1)
    seen = set()
    for _ in range(3 * sampler.steps_per_epoch):
        src, target, tgt_idx = sampler.next_batch()
        assert set(tgt_idx.tolist()) <= set(train.tolist())
        assert [partner_of(paired, int(s), int(t)) for s, t in zip(src, target)] == tgt_idx.tolist()
        seen |= set(target.tolist())
    assert seen == set(range(7))
    random = PairSampler(paired, train, batch_size=8, seed=1, aligned=False)  # validation's: any image
    drawn = [random.next_batch() for _ in range(3 * random.steps_per_epoch)]
    assert any((paired.moment[s] != paired.moment[t]).any() for s, _, t in drawn)


def test_a_mix_pairs_the_images_that_have_moments_and_draws_the_others(paired: data.ImageSet,
                                                                        five_per_class: data.ImageSet) -> None:
    """A fine-tune's data: a folder (no moments) before the replayed paired toon data."""
    mix = five_per_class + paired
    assert mix.moment[:len(five_per_class)].eq(-1).all() and torch.equal(mix.moment[len(five_per_class):], paired.moment)
    sampler = PairSampler(mix, torch.arange(len(mix)), batch_size=16, seed=2)
    folder_moments = set()
    for _ in range(2 * sampler.steps_per_epoch):
        src, target, tgt_idx = sampler.next_batch()
        assert torch.equal(mix.identity[tgt_idx], mix.identity[src]) and torch.equal(mix.expression[tgt_idx], target)
        assert torch.equal(mix.moment[tgt_idx], mix.moment[src])  # -1 for the folder's, the source's own otherwise
        folder = src < len(five_per_class)
        folder_moments |= {(int(a), int(b)) for a, b in zip(src[folder], tgt_idx[folder])}
    assert any(a != b for a, b in folder_moments)  # the folder's targets: other images of the character
