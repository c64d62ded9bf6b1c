"""Declarative configuration of the datapath: tenants, rules, flows.

Plain dataclasses, validated on construction, each turned into its C
struct (see include/isolane_dp.h) by `to_c()`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math

from ._dp import ffi, lib
from .errors import BudgetError, ConfigError

POLICIES = {
    "fifo": lib.DP_POLICY_FIFO,
    "pkt_rate": lib.DP_POLICY_PKT_RATE,
    "byte_rate": lib.DP_POLICY_BYTE_RATE,
    "cycles": lib.DP_POLICY_CYCLES,
}
HANDLERS = {"drop": lib.DP_HANDLER_DROP, "echo": lib.DP_HANDLER_ECHO, "spin": lib.DP_HANDLER_SPIN,
            "udp_echo": lib.DP_HANDLER_UDP_ECHO}
ARRIVALS = {
    "poisson": lib.DP_ARRIVAL_POISSON,
    "onoff": lib.DP_ARRIVAL_ONOFF,
    "uniform": lib.DP_ARRIVAL_UNIFORM,
    "saturate": lib.DP_ARRIVAL_SATURATE,
}
PROTOS = {None: 0, "any": 0, "tcp": 6, "udp": 17}


def _choice(table: dict, value, what: str):
    if value not in table:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, table))}")
    return table[value]


@dataclasses.dataclass(frozen=True)
class TenantConfig:
    """What a tenant runs and what it may spend.

    handler    native handler: "echo", "spin" (burns cost, then echoes) or "drop"
    spin_ns    spin's cost when the packet carries no probe header
    queue_cap  its own bounded queue (power of two)
    share, cap_us            cycles policy: fraction of the core, burst credit
    pkt_rate, pkt_burst      pkt_rate policy: packets/s and bucket depth
    byte_rate, byte_burst    byte_rate policy: bytes/s and bucket depth
    """

    handler: str = "echo"
    spin_ns: int = 0
    queue_cap: int = 1024
    share: float = 1.0
    cap_us: float = 1000.0
    pkt_rate: float = 0.0
    pkt_burst: float = 32.0
    byte_rate: float = 0.0
    byte_burst: float = 65536.0

    def __post_init__(self):
        _choice(HANDLERS, self.handler, "handler")
        q = self.queue_cap
        if q < 2 or q & (q - 1) or q > lib.DP_QUEUE_SLOTS:
            raise ConfigError(f"queue_cap must be a power of two in 2..{lib.DP_QUEUE_SLOTS}, "
                              f"not {q}")
        if not 0 <= self.spin_ns <= lib.DP_SPIN_MAX_NS:
            raise ConfigError(f"spin_ns must be in 0..{lib.DP_SPIN_MAX_NS}, not {self.spin_ns}")
        if not 0.0 <= self.share <= 1.0:
            raise BudgetError(f"share is a fraction of a core in 0..1, not {self.share}")
        for name in ("cap_us", "pkt_rate", "pkt_burst", "byte_rate", "byte_burst"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise BudgetError(f"{name} must be a finite number >= 0, not {v}")

    def check_budget(self, policy: str) -> None:
        """Refuses a budget under which the tenant could never be served."""
        need = {"cycles": ("share", "cap_us"), "pkt_rate": ("pkt_rate", "pkt_burst"),
                "byte_rate": ("byte_rate", "byte_burst")}.get(policy, ())
        for name in need:
            if getattr(self, name) <= 0:
                raise BudgetError(f"the {policy} policy needs {name} > 0 "
                                  f"(with {name}={getattr(self, name)} the tenant never runs)")
        if policy == "pkt_rate" and self.pkt_burst < 1:
            raise BudgetError("pkt_burst must hold at least one packet")

    def to_c(self):
        c = ffi.new("struct dp_tenant_config *")
        c.queue_cap = self.queue_cap
        c.handler = HANDLERS[self.handler]
        c.spin_ns = self.spin_ns
        for name in ("share", "cap_us", "pkt_rate", "pkt_burst", "byte_rate", "byte_burst"):
            setattr(c, name, getattr(self, name))
        return c


@dataclasses.dataclass(frozen=True)
class Rule:
    """Traffic to a tenant: every field left None matches anything.

    The most specific matching rule wins (more fields; then port > protocol
    > IP > VLAN).
    """

    tenant: int
    ip_dst: str | None = None
    dport: int | None = None
    proto: str | None = None
    vlan: int | None = None

    def __post_init__(self):
        if not 0 <= self.tenant < lib.DP_MAX_TENANTS:
            raise ConfigError(f"tenant id must be in 0..{lib.DP_MAX_TENANTS - 1}")
        _choice(PROTOS, self.proto, "protocol")
        if self.dport is not None and not 1 <= self.dport <= 65535:
            raise ConfigError(f"dport must be in 1..65535, not {self.dport}")
        if self.vlan is not None and not 1 <= self.vlan <= 4095:
            raise ConfigError(f"vlan must be in 1..4095, not {self.vlan}")
        if self.ip_dst is not None:
            try:
                addr = ipaddress.IPv4Address(self.ip_dst)
            except ValueError as e:
                raise ConfigError(f"ip_dst: {e}") from None
            if int(addr) == 0:
                raise ConfigError("ip_dst 0.0.0.0 cannot be matched; leave ip_dst unset "
                                  "to match any address")

    def fill(self, c) -> None:
        c.tenant = self.tenant
        c.ip_dst = int(ipaddress.IPv4Address(self.ip_dst)) if self.ip_dst else 0
        c.dport = self.dport or 0
        c.vlan = self.vlan or 0
        c.proto = PROTOS[self.proto]


@dataclasses.dataclass(frozen=True)
class Flow:
    """One open-loop stream of identical frames from the mem generator.

    rate_pps is the mean rate (while on, for "onoff"); "saturate" ignores it.
    """

    frame: bytes
    rate_pps: float = 0.0
    arrival: str = "poisson"
    on_us: float = 0.0
    off_us: float = 0.0

    def __post_init__(self):
        _choice(ARRIVALS, self.arrival, "arrival process")
        if self.arrival != "saturate" and not self.rate_pps > 0:
            raise ConfigError(f"{self.arrival} arrivals need rate_pps > 0")
        if self.arrival == "onoff" and not (self.on_us > 0 and self.off_us >= 0):
            raise ConfigError("onoff arrivals need on_us > 0 and off_us >= 0")
        if not 14 <= len(self.frame) <= lib.DP_MAX_FRAME_LEN:
            raise ConfigError(f"frame must be 14..{lib.DP_MAX_FRAME_LEN} bytes, "
                              f"not {len(self.frame)}")
