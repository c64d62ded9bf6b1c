"""Capture what C code (clang, libbcc, the verifier log that bcc prints)
writes to fd 2, which Python's sys.stderr never sees."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile


class Captured:
    text: str = ""


@contextlib.contextmanager
def capture_fd2():
    """`with capture_fd2() as cap: ...` then `cap.text` holds fd 2's output.

    fd 2 points at a temporary file while the block runs and is restored
    afterwards, also when the block raises.
    """
    cap = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode(errors="replace")
