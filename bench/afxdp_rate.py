#!/usr/bin/env python3
"""afxdp_rate: isolane's afxdp datapath against a bare libxdp echo loop.

Both echo on the isolane end of the testbed's veth pair (isl-host0 in
isl-host), one at a time, behind the same steering program (ebpf/steer.py,
skb mode, one rule: UDP to the host's address, port 7), with the same UMEM
and ring sizes, RX bursts of 32, and the same core. The load comes from
bench/loadgen.py on the generator end (isl-gen0, the other core). So the
two differ only in the user-space loop: the bare loop (bench/loadgen/
bare_echo.c) swaps addresses and transmits, isolane's datapath classifies,
queues, schedules and accounts each packet and runs the tenant's udp_echo.

Rounds are interleaved (bare and isolane in shuffled order within each
repetition, --reps of them) because the host takes cores away for
milliseconds at a time; figures are medians over repetitions, and the ratio
is the median of the per-repetition ratios (each pairs two rounds run
back to back, so a slow stretch of the machine hits both).

  saturation   the generator sends as fast as it can for --duration; the
               echo rate is what the loop transmitted per second of sending
               (its own counter), beside what the generator got back.
               ratio = isolane / bare, paired per repetition (target >= 0.9).
  half load    Poisson arrivals at half of isolane's median saturation echo
               rate; lost = sent - answered, for each loop (target: isolane
               loses nothing below saturation).

Writes a table, and --json (default build/results/afxdp_rate.json).
"""
from __future__ import annotations

import math
import pathlib
import random
import statistics
import sys
import threading
import time

import click
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402
from common import RESULTS, console as make_console, fmt_count, fmt_us, write_json  # noqa: E402

from control.testbed import Testbed, TestbedConfig  # noqa: E402
from datapath import Datapath, Rule, TenantConfig, default_cores  # noqa: E402
from datapath.errors import IsolaneError  # noqa: E402
from ebpf.steer import Steer  # noqa: E402

PORT = 7
TENANT = 1
N_FRAMES, RING_SIZE, BATCH = 4096, 2048, 32   # the datapath's defaults, for both loops
KINDS = ("bare", "isolane")
TARGET_RATIO = 0.9
CLEAN = 0.05   # a thread that waited this share of a round for its core was disturbed


class Bed:
    """The testbed pair, the steering program on its isolane end, cores."""

    def __init__(self, config: TestbedConfig, io: str = "afxdp"):
        self.config = config
        self.io = io  # the generator's sockets (loadgen --io)
        self.spec = config.pair_specs()[0]
        self.wire = loadgen.Wire.testbed(config)
        self.loop_core, self.gen_core = default_cores()
        self.steer = Steer(self.spec.host.ifname, netns=self.spec.host.netns, mode="skb")
        self.steer.add_rule(daddr=self.spec.host.ip, proto="udp", dport=PORT)

    def close(self) -> None:
        self.steer.detach()


def _thread_times() -> dict[int, tuple[int, int]]:
    """Every thread of ours: (ns on its core, ns waiting for it while runnable)."""
    out = {}
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            run, wait = map(int, (task / "schedstat").read_text().split()[:2])
        except (OSError, ValueError):
            continue
        out[int(task.name)] = (run, wait)
    return out


def _loop_taken(before: dict, after: dict) -> float:
    """The share of the round the echo loop's thread (the busiest thread that
    lived through it) waited for its core: the host or another task had it."""
    deltas = [(after[t][0] - before[t][0], after[t][1] - before[t][1])
              for t in before if t in after and t != threading.get_native_id()]
    run, wait = max(deltas, key=lambda d: d[0] + d[1], default=(0, 0))
    return wait / (run + wait) if run + wait else math.nan


def _socket_drops(st: dict) -> int:
    return st["rx_dropped"] + st["rx_ring_full"] + st["fill_empty"]


def _dp_counters(dp: Datapath) -> dict:
    sock = dp.afxdp_stats()[0]
    return {"tx": dp.tenant_stats(TENANT, latency=False).tx, "rx_dropped": sock["rx_dropped"],
            "rx_ring_full": sock["rx_ring_full"], "fill_empty": sock["rx_fill_ring_empty_descs"]}


def _bare(bed: Bed, flows, duration: float, tick) -> tuple[dict, dict, loadgen.LoadResult]:
    host = bed.spec.host
    with loadgen.BareEcho(host.ifname, netns=host.netns, core=bed.loop_core, n_frames=N_FRAMES,
                          ring_size=RING_SIZE, batch=BATCH) as echo:
        bed.steer.bind_xsk(0, echo.fd)
        try:
            before = echo.stats()
            before["threads"] = _thread_times()
            res = loadgen.run(flows, duration, bed.wire, core=bed.gen_core, io=bed.io,
                              progress=tick)
            after = echo.stats()
            after["threads"] = _thread_times()
        finally:
            bed.steer.unbind_xsk(0)
    return before, after, res


def _isolane(bed: Bed, flows, duration: float, tick, handler: str):
    host = bed.spec.host
    dp = Datapath(policy="fifo", rx_batch=BATCH, core=bed.loop_core)
    try:
        dp.add_tenant(TENANT, TenantConfig(handler=handler, queue_cap=1024))
        dp.set_rules([Rule(TENANT, ip_dst=host.ip, proto="udp", dport=PORT)])
        # as the bare loop: copy mode, fed by the skb-mode steering program
        dp.use_afxdp_backend(host.ifname, 0, n_frames=N_FRAMES, ring_size=RING_SIZE,
                             mode="skb", zerocopy=False, netns=host.netns)
        bed.steer.bind_xsk(0, dp.afxdp_fd)
        try:
            with dp.running():
                before = _dp_counters(dp)
                before["threads"] = _thread_times()
                res = loadgen.run(flows, duration, bed.wire, core=bed.gen_core, io=bed.io,
                                  progress=tick)
                after = _dp_counters(dp)
                after["threads"] = _thread_times()
        finally:
            bed.steer.unbind_xsk(0)
    finally:
        dp.close()
    return before, after, res


def echo_round(bed: Bed, kind: str, phase: str, rep: int, rate_pps: float | None,
               duration: float, tick, handler: str) -> dict:
    """One round: `kind` echoes, the generator saturates (rate None) or
    sends Poisson arrivals at rate_pps."""
    flow = loadgen.LoadFlow("echo", dst=bed.spec.host.ip, dport=PORT,
                            rate_pps=rate_pps or 1.0,
                            arrival="saturate" if rate_pps is None else "poisson")
    run = _bare if kind == "bare" else _isolane
    args = (bed, [flow], duration, tick) + (() if kind == "bare" else (handler,))
    before, after, res = run(*args)
    f = res.flows["echo"]
    return {"kind": kind, "phase": phase, "rep": rep, "offered_pps": rate_pps,
            "echo_mpps": (after["tx"] - before["tx"]) / res.duration_s / 1e6,
            "sent_mpps": res.sent_mpps, "answered_mpps": res.completed_mpps,
            "sent": f.sent, "answered": f.completed, "lost": f.lost, "late": f.late,
            "socket_drops": _socket_drops(after) - _socket_drops(before),
            "p50_us": f.p50_us, "p99_us": f.p99_us, "duration_s": res.duration_s,
            "loop_taken": _loop_taken(before["threads"], after["threads"]),
            "gen_taken": res.stats["core_taken"]}


def summarize(rounds: list[dict], kind: str, phase: str) -> dict:
    rs = [r for r in rounds if r["kind"] == kind and r["phase"] == phase]
    if not rs:
        return {}
    med = {k: statistics.median(r[k] for r in rs)
           for k in ("echo_mpps", "sent_mpps", "answered_mpps", "p50_us", "p99_us",
                     "loop_taken", "gen_taken")}
    med.update(sent=sum(r["sent"] for r in rs), lost=sum(r["lost"] for r in rs),
               late=sum(r["late"] for r in rs),
               socket_drops=sum(r["socket_drops"] for r in rs),
               echo_mpps_reps=[r["echo_mpps"] for r in rs], reps=len(rs))
    return med


def paired_ratios(rounds: list[dict], clean_only: bool = False) -> list[float]:
    """isolane / bare echo Mpps of each saturation repetition; clean_only:
    only repetitions whose four threads (loop and generator, both rounds)
    had their cores to themselves (waited less than CLEAN of the time)."""
    sat = {(r["kind"], r["rep"]): r for r in rounds if r["phase"] == "saturation"}
    out = []
    for rep in sorted({rep for _, rep in sat}):
        pair = sat.get(("bare", rep)), sat.get(("isolane", rep))
        if None in pair or pair[0]["echo_mpps"] <= 0:
            continue
        if clean_only and not all(r[k] < CLEAN for r in pair for k in ("loop_taken", "gen_taken")):
            continue
        out.append(pair[1]["echo_mpps"] / pair[0]["echo_mpps"])
    return out


def print_table(console, summary: dict, half_pps: float) -> None:
    table = Table(title="AF_XDP echo on the testbed's veth pair: isolane vs a bare libxdp loop",
                  caption="saturation (Mpps): medians over repetitions; echo = what the loop sent per "
                          "second, back = what came back to the generator; drops = the "
                          "loop's socket (RX ring or fill ring); taken = share of the round "
                          "the loop / generator thread waited for its core | half load: Poisson at "
                          f"{half_pps / 1e3:.0f} kpps, lost and late (sent > 20 us after their "
                          "time: the generator's core was taken) summed over repetitions, "
                          "latency medians in us",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    for col in ("loop", "echo", "back", "sent", "drops", "taken", "| half: sent", "lost", "late",
                "p50", "p99"):
        table.add_column(col, justify="left" if col == "loop" else "right", no_wrap=True)
    for kind in KINDS:
        sat, half = summary[kind]["saturation"], summary[kind].get("half", {})
        table.add_row(kind, f"{sat['echo_mpps']:.3f}", f"{sat['answered_mpps']:.3f}",
                      f"{sat['sent_mpps']:.3f}", fmt_count(sat["socket_drops"]),
                      f"{sat['loop_taken']:.0%}/{sat['gen_taken']:.0%}",
                      fmt_count(half["sent"]) if half else "-",
                      fmt_count(half["lost"]) if half else "-",
                      fmt_count(half["late"]) if half else "-",
                      fmt_us(half["p50_us"]) if half else "-",
                      fmt_us(half["p99_us"]) if half else "-")
    console.print(table)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Two repetitions of 0.5 s rounds (about 15 s).")
@click.option("--duration", type=float, help="Seconds of sending per round [1.0; quick 0.5].")
@click.option("--reps", type=int, help="Repetitions of each round [7; quick 2].")
@click.option("--handler", type=click.Choice(["udp_echo", "echo"]), default="udp_echo",
              show_default=True, help="The isolane tenant's native handler.")
@click.option("--io", type=click.Choice(list(loadgen.IOS)), default="afxdp", show_default=True,
              help="The generator's sockets (see bench/loadgen.py --help).")
@click.option("--testbed-config", type=click.Path(exists=True, dir_okay=False),
              help="Testbed TOML (default: control/testbed.toml); pair 0 is used.")
@click.option("--down", is_flag=True, help="Remove the testbed afterwards.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "afxdp_rate.json", show_default=True, help="Write results as JSON.")
def main(quick, duration, reps, handler, io, testbed_config, down, json_path):
    """Echo rate of isolane's afxdp datapath against a bare libxdp loop on the
    same veth pair, side by side (target: ratio >= 0.9), and the loss at half
    the saturation rate (target: 0). Needs root; brings the testbed up."""
    console = make_console()
    duration = duration or (0.5 if quick else 1.0)
    reps = reps or (2 if quick else 7)
    config = TestbedConfig.load(testbed_config)
    tb = Testbed(config)
    started = time.monotonic()
    try:
        up = tb.up()
        if up.changed:
            console.print(f"testbed: {len(up.actions)} change(s) made")
        bed = Bed(config, io)
    except IsolaneError as e:
        raise click.ClickException(str(e)) from None
    rng = random.Random(1)
    rounds: list[dict] = []
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                      console=console, transient=True, auto_refresh=False) as bar:
            task = bar.add_task("", total=2 * reps * 2 * duration)

            def phase(name: str, rate):
                for rep in range(reps):
                    for kind in rng.sample(KINDS, len(KINDS)):
                        done = len(rounds) * duration
                        bar.update(task, description=f"{name} {rep + 1}/{reps}: {kind:<7}")

                        def tick(sent, received, elapsed, done=done):
                            bar.update(task, completed=done + min(duration, elapsed),
                                       refresh=True)

                        rounds.append(echo_round(bed, kind, name, rep, rate, duration, tick,
                                                 handler))

            phase("saturation", None)
            half_pps = 0.5 * summarize(rounds, "isolane", "saturation")["echo_mpps"] * 1e6
            phase("half", half_pps)
    except IsolaneError as e:
        raise click.ClickException(str(e)) from None
    finally:
        bed.close()
        if down:
            tb.down()
    summary = {k: {p: summarize(rounds, k, p) for p in ("saturation", "half")} for k in KINDS}
    bare = summary["bare"]["saturation"]["echo_mpps"]
    iso = summary["isolane"]["saturation"]["echo_mpps"]
    ratios = paired_ratios(rounds)
    clean = paired_ratios(rounds, clean_only=True)
    # the verdict reads the undisturbed repetitions when there are two or more
    judged = clean if len(clean) >= 2 else ratios
    ratio = statistics.median(judged) if judged else float("nan")
    ratio_all = statistics.median(ratios) if ratios else float("nan")
    lost = summary["isolane"]["half"]["lost"]
    half_clean = [r for r in rounds if r["kind"] == "isolane" and r["phase"] == "half"
                  and r["loop_taken"] < CLEAN and r["gen_taken"] < CLEAN]
    lost_clean = sum(r["lost"] for r in half_clean)
    sent_clean = sum(r["sent"] for r in half_clean)
    print_table(console, summary, half_pps)
    console.print(f"  bare libxdp loop: [bold]{bare:.3f} Mpps[/]   isolane afxdp: [bold]{iso:.3f}"
                  f" Mpps[/]   ratio: [bold]{ratio_all:.2f}[/] (per repetition: "
                  f"{', '.join(f'{r:.2f}' for r in ratios)})")
    console.print(f"  half load: isolane lost {lost} of {summary['isolane']['half']['sent']} in all "
                  f"{reps} rounds, {lost_clean} of {sent_clean} in the {len(half_clean)} "
                  "undisturbed ones")
    console.print(f"  undisturbed repetitions (every thread waited < {CLEAN:.0%} for its core): "
                  f"{len(clean)} of {len(ratios)}"
                  + (f", ratio [bold]{statistics.median(clean):.2f}[/] "
                     f"({', '.join(f'{r:.2f}' for r in clean)})" if clean else ""))
    which = f"{len(clean)} undisturbed repetitions" if judged is clean else "all repetitions"
    for what, ok in ((f"isolane / bare echo rate >= {TARGET_RATIO} ({ratio:.2f}, {which})",
                      ratio >= TARGET_RATIO),
                     (f"isolane loses nothing at half its saturation rate ({half_pps / 1e3:.0f} "
                      f"kpps): lost {lost_clean} of {sent_clean} in {len(half_clean)} undisturbed "
                      f"rounds" if len(half_clean) >= 2 else
                      f"isolane loses nothing at half its saturation rate ({half_pps / 1e3:.0f} "
                      f"kpps): lost {lost} of {summary['isolane']['half']['sent']}",
                      (lost_clean if len(half_clean) >= 2 else lost) == 0)):
        console.print(f"  {'[green]met[/]' if ok else '[red]NOT met[/]'}  {what}")
    write_json(json_path, {"quick": quick, "duration_s": duration, "reps": reps,
                           "handler": handler, "io": io, "testbed": config.as_dict(),
                           "cores": {"loop": bed.loop_core, "generator": bed.gen_core},
                           "bare_mpps": bare, "isolane_mpps": iso, "ratio": ratio,
                           "ratio_all": ratio_all, "ratios": ratios, "ratios_undisturbed": clean,
                           "half_load_pps": half_pps, "isolane_lost_at_half": lost,
                           "isolane_lost_at_half_undisturbed": lost_clean,
                           "isolane_sent_at_half_undisturbed": sent_clean,
                           "summary": summary, "rounds": rounds})
    console.print(f"{len(rounds)} rounds in {time.monotonic() - started:.0f} s; wrote {json_path}")


if __name__ == "__main__":
    main()
