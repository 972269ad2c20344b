"""OpenAICompatible on real servers, with default settings: every strategy works or fails with one
error naming the missing server feature.

- `transformers serve` (no /tokenize, no logprobs, one choice whatever n, stop strings kept in the
  text): the chat template is applied by the local tokenizer found from the model name (the
  served folder), n is split into single requests, EOS is told from a stop by the kept stop string.
- vLLM: step searches see end-of-text (vLLM's `stop_reason` is null when EOS ended a choice), and
  the server's features are detected, prefix caching from `vllm:cache_config_info` on /metrics.

Every server here runs on the 2-core CPU: tiny token counts.
"""

from __future__ import annotations

import pytest

import ttc
from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS
from ttc.backends.openai_compatible import OpenAICompatible
from ttc.demo import DEMO_PROMPT
from ttc.errors import Unsupported
from ttc.steps import StepConfig

pytestmark = pytest.mark.slow

QUESTION = "What is 2 + 3?"
PARAMS = ttc.SamplingParams(temperature=0.7, max_tokens=24, logprobs=True)
STEPS = StepConfig(max_steps=2, max_step_tokens=16)
PRM = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.5)
EASY = ["What is 2 + 3?", "What is 10 - 4?", "What is 3 times 3?"]


def strategies() -> dict[str, ttc.Strategy]:
    sample = ttc.Sample(params=PARAMS)
    step = {"steps": STEPS, "params": ttc.SamplingParams(temperature=0.8)}
    return {
        "sample": sample,
        "majority": ttc.MajorityVote(n=2, sample=sample),
        "best_of_n_self_certainty": ttc.BestOfN(n=2, verifier=ttc.verifiers.LogprobConfidence("self_certainty"),
                                                sample=ttc.Sample(params=PARAMS.replace(top_logprobs=5))),
        "first_finish": ttc.FirstFinish(n=2, params=PARAMS),
        "early_exit": ttc.EarlyExit(ttc.probes.AnswerConsistency(every=8), params=PARAMS),
        "beam": ttc.BeamSearch(2, 1, PRM, **step),
        "particle": ttc.ParticleFilter(2, PRM, **step),
    }


#: strategy -> the missing server feature its error must name (None: it must work)
ON_TRANSFORMERS_SERVE = {
    "sample": None, "majority": None, "first_finish": None, "beam": None, "particle": None,
    "best_of_n_self_certainty": "self_certainty needs top-k logprobs",
    "early_exit": "EarlyExit continues and probes traces as token ids",
}


@pytest.fixture(scope="module")
def serve_llm(transformers_serve):
    url, model = transformers_serve
    llm = OpenAICompatible(url, model=model)
    yield llm
    ttc.run_sync(llm.aclose())


def test_transformers_serve_features_are_detected(serve_llm):
    f = ttc.run_sync(serve_llm.probe())
    assert (f.tokenize, f.completions, f.chat, f.token_ids, f.logprobs, f.n) == \
        (False, True, True, False, False, "ignored")
    assert f.stop_in_text is True and not f.stop_reason and f.usage is True and f.prefix_caching is None
    assert f.stream_usage is True and f.continue_final_message is False  # 422: unexpected field
    assert serve_llm.capabilities == {STREAM}
    assert serve_llm.tokenizer is not None and serve_llm.eos_token_ids  # found offline from the folder name
    assert serve_llm.describe()["features"]["n"] == "ignored"


@pytest.mark.parametrize("name", list(ON_TRANSFORMERS_SERVE))
def test_every_strategy_on_transformers_serve(name, serve_llm):
    strategy = strategies()[name]
    missing = ON_TRANSFORMERS_SERVE[name]
    if missing is not None:
        with pytest.raises(Unsupported, match=missing):
            strategy.solve(QUESTION, serve_llm, seed=1)
        return
    result = strategy.solve(QUESTION, serve_llm, seed=1)
    assert result.ok, result.error
    expected = {"sample": 1, "majority": 2, "first_finish": 2}.get(name)
    if expected is not None:
        assert len(result.candidates) == expected  # n=2 on a server that returns 1 choice: 2 requests
    assert all(c.text for c in result.candidates)
    if result.tree is not None:
        assert all(n.finish_reason in (None, *ttc.steps.FINISH_REASONS) for n in result.tree)
        for node in result.tree:  # a step that ended at the stop string keeps one delimiter
            if node.step is not None and node.children:
                assert node.step.text.count("\n\n") <= 1


def test_vllm_features_are_detected(vllm_server):
    llm = OpenAICompatible(vllm_server.url)
    try:
        f = ttc.run_sync(llm.probe())
        assert (f.tokenize, f.completions, f.chat, f.token_ids, f.logprobs, f.n, f.stop_reason) == \
            (True, True, True, True, True, "honoured", True)
        assert f.max_top_logprobs == 20 and f.prefix_caching is True  # read from vllm:cache_config_info
        assert f.stream_usage is True and f.usage is True
        assert {TOKEN_IDS, STREAM, PREFIX_CACHING} <= llm.capabilities
    finally:
        ttc.run_sync(llm.aclose())


@pytest.mark.parametrize("make", [
    lambda: ttc.ParticleFilter(2, PRM, steps=StepConfig(max_steps=6, max_step_tokens=48),
                               params=ttc.SamplingParams(temperature=0.8), prompt=DEMO_PROMPT),
    lambda: ttc.BeamSearch(2, 2, PRM, steps=StepConfig(max_steps=6, max_step_tokens=48),
                           params=ttc.SamplingParams(temperature=0.8), prompt=DEMO_PROMPT),
], ids=["particle", "beam"])
def test_step_search_on_vllm_never_continues_a_trace_that_ended_in_eos(vllm_server, make):
    """Issue 10: over OpenAICompatible a step that ended with the model's end-of-text token was
    taken for a delimiter stop and continued. The prompt asks for no \\boxed answer, so nothing
    but EOS can end a trace before max_steps."""
    llm = OpenAICompatible(vllm_server.url)
    try:
        eos = llm.eos_token_ids or frozenset({2})  # SmolLM2's <|im_end|>
        ended_in_eos = 0
        for i, question in enumerate(EASY):
            result = make().solve(question, llm, seed=i)
            assert result.ok, result.error
            for node in result.tree:
                if node.step is not None and node.step.token_ids and node.step.token_ids[-1] in eos:
                    ended_in_eos += 1
                    assert node.finish_reason == "eos" and not node.children, node
        assert ended_in_eos > 0  # the test saw the case it is about
    finally:
        ttc.run_sync(llm.aclose())


@pytest.fixture(scope="module")
def vllm_server_without_prefix_caching():
    """A second real vLLM server, started with --no-enable-prefix-caching (module-scoped: one start)."""
    from helpers import running_vllm_server

    with running_vllm_server("a vLLM server without prefix caching", args=["--no-enable-prefix-caching"]) as server:
        yield server


def test_vllm_without_prefix_caching_is_detected_and_every_strategy_works(vllm_server_without_prefix_caching):
    """The prefix-caching flag is read from /metrics (not declared for every server), with one
    warning; every strategy still runs (each continuation is prefilled again)."""
    llm = OpenAICompatible(vllm_server_without_prefix_caching.url)
    try:
        with pytest.warns(RuntimeWarning, match="prefix caching is off"):
            f = ttc.run_sync(llm.probe())
        assert f.prefix_caching is False and PREFIX_CACHING not in llm.capabilities
        assert TOKEN_IDS in llm.capabilities
        for name, strategy in strategies().items():
            result = strategy.solve(QUESTION, llm, seed=1)
            assert result.ok and result.candidates, (name, result.error)
            if name == "best_of_n_self_certainty":
                assert all(c.scores["self_certainty"] > float("-inf") for c in result.candidates)
    finally:
        ttc.run_sync(llm.aclose())


def test_step_search_on_vllm_sends_each_text_to_tokenize_once_with_unchanged_results(vllm_server):
    """Issue 16: /tokenize answers are cached by OpenAICompatible. On the real server, a backend
    whose token cache holds nothing and one with the cache give the same answers and texts for the
    same seeds, and the cached one sends each distinct text once (and nothing on a second run)."""
    from ttc.backends.token_cache import TokenCache

    questions = [*EASY, EASY[0]]  # one problem twice: its chat prompt is asked for once

    def run(llm):
        sent = []
        ask = llm._server_tokenize

        async def counting(payload):
            sent.append(payload)
            return await ask(payload)

        llm._server_tokenize = counting
        strategy = ttc.ParticleFilter(2, PRM, steps=STEPS, params=ttc.SamplingParams(temperature=0.8),
                                      prompt=DEMO_PROMPT)
        results = ttc.solve_many(strategy, questions, llm, seed=3, concurrency=1, progress=False)
        assert all(r.ok for r in results), [r.error for r in results]
        return [(r.answer, [c.text for c in r.candidates]) for r in results], len(sent)

    uncached = OpenAICompatible(vllm_server.url)
    uncached.token_cache = TokenCache(max_ids=0)
    cached = OpenAICompatible(vllm_server.url)
    want, sent_uncached = run(uncached)
    got, sent_cached = run(cached)
    again, sent_again = run(cached)
    assert got == want and again == want
    assert sent_uncached == len(questions) + 2  # every chat prompt, then "\n\n" and "" once per backend
    assert sent_cached == len(set(questions)) + 2 and sent_again == 0
