"""The strategies that combine candidates (GenSelect, RSA, Archon's layers) on the Scripted backend:
what each aggregation read, tournament brackets, parsing, the prompt limit, budgets and usage."""

import asyncio
import itertools
import math
import random
from collections import Counter

import pytest

import ttc
from ttc.aggregation import AggregationPrompt, context_length, parse_choice, parse_ranking, render
from ttc.backends import Scripted
from ttc.context import Context
from ttc.strategies.genselect import GENSELECT_PROMPT, brackets, fallback_choice
from ttc.strategies.registry import make_strategy
from ttc.strategies.rsa import draw_subsets
from ttc.types import Problem, SamplingParams

PARAMS = SamplingParams(temperature=0.7, max_tokens=32)
QUESTION = "3 + 4?"


def counter_script(answers, aggregate=None):
    """Samples "Attempt i: the answer is A_i." (each text unique); an aggregation prompt (one that
    lists "Solution 1") answers `aggregate(prompt)`."""
    count = itertools.count()

    def script(prompt, params, i):
        if "Solution 1" in prompt or "[1]" in prompt or "Response:" in prompt:
            return aggregate(prompt) if aggregate else "Judgment: 1"
        j = next(count)
        return f"Attempt {j}: the answer is {answers[j % len(answers)]}."

    return script


def sample():
    return ttc.Sample(params=PARAMS)


# -- pure parts -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("items", "size", "expected"), [
    (7, 4, [[0, 1, 2, 3], [4, 5, 6]]),
    (9, 4, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
    (8, 8, [list(range(8))]),
    (5, 2, [[0, 1], [2, 3], [4]]),
    (4, 3, [[0, 1], [2, 3]]),
    (2, 2, [[0, 1]]),
])
def test_brackets_are_the_fewest_near_equal_contiguous_groups(items, size, expected):
    assert brackets(list(range(items)), size) == expected


def test_brackets_hold_every_item_once_within_the_size():
    for items, size in itertools.product(range(1, 30), range(2, 9)):
        groups = brackets(list(range(items)), size)
        assert [i for g in groups for i in g] == list(range(items))
        lengths = [len(g) for g in groups]
        assert max(lengths) <= size and max(lengths) - min(lengths) <= 1
        assert len(groups) == math.ceil(items / size)


def test_a_bracket_of_one_is_refused():
    with pytest.raises(ttc.InvalidInput, match="at least 2"):
        brackets([0, 1, 2], 1)


@pytest.mark.parametrize(("text", "count", "expected"), [
    ("Solution 1 has an error. Judgment: 2", 3, 1),
    ("**Judgment**: 3", 3, 2),
    ("Judgement: Solution 2", 2, 1),
    ("I prefer Solution 3 at first. Judgment: 1", 3, 0),
    ("Judgment: 7. Solution 2 is best.", 3, 1),  # out of range: skipped, not clamped
    ("Solution 1 is wrong; Solution 2 is right.", 2, 1),
    ("The best is [3].", 3, 2),
    (" 2. ", 3, 1),
    ("1", 3, 0),
    ("3", 3, 2),
    ("Judgment: 0", 3, None),
    ("They all look fine.", 3, None),
    ("4", 3, None),
])
def test_parse_choice(text, count, expected):
    assert parse_choice(text, count) == expected


@pytest.mark.parametrize(("text", "count", "expected"), [
    ("[2] > [1] > [3]", 3, [1, 0, 2]),
    ("[3] > [3] > [9] > [1]", 3, [2, 0, 1]),
    ("2, 3", 3, [1, 2, 0]),
    ("[2]", 3, [1, 0, 2]),
    ("no ranking", 3, None),
])
def test_parse_ranking(text, count, expected):
    assert parse_ranking(text, count) == expected


def test_fallback_choice():
    assert fallback_choice(["5", "7", "7"], "vote") == 1
    assert fallback_choice(["5", "7", "5.0"], "vote") == 0
    assert fallback_choice([None, "7", "7", "5"], "vote") == 1
    assert fallback_choice([None, None], "vote") == 0
    assert fallback_choice(["5", "7", "7"], "first") == 0


def test_subsets_are_k_distinct_members():
    rng = random.Random(1)
    for subset in draw_subsets(rng, [10, 11, 12, 13], 3, 50):
        assert len(set(subset)) == 3 and set(subset) <= {10, 11, 12, 13}
    with pytest.raises(ttc.InvalidInput):
        draw_subsets(rng, [1, 2], 3, 1)
    with pytest.raises(ttc.InvalidInput):
        draw_subsets(rng, [1, 2], 0, 1)


def test_subsets_are_uniform_over_the_k_subsets():
    """Statistical: 20,000 draws of K=2 of N=5; each of the C(5, 2) = 10 pairs is equally likely
    (chi-square, 9 d.o.f.: 27.9 is the 0.1% tail) and each member is in 40% of them; the order within a
    subset is random too (each member is first in half of the subsets it is in)."""
    rng = random.Random(2025)
    draws = draw_subsets(rng, list(range(5)), 2, 20_000)
    pairs = Counter(frozenset(d) for d in draws)
    assert len(pairs) == 10
    expected = 20_000 / 10
    chi2 = sum((c - expected) ** 2 / expected for c in pairs.values())
    assert chi2 < 27.9, pairs
    members = Counter(i for d in draws for i in d)
    assert all(abs(c / 20_000 - 0.4) < 0.015 for c in members.values()), members
    firsts = Counter(d[0] for d in draws)
    assert all(abs(firsts[i] / members[i] - 0.5) < 0.03 for i in range(5))


def test_a_prompt_must_name_its_fields():
    with pytest.raises(ttc.InvalidInput, match="candidates"):
        AggregationPrompt(instruction="{question} only")
    with pytest.raises(ttc.InvalidInput, match="text"):
        AggregationPrompt(instruction="{question} {candidates}", candidate="Solution {label}")
    for strategy in (ttc.GenSelect, ttc.RSA, ttc.Fuse, ttc.Rank, ttc.Critique):
        with pytest.raises(ttc.InvalidInput, match="AggregationPrompt"):
            strategy(prompt="pick one: {question} {candidates}")


def test_context_length_is_read_from_the_backend():
    llm = Scripted(["x"])
    assert asyncio.run(context_length(llm)) is None
    llm.max_model_len = 300
    assert asyncio.run(context_length(llm)) == 300


class AsksServer(Scripted):
    """A backend that says its context length the way OpenAICompatible does (an async method)."""

    max_model_len = True  # not a length: a bool is never read as one

    async def context_length(self):
        return 77


class NoTokenizer(Scripted):
    async def tokenize(self, text):
        raise ttc.Unsupported("no tokenizer here")


def test_context_length_is_asked_of_a_server():
    assert asyncio.run(context_length(AsksServer(["x"]))) == 77


def test_prompt_tokens_counts_ids_and_says_none_without_a_tokenizer():
    from ttc.aggregation import prompt_tokens

    assert asyncio.run(prompt_tokens(Context(Scripted(["x"])), [5, 6, 7])) == 3
    assert asyncio.run(prompt_tokens(Context(Scripted(["x"])), "a b")) == 3
    assert asyncio.run(prompt_tokens(Context(NoTokenizer(["x"])), "a b")) is None


def test_without_a_tokenizer_the_limit_is_left_to_the_server():
    llm = NoTokenizer(counter_script(["5", "7"], aggregate=lambda p: "Judgment: 2"))
    r = ttc.GenSelect(n=2, sample=sample(), max_prompt_tokens=5).solve(QUESTION, llm, seed=0)
    assert r.answer == "7" and r.details["aggregations"][0]["prompt_tokens"] is None


def test_messages_need_one_note_per_candidate():
    with pytest.raises(ValueError):
        GENSELECT_PROMPT.messages("q", ["a", "b"], ["only one"])


# -- GenSelect ------------------------------------------------------------------------------------
def test_genselect_reads_every_candidate_in_order_and_answers_the_named_one():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "Solution 1 errs. Judgment: 2"))
    r = ttc.GenSelect(n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.answer == "7" and r.details["chosen"] == 1 and r.details["fallback"] is None
    (agg,) = r.details["aggregations"]
    assert (agg["kind"], agg["inputs"], agg["chosen"], agg["parsed"]) == ("select", [0, 1, 2], [1], True)
    prompt = llm.requests[-1][0]
    shown = [prompt.index(f"Solution {i}:\n{r.candidates[i - 1].text}") for i in (1, 2, 3)]
    assert shown == sorted(shown)
    assert len(llm.requests) == 2  # one sampling request (n=3), one selection


async def _prompt_length(texts, template=GENSELECT_PROMPT):
    llm = Scripted(["x"])
    ctx = Context(llm)
    return len(await llm.tokenize(await render(ctx, template, Problem(question=QUESTION), texts)))


def _texts(n):
    return [f"Attempt {j}: the answer is {a}." for j, a in zip(range(n), itertools.cycle(["5", "7", "8", "9"]))]


def test_genselect_runs_a_knockout_tournament_when_the_candidates_do_not_fit():
    two, three = asyncio.run(_prompt_length(_texts(2))), asyncio.run(_prompt_length(_texts(3)))
    llm = Scripted(counter_script(["5", "7", "8", "9"], aggregate=lambda p: "Judgment: 2"))
    r = ttc.GenSelect(n=4, sample=sample(), max_prompt_tokens=(two + three) // 2).solve(QUESTION, llm, seed=0)
    rounds = [(a["round"], a["inputs"], a["chosen"]) for a in r.details["aggregations"]]
    assert rounds == [(0, [0, 1], [1]), (0, [2, 3], [3]), (1, [1, 3], [3])]
    assert r.answer == "9" and r.details["chosen"] == 3
    assert all(a["prompt_tokens"] <= (two + three) // 2 for a in r.details["aggregations"])


def test_genselect_uses_the_largest_groups_that_fit():
    three, four = asyncio.run(_prompt_length(_texts(3))), asyncio.run(_prompt_length(_texts(4)))
    llm = Scripted(counter_script(["5", "7", "8", "9", "5", "7"], aggregate=lambda p: "Judgment: 1"))
    r = ttc.GenSelect(n=6, sample=sample(), max_prompt_tokens=three).solve(QUESTION, llm, seed=0)
    assert three < four
    assert [a["inputs"] for a in r.details["aggregations"]] == [[0, 1, 2], [3, 4, 5], [0, 3]]


def test_genselect_tries_every_group_count():
    """12 candidates of which 3 fit: 4 groups of 3 (not 6 pairs: every group size is tried in turn)."""
    three = asyncio.run(_prompt_length(_texts(3)))
    llm = Scripted(counter_script(["5", "7", "8", "9"], aggregate=lambda p: "Judgment: 1"))
    r = ttc.GenSelect(n=12, sample=sample(), max_prompt_tokens=three).solve(QUESTION, llm, seed=0)
    first = [a["inputs"] for a in r.details["aggregations"] if a["round"] == 0]
    assert first == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_genselect_falls_back_to_pairs():
    two, three = asyncio.run(_prompt_length(_texts(2))), asyncio.run(_prompt_length(_texts(3)))
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "Judgment: 2"))
    r = ttc.GenSelect(n=3, sample=sample(), max_prompt_tokens=(two + three) // 2).solve(QUESTION, llm, seed=0)
    assert [a["inputs"] for a in r.details["aggregations"]] == [[0, 1], [1, 2]]
    assert r.answer == "8"


class Nothing(ttc.Strategy):
    async def run(self, problem, ctx):
        return ttc.Result(problem=problem, answer=None, candidates=[], usage=ctx.usage, strategy="nothing")


@pytest.mark.parametrize("layer", [lambda s: ttc.GenSelect(sample=s), lambda s: ttc.Fuse(sample=s),
                                   lambda s: ttc.Rank(sample=s), lambda s: ttc.Critique(sample=s),
                                   lambda s: ttc.Verify(verifier=lambda p, c: 1.0, sample=s)])
def test_a_strategy_that_gives_no_candidates_is_named(layer):
    with pytest.raises(ttc.InvalidInput, match="gave no candidates"):
        layer(Nothing()).solve(QUESTION, Scripted(["x"]))


def test_a_failed_aggregation_request_is_an_error_not_a_budget_stop():
    def script(prompt, params, i):
        if "Solution 1" in prompt or "[1]" in prompt or "Response:" in prompt:
            raise RuntimeError("the server broke")
        return f"try {i}: the answer is 5."

    for strategy in (ttc.GenSelect(n=2, sample=sample()), ttc.RSA(population=2, k=2, rounds=1, sample=sample()),
                     ttc.Critique(n=2, sample=sample())):
        with pytest.raises(RuntimeError, match="the server broke"):
            strategy.solve(QUESTION, Scripted(script), seed=0)


def test_genselect_group_size_splits_without_a_limit():
    llm = Scripted(counter_script(["5", "7", "8", "9", "6"], aggregate=lambda p: "Judgment: 1"))
    r = ttc.GenSelect(n=5, sample=sample(), group_size=2).solve(QUESTION, llm, seed=0)
    # round 0: [0, 1], [2, 3], [4] (a bye, no call); round 1: [0, 2], [4]; round 2: [0, 4]
    assert [a["inputs"] for a in r.details["aggregations"]] == [[0, 1], [2, 3], [0, 2], [0, 4]]
    assert [a["round"] for a in r.details["aggregations"]] == [0, 0, 1, 2]
    assert r.answer == "5"


def test_genselect_group_size_is_checked():
    with pytest.raises(ttc.InvalidInput, match="group_size"):
        ttc.GenSelect(group_size=1)


def test_genselect_fits_the_model_context():
    two, three = asyncio.run(_prompt_length(_texts(2))), asyncio.run(_prompt_length(_texts(3)))
    llm = Scripted(counter_script(["5", "7", "8", "9"], aggregate=lambda p: "Judgment: 1"))
    llm.max_model_len = (two + three) // 2 + PARAMS.max_tokens  # the selection may write max_tokens
    r = ttc.GenSelect(n=4, sample=sample()).solve(QUESTION, llm, seed=0)
    assert [a["inputs"] for a in r.details["aggregations"]] == [[0, 1], [2, 3], [0, 2]]


def test_the_limit_is_the_smaller_of_max_prompt_tokens_and_the_context():
    two, three = asyncio.run(_prompt_length(_texts(2))), asyncio.run(_prompt_length(_texts(3)))
    for context, max_prompt in ((10_000, (two + three) // 2), ((two + three) // 2 + PARAMS.max_tokens, 10_000)):
        llm = Scripted(counter_script(["5", "7", "8", "9"], aggregate=lambda p: "Judgment: 1"))
        llm.max_model_len = context
        r = ttc.GenSelect(n=4, sample=sample(), max_prompt_tokens=max_prompt).solve(QUESTION, llm, seed=0)
        assert [a["inputs"] for a in r.details["aggregations"]] == [[0, 1], [2, 3], [0, 2]]


def test_prompt_lengths_are_measured_only_when_something_limits_them():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "Judgment: 2"))
    r = ttc.GenSelect(n=2, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.details["aggregations"][0]["prompt_tokens"] is None
    r = ttc.GenSelect(n=2, sample=sample()).solve(QUESTION, llm, seed=0, budget=ttc.Budget(tokens=10_000))
    assert r.details["aggregations"][0]["prompt_tokens"] == len(llm._ids(llm.requests[-1][0]))


def test_genselect_refuses_when_two_candidates_do_not_fit_before_sending():
    two = asyncio.run(_prompt_length(_texts(2)))
    llm = Scripted(counter_script(["5", "7"]))
    with pytest.raises(ttc.PromptTooLong, match=f"has {two} tokens, over the limit of {two - 1}"):
        ttc.GenSelect(n=2, sample=sample(), max_prompt_tokens=two - 1).solve(QUESTION, llm, seed=0)
    assert len(llm.requests) == 1  # the sampling request only: no selection was sent


def test_genselect_unparsable_judgment_falls_back_to_the_groups_vote():
    llm = Scripted(counter_script(["5", "7", "7"], aggregate=lambda p: "They all seem fine to me."))
    r = ttc.GenSelect(n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    (agg,) = r.details["aggregations"]
    assert (agg["parsed"], agg["chosen"], r.answer, r.details["fallback"]) == (False, [1], "7", "unparsed")
    r = ttc.GenSelect(n=3, sample=sample(), fallback="first").solve(QUESTION, llm, seed=0)
    assert (r.answer, r.details["chosen"]) == ("5", 0)
    with pytest.raises(ttc.InvalidInput, match="fallback"):
        ttc.GenSelect(fallback="random")


def test_genselect_usage_is_every_request_exactly():
    llm = Scripted(counter_script(["5", "7", "8", "9"], aggregate=lambda p: "Judgment: 2"))
    r = ttc.GenSelect(n=4, sample=sample(), group_size=2).solve(QUESTION, llm, seed=0)
    prompts = sum(len(llm._ids(text)) for text, _ in llm.requests)
    assert r.usage.generator_calls == len(llm.requests) == 4  # sampling + three selections
    assert r.usage.prompt_tokens == prompts
    assert r.usage.completion_tokens == llm.generated_tokens
    assert r.usage.total_tokens == prompts + llm.generated_tokens


def test_genselect_under_a_budget_stops_the_tournament_and_votes():
    llm = Scripted(counter_script(["5", "7", "7", "9"], aggregate=lambda p: "Judgment: 1"))
    free = ttc.GenSelect(n=4, sample=sample(), group_size=2).solve(QUESTION, llm, seed=0)
    sampling = free.candidates[0].usage.prompt_tokens + sum(c.usage.completion_tokens for c in free.candidates)
    budget = sampling + 20  # the sampling fits, a selection (its prompt alone is longer) does not
    llm = Scripted(counter_script(["5", "7", "7", "9"], aggregate=lambda p: "Judgment: 1"))
    r = ttc.GenSelect(n=4, sample=sample(), group_size=2).solve(QUESTION, llm, seed=0,
                                                                 budget=ttc.Budget(tokens=budget))
    assert r.ok and r.details["fallback"] == "budget" and r.answer == "7" and r.details["aggregations"] == []
    assert r.details["votes"] == {"5": 1.0, "7": 2.0, "9": 1.0}
    assert r.usage.total_tokens <= budget


def test_genselect_selects_from_a_wrapped_strategys_outputs():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "Judgment: 1"))
    scores = {"5": 0.1, "7": 0.9, "8": 0.5}
    inner = ttc.BestOfN(n=3, verifier=lambda p, c: scores[c.answer], sample=sample())
    r = ttc.GenSelect(sample=inner).solve(QUESTION, llm, seed=0)
    assert r.details["aggregations"][0]["inputs"] == [1, 2, 0]  # best-of-N's order, best first
    assert r.answer == "7"


# -- RSA ------------------------------------------------------------------------------------------
def test_rsa_aggregates_k_of_the_last_population_each_round_and_votes_over_the_final_one():
    written = itertools.count()
    llm = Scripted(counter_script(["5", "5", "5"], aggregate=lambda p: f"Merged {next(written)}: the answer is 7."))
    r = ttc.RSA(population=3, k=2, rounds=2, sample=sample()).solve(QUESTION, llm, seed=3)
    aggs = r.details["aggregations"]
    assert len(aggs) == 6 and len(r.candidates) == 9
    for a in aggs[:3]:
        assert len(a["inputs"]) == 2 and len(set(a["inputs"])) == 2 and set(a["inputs"]) <= {0, 1, 2}
    for a in aggs[3:]:
        assert len(set(a["inputs"])) == 2 and set(a["inputs"]) <= {3, 4, 5}
    assert [a["outputs"] for a in aggs] == [[3], [4], [5], [6], [7], [8]]
    assert [a["round"] for a in aggs] == [0, 0, 0, 1, 1, 1]
    assert r.details["outputs"] == [6, 7, 8]
    assert r.answer == "7" and r.details["votes"] == {"7": 3.0}  # the first population's 5s do not vote
    # each aggregation prompt shows exactly its inputs, in order
    aggregation_prompts = [text for text, _ in llm.requests if "Solution 1" in text]
    for a, prompt in zip(aggs, aggregation_prompts, strict=True):
        positions = [prompt.index(f"Solution {j}:\n{r.candidates[i].text}") for j, i in enumerate(a["inputs"], 1)]
        assert positions == sorted(positions) and "Solution 3:" not in prompt


def test_rsa_zero_rounds_is_a_vote_and_k_one_is_refinement():
    llm = Scripted(counter_script(["5", "7", "7"]))
    r = ttc.RSA(population=3, k=1, rounds=0, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.answer == "7" and r.details["aggregations"] == [] and len(llm.requests) == 1
    llm = Scripted(counter_script(["5"], aggregate=lambda p: "Fixed: the answer is 7."))
    r = ttc.RSA(population=2, k=1, rounds=1, sample=sample()).solve(QUESTION, llm, seed=0)
    assert [len(a["inputs"]) for a in r.details["aggregations"]] == [1, 1]


def test_rsa_subsets_follow_the_seed():
    def inputs(seed):
        llm = Scripted(counter_script(["5", "6", "7", "8"], aggregate=lambda p: "the answer is 7."))
        r = ttc.RSA(population=4, k=2, rounds=1, sample=sample()).solve(QUESTION, llm, seed=seed)
        return [a["inputs"] for a in r.details["aggregations"]]

    assert inputs(1) == inputs(1)
    assert any(inputs(1) != inputs(s) for s in (2, 3, 4))


@pytest.mark.parametrize(("kwargs", "match"), [({"k": 0}, "k must"), ({"k": 5, "population": 4}, "k must"),
                                               ({"rounds": -1}, "rounds"), ({"population": 0}, "n must")])
def test_rsa_checks_its_settings(kwargs, match):
    with pytest.raises(ttc.InvalidInput, match=match):
        ttc.RSA(**kwargs)


def test_rsa_needs_a_sampler():
    with pytest.raises(ttc.InvalidInput, match="Sampler"):
        ttc.RSA(sample=ttc.MajorityVote(n=2))


def test_rsa_refuses_an_aggregation_prompt_over_the_limit_before_sending_any():
    two = asyncio.run(_prompt_length(_texts(2), ttc.strategies.rsa.RSA_PROMPT))
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 7."))
    with pytest.raises(ttc.PromptTooLong, match=f"has {two} tokens"):
        ttc.RSA(population=2, k=2, rounds=1, sample=sample(), max_prompt_tokens=two - 1).solve(QUESTION, llm, seed=0)
    assert len(llm.requests) == 1


def test_rsa_under_a_budget_votes_over_the_last_complete_population():
    llm = Scripted(counter_script(["5", "7", "7"], aggregate=lambda p: "the answer is 9."))
    first = ttc.RSA(population=3, k=2, rounds=0, sample=sample()).solve(QUESTION, llm, seed=0)
    llm = Scripted(counter_script(["5", "7", "7"], aggregate=lambda p: "the answer is 9."))
    budget = first.candidates[0].usage.prompt_tokens + 3 * PARAMS.max_tokens  # the sampling's reservation
    r = ttc.RSA(population=3, k=2, rounds=2, sample=sample()).solve(QUESTION, llm, seed=0,
                                                                     budget=ttc.Budget(tokens=budget))
    assert r.ok and r.details["fallback"] == "budget" and r.answer == "7"
    assert r.details["outputs"] == [0, 1, 2] and r.usage.total_tokens <= budget


def test_rsa_usage_counts_every_aggregation():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "Merged: the answer is 7."))
    r = ttc.RSA(population=2, k=2, rounds=2, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.usage.generator_calls == len(llm.requests) == 1 + 4
    assert r.usage.prompt_tokens == sum(len(llm._ids(text)) for text, _ in llm.requests)
    assert r.usage.completion_tokens == llm.generated_tokens
    assert sum(c.usage.completion_tokens for c in r.candidates) == llm.generated_tokens


def test_every_aggregation_request_gets_its_own_seed_from_the_run():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "the answer is 7."))
    ttc.RSA(population=3, k=2, rounds=2, sample=sample()).solve(QUESTION, llm, seed=0)
    seeds = [p.seed for text, p in llm.requests if "Solution 1" in text]
    assert len(seeds) == 6 and None not in seeds and len(set(seeds)) == 6


def test_a_written_candidates_answer_is_read_as_a_finished_samples():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "Fused: 3 + 4 = 7"))
    r = ttc.Fuse(k=2, n=2, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.answer == "7" and r.details["fallback"] is None
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "Fused: " + "and so on " * 40 + "= 7"))
    r = ttc.Fuse(k=2, n=2, sample=sample()).solve(QUESTION, llm, seed=0)  # cut at max_tokens: no guess
    assert r.candidates[2].finish_reason == "length" and r.candidates[2].answer is None


def test_rsa_aggregations_use_the_samplers_params_unless_given():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 7."))
    ttc.RSA(population=2, k=2, rounds=1, sample=sample()).solve(QUESTION, llm, seed=0)
    assert {(p.temperature, p.max_tokens, p.n) for text, p in llm.requests if "Solution 1" in text} == {(0.7, 32, 1)}
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 7."))
    own = SamplingParams(temperature=0.2, max_tokens=16)
    ttc.RSA(population=2, k=2, rounds=1, sample=sample(), params=own).solve(QUESTION, llm, seed=0)
    assert {(p.temperature, p.max_tokens) for text, p in llm.requests if "Solution 1" in text} == {(0.2, 16)}


# -- Archon's layers --------------------------------------------------------------------------------
def test_fuse_reads_the_top_k_of_a_best_of_n_and_answers_the_fused_one():
    scores = {"5": 0.1, "7": 0.9, "8": 0.5}
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "Fused: the answer is 7."))
    inner = ttc.BestOfN(n=3, verifier=lambda p, c: scores[c.answer], sample=sample())
    r = ttc.Fuse(k=2, sample=inner).solve(QUESTION, llm, seed=0)
    (agg,) = r.details["aggregations"]
    assert (agg["kind"], agg["round"], agg["inputs"], agg["outputs"]) == ("fuse", 0, [1, 2], [3])
    assert r.answer == "7" and r.details["chosen"] == 3 and r.details["outputs"] == [3]
    prompt = llm.requests[-1][0]
    assert r.candidates[1].text in prompt and r.candidates[2].text in prompt and r.candidates[0].text not in prompt


def test_fuse_writes_fusions_in_one_request_and_falls_back_to_the_top_input():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "I cannot combine these."))
    r = ttc.Fuse(k=2, n=2, fusions=2, sample=sample()).solve(QUESTION, llm, seed=0)
    assert llm.requests[-1][1].n == 2 and r.details["outputs"] == [2, 3]
    assert (r.answer, r.details["fallback"], r.details["chosen"]) == ("5", "no_answer", 0)


def test_fuse_under_a_budget_answers_the_top_input():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 9."))
    first = ttc.MajorityVote(n=2, sample=sample()).solve(QUESTION, llm, seed=0)
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 9."))
    r = ttc.Fuse(k=2, n=2, sample=sample()).solve(QUESTION, llm, seed=0,
                                                  budget=ttc.Budget(tokens=first.usage.total_tokens + 10))
    assert r.ok and (r.answer, r.details["fallback"], r.details["chosen"]) == ("5", "budget", 0)
    assert r.details["outputs"] == [0, 1] and r.details["aggregations"] == []


def test_rank_orders_and_keeps_the_top_k():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "[3] > [2] > [1]"))
    r = ttc.Rank(k=2, n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    (agg,) = r.details["aggregations"]
    assert (agg["kind"], agg["round"], agg["inputs"], agg["chosen"]) == ("rank", 0, [0, 1, 2], [2, 1, 0])
    assert r.details["outputs"] == [2, 1] and r.answer == "8"


def test_rank_passes_one_candidate_on_without_a_call():
    llm = Scripted(counter_script(["5"], aggregate=lambda p: "[1]"))
    r = ttc.Rank(n=1, sample=sample()).solve(QUESTION, llm, seed=0)
    assert len(llm.requests) == 1 and r.details["aggregations"] == [] and r.answer == "5"


def test_rank_unparsable_keeps_the_given_order():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "All are good."))
    r = ttc.Rank(n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.details["outputs"] == [0, 1, 2] and r.details["fallback"] == "unparsed"
    assert r.details["aggregations"][0]["parsed"] is False


def test_critique_rank_fuse_stack_records_what_each_call_read():
    def aggregate(prompt):
        if "weaknesses" in prompt:
            return f"critique of {prompt.split('Attempt ')[1].split(':')[0]}"
        if "Rank them" in prompt:
            return "[2] > [1] > [3]"
        return "Fused: the answer is 7."

    llm = Scripted(counter_script(["5", "7", "8"], aggregate=aggregate))
    r = ttc.Fuse(k=2, sample=ttc.Rank(k=2, sample=ttc.Critique(n=3, sample=sample()))).solve(QUESTION, llm, seed=0)
    kinds = [(a["kind"], a["inputs"]) for a in r.details["aggregations"]]
    assert kinds == [("critique", [0]), ("critique", [1]), ("critique", [2]), ("rank", [0, 1, 2]), ("fuse", [1, 0])]
    critiques = {a["inputs"][0]: a["text"] for a in r.details["aggregations"] if a["kind"] == "critique"}
    assert critiques == {0: "critique of 0", 1: "critique of 1", 2: "critique of 2"}
    fuse_prompt = llm.requests[-1][0]
    assert f"{r.candidates[1].text}\n(Critique: critique of 1)" in fuse_prompt
    assert "critique of 2" not in fuse_prompt  # ranked out
    assert r.answer == "7" and r.details["chosen"] == 3
    assert r.usage.generator_calls == len(llm.requests) == 1 + 3 + 1 + 1


def test_verify_keeps_what_the_verifier_passes():
    llm = Scripted(counter_script(["5", "7", "7"]))
    r = ttc.Verify(verifier=lambda p, c: float(c.answer == "7"), n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.details["outputs"] == [1, 2] and r.answer == "7" and r.details["fallback"] is None
    r = ttc.Verify(verifier=lambda p, c: 0.0, n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    assert r.details["outputs"] == [0, 1, 2] and r.details["fallback"] == "none_verified"
    with pytest.raises(ttc.InvalidInput, match="verifier"):
        ttc.Verify()


def test_layers_take_replaceable_prompts():
    mine = AggregationPrompt(instruction="MERGE {question} :: {candidates}", candidate="<{label}> {text}")
    llm = Scripted(lambda p, params, i: "the answer is 7." if "MERGE" in p else f"try {i}: the answer is 5.")
    r = ttc.Fuse(k=2, n=2, sample=sample(), prompt=mine).solve(QUESTION, llm, seed=0)
    assert llm.requests[-1][0].count("<1> try 0") == 1 and "<2> try 1" in llm.requests[-1][0]
    assert r.answer == "7"


def test_an_aggregations_thinking_is_its_own():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "the answer is 7."))
    r = ttc.Fuse(k=2, n=2, sample=sample()).solve(QUESTION, llm, seed=0)
    fused = r.candidates[r.details["chosen"]]
    assert fused.usage.completion_tokens == len(llm._ids("the answer is 7."))


# -- the registry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["genselect", "rsa", "fuse", "archon"])
def test_registered_combiners_run_and_say_what_they_read(name):
    llm = Scripted(counter_script(["7", "7", "5"], aggregate=lambda p: "[1] > [2] Judgment: 1. the answer is 7."))
    r = make_strategy(name, n=3, params=PARAMS).solve(QUESTION, llm, seed=0)
    assert r.ok and r.answer == "7" and r.strategy == name
    assert r.details["aggregations"] and all(a["inputs"] for a in r.details["aggregations"])


def test_registered_archon_with_a_verifier_verifies_before_ranking():
    llm = Scripted(counter_script(["7", "5", "7"], aggregate=lambda p: "[1] > [2] the answer is 7."))
    r = make_strategy("archon", n=3, params=PARAMS, verifier=ttc.verifiers.Programmatic(
        lambda p, c: float(c.answer == "7"))).solve(QUESTION, llm, seed=0)
    (rank,) = [a for a in r.details["aggregations"] if a["kind"] == "rank"]
    assert rank["inputs"] == [0, 2]


def test_genselect_and_rsa_refuse_a_verifier_by_name():
    for name in ("genselect", "rsa"):
        with pytest.raises(ttc.InvalidInput, match="verifier"):
            make_strategy(name, n=2, verifier=ttc.verifiers.Programmatic(lambda p, c: 1.0))


# -- what the mutation run asked to pin ----------------------------------------------------------------
def test_rank_under_a_budget_keeps_the_given_order():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "[3] > [2] > [1]"))
    budget = ttc.Budget(tokens=60 + 3 * PARAMS.max_tokens)
    r = ttc.Rank(k=2, n=3, sample=sample()).solve(QUESTION, llm, seed=0, budget=budget)
    assert (r.details["fallback"], r.details["outputs"], r.details["chosen"]) == ("budget", [0, 1], 0)


def test_rank_answers_and_chooses_its_best():
    llm = Scripted(counter_script(["5", "7", "8"], aggregate=lambda p: "[3] > [2] > [1]"))
    r = ttc.Rank(k=2, n=3, sample=sample()).solve(QUESTION, llm, seed=0)
    assert (r.details["chosen"], r.answer) == (2, "8")


def test_critique_under_a_budget_leaves_the_critiques_out():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "- fine"))
    budget = ttc.Budget(tokens=60 + 2 * PARAMS.max_tokens)
    r = ttc.Critique(n=2, sample=sample()).solve(QUESTION, llm, seed=0, budget=budget)
    assert r.ok and r.details["fallback"] == "budget" and r.details["aggregations"] == []


def test_critique_passes_its_candidates_on_and_answers_the_first():
    llm = Scripted(counter_script(["5", "7"], aggregate=lambda p: "- fine"))
    r = ttc.Critique(n=2, sample=sample()).solve(QUESTION, llm, seed=0)
    assert (r.details["outputs"], r.details["chosen"], r.answer, r.details["fallback"]) == ([0, 1], 0, "5", None)


def test_verify_asks_its_sampler_for_what_the_verifier_needs():
    v = ttc.Verify(verifier=ttc.verifiers.LogprobConfidence(), sample=ttc.Sample(params=SamplingParams(max_tokens=8)))
    assert v.sample.params.logprobs is True


def test_verify_keeps_a_score_at_the_threshold_and_chooses_the_first_kept():
    llm = Scripted(counter_script(["5", "7", "7"]))
    r = ttc.Verify(verifier=lambda p, c: 0.5 if c.answer == "7" else 0.4, n=3, sample=sample()).solve(QUESTION, llm)
    assert (r.details["outputs"], r.details["chosen"]) == ([1, 2], 1)


def test_only_critiques_are_shown_as_critiques():
    llm = Scripted(counter_script(["5", "7"],
                                  aggregate=lambda p: "[2] > [1]" if "Rank them" in p else "the answer is 7."))
    ttc.Fuse(k=2, sample=ttc.Rank(n=2, sample=sample())).solve(QUESTION, llm, seed=0)
    assert "(Critique:" not in llm.requests[-1][0]


def test_default_sampling_and_plain_strategies_as_sources():
    llm = Scripted(counter_script(["5", "7", "7"], aggregate=lambda p: "Judgment: 3"))
    r = ttc.GenSelect(n=3).solve(QUESTION, llm, seed=0)
    assert r.answer == "7" and r.details["aggregations"][0]["inputs"] == [0, 1, 2]
    llm = Scripted(counter_script(["5", "7", "7"], aggregate=lambda p: "Judgment: 3"))
    r = ttc.GenSelect(sample=ttc.MajorityVote(n=3, sample=sample())).solve(QUESTION, llm, seed=0)
    assert r.details["aggregations"][0]["inputs"] == [0, 1, 2]


def test_aggregation_params_come_from_the_wrapped_strategys_sampler():
    from ttc.strategies.sample import DEFAULT_PARAMS

    assert ttc.Fuse(sample=ttc.MajorityVote(n=2, sample=sample())).params == PARAMS.replace(n=1)
    assert ttc.Fuse(sample=Nothing()).params == DEFAULT_PARAMS.replace(n=1)
