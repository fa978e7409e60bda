"""Writing an evaluation: metrics.json, a readable report.md, the confusion-matrix plot and figures."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from fexgan.data.images import to_model_input, to_pil
from fexgan.files.checkpoint import atomic_write
from fexgan.generation.figures import figure_cells
from fexgan.grids import image_grid
from fexgan.metrics.accuracy import COLUMNS
from fexgan.metrics.sliders import DROP_BAR, THIRD_BAR, plot_sliders


def fmt(s: dict | None, digits: int = 3) -> str:
    """'0.981 (n=500)' from a {"value", "n"} stat."""
    if s is None:
        return "-"
    v = s["value"]
    return f"{'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}f}'} (n={s['n']})"


def headline(r: dict) -> list[str]:
    """The few lines a user reads first (the CLI prints them too)."""
    t, lines = r["transfer"], []
    if r.get("groundtruth"):  # first: the judge alone cannot tell a sharp face from a blur
        g, c = r["groundtruth"]["all changes"]["generated"], r["groundtruth"]["all changes"]["copy"]
        lines.append(f"ground truth of expression changes: PSNR {fmt(g['psnr'], 2)} dB vs {c['psnr']['value']:.2f} "
                     f"for the unchanged input ({verdict(g, c)}); L1 {g['l1']['value']:.4f} vs "
                     f"{c['l1']['value']:.4f}; SSIM {g['ssim']['value']:.3f} vs {c['ssim']['value']:.3f}; "
                     f"sharpness {g['sharpness']['value']:.2f} of the truth's")
    for split, row in r["table1"].items():
        lines.append(f"Table 1 {split}: real binary {fmt(row['real_binary'])}, real multi {fmt(row['real_multi'])}, "
                     f"fake binary {fmt(row['fake_binary'])}, fake multi {fmt(row['fake_multi'])}")
    ceiling = (f" (of the true targets: {r['judge_truth']['expression_accuracy']['value']:.3f})"
               if r.get("judge_truth") else "")
    lines.append(f"judge expression accuracy of transfers {fmt(t['expression_accuracy'])}{ceiling}; "
                 f"identity preservation {fmt(t['identity_preservation'])}")
    fid = r["realism"]["fid_transfer"]
    lines.append(f"FID (judge features) transfers vs real {fid['value']:.2f} (n={fid['n']} vs {fid['n_real']})")
    if r.get("sliders") and "skipped" not in r["sliders"]:
        lines.append(slider_headline(r["sliders"]))
    return lines


def slider_headline(s: dict) -> str:
    """One line on the sliders: the gains over the copy per intensity and on the mixes, and the morphs."""
    m = s["morph"]["overall"]
    morphs = (f"morphs neutral -> e: largest fall of the judge's p(e) between frames {m['max_drop']:.2f}, "
              f"largest third expression {m['max_third']:.2f}, straight for {m['straight']['value']:.2f} of them")
    if not s.get("intensity"):
        return f"sliders from {s['sources']} neutral faces: {morphs} (the intensity gains need ground truth)"
    gains = " / ".join(f"{s['intensity']['per_t'][str(t)]['gain']['value']:+.2f}" for t in s["intensities"])
    return (f"sliders from {s['sources']} neutral faces: PSNR gain over the copy at t = "
            f"{' / '.join(f'{t:g}' for t in s['intensities'])}: {gains} dB, 50/50 mixes "
            f"{s['mixes']['all']['gain']['value']:+.2f} dB; {morphs}")


def verdict(generated: dict, copy: dict) -> str:
    """How the generated PSNR stands against the do-nothing copy's."""
    gain = generated["psnr"]["value"] - copy["psnr"]["value"]
    return f"{gain:+.2f} dB: " + ("better than handing back the input" if gain > 0 else
                                  "WORSE than handing back the input unchanged")


def write_report(r: dict, out: Path, figure: tuple[list[list[torch.Tensor]], list[str]], samples: torch.Tensor) -> None:
    """metrics.json, report.md, confusion.png, transfers.png and samples.png into `out`.

    `figure` holds the rows of uint8 images of the transfer figure and their labels; `samples` are
    random decoder samples, one per expression in turn."""
    out.mkdir(parents=True, exist_ok=True)
    classes = r["classes"]
    plot_confusion(r["transfer"], classes, out / "confusion.png")
    rows, labels = figure
    tiles = [figure_cells(to_pil(to_model_input(torch.stack(row)))) for row in rows]
    image_grid(tiles, labels, ["input", *classes, *r["mixed"]],
               title="transfers (rows: generated" + (", then the renderer's truth)" if r.get("groundtruth") else ")")
               ).save(out / "transfers.png")
    cols = len(classes)
    sample_rows = [figure_cells(to_pil(to_model_input(samples[i:i + cols]))) for i in range(0, len(samples), cols)]
    image_grid(sample_rows, None, list(classes), title="random samples: decoder(z ~ N(0, I), expression)"
               ).save(out / "samples.png")
    if r.get("sliders") and "skipped" not in r["sliders"]:
        plot_sliders(r["sliders"], out / "sliders.png")
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(r, indent=2)))
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(markdown(r)))


def markdown(r: dict) -> str:
    """report.md: every table of an evaluation, ground truth first."""
    sections = (_intro, _groundtruth, _table1, _transfers, _mixed, _sliders, _realism)
    return "\n".join([line for section in sections for line in section(r)] + ["## Figures", "", "![transfers](transfers.png)", ""])


def _intro(r: dict) -> list[str]:
    """What was evaluated, the judge, the headline."""
    judge = r["judge"]["accuracy"]
    lines = [
        f"# Evaluation of `{r['model']}`", "",
        f"Data `{r['data']}` ({r['image_size']} px; split sizes train {r['split_sizes']['train']}, "
        f"val {r['split_sizes']['val']}), evaluated on the **{r['split']}** split: n = {r['n']} source images at most, "
        f"seed {r['seed']}, device {r['device']}, {r['seconds']} s. Every number is followed by the number of "
        f"images it is based on.", "",
        f"The judge (an expression + identity classifier trained on real training images only, never on generated "
        f"ones; `{r['judge']['path']}`) scores {judge['expression']:.3f} expression and {judge['identity']:.3f} "
        f"identity accuracy on {judge['n']} held-out real images.", "",
        *([f"The sources are the {len(r['held_out'])} identities the model never saw in training "
           f"({', '.join(r['held_out'])}): a zero-shot test of unseen characters.", ""]
          if r["split"] == "held_out" else []),
        "## Headline", "", *[f"- {line}" for line in headline(r)], "",
    ]
    return lines


def _groundtruth(r: dict) -> list[str]:
    """Ground truth against the toon renderer, beside the do-nothing copy."""
    lines: list[str] = []
    if r.get("groundtruth"):
        lines += ["## Ground truth (toon renderer)", "",
                  "The renderer draws the true target of every transfer: same character, same variation, target "
                  "affect. L1 on pixels in [-1, 1] (the training loss), PSNR (dB) and SSIM on [0, 1]; sharpness is "
                  "the mean gradient magnitude of the image over the truth's (a blur scores well below 1). "
                  "'Copy' is the do-nothing baseline: the unchanged source against the same truth; a model that "
                  "does not beat it has not learned to edit. Per-target rows count only real changes "
                  "(target != source expression).", "",
                  "| target | PSNR | copy PSNR | L1 | copy L1 | SSIM | copy SSIM | sharpness |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, row in r["groundtruth"].items():
            g, c = row["generated"], row["copy"]
            cells = [fmt(g["psnr"], 2), fmt(c["psnr"], 2) if c else "-", fmt(g["l1"], 4), fmt(c["l1"], 4) if c else "-",
                     fmt(g["ssim"]), fmt(c["ssim"]) if c else "-", fmt(g["sharpness"], 2)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _table1(r: dict) -> list[str]:
    """The paper's Table 1 beside ours."""
    lines: list[str] = []
    lines += [
        "## Table 1: the discriminator's accuracy (the paper's table)", "",
        "Real: real images of the split with their expression. Fake: each of them transferred to a random target "
        "expression. Binary: called real (for real) or fake (for fake); multi: the expression (the target, for fake)."
        + ("" if r["table1"] else " This model file has no discriminator: only the paper's numbers are shown."),
        "", "| | real, binary | real, multi | fake, binary | fake, multi |", "|---|---|---|---|---|",
    ]
    for split in ("train", "val"):
        if split in r["table1"]:
            lines.append(f"| {split} (ours) | " + " | ".join(fmt(r["table1"][split][c]) for c in COLUMNS) + " |")
        lines.append(f"| {split} (paper, FERG-DB) | " + " | ".join(f"{r['paper_table1'][split][c]:.3f}" for c in COLUMNS) + " |")
    return lines


def _transfers(r: dict) -> list[str]:
    """The judge's verdict on every transfer, per target and per character."""
    classes, t = r["classes"], r["transfer"]
    jr = r["judge_real"]
    lines = ["", "## Expression transfer, judged", "",
              f"Each source of the {r['split']} split transferred to every expression. For reference, the judge on "
              f"the same real sources: expression {fmt(jr['expression'])}, identity {fmt(jr['identity'])}.", "",
              "The last column, on toon faces: the judge on the renderer's true targets, the most a generator can "
              "score.", "",
              "| target | judge: expression accuracy | judge: identity preserved | judge on the truth |",
              "|---|---|---|---|"]
    truth = r.get("judge_truth") or {}

    def on_truth(group: str, name: str) -> str:
        return f"{truth[group][name]['expression_accuracy']['value']:.3f}" if truth else "-"

    lines += [f"| {c} | {fmt(t['per_target'][c]['expression_accuracy'])} | {fmt(t['per_target'][c]['identity_preservation'])} "
              f"| {on_truth('per_target', c)} |" for c in classes]
    everyone = f"{truth['expression_accuracy']['value']:.3f}" if truth else "-"
    lines += [f"| **all** | {fmt(t['expression_accuracy'])} | {fmt(t['identity_preservation'])} | {everyone} |", ""]
    if t.get("per_character"):
        lines += ["| source character | judge: expression accuracy | judge: identity preserved | judge on the truth |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {fmt(m['expression_accuracy'])} | {fmt(m['identity_preservation'])} "
                  f"| {on_truth('per_character', name)} |" for name, m in t["per_character"].items()] + [""]
    lines += ["![confusion](confusion.png)", ""]
    return lines


def _mixed(r: dict) -> list[str]:
    """The paper's three mixed pairs, judged."""
    lines: list[str] = []
    if r["mixed"]:
        truth = "truth_p_first" in next(iter(r["mixed"].values()))
        lines += ["## Mixed expressions (the paper's three pairs, 0.5 + 0.5)", "",
                  "Mean judge probability of each of the two classes on the transfers"
                  + (" and, for reference, on the renderer's true mixed face" if truth else "") + ".", "",
                  "| affect | p(first) | p(second) | p(first) + p(second) | both in top 2 | identity preserved |"
                  + (" truth p(first) | truth p(second) |" if truth else ""),
                  "|---|---|---|---|---|---|" + ("---|---|" if truth else "")]
        for name, m in r["mixed"].items():
            cells = [m["p_first"], m["p_second"], m["p_pair"], m["both_top2"], m["identity_preservation"]]
            cells += [m["truth_p_first"], m["truth_p_second"]] if truth else []
            lines.append(f"| {name} | " + " | ".join(fmt(c) for c in cells) + " |")
        lines.append("")
    return lines


def _sliders(r: dict) -> list[str]:
    """Intensities and 50/50 mixes against the truth, morphs judged, from neutral faces."""
    s = r.get("sliders")
    if not s:
        return []
    lines = ["## Sliders: intensities, mixes and morphs from neutral faces", ""]
    if "skipped" in s:
        return lines + [f"Sliders {s['skipped']}.", ""]
    lines += [f"{s['sources']} neutral faces of the {r['split']} split, each transferred to (1 - t) neutral + t e for "
              f"every expression e and t = {', '.join(f'{t:g}' for t in s['intensities'])}, to every 50/50 mix of "
              f"two expressions, and along the {s['frames']} frames of the morph neutral -> e (`fexgan morph "
              f"--frames {s['frames']}`: t = {', '.join(f'{t:.2f}' for t in s['frame_t'])}).", ""]
    if s.get("intensity"):
        lines += _slider_intensities(s)
    else:
        lines += [s["note"][:1].upper() + s["note"][1:] + ".", ""]
    return lines + _slider_morphs(s) + ["![sliders](sliders.png)", ""]


def _slider_intensities(s: dict) -> list[str]:
    """The gain over the copy per expression and t, then per t and per mix with PSNR, L1 and sharpness."""
    ts, it = s["intensities"], s["intensity"]
    lines = ["Against the renderer's truth of that very affect: the gain is the transfer's PSNR minus the copy's "
             "(the unchanged neutral source against the same truth), in dB; above 0 the model edits towards the "
             "truth, below 0 handing back the input would be closer.", "",
             "| expression | " + " | ".join(f"t = {t:g}" for t in ts) + " |", "|---|" + "---:|" * len(ts)]
    lines += [f"| {e} | " + " | ".join(f"{rows[str(t)]['gain']['value']:+.2f}" for t in ts) + " |"
              for e, rows in it["per_expression"].items()]
    lines += ["| **mean** | " + " | ".join(f"**{it['per_t'][str(t)]['gain']['value']:+.2f}**" for t in ts) + " |", "",
              "| affect | gain (dB) | PSNR | copy PSNR | L1 | copy L1 | sharpness |", "|---|---|---|---|---|---|---|"]
    mixes = s["mixes"]
    rows = [*((f"t = {t:g}, every e", it["per_t"][str(t)]) for t in ts), ("50/50 mixes, all pairs", mixes["all"]),
            (f"50/50 mixes, the paper's ({', '.join(mixes['paper_pairs'])})", mixes["paper"]),
            *mixes["per_pair"].items()]
    for name, m in rows:
        g, c = m["generated"], m["copy"]
        if g is not None:
            lines.append(f"| {name} | {m['gain']['value']:+.2f} | {fmt(g['psnr'], 2)} | {fmt(c['psnr'], 2)} | "
                         f"{fmt(g['l1'], 4)} | {fmt(c['l1'], 4)} | {fmt(g['sharpness'], 2)} |")
    return lines + [""]


def _slider_morphs(s: dict) -> list[str]:
    """Per morph neutral -> e: the judge's p(e) per frame, its largest fall, the largest third expression."""
    truth = s.get("truth_morph")
    lines = [f"Morphs, judged: the mean probability of e per frame, its largest fall from one frame to the next, "
             f"the largest mean probability of a third expression (neither e nor neutral) and which, and the "
             f"fraction of faces whose own morph never falls by more than {DROP_BAR} nor reads a third expression "
             f"above {THIRD_BAR}" + (" (beside it, the same on the renderer's true morph)." if truth else "."), "",
             "| morph | p(e) per frame | largest fall | largest third | straight |"
             + (" truth: fall / third |" if truth else ""), "|---|---|---|---|---|" + ("---|" if truth else "")]
    for e, m in s["morph"]["per_expression"].items():
        cells = [" ".join(f"{p:.2f}" for p in m["p_target"]), f"{m['max_drop']:.3f}",
                 f"{m['max_third']:.3f} ({m['third_at_peak']})", fmt(m["straight"])]
        if truth:
            t = truth["per_expression"][e]
            cells.append(f"{t['max_drop']:.3f} / {t['max_third']:.3f}")
        lines.append(f"| neutral -> {e} | " + " | ".join(cells) + " |")
    o = s["morph"]["overall"]
    lines.append(f"| **all** | | **{o['max_drop']:.3f}** | **{o['max_third']:.3f}** | {fmt(o['straight'])} |"
                 + (f" {truth['overall']['max_drop']:.3f} / {truth['overall']['max_third']:.3f} |" if truth else ""))
    return lines + [""]


def _realism(r: dict) -> list[str]:
    """FID and diversity in the judge's feature space."""
    lines: list[str] = []
    re = r["realism"]
    lines += ["## Realism and diversity (judge feature space)", "",
              "FID: Frechet distance between feature statistics of real images of the split and generated images "
              "(lower is better; biased upwards at small n, so compare at the same n). Diversity: mean pairwise "
              "feature distance between images of the same expression.", "",
              "| measure | value | images |", "|---|---|---|",
              f"| FID, transfers (random target) vs real | {re['fid_transfer']['value']:.3f} | "
              f"{re['fid_transfer']['n']} vs {re['fid_transfer']['n_real']} |",
              f"| FID, random decoder samples vs real | {re['fid_samples']['value']:.3f} | "
              f"{re['fid_samples']['n']} vs {re['fid_samples']['n_real']} |"]
    if "fid_real_reference" in re:
        lines.append(f"| FID, real images of the other split vs real (the floor at this n) | "
                     f"{re['fid_real_reference']['value']:.3f} | {re['fid_real_reference']['n']} vs {re['fid_real_reference']['n_real']} |")
    lines += [f"| diversity, random decoder samples | {re['diversity_samples']['value']:.3f} | {re['diversity_samples']['n']} |",
              f"| diversity, real images | {re['diversity_real']['value']:.3f} | {re['diversity_real']['n']} |", "",
              "![samples](samples.png)", ""]
    return lines


def plot_confusion(t: dict, classes: list[str], path: Path) -> None:
    """Two heat maps: judge accuracy by source x target expression, and target x predicted expression."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    acc = np.array(t["accuracy_source_x_target"], dtype=float)
    counts = np.array(t["count_source_x_target"])
    pred = np.array(t["count_target_x_predicted"], dtype=float)
    pred = pred / np.maximum(pred.sum(1, keepdims=True), 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    panels = [(axes[0], acc, "judge accuracy of transfers\n(source expression x target expression)",
               "target", "source"),
              (axes[1], pred, "judge prediction of transfers, row-normalised\n(target x predicted)",
               "predicted by the judge", "target")]
    for ax, m, title, xlabel, ylabel in panels:
        ax.imshow(np.nan_to_num(m, nan=0.0), vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, "-" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if np.nan_to_num(m[i, j]) < 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"{int(counts.sum())} transfers", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
