"""isolaned across restarts: a clean stop (SIGTERM) and a kill -9, also in
the middle of updates and of a program load. Everything acknowledged comes
back, re-verified, and nothing half-written ever does. Also the config
file's errors and the clean shutdown's promises (socket file gone).
"""
from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from control.client import Client, DaemonUnreachable, RpcError
from control.daemon_proc import LocalDaemon

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="isolaned needs root (bpf, XDP)")]

ROOT = Path(__file__).resolve().parent.parent
UDP_ECHO = (ROOT / "tenants/udp_echo/handler.c").read_text()
KV = (ROOT / "tenants/kv/handler.c").read_text()


@pytest.fixture
def daemon(tmp_path):
    d = LocalDaemon(tmp_path / "d")
    yield d
    d.cleanup()


def _db(d: LocalDaemon):
    db = sqlite3.connect(d.state_dir / "state.db")
    db.row_factory = sqlite3.Row
    return db


def test_clean_stop_removes_socket_and_restores_everything(daemon):
    daemon.start()
    with Client(daemon.socket) as c:
        a = c.call("tenant.add", name="pa", owner="root", share=0.3, cap_us=30, handler="echo",
                   rules=[{"ip_dst": "10.9.0.1", "proto": "udp", "dport": 9}])
        c.call("tenant.add", name="pb", owner="uid:1234", share=0.1, cap_us=10)
        loaded = c.call("prog.load", tenant="pa", source=UDP_ECHO, name="echo_a")
        before = c.call("tenant.list")
    assert daemon.stop() == 0
    assert not os.path.exists(daemon.socket)
    assert '"stopped"' in daemon.log_text()

    daemon.start()
    with Client(daemon.socket) as c:
        after = c.call("tenant.list")
        assert after == before
        prog = c.call("prog.show", tenant="pa")
        assert prog["active"] is True and prog["sha256"] == loaded["sha256"]
        assert prog["source"] == UDP_ECHO
        assert c.call("daemon.status")["tenants"] == 2
        assert c.call("tenant.show", tenant=a["id"])["stats"]["rx"] == 0
    assert "restored tenants=2 programs=1" in daemon.log_text()


def test_kill9_keeps_every_acknowledged_change(daemon):
    daemon.start()
    acked = []
    with Client(daemon.socket) as c:
        c.call("tenant.add", name="k", owner="root", share=0.001, cap_us=10)
        stop_at = time.monotonic() + random.uniform(0.5, 1.5)
        killer = threading.Timer(stop_at - time.monotonic(), daemon.kill)
        killer.start()
        i = 1
        try:
            while True:
                share = round(0.001 * (i + 1), 3)
                c.call("tenant.set", tenant="k", share=share,
                       rules=[{"dport": 1000 + i}])
                acked.append(share)
                i += 1
        except (DaemonUnreachable, RpcError, OSError):
            pass
        killer.join()
    assert len(acked) > 5, "too few updates before the kill to mean anything"
    assert _db(daemon).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    daemon.start()
    with Client(daemon.socket) as c:
        t = c.call("tenant.show", tenant="k")
    # the last acknowledged change, or the one in flight at the kill, whole
    assert t["share"] in (acked[-1], round(acked[-1] + 0.001, 3))
    step = round(t["share"] / 0.001) - 1
    assert t["rules"] == [{"dport": 1000 + step}]


def test_kill9_during_prog_load_leaves_old_or_new_whole(daemon):
    daemon.start()
    with Client(daemon.socket) as c:
        c.call("tenant.add", name="pl", owner="root", share=0.1, cap_us=10)
        old = c.call("prog.load", tenant="pl", source=UDP_ECHO, name="old")
        t0 = time.monotonic()
        new = c.call("prog.load", tenant="pl", source=KV, name="new")
        build_s = time.monotonic() - t0
    for attempt in range(4):
        # reload the other one and kill somewhere inside the build/commit
        with Client(daemon.socket) as c:
            current = c.call("prog.show", tenant="pl")
        src, name = (UDP_ECHO, "old") if current["name"] == "new" else (KV, "new")

        def load():
            try:
                with Client(daemon.socket) as c2:
                    c2.call("prog.load", tenant="pl", source=src, name=name)
            except (DaemonUnreachable, RpcError, OSError):
                pass

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(build_s * (0.3 + 0.35 * attempt))
        daemon.kill()
        loader.join()
        db = _db(daemon)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT label, source, source_sha256 FROM programs").fetchall()
        db.close()
        assert len(rows) == 1
        label, source, sha = rows[0]
        assert (label, sha) in {("old", old["sha256"]), ("new", new["sha256"])}
        assert source == (UDP_ECHO if label == "old" else KV)  # never a mix
        daemon.start()
        with Client(daemon.socket) as c:
            shown = c.call("prog.show", tenant="pl")
            assert shown["name"] == label and shown["active"] is True
    # scratch files of the builds the kills interrupted are gone after a start
    assert list((daemon.state_dir / "build").iterdir()) == []


def test_restore_reports_a_program_that_no_longer_verifies(daemon):
    daemon.start()
    with Client(daemon.socket) as c:
        c.call("tenant.add", name="rv", owner="root", share=0.1, cap_us=10)
        c.call("prog.load", tenant="rv", source=UDP_ECHO)
    daemon.stop()
    # what a kernel upgrade that rejects the program would look like
    db = _db(daemon)
    with db:
        db.execute("UPDATE programs SET source = ?", ("int f(struct xdp_md *c) { return *(int *)0; }",))
    db.close()
    daemon.start()
    with Client(daemon.socket) as c:
        p = c.call("prog.show", tenant="rv")
        assert p["active"] is False and "rejected at restore" in p["error"]
        assert c.call("tenant.show", tenant="rv")["handler"] == "drop"  # its fallback runs
    assert "no longer verifies" in daemon.log_text()


@pytest.mark.parametrize("toml, words", [
    ('[daemon]\nsocket = 3\n', "daemon.socket"),
    ('[daemon]\nsokcet = "/x"\n', "daemon.sokcet: unknown key"),
    ('[datapath]\nbackend = "dpdk"\n', "datapath.backend"),
    ('[datapath]\npolicy = "lottery"\n', "datapath.policy"),
    ('[datapath]\ncores = [99]\n', "datapath.cores"),
    ('[daemon]\nmetrics = "localhost"\n', "daemon.metrics"),
    ('[tenant_defaults]\nqueue_cap = 100\n', "tenant_defaults.queue_cap"),
    ('[datapath]\nbackend = "afxdp"\n', "interfaces"),
    ('[[interfaces]]\nifname = "eth0"\nmode = "turbo"\n', "interfaces[0].mode"),
    ('this is not toml', "not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, toml, words):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    out = subprocess.run([sys.executable, "-m", "control.daemon", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2
    assert words in out.stderr and str(cfg) in out.stderr


def test_second_daemon_on_the_same_socket_refuses(daemon):
    daemon.start()
    other = LocalDaemon(daemon.root / "other")
    other.config_path.write_text(daemon.config_path.read_text().replace(
        str(daemon.state_dir), str(other.state_dir)))
    try:
        with pytest.raises(Exception, match="already serves"):
            other.start(timeout_s=60)
    finally:
        other.cleanup()
    with Client(daemon.socket) as c:
        assert c.call("daemon.status")["pid"] == daemon.pid
