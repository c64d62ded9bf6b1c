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


def emit_json(obj) -> None:
    json.dump(_plain(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


def fail(message: str, code: int) -> None:
    """Prints an error and exits with `code` (3: rejected, 1: failed)."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise click.exceptions.Exit(code)
