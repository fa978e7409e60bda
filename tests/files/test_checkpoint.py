"""Model files (`fexgan.files.checkpoint`): what they record, and what loading refuses: damaged tensors, a
wrong architecture, and what this version does not understand (a newer format, an unknown setting,
an unknown tensor), each with one line, exit 2 and nothing run from the command line."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fexgan import __version__
from fexgan.config import NUMERICS
from fexgan.data import toon
from fexgan.errors import UserError
from fexgan.files import checkpoint as ckpt
from fexgan.nets.designs import build_generator
from fexgan.nets.networks import build_discriminator
from fexgan.presets import build_config

FEXGAN = Path(sys.executable).parent / "fexgan"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with seeded random weights, written by this version."""
    cfg = build_config("tiny").model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    ckpt.save_model(path, build_generator(cfg), build_discriminator(cfg), cfg, {"note": "seeded"})
    return path


def rewrite(src: Path, dest: Path, tensors: dict | None = None, **meta: str | None) -> Path:
    """A copy of a model file with other tensors and metadata (None removes an entry)."""
    old = ckpt.raw_metadata(src)
    new = {k: v for k, v in {**old, **meta}.items() if v is not None}
    save_file(tensors if tensors is not None else load_file(str(src)), str(dest), new)
    return dest


def flip_tensor_byte(path: Path) -> None:
    """Change one byte inside the tensor data: the safetensors header still reads fine."""
    raw = bytearray(path.read_bytes())
    header = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[header + (len(raw) - header) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def cli_transfer(model: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    face = tmp_path / "face.png"
    toon.render_face(toon.make_characters(1)[0], "neutral", size=64).save(face)
    return subprocess.run([str(FEXGAN), "transfer", str(model), str(face), "--to", "joy", "--out", str(tmp_path / "out"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=120)


def assert_refused(proc: subprocess.CompletedProcess, tmp_path: Path, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "out").exists()  # nothing ran


# ----------------------------------------------------------------------------- what a file records
def test_a_model_file_says_what_made_it_and_loads_alone(model_file: Path) -> None:
    meta = ckpt.raw_metadata(model_file)
    assert meta["format"] == "fexgan-model-1" and meta["design"] == "paper"
    assert meta["made_by"] == f"fexgan {__version__}"
    loaded = ckpt.load_model(model_file)
    assert loaded.config == build_config("tiny").model and loaded.summary == {"note": "seeded"}
    tensors = load_file(str(model_file))
    assert all(torch.equal(v, tensors[f"generator.{k}"]) for k, v in loaded.generator.state_dict().items())


def test_a_file_from_before_the_design_was_recorded_loads_as_the_papers(model_file: Path, tmp_path: Path) -> None:
    config = json.loads(ckpt.raw_metadata(model_file)["model_config"])
    del config["generator"]
    old = rewrite(model_file, tmp_path / "old.safetensors", made_by=None, design=None, model_config=json.dumps(config))
    assert ckpt.load_model(old).config.generator == "paper"


def test_the_format_version_is_the_oldest_reader_that_understands_the_file() -> None:
    cfg = build_config("tiny").model
    assert ckpt.format_version(cfg) == 1
    assert ckpt.format_version(type(cfg)(**{**cfg.to_dict(), "generator": "edit"})) == 2  # its design's format
    assert ckpt.format_version(build_config("paper").model) == 3  # the reference's numerics


def test_a_model_file_records_only_the_numerics_that_differ_from_the_defaults(model_file: Path, tmp_path: Path) -> None:
    """A model with the default numerics is described as before they existed; the reference's are recorded
    and come back; a file without them (an older fexgan's) loads with the defaults."""
    stored = json.loads(ckpt.raw_metadata(model_file)["model_config"])
    assert not set(stored) & set(NUMERICS)
    cfg = build_config("tiny", overrides=["model.leaky_slope=0.3", "model.norm_eps=1e-3", "model.norm_init=ones"]).model
    path = tmp_path / "keras.safetensors"
    ckpt.save_model(path, build_generator(cfg), None, cfg)
    meta = ckpt.raw_metadata(path)
    assert meta["format"] == "fexgan-model-3"
    assert {k: v for k, v in json.loads(meta["model_config"]).items() if k in NUMERICS} == {
        "leaky_slope": 0.3, "norm_eps": 1e-3, "norm_init": "ones"}
    loaded = ckpt.load_model(path)
    assert loaded.config == cfg and loaded.generator.encoder.blocks[1][1].eps == 1e-3


# ----------------------------------------------------------------------------- what loading refuses
def test_a_newer_format_is_refused_naming_its_maker(model_file: Path, tmp_path: Path) -> None:
    newer = rewrite(model_file, tmp_path / "newer.safetensors", format="fexgan-model-4", made_by="fexgan 9.0")
    with pytest.raises(UserError, match=r"made by fexgan 9\.0 in model format 4, newer than .* reads \(up to 3\); upgrade"):
        ckpt.load_model(newer)
    assert_refused(cli_transfer(newer, tmp_path), tmp_path, "fexgan 9.0", "upgrade fexgan")


def test_an_unknown_setting_is_refused_naming_it(model_file: Path, tmp_path: Path) -> None:
    config = json.loads(ckpt.raw_metadata(model_file)["model_config"])
    odd = rewrite(model_file, tmp_path / "odd.safetensors", made_by="fexgan 9.0",
                  model_config=json.dumps({**config, "mask_head": True}))
    with pytest.raises(UserError, match=r"made by fexgan 9\.0 and has model settings .* does not know \(mask_head\)"):
        ckpt.load_model(odd)
    assert_refused(cli_transfer(odd, tmp_path), tmp_path, "mask_head", "fexgan 9.0")


@pytest.mark.parametrize("extra", ["generator.mask.weight", "mask_head.weight"])
def test_an_unknown_tensor_is_refused_naming_it(model_file: Path, tmp_path: Path, extra: str) -> None:
    tensors = {**load_file(str(model_file)), extra: torch.zeros(3)}
    odd = rewrite(model_file, tmp_path / "odd.safetensors", tensors, sha256=ckpt.tensors_sha256(tensors),
                  made_by="fexgan 9.0")
    with pytest.raises(UserError, match=rf"made by fexgan 9\.0.*no place for.*{extra.split('.')[-2]}"):
        ckpt.load_model(odd)
    assert_refused(cli_transfer(odd, tmp_path), tmp_path, "fexgan 9.0", "no place for")


def test_a_damaged_model_file_is_refused(model_file: Path, tmp_path: Path) -> None:
    bad = rewrite(model_file, tmp_path / "bad.safetensors")
    flip_tensor_byte(bad)
    with pytest.raises(UserError, match="corrupt: its tensors do not match the sha256"):
        ckpt.load_model(bad)


def test_a_model_of_another_architecture_says_what_it_expected_and_found(model_file: Path, tmp_path: Path) -> None:
    config = json.loads(ckpt.raw_metadata(model_file)["model_config"])
    wide = rewrite(model_file, tmp_path / "wide.safetensors", model_config=json.dumps({**config, "latent_dim": 32}))
    with pytest.raises(UserError, match=r"has shape \(16, \d+\), expected \(32, \d+\) .*latent_dim=32"):
        ckpt.load_model(wide)
    damaged = rewrite(model_file, tmp_path / "damaged.safetensors", model_config="{not json")
    with pytest.raises(UserError, match="configuration in its metadata is damaged"):
        ckpt.load_model(damaged)
    other = rewrite(model_file, tmp_path / "other.safetensors", format="some-other-format")
    with pytest.raises(UserError, match="not a fexgan model"):
        ckpt.load_model(other)


def test_a_model_with_non_finite_weights_is_never_written(tmp_path: Path) -> None:
    cfg = build_config("tiny").model
    G = build_generator(cfg)
    with torch.no_grad():
        next(G.parameters())[0] = float("nan")
    with pytest.raises(UserError, match="NaN or inf"):
        ckpt.save_model(tmp_path / "nan.safetensors", G, None, cfg)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- writing
def test_a_model_write_makes_no_file_but_the_temporary_one_the_cleanup_knows(tmp_path: Path) -> None:
    """Another process lists the folder without pause while a 64 MB model file is written five times:
    the only names it ever sees are the file and `.NAME.*.tmp`, which the next checkpoint removes if a
    kill leaves it (safetensors' own `save_file` writes through a `.tmpXXXXXX` of its own)."""
    folder, stop = tmp_path / "models", tmp_path / "stop"
    folder.mkdir()
    watch = ("import os, sys\nseen = set()\n"
             "while not os.path.exists(sys.argv[2]): seen.update(os.listdir(sys.argv[1]))\n"
             "print('\\n'.join(sorted(seen)))\n")
    watcher = subprocess.Popen([sys.executable, "-c", watch, str(folder), str(stop)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    for _ in range(5):
        ckpt.save_tensors(folder / "m.safetensors", {"w": torch.ones(16 << 20)}, {"format": "test"})
    stop.touch()
    seen = watcher.communicate(timeout=30)[0].split()
    others = [n for n in seen if n != "m.safetensors"]
    assert others and all(n.startswith(".m.safetensors.") and n.endswith(".tmp") for n in others), seen
    assert load_file(folder / "m.safetensors")["w"].shape == (16 << 20,)
