"""The generation commands of `fexgan`: sample, transfer, mix and morph (merged into the main app by
`fexgan.cli.main`), the options they share and the summary they print."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from fexgan.errors import UserError

if TYPE_CHECKING:
    from fexgan.generation.outputs import Report

generation = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)

MODEL_HELP = "run folder, .safetensors model file or shipped model name"
FORMAT_HELP = ("png (a file per target) | strip (labelled, for people) | sheet (sprite sheet + JSON) | "
               "frames (numbered PNGs) | gif | apng | webp")


def size_option() -> typer.models.OptionInfo:
    return typer.Option(None, help="output side in px, square (default: the model's size; larger is upscaled)")


def matte_option(default: str = "auto") -> typer.models.OptionInfo:
    return typer.Option(default, help="alpha of the outputs: auto (the input's, when it has transparency) | input | "
                        "outline | key (from the background colour) | none")


def device_option() -> typer.models.OptionInfo:
    return typer.Option("auto", help="auto | cpu | cuda")


def report(written: Report, model_size: int, out: Path) -> None:
    """The command's last lines: upscaling, what was written (frame counts as read back), skipped inputs
    (then exit status 1: some outputs are missing)."""
    from fexgan.errors import warn
    from fexgan.generation.matte import upscale_note

    note = upscale_note(model_size, [written.largest])
    if note:
        warn(note)
    counts = sorted(set(written.frames))
    frames = f" ({' or '.join(map(str, counts))} frames each, read back)" if counts else ""
    where = written.paths[0] if len(written.paths) == 1 else out
    console.print(f"wrote {len(written.paths)} file(s) for {written.inputs - len(written.skipped)} input(s) to "
                  f"{escape(str(where))}{frames}", highlight=False, soft_wrap=True)
    if written.skipped:
        console.print(f"[yellow]skipped {len(written.skipped)} unreadable input(s)[/]", highlight=False)
        raise typer.Exit(1)


@generation.command()
def sample(
    model: str = typer.Argument(..., help=MODEL_HELP),
    expression: str = typer.Option("all", help="expression name, an affect like anger=0.5,sadness=0.5, or all"),
    n: int = typer.Option(16, help="samples per expression (1-1024)"),
    seed: int = typer.Option(0, help="random seed of the latents"),
    format_: str = typer.Option("strip", "--format", help=f"{FORMAT_HELP} (png and frames: --out is a folder)"),
    size: int | None = size_option(),
    matte: str = typer.Option("none", help="none | key: cut the faces out of the background colour"),
    fps: float = typer.Option(2, help="frames per second of an animation"),
    out: Path = typer.Option(..., help="output file (.png/.jpg; .gif/.webp for an animation) or folder"),
    device: str = device_option(),
) -> None:
    """Faces drawn by the decoder alone from random latents (paper Fig. 4)."""
    from fexgan.generation.inference import FExGAN
    from fexgan.generation.outputs import write_sample

    loaded = FExGAN.load(model, device)
    report(write_sample(loaded, expression, n, seed, out, format_, size, matte, fps), loaded.config.image_size, out)


@generation.command()
def transfer(
    model: str = typer.Argument(..., help=MODEL_HELP),
    images: list[Path] = typer.Argument(..., help="image files and/or folders of images"),
    to: list[str] = typer.Option(..., help="target: an expression, all, or one mixed affect like anger=0.5,sadness=0.5; "
                                 "repeat for several (--to joy --to anger)"),
    from_: str | None = typer.Option(None, "--from", help="source expression (default: predicted by the discriminator)"),
    format_: str | None = typer.Option(None, "--format", help=f"{FORMAT_HELP} (default: strip for all, else png)"),
    size: int | None = size_option(),
    keep_size: bool = typer.Option(False, help="give each output its input's size"),
    matte: str = matte_option(),
    columns: int | None = typer.Option(None, help="cells per row of a sprite sheet (default: all in one row)"),
    fps: float = typer.Option(2, help="frames per second of an animation through the targets"),
    sample_latent: bool = typer.Option(False, help="draw the latent from N(mu, sigma) instead of using mu"),
    seed: int = typer.Option(0, help="random seed for --sample-latent"),
    out: Path = typer.Option(Path("."), help="output folder"),
    device: str = device_option(),
) -> None:
    """Turn faces to other expressions: per input a PNG per target, a labelled strip, a sprite sheet,
    frames or an animation (paper Fig. 5)."""
    from fexgan.generation.inference import FExGAN
    from fexgan.generation.outputs import collect_images, folder_out, write_faces

    folder_out(out, "transfer")
    files, names = collect_images(images)
    loaded = FExGAN.load(model, device)
    written = write_faces(loaded, files, to, out, format_, from_, keep_size, size, matte, columns, fps, sample_latent,
                          seed, "transfer", names=names)
    report(written, loaded.config.image_size, out)


@generation.command()
def mix(
    model: str = typer.Argument(..., help=MODEL_HELP),
    images: list[Path] = typer.Argument(..., help="image files and/or folders of images"),
    affect: list[str] = typer.Option(..., help="affect vector, e.g. anger=0.5,sadness=0.5 (repeat for several)"),
    from_: str | None = typer.Option(None, "--from", help="source expression (default: predicted)"),
    format_: str | None = typer.Option(None, "--format", help=f"{FORMAT_HELP} (default: png; a strip for "
                                          "several --affect into one file)"),
    size: int | None = size_option(),
    keep_size: bool = typer.Option(False, help="give each output the input's size"),
    matte: str = matte_option(),
    columns: int | None = typer.Option(None, help="cells per row of a sprite sheet (default: all in one row)"),
    fps: float = typer.Option(2, help="frames per second of an animation through the mixes"),
    out: Path = typer.Option(..., help="output file (one input) or folder"),
    device: str = device_option(),
) -> None:
    """Faces with any mix of expressions (paper Fig. 6)."""
    from fexgan.generation.inference import FExGAN
    from fexgan.generation.outputs import collect_images, write_faces

    files, names = collect_images(images)
    loaded = FExGAN.load(model, device)
    written = write_faces(loaded, files, affect, out, format_, from_, keep_size, size, matte, columns, fps,
                          command="mix", names=names)
    report(written, loaded.config.image_size, out)


@generation.command()
def morph(
    model: str = typer.Argument(..., help=MODEL_HELP),
    images: list[Path] = typer.Argument(..., help="image files and/or folders of images"),
    from_: str = typer.Option("neutral", "--from", help="first expression of the animation"),
    to: str | None = typer.Option(None, help="last expression (default: the --from one)"),
    via: list[str] = typer.Option([], help="expressions to pass through on the way (repeatable)"),
    frames: int = typer.Option(24, help="number of frames (2-1000), all of them written"),
    loop: bool = typer.Option(False, help="return to the start, for a seamless loop"),
    fps: float = typer.Option(12, help="frames per second"),
    face_b: Path | None = typer.Option(None, help="second face: also move from each input's latent to this one's"),
    source: str | None = typer.Option(None, help="expression of the inputs (and --face-b) (default: predicted)"),
    format_: str | None = typer.Option(None, "--format", help="gif | apng | webp | sheet | frames (default: from "
                                          "--out's suffix: .gif, .png/.apng, .webp; gif for a folder)"),
    size: int | None = size_option(),
    matte: str = matte_option(),
    columns: int | None = typer.Option(None, help="cells per row of a sprite sheet (default: all in one row)"),
    out: Path = typer.Option(..., help="output file (one input) or folder (one animation per input)"),
    frames_dir: Path | None = typer.Option(None, help="also write every frame as PNG here (one input)"),
    device: str = device_option(),
) -> None:
    """A smooth animation through affect space (and optionally from one face to another)."""
    from fexgan.generation.inference import FExGAN
    from fexgan.generation.outputs import collect_images, write_morphs

    if to is None and not via and face_b is None:
        raise UserError("nothing to morph: give --to EXPRESSION, --via EXPRESSION or --face-b IMAGE")
    files, names = collect_images(images)
    loaded = FExGAN.load(model, device)
    path = [from_, *via, to if to is not None else from_]
    written = write_morphs(loaded, files, path, out, format_, frames, loop, fps, source, face_b, size, matte, columns,
                           frames_dir, names=names)
    report(written, loaded.config.image_size, out)
    if frames_dir is not None:
        console.print(f"and {frames} PNG frames in {escape(str(frames_dir))}", highlight=False)
