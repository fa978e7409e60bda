"""`fexgan finetune` from ONE neutral image of a toon character the model never saw: before and after.

    .venv/bin/python benchmarks/finetune_one_image.py toon-any-64 --minutes 3 --out runs/ft-one
    .venv/bin/python benchmarks/finetune_one_image.py toon-any-64 --character 3 --minutes 3 --out runs/ft-one-3
    .venv/bin/python benchmarks/finetune_one_image.py toon-any-64 --character all --out runs/ft-all  # each in turn
    .venv/bin/python benchmarks/finetune_one_image.py --set finetune.freeze=generator.encoder,generator.decoder --out runs/ft
    .venv/bin/python benchmarks/finetune_one_image.py --expressions all --out runs/ft-seven   # one face per expression

The character is one of the model's held-out identities (`--character` picks which, 0 = the first;
`all`: each of them in turn, a fine-tune of the shipped model for each, and their mean).
Its canonical neutral face (the renderer's `Variation()`; `--expressions` for more) is the whole
fine-tuning set. Scored before and after, against the renderer's truth and the evaluation judge
(trained on the real images of all the data's characters, held-out ones included; it never sees
generated images):
- that character: every one of its dataset images to every other expression (PSNR / L1 / sharpness
  beside the unchanged input), judge expression and identity over every target, and the judge's
  expression on the true targets themselves (`truth`: the most a generator can score);
- the training characters: the same on `--n` validation images, to show how much they move.
Prints a table and writes OUT/finetune_one_image.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fexgan.data import toon
from fexgan.data.pairs import held_out_identities, split_indices
from fexgan.data.sources import load_source
from fexgan.files import checkpoint as ckpt
from fexgan.metrics.generated import transfer
from fexgan.metrics.groundtruth import TOON_SEED, compare, render_truth
from fexgan.metrics.judge import get_judge
from fexgan.training.finetune import finetune


def score(model: Path, data, spec: str, indices: torch.Tensor, judge) -> dict[str, float]:
    """Every image of `indices` to every expression: truth metrics over the changes, judge over all."""
    G = ckpt.load_model(model, discriminator=False).generator
    n_cls = len(data.classes)
    rep, targets = torch.arange(len(indices)).repeat_interleave(n_cls), torch.arange(n_cls).repeat(len(indices))
    real, src_cls, src_id = data.images[indices][rep], data.expression[indices][rep], data.identity[indices][rep]
    fakes = transfer(G, real, src_cls, F.one_hot(targets, n_cls).float())
    truth = render_truth(data, spec, indices[rep], F.one_hot(targets, n_cls).float())
    change = src_cls != targets
    gen, copy = compare(fakes[change], truth[change]), compare(real[change], truth[change])
    expr_p, id_p = judge.predict(fakes)
    ceiling = judge.predict(truth)[0].argmax(1) == targets  # the judge on the true targets: a perfect generator's score
    return {"psnr": float(gen["psnr"].mean()), "psnr_copy": float(copy["psnr"].mean()),
            "l1": float(gen["l1"].mean()), "l1_copy": float(copy["l1"].mean()),
            "sharpness": float(gen["sharpness"].mean()),
            "judge_expression": float((expr_p.argmax(1) == targets).float().mean()),
            "judge_identity": float((id_p.argmax(1) == src_id).float().mean()),
            "judge_expression_truth": float(ceiling.float().mean()), "transfers": len(rep)}


def finetune_one(base: Path, data, spec: str, identity: int, known: torch.Tensor, judge, args: argparse.Namespace
                 ) -> dict:
    """Render the character's fine-tuning faces, score before, fine-tune, score after."""
    cfg = ckpt.read_metadata(base)[0]
    name = data.identities[identity]
    theirs = torch.nonzero(data.identity == identity).squeeze(1)
    folder = args.out / name / "newcomer"
    character = toon.make_characters(len(data.identities), seed=TOON_SEED)[identity]
    for expression in cfg.classes if args.expressions == "all" else args.expressions.split(","):
        (folder / "newcomer" / expression).mkdir(parents=True, exist_ok=True)
        toon.render_face(character, expression, size=cfg.image_size).save(folder / "newcomer" / expression / "face.png")
    before = {"character": score(base, data, spec, theirs, judge), "known": score(base, data, spec, known, judge)}
    start = time.time()
    tuned = finetune(base, f"folder:{folder}", args.out / name / "run", minutes=args.minutes,
                     overrides=args.overrides, progress=False)
    seconds = time.time() - start
    after = {"character": score(tuned, data, spec, theirs, judge), "known": score(tuned, data, spec, known, judge)}
    return {"character": name, "seconds": round(seconds, 1), "steps": ckpt.read_metadata(tuned)[1]["steps"],
            "before": before, "after": after, "finetuned": str(tuned), "load_average": os.getloadavg()[0]}


def print_table(results: list[dict]) -> None:
    print(f"{'':<22}{'PSNR':>7}{'copy':>7}{'L1':>8}{'copy':>8}{'sharp':>7}{'expr':>7}{'truth':>7}{'ident':>7}")
    rows = [(f"{r['character']} {when}", r[when]["character"]) for r in results for when in ("before", "after")]
    if len(results) > 1:
        rows += [(f"mean {when}", {k: statistics.mean(r[when]["character"][k] for r in results)
                                   for k in results[0][when]["character"]}) for when in ("before", "after")]
    rows += [(f"training chars {when}", {k: statistics.mean(r[when]["known"][k] for r in results)
                                         for k in results[0][when]["known"]}) for when in ("before", "after")]
    for label, r in rows:
        print(f"{label:<22}{r['psnr']:7.2f}{r['psnr_copy']:7.2f}{r['l1']:8.4f}{r['l1_copy']:8.4f}"
              f"{r['sharpness']:7.2f}{r['judge_expression']:7.3f}{r['judge_expression_truth']:7.3f}"
              f"{r['judge_identity']:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="toon-any-64")
    parser.add_argument("--character", default="0", help="which held-out character (0 = the first), or all")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--expressions", default="neutral", help="the fine-tuning images: one canonical face per "
                                                                    "expression named (comma-separated, or all)")
    parser.add_argument("--n", type=int, default=300, help="validation images of the training characters")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a fine-tune setting, e.g. lr=5e-5")
    args = parser.parse_args()

    base = ckpt.resolve_model(args.model)
    cfg, summary = ckpt.read_metadata(base)
    spec, held = summary["data"], len(summary.get("held_out", []))
    data = load_source(spec, cfg.image_size, cfg.background, cfg.classes)
    newcomers = held_out_identities(data, held)
    newcomers = newcomers if args.character == "all" else [newcomers[int(args.character)]]
    _, val_idx = split_indices(data, 0.2, 0, held)
    known = val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(0))[:args.n]]
    judge = get_judge(spec, cfg.image_size, data=data, background=cfg.background, classes=cfg.classes,
                      log=lambda line: None)
    results = [finetune_one(base, data, spec, int(identity), known, judge, args) for identity in newcomers]
    print(f"{args.model}: fine-tuned on {args.expressions} images of {len(results)} character(s) never seen, "
          f"{args.minutes} min each {args.overrides} ({', '.join(str(r['steps']) for r in results)} steps); "
          f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print_table(results)
    out = {"model": str(base), "expressions": args.expressions, "settings": args.overrides, "results": results}
    (args.out / "finetune_one_image.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
