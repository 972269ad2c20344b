"""The served model's thinking format and its marker token ids, for splitting what the server does
not split itself: declared (`OpenAICompatible(thinking=...)`, or the model folder's
`ttc_thinking.json`), never guessed (`thinking=False`: none, whatever the folder says); the marker
ids from the local tokenizer, else the server's `/tokenize` (a marker that is not one token splits
by text only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.reasoning import NO_SPLIT, SERVER_MARKERS, ThinkingSplit, opened_by_ids, opened_by_text
from ttc.errors import GenerationError, InvalidInput
from ttc.thinking import ThinkingFormat, declared_format, thinking_format
from ttc.types import Prompt, SamplingParams

__all__ = ["ThinkingMarkers"]


def _thinking_disabled(params: SamplingParams) -> bool:
    kwargs = params.chat_template_kwargs or {}
    return kwargs.get("enable_thinking") is False or kwargs.get("thinking") is False


class ThinkingMarkers:
    """The backend's thinking format (`spec`, else the folder of the model or tokenizer named) and
    its marker ids, found once. `tokens` is the backend's `Tokenization`."""

    def __init__(self, spec: str | ThinkingFormat | bool | None, tokens: Any, model_hint: Callable[[], str | None]):
        self.spec = None if spec is None or isinstance(spec, bool) else thinking_format(spec)
        self.tokens = tokens
        self.model_hint = model_hint
        self._format: ThinkingFormat | None = None
        self._resolved = spec is not None and spec is not True
        self._required = spec is True
        self._ids: tuple[int, int] | None = None
        self._ids_resolved = False

    @property
    def format(self) -> ThinkingFormat | None:
        if self.spec is not None:
            return self.spec
        if not self._resolved:
            self._resolved = True
            source = self.tokens.source
            for folder in (source if isinstance(source, (str, os.PathLike)) else None, self.model_hint()):
                self._format = declared_format(None if folder is None else str(folder))
                if self._format is not None:
                    break
            if self._format is None and self._required:
                raise InvalidInput(f"thinking=True, but neither the tokenizer nor the model {self.model_hint()!r} "
                                   f"is a local folder declaring its thinking format (ttc_thinking.json): name "
                                   f"the format, thinking=\"deepseek_r1\" or \"qwen3\"")
        return self._format

    async def ids(self) -> tuple[int, int] | None:
        """(start id, end id) when each marker is one token of the served model, else None."""
        fmt = self.format
        if fmt is None:
            return None
        if not self._ids_resolved:
            start, end = await self._one_id(fmt.start), await self._one_id(fmt.end)
            self._ids = None if start is None or end is None else (start, end)
            self._ids_resolved = True
        return self._ids

    async def _one_id(self, marker: str) -> int | None:
        ids = self.tokens.encode(marker)
        if ids is None and self.tokens.features.tokenize is not False:
            try:
                ids = await self.tokens.server_tokens({"model": await self.tokens.model(), "prompt": marker,
                                                       "add_special_tokens": False})
            except GenerationError:
                ids = None
        return int(ids[0]) if ids is not None and len(ids) == 1 else None

    async def split(self, prompt: Prompt, params: SamplingParams) -> ThinkingSplit:
        """How the output of `prompt` is split: by the format's marker ids (found once), opened where
        the prompt already opened the thinking (its last marker; a chat request with
        `enable_thinking` False never opens it)."""
        if self.format is not None:
            await self.ids()
        return self.known_split(prompt, params)

    def known_split(self, prompt: Prompt, params: SamplingParams, *, server_split: bool = False) -> ThinkingSplit:
        """As `split`, with the marker ids found so far (for `split_thinking`, which cannot wait).
        `server_split`: the server's parser split this output, which a stream joined back with
        `SERVER_MARKERS` where no format is declared."""
        fmt = self.format
        if fmt is None:
            return ThinkingSplit(SERVER_MARKERS, opened=False) if server_split else NO_SPLIT
        start_id, end_id = self._ids if self._ids is not None else (None, None)
        opened: bool | None
        if isinstance(prompt, ChatMessages):
            opened = opened_by_text(prompt.messages[-1]["content"], fmt) if prompt.continue_final else None
        elif isinstance(prompt, str):
            opened = opened_by_text(prompt, fmt)
        else:
            opened = opened_by_ids(prompt, start_id, end_id) if start_id is not None else None
        if opened is None and _thinking_disabled(params):
            opened = False
        return ThinkingSplit(fmt, start_id, end_id, opened)
