"""Static worst-case bound of a tenant program, in instructions and cycles.

The CFG has one node per instruction (an LD_IMM64 is one node). A
depth-first search from insn 0 classifies edges; removing its back edges
leaves a DAG. Paths are weighted 1 per instruction, or by `CostModel.cycles`.

* Loop-free program: bound = the longest path from insn 0 to an exit.
* With back edges the tenant declares `loop_budget` B: the most back edges
  one packet may take, summed over all loops (the engine enforces it at run
  time on every back edge). A run that takes k <= B back edges splits at
  them into k+1 DAG paths: the first starts at insn 0, every other one at
  the target of a back edge (a loop head h); all but the last end with the
  back edge's source, the last at an exit. With
      E(v) = heaviest DAG path from v to an exit,
      J(v) = heaviest DAG path from v to the source of a back edge,
  and the last piece ending at an exit, or at the back edge the engine
  refuses (budget spent), the heaviest run takes all B back edges (weights
  are positive), so

      bound = max(E(0), J(0) + (B - 1) * max_h J(h) + max_h max(E(h), J(h)))

  and, for B = 0, max(E(0), J(0));

  which is at most (longest DAG path) * (B + 1), and sound for any CFG,
  reducible or not, because each piece is a DAG path.

BPF-to-BPF calls are not bounded here (bcc cannot load them; see isolane.h).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BoundError
from .insn import (ALU, ALU64, CALL, DIV, EXIT, JMP, JMP32, LD_IMM64, LDX, MOD, MODE_ATOMIC, MUL,
                   PSEUDO_CALL, ST, STX, Insn, decode)
from .relocate import successors


def _default_helper_cycles() -> dict[int, float]:
    # Rough x86-64 figures for the interpreter's helpers; the datapath
    # replaces them with measured ones at start (`CostModel.from_dict`).
    return {1: 40.0, 2: 80.0, 3: 60.0, 5: 25.0, 28: 30.0, 44: 10.0, 51: 30.0, 65: 10.0, 130: 80.0}


@dataclass
class CostModel:
    """Cycles per instruction class; `helpers` maps a helper id to its cost
    (a helper not listed costs `call`)."""

    alu: float = 1.0
    mul: float = 3.0
    div: float = 25.0
    load: float = 2.0
    store: float = 2.0
    atomic: float = 20.0
    jump: float = 1.0
    ld_imm64: float = 1.0
    exit: float = 1.0
    call: float = 50.0
    entry: float = 0.0  # once per run: the engine's setup and return
    helpers: dict[int, float] = field(default_factory=_default_helper_cycles)

    @classmethod
    def from_dict(cls, d: dict) -> "CostModel":
        d = dict(d)
        helpers = {int(k): float(v) for k, v in d.pop("helpers", {}).items()}
        model = cls(**{k: float(v) for k, v in d.items()})
        model.helpers.update(helpers)
        return model

    def cycles(self, insn: Insn) -> float:
        cls = insn.cls
        if insn.code == LD_IMM64:
            return self.ld_imm64
        if cls in (ALU, ALU64):
            if insn.op == MUL:
                return self.mul
            if insn.op in (DIV, MOD):
                return self.div
            return self.alu
        if cls == LDX:
            return self.load
        if cls == ST:
            return self.store
        if cls == STX:
            return self.atomic if insn.mode == MODE_ATOMIC else self.store
        if cls in (JMP, JMP32):
            if insn.op == CALL:
                return self.helpers.get(insn.imm, self.call)
            if insn.op == EXIT:
                return self.exit
            return self.jump
        return self.alu


@dataclass(frozen=True)
class Bound:
    insns: int  # worst-case instructions executed per packet
    cycles: float  # worst-case cycles under the cost model
    longest_path: int  # E(0): longest loop-free run, in instructions
    back_edges: int  # number of back edges in the CFG
    loop_budget: int  # B used (0 for loop-free code)


class Cfg:
    """Instruction-level CFG: `succ[i]` for instruction starts, back edges by DFS."""

    def __init__(self, insns: list[Insn]):
        self.insns = insns
        n = len(insns)
        self.succ: dict[int, list[int]] = {}
        self.back_edges: set[tuple[int, int]] = set()
        self.order: list[int] = []  # DFS post-order of reachable nodes
        for i, ins in enumerate(insns):
            if ins.cls == JMP and ins.op == CALL and ins.src == PSEUDO_CALL:
                raise BoundError(f"BPF-to-BPF call at insn {i} is not supported")
        color: dict[int, int] = {0: 1}  # 1 on stack, 2 done
        stack = [(0, iter(self._succ(0, n)))]
        while stack:
            v, it = stack[-1]
            for w in it:
                c = color.get(w)
                if c is None:
                    color[w] = 1
                    stack.append((w, iter(self._succ(w, n))))
                    break
                if c == 1:
                    self.back_edges.add((v, w))
            else:
                color[v] = 2
                self.order.append(v)
                stack.pop()

    def _succ(self, i: int, n: int) -> list[int]:
        if i not in self.succ:
            succ = successors(self.insns, i)
            for j in succ:
                if not 0 <= j < n:
                    raise BoundError(f"jump from insn {i} to {j} outside the program")
            self.succ[i] = succ
        return self.succ[i]

    def longest_to(self, weight, to_back_edge: bool) -> dict[int, float]:
        """E(v) (to_back_edge False) or J(v) (True) over the DAG, for every
        reachable v; -inf where no such path exists."""
        sources = {v for v, _ in self.back_edges}
        best: dict[int, float] = {}
        for v in self.order:  # post-order: DAG successors come first
            ends = [best[w] for w in self.succ[v] if (v, w) not in self.back_edges]
            if to_back_edge and v in sources:
                ends.append(0.0)
            if not to_back_edge and self.insns[v].is_exit():
                ends.append(0.0)
            tail = max(ends, default=_NEG)
            best[v] = weight(self.insns[v]) + tail if tail != _NEG else _NEG
        return best

    def bound(self, weight, budget: int) -> float:
        exit_len = self.longest_to(weight, False)
        if not self.back_edges:
            return exit_len[0]
        loop_len = self.longest_to(weight, True)
        if budget == 0:
            return max(exit_len[0], loop_len[0])
        heads = {w for _, w in self.back_edges}
        j_head = max(loop_len[h] for h in heads)
        last = max(max(exit_len[h], loop_len[h]) for h in heads)
        return max(exit_len[0], loop_len[0] + (budget - 1) * j_head + last)


_NEG = float("-inf")


def bound(insns: bytes | list[Insn], loop_budget: int | None = None,
          cost: CostModel | None = None) -> Bound:
    """The static bound of a program (see the module doc for the formula).

    Raises BoundError when the program has back edges and no `loop_budget`.
    """
    slots = decode(insns) if isinstance(insns, (bytes, bytearray)) else list(insns)
    if not slots:
        raise BoundError("empty program")
    cost = cost or CostModel()
    cfg = Cfg(slots)
    headers = {w for _, w in cfg.back_edges}
    if headers and loop_budget is None:
        raise BoundError(f"the program has {len(cfg.back_edges)} back edge(s): declare "
                         "`loop_budget` (most back edges per packet) in tenant.toml")
    budget = loop_budget if headers else 0
    if budget < 0:
        raise BoundError("loop_budget must be >= 0")
    n_bound = cfg.bound(lambda ins: 1, budget)
    c_bound = cfg.bound(cost.cycles, budget) + cost.entry
    longest = cfg.longest_to(lambda ins: 1, False)[0]
    if n_bound == _NEG:
        raise BoundError("no path from insn 0 reaches an exit")
    return Bound(insns=int(n_bound), cycles=float(c_bound), longest_path=int(longest),
                 back_edges=len(cfg.back_edges), loop_budget=budget)
