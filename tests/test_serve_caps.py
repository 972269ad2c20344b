"""Worst cases and the caps of `ttc serve` that bound them (issue 23; review serve-4e644bc H1, L4).

Every registered strategy declares the most it can generate at once and in all
(`registry.worst_case`); these tests run each on the scripted backend with text that never ends a
step or an answer (so it runs to its limits) and check the declaration bounds what it did. The
server then refuses, with a 400 naming the parameter, any request whose worst case is over
`--max-n`, `--cap-max-tokens` or `--max-budget-tokens`.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from fake_openai import QUESTION, FakeOpenAI
from test_serve import post
from ttc.backends.scripted import Scripted
from ttc.context import Context
from ttc.serve import Limits, ServeConfig, start_in_thread
from ttc.strategies import registry
from ttc.types import Problem, SamplingParams
from ttc.verifiers import ProgrammaticPRM

MESSAGES = [{"role": "user", "content": QUESTION}]
ENDLESS = "word " * 400  # no step delimiter, no answer: every strategy runs to its limits


class Counting(Scripted):
    """Scripted, counting the sequences being generated at the same moment (the peak of the n of
    overlapping requests)."""

    def __init__(self) -> None:
        super().__init__(lambda prompt, params, i: ENDLESS, latency=0.005)
        self.now = 0
        self.peak = 0

    async def generate(self, prompt, params):
        self.now += params.n
        self.peak = max(self.peak, self.now)
        try:
            return await super().generate(prompt, params)
        finally:
            self.now -= params.n


STEP_SEARCHES = {"beam", "dvts", "astar", "particle", "particle_gibbs", "parallel_tempering"}
SMALL = {"early_exit": {"every": 8}, "beam": {"width": 2, "expansions": 3, "max_steps": 3},
         "dvts": {"max_steps": 2}, "astar": {"max_steps": 2, "max_expansions": 3}, "particle": {"max_steps": 3},
         "particle_gibbs": {"max_steps": 3}, "parallel_tempering": {"max_steps": 2, "chains": 2},
         "budget_forcing": {"thinking": "deepseek_r1", "waits": 1}}


def test_every_registered_strategy_declares_its_worst_case():
    assert set(registry.WORST_CASES) == set(registry.STRATEGIES)


@pytest.mark.parametrize("name", sorted(registry.STRATEGIES))
def test_a_strategy_never_exceeds_its_declared_worst_case(name):
    n, max_tokens = 4, 16
    options = SMALL.get(name, {})
    prm = ProgrammaticPRM(lambda problem, steps: 0.5) if name in STEP_SEARCHES else None
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, logprobs=True)
    strategy = registry.make_strategy(name, n=n, verifier=prm, params=params, **options)
    llm = Counting()

    async def run():
        try:
            await strategy.run(Problem(question=QUESTION).validate(), Context(llm))
        except Exception:  # no answer is fine: only the work done matters here
            pass

    asyncio.run(run())
    worst = registry.worst_case(name, n, max_tokens, options)
    assert llm.generated_tokens > 0
    assert llm.peak <= worst.sequences, (llm.peak, worst)
    assert llm.generated_tokens <= worst.tokens, (llm.generated_tokens, worst)


def test_the_review_beam_is_22500_sequences_at_once():
    worst = registry.worst_case("beam", 1, 44, {"width": 150, "expansions": 150, "max_steps": 2})
    assert worst.sequences == 22_500 and worst.sequences_from in ("width", "expansions")


# -- the server refuses a worst case over its caps -----------------------------------------------
@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI("vllm") as server:
        yield server


@pytest.fixture(scope="module")
def served(fake):
    with start_in_thread(ServeConfig(upstream=(fake.url,), n=4, max_tokens=64), port=0) as s:  # default Limits
        yield s


def chat(served, ttc=None, **fields):
    body = {"model": "fake", "messages": MESSAGES, **fields}
    if ttc is not None:
        body["ttc"] = ttc
    return post(served.url + "/chat/completions", body)


OVER = [
    # review H1: each of these reached the upstream past --max-n 64
    ({"strategy": "beam", "n": 1, "width": 150, "expansions": 150, "max_steps": 2}, "ttc.width", "--max-n"),
    ({"strategy": "beam", "width": 10**9}, "ttc.width", "--max-n"),  # review L4's 200 with empty content
    ({"strategy": "dvts", "subtrees": 4, "expansions": 100}, "ttc.expansions", "--max-n"),
    ({"strategy": "astar", "max_expansions": 10**6}, "ttc.max_expansions", "--max-budget-tokens"),
    ({"strategy": "particle", "n": 64, "max_steps": 10**5}, "ttc.max_steps", "--max-budget-tokens"),
    ({"strategy": "dvts", "subtrees": 100, "expansions": 4}, "ttc.subtrees", "--max-n"),
    ({"strategy": "deepconf", "top_k": 10**6}, "ttc.top_k", "--max-top-logprobs"),
    ({"strategy": "particle", "n": 64, "max_tokens": 4096}, "ttc.n", "--max-budget-tokens"),
]


@pytest.mark.parametrize(("ttc", "param", "flag"), OVER, ids=[o[1] + str(i) for i, o in enumerate(OVER)])
def test_a_worst_case_over_a_cap_is_a_400_naming_the_parameter(served, fake, ttc, param, flag):
    sent = len(fake.requests)
    status, _, data = chat(served, ttc)
    assert status == 400, data
    assert data["error"]["param"] == param and flag in data["error"]["message"], data
    assert len(fake.requests) == sent  # nothing reached the upstream


def test_a_four_by_four_beam_over_ten_steps_is_allowed_under_the_defaults(served):
    limits = Limits()
    worst = registry.worst_case("beam", 16, limits.max_tokens, {"width": 4, "expansions": 4, "max_steps": 10})
    assert worst.sequences <= limits.max_n and worst.tokens <= limits.max_budget_tokens
    status, _, data = chat(served, {"strategy": "beam", "width": 4, "expansions": 4, "max_steps": 10,
                                    "max_tokens": limits.max_tokens, "prm": "judge"}, stream=False)
    assert status != 400, data


def test_a_client_budget_bounds_the_worst_case(served):
    """A request that gives ttc.budget.tokens is bounded by it (budgets are enforced): not refused."""
    status, _, data = chat(served, {"n": 64, "max_tokens": 4096, "budget": {"tokens": 5000}})
    assert status == 200, data


@pytest.mark.parametrize(("fields", "param"), [({"n": 65}, "n"), ({"max_tokens": 5000}, "max_tokens"),
                                               ({"max_completion_tokens": 5000}, "max_completion_tokens")])
def test_passthrough_obeys_the_caps_on_n_and_max_tokens(served, fake, fields, param):
    sent = len(fake.requests)
    status, _, data = chat(served, None, **fields)
    assert status == 400 and data["error"]["param"] == param, data
    assert len(fake.requests) == sent


def test_passthrough_untouched_forwards_past_the_caps(fake):
    with start_in_thread(ServeConfig(upstream=(fake.url,), passthrough_untouched=True), port=0) as s:
        status, _, data = post(s.url + "/chat/completions", {"messages": MESSAGES, "n": 65, "max_tokens": 9})
    assert status == 200 and len(data["choices"]) == 65


def test_a_step_search_stopped_before_its_first_step_is_a_422(served):
    """Review L4: the budget stopped the beam before any step; the answer was an empty 200."""
    status, _, data = chat(served, {"strategy": "beam", "n": 4, "max_steps": 2, "budget": {"tokens": 10}},
                           max_tokens=16)
    assert status == 422 and data["error"]["type"] == "budget_exhausted", json.dumps(data)[:500]


# -- the protocol, declared once -------------------------------------------------------------------
def test_the_protocol_is_one_set_of_typed_models_with_a_json_schema():
    from ttc.serve import protocol, schema

    schemas = protocol.json_schema()
    chat = schemas["chat/completions"]["properties"]
    ttc_object = chat["ttc"]["properties"]
    assert set(ttc_object) == set(schema.TTC_FIELDS)
    assert ttc_object["n"] == {"type": "integer", "minimum": 1, "description": ttc_object["n"]["description"]}
    assert ttc_object["top_p"]["exclusiveMinimum"] == 0.0 and ttc_object["top_p"]["maximum"] == 1.0
    assert ttc_object["budget"]["properties"]["tokens"]["minimum"] == 1
    assert chat["stream_options"]["properties"]["include_usage"]["type"] == "boolean"
    assert "messages" in chat and "prompt" in schemas["completions"]["properties"]
    json.dumps(schemas)  # JSON all the way down


@pytest.mark.parametrize(("field", "value"), [("n", 0), ("temperature", 2.5), ("top_p", 0), ("seed", -1),
                                              ("max_tokens", 0), ("return_candidates", "yes")])
def test_each_declared_range_is_what_the_server_refuses(served, field, value):
    from ttc.serve import protocol

    declared = protocol.TTCObject.specs()[field]
    status, _, data = chat(served, {field: value})
    assert status == 400 and data["error"]["param"] == f"ttc.{field}", data
    assert declared.kind in (int, float, bool)
