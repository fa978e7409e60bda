"""Training: the FExGAN loop, readable top to bottom.

`train()` sets a run up (`Trainer.__init__`), then repeats `step` (one batch through `solver.train_step`),
`log`, `samples` and `checkpoint` until the run's length is done, and `finish`es with the model file.
A diverging step is never applied: `rollback` returns to the last good checkpoint with a lower
learning rate, and gives up after `max_rollbacks` (docs/reliability.md). SIGINT/SIGTERM stop after the
current step with a checkpoint. The run folder's layout and checkpoint files: `fexgan.training.runs`.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import types
from pathlib import Path

import torch

from fexgan.config import TrainConfig, parse_target
from fexgan.data.pairs import PairSampler, held_out_identities, split_indices
from fexgan.data.replay import replay_mix
from fexgan.data.sources import check_coverage, load_source
from fexgan.devices import pick_device
from fexgan.errors import UserError, warn
from fexgan.files import checkpoint as ckpt
from fexgan.grids import plot_losses
from fexgan.metrics.groundtruth import has_ground_truth
from fexgan.metrics.judge import Judge, get_judge
from fexgan.nets.designs import design_of
from fexgan.training import distributed as dist_
from fexgan.training import runs
from fexgan.training.monitor import (
    far_threshold,
    reaches,
    sample_sources,
    validation,
    validation_batch,
    write_sample_grid,
)
from fexgan.training.step import (
    Diverged,
    autocast_for,
    build_nets,
    ema_decay_at,
    load_weights,
    make_batch,
    precision,
    set_lr,
    train_step,
)
from fexgan.training.threads import ThreadTuner


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

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One run: its data, networks and counters, and the named steps of the loop."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool):
        cfg.validate()
        design_of(cfg.model.generator)  # a design this fexgan does not know fails before any work
        if "gain" in parse_target(cfg.run.until) and not has_ground_truth(cfg.data.source):
            raise UserError(f"the quality target's gain is measured against the renderer's truth, which "
                            f"{cfg.data.source} does not have; use judge=... alone, or toon data")
        self.cfg, self.out = cfg, out
        self.ctx = ctx = dist_.setup(pick_device(cfg.run.device))  # under torchrun: join the process group
        self.device, self.main = ctx.device, ctx.is_main
        if cfg.optimiser.batch_size % ctx.world:
            raise UserError(f"batch size {cfg.optimiser.batch_size} (global) must be divisible by the {ctx.world} processes")
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.load_data(resume)

        torch.manual_seed(cfg.run.seed)
        self.nets = build_nets(cfg, self.device, ctx)
        torch.manual_seed(cfg.run.seed + ctx.rank)  # each process draws its own latent noise and dropout
        self.sampler = PairSampler(self.data, self.train_idx, cfg.optimiser.batch_size // ctx.world, seed=cfg.run.seed,
                                   shard=(ctx.rank, ctx.world))
        self.aug_gen = torch.Generator().manual_seed(cfg.run.seed + 1 + ctx.rank)
        # Keep the whole uint8 dataset on the GPU when it fits easily: no loader in the hot loop.
        images = self.data.images
        self.images = images.to(self.device) if self.device.type == "cuda" and images.numel() < 4e9 else images
        if self.device.type == "cpu" and torch.cuda.is_available():
            self.images = self.images.pin_memory()
        self.autocast, self.precision = autocast_for(cfg, self.device), precision(cfg, self.device)
        if self.main:
            print(f"precision: {self.precision}")
        # threads=0 on CPU: time real steps with 1, 2, ... cores and keep the fastest (a shared machine can
        # make one thread several times faster than all); under torchrun the launcher splits the cores
        self.tuner = ThreadTuner(torch.get_num_threads(),
                                 enabled=self.device.type == "cpu" and cfg.run.threads == 0 and not ctx.enabled)

        self.step, self.elapsed_before, self.lr_scale = 0, 0.0, 1.0  # lr_scale: what rollbacks did to the lr
        self.new_val: dict[str, float] = {}  # the latest checkpoint's validation, for the next log record
        last = runs.latest_checkpoint(out) if resume else None
        if last is not None:
            self.resume_from(last)
        elif cfg.finetune.init_from:
            self.start_from(cfg.finetune.init_from)
        length = cfg.run
        self.total_steps = length.steps if length.steps > 0 else (
            0 if length.minutes > 0 else length.epochs * self.sampler.steps_per_epoch)
        self.log_file, self.writer = self.open_logs() if self.main else (None, None)
        held_out = self.val_idx if len(self.val_idx) else self.train_idx
        self.fixed = sample_sources(self.data, held_out)
        self.val_batch = validation_batch(self.data, held_out, cfg, self.device) if self.main else None
        self.target, self.reached, self.end = parse_target(cfg.run.until), False, ""
        self.judge = self.quality_judge()
        self.start = time.time()
        self.sums: dict[str, torch.Tensor] = {}  # the log window's losses, summed, and the steps each came on
        self.counts: dict[str, int] = {}
        self.window_start, self.window_images = self.start, 0
        self.saved_step, self.rollbacks, self.val_info = self.step, 0, ""
        if self.step == 0:  # a fresh run: the state to roll back to before the first periodic checkpoint
            self.checkpoint()

    # ------------------------------------------------------------------------- set-up
    def load_data(self, resume: bool) -> None:
        """Read the data (rank 0 builds the cache, the others then read it), split it, prepare the folder."""
        cfg, ctx = self.cfg, self.ctx
        if not self.main:
            dist_.barrier(ctx)
        self.new_images = None  # a fine-tune's new images: the discriminator does not learn from them (d_weight)
        if cfg.finetune.replay:  # a fine-tune: the new character's images and a replay of the base model's data
            self.data, self.train_idx, self.val_idx, self.new_images = replay_mix(cfg)
        else:
            self.data = load_source(cfg.data.source, cfg.model.image_size, cfg.model.background, cfg.model.classes)
            check_coverage(self.data, cfg.data.min_images_per_class)
            self.train_idx, self.val_idx = split_indices(self.data, cfg.data.val_fraction, cfg.run.seed, cfg.data.held_out)
        if len(self.train_idx) < 2 * cfg.optimiser.batch_size:
            raise UserError(f"the data has {len(self.train_idx)} images to train on; need at least "
                            f"{2 * cfg.optimiser.batch_size} for batch size {cfg.optimiser.batch_size}")
        if self.main:  # only rank 0 writes to the run folder
            runs.prepare_run(self.out, cfg, resume)
            runs.write_data_report(self.out, cfg, self.data, self.train_idx, self.val_idx)
            if ctx.enabled:
                print(f"distributed: {ctx.world} processes, global batch {cfg.optimiser.batch_size} "
                      f"({cfg.optimiser.batch_size // ctx.world} per process), learning rate {cfg.optimiser.lr}")
            dist_.barrier(ctx)

    def resume_from(self, last: Path) -> None:
        """Continue from a checkpoint: weights, optimisers, data order, random state, counters."""
        state = runs.restore(last, self.nets, self.sampler, self.aug_gen, self.cfg, self.ctx)
        self.new_val = runs.checkpoint_validation(last)
        self.step, self.elapsed_before, self.lr_scale = state["step"], state["elapsed"], state.get("lr_scale", 1.0)
        set_lr(self.nets, self.cfg.optimiser.lr * self.lr_scale)
        if self.main:
            print(f"resuming {self.out} from step {self.step}"
                  + (f" (learning rate {self.cfg.optimiser.lr * self.lr_scale:g} after rollbacks)" if self.lr_scale < 1 else ""))

    def start_from(self, model: str) -> None:
        """Start from a model file's weights (`init_from`); optimisers, data order and random state are fresh."""
        path = ckpt.resolve_model(model)
        loaded = ckpt.load_model(path, self.device)
        if loaded.config != self.cfg.model:
            differ = [f"model.{k}={v} (run: {getattr(self.cfg.model, k)})" for k, v in loaded.config.to_dict().items()
                      if v != self.cfg.model.to_dict()[k]]
            raise UserError(f"init_from {path} holds another model than this run's: {', '.join(differ)}; "
                            f"set those model.* settings to the file's")
        if loaded.discriminator is None:
            raise UserError(f"init_from {path} has no discriminator to train on; start from a full model file")
        load_weights(self.nets, loaded)
        if self.main:
            print(f"starting from the weights of {path}")

    def open_logs(self) -> tuple:
        """log.jsonl and TensorBoard, both cut back to `step` (a resumed or rolled-back run logs each step once).
        TensorBoard writes its event files with its own stub of TensorFlow's file API: where TensorFlow is installed
        (the `keras` extra) it would import it instead, for 6 s, half a GB and a screen of TensorFlow's messages."""
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
        from torch.utils.tensorboard import SummaryWriter

        runs.trim_log(self.out / "log.jsonl", self.step)
        return open(self.out / "log.jsonl", "a"), SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1)

    def quality_judge(self) -> Judge | None:
        """The judge a quality target's `judge` asks for (trained once per dataset and size, then cached),
        on the main process."""
        cfg = self.cfg
        if "judge" not in self.target or not self.main:
            return None
        return get_judge(cfg.data.source, cfg.model.image_size, data=self.data, background=cfg.model.background,
                         classes=cfg.model.classes)

    # ------------------------------------------------------------------------- the loop's steps
    def progress_fraction(self) -> float:
        """Share of the run done, by steps or by time; all processes agree on it (the max)."""
        cfg = self.cfg
        by_time = (self.elapsed_before + time.time() - self.start) / (60 * cfg.run.minutes) if cfg.run.minutes > 0 else 0.0
        return dist_.agreed_max(self.ctx, max(self.step / self.total_steps if self.total_steps else 0.0, by_time))

    def one_step(self, late: bool) -> None:
        """One batch: a discriminator and a generator update (raises `Diverged`, having applied nothing)."""
        cfg = self.cfg
        src, target_class, target_idx = self.sampler.next_batch()
        batch = make_batch(self.data, self.images, src, target_class, target_idx, cfg, self.aug_gen, self.device)
        if self.new_images is not None:
            batch["d_weight"] = (~self.new_images[src]).float().to(self.device)
        losses = self.tuner(train_step, self.nets, batch, cfg, cfg.losses.alpha_late if late else cfg.losses.alpha, self.autocast,
                            self.ctx, ema_decay_at(cfg, self.step), self.step)
        for k, v in losses.items():  # a design's terms come on some steps only (`alone_every`): counted apart
            self.sums[k] = self.sums.get(k, 0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.step += 1
        self.window_images += len(src) * self.ctx.world

    def log(self, late: bool) -> str:
        """Average the window's losses over steps (and processes), write a log record; returns the bar's text."""
        cfg, now = self.cfg, time.time()
        sums = dist_.all_mean(self.ctx, self.sums)
        record = {"step": self.step, "epoch": self.sampler.epoch, "time": round(self.elapsed_before + now - self.start, 2),
                  "images_per_s": round(self.window_images / max(now - self.window_start, 1e-9), 1),
                  "alpha_binary": cfg.losses.alpha_late if late else cfg.losses.alpha,
                  **{k: round(float(v) / self.counts[k], 5) for k, v in sums.items()}, **self.new_val}
        self.new_val.clear()
        if self.main:
            self.log_file.write(json.dumps(record) + "\n")
            self.log_file.flush()
            for k, v in record.items():
                if k not in ("step", "epoch") and not k.startswith("val"):
                    self.writer.add_scalar(k, v, self.step)
        if "val_psnr" in record:
            self.val_info = f" | val PSNR {record['val_psnr']:.1f} dB (copy {record['val_psnr_copy']:.1f})"
        if "val_judge" in record:
            self.val_info += f" judge {record['val_judge']:.2f}"
        self.sums, self.counts, self.window_start, self.window_images = {}, {}, now, 0
        return (f"D {record['d_total']:.3f} G {record['g_total']:.3f} L1 {record['rec']:.3f} | D right: real "
                f"{record['d_acc_real']:.2f} fake {record['d_acc_fake']:.2f} expr. {record['d_acc_cls']:.2f} | "
                f"{record['images_per_s']:.0f} img/s{self.val_info}")

    def samples(self, name: str, title: str) -> None:
        write_sample_grid(self.nets.G_out, self.data, self.fixed, self.device, self.out / "samples" / f"{name}.png", title)

    def capture(self) -> dict:
        """Resumable state; every process's RNG states are gathered (a collective: call on all ranks)."""
        ctx = self.ctx
        return {"step": self.step, "elapsed": self.elapsed_before + time.time() - self.start,
                "sampler": self.sampler.state_dict(), "aug_rng": dist_.gather(ctx, self.aug_gen.get_state()),
                "torch_rng": dist_.gather(ctx, torch.get_rng_state()), "lr_scale": self.lr_scale}

    def checkpoint(self) -> None:
        """Save a checkpoint at `step` with its validation metrics (a collective: call on all ranks)."""
        state = self.capture()
        met = False
        if self.main:
            val = validation(self.nets.G_out, self.val_batch, self.judge)
            runs.save_checkpoint(self.out, self.nets, self.cfg, self.step, state, val)
            self.new_val.update({"val_step": self.step, **runs.logged_validation(val)})
            for k, v in val.items():
                self.writer.add_scalar(f"val/{k}", v, self.step)
            met = bool(self.target) and reaches(val, self.target)
        self.saved_step, self.rollbacks = self.step, 0
        self.reached = bool(self.target) and dist_.agreed_max(self.ctx, float(met)) > 0

    def rollback(self, err: Diverged) -> None:
        """Nothing of the diverging step was applied: go back to the last good checkpoint with a lower
        learning rate, or give up with a message naming what is left."""
        cfg, out = self.cfg, self.out
        self.rollbacks += 1
        last = runs.latest_checkpoint(out)
        if last is None or self.rollbacks > cfg.run.max_rollbacks:
            raise UserError(
                f"training diverged at step {self.step + 1} (non-finite {err}) after {self.rollbacks - 1} "
                f"rollback(s) with a lower learning rate; no model was written. "
                + (f"The last good checkpoint is {last.name}; continue from it with a learning rate "
                   f"below {cfg.optimiser.lr * self.lr_scale:g}: --resume {out} --set optimiser.lr=..." if last else
                   "No good checkpoint is left; start again with a lower learning rate (--set optimiser.lr=...)")) from None
        diverged_at, self.lr_scale = self.step + 1, self.lr_scale * cfg.run.rollback_lr_factor
        self.step = self.saved_step = runs.restore(last, self.nets, self.sampler, self.aug_gen, cfg, self.ctx)["step"]
        self.new_val = runs.checkpoint_validation(last)
        set_lr(self.nets, cfg.optimiser.lr * self.lr_scale)
        if self.main:
            warn(f"non-finite {err} at step {diverged_at}: rolled back to {last.name} with learning rate "
                 f"{cfg.optimiser.lr * self.lr_scale:g} (rollback {self.rollbacks} of {cfg.run.max_rollbacks})")
            self.close_logs()
            self.log_file, self.writer = self.open_logs()
        self.sums, self.counts, self.window_start, self.window_images = {}, {}, time.time(), 0

    def close_logs(self) -> None:
        if self.main:
            self.log_file.close()
            self.writer.close()

    # ------------------------------------------------------------------------- the end
    def ended_by(self) -> str:
        """What ended the run: its quality target, its time limit or its length in steps (or epochs)."""
        if self.end:
            return self.end
        minutes = self.cfg.run.minutes
        if minutes > 0 and self.elapsed_before + time.time() - self.start >= 60 * minutes:
            return "time limit"
        return "steps"

    def report_end(self, val: dict[str, float]) -> None:
        """One line: what ended the run, and where its quality target stands."""
        line = f"ended by the {self.ended_by()} at step {self.step}"
        if self.target:
            now = [f"PSNR {val['val_psnr'] - val['val_psnr_copy']:+.2f} dB over the copy"] if "val_psnr" in val else []
            now += [f"judge {val['val_judge']:.3f}"] if "val_judge" in val else []
            line += (f"; quality target {self.cfg.run.until} {'reached' if self.end else 'not reached'} "
                     f"({', '.join(now)})")
        print(line)

    def finish(self) -> Path:
        """The final checkpoint, sample grid, model file (with the run's summary) and loss curves."""
        cfg, nets, out = self.cfg, self.nets, self.out
        state = self.capture()
        in_sync = dist_.replicas_identical(self.ctx, torch.nn.ModuleList([ckpt.unwrap(nets.G), ckpt.unwrap(nets.D)]))
        dist_.cleanup(self.ctx)
        if not self.main:
            return out / "model.safetensors"
        val = validation(nets.G_out, self.val_batch, self.judge)
        if self.step != self.saved_step:
            runs.save_checkpoint(out, nets, cfg, self.step, state, val)
        self.samples("final", f"final (step {self.step})")
        self.report_end(val)
        summary = {"steps": self.step, "epochs": round(self.step / self.sampler.steps_per_epoch, 2), "data": cfg.data.source,
                   "minutes": round((self.elapsed_before + time.time() - self.start) / 60, 2), "images": len(self.data),
                   "identities": self.data.identities, "device": str(self.device),
                   **({"held_out": [self.data.identities[i] for i in held_out_identities(self.data, cfg.data.held_out)]}
                      if cfg.data.held_out else {}), "processes": self.ctx.world,
                   "global_batch": cfg.optimiser.batch_size, "precision": self.precision, "replicas_identical": in_sync,
                   **({"init_from": cfg.finetune.init_from} if cfg.finetune.init_from else {}),
                   "ended_by": self.ended_by(), **({"until": cfg.run.until} if self.target else {}),
                   **{k: round(v, 6 if k == "val_l1" else 4) for k, v in val.items()}}
        if nets.G_out.redraws:  # the web demo's redraw threshold (`FExGAN.familiarity_tensor`)
            known = self.val_idx if len(self.val_idx) else self.train_idx
            summary["far"] = far_threshold(nets.G_out, cfg, self.data, known, self.device)
        model_path = out / "model.safetensors"
        try:
            ckpt.save_model(model_path, nets.G_out, nets.D, cfg.model, summary)
        except OSError as err:
            raise UserError(f"could not write {model_path} ({err.strerror or err}); the checkpoint of step {self.step} "
                            f"is intact: free some disk space and run --resume {out} again") from None
        plot_losses(out / "log.jsonl", out / "loss_curves.png")
        return model_path


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train FExGAN into the run folder `out` and return the path of the final model file."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    run = Trainer(cfg, Path(out), resume)

    def steps_text() -> str:
        return f"{run.step}/{run.total_steps} steps" if run.total_steps else f"{run.step} steps of {cfg.run.minutes:g} min"

    # The bar runs on the share of the run done, so it fills (and estimates the time left) alike for
    # --steps, --epochs and --minutes.
    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[steps]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not (progress and run.main),
                   transient=False)
    done = run.progress_fraction()
    task = bar.add_task("train", total=1.0, completed=done, steps=steps_text(), info="")
    try:
        with bar, StopRequest(enabled=not run.ctx.enabled) as stop:
            while done < 1.0:
                late = done >= cfg.losses.late_fraction
                try:
                    run.one_step(late)
                except Diverged as err:
                    run.rollback(err)
                    done = run.progress_fraction()
                    bar.update(task, completed=done, steps=steps_text())
                    continue
                done = run.progress_fraction()  # once per step: under torchrun it is a collective
                if run.step % cfg.logging.log_every == 0 or done >= 1.0:
                    bar.update(task, info=run.log(late))
                bar.update(task, completed=done, steps=steps_text())
                if run.main and cfg.logging.sample_every and run.step % cfg.logging.sample_every == 0:
                    run.samples(f"step_{run.step:07d}", f"step {run.step}")
                if cfg.logging.checkpoint_every and run.step % cfg.logging.checkpoint_every == 0:
                    run.checkpoint()
                    if run.reached:
                        run.end = "quality target"
                        break
                if stop.signal:  # SIGINT/SIGTERM: stop between steps, where the state is whole
                    if run.step != run.saved_step:
                        run.checkpoint()
                    print(f"interrupted ({stop.signal}): checkpoint saved at step {run.step}; continue with --resume {out}")
                    raise KeyboardInterrupt
    finally:
        run.close_logs()
    return run.finish()
