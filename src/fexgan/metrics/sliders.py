"""Sliders: what a model draws between the pure expressions, from neutral faces.

Every source (a seeded subset of the neutral images of the evaluated split) is encoded once and drawn
(`generated.transfer_each`: the inference driver, latent mean) with three families of affects:

- intensities: (1 - t) neutral + t e for every expression e but neutral and t in INTENSITIES;
- mixes: 0.5 a + 0.5 b for every pair of expressions other than neutral (the paper's three among them);
- morphs: neutral -> e in FRAMES frames, at the affects `fexgan morph --frames 12` draws (cosine-eased
  t from 0 to 1, `fexgan.generation.inference.ease`).

On toon data the renderer draws the truth of each of these affects (`groundtruth.render_truth`):
intensities and mixes are scored against it with `groundtruth.compare` (L1, PSNR, sharpness), beside the copy (the unchanged
source against the same truth); the gain is the transfer's PSNR minus the copy's. Morphs are read by
the judge: per frame the mean probability of e and of the likeliest third expression (neither e nor
neutral), and the same curves on the renderer's true morph when there is one.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import torch

from fexgan.data.pairs import seeded_subset
from fexgan.data.sources import ImageSet
from fexgan.expressions import MIXED_PAIRS
from fexgan.generation.inference import ease
from fexgan.metrics.accuracy import mean_stat
from fexgan.metrics.generated import transfer_each
from fexgan.metrics.groundtruth import compare, render_truth
from fexgan.metrics.judge import Judge
from fexgan.nets.networks import Generator

SOURCE = "neutral"                  # the expression every slider starts from
INTENSITIES = (0.25, 0.5, 0.75, 1.0)
FRAMES = 12
SOURCES = 32                        # neutral source images by default (each: 100 affects drawn)
DROP_BAR, THIRD_BAR = 0.05, 0.2     # a straight morph: p(e) never falls more, no third expression is read higher


class AffectTable:
    """The distinct affect vectors asked for, each transferred once; `row` gives a vector's position."""

    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        self.rows: dict[tuple[float, ...], int] = {}

    def row(self, weights: dict[str, float]) -> int:
        key = tuple(round(float(weights.get(c, 0.0)), 6) for c in self.classes)
        return self.rows.setdefault(key, len(self.rows))

    def tensor(self) -> torch.Tensor:
        return torch.tensor(list(self.rows), dtype=torch.float32)


def frame_t() -> list[float]:
    """The weight of the target expression in each morph frame, as `fexgan morph` spaces them."""
    return ease(torch.arange(FRAMES) / (FRAMES - 1)).tolist()


def slider_sources(images: ImageSet, indices: torch.Tensor, count: int, seed: int) -> torch.Tensor | str:
    """A seeded subset of at most `count` neutral images of `indices`, or why there is none."""
    if count <= 0:
        return "not measured (sliders=0)"
    if SOURCE not in images.classes:
        return f"not measured: the data has no '{SOURCE}' expression to start the sliders from"
    neutral = indices[images.expression[indices] == images.classes.index(SOURCE)]
    if len(neutral) == 0:
        return f"not measured: the split has no {SOURCE} image"
    return seeded_subset(neutral, count, seed)


def slider_metrics(G: Generator, judge: Judge, images: ImageSet, sources: torch.Tensor | str,
                   truth_spec: str | None, background: tuple[int, int, int]) -> dict:
    """Intensities and mixes against the truth (toon `truth_spec` only) and the judge's morph curves, from
    the neutral `sources` (`slider_sources`); {"skipped": reason} when there are none."""
    if isinstance(sources, str):
        return {"skipped": sources}
    classes = tuple(images.classes)
    targets = [c for c in classes if c != SOURCE]
    table, ts = AffectTable(classes), frame_t()
    ramps = {e: {t: table.row({SOURCE: 1 - t, e: t}) for t in INTENSITIES} for e in targets}
    paper = [(a, b) for a, b in MIXED_PAIRS if a in targets and b in targets]     # first, as the paper names them
    rest = [(a, b) for a, b in combinations(targets, 2) if (a, b) not in paper and (b, a) not in paper]
    pairs = {f"{a}+{b}": table.row({a: 0.5, b: 0.5}) for a, b in paper + rest}
    morphs = {e: [table.row({SOURCE: 1 - t, e: t}) for t in ts] for e in targets}
    affects, n_src = table.tensor(), len(sources)
    fakes = transfer_each(G, images.images[sources], images.expression[sources], affects)
    result: dict = {"sources": n_src, "source_expression": SOURCE, "intensities": list(INTENSITIES),
                    "frames": FRAMES, "frame_t": [round(t, 4) for t in ts],
                    "morph": morph_curves(judge.predict(fakes)[0].view(n_src, len(affects), -1), morphs, classes)}
    if truth_spec is None:
        return {**result, "intensity": None, "mixes": None, "truth_morph": None,
                "note": "the intensity and mix gains need ground truth (toon data); the morphs are judged only"}
    truth = render_truth(images, truth_spec, sources.repeat_interleave(len(affects)), affects.repeat(n_src, 1),
                         background)
    cells = truth_cells(images.images[sources], fakes, truth, [*(r for e in ramps.values() for r in e.values()),
                                                               *pairs.values()])
    intensity = {"per_t": {str(t): scored(cells, [ramps[e][t] for e in targets]) for t in INTENSITIES},
                 "per_expression": {e: {str(t): scored(cells, [row]) for t, row in rows.items()}
                                    for e, rows in ramps.items()}}
    names = list(pairs)
    mixes = {"all": scored(cells, list(pairs.values())), "paper": scored(cells, [pairs[p] for p in names[:len(paper)]]),
             "paper_pairs": names[:len(paper)], "per_pair": {name: scored(cells, [row]) for name, row in pairs.items()}}
    truth_p = judge.predict(truth)[0].view(n_src, len(affects), -1)
    return {**result, "intensity": intensity, "mixes": mixes, "truth_morph": morph_curves(truth_p, morphs, classes)}


def truth_cells(real: torch.Tensor, fakes: torch.Tensor, truth: torch.Tensor, rows: list[int]
                ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`groundtruth.compare` (L1, PSNR, sharpness) of the transfers and of the copy (the unchanged source)
    against the truth, for the affects `rows` of every source: per metric two (sources, affects) tables,
    NaN in the affects not compared. `fakes` and `truth` hold every affect of one source, then the next."""
    n_src = len(real)
    n_aff = len(fakes) // n_src
    rows = sorted(set(rows))
    pick = (torch.arange(n_src)[:, None] * n_aff + torch.tensor(rows)[None]).flatten()
    gen = compare(fakes[pick], truth[pick], ssim=False)
    copy = compare(real.repeat_interleave(len(rows), 0), truth[pick], ssim=False)

    def table(values: torch.Tensor) -> torch.Tensor:
        full = torch.full((n_src, n_aff), float("nan"))
        full[:, rows] = values.view(n_src, len(rows))
        return full

    return {k: (table(gen[k]), table(copy[k])) for k in gen}


def scored(cells: dict[str, tuple[torch.Tensor, torch.Tensor]], columns: list[int]) -> dict:
    """L1 / PSNR / sharpness of the transfers and of the copy over the affects `columns` of
    every source, and the gain: the transfer's PSNR minus the copy's, per image, averaged."""
    if not columns:
        return {"generated": None, "copy": None, "gain": mean_stat(torch.empty(0))}
    return {"generated": {k: mean_stat(g[:, columns]) for k, (g, _) in cells.items()},
            "copy": {k: mean_stat(c[:, columns]) for k, (_, c) in cells.items()},
            "gain": mean_stat(cells["psnr"][0][:, columns] - cells["psnr"][1][:, columns])}


def morph_curves(p: torch.Tensor, morphs: dict[str, list[int]], classes: tuple[str, ...]) -> dict:
    """From judge probabilities (sources, affects, classes): per morph neutral -> e the mean p(e) and
    the mean largest third-expression probability per frame, their largest frame-to-frame fall and
    peak (naming the third read most there), the fraction of sources whose own morph stays within
    both bars; and the worst of each over all expressions."""
    per_e, straight_all = {}, []
    for e, rows in morphs.items():
        third = [i for i, c in enumerate(classes) if c not in (e, SOURCE)]
        p_e = p[:, rows, classes.index(e)]                                   # (sources, frames)
        p_others = p[:, rows][:, :, third] if third else torch.zeros(*p_e.shape, 1)
        p_third = p_others.max(-1).values
        curve_e, curve_third = p_e.mean(0), p_third.mean(0)
        peak = int(curve_third.argmax())
        own_drop = (p_e[:, :-1] - p_e[:, 1:]).max(1).values
        straight = (own_drop <= DROP_BAR) & (p_third.max(1).values <= THIRD_BAR)
        straight_all.append(straight)
        per_e[e] = {"p_target": _rounded(curve_e), "p_third": _rounded(curve_third), "n": len(p),
                    "max_drop": round(max(float((curve_e[:-1] - curve_e[1:]).max()), 0.0), 4),
                    "max_third": round(float(curve_third[peak]), 4),
                    "third_at_peak": classes[third[int(p_others[:, peak].mean(0).argmax())]] if third else None,
                    "straight": mean_stat(straight)}
    overall = {"max_drop": max(m["max_drop"] for m in per_e.values()),
               "max_third": max(m["max_third"] for m in per_e.values()),
               "straight": mean_stat(torch.cat(straight_all))}
    return {"per_expression": per_e, "overall": overall}


def _rounded(curve: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in curve]


def plot_sliders(s: dict, path: Path) -> None:
    """sliders.png: the gain over the copy against t per expression (when there is a truth), and the
    judge's p(e) and largest third-expression probability per morph frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    morph = s["morph"]["per_expression"]
    colours = dict(zip(morph, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    if s.get("intensity"):
        ts = s["intensities"]
        for e, rows in s["intensity"]["per_expression"].items():
            ax.plot(ts, [rows[str(t)]["gain"]["value"] for t in ts], "o-", color=colours[e], label=e)
        ax.plot(ts, [s["intensity"]["per_t"][str(t)]["gain"]["value"] for t in ts], "s-", color="black", lw=2.5,
                label="mean")
        ax.axhline(0, color="grey", lw=1, ls=":")
        ax.scatter([0.5], [s["mixes"]["all"]["gain"]["value"]], marker="*", s=160, color="black", zorder=5,
                   label="50/50 mixes (all pairs)")
        ax.set_xlabel("t in (1 - t) neutral + t e")
        ax.set_ylabel("PSNR gain over the copy (dB)")
    else:
        ax.text(0.5, 0.5, "intensity gains need ground truth\n(toon data)", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"intensities from {s['sources']} neutral faces", fontsize=10)
    frames = range(1, s["frames"] + 1)
    for ax, key, title in ((axes[1], "p_target", "judge: p(e) along neutral -> e"),
                           (axes[2], "p_third", "judge: largest p of a third expression")):
        for e, m in morph.items():
            ax.plot(frames, m[key], "o-", ms=3, color=colours[e], label=e)
            if s.get("truth_morph"):
                ax.plot(frames, s["truth_morph"]["per_expression"][e][key], ":", color=colours[e])
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"morph frame (of {s['frames']})" + ("; dotted: the true morph" if s.get("truth_morph") else ""))
        ax.set_title(title, fontsize=10)
    axes[2].axhline(THIRD_BAR, color="grey", lw=1, ls="--")
    axes[2].text(1, THIRD_BAR + 0.02, f"{THIRD_BAR}", color="grey", fontsize=8)
    axes[0 if s.get("intensity") else 1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
