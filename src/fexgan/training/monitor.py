"""What a run shows of itself while it trains: sample grids of fixed sources in every expression, and
the validation metrics saved with every checkpoint (ground truth against the renderer on toon data)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from fexgan.config import TrainConfig
from fexgan.data.images import to_model_input, to_pil, to_uint8
from fexgan.data.pairs import PairSampler, one_per_identity
from fexgan.data.sources import ImageSet
from fexgan.files.checkpoint import LoadedModel
from fexgan.generation.driver import Driver
from fexgan.grids import image_grid
from fexgan.metrics.groundtruth import compare, has_ground_truth, render_truth
from fexgan.metrics.judge import Judge
from fexgan.nets.networks import Generator
from fexgan.training.step import make_batch


def sample_sources(data: ImageSet, indices: torch.Tensor, max_rows: int = 6) -> torch.Tensor:
    """Fixed sources for sample grids: one image per identity, neutral when there is one."""
    return indices[one_per_identity(data, indices, max_rows)]


def write_sample_grid(G: Generator, data: ImageSet, sources: torch.Tensor, device: torch.device, path: Path,
                      title: str) -> None:
    """Rows: fixed sources; columns: the source, then the decoder's output for every expression."""
    driver, n_cls = Driver(G, device, batch=None), len(data.classes)
    x = to_model_input(data.images[sources]).to(device)
    mu, _ = driver.encode(x, F.one_hot(data.expression[sources], n_cls).float())
    rows = [[img] for img in to_pil(x)]
    for c in range(n_cls):
        out = driver.decode(mu, F.one_hot(torch.full((len(sources),), c), n_cls).float(), x)
        for row, img in zip(rows, to_pil(out)):
            row.append(img)
    labels = [data.identities[i] for i in data.identity[sources].tolist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, labels, ["input", *data.classes], title=title).save(path)


@torch.no_grad()
def validation(G: Generator, batch: dict[str, torch.Tensor], judge: Judge | None = None) -> dict[str, float]:
    """The checkpoint metrics, on G(held-out source -> target expression) decoded from the mean latent in
    eval mode: `val_l1` against the real target image (what picks the best checkpoint) and, when the
    batch carries the renderer's truth (toon data), the PSNR / L1 of its expression changes against
    that truth beside the do-nothing copy of the source (`*_copy`); with a `judge`, the share of those
    changes it reads as their target (`val_judge`). Uses no random numbers, so it never changes a run."""
    fake = Driver(G, batch=None).transfer(batch["source"], batch["source_affect"], batch["target_affect"])
    metrics = {"val_l1": float(F.l1_loss(fake, batch["target"]))}
    change = batch["source_class"] != batch["target_class"]
    if judge is not None and bool(change.any()):
        read = judge.predict(fake[change].cpu())[0].argmax(1)
        metrics["val_judge"] = float((read == batch["target_class"][change].cpu()).float().mean())
    if "truth" in batch and bool(change.any()):
        truth = to_uint8(batch["truth"][change])
        for name, images in (("", fake[change]), ("_copy", batch["source"][change])):
            m = compare(to_uint8(images), truth)
            metrics.update({f"val_psnr{name}": float(m["psnr"].mean()), f"val_truth_l1{name}": float(m["l1"].mean())})
    return metrics


def far_threshold(G: Generator, cfg: TrainConfig, data: ImageSet, indices: torch.Tensor, device: torch.device,
                  n: int = 1000) -> float:
    """The `FExGAN.distance_tensor` that 99 % of the first `n` of `indices` (validation images: characters
    the model knows) stay below, for the model's summary (`far`): above it, the web demo says a face is
    far from the characters the model knows (the paper's design: `FExGAN.familiarity_tensor`)."""
    from fexgan.generation.inference import FExGAN

    model = FExGAN(LoadedModel(G, None, cfg.model, {}), device, precision="fp32")
    idx = indices[:n]
    source = F.one_hot(data.expression[idx], cfg.model.num_classes).float()
    distance = model.distance_tensor(to_model_input(data.images[idx]), source)
    return round(float(torch.quantile(distance, 0.99)), 3)


def validation_batch(data: ImageSet, indices: torch.Tensor, cfg: TrainConfig, device: torch.device,
                     size: int = 64) -> dict[str, torch.Tensor]:
    """A fixed batch of held-out pairs, unaugmented: the same at every checkpoint of every run with this
    seed; on toon data with the renderer's true transfers (`truth`)."""
    pairs = PairSampler(data, indices, min(size, len(indices)), seed=cfg.run.seed).next_batch()
    plain = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment_shift=0.0, augment_scale=0.0,
                                                              target_jitter=0.0))
    batch = make_batch(data, data.images, *pairs, plain, torch.Generator(), device)
    if has_ground_truth(cfg.data.source):
        src, target_class, _ = pairs
        truth = render_truth(data, cfg.data.source, src, F.one_hot(target_class, cfg.model.num_classes).float(),
                             cfg.model.background)
        batch["truth"] = to_model_input(truth).to(device)
    return batch


def reaches(metrics: dict[str, float], target: dict[str, float]) -> bool:
    """Whether a checkpoint's `validation` metrics meet the quality target (`fexgan.config.parse_target`)."""
    gain = metrics.get("val_psnr", float("-inf")) - metrics.get("val_psnr_copy", float("inf"))
    return gain >= target.get("gain", float("-inf")) and metrics.get("val_judge", 0.0) >= target.get("judge", 0.0)
