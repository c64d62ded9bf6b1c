"""cffi builder (API mode) for the load generator's C loops.

`loadgen.h` is both the C header and the cdef (its preprocessor lines are
stripped here except integer `#define`s, as datapath/build.py does). The
probe header layout and the TSC clock come from the datapath's own
headers and tsc.c, so generator and datapath agree on both. Run as a
script to build `bench/loadgen/_loadgen*.so` in place (`make build` does).
"""
import pathlib
import re

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DP = ROOT / "datapath"
HEADER = HERE / "loadgen.h"
SOURCES = [HERE / "loadgen.c", HERE / "bare_echo.c", HERE / "xsk_port.c", HERE / "gen_prog.c",
           HERE / "tsc.c"]
CFLAGS = ["-O3", "-march=native", "-std=gnu11", "-Wall", "-Wno-unused-parameter",
          "-fno-strict-aliasing", "-pthread"]
LDFLAGS = ["-pthread", "-lm", "-lxdp", "-lbpf"]


def cdef_text() -> str:
    lines = []
    for line in HEADER.read_text().splitlines():
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
    "bench.loadgen._loadgen",  # lands in bench/loadgen/; imported as `_loadgen`
    '#include "loadgen.h"\n',
    sources=[str(p.relative_to(ROOT)) for p in SOURCES],
    include_dirs=[str(HERE), str(DP / "include"), str(DP / "src")],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
)

if __name__ == "__main__":
    # sources are relative to the repo root (setuptools insists), and cffi
    # compiles from inside tmpdir: so build there, writing into bench/loadgen/
    ffibuilder.compile(tmpdir=str(ROOT), verbose=False)
