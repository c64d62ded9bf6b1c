"""JSON-RPC 2.0 over a unix stream socket, one JSON object per line.

The contract is /work/notes/daemon_api.md. This module knows framing,
request validation, error codes and connections; what the methods do is
control/api.py's business. Nothing a client sends can end the daemon: every
failure of one request becomes an error reply, every failure of one
connection ends that connection only.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import struct
import threading
import traceback

MAX_REQUEST = 1 << 20  # bytes of one request line
MAX_CONNECTIONS = 256  # each holds a thread; more are answered and closed
SEND_TIMEOUT_S = 10    # a client that does not read its replies is dropped

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL = -32000
REJECTED = -32001
NOT_FOUND = -32002
PERMISSION_DENIED = -32003
CONFLICT = -32004
TOO_LARGE = -32005

log = logging.getLogger("isolaned.rpc")


class RpcFault(Exception):
    """An error reply: raised by methods, turned into `{"error": ...}`."""

    def __init__(self, code: int, message: str, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def invalid(message: str) -> RpcFault:
    return RpcFault(INVALID_PARAMS, message)


_MISSING = object()


class Params:
    """Reads a request's named params, each checked as it is taken; `end()`
    refuses any that nobody took (a typo must not be ignored)."""

    def __init__(self, params):
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise invalid("params must be an object (named params), not "
                          + type(params).__name__)
        self._params = dict(params)

    def _take(self, name, default):
        value = self._params.pop(name, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                raise invalid(f"missing param {name!r}")
            return default
        return value

    def str(self, name, default=_MISSING, *, max_len=256, choices=None):
        value = self._take(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise invalid(f"{name} must be a string, not {json.dumps(value)[:40]}")
        if len(value) > max_len:
            raise invalid(f"{name} is longer than {max_len} characters")
        if choices is not None and value not in choices:
            raise invalid(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def int(self, name, default=_MISSING, *, lo=None, hi=None):
        value = self._take(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(f"{name} must be an integer, not {json.dumps(value)[:40]}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise invalid(f"{name} must be in {lo}..{hi}, not {value}")
        return value

    def number(self, name, default=_MISSING, *, lo=None, hi=None, lo_open=False):
        value = self._take(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise invalid(f"{name} must be a finite number, not {json.dumps(value)[:40]}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise invalid(f"{name} must be {'>' if lo_open else '>='} {lo}, not {value}")
        if hi is not None and value > hi:
            raise invalid(f"{name} must be <= {hi}, not {value}")
        return float(value)

    def any(self, name, default=_MISSING):
        return self._take(name, default)

    def tenant(self, name="tenant"):
        """A tenant reference: its numeric id or its name."""
        value = self._take(name, _MISSING)
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise invalid(f"{name} must be a tenant id or name, not {json.dumps(value)[:40]}")
        return value

    def end(self) -> None:
        if self._params:
            raise invalid(f"unknown param {sorted(self._params)[0]!r}")


def _error(req_id, code: int, message: str, data=None) -> dict:
    err = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": err}


def handle_line(line: bytes, dispatch, caller) -> bytes | None:
    """One request line -> one reply line (None for a notification)."""
    req_id = None
    try:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            return _encode(_error(None, PARSE_ERROR, f"parse error: not JSON ({e})"))
        if isinstance(req, list):
            return _encode(_error(None, INVALID_REQUEST, "batches are not supported: "
                                  "send one request per line"))
        if not isinstance(req, dict):
            return _encode(_error(None, INVALID_REQUEST, "a request must be a JSON object"))
        req_id = req.get("id")
        if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, (int, str))):
            return _encode(_error(None, INVALID_REQUEST, "id must be a string, an integer or null"))
        if req.get("jsonrpc") != "2.0":
            return _encode(_error(req_id, INVALID_REQUEST, 'jsonrpc must be "2.0"'))
        method = req.get("method")
        if not isinstance(method, str):
            return _encode(_error(req_id, INVALID_REQUEST, "method must be a string"))
        extra = set(req) - {"jsonrpc", "id", "method", "params"}
        if extra:
            return _encode(_error(req_id, INVALID_REQUEST, f"unknown member {sorted(extra)[0]!r}"))
        try:
            result = dispatch(caller, method, req.get("params"))
        except RpcFault as f:
            reply = _error(req_id, f.code, f.message, f.data)
        else:
            reply = {"jsonrpc": "2.0", "id": req_id, "result": result}
        return None if "id" not in req else _encode(reply)
    except Exception as e:  # a bug in a method: this request fails, the daemon goes on
        log.error("internal error: %s\n%s", e, traceback.format_exc())
        return _encode(_error(req_id, INTERNAL, f"internal error: {type(e).__name__}: {e}"))


def _encode(reply: dict) -> bytes:
    return json.dumps(reply, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class Server:
    """Accepts connections on a unix socket and serves each in its own
    thread. `identify(sock)` names the caller (SO_PEERCRED), `dispatch(caller,
    method, params)` runs one request."""

    def __init__(self, path: str, dispatch, identify):
        self.path = str(path)
        self.dispatch = dispatch
        self.identify = identify
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)  # left by a daemon that died
            else:
                probe.close()
                raise OSError(f"another isolaned already serves {self.path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o666)  # access is decided per request, from SO_PEERCRED
        sock.listen(1024)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="rpc-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing:
                    return
                continue
            with self._lock:
                full = len(self._conns) >= MAX_CONNECTIONS
                if not full:
                    self._conns.add(conn)
            if full:
                try:
                    conn.sendall(_encode(_error(None, INTERNAL, f"too many connections "
                                                f"(max {MAX_CONNECTIONS}); try again later")))
                finally:
                    conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), name="rpc-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", SEND_TIMEOUT_S, 0))
            caller = self.identify(conn)
            stream = conn.makefile("rb")
            while True:
                line = stream.readline(MAX_REQUEST + 1)
                if not line:
                    return
                if len(line) > MAX_REQUEST and not line.endswith(b"\n"):
                    conn.sendall(_encode(_error(None, TOO_LARGE, f"request line longer than "
                                                f"{MAX_REQUEST} bytes; closing the connection")))
                    return
                if not line.strip():
                    continue
                reply = handle_line(line, self.dispatch, caller)
                if reply is not None:
                    conn.sendall(reply)
        except OSError:
            pass  # the client went away or stopped reading: its loss only
        except Exception as e:
            log.error("connection failed: %s\n%s", e, traceback.format_exc())
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def close(self) -> None:
        self._closing = True
        if self._sock is None:
            return  # never bound: the path may be another daemon's
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=2)
