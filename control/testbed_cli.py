"""`isolane testbed`: the experiment testbed (namespaces, veth pairs).

    isolane testbed up     [--config FILE] [--json]
    isolane testbed status [--config FILE] [--json]
    isolane testbed down   [--config FILE] [--json]

Exit codes: 0 success, 1 a failure (e.g. not root), 2 a usage error (also
an invalid config file).
"""
from __future__ import annotations

import pathlib

import click
from rich.markup import escape

from .output import emit_json, fail, stdout

EXIT_FAILED = 1
EXIT_USAGE = 2


def _options(f):
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
        help="Testbed config (TOML). Default: control/testbed.toml, "
             "which documents every key.")(f)
    return f


def _testbed(config_path):
    from .testbed import Testbed, TestbedConfig, TestbedConfigError

    try:
        return Testbed(TestbedConfig.load(config_path))
    except TestbedConfigError as e:
        fail(escape(str(e)), EXIT_USAGE)


def _run(fn):
    from .testbed import TestbedError

    try:
        return fn()
    except TestbedError as e:
        fail(escape(str(e)), EXIT_FAILED)


@click.group()
def testbed():
    """The experiment testbed: a load-generator namespace and an isolane-host
    namespace joined by veth pairs (needs root).

    By default: namespaces isl-gen and isl-host, one veth pair isl-gen0
    (10.99.0.1/24) <-> isl-host0 (10.99.0.2/24), 1 queue, MTU 1500, and
    permanent neighbour entries on both ends. Everything it makes is named
    with the prefix `isl-` and recorded in /run/isolane/testbed.json.

    \b
    Run something on a side:  ip netns exec isl-gen CMD
    """


@testbed.command()
@_options
def up(config_path, as_json):
    """Make the testbed, or repair it and converge it to the config.

    Idempotent: a second `up` changes nothing. A partial testbed (a missing
    namespace or link, wrong MTU, queues, addresses or neighbours) is
    repaired; a veth pair whose queue counts differ is re-created.
    """
    tb = _testbed(config_path)
    result = _run(tb.up)
    if as_json:
        emit_json({"ok": True, **result.as_dict()})
        return
    if result.actions:
        for action in result.actions:
            stdout.print(f"  {action}", highlight=False)
    else:
        stdout.print("already up to date")
    _print_status(result.status)


@testbed.command()
@_options
def down(config_path, as_json):
    """Remove the testbed: its namespaces (with their links) and state file.

    Removes only what carries the testbed's prefix; idempotent.
    """
    tb = _testbed(config_path)
    result = _run(tb.down)
    if as_json:
        emit_json({"ok": True, **result.as_dict()})
        return
    for warning in result.warnings:
        stdout.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.removed:
        for item in result.removed:
            stdout.print(f"  removed {item}", highlight=False)
    else:
        stdout.print("nothing to remove")


@testbed.command()
@_options
def status(config_path, as_json):
    """Show the namespaces, links (MAC, MTU, queues, state, XDP program),
    addresses and neighbours, and how they differ from the config.

    Exit status 0 whether or not the testbed is up (see "up" in --json).
    """
    tb = _testbed(config_path)
    st = _run(tb.status)
    if as_json:
        emit_json(st.as_dict())
        return
    _print_status(st)


def _print_status(st) -> None:
    if st.up:
        stdout.print("[bold green]testbed up[/]")
    elif not any(ns["exists"] for ns in st.namespaces):
        stdout.print("[bold]testbed down[/]")
    else:
        stdout.print("[bold yellow]testbed incomplete[/] (`isolane testbed up` repairs it):")
        for p in st.problems:
            stdout.print(f"  - {p}", highlight=False)
    for ns in st.namespaces:
        if not ns["exists"]:
            stdout.print(f"namespace {ns['name']}: [red]missing[/]")
            continue
        stdout.print(f"namespace [bold]{ns['name']}[/]")
        for link in ns["links"]:
            if link["name"] == "lo":
                continue
            xdp = ""
            if link["xdp"]:
                x = link["xdp"]
                xdp = f"  xdp {x['mode']} id {x['prog_id']}" + (f" {x['name']}" if x.get("name") else "")
            stdout.print(
                f"  {link['name']:<12} {link['mac']}  mtu {link['mtu']}  "
                f"queues {link['tx_queues']}/{link['rx_queues']}  {link['state']}"
                f"  {' '.join(link['addresses']) or '-'}{xdp}", highlight=False, soft_wrap=True)
        for n in ns["neighbours"]:
            stdout.print(f"  neigh {n['dst']} lladdr {n['lladdr']} dev {n['dev']} "
                         f"{','.join(n['state'])}", highlight=False)
