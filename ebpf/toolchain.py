"""`build()`: a tenant's C handler -> a verified, relocated, bounded TenantProgram.

compile (bcc) -> verify (kernel, as XDP) -> dump -> relocate maps -> rewrite
context -> validate -> bound -> self-check: the map-relocated bytecode is
loaded once more through `kernel.load_raw_xdp` (verifier statistics only),
which proves the relocation kept what the verifier proved and gives the
program a verifier log even on success.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .bound import CostModel, bound
from .compile import compile_c, find_handler, table_names
from .errors import ToolchainError
from .insn import decode, encode, slot_starts
from .kernel import KernelMap, load_raw_xdp
from .program import TenantProgram
from .relocate import map_specs, relocate_maps, rewrite_ctx
from .validate import validate
from .verify import load_xdp

HANDLER_FILE, CONFIG_FILE = "handler.c", "tenant.toml"


def load_config(path: str | Path) -> tuple[Path, dict]:
    """`path` is a tenant folder (handler.c + tenant.toml) or a C file (with
    an optional tenant.toml beside it). Returns (C file, config dict)."""
    path = Path(path)
    src = path / HANDLER_FILE if path.is_dir() else path
    if not src.is_file():
        raise ToolchainError(f"no tenant handler at {src}")
    toml = src.parent / CONFIG_FILE
    config = tomllib.loads(toml.read_text()) if toml.is_file() else {}
    return src, config


def build(path: str | Path, name: str | None = None, loop_budget: int | None = None,
          cost: CostModel | None = None) -> TenantProgram:
    """Builds the tenant handler at `path` (folder or .c file).

    `name` is the handler function (default: `function` from tenant.toml, else
    the only function taking `struct xdp_md *`); `loop_budget` overrides
    tenant.toml's; `cost` defaults to the interpreter's costs measured on
    this machine (ebpf.calibrate). Raises CompileError, VerifierError, RelocationError,
    ValidationError or BoundError (all ToolchainError < IsolaneError).
    """
    src, config = load_config(path)
    src = src.resolve()
    text = src.read_text()
    function = name or config.get("function")
    if loop_budget is None:
        loop_budget = config.get("loop_budget")

    bpf = compile_c(text)
    function = find_handler(bpf, text, function)
    kernel_fd = load_xdp(bpf, function)

    raw = decode(bpf.dump_func(function.encode()))
    specs, fd_index = map_specs(bpf, table_names(bpf))
    kernel_insns = relocate_maps(raw, fd_index)
    insns = rewrite_ctx(kernel_insns)
    validate(insns, len(specs))
    if cost is None:
        from .calibrate import calibrated

        cost = calibrated()
    b = bound(insns, loop_budget, cost)

    fds = [0] * len(specs)
    for fd, idx in fd_index.items():
        fds[idx] = fd
    check_fd, log = load_raw_xdp(encode(kernel_insns), fds, name=function)
    os.close(check_fd)

    return TenantProgram(
        name=config.get("name", src.parent.name if src.name == HANDLER_FILE else src.stem),
        source=src,
        function=function,
        insns=encode(insns),
        kernel_insns=encode(kernel_insns),
        maps=specs,
        n_insns=sum(slot_starts(insns)),
        bound_insns=b.insns,
        bound_cycles=b.cycles,
        loop_budget=b.loop_budget if b.back_edges else loop_budget,
        back_edges=b.back_edges,
        verifier_log=log,
        kernel_fd=kernel_fd,
        bpf=bpf,
        kernel_maps={m.name: KernelMap(fds[i], m.key_size, m.value_size, m.name)
                     for i, m in enumerate(specs)},
    )
