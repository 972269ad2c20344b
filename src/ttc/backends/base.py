"""The generator interface every backend implements.

A backend is async and batches on its own: strategies just issue concurrent `generate` calls
(`asyncio.gather`), and the backend merges them into as few model batches as it can.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Sequence

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


class Generator(abc.ABC):
    """Async text generator. Subclasses implement `generate`, `tokenize` and `chat_prompt`."""

    #: what the backend can do beyond plain generation (see the constants above)
    capabilities: frozenset[str] = frozenset()

    @abc.abstractmethod
    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions of `prompt` (text, or token ids used verbatim)."""

    @abc.abstractmethod
    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` exactly as `generate` would see it as a prompt."""

    @abc.abstractmethod
    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        """The model's chat template applied to `messages`, ready to generate the assistant turn."""

    @property
    def model_name(self) -> str:
        return type(self).__name__

    async def aclose(self) -> None:
        """Release resources (engines, sessions, threads). Safe to call twice."""

    def describe(self) -> dict[str, Any]:
        return {"backend": type(self).__name__, "model": self.model_name,
                "capabilities": sorted(self.capabilities)}
