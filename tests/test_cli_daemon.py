"""The `isolane` commands that talk to isolaned, run against the real daemon
(control.daemon, mem backend, in a temporary state directory): tenant and
program management, stats, top, daemon status, and the exit codes people
and scripts rely on (0 ok, 1 daemon error, 2 usage, 3 rejected, 4
unreachable)."""
from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from control.cli import main
from control.client import Client, DaemonUnreachable
from control.tenant_cli import format_rule, parse_rule

pytestmark = pytest.mark.integration  # the daemon verifies programs in the kernel (root)

ROOT = Path(__file__).resolve().parent.parent
TENANTS = ROOT / "tenants"
ISOLANE = ROOT / ".venv" / "bin" / "isolane"
BAD_C = ("int bad(struct xdp_md *ctx) {\n"
         "  void *data = (void *)(long)ctx->data;\n"
         "  return *(unsigned char *)(data + 100);\n}\n")  # no bounds check: the verifier says no


@contextlib.contextmanager
def running_isolaned():
    """A real isolaned (mem backend) on a unix socket in a temporary directory,
    as (socket path, process). The directory is open to everyone (pytest's
    are 0700) so that the CLI run as another user reaches the socket and the
    daemon, not the file mode, decides what it may do."""
    if os.geteuid() != 0:
        pytest.skip("isolaned verifies programs in the kernel: needs root")
    tmp = Path(tempfile.mkdtemp(prefix="isl-cli-"))
    tmp.chmod(0o755)
    sock = tmp / "isolaned.sock"
    config = tmp / "isolaned.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp / "state"}"\nsocket = "{sock}"\n'
                      f'metrics = ""\nlog_level = "warning"\n\n'
                      f'[datapath]\nbackend = "mem"\npolicy = "cycles"\n')
    log = open(tmp / "isolaned.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "control.daemon", "--config", str(config)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(str(sock), timeout_s=5) as c:
                    c.call("daemon.status")
                break
            except DaemonUnreachable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"isolaned did not come up (exit {proc.poll()}):\n{log.read()}")
                time.sleep(0.1)
        yield str(sock), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def isolaned():
    """The daemon most tests share; its socket path."""
    with running_isolaned() as (sock, _):
        yield sock


def isolane(sock, *args):
    """Runs the CLI in-process against `sock`; stdout and stderr kept apart."""
    return CliRunner().invoke(main, ["--socket", str(sock), *[str(a) for a in args]],
                              catch_exceptions=False)


def as_nobody(sock, *args):
    """The CLI as a subprocess run by `nobody` (uid 65534, no other groups)."""
    return subprocess.run([str(ISOLANE), "--socket", sock, *[str(a) for a in args]],
                          capture_output=True, text=True, user=65534, group=65534,
                          extra_groups=[], cwd="/", timeout=120)


def as_json(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def add(sock, name, *extra):
    return isolane(sock, "tenant", "add", name, "--owner", "root", "--share", "0.3",
                   "--cap-us", "50", *extra)


# ---- daemon status

def test_daemon_status_says_who_we_are(isolaned):
    st = as_json(isolane(isolaned, "daemon", "status", "-j"))
    assert st["pid"] > 0 and st["backend"] == "mem" and st["policy"] == "cycles"
    assert st["socket"] == isolaned
    assert st["caller"]["uid"] == 0 and st["caller"]["role"] == "admin"
    human = isolane(isolaned, "daemon", "status")
    assert human.exit_code == 0
    assert "isolaned running" in human.stdout and "role admin" in human.stdout


def test_global_json_flag_equals_the_commands_own(isolaned):
    before = as_json(isolane(isolaned, "-j", "daemon", "status"))
    after = as_json(isolane(isolaned, "daemon", "status", "--json"))
    assert before.keys() == after.keys() and before["pid"] == after["pid"]


# ---- tenants

def test_tenant_add_list_show_set_del(isolaned):
    r = add(isolaned, "cli-web", "--rule", "ip=10.99.0.2,proto=udp,port=7",
            "--rule", "ip=10.99.0.3,proto=tcp,port=80", "--handler", "echo", "--queue-cap", "512")
    assert r.exit_code == 0, r.stderr
    assert "added tenant cli-web" in r.stdout and "ip=10.99.0.2,proto=udp,port=7" in r.stdout

    listed = {t["name"]: t for t in as_json(isolane(isolaned, "tenant", "list", "-j"))}
    web = listed["cli-web"]
    assert web["share"] == pytest.approx(0.3) and web["cap_us"] == pytest.approx(50)
    assert web["handler"] == "echo" and web["queue_cap"] == 512 and web["program"] is None
    assert {"ip_dst": "10.99.0.2", "proto": "udp", "dport": 7} in [
        {k: v for k, v in rule.items() if v is not None} for rule in web["rules"]]
    assert len(web["rules"]) == 2
    table = isolane(isolaned, "tenant", "list")
    assert table.exit_code == 0 and "cli-web" in table.stdout and "SHARE" in table.stdout

    shown = as_json(isolane(isolaned, "tenant", "show", "cli-web", "-j"))
    assert shown["name"] == "cli-web" and shown["stats"]["name"] == "cli-web"
    by_id = as_json(isolane(isolaned, "tenant", "show", str(web["id"]), "-j"))
    assert by_id["name"] == "cli-web"
    human = isolane(isolaned, "tenant", "show", "cli-web")
    assert human.exit_code == 0
    assert "0.3 of each core" in human.stdout and "throttles" in human.stdout

    changed = as_json(isolane(isolaned, "tenant", "set", "cli-web", "--share", "0.5",
                              "--cap-us", "80", "--rule", "ip=10.99.0.4,proto=udp,port=9", "-j"))
    assert changed["share"] == pytest.approx(0.5) and changed["cap_us"] == pytest.approx(80)
    assert [r["dport"] for r in changed["rules"]] == [9]  # --rule replaces the set
    cleared = as_json(isolane(isolaned, "tenant", "set", "cli-web", "--clear-rules", "-j"))
    assert cleared["rules"] == [] and cleared["share"] == pytest.approx(0.5)

    gone = isolane(isolaned, "tenant", "del", "cli-web")
    assert gone.exit_code == 0 and "deleted tenant cli-web" in gone.stdout
    assert "cli-web" not in [t["name"] for t in
                             as_json(isolane(isolaned, "tenant", "list", "-j"))]


def test_tenant_add_takes_the_daemons_defaults_for_what_it_is_not_given(isolaned):
    t = as_json(isolane(isolaned, "tenant", "add", "cli-dflt", "--owner", "root", "-j"))
    try:  # isolaned's built-in [tenant_defaults]: the test config sets none
        assert (t["share"], t["cap_us"], t["queue_cap"], t["handler"], t["rules"]) == \
            (pytest.approx(0.1), pytest.approx(100), 1024, "drop", [])
    finally:
        isolane(isolaned, "tenant", "del", "cli-dflt")


def test_daemon_errors_exit_1_with_the_daemons_message(isolaned):
    missing = isolane(isolaned, "tenant", "show", "cli-nobody")
    assert missing.exit_code == 1
    assert "cli-nobody" in missing.stderr and missing.stdout == ""

    assert add(isolaned, "cli-twice").exit_code == 0
    try:
        again = add(isolaned, "cli-twice")
        assert again.exit_code == 1 and "cli-twice" in again.stderr
        err = isolane(isolaned, "-j", "tenant", "add", "cli-twice", "--owner", "root",
                      "--share", "0.1", "--cap-us", "5")
        assert err.exit_code == 1
        assert json.loads(err.stdout)["error"]["code"] == -32004  # conflict, for scripts
    finally:
        isolane(isolaned, "tenant", "del", "cli-twice")
    assert isolane(isolaned, "tenant", "del", "cli-twice").exit_code == 1


def test_not_admin_is_told_permission_denied(isolaned):
    """A user outside the admin group may not add tenants: exit 1, and the
    daemon's reason on stderr (the CLI run as `nobody`)."""
    r = as_nobody(isolaned, "tenant", "add", "cli-nope", "--owner", "root", "--share", "0.1",
                  "--cap-us", "5")
    assert r.returncode == 1, r.stderr
    assert "permission denied" in r.stderr.lower()


def test_a_tenant_owner_loads_its_own_program_and_sees_only_its_tenant(isolaned):
    assert add(isolaned, "cli-mine").exit_code == 0  # owned by root
    r = isolane(isolaned, "tenant", "add", "cli-theirs", "--owner", "uid:65534",
                "--share", "0.2", "--cap-us", "20")
    assert r.exit_code == 0, r.stderr
    try:
        listed = as_nobody(isolaned, "tenant", "list", "-j")
        assert listed.returncode == 0, listed.stderr
        assert [t["name"] for t in json.loads(listed.stdout)] == ["cli-theirs"]
        loaded = as_nobody(isolaned, "prog", "load", "cli-theirs", TENANTS / "hasher", "-j")
        assert loaded.returncode == 0, loaded.stderr
        p = json.loads(loaded.stdout)
        assert p["name"] == "hasher" and p["bound_insns"] > 1024  # tenant.toml's loop budget
        other = as_nobody(isolaned, "prog", "load", "cli-mine", TENANTS / "udp_echo")
        assert other.returncode == 1 and "cli-mine" in other.stderr
        st = as_nobody(isolaned, "stats", "-j")
        assert [t["name"] for t in json.loads(st.stdout)["tenants"]] == ["cli-theirs"]
        status = json.loads(as_nobody(isolaned, "daemon", "status", "-j").stdout)
        assert status["caller"]["role"] == "tenant" and status["caller"]["tenants"] == \
            ["cli-theirs"]
    finally:
        isolane(isolaned, "tenant", "del", "cli-theirs")
        isolane(isolaned, "tenant", "del", "cli-mine")


# ---- programs

def test_prog_load_list_show_unload(isolaned):
    assert add(isolaned, "cli-echo", "--rule", "ip=10.99.0.2,proto=udp,port=17").exit_code == 0
    try:
        loaded = as_json(isolane(isolaned, "prog", "load", "cli-echo", TENANTS / "udp_echo", "-j"))
        assert loaded["tenant"] == "cli-echo" and loaded["name"] == "udp_echo"
        assert loaded["engine"] == "aot" and loaded["bound_insns"] >= loaded["insns"] > 0
        source = (TENANTS / "udp_echo" / "handler.c").read_text()
        import hashlib
        assert loaded["sha256"] == hashlib.sha256(source.encode()).hexdigest()

        human = isolane(isolaned, "prog", "load", "cli-echo", TENANTS / "udp_echo" / "handler.c",
                        "--engine", "interp", "--function", "udp_echo")
        assert human.exit_code == 0, human.stderr
        assert "loaded" in human.stdout and "interp" in human.stdout

        progs = as_json(isolane(isolaned, "prog", "list", "-j"))
        assert [p["engine"] for p in progs if p["tenant"] == "cli-echo"] == ["interp"]
        assert "cli-echo" in isolane(isolaned, "prog", "list").stdout
        shown = isolane(isolaned, "prog", "show", "cli-echo")
        assert shown.exit_code == 0 and loaded["sha256"] in shown.stdout
        assert isolane(isolaned, "prog", "show", "cli-echo", "--source").stdout == source
        tenant = as_json(isolane(isolaned, "tenant", "show", "cli-echo", "-j"))
        assert tenant["program"]["sha256"] == loaded["sha256"]

        unloaded = as_json(isolane(isolaned, "prog", "unload", "cli-echo", "-j"))
        assert unloaded["unloaded"]
        assert as_json(isolane(isolaned, "tenant", "show", "cli-echo", "-j"))["program"] is None
        assert isolane(isolaned, "prog", "show", "cli-echo").exit_code == 1  # no program
    finally:
        isolane(isolaned, "tenant", "del", "cli-echo")


def test_rejected_program_exits_3_with_the_verifiers_reason(isolaned, tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text(BAD_C)
    assert add(isolaned, "cli-bad").exit_code == 0
    try:
        r = isolane(isolaned, "prog", "load", "cli-bad", bad)
        assert r.exit_code == 3
        assert "rejected" in r.stderr
        assert "invalid access to packet" in r.stderr  # the verifier's own log line
        j = isolane(isolaned, "prog", "load", "cli-bad", bad, "-j")
        assert j.exit_code == 3
        error = json.loads(j.stdout)["error"]
        assert error["code"] == -32001 and "invalid access to packet" in error["data"]["log"]
        # nothing was swapped in
        assert as_json(isolane(isolaned, "tenant", "show", "cli-bad", "-j"))["program"] is None
    finally:
        isolane(isolaned, "tenant", "del", "cli-bad")


def test_oversized_program_is_refused_with_the_limit(isolaned, tmp_path):
    big = tmp_path / "big.c"
    big.write_text("/* padding */\n" * 20_000 + BAD_C)  # ~300 KiB, over the 256 KiB limit
    assert add(isolaned, "cli-big").exit_code == 0
    try:
        r = isolane(isolaned, "prog", "load", "cli-big", big, "-j")
        assert r.exit_code == 1, r.stderr
        assert json.loads(r.stdout)["error"]["code"] == -32005  # too large, not compiled
        assert "too large" in r.stderr or "256" in r.stderr
    finally:
        isolane(isolaned, "tenant", "del", "cli-big")


# ---- stats and top

def test_stats_json_parses_and_names_every_tenant(isolaned):
    for name in ("cli-s1", "cli-s2"):
        assert add(isolaned, name).exit_code == 0
    try:
        st = as_json(isolane(isolaned, "stats", "-j"))
        assert st["uptime_s"] >= 0 and isinstance(st["global"], dict)
        rows = {t["name"]: t for t in st["tenants"]}
        assert {"cli-s1", "cli-s2"} <= rows.keys()
        for key in ("rx", "tx", "passed", "drops", "cycles", "balance_cycles", "throttles",
                    "pps", "latency_us", "slowpath"):
            assert key in rows["cli-s1"], key
        one = as_json(isolane(isolaned, "stats", "cli-s2", "-j"))
        assert [t["name"] for t in one["tenants"]] == ["cli-s2"]
        table = isolane(isolaned, "stats")
        assert table.exit_code == 0 and "cli-s1" in table.stdout and "THROTTLES" in table.stdout
        assert isolane(isolaned, "stats", "cli-nobody").exit_code == 1
    finally:
        for name in ("cli-s1", "cli-s2"):
            isolane(isolaned, "tenant", "del", name)


def test_top_once(isolaned):
    assert add(isolaned, "cli-top").exit_code == 0
    try:
        r = isolane(isolaned, "top", "--once")
        assert r.exit_code == 0, r.stderr
        assert "cli-top" in r.stdout and "CYCLES %" in r.stdout and "P99 us" in r.stdout
        j = isolane(isolaned, "top", "--once", "-j")
        assert j.exit_code == 0
        frames = [json.loads(line) for line in j.stdout.splitlines()]
        assert len(frames) == 1
        rows = {t["name"]: t for t in frames[0]["tenants"]}
        assert set(rows["cli-top"]) >= {"pps", "cycle_share", "balance_cycles", "throttles",
                                        "p99_us"}
        shares = [t["cycle_share"] for t in frames[0]["tenants"]]
        assert all(0 <= s <= 1 for s in shares)
        assert sum(shares) == pytest.approx(1.0) or sum(shares) == 0
    finally:
        isolane(isolaned, "tenant", "del", "cli-top")


def test_top_live_ends_cleanly_on_ctrl_c(isolaned):
    """On a terminal, top redraws until SIGINT, then exits 0 without a
    traceback."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on a pseudo-terminal
        os.execv(str(ISOLANE), [str(ISOLANE), "--socket", isolaned, "top", "--interval", "0.2"])
    out = b""
    deadline = time.monotonic() + 30
    while out.count(b"TENANT") < 2 and time.monotonic() < deadline:  # two frames drawn
        if select.select([fd], [], [], 1.0)[0]:
            out += os.read(fd, 65536)
    os.kill(pid, signal.SIGINT)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "isolane top" in text and "Traceback" not in text


def test_top_piped_prints_one_table_per_refresh(isolaned):
    """Not on a terminal (and without -j), top runs in batch mode like `top -b`."""
    top = subprocess.Popen([str(ISOLANE), "--socket", isolaned, "top", "--interval", "0.1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    titles = 0
    while titles < 3:
        line = top.stdout.readline()
        assert line, top.stderr.read()
        titles += line.startswith("isolane top")
    top.send_signal(signal.SIGINT)
    _, err = top.communicate(timeout=30)
    assert top.returncode == 0 and "Traceback" not in err


def test_top_exits_4_when_the_daemon_goes_away():
    """A JSON-lines stream ends with the error as one more line, and exit 4."""
    with running_isolaned() as (sock, proc):
        top = subprocess.Popen([str(ISOLANE), "--socket", sock, "top", "--interval", "0.1",
                                "-j"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = json.loads(top.stdout.readline())  # top is running
        assert first["tenants"] == []
        proc.kill()
        out, err = top.communicate(timeout=30)
    assert top.returncode == 4, err
    last = json.loads(out.splitlines()[-1])
    assert last["error"]["name"] == "unreachable"
    assert "isolaned" in err


# ---- exit codes without a daemon, and usage errors

@pytest.mark.parametrize("args", [
    ["daemon", "status"], ["tenant", "list"], ["stats", "-j"], ["top", "--once"],
    ["prog", "list"], ["prog", "load", "web", str(TENANTS / "udp_echo")],
])
def test_unreachable_daemon_exits_4(tmp_path, args):
    r = isolane(tmp_path / "no-daemon.sock", *args)
    assert r.exit_code == 4
    assert "no isolaned at" in r.stderr and "no-daemon.sock" in r.stderr


def test_socket_comes_from_the_environment(isolaned, tmp_path):
    env = {**os.environ, "ISOLANE_SOCKET": isolaned}
    ok = subprocess.run([str(ISOLANE), "daemon", "status", "-j"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["socket"] == isolaned
    env["ISOLANE_SOCKET"] = str(tmp_path / "none.sock")
    down = subprocess.run([str(ISOLANE), "daemon", "status"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 4 and "none.sock" in down.stderr


@pytest.mark.parametrize("args", [
    ["tenant", "add", "x", "--share", "0.3", "--cap-us", "50"],                  # no --owner
    ["tenant", "add", "x", "--owner", "root", "--share", "1.5", "--cap-us", "5"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "0"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "5",
     "--rule", "ip=10.99.0.300,proto=udp"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "5",
     "--rule", "proto=sctp"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "5",
     "--rule", "port=70000"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "5",
     "--rule", "colour=red"],
    ["tenant", "add", "x", "--owner", "root", "--share", "0.1", "--cap-us", "5",
     "--handler", "forward"],
    ["tenant", "set", "x"],                                                      # nothing to set
    ["tenant", "set", "x", "--rule", "port=7", "--clear-rules"],
    ["prog", "load", "x"],                                                       # no SOURCE
    ["prog", "load", "x", "/nonexistent/handler.c"],
    ["prog", "load", "x", str(TENANTS / "udp_echo"), "--engine", "kernel"],
    ["top", "--interval", "0"],
    ["tenant", "frobnicate"],
])
def test_usage_errors_exit_2_before_asking_the_daemon(tmp_path, args):
    r = isolane(tmp_path / "no-daemon.sock", *args)  # 2, not 4: no daemon was asked
    assert r.exit_code == 2, (args, r.stdout, r.stderr)
    assert "Usage:" in r.stderr or "Error:" in r.stderr


@pytest.mark.parametrize("text, rule", [
    ("ip=10.99.0.2,proto=udp,port=7", {"ip_dst": "10.99.0.2", "proto": "udp", "dport": 7}),
    ("proto=TCP, port=80, vlan=0", {"proto": "tcp", "dport": 80, "vlan": 0}),
    ("vlan=4095", {"vlan": 4095}),
])
def test_rules_parse_to_the_contracts_objects_and_back(text, rule):
    assert parse_rule(text) == rule
    assert parse_rule(format_rule(rule)) == rule


@pytest.mark.parametrize("args, named", [
    (["--owner", "no-such-user-xyz"], "no-such-user-xyz"),   # no such user on this host
    (["--owner", "root", "--queue-cap", "1000"], "power of two"),
])
def test_daemon_invalid_params_exit_2(isolaned, args, named):
    """A value only the daemon can judge is a usage error too."""
    r = isolane(isolaned, "tenant", "add", "cli-invalid", *args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert named in r.stderr


def test_help_explains_every_command_with_an_example():
    runner = CliRunner()
    for path in (["tenant", "add"], ["tenant", "set"], ["tenant", "del"], ["tenant", "list"],
                 ["tenant", "show"], ["prog", "load"], ["prog", "unload"], ["prog", "list"],
                 ["prog", "show"], ["stats"], ["top"], ["daemon", "status"]):
        r = runner.invoke(main, [*path, "--help"])
        assert r.exit_code == 0
        assert "Example" in r.stdout and f"isolane {' '.join(path)}" in r.stdout, path
    assert "ISOLANE_SOCKET" in runner.invoke(main, ["--help"]).stdout
