"""The contagion experiment over the wire (`bench/contagion.py --backend afxdp`).

Instead of the mem backend's generator thread, bench/loadgen.py sends the
two tenants' flows from the testbed's generator namespace through the veth
pair; the steering program on the isolane end redirects them into the
datapath's AF_XDP socket, and the replies travel back the same way. Latency
is reply time minus the *intended* send time as the generator measured it,
so it includes both kernels' veth paths (noise of their own) as well as the
datapath's queueing; a request never answered counts as infinitely late.

The tenants share the isolane end's address and are told apart by UDP
port (scenario section [wire]); the generator runs on the second core, the
fast path on the first.
"""
from __future__ import annotations

import loadgen
from control.testbed import Testbed, TestbedConfig
from datapath import Datapath, Rule, default_cores
from ebpf.steer import Steer

QUEUE = 0


class WireRunner:
    """The testbed (brought up if needed) with the steering program on its
    isolane end; runs one configuration at a time."""

    def __init__(self, scn: dict, testbed_config: str | None = None):
        self.config = TestbedConfig.load(testbed_config)
        Testbed(self.config).up()
        self.host = self.config.pair_specs()[0].host
        self.wire = loadgen.Wire.testbed(self.config)
        self.loop_core, self.gen_core = default_cores()
        self.ports = {who: scn["wire"][f"{who}_dport"] for who in ("victim", "aggressor")}
        self.steer = Steer(self.host.ifname, netns=self.host.netns, mode="skb")
        try:
            for port in self.ports.values():
                self.steer.add_rule(daddr=self.host.ip, proto="udp", dport=port)
        except BaseException:
            self.steer.detach()
            raise

    def close(self) -> None:
        self.steer.detach()

    def rule(self, side) -> Rule:
        return Rule(side.tenant, ip_dst=self.host.ip, proto="udp", dport=self.ports[side.name])

    def flow(self, side, rate_pps: float, cost_ns: int, size: int) -> loadgen.LoadFlow:
        return loadgen.LoadFlow(side.name, dst=self.host.ip, dport=self.ports[side.name],
                                rate_pps=rate_pps, size=size, arrival=side.spec["arrival"],
                                on_us=side.spec.get("on_us", 0.0),
                                off_us=side.spec.get("off_us", 0.0), cost_ns=cost_ns)

    def run(self, dp: Datapath, flows: list[loadgen.LoadFlow], duration: float,
            tick) -> dict[str, dict]:
        """Sends `flows` through `dp` (tenants and rules already set) for
        `duration` seconds; per flow name, contagion's per-tenant dict."""
        # skb copy mode, as the steering program is attached (veth would
        # give native mode; the generic path is what every driver has)
        dp.use_afxdp_backend(self.host.ifname, QUEUE, netns=self.host.netns, mode="skb",
                             zerocopy=False)
        self.steer.bind_xsk(QUEUE, dp.afxdp_fd)
        try:
            with dp.running():
                res = loadgen.run(flows, duration, self.wire, core=self.gen_core,
                                  progress=lambda sent, received, elapsed: tick())
        finally:
            self.steer.unbind_xsk(QUEUE)
        return {name: f.tenant_result() for name, f in res.flows.items()}
