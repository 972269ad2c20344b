"""Decode steps on transformers' `DynamicCache`: the default path on CPU, and wherever the static
one does not fit (`static_decode.py`).

`DynamicSession` has the interface of `static_decode.StaticSession` (`keep`, `row`, `step`), so
the decode loop is one loop for both caches; here finished rows leave the cache at once, and
requests that arrive meanwhile can `join` (their KV left-padded to one width with the running
rows', see `prefix_cache.concat_caches`).
"""

from __future__ import annotations

from typing import Any

import torch

from ttc.backends.transformers.prefill import Forward
from ttc.backends.transformers.prefix_cache import concat_caches


class DynamicSession:
    """One batch's decode on a DynamicCache with one row per live candidate and its 0/1 mask."""

    def __init__(self, model: Any, forward: Forward, cache: Any, mask: torch.Tensor):
        self.model, self.forward, self.cache, self.mask = model, forward, cache, mask

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows at `index` (finished candidates leave the batch)."""
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]

    def row(self, j: int) -> tuple[Any, int, torch.Tensor]:
        """(cache, row, columns) where live row `j`'s KV is: what the prefix cache copies out."""
        return self.cache, j, self.mask[j].nonzero().squeeze(-1)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (live rows, vocab) after feeding `tokens` at `positions` (live rows, 1)."""
        past = self.mask.shape[1]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=-1)
        return self.forward(tokens[:, None], self.mask, positions, self.cache, past)

    def join(self, cache: Any, mask: torch.Tensor) -> None:
        """Append the rows of another (prefilled) cache after the live ones."""
        self.cache, self.mask = concat_caches(self.model, self.cache, self.mask, cache, mask)
