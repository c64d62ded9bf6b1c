"""The daemon's hold on the data plane: one Datapath, its backend (the mem
backend without flows, or one AF_XDP socket per configured queue of the
interface behind the steering program) and the tenant slow path, every
call serialised by one lock.

A deleted tenant leaves the running datapath: its rules are withdrawn
first (the datapath refuses to delete a tenant a rule still names, so no
packet is ever classified to a deleted id), then its slow path endpoint is
closed and the datapath frees it, its queued packets and its queue slots;
its id may be given to the next tenant.
"""
from __future__ import annotations

import errno
import logging
import threading
import time

from datapath import Datapath, Rule, TenantConfig
from datapath._dp import lib
from datapath.errors import ConfigError, NotFoundError

log = logging.getLogger("isolaned.plane")

IDLE_FRAMES = 64  # the idle mem backend's pool: nothing is generated into it
AFXDP_RING = 2048    # one socket's RX/TX ring size (the datapath's default)
AFXDP_MIN_RING = 8  # per socket (64 queues: 32 each)


class Plane:
    def __init__(self, cfg):
        self.cfg = cfg
        self.lock = threading.RLock()
        self.dp = Datapath(policy=cfg.policy, work_conserving=cfg.work_conserving,
                           refill_us=cfg.refill_us, quantum_us=cfg.quantum_us,
                           core=cfg.fastpath_core)
        self.programs: dict[int, object] = {}  # tenant -> engine program (kept alive)
        self.rules: dict[int, list[dict]] = {}
        self.steer = None
        self.slowpath = None
        self._rates: dict[int, tuple[float, int, float]] = {}  # tenant -> (t, rx, pps)
        self.started_at = time.time()

    # ---- backend

    def open_backend(self) -> None:
        if self.cfg.backend == "mem":
            self._idle_mem_backend()
        else:
            self._afxdp_backend()

    def _idle_mem_backend(self) -> None:
        """The mem backend with no traffic: what a daemon without a NIC runs
        (development, tests, the control plane's own benchmarks). Without
        flows it starts no generator thread; the loop runs and carries the
        tenants' slow-path sends. Its frame pool is kept small: nothing is
        generated into it."""
        self.dp.use_mem_backend([], duration_s=1.0, ring_size=IDLE_FRAMES, n_frames=IDLE_FRAMES,
                                core=self.cfg.generator_core)

    def _afxdp_backend(self) -> None:
        """One AF_XDP socket per configured queue of the interface, all in
        the XDP mode the interface's `mode` asks for (auto: native where the
        driver has it), and the steering program attached in the mode the
        sockets got, each queue's frames steered to that queue's socket."""
        from ebpf.steer import Steer

        iface = self.cfg.interfaces[0]
        # the sockets share the rings' worth of one socket, so the UMEM stays
        # 4096 frames (8 MiB: the usual RLIMIT_MEMLOCK) however many queues
        ring = max(AFXDP_MIN_RING, AFXDP_RING >> (len(iface.queues) - 1).bit_length())
        self.dp.use_afxdp_backend(iface.ifname, queues=list(iface.queues), mode=iface.mode,
                                  ring_size=ring, netns=iface.netns)
        self.steer = Steer(iface.ifname, netns=iface.netns, mode=self.dp.afxdp_xdp_mode)
        self.steer.bind_xsks(self.dp.afxdp_fds())
        log.info("afxdp on %s queues %s (sockets and steering in %s mode)", iface.ifname,
                 list(iface.queues), self.steer.mode)

    def start(self) -> None:
        with self.lock:
            self.dp.start()

    def attach_slowpath(self, state_dir) -> None:
        """HOOK (issue 6 item 4): the tenant slow path, when control/slowpath.py
        provides `SlowPathHub(datapath, state_dir)` with add_tenant(id, name,
        uid, gid), remove_tenant(id) and close()."""
        try:
            from control.slowpath import SlowPathHub
        except ImportError:
            log.info("no control.slowpath.SlowPathHub: tenants have no slow path endpoint")
            return
        self.slowpath = SlowPathHub(self.dp, state_dir)

    # ---- tenants

    @staticmethod
    def tenant_config(t: dict) -> TenantConfig:
        return TenantConfig(handler=t["handler"], queue_cap=t["queue_cap"], share=t["share"],
                            cap_us=t["cap_us"])

    def free_id(self, taken: set[int]) -> int | None:
        """The lowest id no tenant holds (a deleted tenant's id is free again)."""
        for i in range(1, lib.DP_MAX_TENANTS):
            if i not in taken and i not in self.dp.tenants:
                return i
        return None

    def add_tenant(self, t: dict) -> None:
        with self.lock:
            try:
                self.dp.add_tenant(t["id"], self.tenant_config(t))
            except ConfigError as e:
                if e.errno != errno.ENOSPC:
                    raise
                used = sum(c.queue_cap for c in self.dp.tenants.values())
                raise ConfigError(
                    f"no room for a queue of {t['queue_cap']} packets: the datapath's queues "
                    f"hold {lib.DP_QUEUE_SLOTS} in all and {used} are taken by the other "
                    "tenants; give a smaller queue_cap", errno=errno.ENOSPC) from None
            try:
                if self.slowpath is not None:
                    self.slowpath.add_tenant(t["id"], t["name"], t.get("owner_uid"),
                                             t.get("owner_gid"))
                self._set_rules({**self.rules, t["id"]: t.get("rules", [])})
            except Exception:
                self._remove(t["id"])
                raise

    def set_tenant(self, tid: int, t: dict, rules: list[dict] | None) -> None:
        with self.lock:
            old = self.dp.tenants[tid]
            new = self.tenant_config(t)
            if new.queue_cap != old.queue_cap:
                raise ConfigError("queue_cap cannot change while the datapath runs (its queue "
                                  "is not resized under the loop): delete and re-add the tenant")
            self.dp.set_tenant(tid, handler=new.handler, share=new.share, cap_us=new.cap_us)
            if rules is not None:
                try:
                    self._set_rules({**self.rules, tid: rules})
                except Exception:
                    self.dp.set_tenant(tid, handler=old.handler, share=old.share,
                                       cap_us=old.cap_us)
                    raise

    def delete_tenant(self, tid: int) -> None:
        """Takes the tenant out of the running datapath: rules first (no
        packet is classified to it from then on), then its slow path
        endpoint, then the tenant itself with its queued packets, its
        program and its queue slots. Its id is free afterwards."""
        with self.lock:
            if tid in self.rules:
                self._set_rules({k: v for k, v in self.rules.items() if k != tid})
            self._remove(tid)

    def _remove(self, tid: int) -> None:
        """The rest of a delete, once no rule names tid (also undoes a failed add)."""
        self.rules.pop(tid, None)
        self._rates.pop(tid, None)
        if self.slowpath is not None:
            try:
                self.slowpath.remove_tenant(tid)
            except NotFoundError:
                pass  # it never got one (a failed add)
            except Exception as e:
                log.warning("slow path: removing tenant %d: %s", tid, e)
        if tid in self.dp.tenants:
            self.dp.del_tenant(tid)
        self.programs.pop(tid, None)  # the loop no longer runs it: free to go

    def _set_rules(self, by_tenant: dict[int, list[dict]]) -> None:
        """Installs every live tenant's rules at once (the classifier is
        replaced atomically), and on afxdp the steering rules they need."""
        rules = [Rule(tenant=tid, **r) for tid, rs in sorted(by_tenant.items()) for r in rs]
        if self.steer is not None:
            self._sync_steer(by_tenant)
        self.dp.set_rules(rules)
        self.rules = {tid: list(rs) for tid, rs in by_tenant.items()}

    def _sync_steer(self, by_tenant) -> None:
        def key(r):
            return (r.get("ip_dst"), r.get("proto"), r.get("dport"))

        want = {key(r) for rs in by_tenant.values() for r in rs}
        have = {key(r) for rs in self.rules.values() for r in rs}
        for k in want - have:
            self.steer.add_rule(*k)
        for k in have - want:
            self.steer.remove_rule(*k)

    # ---- programs

    def set_program(self, tid: int, loaded, bound_ns: int) -> None:
        """loaded: api.Installable (the engine's program and its maps)."""
        with self.lock:
            self.dp.set_program(tid, loaded.engine_program, bound_ns=bound_ns)
            self.programs[tid] = loaded
            if self.slowpath is not None:
                self.slowpath.set_ringbuf_maps(tid, loaded.ringbufs)

    def clear_program(self, tid: int) -> None:
        with self.lock:
            self.dp.clear_program(tid)
            self.programs.pop(tid, None)
            if self.slowpath is not None:
                self.slowpath.set_ringbuf_maps(tid, [])

    # ---- observation (reads need no lock: the C side reads counters racily but safely)

    def tenant_stats(self, tid: int, latency: bool = True):
        st = self.dp.tenant_stats(tid, latency=latency)
        now = time.monotonic()
        prev = self._rates.get(tid)
        if prev is None or st.rx < prev[1]:  # first look, or a new tenant under this id
            self._rates[tid] = (now, st.rx, 0.0)
            pps = 0.0
        elif now - prev[0] >= 1.0:
            pps = (st.rx - prev[1]) / (now - prev[0])
            self._rates[tid] = (now, st.rx, pps)
        else:
            pps = prev[2]
        return st, pps

    def sample_rates(self) -> None:
        """Called once a second so `pps` covers the last second."""
        for tid in list(self.dp.tenants):
            try:
                self.tenant_stats(tid, latency=False)
            except NotFoundError:
                pass  # deleted since the list was taken

    def close(self) -> None:
        with self.lock:
            if self.slowpath is not None:
                try:
                    self.slowpath.close()
                except Exception as e:
                    log.warning("slow path: close: %s", e)
            try:
                if self.steer is not None:
                    self.steer.detach()  # the interface's traffic goes back to the kernel
            finally:
                self.dp.stop()
                self.dp.close()
