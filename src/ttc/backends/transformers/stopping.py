"""When a candidate ends, and what it and its stream deltas say: EOS, stop strings, length.

vLLM's conventions: EOS first, then stop strings, then the length limit; a stop string is found
by incremental detokenisation (prefix/read offsets) and cut from the text, while EOS and the
token completing a stop string stay in `token_ids`. A stream holds back text that could still be
the start of a stop string, so its deltas add up to the text `generate` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ttc.backends.base import Delta, Generation
from ttc.backends.transformers.records import Seq
from ttc.types import Completion

#: token ids -> text, special tokens skipped (the backend's `decode`)
Decode = Callable[[Sequence[int]], str]


def finished(seq: Seq, eos_token_ids: frozenset[int], decode: Decode) -> bool:
    """Check EOS, stop strings and length for the token just appended (vLLM's order)."""
    params = seq.request.params
    token = seq.tokens[-1]
    if token in eos_token_ids:
        seq.finish_reason = "stop"
    elif (params.stop or seq.request.deltas is not None) and stop_string_hit(seq, params.stop, decode):
        seq.finish_reason = "stop"
    elif len(seq.tokens) >= seq.request.max_new:
        seq.finish_reason = "length"
    return seq.finish_reason is not None


def stop_string_hit(seq: Seq, stops: tuple[str, ...], decode: Decode) -> bool:
    """Incremental detokenisation (prefix/read offsets, as vLLM) and a search of the new text."""
    before = decode(seq.tokens[seq.prefix_offset:seq.read_offset])
    after = decode(seq.tokens[seq.prefix_offset:])
    if len(after) <= len(before) or after.endswith("\ufffd"):
        return False  # an incomplete character: wait for the next token
    new = after[len(before):]
    seq.prefix_offset, seq.read_offset = seq.read_offset, len(seq.tokens)
    old_length = len(seq.text)
    seq.text += new
    if not stops:
        return False
    best: int | None = None
    best_end = None
    for stop in stops:
        if not stop:
            continue
        at = seq.text.find(stop, max(0, old_length - len(stop) + 1))
        if at != -1 and (best_end is None or at + len(stop) < best_end):
            best, best_end = at, at + len(stop)
    if best is None:
        return False
    seq.stop_at = best
    return True


def completion(seq: Seq, decode: Decode) -> Completion:
    params = seq.request.params
    if seq.stop_at is not None:
        text = seq.text[:seq.stop_at]
    else:
        text = decode(seq.tokens)
    want_lp = bool(params.logprobs or params.top_logprobs)
    return Completion(text=text, token_ids=tuple(seq.tokens), finish_reason=seq.finish_reason or "length",
                      logprobs=tuple(seq.logprobs) if want_lp else None,
                      top_logprobs=tuple(seq.top) if params.top_logprobs else None)


def finish(seq: Seq, decode: Decode) -> None:
    """A candidate is done: stream its last delta, and answer its request once all are done."""
    request = seq.request
    done = completion(seq, decode)
    if request.deltas is not None:
        send(seq, done)
    request.results[seq.index] = done
    request.remaining -= 1
    if request.remaining == 0:
        u = request.usage(0)
        request.deliver(Generation(prompt_tokens=u.prompt_tokens, completions=list(request.results),
                                   processed_prompt_tokens=u.processed_prompt_tokens,
                                   cached_prompt_tokens=u.cached_prompt_tokens))


def send(seq: Seq, final: Completion | None = None) -> None:
    """Deliver the tokens decoded since the last delta, holding back a possible stop string's start."""
    if final is not None:
        text = final.text[seq.sent_chars:]
    else:
        hold = max((len(stop) for stop in seq.request.params.stop), default=1) - 1
        text = seq.text[seq.sent_chars:max(seq.sent_chars, len(seq.text) - hold)]
    seq.sent_chars += len(text)
    tokens = tuple(seq.tokens[seq.sent_tokens:])
    logprobs = tuple(seq.logprobs[seq.sent_tokens:]) if seq.logprobs else None
    seq.sent_tokens = len(seq.tokens)
    seq.request.send(Delta(text=text, token_ids=tokens, logprobs=logprobs,
                           finish_reason=None if final is None else final.finish_reason,
                           usage=seq.request.usage(seq.sent_tokens)))
