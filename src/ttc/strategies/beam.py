"""Step-level beam search guided by a PRM, and its diverse variant DVTS."""

from __future__ import annotations

from ttc.context import Context
from ttc.errors import check_positive
from ttc.infos import BeamInfo, StopReason
from ttc.prompts import ChatPrompt
from ttc.steps import STEP_PARAMS, Node, StepConfig
from ttc.strategies.stepwise import Request, StepSearch, in_order
from ttc.types import Problem, Result, SamplingParams
from ttc.verifiers.process import ProcessRewardModel


class BeamSearch(StepSearch):
    """PRM-guided beam search over reasoning steps (Snell et al., 2024, "Scaling LLM Test-Time
    Compute Optimally can be More Effective than Scaling Model Parameters", section 5; as
    implemented in Hugging Face's search-and-learn, Beeching, Tunstall and Rush, 2024).

    The first step is sampled `width * expansions` times from the prompt. Each round, every
    new step is scored by the PRM (all of them in one batched call), finished traces are set
    aside, and the `width` unfinished traces with the best aggregated score are kept; each kept
    beam is then extended by `expansions` sampled next steps (all requests concurrent). When
    fewer than `width` beams remain, the `width * expansions` samples of a round are spread over
    the remaining ones, so every round samples the same number of steps (as search-and-learn
    duplicates its active beams). The search ends when no beam is left, at `steps.max_steps`, or
    when the budget runs out; the answer is the best finished trace by aggregated PRM score
    (`select="weighted"`: a vote weighted by those scores).

    `diverse=True` is DVTS (diverse verifier tree search, Beeching et al., 2024, "Scaling
    test-time compute with open models"): `width` independent subtrees, each a beam of one that
    continues from the best of its `expansions` samples per step (ranked over all of them,
    finished or not); a subtree stops as soon as that best sample is finished. As in
    search-and-learn's `_dvts`, the answer pool is each subtree's last round of samples (its
    finished ones: an unfinished sibling has no final answer yet); finished samples that lost to
    a better sibling in an earlier round are not candidates. Use `DVTS`.

    Deviations: no lookahead rollouts (Snell's lookahead search is a separate method);
    duplicate beams (the same trace text sampled twice) are kept only once when `unique=True`
    (search-and-learn's `filter_duplicates`, off there by default, on here: a duplicate beam
    spends samples on a prefix already being explored); when the verifier-call budget cannot
    score a whole round, only the samples it can score are drawn. Scores are computed on whole traces (every step), and
    `aggregation` (default "last", as search-and-learn) ranks them.

    Args:
        width: beams kept per round (N / M in Snell et al.).
        expansions: next steps sampled per beam (M).
        diverse: DVTS (use `DVTS` instead).
        unique: keep one beam per distinct trace text.
        prm, aggregation, select, steps, params, prompt: as for every step search (`StepSearch`):
            the PRM (default `LLMJudge()`), how step scores combine, how the answer is chosen,
            what a step is, how steps are sampled, the chat prompt.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.BeamSearch(width=2, expansions=2, prm=prm).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "beam"

    def __init__(self, width: int = 4, expansions: int = 4, prm: ProcessRewardModel | None = None, *,
                 diverse: bool = False, unique: bool = True, aggregation: str = "last", select: str = "best",
                 steps: StepConfig | None = None, params: SamplingParams = STEP_PARAMS,
                 prompt: ChatPrompt = ChatPrompt()):
        super().__init__(prm, aggregation=aggregation, select=select, steps=steps, params=params, prompt=prompt)
        self.width = check_positive("width", width)
        self.expansions = check_positive("expansions", expansions)
        self.diverse = bool(diverse)
        self.unique = bool(unique)
        if self.diverse:
            self.name = "dvts"

    @property
    def n(self) -> int:
        """Steps sampled per round: width x expansions."""
        return self.width * self.expansions

    async def run(self, problem: Problem, ctx: Context) -> Result:
        stepper, tree = await self._begin(problem, ctx)
        # one group per independent subtree: a single beam of `width` (beam search), or `width`
        # beams of one (DVTS); each group samples keep * expansions steps per round
        groups: list[list[Node]] = [[tree.root] for _ in range(self.width)] if self.diverse else [[tree.root]]
        keep = 1 if self.diverse else self.width
        pool: dict[int, list[Node]] = {}  # per group, its answer candidates (finished traces)
        rounds = 0
        stop: StopReason | None = None
        while any(groups) and stop is None:
            growth = await self._grow(problem, ctx, stepper, tree, self._plan(groups, keep * self.expansions),
                                      in_order, rounds)
            if growth.stop:
                stop = growth.stop
                break
            rounds += 1
            for g in range(len(groups)):
                children = [c for c in growth.new if c.group == g]
                if children or not self.diverse:  # the budget may give a DVTS subtree no sample
                    groups[g] = self._prune(children, keep, pool.setdefault(g, []))
            if growth.exhausted:
                stop = "token_budget"
        final = [c for done in pool.values() for c in done]
        if not final:  # nothing finished within the budget: the best partial traces
            final = [n for beams in groups for n in beams if n.value is not None]
        return self._result(problem, ctx, tree, final, info=BeamInfo, rounds=rounds, width=self.width,
                            expansions=self.expansions, diverse=self.diverse, stopped_by=stop or "search_complete")

    @staticmethod
    def _plan(groups: list[list[Node]], per_group: int) -> list[Request]:
        """Spread each group's samples over its live beams (search-and-learn duplicates its active beams)."""
        plan = []
        for g, beams in enumerate(groups):
            for i, beam in enumerate(beams):
                k = per_group // len(beams) + (1 if i < per_group % len(beams) else 0)
                if k:
                    plan.append(Request(beam, k, g))
        return plan

    def _prune(self, children: list[Node], keep: int, done: list[Node]) -> list[Node]:
        """A group's beams for the next round, from its new scored children. Beam search: finished
        children join the answer pool `done`, the `keep` best unfinished ones go on. DVTS: the
        pool is this round's finished samples, and the subtree goes on with its best sample, or
        ends if that one is finished."""
        if self.diverse:
            done[:] = [c for c in children if c.finished]
            best = max(children, key=lambda c: c.value)  # max keeps the first of equals
            return [] if best.finished else [best]
        done += [c for c in children if c.finished]
        live = sorted((c for c in children if not c.finished), key=lambda c: -c.value)  # stable
        return self._top(live, keep)

    def _top(self, ranked: list[Node], keep: int) -> list[Node]:
        if not self.unique:
            return ranked[:keep]
        kept: list[Node] = []
        seen: set[str] = set()
        for node in ranked:
            key = node.trace.text
            if key not in seen:
                seen.add(key)
                kept.append(node)
                if len(kept) == keep:
                    break
        return kept


class DVTS(BeamSearch):
    """Diverse verifier tree search (Beeching, Tunstall and Rush, 2024, "Scaling test-time compute
    with open models"): `subtrees` independent PRM-guided searches, each keeping the best of its
    `expansions` sampled next steps (a beam of one), so that the final candidates stay diverse.
    Same as `BeamSearch(width=subtrees, expansions=expansions, diverse=True)`; see BeamSearch for
    the shared details and deviations.

    Args:
        subtrees: independent subtrees (N / M).
        expansions: next steps sampled per subtree and round (M).
        prm: the PRM; other keyword arguments as for `BeamSearch` (aggregation, select, steps, ...).

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.9)
        >>> ttc.DVTS(subtrees=2, expansions=2, prm=prm).solve("3 + 4?", Scripted(["The answer is 7."])).answer
        '7'
    """

    name = "dvts"

    def __init__(self, subtrees: int = 4, expansions: int = 4, prm: ProcessRewardModel | None = None, **kwargs):
        super().__init__(width=subtrees, expansions=expansions, prm=prm, diverse=True, **kwargs)

    @property
    def subtrees(self) -> int:
        return self.width
