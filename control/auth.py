"""Who is calling: the kernel's word (SO_PEERCRED) about the other end of a
unix socket, never anything the client says about itself.

Roles (see /work/notes/daemon_api.md): admin = uid 0 or a member of the
admin group; a tenant's owner = its owner uid, or a member of its owner gid.
Supplementary groups come from SO_PEERGROUPS (Linux >= 4.13), else from
/proc/PID/status.
"""
from __future__ import annotations

import dataclasses
import grp
import pwd
import socket
import struct

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


@dataclasses.dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    admin: bool

    @property
    def all_gids(self) -> frozenset[int]:
        return self.groups | {self.gid}

    def owns(self, tenant: dict) -> bool:
        """True when this caller may act as `tenant`'s owner."""
        uid, gid = tenant.get("owner_uid"), tenant.get("owner_gid")
        return (uid is not None and uid == self.uid) or (gid is not None and gid in self.all_gids)

    @property
    def who(self) -> str:
        try:
            name = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            name = "?"
        return f"uid {self.uid} ({name})"


def _peer_groups(sock: socket.socket, pid: int) -> frozenset[int]:
    size = 64 * 4
    while size <= 65536 * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
            return frozenset(struct.unpack(f"{len(raw) // 4}I", raw))
        except OSError as e:
            if e.errno == 34:  # ERANGE: more groups than room
                size *= 4
                continue
            break
    try:  # older kernels: what the process had when we look (racy, but its own)
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return frozenset()


def admin_gid(group: str) -> int | None:
    """The admin group's gid, None when the group does not exist (then only root is admin)."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def identify(sock: socket.socket, admin_group_gid: int | None) -> Caller:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups = _peer_groups(sock, pid)
    admin = uid == 0 or (admin_group_gid is not None and admin_group_gid in (groups | {gid}))
    return Caller(pid, uid, gid, groups, admin)


class OwnerError(ValueError):
    """An owner spec that names no user or group."""


def parse_owner(spec: str) -> tuple[int | None, int | None]:
    """'alice' | 'uid:1001' | 'group:web' | 'gid:1001' -> (uid, gid); one is None."""
    if not isinstance(spec, str) or not spec:
        raise OwnerError("owner must be a user name, uid:N, group:NAME or gid:N")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("uid", "gid"):
        if not rest.isdigit() or int(rest) >= 2**32 - 1:
            raise OwnerError(f"owner {spec!r}: {kind}:N needs a number")
        return (int(rest), None) if kind == "uid" else (None, int(rest))
    if sep and kind == "group":
        try:
            return None, grp.getgrnam(rest).gr_gid
        except KeyError:
            raise OwnerError(f"owner {spec!r}: no group {rest!r} on this host") from None
    if sep and kind == "user":
        spec = rest
    elif sep:
        raise OwnerError(f"owner {spec!r}: use a user name, uid:N, group:NAME or gid:N")
    try:
        return pwd.getpwnam(spec).pw_uid, None
    except KeyError:
        raise OwnerError(f"owner {spec!r}: no user {spec!r} on this host") from None
