"""How the CLI talks to people and to scripts: rich text, or --json."""
from __future__ import annotations

import json
import math
import sys

import click
from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def emit_json(obj, lines: bool = False) -> None:
    """`obj` as JSON on stdout: indented, or one line (for a JSON-lines stream)."""
    json.dump(_plain(obj), sys.stdout, indent=None if lines else 2)
    sys.stdout.write("\n")


def print_table(table) -> None:
    """A rich table on stdout. Piped or captured, it keeps its natural width
    (no ellipsis in a figure a script or a log reads); on a terminal rich
    fits it to the window."""
    from rich.measure import Measurement

    if stdout.is_terminal:
        stdout.print(table)
        return
    natural = Measurement.get(stdout, stdout.options.update_width(1000), table).maximum
    Console(width=max(stdout.width, natural)).print(table)  # print(width=) cannot exceed it


def fail(message: str, code: int, detail: str | None = None) -> None:
    """Prints an error and exits with `code` (3: rejected, 1: failed).
    `detail` (a verifier log, say) follows verbatim: no markup, no wrapping."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if detail:
        stderr.print(detail.rstrip(), markup=False, highlight=False, soft_wrap=True)
    raise click.exceptions.Exit(code)
