"""Every example tenant builds, the kernel verifier accepts it, and its
fixture table holds under the kernel oracle (BPF_PROG_TEST_RUN) and under
isolane's interpreter, byte for byte: verdict and output frame.
`run_fixture(engine, program, fixture)` is engine-neutral."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ebpf import build, kernel, load_raw_xdp, validate
from ebpf.engines import AotEngine, InterpEngine
from ebpf.fixtures import KernelEngine, load_table, run_fixture, run_table

pytestmark = pytest.mark.integration

TENANTS_DIR = Path(__file__).resolve().parent.parent / "tenants"
TENANTS = sorted(p.name for p in TENANTS_DIR.iterdir() if (p / "handler.c").is_file())


class RawKernelEngine(KernelEngine):
    """The kernel running isolane's map-relocated bytecode (`kernel_insns`)
    loaded through `load_raw_xdp`: checks that relocation kept the program."""

    name = "kernel-raw"

    def __init__(self):
        self._fds: dict[int, int] = {}

    def run(self, program, frame):
        key = id(program)
        if key not in self._fds:
            fds = [program.kernel_maps[m.name].fd for m in program.maps]
            self._fds[key], _ = load_raw_xdp(program.kernel_insns, fds, name=program.function)
        r = kernel.test_run(self._fds[key], frame)
        return r.retval, r.data_out

    def close(self):
        for fd in self._fds.values():
            os.close(fd)


ENGINES = {"kernel": KernelEngine, "kernel-raw": RawKernelEngine, "interp": InterpEngine,
           "aot": AotEngine}


@pytest.fixture(scope="module")
def programs():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build(TENANTS_DIR / name)
        return cache[name]

    return get


def test_all_four_tenants_present():
    assert {"udp_echo", "kv", "acl", "hasher"} <= set(TENANTS)


@pytest.mark.parametrize("tenant", TENANTS)
def test_tenant_builds_and_verifies(programs, tenant):
    prog = programs(tenant)
    assert prog.kernel_fd > 0
    assert "processed" in prog.verifier_log
    validate(prog.insns, len(prog.maps))
    assert 0 < prog.bound_insns and prog.bound_cycles > 0
    summary = prog.summary()
    assert summary["name"] == tenant and summary["verified"] is True
    assert bytes.fromhex(summary["insns_hex"]) == prog.insns


@pytest.mark.parametrize("engine_name", sorted(ENGINES))
@pytest.mark.parametrize("tenant", TENANTS)
def test_fixtures(programs, tenant, engine_name):
    prog = programs(tenant)
    table = load_table(TENANTS_DIR / tenant)
    assert table.FIXTURES, f"{tenant} has no fixtures"
    engine = ENGINES[engine_name]()
    try:
        results = run_table(engine, prog, table)
    finally:
        getattr(engine, "close", lambda: None)()
    failed = [f"{r.fixture.description}: {'; '.join(r.problems)}" for r in results if not r.ok]
    assert not failed, f"{tenant} on {engine_name}:\n" + "\n".join(failed)


def test_run_fixture_runs_the_fixture_setup(programs):
    prog = programs("acl")
    table = load_table(TENANTS_DIR / "acl")
    late = table.FIXTURES[-1]
    assert late.setup is not None
    for m in prog.kernel_maps.values():
        m.clear()
    assert run_fixture(KernelEngine(), prog, late).verdict == "XDP_PASS"


def test_kv_maps_and_state(programs):
    prog = programs("kv")
    [spec] = prog.maps
    assert (spec.name, spec.type_name, spec.key_size, spec.value_size, spec.max_entries) == (
        "kv_store", "hash", 16, 36, 1024)
    store = prog.kernel_maps["kv_store"]
    store.clear()
    store.update(b"x".ljust(16, b"\0"), bytes(36))
    assert store.keys() == [b"x".ljust(16, b"\0")]
    assert store.delete(b"x".ljust(16, b"\0")) and store.lookup(b"x".ljust(16, b"\0")) is None


def test_hasher_has_a_loop_and_a_budgeted_bound(programs):
    prog = programs("hasher")
    assert prog.back_edges >= 1 and prog.loop_budget == 1024
    assert prog.bound_insns > 1024 * 5  # each hashed byte costs several instructions


def test_test_run_refuses_frames_shorter_than_ethernet(programs):
    prog = programs("udp_echo")
    with pytest.raises(kernel.KernelError) as exc:
        kernel.test_run(prog.kernel_fd, b"\0" * 13)
    assert exc.value.errno == 22  # EINVAL


def test_test_run_repeat_reports_a_duration(programs):
    prog = programs("udp_echo")
    frame = load_table(TENANTS_DIR / "udp_echo").FIXTURES[0].frame
    run = kernel.test_run(prog.kernel_fd, frame, repeat=1000)
    assert run.verdict == "XDP_TX" and run.duration_ns > 0
