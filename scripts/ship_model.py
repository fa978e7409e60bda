"""Package a finished run as a shipped model: fp16 weights inside the package plus its card.

    .venv/bin/python scripts/ship_model.py RUN --name toon-128 --command "fexgan train ..."

1. `fexgan export RUN --format safetensors --half --discriminator` -> src/fexgan/pretrained/NAME.safetensors
2. the same transfers through the fp32 run model and the fp16 file: how much the cast changes
3. `fexgan evaluate` of the shipped file (on the CPU, the judge of the evaluation package)
4. for a run with held-out characters, `fexgan evaluate --split held_out` of it too: the zero-shot
   numbers on characters it never saw
5. NAME.json: the command, the full configuration, training facts, the numbers above and the
   limitations the numbers show (weakest targets and characters), all written from measurements.
`make pretrained` runs the training commands and this script for each shipped model.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from fexgan.config import TrainConfig
from fexgan.data import toon
from fexgan.data.pairs import split_indices
from fexgan.data.sources import load_source
from fexgan.files.checkpoint import load_model
from fexgan.generation.export import export, pretrained_folder
from fexgan.metrics.evaluate import evaluate
from fexgan.metrics.generated import transfer
from fexgan.metrics.judge import get_judge
from fexgan.presets import load_run_config
from fexgan.training.bench import machine

DESCRIPTION = ("The `{preset}` preset ({size} px, width {width}, latent {latent}) trained on {data}. Turns a face "
               "like those on a plain background to any of the 7 expressions or a mix of them.")
TOON = "the built-in toon faces (6 characters x 7 expressions x 200 images, fixed camera and light)"
TOON_MANY = ("{train} of the built-in toon characters x 7 expressions x {per_class} images (fixed camera and light; "
             "the last {held} of `{spec}` held out of training for the zero-shot test)")


def cast_check(fp32: Path, fp16: Path, config: TrainConfig, n: int = 500) -> dict:
    """The same `n` val sources x every target through both files (both loaded as float32 on the CPU)."""
    a, b = load_model(fp32), load_model(fp16)
    cfg = a.config
    data = load_source(config.data.source, cfg.image_size, cfg.background, cfg.classes)
    _, val_idx = split_indices(data, config.data.val_fraction, config.run.seed, config.data.held_out)
    src = val_idx[:n]
    n_cls = cfg.num_classes
    rep, targets = torch.arange(len(src)).repeat_interleave(n_cls), torch.arange(n_cls).repeat(len(src))
    real, src_cls = data.images[src][rep], data.expression[src][rep]
    affect = F.one_hot(targets, n_cls).float()
    out_a, out_b = transfer(a.generator, real, src_cls, affect), transfer(b.generator, real, src_cls, affect)
    judge = get_judge(config.data.source, cfg.image_size, data=data, background=cfg.background, classes=cfg.classes,
                      log=lambda line: None)
    same = (judge.predict(out_a)[0].argmax(1) == judge.predict(out_b)[0].argmax(1)).float().mean()
    diff = (out_a.int() - out_b.int()).abs()
    return {"transfers": len(rep), "max_abs_diff_uint8": int(diff.max()),
            "pixels_changed_uint8": round(float((diff > 0).float().mean()), 5),
            "judge_same_prediction": round(float(same), 5),
            "method": f"the same {len(src)} val sources x {n_cls} targets through the fp32 training output and "
                      f"the fp16 file, both loaded as float32 on the CPU"}


def limitations(metrics: dict, per_target: dict, per_character: dict, mixed: dict, bar: float = 0.9,
                held_out: bool = False, min_n: int = 35) -> list[str]:
    """What the numbers say the model does badly, in sentences (the five weakest characters of those
    with at least `min_n` transfers)."""
    acc = metrics["expression_accuracy"]["value"]
    weak_t = sorted((v["value"], k) for k, v in per_target.items() if v["value"] < bar)
    # a character with a few transfers in the sample says nothing (248 characters share 3,500 transfers)
    weak_c = sorted((v["value"], k) for k, v in per_character.items() if v["value"] < bar and v["n"] >= min_n)[:5]
    lines = [f"The evaluation judge recognises {acc:.3f} of transfers as their target expression (bar {bar})"
             + (f"; weakest targets: {', '.join(f'{k} {v:.2f}' for v, k in weak_t)}" if weak_t else "")
             + (f"; weakest characters: {', '.join(f'{k} {v:.2f}' for v, k in weak_c)}" if weak_c else "") + "."]
    fid, floor = metrics["fid_transfer"]["value"], metrics["fid_real_reference"]["value"]
    if "groundtruth_psnr" in metrics:
        psnr, copy = metrics["groundtruth_psnr"]["value"], metrics["groundtruth_psnr_copy"]["value"]
        sharp = metrics["groundtruth_sharpness"]["value"]
        lines.append(f"Against the renderer's true targets of expression changes: PSNR {psnr:.2f} dB where handing "
                     f"back the unchanged input scores {copy:.2f} dB ({psnr - copy:+.2f} dB"
                     + ("" if psnr > copy else ": WORSE than the copy") + f"); sharpness {sharp:.2f} of the truth's"
                     + (" (blurrier than the training images)" if sharp < 0.8 else "") + ".")
    lines.append(f"FID in the judge's features is {fid:.0f} against a real-vs-real floor of {floor:.1f}.")
    weak_m = [f"{pair}: both affects in the judge's top two for {m['both_top2']['value']:.2f} of the transfers "
              f"(mean judge probabilities {m['p_first']['value']:.2f} / {m['p_second']['value']:.2f}"
              + (f"; on the renderer's true mix {m['truth_p_first']['value']:.2f} / {m['truth_p_second']['value']:.2f}"
                 if "truth_p_first" in m else "") + ")" for pair, m in mixed.items() if m["both_top2"]["value"] < 0.5]
    if weak_m:
        lines.append("Mixed affects (0.5 + 0.5), where one side dominates: " + "; ".join(weak_m) + ".")
    if held_out:
        lines.append("Characters it never saw keep their identity (see evaluation_held_out); faces far from toon "
                     "faces (photos, other drawing styles) are out of its domain: fine-tune on them (fexgan finetune).")
    else:
        lines.append(f"It knows the {len(per_character)} characters of its training data only: other faces, photos "
                     f"included, are out of its domain.")
    return lines


def evaluated(shipped: Path, config: TrainConfig, split: str) -> tuple[dict, dict]:
    """`fexgan evaluate` of the shipped file on `split` (on the CPU): (all results, the card's metrics)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = evaluate(shipped, data=config.data.source, split=split, out=Path(tmp) / "evaluation", device="cpu")
    t = results["transfer"]
    changes = (results["groundtruth"] or {}).get("all changes")  # toon data only: the renderer's truth
    truth = {**{f"groundtruth_{k}": v for k, v in changes["generated"].items()},
             **{f"groundtruth_{k}_copy": v for k, v in changes["copy"].items()},
             "expression_accuracy_of_truth": results["judge_truth"]["expression_accuracy"]} if changes else {}
    return results, {**truth, "expression_accuracy": t["expression_accuracy"],
                     "identity_preservation": t["identity_preservation"], **results["realism"]}


def describe_data(config: TrainConfig) -> str:
    """The card's words for the training data."""
    if config.data.source == "toon":
        return TOON
    parts = config.data.source.split(":")
    if parts[0] == "toon" and len(parts) >= 3 and config.data.held_out:
        chars, held = int(parts[2]), config.data.held_out
        return TOON_MANY.format(train=chars - held, per_class=parts[1], held=held, spec=config.data.source)
    return f"`{config.data.source}`"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (RUN/model.safetensors)")
    parser.add_argument("--name", default="toon-128")
    parser.add_argument("--preset", default="cpu", help="the preset the run was trained with (for the card)")
    parser.add_argument("--command", required=True, help="the exact training command, for the card")
    parser.add_argument("--dest", type=Path, default=pretrained_folder(), help="where NAME.safetensors/.json go")
    args = parser.parse_args()

    dest, run_model = args.dest, args.run / "model.safetensors"
    dest.mkdir(parents=True, exist_ok=True)
    config = load_run_config(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        export(args.run, "safetensors", tmp, discriminator=True, half=True)
        (Path(tmp) / "model.safetensors").replace(dest / f"{args.name}.safetensors")
    shipped = dest / f"{args.name}.safetensors"
    print(f"wrote {shipped} ({shipped.stat().st_size / 1e6:.1f} MB)")
    cast = cast_check(run_model, shipped, config)
    results, metrics = evaluated(shipped, config, "val")
    t = results["transfer"]
    summary = load_model(run_model, discriminator=False).summary
    last_log = json.loads((args.run / "log.jsonl").read_text().splitlines()[-1])
    model = config.model
    card = {
        "name": args.name,
        "description": DESCRIPTION.format(preset=args.preset, size=model.image_size, width=model.width,
                                          latent=model.latent_dim,
                                          data=describe_data(config)),
        "command": args.command,
        "packaged_with": f"python scripts/ship_model.py RUN --name {args.name} (fexgan export RUN --format "
                         f"safetensors --half --discriminator, then fexgan evaluate of the file)",
        "config": config.to_dict(),
        "training": {**{k: summary[k] for k in ("steps", "epochs", "minutes", "device", "processes", "images",
                                                "identities", "val_l1") if k in summary},
                     "machine": {k: v for k, v in machine(torch.device("cuda" if summary.get("device", "").startswith("cuda")
                                                          and torch.cuda.is_available() else "cpu")).items()
                                 if k not in ("load_average", "torch_threads")},
                     "toon_renderer_version": toon.RENDERER_VERSION,
                     "images_per_s_at_end": last_log.get("images_per_s"),
                     "final_losses": {k: last_log[k] for k in ("d_total", "g_total", "g_adv", "g_cls", "kl", "rec")}},
        "weights": {"dtype": "float16 (cast to float32 when loaded)", "parts": ["generator", "discriminator"],
                    "fp16_vs_fp32": cast},
        "evaluation": {"command": f"fexgan evaluate {args.name} --device cpu", "data": config.data.source, "split": "val",
                       "n": results["n"], "seed": results["seed"], "judge": results["judge"], "metrics": metrics,
                       "per_target": t["per_target"], "per_character": t["per_character"],
                       "table1": results["table1"], "mixed": results["mixed"]},
        "limitations": limitations(metrics, {k: v["expression_accuracy"] for k, v in t["per_target"].items()},
                                   {k: v["expression_accuracy"] for k, v in t["per_character"].items()},
                                   results["mixed"], held_out=bool(config.data.held_out)),
    }
    if config.data.held_out:  # the zero-shot numbers: characters the model never saw
        held, held_metrics = evaluated(shipped, config, "held_out")
        card["evaluation_held_out"] = {
            "command": f"fexgan evaluate {args.name} --split held_out --device cpu", "characters": held["held_out"],
            "n": held["n"], "metrics": held_metrics,
            "per_target": held["transfer"]["per_target"], "per_character": held["transfer"]["per_character"],
            "per_character_of_truth": held["judge_truth"]["per_character"] if held.get("judge_truth") else {}}
    (dest / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    truth_line = (f"ground-truth PSNR {metrics['groundtruth_psnr']['value']:.2f} dB (copy "
                  f"{metrics['groundtruth_psnr_copy']['value']:.2f}), " if "groundtruth_psnr" in metrics else "")
    print(f"wrote {dest / f'{args.name}.json'}: {truth_line}judge {metrics['expression_accuracy']['value']:.3f}, "
          f"identity {metrics['identity_preservation']['value']:.3f}")


if __name__ == "__main__":
    main()
