"""Realism and diversity in the judge's feature space.

- FID: torchmetrics' FrechetInceptionDistance with the judge as its feature extractor (Inception
  knows nothing of cartoon faces; the judge does). Lower is better; 0 for identical sets. Its value
  depends on the number of images, so compare runs at the same n (evaluate fixes n and seed).
- Diversity: mean pairwise Euclidean distance between the features of images of the same
  expression, averaged over expressions; compare with the same number on real images.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from fexgan.metrics.generated import BATCH
from fexgan.metrics.judge import Judge


class JudgeFeatures(nn.Module):
    """The judge's penultimate layer as a torchmetrics feature extractor (uint8 or [-1, 1] input)."""

    def __init__(self, judge: Judge):
        super().__init__()
        self.judge = judge
        self.num_features = judge.net.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.judge.features(images)


def frechet_distance(judge: Judge, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two sets of images (uint8 (N, 3, S, S), at least 2 each) in judge features."""
    fid = FrechetInceptionDistance(feature=JudgeFeatures(judge), reset_real_features=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), BATCH):
            fid.update(images[i:i + BATCH], real=is_real)
    return max(0.0, float(fid.compute()))


def diversity(judge: Judge, images: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean pairwise feature distance within each expression, averaged over expressions that have
    at least two images."""
    feats = judge.features(images).double()
    means = []
    for c in torch.unique(classes).tolist():
        f = feats[classes == c]
        if len(f) >= 2:
            means.append(torch.pdist(f).mean())
    return float(torch.stack(means).mean()) if means else float("nan")
