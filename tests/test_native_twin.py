"""The native `udp_echo` handler is the C twin of tenants/udp_echo: it must
pass the tenant's own fixture table, verdict for verdict and byte for byte,
or the programmability tax would compare different work."""
from __future__ import annotations

from pathlib import Path

import pytest

from datapath._dp import ffi, lib
from ebpf.fixtures import load_table
from ebpf.kernel import VERDICT_NAMES

pytestmark = pytest.mark.unit

TABLE = load_table(Path(__file__).resolve().parent.parent / "tenants" / "udp_echo")


def run_twin(frame: bytes) -> tuple[str, bytes]:
    buf = ffi.new("uint8_t[]", lib.DP_MAX_FRAME_LEN)
    ffi.memmove(buf, frame, len(frame))
    length = ffi.new("uint32_t *", len(frame))
    verdict = lib.dp_handler_run(lib.DP_HANDLER_UDP_ECHO, buf, length, len(buf))
    assert verdict >= 0
    return VERDICT_NAMES[verdict], bytes(ffi.buffer(buf, length[0]))


@pytest.mark.parametrize("fixture", TABLE.FIXTURES, ids=lambda f: f.description)
def test_native_twin_matches_the_tenant_fixture(fixture):
    verdict, out = run_twin(fixture.frame)
    assert verdict == fixture.verdict
    if fixture.expected_frame is not None:
        assert out == fixture.expected_frame
