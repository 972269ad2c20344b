"""ES-CoT: early stopping by the run length of step answers (Mao, Yin, Zhu and Fang, 2025, "Early Stopping
Chain-of-thoughts in Large Language Models", arXiv:2509.14004).

At the end of each reasoning step the model is asked for its current final answer (a "step answer").
Consecutive identical step answers form a run. The paper stops when the run length "exhibits a sharp
increase and exceeds a minimum threshold" (its run-jump test), and answers with the current step answer.

The run-jump test as implemented (`run_jump`): the completed runs before the current one, of lengths
r_1..r_m, give the probability q that a step answer repeats the previous one, by maximum likelihood under
a geometric run-length model, q = sum(r_i - 1) / sum(r_i) (so q = 1 - 1/mean run length). A current run
of length L is a jump when it is at least `min_run` long and its p-value under that model,
P(run >= L) = q ** (L - 1), is below `alpha`. Before any run has completed, the history is taken to be
one run of length 1 (q = 0): a first run stops as soon as it reaches `min_run`.

Deviations and choices (the text of the paper's test was not available to us when this was written:
the rule above follows its abstract and summaries -- a statistically tested sharp increase of the
run length over previous runs, with a minimum length, robust across p-values -- and the lead should
check its exact form and defaults against the paper):
- Steps: EarlyExit checks a trace every `every` generated tokens, so a "step" is a fixed chunk of tokens
  (as for `AnswerConsistency`), not a paragraph or a "wait" marker of a reasoning model.
- Step answers are elicited with `suffix` (default: Dynasor's boxed suffix) and a short greedy answer,
  charged to the trace (`ttc.probes.base.elicit`). A step without an answer equals nothing, not even
  another step without one: it is a run of length 1.
- Identity of step answers is `ttc.answers.equivalent` (the paper compares answer strings).
- On a reasoning model the steps are steps of the thinking: each step answer is elicited after the
  end-of-thinking marker (`ttc.probes.base.elicit`), and once the model closed its thinking itself no
  more step answers are taken (the runs are runs over the thinking).
"""

from __future__ import annotations

from collections.abc import Sequence

from ttc.answers import equivalent
from ttc.context import Context
from ttc.errors import InvalidInput
from ttc.probes.base import BOXED_SUFFIX, CONTINUE, EXIT, Decision, Probe, TraceState, elicit, thinking_view


def run_lengths(step_answers: Sequence[str | None]) -> list[int]:
    """Lengths of the runs of consecutive equivalent step answers (a None is a run of its own)."""
    runs: list[int] = []
    previous: str | None = None
    for i, a in enumerate(step_answers):
        if i > 0 and a is not None and previous is not None and equivalent(a, previous):
            runs[-1] += 1
        else:
            runs.append(1)
        previous = a
    return runs


def run_jump(step_answers: Sequence[str | None], min_run: int = 3, alpha: float = 0.05) -> tuple[bool, float]:
    """(stop, p_value): whether the current run of step answers is a significant jump (module docstring)."""
    if not step_answers or step_answers[-1] is None:
        return False, 1.0
    runs = run_lengths(step_answers)
    current, previous = runs[-1], runs[:-1] or [1]
    q = sum(r - 1 for r in previous) / sum(previous)
    p_value = q ** (current - 1)
    return current >= min_run and p_value < alpha, p_value


class ESCoT(Probe):
    """Stop when the run of identical step answers jumps (`run_jump`): at least `min_run` steps and a
    p-value below `alpha` against the earlier runs. A step is `every` generated tokens.

    Source: Mao, Yin, Zhu and Fang, 2025, "Early Stopping Chain-of-thoughts in Large Language Models".
    Deviations (module docstring): the run-jump test is rebuilt from the paper's description (a
    geometric run-length model and a p-value), and a step is a fixed chunk of `every` tokens.

    Args:
        every: tokens per step (the probe is asked every `every` generated tokens).
        min_run: the shortest run that may stop the trace.
        alpha: the p-value below which the current run is a jump.
        suffix: the answer-eliciting text appended after the trace (`ttc.probes.BOXED_SUFFIX` by default;
            `ttc.probes.PLAIN_SUFFIX` for models that do not box).
        answer_tokens: greedy tokens read for a step answer.

    Example:
        >>> import ttc
        >>> from ttc.probes.es_cot import ESCoT, run_jump
        >>> run_jump(["4", "8", "7", "7", "7"], min_run=3)  # (stop, p-value): a run of three 7s after runs of 1
        (True, 0.0)
        >>> sample = ttc.EarlyExit(ESCoT(every=16))  # then MajorityVote(sample=sample) votes over early exits
    """

    name = "es_cot"
    # the Probe defaults declare it: no logprobs, no token scanning, asked every `every` tokens

    def __init__(self, every: int = 16, min_run: int = 3, alpha: float = 0.05, suffix: str = BOXED_SUFFIX,
                 answer_tokens: int = 12):
        if not isinstance(every, int) or every <= 0:
            raise InvalidInput(f"ESCoT.every must be a positive number of tokens, got {every!r}")
        if not isinstance(min_run, int) or min_run < 1:
            raise InvalidInput(f"ESCoT.min_run must be a positive integer, got {min_run!r}")
        if not 0.0 < alpha <= 1.0:
            raise InvalidInput(f"ESCoT.alpha must be in (0, 1], got {alpha!r}")
        if not suffix:
            raise InvalidInput("ESCoT.suffix must be a non-empty answer-eliciting text")
        self.every = every
        self.min_run = min_run
        self.alpha = alpha
        self.suffix = suffix
        self.answer_tokens = answer_tokens

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        view = await thinking_view(state, ctx)
        if view is not None and not view.open:  # a reasoning model that closed its thinking is answering
            return Decision(CONTINUE)
        got = await elicit(state, ctx, self.suffix, self.answer_tokens)
        history = state.memory.setdefault(self.name, [])
        history.append(got.answer)
        stop, _ = run_jump(history, self.min_run, self.alpha)
        score = float(run_lengths(history)[-1])
        if stop:
            return Decision(EXIT, answer=got.answer, score=score, appended=got.appended)
        return Decision(CONTINUE, score=score)
