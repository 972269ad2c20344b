"""SharedSamples: requests for the same prompt and settings share one pool of samples (the demo's
paired comparison), the strategies above it unchanged."""

import asyncio

import pytest

from ttc.backends import Scripted
from ttc.backends.shared_samples import SharedSamples, extra_draw_seed
from ttc.strategies import BestOfN, MajorityVote, Sample
from ttc.types import SamplingParams
from ttc.verifiers import LogprobConfidence


def numbered(prompt, params, i):  # every sample is distinct and says which request made it
    return f"seed {params.seed} sample {i}. The answer is {i}."


def run(coro):
    return asyncio.run(coro)


def test_a_request_gets_the_first_k_samples_and_only_the_missing_ones_are_drawn():
    inner = Scripted(numbered)
    shared = SharedSamples(inner)
    params = SamplingParams(max_tokens=32, seed=5)

    async def go():
        one = await shared.generate("q", params.replace(n=1))
        four = await shared.generate("q", params.replace(n=4))
        two = await shared.generate("q", params.replace(n=2))
        return one, four, two

    one, four, two = run(go())
    assert [p.n for _, p in inner.requests] == [1, 3]  # 1 drawn, then the 3 missing; none for n=2
    texts = [c.text for c in four.completions]
    assert len(set(texts)) == 4
    assert texts[0] == one.completions[0].text
    assert [c.text for c in two.completions] == texts[:2]
    assert shared.drawn == 4


def test_extra_draws_use_another_seed_so_they_do_not_repeat_the_pool():
    inner = Scripted(numbered)
    shared = SharedSamples(inner)
    run(shared.generate("q", SamplingParams(n=1, seed=5)))
    run(shared.generate("q", SamplingParams(n=3, seed=5)))
    assert inner.requests[0][1].seed == 5
    assert inner.requests[1][1].seed == extra_draw_seed(5, 1) != 5
    assert extra_draw_seed(None, 3) is None and extra_draw_seed(7, 0) == 7


def test_other_prompts_or_settings_get_their_own_pool_whatever_the_seed():
    inner = Scripted(numbered)
    shared = SharedSamples(inner)
    run(shared.generate("q", SamplingParams(n=2, seed=1)))
    run(shared.generate("q", SamplingParams(n=2, seed=2)))           # same pool: the seed is not part of the key
    run(shared.generate("other q", SamplingParams(n=2, seed=1)))     # another prompt
    run(shared.generate("q", SamplingParams(n=2, seed=1, temperature=0.1)))  # other settings
    assert len(inner.requests) == 3


def test_concurrent_requests_for_one_prompt_draw_once():
    inner = Scripted(numbered, latency=0.05)
    shared = SharedSamples(inner)

    async def go():
        return await asyncio.gather(*(shared.generate("q", SamplingParams(n=4, seed=0)) for _ in range(3)))

    results = run(go())
    assert len(inner.requests) == 1
    assert len({tuple(c.text for c in g.completions) for g in results}) == 1


def test_usage_is_what_one_request_for_k_would_count():
    inner = Scripted(numbered)
    shared = SharedSamples(inner)
    run(shared.generate("a prompt of five tokens", SamplingParams(n=4, seed=0)))
    two = run(shared.generate("a prompt of five tokens", SamplingParams(n=2, seed=0)))
    usage = two.usage()
    assert usage.prompt_tokens == 9  # Scripted: words and spaces are tokens; billed once
    assert usage.completion_tokens == sum(len(c.token_ids) for c in two.completions)
    assert usage.generator_calls == 1 and usage.processed_prompt_tokens == 2 * 9


def test_strategies_on_shared_samples_see_the_same_candidates():
    shared = SharedSamples(Scripted(numbered))
    params = SamplingParams(max_tokens=32, logprobs=True)
    sample = Sample(params=params)
    single = sample.solve("What is 3 + 4?", shared, seed=0)
    vote = MajorityVote(n=4, sample=sample).solve("What is 3 + 4?", shared, seed=0)
    best = BestOfN(n=4, verifier=LogprobConfidence(), sample=sample).solve("What is 3 + 4?", shared, seed=0)
    assert vote.candidates[0].text == single.candidates[0].text
    assert [c.text for c in best.candidates] == [c.text for c in vote.candidates]
    assert vote.usage.completion_tokens == sum(c.usage.completion_tokens for c in vote.candidates)
    assert shared.drawn == 4


@pytest.mark.slow
def test_on_the_real_model_extra_samples_are_new_samples(smollm2):
    shared = SharedSamples(smollm2)
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=3)

    async def go():
        prompt = await smollm2.chat_prompt([{"role": "user", "content": "Tell me a short story."}])
        one = await shared.generate(prompt, params.replace(n=1))
        three = await shared.generate(prompt, params.replace(n=3))
        return one, three

    one, three = run(go())
    texts = [c.text for c in three.completions]
    assert texts[0] == one.completions[0].text
    # without the extra-draw seed, the backend would derive the new samples from the same seed and
    # the second would repeat the first
    assert texts[1] != texts[0] and texts[2] != texts[0]
