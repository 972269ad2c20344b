"""Text <-> token ids for the transformers backend: prompts, chat templates, completions' text.

Why a lock: fast tokenizers are not safe to use from two threads at once ("Already borrowed"),
and both the callers' event loop and the model thread (stop strings, completions) use this one.
Short texts (delimiters and suffixes a search asks for on every problem) are tokenised once.
"""

from __future__ import annotations

import collections
import operator
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ttc.errors import InvalidInput
from ttc.types import Prompt

#: texts of at most _SHORT_TEXT characters are tokenised once per backend (the last _SHORT_TEXTS of them)
_SHORT_TEXT, _SHORT_TEXTS = 64, 1024


class Tokens:
    """A tokenizer behind a lock, with prompt checks against the model's vocabulary and context."""

    def __init__(self, tokenizer: Any, vocab_size: int, max_model_len: int, model_name: str):
        self.tokenizer, self.vocab_size, self.max_model_len = tokenizer, vocab_size, max_model_len
        self.model_name = model_name
        self._lock = threading.Lock()
        self._short_ids: collections.OrderedDict[str, tuple[int, ...]] = collections.OrderedDict()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; short strings (delimiters, suffixes a search asks for on every
        problem) are remembered, the LRU `_SHORT_TEXTS` of them."""
        short = len(text) <= _SHORT_TEXT
        with self._lock:
            cache = self._short_ids
            if short and text in cache:
                cache.move_to_end(text)
                return list(cache[text])
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            if short:
                cache[text] = tuple(ids)
                if len(cache) > _SHORT_TEXTS:
                    cache.popitem(last=False)
            return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids as completions show it (special tokens skipped)."""
        with self._lock:
            return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def chat_prompt(self, messages: Sequence[dict[str, str]],
                    chat_template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        """Token ids of the chat template applied to `messages`, ending with the assistant's header;
        `chat_template_kwargs` are passed to the template (e.g. {"enable_thinking": False})."""
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InvalidInput("chat_prompt needs a non-empty list of {'role': ..., 'content': ...} messages")
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(f"the tokenizer of {self.model_name!r} has no chat template; use a text prompt")
        with self._lock:
            out = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                     **dict(chat_template_kwargs or {}))
        if not isinstance(out, (list, tuple)):  # BatchEncoding (transformers >= 5 returns a dict)
            out = out["input_ids"]
        return [int(t) for t in out]

    def prompt_ids(self, prompt: Prompt) -> tuple[int, ...]:
        """A prompt's token ids, checked: non-empty, in the vocabulary, leaving room to generate."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidInput("empty prompt")
            ids = self.encode(prompt)
        else:
            try:
                ids = [operator.index(t) for t in prompt]
            except TypeError:
                raise InvalidInput("a prompt must be text or a sequence of integer token ids") from None
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidInput(f"token ids out of the vocabulary (size {self.vocab_size}): {bad[:5]}")
        if not ids:
            raise InvalidInput("empty prompt (no token ids)")
        if len(ids) >= self.max_model_len:
            raise InvalidInput(f"prompt of {len(ids)} tokens does not fit the context of {self.model_name!r} "
                               f"({self.max_model_len} tokens, at least one must be left to generate)")
        return tuple(ids)
