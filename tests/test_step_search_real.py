"""Step searches on the real SmolLM2-135M-Instruct (transformers backend) with LLMJudge, tiny budgets."""

from __future__ import annotations

import pytest

import ttc
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.steps import StepConfig
from ttc.verifiers import LLMJudge

pytestmark = pytest.mark.slow
STEPS = StepConfig(max_steps=2, max_step_tokens=16)
PARAMS = ttc.SamplingParams(temperature=0.8)


@pytest.fixture(scope="module")
def llm():
    from ttc.backends.transformers import Transformers

    backend = Transformers(device="cpu", num_threads=1)
    yield backend
    backend.close()


def check(result: ttc.Result, budget: ttc.Budget) -> None:
    assert result.ok, result.error
    assert result.usage.total_tokens <= budget.tokens
    assert result.usage.verifier_calls <= budget.verifier_calls
    assert result.tree.usage().counts() == result.usage.counts()
    scored = [n for n in result.tree if n.score is not None]
    assert scored and all(0.0 <= n.score <= 1.0 for n in scored)
    for node in result.tree:  # continuations were sent as the prompt's ids + the steps' ids
        if node.parent not in (None, 0) and node.step is not None:
            parent = result.tree[node.parent]
            assert node.trace.token_ids[: len(parent.trace.token_ids)] == parent.trace.token_ids


@pytest.mark.parametrize("make", [
    lambda judge: ttc.BeamSearch(2, 2, judge, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT),
    lambda judge: ttc.DVTS(2, 2, judge, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT),
    lambda judge: ttc.AStar(judge, 2, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT),
    lambda judge: ttc.ParticleFilter(3, judge, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT),
], ids=["beam", "dvts", "astar", "particle"])
def test_step_search_on_the_real_model(llm, make):
    budget = ttc.Budget(tokens=700, verifier_calls=8)
    strategy = make(LLMJudge())
    results = ttc.solve_many(strategy, demo_problems(2), llm, budget=budget, seed=0, progress=False)
    for result in results:
        check(result, budget)
        assert result.usage.verifier_tokens > 0  # the judge ran on the model
        assert result.candidates


def test_stepper_on_the_real_model_keeps_one_delimiter_per_step(llm):
    import asyncio

    from ttc.context import Context
    from ttc.steps import Stepper

    problem = demo_problems(1)[0]
    ctx = Context(llm, seed=0)

    async def go():
        stepper = await Stepper(problem, ctx, StepConfig(max_steps=3, max_step_tokens=48), PARAMS, DEMO_PROMPT).start()
        return await stepper.expand(ttc.Trace(), 4)

    expansions = asyncio.run(go())
    for e in expansions:
        decoded = llm.decode(list(e.step.token_ids))
        if e.finish_reason is None and e.completion.finish_reason == "stop":  # ended at the delimiter
            assert e.step.text.endswith("\n\n") and decoded.count("\n\n") == 1
        if e.finish_reason == "eos":
            assert e.step.token_ids[-1] in llm.eos_token_ids
