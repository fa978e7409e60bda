"""Training: the FExGAN solver, readable top to bottom.

A run folder holds everything needed to reproduce, watch or resume a run:
    config.json          the resolved TrainConfig
    data.json            dataset summary, the train/val split (image names) and skipped files
    log.jsonl            one line per logged step (also in tb/ for TensorBoard)
    samples/             fixed sources turned into every expression, every `sample_every` steps
    checkpoints/         step_XXXXXXX.safetensors (weights+config) + .state.pt (optimisers, RNG, data order,
                         the raw generator weights when the model files hold their moving average);
                         best.safetensors: the checkpoint with the lowest validation L1 so far
    model.safetensors    the final model (a file that loads on its own)
    loss_curves.png

Faults (docs/reliability.md): checkpoints are checksummed and a broken one is skipped; SIGINT/SIGTERM
stop after the current step with a checkpoint; a NaN/inf loss or gradient is never applied: the run
rolls back to the last good checkpoint with a lower learning rate, and gives up after `max_rollbacks`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from fexgan import checkpoint as ckpt
from fexgan import distributed as dist_
from fexgan.config import TrainConfig
from fexgan.data import (ImageSet, PairSampler, augment, check_coverage, load_source, split_indices, to_model_input,
                         to_pil, to_uint8)
from fexgan.errors import UserError
from fexgan.losses import discriminator_loss, generator_loss
from fexgan.metrics.groundtruth import compare, has_ground_truth, render_truth
from fexgan.models import Discriminator, Generator
from fexgan.threads import ThreadTuner
from fexgan.visuals import image_grid, plot_losses


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else CPU; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"device '{name}' is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


@dataclass
class Nets:
    """The two networks, their optimisers and the moving average of the generator (when `ema_decay` > 0)."""

    G: Generator
    D: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    G_ema: Generator | None = None

    def __post_init__(self) -> None:
        # The tensors the moving average blends, paired once: building both state dicts on every step
        # costs as much as the blend itself. Loading weights copies into these tensors, so they stay valid.
        pairs = list(zip(self.G_ema.state_dict().values(), ckpt.unwrap(self.G).state_dict().values())
                     ) if self.G_ema is not None else []
        floats = [pair for pair in pairs if pair[0].is_floating_point()]
        self._ema_blend = ([e for e, _ in floats], [m for _, m in floats])
        self._ema_copy = [pair for pair in pairs if not pair[0].is_floating_point()]

    @property
    def G_out(self) -> Generator:
        """The generator that model files, samples and validation use: the moving average when there is one."""
        return self.G_ema if self.G_ema is not None else ckpt.unwrap(self.G)

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
    G, D = Generator(cfg.model).to(device), Discriminator(cfg.model).to(device)
    if cfg.channels_last:  # NHWC: tensor cores on CUDA, oneDNN's fastest layout on CPU (-6..10% CPU time)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas, **fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas, **fused)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    if ctx is not None and ctx.enabled:
        if cfg.sync_batchnorm:
            G, D = (torch.nn.SyncBatchNorm.convert_sync_batchnorm(m) for m in (G, D))
        ids = [device.index] if device.type == "cuda" else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if cfg.compile:  # opt-in: compiling takes about a minute or more (docs/speed.md)
        G, D = torch.compile(G), torch.compile(D)
    return Nets(G, D, opt_g, opt_d, G_ema)


def autocast_for(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA when `cfg.amp` (tensor cores); a no-op context on CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """The moving average's decay at `step`: short early on, so that the average is not stuck near the
    initial weights, then `cfg.ema_decay` (about the last 1/(1 - decay) steps count)."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


class Diverged(Exception):
    """A loss or gradient became NaN or inf; the update it would have made was not applied."""


def check_finite(loss: torch.Tensor, module: torch.nn.Module, what: str, ctx: dist_.Context | None) -> None:
    """Raise `Diverged` before an optimiser step whose loss or gradients are not finite (on any process)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    ok = bool(torch.isfinite(loss.detach().float() + torch.nn.utils.get_total_norm(grads)))
    if not dist_.all_true(ctx or dist_.Context(), ok):
        raise Diverged(f"{what} loss or gradient")


def train_step(nets: Nets, batch: dict[str, torch.Tensor], cfg: TrainConfig, alpha_binary: float,
               autocast: torch.autocast, ctx: dist_.Context | None = None, ema_decay: float = 0.0
               ) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update (eqs. 1-7) and its moving average (with
    `ema_decay`). Returns detached losses. A non-finite loss or gradient raises `Diverged` instead of
    being applied."""
    G, D = nets.G, nets.D
    with autocast:
        fake, mu, log_sigma = G(batch["source"], batch["source_affect"], batch["target_affect"])
        real_logit, real_cls = D(batch["source"])
        fake_logit, fake_cls = D(fake.detach())
        d_losses = discriminator_loss(real_logit, real_cls, batch["source_class"], fake_logit, fake_cls,
                                      batch["target_class"])
    nets.opt_d.zero_grad(set_to_none=True)
    d_losses["d_total"].backward()
    check_finite(d_losses["d_total"], D, "discriminator", ctx)
    nets.opt_d.step()

    D.requires_grad_(False)  # the generator's pass through D needs no gradients for D's weights
    try:
        with autocast:  # ... and goes around D's DDP wrapper, so no gradient sync leaks into D
            fake_logit, fake_cls = ckpt.unwrap(D)(fake)
            g_losses = generator_loss(fake_logit, fake_cls, batch["target_class"], mu, log_sigma, fake.float(),
                                      batch["target"], cfg.alpha, alpha_binary, cfg.beta, cfg.gamma)
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
    if cfg.augment_shift > 0 or cfg.augment_scale > 0:
        source, target = augment(torch.cat([source, target], 1), cfg.augment_shift, cfg.augment_scale,
                                 generator).split(3, dim=1)
    target_affect = F.one_hot(target_class, n_cls).float()
    if cfg.target_jitter > 0:  # the paper's A_t(lambda), lambda ~ N(0, 1), scaled
        target_affect = target_affect + cfg.target_jitter * torch.randn(
            target_affect.shape, generator=generator).to(device)
    if cfg.channels_last:
        source = source.contiguous(memory_format=torch.channels_last)
    target = target.contiguous()
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


@torch.no_grad()
def validation(G: Generator, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """The checkpoint metrics, on G(held-out source -> target expression) decoded from the mean latent in
    eval mode: `val_l1` against the real target image (what picks the best checkpoint) and, when the
    batch carries the renderer's truth (toon data), the PSNR / L1 of its expression changes against
    that truth beside the do-nothing copy of the source (`*_copy`). Uses no random numbers, so it
    never changes a run."""
    was_training = G.training
    G.eval()
    fake = G(batch["source"], batch["source_affect"], batch["target_affect"], sample=False)[0].float()
    G.train(was_training)
    metrics = {"val_l1": float(F.l1_loss(fake, batch["target"]))}
    change = batch["source_class"] != batch["target_class"]
    if "truth" in batch and bool(change.any()):
        truth = to_uint8(batch["truth"][change])
        for name, images in (("", fake[change]), ("_copy", batch["source"][change])):
            m = compare(to_uint8(images), truth)
            metrics.update({f"val_psnr{name}": float(m["psnr"].mean()), f"val_truth_l1{name}": float(m["l1"].mean())})
    return metrics


def validation_batch(data: ImageSet, indices: torch.Tensor, cfg: TrainConfig, device: torch.device,
                     size: int = 64) -> dict[str, torch.Tensor]:
    """A fixed batch of held-out pairs, unaugmented: the same at every checkpoint of every run with this
    seed; on toon data with the renderer's true transfers (`truth`)."""
    pairs = PairSampler(data, indices, min(size, len(indices)), seed=cfg.seed).next_batch()
    plain = dataclasses.replace(cfg, augment_shift=0.0, augment_scale=0.0, target_jitter=0.0)
    batch = make_batch(data, data.images, *pairs, plain, torch.Generator(), device)
    if has_ground_truth(cfg.data):
        src, target_class, _ = pairs
        truth = render_truth(data, cfg.data, src, F.one_hot(target_class, cfg.model.num_classes).float(),
                             cfg.model.background)
        batch["truth"] = to_model_input(truth).to(device)
    return batch


def latest_checkpoint(run: Path) -> Path | None:
    """Newest checkpoint whose weights and state both match their checksums; broken ones are skipped
    with a warning."""
    for weights in sorted((run / "checkpoints").glob("step_*.safetensors"), reverse=True):
        state = weights.with_suffix(".state.pt")
        try:
            ckpt.read_tensors(weights)
            if not state.is_file():
                raise UserError(f"{state.name} is missing")
            expected = ckpt.raw_metadata(weights).get("state_sha256")
            if expected is not None and ckpt.file_sha256(state) != expected:
                raise UserError(f"{state.name} does not match the sha256 recorded in {weights.name}")
            return weights
        except UserError as err:
            print(f"warning: skipping checkpoint {weights.name}: {err}")
    return None


def best_val_l1(folder: Path) -> float:
    """The validation L1 of checkpoints/best.safetensors (inf when there is none or it is unreadable)."""
    try:
        return float(ckpt.read_metadata(folder / "best.safetensors")[1].get("val_l1", math.inf))
    except UserError:
        return math.inf


def save_checkpoint(run: Path, nets: Nets, cfg: TrainConfig, step: int, state: dict,
                    val: dict[str, float] | None = None) -> None:
    """Write state, then weights for `step`: the weights, written last, carry the state's sha256, so a
    checkpoint counts only once both are complete. Then keep the newest `keep_checkpoints` (and
    best.safetensors: the lowest `val_l1` of `val`, the metrics of `validation`). A failed write (a full
    disk) removes its partial files and stops with a message naming the checkpoint that is still intact."""
    folder = run / "checkpoints"
    name = f"step_{step:07d}"
    val_l1 = val["val_l1"] if val else None
    summary = {"step": step, **({"val_l1": round(val_l1, 6), "validation": logged_validation(val)} if val else {})}
    try:
        raw_g = {"generator_train": ckpt.unwrap(nets.G).state_dict()} if nets.G_ema is not None else {}
        sha = ckpt.save_state(folder / f"{name}.state.pt", {**state, **raw_g, "opt_g": nets.opt_g.state_dict(),
                                                             "opt_d": nets.opt_d.state_dict()})
        ckpt.save_model(folder / f"{name}.safetensors", nets.G_out, nets.D, cfg.model, summary,
                        {"state_sha256": sha})
        if val_l1 is not None and val_l1 < best_val_l1(folder):
            ckpt.save_model(folder / "best.safetensors", nets.G_out, nets.D, cfg.model, summary)
    except OSError as err:
        (folder / f"{name}.safetensors").unlink(missing_ok=True)
        (folder / f"{name}.state.pt").unlink(missing_ok=True)
        intact = latest_checkpoint(run)
        raise UserError(f"could not write checkpoint {name} ({err.strerror or err}); "
                        f"{f'the previous checkpoint {intact.name} is intact' if intact else 'no earlier checkpoint exists'}"
                        f"; free some disk space and continue with --resume {run}") from None
    old = sorted(folder.glob("step_*.safetensors"))[:-cfg.keep_checkpoints]
    for weights in old:  # weights first: a half-pruned checkpoint is an orphan state file, never used
        weights.unlink(missing_ok=True)
        weights.with_suffix(".state.pt").unlink(missing_ok=True)
    # temporary files of writes a kill cut short, and state files whose weights never arrived
    orphans = [s for s in folder.glob("step_*.state.pt") if not (folder / s.name.replace(".state.pt", ".safetensors")).exists()]
    for junk in [*folder.glob(".*.tmp"), *orphans]:
        junk.unlink(missing_ok=True)


def logged_validation(val: dict[str, float]) -> dict[str, float]:
    """Validation metrics as log records and checkpoint summaries hold them."""
    return {k: round(v, 4) for k, v in val.items()}


def checkpoint_validation(weights: Path) -> dict[str, float]:
    """The validation a checkpoint was saved with, as the first log record after it carries it (so a
    resumed or rolled-back run logs what the uninterrupted run logs)."""
    summary = ckpt.read_metadata(weights)[1]
    return {"val_step": summary["step"], **summary["validation"]} if "validation" in summary else {}


def restore(weights: Path, nets: Nets, sampler: PairSampler, aug_gen: torch.Generator, cfg: TrainConfig,
            ctx: dist_.Context) -> dict:
    """Load a checkpoint into the networks, optimisers, data order and random generators; returns its state."""
    loaded = ckpt.load_model(weights, ctx.device)
    if loaded.config != cfg.model:
        differ = [f"{k} {v} (run: {getattr(cfg.model, k)})" for k, v in loaded.config.to_dict().items()
                  if v != cfg.model.to_dict()[k]]
        raise UserError(f"{weights} holds a different model than this run is configured for: {', '.join(differ)}; "
                        f"resume without changing model.* settings")
    ckpt.unwrap(nets.D).load_state_dict(loaded.discriminator.state_dict())
    state = ckpt.load_state(weights.with_suffix(".state.pt"), ckpt.raw_metadata(weights).get("state_sha256"))
    if nets.G_ema is not None:  # the file holds the moving average; the state, the weights being trained
        if "generator_train" not in state:
            raise UserError(f"{weights} was saved without a moving average of the generator; resume it with "
                            f"--set ema_decay=0")
        nets.G_ema.load_state_dict(loaded.generator.state_dict())
        ckpt.unwrap(nets.G).load_state_dict(state["generator_train"])
    else:
        ckpt.unwrap(nets.G).load_state_dict(loaded.generator.state_dict())
    nets.opt_g.load_state_dict(state["opt_g"])
    nets.opt_d.load_state_dict(state["opt_d"])
    sampler.load_state_dict(state["sampler"])
    aug_gen.set_state(state["aug_rng"][ctx.rank])
    torch.set_rng_state(state["torch_rng"][ctx.rank])
    return state


def set_lr(nets: Nets, lr: float) -> None:
    for opt in (nets.opt_g, nets.opt_d):
        for group in opt.param_groups:
            group["lr"] = lr


def trim_log(path: Path, step: int) -> None:
    """Drop log records after `step` (and a line a crash cut short), so a resumed or rolled-back run
    logs every step once."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    ckpt.atomic_write(path, lambda tmp: tmp.write_text("".join(keep)))


class StopRequest:
    """While training in one process: the first SIGINT (Ctrl-C) or SIGTERM asks the loop to stop after
    the current step and save a checkpoint; a second one stops at once (the last checkpoint stands)."""

    def __init__(self, enabled: bool):
        self.signal: str | None = None
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict = {}

    def handle(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if self.enabled:
            self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def prepare_run(out: Path, cfg: TrainConfig, resume: bool) -> None:
    """Create the run folder, refusing to overwrite someone's finished or running run."""
    if resume:
        if not (out / "config.json").is_file():
            raise UserError(f"cannot resume: {out} is not a run folder (no config.json)")
        return
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write(out / "config.json", lambda tmp: tmp.write_text(json.dumps(cfg.to_dict(), indent=2)))
    except OSError as err:
        raise UserError(f"cannot create the run folder {out} ({err.strerror or err})") from None


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
    check_coverage(data, cfg.min_images_per_class)
    train_idx, val_idx = split_indices(data, cfg.val_fraction, cfg.seed)
    if main:  # only rank 0 writes to the run folder
        prepare_run(out, cfg, resume)
        report = json.dumps({"source": cfg.data, **data.summary(), "skipped_files": data.skipped,
                             "train": [data.names[i] for i in train_idx.tolist()],
                             "val": [data.names[i] for i in val_idx.tolist()]})
        ckpt.atomic_write(out / "data.json", lambda tmp: tmp.write_text(report))
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
    # threads=0 on CPU: time real steps with 1, 2, ... cores and keep the fastest (a shared machine can
    # make one thread several times faster than all); under torchrun the launcher splits the cores
    tuner = ThreadTuner(torch.get_num_threads(), enabled=device.type == "cpu" and cfg.threads == 0 and not ctx.enabled)

    step, elapsed_before, lr_scale = 0, 0.0, 1.0  # lr_scale: what rollbacks have done to the learning rate
    new_val: dict[str, float] = {}  # the latest checkpoint's validation, for the next log record
    if resume:
        last = latest_checkpoint(out)
        if last is not None:
            state = restore(last, nets, sampler, aug_gen, cfg, ctx)
            new_val = checkpoint_validation(last)
            step, elapsed_before, lr_scale = state["step"], state["elapsed"], state.get("lr_scale", 1.0)
            set_lr(nets, cfg.lr * lr_scale)
            if main:
                print(f"resuming {out} from step {step}"
                      + (f" (learning rate {cfg.lr * lr_scale:g} after rollbacks)" if lr_scale < 1 else ""))
    total_steps = cfg.steps if cfg.steps > 0 else (0 if cfg.minutes > 0 else cfg.epochs * sampler.steps_per_epoch)

    from torch.utils.tensorboard import SummaryWriter

    def open_logs() -> tuple:
        """log.jsonl and TensorBoard, both cut back to `step` (a resumed or rolled-back run logs each step once)."""
        trim_log(out / "log.jsonl", step)
        return open(out / "log.jsonl", "a"), SummaryWriter(str(out / "tb"), purge_step=step + 1)

    log_file, writer = open_logs() if main else (None, None)
    held_out = val_idx if len(val_idx) else train_idx
    fixed = sample_sources(data, held_out)
    val_batch = validation_batch(data, held_out, cfg, device) if main else None
    nets.G.train(), nets.D.train()
    start = time.time()
    window_start, window_images, window_steps = start, 0, 0
    sums: dict[str, torch.Tensor] = {}
    saved_step, rollbacks, injected, psnr_info = step, 0, False, ""

    def capture() -> dict:
        """Resumable state; every process's RNG states are gathered (a collective: call on all ranks)."""
        return {"step": step, "elapsed": elapsed_before + time.time() - start, "sampler": sampler.state_dict(),
                "aug_rng": dist_.gather(ctx, aug_gen.get_state()), "torch_rng": dist_.gather(ctx, torch.get_rng_state()),
                "lr_scale": lr_scale}

    def checkpoint() -> None:
        """Save a checkpoint at `step` with its validation metrics (a collective: call on all ranks)."""
        nonlocal saved_step, rollbacks
        state = capture()
        if main:
            val = validation(nets.G_out, val_batch)
            save_checkpoint(out, nets, cfg, step, state, val)
            new_val.update({"val_step": step, **logged_validation(val)})
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, step)
        saved_step, rollbacks = step, 0

    if step == 0:  # a fresh run: the state to roll back to before the first periodic checkpoint
        checkpoint()

    def progress_fraction() -> float:
        """Share of the run done, by steps or by time; all processes agree on it (the max)."""
        by_time = (elapsed_before + time.time() - start) / (60 * cfg.minutes) if cfg.minutes > 0 else 0.0
        return dist_.agreed_max(ctx, max(step / total_steps if total_steps else 0.0, by_time))

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    def steps_text() -> str:
        return f"{step}/{total_steps} steps" if total_steps else f"{step} steps of {cfg.minutes:g} min"

    # The bar runs on the share of the run done, so it fills (and estimates the time left) alike for
    # --steps, --epochs and --minutes.
    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[steps]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                   disable=not (progress and main), transient=False)
    done = progress_fraction()
    task = bar.add_task("train", total=1.0, completed=done, steps=steps_text(), info="")
    try:
        with bar, StopRequest(enabled=not ctx.enabled) as stop:
            while done < 1.0:
                late = done >= cfg.late_fraction
                src, target_class, target_idx = sampler.next_batch()
                batch = make_batch(data, images, src, target_class, target_idx, cfg, aug_gen, device)
                if step + 1 == cfg.inject_nan_at and not injected:  # testing aid for the divergence guard
                    batch["source"][0, 0, 0, 0], injected = math.nan, True
                try:
                    losses = tuner(train_step, nets, batch, cfg, cfg.alpha_late if late else cfg.alpha, autocast, ctx,
                                   ema_decay_at(cfg, step))
                except Diverged as err:  # nothing was applied; go back to the last good checkpoint
                    rollbacks += 1
                    last = latest_checkpoint(out)
                    if last is None or rollbacks > cfg.max_rollbacks:
                        raise UserError(
                            f"training diverged at step {step + 1} (non-finite {err}) after {rollbacks - 1} "
                            f"rollback(s) with a lower learning rate; no model was written. "
                            + (f"The last good checkpoint is {last.name}; continue from it with a learning rate "
                               f"below {cfg.lr * lr_scale:g}: --resume {out} --set lr=..." if last else
                               "No good checkpoint is left; start again with a lower learning rate (--set lr=...)")
                        ) from None
                    diverged_at, lr_scale = step + 1, lr_scale * cfg.rollback_lr_factor
                    step = saved_step = restore(last, nets, sampler, aug_gen, cfg, ctx)["step"]
                    new_val.clear()
                    new_val.update(checkpoint_validation(last))
                    set_lr(nets, cfg.lr * lr_scale)
                    if main:
                        print(f"warning: non-finite {err} at step {diverged_at}: rolled back to {last.name} with "
                              f"learning rate {cfg.lr * lr_scale:g} (rollback {rollbacks} of {cfg.max_rollbacks})")
                        log_file.close(), writer.close()
                        log_file, writer = open_logs()
                    sums, window_start, window_images, window_steps = {}, time.time(), 0, 0
                    done = progress_fraction()
                    bar.update(task, completed=done, steps=steps_text())
                    continue
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v
                step += 1
                window_images += len(src) * ctx.world
                window_steps += 1  # not step % log_every: a resumed run may start mid-window
                done = progress_fraction()  # once per step: under torchrun it is a collective
                if step % cfg.log_every == 0 or done >= 1.0:
                    sums = dist_.all_mean(ctx, sums)
                    now = time.time()
                    record = {"step": step, "epoch": sampler.epoch, "time": round(elapsed_before + now - start, 2),
                              "images_per_s": round(window_images / max(now - window_start, 1e-9), 1),
                              "alpha_binary": cfg.alpha_late if late else cfg.alpha,
                              **{k: round(float(v) / window_steps, 5) for k, v in sums.items()}, **new_val}
                    new_val.clear()
                    if main:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        for k, v in record.items():
                            if k not in ("step", "epoch") and not k.startswith("val"):
                                writer.add_scalar(k, v, step)
                    if "val_psnr" in record:
                        psnr_info = f" | val PSNR {record['val_psnr']:.1f} dB (copy {record['val_psnr_copy']:.1f})"
                    bar.update(task, info=f"D {record['d_total']:.3f} G {record['g_total']:.3f} "
                                          f"L1 {record['rec']:.3f} {record['images_per_s']:.0f} img/s{psnr_info}")
                    sums, window_start, window_images, window_steps = {}, now, 0, 0
                bar.update(task, completed=done, steps=steps_text())
                if main and cfg.sample_every and step % cfg.sample_every == 0:
                    write_sample_grid(nets.G_out, data, fixed, device, out / "samples" / f"step_{step:07d}.png",
                                      f"step {step}")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    checkpoint()
                if stop.signal:  # SIGINT/SIGTERM: stop between steps, where the state is whole
                    if step != saved_step:
                        checkpoint()
                    print(f"interrupted ({stop.signal}): checkpoint saved at step {step}; continue with --resume {out}")
                    raise KeyboardInterrupt
    finally:
        if main:
            log_file.close()
            writer.close()

    state = capture()
    in_sync = dist_.replicas_identical(ctx, torch.nn.ModuleList([ckpt.unwrap(nets.G), ckpt.unwrap(nets.D)]))
    dist_.cleanup(ctx)
    if not main:
        return out / "model.safetensors"
    val = validation(nets.G_out, val_batch)
    if step != saved_step:
        save_checkpoint(out, nets, cfg, step, state, val)
    write_sample_grid(nets.G_out, data, fixed, device, out / "samples" / "final.png", f"final (step {step})")
    summary = {"steps": step, "epochs": round(step / sampler.steps_per_epoch, 2), "data": cfg.data,
               "minutes": round((elapsed_before + time.time() - start) / 60, 2), "images": len(data),
               "identities": data.identities, "device": str(device), "processes": ctx.world,
               "global_batch": cfg.batch_size, "replicas_identical": in_sync,
               **{k: round(v, 6 if k == "val_l1" else 4) for k, v in val.items()}}
    model_path = out / "model.safetensors"
    try:
        ckpt.save_model(model_path, nets.G_out, nets.D, cfg.model, summary)
    except OSError as err:
        raise UserError(f"could not write {model_path} ({err.strerror or err}); the checkpoint of step {step} is "
                        f"intact: free some disk space and run --resume {out} again") from None
    plot_losses(out / "log.jsonl", out / "loss_curves.png")
    return model_path
