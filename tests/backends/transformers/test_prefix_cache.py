"""The prefix cache (`ttc.backends.transformers.prefix_cache`) and its use by the transformers backend.

The radix tree is checked with KV tensors whose values name their token position, so a wrong
split or concatenation shows as a wrong number. The backend is checked on a tiny random Qwen2
(float32, grouped-query attention): with the cache, a chain of steps and a batch of prompts with
different cached lengths give the same greedy tokens and the same logprobs (within float32
rounding) as without it, while prefilling fewer tokens. The slow test does the same on SmolLM2.
"""

import asyncio

import pytest
import torch

from tiny_models import TinyTokenizer, tiny_gqa_model
from ttc.backends.base import PREFIX_CACHING
from ttc.backends.transformers.prefix_cache import PrefixCache
from ttc.types import SamplingParams


# -- the radix tree ------------------------------------------------------------------------------
def _kv_of(ids, layers=2):
    """kv_of for `insert`: keys hold the token id, values the position (1 head, head_dim 1)."""
    def kv_of(a, b):
        keys = torch.tensor(ids[a:b], dtype=torch.float32).view(1, -1, 1)
        values = torch.arange(a, b, dtype=torch.float32).view(1, -1, 1)
        return [(keys + layer, values) for layer in range(layers)]
    return kv_of


def _check(kv, ids):
    for layer, (k, v) in enumerate(kv):
        assert k.view(-1).tolist() == [t + layer for t in ids]
        assert v.view(-1).tolist() == list(range(len(ids)))


def test_longest_prefix_split_and_shared_storage():
    cache = PrefixCache(1 << 20)
    assert cache.match([1, 2, 3]) == (0, None)
    a = [1, 2, 3, 4, 5]
    cache.insert(a, _kv_of(a))
    m, kv = cache.match([1, 2, 3, 9])
    assert m == 3
    _check(kv, [1, 2, 3])
    b = [1, 2, 3, 7, 8, 9]  # splits the edge after 3; only 7, 8, 9 are new
    calls = []

    def spy(x, y):
        calls.append((x, y))
        return _kv_of(b)(x, y)
    cache.insert(b, spy)
    assert calls == [(3, 6)]
    assert cache.tokens == 8  # 1 2 3 | 4 5 | 7 8 9: the shared head is stored once
    for ids in (a, b):
        m, kv = cache.match(ids + [100])
        assert m == len(ids)
        _check(kv, ids)
    cache.insert(a, lambda x, y: pytest.fail("nothing new to store"))
    assert cache.stats.inserted_tokens == 8


def test_eviction_takes_least_recently_used_leaves_within_the_budget():
    per_token = 2 * 2 * 4  # 2 layers x (key + value) x one float32
    cache = PrefixCache(per_token * 10)
    shared = [1, 2, 3, 4]
    x, y = shared + [5, 6, 7], shared + [8, 9]
    cache.insert(x, _kv_of(x))
    cache.insert(y, _kv_of(y))
    assert cache.nbytes == per_token * 9
    assert cache.match(x)[0] == 7  # x is now more recent than y
    z = [20, 21]
    cache.insert(z, _kv_of(z))  # 11 tokens > 10: y's own leaf (8, 9) goes, the shared head stays
    assert cache.nbytes == per_token * 9 and cache.nbytes <= cache.budget_bytes
    assert cache.match(y)[0] == 4
    assert cache.match(x)[0] == 7 and cache.match(z)[0] == 2
    big = list(range(50, 70))  # alone larger than the budget: stored, then evicted with the rest
    cache.insert(big, _kv_of(big))
    assert cache.nbytes <= cache.budget_bytes
    assert cache.match(big)[0] == 0
    assert cache.stats.evicted_tokens >= 20


def test_budget_is_checked():
    with pytest.raises(ValueError):
        PrefixCache(0)


# -- the backend ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return tiny_gqa_model()


GREEDY = SamplingParams(n=1, temperature=0, max_tokens=6, logprobs=True, top_logprobs=5)


def _steps(backend, prompt, rounds):
    """A greedy chain: each round's prompt is the previous prompt plus its completion's ids."""
    async def main():
        out, ids = [], list(prompt)
        for _ in range(rounds):
            gen = await backend.generate(ids, GREEDY)
            out.append(gen.completions[0])
            ids += list(gen.completions[0].token_ids)
        return out
    return asyncio.run(main())


def _same(a, b):
    assert a.token_ids == b.token_ids and len(a.token_ids) > 0
    assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    for ta, tb in zip(a.top_logprobs, b.top_logprobs, strict=False):
        assert ta.keys() == tb.keys()
        assert torch.allclose(torch.tensor(list(ta.values())), torch.tensor([tb[k] for k in ta]), atol=1e-4)


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_cached_steps_equal_uncached(model, decode):
    """Against the dynamic path without a cache; on the static path (CUDA's, eager on CPU) the
    cached prefixes are prefilled as on the dynamic one and finished candidates' KV is copied out
    of the static cache."""
    from ttc.backends.transformers import Transformers

    cached = Transformers.from_model(model, TinyTokenizer(), decode=decode, batch_window=0.05)
    plain = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0.05,
                                    prefix_cache_bytes=0)
    try:
        assert PREFIX_CACHING in cached.capabilities and PREFIX_CACHING not in plain.capabilities
        assert plain.prefix_cache is None
        prompt = [5, 6, 7, 8, 9, 10, 11, 12]
        want, got = _steps(plain, prompt, 4), _steps(cached, prompt, 4)
        for a, b in zip(want, got, strict=False):
            _same(a, b)
        # round k reuses the prompt and every earlier completion but its last token (never fed back)
        assert plain.stats.cached_tokens == 0
        assert cached.stats.cached_tokens == sum(len(prompt) + 6 * k - 1 for k in range(1, 4))
        assert cached.stats.prefill_tokens == len(prompt) + 3
        assert plain.stats.prefill_tokens == sum(len(prompt) + 6 * k for k in range(4))
    finally:
        cached.close()
        plain.close()


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_batch_of_prompts_with_different_cached_lengths(model, decode):
    """One prefill batch mixing: no cached prefix, a short and a long one, an exact repeat, and n > 1
    (on the static path too: the holes of left padding go into the static rows)."""
    from ttc.backends.transformers import Transformers

    base = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    warm = [(base, SamplingParams(n=2, temperature=1.0, max_tokens=7, seed=1)),
            (base[:4] + [77, 78], SamplingParams(n=1, temperature=0, max_tokens=3))]
    requests = [(base + [8, 8, 8], SamplingParams(n=2, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)),
                (base[:4] + [77, 78, 79], SamplingParams(n=1, temperature=0, max_tokens=5, logprobs=True,
                                                          top_logprobs=3)),
                (base, SamplingParams(n=1, temperature=0, max_tokens=9, logprobs=True, top_logprobs=3)),
                ([200, 201, 202], SamplingParams(n=1, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3)),
                ([3, 1, 250] + base, SamplingParams(n=3, temperature=0, max_tokens=6, logprobs=True,
                                                    top_logprobs=3))]

    def run(backend):
        async def main():
            await asyncio.gather(*(backend.generate(p, s) for p, s in warm))
            backend.reset_stats()
            return await asyncio.gather(*(backend.generate(p, s) for p, s in requests))
        try:
            return asyncio.run(main())
        finally:
            backend.close()

    cached = Transformers.from_model(model, TinyTokenizer(), decode=decode, batch_window=0.3)
    assert cached.decode_mode == decode
    plain = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0.3,
                                    prefix_cache_bytes=0)
    want, got = run(plain), run(cached)
    assert cached.stats.batches == 1  # all five in one prefill, else this test checks less than it says
    assert cached.stats.cached_tokens == 10 + 6 + 9 + 0 + 2  # base / base[:4] 77 78 / base[:-1] / - / 3 1
    assert cached.stats.prefill_tokens == sum(len(p) for p, _ in requests) - cached.stats.cached_tokens
    for a, b in zip(want, got, strict=False):
        for ca, cb in zip(a.completions, b.completions, strict=False):
            _same(ca, cb)


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_finished_candidates_of_one_batch_are_each_continued_from_their_own_kv(model, decode):
    """Round 1: three prompts in one batch, finishing at different steps (so their rows move);
    round 2: each continued by its completion. Every row's KV must be stored as that row's."""
    from ttc.backends.transformers import Transformers

    prompts = [[5, 6, 7, 8], [40, 41, 42, 43, 44, 45], [90, 91, 92]]
    lengths = [6, 3, 5]

    def run(backend):
        async def main():
            first = await asyncio.gather(*(backend.generate(p, GREEDY.replace(max_tokens=k))
                                           for p, k in zip(prompts, lengths, strict=True)))
            backend.reset_stats()
            second = await asyncio.gather(*(backend.generate(p + list(g.completions[0].token_ids), GREEDY)
                                            for p, g in zip(prompts, first, strict=True)))
            return [g.completions[0] for g in first + second]
        try:
            return asyncio.run(main())
        finally:
            backend.close()

    cached = Transformers.from_model(model, TinyTokenizer(), decode=decode, batch_window=0.3)
    plain = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0.3,
                                    prefix_cache_bytes=0)
    want, got = run(plain), run(cached)
    for a, b in zip(want, got, strict=True):
        _same(a, b)
    # round 2 found each prompt and all of its completion but the last token
    assert cached.stats.cached_tokens == sum(len(p) + k - 1 for p, k in zip(prompts, lengths, strict=True))


def test_prefill_logits_equal_a_plain_forward(model):
    """The full next-token distribution after a cached prefix, against the model run on the whole prompt."""
    from ttc.backends.transformers import Transformers

    backend = Transformers.from_model(model, TinyTokenizer(), decode="dynamic")
    try:
        first = tuple(range(20, 40))
        second, third = first + (41, 42, 43), first[:7] + (99,)
        with torch.inference_mode():
            backend._prefill([first])
            logits, _, _, _, cached = backend._prefill([second, third, (7, 8)])
            assert cached == [20, 7, 0]
            for row, ids in enumerate((second, third, (7, 8))):
                ref = model(input_ids=torch.tensor([ids])).logits[0, -1]
                assert torch.allclose(logits[row], ref, atol=1e-4)
    finally:
        backend.close()


def test_prefix_cache_budget_is_checked(model):
    from ttc.backends.transformers import Transformers
    from ttc.errors import InvalidInput

    with pytest.raises(InvalidInput):
        Transformers.from_model(model, TinyTokenizer(), prefix_cache_bytes=-1)


@pytest.mark.slow
def test_cached_steps_equal_uncached_on_smollm2():
    """A greedy chain of steps from a chat prompt on the real model, with and without the cache."""
    from ttc.backends.transformers import Transformers

    first = Transformers(device="cpu", decode="dynamic", prefix_cache_bytes=0)
    cached = Transformers.from_model(first.model, first.tokenizer, decode="dynamic")
    try:
        prompt = asyncio.run(first.chat_prompt([{"role": "user", "content": "What is 12 * 7? Think step by step."}]))
        want, got = _steps(first, prompt, 4), _steps(cached, prompt, 4)
        for a, b in zip(want, got, strict=False):
            _same(a, b)
        assert cached.stats.cached_tokens == sum(len(prompt) + 6 * k - 1 for k in range(1, 4))
    finally:
        first.close()
        cached.close()


def test_short_texts_are_tokenised_once(model):
    """A step search asks for the delimiter's ids (and "") on every problem: the tokenizer runs once."""
    from ttc.backends.transformers import Transformers

    class Counting(TinyTokenizer):
        calls = 0

        def __call__(self, text, add_special_tokens=True):
            Counting.calls += 1
            return super().__call__(text, add_special_tokens)

    backend = Transformers.from_model(model, Counting())
    try:
        for _ in range(5):
            assert asyncio.run(backend.tokenize("\n\n")) == [11, 11]
            assert asyncio.run(backend.tokenize("")) == []
        ids = asyncio.run(backend.tokenize("ab"))
        ids.append(0)  # the caller's list is its own
        assert asyncio.run(backend.tokenize("ab")) == [98, 99]
        assert Counting.calls == 3
        long = "x" * 500  # long texts (problems) are not kept
        asyncio.run(backend.tokenize(long))
        asyncio.run(backend.tokenize(long))
        assert Counting.calls == 5
    finally:
        backend.close()


def test_a_small_budget_evicts_and_stays_correct(model):
    """With room for about 10 tokens' KV, most of the tree is evicted as it grows: same results."""
    from ttc.backends.transformers import Transformers

    per_token = 2 * 2 * 2 * 16 * 4  # layers x (key, value) x kv heads x head_dim x float32
    small = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", prefix_cache_bytes=10 * per_token)
    plain = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", prefix_cache_bytes=0)
    try:
        prompt = [9, 8, 7, 6, 5, 4]
        want, got = _steps(plain, prompt, 3), _steps(small, prompt, 3)
        for a, b in zip(want, got, strict=False):
            _same(a, b)
        assert 0 < small.prefix_cache.nbytes <= 10 * per_token
        assert small.prefix_cache.stats.evicted_tokens > 0
        # the first prompt's 6 tokens stay; each longer leaf added after it overflows the budget and is
        # the least recently used leaf at once, so rounds 1 and 2 find just those 6 tokens
        assert small.stats.cached_tokens == 6 + 6
    finally:
        small.close()
        plain.close()


# -- requests joining a batch that is decoding (continuous batching) ----------------------------
def test_requests_join_a_running_batch_with_the_results_they_get_alone(model):
    """Requests sent while a long stream decodes join its batch (one of them from a cached prefix,
    one seeded with n=2) and get the tokens, and logprobs within float32 rounding, that each gets
    on a backend that runs them one batch after another."""
    from ttc.backends.transformers import Transformers

    base = [3, 1, 4, 1, 5, 9, 2, 6]
    long = SamplingParams(n=1, temperature=0, max_tokens=60, logprobs=True, top_logprobs=3)
    later = [(base + [8, 8], SamplingParams(n=1, temperature=0, max_tokens=8, logprobs=True, top_logprobs=3)),
             ([200, 201, 202, 203, 204, 205, 206, 207, 208, 209, 210, 211],
              SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=5, logprobs=True, top_logprobs=3)),
             ([7, 7], SamplingParams(n=1, temperature=0.7, top_p=0.9, max_tokens=5, seed=1, logprobs=True,
                                     top_logprobs=3))]

    def run(backend):
        async def main():
            await backend.generate(base, SamplingParams(n=1, temperature=0, max_tokens=2))  # caches `base`
            backend.reset_stats()
            deltas = backend.stream([100, 101, 102], long)
            first = await deltas.__anext__()
            others = asyncio.gather(*(backend.generate(p, s) for p, s in later))
            rest = [d async for d in deltas]
            return [first, *rest], await others
        try:
            return asyncio.run(main())
        finally:
            backend.close()

    joined = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0)
    joined.join_running = True
    apart = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0)
    apart.join_running = False
    (stream_a, want), (stream_b, got) = run(apart), run(joined)
    assert apart.stats.joined == 0 and apart.stats.batches == 2
    assert joined.stats.joined == 4 and joined.stats.batches == 1  # all three joined the stream's batch
    assert joined.stats.cached_tokens == apart.stats.cached_tokens == len(base)
    assert [t for d in stream_a for t in d.token_ids] == [t for d in stream_b for t in d.token_ids]
    assert len([t for d in stream_b for t in d.token_ids]) == 60
    for a, b in zip(want, got, strict=True):
        for ca, cb in zip(a.completions, b.completions, strict=True):
            _same(ca, cb)
