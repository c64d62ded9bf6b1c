"""`Datapath`: build, configure, run and observe the C fast path.

Python never touches a packet: it configures the loop, starts it on its own
pinned thread (the GIL plays no part), and reads its counters.

    dp = Datapath(policy="cycles")
    dp.add_tenant(1, TenantConfig(handler="echo", share=0.5, cap_us=50))
    dp.set_rules([Rule(tenant=1, ip_dst="10.0.0.1", proto="udp", dport=7)])
    dp.use_mem_backend([Flow(frame, rate_pps=1e5)], duration_s=1.0)
    with dp.running():
        dp.wait_generator()
    print(dp.tenant_stats(1).latency.percentile(99))
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import numbers
import os
import time
import typing
import weakref

import numpy as np

from ._dp import ffi, lib
from .config import ARRIVALS, POLICIES, Flow, Rule, TenantConfig, _choice
from .errors import ConfigError, IsolaneError, NotFoundError, check
from .histogram import LatencyHistogram

DROP_REASONS = ("queue_full", "fault", "tx_full", "no_slowpath", "slowpath_full")


def default_cores() -> tuple[int, int]:
    """(fast-path core, generator core): the first two CPUs we may run on."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], (cpus[1] if len(cpus) > 1 else -1)


@dataclasses.dataclass
class TenantStats:
    rx: int
    tx: int
    passed: int
    drop_verdict: int
    completed: int
    drops: dict[str, int]
    cycles: int
    lent_cycles: int
    throttles: int
    balance: int     # in the policy's currency: cycles, packets or bytes (< 0: debt)
    forfeited: int   # credit refused at refill because the bucket was full
    queue_len: int
    latency: LatencyHistogram
    slowpath_delivered: int = 0  # passed packets put in its slow-path ring
    slowpath_sent: int = 0       # frames it sent through its slow path that went out

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


class FlowStats(typing.NamedTuple):
    sent: int     # arrivals generated
    dropped: int  # lost before the datapath (RX ring full, no free frame)
    late: int     # emitted > 20 us after their intended time (generator core taken)


@dataclasses.dataclass
class GlobalStats:
    loops: int
    busy_loops: int
    rx: int
    malformed: int
    unknown: int
    busy_cycles: int
    total_cycles: int
    stalls: int
    stall_cycles: int


class Datapath:
    """One run-to-completion fast path and its tenants."""

    def __init__(self, policy: str = "fifo", *, work_conserving: bool = False,
                 accounting: bool = True, refill_us: int = 10, quantum_us: float = 10.0,
                 rx_batch: int = 32, core: int | None = None):
        cfg = ffi.new("struct dp_config *")
        cfg.policy = _choice(POLICIES, policy, "policy")
        if policy == "cycles" and not accounting:
            raise ConfigError("the cycles policy needs accounting: it spends measured cycles")
        if not 1 <= rx_batch <= 64:
            raise ConfigError(f"rx_batch must be in 1..64, not {rx_batch}")
        if refill_us < 1:
            raise ConfigError("refill_us must be >= 1")
        cfg.work_conserving = bool(work_conserving)
        cfg.accounting = bool(accounting)
        cfg.refill_us = refill_us
        cfg.quantum_ns = int(quantum_us * 1000)
        cfg.rx_batch = rx_batch
        cfg.core = default_cores()[0] if core is None else core
        self.core = cfg.core  # the loop's core (busy-polled while it runs)
        out = ffi.new("dp_t **")
        check(lib.dp_create(cfg, out), "creating the datapath")
        self._raw = out[0]
        # stops the loop and frees everything, at close() or garbage collection
        self._destroy = weakref.finalize(self, lib.dp_destroy, self._raw)
        self.policy = policy
        self.tsc_hz = lib.dp_tsc_hz()
        self.tenants: dict[int, TenantConfig] = {}
        self.rules: list[Rule] = []
        self.flows: list[Flow] = []
        self._programs: dict[int, object] = {}  # installed eBPF programs, kept alive

    # ---- configuration ----

    def add_tenant(self, tenant_id: int, config: TenantConfig | None = None, **fields) -> None:
        config = config or TenantConfig(**fields)
        config.check_budget(self.policy)
        if not 0 <= tenant_id < lib.DP_MAX_TENANTS:
            raise ConfigError(f"tenant id must be in 0..{lib.DP_MAX_TENANTS - 1}")
        check(lib.dp_tenant_add(self._dp, tenant_id, config.to_c()), f"adding tenant {tenant_id}")
        self.tenants[tenant_id] = config

    def set_tenant(self, tenant_id: int, **changes) -> TenantConfig:
        """Changes a tenant's handler or budget, also while running."""
        if tenant_id not in self.tenants:
            raise NotFoundError(f"tenant {tenant_id}: no such tenant", errno=errno.ENOENT)
        config = dataclasses.replace(self.tenants[tenant_id], **changes)
        config.check_budget(self.policy)
        check(lib.dp_tenant_set(self._dp, tenant_id, config.to_c()), f"updating tenant {tenant_id}")
        self.tenants[tenant_id] = config
        return config

    def del_tenant(self, tenant_id: int, *, withdraw_rules: bool = False) -> None:
        """Removes a tenant, also while running: its queued packets go back
        to the backend unsent, its slow path (if attached) and program are
        dropped, its queue_cap returns to the queue-slot budget, and the id
        may be added again. The datapath refuses while a rule names the
        tenant (so no packet can be classified to a deleted id): withdraw
        them first, or pass withdraw_rules=True to install the rules without
        them before the delete."""
        if tenant_id not in self.tenants:
            raise NotFoundError(f"tenant {tenant_id}: no such tenant", errno=errno.ENOENT)
        if withdraw_rules:
            self.set_rules([r for r in self.rules if r.tenant != tenant_id])
        ret = lib.dp_tenant_del(self._dp, tenant_id)
        if ret == -errno.EBUSY:
            named = sum(r.tenant == tenant_id for r in self.rules)
            raise ConfigError(f"deleting tenant {tenant_id}: {named} rule(s) still send it "
                              "traffic; withdraw them first (set_rules) or pass "
                              "withdraw_rules=True", errno=errno.EBUSY)
        check(ret, f"deleting tenant {tenant_id}")
        del self.tenants[tenant_id]
        self._programs.pop(tenant_id, None)  # no longer referenced by the loop

    def set_program(self, tenant_id: int, program, bound_ns: int = 0) -> None:
        """Runs `program` as the tenant's handler, also while the loop runs:
        an interpreter Program (datapath.ebpf_engine, `.handle`) or a jointly
        compiled one (ebpf.aot, `.run_fn` or `.fn`, and `.env`). bound_ns: its
        static worst case per packet (0: unknown, timed after every packet).
        The Datapath keeps the program alive while it is installed."""
        if tenant_id not in self.tenants:
            raise NotFoundError(f"tenant {tenant_id}: no such tenant", errno=errno.ENOENT)
        if hasattr(program, "handle"):
            ret = lib.dp_tenant_set_prog(self._dp, tenant_id, program.handle, bound_ns)
        elif getattr(program, "run_fn", None) is not None:
            ret = lib.dp_tenant_set_aot_run(self._dp, tenant_id, program.run_fn, program.env,
                                            bound_ns)
        else:
            ret = lib.dp_tenant_set_aot(self._dp, tenant_id, program.fn, program.env, bound_ns)
        check(ret, f"installing a program for tenant {tenant_id}")
        self._programs[tenant_id] = program  # the old one is unused now

    def clear_program(self, tenant_id: int) -> None:
        """Back to the tenant's native handler (TenantConfig.handler)."""
        check(lib.dp_tenant_clear_prog(self._dp, tenant_id), f"tenant {tenant_id}")
        self._programs.pop(tenant_id, None)

    def set_rules(self, rules: list[Rule]) -> None:
        """Replaces the classifier atomically, also while running."""
        c = ffi.new("struct dp_rule[]", max(1, len(rules)))
        for i, rule in enumerate(rules):
            rule.fill(c[i])
        check(lib.dp_rules_set(self._dp, c, len(rules)), "installing rules")
        self.rules = list(rules)

    def use_mem_backend(self, flows: list[Flow], duration_s: float, *, ring_size: int = 4096,
                        n_frames: int | None = None, core: int | None = None,
                        seed: int = 1) -> None:
        """Packets from the in-memory open-loop generator (see backend_mem.c),
        which stops after `duration_s` (finite, > 0). With no flows there is
        no generator at all: the loop runs on an idle backend (slow-path
        sends still go out through its spare frames)."""
        if not (isinstance(duration_s, numbers.Real) and math.isfinite(duration_s)
                and 0 < duration_s <= lib.DP_MEM_MAX_DURATION_S):
            raise ConfigError(f"duration_s must be a finite number of seconds in "
                              f"(0, {lib.DP_MEM_MAX_DURATION_S:.0e}], not {duration_s!r}"
                              + (" (without flows any duration will do: nothing is generated)"
                                 if not flows else ""))
        if n_frames is None:
            queued = sum(t.queue_cap for t in self.tenants.values())
            n_frames = 1 << (ring_size * 2 + queued + 1024 - 1).bit_length()
        cfg = ffi.new("struct dp_mem_config *")
        cfg.ring_size = ring_size
        cfg.n_frames = n_frames
        cfg.core = default_cores()[1] if core is None else core
        cfg.duration_s = duration_s
        cfg.seed = seed
        cflows = ffi.new("struct dp_mem_flow[]", max(1, len(flows)))
        keep = []
        for c, flow in zip(cflows, flows):
            buf = ffi.from_buffer(flow.frame)
            keep.append(buf)
            c.frame = buf
            c.len = len(flow.frame)
            c.arrival = ARRIVALS[flow.arrival]
            c.rate_pps = flow.rate_pps
            c.on_us = flow.on_us
            c.off_us = flow.off_us
        check(lib.dp_backend_mem(self._dp, cfg, cflows, len(flows)), "setting up the mem backend")
        self.flows = list(flows)

    def use_afxdp_backend(self, ifname: str, queue: int = 0, n_frames: int | None = None,
                          ring_size: int = 2048, *, queues: list[int] | None = None,
                          mode: str = "auto", zerocopy: bool | str = "auto",
                          need_wakeup: bool = True, netns: str | None = None) -> None:
        """Packets from interface `ifname` through AF_XDP (see backend_afxdp.c):
        one socket on queue `queue`, or one per queue of `queues`, all on one
        UMEM of `n_frames` frames (default: enough for every socket's rings).
        The loop polls the sockets round robin; a reply leaves on the socket
        its request came in on.

        mode: "native" (the XDP program in the driver: BackendError if the
        driver has no native XDP), "skb" (generic XDP, every driver), "auto"
        (native where the driver has it). zerocopy: True (BackendError if the
        driver has no AF_XDP zero-copy; needs native), False (copy), "auto"
        (zero-copy where the driver has it). `afxdp_xdp_mode` is the mode
        chosen, the one to attach the steering program in; `afxdp_stats()`
        says what each socket got.

        The interface is looked up in this thread's network namespace, or in
        `netns` (a name under /run/netns) when given. Nothing is steered to
        the sockets until their fds are in the steering program's XSKMAP:
        `Steer.bind_xsks(dp.afxdp_fds())`."""
        from .errors import BackendError

        def pow2(v):
            return v > 0 and not v & (v - 1)

        qs = [queue] if queues is None else list(queues)
        if not qs or len(qs) > lib.DP_AFXDP_MAX_QUEUES:
            raise ConfigError(f"queues: 1..{lib.DP_AFXDP_MAX_QUEUES} queue indexes, not {qs!r}")
        if any(not isinstance(q, int) or not 0 <= q < 2**32 for q in qs) or len(set(qs)) < len(qs):
            raise ConfigError(f"queues must be distinct queue indexes >= 0, not {qs!r}")
        if n_frames is None:
            n_frames = max(4096, 1 << (2 * ring_size * len(qs) - 1).bit_length())
        if not (pow2(n_frames) and pow2(ring_size) and ring_size >= 8
                and n_frames >= 2 * ring_size * len(qs)):
            raise ConfigError(f"n_frames ({n_frames}) and ring_size ({ring_size}) must be powers "
                              "of two, ring_size >= 8 and n_frames >= 2 * ring_size * sockets "
                              f"({len(qs)})")
        modes = {"auto": 0, "skb": lib.DP_AFXDP_SKB, "native": lib.DP_AFXDP_NATIVE}
        zcs = {"auto": 0, True: lib.DP_AFXDP_ZEROCOPY, False: lib.DP_AFXDP_COPY}
        if mode not in modes:
            raise ConfigError(f"mode must be one of {', '.join(modes)}, not {mode!r}")
        if not any(zerocopy is k or zerocopy == k == "auto" for k in zcs):
            raise ConfigError(f"zerocopy must be True, False or 'auto', not {zerocopy!r}")
        cfg = ffi.new("struct dp_afxdp_config *")
        name = ffi.new("char[]", ifname.encode())
        cqueues = ffi.new("uint32_t[]", qs)
        cfg.ifname = name
        cfg.queue = qs[0]
        cfg.n_queues = len(qs)
        cfg.queues = cqueues
        cfg.n_frames = n_frames
        cfg.ring_size = ring_size
        cfg.flags = (modes[mode] | zcs["auto" if zerocopy == "auto" else bool(zerocopy)]
                     | (lib.DP_AFXDP_NEED_WAKEUP if need_wakeup else 0))
        if netns is None:
            ret = lib.dp_backend_afxdp(self._dp, cfg)
            msg = ffi.string(lib.dp_afxdp_last_error()).decode()
        else:
            from ebpf.steer import _in_netns  # the same thread enters and leaves

            with _in_netns(netns):
                ret = lib.dp_backend_afxdp(self._dp, cfg)
                msg = ffi.string(lib.dp_afxdp_last_error()).decode()
        if ret < 0:
            err = -ret
            where = f"queue {qs[0]}" if queues is None else f"queues {qs}"
            raise BackendError(f"setting up the afxdp backend on {ifname!r} {where}: "
                               f"{msg or os.strerror(err)}", errno=err)
        self.flows = []
        self._afxdp_queues = qs  # socket i serves qs[i]

    def _afxdp_check(self, ret: int) -> int:
        if ret < 0:
            from .errors import BackendError
            if ret == -errno.ENODEV:
                raise BackendError("this Datapath has no afxdp backend: call use_afxdp_backend() "
                                   "first", errno=-ret)
            raise BackendError(ffi.string(lib.dp_afxdp_last_error()).decode()
                               or os.strerror(-ret), errno=-ret)
        return ret

    @property
    def afxdp_fd(self) -> int:
        """The (first) AF_XDP socket's fd, for the steering program's XSKMAP."""
        return self._afxdp_check(lib.dp_afxdp_fd(self._dp))

    def afxdp_fds(self) -> dict[int, int]:
        """{queue: AF_XDP socket fd}: what goes into the steering program's
        XSKMAP (Steer.bind_xsks)."""
        n = self._afxdp_check(lib.dp_afxdp_n_sockets(self._dp))
        return {q: self._afxdp_check(lib.dp_afxdp_socket_fd(self._dp, i))
                for i, q in enumerate(self._afxdp_queues[:n])}

    @property
    def afxdp_xdp_mode(self) -> str:
        """"native" or "skb": the XDP mode the backend chose for the
        interface, the one to attach the steering program in."""
        return next(iter(self.afxdp_stats().values()))["xdp_mode"]

    def afxdp_stats(self) -> dict[int, dict]:
        """Per socket, by queue: rx, tx (descriptors), filled (frames put on
        the fill ring), completed (TX completions reaped), fill_ring and
        comp_ring (entries on those rings now), kicks, kick_errors; the
        kernel's XDP_STATISTICS (rx_dropped, rx_invalid_descs,
        tx_invalid_descs, rx_ring_full, rx_fill_ring_empty_descs,
        tx_ring_empty_descs); the mode: xdp_mode ("native"/"skb", the
        backend's choice), zerocopy (the kernel's bind), mode ("native
        zero-copy", "native copy" or "skb copy") and xdp_attached (the
        interface's XDP program now: "none", "native", "skb", "offload",
        "multi")."""
        n = self._afxdp_check(lib.dp_afxdp_n_sockets(self._dp))
        st = ffi.new("struct dp_afxdp_stats *")
        attached = {0: "none", 1: "native", 2: "skb", 3: "offload", 4: "multi"}
        out = {}
        for i in range(n):
            self._afxdp_check(lib.dp_afxdp_socket_stats(self._dp, i, st))
            xdp_mode = "native" if st.mode & lib.DP_AFXDP_NATIVE else "skb"
            zc = bool(st.mode & lib.DP_AFXDP_ZEROCOPY)
            out[st.queue] = {
                "rx": st.rx, "tx": st.tx, "filled": st.filled, "completed": st.completed,
                "fill_ring": st.fill_ring, "comp_ring": st.comp_ring,
                "kicks": st.kicks, "kick_errors": st.kick_errors,
                "rx_dropped": st.rx_dropped, "rx_invalid_descs": st.rx_invalid,
                "tx_invalid_descs": st.tx_invalid, "rx_ring_full": st.rx_ring_full,
                "rx_fill_ring_empty_descs": st.fill_empty,
                "tx_ring_empty_descs": st.tx_ring_empty,
                "xdp_mode": xdp_mode, "zerocopy": zc,
                "mode": f"{xdp_mode} {'zero-copy' if zc else 'copy'}",
                "xdp_attached": attached.get(st.xdp_attached, f"error {-st.xdp_attached}"),
            }
        return out

    # ---- running ----

    def start(self) -> None:
        check(lib.dp_start(self._dp), "starting the datapath")

    def stop(self) -> None:
        check(lib.dp_stop(self._dp), "stopping the datapath")

    @property
    def is_running(self) -> bool:
        return bool(lib.dp_running(self._dp))

    @contextlib.contextmanager
    def running(self):
        self.start()
        try:
            yield self
        finally:
            self.stop()

    @property
    def generator_done(self) -> bool:
        return check(lib.dp_mem_done(self._dp), "mem backend") == 1

    def wait_generator(self, poll_s: float = 0.2, progress=None) -> None:
        """Blocks until the generator has sent its last packet; calls
        progress() between polls (for a progress bar)."""
        while not self.generator_done:
            time.sleep(poll_s)
            if progress:
                progress()

    def drain(self, timeout_s: float = 1.0) -> bool:
        """Waits until every tenant queue is empty; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.tenant_stats(t, latency=False).queue_len == 0 for t in self.tenants):
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stops the loop and frees the datapath; the object is unusable after."""
        self._destroy()
        self._raw = None

    @property
    def _dp(self):
        if self._raw is None:
            raise IsolaneError("this Datapath has been closed")
        return self._raw

    # ---- observation ----

    def tenant_stats(self, tenant_id: int, latency: bool = True) -> TenantStats:
        st = ffi.new("struct dp_tenant_stats *")
        check(lib.dp_tenant_stats(self._dp, tenant_id, st), f"tenant {tenant_id}")
        hist = LatencyHistogram.empty(self.tsc_hz)
        if latency:
            counts = np.zeros(lib.DP_HIST_BUCKETS, dtype=np.uint64)
            check(lib.dp_tenant_hist(self._dp, tenant_id,
                                     ffi.cast("uint64_t *", counts.ctypes.data), len(counts)),
                  f"tenant {tenant_id} histogram")
            hist = LatencyHistogram(counts, self.tsc_hz)
        return TenantStats(
            rx=st.rx, tx=st.tx, passed=st.passed,
            drop_verdict=st.drop_verdict, completed=st.completed,
            drops={name: st.drops[i] for i, name in enumerate(DROP_REASONS)},
            cycles=st.cycles, lent_cycles=st.lent_cycles, throttles=st.throttles,
            balance=st.balance, forfeited=st.forfeited, queue_len=st.queue_len, latency=hist,
            slowpath_delivered=st.sp_delivered, slowpath_sent=st.sp_sent)

    def mem_pool(self) -> dict[str, int]:
        """Where the mem backend's frames are, read with the loop stopped
        after it ran (a start puts every frame in its place):
        frames, free, in_rx, spares, spare_free; `leaked` is what is in
        none of those places (0 unless a frame was lost)."""
        out = ffi.new("struct dp_mem_pool *")
        ret = lib.dp_mem_pool(self._dp, out)
        if ret == -errno.EBUSY:
            raise IsolaneError("mem_pool() reads the frame pool with the loop stopped",
                               errno=errno.EBUSY)
        check(ret, "mem backend")
        pool = {k: getattr(out, k) for k in ("frames", "free", "in_rx", "spares", "spare_free")}
        pool["leaked"] = (pool["frames"] - pool["free"] - pool["in_rx"]
                          + pool["spares"] - pool["spare_free"])
        return pool

    def flow_stats(self, flow: int) -> FlowStats:
        """What the generator did for one flow (sent, lost at the NIC, late)."""
        st = ffi.new("struct dp_flow_stats *")
        check(lib.dp_flow_stats(self._dp, flow, st), f"flow {flow}")
        return FlowStats(sent=st.sent, dropped=st.dropped, late=st.late)

    def global_stats(self) -> GlobalStats:
        st = ffi.new("struct dp_global_stats *")
        lib.dp_global_stats(self._dp, st)
        return GlobalStats(loops=st.loops, busy_loops=st.busy_loops, rx=st.rx,
                           malformed=st.drops[lib.DP_GDROP_MALFORMED],
                           unknown=st.drops[lib.DP_GDROP_UNKNOWN],
                           busy_cycles=st.busy_cycles, total_cycles=st.total_cycles,
                           stalls=st.stalls, stall_cycles=st.stall_cycles)

    def reset_stats(self) -> None:
        check(lib.dp_reset_stats(self._dp), "resetting stats")

    # ---- slow path (see the slow-path section of isolane_dp.h) ----

    def attach_slowpath(self, tenant_id: int, depth: int = 256) -> None:
        """Gives the tenant a slow path: what its handler passes (XDP_PASS)
        waits for slowpath_read in a ring of `depth` frames (a power of two;
        full: dropped, counted `slowpath_full`), and slowpath_send queues
        frames (up to `depth`) that the loop transmits, charged to it."""
        if depth < 2 or depth > lib.DP_SLOWPATH_MAX_DEPTH or depth & (depth - 1):
            raise ConfigError(f"slow-path depth must be a power of two in "
                              f"2..{lib.DP_SLOWPATH_MAX_DEPTH}, not {depth}")
        ret = lib.dp_slowpath_attach(self._dp, tenant_id, depth)
        if ret == -errno.EEXIST:
            raise ConfigError(f"tenant {tenant_id} already has a slow path", errno=errno.EEXIST)
        check(ret, f"attaching tenant {tenant_id}'s slow path")

    def detach_slowpath(self, tenant_id: int) -> None:
        """Removes the tenant's slow path (frames still in its rings are
        discarded); its passed packets are dropped again (`no_slowpath`)."""
        check(lib.dp_slowpath_detach(self._dp, tenant_id),
              f"tenant {tenant_id}: no slow path to detach")

    def slowpath_read(self, tenant_id: int, max_frames: int = 64) -> list[bytes]:
        """Passed packets waiting for the tenant, oldest first, at most
        `max_frames` (never blocks: [] when none waits)."""
        buf = ffi.new("uint8_t[]", lib.DP_SLOWPATH_FRAME_MAX)
        frames = []
        for _ in range(max_frames):
            n = lib.dp_slowpath_read(self._dp, tenant_id, buf, len(buf))
            if n == 0:
                break
            check(n, f"tenant {tenant_id}'s slow path")
            frames.append(bytes(ffi.buffer(buf, n)))
        return frames

    def slowpath_send(self, tenant_id: int, frame: bytes) -> bool:
        """Queues an Ethernet frame that the loop transmits for the tenant;
        False when its send ring is full (the loop has not caught up, or the
        tenant is out of budget): nothing was queued."""
        ret = lib.dp_slowpath_send(self._dp, tenant_id, frame, len(frame))
        if ret == -errno.EAGAIN:
            return False
        if ret == -errno.EMSGSIZE:
            raise ConfigError(f"a frame of {len(frame)} bytes: slow-path frames are 14.."
                              f"{lib.DP_MAX_FRAME_LEN} bytes", errno=errno.EMSGSIZE)
        check(ret, f"tenant {tenant_id}'s slow path")
        return True

    def slowpath_pending(self, tenant_id: int) -> tuple[int, int]:
        """(passed packets waiting to be read, frames waiting to be sent)."""
        to_read, to_send = ffi.new("uint32_t *"), ffi.new("uint32_t *")
        check(lib.dp_slowpath_pending(self._dp, tenant_id, to_read, to_send),
              f"tenant {tenant_id}'s slow path")
        return to_read[0], to_send[0]

    # ---- one packet, synchronously (tests and tools) ----

    def process(self, frame: bytes) -> tuple[str, int | None, bytes]:
        """Classifies one frame and runs its tenant's handler: returns
        (verdict, tenant, output frame); verdict "malformed" or "unknown"
        when no tenant got it. The loop must be stopped."""
        buf = ffi.new("uint8_t[]", max(len(frame), lib.DP_MAX_FRAME_LEN))
        ffi.memmove(buf, frame, len(frame))
        length = ffi.new("uint32_t *", len(frame))
        tenant = ffi.new("uint32_t *")
        ret = lib.dp_process_one(self._dp, buf, length, len(buf), tenant)
        if ret == -errno.EBADMSG:
            return "malformed", None, b""
        if ret == -errno.ENOENT:
            return "unknown", None, b""
        check(ret, "processing a packet")
        return VERDICTS[ret], tenant[0], bytes(ffi.buffer(buf, length[0]))


VERDICTS = {lib.DP_XDP_ABORTED: "aborted", lib.DP_XDP_DROP: "drop", lib.DP_XDP_PASS: "pass",
            lib.DP_XDP_TX: "tx", lib.DP_XDP_REDIRECT: "redirect", 0xFF: "fault"}

__all__ = ["Datapath", "TenantStats", "GlobalStats", "Flow", "Rule", "TenantConfig",
           "IsolaneError", "DROP_REASONS", "VERDICTS"]
