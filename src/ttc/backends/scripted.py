"""A deterministic backend for testing strategy logic without a model.

The script decides each completion from the prompt text, so tests can build known-answer cases
(a fixed list of answers, a toy tree of steps, an oracle). Tokens are words and spaces; stop
strings and max_tokens behave as in vLLM (the stop string is cut from the text).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass

from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator
from ttc.errors import InvalidInput
from ttc.types import Completion, Prompt, SamplingParams

_TOKEN = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class ScriptedResponse:
    """A scripted completion with explicit per-token logprobs (one per token of `text`) and,
    optionally, per-token top logprobs (returned when a request asks for top_logprobs)."""

    text: str
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[dict[int, float], ...] | None = None


Response = str | ScriptedResponse
#: script(prompt_text, params, sample_index) -> the completion, before stop strings and max_tokens
Script = Callable[[str, SamplingParams, int], Response]


class Scripted(Generator):
    """Deterministic generator driven by a script.

    `Scripted(["a", "b"])` cycles through the given responses across all requests;
    `Scripted(fn)` calls `fn(prompt_text, params, i)` for the i-th sample of each request.
    `default_logprob` is used for every token when a response gives none. `latency` delays each
    request; `token_latency` delays each streamed token, so streams finish in a scripted order.
    Every request is recorded in `requests` (prompt text, params), and `streamed_tokens` counts
    the tokens streams actually emitted (a cancelled stream emits no more), for assertions.
    """

    capabilities = frozenset({TOKEN_IDS, PREFIX_CACHING, STREAM})

    def __init__(self, script: Script | Iterable[Response], default_logprob: float = -0.5,
                 latency: float = 0.0, token_latency: float | Callable[[str, int], float] = 0.0):
        if callable(script):
            self._script: Script = script
        else:
            responses = list(script)
            if not responses:
                raise InvalidInput("Scripted needs at least one response")
            cycle = itertools.cycle(responses)
            self._script = lambda prompt, params, i: next(cycle)
        self.default_logprob = default_logprob
        self.latency = latency
        self.token_latency = token_latency
        self.streamed_tokens = 0
        self.generated_tokens = 0  # completion tokens of every answered request (and streamed one)
        self.requests: list[tuple[str, SamplingParams]] = []
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []

    @property
    def model_name(self) -> str:
        return "scripted"

    # -- tokens -------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        ids = []
        for piece in _TOKEN.findall(text):
            if piece not in self._vocab:
                self._vocab[piece] = len(self._words)
                self._words.append(piece)
            ids.append(self._vocab[piece])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._words[i] for i in ids)

    async def tokenize(self, text: str) -> list[int]:
        return self._ids(text)

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        lines = [f"<{m['role']}>\n{m['content']}\n" for m in messages]
        return "".join(lines) + "<assistant>\n"

    # -- generation ---------------------------------------------------------------------------
    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        text = prompt if isinstance(prompt, str) else self.decode(prompt)
        self.requests.append((text, params))
        if self.latency:
            await asyncio.sleep(self.latency)
        completions = [self._complete(self._script(text, params, i), params) for i in range(params.n)]
        self.generated_tokens += sum(len(c.token_ids) for c in completions)
        return Generation(prompt_tokens=len(self._ids(text)), completions=completions)

    def tokens_generated(self) -> int:
        return self.generated_tokens

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Token-by-token stream; `token_latency` may be a function of (completion text, token index)."""
        generation = await self.generate(prompt, params.replace(n=1))
        completion = generation.completions[0]
        ids = completion.token_ids
        if not ids:
            yield Delta(text="", token_ids=(), finish_reason=completion.finish_reason)
        for i, token in enumerate(ids):
            delay = self.token_latency(completion.text, i) if callable(self.token_latency) else self.token_latency
            if delay:
                await asyncio.sleep(delay)
            self.streamed_tokens += 1
            last = i == len(ids) - 1
            yield Delta(text=self._words[token], token_ids=(token,),
                        logprobs=None if completion.logprobs is None else (completion.logprobs[i],),
                        finish_reason=completion.finish_reason if last else None)

    def _complete(self, response: Response, params: SamplingParams) -> Completion:
        if isinstance(response, str):
            response = ScriptedResponse(response)
        text, finish = response.text, "stop"
        for stop in params.stop:
            cut = text.find(stop)
            if cut != -1:
                text = text[:cut]
        ids = self._ids(text)
        if len(ids) > params.max_tokens:
            ids, finish = ids[: params.max_tokens], "length"
            text = self.decode(ids)
        logprobs = None
        if params.logprobs or params.top_logprobs:
            given = response.logprobs
            logprobs = tuple(given[: len(ids)]) if given is not None else (self.default_logprob,) * len(ids)
        top = None
        if params.top_logprobs and response.top_logprobs is not None:
            top = tuple(dict(list(t.items())[: params.top_logprobs]) for t in response.top_logprobs[: len(ids)])
        return Completion(text=text, token_ids=tuple(ids), finish_reason=finish, logprobs=logprobs,
                          top_logprobs=top)
