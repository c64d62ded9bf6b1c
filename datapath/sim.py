"""The real scheduling policies on a virtual clock (C: dp_sched_simulate).

Used by the property tests: with no threads and no noise, what a policy
grants each tenant can be checked exactly.
"""
from __future__ import annotations

import numpy as np

from ._dp import ffi, lib
from .config import POLICIES, TenantConfig, _choice
from .errors import check

IDLE = 0xFFFFFFFF
EVENT_DTYPE = np.dtype([("tenant", np.uint32), ("lent", np.uint32), ("pkts", np.uint32),
                        ("_pad", np.uint32), ("start", np.uint64), ("end", np.uint64)])


def simulate(policy: str, tenants: list[TenantConfig], cost_cycles: list[int],
             backlog: list[tuple[int, int]], horizon: int, *, quantum_cycles: int = 5000,
             refill_cycles: int = 1000, work_conserving: bool = False,
             max_events: int = 200_000) -> np.ndarray:
    """Serves tenants i = 0..n-1, each backlogged over backlog[i] = (from, until)
    cycles, in turns of max(1, quantum_cycles // cost_cycles[i]) packets of
    cost_cycles[i] each, until `horizon`.

    Returns the trace as a structured array (tenant, lent, pkts, start, end),
    one row per turn or idle gap (tenant == IDLE). Budgets come from
    each TenantConfig as in the datapath: share per cycle, cap_us and rates
    converted with the calibrated TSC rate (lib.dp_tsc_hz())."""
    n = len(tenants)
    cfgs = ffi.new("struct dp_tenant_config[]", n)
    for c, t in zip(cfgs, tenants):
        src = t.to_c()
        ffi.memmove(ffi.addressof(c), src, ffi.sizeof("struct dp_tenant_config"))
    costs = ffi.new("uint64_t[]", list(cost_cycles))
    frm = ffi.new("uint64_t[]", [b[0] for b in backlog])
    until = ffi.new("uint64_t[]", [b[1] for b in backlog])
    trace = np.zeros(max_events, dtype=EVENT_DTYPE)
    n_ev = lib.dp_sched_simulate(_choice(POLICIES, policy, "policy"), int(work_conserving),
                                 quantum_cycles, refill_cycles, cfgs, n, costs, frm, until,
                                 horizon, ffi.cast("struct dp_sim_event *", trace.ctypes.data),
                                 max_events)
    check(n_ev, "simulating the scheduler")
    return trace[:n_ev]


def service(trace: np.ndarray, tenant: int, start: int, end: int) -> int:
    """Cycles of [start, end) during which `tenant` ran (clipped to the window)."""
    rows = trace[trace["tenant"] == tenant]
    s = np.clip(rows["start"].astype(np.int64), start, end)
    e = np.clip(rows["end"].astype(np.int64), start, end)
    return int((e - s).sum())
