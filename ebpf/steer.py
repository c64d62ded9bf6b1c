"""Steer: the XDP program that hands tenant traffic to AF_XDP sockets.

`Steer(ifname, netns=None, mode="skb")` compiles ebpf/kernel/steer.c with
bcc, proves it with the kernel verifier, and attaches it to `ifname` (inside
the network namespace `netns` when given). Frames that match a steering rule
(IPv4 UDP/TCP; `add_rule`) go to the AF_XDP socket bound on their receive
queue through the XSKMAP `xsks` (`xsks_map_fd`, `bind_xsk`); with no socket
bound on that queue they fall back to the kernel (XDP_PASS). ARP, ICMP and
everything else always go to the kernel. `stats()` reads the per-action
counters (each frame is counted exactly once; `queue_stats()` counts them by
receive queue):

    redirected     matched a rule, handed to an AF_XDP socket
    fallback       matched a rule, but no socket on its queue: passed
    passed_arp     ARP
    passed_icmp    IPv4 ICMP
    passed_other   everything else (IPv6, other protocols, IPv4 fragments,
                   UDP/TCP matching no rule)
    malformed      truncated/inconsistent Ethernet, IPv4, UDP or TCP headers
                   (passed: the kernel drops and counts them itself)

Attach modes: "skb" (generic XDP, the default: AF_XDP then runs in copy
mode, which every driver supports), "native" (driver XDP; veth has it),
"auto" (native, else skb). `Steer.mode` says which one is in use.

OWNERSHIP OF THE INTERFACE'S XDP SLOT
  isolane only ever removes XDP programs named `isolane_steer` (the kernel's
  name of this program). On start, a program of that name already attached
  to the interface, in any mode, is a leftover of an isolane that stopped
  without detaching (a crash, SIGKILL) and is removed before attaching. Any
  other program is someone else's: Steer raises `ForeignProgramError` and
  leaves it, unless `replace_foreign=True`. The attach itself uses
  XDP_FLAGS_UPDATE_IF_NOEXIST, so a program attached in between is never
  replaced silently. `detach()` (also `close()`, the context manager's exit,
  garbage collection and interpreter exit) removes the program only while the
  interface still runs the very program this Steer attached (by program id).

Pinning: with `pin_dir` (a directory on bpffs, e.g. /sys/fs/bpf/isolane/eth0)
the maps `xsks`, `steer_rules` and `steer_stats` are pinned there for other
processes (e.g. an AF_XDP datapath); stale pins of those names are replaced
on start and removed on detach (the directory too, when that empties it).

Needs CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN): in practice, root.
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import platform
import socket
import subprocess
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path

from datapath.errors import BackendError, ConfigError, NotFoundError

PROGRAM_NAME = "isolane_steer"
SOURCE = Path(__file__).resolve().parent / "kernel" / "steer.c"
INCLUDE_DIR = Path(__file__).resolve().parent / "include"

STAT_NAMES = ("redirected", "passed_arp", "passed_icmp", "passed_other", "malformed", "fallback")

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
# IFLA_XDP_ATTACHED values, as `ip -j link` reports them in "mode"
XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW = 1, 2, 3
_FLAGS_OF_ATTACHED = {XDP_ATTACHED_DRV: XDP_FLAGS_DRV_MODE, XDP_ATTACHED_SKB: XDP_FLAGS_SKB_MODE,
                      XDP_ATTACHED_HW: XDP_FLAGS_HW_MODE}
_MODE_NAMES = {XDP_ATTACHED_DRV: "native", XDP_ATTACHED_SKB: "skb", XDP_ATTACHED_HW: "offload"}
_IP_OFF_WORD = {XDP_ATTACHED_DRV: "xdpdrv", XDP_ATTACHED_SKB: "xdpgeneric", XDP_ATTACHED_HW: "xdpoffload"}

_PROTOS = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}
_BPFFS_MAGIC = 0xCAFE4A11
_CLONE_NEWNET = 0x40000000
_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_OBJ_PIN = 6
_BPF_OBJ_GET_INFO_BY_FD = 15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SteerError(BackendError):
    """The steering program could not be loaded, attached or detached."""


class NotPrivilegedError(SteerError):
    """The process lacks CAP_NET_ADMIN / CAP_BPF."""


class NoSuchInterfaceError(SteerError):
    """The interface (or the network namespace) does not exist."""


class BpffsMissingError(SteerError):
    """`pin_dir` is not on a mounted bpf filesystem."""


class ForeignProgramError(SteerError):
    """Another (non-isolane) XDP program is attached to the interface."""


# -- small system helpers ---------------------------------------------------

def _check_privileges() -> None:
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        cap_eff = ~0 if os.geteuid() == 0 else 0
    net_admin = cap_eff >> 12 & 1
    bpf = cap_eff >> 39 & 1 or cap_eff >> 21 & 1  # CAP_BPF, or CAP_SYS_ADMIN on its own
    if not (net_admin and bpf):
        raise NotPrivilegedError(
            "attaching XDP needs CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN): run isolane as root "
            "(sudo), or grant those capabilities to the process")


@contextmanager
def _in_netns(netns: str | None):
    """Runs the body with this thread in `netns` (a name under /var/run/netns
    or a path such as /proc/PID/ns/net); sockets (netlink included) and
    child processes made inside belong to it. None: stay where we are."""
    if netns is None:
        yield
        return
    path = netns if "/" in netns else f"/var/run/netns/{netns}"
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NoSuchInterfaceError(
            f"network namespace {netns!r} not found ({path}): create it (ip netns add {netns}) "
            "or pass the namespace the interface lives in") from None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            if err == 1:  # EPERM
                raise NotPrivilegedError(f"cannot enter network namespace {netns!r}: run as root")
            raise SteerError(f"cannot enter network namespace {netns!r}: {os.strerror(err)}", errno=err)
        try:
            yield
        finally:
            if _libc.setns(home, _CLONE_NEWNET) != 0:  # never go on in the wrong namespace
                err = ctypes.get_errno()
                raise SteerError(f"cannot return from network namespace {netns!r}: {os.strerror(err)}",
                                 errno=err)
    finally:
        os.close(target)
        os.close(home)


def _where(ifname: str, netns: str | None) -> str:
    return f"{ifname!r}" + (f" in netns {netns!r}" if netns else "")


def _ifindex(ifname: str, netns: str | None) -> int:
    """The interface's index; call inside its namespace."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NoSuchInterfaceError(
            f"no interface {_where(ifname, netns)}: check the name with `ip link`"
            + (f" (`ip -n {netns} link`)" if netns else "")) from None


def attached_programs(ifname: str, netns: str | None = None) -> list[dict]:
    """The XDP programs attached to `ifname`, as
    [{"mode": "skb"|"native"|"offload", "attached": 1|2|3, "id": int, "name": str}].
    Read with `ip -j -d link show`, which names the programs."""
    with _in_netns(netns):
        _ifindex(ifname, netns)
        return _attached_here(ifname, netns)


def _attached_here(ifname: str, netns: str | None) -> list[dict]:
    try:
        proc = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", ifname],
                              capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise SteerError("`ip` (iproute2) not found: apt-get install iproute2") from None
    if proc.returncode != 0:
        if "does not exist" in proc.stderr:
            raise NoSuchInterfaceError(f"no interface {_where(ifname, netns)}")
        raise SteerError(f"ip link show {ifname}: {proc.stderr.strip()}")
    links = json.loads(proc.stdout or "[]")
    xdp = links[0].get("xdp") if links else None
    if not xdp:
        return []
    entries = xdp.get("attached") or [{"mode": xdp.get("mode"), "prog": xdp.get("prog", {})}]
    out = []
    for e in entries:
        prog = e.get("prog") or {}
        mode = e.get("mode")
        out.append({"mode": _MODE_NAMES.get(mode, str(mode)), "attached": mode,
                    "id": prog.get("id"), "name": prog.get("name", "")})
    return out


def _bpf_syscall(cmd: int, attr) -> int:
    nr = _SYSCALL_BPF.get(platform.machine())
    if nr is None:
        raise SteerError(f"bpf(2) syscall number unknown on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    return -ctypes.get_errno() if ret < 0 else ret


def _prog_id(fd: int) -> int:
    """The kernel's id of the loaded program behind `fd`."""
    info = (ctypes.c_uint32 * 2)()  # bpf_prog_info: type, id (a prefix is enough)

    class Attr(ctypes.Structure):
        _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]

    attr = Attr(fd, ctypes.sizeof(info), ctypes.addressof(info))
    ret = _bpf_syscall(_BPF_OBJ_GET_INFO_BY_FD, attr)
    if ret < 0:
        raise SteerError(f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(-ret)}", errno=-ret)
    return info[1]


def _pin(fd: int, path: Path) -> None:
    class Attr(ctypes.Structure):
        _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                    ("file_flags", ctypes.c_uint32)]

    name = ctypes.create_string_buffer(os.fsencode(path))
    ret = _bpf_syscall(_BPF_OBJ_PIN, Attr(ctypes.addressof(name), fd, 0))
    if ret < 0:
        raise SteerError(f"pinning {path}: {os.strerror(-ret)}", errno=-ret)


def _check_bpffs(path: Path) -> None:
    """Raises BpffsMissingError unless `path` (or, if it does not exist yet,
    its nearest existing parent) lies on a bpf filesystem."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    probe = probe.resolve()
    best, fstype = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        if (str(probe) == mnt or str(probe).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, fields[2]
    if fstype != "bpf":
        raise BpffsMissingError(
            f"{path} is not on a bpf filesystem (it is on {best or '?'}, type {fstype or '?'}): "
            "mount one with `mount -t bpf bpf /sys/fs/bpf` and pin below it")


def _remove_xdp(ifname: str, attached_mode: int) -> None:
    """Removes the program attached in `attached_mode`; call inside the netns."""
    from bcc.libbcc import lib

    flags = _FLAGS_OF_ATTACHED.get(attached_mode, 0)
    if lib.bpf_attach_xdp(ifname.encode(), -1, flags) < 0:
        err = ctypes.get_errno()
        raise SteerError(f"removing the XDP program from {ifname!r}: {os.strerror(err)}; "
                         f"remove it by hand: ip link set dev {ifname} "
                         f"{_IP_OFF_WORD.get(attached_mode, 'xdp')} off", errno=err)


def _detach_if_ours(ifname: str, netns: str | None, prog_id: int) -> bool:
    """Removes program `prog_id` from the interface if it is still there.
    Returns whether it removed it. Never raises for a vanished interface or
    namespace (nothing is left to clean then)."""
    try:
        with _in_netns(netns):
            for prog in _attached_here(ifname, netns):
                if prog["id"] == prog_id:
                    _remove_xdp(ifname, prog["attached"])
                    return True
    except NoSuchInterfaceError:
        pass
    return False


def _finalize(ifname, netns, prog_id, bpf, pins, pin_dir) -> None:
    """The detach that runs once per Steer: explicitly, on garbage collection
    or at interpreter exit (weakref.finalize); never raises at exit."""
    try:
        _detach_if_ours(ifname, netns, prog_id)
    except Exception as exc:  # at interpreter exit there is nobody to raise to
        print(f"isolane: steer detach from {ifname!r} failed: {exc}", file=sys.stderr)
    finally:
        for p in pins:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        if pin_dir is not None:
            try:
                pin_dir.rmdir()  # only when empty: other pins stay
            except OSError:
                pass
        try:
            bpf.cleanup()
        except Exception:
            pass


# -- the steering program -----------------------------------------------------

class Steer:
    """The steering XDP program attached to one interface; see the module doc.

    Raises NotPrivilegedError (not root), NoSuchInterfaceError (interface or
    namespace missing), BpffsMissingError (`pin_dir` not on bpffs),
    ForeignProgramError (someone else's XDP program on the interface) or
    SteerError (compile, verifier or attach failure); all are BackendError.
    """

    MODES = ("skb", "native", "auto")

    def __init__(self, ifname: str, netns: str | None = None, mode: str = "skb",
                 pin_dir: str | os.PathLike | None = None, replace_foreign: bool = False):
        if mode not in self.MODES:
            raise ConfigError(f"mode must be one of {', '.join(self.MODES)}, not {mode!r}")
        self.ifname = ifname
        self.netns = netns
        self.mode: str | None = None
        self.prog_id: int | None = None
        self.removed_stale: list[dict] = []
        self._finalizer = None
        _check_privileges()
        pin_path = Path(pin_dir) if pin_dir is not None else None
        if pin_path is not None:
            _check_bpffs(pin_path)
        with _in_netns(netns):
            self.ifindex = _ifindex(ifname, netns)

        self._bpf = self._load()
        fn = self._fn
        pins: list[Path] = []
        try:
            self.prog_id = _prog_id(fn.fd)
            with _in_netns(netns):
                self._clear_slot(replace_foreign)
                self.mode = self._attach(fn, mode)
            self._finalizer = weakref.finalize(self, _finalize, ifname, netns, self.prog_id,
                                               self._bpf, pins, pin_path)
            if pin_path is not None:
                pin_path.mkdir(parents=True, exist_ok=True)
                for name in ("xsks", "steer_rules", "steer_stats"):
                    p = pin_path / name
                    if p.exists():
                        p.unlink()  # a leftover of an earlier run
                    _pin(self._bpf[name.encode()].map_fd, p)
                    pins.append(p)
        except BaseException:
            if self._finalizer is not None:
                self._finalizer()
            else:
                self._bpf.cleanup()
            raise
        self.pin_dir = pin_path

    # -- loading and attaching

    def _load(self):
        try:
            from bcc import BPF
        except ImportError:
            raise SteerError("bcc is not installed: apt-get install python3-bpfcc") from None
        try:
            bpf = BPF(src_file=str(SOURCE).encode(),
                      cflags=[f"-I{INCLUDE_DIR}", "-Wno-unused-function"])
        except Exception as exc:  # bcc raises a bare Exception; clang's messages went to stderr
            raise SteerError(f"compiling {SOURCE.name} failed: {exc}") from exc
        try:
            self._fn = bpf.load_func(PROGRAM_NAME.encode(), BPF.XDP)
        except Exception as exc:  # the verifier's log went to stderr
            bpf.cleanup()
            raise SteerError(f"the kernel refused {PROGRAM_NAME}: {exc}") from exc
        return bpf

    def _clear_slot(self, replace_foreign: bool) -> None:
        """Removes leftovers of isolane (and, if asked, foreign programs)."""
        for prog in _attached_here(self.ifname, self.netns):
            if prog["name"] != PROGRAM_NAME and not replace_foreign:
                word = _IP_OFF_WORD.get(prog["attached"], "xdp")
                raise ForeignProgramError(
                    f"interface {_where(self.ifname, self.netns)} already runs XDP program "
                    f"{prog['name'] or '?'!r} (id {prog['id']}, {prog['mode']} mode), which isolane "
                    f"did not attach: remove it (ip link set dev {self.ifname} {word} off) or pass "
                    "replace_foreign=True")
            _remove_xdp(self.ifname, prog["attached"])
            self.removed_stale.append(prog)

    def _attach(self, fn, mode: str) -> str:
        from bcc.libbcc import lib

        tries = {"skb": [("skb", XDP_FLAGS_SKB_MODE)], "native": [("native", XDP_FLAGS_DRV_MODE)],
                 "auto": [("native", XDP_FLAGS_DRV_MODE), ("skb", XDP_FLAGS_SKB_MODE)]}[mode]
        err = 0
        for name, flags in tries:
            if lib.bpf_attach_xdp(self.ifname.encode(), fn.fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST) == 0:
                return name
            err = ctypes.get_errno()
        if err == 17:  # EEXIST: attached between our check and our attach
            raise ForeignProgramError(
                f"interface {_where(self.ifname, self.netns)} got another XDP program while "
                "isolane was attaching: see `ip link show` and retry", errno=err)
        hint = " (the driver has no native XDP: use mode='skb')" if mode == "native" else ""
        raise SteerError(f"attaching {PROGRAM_NAME} to {_where(self.ifname, self.netns)} in {mode} "
                         f"mode failed: {os.strerror(err)}{hint}", errno=err)

    # -- the rest of the API

    @property
    def attached(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive

    def _live(self):
        if not self.attached:
            raise SteerError(f"{self!r}: detached, its maps are gone: start a new Steer")
        return self._bpf

    @property
    def xsks_map_fd(self) -> int:
        """The fd of the XSKMAP `xsks` (index: receive queue, value: AF_XDP socket fd)."""
        return self._live()[b"xsks"].map_fd

    def bind_xsk(self, queue: int, xsk_fd: int) -> None:
        """Steers queue `queue` to the bound AF_XDP socket `xsk_fd`."""
        from bcc.libbcc import lib

        key, value = ctypes.c_uint32(queue), ctypes.c_uint32(xsk_fd)
        if lib.bpf_update_elem(self.xsks_map_fd, ctypes.byref(key), ctypes.byref(value), 0) < 0:
            err = ctypes.get_errno()
            raise SteerError(f"xsks[{queue}] = socket {xsk_fd}: {os.strerror(err)} (the socket must "
                             "be an AF_XDP socket bound to this interface and queue)", errno=err)

    def bind_xsks(self, fds: dict[int, int]) -> None:
        """Steers each queue to its socket: {queue: AF_XDP socket fd}, as
        Datapath.afxdp_fds() gives them."""
        for queue, fd in fds.items():
            self.bind_xsk(queue, fd)

    def unbind_xsk(self, queue: int) -> None:
        """Queue `queue`'s steered frames go to the kernel again."""
        from bcc.libbcc import lib

        key = ctypes.c_uint32(queue)
        lib.bpf_delete_elem(self.xsks_map_fd, ctypes.byref(key))

    @staticmethod
    def _key(table, daddr, proto, dport):
        if daddr is None:
            addr = 0
        else:
            try:
                packed = ipaddress.IPv4Address(daddr).packed
            except ValueError as exc:
                raise ConfigError(f"daddr must be an IPv4 address: {exc}") from None
            addr = int.from_bytes(packed, sys.byteorder)  # stored in network order
        if proto is None:
            p = 0
        elif isinstance(proto, str) and proto.lower() in _PROTOS:
            p = _PROTOS[proto.lower()]
        elif proto in _PROTOS.values():
            p = proto
        else:
            raise ConfigError(f"proto must be 'udp', 'tcp', 17, 6 or None, not {proto!r}")
        if dport is None:
            port = 0
        elif isinstance(dport, int) and 1 <= dport <= 65535:
            port = socket.htons(dport)
        else:
            raise ConfigError(f"dport must be a port 1..65535 or None, not {dport!r}")
        return table.Key(addr, p, 0, port)

    def add_rule(self, daddr=None, proto=None, dport=None, tag: int = 0) -> None:
        """Steers IPv4 frames to `daddr` (None: any), `proto` ('udp', 'tcp';
        None: both), `dport` (None: any). add_rule() with no argument steers
        all IPv4 UDP and TCP. `tag` (u32) is kept for user space."""
        table = self._live()[b"steer_rules"]
        key = self._key(table, daddr, proto, dport)
        try:
            table[key] = table.Leaf(tag)
        except Exception as exc:
            raise ConfigError(f"steer_rules is full or refused the rule: {exc}") from exc

    def steer_all(self) -> None:
        """The catch-all rule: every IPv4 UDP and TCP frame is steered."""
        self.add_rule()

    def remove_rule(self, daddr=None, proto=None, dport=None) -> None:
        table = self._live()[b"steer_rules"]
        key = self._key(table, daddr, proto, dport)
        try:
            del table[key]
        except KeyError:
            raise NotFoundError(f"no steering rule ({daddr}, {proto}, {dport})") from None

    def rules(self) -> list[dict]:
        """The rules, as {"daddr", "proto", "dport", "tag"} (None = any)."""
        out = []
        for k, v in self._live()[b"steer_rules"].items():
            out.append({
                "daddr": str(ipaddress.IPv4Address(k.daddr.to_bytes(4, sys.byteorder))) if k.daddr else None,
                "proto": {6: "tcp", 17: "udp"}.get(k.proto) if k.proto else None,
                "dport": socket.ntohs(k.dport) or None,
                "tag": v.value,
            })
        return out

    def stats(self) -> dict[str, int]:
        """The counters, summed over CPUs; see the module doc."""
        table = self._live()[b"steer_stats"]
        return {name: int(table.sum(table.Key(i)).value) for i, name in enumerate(STAT_NAMES)}

    def queue_stats(self) -> dict[int, dict[str, int]]:
        """Per receive queue that saw traffic: {"seen": frames, "redirected":
        of those, handed to the queue's AF_XDP socket}, summed over CPUs."""
        table = self._live()[b"steer_queue_stats"]
        out = {}
        for q in range(len(table) // 2):
            seen = int(table.sum(table.Key(2 * q)).value)
            if seen:
                out[q] = {"seen": seen, "redirected": int(table.sum(table.Key(2 * q + 1)).value)}
        return out

    def reset_stats(self) -> None:
        self._live()[b"steer_stats"].zero()
        self._live()[b"steer_queue_stats"].zero()

    def detach(self) -> None:
        """Removes the program (if the interface still runs this one), unpins
        the maps and frees the program. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()

    close = detach

    def __enter__(self) -> "Steer":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __repr__(self) -> str:
        state = f"{self.mode} mode, prog id {self.prog_id}" if self.attached else "detached"
        return f"Steer({_where(self.ifname, self.netns)}, {state})"
