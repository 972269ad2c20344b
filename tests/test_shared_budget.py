"""A token total shared across problems (issue 15): never exceeded, every problem sampled at
least once, saved tokens go to undecided problems (adaptive), refusals up front."""

import pytest

import ttc
from ttc.backends import Scripted
from ttc.errors import InvalidInput, Unsupported
from ttc.shared_budget import allocation_table
from ttc.strategies.adaptive_vote import AdaptiveVote

PARAMS = ttc.SamplingParams(max_tokens=10)


def backend():
    """'easy' problems always answer 7 (3 tokens); 'hard' ones answer 0, 1, 2, 0, ... (1 token each)."""
    return Scripted(lambda prompt, params, i: "answer \\boxed{7}" if "easy" in prompt else f"\\boxed{{{i % 3}}}")


def problems(easy=3, hard=3):
    return ([ttc.Problem(f"easy {i}", "7", id=f"e{i}") for i in range(easy)]
            + [ttc.Problem(f"hard {i}", "1", id=f"h{i}") for i in range(hard)])


def prompt_len(llm, question):
    return len(llm._ids(ttc.run_sync(llm.chat_prompt(ttc.ChatPrompt().messages(ttc.Problem(question))))))


def run(strategy, total, allocation, probs=None, llm=None, **kw):
    llm = llm or backend()
    probs = probs or problems()
    results = ttc.solve_many(strategy, probs, llm, total_budget=ttc.Budget(tokens=total), allocation=allocation,
                             progress=False, **kw)
    return results, llm


@pytest.mark.parametrize("allocation", ["uniform", "adaptive"])
@pytest.mark.parametrize("total", [6 * 42, 300, 420, 600, 1000, 5000])
def test_the_total_is_never_exceeded_and_every_problem_gets_a_sample(allocation, total):
    results, llm = run(AdaptiveVote(max_n=16, batch=4, sample=ttc.Sample(params=PARAMS)), total, allocation)
    spent = sum(r.usage.total_tokens for r in results)
    assert spent <= total
    assert spent == results[0].details["shared_budget"]["spent"]
    # what the backend generated and what the prompts bill is what the results say they cost
    assert sum(r.usage.completion_tokens for r in results) == llm.generated_tokens
    assert sum(r.usage.generator_calls for r in results) == len(llm.requests)
    for r in results:
        assert r.ok and r.details["samples"] >= 1
        assert r.details["allocation"]["tokens"] == r.usage.total_tokens
        assert r.details["stop_reason"] in ttc.stopping.STOP_REASONS


def test_adaptive_gives_saved_tokens_to_undecided_problems():
    strategy = AdaptiveVote(max_n=16, batch=4, sample=ttc.Sample(params=PARAMS))
    uniform, _ = run(strategy, 600, "uniform")
    adaptive, _ = run(strategy, 600, "adaptive")
    # easy problems are decided after one round of 4 (4 x 7: P = .97) in both
    for res in (uniform, adaptive):
        assert [r.details["samples"] for r in res[:3]] == [4, 4, 4]
        assert all(r.details["stop_reason"] == "decided" for r in res[:3])
    hard_uniform = sum(r.details["samples"] for r in uniform[3:])
    hard_adaptive = sum(r.details["samples"] for r in adaptive[3:])
    assert hard_adaptive > hard_uniform
    assert sum(r.usage.total_tokens for r in adaptive) > sum(r.usage.total_tokens for r in uniform)
    rows = allocation_table(adaptive)
    assert [row["id"] for row in rows] == ["e0", "e1", "e2", "h0", "h1", "h2"]
    assert all(row["mode"] == "adaptive" and row["share"] is None for row in rows)
    assert {row["share"] for row in allocation_table(uniform)} == {100}


def test_adaptive_serves_the_fewest_samples_first_and_stops_on_budget():
    # 6 hard problems only: nobody is decided; the pool runs dry; samples stay within one round of each other
    strategy = AdaptiveVote(max_n=16, batch=4, sample=ttc.Sample(params=PARAMS))
    results, _ = run(strategy, 600, "adaptive", probs=problems(easy=0, hard=6))
    samples = [r.details["samples"] for r in results]
    assert max(samples) - min(samples) <= 4
    assert all(r.details["stop_reason"] in ("budget", "max_n") for r in results)
    assert "budget" in {r.details["stop_reason"] for r in results}


def test_majority_vote_runs_incrementally_up_to_n():
    results, llm = run(ttc.MajorityVote(n=8, sample=ttc.Sample(params=PARAMS)), 5000, "adaptive")
    assert all(r.details["samples"] == 8 and r.details["stop_reason"] == "max_n" for r in results)
    assert all(p.n == 8 for _, p in llm.requests)
    # a uniform share too small for 8 at once is sampled in smaller rounds within it
    llm = backend()
    plen = prompt_len(llm, "easy 0")
    share = plen + 4 * 10
    results, llm = run(ttc.MajorityVote(n=8, sample=ttc.Sample(params=PARAMS)), 6 * share, "uniform", llm=llm)
    assert all(r.usage.total_tokens <= share for r in results)
    assert [p.n for _, p in llm.requests][:6] == [4] * 6


def test_a_total_below_one_sample_per_problem_is_refused_before_any_request():
    llm = backend()
    plen = prompt_len(llm, "easy 0")
    assert plen == prompt_len(llm, "hard 0")
    just_enough = 6 * (plen + 10)
    strategy = AdaptiveVote(max_n=4, sample=ttc.Sample(params=PARAMS))
    with pytest.raises(InvalidInput, match="below one sample per problem"):
        run(strategy, just_enough - 1, "adaptive", llm=llm)
    assert llm.requests == []
    results, _ = run(strategy, just_enough, "adaptive", llm=llm)
    assert all(r.details["samples"] >= 1 for r in results)
    assert sum(r.usage.total_tokens for r in results) <= just_enough


def test_unsupported_strategies_and_bad_arguments_are_refused():
    llm = backend()
    one = lambda p, c: 1.0  # noqa: E731
    for strategy in (ttc.BestOfN(n=4, verifier=one), ttc.MajorityVote(n=4, verifier=one), ttc.Sample()):
        with pytest.raises(Unsupported, match="AdaptiveVote, MajorityVote"):
            ttc.solve_many(strategy, problems(), llm, total_budget=ttc.Budget(tokens=10_000), progress=False)
    custom = ttc.MajorityVote(n=4, sample=ttc.strategies.StreamSample())
    with pytest.raises(Unsupported, match="plain Sample"):
        ttc.solve_many(custom, problems(), llm, total_budget=ttc.Budget(tokens=10_000), progress=False)
    with pytest.raises(InvalidInput, match="allocation"):
        ttc.solve_many(ttc.MajorityVote(n=4), problems(), llm, total_budget=ttc.Budget(tokens=10_000),
                       allocation="greedy", progress=False)
    with pytest.raises(InvalidInput, match="tokens"):
        ttc.solve_many(ttc.MajorityVote(n=4), problems(), llm, total_budget=ttc.Budget(seconds=5), progress=False)
    assert llm.requests == []


def test_uniform_refuses_a_share_below_one_sample_even_if_the_sum_would_do():
    llm = backend()
    probs = [ttc.Problem("easy " + "long " * 30, "7"), ttc.Problem("easy", "7")]
    long_len, short_len = prompt_len(llm, probs[0].question), prompt_len(llm, "easy")
    total = long_len + short_len + 2 * 10
    with pytest.raises(InvalidInput, match="uniformly"):
        run(AdaptiveVote(max_n=4, sample=ttc.Sample(params=PARAMS)), total, "uniform", probs=probs, llm=llm)
    results, _ = run(AdaptiveVote(max_n=4, sample=ttc.Sample(params=PARAMS)), total, "adaptive", probs=probs, llm=llm)
    assert [r.details["samples"] for r in results] == [1, 1]


def test_a_failing_problem_keeps_its_record_and_the_others_finish():
    def script(prompt, params, i):
        if "boom" in prompt:
            raise ttc.GenerationError("scripted failure")
        return "answer \\boxed{7}"

    probs = [ttc.Problem("easy boom", "7"), ttc.Problem("easy", "7")]
    results, _ = run(AdaptiveVote(max_n=8, sample=ttc.Sample(params=PARAMS)), 2000, "adaptive",
                     probs=probs, llm=Scripted(script))
    assert not results[0].ok and "scripted failure" in results[0].error
    assert results[0].details["allocation"]["stop_reason"] == "error"
    assert results[1].ok and results[1].answer == "7"


def test_a_per_problem_budget_still_applies_and_ends_a_vote_with_reason_budget():
    llm = backend()
    plen = prompt_len(llm, "hard 0")
    per_problem = ttc.Budget(tokens=2 * (plen + 4 * 10) + 5)   # two rounds of 4 at worst
    results, _ = run(AdaptiveVote(max_n=16, batch=4, sample=ttc.Sample(params=PARAMS)), 5000, "adaptive",
                     probs=problems(easy=0, hard=2), budget=per_problem)
    for r in results:
        assert r.ok and r.details["stop_reason"] == "budget"
        assert r.usage.total_tokens <= per_problem.tokens
        assert r.details["samples"] >= 8
