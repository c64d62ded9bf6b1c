"""Load the handler into the kernel as XDP so that the kernel verifier proves it.

bcc prints the verifier log to fd 2 and raises a bare Exception; this module
captures fd 2 around the load and raises VerifierError with the log and a
one-line reason instead. bcc's log is not always the verifier's (on E2BIG it
prints its own "Program too large (N insns), at most 4096 insns"), so after
a rejection the dumped bytecode is loaded once more with isolane's own
loader and a large log buffer, and that log is the one reported. On success the log is empty (bcc loads at log
level 0) and the program fd stays open, owned by the bcc object.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import re

from .capture import capture_fd2
from .errors import VerifierError

# Lines of the log that are bookkeeping or state dumps, not the reason.
_NOISE = ("processed ", "verification time", "stack depth", "bpf: Failed to load program",
          "HINT:", "libbpf:", "(verifier log truncated)", "old state:", "cur state:",
          "; ", "from ", "last_idx", "parent ", "regs=", "mark_precise", "frame")
_INSN_LINE = re.compile(r"^\d+: (\(|R\d|frame)")  # "12: (bf) r1 = r6", "12: R1=..."
_STATE_LINE = re.compile(r"^(R\d+\S*=|fp-\d+=)")


def reason_of(log: str) -> str:
    """The last meaningful line of a verifier log: usually what the verifier
    objected to (e.g. "R1 offset is outside of the packet")."""
    for line in reversed(log.splitlines()):
        line = line.strip()
        if (line and not line.startswith(_NOISE) and not _INSN_LINE.match(line)
                and not _STATE_LINE.match(line)):
            return line
    return ""


def _hint(bpf, func: str) -> str:
    from .insn import CALL, JMP, PSEUDO_CALL, decode

    if any(i.code == JMP | CALL and i.src == PSEUDO_CALL for i in decode(bpf.dump_func(func.encode()))):
        return (" (the handler calls a function of its own: isolane loads one function, so "
                "tenant helpers must be `static __always_inline`)")
    return ""


def load_xdp(bpf, func: str) -> int:
    """Loads `func` of the bcc object as an XDP program; returns its fd."""
    from bcc import BPF

    with capture_fd2() as cap:
        try:
            fn = bpf.load_func(func.encode(), BPF.XDP)
        except Exception as exc:  # bcc raises a bare Exception
            err, eno = exc, ctypes.get_errno()
        else:
            err = None
    if err is not None:
        log, eno = _own_log(bpf, func, cap.text, eno or _errno.EINVAL)
        reason = reason_of(log) or str(err)
        raise VerifierError(reason + _hint(bpf, func), log, errno=eno)
    return fn.fd


def _own_log(bpf, func: str, bcc_log: str, eno: int) -> tuple[str, int]:
    """The verifier's log for a rejected function, from isolane's loader."""
    from .kernel import load_raw_xdp

    try:
        fd, _ = load_raw_xdp(bpf.dump_func(func.encode()), None, name=func)
    except VerifierError as exc:
        return exc.log or bcc_log, exc.errno or eno
    os.close(fd)  # accepted this time: keep what bcc said
    return bcc_log, eno
