#!/usr/bin/env python3
"""The programmability tax: what running a tenant's handler as eBPF costs.

Runs are in place, as BPF_PROG_TEST_RUN's repeat runs them in the kernel:
a tenant that rewrites its packet (kv answers, hasher writes its hash)
sees its own output from the second run on, in every engine alike.

For every tenant program in tenants/, ns per packet on one representative
packet (its first fixture), side by side in one run:
  native  the hand-written C twin, where one exists (udp_echo: echo)
  aot     the program translated to C and compiled with the datapath's glue
  interp  isolane's eBPF interpreter
  kernel  the kernel's JIT under BPF_PROG_TEST_RUN with repeat (the anchor)
Each figure is the least of --rounds interleaved measurements: the machine
is shared, and interference only ever adds time. ns per executed instruction is given for the
interpreter, and the tax interp / native - 1 where there is a twin.
"""
from __future__ import annotations

import pathlib
import sys
import time

import click
from rich import box
from rich.table import Table

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import RESULTS, console as make_console, write_json  # noqa: E402

from datapath._dp import lib  # noqa: E402

TENANTS = pathlib.Path(__file__).resolve().parent.parent / "tenants"
NATIVE_TWINS = {"udp_echo": lib.DP_HANDLER_UDP_ECHO}  # passes udp_echo's fixture table


def native_ns(kind: int, pkt: bytes, repeat: int) -> float:
    cycles = lib.dp_handler_bench(kind, pkt, len(pkt), repeat)
    if cycles < 0:
        raise RuntimeError(f"dp_handler_bench: {cycles}")
    return cycles / repeat / lib.dp_tsc_hz() * 1e9


def measure(tenant_dir: pathlib.Path, repeat: int, rounds: int) -> dict:
    from ebpf import build
    from ebpf.engines import load_aot, load_interp
    from ebpf.fixtures import load_table
    from ebpf.kernel import test_run

    program = build(tenant_dir)
    table = load_table(tenant_dir)
    pkt = table.FIXTURES[0].frame  # each table starts with its main case
    loaded = load_interp(program)
    t0 = time.perf_counter()
    loaded_aot = load_aot(program)  # translation + compilation (or a cache hit)
    aot_build_s = time.perf_counter() - t0
    if getattr(table, "setup", None):  # the same map contents for every engine
        for maps in (loaded.maps, loaded_aot.maps, program.kernel_maps):
            table.setup(maps)
    vm, aot = loaded.vm, loaded_aot.aot
    first_run = vm.run_xdp(pkt).insns
    executed = first_run
    samples = {"native_ns": [], "aot_ns": [], "interp_ns": [], "kernel_ns": [],
               "plain_echo_ns": []}
    twin = NATIVE_TWINS.get(tenant_dir.name)
    for _ in range(rounds):
        if twin is not None:
            samples["native_ns"].append(native_ns(twin, pkt, repeat))
            # the simpler native echo (no fragment/length checks), for context
            samples["plain_echo_ns"].append(native_ns(lib.DP_HANDLER_ECHO, pkt, repeat))
        # as the fast path runs it: installed as the tenant's handler itself
        samples["aot_ns"].append(aot.bench_run(pkt, repeat))
        ns, executed = vm.bench_xdp_detail(pkt, repeat)
        samples["interp_ns"].append(ns)
        samples["kernel_ns"].append(test_run(program.kernel_fd, pkt, repeat=repeat).duration_ns)
    out = {"name": tenant_dir.name, "insns": program.n_insns, "first_run_insns": first_run,
           "executed_insns": executed}
    for key, values in samples.items():
        out[key] = min(values) if values else None
    out["interp_ns_per_insn"] = out["interp_ns"] / executed if executed else None
    out["tax_interp"] = out["interp_ns"] / out["native_ns"] - 1 if out["native_ns"] else None
    out["tax_aot"] = out["aot_ns"] / out["native_ns"] - 1 if out["native_ns"] else None
    out["tax_aot_vs_plain_echo"] = (out["aot_ns"] / out["plain_echo_ns"] - 1
                                    if out["plain_echo_ns"] else None)
    out["aot_build_s"] = aot_build_s
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tenant", "names", multiple=True, help="Only these tenants (folder names).")
@click.option("--repeat", type=int, default=1_000_000, show_default=True,
              help="Runs per measurement.")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="Interleaved measurements per engine (the least is reported).")
@click.option("--quick", is_flag=True, help="100,000 runs, one round.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "progtax.json", show_default=True, help="Write results as JSON.")
def main(names, repeat, rounds, quick, json_path):
    """ns per packet of each tenant program: native C twin, aot, interpreter, kernel JIT."""
    if quick:
        repeat, rounds = 100_000, 1
    console = make_console()
    dirs = sorted(d for d in TENANTS.iterdir() if (d / "handler.c").exists())
    if names:
        dirs = [d for d in dirs if d.name in names]
    programs = []
    with console.status("measuring") as status:
        for d in dirs:
            status.update(f"measuring {d.name}")
            programs.append(measure(d, repeat, rounds))
    table = Table(title="Programmability tax: ns per packet (least of the rounds)",
                  box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for col in ("program", "insns", "run", "native", "aot", "interp", "kernel", "interp/insn",
                "aot tax"):
        table.add_column(col, justify="left" if col == "program" else "right", no_wrap=True)
    for p in programs:
        def f(v, fmt="{:.1f}"):
            return "-" if v is None else fmt.format(v)
        table.add_row(p["name"], str(p["insns"]), str(p["executed_insns"]), f(p["native_ns"]),
                      f(p["aot_ns"]), f(p["interp_ns"]), f(p["kernel_ns"]),
                      f(p["interp_ns_per_insn"], "{:.2f}"), f(p["tax_aot"], "{:+.1%}"))
    console.print(table)
    for p in programs:
        if p["plain_echo_ns"]:
            console.print(f"{p['name']}: the plain native echo (no fragment or length checks) "
                          f"takes {p['plain_echo_ns']:.2f} ns; aot against it: "
                          f"{p['tax_aot_vs_plain_echo']:+.1%}")
    console.print("insns: program size; run: instructions the interpreter executed per run "
                  "once the runs had settled (runs are in place, as BPF_PROG_TEST_RUN's repeat: "
                  "a program that rewrites its packet sees its own output from the second run "
                  "on); aot tax: aot / native - 1 (the programmability tax)")
    write_json(json_path, {"repeat": repeat, "rounds": rounds, "programs": programs})
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
