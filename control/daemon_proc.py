"""A throw-away isolaned in a child process: its own state directory,
socket and config, started and awaited through sd_notify (as systemd would),
stopped with SIGTERM or killed. For the tests, the benchmarks and demos.

    with LocalDaemon() as d:
        Client(d.socket).call("daemon.status")
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def interface_toml(ifname: str, netns: str | None = None, queues=(0,), mode: str = "skb") -> str:
    """The `[[interfaces]]` table of an afxdp daemon's config (for
    LocalDaemon's extra_toml); `queues` is a list of indexes or a count."""
    queues = list(queues) if not isinstance(queues, int) else queues
    lines = ["[[interfaces]]", f"ifname = {json.dumps(ifname)}", f"queues = {json.dumps(queues)}",
             f"mode = {json.dumps(mode)}"]
    if netns:
        lines.append(f"netns = {json.dumps(netns)}")
    return "\n" + "\n".join(lines) + "\n"


class DaemonFailed(RuntimeError):
    """isolaned exited or never said READY=1; the message carries its log's tail."""


class LocalDaemon:
    def __init__(self, root: str | os.PathLike | None = None, *, metrics: str = "",
                 admin_group: str = "isolane", policy: str = "cycles", core: int | None = None,
                 backend: str = "mem",
                 log_level: str = "info", extra_toml: str = ""):
        # the socket's directory must be searchable by the unprivileged
        # users the tests connect as; the state stays root-only
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="isl-daemon-"))
        self._own_root = root is None
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.state_dir = self.root / "state"
        self.socket = str(self.root / "isolaned.sock")
        self.log_path = self.root / "isolaned.log"
        self.config_path = self.root / "isolaned.toml"
        if core is None:
            core = max(os.sched_getaffinity(0))  # the loop and the idle generator share it
        self.config_path.write_text(
            f'[daemon]\nstate_dir = "{self.state_dir}"\nsocket = "{self.socket}"\n'
            f'admin_group = "{admin_group}"\nmetrics = "{metrics}"\nlog_level = "{log_level}"\n'
            f'[datapath]\nbackend = "{backend}"\npolicy = "{policy}"\ncores = [{core}]\n{extra_toml}')
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> "LocalDaemon":
        notify_path = self.root / "notify.sock"
        if notify_path.exists():
            notify_path.unlink()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        env = dict(os.environ, NOTIFY_SOCKET=str(notify_path))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "control.daemon", "--config", str(self.config_path),
             "--foreground"], stdout=log, stderr=log, env=env,
            cwd=str(Path(__file__).resolve().parent.parent))
        log.close()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                notify.settimeout(0.2)
                try:
                    msg = notify.recv(4096).decode()
                except socket.timeout:
                    msg = ""
                if "READY=1" in msg:
                    self.ready_message = msg
                    return self
                if self.proc.poll() is not None:
                    raise DaemonFailed(f"isolaned exited with {self.proc.returncode}:\n"
                                       + self.log_tail())
                if time.monotonic() > deadline:
                    self.kill()
                    raise DaemonFailed("isolaned did not say READY=1 in time:\n" + self.log_tail())
        finally:
            notify.close()
            notify_path.unlink(missing_ok=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonFailed("isolaned did not stop on SIGTERM:\n" + self.log_tail())

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
