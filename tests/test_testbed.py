"""`isolane testbed`: namespaces, veth pairs, addresses and neighbours made
with pyroute2, converged by `up`, reported by `status`, removed by `down`.

Every test uses its own random name prefix and state file, and its fixture
tears down whatever it made (also when the test fails), so a failed run
cannot collide with the next one or with a real testbed (`isl-`)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from pyroute2 import IPRoute, netns

from control import testbed as testbed_mod
from control.cli import main
from control.testbed import NEEDS_ROOT, Testbed, TestbedConfig

pytestmark = pytest.mark.integration  # root: namespaces, veth, neighbours

NUD_PERMANENT = 0x80

# ICMP echo from inside a namespace without iputils-ping (not in the
# project's apt list): a raw socket, one request, one second to answer.
_PING_PY = r"""
import os, socket, struct, sys, time
dst = sys.argv[1]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
ident = os.getpid() & 0xFFFF
body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"isolane-testbed!"
pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1.0)
s.sendto(pkt, (dst, 0))
end = time.monotonic() + 1.0
while time.monotonic() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        break
    ihl = (data[0] & 0x0F) * 4
    t, _, _, i, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if addr[0] == dst and t == 0 and i == ident:
        sys.exit(0)
sys.exit(1)
"""


def ping(ns: str, dst: str) -> bool:
    """`ip netns exec NS ping -c1 -W1 DST` (a Python ICMP echo when ping is
    not installed)."""
    if shutil.which("ping"):
        cmd = ["ip", "netns", "exec", ns, "ping", "-c1", "-W1", dst]
    else:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", _PING_PY, dst]
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


def isolane(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def bed(tmp_path):
    """Makes configs (TOML files) with this test's unique prefix and state
    file; tears down every one of them, and any namespace with the prefix."""
    prefix = f"t{secrets.token_hex(2)}-"
    made: list[TestbedConfig] = []

    class Bed:
        def __init__(self):
            self.prefix = prefix
            self.state = tmp_path / "testbed.json"

        def config(self, name="testbed.toml", **keys) -> tuple[TestbedConfig, object]:
            keys = {"prefix": prefix, "state_file": str(self.state), **keys}
            path = tmp_path / name
            path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
            cfg = TestbedConfig.load(path)
            made.append(cfg)
            return cfg, path

    yield Bed()
    for cfg in made:
        try:
            Testbed(cfg).down()
        except Exception:
            pass
    for ns in netns.listnetns():
        if ns.startswith(prefix):
            netns.remove(ns)


def link(ns: str, name: str):
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)
        return ipr.link("get", index=idx[0])[0] if idx else None


def addrs(ns: str, name: str) -> list[str]:
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in ipr.addr("dump", index=idx) if a["family"] == 2]


def neighbours(ns: str, name: str) -> dict[str, tuple[str, int]]:
    with IPRoute(netns=ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        return {n.get_attr("NDA_DST"): (n.get_attr("NDA_LLADDR"), n["state"])
                for n in ipr.neigh("dump", ifindex=idx, family=2)}


def ours(prefix: str) -> list[str]:
    return sorted(ns for ns in netns.listnetns() if ns.startswith(prefix))


# ---------------------------------------------------------------------------


def test_up_creates_namespaces_links_addresses_and_neighbours(bed):
    cfg, path = bed.config()
    r = isolane("testbed", "up", "--config", path)
    assert r.exit_code == 0, r.output
    gen, host = f"{bed.prefix}gen", f"{bed.prefix}host"
    assert ours(bed.prefix) == sorted([gen, host])

    g, h = link(gen, f"{bed.prefix}gen0"), link(host, f"{bed.prefix}host0")
    assert g is not None and h is not None
    for msg in (g, h):
        assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "veth"
        assert msg["flags"] & 1 and not msg["flags"] & 0x80  # up, ARP on
    assert g.get_attr("IFLA_LINK") == h["index"] and h.get_attr("IFLA_LINK") == g["index"]
    assert g.get_attr("IFLA_ADDRESS") == "02:69:73:00:00:01"
    assert h.get_attr("IFLA_ADDRESS") == "02:69:73:00:00:02"
    assert addrs(gen, f"{bed.prefix}gen0") == ["10.99.0.1/24"]
    assert addrs(host, f"{bed.prefix}host0") == ["10.99.0.2/24"]
    assert neighbours(gen, f"{bed.prefix}gen0")["10.99.0.2"] == ("02:69:73:00:00:02", NUD_PERMANENT)
    assert neighbours(host, f"{bed.prefix}host0")["10.99.0.1"] == ("02:69:73:00:00:01", NUD_PERMANENT)
    # nothing of it in the root namespace
    with IPRoute() as root:
        assert not root.link_lookup(ifname=f"{bed.prefix}gen0")
        assert not root.link_lookup(ifname=f"{bed.prefix}host0")
    assert json.loads(bed.state.read_text())["namespaces"] == [gen, host]

    assert ping(gen, "10.99.0.2")
    assert ping(host, "10.99.0.1")


def test_up_is_idempotent(bed):
    cfg, path = bed.config()
    first = isolane("testbed", "up", "--config", path, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["changed"] is True
    second = isolane("testbed", "up", "--config", path, "--json")
    assert second.exit_code == 0, second.output
    out = json.loads(second.stdout)
    assert out["changed"] is False and out["actions"] == []
    assert out["status"]["up"] is True
    assert isolane("testbed", "up", "--config", path).stdout.startswith("already up to date")
    assert ping(cfg.gen_ns, "10.99.0.2")


def test_queues_mtu_and_pairs_are_applied_and_converged(bed):
    cfg, _ = bed.config(queues=4, mtu=9000, pairs=2)
    tb = Testbed(cfg)
    assert tb.up().status.up
    for i in range(2):
        for ns, name in ((cfg.gen_ns, f"{bed.prefix}gen{i}"), (cfg.host_ns, f"{bed.prefix}host{i}")):
            msg = link(ns, name)
            assert msg.get_attr("IFLA_NUM_TX_QUEUES") == 4
            assert msg.get_attr("IFLA_NUM_RX_QUEUES") == 4
            assert msg.get_attr("IFLA_MTU") == 9000
    assert addrs(cfg.gen_ns, f"{bed.prefix}gen1") == ["10.99.1.1/24"]
    assert ping(cfg.gen_ns, "10.99.1.2")

    # Converge to a new config: fewer queues (re-creates), smaller MTU, one pair.
    cfg2, _ = bed.config("second.toml", queues=2, mtu=1400, pairs=1)
    result = Testbed(cfg2).up()
    assert result.status.up, result.status.problems
    g = link(cfg.gen_ns, f"{bed.prefix}gen0")
    assert (g.get_attr("IFLA_NUM_TX_QUEUES"), g.get_attr("IFLA_MTU")) == (2, 1400)
    assert link(cfg.gen_ns, f"{bed.prefix}gen1") is None
    assert link(cfg.host_ns, f"{bed.prefix}host1") is None
    assert Testbed(cfg2).up().actions == []


def test_status_json_is_valid_and_complete(bed):
    from ebpf import load_raw_xdp

    cfg, path = bed.config()
    r = isolane("testbed", "status", "--config", path, "--json")
    assert r.exit_code == 0, r.output
    down = json.loads(r.stdout)
    assert down["up"] is False and not any(ns["exists"] for ns in down["namespaces"])

    assert isolane("testbed", "up", "--config", path).exit_code == 0
    # An XDP program on the isolane end shows up in status.
    fd, _ = load_raw_xdp(bytes.fromhex("b700000002000000" "9500000000000000"), name="tb_pass")
    try:
        with IPRoute(netns=cfg.host_ns, flags=0) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname=f"{bed.prefix}host0")[0], xdp_fd=fd)
    finally:
        os.close(fd)

    r = isolane("testbed", "status", "--config", path, "--json")
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    assert st["up"] is True and st["problems"] == []
    assert {"namespaces", "pairs", "config", "state_file", "state"} <= st.keys()
    assert st["config"]["prefix"] == bed.prefix and st["state"]["prefix"] == bed.prefix
    assert [ns["name"] for ns in st["namespaces"]] == [cfg.gen_ns, cfg.host_ns]
    ends = {"gen": ("02:69:73:00:00:01", "10.99.0.1/24", "10.99.0.2"),
            "host": ("02:69:73:00:00:02", "10.99.0.2/24", "10.99.0.1")}
    for ns, side in zip(st["namespaces"], ("gen", "host")):
        assert ns["exists"]
        (veth,) = [l for l in ns["links"] if l["name"] == f"{bed.prefix}{side}0"]
        mac, addr, peer = ends[side]
        assert veth["kind"] == "veth" and veth["mac"] == mac and veth["mtu"] == 1500
        assert veth["tx_queues"] == 1 and veth["rx_queues"] == 1
        assert veth["admin_up"] and veth["state"] == "up"
        assert veth["addresses"] == [addr]
        assert {"name", "mac", "mtu", "tx_queues", "rx_queues", "state", "addresses", "xdp"} <= veth.keys()
        assert any(n["dst"] == peer and n["dev"] == veth["name"] and "permanent" in n["state"]
                   for n in ns["neighbours"])
        if side == "gen":
            assert veth["xdp"] is None
        else:
            assert veth["xdp"]["mode"] == "xdp" and veth["xdp"]["prog_id"] > 0
    assert st["pairs"][0]["generator"]["address"] == "10.99.0.1/24"

    text = isolane("testbed", "status", "--config", path)
    assert text.exit_code == 0 and "testbed up" in text.stdout and "xdp" in text.stdout


def test_down_removes_everything_and_nothing_else_and_is_idempotent(bed):
    cfg, path = bed.config(pairs=2)
    bystander = f"keep{secrets.token_hex(3)}"
    netns.create(bystander)
    try:
        assert isolane("testbed", "up", "--config", path).exit_code == 0
        r = isolane("testbed", "down", "--config", path, "--json")
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["changed"] and out["removed"]
        assert ours(bed.prefix) == []
        assert not bed.state.exists()
        assert bystander in netns.listnetns()
        with IPRoute() as root:
            assert not [l for l in root.link("dump")
                        if l.get_attr("IFLA_IFNAME").startswith(bed.prefix)]

        again = isolane("testbed", "down", "--config", path, "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout) == {"ok": True, "changed": False, "removed": [],
                                             "warnings": []}
        assert "nothing to remove" in isolane("testbed", "down", "--config", path).stdout
    finally:
        netns.remove(bystander)


def test_partial_testbed_is_repaired_by_up_and_removed_by_down(bed):
    cfg, path = bed.config()
    tb = Testbed(cfg)
    # A namespace but no veth (and no state file): status sees it, up repairs it.
    netns.create(cfg.gen_ns)
    st = tb.status()
    assert not st.up and any("missing" in p for p in st.problems)
    assert tb.up().status.up
    assert ping(cfg.gen_ns, "10.99.0.2")

    # Break it piecewise: MTU, address, neighbour, link state, then lose a side.
    with IPRoute(netns=cfg.gen_ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=f"{bed.prefix}gen0")[0]
        ipr.neigh("del", dst="10.99.0.2", ifindex=idx, family=2)
        ipr.link("set", index=idx, mtu=1280)
        ipr.addr("add", index=idx, address="10.99.5.5", prefixlen=24)
        ipr.addr("del", index=idx, address="10.99.0.1", prefixlen=24)
        ipr.link("set", index=idx, state="down")
    st = tb.status()
    assert not st.up and len(st.problems) >= 4
    actions = tb.up().actions
    assert any("mtu" in a for a in actions) and any("10.99.5.5" in a for a in actions)
    assert tb.status().up and ping(cfg.gen_ns, "10.99.0.2")

    netns.remove(cfg.host_ns)
    result = tb.up()
    assert result.status.up, result.status.problems
    assert ping(cfg.host_ns, "10.99.0.1")

    # Partial again (only one namespace, state file gone): down still finds it.
    netns.remove(cfg.host_ns)
    bed.state.unlink()
    assert tb.down().removed == [f"namespace {cfg.gen_ns}"]
    assert ours(bed.prefix) == []


def test_down_follows_the_state_file_after_the_config_changed(bed):
    old, _ = bed.config(generator="lg")
    Testbed(old).up()
    new, path = bed.config("new.toml")  # default generator "gen", same state file
    assert isolane("testbed", "up", "--config", path).exit_code == 0
    assert ours(bed.prefix) == sorted([new.gen_ns, new.host_ns])  # old lg namespace gone
    Testbed(old).up()                    # back to the old names (state: lg, host)
    assert isolane("testbed", "down", "--config", path).exit_code == 0
    assert ours(bed.prefix) == []


def test_arp_still_works_without_static_neighbours(bed):
    cfg, _ = bed.config(static_neighbours=False)
    assert Testbed(cfg).up().status.up
    assert "10.99.0.2" not in neighbours(cfg.gen_ns, f"{bed.prefix}gen0")
    assert ping(cfg.gen_ns, "10.99.0.2")
    mac, state = neighbours(cfg.gen_ns, f"{bed.prefix}gen0")["10.99.0.2"]
    assert mac == "02:69:73:00:00:02" and not state & NUD_PERMANENT


def test_errors_exit_1_without_root_and_2_on_a_bad_config(bed, monkeypatch):
    _, path = bed.config()
    for args in (["testbed", "--help"], ["testbed", "up", "--help"], ["testbed", "status", "-h"]):
        r = isolane(*args)
        assert r.exit_code == 0 and "Usage" in r.stdout
    assert isolane("testbed", "up", "--bogus").exit_code == 2
    assert isolane("testbed", "status", "--config", bed.state.parent / "nope.toml").exit_code == 2

    for bad, why in (({"bogus": 1}, "unknown key"), ({"subnet": "8.8.0.0/16"}, "private"),
                     ({"generator": "averyverylongname"}, "characters"),
                     ({"queues": 0}, "queues"), ({"mtu": "big"}, "integer")):
        p = bed.state.parent / "bad.toml"
        p.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in bad.items()))
        r = isolane("testbed", "up", "--config", p)
        assert r.exit_code == 2, (bad, r.output)
        assert why in r.stderr, (bad, r.stderr)

    monkeypatch.setattr(testbed_mod, "has_net_admin", lambda: False)
    for cmd in ("up", "down", "status"):
        r = isolane("testbed", cmd, "--config", path)
        assert r.exit_code == 1
        assert NEEDS_ROOT in r.stderr
    assert ours(bed.prefix) == []
