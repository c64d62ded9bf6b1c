"""What the toolchain hands to an engine: a TenantProgram and its MapSpecs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAP_TYPE_NAMES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
                  14: "devmap", 17: "xskmap", 25: "devmap_hash", 27: "ringbuf"}


@dataclass(frozen=True)
class MapSpec:
    """One map of a tenant program; its index in `TenantProgram.maps` is what
    relocated LD_IMM64 (src_reg=1) instructions carry."""

    name: str
    type: int  # BPF_MAP_TYPE_*
    key_size: int
    value_size: int
    max_entries: int

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, f"type{self.type}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_name, "type_id": self.type,
                "key_size": self.key_size, "value_size": self.value_size,
                "max_entries": self.max_entries}


@dataclass
class TenantProgram:
    """A built tenant handler.

    `insns` is the relocated bytecode engines run (map indexes, dp_xdp_ctx
    loads); `kernel_insns` is the same code with map indexes but the kernel's
    xdp_md context, for `kernel.load_raw_xdp`. `kernel_fd` is the verified
    program in the kernel (the oracle); it belongs to `bpf`, the bcc object
    kept alive for it and for the maps (`kernel_maps`).
    """

    name: str
    source: Path
    function: str
    insns: bytes
    kernel_insns: bytes
    maps: list[MapSpec]
    n_insns: int  # instructions (an LD_IMM64 counts once)
    bound_insns: int
    bound_cycles: float
    loop_budget: int | None
    back_edges: int
    verifier_log: str
    kernel_fd: int
    bpf: Any = field(repr=False, default=None)
    kernel_maps: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def n_slots(self) -> int:
        """8-byte slots (an LD_IMM64 takes two)."""
        return len(self.insns) // 8

    def summary(self) -> dict:
        """What `isolane prog check` reports (as JSON with --json)."""
        return {
            "name": self.name,
            "source": str(self.source),
            "function": self.function,
            "n_insns": self.n_insns,
            "n_slots": self.n_slots,
            "bound_insns": self.bound_insns,
            "bound_cycles": self.bound_cycles,
            "loop_budget": self.loop_budget,
            "back_edges": self.back_edges,
            "maps": [m.to_dict() for m in self.maps],
            "verified": True,
            "insns_hex": self.insns.hex(),
        }
