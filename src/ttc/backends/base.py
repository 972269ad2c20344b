"""The generator interface every backend implements.

A backend is async and batches on its own: strategies just issue concurrent `generate` calls
(`asyncio.gather`), and the backend merges them into as few model batches as it can.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from ttc.errors import InvalidInput, Unsupported
from ttc.types import Completion, Prompt, SamplingParams

#: Capability names a backend may declare in `Generator.capabilities`.
STREAM = "stream"                  # tokens can be watched as they arrive and a request cancelled
HIDDEN_STATES = "hidden_states"    # hidden states of generated tokens can be returned
PREFIX_CACHING = "prefix_caching"  # a prompt that extends an earlier one reuses its KV cache
TOKEN_IDS = "token_ids"            # completions carry real token ids usable as prompts


@dataclass(frozen=True)
class Generation:
    """The answer to one `generate` request: the prompt's length and its n completions."""

    prompt_tokens: int
    completions: list[Completion]


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed completion: the tokens that arrived since the last delta.

    The last delta of a stream has `finish_reason` set ("stop" or "length").
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None = None
    finish_reason: str | None = None


def combine_generations(generations: Sequence[Generation]) -> Generation:
    """One Generation from several requests for the same prompt (an n-request split into n
    single requests): the completions in order, every numeric usage field summed (each split
    request is billed its own prompt)."""
    if not generations:
        raise InvalidInput("combine_generations needs at least one generation")
    import dataclasses

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Generation):
        if f.name == "completions":
            fields[f.name] = [c for g in generations for c in g.completions]
            continue
        values = [getattr(g, f.name) for g in generations]
        if all(isinstance(v, bool) for v in values):
            fields[f.name] = any(values)  # e.g. "estimated": true if any part was
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fields[f.name] = sum(values)
        elif all(v is None for v in values):
            fields[f.name] = None
        elif all(isinstance(v, (int, float, type(None))) for v in values):
            known = [v for v in values if v is not None]
            fields[f.name] = sum(known) if len(known) == len(values) else None  # unknown if any part is
        else:
            fields[f.name] = values[0]
    return Generation(**fields)


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
    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        """The model's chat template applied to `messages`, ready to generate the assistant turn."""

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
        yield Delta(completion.text, completion.token_ids, completion.logprobs, completion.finish_reason)

    @property
    def model_name(self) -> str:
        return type(self).__name__

    async def aclose(self) -> None:
        """Release resources (engines, sessions, threads). Safe to call twice."""

    async def close_loop(self) -> None:
        """Release what is bound to the running event loop (HTTP sessions), keeping the backend
        usable; the sync API calls it after each call. Default: nothing to release."""

    def describe(self) -> dict[str, Any]:
        return {"backend": type(self).__name__, "model": self.model_name,
                "capabilities": sorted(self.capabilities)}
