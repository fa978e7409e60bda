"""Ground truth on toon faces: the renderer draws the true target of any transfer.

A toon dataset image named "<char>/<expr>/<n>" was rendered from (character, expression,
`toon.variation_for(0, char, expr, n, jitter)`). Its true transfer to another affect (mixed ones included)
is the same character with the same variation and the target affect, composited by
`fexgan.data.images.prepare_image` exactly like the training images. Generated images are compared with it
by L1 (pixels in [-1, 1], as the training loss), PSNR and SSIM (pixels in [0, 1]), and by a sharpness
ratio that a blur cannot pass (its edges' energy over the truth's).
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from fexgan.data.images import prepare_image, to_model_input
from fexgan.data.sources import ImageSet, parse_source, toon_options
from fexgan.metrics.generated import batched

TOON_SEED = 0        # the seed the `toon` data source renders with
MAX_PSNR = 100.0     # identical images would be infinite dB


def has_ground_truth(data_spec: str) -> bool:
    return parse_source(data_spec)[0] == "toon"


def render_truth(data: ImageSet, data_spec: str, indices: torch.Tensor, affects: torch.Tensor,
                 background: tuple[int, int, int] = (255, 255, 255)) -> torch.Tensor:
    """uint8 (N, 3, S, S): images `indices` of the toon source `data_spec` re-rendered with the affects
    (N, classes)."""
    from fexgan.data import toon

    jitter = toon_options(parse_source(data_spec)[1])[2]
    size = int(data.images.shape[-1])
    characters = toon.make_characters(len(data.identities), seed=TOON_SEED)
    by_name = {c.name: (i, c) for i, c in enumerate(characters)}
    out = np.empty((len(indices), size, size, 3), dtype=np.uint8)
    for row, (i, affect) in enumerate(zip(indices.tolist(), affects.double().numpy())):
        char, expr, n = data.names[i].split("/")
        char_idx, character = by_name[char]
        variation = toon.variation_for(TOON_SEED, char_idx, data.classes.index(expr), int(n), jitter)
        out[row] = prepare_image(toon.render_face(character, affect, variation, size), size, background)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def gradient_energy(images01: torch.Tensor) -> torch.Tensor:
    """Per image: the mean magnitude of horizontal and vertical pixel differences (images in [0, 1]).
    A blur lowers it; line art and crisp edges raise it."""
    dx = (images01[..., :, 1:] - images01[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = (images01[..., 1:, :] - images01[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return (dx + dy) / 2


def compare(generated: torch.Tensor, truth: torch.Tensor, ssim: bool = True) -> dict[str, torch.Tensor]:
    """Per-image L1, PSNR (dB, at most MAX_PSNR), SSIM (the slowest; left out with `ssim=False`) and
    sharpness of uint8 images against their truth.

    Sharpness is the image's `gradient_energy` over the truth's: 1 for an image as crisp as the truth,
    well below 1 for a blur (which can still score a fair PSNR)."""
    def per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x, y = to_model_input(a), to_model_input(b)
        l1 = (x - y).abs().mean(dim=(1, 2, 3))
        x01, y01 = (x + 1) / 2, (y + 1) / 2
        psnr = peak_signal_noise_ratio(x01, y01, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(max=MAX_PSNR)
        sharpness = gradient_energy(x01) / gradient_energy(y01).clamp(min=1e-6)
        extra = [structural_similarity_index_measure(x01, y01, data_range=1.0, reduction="none")] if ssim else []
        return torch.stack([l1, psnr, sharpness, *extra], 1)

    m = batched(per_image, generated, truth)
    return {"l1": m[:, 0], "psnr": m[:, 1], **({"ssim": m[:, 3]} if ssim else {}), "sharpness": m[:, 2]}
