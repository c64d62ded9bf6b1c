"""The CLI's side of a daemon call: where the socket is, whether to answer
in JSON, and how the daemon's errors become exit codes.

Every daemon-backed command calls `daemon()` for a caller and passes
`as_json` through `wants_json()`, so `isolane -j tenant list` and
`isolane tenant list -j` mean the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import click
from rich.markup import escape

from .client import Client, DaemonUnreachable, RpcError, default_socket_path
from .output import emit_json, fail

EXIT_FAILED = 1       # the daemon answered with an error (not found, denied, conflict, internal)
EXIT_USAGE = 2        # bad arguments (click's own code), or the daemon's "invalid params"
EXIT_REJECTED = 3     # the verifier (or isolane's bound/validator) rejected the program
EXIT_UNREACHABLE = 4  # no daemon on the socket, or it went away mid-call

# JSON-RPC codes of the contract (daemon_api.md) -> (name, exit code)
ERRORS = {
    -32700: ("parse error", EXIT_FAILED),
    -32600: ("invalid request", EXIT_FAILED),
    -32601: ("method not found", EXIT_FAILED),
    -32602: ("invalid params", EXIT_USAGE),
    -32000: ("internal", EXIT_FAILED),
    -32001: ("rejected", EXIT_REJECTED),
    -32002: ("not found", EXIT_FAILED),
    -32003: ("permission denied", EXIT_FAILED),
    -32004: ("conflict", EXIT_FAILED),
    -32005: ("too large", EXIT_FAILED),
}


@dataclass
class CliState:
    """What the top-level options decided, kept in click's ctx.obj."""
    socket: str | None = None
    json: bool = False


def json_option(f):
    return click.option("-j", "--json", "as_json", is_flag=True,
                        help="Print the daemon's answer as JSON on stdout.")(f)


def _state() -> CliState:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx else None
    return obj if isinstance(obj, CliState) else CliState()


def wants_json(as_json: bool) -> bool:
    return as_json or _state().json


class Daemon:
    """Calls isolaned over one connection; an error answer exits the CLI
    with the message on stderr (and, with --json, the error on stdout)."""

    def __init__(self, as_json: bool, json_lines: bool = False):
        self.as_json = as_json
        self.json_lines = json_lines  # the error is one more line of a JSON-lines stream
        self.client = Client(_state().socket or default_socket_path())

    def connect(self) -> "Daemon":
        """Connects now (or exits 4), before a long call shows a spinner."""
        try:
            self.client.connect()
        except DaemonUnreachable as e:
            self._unreachable(e)
        return self

    def __call__(self, method: str, **params):
        params = {k: v for k, v in params.items() if v is not None}
        try:
            return self.client.call(method, **params)
        except DaemonUnreachable as e:
            self._unreachable(e)
        except RpcError as e:
            name, code = ERRORS.get(e.code, ("error", EXIT_FAILED))
            error = {"code": e.code, "name": name, "message": e.message, "data": e.data}
            if e.code == -32001:  # rejected: the verifier's reason, then its own log
                data = e.data if isinstance(e.data, dict) else {}
                self._exit(f"rejected: {data.get('reason') or e.message}", code, error,
                           detail=data.get("log"))
            self._exit(e.message if name in e.message else f"{e.message} ({name})", code, error)

    def _unreachable(self, e: DaemonUnreachable) -> None:
        self._exit(str(e), EXIT_UNREACHABLE, {"code": None, "name": "unreachable",
                                              "message": str(e), "data": None})

    def _exit(self, message: str, code: int, error: dict, detail: str | None = None) -> None:
        self.client.close()
        if self.as_json:
            emit_json({"error": error}, lines=self.json_lines)
        fail(escape(message), code, detail)

    def close(self) -> None:
        self.client.close()


def tenant_ref(text: str) -> int | str:
    """A tenant given as digits is its id; anything else is its name (names
    start with a letter)."""
    return int(text) if text.isdigit() else text


def daemon(as_json: bool, json_lines: bool = False) -> Daemon:
    return Daemon(wants_json(as_json), json_lines)
