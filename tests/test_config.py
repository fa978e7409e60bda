"""Configuration: the presets, overrides from the command line and from a file, and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fexgan.config import NUMERICS, PRESETS, ModelConfig, TrainConfig, build_config
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


# The reference's numerics as ../shared/paper/reference-architecture.md states them ("Numeric defaults", the
# layer tables): setting -> (the reference's value, today's default, which every other preset keeps).
REFERENCE = {
    "model.leaky_slope": (0.3, 0.2),                   # Keras' LeakyReLU() (encoder, discriminator)
    "model.norm_momentum": (0.01, 0.1),                # Keras' BatchNormalization() momentum 0.99, in PyTorch's sense
    "model.norm_eps": (1e-3, 1e-5),                    # ... and its epsilon
    "model.norm_init": ("ones", "normal"),             # ... and its starting scale (gamma = 1)
    "model.conv_init": ("normal", "normal"),           # convolutions: N(0, 0.02), set by the reference
    "model.deconv_init": ("normal", "normal"),         # transposed convolutions: likewise
    "model.dense_init": ("glorot_uniform", "normal"),  # mu, the decoder's 7 -> 64, the discriminator's heads
    "model.dropout": (0.5, 0.5),                       # the decoder's 2, 4 and 8 px blocks
    "adam_eps": (1e-7, 1e-8),                          # Keras' Adam
}


def setting(cfg: TrainConfig, key: str) -> object:
    return getattr(cfg.model, key[len("model."):]) if key.startswith("model.") else getattr(cfg, key)


def test_the_paper_preset_has_the_references_numerics_and_the_others_keep_the_defaults() -> None:
    assert {f"model.{k}" for k in NUMERICS} <= set(REFERENCE)  # every numeric setting is in the table
    paper = build_config("paper")
    assert {key: setting(paper, key) for key in REFERENCE} == {key: ref for key, (ref, _) in REFERENCE.items()}
    for preset in set(PRESETS) - {"paper"}:
        cfg = build_config(preset)
        assert {key: setting(cfg, key) for key in REFERENCE} == {key: old for key, (_, old) in REFERENCE.items()}, preset
        assert cfg.model.custom_numerics() == {}
    assert {key: setting(TrainConfig(), key) for key in REFERENCE} == {key: old for key, (_, old) in REFERENCE.items()}
    # a configuration saved before the numerics existed loads with the defaults
    old = {k: v for k, v in ModelConfig().to_dict().items() if k not in NUMERICS}
    assert ModelConfig.from_dict(old) == ModelConfig()
    # and they can be set one by one
    cfg = build_config("tiny", overrides=["model.leaky_slope=0.3", "model.dense_init=glorot_uniform", "adam_eps=1e-7"])
    assert (cfg.model.leaky_slope, cfg.model.dense_init, cfg.adam_eps) == (0.3, "glorot_uniform", 1e-7)


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
    ("model.classes=joy", "at least 2"), ("model.leaky_slope=1", "leaky_slope"), ("model.norm_eps=0", "norm_eps"),
    ("model.norm_momentum=1.5", "norm_momentum"), ("model.conv_init=he", "conv_init"), ("model.norm_init=zeros", "norm_init"),
    ("adam_eps=0", "adam_eps"),
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
