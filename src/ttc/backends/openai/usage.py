"""The wire format, usage: what a request cost, from the server's `usage` object where it sent
one, else counted from token ids, else estimated (and marked so). Pure functions."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ttc.backends.base import Delta, Generation
from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.reasoning import reported_reasoning
from ttc.types import Completion, Prompt, Thinking, Usage

__all__ = ["Count", "PromptLengths", "closed_stream_usage", "estimate_tokens", "generation", "prompt_length",
           "read_usage", "received_usage", "rejected_usage", "split_by_weight", "split_completion_tokens",
           "stream_usage", "text_tokens", "thinking_count", "with_hidden_thinking"]

#: the local tokenizer's token count of a text; None where there is no local tokenizer
Count = Callable[[str], "int | None"]


def _no_count(text: str) -> None:
    return None


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


def split_by_weight(total: int, weights: Sequence[int]) -> tuple[int, ...]:
    """`total` spread over parts in proportion to `weights` (equally when they are all 0), the
    rounding given to the largest remainders, so that the parts sum to `total` exactly."""
    if not weights:
        return ()
    if not sum(weights):
        weights = [1] * len(weights)
    shares = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in shares]
    for i in sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])[: total - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


def _text_length(c: Completion) -> int:
    return len(c.text) + (len(c.thinking.text) if c.thinking is not None else 0) + 1


def split_completion_tokens(completions: Sequence[Completion], total: int | None) -> tuple[int, ...] | None:
    """The server's completion-token total spread over the completions: each completion's token
    ids when they add up to it, else in proportion to them (or to the text lengths, thinking
    included, when a completion has no ids), so that the per-candidate counts sum to exactly what
    the server counted."""
    if total is None:
        return None
    ids = [c.num_tokens for c in completions]
    if sum(ids) == total or not completions:
        return tuple(ids) if completions else ()
    return split_by_weight(total, ids if all(ids) else [_text_length(c) for c in completions])


def thinking_count(thinking: Thinking | None) -> tuple[int, bool]:
    """(thinking tokens, whether estimated) of one completion's thinking: its ids (or the hidden
    count a server reported), else estimated from its text."""
    if thinking is None:
        return 0, False
    if thinking.token_ids or thinking.hidden or not thinking.text:
        return thinking.num_tokens, False
    return estimate_tokens(thinking.text), True


def _counted(c: Completion) -> tuple[int, bool]:
    """(completion tokens, whether estimated) of a completion no usage reported."""
    content = len(c.token_ids) if c.token_ids or not c.text else estimate_tokens(c.text)
    thought, guessed = thinking_count(c.thinking)
    markers = len(c.thinking.marker_token_ids) if c.thinking is not None else 0
    return content + thought + markers, guessed or (not c.token_ids and bool(c.text))


def with_hidden_thinking(data: Any, completions: list[Completion]) -> list[Completion]:
    """Where the server reports thinking tokens but sent no thinking (OpenAI's o-series hide it),
    each completion gets `Thinking(text="", hidden_tokens=...)`: the reported count spread over the
    completions in proportion to their content tokens."""
    reported = reported_reasoning(data)
    if not reported or any(c.thinking is not None for c in completions):
        return completions
    shares = split_by_weight(reported, [len(c.token_ids) or _text_length(c) for c in completions])
    return [dataclasses.replace(c, thinking=Thinking(text="", hidden_tokens=k)) for c, k in zip(completions, shares,
                                                                                               strict=True)]


def reasoning_counts(data: Any, completions: Sequence[Completion]) -> tuple[tuple[int, ...], bool]:
    """(thinking tokens of each completion, whether estimated): the server's reported total
    (`completion_tokens_details.reasoning_tokens`) spread over them in proportion to their own
    counts, else their own counts (estimated from the thinking text where no ids came back). A
    reported 0 beside thinking counted from the sampled ids is the server's undercount (vLLM's
    `deepseek_r1` parser on a template-opened thinking): the ids' count stands."""
    own = [thinking_count(c.thinking) for c in completions]
    counts = tuple(k for k, _ in own)
    guessed = any(g for _, g in own)
    reported = reported_reasoning(data)
    if reported is None or sum(counts) == reported:
        return counts, guessed
    if reported == 0 and not guessed:
        # vLLM's deepseek_r1 parser counts only thinking whose start marker the model wrote: a
        # thinking the chat template opened is reported as 0; the sampled ids split at the markers count it
        return counts, False
    return split_by_weight(reported, counts), False


def generation(data: Any, completions: list[Completion], prompt: Prompt) -> Generation:
    """The completions with the usage the server reported; what it did not report is counted
    from token ids, else estimated (`estimated` says so)."""
    prompt_tokens, completion_total, cached = read_usage(data)
    estimated = False
    if prompt_tokens is None:
        prompt_tokens, estimated = prompt_length(prompt)
    counts = split_completion_tokens(completions, completion_total)
    if counts is None:
        counted = [_counted(c) for c in completions]
        counts = tuple(k for k, _ in counted)
        estimated = estimated or any(guessed for _, guessed in counted)
    reasoning, guessed = reasoning_counts(data, completions)
    return Generation(prompt_tokens=prompt_tokens, completions=completions, completion_tokens=counts,
                      processed_prompt_tokens=prompt_tokens * len(completions),
                      cached_prompt_tokens=cached or 0, estimated=estimated or guessed, reasoning_tokens=reasoning)


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


def text_tokens(text: str, count: Count = _no_count) -> tuple[int, bool]:
    """(tokens of `text`, whether estimated): the local tokenizer's count, else about 4
    characters per token (estimated)."""
    if not text:
        return 0, False
    counted = count(text)
    return (counted, False) if counted is not None else (estimate_tokens(text), True)


def received_tokens(received: Sequence[Delta], count: Count = _no_count) -> tuple[int, bool]:
    """(completion tokens the deltas brought, whether estimated): their token ids; a stream whose
    deltas came with text and no ids (a gateway strips them) is counted from its whole text."""
    if all(d.token_ids or not d.text for d in received):
        return sum(len(d.token_ids) for d in received), False
    return text_tokens("".join(d.text for d in received), count)


def stream_usage(reported: Any, received: Sequence[Delta], prompt: Prompt, count: Count = _no_count,
                 known_prompt: int | None = None) -> Usage:
    """A finished stream's usage: the server's last usage chunk (`reported`, with its thinking
    tokens), else counted from the deltas' token ids, else from their text (`count`: the local
    tokenizer; else estimated). `known_prompt`: the prompt's length as a finished stream of the same
    prompt reported it."""
    prompt_tokens, completion_tokens, cached = read_usage({"usage": reported})
    estimated = False
    if prompt_tokens is None:
        prompt_tokens, estimated = (known_prompt, False) if known_prompt is not None else prompt_length(prompt)
    if completion_tokens is None:
        completion_tokens, counted_estimate = received_tokens(received, count)
        estimated = estimated or counted_estimate
    # the thinking tokens the server counted (else 0: the stream's split completion counts them)
    reasoning = reported_reasoning({"usage": reported}) or 0
    return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens,
                 cached_prompt_tokens=cached or 0, completion_tokens=completion_tokens,
                 generator_calls=1, estimated=estimated, reasoning_tokens=reasoning)


def received_usage(text: str, tokens: int, known_prompt: int | None) -> Usage:
    """A running stream's usage so far when its deltas carry no token ids: `tokens` counted from
    the `text` received (provisional, never `estimated`: the finish or the close counts the whole
    text again and says whether that count is an estimate)."""
    prompt = known_prompt or 0
    return Usage(prompt_tokens=prompt, processed_prompt_tokens=prompt, completion_tokens=tokens, generator_calls=1)


def closed_stream_usage(prompt: Prompt, text: str, token_ids: Sequence[int], so_far: Usage, count: Count,
                        known_prompt: int | None) -> Usage:
    """What a stream closed before its end cost, as far as ttc can tell: the prompt as counted
    before sending, else as a finished stream of the same prompt reported it (`known_prompt`),
    else estimated; the completion as the token ids received, else the received text counted by
    the local tokenizer (`count`), else estimated. Never a silent zero: a guess sets `estimated`."""
    prompt_tokens, prompt_guessed = so_far.prompt_tokens, False
    if not prompt_tokens:
        prompt_tokens, prompt_guessed = (known_prompt, False) if known_prompt is not None else prompt_length(prompt)
    completion_tokens, completion_guessed = so_far.completion_tokens, False
    if text and not token_ids:
        completion_tokens, completion_guessed = text_tokens(text, count)
    estimated = prompt_guessed or completion_guessed
    processed = max(prompt_tokens, so_far.processed_prompt_tokens)
    return Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=processed,
                 cached_prompt_tokens=so_far.cached_prompt_tokens, completion_tokens=completion_tokens,
                 generator_calls=1, estimated=estimated)


class PromptLengths:
    """Prompt lengths the server reported, by prompt (the most recent `size` prompts): a stream
    closed before the server's usage chunk is charged what the same prompt's finished requests
    were charged (FirstFinish's cancelled streams of a chat prompt no local tokenizer can count)."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._known: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def key(prompt: Prompt) -> str | None:
        if isinstance(prompt, ChatMessages):
            return json.dumps([prompt.messages, prompt.continue_final], sort_keys=True)
        return prompt if isinstance(prompt, str) else None  # token ids are counted exactly anyway

    def record(self, prompt: Prompt, tokens: int | None) -> None:
        key = self.key(prompt)
        if key is None or tokens is None:
            return
        self._known[key] = tokens
        self._known.move_to_end(key)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def get(self, prompt: Prompt) -> int | None:
        key = self.key(prompt)
        return None if key is None else self._known.get(key)
