"""The experiment testbed: a load-generator namespace and an isolane-host
namespace joined by veth pairs, made with pyroute2.

    tb = Testbed(TestbedConfig.load())      # control/testbed.toml, or --config
    tb.up()       # makes or repairs everything; idempotent; returns UpResult
    tb.status()   # what is there (links, queues, addresses, neighbours, XDP)
    tb.down()     # removes what up made, and nothing else; idempotent

What the testbed makes is marked twice: every name starts with the config's
`prefix` (`isl-` by default), and `up` records the names in a state file
(`/run/isolane/testbed.json` by default) before it makes them, so `down`
also finds what an older config made. Nothing is added to the root
namespace: each veth pair is created with its ends directly in the two
namespaces, and the addresses must be private.
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, field

from datapath.errors import ConfigError, IsolaneError

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().with_name("testbed.toml")
NETNS_DIR = pathlib.Path("/run/netns")
IFNAMSIZ = 15          # usable characters of an interface name
CAP_NET_ADMIN = 12
NUD_PERMANENT = 0x80
NEEDS_ROOT = "the testbed needs root (CAP_NET_ADMIN)"

_NUD_NAMES = {0x01: "incomplete", 0x02: "reachable", 0x04: "stale", 0x08: "delay",
              0x10: "probe", 0x20: "failed", 0x40: "noarp", 0x80: "permanent"}


class TestbedError(IsolaneError):
    """The testbed could not be made, inspected or removed."""


class TestbedConfigError(TestbedError, ConfigError):
    """A testbed config the testbed refuses (unknown key, bad value)."""


# --------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TestbedConfig:
    """The testbed's config; the defaults are those of control/testbed.toml."""

    __test__ = False  # not a pytest class

    prefix: str = "isl-"
    generator: str = "gen"
    isolane: str = "host"
    pairs: int = 1
    queues: int = 1
    mtu: int = 1500
    subnet: str = "10.99.0.0/16"
    pair_prefixlen: int = 24
    static_neighbours: bool = True
    ipv6: bool = False
    state_file: str = "/run/isolane/testbed.json"

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "TestbedConfig":
        """The config in `path`; without one, the shipped testbed.toml (or the
        built-in defaults when it is not installed)."""
        if path is None:
            if not DEFAULT_CONFIG.is_file():
                return cls().validated()
            path = DEFAULT_CONFIG
        path = pathlib.Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise TestbedConfigError(f"cannot read the testbed config {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise TestbedConfigError(f"{path} is not valid TOML: {e}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "the testbed config") -> "TestbedConfig":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise TestbedConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(fields)})")
        kwargs = {}
        for name, value in data.items():
            default = fields[name].default
            want = type(default)
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise TestbedConfigError(f"{source}: {name} must be an integer, not {value!r}")
            if want is not int and not isinstance(value, want):
                raise TestbedConfigError(
                    f"{source}: {name} must be a {want.__name__}, not {value!r}")
            kwargs[name] = value
        return cls(**kwargs).validated(source)

    def validated(self, source: str = "the testbed config") -> "TestbedConfig":
        def bad(msg):
            raise TestbedConfigError(f"{source}: {msg}")

        for key in ("prefix", "generator", "isolane"):
            value = getattr(self, key)
            if not value or any(c in value for c in "/ \t\n\0") or value in (".", ".."):
                bad(f"{key} {value!r} is not usable in a namespace or link name")
        if self.generator == self.isolane:
            bad("generator and isolane must name different namespaces")
        if self.generator.startswith(self.isolane) or self.isolane.startswith(self.generator):
            bad("generator and isolane must not be prefixes of each other (link names would clash)")
        if not 1 <= self.pairs <= 64:
            bad(f"pairs must be 1..64, not {self.pairs}")
        if not 1 <= self.queues <= 256:
            bad(f"queues must be 1..256, not {self.queues}")
        if not 68 <= self.mtu <= 65535:
            bad(f"mtu must be 68..65535, not {self.mtu}")
        longest = max(len(self.link_name(self.generator, self.pairs - 1)),
                      len(self.link_name(self.isolane, self.pairs - 1)))
        if longest > IFNAMSIZ:
            bad(f"link names would be {longest} characters long (at most {IFNAMSIZ}): "
                "shorten prefix, generator or isolane")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as e:
            bad(f"subnet {self.subnet!r}: {e}")
        if not net.is_private or net.is_loopback or net.is_link_local or net.is_multicast:
            bad(f"subnet {self.subnet} is not a private range (use e.g. 10.99.0.0/16): "
                "the testbed must not use routable addresses")
        if not net.prefixlen <= self.pair_prefixlen <= 30:
            bad(f"pair_prefixlen must be {net.prefixlen}..30 (inside subnet {self.subnet})")
        if self.pairs > 2 ** (self.pair_prefixlen - net.prefixlen):
            bad(f"subnet {self.subnet} has room for only "
                f"{2 ** (self.pair_prefixlen - net.prefixlen)} /{self.pair_prefixlen} pairs")
        return self

    # Names -----------------------------------------------------------------

    def link_name(self, side: str, index: int) -> str:
        return f"{self.prefix}{side}{index}"

    @property
    def gen_ns(self) -> str:
        return self.prefix + self.generator

    @property
    def host_ns(self) -> str:
        return self.prefix + self.isolane

    @property
    def namespaces(self) -> list[str]:
        return [self.gen_ns, self.host_ns]

    def pair_specs(self) -> list["PairSpec"]:
        net = ipaddress.IPv4Network(self.subnet)
        subnets = net.subnets(new_prefix=self.pair_prefixlen)
        specs = []
        for i in range(self.pairs):
            sub = next(subnets)
            first, second = sub[1], sub[2]
            specs.append(PairSpec(
                index=i,
                gen=End(self.gen_ns, self.link_name(self.generator, i),
                        _mac(i, 1), f"{first}/{sub.prefixlen}"),
                host=End(self.host_ns, self.link_name(self.isolane, i),
                         _mac(i, 2), f"{second}/{sub.prefixlen}"),
                mtu=self.mtu, queues=self.queues))
        return specs

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mac(index: int, side: int) -> str:
    """Fixed, locally administered unicast MACs, so a generator can write
    frames without asking: 02:69:73:00:<pair>:01 (generator) / :02 (isolane)."""
    return f"02:69:73:00:{index:02x}:{side:02x}"


@dataclass(frozen=True)
class End:
    """One end of a veth pair: its namespace, name, MAC and address."""

    netns: str
    ifname: str
    mac: str
    address: str     # "10.99.0.1/24"

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True)
class PairSpec:
    index: int
    gen: End
    host: End
    mtu: int
    queues: int

    def ends(self):
        return ((self.gen, self.host), (self.host, self.gen))


# --------------------------------------------------------------------------
# Results


@dataclass
class UpResult:
    actions: list[str] = field(default_factory=list)   # empty: was already up to date
    status: "TestbedStatus | None" = None

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def as_dict(self) -> dict:
        return {"changed": self.changed, "actions": list(self.actions),
                "status": self.status.as_dict() if self.status else None}


@dataclass
class DownResult:
    removed: list[str] = field(default_factory=list)    # empty: nothing was there
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def as_dict(self) -> dict:
        return {"changed": self.changed, "removed": list(self.removed),
                "warnings": list(self.warnings)}


@dataclass
class TestbedStatus:
    __test__ = False

    up: bool                       # everything the config asks for is there, as asked
    problems: list[str]            # how it differs from the config (empty when up)
    namespaces: list[dict]         # {"name", "exists", "links": [...], "neighbours": [...]}
    pairs: list[dict]              # the configured pairs (names, MACs, addresses)
    config: dict
    state_file: str
    state: dict | None             # the state file's content, if any

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# The testbed


def has_net_admin() -> bool:
    """Whether this process holds CAP_NET_ADMIN (effective)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


class Testbed:
    """Makes, inspects and removes the testbed a `TestbedConfig` describes."""

    __test__ = False

    def __init__(self, config: TestbedConfig | None = None):
        self.config = config or TestbedConfig.load()
        self.state_path = pathlib.Path(self.config.state_file)

    # Public API --------------------------------------------------------------

    def up(self) -> UpResult:
        """Makes the testbed, or repairs and converges an existing one to the
        config. Running it again changes nothing (`UpResult.actions` is empty)."""
        self._require_root()
        cfg = self.config
        actions: list[str] = []
        try:
            # Forget (remove) what an older config made that this one does not
            # ask for, then mark what this one will make before making it.
            old = self._read_state()
            if old:
                keep = set(cfg.namespaces)
                for ns in old.get("namespaces", []):
                    if ns not in keep and ns.startswith(old.get("prefix") or "\0") and _netns_exists(ns):
                        self._remove_netns(ns)
                        actions.append(f"removed namespace {ns} (no longer in the config)")
            self._write_state()

            from pyroute2 import netns

            for ns in cfg.namespaces:
                if not _netns_exists(ns):
                    netns.create(ns)
                    actions.append(f"created namespace {ns}")
            for ns in cfg.namespaces:
                actions += self._setup_netns(ns)
            specs = cfg.pair_specs()
            with self._ipr(cfg.gen_ns) as gen, self._ipr(cfg.host_ns) as host:
                ipr = {cfg.gen_ns: gen, cfg.host_ns: host}
                actions += self._remove_stray_links(ipr, specs)
                for spec in specs:
                    actions += self._ensure_pair(ipr, spec)
                for spec in specs:
                    for end, peer in spec.ends():
                        actions += self._converge_end(ipr[end.netns], end, peer, spec)
        except TestbedError:
            raise
        except OSError as e:
            raise TestbedError(f"testbed up failed: {e}", getattr(e, "errno", None)) from e
        except Exception as e:  # pyroute2's NetlinkError is an Exception with .code
            raise TestbedError(f"testbed up failed: {e}") from e
        return UpResult(actions, self.status())

    def down(self) -> DownResult:
        """Removes the testbed's namespaces (with their links) and any of its
        veth ends left in the root namespace, and the state file. Touches
        nothing whose name does not start with the prefix; idempotent."""
        self._require_root()
        cfg = self.config
        result = DownResult()
        names = list(cfg.namespaces)
        links = [e.ifname for s in cfg.pair_specs() for e in (s.gen, s.host)]
        state = self._read_state()
        if state:
            prefix = state.get("prefix") or "\0"
            names += [n for n in state.get("namespaces", []) if n.startswith(prefix)]
            links += [n for n in state.get("links", []) if n.startswith(prefix)]
        try:
            from pyroute2 import netns

            for ns in dict.fromkeys(names):
                if not _netns_exists(ns):
                    continue
                with contextlib.suppress(Exception):
                    if netns.ns_pids().get(ns):
                        result.warnings.append(
                            f"processes still run in {ns} (pids {', '.join(map(str, netns.ns_pids()[ns]))}): "
                            "its links live on until they exit")
                self._remove_netns(ns)
                result.removed.append(f"namespace {ns}")
            # Ends stranded in the root namespace (e.g. by a crash of another tool).
            from pyroute2 import IPRoute

            with IPRoute() as root:
                for name in dict.fromkeys(links):
                    idx = root.link_lookup(ifname=name)
                    if idx and self._kind(root.link("get", index=idx[0])[0]) == "veth":
                        root.link("del", index=idx[0])
                        result.removed.append(f"link {name} (root namespace)")
        except OSError as e:
            raise TestbedError(f"testbed down failed: {e}", getattr(e, "errno", None)) from e
        except Exception as e:
            raise TestbedError(f"testbed down failed: {e}") from e
        if self.state_path.exists():
            self.state_path.unlink()
            result.removed.append(f"state file {self.state_path}")
        return result

    def status(self) -> TestbedStatus:
        """What is there now, and how it differs from the config."""
        self._require_root()
        cfg = self.config
        specs = cfg.pair_specs()
        namespaces = []
        for ns in cfg.namespaces:
            entry = {"name": ns, "exists": _netns_exists(ns), "links": [], "neighbours": []}
            if entry["exists"]:
                try:
                    with self._ipr(ns) as ipr:
                        entry["links"] = self._links(ipr)
                        entry["neighbours"] = self._neighbours(ipr, entry["links"])
                except Exception as e:
                    raise TestbedError(f"cannot inspect namespace {ns}: {e}") from e
            namespaces.append(entry)
        problems = self._problems(namespaces, specs)
        pairs = [{"index": s.index, "mtu": s.mtu, "queues": s.queues,
                  "generator": dataclasses.asdict(s.gen), "isolane": dataclasses.asdict(s.host)}
                 for s in specs]
        return TestbedStatus(up=not problems, problems=problems, namespaces=namespaces,
                             pairs=pairs, config=cfg.as_dict(), state_file=str(self.state_path),
                             state=self._read_state())

    # State file ----------------------------------------------------------------

    def _read_state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None   # unreadable: the config's names still mark what is ours

    def _write_state(self) -> None:
        cfg = self.config
        state = {
            "version": 1,
            "prefix": cfg.prefix,
            "namespaces": cfg.namespaces,
            "links": [e.ifname for s in cfg.pair_specs() for e in (s.gen, s.host)],
            "config": cfg.as_dict(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path)

    # Helpers -------------------------------------------------------------------

    @staticmethod
    def _require_root() -> None:
        if not has_net_admin():
            raise TestbedError(NEEDS_ROOT)

    @staticmethod
    def _ipr(ns: str):
        from pyroute2 import IPRoute

        return IPRoute(netns=ns, flags=0)

    @staticmethod
    def _remove_netns(ns: str) -> None:
        from pyroute2 import netns

        netns.remove(ns)

    @staticmethod
    def _kind(msg) -> str | None:
        info = msg.get_attr("IFLA_LINKINFO")
        return info.get_attr("IFLA_INFO_KIND") if info else None

    def _setup_netns(self, ns: str) -> list[str]:
        """Loopback up and IPv6 as configured; returns what it changed."""
        actions = []
        with self._ipr(ns) as ipr:
            lo = ipr.link("get", ifname="lo")[0]
            if not lo["flags"] & 1:
                ipr.link("set", index=lo["index"], state="up")
                actions.append(f"{ns}: set lo up")
        want = "0" if self.config.ipv6 else "1"
        for key in ("all", "default"):
            path = f"net.ipv6.conf.{key}.disable_ipv6"
            if self._sysctl(ns, path) not in (None, want):
                self._sysctl(ns, path, want)
                actions.append(f"{ns}: {path}={want}")
        return actions

    @staticmethod
    def _sysctl(ns: str, key: str, value: str | None = None) -> str | None:
        """Reads (or writes) a sysctl inside `ns`, in a forked child: setns
        moves only the child, never this process."""
        path = "/proc/sys/" + key.replace(".", "/")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no Python-level cleanup, report through the pipe
            code = 1
            try:
                os.close(r)
                from pyroute2 import netns

                netns.setns(ns, flags=0)
                if value is not None:
                    with open(path, "w") as f:
                        f.write(value)
                with open(path) as f:
                    os.write(w, f.read().strip().encode())
                code = 0
            except BaseException:
                pass
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            out = f.read().decode()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            if value is None:
                return None      # no IPv6 in this kernel: nothing to converge
            raise TestbedError(f"cannot set {key}={value} in {ns}")
        return out

    def _remove_stray_links(self, ipr: dict, specs: list[PairSpec]) -> list[str]:
        """Removes veth ends with the testbed's prefix in its namespaces that
        the config no longer asks for (e.g. after `pairs` went down)."""
        cfg = self.config
        wanted = {e.ifname for s in specs for e in (s.gen, s.host)}
        actions = []
        for ns, sock in ipr.items():
            for msg in sock.link("dump"):
                name = msg.get_attr("IFLA_IFNAME")
                if name.startswith(cfg.prefix) and name not in wanted and self._kind(msg) == "veth":
                    with contextlib.suppress(Exception):   # gone with its peer already
                        sock.link("del", index=msg["index"])
                        actions.append(f"{ns}: removed link {name} (not in the config)")
        return actions

    @staticmethod
    def _nsid(sock, ns: str) -> int | None:
        """The id under which `sock`'s namespace knows namespace `ns`."""
        fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
        try:
            return sock.get_netnsid(fd=fd).get("nsid")
        except Exception:
            return None
        finally:
            os.close(fd)

    def _get(self, sock, name: str):
        idx = sock.link_lookup(ifname=name)
        return sock.link("get", index=idx[0])[0] if idx else None

    def _ensure_pair(self, ipr: dict, spec: PairSpec) -> list[str]:
        """Makes the veth pair, or remakes it when an end is missing, is not
        a veth, is paired with something else, or has other queue counts
        (fixed at creation)."""
        gsock, hsock = ipr[spec.gen.netns], ipr[spec.host.netns]
        g, h = self._get(gsock, spec.gen.ifname), self._get(hsock, spec.host.ifname)
        reason = None
        if g is None or h is None:
            reason = "missing"
        elif self._kind(g) != "veth" or self._kind(h) != "veth":
            reason = "not a veth"
        elif (g.get_attr("IFLA_LINK") != h["index"] or h.get_attr("IFLA_LINK") != g["index"]
              or g.get_attr("IFLA_LINK_NETNSID") != self._nsid(gsock, spec.host.netns)
              or h.get_attr("IFLA_LINK_NETNSID") != self._nsid(hsock, spec.gen.netns)):
            reason = "ends not paired with each other"
        elif any(m.get_attr(a) != spec.queues for m in (g, h)
                 for a in ("IFLA_NUM_TX_QUEUES", "IFLA_NUM_RX_QUEUES")):
            reason = f"queue count is not {spec.queues}"
        if reason is None:
            return []
        actions = []
        for sock, msg, end in ((gsock, g, spec.gen), (hsock, h, spec.host)):
            if msg is not None:
                with contextlib.suppress(Exception):   # may be gone with its peer
                    sock.link("del", index=msg["index"])
                actions.append(f"{end.netns}: removed link {end.ifname} ({reason})")
        peer_fd = os.open(NETNS_DIR / spec.host.netns, os.O_RDONLY)
        try:
            gsock.link(
                "add", ifname=spec.gen.ifname, kind="veth", address=spec.gen.mac, mtu=spec.mtu,
                num_tx_queues=spec.queues, num_rx_queues=spec.queues,
                peer={"ifname": spec.host.ifname, "net_ns_fd": peer_fd, "address": spec.host.mac,
                      "mtu": spec.mtu, "num_tx_queues": spec.queues, "num_rx_queues": spec.queues})
        finally:
            os.close(peer_fd)
        actions.append(f"created veth {spec.gen.netns}/{spec.gen.ifname} <-> "
                       f"{spec.host.netns}/{spec.host.ifname} "
                       f"(queues {spec.queues}, mtu {spec.mtu})")
        return actions

    def _converge_end(self, sock, end: End, peer: End, spec: PairSpec) -> list[str]:
        """MAC, MTU, up, the address (only the configured IPv4 one) and the
        permanent neighbour entry for the peer, on one end."""
        actions = []
        where = f"{end.netns}/{end.ifname}"
        msg = self._get(sock, end.ifname)
        idx = msg["index"]
        if msg.get_attr("IFLA_ADDRESS") != end.mac:
            sock.link("set", index=idx, address=end.mac)
            actions.append(f"{where}: set mac {end.mac}")
        if msg.get_attr("IFLA_MTU") != spec.mtu:
            sock.link("set", index=idx, mtu=spec.mtu)
            actions.append(f"{where}: set mtu {spec.mtu}")
        if msg["flags"] & 0x80:   # IFF_NOARP: ARP must keep working
            sock.link("set", index=idx, arp=True)
            actions.append(f"{where}: arp on")
        if not msg["flags"] & 1:
            sock.link("set", index=idx, state="up")
            actions.append(f"{where}: set up")
        ip, plen = end.address.split("/")
        have = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in sock.addr("dump", index=idx)
                if a["family"] == 2]
        for a, p in have:
            if (a, p) != (ip, int(plen)):
                sock.addr("del", index=idx, address=a, prefixlen=p)
                actions.append(f"{where}: removed address {a}/{p}")
        if (ip, int(plen)) not in have:
            sock.addr("add", index=idx, address=ip, prefixlen=int(plen))
            actions.append(f"{where}: added address {end.address}")
        perm = {n.get_attr("NDA_DST"): n for n in sock.neigh("dump", ifindex=idx, family=2)
                if n["state"] & NUD_PERMANENT}
        if self.config.static_neighbours:
            n = perm.pop(peer.ip, None)
            if n is None or n.get_attr("NDA_LLADDR") != peer.mac:
                sock.neigh("replace", dst=peer.ip, lladdr=peer.mac, ifindex=idx,
                           state=NUD_PERMANENT, family=2)
                actions.append(f"{where}: neighbour {peer.ip} lladdr {peer.mac} permanent")
        for dst in perm:
            sock.neigh("del", dst=dst, ifindex=idx, family=2)
            actions.append(f"{where}: removed neighbour {dst}")
        return actions

    # Inspection ------------------------------------------------------------

    def _links(self, sock) -> list[dict]:
        links = []
        for msg in sock.link("dump"):
            flags = msg["flags"]
            xdp = msg.get_attr("IFLA_XDP")
            prog = None
            if xdp is not None and xdp.get_attr("IFLA_XDP_ATTACHED"):
                prog = {"mode": xdp.get_attr("IFLA_XDP_ATTACHED"),
                        "prog_id": xdp.get_attr("IFLA_XDP_PROG_ID")}
                for attr, mode in (("IFLA_XDP_DRV_PROG_ID", "xdp"),
                                   ("IFLA_XDP_SKB_PROG_ID", "xdpgeneric"),
                                   ("IFLA_XDP_HW_PROG_ID", "xdpoffload")):
                    if xdp.get_attr(attr):
                        prog.setdefault("programs", []).append(
                            {"mode": mode, "prog_id": xdp.get_attr(attr)})
                prog["name"] = _prog_name(prog["prog_id"])
            links.append({
                "name": msg.get_attr("IFLA_IFNAME"),
                "index": msg["index"],
                "kind": self._kind(msg),
                "mac": msg.get_attr("IFLA_ADDRESS"),
                "mtu": msg.get_attr("IFLA_MTU"),
                "tx_queues": msg.get_attr("IFLA_NUM_TX_QUEUES"),
                "rx_queues": msg.get_attr("IFLA_NUM_RX_QUEUES"),
                "admin_up": bool(flags & 1),
                "state": (msg.get_attr("IFLA_OPERSTATE") or "unknown").lower(),
                "arp": not flags & 0x80,
                "peer_index": msg.get_attr("IFLA_LINK") if self._kind(msg) == "veth" else None,
                "addresses": [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                              for a in sock.addr("dump", index=msg["index"])],
                "xdp": prog,
            })
        return links

    @staticmethod
    def _neighbours(sock, links: list[dict]) -> list[dict]:
        names = {link["index"]: link["name"] for link in links}
        out = []
        for n in sock.neigh("dump", family=2):
            state = n["state"]
            out.append({
                "dev": names.get(n["ifindex"], n["ifindex"]),
                "dst": n.get_attr("NDA_DST"),
                "lladdr": n.get_attr("NDA_LLADDR"),
                "state": [name for bit, name in _NUD_NAMES.items() if state & bit] or ["none"],
            })
        return out

    def _problems(self, namespaces: list[dict], specs: list[PairSpec]) -> list[str]:
        problems = []
        by_ns = {e["name"]: e for e in namespaces}
        for e in namespaces:
            if not e["exists"]:
                problems.append(f"namespace {e['name']} is missing")
        for spec in specs:
            found = {}
            for end, peer in spec.ends():
                ns = by_ns.get(end.netns)
                if not ns or not ns["exists"]:
                    continue
                link = next((l for l in ns["links"] if l["name"] == end.ifname), None)
                where = f"{end.netns}/{end.ifname}"
                if link is None:
                    problems.append(f"link {where} is missing")
                    continue
                found[end.ifname] = link
                if link["kind"] != "veth":
                    problems.append(f"{where} is a {link['kind']}, not a veth")
                if link["mac"] != end.mac:
                    problems.append(f"{where} has mac {link['mac']}, not {end.mac}")
                if link["mtu"] != spec.mtu:
                    problems.append(f"{where} has mtu {link['mtu']}, not {spec.mtu}")
                if (link["tx_queues"], link["rx_queues"]) != (spec.queues, spec.queues):
                    problems.append(f"{where} has {link['tx_queues']}/{link['rx_queues']} "
                                    f"tx/rx queues, not {spec.queues}")
                if not link["admin_up"]:
                    problems.append(f"{where} is down")
                v4 = [a for a in link["addresses"] if ":" not in a]
                if v4 != [end.address]:
                    problems.append(f"{where} has addresses {v4 or 'none'}, not [{end.address}]")
                if self.config.static_neighbours and not any(
                        n["dev"] == end.ifname and n["dst"] == peer.ip and n["lladdr"] == peer.mac
                        and "permanent" in n["state"] for n in ns["neighbours"]):
                    problems.append(f"{where} has no permanent neighbour {peer.ip} -> {peer.mac}")
            g, h = found.get(spec.gen.ifname), found.get(spec.host.ifname)
            if g and h and (g["peer_index"] != h["index"] or h["peer_index"] != g["index"]):
                problems.append(f"{spec.gen.ifname} and {spec.host.ifname} are not each other's peer")
        return problems


def _prog_name(prog_id: int | None) -> str | None:
    """The XDP program's name, from bpftool when it is installed."""
    if not prog_id or not shutil.which("bpftool"):
        return None
    try:
        out = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                             capture_output=True, text=True, timeout=5)
        return json.loads(out.stdout).get("name") if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
