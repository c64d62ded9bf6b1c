#!/usr/bin/env python3
"""Peak packet rate of the fast path: echo handlers on the mem backend.

For 1, 4 and 64 tenants (one saturating flow each, classified by UDP
port), compares side by side in one run: fifo without accounting (the bare
loop, the unprotected baseline), fifo with accounting (every turn timed
and charged) and cycles (time protection: accounting plus budgets, equal
shares). Cycles runs work-conserving, as Virtuoso's throughput figure
does: saturating flows overflow their queues, the RX work of those drops
is charged to their tenants, and a strict policy would leave the core idle
while every tenant pays that debt off; work-conserving lends it instead.

The machine is shared and noisy (its speed can change several-fold from
one second to the next), so each repetition runs the three configurations
back to back, in shuffled order, and the ratios are taken within a
repetition: the table gives the median Mpps of each configuration and the
median of the paired ratios. The loop's busy fraction shows who set the
pace: below ~95% it was the generator, not the datapath.
"""
from __future__ import annotations

import pathlib
import random
import statistics
import sys
import time

import click
from rich import box
from rich.progress import Progress
from rich.table import Table

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import RESULTS, console as make_console, write_json  # noqa: E402

from datapath import Datapath, Flow, Rule  # noqa: E402
from datapath.probe import udp_frame  # noqa: E402

CONFIGS = (("fifo", False), ("fifo", True), ("cycles", True))
BASE_PORT = 10000


def measure(policy: str, accounting: bool, tenants: int, seconds: float,
            warmup: float = 0.2) -> dict:
    dp = Datapath(policy, accounting=accounting, work_conserving=True)
    try:
        for t in range(tenants):
            dp.add_tenant(t, handler="echo", queue_cap=256, share=1.0 / tenants, cap_us=1000)
        dp.set_rules([Rule(t, proto="udp", dport=BASE_PORT + t) for t in range(tenants)])
        flows = [Flow(udp_frame(dport=BASE_PORT + t), arrival="saturate") for t in range(tenants)]
        dp.use_mem_backend(flows, duration_s=warmup + seconds + 0.5)
        with dp.running():
            time.sleep(warmup)
            g0, t0 = dp.global_stats(), time.monotonic()
            c0 = sum(dp.tenant_stats(t, latency=False).completed for t in range(tenants))
            time.sleep(seconds)
            g1, t1 = dp.global_stats(), time.monotonic()
            c1 = sum(dp.tenant_stats(t, latency=False).completed for t in range(tenants))
    finally:
        dp.close()
    busy = (g1.busy_cycles - g0.busy_cycles) / max(1, g1.total_cycles - g0.total_cycles)
    return {"mpps": (c1 - c0) / (t1 - t0) / 1e6, "busy": busy}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tenants", "tenant_counts", multiple=True, type=int, default=(1, 4, 64),
              show_default=True, help="Tenant counts to measure (repeatable).")
@click.option("--seconds", type=float, default=0.25, show_default=True,
              help="Measured seconds per configuration and repetition.")
@click.option("--reps", type=int, default=12, show_default=True,
              help="Repetitions; each runs every configuration once, back to back.")
@click.option("--quick", is_flag=True, help="0.2 s x 5 repetitions.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              default=RESULTS / "throughput.json", show_default=True, help="Write results as JSON.")
def main(tenant_counts, seconds, reps, quick, json_path):
    """Measure the loop's peak Mpps: fifo vs cycles, accounting on vs off."""
    if quick:
        seconds, reps = 0.2, 5
    console = make_console()
    rng = random.Random(1)
    samples: dict[tuple, list[dict]] = {}
    with Progress(console=console, transient=True, auto_refresh=False) as progress:
        task = progress.add_task("measuring", total=reps * len(tenant_counts) * len(CONFIGS))
        for rep in range(reps):
            for n in tenant_counts:
                for policy, acct in rng.sample(CONFIGS, len(CONFIGS)):
                    progress.update(task, description=f"rep {rep + 1}/{reps}: {n:>2} tenants, "
                                    f"{policy}, accounting {'on' if acct else 'off'}", refresh=True)
                    samples.setdefault((n, policy, acct), []).append(
                        measure(policy, acct, n, seconds))
                    progress.advance(task)

    def paired(n, a, b):
        """median over repetitions of config a / config b, measured side by side"""
        return statistics.median(x["mpps"] / y["mpps"] for x, y in zip(samples[(n, *a)],
                                                                        samples[(n, *b)]))

    runs = []
    for (n, policy, acct), got in samples.items():
        runs.append({"policy": policy, "tenants": n, "accounting": acct,
                     "mpps": statistics.median(s["mpps"] for s in got),
                     "busy": statistics.median(s["busy"] for s in got),
                     "samples_mpps": [round(s["mpps"], 3) for s in got]})
    ratios = {n: {"fifo_acct_over_bare": paired(n, ("fifo", True), ("fifo", False)),
                  "cycles_over_fifo_acct": paired(n, ("cycles", True), ("fifo", True)),
                  "cycles_over_bare": paired(n, ("cycles", True), ("fifo", False))}
              for n in tenant_counts}

    table = Table(title=f"Echo throughput, mem backend, one core: median of {reps} "
                        f"repetitions, ratios paired within a repetition",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("tenants", "bare", "acct", "cycles", "acct/bare", "cyc/bare", "cyc/acct", "busy"):
        table.add_column(col, justify="right", no_wrap=True)
    by = {(r["tenants"], r["policy"], r["accounting"]): r for r in runs}
    for n in tenant_counts:
        bare, acct, cyc = by[n, "fifo", False], by[n, "fifo", True], by[n, "cycles", True]
        r = ratios[n]
        table.add_row(str(n), f"{bare['mpps']:.2f}", f"{acct['mpps']:.2f}", f"{cyc['mpps']:.2f}",
                      f"{r['fifo_acct_over_bare']:.3f}", f"{r['cycles_over_bare']:.3f}",
                      f"{r['cycles_over_fifo_acct']:.3f}",
                      f"{min(x['busy'] for x in (bare, acct, cyc)):.0%}")
    console.print(table)
    console.print("Mpps. bare: fifo without accounting (the unprotected baseline); acct: fifo "
                  "with accounting; cycles: time protection (work-conserving); busy: the least "
                  "busy the loop was (under ~95%, the generator set the pace)")
    write_json(json_path, {"seconds": seconds, "reps": reps, "runs": runs,
                           "paired_ratios": {str(n): v for n, v in ratios.items()}})
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
