"""`isolane prog`: check and run tenant programs locally (no daemon); the
daemon-backed `load|unload|list|show` live in control/prog_daemon.py and
join this group at the bottom of this file.

`check` compiles a tenant's restricted C with bcc, has the kernel verifier
prove it safe, relocates and validates the bytecode and computes its static
bound. `run` executes it on a packet under isolane's interpreter or in the
kernel (BPF_PROG_TEST_RUN, the oracle), or runs raw bytecode with r1
pointing at a copy of some memory and r2 its length.
"""
from __future__ import annotations

import pathlib

import click

from .output import emit_json, fail, stdout
from .prog_daemon import COMMANDS as DAEMON_COMMANDS
from .rpc_cli import EXIT_REJECTED, wants_json

VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


def _build(path: pathlib.Path, function: str | None, loop_budget: int | None):
    """The verified, relocated program, or exit 3 with the verifier's reason."""
    from datapath.errors import IsolaneError
    from ebpf import build
    from ebpf.errors import VerifierError

    try:
        return build(path, name=function, loop_budget=loop_budget)
    except VerifierError as e:
        return e
    except IsolaneError as e:
        fail(str(e), EXIT_REJECTED)


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.replace(":", "").replace(" ", ""))
    except ValueError:
        raise click.BadParameter(f"{what} must be hex bytes") from None


@click.group()
def prog():
    """Tenant programs (XDP, restricted C): check and run them here, or load
    them into a tenant through isolaned.

    \b
    Local (no daemon):     check, run
    Through the daemon:    load, unload, list, show

    \b
    Examples:
      isolane prog check tenants/udp_echo
      isolane prog load web tenants/udp_echo --engine aot
    """


@prog.command()
@click.argument("source", type=click.Path(exists=True, path_type=pathlib.Path))
@click.option("--function", help="The handler function (default: the only XDP function).")
@click.option("--loop-budget", type=int, help="Back edges a run may take (programs with loops).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(source, function, loop_budget, as_json):
    """Compile SOURCE, verify it in the kernel and print its bounds.

    SOURCE is a tenant's .c file, or its folder (handler.c and tenant.toml,
    which names the function and any loop budget).

    Exit status 0 when accepted, 3 when rejected (the verifier's log says
    why), 2 on a usage error.
    """
    from ebpf.errors import VerifierError

    as_json = wants_json(as_json)
    result = _build(source, function, loop_budget)
    if isinstance(result, VerifierError):
        if as_json:
            emit_json({"accepted": False, "reason": result.reason, "verifier_log": result.log})
        else:
            stdout.print(f"[bold red]rejected[/]: {result.reason}")
            stdout.print(result.log, highlight=False, markup=False)
        raise click.exceptions.Exit(EXIT_REJECTED)
    info = result.summary()
    if as_json:
        emit_json({"accepted": True, **info})
        return
    stdout.print(f"[bold green]accepted[/]: {info['name']} ({source})")
    stdout.print(f"  instructions  {info['n_insns']}")
    stdout.print(f"  bound         {info['bound_insns']} instructions per packet"
                 + (f", {info['bound_cycles']:.0f} cycles" if info.get("bound_cycles") else ""))
    if info.get("loop_budget"):
        stdout.print(f"  loop budget   {info['loop_budget']} back edges")
    for m in info["maps"]:
        stdout.print(f"  map           {m['name']}: type {m['type']}, key {m['key_size']} B, "
                     f"value {m['value_size']} B, {m['max_entries']} entries")


def _packets(packet: str | None, pcap: pathlib.Path | None) -> list[bytes]:
    if bool(packet) == bool(pcap):
        raise click.UsageError("give exactly one of --packet and --pcap")
    if packet:
        return [_hex(packet, "--packet")]
    from scapy.utils import rdpcap

    return [bytes(p) for p in rdpcap(str(pcap))]


def _run_xdp(program, engine: str, pkt: bytes, repeat: int) -> dict:
    if engine == "kernel":
        from ebpf.kernel import test_run

        run = test_run(program.kernel_fd, pkt, repeat=repeat)
        return {"verdict": VERDICTS.get(run.retval, str(run.retval)), "packet": run.data_out,
                "insns": None, "ns_per_run": run.duration_ns}
    if engine == "aot":
        from ebpf.engines import load_aot

        aot = load_aot(program).aot
        verdict, out_pkt = aot.run_xdp(pkt)
        out = {"verdict": "fault" if verdict == 255 else VERDICTS.get(verdict, str(verdict)),
               "packet": out_pkt, "insns": None, "ns_per_run": None}
        if repeat > 1:
            out["ns_per_run"] = aot.bench_xdp(pkt, repeat)
        return out
    from ebpf.engines import load_interp

    vm = load_interp(program).vm
    res = vm.run_xdp(pkt)
    out = {"verdict": VERDICTS.get(res.verdict, str(res.verdict)), "packet": res.packet,
           "insns": res.insns, "ns_per_run": None}
    if res.fault:
        out["fault"] = {"error": res.fault, "insn": res.fault_pc}
    if repeat > 1:
        out["ns_per_run"] = vm.bench_xdp(pkt, repeat)
    return out


def _run_raw(raw: pathlib.Path, mem: bytes, engine: str) -> dict:
    insns = raw.read_bytes()
    if len(insns) % 8:
        raise click.BadParameter(f"{raw}: {len(insns)} bytes is not a whole number of "
                                 "8-byte instructions")
    if engine == "kernel":
        from ebpf.kernel import run_raw

        r0, mem_after = run_raw(insns, mem)
        return {"r0": r0, "mem": mem_after, "note": "the kernel reports r0's low 32 bits"}
    if engine == "aot":
        from ebpf.aot import load_raw

        r0, mem_after, fault = load_raw(insns).run_raw(mem)
        out = {"r0": r0, "mem": mem_after}
        if fault:
            out["fault"] = {"error": fault}
        return out
    from datapath.ebpf_engine import Program

    res = Program(insns, []).run_raw(mem)
    out = {"r0": res.r0, "mem": res.mem_after, "insns": res.insns}
    if res.fault:
        out["fault"] = {"error": res.fault, "insn": res.fault_pc}
    return out


@prog.command()
@click.argument("source", required=False, type=click.Path(exists=True, path_type=pathlib.Path))
@click.option("--packet", help="The input frame as hex (Ethernet header first).")
@click.option("--pcap", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="Run every frame of a pcap file.")
@click.option("--raw", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="Raw bytecode (8-byte little-endian instructions) instead of SOURCE.")
@click.option("--mem", help="With --raw: memory as hex; r1 points at a copy, r2 is its length.")
@click.option("--engine", type=click.Choice(["interp", "aot", "kernel"]), default="interp",
              show_default=True, help="isolane's interpreter, its compiled engine (aot), or "
                                      "the kernel (the oracle).")
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Runs to time (ns per run is their mean).")
@click.option("--function", help="The handler function (default: the only XDP function).")
@click.option("--loop-budget", type=int, help="Back edges a run may take.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Machine-readable output.")
def run(source, packet, pcap, raw, mem, engine, repeat, function, loop_budget, as_json):
    """Run a tenant program on packets, or raw bytecode on memory.

    SOURCE is a tenant's .c file or folder. The interpreter reports the
    instructions it executed; --repeat N times N runs (ns per run).
    """
    from datapath.errors import IsolaneError  # here: the daemon's commands need no datapath

    if repeat < 1:
        raise click.BadParameter("--repeat must be >= 1")
    as_json = wants_json(as_json)
    try:
        if raw:
            if source or packet or pcap:
                raise click.UsageError("--raw takes --mem, not SOURCE, --packet or --pcap")
            results = [_run_raw(raw, _hex(mem or "", "--mem"), engine)]
        else:
            if not source:
                raise click.UsageError("give SOURCE (a tenant's .c file) or --raw FILE")
            from ebpf.errors import VerifierError

            program = _build(source, function, loop_budget)
            if isinstance(program, VerifierError):
                fail(f"rejected: {program.reason}", EXIT_REJECTED)
            results = [_run_xdp(program, engine, pkt, repeat)
                       for pkt in _packets(packet, pcap)]
    except IsolaneError as e:
        fail(str(e), 1)
    if as_json:
        emit_json(results if len(results) > 1 else results[0])
        return
    for i, r in enumerate(results):
        if len(results) > 1:
            stdout.print(f"[bold]packet {i}[/]")
        for key, value in r.items():
            if value is None:
                continue
            shown = value.hex() if isinstance(value, bytes) else value
            if key == "r0":
                shown = f"{value:#x} ({value})"
            if key == "ns_per_run":
                shown = f"{value:.1f}"
            click.echo(f"  {key:<11} {shown}")


for _command in DAEMON_COMMANDS:
    prog.add_command(_command)
