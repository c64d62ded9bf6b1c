"""`isolane stats` and `isolane top`: per-tenant figures from isolaned.

    isolane stats [TENANT] [-j]
    isolane top [--interval S] [--once] [-j]

`stats` prints the daemon's counters once. `top` redraws a per-tenant table
(rich.live) every interval: packets per second, each tenant's share of the
cycles charged over the interval, budget balance, throttles and p99
latency, until Ctrl-C.
"""
from __future__ import annotations

import os
import sys
import time

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .output import emit_json, print_table, stdout
from .rpc_cli import daemon, json_option, tenant_ref, wants_json


def _n(value) -> str:
    """Counters people read at a glance: 1234567 -> 1.23M."""
    if value is None:
        return "-"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _us(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _latency(t: dict, key: str):
    lat = t.get("latency_us")
    return lat.get(key) if lat else None


def _drops(t: dict) -> int:
    return sum((t.get("drops") or {}).values())


def describe_stats(t: dict) -> list[tuple[str, str]]:
    """One tenant's stats as (label, text) lines, for `tenant show`."""
    drops = t.get("drops") or {}
    slow = t.get("slowpath") or {}
    lat = t.get("latency_us")
    return [
        ("packets", f"rx {t.get('rx', 0)}  tx {t.get('tx', 0)}  passed {t.get('passed', 0)}  "
                    f"completed {t.get('completed', 0)}  ({_n(t.get('pps'))} pps)"),
        ("drops", f"{_drops(t)}" + (" (" + ", ".join(f"{k} {v}" for k, v in drops.items()
                                                     if v) + ")" if _drops(t) else "")),
        ("cycles", f"{t.get('cycles', 0)} charged, balance {t.get('balance_cycles', 0)}"),
        ("throttles", str(t.get("throttles", 0))),
        ("latency us", f"p50 {_us(lat['p50'])}  p99 {_us(lat['p99'])}  p99.9 {_us(lat['p999'])}"
         if lat else "- (no packets yet)"),
        ("slow path", f"delivered {slow.get('delivered', 0)}, dropped {slow.get('dropped', 0)}"),
    ]


@click.command()
@click.argument("ref", metavar="[TENANT]", required=False)
@json_option
def stats(ref, as_json):
    """Per-tenant packet, drop, cycle, budget and latency counters.

    Without TENANT: every tenant you may see (admin: all).

    \b
    Examples:
      isolane stats
      isolane stats web -j | jq '.tenants[0].latency_us.p99'
    """
    result = daemon(as_json)("stats", tenant=None if ref is None else tenant_ref(ref))
    if wants_json(as_json):
        emit_json(result)
        return
    table = Table(box=None, header_style="bold",
                  caption=f"uptime {result.get('uptime_s', 0):.0f} s{_global(result)}")
    tsc_hz = _tsc_hz(result)
    for col in ("ID", "TENANT", "RX", "TX", "PASSED", "DROPS", "PPS", "CYCLES",
                "BALANCE us" if tsc_hz else "BALANCE", "THROTTLES", "P50 us", "P99 us",
                "P99.9 us"):
        table.add_column(col, justify="left" if col == "TENANT" else "right")
    for t in result.get("tenants", []):
        table.add_row(str(t["id"]), escape(t["name"]), _n(t.get("rx")), _n(t.get("tx")),
                      _n(t.get("passed")), _n(_drops(t)), _n(t.get("pps")), _n(t.get("cycles")),
                      _us(_balance_us(t, tsc_hz)) if tsc_hz else _n(t.get("balance_cycles")),
                      _n(t.get("throttles")),
                      _us(_latency(t, "p50")), _us(_latency(t, "p99")),
                      _us(_latency(t, "p999")))
    if not result.get("tenants"):
        stdout.print("no tenants")
        return
    print_table(table)


def _global(result: dict) -> str:
    g = result.get("global") or {}
    shown = {k: g[k] for k in ("stalls", "malformed", "unknown") if k in g}
    return "".join(f", {k} {v}" for k, v in shown.items())


def _tsc_hz(result: dict) -> float | None:
    hz = (result.get("global") or {}).get("tsc_hz")
    return float(hz) if hz else None


def _balance_us(t: dict, tsc_hz: float | None):
    b = t.get("balance_cycles")
    return None if b is None or not tsc_hz else b / tsc_hz * 1e6


class TopView:
    """Turns successive `stats` answers into top's rows.

    Both cycle columns look at the cycles charged since the previous sample
    (since the daemon started, on the first), so they show who holds the
    core now rather than who held it an hour ago: `cycle_share` is a
    tenant's part of all tenants' cycles, `core_share` its part of the
    core's time (the daemon's TSC rate and uptime), to compare with the
    share it was given."""

    def __init__(self):
        self._cycles: dict[int, int] = {}
        self._uptime_s = 0.0

    def rows(self, result: dict) -> list[dict]:
        tenants = result.get("tenants", [])
        tsc_hz = _tsc_hz(result)
        deltas = {t["id"]: max(0, t.get("cycles", 0) - self._cycles.get(t["id"], 0))
                  for t in tenants}
        total = sum(deltas.values())
        uptime_s = result.get("uptime_s") or 0.0
        elapsed_cycles = (uptime_s - self._uptime_s) * tsc_hz if tsc_hz else 0.0
        self._cycles = {t["id"]: t.get("cycles", 0) for t in tenants}
        self._uptime_s = uptime_s
        return [{"id": t["id"], "name": t["name"], "pps": t.get("pps"),
                 "cycle_share": deltas[t["id"]] / total if total else 0.0,
                 "core_share": deltas[t["id"]] / elapsed_cycles if elapsed_cycles > 0 else None,
                 "balance_cycles": t.get("balance_cycles"),
                 "balance_us": _balance_us(t, tsc_hz), "throttles": t.get("throttles"),
                 "drops": _drops(t), "p99_us": _latency(t, "p99")} for t in tenants]

    @staticmethod
    def table(rows: list[dict], result: dict, interval_s: float) -> Table:
        table = Table(title=f"isolane top - every {interval_s:g} s, uptime "
                            f"{result.get('uptime_s', 0):.0f} s",
                      caption=_global(result).lstrip(", ") + " - Ctrl-C quits",
                      header_style="bold", title_justify="left", caption_justify="left",
                      expand=False)
        cols = ("ID", "TENANT", "PPS", "CYCLES %", "CORE %", "BALANCE us", "THROTTLES", "DROPS",
                "P99 us")
        for col in cols:
            table.add_column(col, justify="left" if col == "TENANT" else "right")
        for r in rows:
            core = "-" if r["core_share"] is None else f"{100 * r['core_share']:.1f}"
            balance = (_us(r["balance_us"]) if r["balance_us"] is not None
                       else _n(r["balance_cycles"]) + " cyc")
            table.add_row(str(r["id"]), escape(r["name"]), _n(r["pps"]),
                          f"{100 * r['cycle_share']:.1f}", core, balance,
                          _n(r["throttles"]), _n(r["drops"]), _us(r["p99_us"]))
        if not rows:
            table.add_row("", "no tenants", *[""] * (len(cols) - 2))
        return table


@click.command()
@click.option("--interval", "-i", "interval_s", type=click.FloatRange(min=0.05), default=1.0,
              show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts and tests).")
@json_option
def top(interval_s, once, as_json):
    """A live per-tenant view: pps, share of cycles, budget balance,
    throttles, drops and p99 latency, refreshed every --interval seconds.

    Since the previous refresh: CYCLES % is each tenant's part of the
    cycles charged to tenants, CORE % its part of the fast-path core's time
    (compare with its --share). BALANCE us is the budget it holds now
    (negative: a debt it pays back before it runs again). With -j every
    refresh is one JSON object per line; piped, one table per refresh.
    Ctrl-C quits.

    \b
    Examples:
      isolane top
      isolane top --interval 0.5
      isolane top --once -j
    """
    as_json = wants_json(as_json)
    call = daemon(as_json, json_lines=True)
    view = TopView()
    try:
        if once or as_json or not stdout.is_terminal:  # batch mode, as `top -b`
            while True:
                result = call("stats")
                rows = view.rows(result)
                if as_json:
                    emit_json({"uptime_s": result.get("uptime_s"), "tenants": rows}, lines=True)
                    sys.stdout.flush()
                else:
                    print_table(view.table(rows, result, interval_s))
                if once:
                    return
                time.sleep(interval_s)
        result = call("stats")
        with Live(view.table(view.rows(result), result, interval_s), console=stdout,
                  auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                result = call("stats")
                live.update(view.table(view.rows(result), result, interval_s), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how top ends: exit 0, the last frame stays on screen
    except BrokenPipeError:  # `isolane top -j | head -1`: the reader has gone, so do we
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
    finally:
        call.close()
