"""Time to quality: minutes of `fexgan train` until the transfers beat the copy and the judge agrees.

Trains a preset (default `cpu`) on toon faces with `fexgan.training.loop.train` itself, a checkpoint every
`--every` steps, for at most `--minutes`; then scores every checkpoint the way `fexgan evaluate`
does: `--n` held-out (val) sources, each transferred to all 7 expressions; the renderer's ground
truth gives the PSNR of the expression changes beside the do-nothing copy of the source, and the
independent judge (fexgan.metrics.judge) expression accuracy (predicted == target) and identity
preservation (predicted character == source character). Time to quality is the training time (the
checkpoint's `elapsed`, without data set-up and without the scoring) of the first checkpoint whose
PSNR beats the copy's by `--psnr-gain` dB with both judge scores >= the thresholds. Scoring after
training keeps the CPU for training while it runs.

    .venv/bin/python benchmarks/time_to_quality.py --minutes 15 --every 100 [--set optimiser.lr=1e-3 ...]
    .venv/bin/python benchmarks/time_to_quality.py --judge-only --out RUN   # any run's checkpoints

Writes OUT/time_to_quality.json (the curve, the result, the command, the machine and its load).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fexgan.data.pairs import split_indices
from fexgan.data.sources import load_source
from fexgan.files import checkpoint as ckpt
from fexgan.metrics.evaluate import transfer_metrics
from fexgan.metrics.generated import transfer
from fexgan.metrics.groundtruth import compare, render_truth
from fexgan.metrics.judge import get_judge
from fexgan.presets import build_config
from fexgan.training.bench import load_average, machine
from fexgan.training.loop import train


def judge_checkpoints(run: Path, cfg, n: int, log=print) -> tuple[list[dict], dict]:
    """(curve, judge accuracy on real images): expression accuracy and identity preservation of every
    checkpoint's transfers, in step order."""
    data = load_source(cfg.data.source, cfg.model.image_size, cfg.model.background, cfg.model.classes)
    judge = get_judge(cfg.data.source, cfg.model.image_size, data=data, background=cfg.model.background,
                      classes=cfg.model.classes, log=log)
    _, val_idx = split_indices(data, cfg.data.val_fraction, cfg.run.seed)
    src = val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(0))[:n]]
    n_cls = cfg.model.num_classes
    rep, targets = torch.arange(len(src)).repeat_interleave(n_cls), torch.arange(n_cls).repeat(len(src))
    real, src_cls, src_id = data.images[src][rep], data.expression[src][rep], data.identity[src][rep]
    truth = render_truth(data, cfg.data.source, src[rep], F.one_hot(targets, n_cls).float(), cfg.model.background)
    change = src_cls != targets
    copy_psnr = float(compare(real[change], truth[change])["psnr"].mean())
    curve = []
    for weights in sorted((run / "checkpoints").glob("step_*.safetensors")):
        state = ckpt.load_state(weights.with_suffix(".state.pt"))
        G = ckpt.load_model(weights, discriminator=False).generator
        fakes = transfer(G, real, src_cls, F.one_hot(targets, n_cls).float())
        expr_p, id_p = judge.predict(fakes)
        m = transfer_metrics(cfg.model.classes, src_cls, targets, expr_p.argmax(1), id_p.argmax(1) == src_id)
        gt = compare(fakes[change], truth[change])
        curve.append({"step": state["step"], "minutes": round(state["elapsed"] / 60, 2),
                      "psnr": round(float(gt["psnr"].mean()), 3), "copy_psnr": round(copy_psnr, 3),
                      "sharpness": round(float(gt["sharpness"].mean()), 3),
                      "expression_accuracy": m["expression_accuracy"]["value"],
                      "identity_preservation": m["identity_preservation"]["value"]})
        log(f"step {curve[-1]['step']:6d}  {curve[-1]['minutes']:6.2f} min  PSNR {curve[-1]['psnr']:.2f} dB "
            f"(copy {copy_psnr:.2f})  sharpness {curve[-1]['sharpness']:.2f}  expression "
            f"{curve[-1]['expression_accuracy']:.3f}  identity {curve[-1]['identity_preservation']:.3f}")
    return curve, judge.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--data", default="toon")
    parser.add_argument("--minutes", type=float, default=15.0, help="training cap")
    parser.add_argument("--every", type=int, default=100, help="checkpoint (and judge) every this many steps")
    parser.add_argument("--n", type=int, default=200, help="held-out sources, each transferred to every expression")
    parser.add_argument("--psnr-gain", type=float, default=0.0, help="dB of ground-truth PSNR over the copy's")
    parser.add_argument("--expression", type=float, default=0.95, help="expression accuracy threshold")
    parser.add_argument("--identity", type=float, default=0.90, help="identity preservation threshold")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", type=Path, default=Path("runs") / f"ttq-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--judge-only", action="store_true", help="judge the checkpoints of the run in --out again")
    args = parser.parse_args()

    if args.judge_only:
        cfg = build_config(base=json.loads((args.out / "config.json").read_text()))
    else:
        cfg = build_config(args.preset, overrides=[f"data.source={args.data}", f"run.minutes={args.minutes}", "run.device=cpu",
                                                   f"logging.checkpoint_every={args.every}", "logging.keep_checkpoints=100000",
                                                   "logging.sample_every=0", *args.overrides])
        info = {**machine(torch.device("cpu")), "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv])}
        start, cpu_start = time.time(), time.process_time()
        train(cfg, args.out, progress=False)
        wall = time.time() - start
        info.update(load_average_end=load_average(), total_wall_minutes=round(wall / 60, 2),
                    cpu_utilisation=round((time.process_time() - cpu_start) / wall / max(1, os.cpu_count() or 1), 2))
        (args.out / "time_to_quality_training.json").write_text(json.dumps(info, indent=2))
    trained_here = args.out / "time_to_quality_training.json"  # absent for a run trained by `fexgan train`
    info = json.loads(trained_here.read_text()) if trained_here.is_file() else {
        "command": f"fexgan train (see {args.out / 'config.json'})", "load_average": None, "load_average_end": None}
    curve, judge_accuracy = judge_checkpoints(args.out, cfg, args.n)
    hit = next((c for c in curve if c["psnr"] > c["copy_psnr"] + args.psnr_gain
                and c["expression_accuracy"] >= args.expression and c["identity_preservation"] >= args.identity), None)
    best = max(curve, key=lambda c: c["psnr"])
    result = {
        "command": info.pop("command"), "config": cfg.to_dict(), "cap_minutes": cfg.run.minutes,
        "thresholds": {"psnr_over_copy": args.psnr_gain, "expression": args.expression, "identity": args.identity},
        "n_sources": args.n,
        "minutes_to_quality": hit["minutes"] if hit else None, "reached_at": hit, "best": best,
        "judge_real_accuracy": judge_accuracy, "curve": curve, "training": info,
    }
    (args.out / "time_to_quality.json").write_text(json.dumps(result, indent=2))
    if hit:
        print(f"time to quality: {hit['minutes']} min (step {hit['step']}): PSNR {hit['psnr']:.2f} dB (copy "
              f"{hit['copy_psnr']:.2f}), expression {hit['expression_accuracy']:.3f}, identity {hit['identity_preservation']:.3f}")
    else:
        print(f"not reached in {cfg.run.minutes} min; best PSNR at {best['minutes']} min (step {best['step']}): "
              f"{best['psnr']:.2f} dB (copy {best['copy_psnr']:.2f}), expression {best['expression_accuracy']:.3f}, "
              f"identity {best['identity_preservation']:.3f}")
    print(f"load average {info['load_average']} -> {info['load_average_end']}; results in {args.out / 'time_to_quality.json'}")


if __name__ == "__main__":
    main()
