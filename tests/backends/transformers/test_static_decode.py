"""The static-cache decode path (`ttc.backends.transformers.static_decode`) against the dynamic-cache path, on CPU.

On CUDA the same steps are replayed as CUDA graphs (the cuda case runs only where a GPU is, e.g.
with benchmarks/gpu.py's machine); on CPU they run eagerly, which checks the cache copies, the
bucket moves and the attention mask. A tiny random
Qwen2 with grouped-query attention, float32: greedy tokens must be identical and logprobs equal
within float32 rounding.
"""

import asyncio

import pytest
import torch

from tiny_models import TinyTokenizer, tiny_gqa_model
from ttc.types import SamplingParams


@pytest.fixture(scope="module")
def model():
    return tiny_gqa_model()


def _results(backend, requests):
    async def main():
        return await asyncio.gather(*(backend.generate(p, params) for p, params in requests))

    try:
        return asyncio.run(main())
    finally:
        backend.close()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU"))])
def test_static_cache_decode_equals_dynamic(model, device):
    import copy

    from ttc.backends.transformers import Transformers

    if device == "cuda":  # the same steps replayed as CUDA graphs
        model = copy.deepcopy(model).to(device)

    # prompts of different lengths (left padding), n > 1 (KV rows copied per candidate), and
    # different max_tokens: rows finish at different steps, so the batch shrinks into smaller buckets
    requests = [([5, 6, 7, 8, 9, 10, 11], SamplingParams(n=3, temperature=0, max_tokens=20, logprobs=True)),
                ([40, 41], SamplingParams(n=2, temperature=0, max_tokens=5, logprobs=True)),
                ([90, 91, 92, 93], SamplingParams(n=1, temperature=0, max_tokens=12, logprobs=True)),
                ([7] * 11, SamplingParams(n=2, temperature=0, max_tokens=3, logprobs=True))]
    dynamic = Transformers.from_model(model, TinyTokenizer(), decode="dynamic", batch_window=0.2)
    static = Transformers.from_model(model, TinyTokenizer(), decode="static", batch_window=0.2)
    assert dynamic.decode_mode == "dynamic"
    assert static.decode_mode == ("static+cuda-graphs" if device == "cuda" else "static")
    want, got = _results(dynamic, requests), _results(static, requests)
    assert static.stats.batches == 1 and static._static.length_step == 256
    assert static._static.graph_error is None and static._static.captures == (2 if device == "cuda" else 0)
    # 8 rows start in the bucket of 8; 6 live after 3 tokens (stay), 4 after 5 tokens -> bucket of 4
    assert sorted(static._static._runners) == [(4, 256), (8, 256)]
    for a, b in zip(want, got, strict=False):
        for ca, cb in zip(a.completions, b.completions, strict=False):
            assert ca.token_ids == cb.token_ids
            assert len(cb.token_ids) > 0
            assert torch.allclose(torch.tensor(ca.logprobs), torch.tensor(cb.logprobs), atol=1e-4)


def test_gqa_decode_attention_equals_repeated_heads():
    from transformers.integrations.sdpa_attention import repeat_kv

    from ttc.backends.transformers.static_decode import gqa_decode_attention

    torch.manual_seed(1)
    module = type("Attn", (), {"num_key_value_groups": 3, "is_causal": True})()
    query, key, value = torch.randn(2, 6, 1, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)
    mask = torch.rand(2, 1, 1, 10) > 0.3
    mask[:, :, :, 0] = True
    out, _ = gqa_decode_attention(module, query, key, value, mask, scaling=0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(query, repeat_kv(key, 3), repeat_kv(value, 3),
                                                           attn_mask=mask, scale=0.5).transpose(1, 2)
    assert out.shape == (2, 1, 6, 8)
    assert torch.allclose(out, ref, atol=1e-6)


def test_decode_mode_is_checked(model):
    from ttc.backends.transformers import Transformers
    from ttc.errors import InvalidInput

    with pytest.raises(InvalidInput):
        Transformers.from_model(model, TinyTokenizer(), decode="graphs")
    assert Transformers.from_model(model, TinyTokenizer()).decode_mode == "dynamic"  # CPU default unchanged
