"""The run folder: creating it, its log, and its checkpoints (written, pruned, restored).

    config.json          the resolved TrainConfig
    data.json            dataset summary, the train/val split (image names) and skipped files
    log.jsonl            one line per logged step (also in tb/ for TensorBoard)
    samples/             fixed sources turned into every expression, every `sample_every` steps
    checkpoints/         step_XXXXXXX.safetensors (weights+config) + .state.pt (optimisers, RNG, data order,
                         the raw generator weights when the model files hold their moving average);
                         best.safetensors: the checkpoint with the lowest validation L1 so far
    model.safetensors    the final model (a file that loads on its own)
    loss_curves.png
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from fexgan.config import TrainConfig
from fexgan.data.pairs import PairSampler, held_out_identities
from fexgan.data.sources import ImageSet
from fexgan.errors import UserError, warn
from fexgan.files import checkpoint as ckpt
from fexgan.files.checkpoint import latest_checkpoint
from fexgan.training import distributed as dist_
from fexgan.training.step import Nets, load_weights


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


def write_data_report(out: Path, cfg: TrainConfig, data: ImageSet, train_idx: torch.Tensor, val_idx: torch.Tensor) -> None:
    """data.json: what was read (a summary, skipped files) and the split, by image name."""
    held = [data.identities[i] for i in held_out_identities(data, cfg.data.held_out)]
    report = json.dumps({"source": cfg.data.source, **data.summary(), "skipped_files": data.skipped, "held_out": held,
                         "train": [data.names[i] for i in train_idx.tolist()],
                         "val": [data.names[i] for i in val_idx.tolist()]})
    ckpt.atomic_write(out / "data.json", lambda tmp: tmp.write_text(report))
    if data.skipped:
        warn(f"skipped {len(data.skipped)} unreadable images (listed in {out / 'data.json'})")



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
    old = sorted(folder.glob("step_*.safetensors"))[:-cfg.logging.keep_checkpoints]
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
    state = ckpt.load_state(weights.with_suffix(".state.pt"), ckpt.raw_metadata(weights).get("state_sha256"))
    if nets.G_ema is not None and "generator_train" not in state:
        raise UserError(f"{weights} was saved without a moving average of the generator; resume it with "
                        f"--set optimiser.ema_decay=0")
    load_weights(nets, loaded, state.get("generator_train") if nets.G_ema is not None else None)
    nets.opt_g.load_state_dict(state["opt_g"])
    nets.opt_d.load_state_dict(state["opt_d"])
    sampler.load_state_dict(state["sampler"])
    aug_gen.set_state(state["aug_rng"][ctx.rank])
    torch.set_rng_state(state["torch_rng"][ctx.rank])
    return state
