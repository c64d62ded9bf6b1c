"""isolaned's TOML configuration (see control/isolaned.toml for a commented example).

Every key is checked when the file is read; an error names the key
(`datapath.policy: ...`) so an operator knows what to fix. Unknown keys are
errors too: a typo must not silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from pathlib import Path

from datapath.errors import ConfigError

BACKENDS = ("mem", "afxdp")
POLICIES = ("cycles", "fifo")  # the tenant API carries cycle budgets (share, cap_us)
ATTACH_MODES = ("skb", "native", "auto")
LOG_LEVELS = ("debug", "info", "warning", "error")
HANDLERS = ("drop", "echo", "udp_echo")
DEFAULT_CONFIG = "/etc/isolane/isolaned.toml"
MAX_QUEUES = 64  # AF_XDP sockets one datapath backend runs (DP_AFXDP_MAX_QUEUES)


class DaemonConfigError(ConfigError):
    """A key of isolaned's config file that is missing, mistyped or out of range."""


@dataclasses.dataclass(frozen=True)
class Interface:
    ifname: str
    queues: tuple[int, ...] = (0,)
    netns: str | None = None
    mode: str = "skb"  # XDP mode of the sockets and the steering program: skb, native, auto


@dataclasses.dataclass(frozen=True)
class TenantDefaults:
    share: float = 0.1
    cap_us: float = 100.0
    queue_cap: int = 1024
    handler: str = "drop"


@dataclasses.dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/isolane")
    socket: Path = Path("/run/isolane/isolaned.sock")
    admin_group: str = "isolane"
    metrics: str | None = "127.0.0.1:9464"  # None: no metrics endpoint
    log_level: str = "info"
    backend: str = "mem"
    policy: str = "cycles"
    work_conserving: bool = False
    fastpath_core: int | None = None   # None: the first CPU we may run on
    generator_core: int | None = None  # mem backend's generator; None: the second
    quantum_us: float = 10.0
    refill_us: int = 10
    interfaces: tuple[Interface, ...] = ()
    defaults: TenantDefaults = TenantDefaults()
    source: Path | None = None  # the file it was read from

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if not self.metrics:
            return None
        host, _, port = self.metrics.rpartition(":")
        return host, int(port)


def _take(table: dict, key: str, where: str, types, default):
    if key not in table:
        return default
    value = table.pop(key)
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise DaemonConfigError(f"{where}{key}: expected {_names(types)}, not a boolean")
    if not isinstance(value, types):
        raise DaemonConfigError(f"{where}{key}: expected {_names(types)}, not {value!r}")
    return value


def _names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join({str: "a string", int: "an integer", float: "a number", bool: "true/false",
                        list: "a list", dict: "a table"}.get(t, t.__name__) for t in types)


def _no_leftovers(table: dict, where: str) -> None:
    if table:
        raise DaemonConfigError(f"{where}{sorted(table)[0]}: unknown key"
                                f" (known keys are documented in control/isolaned.toml)")


def _one_of(value, choices, key: str):
    if value not in choices:
        raise DaemonConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _metrics(value: str) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host)
        ok = sep and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise DaemonConfigError(f"daemon.metrics: {value!r} is not ADDRESS:PORT "
                                "(e.g. 127.0.0.1:9464; \"\" turns metrics off)")
    return value


def _interface(raw, i: int) -> Interface:
    where = f"interfaces[{i}]."
    if not isinstance(raw, dict):
        raise DaemonConfigError(f"interfaces[{i}]: expected a table ([[interfaces]])")
    raw = dict(raw)
    ifname = _take(raw, "ifname", where, str, None)
    if not ifname:
        raise DaemonConfigError(f"{where}ifname: missing (the interface's name)")
    queues = _take(raw, "queues", where, (int, list), [0])
    queues = list(range(queues)) if isinstance(queues, int) else queues
    if not queues or not all(isinstance(q, int) and not isinstance(q, bool) and q >= 0
                             for q in queues):
        raise DaemonConfigError(f"{where}queues: a count > 0 or a list of queue indexes >= 0")
    netns = _take(raw, "netns", where, str, None)
    mode = _one_of(_take(raw, "mode", where, str, "skb"), ATTACH_MODES, where + "mode")
    _no_leftovers(raw, where)
    return Interface(ifname, tuple(queues), netns or None, mode)


def parse(text: str, source: Path | None = None) -> DaemonConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DaemonConfigError(f"not valid TOML: {e}") from None
    fields: dict = {"source": source}

    daemon = _take(doc, "daemon", "", dict, {})
    fields["state_dir"] = Path(_take(daemon, "state_dir", "daemon.", str, "/var/lib/isolane"))
    fields["socket"] = Path(_take(daemon, "socket", "daemon.", str, "/run/isolane/isolaned.sock"))
    fields["admin_group"] = _take(daemon, "admin_group", "daemon.", str, "isolane")
    fields["metrics"] = _metrics(_take(daemon, "metrics", "daemon.", str, "127.0.0.1:9464"))
    fields["log_level"] = _one_of(_take(daemon, "log_level", "daemon.", str, "info"),
                                  LOG_LEVELS, "daemon.log_level")
    _no_leftovers(daemon, "daemon.")

    dp = _take(doc, "datapath", "", dict, {})
    fields["backend"] = _one_of(_take(dp, "backend", "datapath.", str, "mem"), BACKENDS,
                                "datapath.backend")
    fields["policy"] = _one_of(_take(dp, "policy", "datapath.", str, "cycles"), POLICIES,
                               "datapath.policy")
    fields["work_conserving"] = _take(dp, "work_conserving", "datapath.", bool, False)
    cores = _take(dp, "cores", "datapath.", list, None)
    if cores is not None:
        if not 1 <= len(cores) <= 2 or not all(isinstance(c, int) and not isinstance(c, bool)
                                               and 0 <= c < os.cpu_count() for c in cores):
            raise DaemonConfigError(
                f"datapath.cores: [fast path core] or [fast path core, generator core], "
                f"CPUs in 0..{os.cpu_count() - 1}, not {cores!r}")
        fields["fastpath_core"] = cores[0]
        fields["generator_core"] = cores[-1]
    quantum = _take(dp, "quantum_us", "datapath.", (int, float), 10.0)
    if not 0 < quantum <= 10_000:
        raise DaemonConfigError(f"datapath.quantum_us: must be in (0, 10000], not {quantum}")
    fields["quantum_us"] = float(quantum)
    refill = _take(dp, "refill_us", "datapath.", int, 10)
    if not 1 <= refill <= 1_000_000:
        raise DaemonConfigError(f"datapath.refill_us: must be in 1..1000000, not {refill}")
    fields["refill_us"] = refill
    _no_leftovers(dp, "datapath.")

    tdef = _take(doc, "tenant_defaults", "", dict, {})
    share = _take(tdef, "share", "tenant_defaults.", (int, float), 0.1)
    if not 0 < share <= 1:
        raise DaemonConfigError(f"tenant_defaults.share: a fraction in (0, 1], not {share}")
    cap = _take(tdef, "cap_us", "tenant_defaults.", (int, float), 100.0)
    if not 0 < cap <= 1e7:
        raise DaemonConfigError(f"tenant_defaults.cap_us: must be in (0, 1e7], not {cap}")
    qcap = _take(tdef, "queue_cap", "tenant_defaults.", int, 1024)
    if qcap < 2 or qcap & (qcap - 1) or qcap > 65536:
        raise DaemonConfigError(f"tenant_defaults.queue_cap: a power of two in 2..65536, "
                                f"not {qcap}")
    handler = _one_of(_take(tdef, "handler", "tenant_defaults.", str, "drop"), HANDLERS,
                      "tenant_defaults.handler")
    _no_leftovers(tdef, "tenant_defaults.")
    fields["defaults"] = TenantDefaults(float(share), float(cap), qcap, handler)

    ifaces = _take(doc, "interfaces", "", list, [])
    fields["interfaces"] = tuple(_interface(raw, i) for i, raw in enumerate(ifaces))
    if fields["backend"] == "afxdp":
        if len(fields["interfaces"]) != 1:
            raise DaemonConfigError(
                "interfaces: the afxdp backend serves one interface (one AF_XDP socket per "
                "queue of it): give exactly one [[interfaces]]")
        queues = fields["interfaces"][0].queues
        if len(queues) > MAX_QUEUES or len(set(queues)) < len(queues):
            raise DaemonConfigError(
                f"interfaces[0].queues: at most {MAX_QUEUES} distinct queue indexes, "
                f"not {list(queues)}")
    _no_leftovers(doc, "")
    return DaemonConfig(**fields)


def load(path: str | os.PathLike | None) -> DaemonConfig:
    """Reads the config file; no file given and none at the default path: defaults."""
    if path is None:
        path = DEFAULT_CONFIG
        if not os.path.exists(path):
            return DaemonConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DaemonConfigError(f"cannot read the config {path}: {e.strerror}") from None
    try:
        return parse(text, path)
    except DaemonConfigError as e:
        raise DaemonConfigError(f"{path}: {e}") from None
