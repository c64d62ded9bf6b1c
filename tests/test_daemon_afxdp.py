"""isolaned on the afxdp backend: a veth pair in namespaces of this test's
own, the daemon attached to the host end (steering program + an AF_XDP
socket per configured queue: one, and two on a two-queue pair), tenants and
programs added and deleted through the API answering real frames, and the
interface left clean (no XDP program) by SIGTERM and after kill -9.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP

from control.client import Client
from control.daemon_proc import LocalDaemon, interface_toml
from ebpf.steer import attached_programs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vethpair import VethPair, two_queue_pair  # noqa: E402

pytestmark = [pytest.mark.integration]

H_IP, P_IP = "10.98.0.1", "10.98.0.2"
UDP_ECHO = (Path(__file__).resolve().parent.parent / "tenants/udp_echo/handler.c").read_text()


@pytest.fixture
def net(request):
    if os.geteuid() != 0:
        pytest.fail("needs root (netns, veth, XDP, AF_XDP)")
    n = VethPair(f"isld-{os.getpid()}", H_IP, P_IP, host_if="ldh", peer_if="ldp",
                 expect_timeout=2.0)
    request.addfinalizer(n.close)
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(net, tmp_path):
    d = LocalDaemon(tmp_path / "d", backend="afxdp", metrics=f"127.0.0.1:{_free_port()}",
                    extra_toml=interface_toml(net.if_host, net.ns_host))
    yield d
    d.cleanup()


def echoed(net, sport, dport, payload) -> bool:
    net.send(net.udp(sport, dport, payload))
    reply = net.expect(lambda p: UDP in p and p[UDP].sport == dport and p[UDP].dport == sport
                       and p[IP].src == H_IP and bytes(p[UDP].payload) == payload)
    return reply is not None


def test_tenants_and_programs_serve_real_frames(net, daemon):
    daemon.start()
    assert [p["name"] for p in attached_programs(net.if_host, net.ns_host)] == ["isolane_steer"]
    with Client(daemon.socket) as c:
        st = c.call("daemon.status")
        assert st["backend"] == "afxdp" and st["interfaces"][0]["ifname"] == net.if_host
        c.call("tenant.add", name="echo", owner="root", share=0.5, cap_us=50, handler="udp_echo",
               rules=[{"ip_dst": H_IP, "proto": "udp", "dport": 7}])
        net.drain()
        assert echoed(net, 4000, 7, b"native twin")
        assert not echoed(net, 4001, 8, b"no rule for port 8")  # not steered: the kernel's
        c.call("prog.load", tenant="echo", source=UDP_ECHO, engine="aot")
        for i in range(5):
            assert echoed(net, 4100 + i, 7, b"through the tenant's program %d" % i)
        c.call("tenant.set", tenant="echo", rules=[{"ip_dst": H_IP, "proto": "udp", "dport": 8}])
        assert echoed(net, 4200, 8, b"rules moved")
        assert not echoed(net, 4201, 7, b"old rule gone")
        s = c.call("stats", tenant="echo")["tenants"][0]
        assert s["rx"] == 7 and s["tx"] == 7
        assert s["latency_us"]["p50"] > 0
        # the metrics endpoint: the same counters, and a latency histogram
        # whose buckets are cumulative and hold every completed packet
        url = f"http://{c.call('daemon.status')['metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        tid = s["id"]
        assert f'isolane_tenant_rx_packets_total{{id="{tid}",tenant="echo"}} 7.0' in text
        assert f'isolane_tenant_tx_packets_total{{id="{tid}",tenant="echo"}} 7.0' in text
        buckets = [float(v) for v in re.findall(
            r'isolane_tenant_latency_seconds_bucket\{id="%d",le="[^"]+",tenant="echo"\} (\S+)'
            % tid, text)]
        assert len(buckets) > 5 and buckets == sorted(buckets) and buckets[-1] == s["completed"]
        assert f'isolane_tenant_latency_seconds_count{{id="{tid}",tenant="echo"}} {float(s["completed"])}' in text
    assert daemon.stop() == 0
    assert attached_programs(net.if_host, net.ns_host) == []  # detached on SIGTERM


def test_restart_after_kill9_reattaches_and_restores(net, daemon):
    daemon.start()
    with Client(daemon.socket) as c:
        c.call("tenant.add", name="echo", owner="root", share=0.5, cap_us=50,
               rules=[{"ip_dst": H_IP, "proto": "udp", "dport": 7}])
        c.call("prog.load", tenant="echo", source=UDP_ECHO)
    daemon.kill()
    # the steering program outlives a killed daemon; the next start replaces it
    daemon.start()
    assert [p["name"] for p in attached_programs(net.if_host, net.ns_host)] == ["isolane_steer"]
    net.drain()
    time.sleep(0.1)
    assert echoed(net, 4300, 7, b"restored program")
    assert daemon.stop() == 0
    assert attached_programs(net.if_host, net.ns_host) == []


def test_program_swaps_through_the_api_lose_no_packet(net, daemon):
    """prog.load replaces a running program (aot <-> interp) while a stream
    of datagrams flows: every datagram is echoed."""
    import select
    import threading

    daemon.start()
    n, gap_s = 3000, 0.0005
    with Client(daemon.socket) as c:
        c.call("tenant.add", name="echo", owner="root", share=0.5, cap_us=50,
               rules=[{"ip_dst": H_IP, "proto": "udp", "dport": 7}])
        c.call("prog.load", tenant="echo", source=UDP_ECHO, engine="aot")
        net.drain()
        got: set[int] = set()
        sending = threading.Event()
        sending.set()

        def receive():
            end = None
            while end is None or time.monotonic() < end:
                if not sending.is_set() and end is None:
                    end = time.monotonic() + 2.0
                if not select.select([net.sock], [], [], 0.1)[0]:
                    continue
                data, addr = net.sock.recvfrom(65535)
                if addr[2] == socket.PACKET_OUTGOING or len(data) < 42 + 8:
                    continue
                payload = data[42:]
                if payload.startswith(b"swap ") and data[34:36] == (7).to_bytes(2, "big"):
                    got.add(int(payload[5:]))

        def send():
            for i in range(n):
                net.send(net.udp(6000, 7, b"swap %06d" % i))
                time.sleep(gap_s)
            sending.clear()

        rx = threading.Thread(target=receive)
        tx = threading.Thread(target=send)
        rx.start()
        tx.start()
        swaps = 0
        while sending.is_set():
            c.call("prog.load", tenant="echo", source=UDP_ECHO,
                   engine="interp" if swaps % 2 == 0 else "aot")
            swaps += 1
        tx.join()
        rx.join()
        stats = c.call("stats", tenant="echo")["tenants"][0]
    assert swaps >= 2, "the stream ended before two swaps: nothing was tested"
    missing = sorted(set(range(n)) - got)
    assert not missing, f"{len(missing)} of {n} datagrams not echoed across {swaps} swaps " \
                        f"(first: {missing[:5]}; datapath rx {stats['rx']}, tx {stats['tx']})"


# ---- two queues (netns/veth prefix isldq-): a socket on each, tenants deleted live

Q_H_IP, Q_P_IP = "10.98.1.1", "10.98.1.2"


@pytest.fixture
def mqnet(request):
    return two_queue_pair(request, f"isldq-{os.getpid()}", Q_H_IP, Q_P_IP, host_if="ldqh",
                          peer_if="ldqp")


@pytest.fixture
def mqdaemon(mqnet, tmp_path):
    # native: veth reports a frame's receive queue to XDP only in native mode
    d = LocalDaemon(tmp_path / "d", backend="afxdp",
                    extra_toml=interface_toml(mqnet.if_host, mqnet.ns_host, queues=2,
                                              mode="native"))
    yield d
    d.cleanup()


def echoed_on(net, queue, sport, dport, payload) -> bool:
    """Sent on the peer's transmit queue `queue` (so into the host's receive
    queue of that number), answered by a UDP echo."""
    net.send(net.udp(sport, dport, payload), queue=queue)
    reply = net.expect(lambda p: UDP in p and p[UDP].sport == dport and p[UDP].dport == sport
                       and p[IP].src == Q_H_IP and bytes(p[UDP].payload) == payload)
    return reply is not None


def test_every_queue_served_and_tenants_deleted_live(mqnet, mqdaemon):
    """isolaned opens a socket on each configured queue: frames arriving on
    queue 0 and on queue 1 are answered. A tenant deleted while the other
    keeps serving stops answering at once, its id comes back with the next
    tenant added, and that new tenant starts from nothing."""
    net = mqnet
    mqdaemon.start()
    assert [p["name"] for p in attached_programs(net.if_host, net.ns_host)] == ["isolane_steer"]
    with Client(mqdaemon.socket) as c:
        st = c.call("daemon.status")
        assert st["interfaces"][0]["queues"] == [0, 1] and st["interfaces"][0]["mode"] == "native"
        a = c.call("tenant.add", name="a", owner="root", share=0.4, cap_us=50,
                   handler="udp_echo", rules=[{"ip_dst": Q_H_IP, "proto": "udp", "dport": 7}])
        c.call("tenant.add", name="b", owner="root", share=0.4, cap_us=50, handler="udp_echo",
               rules=[{"ip_dst": Q_H_IP, "proto": "udp", "dport": 9}])
        net.drain()
        for q in (0, 1):
            for i in range(3):
                assert echoed_on(net, q, 5000 + q, 7, b"a on queue %d #%d" % (q, i)), (q, i)
                assert echoed_on(net, q, 5100 + q, 9, b"b on queue %d #%d" % (q, i)), (q, i)
        by_name = {s["name"]: s for s in c.call("stats")["tenants"]}
        assert by_name["a"]["rx"] == by_name["a"]["tx"] == 6
        assert by_name["b"]["rx"] == by_name["b"]["tx"] == 6

        assert c.call("tenant.del", tenant="a") == {"deleted": "a"}
        for q in (0, 1):
            assert not echoed_on(net, q, 5200 + q, 7, b"a is gone %d" % q)
            assert echoed_on(net, q, 5300 + q, 9, b"b still here %d" % q)

        again = c.call("tenant.add", name="a2", owner="root", share=0.4, cap_us=50,
                       handler="udp_echo", rules=[{"ip_dst": Q_H_IP, "proto": "udp", "dport": 7}])
        assert again["id"] == a["id"]
        for q in (0, 1):
            assert echoed_on(net, q, 5400 + q, 7, b"a2 on queue %d" % q)
        by_name = {s["name"]: s for s in c.call("stats")["tenants"]}
        assert by_name["a2"]["rx"] == by_name["a2"]["tx"] == 2  # nothing of a's
        assert by_name["b"]["rx"] == by_name["b"]["tx"] == 8
    assert mqdaemon.stop() == 0
    assert attached_programs(net.if_host, net.ns_host) == []
