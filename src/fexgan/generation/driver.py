"""The one way a trained generator runs for inference: in eval mode (its mode restored afterwards),
without autograd, in bf16 autocast when asked, in batches of `batch` images, with float32 images
in [-1, 1] out. `FExGAN`, the metrics and the training run's sample grids and validation all drive
their generator through a `Driver`."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fexgan.data.images import to_model_input
from fexgan.nets.networks import Generator


class Driver:
    """A generator on a device, run for inference (`encode`, `decode`, `transfer`); images go in as
model input, or as uint8 images."""

    def __init__(self, generator: Generator, device: torch.device | None = None, bf16: bool = False,
                 batch: int | None = 64):
        self.generator = generator
        self.device = device if device is not None else next(generator.parameters()).device
        self.bf16, self.batch = bf16, batch

    @contextmanager
    def running(self) -> Iterator[None]:
        """Eval mode, no autograd and the autocast, for the calls inside; the generator's mode after."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                yield
        finally:
            self.generator.train(was_training)

    def _chunks(self, *tensors: torch.Tensor | None) -> Iterator[tuple[torch.Tensor | None, ...]]:
        """Aligned batches of `tensors` on the device; uint8 images become model input there, batch by
        batch (None stays None)."""
        n = len(next(t for t in tensors if t is not None))
        step = self.batch or n
        for i in range(0, n, step):
            yield tuple(None if t is None else to_model_input(t[i:i + step].to(self.device)) if t.dtype == torch.uint8
                        else t[i:i + step].to(self.device) for t in tensors)

    def encode(self, x: torch.Tensor, source_affect: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of every image, float32."""
        with self.running():
            parts = [self.generator.encode(xb, sb) for xb, sb in self._chunks(x, source_affect)]
        return torch.cat([p[0] for p in parts]).float(), torch.cat([p[1] for p in parts]).float()

    def decode(self, z: torch.Tensor, affect: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """Images from latents and affects (one affect row is used for every latent); `source`: the images
        being edited, None for the decoder drawing alone."""
        affect = affect.expand(len(z), -1)
        with self.running():
            return torch.cat([self.generator.decode(zb, ab, sb).float() for zb, ab, sb in self._chunks(z, affect, source)])

    def transfer(self, x: torch.Tensor, source_affect: torch.Tensor, target_affect: torch.Tensor) -> torch.Tensor:
        """Every image with its target affect, decoded from the latent mean."""
        with self.running():
            return torch.cat([self.generator.transfer(xb, sb, tb).float()
                              for xb, sb, tb in self._chunks(x, source_affect, target_affect)])
