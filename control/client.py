"""The client side of isolaned's control socket: JSON-RPC 2.0, one JSON
object per line, over a unix stream socket (the contract:
/work/notes/daemon_api.md, summarised in control/daemon.py).

    with Client() as c:
        c.call("tenant.list")

`call` returns the request's `result`, raises RpcError for an `error`
answer and DaemonUnreachable when there is no daemon to ask (no socket,
refused, closed, reset or silent past the timeout).
"""
from __future__ import annotations

import itertools
import json
import os
import socket

DEFAULT_SOCKET = "/run/isolane/isolaned.sock"


def default_socket_path() -> str:
    return os.environ.get("ISOLANE_SOCKET") or DEFAULT_SOCKET


class RpcError(Exception):
    """An error the daemon answered with (JSON-RPC `error`)."""

    def __init__(self, code: int, message: str, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class DaemonUnreachable(Exception):
    """No daemon listens on the socket (or we may not connect to it)."""


class Client:
    def __init__(self, path: str | None = None, timeout_s: float = 120.0):
        self.path = path or default_socket_path()
        self.timeout_s = timeout_s  # program loads compile and verify: seconds, not ms
        self._ids = itertools.count(1)
        self._sock = None
        self._file = None

    def connect(self) -> "Client":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            raise DaemonUnreachable(
                f"no isolaned at {self.path} ({e.strerror}); start it with `isolaned --config FILE` "
                f"or point ISOLANE_SOCKET / --socket at its socket") from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(f"may not connect to {self.path} (permission denied)") from None
        except OSError as e:  # not a socket, path too long, timeout, ...
            sock.close()
            raise DaemonUnreachable(
                f"cannot connect to {self.path}: {e.strerror or e}") from None
        self._sock = sock
        self._file = sock.makefile("rb")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = self._file = None

    def __enter__(self) -> "Client":
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, **params):
        """Sends one request and returns its result, or raises RpcError."""
        if self._sock is None:
            self.connect()
        request_id = next(self._ids)
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": params}) + "\n"
        try:
            self._sock.sendall(line.encode())
            reply = self._file.readline()
        except TimeoutError:
            self.close()  # a late answer would be read as the next request's
            raise DaemonUnreachable(
                f"isolaned at {self.path} did not answer {method} within {self.timeout_s:g} s"
            ) from None
        except OSError as e:  # reset or broken pipe: the daemon went away
            self.close()
            raise DaemonUnreachable(
                f"lost the connection to isolaned at {self.path}: {e.strerror or e}") from None
        if not reply:
            self.close()
            raise DaemonUnreachable(f"isolaned closed the connection on {self.path}")
        try:
            answer = json.loads(reply)
        except ValueError:
            self.close()
            raise RpcError(-32000, f"isolaned answered {method} with a line that is not "
                                   f"JSON: {reply[:80]!r}") from None
        if "error" in answer:
            err = answer["error"]
            raise RpcError(err.get("code", -32000), err.get("message", "?"), err.get("data"))
        return answer["result"]
