"""A radix tree of KV-cache pieces keyed by token ids, bounded by bytes with LRU eviction.

Why: a step search sends the prompt plus the steps so far at every step, so without reuse the
transformers backend re-prefills an ever longer prefix. This follows the idea of SGLang's
RadixAttention (Zheng et al., 2024, "SGLang: Efficient Execution of Structured Language Model
Programs") and vLLM's automatic prefix caching: every edge of the tree holds a run of token ids
and the per-layer keys/values computed for exactly those positions, so a prompt finds the KV of
its longest cached prefix by walking the tree, and children of one node share their parent's KV.

Deliberate deviations from SGLang: the tree stores copies (no paged KV pool, since the dynamic
cache is contiguous per batch), eviction takes the least recently used *leaf* (a node's KV is
kept as long as a descendant's is), and there is no reference counting: `match` returns copies,
so evicting a node never invalidates a batch in flight. The cache is used by one thread (the
backend's worker), but a lock keeps `match`/`insert`/`clear` safe from any thread.

The KV of a position depends only on the tokens up to it (causal attention, absolute positions
counted from the prompt's first token), so a cached prefix is exact up to floating-point
rounding of the batch it was computed in.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ttc.errors import check_positive

__all__ = ["PrefixCache", "PrefixCacheStats"]

#: per-layer (keys, values), each of shape (kv_heads, tokens, head_dim)
KV = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class PrefixCacheStats:
    """Counters since the cache was made: lookups, tokens served, tokens stored and evicted."""

    lookups: int = 0
    hits: int = 0
    matched_tokens: int = 0
    inserted_tokens: int = 0
    evicted_tokens: int = 0


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: KV
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    last_used: int = 0
    nbytes: int = 0


def _kv_bytes(kv: KV) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Longest-prefix lookup of stored KV by token ids, within `budget_bytes` (LRU leaves go first)."""

    def __init__(self, budget_bytes: int):
        check_positive("budget_bytes", budget_bytes)
        self.budget_bytes = budget_bytes
        self.nbytes = 0
        self.stats = PrefixCacheStats()
        self._root = _Node((), [], None)
        self._clock = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        """Token positions held (each position once, however many prompts share it)."""
        with self._lock:
            return sum(len(n.tokens) for n in self._nodes())

    def _nodes(self):
        stack = [self._root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if node is not self._root:
                yield node

    def match(self, ids: Sequence[int]) -> tuple[int, KV | None]:
        """(m, kv): the KV of the first m ids of `ids` (the longest cached prefix), or (0, None)."""
        with self._lock:
            self.stats.lookups += 1
            now = next(self._clock)
            pieces: list[KV] = []
            node, at = self._root, 0
            while at < len(ids):
                child = node.children.get(ids[at])
                if child is None:
                    break
                c = _common(child.tokens, ids[at:])
                child.last_used = now
                if c == len(child.tokens):
                    pieces.append(child.kv)
                else:
                    pieces.append([(k[:, :c], v[:, :c]) for k, v in child.kv])
                at += c
                if c < len(child.tokens):
                    break
                node = child
            if not at:
                return 0, None
            for n in self._path(node):
                n.last_used = now
            self.stats.hits += 1
            self.stats.matched_tokens += at
            layers = len(pieces[0])
            kv = [(torch.cat([p[i][0] for p in pieces], dim=1), torch.cat([p[i][1] for p in pieces], dim=1))
                  for i in range(layers)]
            return at, kv

    def _path(self, node: _Node):
        while node is not None and node is not self._root:
            yield node
            node = node.parent

    def insert(self, ids: Sequence[int], kv_of: Callable[[int, int], KV]) -> None:
        """Store the KV of `ids`; `kv_of(a, b)` gives it for ids[a:b] and is called only for what is new.

        Then evicts least recently used leaves until the budget holds (possibly what was just
        stored, when it alone exceeds the budget).
        """
        ids = tuple(ids)
        with self._lock:
            now = next(self._clock)
            node, at = self._root, 0
            while at < len(ids):
                child = node.children.get(ids[at])
                if child is None:
                    kv = [(k.contiguous().clone(), v.contiguous().clone()) for k, v in kv_of(at, len(ids))]
                    leaf = _Node(ids[at:], kv, node, last_used=now, nbytes=_kv_bytes(kv))
                    node.children[ids[at]] = leaf
                    self.nbytes += leaf.nbytes
                    self.stats.inserted_tokens += len(leaf.tokens)
                    at = len(ids)
                    node = leaf
                    break
                c = _common(child.tokens, ids[at:])
                if c < len(child.tokens):
                    self._split(child, c)
                child.last_used = now
                node, at = child, at + c
            for n in self._path(node):
                n.last_used = now
            self._evict()

    def _split(self, node: _Node, c: int) -> None:
        """Cut `node`'s edge after c tokens: node keeps the head, a new child the tail (same bytes)."""
        tail = _Node(node.tokens[c:], [(k[:, c:].clone(), v[:, c:].clone()) for k, v in node.kv], node,
                     children=node.children, last_used=node.last_used)
        for grandchild in tail.children.values():
            grandchild.parent = tail
        tail.nbytes = _kv_bytes(tail.kv)
        node.kv = [(k[:, :c].clone(), v[:, :c].clone()) for k, v in node.kv]
        node.tokens = node.tokens[:c]
        node.children = {tail.tokens[0]: tail}
        self.nbytes += tail.nbytes + _kv_bytes(node.kv) - node.nbytes
        node.nbytes = _kv_bytes(node.kv)

    def _evict(self) -> None:
        while self.nbytes > self.budget_bytes:
            leaves = [n for n in self._nodes() if not n.children]
            if not leaves:
                break
            victim = min(leaves, key=lambda n: n.last_used)
            del victim.parent.children[victim.tokens[0]]
            self.nbytes -= victim.nbytes
            self.stats.evicted_tokens += len(victim.tokens)

    def clear(self) -> None:
        with self._lock:
            self._root = _Node((), [], None)
            self.nbytes = 0


# -- helpers for a batch on a transformers DynamicCache -------------------------------------------
def supports(model) -> str | None:
    """None when `model`'s dynamic cache is plain full attention on every layer, else why not.

    Sliding-window or linear-attention layers keep only part of the past, so their KV cannot be
    cut and reassembled by token position.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception as exc:  # noqa: BLE001 - any failure means: not supported
        return f"no dynamic cache for this config ({type(exc).__name__}: {exc})"
    kinds = {type(layer) for layer in getattr(cache, "layers", [])}
    if kinds - {DynamicLayer}:
        return f"cache layers {sorted(k.__name__ for k in kinds)} are not all full attention"
    return None


def past_cache(model, kvs: list[KV | None], lengths: list[int]):
    """A DynamicCache holding each row's cached prefix, left-padded to the longest, and its mask.

    Returns (cache, mask) with mask of shape (rows, longest): 1 on real positions, 0 on padding.
    """
    from transformers import DynamicCache

    rows, width = len(kvs), max(lengths)
    some = next(kv for kv in kvs if kv is not None)
    device = some[0][0].device
    mask = torch.zeros((rows, width), dtype=torch.long, device=device)
    cache = DynamicCache(config=model.config)
    for layer, (k0, v0) in enumerate(some):
        keys = k0.new_zeros((rows, k0.shape[0], width, k0.shape[2]))
        values = v0.new_zeros((rows, v0.shape[0], width, v0.shape[2]))
        for r, (kv, m) in enumerate(zip(kvs, lengths, strict=False)):
            if m:
                keys[r, :, width - m:] = kv[layer][0]
                values[r, :, width - m:] = kv[layer][1]
        cache.update(keys, values, layer)
    for r, m in enumerate(lengths):
        if m:
            mask[r, width - m:] = 1
    return cache, mask


def row_kv(cache, row: int, columns: torch.Tensor) -> KV:
    """Per-layer KV of one batch row at the given cache columns (a copy)."""
    return [(layer.keys[row][:, columns], layer.values[row][:, columns]) for layer in cache.layers]


def concat_caches(model, first, first_mask: torch.Tensor, second, second_mask: torch.Tensor):
    """One DynamicCache holding the rows of `first` then those of `second`, left-padded to the
    wider of the two, and its mask (0 on padding): how requests join a batch already decoding."""
    from transformers import DynamicCache

    width = max(first_mask.shape[1], second_mask.shape[1])

    def pad(t: torch.Tensor, have: int) -> torch.Tensor:  # (rows, heads, columns, dim): pad columns on the left
        return t if have == width else torch.nn.functional.pad(t, (0, 0, width - have, 0))

    a, b = first_mask.shape[1], second_mask.shape[1]
    cache = DynamicCache(config=model.config)
    for layer, (x, y) in enumerate(zip(first.layers, second.layers, strict=True)):
        cache.update(torch.cat([pad(x.keys, a), pad(y.keys, b)]), torch.cat([pad(x.values, a), pad(y.values, b)]),
                     layer)
    mask = torch.cat([torch.nn.functional.pad(first_mask, (width - a, 0)),
                      torch.nn.functional.pad(second_mask, (width - b, 0))])
    return cache, mask
