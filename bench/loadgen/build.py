"""cffi builder (API mode) for the load generator's C loops.

`loadgen.h` is both the C header and the cdef (its preprocessor lines are
stripped except integer `#define`s, by datapath/build.py's rule). The
probe header layout and the TSC clock come from the datapath's own
headers and tsc.c, so generator and datapath agree on both. Run as a
script to build `bench/loadgen/_loadgen*.so` in place (`make build` does).
"""
import importlib.util
import pathlib

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


def _datapath_build():
    """datapath/build.py as a module (not through the datapath package, whose
    __init__ needs the extension this may be building alongside)."""
    spec = importlib.util.spec_from_file_location("isolane_dp_build", DP / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ffibuilder = FFI()
ffibuilder.cdef(_datapath_build().cdef_text(HEADER))
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
