"""`OpenAICompatible`: the facade. It holds the parts (transport, features and probe, wire format,
tokenization) and runs a request through them: build the body, send it (adapting it where the
server refuses a field), read the answer, record what it showed about the server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ttc.backends.base import Delta, Generation, Generator
from ttc.backends.openai import gateways, payloads, reasoning, responses, routing, usage
from ttc.backends.openai.adapting import Adapter
from ttc.backends.openai.fanout import with_n
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import RequestRejected
from ttc.backends.openai.probe import Probe
from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.responses import Parsed
from ttc.backends.openai.streaming import read_stream
from ttc.backends.openai.thinking_markers import ThinkingMarkers
from ttc.backends.openai.tokenization import Tokenization
from ttc.backends.openai.transport import (
    OpenStream,
    Replica,
    Transport,
    discover_model,
    request_headers,
    split_base,
)
from ttc.backends.token_cache import TokenCache
from ttc.errors import GenerationError, InvalidInput, MalformedResponse
from ttc.thinking import ThinkingFormat
from ttc.types import Completion, Prompt, SamplingParams, Usage

__all__ = ["OpenAICompatible"]

_TRANSPORT_SETTINGS = frozenset({"max_concurrency", "timeout", "connect_timeout", "max_retries", "backoff",
                                 "max_backoff", "cooldown", "max_retry_after", "pool_wait", "read_timeout",
                                 "retry_on_overload"})


class PartNames:
    """The parts' state under the names `OpenAICompatible` always had (llm.timeout, llm.replicas,
    llm.token_cache, ...): the facade's compatibility surface, kept apart from its work."""

    transport: Transport
    tokens: Tokenization

    def __getattr__(self, name: str) -> Any:
        if name in _TRANSPORT_SETTINGS and "transport" in self.__dict__:  # max_retries, timeout, ...
            return getattr(self.transport, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        target = self.transport if name in _TRANSPORT_SETTINGS and "transport" in self.__dict__ else super()
        target.__setattr__(name, value)

    @property
    def replicas(self) -> list[Replica]:
        return self.transport.replicas

    @property
    def retries(self) -> int:
        """Attempts repeated after a failure, for tests and monitoring."""
        return self.transport.retries

    @property
    def _states(self) -> Any:
        return self.transport.states

    @property
    def token_cache(self) -> TokenCache:
        """The ids /tokenize gave, by request body: each distinct text is sent once."""
        return self.tokens.cache

    @token_cache.setter
    def token_cache(self, cache: TokenCache) -> None:
        self.tokens.cache = cache


class OpenAICompatible(PartNames, Generator):
    """Generate through an OpenAI-compatible server (vLLM's or another).

        llm = ttc.backends.OpenAICompatible("http://127.0.0.1:8000/v1")            # model from /v1/models
        llm = ttc.backends.OpenAICompatible(["http://a:8000/v1", "http://b:8000/v1"], model="qwen")

    `base_url`: one URL or a list of replicas serving the same model (a URL without a path gets `/v1`). `model`:
    the served model name; None reads it from `/v1/models` (at construction when a replica answers, else at the
    first request). `api_key`: else $OPENAI_API_KEY, else $VLLM_API_KEY, else none ("" sends none and reads no
    environment). `max_concurrency`: most requests in flight at once (per event loop); `pool_wait`: the longest a
    request waits for one of them (None: no limit), else `ttc.PoolExhausted`. `timeout`: seconds for a whole
    request (a stream: between chunks); `connect_timeout`: to open a connection; `read_timeout`: between two reads
    (None: none); on expiry `ttc.GenerationTimeout`. `max_retries`: extra attempts after a connection error, a
    5xx or a 429/503, waiting `backoff * 2**attempt` s (at most `max_backoff`, with jitter) unless another replica
    can take it; `retry_on_overload`: how many of them a 429/503 may use (None: all). `cooldown`: seconds a
    replica that failed to connect is left out. `max_retry_after`: the longest wait a 429/503 `Retry-After` is
    obeyed for (longer asks wait this long). `use_chat`: True: `chat_prompt` returns `ChatMessages` and requests
    go to `/v1/chat/completions`; False: the chat template is applied by the server's `/tokenize` or the local
    tokenizer; None (default): the first of /tokenize, local tokenizer, chat endpoint that works.
    `vllm_extensions`: ask for token ids with vLLM's extra request fields (off if the server refuses them).
    `tokenizer`: the served model's tokenizer for servers without `/tokenize` (an object with `encode`/`decode`/
    `apply_chat_template`, or a Hugging Face id or folder, loaded offline); None: the model's, if on this machine.
    `thinking`: the served reasoning model's thinking format (a name of `ttc.thinking.FORMATS` such as
    "deepseek_r1" or "qwen3", or a `ThinkingFormat`), used to split what the server does not split itself
    (`/v1/completions`, a server without `--reasoning-parser`); None: the one the model's folder declares
    (`ttc_thinking.json`) where it is on this machine, else no thinking; False: none. The thinking the
    server's reasoning parser sends (`message.reasoning`, `reasoning_content`) is read whatever this says.

    The HTTP session belongs to the event loop that made it: call `aclose()` (or use `async with`) before an
    event loop you used ends; the backend stays usable afterwards. Every JSON request passes `_request` (tests
    and benchmarks wrap it), every /tokenize of a prompt `_server_tokenize`.
    """

    def __init__(self, base_url: str | Sequence[str] = "http://127.0.0.1:8000/v1", model: str | None = None, *,
                 api_key: str | None = None, max_concurrency: int = 64, timeout: float = 600.0,
                 connect_timeout: float = 10.0, max_retries: int = 3, backoff: float = 0.25, max_backoff: float = 8.0,
                 cooldown: float = 30.0, use_chat: bool | None = None, vllm_extensions: bool = True,
                 headers: dict[str, str] | None = None, tokenizer: Any = None, max_retry_after: float = 60.0,
                 pool_wait: float | None = None, read_timeout: float | None = None,
                 retry_on_overload: int | None = None, thinking: str | ThinkingFormat | bool | None = None):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise InvalidInput("OpenAICompatible needs at least one base URL")
        replicas = [split_base(u) for u in urls]
        self._model = model
        self.use_chat = None if use_chat is None else bool(use_chat)
        self.vllm_extensions = bool(vllm_extensions)
        self.features = ServerFeatures()
        if not vllm_extensions:
            self.features.token_ids = False
        self._probed = False
        #: what the capability probe's own requests cost (billed by the server, in no problem's usage)
        self.probe_usage = Usage()
        self._probe_lock: asyncio.Lock | None = None
        self._warned: set[str] = set()
        #: prompt lengths the server reported, for streams of the same prompt closed before their usage chunk
        self.prompt_lengths = usage.PromptLengths()
        self.transport = Transport(
            replicas, request_headers(api_key, headers), max_concurrency=max_concurrency, timeout=timeout,
            connect_timeout=connect_timeout, max_retries=max_retries, backoff=backoff, max_backoff=max_backoff,
            cooldown=cooldown, max_retry_after=max_retry_after, pool_wait=pool_wait, read_timeout=read_timeout,
            retry_on_overload=retry_on_overload)
        self.adapter = Adapter(self.features, self, replicas[0].base)
        # late-bound, so that a wrapped `_request` / `_server_tokenize` sees the parts' requests too
        self._send: Callable[..., Awaitable[Any]] = lambda *a, **k: self._request(*a, **k)
        self.tokens = Tokenization(self.features, self._send, lambda payload: self._server_tokenize(payload),
                                   self.model, source=tokenizer, model_hint=lambda: self._model,
                                   base_url=self.base_url)
        if self._model is None:  # now, so that `model_name` is real from the start (else at the first request)
            self._model = discover_model(self.replicas, self.transport.headers,
                                         min(self.transport.connect_timeout, 5.0))
        self.markers = ThinkingMarkers(thinking, self.tokens, lambda: self._model)

    # -- what the server can do -------------------------------------------------------------------
    @property  # type: ignore[override]
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        """Derived from `features` (what the server showed), never declared up front."""
        return self.features.capabilities()

    @property  # type: ignore[override]
    def tokenizer(self) -> Any:  # type: ignore[override]
        """The local tokenizer of the served model (given, or found offline), else None."""
        return self.tokens.tokenizer

    @property  # type: ignore[override]
    def eos_token_ids(self) -> frozenset[int]:  # type: ignore[override]
        """End-of-sequence ids from the local tokenizer (and its generation config), if there is one."""
        return self.tokens.eos_token_ids()

    async def detect_capabilities(self) -> frozenset[str]:
        await self.probe()
        return self.capabilities

    async def probe(self) -> ServerFeatures:
        """Ask the server once what it supports (a few requests of one token each); cached.

        The probe's requests are billed by the server but belong to no problem: what they cost is
        `probe_usage` (and `describe()["probe_usage"]`).
        """
        if self._probed:
            return self.features
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if not self._probed:
                await Probe(self.features, self._send, self.transport, model=await self.model(),
                            extensions=self, base_url=self.base_url, warn=self._warn_once,
                            usage=self.probe_usage).run()
                self._probed = True
        return self.features

    def _warn_once(self, key: str, message: str, category: type[Warning] = RuntimeWarning) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, category, stacklevel=4)

    def _warn_no_usage(self) -> None:
        self._warn_once("usage", f"{self.base_url} reported no token usage: ttc estimates it (Usage.estimated is "
                        f"True)", UserWarning)

    # -- Generator API ----------------------------------------------------------------------------
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

    async def context_length(self) -> int | None:
        """The served model's context length: vLLM's `max_model_len` in `/v1/models` (read once;
        None when the server does not say, as other OpenAI-compatible servers do not)."""
        if not hasattr(self, "_context_length"):
            length = None
            try:
                data = await self._request("GET", "/models")
                entry = next((m for m in data["data"] if m.get("id") == self._model), data["data"][0])
                value = entry.get("max_model_len")
                length = int(value) if isinstance(value, int) and value > 0 else None
            except (KeyError, IndexError, TypeError, AttributeError, GenerationError):
                length = None
            self._context_length = length
        return self._context_length

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as the server tokenizes a prompt: vLLM's `/tokenize`, else the local
        tokenizer, else `Unsupported`.

        A `ChatMessages` prompt is tokenized with the chat template applied, as sent.
        """
        return await self.tokens.tokenize(text)

    async def _server_tokenize(self, payload: dict[str, Any]) -> Any:
        """vLLM's /tokenize; None (and remembered) when the server has no such endpoint."""
        return await self.tokens.server_tokenize(payload)

    def continue_prompt(self, prompt: Prompt, text: str) -> Prompt:
        """`prompt` followed by `text` the model already wrote. A `ChatMessages` prompt continues
        the assistant's message on the chat endpoint where it can (`continue_final_message` or
        prefill), else as text templated by the local tokenizer."""
        if not isinstance(prompt, ChatMessages):
            return super().continue_prompt(prompt, text)
        return routing.continued_chat(prompt, text, self.features, self.tokens, self.base_url)

    async def chat_prompt(self, messages: Sequence[dict[str, str]], *,
                          chat_template_kwargs: dict[str, Any] | None = None) -> Prompt:
        """The chat template applied to `messages`: by the server as token ids (vLLM's `/tokenize`),
        else by the local tokenizer as text, else the messages themselves (`ChatMessages`, sent to
        `/v1/chat/completions`); `use_chat=True` always gives `ChatMessages`. `chat_template_kwargs`
        (e.g. `{"enable_thinking": False}`) go to the template wherever it is rendered (a chat
        request sends them from `SamplingParams.chat_template_kwargs`)."""
        payloads.check_messages(messages, "chat_prompt")
        return await self.tokens.chat_prompt(messages, self.use_chat, chat_template_kwargs)

    @property  # type: ignore[override]
    def thinking(self) -> ThinkingFormat | None:  # type: ignore[override]
        """The served model's thinking format (given, or declared by its folder), else None."""
        return self.markers.format

    def split_thinking(self, completion: Completion, prompt: Prompt, params: SamplingParams) -> Completion:
        """A stream's completion (the whole output, as its deltas carry it) split as `generate` splits."""
        split = self.markers.known_split(prompt, params, server_split=bool(self.features.reasoning))
        return reasoning.split_completion(completion, split, self.tokens.encode)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """`params.n` completions from one `/v1/completions` request (or a chat request for
        `ChatMessages`, and for a locally templated chat prompt on a server without
        `/v1/completions`); n single requests where the server ignores or rejects `n`."""
        if not isinstance(prompt, ChatMessages) and self.features.completions is False:
            prompt = routing.chat_instead(prompt, self.base_url)
        if isinstance(prompt, ChatMessages):
            return await self.chat(prompt.messages, params, continue_final=prompt.continue_final)
        try:
            return await with_n(params, lambda p: self._generate_once(prompt, p), self.features)
        except RequestRejected as exc:
            if not self._completions_missing(exc):
                raise
            return await self.generate(routing.chat_instead(prompt, self.base_url), params)

    def _completions_missing(self, error: RequestRejected) -> bool:
        """Whether a refusal shows the server has no /v1/completions (then recorded)."""
        if routing.completions_missing(error, self.features, self._model):
            self.features.completions = False
        return self.features.completions is False

    async def _generate_once(self, prompt: Prompt, params: SamplingParams) -> Generation:
        payloads.wire_prompt(prompt)  # bad input fails before the server is asked for its model name
        requested = payloads.requested_fields(params, chat=False)
        payloads.check_supported(requested, self.features, self.base_url)
        payload = payloads.completion_payload(await self.model(), prompt, params, self.features,
                                              extensions=self.vllm_extensions, stream=False)
        split = await self.markers.split(prompt, params)
        data = await self._request_adapting("POST", "/completions", payload, requested)
        return await self._answer(data, prompt, params, responses.parse_completions, split)

    async def chat(self, messages: Sequence[dict[str, str]], params: SamplingParams, *,
                   continue_final: bool = False) -> Generation:
        """`params.n` assistant replies to `messages` from `/v1/chat/completions` (continuing the
        last assistant message instead with `continue_final`)."""
        async def once(p: SamplingParams) -> Generation:
            payloads.check_messages(messages)
            requested = payloads.requested_fields(p, chat=True)
            payloads.check_supported(requested, self.features, self.base_url)
            payload = payloads.chat_payload(await self.model(), messages, p, self.features,
                                            extensions=self.vllm_extensions, stream=False,
                                            continue_final=continue_final)
            prompt = ChatMessages(messages, continue_final=continue_final)
            split = await self.markers.split(prompt, p)
            data = await self._request_adapting("POST", "/chat/completions", payload, requested)
            return await self._answer(data, prompt, p, responses.parse_chat, split)
        return await with_n(params, once, self.features)

    async def _answer(self, data: Any, prompt: Prompt, params: SamplingParams, parse: Callable[..., Parsed],
                      split: reasoning.ThinkingSplit = reasoning.NO_SPLIT) -> Generation:
        """An answer read (`parse`, the thinking split by `split` where the server did not), what it
        showed recorded, and its usage; an answer ttc rejects still counts what it cost. Ids the
        server did not send are asked of /tokenize. What the answer carried is recorded for its
        endpoint; fields a gateway moved are put back first."""
        data = gateways.lifted(data)
        chat = parse is responses.parse_chat
        try:
            parsed = parse(data, params, self.features, extensions=self.vllm_extensions,
                           eos_ids=self.tokens.eos_token_ids, encode=self.tokens.encode, split=split)
        except MalformedResponse as exc:
            self.features.update(getattr(exc, "feature_updates", {}))
            exc.usage = usage.rejected_usage(data, prompt)  # what the server already spent stays counted
            raise
        self.features.update(parsed.updates)
        endpoint = self.features.endpoint(chat)
        for choice in data.get("choices") or [] if isinstance(data, dict) else []:
            endpoint.observe(choice, data, asked_ids=self.vllm_extensions,
                             asked_logprobs=payloads.wants_logprobs(params, self.features))
        self.prompt_lengths.record(prompt, usage.read_usage(data)[0])
        for i in parsed.needs_ids:
            ids = await self.tokens.completion_ids(parsed.completions[i].text)
            parsed.completions[i] = dataclasses.replace(parsed.completions[i], token_ids=ids)
        if self.features.reasoning and self.thinking is None and parse is responses.parse_completions:
            self._warn_once("thinking_format", f"{self.base_url} splits the thinking on its chat endpoint (a "
                            f"reasoning parser), but /v1/completions returns it inline and no thinking format is "
                            f"declared: its answers may be read from the thinking. Declare its thinking format: "
                            f"OpenAICompatible(..., thinking=\"deepseek_r1\" or \"qwen3\")", UserWarning)
        completions = usage.with_hidden_thinking(data, parsed.completions)
        if completions is not parsed.completions:
            self.features.hidden_thinking = True
        generation = usage.generation(data, completions, prompt)
        if generation.estimated:
            self._warn_no_usage()
        return generation

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion; closing the iterator early closes the connection, and vLLM
        aborts the request (it stops generating for it)."""
        if params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        if not isinstance(prompt, ChatMessages) and self.features.completions is False:
            prompt = routing.chat_instead(prompt, self.base_url)
        routing.check_prompt(prompt)  # bad input fails before the server is asked for its model
        async with self.transport.slot():
            try:
                opened = await self._open_stream(prompt, params)
            except RequestRejected as exc:
                if isinstance(prompt, ChatMessages) or not self._completions_missing(exc):
                    raise
                prompt = routing.chat_instead(prompt, self.base_url)
                opened = await self._open_stream(prompt, params)
            deltas = read_stream(opened, params, self.features, prompt, chat=isinstance(prompt, ChatMessages),
                                 on_estimate=self._warn_no_usage, count=self._count_tokens,
                                 prompt_lengths=self.prompt_lengths, asked_ids=self.vllm_extensions,
                                 split=await self.markers.split(prompt, params))
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    yield delta

    def _count_tokens(self, text: str) -> int | None:
        """`text`'s length in the local tokenizer's tokens; None without a local tokenizer."""
        ids = self.tokens.encode(text)
        return None if ids is None else len(ids)

    def closed_stream_usage(self, prompt: Prompt, text: str, token_ids: Sequence[int], so_far: Usage) -> Usage:
        """What a stream of `prompt` closed after receiving `text` cost: a chat prompt no tokenizer
        counted is charged what the same prompt's finished requests reported (else estimated); text
        that came without token ids is counted by the local tokenizer (else estimated)."""
        spent = usage.closed_stream_usage(prompt, text, token_ids, so_far, self._count_tokens,
                                          self.prompt_lengths.get(prompt))
        if spent.estimated:
            self._warn_no_usage()
        return spent

    async def _open_stream(self, prompt: Prompt, params: SamplingParams) -> OpenStream:
        requested = payloads.requested_fields(params, chat=isinstance(prompt, ChatMessages))
        payloads.check_supported(requested, self.features, self.base_url)
        path, payload = payloads.request_body(await self.model(), prompt, params, self.features,
                                              extensions=self.vllm_extensions, stream=True)
        return await self.transport.open_stream(path, payload,
                                                lambda body, error: self.adapter.stream(body, error, requested))

    async def health(self) -> list[bool]:
        """Whether each replica answers `GET /health` with 200 (vLLM), in order."""
        return await self.transport.health()

    async def aclose(self) -> None:
        """Close this event loop's HTTP session (the backend stays usable). Safe to call twice."""
        await self.transport.aclose()

    async def __aenter__(self) -> OpenAICompatible:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    close_loop = aclose

    def describe(self) -> dict[str, Any]:
        """Backend, model, capabilities and every server feature known so far (`await probe()`
        first to have them all)."""
        tok = self.tokens.loaded
        return super().describe() | {"base_urls": [r.base for r in self.replicas],
                                     "features": self.features.to_dict(),
                                     "endpoints": {name: dataclasses.asdict(e)
                                                   for name, e in self.features.endpoints.items()},
                                     "probe_usage": self.probe_usage.to_dict(),
                                     "thinking": None if self.thinking is None else self.thinking.name,
                                     "local_tokenizer": None if tok is None else
                                     getattr(tok, "name_or_path", type(tok).__name__)}

    # -- sending ----------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                       root: bool = False, retries: int | None = None) -> Any:
        """Send one request (with retries and replica failover) and return its parsed JSON body."""
        return await self.transport.request(method, path, payload, root=root, retries=retries)

    async def _request_adapting(self, method: str, path: str, payload: dict[str, Any],
                                requested: Sequence[str] = ()) -> Any:
        """A request that drops what the server refuses, once each, and remembers it; a refused
        field of `requested` (the user's) raises `ttc.Unsupported`."""
        return await self.adapter.request(self._send, method, path, payload, requested)
