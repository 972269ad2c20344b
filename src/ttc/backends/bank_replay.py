"""A backend that answers from a recorded sample bank: each problem's requests get its samples in
order (first request samples 0..n-1, the next n..), billing the recorded prompt and completion
tokens. Real strategy classes run on it exactly as on the model that recorded the bank, which is
what `ttc tune`'s fast replays are tested against (and what `benchmarks/adaptive.py` evaluates on).

Problems come from `BankReplay.problems()`: each carries a raw prompt naming its bank entry, so
duplicate questions keep their own samples and no chat template is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ttc.backends.base import Generation, Generator
from ttc.bank.format import Bank, BankProblem, BankSample
from ttc.errors import GenerationError, InvalidInput
from ttc.types import Completion, Problem, Prompt, SamplingParams, Thinking

_PREFIX = "<ttc-bank:"


def _key(prompt: Prompt) -> str:
    if not isinstance(prompt, str) or not prompt.startswith(_PREFIX):
        raise InvalidInput("BankReplay answers only the problems of BankReplay.problems() (their prompts name "
                           "the bank entry)")
    return prompt[len(_PREFIX):-1]


def _completion(sample: BankSample) -> Completion:
    tops = None
    if sample.top_logprobs is not None:
        tops = tuple(dict(t) for t in sample.top_logprobs)
    content_tokens = sample.tokens - sample.reasoning_tokens
    thinking = None
    if sample.thinking is not None:
        thinking = Thinking(text=sample.thinking, token_ids=(0,) * sample.reasoning_tokens)
    return Completion(text=sample.text, token_ids=(0,) * content_tokens, finish_reason=sample.finish_reason,
                      logprobs=sample.logprobs, top_logprobs=tops, thinking=thinking)


class BankReplay(Generator):
    """Serves `bank`'s samples in recorded order, or in `order[problem_id]` (a permutation of the
    sample indices) to replay one subsample draw. A problem asked for more samples than it has
    raises GenerationError. `requests` counts the requests answered."""

    def __init__(self, bank: Bank | Sequence[BankProblem], order: Mapping[str, Sequence[int]] | None = None):
        problems = bank.problems if isinstance(bank, Bank) else tuple(bank)
        self.entries: dict[str, BankProblem] = {p.problem_id: p for p in problems}
        self.order = {pid: list(order[pid]) for pid in order} if order else {}
        self.used = {pid: 0 for pid in self.entries}
        self.requests = 0
        self._model = bank.header.get("model", "bank") if isinstance(bank, Bank) else "bank"

    @property
    def model_name(self) -> str:
        return f"replay of {self._model}"

    def problems(self) -> list[Problem]:
        """The bank's problems, each with a prompt that names its entry."""
        return [Problem(question=p.question, answer=p.gold, id=p.problem_id,
                        metadata={"prompt": f"{_PREFIX}{p.problem_id}>"}) for p in self.entries.values()]

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        raise InvalidInput("BankReplay has no chat template: solve the problems of BankReplay.problems()")

    async def tokenize(self, text: str) -> list[int]:
        return [0] * self.entries[_key(text)].prompt_tokens

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        pid = _key(prompt)
        entry = self.entries[pid]
        start = self.used[pid]
        if start + params.n > len(entry.samples):
            raise GenerationError(f"{pid}: asked for sample {start + params.n}, the bank holds {len(entry.samples)}")
        self.used[pid] = start + params.n
        self.requests += 1
        order = self.order.get(pid) or range(len(entry.samples))
        picked = [entry.samples[order[i]] for i in range(start, start + params.n)]
        return Generation(prompt_tokens=entry.prompt_tokens, completions=[_completion(s) for s in picked])
