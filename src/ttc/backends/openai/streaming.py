"""Reading one streamed completion: deltas as they arrive, the finish delta held back until the
server's usage chunk (or the end of the stream), and the connection dropped when the reader
stops early (vLLM then aborts the request).

A stream whose deltas carry text and no token ids (a gateway strips them: LiteLLM's streams)
counts what it received from the text: each such delta carries the running count as its usage
(the local tokenizer's count, else an estimate; provisional), and the finish (where the server
sent no usage) or the close (`OpenAICompatible.closed_stream_usage`) counts the whole text
again, setting `estimated` where no tokenizer could. What the stream's answers carried is recorded
for its endpoint (`ServerFeatures.endpoints`), and the prompt length the server reported is
remembered for the prompt (`PromptLengths`), for streams of it closed before their usage chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from ttc.backends.base import Delta
from ttc.backends.openai import usage
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.payloads import wants_logprobs
from ttc.backends.openai.reasoning import NO_SPLIT, StreamJoiner, ThinkingSplit
from ttc.backends.openai.responses import stream_delta, stream_reasoning
from ttc.backends.openai.transport import OpenStream
from ttc.errors import MalformedResponse
from ttc.types import Prompt, SamplingParams

__all__ = ["read_stream"]


async def read_stream(opened: OpenStream, params: SamplingParams, features: ServerFeatures, prompt: Prompt, *,
                      chat: bool, on_estimate: Callable[[], None], count: usage.Count | None = None,
                      prompt_lengths: usage.PromptLengths | None = None, asked_ids: bool = False,
                      split: ThinkingSplit = NO_SPLIT) -> AsyncIterator[Delta]:
    """The deltas of `opened`, the whole output as generated (thinking the server's parser sent apart
    is joined back with the markers of `split`'s format, for `split_thinking` to split the stream's
    completion as `generate` would); the last one carries the whole request's usage (`on_estimate`
    is called when that usage had to be estimated). `count`: the local tokenizer's token count of a
    text (for deltas without ids); `prompt_lengths`: prompt lengths reported so far, read and
    recorded; `asked_ids`: vLLM's `return_token_ids` was sent. Closes `opened` however the reader stops."""
    count = count or (lambda text: None)
    lengths = prompt_lengths or usage.PromptLengths()
    endpoint = features.endpoint(chat, stream=True)
    joiner = StreamJoiner(split)
    finished = False
    last: Delta | None = None  # the finish delta, held back until the usage chunk arrives
    reported: Any = None       # the server's usage object (a last chunk with no choices)
    received: list[Delta] = []
    text = ""                  # the text of deltas without token ids, and its provisional count
    tokens = 0
    try:
        async for chunk in opened.chunks():
            if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                reported = chunk["usage"]
            delta = None if last is not None else stream_delta(chunk, params, features, chat=chat)
            if delta is not None:
                reasoning = stream_reasoning(chunk, chat)
                if reasoning is not None:
                    features.reasoning = True
                delta = joiner(delta, reasoning)
                received.append(delta)
                if delta.finish_reason is None:
                    if delta.text and not delta.token_ids:
                        text += delta.text
                        tokens += usage.text_tokens(delta.text, count)[0]
                        delta = dataclasses.replace(delta, usage=usage.received_usage(text, tokens,
                                                                                      lengths.get(prompt)))
                    yield delta
                    continue
                last = delta
                choices = chunk.get("choices") if isinstance(chunk, dict) else None
                endpoint.observe(choices[0] if choices else None, None, asked_ids=False, asked_logprobs=False)
            if last is not None and (reported is not None or features.stream_usage is False
                                     or endpoint.usage is False):
                break
        if last is None:
            raise MalformedResponse(f"the stream from {opened.replica.base} ended without a finish_reason")
        finished = True
        endpoint.observe(None, {"usage": reported} if reported is not None else {}, asked_ids=False,
                         asked_logprobs=False)
        if asked_ids:
            endpoint.token_ids = bool(endpoint.token_ids) or any(d.token_ids for d in received)
        if wants_logprobs(params, features):
            endpoint.logprobs = bool(endpoint.logprobs) or any(d.logprobs is not None for d in received)
        spent = usage.stream_usage(reported, received, prompt, count, lengths.get(prompt))
        lengths.record(prompt, usage.read_usage({"usage": reported})[0])
        if spent.estimated:
            on_estimate()
        yield dataclasses.replace(joiner.finish(last), usage=spent)
    finally:
        opened.close(finished)
