"""Errors of the tenant-program toolchain, under isolane's one exception tree."""
from __future__ import annotations

from datapath.errors import IsolaneError


class ToolchainError(IsolaneError):
    """A tenant program that the toolchain cannot turn into runnable bytecode."""


class CompileError(ToolchainError):
    """clang (through bcc) could not compile the tenant's C; `log` is its output."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


class VerifierError(ToolchainError):
    """The kernel verifier rejected the program.

    `log` is the verifier's own log, `reason` its last meaningful line (what a
    tenant reads first), `errno` what BPF_PROG_LOAD returned.
    """

    def __init__(self, reason: str, log: str = "", errno: int | None = None):
        super().__init__(f"verifier rejected the program: {reason}", errno=errno)
        self.reason = reason
        self.log = log


class RelocationError(ToolchainError):
    """Bytecode the relocator cannot map onto isolane's maps or context layout.

    `insn` is the index of the offending instruction, when there is one.
    """

    def __init__(self, message: str, insn: int | None = None):
        super().__init__(message if insn is None else f"{message} at insn {insn}")
        self.insn = insn


class ValidationError(RelocationError):
    """Final bytecode that breaks one of isolane's own rules (opcode, helper, jump, register)."""


class BoundError(ToolchainError):
    """No static bound: loops without a declared `loop_budget`, or an unsupported construct."""
