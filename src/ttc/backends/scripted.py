"""A deterministic backend for testing strategy logic without a model.

The script decides each completion from the prompt text, so tests can build known-answer cases
(a fixed list of answers, a toy tree of steps, an oracle). Tokens are words and spaces; stop
strings and max_tokens behave as in vLLM (the stop string is cut from the text).

With `thinking=` (a format name or `ttc.thinking.ThinkingFormat`) the scripted model is a reasoning
model: the markers are single tokens, its chat prompt opens the thinking where the format's template
does, and completions are split at the marker tokens as the in-process backends split them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator
from ttc.backends.thinking_split import MarkerSplitter
from ttc.errors import InvalidInput
from ttc.thinking import ThinkingFormat, thinking_format
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

    Sampling fields are not sampled by: a script decides the text, so temperature, top_p and the
    reasoning fields (`top_k`, `min_p`, the penalties, `extra`) are recorded with the request and
    otherwise ignored; `n`, `max_tokens`, `stop` and the logprob fields are honoured.
    `thinking`: the scripted model's thinking format (None: it does not think). Its chat prompt then
    ends with the start marker where the format's template opens the thinking (`deepseek_r1`), or
    with an empty closed thinking for `chat_template_kwargs={"enable_thinking": False}` (as Qwen3's
    template does); other chat-template options are ignored.
    """

    capabilities = frozenset({TOKEN_IDS, PREFIX_CACHING, STREAM})

    def __init__(self, script: Script | Iterable[Response], default_logprob: float = -0.5,
                 latency: float = 0.0, token_latency: float | Callable[[str, int], float] = 0.0,
                 thinking: str | ThinkingFormat | None = None):
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
        self.thinking = thinking_format(thinking)
        self._token = _TOKEN
        self._splitter: MarkerSplitter | None = None
        if self.thinking is not None:
            markers = "|".join(re.escape(m) for m in (self.thinking.start, self.thinking.end))
            self._token = re.compile(rf"{markers}|\s+|(?:(?!{markers})[^\s])+")
            self._splitter = MarkerSplitter(self.thinking, "Scripted", encode=self._ids, decode=self.decode)

    @property
    def model_name(self) -> str:
        return "scripted"

    # -- tokens -------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        ids = []
        for piece in self._token.findall(text):
            if piece not in self._vocab:
                self._vocab[piece] = len(self._words)
                self._words.append(piece)
            ids.append(self._vocab[piece])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._words[i] for i in ids)

    async def tokenize(self, text: str) -> list[int]:
        return self._ids(text)

    async def chat_prompt(self, messages: Sequence[dict[str, str]], *,
                          chat_template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        lines = [f"<{m['role']}>\n{m['content']}\n" for m in messages]
        prompt = "".join(lines) + "<assistant>\n"
        fmt = self.thinking
        if fmt is not None and (chat_template_kwargs or {}).get("enable_thinking", True) is False:
            return prompt + fmt.start + fmt.end
        if fmt is not None and fmt.opened_by_template:
            return prompt + fmt.start
        return prompt

    # -- generation ---------------------------------------------------------------------------
    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        generation = await self._generate_whole(prompt, params)
        if self._splitter is None:
            return generation
        prompt_ids = self._ids(prompt) if isinstance(prompt, str) else list(prompt)
        completions = [self._splitter.split(c, prompt_ids, params) for c in generation.completions]
        return Generation(prompt_tokens=generation.prompt_tokens, completions=completions)

    async def _generate_whole(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """The completions as generated, thinking and markers included (what a stream carries)."""
        text = prompt if isinstance(prompt, str) else self.decode(prompt)
        self.requests.append((text, params))
        if self._splitter is not None:
            self._splitter.check_request(params)
        if self.latency:
            await asyncio.sleep(self.latency)
        completions = [self._complete(self._script(text, params, i), params) for i in range(params.n)]
        self.generated_tokens += sum(len(c.token_ids) for c in completions)
        return Generation(prompt_tokens=len(self._ids(text)), completions=completions)

    def split_thinking(self, completion: Completion, prompt: Prompt, params: SamplingParams) -> Completion:
        if self._splitter is None or completion.thinking is not None:
            return completion
        ids = self._ids(prompt) if isinstance(prompt, str) else list(prompt)
        return self._splitter.split(completion, ids, params)

    def tokens_generated(self) -> int:
        return self.generated_tokens

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Token-by-token stream; `token_latency` may be a function of (completion text, token index)."""
        generation = await self._generate_whole(prompt, params.replace(n=1))
        completion = generation.completions[0]  # whole: a stream carries the thinking and markers too
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
