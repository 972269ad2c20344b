"""Tokenization: vLLM's `/tokenize` (answers cached), the local tokenizer, and chat templates.

A text or a conversation becomes the server's own token ids through `/tokenize` (which applies
the chat template on the server), else through a local tokenizer of the served model; transformers
is imported only when a local tokenizer is loaded, so the core install does not need it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ttc._extras import require
from ttc.backends.openai.features import NOT_FOUND, ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.prompts import ChatMessages, TemplatedChat
from ttc.backends.token_cache import TokenCache
from ttc.errors import GenerationError, InvalidInput, MalformedResponse, MissingExtra, Unsupported
from ttc.types import Prompt

__all__ = ["Tokenization", "load_tokenizer", "local_tokenizer_exists", "tokens_of"]


def load_tokenizer(source: Any) -> Any:
    """A tokenizer from a Hugging Face id or folder, offline only (never downloads).

    Raises `ttc.MissingExtra` (with its pip line) on a core install without transformers."""
    transformers = require("transformers", "transformers", "a local tokenizer (OpenAICompatible(tokenizer=...))")
    return transformers.AutoTokenizer.from_pretrained(str(source), local_files_only=True)


def local_tokenizer_exists(name: str) -> bool:
    """Whether `name` is a folder or a hub id cached on this machine (checked without loading)."""
    if os.path.isdir(name):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str)
    except Exception:  # not a valid repo id, or huggingface_hub missing
        return False


def tokens_of(data: Any) -> list[int]:
    """The token ids of a `/tokenize` answer."""
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise MalformedResponse(f"/tokenize answered without a list of token ids: {str(data)[:300]}")
    return tokens


class Tokenization:
    """Token ids and chat templates for one backend.

    `request(method, path, payload, root=, retries=)` sends JSON; `ask_server(payload)` is the
    backend's `/tokenize` call (`server_tokenize` unless wrapped); `model()` the served model's
    name; `source`: the `tokenizer=` argument (an object, an id or folder, or None: looked up
    offline from `model_hint()`).
    """

    def __init__(self, features: ServerFeatures, request: Callable[..., Awaitable[Any]],
                 ask_server: Callable[[dict[str, Any]], Awaitable[Any]], model: Callable[[], Awaitable[str]], *,
                 source: Any, model_hint: Callable[[], str | None], base_url: str):
        self.features = features
        self.request = request
        self.ask_server = ask_server
        self.model = model
        self.source = source
        self.model_hint = model_hint
        self.base_url = base_url
        self.loaded: Any = None
        self._resolved = False
        #: ids the server's /tokenize gave, by request body: each distinct text is sent once
        self.cache = TokenCache()

    # -- the local tokenizer --------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The local tokenizer of the served model (given, or found offline), else None."""
        if not self._resolved:
            self._resolved = True
            source = self.source
            if source is not None and not isinstance(source, (str, os.PathLike)):
                self.loaded = source
            else:
                name = source if source is not None else self.model_hint()
                if name and (source is not None or local_tokenizer_exists(str(name))):
                    try:
                        self.loaded = load_tokenizer(name)
                    except MissingExtra:
                        if source is not None:  # asked for by the user: say which extra it needs
                            raise
                    except Exception as exc:  # not local, not a tokenizer
                        if source is not None:
                            raise InvalidInput(f"cannot load the tokenizer {source!r} offline: {exc}") from None
        return self.loaded

    def eos_token_ids(self) -> frozenset[int]:
        """End-of-sequence ids from the local tokenizer (and its generation config), if there is one."""
        tok = self.tokenizer
        eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        if eos is None:
            return frozenset()
        return frozenset([int(eos)] if isinstance(eos, int) else [int(i) for i in eos])

    def encode(self, text: str) -> list[int] | None:
        """`text` in the local tokenizer's ids, without special tokens; None without a tokenizer."""
        tok = self.tokenizer
        return None if tok is None else tok.encode(text, add_special_tokens=False)

    def no_tokenizer(self, what: str) -> Unsupported:
        return Unsupported(
            f"{what} needs the prompt's tokens, and {self.base_url} has no /tokenize (vLLM's) and no local "
            f"tokenizer was found for model {self.model_hint()!r}: pass OpenAICompatible(..., tokenizer=<Hugging "
            f"Face id or folder of the served model>)")

    # -- the server's /tokenize -----------------------------------------------------------------
    async def server_tokenize(self, payload: dict[str, Any]) -> Any:
        """vLLM's /tokenize; None (and remembered) when the server has no such endpoint."""
        try:
            data = await self.request("POST", "/tokenize", payload, root=True)
        except RequestRejected as exc:
            if self.features.tokenize is None and exc.status in NOT_FOUND:
                self.features.tokenize = False
                return None
            raise
        self.features.tokenize = True
        return data

    async def server_tokens(self, payload: dict[str, Any]) -> list[int] | None:
        """The ids /tokenize gives for `payload`, from the cache when it was asked before; None
        when the server has no /tokenize."""
        async def ask() -> list[int] | None:
            data = await self.ask_server(payload)
            return None if data is None else tokens_of(data)

        return await self.cache.get(json.dumps(payload, sort_keys=True), ask)

    async def completion_ids(self, text: str) -> tuple[int, ...]:
        """Ids for a completion the server sent without them, from its /tokenize if it may have
        one, else none. Not necessarily the sampled ids (which is why TOKEN_IDS needs the
        server's `return_token_ids`)."""
        if self.features.tokenize is False:
            return ()
        try:
            data = await self.request("POST", "/tokenize", {"model": await self.model(), "prompt": text,
                                                             "add_special_tokens": False}, root=True, retries=0)
            return tuple(tokens_of(data))
        except GenerationError:
            return ()

    # -- prompts --------------------------------------------------------------------------------
    async def tokenize(self, text: str) -> list[int]:
        if isinstance(text, ChatMessages):
            return await self.tokenize_messages(text.messages, text.continue_final)
        if not isinstance(text, str):
            raise InvalidInput(f"tokenize() takes a string, got {type(text).__name__}")
        if self.features.tokenize is not False:
            ids = await self.server_tokens({"model": await self.model(), "prompt": text, "add_special_tokens": True})
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is None:
            raise self.no_tokenizer("counting a prompt's tokens")
        return [int(t) for t in tok.encode(text, add_special_tokens=True)]

    async def chat_prompt(self, messages: Sequence[dict[str, str]], use_chat: bool | None,
                          chat_template_kwargs: dict[str, Any] | None = None) -> Prompt:
        """The chat template applied to `messages` (with `chat_template_kwargs`, e.g. enable_thinking):
        /tokenize's ids, else the local tokenizer's text, else the messages for the chat endpoint."""
        if use_chat or (use_chat is None and self.features.completions is False):
            return ChatMessages(messages)
        kwargs = dict(chat_template_kwargs or {})
        if self.features.tokenize is not False:
            payload = {"model": await self.model(), "messages": [dict(m) for m in messages],
                       "add_generation_prompt": True, **({"chat_template_kwargs": kwargs} if kwargs else {})}
            ids = await self.server_tokens(payload)
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True,
                                           **kwargs)
            return text if use_chat is False else TemplatedChat(text, messages)
        if use_chat is False:
            raise self.no_tokenizer("applying the chat template (use_chat=False)")
        return ChatMessages(messages)

    def continued_text(self, prompt: ChatMessages, text: str) -> str | None:
        """`prompt` continued by `text` as the local tokenizer's chat template renders it (text for
        `/v1/completions`), for a server whose chat endpoint cannot continue a reply; None
        without a local tokenizer that has a chat template."""
        tok = self.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            return None
        continued = prompt.continued(text)
        return tok.apply_chat_template([dict(m) for m in continued.messages], tokenize=False,
                                       add_generation_prompt=not continued.continue_final,
                                       continue_final_message=continued.continue_final)

    async def tokenize_messages(self, messages: Sequence[dict[str, str]], continue_final: bool = False) -> list[int]:
        if self.features.tokenize is not False:
            payload: dict[str, Any] = {"model": await self.model(), "messages": [dict(m) for m in messages],
                                       "add_generation_prompt": not continue_final}
            if continue_final:
                payload["continue_final_message"] = True
            ids = await self.server_tokens(payload)
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            raise self.no_tokenizer("counting a chat prompt's tokens")
        ids = tok.apply_chat_template([dict(m) for m in messages], tokenize=True,
                                      add_generation_prompt=not continue_final,
                                      continue_final_message=continue_final)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]
