"""ParticleGibbs and ParallelTempering on the real SmolLM2-135M-Instruct (transformers backend): the
sweeps run on the model, the reference particle of each later sweep is a real trace kept to the end,
continuations extend the reference's prefix token by token, and the usage adds up. Tiny budgets."""

from __future__ import annotations

import re

import pytest

import ttc
from ttc.demo import DEMO_PROMPT, demo_problems
from ttc.steps import StepConfig
from ttc.verifiers import ProgrammaticPRM

pytestmark = pytest.mark.slow
STEPS = StepConfig(max_steps=2, max_step_tokens=16)
PARAMS = ttc.SamplingParams(temperature=0.8)
#: a programmatic PRM (no judge calls, so the test stays small): steps with a number score higher
PRM = ProgrammaticPRM(lambda problem, steps: 0.8 if re.search(r"\d", steps[-1]) else 0.3, name="has_number")


@pytest.fixture(scope="module")
def llm():
    from ttc.backends.transformers import Transformers

    backend = Transformers(device="cpu", num_threads=1)
    yield backend
    backend.close()


def check_tree(result: ttc.Result) -> None:
    assert result.ok, result.error
    assert result.tree.usage().counts() == result.usage.counts()
    for node in result.tree:  # continuations were sent as the prompt's ids + the steps' ids
        if node.parent not in (None, 0) and node.step is not None:
            parent = result.tree[node.parent]
            assert node.trace.token_ids[: len(parent.trace.token_ids)] == parent.trace.token_ids


def test_particle_gibbs_on_the_real_model(llm):
    budget = ttc.Budget(tokens=3000)
    pg = ttc.ParticleGibbs(particles=3, iterations=2, prm=PRM, steps=STEPS, params=PARAMS, prompt=DEMO_PROMPT)
    result = pg.solve(demo_problems(1)[0], llm, budget=budget, seed=0)
    check_tree(result)
    assert result.usage.total_tokens <= budget.tokens
    d = result.details
    assert d["iterations"] == 2 and len(d["references"]) == 1
    ref = result.tree[d["references"][0]]
    assert ref.finished and ref.trace.token_ids
    later = [h for h in d.history if h.iteration == 1]
    assert later and all(h.nodes[h.reference] in {n.id for n in result.tree.path(ref)} for h in later)
    assert ref.trace.text in [c.trace.text for c in result.candidates]  # kept to the end
    assert result.usage.verifier_calls == result.tree.generated  # every new step scored once


def test_parallel_tempering_on_the_real_model(llm):
    budget = ttc.Budget(tokens=4000)
    pt = ttc.ParallelTempering(particles=2, iterations=2, temperatures=(1.0, 4.0), prm=PRM, steps=STEPS,
                               params=PARAMS, prompt=DEMO_PROMPT)
    result = pt.solve(demo_problems(1)[0], llm, budget=budget, seed=0)
    check_tree(result)
    assert result.usage.total_tokens <= budget.tokens
    d = result.details
    assert {h.chain for h in d.history} == {0, 1}
    assert len(d["swaps"]) == 1 and 0.0 < d["swaps"][0]["acceptance"] <= 1.0
    assert len(d["chain_references"][0]) == len(d["chain_references"][1]) == 1
