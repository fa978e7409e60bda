"""Files the generation commands write: sample sheets, transfers, mixes, GIF animations and frames,
one output per input without collisions."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from fexgan.data import IMAGE_SUFFIXES, open_image, prepare_image
from fexgan.errors import UserError
from fexgan.figures import figure_cells
from fexgan.generate import BATCH, FExGAN, affect_name
from fexgan.visuals import image_grid


def gif_bytes(frames: Sequence[Image.Image], fps: float = 12) -> bytes:
    """Frames as a looping GIF in memory (identical consecutive frames merge, keeping their time)."""
    if not 0.5 <= fps <= 50:
        raise UserError(f"fps must be between 0.5 and 50, got {fps}")
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=list(frames[1:]), duration=round(1000 / fps),
                   loop=0)
    return buffer.getvalue()


def save_gif(frames: Sequence[Image.Image], path: str | Path, fps: float = 12,
             frames_dir: str | Path | None = None) -> Path:
    """Write frames as a looping GIF (see `gif_bytes`) and, with `frames_dir`, as numbered PNGs."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise UserError(f"output {path} must be a .gif file")
    data = gif_bytes(frames, fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if frames_dir is not None:
        folder = Path(frames_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            frame.save(folder / f"frame_{i:04d}.png")
    return path


IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp")


def image_output(path: str | Path) -> Path:
    """An output image path with a known suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_OUTPUTS:
        raise UserError(f"output {path} needs an image suffix ({', '.join(IMAGE_OUTPUTS)})")
    return path


def collect_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders (a folder's own image files, sorted)."""
    found: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"folder {item} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise UserError(f"image {item} does not exist")
    if not found:
        raise UserError("give at least one image or folder")
    return found


def output_stems(paths: Sequence[Path]) -> list[str]:
    """A distinct output name per input: its stem, with its folder's name (then a number) when stems clash."""
    stems = [p.stem for p in paths]
    stems = [f"{p.parent.name}_{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]
    return [f"{s}_{i}" if stems.count(s) > 1 else s for i, s in enumerate(stems)]


def write_sample(model: FExGAN, expression: str, n: int, seed: int, out: str | Path) -> Path:
    """A grid of decoder samples: rows of 8 for one expression, or a row per expression for 'all'."""
    out = image_output(out)
    vectors, labels, several = model.targets(expression)
    faces = model.sample(expression, n, seed)
    if several:
        rows = [figure_cells(row) for row in faces]
        sheet = image_grid(rows, labels, title=f"random samples, seed {seed} (same latent in each column)")
    else:
        rows = [figure_cells(faces[i:i + 8]) for i in range(0, n, 8)]
        sheet = image_grid(rows, title=f"{labels[0]}, seed {seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def write_transfers(model: FExGAN, inputs: Sequence[Path], to: str, out_dir: str | Path, source: str | None = None,
                    keep_size: bool = False, sample_latent: bool = False, seed: int = 0) -> list[Path]:
    """Each input to `to`: <stem>_<expression>.png, or for 'all' a labelled strip <stem>_all.png
    (the input as the model sees it, then every expression)."""
    out_dir = Path(out_dir)
    vectors, labels, several = model.targets(to)
    if source is not None:
        model.affect(source)  # a bad --from fails before any work
    out_dir.mkdir(parents=True, exist_ok=True)
    stems, size, background = output_stems(inputs), model.config.image_size, model.config.background
    written = []
    for start in range(0, len(inputs), BATCH):
        originals = [open_image(p) for p in inputs[start:start + BATCH]]
        results = model.transfer(originals, vectors if several else vectors[0], source, keep_size, sample_latent, seed)
        for stem, original, result in zip(stems[start:start + BATCH], originals, results):
            if several:
                shown = original if keep_size else Image.fromarray(prepare_image(original, size, background))
                path = out_dir / f"{stem}_all.png"
                image_grid([figure_cells([shown, *result])], col_labels=["input", *labels], background=background).save(path)
            else:
                path = out_dir / f"{stem}_{labels[0]}.png"
                result.save(path)
            written.append(path)
    return written


def write_mix(model: FExGAN, image: Path, affects: Sequence[str], out: str | Path, source: str | None = None,
              keep_size: bool = False) -> list[Path]:
    """Mixed expressions of one face. `out` with an image suffix: that file (a labelled strip of the
    input and every mix when there are several); otherwise a folder of <stem>_<affect>.png."""
    if not affects:
        raise UserError("give at least one --affect, e.g. --affect anger=0.5,sadness=0.5")
    out = Path(out)
    vectors = torch.stack([model.affect(a) for a in affects])
    labels = [affect_name(v, model.classes) for v in vectors]
    original = open_image(image)
    results = model.transfer(original, list(vectors), source, keep_size)
    if out.suffix:
        out = image_output(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if len(results) == 1:
            results[0].save(out)
        else:
            c = model.config
            shown = original if keep_size else Image.fromarray(prepare_image(original, c.image_size, c.background))
            image_grid([figure_cells([shown, *results])], col_labels=["input", *labels], background=c.background).save(out)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for label, result in zip(labels, results):
        written.append(out / f"{image.stem}_{label}.png")
        result.save(written[-1])
    return written
