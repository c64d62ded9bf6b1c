"""Tenant C -> bcc BPF object, and which function is the handler.

Handler convention: the function named by `function` in tenant.toml (or the
`name` argument); without one, the only non-static function of the module
that takes a `struct xdp_md *`. bcc compiles every non-static function to
its own program, so `static __always_inline` helpers never compete.
"""
from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path

from .capture import capture_fd2
from .errors import CompileError

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
CFLAGS = (f"-I{INCLUDE_DIR}", "-Wno-unused-function")

_XDP_FN = re.compile(r"\b([A-Za-z_]\w*)\s*\(\s*struct\s+xdp_md\s*\*")


def _bcc():
    from bcc import BPF  # imported late: bcc is a system package, root-only in use
    from bcc.libbcc import lib

    lib.bpf_num_tables.restype = ctypes.c_ulonglong
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    return BPF, lib


# LLVM's BPF backend ends the process (exit 1) on some errors, e.g. "Looks
# like the BPF stack limit of 512 bytes is exceeded": bcc installs no
# handler. So a tenant's C is first compiled in a child interpreter, and only
# C that compiles there is compiled in this process.
_PROBE = (
    "import sys\n"
    "from bcc import BPF\n"
    "BPF(text=sys.stdin.read(), cflags=sys.argv[1:])\n"
)
PROBE_TIMEOUT_S = 120


def probe_compile(text: str, cflags: list[str]) -> None:
    """Compiles `text` in a child process; raises CompileError if it fails
    or dies there (the case an in-process compile cannot survive)."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, *cflags], input=text.encode(),
                              capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise CompileError(f"compile took longer than {PROBE_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        log = proc.stderr.decode(errors="replace")
        raise CompileError(f"compile failed: {_first_error(log)}", log)


def _first_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines()]
    return next((ln for ln in lines if "error:" in ln), next((ln for ln in reversed(lines) if ln), "?"))


def compile_c(source: str | Path, cflags: tuple[str, ...] = (), isolate: bool = True):
    """Compiles a C file (Path) or C text (str) with bcc; returns the BPF object.

    With `isolate` (the default) the C is compiled in a child process first
    (see `probe_compile`). clang's diagnostics are captured from fd 2 and
    carried by CompileError.
    """
    BPF, _ = _bcc()
    text = Path(source).read_text() if isinstance(source, Path) else source
    flags = list(CFLAGS + tuple(cflags))
    if isolate:
        probe_compile(text, flags)
    with capture_fd2() as cap:
        try:
            bpf = BPF(text=text.encode(), cflags=flags)
        except Exception as exc:  # bcc raises a bare Exception
            err = exc
        else:
            err = None
    if err is not None:
        raise CompileError(f"compile failed: {_first_error(cap.text) if cap.text else err}", cap.text)
    return bpf


def function_names(bpf) -> list[str]:
    """The module's functions that bcc can load as programs."""
    _, lib = _bcc()
    return [lib.bpf_function_name(bpf.module, i).decode()
            for i in range(lib.bpf_num_functions(bpf.module))]


def table_names(bpf) -> list[str]:
    """The module's maps, in bcc's table order."""
    _, lib = _bcc()
    return [lib.bpf_table_name(bpf.module, i).decode()
            for i in range(lib.bpf_num_tables(bpf.module))]


def find_handler(bpf, source_text: str, name: str | None = None) -> str:
    """Returns the handler's name; see the module doc for the convention."""
    funcs = function_names(bpf)
    if name is not None:
        if name not in funcs:
            raise CompileError(f"handler {name!r} not found (functions: {', '.join(funcs) or 'none'})")
        return name
    xdp = [f for f in dict.fromkeys(_XDP_FN.findall(source_text)) if f in funcs]
    if len(xdp) != 1:
        raise CompileError("cannot tell the handler: name it with `function` in tenant.toml "
                           f"(functions taking struct xdp_md *: {', '.join(xdp) or 'none'})")
    return xdp[0]
