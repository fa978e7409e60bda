"""Errors a user can fix, and warnings: each printed by the CLI as a single line."""
from __future__ import annotations

import sys


def one_line(message: str) -> str:
    """`message` on one line: control characters a user typed (newlines, tabs, escapes) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class UserError(Exception):
    """A problem with the user's input (path, argument, file). Printed without a traceback."""


def warn(message: str) -> None:
    """Tell the user about something that went on anyway ('warning: ...' on stderr): the one warning path."""
    print(f"warning: {one_line(message)}", file=sys.stderr, flush=True)
