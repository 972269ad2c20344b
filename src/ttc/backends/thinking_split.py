"""The in-process backends' side of thinking: split generated token ids at the marker tokens.

One `MarkerSplitter` per backend with a thinking format (`Transformers`, `VLLMEngine`, `Scripted`):
it checks once, at construction, that each marker is one token of the model's vocabulary, decides
from a prompt's token ids whether the output starts inside an open thinking segment (the last start
marker after the last end marker: a template that opened the thinking, or a continuation of one),
and splits each completion (`ttc.thinking.split_completion`). The thinking default of
`max_tokens` is watched here too (`warn_short_max_tokens`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ttc.thinking import ThinkingFormat, marker_ids, prompt_opens, split_completion
from ttc.types import Completion, SamplingParams

#: SamplingParams' default max_tokens: right for instruct models, short for most thinking traces
LIBRARY_DEFAULT_MAX_TOKENS = SamplingParams().max_tokens


class ShortMaxTokensWarning(UserWarning):
    """A thinking model was asked for the library's default max_tokens (256), which cuts most
    thinking traces (and a candidate cut inside its thinking has no answer)."""


class MarkerSplitter:
    """Split one backend's completions at `fmt`'s marker tokens (`encode`: text -> ids without special
    tokens; `vocab`: the tokenizer's vocabulary, when it has one; `decode`: ids -> text)."""

    def __init__(self, fmt: ThinkingFormat, owner: str, *, encode: Callable[[str], Sequence[int]],
                 decode: Callable[[Sequence[int]], str], vocab: Any = None):
        self.format = fmt
        self.owner = owner
        self.start_id, self.end_id = marker_ids(fmt, encode, owner, vocab)
        self._decode = decode
        self._warned = False

    def opened(self, prompt_ids: Sequence[int]) -> bool:
        """Whether output generated after `prompt_ids` starts inside the thinking."""
        return prompt_opens(prompt_ids, self.start_id, self.end_id)

    def split(self, completion: Completion, prompt_ids: Sequence[int], params: SamplingParams) -> Completion:
        return split_completion(completion, self.start_id, self.end_id, opened=self.opened(prompt_ids),
                                decode=self._decode, stop=params.stop)

    def check_request(self, params: SamplingParams) -> None:
        """Warn once per backend when a request keeps the library default max_tokens (docs/reasoning.md)."""
        if self._warned or params.max_tokens != LIBRARY_DEFAULT_MAX_TOKENS:
            return
        self._warned = True
        warnings.warn(
            f"{self.owner} runs a thinking model (format {self.format.name!r}) with max_tokens="
            f"{LIBRARY_DEFAULT_MAX_TOKENS}, the library default for instruct models: most thinking traces are "
            f"longer, and a candidate cut inside its thinking has no answer. Set "
            f"SamplingParams(max_tokens=...) to what the model's traces need (this warning shows once)",
            ShortMaxTokensWarning, stacklevel=3)


def hf_splitter(fmt: ThinkingFormat | None, tokenizer: Any, owner: str) -> MarkerSplitter | None:
    """The splitter of a Hugging Face tokenizer's backend (None without a thinking format)."""
    if fmt is None:
        return None
    return MarkerSplitter(fmt, owner, encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
                          decode=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=True),
                          vocab=tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None)
