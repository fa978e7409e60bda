"""How evaluation drives a trained generator: batched transfers and random decoder samples.

Plain torch on the generator's `transfer` and `decode` (`fexgan.nets.networks`), in eval mode (no dropout, batch-norm
running statistics). Transfers decode the latent mean, so they are deterministic; random samples
draw their latents from a seeded generator. Everything returns uint8 images, as saved images are.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from fexgan.data.images import to_model_input, to_uint8
from fexgan.nets.networks import Generator

BATCH = 256


def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Apply `fn` to aligned chunks of `tensors` and concatenate the results on the CPU."""
    n = len(tensors[0])
    return torch.cat([fn(*(t[i:i + batch] for t in tensors)).cpu() for i in range(0, n, batch)])


def device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def transfer(G: Generator, images: torch.Tensor, source_class: torch.Tensor, target_affect: torch.Tensor) -> torch.Tensor:
    """uint8 sources (N, 3, S, S) with their expression indices (N,) -> uint8 images with the target
    affect vectors (N, classes) applied, decoded from the latent mean."""
    device, n_cls = device_of(G), G.cfg.num_classes

    def run(x: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return to_uint8(G.transfer(to_model_input(x.to(device)), F.one_hot(src, n_cls).float().to(device),
                                   tgt.float().to(device)))

    G.eval()
    return batched(run, images, source_class, target_affect)


@torch.no_grad()
def sample(G: Generator, classes: torch.Tensor, seed: int) -> torch.Tensor:
    """The decoder alone from latents z ~ N(0, I) (paper Fig. 4): one uint8 image per class index."""
    device, cfg = device_of(G), G.cfg
    z = torch.randn(len(classes), cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
    G.eval()
    return batched(lambda z_, c: to_uint8(G.decode(z_.to(device), F.one_hot(c, cfg.num_classes).float().to(device))),
                   z, classes)
