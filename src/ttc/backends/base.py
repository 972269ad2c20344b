"""The generator interface every backend implements.

A backend is async and batches on its own: strategies just issue concurrent `generate` calls
(`asyncio.gather`), and the backend merges them into as few model batches as it can.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ttc.errors import InvalidInput, Unsupported
from ttc.thinking import ThinkingFormat
from ttc.types import Completion, Prompt, SamplingParams, Usage

#: Capability names a backend may declare in `Generator.capabilities`.
STREAM = "stream"                  # tokens can be watched as they arrive and a request cancelled
HIDDEN_STATES = "hidden_states"    # hidden states of generated tokens can be returned
PREFIX_CACHING = "prefix_caching"  # a prompt that extends an earlier one reuses its KV cache
TOKEN_IDS = "token_ids"            # completions carry real token ids usable as prompts


@dataclass(frozen=True)
class Generation:
    """The answer to one `generate` request: its n completions and what the backend counted.

    `prompt_tokens` is the billed prompt (once per request, the server's `usage.prompt_tokens`).
    The optional counts default to what the completions show: `completion_tokens` (one count per
    completion; None = each completion's token ids), `processed_prompt_tokens` (None = n x
    prompt_tokens: the prompt once per sequence), `cached_prompt_tokens` (of the processed ones,
    those served from a prefix cache, where known). `estimated` marks counts the backend had to
    guess (a server that sent no usage). `reasoning_tokens`: the thinking tokens of each completion
    (part of its completion tokens; None = each completion's `reasoning_tokens`), where the server
    reported a total that the completions' own counts do not add up to.
    """

    prompt_tokens: int
    completions: list[Completion]
    completion_tokens: tuple[int, ...] | None = None
    processed_prompt_tokens: int | None = None
    cached_prompt_tokens: int = 0
    estimated: bool = False
    requests: int = 1  # requests sent to make it (n single requests where a server ignores n)
    reasoning_tokens: tuple[int, ...] | None = None

    def tokens_of(self, i: int) -> int:
        """Completion tokens of the i-th completion, as the backend counted them."""
        if self.completion_tokens is not None:
            return self.completion_tokens[i]
        return self.completions[i].num_tokens

    def reasoning_of(self, i: int) -> int:
        """Thinking tokens of the i-th completion, as the backend counted them."""
        if self.reasoning_tokens is not None:
            return self.reasoning_tokens[i]
        return self.completions[i].reasoning_tokens

    def usage(self) -> Usage:
        """The whole request's usage (`generator_calls` = the requests it took)."""
        processed = self.processed_prompt_tokens
        if processed is None:
            processed = len(self.completions) * self.prompt_tokens
        return Usage(prompt_tokens=self.prompt_tokens, processed_prompt_tokens=processed,
                     cached_prompt_tokens=self.cached_prompt_tokens, generator_calls=self.requests,
                     completion_tokens=sum(self.tokens_of(i) for i in range(len(self.completions))),
                     reasoning_tokens=sum(self.reasoning_of(i) for i in range(len(self.completions))),
                     estimated=self.estimated)


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed completion: the tokens that arrived since the last delta.

    The last delta of a stream has `finish_reason` set ("stop" or "length"). `usage`, when a
    backend sets it (at least on the last delta, where it knows more than the token ids show,
    e.g. a server's final usage chunk), is its count of the whole request so far: billed,
    processed and cached prompt tokens and the completion tokens generated up to this delta.
    The stream's usage takes it over; without it, completion tokens are the token ids received.

    For a reasoning model the deltas carry the whole output as generated (thinking and markers
    included); `Generator.split_thinking` splits the stream's completion as `generate` would.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


def combine_generations(generations: Sequence[Generation]) -> Generation:
    """One Generation from several requests for the same prompt (an n-request split into n
    single requests): the completions in order, each request's counts added up (every split
    request is billed its own prompt)."""
    if not generations:
        raise InvalidInput("combine_generations needs at least one generation")
    parts = [(g, g.usage()) for g in generations]
    return Generation(
        prompt_tokens=sum(u.prompt_tokens for _, u in parts),
        completions=[c for g in generations for c in g.completions],
        completion_tokens=tuple(g.tokens_of(i) for g in generations for i in range(len(g.completions))),
        processed_prompt_tokens=sum(u.processed_prompt_tokens for _, u in parts),
        cached_prompt_tokens=sum(u.cached_prompt_tokens for _, u in parts),
        estimated=any(u.estimated for _, u in parts),
        requests=sum(u.generator_calls for _, u in parts),
        reasoning_tokens=tuple(g.reasoning_of(i) for g in generations for i in range(len(g.completions))))


class Generator(abc.ABC):
    """Async text generator. Subclasses implement `generate`, `tokenize` and `chat_prompt`.

    Everything else strategies, probes and judges may use is declared here with a default, so a
    new backend knows what it can offer: `capabilities`, `tokenizer`, `eos_token_ids`, `decode`,
    `hidden_states` and `detect_capabilities`.
    """

    #: what the backend can do beyond plain generation (see the constants above)
    capabilities: frozenset[str] = frozenset()
    #: a Hugging Face-style tokenizer of the model, when the backend has one (else None)
    tokenizer: Any = None
    #: the token ids that end a sequence (empty when unknown)
    eos_token_ids: frozenset[int] = frozenset()
    #: the model's thinking format when it is a reasoning model (`ttc.thinking.ThinkingFormat`), else
    #: None: completions then carry `Completion.thinking` and their text is the final content
    thinking: ThinkingFormat | None = None

    def split_thinking(self, completion: Completion, prompt: Prompt, params: SamplingParams) -> Completion:
        """`completion` as returned whole (a stream's deltas put together) with its thinking split off,
        as `generate` returns it. Default: unchanged (a backend without thinking, or one whose
        deltas already come split); in-process backends split at the marker token ids."""
        return completion

    async def detect_capabilities(self) -> frozenset[str]:
        """The capabilities, after whatever one-time detection the backend needs (a server probe).

        Call it before branching on `capabilities` in code that may run first on a fresh backend.
        """
        return self.capabilities

    @property
    def can_decode(self) -> bool:
        """Whether `decode` works (the backend overrides it, or has a tokenizer)."""
        return type(self).decode is not Generator.decode or callable(getattr(self.tokenizer, "decode", None))

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of `token_ids` (special tokens skipped), via the tokenizer when there is one."""
        decode = getattr(self.tokenizer, "decode", None)
        if not callable(decode):
            raise Unsupported(f"{type(self).__name__} cannot decode token ids: it has no tokenizer")
        return decode(list(token_ids), skip_special_tokens=True)

    def continue_prompt(self, prompt: Prompt, text: str) -> Prompt:
        """`prompt` followed by `text` the model already wrote, as a prompt to continue from (step
        searches without token ids). Text prompts are extended as text; other backends override."""
        if not text:
            return prompt
        if isinstance(prompt, str):
            return prompt + text
        raise Unsupported(f"{type(self).__name__} cannot continue a token-id prompt with text; "
                          f"continue it with token ids (the '{TOKEN_IDS}' capability)")

    async def hidden_states(self, token_ids: Sequence[int], positions: Sequence[int]) -> Any:
        """Last-layer hidden states of `token_ids` at `positions` (backends with `hidden_states`)."""
        raise Unsupported(f"{type(self).__name__} does not return hidden states "
                          f"(needs a backend with the '{HIDDEN_STATES}' capability, e.g. Transformers)")

    @abc.abstractmethod
    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions of `prompt` (text, or token ids used verbatim)."""

    @abc.abstractmethod
    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` exactly as `generate` would see it as a prompt."""

    @abc.abstractmethod
    async def chat_prompt(self, messages: Sequence[dict[str, str]], *,
                          chat_template_kwargs: Mapping[str, Any] | None = None) -> Prompt:
        """The model's chat template applied to `messages`, ready to generate the assistant turn;
        `chat_template_kwargs` (`SamplingParams.chat_template_kwargs`, e.g. {"enable_thinking": False})
        are passed to the template."""

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion (params.n must be 1) as it is generated.

        Closing the iterator early (`aclose()`, or cancelling the task consuming it) stops the
        request in the backend, so it consumes no further tokens. Backends that declare the
        `stream` capability do this for real; this fallback generates the whole completion first
        and yields it as one delta, which still works but cannot save tokens.
        """
        if params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        generation = await self.generate(prompt, params)
        completion = generation.completions[0]
        yield Delta(completion.text, completion.token_ids, completion.logprobs, completion.finish_reason,
                    usage=generation.usage())

    def closed_stream_usage(self, prompt: Prompt, text: str, token_ids: Sequence[int], so_far: Usage) -> Usage | None:
        """What a stream of `prompt` closed before its end cost, where the backend can tell more than
        the deltas received (`so_far`, after `text` and `token_ids`) showed: e.g. a prompt no one
        counted before sending, charged what the same prompt's finished streams reported. None
        (the default): `so_far` stands."""
        return None

    def tokens_generated(self) -> int | None:
        """Completion tokens decoded so far by this backend, in-flight requests included.

        For progress displays: a vote's n candidates arrive together when its one request
        finishes, so counting finished candidates would jump from 0 to n. None when the backend
        cannot see tokens before a request finishes (the default).
        """
        return None

    @property
    def model_name(self) -> str:
        return type(self).__name__

    async def aclose(self) -> None:  # noqa: B027 (an optional hook: nothing to release by default)
        """Release resources (engines, sessions, threads). Safe to call twice."""

    async def close_loop(self) -> None:  # noqa: B027 (an optional hook)
        """Release what is bound to the running event loop (HTTP sessions), keeping the backend
        usable; the sync API calls it after each call. Default: nothing to release."""

    def describe(self) -> dict[str, Any]:
        return {"backend": type(self).__name__, "model": self.model_name,
                "capabilities": sorted(self.capabilities)}


def checked_prompt(prompt: Prompt) -> str | list[int]:
    """The prompt as a backend sends it: non-empty text, or a list of non-negative int token ids
    (else `InvalidInput`). One rule for every backend."""
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidInput("empty prompt")
        return prompt
    try:
        ids = [operator.index(t) for t in prompt]
    except TypeError:
        raise InvalidInput("a prompt must be text or a sequence of integer token ids") from None
    if not ids:
        raise InvalidInput("empty prompt (no token ids)")
    if any(t < 0 for t in ids):
        raise InvalidInput(f"negative token ids in the prompt: {[t for t in ids if t < 0][:5]}")
    return ids
