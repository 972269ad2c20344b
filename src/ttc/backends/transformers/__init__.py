"""The in-process Hugging Face transformers backend: a short facade over parts with one job each.

    backend.py        `Transformers`, the facade: construction, the Generator API, its counters
    loading.py        device, dtype, model and tokenizer loading (offline first)
    tokens.py         text <-> token ids behind a lock: prompts, chat templates, completions' text
    records.py        requests, jobs, per-candidate state, seeds, and posting answers across threads
    scheduler.py      the model thread: queue, batching of concurrent requests, shutdown, failures
    decoding.py       one batch from prefill to its last token, one loop for both caches
    dynamic_decode.py decode steps on transformers' DynamicCache (CPU default; requests can join)
    static_decode.py  decode steps on a static cache replayed as CUDA graphs (CUDA default)
    prefill.py        prefill from the prefix cache, and finished KV back into it (the glue)
    prefix_cache.py   the radix tree of KV pieces keyed by token ids
    sampling.py       greedy / top-p / seeded per-row draws, and logprobs
    stopping.py       EOS, stop strings and length; completions and stream deltas
    hidden.py         hidden-state passes for probes

Why a package rather than a flat `backends/` of these files: every module here serves this one
backend and most of them import each other, so they read (and are tested, in
tests/backends/transformers/) as one unit; the other backends never import them. The HF library
is still `transformers` to every absolute import (`from transformers import DynamicCache`); within
ttc this package is always imported by its full name, `ttc.backends.transformers`.

Why the own decode loop and not transformers' continuous batching (`generate_batch`): see
backend.py's docstring and docs/backends.md (measured: docs/performance.md).
"""

from ttc.backends.transformers.backend import PREFIX_CACHE_BYTES, Transformers
from ttc.backends.transformers.records import TransformersStats

__all__ = ["PREFIX_CACHE_BYTES", "Transformers", "TransformersStats"]
