"""`isolane prog load|unload|list|show`: a tenant's program in isolaned.

The daemon compiles, verifies (in the kernel), bounds and translates the
source, then swaps it into the running datapath without losing a packet;
the CLI only reads the file (and its tenant.toml) and reports. A rejection
prints the verifier's reason and log and exits 3, like `prog check`.
"""
from __future__ import annotations

import contextlib
import datetime
import pathlib

import click
from rich.markup import escape
from rich.table import Table

from .output import emit_json, print_table, stderr, stdout
from .rpc_cli import daemon, json_option, tenant_ref, wants_json


def read_source(path: pathlib.Path) -> tuple[str, dict, str]:
    """(C text, tenant.toml config, label) for a .c file or a tenant folder."""
    from ebpf.errors import ToolchainError
    from ebpf.toolchain import HANDLER_FILE, load_config

    try:
        src, config = load_config(path)
        text = src.read_text()
    except (ToolchainError, OSError, UnicodeDecodeError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint="SOURCE") from None
    label = config.get("name") or (src.parent.name if src.name == HANDLER_FILE else src.stem)
    return text, config, label


def _working(what: str, as_json: bool):
    """A spinner on stderr while the daemon builds (seconds), for people only."""
    if as_json or not stderr.is_terminal:
        return contextlib.nullcontext()
    return stderr.status(escape(what) + " ...")


def _summary(p: dict) -> str:
    cycles = f", {p['bound_cycles']:.0f} cycles" if p.get("bound_cycles") else ""
    return (f"{p['engine']}, {p['insns']} insns, bound {p['bound_insns']} insns{cycles}, "
            f"sha256 {p['sha256'][:12]}")


def _when(ts) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.argument("ref", metavar="TENANT")
@click.argument("source", metavar="SOURCE",
                type=click.Path(exists=True, path_type=pathlib.Path))
@click.option("--engine", type=click.Choice(["aot", "interp"]), default="aot", show_default=True,
              help="aot: compiled jointly with the datapath; interp: isolane's interpreter.")
@click.option("--function", help="The handler function (default: tenant.toml's, else the "
                                 "only XDP function).")
@click.option("--loop-budget", type=click.IntRange(min=1),
              help="Back edges a run may take (default: tenant.toml's).")
@click.option("--name", "label", help="A label for the program (default: tenant.toml's name, "
                                      "else the file's).")
@json_option
def load(ref, source, engine, function, loop_budget, label, as_json):
    """Load SOURCE as TENANT's packet handler, replacing the one it runs.

    SOURCE is a restricted-C XDP file or a tenant folder (handler.c and
    tenant.toml, whose function and loop_budget are used). The daemon
    verifies it in the kernel and bounds its cost before the swap, which
    loses no packet. Exit status 3 when rejected (the verifier's reason and
    log are printed).

    \b
    Example:
      isolane prog load web tenants/udp_echo
      isolane prog load web handler.c --engine interp --function echo
    """
    text, config, default_label = read_source(source)
    if loop_budget is None:
        loop_budget = config.get("loop_budget")
    call = daemon(as_json).connect()
    with _working(f"isolaned compiles, verifies and bounds {source}", as_json=call.as_json):
        p = call("prog.load", tenant=tenant_ref(ref), source=text, name=label or default_label,
                 engine=engine, function=function or config.get("function"),
                 loop_budget=loop_budget)
    if wants_json(as_json):
        emit_json(p)
        return
    stdout.print(f"[bold green]loaded[/] {escape(p['name'])} into tenant "
                 f"[bold]{escape(str(p['tenant']))}[/]: {escape(_summary(p))}", highlight=False,
                 soft_wrap=True)


@click.command()
@click.argument("ref", metavar="TENANT")
@json_option
def unload(ref, as_json):
    """Remove TENANT's program; its native handler takes over again.

    \b
    Example:
      isolane prog unload web
    """
    result = daemon(as_json)("prog.unload", tenant=tenant_ref(ref))
    if wants_json(as_json):
        emit_json(result)
        return
    stdout.print(f"unloaded {escape(str(result['unloaded']))} from tenant "
                 f"[bold]{escape(ref)}[/]", highlight=False)


@click.command("list")
@json_option
def list_(as_json):
    """List the programs loaded in your tenants (admin: all).

    \b
    Example:
      isolane prog list
    """
    progs = daemon(as_json)("prog.list")
    if wants_json(as_json):
        emit_json(progs)
        return
    if not progs:
        stdout.print("no programs loaded")
        return
    table = Table(box=None, header_style="bold")
    for col in ("TENANT", "NAME", "ENGINE", "INSNS", "BOUND INSNS", "BOUND CYCLES", "SHA256",
                "LOADED"):
        table.add_column(col, justify="right" if col.startswith(("INSNS", "BOUND")) else "left")
    for p in progs:
        table.add_row(escape(str(p["tenant"])), escape(p["name"]), p["engine"], str(p["insns"]),
                      str(p["bound_insns"]),
                      f"{p['bound_cycles']:.0f}" if p.get("bound_cycles") else "-",
                      p["sha256"][:12], _when(p.get("loaded_at")))
    print_table(table)


@click.command()
@click.argument("ref", metavar="TENANT")
@click.option("--source", "only_source", is_flag=True,
              help="Print only the program's C source (to save or diff it).")
@json_option
def show(ref, only_source, as_json):
    """Show TENANT's program: engine, size, bounds, hash, load time.

    \b
    Examples:
      isolane prog show web
      isolane prog show web --source > handler.c
    """
    p = daemon(as_json)("prog.show", tenant=tenant_ref(ref))
    if wants_json(as_json):
        emit_json(p)
        return
    if only_source:
        click.echo(p.get("source", ""), nl=not p.get("source", "").endswith("\n"))
        return
    stdout.print(f"program [bold]{escape(p['name'])}[/] of tenant "
                 f"[bold]{escape(str(p['tenant']))}[/]", highlight=False)
    for key, value in (("engine", p["engine"]), ("insns", str(p["insns"])),
                       ("bound", f"{p['bound_insns']} insns"
                                 + (f", {p['bound_cycles']:.0f} cycles"
                                    if p.get("bound_cycles") else "")),
                       ("sha256", p["sha256"]), ("loaded", _when(p.get("loaded_at"))),
                       ("source", f"{len(p.get('source', '').splitlines())} lines "
                                  "(--source prints it)")):
        stdout.print(f"  {key:<8} {escape(value)}", highlight=False)


COMMANDS = (load, unload, list_, show)
