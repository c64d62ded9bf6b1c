"""One exception tree for all of isolane, rooted at IsolaneError.

C calls return 0 or -errno; `check()` turns a negative return into the
exception that says what went wrong, right after the call.
"""
from __future__ import annotations

import errno as _errno
import os


class IsolaneError(Exception):
    """Base of every error isolane raises; `errno` is set when C reported one."""

    def __init__(self, message: str | None = None, errno: int | None = None):
        self.errno = errno
        if message is None:
            message = os.strerror(errno) if errno else "isolane error"
        super().__init__(message)


class ConfigError(IsolaneError, ValueError):
    """A configuration value the datapath refuses (bad range, duplicate, no room)."""


class BudgetError(ConfigError):
    """A tenant budget that cannot be enforced (share, cap, rate or burst)."""


class NotFoundError(IsolaneError, KeyError):
    """No such tenant, flow or rule."""

    def __str__(self) -> str:  # KeyError would print the repr
        return self.args[0] if self.args else "not found"


class BackendError(IsolaneError):
    """Packet I/O failed: the backend is missing, busy or out of resources."""


_BY_ERRNO = {
    _errno.EINVAL: ConfigError,
    _errno.ERANGE: ConfigError,
    _errno.EEXIST: ConfigError,
    _errno.ENOSPC: ConfigError,
    _errno.EMSGSIZE: ConfigError,
    _errno.ENOENT: NotFoundError,
}


def check(ret: int, what: str) -> int:
    """Returns `ret` when it is not an error, else raises for `-ret`."""
    if ret >= 0:
        return ret
    err = -ret
    cls = _BY_ERRNO.get(err, BackendError)
    raise cls(f"{what}: {os.strerror(err)}", errno=err)
