"""The `fexgan` command line: `main` (the app and its commands) and `generate` (sample, transfer, mix, morph)."""
from fexgan.cli.main import main

__all__ = ["main"]
