"""Configuration: the presets, overrides from the command line and from a file, and their errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fexgan.config import FLAT_KEYS, NUMERICS, SECTIONS, ModelConfig, TrainConfig
from fexgan.errors import UserError
from fexgan.expressions import EXPRESSIONS
from fexgan.presets import PRESETS, build_config, load_run_config, read_file


def test_presets() -> None:
    paper = build_config("paper")
    assert (paper.model.image_size, paper.model.width, paper.model.latent_dim) == (128, 1.0, 128)
    assert (paper.optimiser.batch_size, paper.run.epochs, paper.optimiser.lr, paper.optimiser.betas) == (
        32, 100, 2e-4, (0.5, 0.999))
    assert paper.model.classes == EXPRESSIONS and paper.losses.late_fraction == 0.5
    assert paper.losses.alpha_late < paper.losses.alpha
    cpu = build_config("cpu")
    assert cpu.model.image_size == 64 and cpu.model.width < 1
    assert (cpu.data.augment_shift, cpu.data.augment_scale) == (0, 0)
    assert (paper.data.augment_shift, paper.data.augment_scale) > (0, 0)
    t = build_config("tiny")
    assert t.model.image_size == 32 and t.data.source == "toon:4" and t.optimiser.batch_size == 8
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
    "optimiser.adam_eps": (1e-7, 1e-8),                # Keras' Adam
}


def setting(cfg: TrainConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


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
    cfg = build_config("tiny", overrides=["model.leaky_slope=0.3", "model.dense_init=glorot_uniform",
                                                 "optimiser.adam_eps=1e-7"])
    assert (cfg.model.leaky_slope, cfg.model.dense_init, cfg.optimiser.adam_eps) == (0.3, "glorot_uniform", 1e-7)


def test_overrides_take_the_type_of_the_value_they_replace(tmp_path: Path) -> None:
    cfg = build_config("tiny", overrides=["model.width=0.5", "run.amp=false", "run.channels_last=yes",
                                          "optimiser.betas=0.9,0.99", "model.background=0,10,20", "run.steps=7",
                                          "optimiser.lr=1e-3", "data.source=folder:/x:y", "edit.alone_every=3"])
    assert cfg.model.width == 0.5 and cfg.run.amp is False and cfg.run.channels_last is True
    assert cfg.optimiser.betas == (0.9, 0.99) and cfg.model.background == (0, 10, 20)
    assert cfg.run.steps == 7 and isinstance(cfg.run.steps, int) and cfg.optimiser.lr == 1e-3
    assert cfg.data.source == "folder:/x:y" and cfg.edit.alone_every == 3
    # a file first, then the overrides
    (tmp_path / "c.json").write_text(json.dumps({"optimiser": {"lr": 0.01, "betas": [0.1, 0.2]},
                                                 "model": {"latent_dim": 64}}))
    cfg = build_config("tiny", file=tmp_path / "c.json", overrides=["optimiser.lr=0.5"])
    assert (cfg.optimiser.lr, cfg.model.latent_dim, cfg.optimiser.betas, cfg.model.width) == (0.5, 64, (0.1, 0.2),
                                                                                             0.0625)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # what config.json round-trips


@pytest.mark.parametrize("override, message", [
    ("model.nope=1", "unknown configuration key"), ("nope=1", "unknown configuration key"),
    ("lr=1", "unknown configuration key 'lr'; it is 'optimiser.lr'"), ("data=toon", "it is 'data.source'"),
    ("optimiser=1", "unknown configuration key"), ("optimiser.lr.x=1", "unknown configuration key"),
    ("optimiser.lr", "key=value"), ("optimiser.lr=fast", "not a valid float"),
    ("run.steps=2.5", "not a valid int"), ("run.amp=maybe", "not a valid bool"), ("model.image_size=100", "image size"),
    ("model.width=0", "width"), ("optimiser.batch_size=1", "batch_size"), ("run.steps=-1", "negative"),
    ("optimiser.betas=0.9", "betas"), ("model.background=0,0", "background"), ("run.device=tpu", "device"),
    ("edit.alone_every=0", "edit.alone_every"), ("finetune.freeze=generator.elbow", "finetune.freeze"),
    ("model.classes=joy", "at least 2"), ("model.leaky_slope=1", "leaky_slope"), ("model.norm_eps=0", "norm_eps"),
    ("model.norm_momentum=1.5", "norm_momentum"), ("model.conv_init=he", "conv_init"), ("model.norm_init=zeros", "norm_init"),
    ("optimiser.adam_eps=0", "adam_eps"),
])
def test_bad_overrides_are_user_errors(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_config("tiny", overrides=[override])


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"), ('{"model": {"widht": 0.5}}', "model.widht"),
    ('{"optimiser": {"lr": "fast"}}', "'optimiser.lr'"), ('{"lr": "fast"}', "'optimiser.lr'"),
    ('{"model": 3}', "JSON object"), ("[1, 2]", "JSON object"), ('{"run": {"amp": 1}}', "'run.amp'"),
    ('{"optimiser": {"betas": [0.9, "x"]}}', "'optimiser.betas'"), ('{"optimiser": {"nope": 1}}', "optimiser.nope"),
    ('{"losses": 3}', "JSON object"),
])
def test_bad_config_files_are_user_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(UserError, match=message):
        build_config("tiny", file=tmp_path / "c.json")
    with pytest.raises(UserError, match="does not exist"):
        build_config("tiny", file=tmp_path / "missing.json")
    with pytest.raises(UserError, match="unknown preset"):
        build_config("huge")


FLAT = Path(__file__).parent / "fixtures" / "flat-config.json"  # a run's config.json from before the sections


def test_a_flat_configuration_of_an_older_run_loads_into_its_sections(tmp_path: Path) -> None:
    flat = json.loads(FLAT.read_text())
    assert "lr" in flat and isinstance(flat["data"], str)
    cfg = TrainConfig.from_dict(flat)
    expected = build_config("any", overrides=["run.steps=1234", "optimiser.lr=3e-4", "finetune.freeze=generator.encoder",
                                              "finetune.replay=toon:4"])
    assert cfg == expected and cfg.data.source == "toon:20:256" and cfg.edit.alone_every == 2
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(FLAT.read_text())
    assert load_run_config(run) == expected
    # resuming an old run: its configuration is the base, overrides in sections go on top
    resumed = build_config(base=read_file(run / "config.json"), overrides=["run.steps=2000"])
    assert resumed.run.steps == 2000 and resumed.optimiser.lr == 3e-4
    # a migrated configuration saved again is in sections, and reads back the same
    assert set(cfg.to_dict()) == set(SECTIONS) and TrainConfig.from_dict(cfg.to_dict()) == cfg
    # an unknown key of an old flat file is still reported, by name
    with pytest.raises(UserError, match="unknown configuration keys: nope"):
        TrainConfig.from_dict({**flat, "nope": 1})


def test_every_flat_key_has_exactly_one_place() -> None:
    places = list(FLAT_KEYS.values())
    assert len(places) == len(set(places)) == sum(len(dataclasses.fields(kind)) for name, kind in SECTIONS.items()
                                                  if name != "model")
    for section, key in places:
        assert hasattr(getattr(TrainConfig(), section), key)
