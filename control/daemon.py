"""isolaned: the daemon that runs isolane's datapath for its tenants.

    isolaned [--config /etc/isolane/isolaned.toml] [--foreground]

Start-up, in this order: read the config, open the state (sqlite, WAL),
build the datapath and its backend, restore every tenant, rule and program
(each program re-verified in the kernel), start the loop, and only then open
the control socket (JSON-RPC 2.0, one object per line; the contract is
/work/notes/daemon_api.md) and the metrics endpoint, and tell systemd
READY=1. SIGTERM or SIGINT: the socket goes first (file removed), then the
slow path, the steering program (XDP detached) and the datapath.

Logs are JSON lines on stderr (journald keeps them as they are).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("isolaned")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def sd_notify(message: str) -> bool:
    """Tells systemd (Type=notify) our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("sd_notify %r failed: %s", message, e)
        return False


class Daemon:
    def __init__(self, cfg):
        self.cfg = cfg
        self.state = self.plane = self.api = self.server = self.metrics = None
        self._stop = threading.Event()

    def start(self) -> None:
        from . import auth
        from .api import Api
        from .plane import Plane
        from .rpc import Server
        from .state import State

        cfg = self.cfg
        t0 = time.monotonic()
        self.state = State(cfg.state_dir)
        self.plane = Plane(cfg)
        keep_off_core(self.plane.dp.core)
        self.plane.open_backend()
        self.plane.attach_slowpath(cfg.state_dir)  # HOOK: control.slowpath, when present
        gid = auth.admin_gid(cfg.admin_group)
        if gid is None:
            log.warning("admin group %r does not exist: only root administers tenants",
                        cfg.admin_group)
        self.api = Api(cfg, self.state, self.plane, gid, str(cfg.socket))
        self.api.restore()  # before the loop runs and before anyone may connect
        self.plane.start()
        self.server = Server(str(cfg.socket), self.api.dispatch,
                             lambda sock: auth.identify(sock, gid))
        self.server.open()
        if cfg.metrics_address:
            from .metrics import serve

            live = lambda: {t["id"]: t["name"] for t in self.state.tenants()}  # noqa: E731
            self.metrics, _ = serve(cfg.metrics_address, self.plane, live)
        threading.Thread(target=self._sampler, name="maintenance", daemon=True).start()
        log.info("serving socket=%s backend=%s policy=%s state=%s startup_ms=%.0f", cfg.socket,
                 cfg.backend, cfg.policy, cfg.state_dir, (time.monotonic() - t0) * 1e3)
        sd_notify(f"READY=1\nSTATUS=serving {cfg.socket}\nMAINPID={os.getpid()}")

    def _sampler(self) -> None:
        """Once a second the per-tenant rates; every 10 s a WAL checkpoint."""
        ticks = 0
        while not self._stop.wait(1.0):
            ticks += 1
            try:
                self.plane.sample_rates()
                if ticks % 10 == 0:
                    self.state.checkpoint()
            except Exception as e:  # never fatal: the next tick tries again
                log.debug("maintenance: %s", e)

    def wait(self) -> None:
        while not self._stop.wait(3600):
            pass

    def stop(self, *_):
        self._stop.set()

    def close(self) -> None:
        sd_notify("STOPPING=1")
        if self.server is not None:
            self.server.close()  # no new requests; the socket file is gone
        if self.metrics is not None:
            self.metrics.shutdown()
        if self.plane is not None:
            if self.state is not None:
                with self.state.exclusive():  # a change in flight ends first
                    self.plane.close()
            else:
                self.plane.close()
        if self.state is not None:
            self.state.close()
        log.info("stopped")


def keep_off_core(core: int) -> None:
    """The fast path busy-polls `core`. The daemon's own threads and the
    compilers it runs for `prog.load` (bcc's clang, cc for aot: seconds of
    CPU) would take that core from the loop and stretch every tenant's
    tail, so they run on the other cores we may use, when there are any
    (threads and children made from now on inherit this mask; the loop
    thread pins itself)."""
    others = os.sched_getaffinity(0) - {core}
    if others:
        os.sched_setaffinity(0, others)
        log.info("daemon threads and compilers on cores %s, the fast path alone on %d",
                 sorted(others), core)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="isolaned", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="TOML config (default /etc/isolane/isolaned.toml)")
    parser.add_argument("--foreground", action="store_true",
                        help="run in the foreground (the only mode: systemd or a shell "
                             "supervises it; accepted for clarity)")
    args = parser.parse_args(argv)

    from .daemon_config import DaemonConfigError, load

    try:
        cfg = load(args.config)
    except DaemonConfigError as e:
        print(f"isolaned: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level)
    daemon = Daemon(cfg)
    signal.signal(signal.SIGTERM, daemon.stop)
    signal.signal(signal.SIGINT, daemon.stop)
    try:
        daemon.start()
    except Exception as e:
        log.error("start-up failed: %s: %s", type(e).__name__, e, exc_info=True)
        daemon.close()
        return 1
    daemon.wait()
    daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
