"""Fixed-shape decode steps for the Transformers backend: a static KV cache, replayed as CUDA graphs.

Why: at 0.5B-1.5B parameters one decode step launches several hundred small kernels from Python,
and launching them takes far longer than reading the weights (plain `model.generate` runs about
60x over the memory-bandwidth floor on an H100/H200). With a batch padded to a fixed bucket
(1, 2, 4, ... rows) and a cache of fixed length, every step has the same shapes and the same
addresses, so one step is captured once per (bucket, length) as a CUDA graph and replayed with a
single launch. This is transformers' `StaticCache` (which exists for `torch.compile`) driven by
hand with `torch.cuda.CUDAGraph` instead of `torch.compile`: capturing takes a fraction of a
second where compiling takes minutes, which matters on a GPU lent for minutes.

How a batch runs: the prompts are prefilled as before (dynamic cache, each distinct prompt once),
their KV rows are copied into the bucket's static cache (one copy per candidate), and decoding
writes one column per step. A finished sequence's row keeps computing (its output is ignored)
until at most half of the bucket is alive; then the live rows move to the next smaller bucket.
The 4D attention mask is ours (passed to the model as its prepared mask mapping), so no mask is
built from a 2D mask inside the step.

Deliberate limits:
- Prefix reuse happens before this path, not inside it: a batch's prompts are prefilled from the
  prefix cache's longest cached prefixes (`prefill.prefill`, the same as on the dynamic
  path), and the result, holes of left padding included, is copied into the static rows; a
  finished candidate's KV is copied back out (`StaticSession.row`). Rows of one batch never share
  KV inside the static cache (each candidate has its own copy of its prompt): that would need
  paged blocks, which a captured graph of a stock transformers model does not express.
- A batch needing more than `max_length` (4096) columns decodes on the dynamic cache: a static
  cache is allocated whole, for every row of the bucket.
- Only models whose every layer is full attention (no sliding window, no recurrent state) and
  whose forward accepts a prepared mask mapping (transformers >= 5) take this path; others keep
  the dynamic cache.
- For grouped-query attention at one query token, the query heads of a key/value head are fed to
  SDPA as its query positions (`gqa_decode_attention`), instead of transformers' SDPA path, which
  copies every key/value head once per query head whenever a mask is given.
"""

from __future__ import annotations

import collections
import warnings
from typing import Any

import torch

_ATTENTION_NAME = "ttc_gqa_decode"


def gqa_decode_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         **kwargs: Any) -> tuple[torch.Tensor, None]:
    """SDPA for one query token without repeating key/value heads; transformers' SDPA otherwise.

    The G query heads that share a key/value head become G query positions of that head: the
    same dot products and softmax, read from one copy of the keys and values.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    batch, heads, q_len, dim = query.shape
    if q_len != 1 or groups == 1 or key.shape[1] * groups != heads:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    q = query.reshape(batch, key.shape[1], groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTENTION_NAME, gqa_decode_attention)


def unsupported_reason(model: Any) -> str | None:
    """Why `model` cannot decode on a static cache here, or None when it can."""
    try:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer
    except ImportError as exc:
        return f"this transformers has no StaticCache ({exc})"
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    try:
        cache = StaticCache(config=config, max_cache_len=8)
    except Exception as exc:  # noqa: BLE001 - any failure means: not for this model
        return f"StaticCache does not build for this model ({type(exc).__name__}: {exc})"
    if not all(type(layer) is StaticLayer for layer in cache.layers):
        return "the model has layers other than full attention (sliding window, recurrent, ...)"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return f"attention implementation {getattr(config, '_attn_implementation', None)!r} is not sdpa or eager"
    return None


def _bucket(rows: int, largest: int) -> int:
    size = 1
    while size < rows:
        size *= 2
    return min(size, max(largest, rows))


class _Runner:
    """One (bucket, length): a static cache, the step's input buffers, and its graph once captured."""

    def __init__(self, model: Any, config: Any, batch: int, length: int, graph: bool, attention: str | None):
        from transformers import StaticCache

        self.model, self.batch, self.length, self.attention = model, batch, length, attention
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        self.cache = StaticCache(config=config, max_cache_len=length)
        heads = (
            config.num_key_value_heads if getattr(config, "num_key_value_heads", None) else config.num_attention_heads
        )
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache.early_initialization(batch, heads, head_dim, dtype, device)
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.mask = torch.zeros((batch, 1, 1, length), dtype=torch.bool, device=device)
        self.mask[:, 0, 0, 0] = True
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        if graph:
            self._capture()

    def _forward(self) -> torch.Tensor:
        config = self.model.config
        saved = config._attn_implementation
        if self.attention is not None:
            config._attn_implementation = self.attention
        try:
            out = self.model(input_ids=self.ids, attention_mask={"full_attention": self.mask},
                             position_ids=self.positions, past_key_values=self.cache, use_cache=True,
                             logits_to_keep=1)
        finally:
            if self.attention is not None:
                config._attn_implementation = saved
        return out.logits[:, -1, :].float()

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: cuBLAS handles, lazy inits (the writes land in column 0, 1)
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.set_length(0)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._forward()

    def set_length(self, past: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(past)

    def step(self) -> torch.Tensor:
        if self.graph is None:
            return self._forward()
        self.graph.replay()
        return self.logits


class StaticDecoder:
    """Keeps the runners of recent (bucket, length) pairs; `start` opens a batch's decode session."""

    def __init__(self, model: Any, max_batch_size: int, graphs: bool, length_step: int = 256, keep: int = 6,
                 max_length: int = 4096):
        self.model = model
        config = model.config
        self.config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        self.max_batch_size = max_batch_size
        self.graphs = graphs
        self.length_step = length_step
        self.keep = keep
        self.max_length = max_length  # longer batches decode on the dynamic cache (a static one is allocated whole)
        self._runners: collections.OrderedDict[tuple[int, int], _Runner] = collections.OrderedDict()
        self.attention: str | None = None
        if getattr(self.config, "_attn_implementation", None) == "sdpa":
            _register_attention()
            self.attention = _ATTENTION_NAME
        self.captures = 0
        self.graph_error: str | None = None

    def runner(self, batch: int, length: int) -> _Runner:
        key = (batch, length)
        runner = self._runners.pop(key, None)
        if runner is None:
            while len(self._runners) >= self.keep:  # least recently used first
                self._runners.popitem(last=False)
            try:
                runner = _Runner(self.model, self.config, batch, length, self.graphs, self.attention)
                self.captures += int(self.graphs)
            except Exception as exc:  # noqa: BLE001 - a capture that fails leaves the eager static path
                if not self.graphs:
                    raise
                self.graphs = False
                self.graph_error = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"CUDA graph capture failed, decoding without graphs: {self.graph_error}", stacklevel=2)
                runner = _Runner(self.model, self.config, batch, length, False, self.attention)
        self._runners[key] = runner
        return runner

    def fits(self, columns: int) -> bool:
        return columns <= self.max_length

    def start(self, prefill_cache: Any, rows: torch.Tensor, mask: torch.Tensor, width: int,
              max_new: int) -> StaticSession:
        """Copy the prefilled KV of `rows` (one per candidate) into a bucket; `mask` is the (distinct,
        width) 0/1 mask."""
        count = int(rows.shape[0])
        length = -(-(width + max_new) // self.length_step) * self.length_step
        runner = self.runner(_bucket(count, self.max_batch_size), length)
        for target, source in zip(runner.cache.layers, prefill_cache.layers, strict=False):
            target.keys[:count, :, :width].copy_(source.keys.index_select(0, rows))
            target.values[:count, :, :width].copy_(source.values.index_select(0, rows))
        runner.mask.zero_()
        runner.mask[:, 0, 0, 0] = True  # rows beyond `count` attend to something (no NaN)
        runner.mask[:count, 0, 0, :width] = mask.index_select(0, rows).bool()
        runner.set_length(width)
        return StaticSession(self, runner, count, width)


class StaticSession:
    """One batch's decode on a runner: `keep` drops finished rows, `step` decodes one token for the live ones."""

    def __init__(self, decoder: StaticDecoder, runner: _Runner, count: int, past: int):
        self.decoder, self.runner, self.past = decoder, runner, past
        self.slots = torch.arange(count, device=runner.ids.device)

    def keep(self, index: torch.Tensor) -> None:
        self.slots = self.slots[index]
        live = int(self.slots.shape[0])
        if live and live * 2 <= self.runner.batch:
            self._move(_bucket(live, self.decoder.max_batch_size))

    def _move(self, batch: int) -> None:
        old = self.runner
        new = self.decoder.runner(batch, old.length)
        live, past = int(self.slots.shape[0]), self.past
        for target, source in zip(new.cache.layers, old.cache.layers, strict=False):
            target.keys[:live, :, :past].copy_(source.keys[:, :, :past].index_select(0, self.slots))
            target.values[:live, :, :past].copy_(source.values[:, :, :past].index_select(0, self.slots))
        new.mask.zero_()
        new.mask[:, 0, 0, 0] = True
        new.mask[:live, :, :, :past] = old.mask[:, :, :, :past].index_select(0, self.slots)
        new.set_length(past)
        self.runner = new
        self.slots = torch.arange(live, device=new.ids.device)

    def row(self, j: int) -> tuple[Any, int, torch.Tensor]:
        """(cache, row, columns) where live row `j`'s KV is: what the prefix cache copies out."""
        slot = int(self.slots[j])
        return self.runner.cache, slot, self.runner.mask[slot, 0, 0, :self.past].nonzero().squeeze(-1)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (live rows, vocab) after feeding `tokens` at `positions` (live rows, 1)."""
        runner = self.runner
        if self.past >= runner.length:
            raise RuntimeError(f"static cache of {runner.length} columns is full")
        runner.ids.index_copy_(0, self.slots, tokens.view(-1, 1))
        runner.positions.index_copy_(0, self.slots, positions.view(-1, 1))
        runner.mask[:, 0, 0, self.past] = True
        logits = runner.step()
        self.past += 1
        return logits.index_select(0, self.slots)
