"""Userspace BPF maps: the kernel's flag semantics, return codes, iteration
and ring buffer framing (kernel/bpf/hashtab.c, arraymap.c, devmap.c,
ringbuf.c)."""
from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath.ebpf_engine import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map, Program
from datapath.errors import IsolaneError

pytestmark = pytest.mark.unit


def err(fn, *args) -> int:
    with pytest.raises(IsolaneError) as exc:
        fn(*args)
    return exc.value.errno


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


@pytest.mark.parametrize("args", [
    ("hash", 0, 8, 4), ("hash", 8, 0, 4), ("hash", 8, 8, 0), ("hash", 513, 8, 4),
    ("array", 8, 8, 4), ("array", 4, 0, 4), ("array", 4, 8, 0),
    ("devmap", 4, 2, 4), ("xskmap", 4, 8, 4),
    ("ringbuf", 0, 0, 1000), ("ringbuf", 4, 0, 1024), ("ringbuf", 0, 0, 8),
])
def test_bad_definitions(args):
    assert err(Map, *args) == errno.EINVAL


def test_bad_type():
    from datapath._dp import ffi, lib
    d = ffi.new("struct dp_map_def *", (3, 4, 4, 4))  # PROG_ARRAY: not here
    assert lib.dp_map_create(d, ffi.new("dp_map_t **")) == -errno.EINVAL


# ---------------------------------------------------------------- ARRAY

def test_array_semantics():
    m = Map("array", 4, 8, 4)
    assert m.lookup(3) == bytes(8)            # every slot exists, zeroed
    assert m.lookup(4) is None                # past the end
    m.update(1, u64(5))
    m.update(1, u64(6), BPF_EXIST)
    assert m.lookup(1) == u64(6)
    assert err(m.update, 1, u64(7), BPF_NOEXIST) == errno.EEXIST
    assert err(m.update, 4, u64(7)) == errno.E2BIG
    assert err(m.update, 1, u64(7), 3) == errno.EINVAL
    assert err(m.update, 1, u64(7), 4) == errno.EINVAL  # BPF_F_LOCK without a lock
    assert err(m.delete, 1) == errno.EINVAL
    assert list(m.keys()) == [u32(i) for i in range(4)]


def test_array_next_key():
    from datapath._dp import ffi, lib
    m = Map("array", 4, 8, 4)
    out = ffi.new("uint8_t[4]")
    assert lib.dp_map_next_key(m.handle, ffi.NULL, out) == 0 and bytes(out) == u32(0)
    assert lib.dp_map_next_key(m.handle, u32(2), out) == 0 and bytes(out) == u32(3)
    assert lib.dp_map_next_key(m.handle, u32(3), out) == -errno.ENOENT
    assert lib.dp_map_next_key(m.handle, u32(99), out) == 0 and bytes(out) == u32(0)


def test_array_value_padding_is_not_value():
    m = Map("array", 4, 12, 2)
    m.update(0, b"a" * 12)
    m.update(1, b"b" * 12)
    assert m.lookup(0) == b"a" * 12 and m.lookup(1) == b"b" * 12


# ---------------------------------------------------------------- HASH

def test_hash_flags():
    m = Map("hash", 8, 4, 2)
    assert m.lookup(1) is None
    assert err(m.update, 1, u32(1), BPF_EXIST) == errno.ENOENT
    m.update(1, u32(1), BPF_NOEXIST)
    assert err(m.update, 1, u32(2), BPF_NOEXIST) == errno.EEXIST
    m.update(1, u32(3), BPF_EXIST)
    m.update(2, u32(4), BPF_ANY)
    assert err(m.update, 3, u32(5)) == errno.E2BIG           # full
    m.update(2, u32(6))                                      # replacing still works
    assert (m.lookup(1), m.lookup(2)) == (u32(3), u32(6))
    assert err(m.update, 1, u32(1), 3) == errno.EINVAL
    m.delete(1)
    assert err(m.delete, 1) == errno.ENOENT
    m.update(3, u32(7))                                      # the slot came back
    assert sorted(m.keys()) == [u64(2), u64(3)]


def test_hash_next_key_unknown_key_restarts():
    from datapath._dp import ffi, lib
    m = Map("hash", 4, 4, 8)
    for k in range(5):
        m.update(u32(k), u32(k))
    first = ffi.new("uint8_t[4]")
    assert lib.dp_map_next_key(m.handle, ffi.NULL, first) == 0
    again = ffi.new("uint8_t[4]")
    assert lib.dp_map_next_key(m.handle, u32(1000), again) == 0
    assert bytes(first) == bytes(again)


def test_hash_odd_key_size():
    m = Map("hash", 13, 3, 64)
    keys = [bytes([i]) * 13 for i in range(64)]
    for i, k in enumerate(keys):
        m.update(k, bytes([i, 0, 1]))
    assert sorted(m.keys()) == sorted(keys)
    assert all(m.lookup(k) == bytes([i, 0, 1]) for i, k in enumerate(keys))


ops = st.lists(st.tuples(st.sampled_from(["update", "delete"]), st.integers(0, 40),
                         st.sampled_from([BPF_ANY, BPF_NOEXIST, BPF_EXIST])), max_size=200)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_hash_matches_a_dict(seq):
    """Model check: return codes, contents and a complete, duplicate-free
    iteration after every operation sequence."""
    m, model, cap = Map("hash", 4, 4, 16), {}, 16
    for i, (op, k, flags) in enumerate(seq):
        if op == "update":
            if flags == BPF_NOEXIST and k in model:
                want = errno.EEXIST
            elif flags == BPF_EXIST and k not in model:
                want = errno.ENOENT
            elif k not in model and len(model) == cap:
                want = errno.E2BIG
            else:
                want = 0
                model[k] = i
            got = err(m.update, u32(k), u32(i), flags) if want else m.update(u32(k), u32(i), flags)
            assert (got or 0) == want
        else:
            if k in model:
                m.delete(u32(k))
                del model[k]
            else:
                assert err(m.delete, u32(k)) == errno.ENOENT
    keys = list(m.keys())
    assert len(keys) == len(set(keys))
    assert {struct.unpack("<I", k)[0]: struct.unpack("<I", v)[0] for k, v in m.items()} == model


# ---------------------------------------------------------------- DEVMAP / XSKMAP

@pytest.mark.parametrize("kind", ["devmap", "xskmap"])
def test_redirect_maps(kind):
    m = Map(kind, 4, 4, 4)
    assert m.lookup(0) is None                        # empty until set
    m.update(0, u32(5))
    assert m.lookup(0) == u32(5)
    assert err(m.update, 1, u32(5), BPF_NOEXIST) == errno.EEXIST
    assert err(m.update, 4, u32(5)) == errno.E2BIG
    m.delete(0)
    m.delete(0)                                       # deleting an empty slot is fine
    assert m.lookup(0) is None
    assert err(m.delete, 4) == errno.EINVAL
    assert list(m.keys()) == [u32(i) for i in range(4)]


# ---------------------------------------------------------------- RINGBUF

def insn(code, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


# r3 = r2 (len); r2 = r1 (mem); r1 = map 0; r4 = 0; r0 = ringbuf_output(); exit
OUTPUT = (insn(0xbf, 3, 2) + insn(0xbf, 2, 1) + insn(0x18, 1, 1) + insn(0) + insn(0xb7, 4)
          + insn(0x85, imm=130) + insn(0x95))


def _writer(rb: Map) -> Program:
    return Program(OUTPUT, [rb])


def _put(prog: Program, msg: bytes) -> int:
    res = prog.run_raw(msg)
    assert res.fault == 0
    return res.r0 - (1 << 64) if res.r0 >> 63 else res.r0


def test_ringbuf_messages_keep_boundaries():
    rb = Map("ringbuf", 0, 0, 4096)
    w = _writer(rb)
    msgs = [b"a", b"bc" * 3, b"x" * 100, b"0123456789abcdef"]
    for msg in msgs:
        assert _put(w, msg) == 0
    assert [rb.read_message() for _ in msgs] == msgs
    assert rb.read_message() is None


def test_ringbuf_full_and_wrap_around():
    # 64-byte ring: a 12-byte message is a 24-byte record, so records
    # start at 0, 24, 48 (which wraps) ... and the ring takes two at a time
    rb = Map("ringbuf", 0, 0, 64)
    w = _writer(rb)
    assert _put(w, b"A" * 12) == 0
    assert _put(w, b"B" * 12) == 0
    assert _put(w, b"C" * 12) == -errno.EAGAIN      # 72 > 63 bytes in use
    assert rb.read_message() == b"A" * 12
    for i in range(50):                             # every offset mod 64, many wraps
        msg = bytes([i]) * 12
        assert _put(w, msg) == 0
        assert rb.read_message() is not None
    assert _put(w, b"last") == 0
    got = []
    while (m := rb.read_message()) is not None:
        got.append(m)
    assert got == [bytes([49]) * 12, b"last"]


def test_ringbuf_too_big_and_empty_messages():
    rb = Map("ringbuf", 0, 0, 64)
    w = _writer(rb)
    assert _put(w, b"x" * 60) == -errno.EAGAIN      # record of 72 bytes never fits
    assert _put(w, b"") == 0                        # nothing written
    assert rb.read_message() is None


def test_ringbuf_read_cap():
    rb = Map("ringbuf", 0, 0, 256)
    _put(_writer(rb), b"y" * 40)
    assert err(rb.read_message, 16) == errno.ENOSPC  # stays queued
    assert rb.read_message(40) == b"y" * 40
