"""Reading one streamed completion: deltas as they arrive, the finish delta held back until the
server's usage chunk (or the end of the stream), and the connection dropped when the reader
stops early (vLLM then aborts the request)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from ttc.backends.base import Delta
from ttc.backends.openai import usage
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.reasoning import NO_SPLIT, StreamJoiner, ThinkingSplit
from ttc.backends.openai.responses import stream_delta, stream_reasoning
from ttc.backends.openai.transport import OpenStream
from ttc.errors import MalformedResponse
from ttc.types import Prompt, SamplingParams

__all__ = ["read_stream"]


async def read_stream(opened: OpenStream, params: SamplingParams, features: ServerFeatures, prompt: Prompt, *,
                      chat: bool, on_estimate: Callable[[], None],
                      split: ThinkingSplit = NO_SPLIT) -> AsyncIterator[Delta]:
    """The deltas of `opened`, the whole output as generated (thinking the server's parser sent apart
    is joined back with the markers of `split`'s format, for `split_thinking` to split the stream's
    completion as `generate` would); the last one carries the whole request's usage (`on_estimate`
    is called when that usage had to be estimated). Closes `opened` however the reader stops."""
    joiner = StreamJoiner(split)
    finished = False
    last: Delta | None = None  # the finish delta, held back until the usage chunk arrives
    reported: Any = None       # the server's usage object (a last chunk with no choices)
    received: list[Delta] = []
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
                    yield delta
                    continue
                last = delta
            if last is not None and (reported is not None or features.stream_usage is False):
                break
        if last is None:
            raise MalformedResponse(f"the stream from {opened.replica.base} ended without a finish_reason")
        finished = True
        spent = usage.stream_usage(reported, received, prompt)
        if spent.estimated:
            on_estimate()
        yield dataclasses.replace(joiner.finish(last), usage=spent)
    finally:
        opened.close(finished)
