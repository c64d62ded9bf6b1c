"""cffi builder for the fast path (API mode).

`isolane_dp.h` is both the C header and the cdef: its preprocessor lines
are stripped here except integer `#define`s, which cffi understands.
Run as a script to build `datapath/_dp*.so` in place.
"""
import os
import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "src"
HEADER = HERE / "include" / "isolane_dp.h"
CFLAGS = ["-O3", "-march=native", "-std=gnu11", "-Wall", "-Wno-unused-parameter",
          "-fno-strict-aliasing", "-pthread"]
LDFLAGS = ["-pthread", "-lm", "-lxdp", "-lbpf"]
# ISOLANE_SANITIZE=1 builds with AddressSanitizer (see `make test-asan`)
if os.environ.get("ISOLANE_SANITIZE") == "1":
    CFLAGS += ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer"]
    LDFLAGS += ["-fsanitize=address"]


def cdef_text(header: pathlib.Path = HEADER) -> str:
    """The header as cffi's cdef: preprocessor lines dropped, except integer
    `#define`s (with an optional trailing comment), which cffi understands.
    bench/loadgen/build.py uses it for its own header."""
    lines = []
    for line in header.read_text().splitlines():
        if line.startswith("#"):
            m = re.match(r"(#define \w+ (0x[0-9a-fA-F]+|\d+))\s*(/\*.*\*/)?$", line)
            if not m:
                continue
            line = m.group(1)
        lines.append(line)
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "datapath._dp",
    '#include "isolane_dp.h"\n',
    sources=[str(p.relative_to(HERE.parent)) for p in sorted(SRC.glob("*.c"))],
    include_dirs=[str(HERE / "include"), str(SRC)],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    # sources are relative to the repo root (setuptools insists), and cffi
    # compiles from inside tmpdir: so build there, writing into datapath/
    ffibuilder.compile(tmpdir=str(HERE.parent), verbose=False)
