#!/usr/bin/env python3
"""isolane's demo (`make demo`): the whole product on this machine, end to end.

1. The testbed: a generator namespace and an isolane-host namespace joined
   by a veth pair (`isolane testbed up`).
2. isolaned on the host end (afxdp backend, steering program attached), with
   its state in a fresh directory.
3. The operator (root) adds two tenants with `isolane tenant add`: `victim`,
   owned by the unix user isl-victim, and `aggressor`, owned by isl-aggr.
   Each user then registers its own program with `isolane prog load`, as
   itself (the daemon knows who it is from SO_PEERCRED): the victim the
   `udp_echo` program (aot), the aggressor `hasher` on the interpreter,
   where hashing 1 KB costs it ~10-20 us a packet.
4. bench/loadgen.py sends the victim's light flow and the aggressor's flow
   at twice what the core can hash, first with no isolation (isolaned's
   policy fifo), then with time protection (cycles) - the daemon is
   restarted with the other policy and restores both tenants and their
   programs from its sqlite state (re-verified in the kernel).
5. The per-tenant table, the victim's p99 ratio, and a plot of the victim's
   latency distribution under both policies; then everything it made is
   removed (daemon, state, testbed, the two users).

Needs root. Writes build/results/demo.{json,png}.
"""
from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import click
from rich import box
from rich.table import Table

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402
from common import RESULTS, console as make_console, fmt_count, fmt_ratio, fmt_us, ratio, save_figure, write_json  # noqa: E402

from control import cli  # noqa: E402  (imported before any fork: children only run it)
from control.client import Client  # noqa: E402
from control.daemon_proc import LocalDaemon, interface_toml  # noqa: E402
from control.testbed import Testbed, TestbedConfig  # noqa: E402
from datapath import default_cores  # noqa: E402
from datapath.probe import udp_frame  # noqa: E402

USERS = {"victim": "isl-victim", "aggressor": "isl-aggr"}
PORTS = {"victim": 7, "aggressor": 9}
PROGRAMS = {"victim": ("udp_echo", "aot"), "aggressor": ("hasher", "interp")}
VICTIM_PPS = 50_000
VICTIM_SIZE, AGGRESSOR_SIZE = 64, 1066   # the aggressor hashes 1024 payload bytes
AGGRESSOR_LOAD = 2.0                     # offered work, in multiples of the core
POLICIES = ("fifo", "cycles")

console = make_console()


def shell(line: str) -> None:
    console.print(f"[dim]$[/] [bold]{line}[/]", highlight=False)


def ensure_users() -> list[str]:
    """The two tenants' unix users; returns the ones made here."""
    made = []
    for user in USERS.values():
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                            "/usr/sbin/nologin", user], check=True)
            made.append(user)
    return made


def isolane_as(user: str | None, socket_path: str, *args: str) -> int:
    """Runs the `isolane` CLI as `user` (None: as root, the operator): a
    child process that drops to the user's uid and groups first, so the
    daemon sees that user on its socket."""
    shell(("" if user is None else f"sudo -u {user} ") + "isolane " + " ".join(args))
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child: become the user, run the CLI, exit with its code
        code = 1
        try:
            if user is not None:
                pw = pwd.getpwnam(user)
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            code = cli.main(["--socket", socket_path, *args], standalone_mode=False) or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - a child must not return into the demo
            print(f"isolane: {e}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def must(code: int, what: str) -> None:
    if code != 0:
        raise click.ClickException(f"{what} failed (exit {code})")


def stage_programs(where: pathlib.Path) -> dict[str, pathlib.Path]:
    """Copies of the two tenant folders the tenants' users can read (this
    checkout may sit under a directory only root can enter)."""
    out = {}
    for who, (folder, _) in PROGRAMS.items():
        dst = where / folder
        shutil.copytree(ROOT / "tenants" / folder, dst)
        for p in [dst, *dst.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        out[who] = dst
    where.chmod(0o755)
    return out


def aggressor_cost_ns() -> float:
    """What one aggressor packet costs `hasher` on its engine, measured here."""
    from ebpf import build, engines

    prog = build(ROOT / "tenants" / PROGRAMS["aggressor"][0])
    frame = udp_frame("10.99.0.2", PORTS["aggressor"], size=AGGRESSOR_SIZE)
    return engines.load_interp(prog).vm.bench_xdp(frame, 2000)


def register_tenants(sock: str, host_ip: str, sources: dict[str, pathlib.Path]) -> None:
    for who, user in USERS.items():
        must(isolane_as(None, sock, "tenant", "add", who, "--owner", user, "--share", "0.5",
                        "--cap-us", "50", "--queue-cap", "1024", "--rule",
                        f"ip={host_ip},proto=udp,port={PORTS[who]}"), f"tenant add {who}")
    for who, user in USERS.items():
        engine = PROGRAMS[who][1]
        must(isolane_as(user, sock, "prog", "load", who, str(sources[who]), "--engine", engine),
             f"prog load {who}")
    # a tenant sees only itself
    isolane_as(USERS["victim"], sock, "tenant", "list")


def run_load(wire: loadgen.Wire, host_ip: str, aggressor_pps: float, duration: float,
             gen_core: int) -> loadgen.LoadResult:
    flows = [loadgen.LoadFlow("victim", dst=host_ip, dport=PORTS["victim"], rate_pps=VICTIM_PPS,
                              size=VICTIM_SIZE),
             loadgen.LoadFlow("aggressor", dst=host_ip, dport=PORTS["aggressor"],
                              rate_pps=aggressor_pps, size=AGGRESSOR_SIZE)]
    console.print(f"loadgen: victim {VICTIM_PPS / 1e3:g} kpps x {VICTIM_SIZE} B, aggressor "
                  f"{aggressor_pps / 1e3:.0f} kpps x {AGGRESSOR_SIZE} B for {duration:g} s ...")
    return loadgen.run(flows, duration, wire, core=gen_core)


def daemon_stats(sock: str) -> dict:
    with Client(sock) as c:
        return {t["name"]: t for t in c.call("stats")["tenants"]}


def print_table(results: dict) -> None:
    table = Table(title="Victim (udp_echo) and aggressor (hasher) over the wire, per policy",
                  caption="latency: reply time - intended send time, in us, at the generator; "
                          "inf: among requests never answered. The aggressor's replies carry "
                          "its hash over the probe, so the datapath counts them (dp tx).",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("policy", "tenant", "p50", "p99", "p99.9", "sent", "answered", "dp tx",
                "throttles"):
        table.add_column(col, justify="left" if col in ("policy", "tenant") else "right")
    for policy, r in results.items():
        v, a = r["victim"], r["aggressor"]
        table.add_row(policy, "victim", fmt_us(v["p50_us"]), fmt_us(v["p99_us"]),
                      fmt_us(v["p999_us"]), fmt_count(v["sent"]), fmt_count(v["completed"]),
                      fmt_count(r["daemon"]["victim"]["tx"]),
                      fmt_count(r["daemon"]["victim"]["throttles"]))
        table.add_row("", "aggressor", "", "", "", fmt_count(a["sent"]), "",
                      fmt_count(r["daemon"]["aggressor"]["tx"]),
                      fmt_count(r["daemon"]["aggressor"]["throttles"]))
        table.add_section()
    console.print(table)


def plot(path: pathlib.Path, latencies: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, lat_ns in latencies.items():
        lat = np.sort(lat_ns) / 1e3
        n = lat.size
        finite = lat[np.isfinite(lat)]
        if not finite.size:
            continue
        # the complementary CDF: the share of requests slower than x (lost = never)
        ax.step(finite, 1 - np.arange(1, finite.size + 1) / n, where="post",
                label=f"{policy} ({n - finite.size} of {n} lost)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, 1)
    ax.axhline(0.01, color="grey", lw=0.5, ls=":")
    ax.text(ax.get_xlim()[0], 0.01, " p99", va="bottom", fontsize=8)
    ax.set_xlabel("victim latency (us)")
    ax.set_ylabel("share of the victim's requests slower")
    ax.set_title("Victim tail with the aggressor on: no isolation vs time protection")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--duration", type=float, default=5.0, show_default=True,
              help="Seconds of load per policy.")
@click.option("--keep", is_flag=True, help="Leave the testbed and the users in place.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "demo.json", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "demo.png", show_default=True)
def main(duration, keep, json_path, plot_path):
    """The isolane demo: isolaned on a veth testbed, two tenants registered
    by two unix users, the load generator with and without time protection."""
    if os.geteuid() != 0:
        raise click.ClickException("the demo needs root (namespaces, XDP, AF_XDP, users)")
    started = time.monotonic()
    config = TestbedConfig.load()
    shell("isolane testbed up")
    Testbed(config).up()
    spec = config.pair_specs()[0]
    wire = loadgen.Wire.testbed(config)
    loop_core, gen_core = default_cores()
    made_users = ensure_users()
    work = pathlib.Path(tempfile.mkdtemp(prefix="isolane-demo-"))
    work.chmod(0o755)
    results, latencies = {}, {}
    try:
        sources = stage_programs(work / "tenants")
        cost_ns = aggressor_cost_ns()
        aggressor_pps = AGGRESSOR_LOAD * 1e9 / cost_ns
        console.print(f"hasher on the interpreter: {cost_ns / 1e3:.1f} us per {AGGRESSOR_SIZE} B "
                      f"packet, so {aggressor_pps / 1e3:.0f} kpps is {AGGRESSOR_LOAD:g}x the core")
        interfaces = interface_toml(spec.host.ifname, spec.host.netns)
        for i, policy in enumerate(POLICIES):
            console.rule(f"isolaned, policy {policy}")
            daemon = LocalDaemon(work / "daemon", backend="afxdp", policy=policy,
                                 core=loop_core, extra_toml=interfaces)
            shell(f"isolaned --config {daemon.config_path}")
            daemon.start()
            try:
                if i == 0:
                    register_tenants(daemon.socket, spec.host.ip, sources)
                else:  # restored from the state directory, re-verified
                    must(isolane_as(None, daemon.socket, "prog", "list"), "prog list")
                res = run_load(wire, spec.host.ip, aggressor_pps, duration, gen_core)
                isolane_as(USERS["victim"], daemon.socket, "stats")
                stats = daemon_stats(daemon.socket)
            finally:
                daemon.stop()
            results[policy] = {"victim": res.flows["victim"].tenant_result(),
                               "aggressor": res.flows["aggressor"].tenant_result(),
                               "daemon": stats}
            latencies[policy] = res.flows["victim"].latency_ns
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not keep:
            shell("isolane testbed down")
            Testbed(config).down()
            for user in made_users:
                subprocess.run(["userdel", user], check=False)
    console.rule("results")
    print_table(results)
    p99 = {p: results[p]["victim"]["p99_us"] for p in POLICIES}
    console.print(f"victim p99: fifo {fmt_us(p99['fifo'])} us, cycles {fmt_us(p99['cycles'])} us"
                  f" -> fifo / cycles = [bold]{fmt_ratio(ratio(p99['fifo'], p99['cycles']))}[/]")
    write_json(json_path, {"duration_s": duration, "victim_pps": VICTIM_PPS,
                           "aggressor_pps": aggressor_pps, "aggressor_cost_ns": cost_ns,
                           "results": results})
    plot(plot_path, latencies)
    console.print(f"demo done in {time.monotonic() - started:.0f} s; wrote {json_path}, {plot_path}")


if __name__ == "__main__":
    main()
