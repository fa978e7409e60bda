"""Training: the FExGAN solver, readable top to bottom.

A run folder holds everything needed to reproduce, watch or resume a run:
    config.json          the resolved TrainConfig
    data.json            dataset summary, the train/val split (image names) and skipped files
    log.jsonl            one line per logged step (also in tb/ for TensorBoard)
    samples/             fixed sources turned into every expression, every `sample_every` steps
    checkpoints/         step_XXXXXXX.safetensors (weights+config) + .state.pt (optimisers, RNG, data order)
    model.safetensors    the final model (a file that loads on its own)
    loss_curves.png
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from fexgan import checkpoint as ckpt
from fexgan import distributed as dist_
from fexgan.config import TrainConfig
from fexgan.data import ImageSet, PairSampler, augment, load_source, split_indices, to_model_input, to_pil
from fexgan.errors import UserError
from fexgan.losses import discriminator_loss, generator_loss
from fexgan.models import Discriminator, Generator
from fexgan.visuals import image_grid, plot_losses


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


@dataclass
class Nets:
    """The two networks and their optimisers."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def build_nets(cfg: TrainConfig, device: torch.device, ctx: dist_.Context | None = None) -> Nets:
    """Networks and Adam optimisers; under torchrun each network is wrapped in DDP (rank 0's
    initial weights are broadcast to all), optionally with synchronised batch norm."""
    G, D = Generator(cfg.model).to(device), Discriminator(cfg.model).to(device)
    if device.type == "cuda" and cfg.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas, **fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas, **fused)
    if ctx is not None and ctx.enabled:
        if cfg.sync_batchnorm:
            G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
        ids = [device.index] if device.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    return Nets(G, D, opt_g, opt_d)


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA when `cfg.amp` (tensor cores); a no-op context on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def train_step(nets: Nets, batch: dict[str, torch.Tensor], cfg: TrainConfig, alpha_binary: float,
               autocast: torch.autocast) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update (eqs. 1-7). Returns detached losses."""
    G, D = nets.G, nets.D
    with autocast:
        fake, mu, log_sigma = G(batch["source"], batch["source_affect"], batch["target_affect"])
        real_logit, real_cls = D(batch["source"])
        fake_logit, fake_cls = D(fake.detach())
        d_losses = discriminator_loss(real_logit, real_cls, batch["source_class"], fake_logit, fake_cls,
                                      batch["target_class"])
    nets.opt_d.zero_grad(set_to_none=True)
    d_losses["d_total"].backward()
    nets.opt_d.step()

    D.requires_grad_(False)  # the generator's pass through D needs no gradients for D's weights
    with autocast:  # ... and goes around D's DDP wrapper, so no gradient sync leaks into D
        fake_logit, fake_cls = ckpt.unwrap(D)(fake)
        g_losses = generator_loss(fake_logit, fake_cls, batch["target_class"], mu, log_sigma, fake.float(),
                                  batch["target"], cfg.alpha, alpha_binary, cfg.beta, cfg.gamma)
    nets.opt_g.zero_grad(set_to_none=True)
    g_losses["g_total"].backward()
    nets.opt_g.step()
    D.requires_grad_(True)
    return {k: v.detach().float() for k, v in {**d_losses, **g_losses}.items()}


def make_batch(data: ImageSet, images: torch.Tensor, src: torch.Tensor, target_class: torch.Tensor,
               target_idx: torch.Tensor, cfg: TrainConfig, generator: torch.Generator,
               device: torch.device) -> dict[str, torch.Tensor]:
    """Index the in-memory uint8 images, normalise, augment sources, build affect vectors."""
    n_cls = cfg.model.num_classes
    source_class = data.expression[src].to(device, non_blocking=True)
    target_class = target_class.to(device, non_blocking=True)
    source = to_model_input(images[src.to(images.device)].to(device, non_blocking=True))
    source = augment(source, cfg.augment_shift, cfg.augment_scale, generator)
    target = to_model_input(images[target_idx.to(images.device)].to(device, non_blocking=True))
    target_affect = F.one_hot(target_class, n_cls).float()
    if cfg.target_jitter > 0:  # the paper's A_t(lambda), lambda ~ N(0, 1), scaled
        target_affect = target_affect + cfg.target_jitter * torch.randn(
            target_affect.shape, generator=generator).to(device)
    if device.type == "cuda" and cfg.channels_last:
        source = source.contiguous(memory_format=torch.channels_last)
    return {"source": source, "target": target, "source_class": source_class, "target_class": target_class,
            "source_affect": F.one_hot(source_class, n_cls).float(), "target_affect": target_affect}


def sample_sources(data: ImageSet, indices: torch.Tensor, max_rows: int = 6) -> torch.Tensor:
    """Fixed sources for sample grids: one image per identity, neutral when there is one."""
    chosen = []
    neutral = data.classes.index("neutral") if "neutral" in data.classes else 0
    for ident in range(min(len(data.identities), max_rows)):
        mine = indices[data.identity[indices] == ident]
        if len(mine):
            pref = mine[data.expression[mine] == neutral]
            chosen.append(int((pref if len(pref) else mine)[0]))
    return torch.tensor(chosen)


@torch.no_grad()
def write_sample_grid(G: Generator, data: ImageSet, sources: torch.Tensor, device: torch.device, path: Path,
                      title: str) -> None:
    """Rows: fixed sources; columns: the source, then the decoder's output for every expression."""
    was_training = G.training
    G.eval()
    n_cls = len(data.classes)
    x = to_model_input(data.images[sources]).to(device)
    src_aff = F.one_hot(data.expression[sources], n_cls).float().to(device)
    mu, _ = G.encoder(x, src_aff)
    rows = [[img] for img in to_pil(x)]
    for c in range(n_cls):
        out = G.decoder(mu, F.one_hot(torch.full((len(sources),), c), n_cls).float().to(device))
        for row, img in zip(rows, to_pil(out)):
            row.append(img)
    labels = [data.identities[i] for i in data.identity[sources].tolist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, labels, ["input", *data.classes], title=title).save(path)
    G.train(was_training)


def latest_checkpoint(run: Path) -> Path | None:
    """Newest checkpoint whose weights and state both load; broken ones are skipped with a warning."""
    for weights in sorted((run / "checkpoints").glob("step_*.safetensors"), reverse=True):
        state = weights.with_suffix(".state.pt")
        try:
            ckpt.read_metadata(weights)
            if not state.is_file():
                raise UserError(f"{state.name} is missing")
            return weights
        except UserError as err:
            print(f"warning: skipping checkpoint {weights.name}: {err}")
    return None


def save_checkpoint(run: Path, nets: Nets, cfg: TrainConfig, step: int, state: dict) -> None:
    """Write weights + state for `step`, then prune to the newest `keep_checkpoints`."""
    folder = run / "checkpoints"
    name = f"step_{step:07d}"
    ckpt.save_state(folder / f"{name}.state.pt", {**state, "opt_g": nets.opt_g.state_dict(),
                                                   "opt_d": nets.opt_d.state_dict()})
    ckpt.save_model(folder / f"{name}.safetensors", nets.G, nets.D, cfg.model, {"step": step})
    old = sorted(folder.glob("step_*.safetensors"))[:-max(1, cfg.keep_checkpoints)]
    for weights in old:
        weights.unlink(missing_ok=True)
        weights.with_suffix(".state.pt").unlink(missing_ok=True)


def prepare_run(out: Path, cfg: TrainConfig, resume: bool) -> None:
    """Create the run folder, refusing to overwrite someone's finished or running run."""
    if resume:
        if not (out / "config.json").is_file():
            raise UserError(f"cannot resume: {out} is not a run folder (no config.json)")
        return
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train FExGAN into the run folder `out` and return the path of the final model file."""
    cfg.validate()
    out = Path(out)
    ctx = dist_.setup(pick_device(cfg.device))  # under torchrun: join the process group
    device, main = ctx.device, ctx.is_main
    if cfg.batch_size % ctx.world:
        raise UserError(f"batch size {cfg.batch_size} (global) must be divisible by the {ctx.world} processes")
    local_batch = cfg.batch_size // ctx.world
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if not main:  # rank 0 builds the data cache first, the others then read it
        dist_.barrier(ctx)
    data = load_source(cfg.data, cfg.model.image_size, cfg.model.background, cfg.model.classes)
    if len(data) < 2 * cfg.batch_size:
        raise UserError(f"the data has {len(data)} images; need at least {2 * cfg.batch_size} for batch size {cfg.batch_size}")
    train_idx, val_idx = split_indices(data, cfg.val_fraction, cfg.seed)
    if main:  # only rank 0 writes to the run folder
        prepare_run(out, cfg, resume)
        (out / "data.json").write_text(json.dumps({
            "source": cfg.data, **data.summary(), "skipped_files": data.skipped,
            "train": [data.names[i] for i in train_idx.tolist()], "val": [data.names[i] for i in val_idx.tolist()]}))
        if data.skipped:
            print(f"warning: skipped {len(data.skipped)} unreadable images (listed in {out / 'data.json'})")
        if ctx.enabled:
            print(f"distributed: {ctx.world} processes, global batch {cfg.batch_size} "
                  f"({local_batch} per process), learning rate {cfg.lr}")
        dist_.barrier(ctx)

    torch.manual_seed(cfg.seed)
    nets = build_nets(cfg, device, ctx)
    torch.manual_seed(cfg.seed + ctx.rank)  # each process draws its own latent noise and dropout
    sampler = PairSampler(data, train_idx, local_batch, seed=cfg.seed, shard=(ctx.rank, ctx.world))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1 + ctx.rank)
    # Keep the whole uint8 dataset on the GPU when it fits easily: no loader in the hot loop.
    images = data.images.to(device) if device.type == "cuda" and data.images.numel() < 4e9 else data.images
    if device.type == "cpu" and images.device.type == "cpu" and torch.cuda.is_available():
        images = images.pin_memory()
    autocast = autocast_for(cfg, device)

    step, elapsed_before = 0, 0.0
    if resume:
        last = latest_checkpoint(out)
        if last is not None:
            loaded = ckpt.load_model(last, device)
            ckpt.unwrap(nets.G).load_state_dict(loaded.generator.state_dict())
            ckpt.unwrap(nets.D).load_state_dict(loaded.discriminator.state_dict())
            state = ckpt.load_state(last.with_suffix(".state.pt"))
            nets.opt_g.load_state_dict(state["opt_g"])
            nets.opt_d.load_state_dict(state["opt_d"])
            sampler.load_state_dict(state["sampler"])
            aug_gen.set_state(state["aug_rng"][ctx.rank])
            torch.set_rng_state(state["torch_rng"][ctx.rank])
            step, elapsed_before = state["step"], state["elapsed"]
            if main:
                print(f"resuming {out} from step {step}")
    total_steps = cfg.steps if cfg.steps > 0 else (0 if cfg.minutes > 0 else cfg.epochs * sampler.steps_per_epoch)

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out / "tb")) if main else None
    log_file = open(out / "log.jsonl", "a") if main else None
    fixed = sample_sources(data, val_idx if len(val_idx) else train_idx)
    nets.G.train(), nets.D.train()
    start = time.time()
    window_start, window_images, window_steps = start, 0, 0
    sums: dict[str, torch.Tensor] = {}

    def capture() -> dict:
        """Resumable state; every process's RNG states are gathered (a collective: call on all ranks)."""
        return {"step": step, "elapsed": elapsed_before + time.time() - start, "sampler": sampler.state_dict(),
                "aug_rng": dist_.gather(ctx, aug_gen.get_state()), "torch_rng": dist_.gather(ctx, torch.get_rng_state())}

    def progress_fraction() -> float:
        """Share of the run done, by steps or by time; all processes agree on it (the max)."""
        by_time = (elapsed_before + time.time() - start) / (60 * cfg.minutes) if cfg.minutes > 0 else 0.0
        return dist_.agreed_max(ctx, max(step / total_steps if total_steps else 0.0, by_time))

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                   disable=not (progress and main), transient=False)
    task = bar.add_task("train", total=total_steps or None, completed=step, info="")
    try:
        with bar:
            while (done := progress_fraction()) < 1.0:
                late = done >= cfg.late_fraction
                src, target_class, target_idx = sampler.next_batch()
                batch = make_batch(data, images, src, target_class, target_idx, cfg, aug_gen, device)
                losses = train_step(nets, batch, cfg, cfg.alpha_late if late else cfg.alpha, autocast)
                if not dist_.all_true(ctx, bool(torch.isfinite(losses["d_total"] + losses["g_total"]))):
                    raise UserError(f"training diverged at step {step + 1} (non-finite loss); "
                                    f"lower the learning rate (lr=...) or resume from the last checkpoint")
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v
                step += 1
                window_images += len(src) * ctx.world
                window_steps += 1  # not step % log_every: a resumed run may start mid-window
                if step % cfg.log_every == 0 or progress_fraction() >= 1.0:
                    sums = dist_.all_mean(ctx, sums)
                    now = time.time()
                    record = {"step": step, "epoch": sampler.epoch, "time": round(elapsed_before + now - start, 2),
                              "images_per_s": round(window_images / max(now - window_start, 1e-9), 1),
                              "alpha_binary": cfg.alpha_late if late else cfg.alpha,
                              **{k: round(float(v) / window_steps, 5) for k, v in sums.items()}}
                    if main:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        for k, v in record.items():
                            if k not in ("step", "epoch"):
                                writer.add_scalar(k, v, step)
                    bar.update(task, info=f"D {record['d_total']:.3f} G {record['g_total']:.3f} "
                                          f"L1 {record['rec']:.3f} {record['images_per_s']:.0f} img/s")
                    sums, window_start, window_images, window_steps = {}, now, 0, 0
                bar.update(task, completed=step)
                if main and cfg.sample_every and step % cfg.sample_every == 0:
                    write_sample_grid(ckpt.unwrap(nets.G), data, fixed, device, out / "samples" / f"step_{step:07d}.png",
                                      f"step {step}")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    state = capture()
                    if main:
                        save_checkpoint(out, nets, cfg, step, state)
    except KeyboardInterrupt:
        if main and not ctx.enabled:  # under torchrun the peers are gone; the last checkpoint stands
            save_checkpoint(out, nets, cfg, step, capture())
            print(f"interrupted: checkpoint saved at step {step}; continue with --resume {out}")
        raise
    finally:
        if main:
            log_file.close()
            writer.close()

    state = capture()
    in_sync = dist_.replicas_identical(ctx, torch.nn.ModuleList([ckpt.unwrap(nets.G), ckpt.unwrap(nets.D)]))
    dist_.cleanup(ctx)
    if not main:
        return out / "model.safetensors"
    save_checkpoint(out, nets, cfg, step, state)
    write_sample_grid(ckpt.unwrap(nets.G), data, fixed, device, out / "samples" / "final.png", f"final (step {step})")
    summary = {"steps": step, "epochs": round(step / sampler.steps_per_epoch, 2), "data": cfg.data,
               "minutes": round((elapsed_before + time.time() - start) / 60, 2), "images": len(data),
               "identities": data.identities, "device": str(device), "processes": ctx.world,
               "global_batch": cfg.batch_size, "replicas_identical": in_sync}
    model_path = out / "model.safetensors"
    ckpt.save_model(model_path, nets.G, nets.D, cfg.model, summary)
    plot_losses(out / "log.jsonl", out / "loss_curves.png")
    return model_path
