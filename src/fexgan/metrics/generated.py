"""How evaluation drives a trained generator: batched transfers and random decoder samples, through
the one inference driver (`fexgan.generation.driver`: eval mode, no autograd, fp32 here). Transfers
decode the latent mean, so they are deterministic; random samples draw their latents from a seeded
generator. Everything returns uint8 images on the CPU, as saved images are.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fexgan.data.images import to_uint8
from fexgan.generation.driver import Driver
from fexgan.nets.networks import Generator

BATCH = 256


def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Apply `fn` to aligned chunks of `tensors` and concatenate the results on the CPU."""
    n = len(tensors[0])
    return torch.cat([fn(*(t[i:i + batch] for t in tensors)).cpu() for i in range(0, n, batch)])


def device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def transfer(G: Generator, images: torch.Tensor, source_class: torch.Tensor, target_affect: torch.Tensor) -> torch.Tensor:
    """uint8 sources (N, 3, S, S) with their expression indices (N,) -> uint8 images with the target
    affect vectors (N, classes) applied, decoded from the latent mean."""
    n_cls = G.cfg.num_classes
    out = Driver(G, batch=BATCH).transfer(images, F.one_hot(source_class, n_cls).float(), target_affect.float())
    return to_uint8(out).cpu()


def transfer_each(G: Generator, images: torch.Tensor, source_class: torch.Tensor, affects: torch.Tensor) -> torch.Tensor:
    """Every uint8 source (N, 3, S, S) with each of the affect vectors (A, classes), each source encoded
    once: uint8 (N * A, 3, S, S), source by source; the same images as `transfer` of the repeated sources."""
    n_cls, n_aff = G.cfg.num_classes, len(affects)
    driver = Driver(G, batch=BATCH)
    mu = driver.encode(images, F.one_hot(source_class, n_cls).float())[0].repeat_interleave(n_aff, 0)
    out = driver.decode(mu, affects.float().repeat(len(images), 1), images.repeat_interleave(n_aff, 0))
    return to_uint8(out).cpu()


def sample(G: Generator, classes: torch.Tensor, seed: int) -> torch.Tensor:
    """The decoder alone from latents z ~ N(0, I) (paper Fig. 4): one uint8 image per class index."""
    cfg = G.cfg
    z = torch.randn(len(classes), cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    return to_uint8(Driver(G, batch=BATCH).decode(z, F.one_hot(classes, cfg.num_classes).float())).cpu()
