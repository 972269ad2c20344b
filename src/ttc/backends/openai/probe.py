"""The capability probe: asks the server once, with tiny requests, what it supports.

`Probe.run()` fills a `ServerFeatures` record. The reading of each answer is a pure function
(`probe_top`, `probe_text`, `cache_config`, `continues`) so that what "supports" means can be
tested on recorded answers; the requests go through the backend's own `request` (the seam that
every JSON request passes) and its transport. What the probe's answers cost is added to `usage`
(the backend's `probe_usage`): the server bills them, and no problem's usage holds them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ttc.backends.openai.adapting import Extensions
from ttc.backends.openai.features import COARSE_BLOCK, NOT_FOUND, ServerFeatures
from ttc.backends.openai.gateways import lifted
from ttc.backends.openai.http_errors import AuthenticationFailed, RequestRejected
from ttc.backends.openai.payloads import EXTENSION_FIELDS
from ttc.backends.openai.reasoning import reasoning_of
from ttc.backends.openai.transport import Transport
from ttc.backends.openai.usage import estimate_tokens, read_usage
from ttc.errors import GenerationError, MalformedResponse, Unsupported
from ttc.types import Usage

__all__ = ["CONTINUE_QUESTION", "Probe", "answer_usage", "cache_config", "continues", "probe_text", "probe_top",
           "split_reply"]


def probe_top(data: Any, path: str) -> int | None:
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


def probe_text(data: Any, path: str) -> str | None:
    """The first choice's text of a probe answer (None: not there)."""
    try:
        choice = data["choices"][0]
        return choice["text"] if path == "/completions" else choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def cache_config(metrics: str) -> tuple[bool | None, int | None]:
    """(prefix caching on, KV block size) from vLLM's `vllm:cache_config_info{...}` gauge in a
    /metrics text; None for what it does not say."""
    info = re.search(r"^vllm:cache_config_info\{([^}]*)\}", metrics, re.M)
    fields = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1))) if info else {}
    on = fields.get("enable_prefix_caching")
    size = fields.get("block_size", "")
    return (None if on is None else on.lower() == "true"), (int(size) if size.isdigit() else None)


#: what the probe asks a model to answer, then to continue (a reply of many short words)
CONTINUE_QUESTION = "Count from one to twenty in words, separated by commas."


def split_reply(reply: str) -> tuple[str, str] | None:
    """A reply cut in two at a word boundary (its first half of words, then the rest); None when
    it has fewer than two words."""
    starts = [m.start() for m in re.finditer(r"(?<=\s)\S", reply.lstrip())]
    if not starts:
        return None
    head = reply.lstrip()
    cut = starts[(len(starts) - 1) // 2]
    return head[:cut].rstrip(), head[len(head[:cut].rstrip()):]


def continues(prefix: str, rest: str, returned: str | None) -> bool:
    """Whether `returned`, the answer to a conversation whose final assistant message is `prefix`,
    continues that message: it goes on as the model's own reply did after `prefix` (`rest`, the
    same greedy reply), instead of answering anew or repeating `prefix`. Pure: the probe's
    decision is read from what the server returned, whatever field (or none) made it continue."""
    if returned is None:
        return False
    want, got = rest.lstrip(), returned.lstrip()
    if not want.strip() or not got.strip() or got.startswith(prefix.lstrip()):
        return False
    n = min(len(want), len(got))
    return want[:n].rstrip() == got[:n].rstrip()


def answer_usage(data: Any) -> Usage:
    """What one probe answer cost: the server's usage, else estimated from its texts."""
    prompt_tokens, completion_tokens, _ = read_usage(data)
    choices = data.get("choices") if isinstance(data, dict) else None
    texts = [probe_text({"choices": [c]}, "/completions") or probe_text({"choices": [c]}, "/chat")
             for c in (choices if isinstance(choices, list) else [])]
    estimated = prompt_tokens is None or completion_tokens is None
    return Usage(prompt_tokens=prompt_tokens or 0, processed_prompt_tokens=(prompt_tokens or 0) * max(1, len(texts)),
                 completion_tokens=completion_tokens if completion_tokens is not None else
                 sum(estimate_tokens(t) for t in texts), generator_calls=1, estimated=estimated)


class Probe:
    """One run of the probe over `features`. `request(method, path, payload, root=)` sends JSON;
    `extensions.vllm_extensions` says whether vLLM's extra fields are sent (turned off if refused);
    `usage` gets what each answered generation request cost."""

    def __init__(self, features: ServerFeatures, request: Callable[..., Awaitable[Any]], transport: Transport, *,
                 model: str, extensions: Extensions, base_url: str, warn: Callable[[str, str], None],
                 usage: Usage):
        self.usage = usage
        self.features = features
        self.request = request
        self.transport = transport
        self.model = model
        self.extensions = extensions
        self.base_url = base_url
        self.warn = warn

    async def ask(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                  root: bool = False) -> tuple[int, Any]:
        """(status, body) of a probe request: 200 and the JSON (a gateway's moved fields put back,
        what it carried recorded for its endpoint), or the 4xx status and its message. A refused
        key is raised: what a probe without access learns would be wrong."""
        try:
            data = lifted(await self.request(method, path, payload, root=root))
            if path in ("/completions", "/chat/completions"):
                self.usage.add(answer_usage(data))
                endpoint = self.features.endpoint(chat=path == "/chat/completions")
                choices = data.get("choices") if isinstance(data, dict) else None
                endpoint.observe(choices[0] if isinstance(choices, list) and choices else None, data,
                                 asked_ids=bool(payload and payload.get("return_token_ids")),
                                 asked_logprobs=bool(payload and payload.get("logprobs")))
            return 200, data
        except AuthenticationFailed:
            raise
        except RequestRejected as exc:
            return exc.status, exc.server_message
        except MalformedResponse as exc:
            return 200, str(exc)

    async def run(self) -> None:
        f = self.features
        if f.tokenize is None:
            status, data = await self.ask("POST", "/tokenize", {"model": self.model, "prompt": "Hi"}, root=True)
            f.tokenize = status == 200 and isinstance(data, dict) and isinstance(data.get("tokens"), list)
        one = {"model": self.model, "max_tokens": 1, "temperature": 0.0}
        path, base, chat = await self._endpoints(one)
        if f.stop_reason is None and f.chat and isinstance(chat, dict) and chat.get("choices"):
            f.stop_reason = "stop_reason" in chat["choices"][0]
        if f.reasoning is None and f.chat and isinstance(chat, dict) and chat.get("choices"):
            # a reasoning parser sent the first token of a thinking model's reply as `reasoning`
            if reasoning_of(chat["choices"][0].get("message")) is not None:
                f.reasoning = True
        if f.usage is None:
            f.usage = isinstance(chat, dict) and isinstance(chat.get("usage"), dict)
        if f.n is None:
            status, data = await self.ask("POST", path, {**base, "n": 2, "temperature": 1.0})
            choices = data.get("choices") if status == 200 and isinstance(data, dict) else None
            f.n = ("rejected" if status != 200
                   else "honoured" if isinstance(choices, list) and len(choices) >= 2 else "ignored")
        if f.logprobs is None:
            await self._logprobs(path, base)
        if f.stop_in_text is None and not (f.stop_reason and f.endpoints["chat"].stop_reason is not False):
            stops = [" ", "\n", ".", ","]
            payload = {**base, "max_tokens": 8, "stop": stops}
            if path == "/completions":
                payload["prompt"] = "Count from one to ten, in words: one, two, three,"
            status, data = await self.ask("POST", path, payload)
            text = probe_text(data, path) if status == 200 else None
            if text is not None and text.strip():
                # a server that cuts stop strings never sends one (it stops at the first); one that
                # keeps them sends the token that completed one (HF's stop_strings)
                f.stop_in_text = any(x in text for x in stops)
        if f.stream_usage is None:
            f.stream_usage = await self._stream_usage(path, base)
            other = "/chat/completions" if path == "/completions" else "/completions"
            if (f.chat if other == "/chat/completions" else f.completions):
                await self._stream_usage(other, {**one, **({"messages": [{"role": "user", "content": "Hi"}]}
                                                            if other == "/chat/completions" else {"prompt": "Hi"})})
        if f.chat and f.continue_final_message is None and not f.tokenize:
            f.continue_final_message = await self._continue_final(one)
        if f.prefix_caching is None:
            await self._prefix_caching()

    async def _endpoints(self, one: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
        """Which of /completions and /chat/completions answer (and whether vLLM's fields are
        accepted); the path and body the other probes use, and the chat answer."""
        f = self.features
        ext = {f_: True for f_ in EXTENSION_FIELDS[:1]} if self.extensions.vllm_extensions else {}
        status, data = await self.ask("POST", "/completions", {**one, "prompt": "Hi", **ext})
        if status != 200 and ext and any(x in str(data) for x in EXTENSION_FIELDS):
            self.extensions.vllm_extensions = False
            f.token_ids = False
            status, data = await self.ask("POST", "/completions", {**one, "prompt": "Hi"})
        f.completions = status == 200 or status not in NOT_FOUND
        if status == 200 and isinstance(data, dict) and data.get("choices"):
            choice = data["choices"][0]
            if f.token_ids is None:
                f.token_ids = isinstance(choice.get("token_ids"), list)
            f.stop_reason = "stop_reason" in choice
            f.usage = isinstance(data.get("usage"), dict)
        hi = {**one, "messages": [{"role": "user", "content": "Hi"}]}
        status, chat = await self.ask("POST", "/chat/completions",
                                      {**hi, **(ext if self.extensions.vllm_extensions else {})})
        if status != 200 and self.extensions.vllm_extensions and ext:  # refused on chat only: ask plainly
            status, chat = await self.ask("POST", "/chat/completions", hi)
        f.chat = status == 200
        if f.completions:
            return "/completions", {**one, "prompt": "Hi"}, chat
        if f.chat:
            return "/chat/completions", {**one, "messages": [{"role": "user", "content": "Hi"}]}, chat
        raise Unsupported(f"{self.base_url} answers neither /completions nor /chat/completions: "
                          f"{str(data)[:200]}")

    async def _logprobs(self, path: str, base: dict[str, Any]) -> None:
        f = self.features
        for k in (20, 5, 0):
            lp = {"logprobs": k} if path == "/completions" else {"logprobs": True, **({"top_logprobs": k} if k else {})}
            status, data = await self.ask("POST", path, {**base, **lp})
            if status != 200:
                continue
            top = probe_top(data, path)
            f.logprobs = top is not None
            f.max_top_logprobs = 0 if top is None else min(k, top)
            return
        f.logprobs, f.max_top_logprobs = False, 0

    async def _stream_usage(self, path: str, base: dict[str, Any]) -> bool:
        """Whether a stream carries a `usage` object (asked for with stream_options where accepted);
        what its chunks carried (usage, token ids, stop_reason) is recorded for the stream endpoint."""
        state = self.transport.state()
        endpoint = self.features.endpoint(chat=path == "/chat/completions", stream=True)
        ids = {"return_token_ids": True} if self.extensions.vllm_extensions else {}
        for payload in ({**base, **ids, "stream": True, "stream_options": {"include_usage": True}},
                        {**base, "stream": True}):
            try:
                async with state.session.post(self.base_url + path, json=payload, headers=self.transport.headers,
                                              timeout=self.transport.client_timeout()) as response:
                    if response.status >= 400:
                        continue
                    reported, text, got_ids = None, "", False
                    async for chunk in self.transport.sse(response):
                        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                            reported = chunk
                        for choice in (chunk.get("choices") or []) if isinstance(chunk, dict) else []:
                            piece = choice.get("text", (choice.get("delta") or {}).get("content"))
                            text += piece if isinstance(piece, str) else ""
                            got_ids = got_ids or bool(choice.get("token_ids"))
                            if choice.get("finish_reason") is not None:
                                endpoint.observe(choice, None, asked_ids=False, asked_logprobs=False)
                    self.usage.add(answer_usage(reported or {"choices": [{"text": text}]}))
                    endpoint.usage = reported is not None
                    if "return_token_ids" in payload:
                        endpoint.token_ids = got_ids
                    return reported is not None
            except (aiohttp.ClientError, asyncio.TimeoutError, GenerationError):
                return False
        return False

    async def _continue_final(self, one: dict[str, Any]) -> bool:
        """Whether the server continues a final assistant message: asked to continue the first half
        of its own greedy reply, does it return that reply's second half? True for a server that
        honours `continue_final_message` (vLLM, SGLang) and for one that prefills a trailing
        assistant message whatever the request says (llama.cpp since its PR #13174, Ollama, LMDeploy)."""
        question = [{"role": "user", "content": CONTINUE_QUESTION}]
        status, plain = await self.ask("POST", "/chat/completions", {**one, "messages": question, "max_tokens": 12})
        halves = split_reply(probe_text(plain, "/chat") or "") if status == 200 else None
        if halves is None:
            return False
        prefix, rest = halves
        status, cont = await self.ask("POST", "/chat/completions", {
            **one, "messages": [*question, {"role": "assistant", "content": prefix}], "max_tokens": 4,
            "continue_final_message": True, "add_generation_prompt": False})
        return status == 200 and continues(prefix, rest, probe_text(cont, "/chat"))

    async def _prefix_caching(self) -> None:
        """Prefix caching and its KV block size from vLLM's /metrics (unknown when not published),
        with a warning when it is off or its blocks are too coarse for step searches."""
        f = self.features
        got = await self.transport.get_text(self.transport.replicas[0].root + "/metrics")
        f.prefix_caching, f.prefix_block_size = cache_config(got[1]) if got and got[0] == 200 else (None, None)
        if f.prefix_caching is False:
            self.warn("prefix_caching", f"prefix caching is off on {self.base_url} "
                      f"(vllm:cache_config_info): step searches re-prefill every shared prefix")
        elif f.prefix_caching and (f.prefix_block_size or 0) >= COARSE_BLOCK:
            self.warn("prefix_caching", f"{self.base_url} caches prefixes in KV blocks of "
                      f"{f.prefix_block_size} tokens (vllm:cache_config_info): prompts and step "
                      f"continuations share only whole blocks, so short ones are re-prefilled; "
                      f"start vLLM with --block-size 32 (or 16) for step searches")
