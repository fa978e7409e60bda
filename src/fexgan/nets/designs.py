"""Generator designs as plug-ins. A design is one registration (`register(Design(...))`) that says
everything the rest of the code asks of it: its generator class, the extra loss terms it trains with
and how often, the parts a fine-tune may freeze, the model-file format that describes it, and the
preset that trains it. The step, the loop, DDP, fine-tuning and model files ask `design_of(name)`
instead of naming designs; the discriminator is shared by all.

Built in: `paper` (the reference layout, `Generator`) and `edit` (the decoder sees the source and draws
a change of it, `EditGenerator`). A design added elsewhere (a test, a user's module) registers the
same way before a model of it is built, trained or loaded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fexgan.config import TrainConfig
from fexgan.errors import UserError
from fexgan.nets.losses import alone_terms
from fexgan.nets.networks import EditGenerator, Generator

# (the parts `Generator.draw` returned, the L1 target images, the configuration) -> named loss terms,
# "design_total" among them: what the generator's loss adds
Terms = Callable[[dict[str, torch.Tensor], torch.Tensor, TrainConfig], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Design:
    """What the rest of the code needs to know of a generator design."""

    name: str
    generator: type[Generator]
    file_format: int = 2                       # the oldest model-file format that describes it (1: the paper's)
    terms: Terms | None = None                 # its own loss terms, from the parts its `draw` returns
    every: Callable[[TrainConfig], int] = lambda cfg: 1  # ... on every n-th step (the other steps draw no parts)
    parts: tuple[str, ...] = ("encoder", "decoder")      # the generator's modules a fine-tune may freeze
    preset: str = "cpu"                        # the preset whose losses and schedule a fine-tune of it uses

    def draws_parts(self, cfg: TrainConfig, step: int) -> bool:
        """Whether the training step `step` draws the design's parts and adds its terms."""
        return self.terms is not None and step % self.every(cfg) == 0

    def leaves_outputs_unused(self, cfg: TrainConfig) -> bool:
        """Whether some steps leave generator outputs unused (DDP must be told: find_unused_parameters)."""
        return self.terms is not None and self.every(cfg) > 1


DESIGNS: dict[str, Design] = {}


def register(design: Design) -> Design:
    """Make `design` known by its name (a name registered twice is a programming error)."""
    if design.name in DESIGNS and DESIGNS[design.name] != design:
        raise ValueError(f"a generator design named '{design.name}' is already registered")
    DESIGNS[design.name] = design
    return design


def design_of(name: str) -> Design:
    """The registered design `name`, or a one-line error naming the ones there are."""
    if name not in DESIGNS:
        raise UserError(f"generator design '{name}' is not one of {', '.join(DESIGNS)} (a model file of another "
                        f"design needs the fexgan, or the plug-in, that defines it)")
    return DESIGNS[name]


def build_generator(cfg_model) -> Generator:
    """The generator of the design `cfg_model.generator`, freshly initialised."""
    return design_of(cfg_model.generator).generator(cfg_model)


register(Design("paper", Generator, file_format=1, preset="cpu"))
# The edit design's own options are the configuration's `edit` section (`fexgan.config.EditConfig`).
register(Design("edit", EditGenerator, terms=lambda parts, target, cfg: alone_terms(
    parts["alone"], target, cfg.losses.gamma, cfg.edit.alone_weight * cfg.edit.alone_every),
    every=lambda cfg: cfg.edit.alone_every, parts=("encoder", "decoder", "skips", "head"), preset="any"))
