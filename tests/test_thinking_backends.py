"""The in-process backends' thinking and sampling fields without a real model: the transformers
backend on a tiny random model (marker ids, splits of real sampler output, penalties and filters,
`extra` refused) and the vLLM mapping on vLLM's own SamplingParams (issue 22, think-core)."""

import warnings

import pytest
import torch

import ttc
from tiny_models import TinyTokenizer, tiny_gqa_model
from ttc.backends.thinking_split import ShortMaxTokensWarning
from ttc.backends.transformers import Transformers
from ttc.backends.transformers.sampling import apply_penalties, top_k_min_p_filter

START, END = 250, 251  # the tiny tokenizer's marker ids


class ThinkingTokenizer(TinyTokenizer):
    """TinyTokenizer with `<think>` and `</think>` as single tokens (ids 250, 251)."""

    markers = {"<think>": START, "</think>": END}

    def encode(self, text, add_special_tokens=True):
        if text in self.markers:
            return [self.markers[text]]
        return self(text)["input_ids"]

    def get_vocab(self):
        return dict(self.markers)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f" {i}" for i in ids if not (skip_special_tokens and i in (START, END)))


@pytest.fixture(scope="module")
def tiny():
    return tiny_gqa_model()


def test_a_marker_that_is_not_one_token_is_refused_at_construction(tiny):
    with pytest.raises(ttc.InvalidInput, match="'<think>'.*not one token"):
        Transformers.from_model(tiny, type("T", (TinyTokenizer,), {"encode": lambda self, text, **kw:
                                                                    self(text)["input_ids"]})(), thinking="qwen3")
    assert Transformers.from_model(tiny, ThinkingTokenizer(), thinking="qwen3").thinking.name == "qwen3"
    assert Transformers.from_model(tiny, TinyTokenizer()).thinking is None  # nothing declared: no thinking


def test_output_after_a_prompt_that_opened_the_thinking_is_thinking(tiny):
    llm = Transformers.from_model(tiny, ThinkingTokenizer(), thinking="qwen3", prefix_cache_bytes=0)
    params = ttc.SamplingParams(max_tokens=6, temperature=0, logprobs=True)
    opened = ttc.run_sync(llm.generate([5, 6, START, 7], params)).completions[0]
    plain = ttc.run_sync(llm.generate([5, 6, START, 7, END, 8], params)).completions[0]
    for c in (opened, plain):
        assert START not in c.token_ids and END not in c.token_ids
    # the tiny random model never writes a marker itself: open -> all thinking, not closed
    assert opened.thinking is not None and not opened.thinking.closed and opened.text == ""
    assert len(opened.thinking.token_ids) == opened.reasoning_tokens == opened.num_tokens == 6
    assert len(opened.thinking.logprobs) == 6 and opened.thinking.text == llm.decode(opened.thinking.token_ids)
    assert plain.thinking is None and len(plain.token_ids) == 6  # closed in the prompt: all content
    ttc.run_sync(llm.aclose())


def test_the_sampler_applies_penalties_and_filters_and_refuses_extra(tiny):
    llm = Transformers.from_model(tiny, TinyTokenizer(), prefix_cache_bytes=0)
    base = ttc.SamplingParams(max_tokens=8, temperature=0)
    plain = ttc.run_sync(llm.generate([5, 6, 7], base)).completions[0].token_ids
    penalised = ttc.run_sync(llm.generate([5, 6, 7], base.replace(frequency_penalty=50.0))).completions[0].token_ids
    assert len(set(penalised)) == len(penalised)  # a huge frequency penalty never repeats a token
    assert penalised != plain or len(set(plain)) == len(plain)
    sampled = base.replace(temperature=1.0, top_k=1, seed=3)
    assert ttc.run_sync(llm.generate([5, 6, 7], sampled)).completions[0].token_ids == plain  # top_k=1 is greedy
    greedy_min_p = base.replace(temperature=1.0, min_p=1.0, seed=4)
    assert ttc.run_sync(llm.generate([5, 6, 7], greedy_min_p)).completions[0].token_ids == plain
    with pytest.raises(ttc.Unsupported, match="extra.*Transformers"):
        ttc.run_sync(llm.generate([5, 6, 7], base.replace(extra={"thinking_token_budget": 8})))
    ttc.run_sync(llm.aclose())


def test_penalty_and_filter_kernels_follow_vllm_definitions():
    class Seq:
        def __init__(self, params, prompt, tokens):
            self.request = type("R", (), {"params": params, "prompt": prompt})()
            self.tokens = tokens

    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    rep = Seq(ttc.SamplingParams(repetition_penalty=2.0), (0,), [1])
    assert apply_penalties(logits, [rep]).tolist() == [[1.0, -4.0, 1.0, 0.5]]
    freq = Seq(ttc.SamplingParams(frequency_penalty=0.5, presence_penalty=1.0), (0,), [2, 2])
    assert apply_penalties(logits, [freq]).tolist() == [[2.0, -2.0, -1.0, 0.5]]
    kept = top_k_min_p_filter(logits, [ttc.SamplingParams(top_k=2)])
    assert torch.isinf(kept).tolist() == [[False, True, False, True]]
    kept = top_k_min_p_filter(logits, [ttc.SamplingParams(min_p=0.3)])
    assert torch.isinf(kept).tolist() == [[False, True, False, True]]  # exp(1-2)=0.37 >= 0.3, exp(-1.5) < 0.3


def test_a_thinking_transformers_backend_warns_once_at_the_default_max_tokens(tiny):
    llm = Transformers.from_model(tiny, ThinkingTokenizer(), thinking="deepseek_r1", prefix_cache_bytes=0)
    default = ttc.SamplingParams(temperature=0)  # max_tokens: the library default, 256
    with pytest.warns(ShortMaxTokensWarning, match="Transformers.*max_tokens=256"):
        ttc.run_sync(llm.generate([5, 6], default))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortMaxTokensWarning)
        ttc.run_sync(llm.generate([5, 6], default))
    ttc.run_sync(llm.aclose())


# -- vLLM's SamplingParams ------------------------------------------------------------------------------
def test_vllm_mapping_sets_the_reasoning_fields_and_extra_by_name():
    from vllm.sampling_params import RequestOutputKind

    from ttc.backends import vllm_mapping as mapping

    params = ttc.SamplingParams(top_k=20, min_p=0.05, presence_penalty=0.5, frequency_penalty=0.25,
                                repetition_penalty=1.1, extra={"min_tokens": 3, "skip_special_tokens": False})
    v = mapping.sampling_params(params, RequestOutputKind.FINAL_ONLY, {"top_k": 5, "min_p": 0.0})
    assert (v.top_k, v.min_p, v.presence_penalty, v.frequency_penalty, v.repetition_penalty) == \
        (20, 0.05, 0.5, 0.25, 1.1)
    assert v.min_tokens == 3 and v.skip_special_tokens is False
    unset = mapping.sampling_params(ttc.SamplingParams(), RequestOutputKind.FINAL_ONLY, {"top_k": 5})
    assert unset.top_k == 5  # None: the model's generation-config default, as vLLM's server applies it
    with pytest.raises(ttc.Unsupported, match="'no_such_field'.*VLLMEngine"):
        mapping.sampling_params(ttc.SamplingParams(extra={"no_such_field": 1}), RequestOutputKind.FINAL_ONLY, {})
    with pytest.raises(ttc.InvalidInput, match="SamplingParams\\(top_k=...\\)"):
        mapping.sampling_params(ttc.SamplingParams(extra={"top_k": 3}), RequestOutputKind.FINAL_ONLY, {})
