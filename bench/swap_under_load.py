#!/usr/bin/env python3
"""Program swaps under load: does replacing a tenant's program while its
traffic flows lose a packet? (issue 6 target: 0)

Brings the testbed up and starts isolaned on its isolane end (afxdp). One
tenant, `udp_echo`, answers a Poisson flow from bench/loadgen.py. In *swap*
rounds a second thread reloads the tenant's program through the control API
all the time, alternating aot and interp (each `prog.load` compiles, has the
kernel verify, bounds, translates and swaps in); in *baseline* rounds
nothing is swapped. Rounds alternate, so both see the same machine. A
packet the loadgen sent and never got back is lost, whatever lost it (the
veth path and the host drop a few of their own): the baseline shows how
many go without any swap. isolaned compiles on the cores other than the fast
path's; on a 2-core machine that is the generator's core, so the generator
sends late while a compile runs (`late sends`: more than 20 us behind their
time), and latency, counted from the intended send time, shows it.

    sudo .venv/bin/python bench/swap_under_load.py [--rate 50000] [--duration 4] [--reps 2]
"""
from __future__ import annotations

import pathlib
import sys
import threading

import click
from rich import box
from rich.table import Table

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402
from common import RESULTS, console as make_console, fmt_count, fmt_us, write_json  # noqa: E402

from control.client import Client  # noqa: E402
from control.daemon_proc import LocalDaemon, interface_toml  # noqa: E402
from control.testbed import Testbed, TestbedConfig  # noqa: E402
from datapath import default_cores  # noqa: E402

PORT = 7
SOURCE = (ROOT / "tenants" / "udp_echo" / "handler.c").read_text()


def swapper(sock: str, stop: threading.Event, swaps: list) -> None:
    """Reloads the tenant's program until `stop`, alternating engines."""
    with Client(sock) as c:
        engines = ("interp", "aot")
        while not stop.is_set():
            engine = engines[len(swaps) % 2]
            c.call("prog.load", tenant="echo", source=SOURCE, engine=engine)
            swaps.append(engine)


def one_round(sock: str, wire, host_ip: str, rate: float, duration: float, swap: bool,
              gen_core: int) -> dict:
    stop, swaps = threading.Event(), []
    thread = threading.Thread(target=swapper, args=(sock, stop, swaps), daemon=True)
    if swap:
        thread.start()
    try:
        res = loadgen.run([loadgen.LoadFlow("echo", dst=host_ip, dport=PORT, rate_pps=rate)],
                          duration, wire, core=gen_core)
    finally:
        stop.set()
        if swap:
            thread.join()
    f = res.flows["echo"]
    return {"swap": swap, "swaps": len(swaps), "sent": f.sent, "answered": f.completed,
            "lost": f.lost, "late": f.late, "p50_us": f.p50_us, "p99_us": f.p99_us}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rate", type=float, default=50_000, show_default=True, help="Packets per second.")
@click.option("--duration", type=float, default=4.0, show_default=True, help="Seconds per round.")
@click.option("--reps", type=int, default=2, show_default=True,
              help="Rounds of each kind (alternating).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "swap_under_load.json", show_default=True)
def main(rate, duration, reps, json_path):
    """Packets lost while a tenant's program is swapped over and over under
    load, beside rounds without swaps. Needs root; brings the testbed up."""
    console = make_console()
    config = TestbedConfig.load()
    Testbed(config).up()
    spec = config.pair_specs()[0]
    wire = loadgen.Wire.testbed(config)
    loop_core, gen_core = default_cores()
    interfaces = interface_toml(spec.host.ifname, spec.host.netns)
    rounds = []
    with LocalDaemon(backend="afxdp", policy="cycles", core=loop_core,
                     extra_toml=interfaces) as d:
        with Client(d.socket) as c:
            c.call("tenant.add", name="echo", owner="root", share=0.5, cap_us=50,
                   rules=[{"ip_dst": spec.host.ip, "proto": "udp", "dport": PORT}])
            c.call("prog.load", tenant="echo", source=SOURCE, engine="aot")
        for rep in range(reps):
            for swap in (True, False) if rep % 2 == 0 else (False, True):
                console.print(f"round {len(rounds) + 1}/{2 * reps}: "
                              f"{'swapping' if swap else 'baseline'} ...")
                rounds.append(one_round(d.socket, wire, spec.host.ip, rate, duration, swap,
                                        gen_core))
    table = Table(title=f"udp_echo at {rate / 1e3:g} kpps, {duration:g} s rounds",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("round", "swaps", "sent", "answered", "lost", "late sends", "p50 us", "p99 us"):
        table.add_column(col, justify="left" if col == "round" else "right")
    for r in rounds:
        table.add_row("swapping" if r["swap"] else "baseline", str(r["swaps"]),
                      fmt_count(r["sent"]), fmt_count(r["answered"]), str(r["lost"]),
                      fmt_count(r["late"]), fmt_us(r["p50_us"]), fmt_us(r["p99_us"]))
    console.print(table)
    swapped = [r for r in rounds if r["swap"]]
    lost = sum(r["lost"] for r in swapped)
    base_lost = sum(r["lost"] for r in rounds if not r["swap"])
    n_swaps = sum(r["swaps"] for r in swapped)
    ok = lost == 0
    console.print(f"  {'[green]met[/]' if ok else '[red]NOT met[/]'}  {n_swaps} swaps under "
                  f"load lost {lost} of {sum(r['sent'] for r in swapped)} packets "
                  f"(target 0; baseline rounds without swaps lost {base_lost})")
    write_json(json_path, {"rate_pps": rate, "duration_s": duration, "rounds": rounds,
                           "swaps": n_swaps, "lost_swapping": lost, "lost_baseline": base_lost})
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
