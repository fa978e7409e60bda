"""Configuration: the presets, overrides from the command line and from a file, and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fexgan.config import PRESETS, TrainConfig, build_config
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS


def test_presets() -> None:
    paper = build_config("paper")
    assert (paper.model.image_size, paper.model.width, paper.model.latent_dim) == (128, 1.0, 128)
    assert (paper.batch_size, paper.epochs, paper.lr, paper.betas) == (32, 100, 2e-4, (0.5, 0.999))
    assert paper.model.classes == EXPRESSIONS and paper.late_fraction == 0.5 and paper.alpha_late < paper.alpha
    cpu = build_config("cpu")
    assert cpu.model.image_size == 64 and cpu.model.width < 1
    assert (cpu.augment_shift, cpu.augment_scale) == (0, 0) and (paper.augment_shift, paper.augment_scale) > (0, 0)
    t = build_config("tiny")
    assert t.model.image_size == 32 and t.data == "toon:4" and t.batch_size == 8
    assert set(PRESETS) == {"paper", "cpu", "any", "tiny"}


def test_overrides_take_the_type_of_the_value_they_replace(tmp_path: Path) -> None:
    cfg = build_config("tiny", overrides=["model.width=0.5", "amp=false", "channels_last=yes", "betas=0.9,0.99",
                                          "model.background=0,10,20", "steps=7", "lr=1e-3", "data=folder:/x:y"])
    assert cfg.model.width == 0.5 and cfg.amp is False and cfg.channels_last is True
    assert cfg.betas == (0.9, 0.99) and cfg.model.background == (0, 10, 20)
    assert cfg.steps == 7 and isinstance(cfg.steps, int) and cfg.lr == 1e-3 and cfg.data == "folder:/x:y"
    # a file first, then the overrides
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.01, "model": {"latent_dim": 64}, "betas": [0.1, 0.2]}))
    cfg = build_config("tiny", file=tmp_path / "c.json", overrides=["lr=0.5"])
    assert (cfg.lr, cfg.model.latent_dim, cfg.betas, cfg.model.width) == (0.5, 64, (0.1, 0.2), 0.0625)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # what config.json round-trips


@pytest.mark.parametrize("override, message", [
    ("model.nope=1", "unknown configuration key"), ("nope=1", "unknown configuration key"),
    ("lr.x=1", "unknown configuration key"), ("lr", "key=value"), ("lr=fast", "not a valid float"),
    ("steps=2.5", "not a valid int"), ("amp=maybe", "not a valid bool"), ("model.image_size=100", "image size"),
    ("model.width=0", "width"), ("batch_size=1", "batch size"), ("steps=-1", "negative"),
    ("betas=0.9", "betas"), ("model.background=0,0", "background"), ("device=tpu", "device"),
    ("model.classes=joy", "at least 2"),
])
def test_bad_overrides_are_user_errors(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_config("tiny", overrides=[override])


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ('{"model": {"widht": 0.5}}', "model.widht"), ('{"lr": "fast"}', "'lr'"),
    ('{"model": 3}', "JSON object"), ("[1, 2]", "JSON object"), ('{"amp": 1}', "'amp'"),
    ('{"betas": [0.9, "x"]}', "'betas'"),
])
def test_bad_config_files_are_user_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(UserError, match=message):
        build_config("tiny", file=tmp_path / "c.json")
    with pytest.raises(UserError, match="does not exist"):
        build_config("tiny", file=tmp_path / "missing.json")
    with pytest.raises(UserError, match="unknown preset"):
        build_config("huge")
