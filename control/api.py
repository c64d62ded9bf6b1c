"""The control API's methods (contract: /work/notes/daemon_api.md).

Each method: check who may call it, validate its params, (compile), then
change the state in one sqlite transaction committed only after the
datapath accepted the change. Tenants are named to their owners only: a
tenant that a caller does not own answers "not found", so tenant A cannot
even learn that tenant B exists.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from datapath import Rule
from datapath._dp import lib
from datapath.errors import ConfigError, IsolaneError, NotFoundError

from . import auth
from .rpc import (CONFLICT, INTERNAL, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_FOUND,
                  PERMISSION_DENIED, REJECTED, TOO_LARGE, Params, RpcFault, invalid)

VERSION = "0.1.0"
MAX_SOURCE = 256 * 1024
MAX_RULES = 256
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
HANDLERS = ("drop", "echo", "udp_echo")
ENGINES = ("aot", "interp")
RULE_KEYS = ("ip_dst", "proto", "dport", "vlan")

log = logging.getLogger("isolaned.api")
audit = logging.getLogger("isolaned.audit")


class Installable:
    """What the plane installs: the engine's program and its maps (the
    RINGBUF ones feed the tenant's slow path)."""

    RINGBUF = 27  # BPF_MAP_TYPE_RINGBUF

    def __init__(self, engine_program, maps: dict, specs):
        self.engine_program = engine_program
        self.maps = maps
        self.ringbufs = [maps[s.name] for s in specs if s.type == self.RINGBUF]


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Api:
    def __init__(self, cfg, state, plane, admin_gid: int | None, socket_path: str):
        self.cfg = cfg
        self.state = state
        self.plane = plane
        self.admin_gid = admin_gid
        self.socket_path = socket_path
        self.started = time.time()
        self.restore_errors: dict[int, str] = {}  # tenant -> why its program is not running
        self._compile_lock = threading.Lock()  # one build at a time (bcc, cc)
        self.methods = {
            "daemon.status": self.daemon_status,
            "tenant.add": self.tenant_add,
            "tenant.del": self.tenant_del,
            "tenant.set": self.tenant_set,
            "tenant.list": self.tenant_list,
            "tenant.show": self.tenant_show,
            "prog.load": self.prog_load,
            "prog.unload": self.prog_unload,
            "prog.list": self.prog_list,
            "prog.show": self.prog_show,
            "stats": self.stats,
            "slowpath.info": self.slowpath_info,
        }
        self.mutating = {"tenant.add", "tenant.del", "tenant.set", "prog.load", "prog.unload"}

    # ---- dispatch

    def dispatch(self, caller: auth.Caller, method: str, params):
        fn = self.methods.get(method)
        if fn is None:
            raise RpcFault(METHOD_NOT_FOUND, f"method not found: {method[:80]!r} (methods: "
                           f"{', '.join(sorted(self.methods))})")
        p = Params(params)
        t0 = time.monotonic()
        try:
            result = self._run(fn, method, caller, p)
        except RpcFault as f:
            if method in self.mutating or f.code in (PERMISSION_DENIED, INTERNAL):
                audit.info("method=%s uid=%d pid=%d error=%d msg=%r", method, caller.uid,
                           caller.pid, f.code, f.message)
            raise
        if method in self.mutating:
            audit.info("method=%s uid=%d pid=%d ok ms=%.1f", method, caller.uid, caller.pid,
                       (time.monotonic() - t0) * 1e3)
        return result

    @staticmethod
    def _run(fn, method, caller, p):
        """The method, with the datapath's refusals turned into error replies."""
        try:
            return fn(caller, p)
        except ConfigError as e:  # a value the datapath refuses (range, room, resize)
            raise RpcFault(INVALID_PARAMS, str(e)) from None
        except NotFoundError as e:
            raise RpcFault(NOT_FOUND, str(e)) from None
        except IsolaneError as e:
            log.error("method=%s datapath error: %s", method, e)
            raise RpcFault(INTERNAL, f"datapath: {e}") from None

    # ---- who may see and do what

    def _need_admin(self, caller: auth.Caller, method: str) -> None:
        if not caller.admin:
            raise RpcFault(PERMISSION_DENIED,
                           f"permission denied: {method} needs root or membership in group "
                           f"{self.cfg.admin_group!r}; you are {caller.who}")

    def _tenant(self, caller: auth.Caller, ref) -> dict:
        t = self.state.tenant(ref)
        if t is None or not (caller.admin or caller.owns(t)):
            raise RpcFault(NOT_FOUND, f"no tenant {ref!r}" + ("" if caller.admin else
                                                                " among yours"))
        return t

    def _visible(self, caller: auth.Caller) -> list[dict]:
        return [t for t in self.state.tenants() if caller.admin or caller.owns(t)]

    # ---- views

    def _prog_summary(self, t: dict, p: dict | None) -> dict | None:
        if p is None:
            return None
        out = {"tenant": t["name"], "name": p["label"], "engine": p["engine"],
               "sha256": p["source_sha256"], "artifact_sha256": p["artifact_sha256"],
               "function": p["function"], "insns": p["insns"], "bound_insns": p["bound_insns"],
               "bound_cycles": p["bound_cycles"], "loaded_at": p["loaded_at"],
               "active": t["id"] in self.plane.programs}
        if t["id"] in self.restore_errors:
            out["error"] = self.restore_errors[t["id"]]
        return out

    def _tenant_view(self, t: dict) -> dict:
        return {"id": t["id"], "name": t["name"],
                "owner": {"uid": t["owner_uid"], "gid": t["owner_gid"], "spec": t["owner_spec"]},
                "share": t["share"], "cap_us": t["cap_us"], "queue_cap": t["queue_cap"],
                "handler": t["handler"], "rules": t["rules"],
                "program": self._prog_summary(t, self.state.program(t["id"]))}

    def _tenant_stats(self, t: dict) -> dict:
        st, pps = self.plane.tenant_stats(t["id"])
        lat = None
        if st.latency.count:
            lat = {k: round(st.latency.percentile(q), 3)
                   for k, q in (("p50", 50), ("p99", 99), ("p999", 99.9))}
        drops = dict(st.drops)
        drops["xdp_drop"] = st.drop_verdict
        hub = self.plane.slowpath
        # the datapath's own slow-path counters; the hub may know more (its socket's losses)
        slow = {"delivered": getattr(st, "slowpath_delivered", 0),
                "dropped": st.drops.get("slowpath_full", 0) + st.drops.get("no_slowpath", 0)}
        if hub is not None:
            try:
                hs = hub.stats(t["id"])
                slow = {"delivered": hs["delivered"],
                        "dropped": hs["dropped"] + hs.get("ring_dropped", 0),
                        "sent": hs.get("sent", 0), "clients": hs.get("clients", 0)}
            except Exception as e:
                log.warning("slow path stats for tenant %d: %s", t["id"], e)
        return {"id": t["id"], "name": t["name"], "rx": st.rx, "tx": st.tx, "passed": st.passed,
                "completed": st.completed, "drops": drops, "cycles": st.cycles,
                "balance_cycles": st.balance, "throttles": st.throttles,
                "queue_len": st.queue_len, "pps": round(pps, 1), "latency_us": lat,
                "slowpath": slow}

    # ---- param checking

    def _rules(self, raw) -> list[dict]:
        if not isinstance(raw, list):
            raise invalid("rules must be a list of {ip_dst?, proto?, dport?, vlan?}")
        if len(raw) > MAX_RULES:
            raise invalid(f"at most {MAX_RULES} rules per tenant")
        out, seen = [], set()
        for i, r in enumerate(raw):
            if not isinstance(r, dict):
                raise invalid(f"rules[{i}] must be an object")
            extra = set(r) - set(RULE_KEYS)
            if extra:
                raise invalid(f"rules[{i}]: unknown key {sorted(extra)[0]!r} "
                              f"(keys: {', '.join(RULE_KEYS)})")
            r = {k: v for k, v in r.items() if v is not None}
            if isinstance(r.get("proto"), str):
                r["proto"] = r["proto"].lower()
            for k in ("dport", "vlan"):
                if k in r and (isinstance(r[k], bool) or not isinstance(r[k], int)):
                    raise invalid(f"rules[{i}].{k} must be an integer")
            if "ip_dst" in r and not isinstance(r["ip_dst"], str):
                raise invalid(f"rules[{i}].ip_dst must be an IPv4 address string")
            if r.get("proto") not in (None, "udp", "tcp"):
                raise invalid(f"rules[{i}].proto must be \"udp\" or \"tcp\"")
            try:
                Rule(tenant=0, **r)
            except ConfigError as e:
                raise invalid(f"rules[{i}]: {e}") from None
            if self.plane.steer is not None and not (set(r) - {"vlan"}):
                raise invalid(f"rules[{i}]: the afxdp backend steers by ip_dst, proto and dport; "
                              "a rule needs at least one of them")
            key = tuple(r.get(k) for k in RULE_KEYS)
            if key in seen:
                raise invalid(f"rules[{i}] repeats an earlier rule")
            seen.add(key)
            out.append(r)
        return out

    def _check_overlap(self, tid: int, rules: list[dict]) -> None:
        mine = {tuple(r.get(k) for k in RULE_KEYS) for r in rules}
        for other, r in self.state.all_rules():
            if other != tid and tuple(r.get(k) for k in RULE_KEYS) in mine:
                raise RpcFault(CONFLICT, f"rule {r} already sends its traffic to another tenant")

    def _budget(self, p: Params, d, old: dict | None = None) -> dict:
        dflt = old or {"share": d.share, "cap_us": d.cap_us, "queue_cap": d.queue_cap,
                       "handler": d.handler}
        out = {"share": p.number("share", dflt["share"], lo=0, lo_open=True, hi=1),
               "cap_us": p.number("cap_us", dflt["cap_us"], lo=0, lo_open=True, hi=1e7),
               "queue_cap": p.int("queue_cap", dflt["queue_cap"], lo=2, hi=lib.DP_QUEUE_SLOTS),
               "handler": p.str("handler", dflt["handler"], choices=HANDLERS)}
        q = out["queue_cap"]
        if q & (q - 1):
            raise invalid(f"queue_cap must be a power of two, not {q}")
        return out

    # ---- methods: daemon

    def daemon_status(self, caller, p: Params):
        p.end()
        tenants, programs = self.state.counts()
        role = "admin" if caller.admin else "tenant" if self._visible(caller) else "none"
        return {"version": VERSION, "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 3),
                "backend": self.cfg.backend,
                "interfaces": [{"ifname": i.ifname, "queues": list(i.queues), "mode": i.mode,
                                "netns": i.netns} for i in self.cfg.interfaces],
                "policy": self.cfg.policy, "work_conserving": self.cfg.work_conserving,
                "tenants": tenants, "programs": programs, "state_dir": str(self.cfg.state_dir),
                "socket": self.socket_path, "metrics": self.cfg.metrics,
                "running": self.plane.dp.is_running,
                "caller": {"uid": caller.uid, "gid": caller.gid, "groups": sorted(caller.groups),
                           "role": role,
                           "tenants": [t["name"] for t in self._visible(caller)]}}

    # ---- methods: tenants

    def tenant_add(self, caller, p: Params):
        self._need_admin(caller, "tenant.add")
        name = p.str("name", max_len=63)
        if not NAME_RE.match(name):
            raise invalid(f"name {name!r}: a letter, then letters, digits, '_', '.' or '-' "
                          "(at most 63)")
        owner = p.str("owner")
        try:
            uid, gid = auth.parse_owner(owner)
        except auth.OwnerError as e:
            raise invalid(str(e)) from None
        budget = self._budget(p, self.cfg.defaults)
        rules = self._rules(p.any("rules", []))
        want_id = p.int("id", None, lo=0, hi=lib.DP_MAX_TENANTS - 1)
        p.end()
        with self.state.change():
            if self.state.tenant(name) is not None:
                raise RpcFault(CONFLICT, f"a tenant named {name!r} exists")
            taken = {t["id"] for t in self.state.tenants()}
            if want_id is None:
                want_id = self.plane.free_id(taken)
                if want_id is None:
                    raise RpcFault(CONFLICT, f"no free tenant id: all {lib.DP_MAX_TENANTS - 1} "
                                   "are taken")
            elif want_id in taken:
                raise RpcFault(CONFLICT, f"tenant id {want_id} is taken")
            self._check_overlap(want_id, rules)
            t = {"id": want_id, "name": name, "owner_spec": owner, "owner_uid": uid,
                 "owner_gid": gid, **budget, "rules": rules}
            self.state.insert_tenant(t)
            self.plane.add_tenant(t)  # raises -> rollback
        log.info("tenant added id=%d name=%s owner=%s", want_id, name, owner)
        return self._tenant_view(self.state.tenant(want_id))

    def tenant_del(self, caller, p: Params):
        self._need_admin(caller, "tenant.del")
        ref = p.tenant()
        p.end()
        with self.state.change():
            t = self._tenant(caller, ref)
            self.state.delete_tenant(t["id"])
            self.plane.delete_tenant(t["id"])  # raises -> rollback
        self.restore_errors.pop(t["id"], None)
        log.info("tenant deleted id=%d name=%s", t["id"], t["name"])
        return {"deleted": t["name"]}

    def tenant_set(self, caller, p: Params):
        self._need_admin(caller, "tenant.set")
        ref = p.tenant()
        t = self._tenant(caller, ref)
        budget = self._budget(p, None, old=t)
        raw_rules = p.any("rules", None)
        rules = None if raw_rules is None else self._rules(raw_rules)
        p.end()
        with self.state.change():
            t = self._tenant(caller, ref)  # still there?
            if rules is not None:
                self._check_overlap(t["id"], rules)
                self.state.replace_rules(t["id"], rules)
            self.state.update_tenant(t["id"], **budget)
            self.plane.set_tenant(t["id"], {**t, **budget}, rules)
        return self._tenant_view(self.state.tenant(t["id"]))

    def tenant_list(self, caller, p: Params):
        p.end()
        return [self._tenant_view(t) for t in self._visible(caller)]

    def tenant_show(self, caller, p: Params):
        t = self._tenant(caller, p.tenant())
        p.end()
        return {**self._tenant_view(t), "stats": self._tenant_stats(t)}

    # ---- methods: programs

    def prog_load(self, caller, p: Params):
        ref = p.tenant()
        t = self._tenant(caller, ref)
        source = p.any("source")
        if not isinstance(source, str):
            raise invalid("source must be the program's C text (a string)")
        if len(source.encode()) > MAX_SOURCE:
            raise RpcFault(TOO_LARGE, f"program source is {len(source.encode())} bytes; the "
                           f"limit is {MAX_SOURCE} (256 KiB)")
        label = p.str("name", "handler", max_len=63)
        if not NAME_RE.match(label):
            raise invalid(f"name {label!r}: a letter, then letters, digits, '_', '.' or '-'")
        engine = p.str("engine", "aot", choices=ENGINES)
        function = p.str("function", None, max_len=128)
        loop_budget = p.int("loop_budget", None, lo=1, hi=1 << 20)
        p.end()
        program, loaded = self._build(source, label, engine, function, loop_budget)
        row = {"tenant": t["id"], "label": label, "source": source, "engine": engine,
               "function": program.function, "loop_budget": loop_budget,
               "source_sha256": _hash(source.encode()),
               "artifact_sha256": _hash(program.insns), "insns": program.n_insns,
               "bound_insns": program.bound_insns, "bound_cycles": program.bound_cycles,
               "loaded_at": round(time.time(), 3)}
        with self.state.change():
            # ids are reused after a delete: the same id and name may now be
            # another tenant, so the caller's right to it is checked again
            now = self.state.tenant(t["id"])
            if (now is None or now["name"] != t["name"] or now["owner_spec"] != t["owner_spec"]
                    or not (caller.admin or caller.owns(now))):
                raise RpcFault(NOT_FOUND, f"tenant {ref!r} was deleted during the build")
            self.state.put_program(row)
            self.plane.set_program(t["id"], loaded, self._bound_ns(program))
        self.restore_errors.pop(t["id"], None)
        log.info("program loaded tenant=%s name=%s engine=%s sha256=%s", t["name"], label, engine,
                 row["source_sha256"][:12])
        return self._prog_summary(t, row)

    def _bound_ns(self, program) -> int:
        return int(program.bound_cycles / self.plane.dp.tsc_hz * 1e9)

    def _build(self, source: str, label: str, engine: str, function, loop_budget):
        """Compile, verify in the kernel, relocate, bound, translate: the
        TenantProgram and its Installable, or -32001 with the verifier's own log."""
        from ebpf import engines
        from ebpf.errors import CompileError, ToolchainError, VerifierError
        from ebpf.toolchain import build

        build_root = Path(self.cfg.state_dir) / "build"
        build_root.mkdir(exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(dir=build_root))
        try:
            path = tmp / f"{label}.c"
            path.write_text(source)
            with self._compile_lock:
                try:
                    program = build(path, name=function, loop_budget=loop_budget)
                except VerifierError as e:
                    raise RpcFault(REJECTED, str(e), {"reason": e.reason, "log": e.log}) from None
                except CompileError as e:
                    raise RpcFault(REJECTED, str(e), {"reason": str(e), "log": e.log}) from None
                except ToolchainError as e:
                    raise RpcFault(REJECTED, str(e), {"reason": str(e), "log": ""}) from None
                try:
                    if engine == "aot":
                        got = engines.load_aot(program)
                        loaded = Installable(got.aot, got.maps, program.maps)
                    else:
                        got = engines.load_interp(program)
                        loaded = Installable(got.vm, got.maps, program.maps)
                finally:
                    if program.bpf is not None:  # the kernel copy proved it; free it
                        program.bpf.cleanup()
            return program, loaded
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def prog_unload(self, caller, p: Params):
        ref = p.tenant()
        p.end()
        with self.state.change():
            t = self._tenant(caller, ref)  # still there, still the caller's?
            if self.state.program(t["id"]) is None:
                raise RpcFault(NOT_FOUND, f"tenant {t['name']!r} has no program")
            self.state.delete_program(t["id"])
            if t["id"] in self.plane.programs:
                self.plane.clear_program(t["id"])
        self.restore_errors.pop(t["id"], None)
        return {"unloaded": t["name"]}

    def prog_list(self, caller, p: Params):
        p.end()
        out = []
        for t in self._visible(caller):
            s = self._prog_summary(t, self.state.program(t["id"]))
            if s is not None:
                out.append(s)
        return out

    def prog_show(self, caller, p: Params):
        t = self._tenant(caller, p.tenant())
        p.end()
        row = self.state.program(t["id"])
        if row is None:
            raise RpcFault(NOT_FOUND, f"tenant {t['name']!r} has no program")
        return {**self._prog_summary(t, row), "source": row["source"]}

    # ---- methods: observation

    def stats(self, caller, p: Params):
        ref = p.any("tenant", None)
        p.end()
        tenants = [self._tenant(caller, ref)] if ref is not None else self._visible(caller)
        g = self.plane.dp.global_stats()
        glob = {"loops": g.loops, "busy_loops": g.busy_loops, "rx": g.rx,
                "malformed": g.malformed, "unknown": g.unknown, "stalls": g.stalls,
                "stall_cycles": g.stall_cycles, "busy_cycles": g.busy_cycles,
                "total_cycles": g.total_cycles, "tsc_hz": self.plane.dp.tsc_hz}
        if not caller.admin:  # what other tenants send is not a tenant's business
            glob = {k: glob[k] for k in ("stalls", "stall_cycles", "tsc_hz")}
        if ref is not None:
            rows = [self._tenant_stats(t) for t in tenants]
        else:
            rows = []
            for t in tenants:
                try:
                    rows.append(self._tenant_stats(t))
                except NotFoundError:
                    pass  # deleted since the list was read
        return {"tenants": rows, "global": glob,
                "uptime_s": round(time.time() - self.started, 3)}

    def slowpath_info(self, caller, p: Params):
        t = self._tenant(caller, p.tenant())
        p.end()
        hub = self.plane.slowpath
        path = None
        if hub is not None:
            path = str(hub.path(t["name"]))
        if path is None:
            path = str(Path(self.cfg.state_dir) / "slowpath" / f"{t['name']}.sock")
        return {"path": path, "available": hub is not None}

    # ---- start-up

    def restore(self) -> None:
        """Puts every tenant, rule and program of the state back into the
        datapath, each program re-built and re-verified in the kernel."""
        # scratch sources of builds a kill interrupted
        shutil.rmtree(Path(self.cfg.state_dir) / "build", ignore_errors=True)
        tenants = self.state.tenants()
        for t in tenants:
            self.plane.add_tenant(t)
        for row in self.state.programs():
            t = next(x for x in tenants if x["id"] == row["tenant"])
            try:
                program, loaded = self._build(row["source"], row["label"], row["engine"],
                                              row["function"], row["loop_budget"])
            except RpcFault as f:
                reason = (f.data or {}).get("reason", f.message)
                self.restore_errors[t["id"]] = f"rejected at restore: {reason}"
                log.error("restore: tenant %s program %s no longer verifies (%s); the tenant "
                          "runs its native handler %s", t["name"], row["label"], reason,
                          t["handler"])
                continue
            if _hash(program.insns) != row["artifact_sha256"]:
                log.warning("restore: tenant %s program %s builds to different bytecode now "
                            "(toolchain changed); recorded", t["name"], row["label"])
                with self.state.change():
                    self.state.put_program({**row, "artifact_sha256": _hash(program.insns)})
            self.plane.set_program(t["id"], loaded, self._bound_ns(program))
        log.info("restored tenants=%d programs=%d", len(tenants), len(self.plane.programs))
