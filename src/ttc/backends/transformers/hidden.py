"""Hidden states for probes: one plain forward pass, run on the model thread between batches."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ttc.errors import InvalidInput


def last_layer_states(model: Any, ids: Sequence[int], positions: Sequence[int]) -> Callable[[], Any]:
    """A job computing the last layer's hidden states at `positions` of `ids`, as a float32 array of
    shape (len(positions), hidden); bad positions are refused now, not on the model thread."""
    pos = [operator.index(p) for p in positions]
    if any(not 0 <= p < len(ids) for p in pos):
        raise InvalidInput(f"positions must lie in [0, {len(ids)}), got {pos}")
    device = next(model.parameters()).device

    def run() -> Any:
        out = model(input_ids=torch.tensor([list(ids)], device=device), output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1][0, pos]
        return hidden.float().cpu().numpy()

    return run
