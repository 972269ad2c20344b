"""The served model's thinking format and its marker token ids, for splitting what the server does
not split itself: declared (`OpenAICompatible(thinking=...)`, or the model folder's
`ttc_thinking.json`), never guessed; the marker ids from the local tokenizer, else the server's
`/tokenize` (a marker that is not one token splits by text only)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.reasoning import NO_SPLIT, ThinkingSplit, opened_by_ids, opened_by_text
from ttc.errors import GenerationError, InvalidInput
from ttc.thinking import ThinkingFormat, thinking_format
from ttc.types import Prompt, SamplingParams

__all__ = ["DECLARATION", "ThinkingMarkers", "declared_format"]

#: the file in a model folder that declares its thinking format: {"format": "deepseek_r1"}
DECLARATION = "ttc_thinking.json"


def declared_format(folder: str | os.PathLike[str] | None) -> ThinkingFormat | None:
    """The thinking format a local model folder declares in `ttc_thinking.json`, else None."""
    if folder is None or not os.path.isdir(folder):
        return None
    path = Path(folder) / DECLARATION
    if not path.is_file():
        return None
    try:
        name = json.loads(path.read_text()).get("format")
    except (ValueError, AttributeError):
        raise InvalidInput(f"{path} must be a JSON object like {{\"format\": \"deepseek_r1\"}}") from None
    return thinking_format(name)


def _thinking_disabled(params: SamplingParams) -> bool:
    kwargs = params.chat_template_kwargs or {}
    return kwargs.get("enable_thinking") is False or kwargs.get("thinking") is False


class ThinkingMarkers:
    """The backend's thinking format (`spec`, else the folder of the model or tokenizer named) and
    its marker ids, found once. `tokens` is the backend's `Tokenization`."""

    def __init__(self, spec: str | ThinkingFormat | None, tokens: Any, model_hint: Callable[[], str | None]):
        self.spec = thinking_format(spec)
        self.tokens = tokens
        self.model_hint = model_hint
        self._format: ThinkingFormat | None = None
        self._resolved = spec is not None
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
                self._format = declared_format(folder)
                if self._format is not None:
                    break
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
        """How the output of `prompt` is split: whether the prompt already opened the thinking (its
        last marker; a chat request with `enable_thinking` False never opens it)."""
        fmt = self.format
        if fmt is None:
            return NO_SPLIT
        ids = await self.ids()
        start_id, end_id = ids if ids is not None else (None, None)
        opened: bool | None
        if _thinking_disabled(params) and (isinstance(prompt, ChatMessages) and not prompt.continue_final):
            opened = False
        elif isinstance(prompt, ChatMessages):
            opened = opened_by_text(prompt.messages[-1]["content"], fmt) if prompt.continue_final else None
        elif isinstance(prompt, str):
            opened = opened_by_text(prompt, fmt)
        else:
            opened = opened_by_ids(prompt, start_id, end_id) if ids is not None else None
        if opened is None and _thinking_disabled(params):
            opened = False
        return ThinkingSplit(fmt, start_id, end_id, opened)
