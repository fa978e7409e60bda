"""The paper's Table 1: the trained discriminator's accuracy on real and on generated images.

- real, binary: fraction of real images the discriminator calls real (logit > 0);
- real, multi:  fraction whose expression it classifies correctly;
- fake, binary: fraction of generated images it calls fake (logit < 0);
- fake, multi:  fraction it classifies as the expression they were generated with (the target).
"""
from __future__ import annotations

import torch

from fexgan.data.images import to_model_input
from fexgan.metrics.generated import batched, device_of
from fexgan.nets.networks import Discriminator

# The paper's numbers (FERG-DB, 128 px, 100 epochs).
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "train": {"real_binary": 0.981, "real_multi": 1.0, "fake_binary": 0.998, "fake_multi": 0.994},
    "val": {"real_binary": 0.913, "real_multi": 0.997, "fake_binary": 1.0, "fake_multi": 0.995},
}
COLUMNS = ("real_binary", "real_multi", "fake_binary", "fake_multi")


def stat(value: float, n: int) -> dict:
    """A metric and the number of images it is based on: how every number is stored."""
    return {"value": round(float(value), 5), "n": int(n)}


def mean_stat(x: torch.Tensor) -> dict:
    """The mean of every element of `x` as a stat (NaN when empty), with their count."""
    return stat(x.float().mean() if x.numel() else float("nan"), x.numel())


@torch.no_grad()
def discriminator_outputs(D: Discriminator, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> (real/fake logits (N,), predicted expression (N,))."""
    device = device_of(D)

    def run(x: torch.Tensor) -> torch.Tensor:
        logit, class_logits = D(to_model_input(x.to(device)))
        return torch.cat([logit[:, None], class_logits], 1)

    D.eval()
    out = batched(run, images)
    return out[:, 0], out[:, 1:].argmax(1)


def table1_row(D: Discriminator, real: torch.Tensor, real_class: torch.Tensor, fake: torch.Tensor,
               fake_class: torch.Tensor) -> dict[str, dict]:
    """One row of Table 1 from uint8 real images (with their expressions) and generated images
    (with their target expressions)."""
    real_logit, real_pred = discriminator_outputs(D, real)
    fake_logit, fake_pred = discriminator_outputs(D, fake)
    return {"real_binary": stat((real_logit > 0).float().mean(), len(real)),
            "real_multi": stat((real_pred == real_class).float().mean(), len(real)),
            "fake_binary": stat((fake_logit < 0).float().mean(), len(fake)),
            "fake_multi": stat((fake_pred == fake_class).float().mean(), len(fake))}
