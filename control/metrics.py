"""Prometheus text exposition of the datapath's per-tenant figures.

A custom collector reads the counters at scrape time (nothing is copied in
between, so a scrape always sees the loop's current figures). The latency
histogram's buckets are the datapath's own: each `le` bound is the upper
edge of one of its log-linear buckets, picked near 1, 2, 5, 10, ... us, so
the cumulative counts are exact, not interpolated.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from datapath._dp import lib

log = logging.getLogger("isolaned.metrics")
TARGETS_US = [v * 10**e for e in range(0, 6) for v in (1, 2, 5)]  # 1 us .. 500 ms


@functools.cache
def _edges(tsc_hz: float) -> list[tuple[int, float]]:
    """(first bucket index above the edge, edge in seconds) for each target."""
    lower = np.array([lib.dp_hist_lower(i) for i in range(lib.DP_HIST_BUCKETS)], dtype=np.float64)
    out = []
    for us in TARGETS_US:
        idx = int(np.searchsorted(lower, us * 1e-6 * tsc_hz))  # buckets [0, idx) lie below
        if 0 < idx < len(lower) and (not out or idx > out[-1][0]):
            out.append((idx, float(lower[idx]) / tsc_hz))
    return out


class DatapathCollector:
    """Collects on every scrape; `tenants()` gives {id: name} of live tenants."""

    def __init__(self, plane, tenants):
        self.plane = plane
        self.tenants = tenants

    def collect(self):
        dp = self.plane.dp
        t_label = ["tenant", "id"]
        fams = {
            "rx": CounterMetricFamily("isolane_tenant_rx_packets", "Packets classified to the tenant", labels=t_label),
            "tx": CounterMetricFamily("isolane_tenant_tx_packets", "Packets the tenant transmitted", labels=t_label),
            "passed": CounterMetricFamily("isolane_tenant_passed_packets", "Packets the tenant's handler passed (XDP_PASS)", labels=t_label),
            "completed": CounterMetricFamily("isolane_tenant_completed_packets", "Packets whose handling completed", labels=t_label),
            "drops": CounterMetricFamily("isolane_tenant_drops", "Packets dropped, by reason", labels=t_label + ["reason"]),
            "cycles": CounterMetricFamily("isolane_tenant_cycles", "TSC cycles charged to the tenant", labels=t_label),
            "throttles": CounterMetricFamily("isolane_tenant_throttle_events", "Times the tenant was found out of budget with a backlog", labels=t_label),
            "balance": GaugeMetricFamily("isolane_tenant_budget_balance", "Budget balance in the policy's unit (cycles for the cycles policy; < 0: debt)", labels=t_label),
            "queue": GaugeMetricFamily("isolane_tenant_queue_length", "Packets waiting in the tenant's queue", labels=t_label),
        }
        hub = self.plane.slowpath
        if hub is not None:
            fams["sp_delivered"] = CounterMetricFamily(
                "isolane_tenant_slowpath_delivered", "Slow-path messages delivered to the tenant's endpoint", labels=t_label)
            fams["sp_dropped"] = CounterMetricFamily(
                "isolane_tenant_slowpath_dropped", "Slow-path messages lost (ring full, no reader, reader too slow)", labels=t_label)
            fams["sp_sent"] = CounterMetricFamily(
                "isolane_tenant_slowpath_sent", "Frames the tenant sent out through its slow path", labels=t_label)
        hist = HistogramMetricFamily("isolane_tenant_latency_seconds",
                                     "Completion latency from the intended arrival time",
                                     labels=t_label)
        edges = _edges(dp.tsc_hz)
        mid = None
        for tid, name in sorted(self.tenants().items()):
            try:
                st = dp.tenant_stats(tid)
            except Exception:
                continue  # deleted while we scraped
            lv = [name, str(tid)]
            fams["rx"].add_metric(lv, st.rx)
            fams["tx"].add_metric(lv, st.tx)
            fams["passed"].add_metric(lv, st.passed)
            fams["completed"].add_metric(lv, st.completed)
            for reason, n in st.drops.items():
                fams["drops"].add_metric(lv + [reason], n)
            fams["drops"].add_metric(lv + ["xdp_drop"], st.drop_verdict)
            fams["cycles"].add_metric(lv, st.cycles)
            fams["throttles"].add_metric(lv, st.throttles)
            fams["balance"].add_metric(lv, st.balance)
            fams["queue"].add_metric(lv, st.queue_len)
            if hub is not None:
                try:
                    sp = hub.stats(tid)
                except Exception:
                    sp = None
                if sp is not None:
                    fams["sp_delivered"].add_metric(lv, sp["delivered"])
                    fams["sp_dropped"].add_metric(lv, sp["dropped"] + sp.get("ring_dropped", 0))
                    fams["sp_sent"].add_metric(lv, sp.get("sent", 0))
            counts = st.latency.counts.astype(np.float64)
            cum = np.cumsum(counts)
            total = float(cum[-1]) if len(cum) else 0.0
            buckets = [(f"{edge:.9g}", float(cum[idx - 1])) for idx, edge in edges]
            buckets.append(("+Inf", total))
            if mid is None:
                from datapath.histogram import bucket_midpoints_cycles
                mid = bucket_midpoints_cycles() / dp.tsc_hz
            hist.add_metric(lv, buckets, sum_value=float(np.dot(counts, mid)))
        g = dp.global_stats()
        glob = [("loops", g.loops, "Fast-path loop iterations"),
                ("rx_packets", g.rx, "Packets received by the fast path"),
                ("malformed_packets", g.malformed, "Frames no classifier could parse"),
                ("unknown_packets", g.unknown, "Frames no tenant rule matched"),
                ("stalls", g.stalls, "Loop iterations the host took the core during"),
                ("stall_cycles", g.stall_cycles, "Cycles lost to host stalls"),
                ("busy_cycles", g.busy_cycles, "Cycles of iterations that did work")]
        yield from fams.values()
        yield hist
        for name, value, doc in glob:
            c = CounterMetricFamily(f"isolane_{name}", doc)
            c.add_metric([], value)
            yield c


def serve(address: tuple[str, int], plane, tenants):
    """Starts the HTTP endpoint (a daemon thread); returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatapathCollector(plane, tenants))
    host, port = address
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server, thread
