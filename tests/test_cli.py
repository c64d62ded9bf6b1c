"""`isolane prog`: exit codes as bpftool users expect (0 ok, 2 usage, 3
rejected), --json output, and the engines agreeing through the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from control.cli import main
from ebpf.packets import udp

pytestmark = pytest.mark.integration  # compiles and verifies with bcc and the kernel

TENANTS = Path(__file__).resolve().parent.parent / "tenants"
ECHO_IN = bytes(udp(b"hello"))
R0_42 = bytes.fromhex("b7000000" "2a000000" "9500000000000000")  # r0 = 42; exit


def isolane(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_check_accepts_a_tenant_and_reports_its_bound():
    r = isolane("prog", "check", TENANTS / "hasher", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["accepted"] and info["name"] == "hasher"
    assert info["loop_budget"] == 1024 and info["bound_insns"] > 1024
    assert info["bound_cycles"] > 0


def test_check_rejection_exits_3_with_the_verifiers_reason(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int bad(struct xdp_md *ctx) {\n"
                   "  void *data = (void *)(long)ctx->data;\n"
                   "  return *(unsigned char *)(data + 100);\n}\n")
    r = isolane("prog", "check", bad, "--json")
    assert r.exit_code == 3
    out = json.loads(r.output)
    assert out["accepted"] is False
    assert "outside of the packet" in out["reason"] and "invalid access to packet" in \
        out["verifier_log"]


@pytest.mark.parametrize("engine", ["interp", "aot", "kernel"])
def test_run_echoes_under_every_engine(engine):
    r = isolane("prog", "run", TENANTS / "udp_echo", "--packet", ECHO_IN.hex(),
                "--engine", engine, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    expected = bytes(udp(b"hello", sport=7, dport=40000, src="10.0.0.2", dst="10.0.0.1",
                         mac_src="02:00:00:00:00:0b", mac_dst="02:00:00:00:00:0a"))
    assert out["verdict"] == "XDP_TX"
    assert bytes.fromhex(out["packet"]) == expected


def test_run_repeat_reports_ns_per_run():
    r = isolane("prog", "run", TENANTS / "udp_echo", "--packet", ECHO_IN.hex(), "--repeat",
                "1000", "--json")
    out = json.loads(r.output)
    assert out["insns"] == 108 and out["ns_per_run"] > 0


@pytest.mark.parametrize("engine", ["interp", "aot", "kernel"])
def test_raw_bytecode_under_every_engine(tmp_path, engine):
    prog = tmp_path / "r42.bin"
    prog.write_bytes(R0_42)
    r = isolane("prog", "run", "--raw", prog, "--mem", "00" * 16, "--engine", engine, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["r0"] == 42


@pytest.mark.parametrize("args", [
    ["prog", "run"],                                        # no SOURCE, no --raw
    ["prog", "run", "--raw", "/dev/null", "--packet", "00"],  # --raw with --packet
    ["prog", "run", str(TENANTS / "udp_echo"), "--packet", "zz"],  # not hex
    ["prog", "check"],                                      # missing SOURCE
])
def test_usage_errors_exit_2(args):
    r = isolane(*args)
    assert r.exit_code == 2


def test_raw_with_a_partial_instruction_is_a_usage_error(tmp_path):
    prog = tmp_path / "bad.bin"
    prog.write_bytes(R0_42[:12])
    r = isolane("prog", "run", "--raw", prog, "--mem", "00")
    assert r.exit_code == 2 and "whole number" in r.output
