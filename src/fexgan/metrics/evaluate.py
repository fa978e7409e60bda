"""`evaluate`: every metric of a trained model in one call, written to metrics.json and report.md.

Sources are a fixed random subset (`n`, `seed`) of one split of the model's dataset. Each source is
transferred (latent mean, so deterministic) to every expression and to the paper's three mixed
affects; the discriminator gives the paper's Table 1, the judge (fexgan.metrics.judge) the
expression, identity, FID and diversity numbers, and on toon faces the renderer the ground truth.
A second subset, of the split's neutral images, measures the sliders: intensities, 50/50 mixes and
morphs (fexgan.metrics.sliders).
Every number is stored as {"value", "n"}: the metric and the count of images behind it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fexgan.config import TrainConfig
from fexgan.data.pairs import (
    held_out_identities,
    held_out_indices,
    one_per_identity,
    seeded_subset,
    split_indices,
)
from fexgan.data.sources import ImageSet, load_source
from fexgan.errors import UserError
from fexgan.expressions import MIXED_PAIRS
from fexgan.metrics.accuracy import PAPER_TABLE1, mean_stat, stat, table1_row
from fexgan.metrics.generated import sample, transfer
from fexgan.metrics.groundtruth import compare, has_ground_truth, render_truth
from fexgan.metrics.judge import Judge, get_judge
from fexgan.metrics.realism import diversity, frechet_distance
from fexgan.metrics.report import write_report
from fexgan.metrics.sliders import SOURCES as SLIDER_SOURCES
from fexgan.metrics.sliders import slider_metrics, slider_sources
from fexgan.nets.networks import Discriminator, Generator
from fexgan.presets import load_run_config

SPLITS = ("train", "val", "held_out")  # held_out: the identities a run kept out of its training
MAX_N = 20000
EXAMPLES = 6   # sources shown in the transfer figure


def data_settings(run_or_model: str | Path, data: str | None, summary: dict) -> tuple[str, float, int, int]:
    """(data source, validation fraction, split seed, held-out identities): a run's config.json, else
    the model file's training summary, with `data` given by the user winning over both."""
    if (Path(run_or_model) / "config.json").is_file():
        cfg = load_run_config(Path(run_or_model))
        return data or cfg.data.source, cfg.data.val_fraction, cfg.run.seed, cfg.data.held_out
    defaults = TrainConfig()
    spec = data or summary.get("data")
    if not spec:
        raise UserError(f"{run_or_model} is a model file that does not say what it was trained on; "
                        f"give the data with --data (e.g. --data toon)")
    return spec, defaults.data.val_fraction, defaults.run.seed, len(summary.get("held_out", []))


def default_out(run_or_model: str | Path) -> Path:
    path = Path(run_or_model)
    if path.is_dir():
        return path / "evaluation"
    return path.with_name(f"{path.stem}-evaluation") if path.is_file() else Path("evaluation") / path.name


def evaluate(run_or_model: str | Path, data: str | None = None, split: str = "val", out: str | Path | None = None,
             n: int = 500, seed: int = 0, device: str = "auto", log=print, sliders: int = SLIDER_SOURCES) -> dict:
    """Evaluate a run folder, model file or shipped model; write metrics.json, report.md and
    figures into `out` (default: <run>/evaluation) and return the metrics. `sliders`: neutral
    sources of the intensity, mix and morph measurements (fexgan.metrics.sliders; 0: none)."""
    from fexgan.generation.inference import FExGAN

    check_arguments(split, n, sliders)
    start = time.time()
    model = FExGAN.load(run_or_model, device)
    spec, val_fraction, split_seed, held_out = data_settings(run_or_model, data, model.summary)
    out = Path(out) if out is not None else default_out(run_or_model)
    cfg, G, D = model.config, model.generator, model.discriminator
    classes, n_cls = cfg.classes, cfg.num_classes
    images = load_source(spec, cfg.image_size, cfg.background, cfg.classes)
    train_idx, val_idx = split_indices(images, val_fraction, split_seed, held_out)
    splits = {"train": train_idx, "val": val_idx}
    if split == "held_out":
        if not held_out:
            raise UserError(f"{run_or_model} kept no identities out of its training (held_out=0); evaluate --split val")
        splits["held_out"] = held_out_indices(images, held_out)
    if len(splits[split]) < 2:
        raise UserError(f"the {split} split of {spec} has {len(splits[split])} images; evaluate --split train instead")
    judge = get_judge(spec, cfg.image_size, model.device, data=images, background=cfg.background, classes=classes, log=log)
    results: dict = {
        "model": str(model.path), "data": spec, "split": split, "n": n, "seed": seed, "image_size": cfg.image_size,
        "classes": list(classes), "device": str(model.device), "split_sizes": {k: len(v) for k, v in splits.items()},
        "held_out": [images.identities[i] for i in held_out_identities(images, held_out)],
        "judge": {"path": judge.meta.get("path"), "accuracy": judge.accuracy, "train": judge.meta.get("train")},
        "paper_table1": PAPER_TABLE1,
        "table1": table1(G, D, images, {k: splits[k] for k in ("train", "val")}, n, seed) if D is not None else {},
    }
    log(f"table 1 done ({time.time() - start:.0f} s)")

    # Every source of the evaluated split to every expression, judged.
    src = seeded_subset(splits[split], n, seed)
    real, src_cls, src_id = images.images[src], images.expression[src], images.identity[src]
    expr_p, id_p = judge.predict(real)
    results["judge_real"] = {"expression": mean_stat(expr_p.argmax(1) == src_cls),
                             "identity": mean_stat(id_p.argmax(1) == src_id)}
    rep = torch.arange(len(src)).repeat_interleave(n_cls)                  # source position of each transfer
    targets = torch.arange(n_cls).repeat(len(src))
    fakes = transfer(G, real[rep], src_cls[rep], _one_hot(targets, n_cls))
    expr_p, id_p = judge.predict(fakes)
    results["transfer"] = transfer_metrics(classes, src_cls[rep], targets, expr_p.argmax(1), id_p.argmax(1) == src_id[rep],
                                           src_id[rep], images.identities)
    log(f"transfers judged ({time.time() - start:.0f} s)")

    with_truth = has_ground_truth(spec)
    results["mixed"], mixed_examples = mixed_metrics(G, judge, images, src, classes, cfg.background,
                                                     spec if with_truth else None)
    results["realism"] = realism_metrics(G, judge, images, real, src_cls, fakes, splits["train" if split == "val" else "val"],
                                         n, seed)
    log(f"mixed expressions and realism done ({time.time() - start:.0f} s)")
    results["sliders"] = slider_metrics(G, judge, images, slider_sources(images, splits[split], sliders, seed + 31),
                                        spec if with_truth else None, cfg.background)
    log(f"sliders done ({time.time() - start:.0f} s)")
    truth = render_truth(images, spec, src[rep], _one_hot(targets, n_cls), cfg.background) if with_truth else None
    results["groundtruth"] = groundtruth_metrics(classes, real, rep, fakes, truth, src_cls[rep], targets,
                                                 mixed_examples) if with_truth else None
    if with_truth:  # the judge's verdict on the true targets themselves: the most a generator can score
        truth_expr, truth_id = judge.predict(truth)
        judged = transfer_metrics(classes, src_cls[rep], targets, truth_expr.argmax(1), truth_id.argmax(1) == src_id[rep],
                                  src_id[rep], images.identities)
        results["judge_truth"] = {k: judged[k] for k in ("expression_accuracy", "per_target", "per_character")}
    results["seconds"] = round(time.time() - start, 1)

    examples = one_per_identity(images, src, EXAMPLES)
    names = [images.identities[i] for i in src_id[examples].tolist()]
    figure = figure_images(real, fakes, truth, mixed_examples, examples, names, n_cls)
    write_report(results, out, figure, sample(G, torch.arange(n_cls).repeat(EXAMPLES), seed))
    results["out"] = str(out)
    log(f"evaluation written to {out} ({results['seconds']} s)")
    return results


def check_arguments(split: str, n: int, sliders: int) -> None:
    """A UserError for a split that does not exist or a number of sources out of range."""
    if split not in SPLITS:
        raise UserError(f"split '{split}' is not one of: {', '.join(SPLITS)}")
    if not 2 <= n <= MAX_N:
        raise UserError(f"--n must be between 2 and {MAX_N} source images, got {n}")
    if not 0 <= sliders <= MAX_N:
        raise UserError(f"--sliders must be between 0 and {MAX_N} neutral source images, got {sliders}")


def _one_hot(classes: torch.Tensor, n_cls: int) -> torch.Tensor:
    return F.one_hot(classes, n_cls).float()


def table1(G: Generator, D: Discriminator, images: ImageSet, splits: dict[str, torch.Tensor], n: int, seed: int) -> dict:
    """The paper's Table 1 on up to `n` images of each split: reals, and their transfers to a random target."""
    rows = {}
    for k, (name, idx) in enumerate(splits.items()):
        if len(idx) == 0:
            continue
        src = seeded_subset(idx, n, seed + 1 + k)
        targets = torch.randint(G.cfg.num_classes, (len(src),), generator=torch.Generator().manual_seed(seed + 11 + k))
        fake = transfer(G, images.images[src], images.expression[src], _one_hot(targets, G.cfg.num_classes))
        rows[name] = table1_row(D, images.images[src], images.expression[src], fake, targets)
    return rows


def realism_metrics(G: Generator, judge: Judge, images: ImageSet, real: torch.Tensor, real_cls: torch.Tensor,
                    fakes: torch.Tensor, other: torch.Tensor, n: int, seed: int) -> dict:
    """FID of transfers (one random target per source) and of random decoder samples against the
    real sources; the FID of real images of the `other` split as the floor; diversity of both."""
    n_src, n_cls = len(real), G.cfg.num_classes
    pick = torch.randint(n_cls, (n_src,), generator=torch.Generator().manual_seed(seed + 21))
    fake_one = fakes.view(n_src, n_cls, *fakes.shape[1:])[torch.arange(n_src), pick]
    sample_cls = torch.randint(n_cls, (n_src,), generator=torch.Generator().manual_seed(seed + 22))
    samples = sample(G, sample_cls, seed)

    def fid(images_b: torch.Tensor) -> dict:
        return {**stat(frechet_distance(judge, real, images_b), len(images_b)), "n_real": n_src}

    metrics = {"fid_transfer": fid(fake_one), "fid_samples": fid(samples),
               "diversity_samples": stat(diversity(judge, samples, sample_cls), len(samples)),
               "diversity_real": stat(diversity(judge, real, real_cls), n_src)}
    if len(other) >= 2:
        metrics["fid_real_reference"] = fid(images.images[seeded_subset(other, n, seed + 23)])
    return metrics


def transfer_metrics(classes: tuple[str, ...], source: torch.Tensor, target: torch.Tensor, predicted: torch.Tensor,
                     kept: torch.Tensor, character: torch.Tensor | None = None,
                     characters: list[str] | None = None) -> dict:
    """Judge accuracy and identity preservation, overall, per target (and per source character when
    `character` indices and their names are given), and the two 7x7 matrices."""
    c, hit = len(classes), predicted == target
    by_character = {} if character is None else {
        "per_character": {name: {"expression_accuracy": mean_stat(hit[character == i]),
                                 "identity_preservation": mean_stat(kept[character == i])}
                          for i, name in enumerate(characters) if bool((character == i).any())}}
    cell = source * c + target
    counts = torch.bincount(cell, minlength=c * c).view(c, c)
    hits = torch.bincount(cell, weights=hit.double(), minlength=c * c).view(c, c)
    return {
        "expression_accuracy": mean_stat(hit), "identity_preservation": mean_stat(kept),
        "per_target": {name: {"expression_accuracy": mean_stat(hit[target == t]),
                              "identity_preservation": mean_stat(kept[target == t])} for t, name in enumerate(classes)},
        **by_character,
        "accuracy_source_x_target": (hits / counts.clamp(min=1)).where(counts > 0, torch.nan).round(decimals=4).tolist(),
        "count_source_x_target": counts.tolist(),
        "count_target_x_predicted": torch.bincount(target * c + predicted, minlength=c * c).view(c, c).tolist(),
    }


def mixed_metrics(G: Generator, judge: Judge, images: ImageSet, src: torch.Tensor, classes: tuple[str, ...],
                  background: tuple[int, int, int], truth_spec: str | None) -> tuple[dict, dict]:
    """For each of the paper's mixed pairs present in `classes`: the judge's probability on each of
    the two classes (on transfers, and on the true rendering of the toon source `truth_spec` if given)."""
    metrics, examples = {}, {}
    real, src_cls, src_id = images.images[src], images.expression[src], images.identity[src]
    for a, b in MIXED_PAIRS:
        if a not in classes or b not in classes:
            continue
        ia, ib = classes.index(a), classes.index(b)
        affect = torch.zeros(len(src), len(classes))
        affect[:, [ia, ib]] = 0.5
        fakes = transfer(G, real, src_cls, affect)
        p, idp = judge.predict(fakes)
        top2 = p.topk(2, dim=1).indices
        entry = {"p_first": mean_stat(p[:, ia]), "p_second": mean_stat(p[:, ib]), "p_pair": mean_stat(p[:, ia] + p[:, ib]),
                 "both_top2": mean_stat((top2 == ia).any(1) & (top2 == ib).any(1)),
                 "identity_preservation": mean_stat(idp.argmax(1) == src_id)}
        truth = None
        if truth_spec is not None:
            truth = render_truth(images, truth_spec, src, affect, background)
            pt, _ = judge.predict(truth)
            entry.update({"truth_p_first": mean_stat(pt[:, ia]), "truth_p_second": mean_stat(pt[:, ib])})
        name = f"{a}+{b}"
        metrics[name] = entry
        examples[name] = (fakes, truth)
    return metrics, examples


def groundtruth_metrics(classes: tuple[str, ...], real: torch.Tensor, rep: torch.Tensor, fakes: torch.Tensor,
                        truth: torch.Tensor, source: torch.Tensor, target: torch.Tensor, mixed_examples: dict) -> dict:
    """L1 / PSNR / SSIM against the renderer's truth: per target over real expression changes
    (with the do-nothing baseline: the unchanged source), for same-expression reconstructions,
    and for the mixed pairs. Transfer k is of source `real[rep[k]]`."""
    gen, copy = compare(fakes, truth), compare(real[rep], truth)
    change = source != target

    def summary(m: dict, mask: torch.Tensor) -> dict:
        return {k: mean_stat(v[mask]) for k, v in m.items()}

    rows = {name: {"generated": summary(gen, change & (target == t)), "copy": summary(copy, change & (target == t))}
            for t, name in enumerate(classes)}
    rows["all changes"] = {"generated": summary(gen, change), "copy": summary(copy, change)}
    rows["same expression"] = {"generated": summary(gen, ~change), "copy": None}
    everyone = torch.ones(len(real), dtype=torch.bool)
    for name, (mixed_fakes, mixed_truth) in mixed_examples.items():
        rows[name] = {"generated": summary(compare(mixed_fakes, mixed_truth), everyone),
                      "copy": summary(compare(real, mixed_truth), everyone)}
    return rows


def figure_images(real: torch.Tensor, fakes: torch.Tensor, truth: torch.Tensor | None, mixed_examples: dict,
                  examples: torch.Tensor, names: list[str], n_cls: int) -> tuple[list[list[torch.Tensor]], list[str]]:
    """(rows of uint8 images, row labels) for the transfer figure: per example its transfers to every
    expression and mixed pair, followed by the true renderings when there are some."""
    rows, labels = [], []
    for k, name in zip(examples.tolist(), names):
        rows.append([real[k], *fakes[k * n_cls:(k + 1) * n_cls], *(m[0][k] for m in mixed_examples.values())])
        labels.append(name)
        if truth is not None:
            rows.append([real[k], *truth[k * n_cls:(k + 1) * n_cls], *(m[1][k] for m in mixed_examples.values())])
            labels.append(f"{name} truth")
    return rows, labels
