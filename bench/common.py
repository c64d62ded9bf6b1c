"""Helpers shared by the benchmark scripts: result files and number formats."""
from __future__ import annotations

import json
import math
import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "build" / "results"


def console():
    """A rich console; piped output (CI, logs) gets 100 columns, not 80."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=100)


def finite_or_none(value):
    """JSON has no infinity: a percentile that fell among lost packets is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonable(obj):
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return finite_or_none(obj)


def write_json(path: pathlib.Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=2) + "\n")


def fmt_us(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "inf"
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def fmt_count(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def ratio(a: float, b: float) -> float:
    if math.isinf(a) and not math.isinf(b):
        return math.inf
    if b == 0 or math.isnan(a) or math.isnan(b) or math.isinf(b):
        return math.nan
    return a / b


def fmt_ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def save_figure(fig, path: pathlib.Path) -> None:
    """Lays out, writes (making the folder) and closes a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
