"""`AnyOf`: several probes watching one trace; it stops as soon as any of them says stop.

The container follows transformers' `StoppingCriteriaList` (`generation/stopping_criteria.py`),
whose call is `any(criterion(...) for criterion in the list)`: here the first probe, in list
order, whose decision is "exit" or "drop" stops the trace, and its decision is the container's.
Its requirements are the union of its members': their `needs` (`ttc.needs.Needs.union`: logprobs
if any needs them, the largest top-logprob count, hidden states if any reads them) and every
backend capability any of them needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.needs import Needs, needs_of
from ttc.probes.base import CONTINUE, Decision, Probe, TraceState


class AnyOf(Probe):
    """Stop when any of `probes` says stop (the first, in list order, that does decides).

    Each member keeps its own cadence: the container is checked every gcd of the members'
    `every`, and asks a member only at its own check points (multiples of its `every`), so a
    member behaves as it would alone. Members that scan every token (`scans_tokens`) are asked
    at every check of the container (they scan what is new, so a dip is only caught sooner).
    Each member keeps its own `TraceState.scanned` cursor. The container's `suffix` is the first
    member's that declares one (EarlyExit forces answers with it when the stopping member
    elicited none).

    Deviations from `StoppingCriteriaList`: members are asked in order and asking stops at the
    first stop (a probe call can cost tokens; transformers evaluates every criterion).

    Args:
        probes: the member probes (at least one; names must differ, since each keeps its
            per-trace memory under its name).

    Example:
        >>> from ttc.probes import AnswerConsistency, AnyOf, TokenConfidence
        >>> AnyOf([AnswerConsistency(every=64), TokenConfidence(every=32)]).every
        32
    """

    name = "any_of"

    def __init__(self, probes: Sequence[Probe]):
        probes = list(probes)
        if not probes:
            raise InvalidInput("AnyOf needs at least one probe")
        for p in probes:
            if not isinstance(p, Probe):
                raise InvalidInput(f"AnyOf takes ttc probes (ttc.probes.*), got {type(p).__name__}")
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise InvalidInput(f"AnyOf's probes must have different names (each keeps its memory under its "
                               f"name), got {names}")
        self.probes = probes
        self.every = math.gcd(*(max(1, p.every) for p in probes))
        self.scans_tokens = any(p.scans_tokens for p in probes)
        self.suffix = next((p.suffix for p in probes if p.suffix), None)
        self.needs = Needs.union(needs_of(p) for p in probes)
        self.required_capabilities = frozenset().union(*(p.required_capabilities for p in probes))

    def _key(self, i: int) -> str:
        return f"{self.name}.{i}"

    def reset(self, state: TraceState) -> None:
        for i, probe in enumerate(self.probes):
            probe.reset(state)
            state.memory[self._key(i)] = {"scanned": state.scanned, "next": max(1, probe.every)}

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        n = len(state.token_ids)
        for i, probe in enumerate(self.probes):
            mine = state.memory.setdefault(self._key(i), {"scanned": 0, "next": max(1, probe.every)})
            if not probe.scans_tokens and n < mine["next"]:
                continue
            mine["next"] = (n // max(1, probe.every) + 1) * max(1, probe.every)
            state.scanned = mine["scanned"]
            try:
                decision = await probe.check(state, ctx)
            finally:
                mine["scanned"] = state.scanned
            if decision.stop:
                return decision if decision.probe else dataclasses.replace(decision, probe=probe.name)
        return Decision(CONTINUE)
