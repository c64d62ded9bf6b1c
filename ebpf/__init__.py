"""isolane's tenant-program toolchain: compile tenant XDP handlers with bcc,
have the kernel verifier prove them, relocate the bytecode for isolane's
engines, check and bound it; and the kernel as test-run oracle.

    from ebpf import build
    prog = build("tenants/udp_echo")      # TenantProgram
    run = ebpf.kernel.test_run(prog.kernel_fd, frame)

bcc is imported only when a program is compiled, so the pure parts
(insn, relocate, validate, bound) work without it.
"""
from .bound import Bound, CostModel, bound
from .errors import (BoundError, CompileError, RelocationError, ToolchainError, ValidationError,
                     VerifierError)
from .kernel import KernelMap, KernelRun, load_raw_xdp, test_run
from .program import MapSpec, TenantProgram
from .relocate import relocate_maps, rewrite_ctx
from .toolchain import build
from .validate import ALLOWED_HELPERS, validate

__all__ = ["build", "TenantProgram", "MapSpec", "bound", "Bound", "CostModel", "validate",
           "ALLOWED_HELPERS", "relocate_maps", "rewrite_ctx", "test_run", "KernelRun",
           "load_raw_xdp", "KernelMap", "ToolchainError", "CompileError", "VerifierError",
           "RelocationError", "ValidationError", "BoundError"]
