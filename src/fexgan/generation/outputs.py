"""Files the generation commands write: for every input (files, folders) one output in the asked
format, named without collisions (or refused before any work, naming the clash), with a progress
bar for several inputs; an unreadable input is one warning line and the others go on.

Formats (`--format`): png (one PNG per target), strip (a labelled sheet for people), sheet (an
unlabelled sprite sheet + JSON), frames (numbered PNGs), gif / apng / webp (animations).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fexgan.data.images import (
    IMAGE_SUFFIXES,
    check_image_size,
    open_image,
    prepare_image,
)
from fexgan.errors import UserError, warn
from fexgan.generation.animation import (
    ANIMATIONS,
    animation_bytes,
    frame_count,
    kind_of,
    save_frames,
    save_image,
    save_sheet,
    write_bytes,
)
from fexgan.generation.figures import figure_cells
from fexgan.generation.inference import BATCH, FExGAN, affect_name
from fexgan.grids import image_grid

FORMATS = ("png", "strip", "sheet", "frames", "gif", "apng", "webp")
ANIMATION_FORMATS = tuple(ANIMATIONS)
IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class Job:
    """How one generation command writes what it makes of each input."""

    command: str
    labels: list[str]                     # one per image made of an input (targets or frames)
    fmt: str
    out: Path                             # a folder, or for a single input a file
    fps: float = 12
    columns: int | None = None
    strip_name: str = "all"               # a labelled strip is <stem>_<strip_name>.png
    meta: dict[str, Any] = field(default_factory=dict)   # extra fields of a sheet's JSON


@dataclass
class Report:
    """What a command wrote: files, how many inputs, the ones skipped, frame counts read back, and
    the largest side of an output (to say when it is upscaled)."""

    paths: list[Path] = field(default_factory=list)
    inputs: int = 0
    skipped: list[str] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    largest: int = 0


def image_output(path: str | Path) -> Path:
    """An output image path with a known suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_OUTPUTS:
        raise UserError(f"output {path} needs an image suffix ({', '.join(IMAGE_OUTPUTS)})")
    return path


def is_file_out(out: Path) -> bool:
    """An --out that names a file (it has a suffix and is not an existing folder)."""
    return bool(out.suffix) and not out.is_dir()


def folder_out(out: Path, command: str) -> Path:
    """An --out for a command writing a folder; one that looks like a file is an error."""
    if is_file_out(out):
        raise UserError(f"--out {out} looks like a file, but {command} writes a folder here (one output per input "
                        f"and format); give a folder, e.g. --out {out.with_suffix('')}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, but {command} writes a folder; give a folder")
    return out


def file_out(out: Path, fmt: str, command: str) -> Path:
    """An --out for a single file of `fmt`; one that looks like a folder, or of the wrong kind, is an error."""
    if not is_file_out(out):
        raise UserError(f"--out {out} looks like a folder, but {command} --format {fmt} writes one file here; "
                        f"give a file, e.g. --out {out / 'out'}{'.gif' if fmt in ANIMATION_FORMATS else '.png'}")
    if fmt == "frames":
        raise UserError(f"--format frames writes a folder of PNGs; give a folder, e.g. --out {out.with_suffix('')}")
    if fmt in ANIMATION_FORMATS:
        if kind_of(out) != fmt:
            raise UserError(f"--out {out} does not fit --format {fmt}; name it *{ANIMATIONS[fmt][0]}")
    elif fmt == "sheet" and out.suffix.lower() not in (".png", ".webp"):
        raise UserError(f"a sprite sheet is a .png or .webp file, not {out.name}")
    else:
        image_output(out)
    return out


def collect_images(items: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Image files from files and folders, and the name each one's outputs take: a file's stem, or for
    a file found below a folder (at any depth; hidden ones left out), its path below that folder
    without the suffix, so that the outputs mirror the input tree."""
    found: list[tuple[Path, str]] = []
    for item in map(Path, items):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(item).parts))
            if not files:
                raise UserError(f"folder {item} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) at any depth")
            found += [(p, p.relative_to(item).with_suffix("").as_posix()) for p in files]
        elif item.is_file():
            found.append((item, item.stem))
        else:
            raise UserError(f"image {item} does not exist")
    if not found:
        raise UserError("give at least one image or folder")
    return [p for p, _ in found], distinct_names(found)


def distinct_names(found: Sequence[tuple[Path, str]]) -> list[str]:
    """A distinct output name per (input, name): its name; when names clash, with its suffix (huge_png
    and huge_jpg), else with its folder's name (a_face, b_face), else with its position."""
    names = []
    for i, (path, name) in enumerate(found):
        twins = [q for q, other in found if other == name]
        head, _, stem = name.rpartition("/")
        head = f"{head}/" if head else ""
        if len(twins) == 1:
            names.append(name)
        elif len({q.suffix.lower() for q in twins}) == len(twins):
            names.append(f"{name}_{path.suffix.lstrip('.').lower()}")
        elif len({q.parent.name for q in twins}) == len(twins):
            names.append(f"{head}{path.parent.name}_{stem}")
        else:
            names.append(f"{name}_{i}")
    return names


def planned(job: Job, stem: str) -> list[Path]:
    """The paths `write_set` writes for one input named `stem` (in folder mode: job.out is a folder)."""
    folder = job.out
    if job.fmt == "png":
        return [folder / f"{stem}_{label}.png" for label in job.labels]
    if job.fmt == "strip":
        return [folder / f"{stem}_{job.strip_name}.png"]
    if job.fmt == "sheet":
        return [folder / f"{stem}_sheet.png", folder / f"{stem}_sheet.json"]
    if job.fmt == "frames":
        return [folder / f"{stem}_frames" / f"frame_{i:04d}.png" for i in range(len(job.labels))]
    return [folder / f"{stem}{ANIMATIONS[job.fmt][0]}"]


def check_clashes(job: Job, inputs: Sequence[Path], stems: Sequence[str]) -> None:
    """Refuse, before any work, outputs that would overwrite each other or an input."""
    seen: dict[Path, Path] = {}
    sources = {p.resolve(): p for p in inputs}
    for path, stem in zip(inputs, stems):
        for target in planned(job, stem):
            key = target.resolve()
            if key in sources:
                raise UserError(f"output {target} would overwrite the input {sources[key]}; choose another --out")
            if key in seen:
                which = "twice for" if seen[key] == path else f"for both {seen[key]} and"
                raise UserError(f"output {target} would be written {which} {path}; give each target once, or "
                                f"rename the inputs")
            seen[key] = path


def write_set(job: Job, images: Sequence[Image.Image], shown: Image.Image | None, stem: str | None,
              background: tuple[int, int, int] = (255, 255, 255),
              source: str | None = None) -> tuple[list[Path], int | None]:
    """One input's images in job.fmt: under the folder job.out (named after `stem`), or, with stem None,
    to the file job.out. Returns the paths and, for an animation, its frame count read back."""
    paths = planned(job, stem) if stem is not None else [job.out, job.out.with_suffix(".json")]
    if job.fmt == "png":
        return [save_image(im, p) for im, p in zip(images, paths)], None
    if job.fmt == "strip":
        cells = figure_cells([shown, *images] if shown is not None else list(images))
        labels = ["input", *job.labels] if shown is not None else job.labels
        return [save_image(image_grid([cells], col_labels=labels, background=background), paths[0])], None
    if job.fmt == "sheet":
        meta = {**job.meta, **({"source": source} if source else {})}
        return save_sheet(images, job.labels, paths[0], job.columns, **meta), None
    if job.fmt == "frames":
        return save_frames(images, paths[0].parent), None
    data = animation_bytes(images, job.fmt, job.fps)
    return [write_bytes(paths[0], data)], frame_count(data)


def _progress(total: int, what: str, show: bool) -> Any:
    """A progress bar on stderr for `total` inputs (off for one input or when not asked for)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TextColumn("inputs"),
                    TimeRemainingColumn(), console=Console(stderr=True, soft_wrap=True), disable=not show or total < 2)


def _readable(paths: Sequence[Path], report: Report) -> list[tuple[int, Image.Image]]:
    """(position, image) of the inputs that open; each one that does not is a warning line (an error
    when it is the only input)."""
    opened = []
    for i, path in enumerate(paths):
        try:
            opened.append((i, check_image_size(open_image(path))))
        except UserError as err:
            if report.inputs == 1:
                raise
            warn(f"skipped {path}: {err}")
            report.skipped.append(str(path))
    return opened


def run_inputs(job: Job, inputs: Sequence[Path], make: Callable[[list[Image.Image]], list[list[Image.Image]]],
               shown: Callable[[Image.Image], Image.Image] | None = None,
               background: tuple[int, int, int] = (255, 255, 255),
               batch: int = BATCH, progress: bool = True, names: Sequence[str] | None = None) -> Report:
    """Make and write every input's images, `batch` inputs per call of `make` (originals -> images per
    input); the file job.out for a single input when it names a file, else one set per input in it,
    named after `names` (as `collect_images` gives them; default: the inputs' stems)."""
    single_file = is_file_out(job.out)
    if single_file and len(inputs) != 1:
        raise UserError(f"--out {job.out} is one file, but there are {len(inputs)} inputs; give a folder")
    if single_file and job.fmt == "png" and len(job.labels) != 1:
        raise UserError(f"{len(job.labels)} images do not fit one file {job.out}; give --format strip or sheet, "
                        f"or a folder")
    stems = list(names) if names is not None else distinct_names([(p, p.stem) for p in inputs])
    if not single_file:
        check_clashes(job, inputs, stems)
    report = Report(inputs=len(inputs))
    with _progress(len(inputs), job.command, progress) as bar:
        task = bar.add_task(job.command, total=len(inputs))
        for start in range(0, len(inputs), batch):
            chunk = inputs[start:start + batch]
            opened = _readable(chunk, report)
            results = make([im for _, im in opened]) if opened else []
            for (i, original), images in zip(opened, results):
                paths, frames = write_set(job, images, shown(original) if shown else None,
                                          None if single_file else stems[start + i], background, chunk[i].name)
                report.paths += paths
                report.frames += [frames] if frames is not None else []
                report.largest = max(report.largest, *images[0].size)
            bar.advance(task, len(chunk))
    if not report.largest:
        raise UserError(f"none of the {len(inputs)} input(s) could be read (see the lines above)")
    return report


def targets_of(model: FExGAN, specs: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Affects (T, classes) and labels of --to/--affect values: each 'all' (every expression) or one affect."""
    if not specs:
        raise UserError("give at least one target, e.g. --to joy, --to all or --affect anger=0.5,sadness=0.5")
    vectors = []
    for spec in specs:
        vectors += list(torch.eye(len(model.classes))) if spec.strip().lower() == "all" else [model.affect(spec)]
    stacked = torch.stack(vectors)
    return stacked, [affect_name(v, model.classes) for v in stacked]


def model_meta(model: FExGAN) -> dict[str, Any]:
    """What a sheet's JSON says of the model that drew it."""
    path = model.path or Path("model")
    return {"model": path.parent.name if path.stem == "model" else path.stem, "model_size": model.config.image_size}


def write_faces(model: FExGAN, inputs: Sequence[Path], specs: Sequence[str], out: Path, fmt: str | None = None,
                source: str | None = None, keep_size: bool = False, size: int | None = None, matte: str = "auto",
                columns: int | None = None, fps: float = 2, sample_latent: bool = False, seed: int = 0,
                command: str = "transfer", progress: bool = True, names: Sequence[str] | None = None) -> Report:
    """transfer and mix: each input to every target of `specs` (each 'all' or an affect), written as `fmt`
    (default: strip for several targets into one file or for 'all', else png)."""
    vectors, labels = targets_of(model, specs)
    if source is not None:
        model.affect(source)  # a bad --from fails before any work
    several = len(labels) > 1
    fmt = fmt or ("strip" if (several and is_file_out(out)) or [s.lower() for s in specs] == ["all"] else "png")
    check_format(fmt, FORMATS, command)
    job = Job(command, labels, fmt, file_out(out, fmt, command) if is_file_out(out) else folder_out(out, command),
              fps, columns, "all" if [s.lower() for s in specs] == ["all"] else "strip", model_meta(model))
    c = model.config

    def make(originals: list[Image.Image]) -> list[list[Image.Image]]:
        return model.transfer(originals, list(vectors), source, keep_size, sample_latent, seed, size, matte)

    def shown(original: Image.Image) -> Image.Image:
        return original if keep_size else Image.fromarray(prepare_image(original, c.image_size, c.background))

    return run_inputs(job, inputs, make, shown if fmt == "strip" else None, c.background, progress=progress,
                      names=names)


def write_morphs(model: FExGAN, inputs: Sequence[Path], path: Sequence[str], out: Path, fmt: str | None = None,
                 frames: int = 24, loop: bool = False, fps: float = 12, source: str | None = None,
                 face_b: Path | None = None, size: int | None = None, matte: str = "auto", columns: int | None = None,
                 frames_dir: Path | None = None, progress: bool = True, names: Sequence[str] | None = None) -> Report:
    """morph: each input's animation (gif | apng | webp, by default from --out's suffix, else gif), sprite
    sheet or PNG frames; with `frames_dir` (one input) also its PNG frames there."""
    for p in path:
        model.affect(p)
    fmt = fmt or (kind_of(out) if is_file_out(out) else "gif")
    check_format(fmt, (*ANIMATION_FORMATS, "sheet", "frames"), "morph")
    job = Job("morph", [f"frame_{i:04d}" for i in range(frames)], fmt,
              file_out(out, fmt, "morph") if is_file_out(out) else folder_out(out, "morph"), fps, columns,
              meta={**model_meta(model), "fps": fps, "loop": loop})
    if frames_dir is not None and len(inputs) != 1:
        raise UserError("--frames-dir is for one input; for several give --format frames (a folder per input)")

    def make(originals: list[Image.Image]) -> list[list[Image.Image]]:
        clip = model.morph(originals[0], list(path), frames, loop, source, face_b, source, size, matte)
        if frames_dir is not None:
            save_frames(clip, frames_dir)
        return [clip]

    return run_inputs(job, inputs, make, background=model.config.background, batch=1, progress=progress,
                      names=names)


def check_format(fmt: str, allowed: Sequence[str], command: str) -> str:
    """A format this command writes."""
    if fmt not in allowed:
        raise UserError(f"{command} writes --format {' | '.join(allowed)}, not '{fmt}'")
    return fmt


def write_sample(model: FExGAN, expression: str, n: int, seed: int, out: Path, fmt: str = "strip",
                 size: int | None = None, matte: str = "none", fps: float = 2) -> Report:
    """Decoder samples: a labelled grid (strip; rows of 8, or a row per expression for 'all'), or as
    any other format: a sprite sheet with a row per expression, PNGs, frames, an animation."""
    check_format(fmt, FORMATS, "sample")
    vectors, labels, several = model.targets(expression)
    faces = model.sample(expression, n, seed, size, matte)
    rows = faces if several else [faces]
    names = [f"{label}_{i}" for label in labels for i in range(n)]
    flat = [face for row in rows for face in row]
    if fmt != "strip":
        job = Job("sample", names, fmt, file_out(out, fmt, "sample") if fmt not in ("png", "frames") else
                  folder_out(out, "sample"), fps, n, meta=model_meta(model))
        paths, frames = write_set(job, flat, None, None if is_file_out(job.out) else "sample", model.config.background)
        return Report(paths, 1, [], [frames] if frames else [], max(flat[0].size))
    out = file_out(out, fmt, "sample")
    if several:
        grid = [figure_cells(row) for row in rows]
        sheet = image_grid(grid, labels, title=f"random samples, seed {seed} (same latent in each column)")
    else:
        grid = [figure_cells(faces[i:i + 8]) for i in range(0, n, 8)]
        sheet = image_grid(grid, title=f"{labels[0]}, seed {seed}")
    return Report([save_image(sheet, out)], 1, [], [], max(flat[0].size))
