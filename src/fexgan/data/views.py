"""Random views of image batches, all differentiable and on any device: the paired shift and zoom of a
training pair (`augment`), a generator's typical flaws (`degrade`), and both together (`random_view`),
which the judge learns from and, with `d_augment`, the discriminator sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(images: torch.Tensor, shift: float, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation and zoom of a whole batch in one `grid_sample` (the paper's crop/jitter).

    Border pixels are replicated, so the (plain) background extends naturally. Works on any device.
    """
    if shift <= 0 and scale <= 0:
        return images
    b = images.shape[0]
    r = torch.rand(b, 3, generator=generator).to(images.device) * 2 - 1
    zoom = 1.0 + scale * r[:, 0]
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = (1.0 / zoom).to(images.dtype)
    theta[:, :, 2] = (2 * shift * r[:, 1:]).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_view(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """A random view of a batch (differentiable): a shift and zoom (`augment`), then `degrade`. The judge
    learns from such views of real images, so that it reads the expression rather than the image quality
    (its verdicts on generated images then vary far less from one training seed to another); with
    `d_augment` the discriminator sees every image, real or fake, so. Random numbers from `g` (CPU)."""
    return degrade(augment(x, shift=0.06, scale=0.05, generator=g), g)


def degrade(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """A generator's typical flaws, each on half of the batches: blur (down- and upsampling) and pixel
    noise."""
    if torch.rand((), generator=g) < 0.5:
        small = F.interpolate(x, scale_factor=0.4 + 0.5 * float(torch.rand((), generator=g)), mode="area")
        x = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    if torch.rand((), generator=g) < 0.5:
        x = x + 0.3 * float(torch.rand((), generator=g)) * torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return x
