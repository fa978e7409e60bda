"""The solver: the networks, their optimisers and moving average (`Nets`), one batch, and one training
step of the paper's losses (eqs. 1-7). `fexgan.training.loop` runs it in a loop."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from fexgan.config import TrainConfig
from fexgan.data.images import to_model_input
from fexgan.data.sources import ImageSet
from fexgan.data.views import augment, random_view
from fexgan.devices import bf16_support
from fexgan.errors import UserError
from fexgan.files.checkpoint import LoadedModel, unwrap
from fexgan.nets.designs import build_generator, design_of
from fexgan.nets.losses import discriminator_loss, generator_loss
from fexgan.nets.networks import Discriminator, Generator, build_discriminator
from fexgan.training import distributed as dist_


@dataclass
class Nets:
    """The two networks, their optimisers and the moving average of the generator (when `ema_decay` > 0)."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    G_ema: Generator | None = None
    fixed_norms: list[nn.Module] = field(default_factory=list)  # batch norms that keep their statistics

    def __post_init__(self) -> None:
        # The tensors the moving average blends, paired once: building both state dicts on every step
        # costs as much as the blend itself. Loading weights copies into these tensors, so they stay valid.
        pairs = list(zip(self.G_ema.state_dict().values(), unwrap(self.G).state_dict().values())
                     ) if self.G_ema is not None else []
        floats = [pair for pair in pairs if pair[0].is_floating_point()]
        self._ema_blend = ([e for e, _ in floats], [m for _, m in floats])
        self._ema_copy = [pair for pair in pairs if not pair[0].is_floating_point()]

    @property
    def G_out(self) -> Generator:
        """The generator that model files, samples and validation use: the moving average when there is one."""
        return self.G_ema if self.G_ema is not None else unwrap(self.G)

    def train(self) -> None:
        """Both networks in training mode, but for `fixed_norms`: they normalise with the statistics the
        model was trained with and keep them (a fine-tune's batches, a quarter of them one new face, are
        not the data those statistics describe)."""
        self.G.train(), self.D.train()
        for norm in self.fixed_norms:
            norm.eval()

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G, for weights and batch-norm statistics alike."""
        if self._ema_blend[0]:
            torch._foreach_lerp_(*self._ema_blend, 1.0 - decay)
        for e, m in self._ema_copy:
            e.copy_(m)


def build_nets(cfg: TrainConfig, device: torch.device, ctx: dist_.Context | None = None) -> Nets:
    """Networks and Adam optimisers; under torchrun each network is wrapped in DDP (rank 0's
    initial weights are broadcast to all), optionally with synchronised batch norm."""
    design = design_of(cfg.model.generator)
    G, D = build_generator(cfg.model).to(device), build_discriminator(cfg.model).to(device)
    # Fine-tunes keep the `freeze` parts fixed: no gradients, so Adam leaves them alone, and their batch
    # norms keep the statistics the model was trained with (`Nets.train`; with `fixed_norms`, all of G's).
    frozen = []
    for part in cfg.finetune.freeze:
        name = part.removeprefix("generator.")
        if name not in design.parts:
            raise UserError(f"freeze {part}: the {design.name} design has no such part (it has "
                            f"{', '.join('generator.' + p for p in design.parts)})")
        module = getattr(G, name)
        frozen.append(module.requires_grad_(False))
    if cfg.run.channels_last:  # NHWC: tensor cores on CUDA, oneDNN's fastest layout on CPU (-6..10% CPU time)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    adam = {"lr": cfg.optimiser.lr, "betas": cfg.optimiser.betas, "eps": cfg.optimiser.adam_eps, **fused}
    opt_g, opt_d = torch.optim.Adam(G.parameters(), **adam), torch.optim.Adam(D.parameters(), **adam)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.optimiser.ema_decay > 0 else None
    if ctx is not None and ctx.enabled:
        if cfg.run.sync_batchnorm:
            G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
        ids = [device.index] if device.type == "cuda" else None
        # Steps without the design's terms may leave some of its outputs unused.
        G, D = (DDP(G, device_ids=ids, find_unused_parameters=design.leaves_outputs_unused(cfg)),
                DDP(D, device_ids=ids))
    if cfg.run.compile:  # opt-in: compiling takes about a minute or more (docs/speed.md)
        G, D = torch.compile(G), torch.compile(D)
    fixed = [norm for part in ([unwrap(G)] if cfg.finetune.fixed_norms else frozen) for norm in part.modules()
             if isinstance(norm, nn.modules.batchnorm._BatchNorm)]  # after the sync conversion, which replaces them
    return Nets(G, D, opt_g, opt_d, G_ema, fixed)


def precision(cfg: TrainConfig, device: torch.device) -> str:
    """'bf16 (why)' where `cfg.run.amp` and the device computes bf16 natively, else 'fp32 (why)'."""
    native = bf16_support(device)
    if not cfg.run.amp:
        return "fp32 (amp=false)"
    return f"bf16 autocast ({native})" if native else f"fp32 (no native bf16 on this {device.type})"


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast where `precision` says bf16 (convolutions and dense layers in bf16), else a no-op.
    Weights, gradients, optimiser state, the moving average and the losses stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision(cfg, device).startswith("bf16"))


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """The moving average's decay at `step`: short early on, so that the average is not stuck near the
    initial random weights, then `cfg.optimiser.ema_decay` (about the last 1/(1 - decay) steps count). A run that
    starts from a model's weights (`init_from`, a fine-tune) starts its average at that model's, which
    it has no reason to shed: the full decay from the first step."""
    return cfg.optimiser.ema_decay if cfg.finetune.init_from else min(cfg.optimiser.ema_decay, (1 + step) / (10 + step))


class Diverged(Exception):
    """A loss or gradient became NaN or inf; the update it would have made was not applied."""


def check_finite(loss: torch.Tensor, module: torch.nn.Module, what: str, ctx: dist_.Context | None) -> None:
    """Raise `Diverged` before an optimiser step whose loss or gradients are not finite (on any process)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    ok = bool(torch.isfinite(loss.detach().float() + torch.nn.utils.get_total_norm(grads)))
    if not dist_.all_true(ctx or dist_.Context(), ok):
        raise Diverged(f"{what} loss or gradient")


def discriminator_view(images: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """What the discriminator sees of a batch: with `d_augment`, a `data.random_view` (the judge's training
    views: shift and zoom, blur or noise), differentiably and alike for reals and fakes (DiffAugment), so
    that its classifier cannot accept an expression by pixel detail the way one trained on clean images to
    a loss of 1e-5 does; else the images themselves."""
    return random_view(images) if cfg.losses.d_augment else images


def discriminator_accuracy(real_logit: torch.Tensor, real_cls: torch.Tensor, source_class: torch.Tensor,
                           fake_logit: torch.Tensor) -> dict[str, torch.Tensor]:
    """How often D is right on a batch: reals called real, fakes called fake, the reals' expressions."""
    return {"d_acc_real": (real_logit > 0).float().mean(), "d_acc_fake": (fake_logit < 0).float().mean(),
            "d_acc_cls": (real_cls.argmax(1) == source_class).float().mean()}


def train_step(nets: Nets, batch: dict[str, torch.Tensor], cfg: TrainConfig, alpha_binary: float,
               autocast: torch.autocast, ctx: dist_.Context | None = None, ema_decay: float = 0.0, step: int = 0
               ) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update (eqs. 1-7) and its moving average (with
    `ema_decay`); the design's own terms on the steps it asks for (`Design.every`). Returns detached losses.
    A non-finite loss or gradient raises `Diverged` instead of being applied. The batch's `d_weight`
    (B,), when it has one, says which sources and their fakes the discriminator learns from (a
    fine-tune's: not the new character's, `fexgan.training.finetune`)."""
    G, D, design = nets.G, nets.D, design_of(cfg.model.generator)
    nets.train()  # every step: a sample grid or validation in between leaves the plain training mode
    with autocast:
        with_parts = design.draws_parts(cfg, step)
        fake, mu, log_sigma, parts = G(batch["source"], batch["source_affect"], batch["target_affect"], with_parts)
        seen_fake = discriminator_view(fake, cfg)
        real_logit, real_cls = D(discriminator_view(batch["source"], cfg))
        fake_logit, fake_cls = D(seen_fake.detach())
    d_losses = discriminator_loss(real_logit.float(), real_cls.float(), batch["source_class"], fake_logit.float(),
                                  fake_cls.float(), batch["target_class"], cfg.losses.d_classify_fakes,
                                  batch.get("d_weight"))  # fp32, from raw logits
    d_losses.update(discriminator_accuracy(real_logit, real_cls, batch["source_class"], fake_logit))
    nets.opt_d.zero_grad(set_to_none=True)
    d_losses["d_total"].backward()
    check_finite(d_losses["d_total"], D, "discriminator", ctx)
    nets.opt_d.step()

    D.requires_grad_(False)  # the generator's pass through D needs no gradients for D's weights
    try:
        with autocast:  # ... and goes around D's DDP wrapper, so no gradient sync leaks into D
            fake_logit, fake_cls = unwrap(D)(seen_fake)
        g_losses = generator_loss(fake_logit.float(), fake_cls.float(), batch["target_class"], mu.float(),
                                  log_sigma.float(), fake.float(), batch["target"], cfg.losses.alpha, alpha_binary,
                                  cfg.losses.beta, cfg.losses.gamma)
        if with_parts:
            terms = design.terms(parts, batch["target"], cfg)
            g_losses = {**g_losses, **terms, "g_total": g_losses["g_total"] + terms["design_total"]}
        nets.opt_g.zero_grad(set_to_none=True)
        g_losses["g_total"].backward()
        check_finite(g_losses["g_total"], G, "generator", ctx)
        nets.opt_g.step()
        nets.update_ema(ema_decay)
    finally:
        D.requires_grad_(True)
    return {k: v.detach().float() for k, v in {**d_losses, **g_losses}.items()}


def make_batch(data: ImageSet, images: torch.Tensor, src: torch.Tensor, target_class: torch.Tensor,
               target_idx: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Index the in-memory uint8 images, normalise, augment, build affect vectors.

    A source and its L1 target get the same shift and zoom (one `augment` of both, stacked along the
    channels): the target must stay as aligned with the source as the data makes it, or the best the
    generator can do against it is the average pose, a blur."""
    n_cls = cfg.model.num_classes
    source_class = data.expression[src].to(device, non_blocking=True)
    target_class = target_class.to(device, non_blocking=True)
    source = to_model_input(images[src.to(images.device)].to(device, non_blocking=True))
    target = to_model_input(images[target_idx.to(images.device)].to(device, non_blocking=True))
    if cfg.data.augment_shift > 0 or cfg.data.augment_scale > 0:
        source, target = augment(torch.cat([source, target], 1), cfg.data.augment_shift, cfg.data.augment_scale,
                                 generator).split(3, dim=1)
    target_affect = F.one_hot(target_class, n_cls).float()
    if cfg.data.target_jitter > 0:  # the paper's A_t(lambda), lambda ~ N(0, 1), scaled
        target_affect = target_affect + cfg.data.target_jitter * torch.randn(
            target_affect.shape, generator=generator).to(device)
    if cfg.run.channels_last:
        source = source.contiguous(memory_format=torch.channels_last)
    target = target.contiguous()
    return {"source": source, "target": target, "source_class": source_class, "target_class": target_class,
            "source_affect": F.one_hot(source_class, n_cls).float(), "target_affect": target_affect}


def set_lr(nets: Nets, lr: float) -> None:
    for opt in (nets.opt_g, nets.opt_d):
        for group in opt.param_groups:
            group["lr"] = lr


def load_weights(nets: Nets, loaded: LoadedModel, generator_train: dict[str, torch.Tensor] | None = None) -> None:
    """Copy a model file's weights into the networks (nothing else: optimisers, data order and random
    state are the caller's). The file's generator is the moving average when it has one; with
    `generator_train` (a checkpoint's raw weights) the trained generator starts from those instead."""
    unwrap(nets.D).load_state_dict(loaded.discriminator.state_dict())
    unwrap(nets.G).load_state_dict(generator_train if generator_train is not None else loaded.generator.state_dict())
    if nets.G_ema is not None:
        nets.G_ema.load_state_dict(loaded.generator.state_dict())
