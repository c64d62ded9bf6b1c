#!/usr/bin/env python3
"""loadgen: an open-loop UDP load generator over the wire, with honest tails.

It runs on the generator side of the testbed (`isolane testbed up`: netns
isl-gen, veth isl-gen0 <-> isl-host0 in isl-host, 10.99.0.1 <-> 10.99.0.2)
and sends per-tenant flows at the isolane host. Every frame carries
isolane's probe header (datapath/probe.py) at the start of its UDP payload:
the flow and sequence number, the *intended* send time (TSC), and a cost in
ns that the datapath's native `spin` handler burns (so an aggressor flow
asks for work per packet). Replies are matched by (flow, seq) and timed:

    latency = receive time - intended send time

so a generator that falls behind cannot hide queueing (open loop, no
coordinated omission), and a request that is never answered counts as
infinitely late: percentiles are taken over every packet *sent*.

The send/receive loop is C (bench/loadgen/loadgen.c, built by `make build`)
on a thread of its own that enters the generator's network namespace and
pins itself to a core; Python only builds the templates (scapy) before and
post-processes the samples (numba) after. I/O is one AF_XDP socket on the
generator's veth (an XDP program of the generator's own there hands every
reply to the socket, so replies never climb the generator's stack) or, with
--io afpacket, AF_PACKET with PACKET_QDISC_BYPASS (sendmmsg/recvmmsg).

Library use (bench/contagion.py --backend afxdp, bench/afxdp_rate.py):

    sys.path.insert(0, "bench"); import loadgen
    wire = loadgen.Wire.testbed()                 # or Wire(ifname=..., netns=..., ...)
    flows = [loadgen.LoadFlow("victim", dst=wire.dst_ip, dport=7, rate_pps=50e3),
             loadgen.LoadFlow("aggressor", dst=wire.dst_ip, dport=9, rate_pps=20e3,
                              cost_ns=10_000, arrival="onoff", on_us=500, off_us=1500)]
    res = loadgen.run(flows, duration_s=2.0, wire=wire)   # blocks; progress=callable
    res.flows["victim"].p99_us, res.flows["victim"].tenant_result()

`run()` returns a `LoadResult`: `flows` maps each flow's name to a
`FlowResult` (sent, completed, lost, late, duplicates, latencies in ns with
inf for lost, percentiles, a per-window series, an HdrHistogram), plus the
socket's counters. `FlowResult.tenant_result()` is the per-tenant dict that
bench/contagion.py writes (p50_us, p99_us, p999_us, sent, completed,
dropped, late_sends, throttles, cycles; the last two are the datapath's and
are None here), so its JSON, CSV and plots take these results as they are.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import sys
import time

import numba
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (HERE, HERE / "loadgen", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

try:
    from _loadgen import ffi, lib  # bench/loadgen/_loadgen*.so
except ImportError as e:  # pragma: no cover - a build step missing
    raise ImportError(f"the load generator's C module is not built ({e}): run `make build`") from e

from datapath.errors import BackendError, ConfigError  # noqa: E402
from datapath.probe import PROBE, probe_payload  # noqa: E402

if lib.LG_ABI_VERSION != 1:
    raise ImportError("bench/loadgen/_loadgen was built for another ABI: run `make build`")

ARRIVALS = {"poisson": lib.LG_ARRIVAL_POISSON, "onoff": lib.LG_ARRIVAL_ONOFF,
            "uniform": lib.LG_ARRIVAL_UNIFORM, "saturate": lib.LG_ARRIVAL_SATURATE}
IOS = {"afxdp": lib.LG_IO_AFXDP, "afpacket": lib.LG_IO_AFPACKET}
XDP_MODES = {"skb": lib.LG_XDP_SKB, "native": lib.LG_XDP_NATIVE}
PERCENTILES = (("p50_us", 50.0), ("p99_us", 99.0), ("p999_us", 99.9))
HDR_CEILING_NS = 60 * 10**9  # lost packets are recorded here in the HdrHistogram
SPORT_BASE = 40000           # flow i sends from port SPORT_BASE + i
ERRBUF = 512


@dataclasses.dataclass(frozen=True)
class LoadFlow:
    """One tenant's traffic: UDP to dst:dport, `size`-byte frames.

    arrival   poisson (exponential gaps, mean 1/rate_pps), onoff (Poisson at
              rate_pps during on_us, silent for off_us), uniform (every
              1/rate_pps), saturate (as fast as the socket takes them;
              rate_pps only sizes the sample arrays)
    cost_ns   written into each probe: the work the datapath's `spin`
              handler burns for this packet
    """

    name: str
    dst: str
    dport: int
    rate_pps: float
    size: int = 64
    arrival: str = "poisson"
    on_us: float = 0.0
    off_us: float = 0.0
    cost_ns: int = 0
    sport: int | None = None

    def __post_init__(self):
        if self.arrival not in ARRIVALS:
            raise ConfigError(f"flow {self.name}: unknown arrival {self.arrival!r}; choose one "
                              f"of {', '.join(ARRIVALS)}")
        if not (self.rate_pps > 0 and math.isfinite(self.rate_pps)):
            raise ConfigError(f"flow {self.name}: rate_pps must be > 0, not {self.rate_pps}")
        if self.arrival == "onoff" and not (self.on_us > 0 and self.off_us >= 0):
            raise ConfigError(f"flow {self.name}: onoff needs on_us > 0 and off_us >= 0")
        if not 1 <= self.dport <= 65535:
            raise ConfigError(f"flow {self.name}: dport must be in 1..65535")
        if not 0 <= self.cost_ns < 2**32:
            raise ConfigError(f"flow {self.name}: cost_ns must fit 32 bits")

    def mean_rate(self) -> float:
        """Offered packets per second, averaged over on and off periods."""
        if self.arrival == "onoff":
            return self.rate_pps * self.on_us / (self.on_us + self.off_us)
        return self.rate_pps


@dataclasses.dataclass(frozen=True)
class Wire:
    """Where the generator sends from: its interface (in `netns`, a name
    under /run/netns, or None for ours), its own addresses, and the MAC of
    the host it talks to (the testbed's MACs are fixed; no ARP)."""

    ifname: str
    netns: str | None
    src_mac: str
    src_ip: str
    dst_mac: str
    dst_ip: str
    queue: int = 0

    @classmethod
    def interface(cls, ifname: str, dst_ip: str, dst_mac: str) -> "Wire":
        """An interface of this namespace (e.g. eth1 of the generator VM),
        its own MAC and first IPv4 address read from the kernel."""
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=ifname)
            if not links:
                raise ConfigError(f"no interface {ifname!r} here")
            mac = ipr.get_links(links[0])[0].get_attr("IFLA_ADDRESS")
            addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=links[0], family=2)]
        if not addrs:
            raise ConfigError(f"{ifname} has no IPv4 address to send from")
        return cls(ifname=ifname, netns=None, src_mac=mac, src_ip=addrs[0], dst_mac=dst_mac,
                   dst_ip=dst_ip)

    @classmethod
    def testbed(cls, config=None, pair: int = 0) -> "Wire":
        """Pair `pair` of the testbed that `config` (a control.testbed
        TestbedConfig; default: control/testbed.toml) describes."""
        from control.testbed import TestbedConfig

        cfg = config or TestbedConfig.load()
        spec = cfg.pair_specs()[pair]
        return cls(ifname=spec.gen.ifname, netns=spec.gen.netns, src_mac=spec.gen.mac,
                   src_ip=spec.gen.ip, dst_mac=spec.host.mac, dst_ip=spec.host.ip)


@dataclasses.dataclass
class FlowResult:
    flow: LoadFlow
    sent: int
    completed: int
    duplicates: int
    late: int
    latency_ns: np.ndarray   # one per packet sent, in send order; inf: never answered
    t_sent_s: np.ndarray     # intended send time of each, seconds from the start
    percentiles_us: dict     # p50_us, p99_us, p999_us (inf when they fall among lost)
    series: list[dict]       # per window of send time: start_s, sent, lost, p50_us, p99_us
    hdr: object              # hdrh.histogram.HdrHistogram, ns; lost at HDR_CEILING_NS

    @property
    def lost(self) -> int:
        return self.sent - self.completed

    def percentile(self, q: float) -> float:
        return float(_percentile(np.sort(self.latency_ns), q)) / 1e3

    @property
    def p50_us(self) -> float:
        return self.percentiles_us["p50_us"]

    @property
    def p99_us(self) -> float:
        return self.percentiles_us["p99_us"]

    def tenant_result(self) -> dict:
        """bench/contagion.py's per-tenant schema (tenant_result)."""
        out = dict(self.percentiles_us)
        out.update(sent=self.sent, completed=self.completed, dropped=self.lost,
                   late_sends=self.late, throttles=None, cycles=None)
        return out

    def as_dict(self) -> dict:
        done = self.latency_ns[np.isfinite(self.latency_ns)]
        out = self.tenant_result()
        out.update(flow=dataclasses.asdict(self.flow), lost=self.lost,
                   duplicates=self.duplicates,
                   mean_us=float(done.mean()) / 1e3 if done.size else math.nan,
                   max_us=float(done.max()) / 1e3 if done.size else math.nan,
                   series=self.series, hdrh=self.hdr.encode().decode())
        return out


@dataclasses.dataclass
class LoadResult:
    flows: dict[str, FlowResult]
    duration_s: float        # sending time, as the loop measured it
    wire: Wire
    io: str
    stats: dict              # socket counters (unmatched, rx_dropped, ...), and core_taken:
                             # the share of the run the generator thread waited for its core

    @property
    def sent(self) -> int:
        return sum(f.sent for f in self.flows.values())

    @property
    def completed(self) -> int:
        return sum(f.completed for f in self.flows.values())

    @property
    def sent_mpps(self) -> float:
        return self.sent / self.duration_s / 1e6

    @property
    def completed_mpps(self) -> float:
        return self.completed / self.duration_s / 1e6

    def as_dict(self) -> dict:
        tenants = {name: f.as_dict() for name, f in self.flows.items()}
        # one run in bench/contagion.py's shape (its per-tenant keys only), so
        # its median_run, CSV and plots read this file
        schema = {name: f.tenant_result() for name, f in self.flows.items()}
        run = {"policy": None, "adversary": "aggressor" in schema, "aggressor_load": None,
               "victim": schema.get("victim"), "aggressor": schema.get("aggressor"),
               "mpps": self.completed_mpps, "loop_stalls": None, "loop_stall_us": None}
        return {"io": self.io, "wire": dataclasses.asdict(self.wire),
                "duration_s": self.duration_s, "sent_mpps": self.sent_mpps,
                "completed_mpps": self.completed_mpps, "stats": self.stats,
                "tenants": tenants, "runs": [run]}


# ---------------------------------------------------------------- templates

def template(flow: LoadFlow, wire: Wire, index: int) -> tuple[bytes, int]:
    """The flow's frame and the probe's offset in it. The UDP checksum is 0
    (none, legal for IPv4): seq and t_send change in every copy."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    sport = flow.sport if flow.sport is not None else SPORT_BASE + index
    headers = Ether(src=wire.src_mac, dst=wire.dst_mac) / IP(src=wire.src_ip, dst=flow.dst) \
        / UDP(sport=sport, dport=flow.dport, chksum=0)
    hlen = len(headers)
    frame = bytes(headers / probe_payload(flow.cost_ns, size=max(PROBE.size, flow.size - hlen)))
    return frame, hlen


# ---------------------------------------------------------------- numba post-processing

@numba.njit(cache=True)
def _latency_ns(t_sent, t_recv, ns_per_cycle):
    """Receive minus intended send, ns; inf where no reply came."""
    out = np.empty(t_sent.shape[0], dtype=np.float64)
    for i in range(t_sent.shape[0]):
        if t_recv[i] == 0:
            out[i] = np.inf
        else:
            out[i] = (np.int64(t_recv[i]) - np.int64(t_sent[i])) * ns_per_cycle
    return out


@numba.njit(cache=True)
def _percentile(sorted_lat, q):
    """Nearest rank over every sample (inf included), as datapath/histogram.py."""
    n = sorted_lat.shape[0]
    if n == 0:
        return np.nan
    rank = max(1, int(np.ceil(q / 100.0 * n)))
    return sorted_lat[rank - 1]


@numba.njit(cache=True)
def _window_series(t_sent_s, lat, window_s, n_windows):
    """Per window of intended send time: sent, lost, p50, p99 (ns)."""
    idx = np.minimum((t_sent_s / window_s).astype(np.int64), n_windows - 1)
    order = np.argsort(idx, kind="mergesort")
    out = np.full((n_windows, 4), np.nan)
    start = 0
    n = idx.shape[0]
    while start < n:
        w = idx[order[start]]
        end = start
        while end < n and idx[order[end]] == w:
            end += 1
        vals = np.sort(lat[order[start:end]])
        lost = 0
        for v in vals:
            if not np.isfinite(v):
                lost += 1
        out[w, 0] = end - start
        out[w, 1] = lost
        out[w, 2] = _percentile(vals, 50.0)
        out[w, 3] = _percentile(vals, 99.0)
        start = end
    return out


def _hdr(lat_ns: np.ndarray):
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, HDR_CEILING_NS, 3)
    done = lat_ns[np.isfinite(lat_ns)]
    for v, c in zip(*np.unique(np.clip(done, 1, HDR_CEILING_NS).astype(np.int64),
                               return_counts=True)):
        h.record_value(int(v), int(c))
    lost = int(lat_ns.size - done.size)
    if lost:
        h.record_value(HDR_CEILING_NS, lost)
    return h


def _flow_result(flow: LoadFlow, st, t_sent, t_recv, t0: int, hz: float,
                 window_s: float, duration_s: float) -> FlowResult:
    n = int(st.sent)
    t_sent, t_recv = t_sent[:n], t_recv[:n]
    lat = _latency_ns(t_sent, t_recv, 1e9 / hz)
    rel_s = (t_sent.astype(np.int64) - t0) / hz
    srt = np.sort(lat)
    pct = {key: float(_percentile(srt, q)) / 1e3 for key, q in PERCENTILES}
    n_windows = max(1, math.ceil(duration_s / window_s))
    series = []
    if n:
        for w, (sent, lost, p50, p99) in enumerate(_window_series(rel_s, lat, window_s,
                                                                  n_windows)):
            if sent > 0:
                series.append({"start_s": round(w * window_s, 6), "sent": int(sent),
                               "lost": int(lost), "p50_us": p50 / 1e3, "p99_us": p99 / 1e3})
    return FlowResult(flow=flow, sent=n, completed=int(st.received),
                      duplicates=int(st.duplicates), late=int(st.late), latency_ns=lat,
                      t_sent_s=rel_s, percentiles_us=pct, series=series, hdr=_hdr(lat))


# ---------------------------------------------------------------- running

def run(flows: list[LoadFlow], duration_s: float, wire: Wire | None = None, *,
        core: int | None = None, io: str = "afxdp", xdp_mode: str = "skb",
        drain_s: float = 0.25, window_s: float = 0.01, seed: int = 1,
        n_frames: int = 4096, ring_size: int = 1024, progress=None,
        poll_s: float = 0.1) -> LoadResult:
    """Sends `flows` for `duration_s` seconds from `wire` (default: the
    testbed's generator end), waits up to `drain_s` for the last replies,
    and returns every flow's results. `core`: the generator thread's core
    (default: the second CPU we may use, the datapath's loop takes the
    first). `progress(sent, received, elapsed_s)` is called every `poll_s`.
    Raises BackendError when the socket cannot be set up."""
    if not flows:
        raise ConfigError("no flows to send")
    names = [f.name for f in flows]
    if len(set(names)) != len(names):
        raise ConfigError(f"flow names must be unique: {names}")
    if len(flows) > lib.LG_MAX_FLOWS:
        raise ConfigError(f"at most {lib.LG_MAX_FLOWS} flows")
    if io not in IOS or xdp_mode not in XDP_MODES:
        raise ConfigError(f"io is one of {', '.join(IOS)}; xdp_mode one of {', '.join(XDP_MODES)}")
    if not duration_s > 0:
        raise ConfigError("duration_s must be > 0")
    wire = wire or Wire.testbed()
    if core is None:
        cpus = sorted(os.sched_getaffinity(0))
        core = cpus[1] if len(cpus) > 1 else cpus[0]

    hz = lib.lg_tsc_hz()
    cflows = ffi.new("struct lg_flow[]", len(flows))
    keep, arrays = [], []
    for i, (c, flow) in enumerate(zip(cflows, flows)):
        frame, probe_off = template(flow, wire, i)
        buf = ffi.from_buffer(frame)
        # room for every arrival the run can bring (saturate: what a core can send)
        rate = 3e6 if flow.arrival == "saturate" else flow.mean_rate()
        expect = rate * duration_s
        cap = int(expect + 10 * math.sqrt(expect) + 1024)
        t_sent = np.zeros(cap, dtype=np.uint64)
        t_recv = np.zeros(cap, dtype=np.uint64)
        keep += [buf, frame]
        arrays.append((t_sent, t_recv))
        c.frame = buf
        c.len = len(frame)
        c.probe_off = probe_off
        c.arrival = ARRIVALS[flow.arrival]
        c.rate_pps = flow.rate_pps
        c.on_us = flow.on_us
        c.off_us = flow.off_us
        c.capacity = cap
        c.t_sent = ffi.cast("uint64_t *", t_sent.ctypes.data)
        c.t_recv = ffi.cast("uint64_t *", t_recv.ctypes.data)

    cfg = ffi.new("struct lg_config *")
    ifname = ffi.new("char[]", wire.ifname.encode())
    netns = ffi.new("char[]", f"/run/netns/{wire.netns}".encode()) if wire.netns else ffi.NULL
    cfg.ifname = ifname
    cfg.netns = netns
    cfg.queue = wire.queue
    cfg.core = core
    cfg.io = IOS[io]
    cfg.xdp_mode = XDP_MODES[xdp_mode]
    cfg.n_frames = n_frames
    cfg.ring_size = ring_size
    cfg.duration_s = duration_s
    cfg.drain_s = drain_s
    cfg.seed = seed

    err = ffi.new("char[]", ERRBUF)
    handle = ffi.new("lg_t **")
    ret = lib.lg_start(cfg, cflows, len(flows), handle, err, ERRBUF)
    if ret < 0:
        raise BackendError(f"load generator on {wire.ifname}"
                           f"{' in ' + wire.netns if wire.netns else ''}: "
                           f"{ffi.string(err).decode() or os.strerror(-ret)}", errno=-ret)
    lg = handle[0]
    prog = ffi.new("struct lg_progress *")
    try:
        while True:
            lib.lg_progress(lg, prog)
            if progress:
                progress(prog.sent, prog.received, prog.elapsed_s)
            if prog.done:
                break
            time.sleep(poll_s)
    except BaseException:
        lib.lg_stop(lg)  # Ctrl-C: stop sending, drain, then give up the results
        raise
    finally:
        fstats = ffi.new("struct lg_flow_stats[]", len(flows))
        stats = ffi.new("struct lg_stats *")
        lib.lg_join(lg, fstats, stats)

    sent_s = (stats.t_end - stats.t_start) / hz if stats.t_end else duration_s
    results = {}
    for flow, st, (t_sent, t_recv) in zip(flows, fstats, arrays):
        results[flow.name] = _flow_result(flow, st, t_sent, t_recv, stats.t_start, hz,
                                          window_s, sent_s)
    counters = {k: int(getattr(stats, k)) for k in
                ("unmatched", "tx_kicks", "tx_errors", "rx_dropped", "rx_ring_full", "fill_empty",
                 "run_ns", "wait_ns")}
    # the share of the run the generator's core was someone else's
    busy = counters["run_ns"] + counters["wait_ns"]
    counters["core_taken"] = counters["wait_ns"] / busy if busy else math.nan
    counters["flows_full"] = [flow.name for flow, st in zip(flows, fstats) if st.full]
    return LoadResult(flows=results, duration_s=sent_s, wire=wire, io=io, stats=counters)


# ---------------------------------------------------------------- the bare echo

class BareEcho:
    """The reference echo (bench/loadgen/bare_echo.c): one AF_XDP socket on
    `ifname` queue `queue` (in `netns`), rx -> swap MAC/IPv4/UDP ports -> tx
    on a thread pinned to `core`, nothing else. It loads no XDP program:
    put `fd` in a steering program's XSKMAP (ebpf.steer.Steer.bind_xsk).

        with BareEcho("isl-host0", netns="isl-host", core=0) as echo:
            steer.bind_xsk(0, echo.fd)
            ...; echo.stats()["tx"]
    """

    def __init__(self, ifname: str, *, netns: str | None = None, queue: int = 0,
                 core: int | None = None, n_frames: int = 4096, ring_size: int = 2048,
                 batch: int = 32):
        self._be = None
        if core is None:
            core = sorted(os.sched_getaffinity(0))[0]
        cfg = ffi.new("struct be_config *")
        name = ffi.new("char[]", ifname.encode())
        ns = ffi.new("char[]", f"/run/netns/{netns}".encode()) if netns else ffi.NULL
        cfg.ifname, cfg.netns, cfg.queue, cfg.core = name, ns, queue, core
        cfg.n_frames, cfg.ring_size, cfg.batch = n_frames, ring_size, batch
        err = ffi.new("char[]", ERRBUF)
        out = ffi.new("be_t **")
        ret = lib.be_start(cfg, out, err, ERRBUF)
        if ret < 0:
            raise BackendError(f"bare echo on {ifname}{' in ' + netns if netns else ''}: "
                               f"{ffi.string(err).decode() or os.strerror(-ret)}", errno=-ret)
        self._be = out[0]

    @property
    def fd(self) -> int:
        return lib.be_fd(self._be)

    def stats(self) -> dict:
        st = ffi.new("struct be_stats *")
        lib.be_stats(self._be, st)
        return {k: int(getattr(st, k)) for k in
                ("rx", "tx", "dropped", "tx_full", "rx_dropped", "rx_ring_full", "fill_empty")}

    def close(self) -> None:
        if self._be is not None:
            lib.be_stop(self._be)
            self._be = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


# ---------------------------------------------------------------- command line

def parse_flow(text: str, wire: Wire, index: int) -> LoadFlow:
    """'name=victim,dport=7,rate=50000,arrival=poisson,size=64,cost_ns=0,
    on_us=..,off_us=..,dst=10.99.0.2' (every key optional)."""
    fields = {"name": f"flow{index}", "dst": wire.dst_ip, "dport": 7, "rate_pps": 10_000.0}
    keys = {"name": str, "dst": str, "dport": int, "rate": float, "rate_pps": float,
            "size": int, "arrival": str, "on_us": float, "off_us": float, "cost_ns": int,
            "sport": int}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in keys:
            raise ConfigError(f"--flow {text!r}: {part!r} is not KEY=VALUE with KEY one of "
                              f"{', '.join(keys)}")
        try:
            fields["rate_pps" if key == "rate" else key] = keys[key](value.strip())
        except ValueError:
            raise ConfigError(f"--flow {text!r}: {key} wants a {keys[key].__name__}") from None
    return LoadFlow(**fields)


def print_table(console, res: LoadResult) -> None:
    from rich import box
    from rich.table import Table

    from common import fmt_count, fmt_us

    table = Table(title=f"loadgen over {res.wire.ifname} ({res.io}), {res.duration_s:.2f} s",
                  caption="latency in us from the intended send time; lost: never answered "
                          "(counted as infinitely late: inf); late: sent > 20 us after its time",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col in ("flow", "offered", "sent", "done", "lost", "late", "p50", "p99", "p99.9", "max"):
        table.add_column(col, justify="left" if col == "flow" else "right", no_wrap=True)
    for name, f in res.flows.items():
        d = f.as_dict()
        table.add_row(name, f"{f.flow.mean_rate() / 1e3:.0f}k/s" if f.flow.arrival != "saturate"
                      else "max", fmt_count(f.sent), fmt_count(f.completed), fmt_count(f.lost),
                      fmt_count(f.late), fmt_us(f.p50_us), fmt_us(f.p99_us),
                      fmt_us(f.percentiles_us["p999_us"]), fmt_us(d["max_us"]))
    console.print(table)
    console.print(f"sent {res.sent_mpps:.3f} Mpps, answered {res.completed_mpps:.3f} Mpps; "
                  f"socket: {res.stats}")


def main(argv=None):
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog="""
\b
FLOW is KEY=VALUE,... with keys name, dst, dport, rate (pps), arrival
(poisson|onoff|uniform|saturate), on_us, off_us (onoff), size (frame
bytes), cost_ns (work the datapath's spin handler burns per packet), sport.
Example: --flow name=victim,dport=7,rate=50000
         --flow name=aggressor,dport=9,rate=20000,cost_ns=10000,arrival=onoff,on_us=500,off_us=1500
""")
    @click.option("--flow", "flow_specs", multiple=True, metavar="FLOW",
                  help="A flow (repeatable); default: one Poisson flow, 10 kpps to port 7.")
    @click.option("--duration", type=float, default=2.0, show_default=True,
                  help="Seconds of sending.")
    @click.option("--drain", type=float, default=0.25, show_default=True,
                  help="Seconds to wait for replies after the last send.")
    @click.option("--io", type=click.Choice(list(IOS)), default="afxdp", show_default=True,
                  help="afxdp: AF_XDP socket, the generator's XDP program takes the replies before the "
                       "stack; afpacket: AF_PACKET with PACKET_QDISC_BYPASS.")
    @click.option("--xdp-mode", type=click.Choice(list(XDP_MODES)), default="skb",
                  show_default=True, help="How the generator's XDP program attaches (afxdp).")
    @click.option("--core", type=int, help="Core of the generator thread (default: the second).")
    @click.option("--testbed-config", type=click.Path(exists=True, dir_okay=False),
                  help="Testbed TOML (default: control/testbed.toml); the wire is its pair.")
    @click.option("--pair", type=int, default=0, show_default=True, help="Testbed veth pair.")
    @click.option("--ifname", help="Send from this interface instead of the testbed (e.g. eth1 "
                  "between two machines); needs --dst-ip and --dst-mac.")
    @click.option("--dst-ip", help="With --ifname: the isolane host's address.")
    @click.option("--dst-mac", help="With --ifname: the isolane host's MAC (no ARP is done).")
    @click.option("--window-ms", type=float, default=10.0, show_default=True,
                  help="Window of the per-window latency series.")
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
                  help="Write results (bench/contagion.py's per-tenant schema) as JSON.")
    @click.option("--hdr", "hdr_path", type=click.Path(dir_okay=False, path_type=pathlib.Path),
                  help="Write each flow's HdrHistogram percentile distribution (us) here.")
    def cli(flow_specs, duration, drain, io, xdp_mode, core, testbed_config, pair, ifname,
            dst_ip, dst_mac, window_ms, seed, json_path, hdr_path):
        """Open-loop UDP load over the testbed's wire, latency from the intended
        send time, lost packets counted as infinitely late.

        Needs root and the testbed (`isolane testbed up`) with something that
        echoes on the isolane side (an isolane datapath, or afxdp_rate's bare
        loop). Prints a table per flow: sent, answered, lost, late sends and
        latency percentiles in us."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from common import console as make_console, write_json

        from control.testbed import TestbedConfig

        console = make_console()
        try:
            if ifname:
                if not (dst_ip and dst_mac):
                    raise click.UsageError("--ifname needs --dst-ip and --dst-mac")
                wire = Wire.interface(ifname, dst_ip, dst_mac)
            else:
                wire = Wire.testbed(TestbedConfig.load(testbed_config), pair)
            flows = [parse_flow(s, wire, i) for i, s in enumerate(flow_specs)] or \
                [LoadFlow("flow0", dst=wire.dst_ip, dport=7, rate_pps=10_000)]
            with Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                          console=console, transient=True, auto_refresh=False) as bar:
                task = bar.add_task("sending", total=duration)

                def tick(sent, received, elapsed):
                    bar.update(task, completed=min(duration, elapsed), refresh=True,
                               description=f"sent {sent:,}  answered {received:,}")

                res = run(flows, duration, wire, core=core, io=io, xdp_mode=xdp_mode,
                          drain_s=drain, window_s=window_ms / 1e3, seed=seed, progress=tick)
        except (ConfigError, BackendError) as e:
            raise click.ClickException(str(e)) from None
        print_table(console, res)
        if json_path:
            write_json(json_path, {"flows_spec": [dataclasses.asdict(f) for f in flows],
                                   **res.as_dict()})
            console.print(f"wrote {json_path}")
        if hdr_path:
            hdr_path.parent.mkdir(parents=True, exist_ok=True)
            with hdr_path.open("w") as out:
                for name, f in res.flows.items():
                    out.write(f"# flow {name}: latency in us (lost at {HDR_CEILING_NS / 1e3:g})\n")
                    f.hdr.output_percentile_distribution(_TextOut(out), 1000.0)
            console.print(f"wrote {hdr_path}")

    cli.main(args=argv, standalone_mode=True)


class _TextOut:
    """hdrh writes bytes-or-str depending on the version; take both."""

    def __init__(self, f):
        self.f = f

    def write(self, s):
        self.f.write(s.decode() if isinstance(s, bytes) else s)


if __name__ == "__main__":
    main()
