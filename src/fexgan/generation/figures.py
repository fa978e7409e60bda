"""The paper's figures for a run: Fig. 4 (random faces per expression, the decoder alone), Fig. 5 (each
character's neutral face to every expression) and Fig. 6 (mixed expressions between the pure ones)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from fexgan.data.images import to_model_input, to_pil
from fexgan.data.pairs import one_per_identity
from fexgan.data.sources import load_source
from fexgan.errors import UserError
from fexgan.expressions import MIXED_PAIRS
from fexgan.generation.inference import FExGAN
from fexgan.grids import image_grid
from fexgan.presets import load_run_config

FIGURE_CELL = 128   # figures show every face at least this large


def figure_cells(images: Sequence[Image.Image]) -> list[Image.Image]:
    """Images for a labelled sheet, enlarged to at least FIGURE_CELL px high so labels fit."""
    scale = FIGURE_CELL / images[0].height
    if scale <= 1:
        return list(images)
    return [im.resize((round(im.width * scale), FIGURE_CELL), Image.Resampling.LANCZOS) for im in images]


def neutral_faces(run: Path, model: FExGAN) -> tuple[torch.Tensor, list[str]]:
    """Each character's first neutral face in the run's validation split (train split if the
    validation split has none): (images in [-1, 1], character names)."""
    cfg = load_run_config(run)
    split = json.loads((run / "data.json").read_text())
    classes = model.classes
    data = load_source(cfg.data.source, model.config.image_size, model.config.background, classes)
    index = {name: i for i, name in enumerate(data.names)}
    ordered = torch.tensor([index[n] for part in ("val", "train") for n in split.get(part, []) if n in index],
                           dtype=torch.long)
    chosen = ordered[one_per_identity(data, ordered)] if len(ordered) else ordered
    neutral = classes.index("neutral") if "neutral" in classes else 0
    chosen = chosen[data.expression[chosen] == neutral]
    if not len(chosen):
        raise UserError(f"the data of run {run} ({cfg['data']}) has no {classes[neutral]} face to show")
    return to_model_input(data.images[chosen]), [data.identities[i] for i in data.identity[chosen].tolist()]


def figures(run: str | Path, out_dir: str | Path, n: int = 8, seed: int = 0, device: str = "auto") -> list[Path]:
    """The paper's Figs. 4-6 for a run, as labelled PNGs in `out_dir`; returns their paths."""
    run, out = Path(run), Path(out_dir)
    if not (run / "config.json").is_file() or not (run / "data.json").is_file():
        raise UserError(f"{run} is not a run folder (it needs config.json and data.json)")
    model = FExGAN.load(run, device)
    classes = model.classes
    faces, characters = neutral_faces(run, model)
    neutral = "neutral" if "neutral" in classes else classes[0]
    out.mkdir(parents=True, exist_ok=True)
    written = []

    rows = [figure_cells(row) for row in model.sample("all", n, seed)]
    sheet = image_grid(rows, list(classes), title=f"Fig. 4: random samples per expression (decoder alone, seed {seed})")
    written.append(out / "fig4_random_samples.png")
    sheet.save(written[-1])

    moved = model.transfer_tensor(faces, torch.eye(len(classes)), source=neutral)
    rows = [figure_cells(to_pil(face[None]) + to_pil(row)) for face, row in zip(faces, moved)]
    sheet = image_grid(rows, characters, ["input", *classes], title="Fig. 5: each character's neutral face to every expression")
    written.append(out / "fig5_transfer.png")
    sheet.save(written[-1])

    pairs = [(a, b) for a, b in MIXED_PAIRS if a in classes and b in classes]
    labels = [lab for a, b in pairs for lab in (a, f"{a}+{b}", b)]
    targets = torch.stack([v for a, b in pairs for v in (model.affect(a), model.affect({a: 0.5, b: 0.5}), model.affect(b))])
    moved = model.transfer_tensor(faces, targets, source=neutral)
    rows = [figure_cells(to_pil(face[None]) + to_pil(row)) for face, row in zip(faces, moved)]
    sheet = image_grid(rows, characters, ["input", *labels], title="Fig. 6: mixed expressions (0.5 + 0.5) between the pure ones")
    written.append(out / "fig6_mixed.png")
    sheet.save(written[-1])
    return written
