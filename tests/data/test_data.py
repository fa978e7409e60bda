"""Data sources on small real image trees, the cache, the split, the pair sampler and augmentation."""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FACE_COLOURS, draw_face
from PIL import Image

from fexgan.data import pairs, sources
from fexgan.data.pairs import PairSampler, split_indices
from fexgan.data.sources import load_source
from fexgan.data.views import augment
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.files import checkpoint


def image_of(ds: sources.ImageSet, name: str) -> np.ndarray:
    """The loaded (S, S, 3) uint8 image called `name`."""
    return ds.images[ds.names.index(name)].permute(1, 2, 0).numpy().astype(int)


# ----------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("layout", ["folder", "ferg"])
def test_layout_loads_labels_from_folder_names(tmp_path: Path, make_tree: Callable[..., Path], layout: str) -> None:
    root = make_tree(tmp_path / layout, layout, identities=2, per_class=2)
    ds = load_source(f"{layout}:{root}", 32)
    assert ds.images.shape == (28, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.identities == ["char0", "char1"]
    assert ds.summary()["per_expression"] == {e: 4 for e in EXPRESSIONS}
    assert ds.skipped == []
    for name, e, i in zip(ds.names, ds.expression.tolist(), ds.identity.tolist()):
        ident, folder, _ = name.split("/")
        assert ident == ds.identities[i]
        assert folder == (EXPRESSIONS[e] if layout == "folder" else f"{ident}_{EXPRESSIONS[e]}")
    # transparent corners are composited over white; the face centre keeps its colour
    img = image_of(ds, ds.names[0])
    assert (img[0, 0] == 255).all() and (img[-1, -1] == 255).all()
    assert np.abs(img[16, 8] - FACE_COLOURS[0]).max() <= 3
    # a bare path guesses its layout
    assert sources.parse_source(str(root)) == (layout, str(root))


def test_folder_names_are_case_insensitive_and_accept_aliases(tmp_path: Path) -> None:
    names = {"anger": "Angry", "disgust": "disgust", "fear": "FEAR", "joy": "happy", "neutral": "Neutral",
             "sadness": "sad", "surprise": "surprised"}
    for e, folder in names.items():
        (tmp_path / "bob" / folder).mkdir(parents=True)
        draw_face(0, EXPRESSIONS.index(e)).save(tmp_path / "bob" / folder / "a.png")
    ds = load_source(f"folder:{tmp_path}", 32)
    got = {n.split("/")[1]: EXPRESSIONS[e] for n, e in zip(ds.names, ds.expression.tolist())}
    assert got == {folder: e for e, folder in names.items()}


def test_toon_source_renders_once_then_reads_its_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEXGAN_CACHE", str(tmp_path))
    ds = load_source("toon:2:3", 32)
    assert ds.images.shape == (42, 3, 32, 32) and len(ds.identities) == 3 and ds.skipped == []
    assert ds.summary()["per_expression"] == {e: 6 for e in EXPRESSIONS}
    for name, e, i in zip(ds.names, ds.expression.tolist(), ds.identity.tolist()):
        assert name.split("/")[:2] == [ds.identities[i], EXPRESSIONS[e]]
    (cache_file,) = tmp_path.iterdir()
    stamp = cache_file.stat().st_mtime_ns
    again = load_source("toon:2:3", 32)
    assert torch.equal(again.images, ds.images) and cache_file.stat().st_mtime_ns == stamp
    assert list(tmp_path.iterdir()) == [cache_file]
    with pytest.raises(UserError, match="toon:PER_CLASS"):
        load_source("toon:many", 32)


# ----------------------------------------------------------------------------- image formats
@pytest.fixture
def odd_tree(tmp_path: Path, make_tree: Callable[..., Path]) -> Path:
    """A folder tree where char0/anger also holds every odd kind of file."""
    root = make_tree(tmp_path / "odd", "folder", identities=2, per_class=1, size=32)
    d = root / "char0" / "anger"
    # RGBA: left half fully transparent red, right top opaque blue, right bottom half-transparent red
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 0)
    rgba[:16, 16:] = (0, 0, 255, 255)
    rgba[16:, 16:] = (255, 0, 0, 128)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(np.full((32, 32), 100, np.uint8), "L").save(d / "gray.png")
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    pal.paste(1, (0, 0, 32, 16))                                  # top half: palette entry 1
    pal.save(d / "palette.png", transparency=0)                   # entry 0 (bottom half) is transparent
    deep = np.zeros((32, 32), np.uint16)
    deep[:16] = 65535
    deep[16:] = 32896
    Image.fromarray(deep).save(d / "deep16.png")
    Image.fromarray(np.full((32, 32, 3), (40, 160, 220), np.uint8), "RGB").save(d / "photo.jpg", quality=95)
    wide = np.zeros((16, 32, 3), np.uint8)                        # not square: padded with the background
    Image.fromarray(wide, "RGB").save(d / "wide.png")
    buf = io.BytesIO()
    draw_face(0, 0, size=32).save(buf, "PNG")
    (d / "corrupt.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(d / "tiny.png")
    (d / "notes.txt").write_text("not an image")
    return root


def test_every_image_mode_goes_through_one_preprocessing(odd_tree: Path) -> None:
    bg = (0, 128, 0)
    ds = load_source(f"folder:{odd_tree}", 32, background=bg)
    rgba = image_of(ds, "char0/anger/rgba.png")
    assert (rgba[:, :16] == bg).all()                              # transparent: background, not red
    assert (rgba[:16, 16:] == (0, 0, 255)).all()                   # opaque: itself
    assert np.abs(rgba[16:, 16:] - (128, 64, 0)).max() <= 1         # alpha 128/255 blend of red over green
    assert (image_of(ds, "char0/anger/gray.png") == 100).all()
    pal = image_of(ds, "char0/anger/palette.png")
    assert (pal[:16] == (200, 100, 50)).all() and (pal[16:] == bg).all()
    deep = image_of(ds, "char0/anger/deep16.png")
    assert (deep[:16] == 255).all() and (np.abs(deep[16:] - 128) <= 1).all()
    assert np.abs(image_of(ds, "char0/anger/photo.jpg") - (40, 160, 220)).max() <= 4
    wide = image_of(ds, "char0/anger/wide.png")
    assert (wide[:8] == bg).all() and (wide[-8:] == bg).all() and (wide[8:24] == 0).all()


def test_unreadable_files_are_skipped_and_listed(odd_tree: Path) -> None:
    ds = load_source(f"folder:{odd_tree}", 32)
    skipped = dict(ds.skipped)
    assert set(skipped) == {"char0/anger/corrupt.png", "char0/anger/empty.png", "char0/anger/tiny.png"}
    assert "8x8" in skipped["char0/anger/tiny.png"]
    assert not any(n.endswith((".txt", "corrupt.png", "empty.png", "tiny.png")) for n in ds.names)
    assert len(ds) == 14 + 6 and ds.summary()["skipped"] == 3


# ----------------------------------------------------------------------------- user mistakes
@pytest.mark.parametrize("layout, bad", [("folder", "smirk"), ("ferg", "char1_smirk")])
def test_unknown_expression_folder_lists_the_expected_names(tmp_path: Path, make_tree: Callable[..., Path],
                                                            layout: str, bad: str) -> None:
    root = make_tree(tmp_path, layout, identities=2, per_class=1)
    (root / "char1" / bad).mkdir()
    draw_face(1, 0).save(root / "char1" / bad / "x.png")
    with pytest.raises(UserError) as err:
        load_source(f"{layout}:{root}", 32)
    assert f"char1/{bad}" in str(err.value)
    assert all(e in str(err.value) for e in EXPRESSIONS)


def test_missing_empty_and_unreadable_folders(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_source(f"folder:{tmp_path / 'nope'}", 32)
    with pytest.raises(UserError, match="no images found"):
        load_source(f"folder:{tmp_path}", 32)
    (tmp_path / "bob" / "joy").mkdir(parents=True)
    with pytest.raises(UserError, match="no images found"):
        load_source(f"ferg:{tmp_path}", 32)
    (tmp_path / "bob" / "joy" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="could be read"):
        load_source(f"folder:{tmp_path}", 32)
    with pytest.raises(UserError, match="give a folder"):
        load_source("folder:", 32)
    with pytest.raises(UserError, match="unknown data source"):
        load_source("imagenet", 32)


def test_an_expression_without_images_is_an_error(tmp_path: Path, make_tree: Callable[..., Path]) -> None:
    root = make_tree(tmp_path, "folder", identities=1, per_class=1, expressions=EXPRESSIONS[:-1])
    with pytest.raises(UserError, match="surprise"):
        load_source(f"folder:{root}", 32)


# ----------------------------------------------------------------------------- cache
def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path: Path, make_tree: Callable[..., Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEXGAN_CACHE", str(cache))
    root = make_tree(tmp_path / "tree", "folder", identities=1, per_class=2)
    first = load_source(f"folder:{root}", 32)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    stamp = files[0].stat().st_mtime_ns

    second = load_source(f"folder:{root}", 32)
    assert list(cache.iterdir()) == files and files[0].stat().st_mtime_ns == stamp  # read, not rewritten
    assert torch.equal(first.images, second.images) and first.names == second.names

    # Proof that the second load reads the cache instead of decoding: mark the cached pixels.
    marked = sources.ImageSet(first.images.clone(), first.expression, first.identity, first.identities,
                           first.classes, first.names, first.skipped)
    marked.images[0] = 7
    sources._save_cache(files[0], marked)
    assert (load_source(f"folder:{root}", 32).images[0] == 7).all()

    # A changed source file gives a new cache entry, decoded from the files again.
    changed = root / first.names[0]
    draw_face(3, 6).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = load_source(f"folder:{root}", 32)
    assert len(list(cache.iterdir())) == 2
    assert (third.images[0] != 7).any() and not torch.equal(third.images[0], first.images[0])
    assert torch.equal(third.images[1:], first.images[1:])
    # another size is another cache entry; use_cache=False writes nothing
    load_source(f"folder:{root}", 64, use_cache=False)
    assert len(list(cache.iterdir())) == 2


def test_broken_cache_is_rebuilt(tmp_path: Path, make_tree: Callable[..., Path],
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FEXGAN_CACHE", str(tmp_path / "cache"))
    root = make_tree(tmp_path / "tree", "folder", identities=1, per_class=1)
    good = load_source(f"folder:{root}", 32)
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_bytes(b"garbage")
    capsys.readouterr()
    again = load_source(f"folder:{root}", 32)
    assert "warning: ignoring unreadable data cache" in capsys.readouterr().err
    assert torch.equal(good.images, again.images)
    assert sources._load_cache(cache_file) is not None  # rewritten whole


# ----------------------------------------------------------------------------- split and pairs
@pytest.fixture(scope="module")
def five_per_class(tmp_path_factory: pytest.TempPathFactory, make_tree: Callable[..., Path]) -> sources.ImageSet:
    root = make_tree(tmp_path_factory.mktemp("five"), "folder", identities=3, per_class=5)
    return load_source(f"folder:{root}", 32)


def test_split_is_deterministic_and_stratified(five_per_class: sources.ImageSet) -> None:
    ds = five_per_class
    train, val = split_indices(ds, 0.2, seed=0)
    again = split_indices(ds, 0.2, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    assert not torch.equal(val, split_indices(ds, 0.2, seed=1)[1])
    assert sorted(train.tolist() + val.tolist()) == list(range(len(ds)))
    groups = ds.identity[val] * 7 + ds.expression[val]
    assert sorted(groups.tolist()) == list(range(21))  # exactly one of each group's five in val
    assert len(split_indices(ds, 0.0)[1]) == 0


def test_held_out_identities_are_in_neither_split_and_the_rest_split_as_before(five_per_class: sources.ImageSet) -> None:
    ds = five_per_class  # 3 identities
    train, val = split_indices(ds, 0.2, seed=0, held_out=1)
    held = pairs.held_out_indices(ds, 1)
    assert set(ds.identity[held].tolist()) == {2} and len(held) == 35
    assert not set(train.tolist() + val.tolist()) & set(held.tolist())
    assert sorted(train.tolist() + val.tolist() + held.tolist()) == list(range(len(ds)))
    full_train, full_val = split_indices(ds, 0.2, seed=0)
    assert torch.equal(train, full_train[ds.identity[full_train] < 2]) and torch.equal(val, full_val[ds.identity[full_val] < 2])
    with pytest.raises(UserError, match="held_out=3: the data has 3 identities"):
        split_indices(ds, 0.2, held_out=3)


def test_groups_of_one_stay_in_training(tmp_path: Path, make_tree: Callable[..., Path]) -> None:
    ds = load_source(f"folder:{make_tree(tmp_path, identities=1, per_class=1)}", 32)
    train, val = split_indices(ds, 0.5)
    assert len(train) == 7 and len(val) == 0


def _draw(sampler: PairSampler, n: int) -> list[tuple[torch.Tensor, ...]]:
    return [sampler.next_batch() for _ in range(n)]


def test_pair_sampler_targets_share_identity_and_have_the_sampled_expression(five_per_class: sources.ImageSet) -> None:
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


def test_pair_sampler_state_reproduces_the_sequence(five_per_class: sources.ImageSet, tmp_path: Path) -> None:
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


def test_the_ranks_shards_are_disjoint_and_together_make_the_one_process_batch(five_per_class: sources.ImageSet) -> None:
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


# ----------------------------------------------------------------------------- augmentation
def test_augment_keeps_shape_and_range_and_is_identity_without_jitter() -> None:
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(augment(x, 0.0, 0.0, torch.Generator().manual_seed(0)), x)
    y = augment(x, 0.1, 0.1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1 and y.max() <= 1
    assert not torch.allclose(y, x, atol=1e-3)
    assert torch.equal(y, augment(x, 0.1, 0.1, torch.Generator().manual_seed(0)))  # seeded
    assert not torch.equal(y, augment(x, 0.1, 0.1, torch.Generator().manual_seed(1)))
    # a shift alone, or a zoom alone, still moves the images
    assert not torch.allclose(augment(x, 0.1, 0.0, torch.Generator().manual_seed(0)), x, atol=1e-3)
    assert not torch.allclose(augment(x, 0.0, 0.1, torch.Generator().manual_seed(0)), x, atol=1e-3)
    # a plain image stays plain: borders are replicated, not filled with black
    flat = torch.full((2, 3, 32, 32), 0.5)
    assert torch.allclose(augment(flat, 0.2, 0.2, torch.Generator().manual_seed(0)), flat)
