"""Generator designs are plug-ins: a third design, defined and registered here in the test tree alone,
trains (with its own loss term, on the steps it asks for), is saved, loads from its model file alone,
and transfers faces, without a line of the package naming it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import losses
from torch import nn

import fexgan
from fexgan.config import TrainConfig
from fexgan.data import toon
from fexgan.errors import UserError
from fexgan.files.checkpoint import format_version, read_metadata
from fexgan.nets.designs import DESIGNS, Design, design_of, register
from fexgan.nets.networks import Generator
from fexgan.presets import build_config
from fexgan.training.loop import train


class TintGenerator(Generator):
    """The paper's generator plus a learned tint per expression, added to what the decoder draws."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.tint = nn.Parameter(torch.zeros(cfg.num_classes, 3))

    def draw(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None, parts: bool = False
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        shift = (affect.to(self.tint.dtype) @ self.tint)[:, :, None, None]
        image = (self.decoder(z, affect) + shift).clamp(-1, 1)
        return image, ({"tint": self.tint} if parts else {})


def tint_terms(parts: dict[str, torch.Tensor], target: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    small = parts["tint"].pow(2).mean()  # keep the tints small
    return {"design_total": small, "tint_size": small}


@pytest.fixture(scope="module")
def tint() -> Design:
    design = register(Design("tint", TintGenerator, terms=tint_terms, every=lambda cfg: 2, parts=("encoder",)))
    yield design
    DESIGNS.pop("tint")


def test_a_design_registered_in_the_tests_trains_saves_loads_and_transfers(tint: Design, tmp_path: Path) -> None:
    cfg = build_config("tiny", overrides=["data.source=toon:4", "run.device=cpu", "run.threads=1", "run.steps=6", "model.generator=tint"])
    model_file = train(cfg, tmp_path / "run", progress=False)
    logged = losses(tmp_path / "run")
    assert [("tint_size" in r) for r in logged] == [True, False] * 3  # its term on every 2nd step, from the first
    model_cfg, _ = read_metadata(model_file)
    assert model_cfg.generator == "tint" and format_version(model_cfg) == 2
    model = fexgan.load(model_file, "cpu")
    assert isinstance(model.generator, TintGenerator) and model.generator.tint.abs().sum() > 0  # it trained
    face = toon.render_face(toon.make_characters(1)[0], "neutral", size=32)
    assert [im.size for im in model.transfer(face, to="all")] == [(32, 32)] * 7


def test_a_fine_tune_may_freeze_only_the_designs_parts(tint: Design, tmp_path: Path) -> None:
    cfg = build_config("tiny", overrides=["data.source=toon:4", "run.device=cpu", "run.steps=1", "model.generator=tint",
                                          "finetune.freeze=generator.decoder"])
    with pytest.raises(UserError, match=r"tint design has no such part \(it has generator.encoder\)"):
        train(cfg, tmp_path / "run", progress=False)


def test_an_unknown_design_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="generator design 'warp' is not one of paper, edit"):
        design_of("warp")
    cfg = build_config("tiny", overrides=["data.source=toon:4", "run.device=cpu", "run.steps=1", "model.generator=warp"])
    with pytest.raises(UserError, match="'warp'"):
        train(cfg, tmp_path / "run", progress=False)
