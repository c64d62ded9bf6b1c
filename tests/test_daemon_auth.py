"""Who may do what, with real unix users: the callers are child processes
that setuid() to test users before connecting, so the daemon's SO_PEERCRED
(and SO_PEERGROUPS) sees the kernel's word about them. Tenant A can neither
see nor change tenant B; only root and the admin group manage tenants.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from control.client import Client
from control.daemon_proc import LocalDaemon

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates users, runs isolaned")]

USERS = ("isl-test-a", "isl-test-b", "isl-test-c")
GROUP_ADM, GROUP_TEAM = "isl-test-adm", "isl-test-team"
UDP_ECHO = (Path(__file__).resolve().parent.parent / "tenants/udp_echo/handler.c").read_text()

# The child's side: self-contained (no imports from the tree), one request per argv pair.
CHILD = r"""
import json, socket, sys
path, reqs = sys.argv[1], json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
f = s.makefile("rb")
out = []
for i, (method, params) in enumerate(reqs):
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode() + b"\n")
    out.append(json.loads(f.readline()))
print(json.dumps(out))
"""


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", name], check=True)
        return grp.getgrnam(name).gr_gid


def _ensure_user(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        name], check=True)
        return pwd.getpwnam(name).pw_uid


@pytest.fixture(scope="module")
def users():
    gids = {g: _ensure_group(g) for g in (GROUP_ADM, GROUP_TEAM)}
    uids = {u: _ensure_user(u) for u in USERS}
    return uids, gids


@pytest.fixture(scope="module")
def daemon(users):
    d = LocalDaemon(admin_group=GROUP_ADM)
    d.start()
    with Client(d.socket) as c:
        c.call("tenant.add", name="ta", owner="isl-test-a", share=0.2, cap_us=50,
               rules=[{"dport": 7101}])
        c.call("tenant.add", name="tb", owner="isl-test-b", share=0.2, cap_us=50,
               rules=[{"dport": 7102}])
        c.call("tenant.add", name="tteam", owner=f"group:{GROUP_TEAM}", share=0.1, cap_us=50)
        c.call("prog.load", tenant="tb", source=UDP_ECHO, name="b_echo")
    yield d
    assert d.stop() == 0
    d.cleanup()


def as_user(daemon, user: str, *reqs, groups=()):
    """Runs the requests as `user` (with these supplementary groups);
    returns the reply objects."""
    pw = pwd.getpwnam(user)
    out = subprocess.run([sys.executable, "-c", CHILD, daemon.socket, json.dumps(reqs)],
                         user=pw.pw_uid, group=pw.pw_gid,
                         extra_groups=[grp.getgrnam(g).gr_gid for g in groups],
                         capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def ok(reply):
    assert "result" in reply, reply
    return reply["result"]


def code(reply):
    assert "error" in reply, reply
    return reply["error"]["code"]


def test_peercred_identifies_the_user(daemon, users):
    uids, _ = users
    (st,) = as_user(daemon, "isl-test-a", ["daemon.status", {}])
    caller = ok(st)["caller"]
    assert caller["uid"] == uids["isl-test-a"] and caller["role"] == "tenant"
    assert caller["tenants"] == ["ta"]
    (st,) = as_user(daemon, "isl-test-c", ["daemon.status", {}])
    assert ok(st)["caller"]["role"] == "none" and ok(st)["caller"]["tenants"] == []


def test_tenant_a_sees_only_itself(daemon):
    r = as_user(daemon, "isl-test-a",
                ["tenant.list", {}], ["tenant.show", {"tenant": "ta"}],
                ["tenant.show", {"tenant": "tb"}], ["stats", {}], ["stats", {"tenant": "tb"}],
                ["prog.list", {}], ["prog.show", {"tenant": "tb"}],
                ["slowpath.info", {"tenant": "tb"}], ["slowpath.info", {"tenant": "ta"}])
    assert [t["name"] for t in ok(r[0])] == ["ta"]
    assert ok(r[1])["name"] == "ta" and "stats" in ok(r[1])
    assert code(r[2]) == -32002 and "tb" in r[2]["error"]["message"]
    assert [t["name"] for t in ok(r[3])["tenants"]] == ["ta"]
    assert "rx" not in ok(r[3])["global"]  # no figures of other tenants' traffic
    assert code(r[4]) == -32002
    assert ok(r[5]) == []  # tb's program is invisible
    assert code(r[6]) == -32002
    assert code(r[7]) == -32002
    assert ok(r[8])["path"].endswith("ta.sock")
    # by id too: B's id gives "not found", exactly as an id nobody has
    with Client(daemon.socket) as c:
        tb_id = c.call("tenant.show", tenant="tb")["id"]
    r = as_user(daemon, "isl-test-a", ["tenant.show", {"tenant": tb_id}],
                ["tenant.show", {"tenant": 250}])
    assert code(r[0]) == code(r[1]) == -32002
    assert r[0]["error"]["message"].replace(str(tb_id), "N") == \
        r[1]["error"]["message"].replace("250", "N")


def test_tenant_a_cannot_change_b_or_manage_tenants(daemon):
    r = as_user(daemon, "isl-test-a",
                ["prog.load", {"tenant": "tb", "source": UDP_ECHO}],
                ["prog.unload", {"tenant": "tb"}],
                ["tenant.set", {"tenant": "tb", "share": 0.9}],
                ["tenant.del", {"tenant": "tb"}],
                ["tenant.set", {"tenant": "ta", "share": 0.9}],
                ["tenant.add", {"name": "mine", "owner": "isl-test-a"}],
                ["tenant.del", {"tenant": "ta"}])
    assert code(r[0]) == code(r[1]) == -32002
    for reply in r[2:]:
        assert code(reply) == -32003
        assert "isl-test-a" in reply["error"]["message"] and "isl-test-adm" in reply["error"]["message"]
    with Client(daemon.socket) as c:
        tb = c.call("tenant.show", tenant="tb")
        assert tb["share"] == 0.2 and tb["program"]["name"] == "b_echo"
        assert c.call("tenant.show", tenant="ta")["share"] == 0.2


def test_owner_manages_own_programs(daemon):
    r = as_user(daemon, "isl-test-a",
                ["prog.load", {"tenant": "ta", "source": UDP_ECHO, "name": "a_echo",
                               "engine": "interp"}],
                ["prog.show", {"tenant": "ta"}], ["prog.list", {}],
                ["prog.unload", {"tenant": "ta"}])
    assert ok(r[0])["name"] == "a_echo" and ok(r[0])["engine"] == "interp"
    assert ok(r[1])["source"] == UDP_ECHO
    assert [p["tenant"] for p in ok(r[2])] == ["ta"]
    assert ok(r[3]) == {"unloaded": "ta"}
    # B's program was never touched
    (r,) = as_user(daemon, "isl-test-b", ["prog.show", {"tenant": "tb"}])
    assert ok(r)["name"] == "b_echo"


def test_group_owned_tenant_through_supplementary_groups(daemon):
    (r,) = as_user(daemon, "isl-test-c", ["tenant.list", {}], groups=[GROUP_TEAM])
    assert [t["name"] for t in ok(r)] == ["tteam"]
    (r,) = as_user(daemon, "isl-test-c", ["tenant.list", {}])
    assert ok(r) == []


def test_admin_group_member_manages_tenants(daemon):
    r = as_user(daemon, "isl-test-c",
                ["tenant.add", {"name": "byadm", "owner": "uid:4242", "share": 0.1, "cap_us": 20}],
                ["tenant.list", {}], ["tenant.del", {"tenant": "byadm"}],
                groups=[GROUP_ADM])
    assert ok(r[0])["owner"] == {"uid": 4242, "gid": None, "spec": "uid:4242"}
    assert {"ta", "tb", "tteam", "byadm"} <= {t["name"] for t in ok(r[1])}
    assert ok(r[2]) == {"deleted": "byadm"}


CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect(sys.argv[1])
    print("connected")
except PermissionError:
    print("denied")
"""


def test_slow_path_endpoint_belongs_to_its_tenant(daemon, users):
    uids, _ = users
    with Client(daemon.socket) as c:
        info = c.call("slowpath.info", tenant="ta")
    assert info["available"], "the daemon runs no slow path hub"
    st = os.stat(info["path"])
    assert st.st_uid == uids["isl-test-a"] and st.st_mode & 0o777 == 0o660

    def connect_as(user):
        pw = pwd.getpwnam(user)
        out = subprocess.run([sys.executable, "-c", CONNECT, info["path"]], user=pw.pw_uid,
                             group=pw.pw_gid, extra_groups=[], capture_output=True, text=True,
                             timeout=60, cwd="/")
        return out.stdout.strip()

    assert connect_as("isl-test-a") == "connected"
    assert connect_as("isl-test-b") == "denied"
