"""Programs isolane must refuse, and why: each a tiny C handler through
`build()` (or raw bytecode through `load_raw_xdp`), expected to fail with a
given error class whose log or message holds the kernel's (or clang's, or
isolane's) own words."""
from __future__ import annotations

import pytest

from ebpf import CompileError, ValidationError, VerifierError, build, load_raw_xdp
from ebpf.insn import SIZE_DW, encode, exit_, mov64_imm, st_imm

pytestmark = pytest.mark.integration

PKT = """
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
"""

# name, C body of `int f(struct xdp_md *ctx)` (plus declarations before it), error, substring
REJECTIONS = [
    ("unbounded loop (state repeats)", "",
     "volatile __u32 x = 0; while (x != 1) x = x * 2; return XDP_PASS;",
     VerifierError, "infinite loop detected"),
    ("loop bounded by packet data only", "",
     "__u64 s = 0; for (__u32 i = 0; i < ctx->rx_queue_index; i++) s += bpf_ktime_get_ns();"
     " return s & 3;",
     VerifierError, "BPF program is too large"),
    ("packet read past the checked length", "",
     PKT + "if (data + 14 > data_end) return XDP_DROP; return *(unsigned char *)(data + 14);",
     VerifierError, "invalid access to packet"),
    ("packet read without a bounds check", "",
     PKT + "return *(unsigned char *)data;",
     VerifierError, "outside of the packet"),
    ("unknown helper id", "",
     "return ((long (*)(void))999)();",
     VerifierError, "invalid func unknown#999"),
    ("uninitialised register", "",
     'int r; asm volatile("%0 = r7" : "=r"(r)); return r;',
     VerifierError, "R7 !read_ok"),
    ("map value used without a NULL check", "BPF_HASH(h, __u32, __u32, 4);",
     "__u32 k = 0; __u32 *v = h.lookup(&k); return *v;",
     VerifierError, "map_value_or_null"),
    ("write to the context", "",
     "ctx->data = 0; return XDP_PASS;",
     VerifierError, "invalid bpf_context access"),
    ("BPF-to-BPF call", "static noinline int g(struct xdp_md *c) { return c->rx_queue_index & 3; }",
     "return g(ctx);",
     VerifierError, "static __always_inline"),
    ("more than 512 bytes of stack", "",
     "volatile char buf[600]; buf[0] = 1; buf[599] = 2; return buf[ctx->rx_queue_index & 511];",
     CompileError, "stack limit of 512 bytes"),
    ("helper the kernel allows but isolane does not", "",
     "return bpf_get_prandom_u32() & 1;",
     ValidationError, "helper 7 is not allowed"),
    ("C that does not compile", "",
     "return undefined_thing;",
     CompileError, "undeclared identifier"),
]


def _source(decls: str, body: str) -> str:
    return f"#include <isolane.h>\n{decls}\nint f(struct xdp_md *ctx)\n{{\n{body}\n}}\n"


@pytest.mark.parametrize("name,decls,body,error,needle", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejected(tmp_path, name, decls, body, error, needle):
    src = tmp_path / "handler.c"
    src.write_text(_source(decls, body))
    with pytest.raises(error) as exc:
        build(src)
    text = f"{exc.value}\n{getattr(exc.value, 'log', '')}"
    assert needle in text, text[-2000:]


def test_verifier_error_carries_log_and_reason(tmp_path):
    src = tmp_path / "handler.c"
    src.write_text(_source("", PKT + "return *(unsigned char *)data;"))
    with pytest.raises(VerifierError) as exc:
        build(src)
    err = exc.value
    assert err.reason == "R1 offset is outside of the packet" or "outside of the packet" in err.reason
    assert "processed" in err.log and err.errno == 13  # EACCES
    assert str(err).startswith("verifier rejected the program")


def test_accepted_control(tmp_path):
    """The harness itself: the same wrapper around a good body builds."""
    src = tmp_path / "handler.c"
    src.write_text(_source("", "return XDP_PASS;"))
    prog = build(src)
    assert prog.function == "f" and prog.n_insns == 2


RAW_REJECTIONS = [
    ("stack write below 512 bytes", [st_imm(SIZE_DW, 10, -520, 0), mov64_imm(0, 2), exit_()],
     "invalid write to stack"),
    ("exit without setting r0", [exit_()], "R0 !read_ok"),
    ("falls off the end", [mov64_imm(0, 2)], "last insn is not an exit or jmp"),
]


@pytest.mark.parametrize("name,insns,needle", RAW_REJECTIONS, ids=[r[0] for r in RAW_REJECTIONS])
def test_raw_rejected(name, insns, needle):
    with pytest.raises(VerifierError) as exc:
        load_raw_xdp(encode(insns))
    assert needle in exc.value.log or needle in str(exc.value), exc.value.log
