"""The `fexgan` command line: thin wrappers over the package's functions.

Each command imports what it needs when it runs, so `fexgan --help` stays fast. Mistakes a user
can fix raise `UserError`, which `main` prints as one line with a non-zero exit status.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fexgan.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="FExGAN: train, run, evaluate and ship a facial-expression GAN.")
data_app = typer.Typer(no_args_is_help=True, help="Render and inspect datasets (built-in toon faces).")
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def main() -> None:
    """Console entry point: run the Typer app and turn user errors into one clear line."""
    try:
        app(standalone_mode=False)
    except UserError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code)
    except Exception as err:  # click usage errors carry their own formatting
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(1)
        raise
