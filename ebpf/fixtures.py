"""Handler fixtures as data, and one runner for every engine.

A tenant's `fixtures.py` holds `FIXTURES`, an ordered list of `Fixture`
(description, input frame, expected verdict, expected output frame or None
when the output is not checked) and optionally `setup(maps)`, called once
with fresh maps before the table runs (e.g. to install ACL rules). The table
runs in order against the same maps, so stateful tenants (kv) write their
story as a sequence.

An engine is any object with
    run(program, frame: bytes) -> (retval: int, frame_out: bytes)
    maps(program) -> {name: map handle with update/lookup/delete/clear (bytes)}
`KernelEngine` is BPF_PROG_TEST_RUN; the userspace engines plug in the same way.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from .kernel import VERDICT_NAMES, test_run
from .program import TenantProgram

VERDICTS = {name: code for code, name in VERDICT_NAMES.items()}


@dataclass(frozen=True)
class Fixture:
    description: str
    packet: Any  # bytes or a scapy packet
    verdict: str  # "XDP_TX", "XDP_DROP", "XDP_PASS", ...
    expect: Any = None  # bytes / scapy packet, or None: output not checked
    setup: Callable[[dict], None] | None = None  # called right before this fixture

    @property
    def frame(self) -> bytes:
        return bytes(self.packet)

    @property
    def expected_frame(self) -> bytes | None:
        return None if self.expect is None else bytes(self.expect)


class Engine(Protocol):
    name: str

    def run(self, program: TenantProgram, frame: bytes) -> tuple[int, bytes]: ...

    def maps(self, program: TenantProgram) -> dict: ...


class KernelEngine:
    """The kernel oracle: the verified program run by BPF_PROG_TEST_RUN."""

    name = "kernel"

    def run(self, program: TenantProgram, frame: bytes) -> tuple[int, bytes]:
        r = test_run(program.kernel_fd, frame)
        return r.retval, r.data_out

    def maps(self, program: TenantProgram) -> dict:
        return program.kernel_maps


@dataclass(frozen=True)
class FixtureResult:
    fixture: Fixture
    retval: int
    frame_out: bytes

    @property
    def verdict(self) -> str:
        return VERDICT_NAMES.get(self.retval, f"XDP_{self.retval}")

    @property
    def problems(self) -> list[str]:
        out = []
        if self.verdict != self.fixture.verdict:
            out.append(f"verdict {self.verdict}, expected {self.fixture.verdict}")
        want = self.fixture.expected_frame
        if want is not None and self.frame_out != want:
            out.append(f"output differs:\n   got {self.frame_out.hex()}\n  want {want.hex()}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems


def run_fixture(engine: Engine, program: TenantProgram, fixture: Fixture) -> FixtureResult:
    """Runs one fixture (its own `setup` first) on `engine`."""
    if fixture.setup is not None:
        fixture.setup(engine.maps(program))
    retval, out = engine.run(program, fixture.frame)
    return FixtureResult(fixture, retval, out)


def run_table(engine: Engine, program: TenantProgram, table) -> list[FixtureResult]:
    """Clears the program's maps, calls the table's `setup(maps)`, then runs
    every fixture in order."""
    maps = engine.maps(program)
    for m in maps.values():
        m.clear()
    if getattr(table, "setup", None) is not None:
        table.setup(maps)
    return [run_fixture(engine, program, f) for f in table.FIXTURES]


def load_table(tenant_dir: str | Path):
    """Imports `<tenant_dir>/fixtures.py` (tenant folders are not packages)."""
    path = Path(tenant_dir) / "fixtures.py"
    spec = importlib.util.spec_from_file_location(f"isolane_fixtures_{Path(tenant_dir).name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
