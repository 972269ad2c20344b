"""Answer-consistency probing (Dynasor's certainty, Fu et al., 2024, "Efficiently Serving LLM
Reasoning Programs with Certaindex").

Every `every` generated tokens the partial trace is followed by an answer-eliciting suffix and
the model's short greedy answer is read; once the last `window` probe answers agree, the model
is taken to be certain and the trace stops with that answer. Probe requests are ordinary
generator requests (prompt = prompt + trace + suffix, a few completion tokens): their tokens are
counted in the candidate's usage, and a prefix-caching backend reuses the trace's KV cache.

As in Dynasor's code (`dynasor/cot.py`), a boxed probe generates its tokens without stopping at
the box, reads the answer up to the first unpaired "}", and counts the answer as uncertain when the
whole probe response hedges. Deviations from Dynasor, by choice: the probe wording
(`BOXED_SUFFIX`, "... Oh, I suddenly got the answer to the whole problem, the final answer is
\\boxed{", is Dynasor's paper wording; its code uses "**Final Answer**\n\n\\[ \\boxed{"), 12 probe
tokens by default instead of 20 (`answer_tokens`), and the hedge list `HEDGES` (whole words:
wait, hmm, not sure, maybe) instead of Dynasor's substrings (wait, hold, but, okay, no, hmm), whose
"no" and "but" match inside many words; pass `hedges=` to change it.

On a reasoning model (a generator with a thinking format) the probe is asked inside the thinking:
the end-of-thinking marker is put before the suffix (`ttc.probes.base.elicit`), as Dynasor does for
reasoning models, and once the model has closed its thinking itself the probe no longer asks (the
model is answering). A model without thinking is probed as before.
"""

from __future__ import annotations

import re

from ttc.answers import equivalent
from ttc.context import Context
from ttc.errors import InvalidInput, check_positive
from ttc.probes.base import BOXED_SUFFIX, CONTINUE, EXIT, Decision, Probe, TraceState, elicit, thinking_view

#: probe answers containing these words are not counted as certain (Dynasor drops hedged answers)
HEDGES = ("wait", "hmm", "not sure", "maybe")


class AnswerConsistency(Probe):
    """Stop when the last `window` probe answers, taken every `every` tokens, are equivalent.

    Source: Dynasor's certainty probing (Fu et al., 2024); deviations (probe wording, 12 probe
    tokens, whole-word hedges): see this module's docstring.

    Args:
        every: generated tokens between probes.
        window: probe answers that must agree.
        suffix: appended to the partial trace to elicit an answer (`ttc.probes.BOXED_SUFFIX`, the
            default, or `ttc.probes.PLAIN_SUFFIX` for models that do not box).
        answer_tokens: greedy tokens read after the suffix.
        min_tokens: no probing before this many generated tokens.
        hedges: words that make a probe answer uncertain.

    Example:
        >>> import ttc
        >>> from ttc.backends import Scripted
        >>> from ttc.probes import PLAIN_SUFFIX, AnswerConsistency
        >>> llm = Scripted(lambda prompt, params, i: " 7" if prompt.endswith(PLAIN_SUFFIX) else "Adding 3 and 4 gives")
        >>> ttc.EarlyExit(AnswerConsistency(every=4, suffix=PLAIN_SUFFIX)).solve("3 + 4?", llm).answer
        '7'
    """

    name = "answer_consistency"

    def __init__(self, every: int = 64, window: int = 2, suffix: str = BOXED_SUFFIX, answer_tokens: int = 12,
                 min_tokens: int = 0, hedges: tuple[str, ...] = HEDGES):
        check_positive("AnswerConsistency.every", every, "number of tokens")
        check_positive("AnswerConsistency.window", window)
        if not suffix:
            raise InvalidInput("AnswerConsistency.suffix must be a non-empty answer-eliciting text")
        self.every = every
        self.window = window
        self.suffix = suffix
        self.answer_tokens = answer_tokens
        self.min_tokens = min_tokens
        self.hedges = tuple(h.lower() for h in hedges)

    async def check(self, state: TraceState, ctx: Context) -> Decision:
        if len(state.token_ids) < self.min_tokens:
            return Decision(CONTINUE)
        view = await thinking_view(state, ctx)
        if view is not None and not view.open:  # a reasoning model that closed its thinking is answering
            return Decision(CONTINUE)
        got = await elicit(state, ctx, self.suffix, self.answer_tokens)
        answer, appended = got.answer, got.appended
        if answer is not None and any(re.search(rf"\b{re.escape(h)}\b", got.response.lower()) for h in self.hedges):
            answer = None  # the whole probe response is checked, after the box too (as Dynasor)
        history = state.memory.setdefault(self.name, [])
        history.append(answer)
        last = history[-self.window:]
        agree = len(last) == self.window and None not in last and all(equivalent(a, last[-1]) for a in last)
        streak = 0
        for a in reversed(history):
            if a is None or not equivalent(a, history[-1]):
                break
            streak += 1
        if agree:
            return Decision(EXIT, answer=answer, score=float(streak), appended=appended)
        return Decision(CONTINUE, score=float(streak))
