"""What the `vetro` commands print for people: messages on stderr, and one clear line per error."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

# stderr, so standard output stays clean for ids and JSON; never wrapped, so an error stays one line.
messages = Console(stderr=True, soft_wrap=True)
PIPED_WIDTH = 250  # columns of a table written to a pipe or a file


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: <message>` and return the exit to raise (2: bad input; 1: something unreachable)."""
    messages.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def first_line(error: BaseException) -> str:
    """An error's first line (a driver's message can run to many), or its type's name when it says nothing."""
    return next(iter(str(error).strip().splitlines()), type(error).__name__)


def tables() -> Console:
    """Standard output for tables: as wide as the terminal, or wide enough never to cut a cell when piped."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
