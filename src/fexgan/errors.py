"""Errors a user can fix, and warnings: each printed by the CLI as a single line."""
from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with the user's input (path, argument, file). Printed without a traceback."""


def warn(message: str) -> None:
    """Tell the user about something that went on anyway ('warning: ...' on stderr): the one warning path."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
