"""The tenant slow path outside the fast path: one endpoint per tenant.

The fast path copies what a tenant's handler passes (XDP_PASS) into the
tenant's slow-path ring and transmits what the tenant sends through it
(datapath: attach_slowpath, slowpath_read, slowpath_send). SlowPathHub is
the daemon's side: per tenant a unix socket the tenant owns, and one pump
thread that moves

    kind 1  passed packets          datapath -> tenant
    kind 2  ringbuf_output records  the tenant program's RINGBUF maps -> tenant
    kind 3  frames to transmit      tenant -> datapath (charged to its budget)

Endpoint: `state_dir/slowpath/<name>.sock`, AF_UNIX SOCK_SEQPACKET, owned by
the tenant (chown uid/gid), mode 0660, so only the tenant (and root) can
connect. One message per datagram: an 8-byte header
`struct.pack("<BxHI", kind, 0, length)` and the payload (docs: the slow-path
section of /work/notes/daemon_api.md, README "Tenant slow path").

Isolation: the pump never blocks on a tenant. A message that finds no
client connected, or a client whose socket buffer is full (it does not
read), is dropped and counted for that tenant alone; the other tenants'
messages still go out in the same round. What a tenant sends is held back,
never dropped, while its send ring is full (its budget is spent or the loop
is behind): its own socket then fills and its sender blocks.

SlowPathClient (control/slowpath_client.py, stdlib only, re-exported here) is
the tenant's side; tenants/kv/app.py is an example application.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import selectors
import socket
import stat
import threading
from pathlib import Path

from datapath.errors import ConfigError, IsolaneError, NotFoundError

from .slowpath_client import (HEADER, KIND_PASSED, KIND_RINGBUF, KIND_SEND, KINDS,  # noqa: F401
                              MAX_MESSAGE, SOCKET_BUFFER, SlowPathClient, pack, unpack)

SOCKET_MODE = 0o660
DIR_MODE = 0o711                # tenants reach their endpoint, cannot list others'
ENDPOINT_DIR = "slowpath"
PER_ROUND = 64                  # messages of each kind per tenant per pump round

log = logging.getLogger("isolane.slowpath")


@dataclasses.dataclass
class EndpointStats:
    delivered: int = 0       # messages (kinds 1 and 2) written to a client
    dropped: int = 0         # messages lost at the endpoint: no client, or it did not read
    sent: int = 0            # kind-3 frames handed to the datapath
    rejected: int = 0        # kind-3 messages refused (bad header, kind or frame length)
    clients: int = 0
    errors: int = 0          # pump rounds that failed (logged)


class _Endpoint:
    def __init__(self, tenant_id: int, name: str, path: Path, listener: socket.socket,
                 ringbufs: list, sndbuf: int):
        self.tenant_id, self.name, self.path = tenant_id, name, path
        self.sndbuf = sndbuf
        self.listener = listener
        self.ringbufs = ringbufs
        self.clients: list[socket.socket] = []
        self.held: bytes | None = None  # a frame the datapath's send ring had no room for
        self.stats = EndpointStats()


class SlowPathHub:
    """The slow-path endpoints of a datapath's tenants and the thread that
    pumps them. `datapath` is a datapath.Datapath; `state_dir` holds the
    `slowpath/` directory of endpoints. depth: each tenant's slow-path rings
    (frames); sndbuf: the bytes a client may leave unread (SO_SNDBUF of its
    connection; the kernel caps it at net.core.wmem_max) before it loses
    messages; poll_s: how often passed packets are looked for when idle."""

    def __init__(self, datapath, state_dir: str | os.PathLike, *, depth: int = 256,
                 poll_s: float = 0.001, sndbuf: int = SOCKET_BUFFER):
        self.dp = datapath
        self.dir = Path(state_dir) / ENDPOINT_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, DIR_MODE)
        self.depth = depth
        self.poll_s = poll_s
        self.sndbuf = sndbuf
        self._endpoints: dict[int, _Endpoint] = {}
        self._lock = threading.Lock()  # endpoints vs the pump's round
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="isolane-slowpath", daemon=True)
        self._thread.start()

    # ---- tenants ----

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.sock"

    def add_tenant(self, tenant_id: int, name: str, uid: int | None = None,
                   gid: int | None = None, ringbuf_maps=(), sndbuf: int | None = None) -> Path:
        """Attaches the tenant's slow path in the datapath and opens its
        endpoint, owned by uid/gid (None: left as root's). ringbuf_maps: the
        RINGBUF maps (datapath.ebpf_engine.Map) of the tenant's program,
        whose records go out as kind 2. sndbuf: the hub's unless given.
        Returns the endpoint's path."""
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"tenant name {name!r} cannot name an endpoint file")
        path = self.path(name)
        with self._lock:
            if tenant_id in self._endpoints:
                raise ConfigError(f"tenant {tenant_id} already has a slow-path endpoint",
                                  errno=errno.EEXIST)
            listener = self._listen(path, uid, gid)
            try:
                self.dp.attach_slowpath(tenant_id, self.depth)
            except BaseException:
                listener.close()
                path.unlink(missing_ok=True)
                raise
            ep = _Endpoint(tenant_id, name, path, listener, list(ringbuf_maps),
                           sndbuf or self.sndbuf)
            self._endpoints[tenant_id] = ep
            self._sel.register(listener, selectors.EVENT_READ, ep)
        self._wake()
        return path

    def set_ringbuf_maps(self, tenant_id: int, ringbuf_maps) -> None:
        """The tenant's program changed: read these RINGBUF maps from now on."""
        with self._lock:
            self._endpoint(tenant_id).ringbufs = list(ringbuf_maps)

    def remove_tenant(self, tenant_id: int) -> None:
        """Closes the endpoint (its clients see end of file) and detaches the
        tenant's slow path: its passed packets are dropped again."""
        with self._lock:
            ep = self._endpoint(tenant_id)
            del self._endpoints[tenant_id]
            self._close_endpoint(ep)
            try:
                self.dp.detach_slowpath(tenant_id)
            except NotFoundError:
                pass  # detached already, behind the hub's back

    def stats(self, tenant_id: int) -> dict:
        """The endpoint's counters, and `ring_dropped`: passed packets the
        datapath dropped because the tenant's slow-path ring was full."""
        with self._lock:
            ep = self._endpoint(tenant_id)
            out = dataclasses.asdict(ep.stats)
            out["clients"] = len(ep.clients)
        out["ring_dropped"] = self.dp.tenant_stats(tenant_id, latency=False).drops["slowpath_full"]
        out["path"] = str(self.path(ep.name))
        return out

    def close(self) -> None:
        """Stops the pump, closes every endpoint and detaches every slow path."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        self._thread.join()
        with self._lock:
            for tenant_id, ep in list(self._endpoints.items()):
                self._close_endpoint(ep)
                try:
                    self.dp.detach_slowpath(tenant_id)
                except IsolaneError:
                    pass  # the datapath is gone or the tenant was removed under us
            self._endpoints.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals ----

    def _endpoint(self, tenant_id: int) -> _Endpoint:
        ep = self._endpoints.get(tenant_id)
        if ep is None:
            raise NotFoundError(f"tenant {tenant_id} has no slow-path endpoint",
                                errno=errno.ENOENT)
        return ep

    @staticmethod
    def _listen(path: Path, uid: int | None, gid: int | None) -> socket.socket:
        try:  # a socket left by a daemon that died; never anything else
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(str(path))
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
            os.chmod(path, SOCKET_MODE)
            sock.listen(8)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            path.unlink(missing_ok=True)
            raise
        return sock

    def _close_endpoint(self, ep: _Endpoint) -> None:
        for s in [ep.listener, *ep.clients]:
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        ep.clients.clear()
        ep.path.unlink(missing_ok=True)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def _pump(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                busy = any([self._guarded_round(ep) for ep in list(self._endpoints.values())])
                held = any(ep.held is not None for ep in self._endpoints.values())
            if held and not busy:
                # a client's socket stays readable while its frame waits for
                # room in the send ring: sleep rather than select
                self._stop.wait(self.poll_s)
                continue
            # passed packets have no fd to wait on: poll them every poll_s,
            # and wake at once for a client's message or connection
            for key, _ in self._sel.select(0 if busy else self.poll_s):
                if key.fileobj is self._wake_r:
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass

    def _guarded_round(self, ep: _Endpoint) -> bool:
        """A round that cannot stop the pump: a failure (say, the tenant's
        slow path detached behind the hub's back) is logged and counted."""
        try:
            return self._round(ep)
        except (IsolaneError, OSError) as e:
            ep.stats.errors += 1
            if ep.stats.errors & (ep.stats.errors - 1) == 0:  # 1st, 2nd, 4th, ... time
                log.warning("slow path of tenant %s (%d): %s (%d times)", ep.name,
                            ep.tenant_id, e, ep.stats.errors)
            return False

    def _round(self, ep: _Endpoint) -> bool:
        """One round for one tenant: accept, datapath -> clients, clients ->
        datapath. True when it moved anything."""
        self._accept(ep)
        moved = 0
        for frame in self.dp.slowpath_read(ep.tenant_id, PER_ROUND):
            self._deliver(ep, pack(KIND_PASSED, frame))
            moved += 1
        for rb in ep.ringbufs:
            for _ in range(PER_ROUND):
                record = rb.read_message(MAX_MESSAGE)
                if record is None:
                    break
                self._deliver(ep, pack(KIND_RINGBUF, record))
                moved += 1
        return bool(moved) | self._take_sends(ep)

    def _accept(self, ep: _Endpoint) -> None:
        while True:
            try:
                conn, _ = ep.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ep.sndbuf)
            ep.clients.append(conn)
            self._sel.register(conn, selectors.EVENT_READ, ep)

    def _drop_client(self, ep: _Endpoint, conn: socket.socket) -> None:
        ep.clients.remove(conn)
        self._sel.unregister(conn)
        conn.close()

    def _deliver(self, ep: _Endpoint, message: bytes) -> None:
        """To every connected client of the tenant, never waiting for one."""
        if not ep.clients:
            ep.stats.dropped += 1
            return
        for conn in list(ep.clients):
            try:
                conn.send(message, socket.MSG_DONTWAIT)
                ep.stats.delivered += 1
            except OSError:
                # it does not read (EAGAIN): its loss alone; or it has gone
                # (EPIPE): closed once what it sent before going is read
                ep.stats.dropped += 1

    def _take_sends(self, ep: _Endpoint) -> bool:
        moved = False
        if ep.held is not None:
            if not self.dp.slowpath_send(ep.tenant_id, ep.held):
                return False  # still no room: leave the clients' messages queued
            ep.held, moved = None, True
            ep.stats.sent += 1
        for conn in list(ep.clients):
            for _ in range(PER_ROUND):
                try:
                    message = conn.recv(HEADER.size + MAX_MESSAGE, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionResetError:
                    # it closed with messages of ours unread: the kernel says
                    # so once; what it sent before closing is still to read
                    continue
                except OSError:
                    message = b""
                if not message:  # the client went away
                    self._drop_client(ep, conn)
                    break
                moved = True
                try:
                    kind, frame = unpack(message)
                except ValueError:
                    ep.stats.rejected += 1
                    continue
                if kind != KIND_SEND:
                    ep.stats.rejected += 1
                    continue
                try:
                    queued = self.dp.slowpath_send(ep.tenant_id, frame)
                except ConfigError:  # a frame shorter than Ethernet or too long
                    ep.stats.rejected += 1
                    continue
                if not queued:
                    ep.held = frame
                    return True
                ep.stats.sent += 1
        return moved
