"""Prefill from the prefix cache, and the KV that goes back into it: the glue between the radix
tree (`prefix_cache.py`) and a batch.

A batch's distinct prompts are run from their longest cached prefixes in one forward pass (rows
[cached prefix, left-padded | new tokens, left-padded] under one attention mask); afterwards each
prompt's KV, and later each finished candidate's, is offered to the cache, which copies what it
does not hold yet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ttc.backends.transformers.prefix_cache import PrefixCache, past_cache, row_kv
from ttc.backends.transformers.records import Seq

#: forward(input_ids, attention_mask, position_ids, cache, past_length) -> last position's logits
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, int], torch.Tensor]


def prefill(model: Any, forward: Forward, prefix_cache: PrefixCache | None, distinct: list[tuple[int, ...]],
            pad_id: int, device: torch.device) -> tuple[torch.Tensor, Any, torch.Tensor, int, list[int]]:
    """Run the distinct prompts, each from its longest prefix held by the prefix cache.

    Rows are [cached prefix, left-padded | new tokens, left-padded] with an attention mask
    over both, so prompts with different cached lengths share one forward pass. Returns the
    last position's logits, the cache, its mask, its width and each prompt's cached length.
    """
    from transformers import DynamicCache

    found = [prefix_cache.match(p[:-1]) if prefix_cache is not None else (0, None)
             for p in distinct]  # at least the last token is computed, for its logits
    lengths = [m for m, _ in found]
    suffixes = [p[m:] for p, m in zip(distinct, lengths, strict=False)]
    width = max(len(s) for s in suffixes)
    input_ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for row, ids in enumerate(suffixes):  # left padding: every prompt ends at the last column
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    if any(lengths):
        cache, past_mask = past_cache(model, [kv for _, kv in found], lengths)
        mask = torch.cat([past_mask, mask], dim=-1)
    else:
        cache = DynamicCache(config=model.config)
    past = mask.shape[1] - width
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    logits = forward(input_ids, mask, positions, cache, past)
    if prefix_cache is not None:
        for row, ids in enumerate(distinct):
            columns = mask[row].nonzero().squeeze(-1)
            prefix_cache.insert(ids, lambda a, b, row=row, columns=columns: row_kv(cache, row, columns[a:b]))
    return logits, cache, mask, mask.shape[1], lengths


def keep_kv(prefix_cache: PrefixCache, cache: Any, row: int, columns: torch.Tensor, seq: Seq) -> None:
    """Store a finished candidate's KV (prompt + its tokens but the last, which was never fed),
    held in `cache`'s `row` at `columns` (dynamic or static cache)."""
    ids = seq.request.prompt + tuple(seq.tokens[:-1])
    if len(columns) == len(ids):
        prefix_cache.insert(ids, lambda a, b, row=row, columns=columns: row_kv(cache, row, columns[a:b]))
