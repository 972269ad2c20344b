"""The wire format, usage: what a request cost, from the server's `usage` object where it sent
one, else counted from token ids, else estimated (and marked so). Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttc.backends.base import Delta, Generation
from ttc.backends.openai.prompts import ChatMessages
from ttc.types import Completion, Prompt, Usage

__all__ = ["estimate_tokens", "generation", "prompt_length", "read_usage", "rejected_usage",
           "split_completion_tokens", "stream_usage"]


def read_usage(data: Any) -> tuple[int | None, int | None, int | None]:
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


def estimate_tokens(text: str | None) -> int:
    """A token count for text no one counted: about 4 characters per token (English prose)."""
    return 0 if not text else max(1, round(len(text) / 4))


def prompt_length(prompt: Prompt) -> tuple[int, bool]:
    """(prompt length, whether it is estimated): exact for token ids, estimated for text."""
    if isinstance(prompt, ChatMessages):
        return sum(estimate_tokens(m["content"]) + 4 for m in prompt.messages), True
    if isinstance(prompt, str):
        return estimate_tokens(prompt), True
    return len(prompt), False


def split_completion_tokens(completions: Sequence[Completion], total: int | None) -> tuple[int, ...] | None:
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


def generation(data: Any, completions: list[Completion], prompt: Prompt) -> Generation:
    """The completions with the usage the server reported; what it did not report is counted
    from token ids, else estimated (`estimated` says so)."""
    prompt_tokens, completion_total, cached = read_usage(data)
    estimated = False
    if prompt_tokens is None:
        prompt_tokens, estimated = prompt_length(prompt)
    counts = split_completion_tokens(completions, completion_total)
    if counts is None:
        counts = tuple(c.num_tokens if c.token_ids else estimate_tokens(c.text) for c in completions)
        estimated = estimated or any(not c.token_ids and c.text for c in completions)
    return Generation(prompt_tokens=prompt_tokens, completions=completions, completion_tokens=counts,
                      processed_prompt_tokens=prompt_tokens * len(completions),
                      cached_prompt_tokens=cached or 0, estimated=estimated)


def rejected_usage(data: Any, prompt: Prompt) -> Usage:
    """What an answer ttc rejects already cost: the server's usage, else an estimate."""
    prompt_tokens, completion_total, cached = read_usage(data)
    choices = data.get("choices") if isinstance(data, dict) else None
    choices = [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
    estimated = prompt_tokens is None or completion_total is None
    if prompt_tokens is None:
        prompt_tokens, _ = prompt_length(prompt)
    if completion_total is None:
        texts = [c.get("text") if "text" in c else (c.get("message") or {}).get("content") for c in choices]
        completion_total = sum(estimate_tokens(t) for t in texts if isinstance(t, str))
    return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens * max(1, len(choices)),
                 cached_prompt_tokens=cached or 0, completion_tokens=completion_total, generator_calls=1,
                 estimated=estimated)


def stream_usage(reported: Any, received: Sequence[Delta], prompt: Prompt) -> Usage:
    """A finished stream's usage: the server's last usage chunk (`reported`), else counted from
    the deltas' token ids (or estimated from their text)."""
    prompt_tokens, completion_tokens, cached = read_usage({"usage": reported})
    estimated = False
    if prompt_tokens is None:
        prompt_tokens, estimated = prompt_length(prompt)
    if completion_tokens is None:
        completion_tokens = 0
        for d in received:
            if d.token_ids:
                completion_tokens += len(d.token_ids)
            elif d.text:
                completion_tokens += estimate_tokens(d.text)
                estimated = True
    return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens,
                 cached_prompt_tokens=cached or 0, completion_tokens=completion_tokens,
                 generator_calls=1, estimated=estimated)
