"""The `fexgan` command line: thin wrappers over the package's functions.

Each command imports what it needs when it runs, so `fexgan --help` stays fast. Mistakes a user
can fix raise `UserError`, which `main` prints as one line with a non-zero exit status.
"""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from fexgan.cli.generate import MODEL_HELP, generation
from fexgan.errors import UserError, one_line

SERVE_MODEL = "toon-any-64"  # the web demo's default: the edit design, which keeps a new face's identity

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="FExGAN: train, run, evaluate and ship a facial-expression GAN.")
data_app = typer.Typer(no_args_is_help=True, help="Render and inspect datasets (built-in toon faces).")
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def main() -> None:
    """Console entry point: run the Typer app and turn user errors into one clear line."""
    try:
        code = app(standalone_mode=False)  # typer returns (not raises) the code of typer.Exit and Ctrl-C (130)
    except UserError as err:
        # one line, never wrapped; brackets in paths are text, not markup
        console.print(f"[bold red]error:[/] {escape(one_line(str(err)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as err:  # usage errors (bad option values, unknown options): one line too
        import click

        try:  # typer >= 0.20 ships its own copy of click, whose exceptions are not click's
            from typer._click import exceptions as vendored
        except ImportError:
            vendored = click.exceptions
        if isinstance(err, (click.exceptions.ClickException, vendored.ClickException)):
            ctx = getattr(err, "ctx", None)
            see = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            console.print(f"[bold red]error:[/] {escape(one_line(err.format_message()))}{escape(see)}", highlight=False,
                          soft_wrap=True)
            sys.exit(2)
        if isinstance(err, (click.exceptions.Abort, getattr(vendored, "Abort", click.exceptions.Abort))):
            sys.exit(1)
        if isinstance(err, OSError):  # a path that cannot be read or written (not a folder, full disk, ...)
            where = f": {err.filename}" if err.filename else ""
            console.print(f"[bold red]error:[/] {escape(one_line(str(err.strerror or err) + where))}", highlight=False,
                          soft_wrap=True)
            sys.exit(2)
        raise
    if isinstance(code, int) and code:
        if code == 130:
            console.print("[yellow]interrupted[/]")
        sys.exit(code)


@app.command()
def train(
    data: str | None = typer.Option(None, help="toon | toon:PER_CLASS[:CHARACTERS][:jitter] | ferg:PATH | folder:PATH"),
    preset: str = typer.Option("cpu", help="paper | cpu | any | tiny"),
    config: Path | None = typer.Option(None, help="JSON file of configuration values (applied after the preset)"),
    out: Path | None = typer.Option(None, help="run folder (default runs/<preset>-<time>)"),
    epochs: int | None = typer.Option(None, min=1, help="train for this many epochs"),
    steps: int | None = typer.Option(None, min=1, help="train for this many steps (wins over epochs)"),
    minutes: float | None = typer.Option(None, min=0.01, help="train for this much wall time (wins over epochs)"),
    until: str | None = typer.Option(None, help="quality target, e.g. gain=3,judge=0.95: stop at the first checkpoint "
                                     "that reaches it (gain: dB over the copy, toon data; judge: share read right); "
                                     "--steps/--minutes/--epochs stay the ceiling"),
    device: str | None = typer.Option(None, help="auto | cpu | cuda"),
    seed: int | None = typer.Option(None, help="random seed"),
    set_: list[str] = typer.Option([], "--set", help="override any value: --set optimiser.lr=1e-4 --set model.width=0.5"),
    resume: Path | None = typer.Option(None, help="continue the run in this folder from its last checkpoint"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    nproc: int = typer.Option(1, min=1, max=1024, help="processes on this machine: runs torchrun for you (gloo on CPU, NCCL with one GPU each)"),
) -> None:
    """Train FExGAN (preset, then --config file, then flags and --set overrides)."""
    import os
    import time

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from fexgan.training.distributed import launch

        args = sys.argv[sys.argv.index("train") + 1:]
        args = [a for i, a in enumerate(args) if not (a.startswith("--nproc") or (i and args[i - 1] == "--nproc"))]
        if out is None and resume is None:
            out = Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            args += ["--out", str(out)]
        launch(nproc, args)
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and out is None and resume is None:
        raise UserError("under torchrun give the run folder with --out (every process must use the same one)")

    from fexgan.presets import build_config, read_file

    overrides = list(set_)
    for key, value in (("data.source", data), ("run.epochs", epochs), ("run.steps", steps), ("run.minutes", minutes),
                       ("run.until", until), ("run.device", device), ("run.seed", seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if resume is not None:
        if not (resume / "config.json").is_file():
            raise UserError(f"cannot resume: {resume} is not a run folder (no config.json)")
        cfg = build_config(base=read_file(resume / "config.json", "run config"), overrides=overrides)
        run = resume
    else:
        cfg = build_config(preset, config, overrides)
        run = out or Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    from fexgan.training.loop import train as run_training

    model = run_training(cfg, run, resume=resume is not None, progress=not quiet)
    if os.environ.get("RANK", "0") == "0":
        console.print(f"[green]done:[/] model {model}, samples in {run / 'samples'}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from fexgan.training.distributed import leave

        leave()



@app.command()
def finetune(
    model: str = typer.Argument(..., help="run folder, .safetensors model file or shipped model name"),
    data: str = typer.Option(..., help="the new character: folder:PATH (identity/expression/*.png; one neutral face is enough)"),
    out: Path | None = typer.Option(None, help="run folder (default runs/finetune-<time>)"),
    minutes: float = typer.Option(3.0, min=0.01, help="train for this much wall time"),
    steps: int = typer.Option(0, min=0, help="train for this many steps instead (wins over --minutes)"),
    replay: str | None = typer.Option(None, help="data replayed beside it (default: what the model was trained on)"),
    set_: list[str] = typer.Option([], "--set", help="override any value: --set finetune.replay_share=0.7 --set optimiser.lr=5e-5"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Adapt a trained model to a new character from a few images (docs/any-character.md)."""
    import time

    from fexgan.training.finetune import finetune as run_finetune

    run = out or Path("runs") / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    path = run_finetune(model, data, run, minutes, steps, replay, list(set_), progress=not quiet)
    console.print(f"[green]done:[/] model {path}")


@data_app.command("render")
def data_render(
    out: Path = typer.Option(..., help="folder for <char>/<char>_<expression>/<char>_<expression>_<n>.png + manifest.json"),
    per_class: int = typer.Option(200, help="images per character and expression"),
    size: int = typer.Option(128, help="image size in pixels, 32..256"),
    characters: int = typer.Option(6, help="identities, 1..256 (the first 6 are hand-designed)"),
    seed: int = typer.Option(0, help="random seed: the same arguments give byte-identical files"),
    workers: int | None = typer.Option(None, help="worker processes (default: every core)"),
    jitter: bool = typer.Option(False, "--jitter", help="add head shift, zoom, rotation and lighting jitter "
                                "(default: a fixed camera and light, as FERG-DB)"),
) -> None:
    """Render the built-in toon faces in FERG-DB's layout, with a ground-truth manifest."""
    from fexgan.data.toon import render_dataset

    manifest = render_dataset(out, per_class, size, characters, seed, workers, progress=True, jitter=jitter)
    console.print(f"[green]done:[/] {escape(str(manifest))}", highlight=False)


@data_app.command("show")
def data_show(
    source: str = typer.Argument(..., help="a rendered folder (or FERG-DB), or 'toon' to draw from the renderer"),
    out: Path = typer.Option(..., help="PNG file to write"),
    size: int = typer.Option(128, help="face size in pixels for 'toon', 32..256"),
    characters: int = typer.Option(6, help="identities for 'toon', 1..256"),
    seed: int = typer.Option(0, help="seed of the extra identities for 'toon'"),
) -> None:
    """Write a characters x expressions contact sheet."""
    from fexgan.data import toon

    if source == "toon" and not Path(source).is_dir():
        sheet = toon.toon_contact_sheet(size, characters, seed)
    else:
        sheet = toon.folder_contact_sheet(Path(source))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write {out}: {err}") from None
    console.print(f"[green]done:[/] {escape(str(out))}", highlight=False)


# ----------------------------------------------------------------------------- generation
app.add_typer(generation)  # sample, transfer, mix, morph: fexgan.cli.generate


@app.command()
def figures(
    run: Path = typer.Argument(..., help="run folder"),
    out: Path | None = typer.Option(None, help="output folder (default RUN/figures)"),
    n: int = typer.Option(8, help="random samples per expression in Fig. 4"),
    seed: int = typer.Option(0, help="random seed of Fig. 4"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """The paper's Figs. 4, 5 and 6 for a trained run, as labelled PNGs."""
    from fexgan.generation.figures import figures as write_figures

    for path in write_figures(run, out or run / "figures", n, seed, device):
        console.print(f"wrote {path}")


@app.command()
def serve(
    model: str = typer.Argument(SERVE_MODEL, help=f"{MODEL_HELP} (default {SERVE_MODEL}: any character's face keeps "
                                                  "its identity)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (the default is this machine only)"),
    port: int = typer.Option(7860, min=0, max=65535, help="port to listen on (0: any free port)"),
    max_upload_mb: float = typer.Option(10, help="largest image upload in MB"),
    max_pixels: float = typer.Option(16, help="largest image upload in megapixels (width x height / 2^20)"),
    max_work: float = typer.Option(32, help="most work of one request in megapixels: the upload's pixels + "
                                   "outputs x side^2 (a 24-frame morph at 1024 px is 24)"),
    max_queued: float = typer.Option(128, help="most work running and waiting in megapixels; more is refused (429)"),
    workers: int = typer.Option(1, min=1, max=64, help="requests at once (more wait in line)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """A web demo (upload a face, expression sliders, morph GIFs) and an HTTP API on /api."""
    try:
        from fexgan.serve import MB, MPX, Limits
        from fexgan.serve import serve as run_server
    except ImportError as err:
        raise UserError(f"the web demo needs the serve extra ({err.name} is missing): pip install 'fexgan[serve]'") from None

    limits = Limits(max_upload_bytes=int(max_upload_mb * MB), max_pixels=int(max_pixels * MPX),
                    max_work_pixels=int(max_work * MPX), max_queued_pixels=int(max_queued * MPX), workers=workers)
    run_server(model, host, port, limits, device, log=lambda line: console.print(escape(line), highlight=False))


# ----------------------------------------------------------------------------- shipping
@app.command("export")
def export_model(
    model: str = typer.Argument(..., help=MODEL_HELP),
    format_: str = typer.Option("onnx", "--format", help="onnx (encoder, decoder, generator graphs) | safetensors"),
    out: Path = typer.Option(..., help="output folder (files of the same names are replaced)"),
    discriminator: bool = typer.Option(False, help="also export the discriminator / expression classifier"),
    opset: int = typer.Option(18, help="ONNX opset (17 is converted down from 18)"),
    half: bool = typer.Option(False, help="safetensors only: store fp16 weights (half the size; loaded as fp32)"),
) -> None:
    """Export a model for other runtimes: ONNX graphs checked against PyTorch, or a plain
    safetensors file, each with a model.json of classes, image size and normalisation."""
    from fexgan.generation.export import ParityError, export

    try:
        result = export(model, format_, out, discriminator, opset, half,
                        log=lambda line: console.print(escape(line), highlight=False))
    except ParityError as err:
        console.print(f"[bold red]error:[/] {escape(one_line(str(err)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"wrote {', '.join(escape(p.name) for p in result.files)} to {escape(str(out))}", highlight=False,
                  soft_wrap=True)


@app.command("import-keras")
def import_keras(
    encoder: Path = typer.Argument(..., help="the reference's encoder, saved by Keras to HDF5 (.h5)"),
    decoder: Path = typer.Argument(..., help="its decoder (.h5)"),
    discriminator: Path = typer.Argument(..., help="its discriminator (.h5)"),
    out: Path = typer.Option(..., help="the fexgan model file to write (.safetensors)"),
) -> None:
    """Turn the reference's trained Keras weights into a fexgan model of the paper preset (docs/ferg.md)."""
    from fexgan.files.keras import import_keras as run_import

    path = run_import(encoder, decoder, discriminator, out)
    console.print(f"[green]done:[/] {escape(str(path))} (the paper preset's layout and numerics, imported from Keras)",
                  highlight=False, soft_wrap=True)


@app.command()
def models() -> None:
    """The models shipped with the package (use their names as MODEL) and their evaluation numbers."""
    from fexgan.generation.export import card_summary, pretrained_folder, shipped_cards

    rows = [card_summary(card) for card in shipped_cards()]
    if not rows:
        print("no models ship with this installation")
        return
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    for row in [dict(zip(rows[0], rows[0])), *rows]:
        print("  ".join(v.ljust(widths[k]) for k, v in row.items()).rstrip())
    print(f"judge acc.: transfers judged as their target expression (fexgan evaluate); "
          f"commands, configuration and every number: {pretrained_folder()}/<name>.json")


# ----------------------------------------------------------------------------- evaluation
@app.command()
def evaluate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str | None = typer.Option(None, help="data source (default: the run's, or the model file's training data)"),
    split: str = typer.Option("val", help="val | train | held_out (the identities the run never trained on): the images transferred and judged"),
    n: int = typer.Option(500, help="source images drawn from the split (each is transferred to all 7 expressions)"),
    sliders: int = typer.Option(32, help="neutral images of the split for the sliders: intensities, 50/50 mixes and "
                                         "12-frame morphs from neutral (100 transfers each; 0: none)"),
    seed: int = typer.Option(0, help="random seed of the image choice, targets and samples"),
    out: Path | None = typer.Option(None, help="output folder (default RUN/evaluation)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Measure a trained model: the paper's Table 1, a judge's expression and identity scores, FID,
    diversity, the sliders and (on toon faces) ground truth; writes metrics.json, report.md and plots."""
    from fexgan.metrics.evaluate import evaluate as run_evaluation
    from fexgan.metrics.report import headline

    results = run_evaluation(model, data=data, split=split, out=out, n=n, seed=seed, device=device,
                             log=lambda line: console.print(line, highlight=False), sliders=sliders)
    for line in headline(results):
        print(line)
    print(f"report: {Path(results['out']) / 'report.md'}")


# ----------------------------------------------------------------------------- speed
@app.command()
def bench(
    presets: str = typer.Option("tiny,cpu,paper", help="comma-separated presets to measure, in this order"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    steps: int = typer.Option(10, min=1, help="timed training steps per preset (after 3 warm-up steps)"),
    set_: list[str] = typer.Option([], "--set", help="override for every preset, e.g. --set run.compile=true"),
    json_: Path = typer.Option(Path("bench.json"), "--json", help="JSON file for the full results"),
) -> None:
    """Training, inference and data speed of the presets, FLOP/s against this machine's matmul peak,
    and peak memory, measured side by side in one run."""
    import json

    from rich.console import Console as StdoutConsole

    from fexgan.training.bench import run_bench, table

    results = run_bench([p.strip() for p in presets.split(",") if p.strip()], device, steps, list(set_),
                        log=lambda line: console.print(f"bench {line}", highlight=False))
    try:
        json_.parent.mkdir(parents=True, exist_ok=True)
        json_.write_text(json.dumps(results, indent=2))
    except OSError as err:
        raise UserError(f"cannot write {json_}: {err}") from None
    StdoutConsole().print(table(results))
    console.print(f"wrote {escape(str(json_))}", highlight=False)
