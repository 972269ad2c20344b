"""Strategy logic on the scripted backend: known answers, exact usage, enforced budgets."""

import asyncio
import math

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.models import resolve_model
from ttc.strategies.best_of_n import softmax
from ttc.verifiers import LogprobConfidence, Programmatic, gold_answer_oracle


def cycling(*answers):
    return Scripted([f"Let me think step by step. So the answer is \\boxed{{{a}}}." for a in answers])


def test_sample_returns_one_candidate_with_extracted_answer():
    result = ttc.Sample().solve("What is 2+2?", cycling("4"))
    assert result.answer == "4"
    assert len(result.candidates) == 1
    assert_usage_is_sum_of_candidates(result)


def test_majority_vote_picks_most_frequent_equivalent_answer():
    llm = cycling("5", "0.5", r"\frac{1}{2}", "5", "1/2", "7")
    result = ttc.MajorityVote(n=6).solve("q", llm)
    # 0.5, \frac{1}{2} and 1/2 are one answer with 3 votes; 5 has 2
    assert ttc.answers.equivalent(result.answer, "0.5")
    assert sorted(result.details["votes"].values()) == [1.0, 2.0, 3.0]
    assert_usage_is_sum_of_candidates(result)


def test_majority_vote_ties_go_to_first_seen_answer():
    assert ttc.MajorityVote(n=4).solve("q", cycling("3", "8", "8", "3")).answer == "3"


def test_majority_vote_ignores_candidates_without_answer():
    llm = Scripted(["I have no idea.", r"\boxed{9}", "No idea again."])
    result = ttc.MajorityVote(n=3).solve("q", llm)
    assert result.answer == "9"
    assert result.details["votes"] == {"9": 1.0}


def test_majority_vote_without_any_answer_returns_none():
    result = ttc.MajorityVote(n=2).solve("q", Scripted(["nothing", "still nothing"]))
    assert result.answer is None


def test_weighted_majority_vote_uses_verifier_scores():
    llm = cycling("1", "1", "2")
    weights = {"1": 0.2, "2": 0.9}
    verifier = Programmatic(lambda p, c: weights[c.answer])
    result = ttc.MajorityVote(n=3, verifier=verifier).solve("q", llm)
    assert result.answer == "2"
    assert result.details["votes"]["1"] == pytest.approx(0.4)
    assert result.usage.verifier_calls == 3
    assert_usage_is_sum_of_candidates(result)


def test_n_candidates_are_one_request():
    llm = cycling("1")
    ttc.MajorityVote(n=16).solve("q", llm)
    assert len(llm.requests) == 1
    assert llm.requests[0][1].n == 16


def test_best_of_n_picks_highest_score():
    llm = cycling("10", "20", "30", "40")
    result = ttc.BestOfN(n=4, verifier=Programmatic(lambda p, c: -abs(float(c.answer) - 31))).solve("q", llm)
    assert result.answer == "30"
    assert result.details["chosen"] == 2
    assert result.usage.verifier_calls == 4
    assert_usage_is_sum_of_candidates(result)


def test_best_of_n_with_gold_oracle_finds_right_answer():
    llm = cycling("1", "2", "3", "4", "5")
    result = ttc.BestOfN(n=5, verifier=gold_answer_oracle()).solve(ttc.Problem("q", answer="4"), llm)
    assert result.answer == "4"
    assert result.is_correct() is True


def test_best_of_n_mean_logprob_picks_most_confident():
    llm = Scripted([
        ScriptedResponse(r"\boxed{1}", logprobs=(-3.0,)),
        ScriptedResponse(r"\boxed{2}", logprobs=(-0.1,)),
        ScriptedResponse(r"\boxed{3}", logprobs=(-1.0,)),
    ])
    result = ttc.BestOfN(n=3, verifier=LogprobConfidence()).solve("q", llm)
    assert result.answer == "2"
    assert result.usage.verifier_calls == 0  # free: computed from logprobs already returned


def test_self_certainty_asks_the_sampler_for_top_logprobs():
    strategy = ttc.BestOfN(n=2, verifier=LogprobConfidence("self_certainty", top_k=3))
    assert strategy.sample.params.top_logprobs == 3


def test_softmax_selection_follows_the_weights():
    scores = [0.0, math.log(3.0)]  # probabilities 1/4 and 3/4 at temperature 1
    assert softmax(scores, 1.0) == pytest.approx([0.25, 0.75])
    llm = cycling("1", "2")
    strategy = ttc.BestOfN(n=2, verifier=Programmatic(lambda p, c: scores[int(c.answer) - 1]), selection="softmax")
    picks = [strategy.solve("q", llm, seed=s).answer for s in range(2000)]
    share = picks.count("2") / len(picks)
    # binomial(2000, 0.75): sd ~ 0.0097; a 5-sd band
    assert abs(share - 0.75) < 0.05


def test_softmax_selection_is_reproducible_with_seed():
    llm = cycling("1", "2", "3")
    strategy = ttc.BestOfN(n=3, verifier=Programmatic(lambda p, c: 0.0), selection="softmax")
    first = [strategy.solve("q", llm, seed=s).answer for s in range(20)]
    second = [strategy.solve("q", llm, seed=s).answer for s in range(20)]
    assert first == second
    assert len(set(first)) > 1


def test_usage_counts_prompt_once_per_request_and_every_completion_token():
    llm = Scripted(["a b c", "d e"])  # 5 and 3 tokens (words and spaces)
    result = ttc.MajorityVote(n=2).solve("hello there", llm)
    prompt_text = llm.requests[0][0]
    assert result.usage.prompt_tokens == len(asyncio.run(llm.tokenize(prompt_text)))
    assert result.usage.completion_tokens == 5 + 3
    assert result.usage.generator_calls == 1
    assert result.usage.wall_seconds > 0
    assert_usage_is_sum_of_candidates(result)


# -- budgets ---------------------------------------------------------------------------------

def long_answer(prompt, params, i):
    return " ".join(["word"] * 100) + r" \boxed{1}"


def test_token_budget_is_never_exceeded_and_truncates_candidates():
    llm = Scripted(long_answer)
    result = ttc.MajorityVote(n=4).solve("q", llm, budget=ttc.Budget(tokens=150))
    assert result.usage.total_tokens <= 150
    assert all(c.finish_reason == "length" for c in result.candidates)


def test_concurrent_requests_share_the_token_budget():
    """Reservations keep concurrent requests of one problem under the cap together."""
    llm = Scripted(long_answer, latency=0.01)

    async def many(ctx):
        prompt = "question"
        await asyncio.gather(*(ctx.generate(prompt, ttc.SamplingParams(max_tokens=50)) for _ in range(3)),
                             return_exceptions=True)

    ctx = ttc.Context(llm, ttc.Budget(tokens=120))
    asyncio.run(many(ctx))
    assert ctx.usage.total_tokens <= 120


def test_budget_too_small_for_one_candidate_raises():
    with pytest.raises(ttc.BudgetExhausted, match="token budget"):
        ttc.Sample().solve("What is 2+2?", cycling("4"), budget=ttc.Budget(tokens=10))


def test_verifier_budget_is_enforced():
    with pytest.raises(ttc.BudgetExhausted, match="verifier budget"):
        ttc.BestOfN(n=4, verifier=Programmatic(lambda p, c: 1.0)).solve(
            "q", cycling("1"), budget=ttc.Budget(verifier_calls=3))


def test_time_budget_cancels_slow_generation():
    llm = Scripted([r"\boxed{1}"], latency=30.0)
    with pytest.raises(ttc.BudgetExhausted, match="time budget"):
        ttc.Sample().solve("q", llm, budget=ttc.Budget(seconds=0.05))


@pytest.mark.parametrize("kwargs", [{"tokens": 0}, {"seconds": -1}, {"verifier_calls": 0}])
def test_invalid_budget(kwargs):
    with pytest.raises(ttc.InvalidInput):
        ttc.Budget(**kwargs)


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_problem_raises(question):
    with pytest.raises(ttc.InvalidInput, match="empty"):
        ttc.Sample().solve(question, cycling("1"))


@pytest.mark.parametrize("n", [0, -3, 1.5, True])
def test_invalid_n_raises(n):
    with pytest.raises(ttc.InvalidInput, match="n must be a positive integer"):
        ttc.MajorityVote(n=n)


def test_best_of_n_requires_a_verifier():
    with pytest.raises(ttc.InvalidInput, match="verifier"):
        ttc.BestOfN(n=4)


def test_invalid_sampling_params():
    with pytest.raises(ttc.InvalidInput):
        ttc.SamplingParams(max_tokens=0)
    with pytest.raises(ttc.InvalidInput):
        ttc.SamplingParams(top_p=0)


@pytest.mark.parametrize("path", ["/no/such/model/folder", "./missing-model", "a/b/c"])
def test_unknown_model_path_raises(path):
    with pytest.raises(ttc.ModelNotFound, match="does not exist"):
        resolve_model(path)


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ttc.ModelNotFound, match="config.json"):
        resolve_model(str(tmp_path))


# -- solve_many ------------------------------------------------------------------------------

def test_solve_many_records_failures_and_keeps_the_others():
    problems = [ttc.Problem("2+2", answer="4"), ttc.Problem("", answer="1"), ttc.Problem("3+3", answer="6")]
    llm = Scripted(lambda prompt, params, i: r"\boxed{4}" if "2+2" in prompt else r"\boxed{6}")
    seen = []
    results = ttc.solve_many(ttc.MajorityVote(n=2), problems, llm, progress=False,
                             on_result=lambda i, r: seen.append(i))
    assert [r.ok for r in results] == [True, False, True]
    assert "empty" in results[1].error
    assert [r.answer for r in results] == ["4", None, "6"]
    assert [r.is_correct() for r in results] == [True, False, True]
    assert sorted(seen) == [0, 1, 2]


def test_solve_many_records_budget_failure():
    results = ttc.solve_many(ttc.MajorityVote(n=2), ["q1", "q2"], Scripted(long_answer), progress=False,
                             budget=ttc.Budget(tokens=5))
    assert all(not r.ok and "BudgetExhausted" in r.error for r in results)


class InFlight(Scripted):
    """Counts how many requests are in the backend at once."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = self.peak = 0

    async def generate(self, prompt, params):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await super().generate(prompt, params)
        finally:
            self.now -= 1


def test_solve_many_issues_problems_concurrently_up_to_the_limit():
    llm = InFlight([r"\boxed{1}"], latency=0.05)
    ttc.solve_many(ttc.Sample(), [f"q{i}" for i in range(20)], llm, concurrency=8, progress=False)
    assert llm.peak == 8


def test_solve_many_seeds_each_problem():
    llm = cycling("1")
    ttc.solve_many(ttc.Sample(), ["a", "b", "c"], llm, seed=10, progress=False, concurrency=1)
    # problem i runs with seed 10 + i; its request's seed is the first draw of that run's RNG (the seed rule)
    import random
    assert sorted(params.seed for _, params in llm.requests) == sorted(random.Random(s).getrandbits(31)
                                                                       for s in (10, 11, 12))


def test_solve_works_inside_a_running_event_loop():
    """As in a Jupyter cell: a loop is already running in this thread."""
    async def notebook_cell():
        return ttc.Sample().solve("q", cycling("5"))

    assert asyncio.run(notebook_cell()).answer == "5"


def test_arun_can_be_awaited_directly():
    async def main():
        return await ttc.MajorityVote(n=3).arun("q", cycling("2"))

    assert asyncio.run(main()).answer == "2"


# -- the one rule for verifier scores (ttc.votes) ----------------------------------------------
def _logprob_votes():
    return Scripted([ScriptedResponse(r"\boxed{4}", (-0.5,)), ScriptedResponse(r"\boxed{4}", (-0.5,)),
                     ScriptedResponse(r"\boxed{5}", (-0.5,))])


def test_mean_logprob_weighted_vote_is_not_inverted_through_the_registry():
    # review repro: summing mean logprobs (<= 0) made the minority answer win ({'4': -1.0, '5': -0.5} -> 5)
    from ttc.strategies.registry import make_strategy

    result = make_strategy("majority", n=3, verifier=LogprobConfidence("mean_logprob")).solve("q", _logprob_votes())
    assert result.answer == "4"
    assert result.details["votes"] == pytest.approx({"4": 2 * math.exp(-0.5), "5": math.exp(-0.5)})


def test_mean_logprob_is_log_scale_and_self_certainty_is_not():
    assert LogprobConfidence("mean_logprob").log_scale is True
    assert LogprobConfidence("self_certainty").log_scale is False


def test_early_exit_vote_with_mean_logprob_is_not_inverted():
    from ttc.strategies.registry import make_strategy

    strategy = make_strategy("early_exit", n=3, verifier=LogprobConfidence("mean_logprob"))
    assert strategy.solve("q", _logprob_votes()).answer == "4"


def test_negative_weights_of_a_non_log_scale_verifier_are_refused_naming_it():
    scores = iter([-1.0, -1.0, -0.5])
    verifier = Programmatic(lambda p, c: next(scores), name="signed")
    with pytest.raises(ttc.InvalidInput, match="'signed'.*negative"):
        ttc.MajorityVote(n=3, verifier=verifier).solve("q", cycling("4", "4", "5"))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("strategy", ["majority", "best_of_n"])
def test_nan_and_plus_inf_scores_are_refused_naming_the_verifier(bad, strategy):
    verifier = Programmatic(lambda p, c: bad, name="broken")
    make = ttc.MajorityVote if strategy == "majority" else ttc.BestOfN
    with pytest.raises(ttc.InvalidInput, match="'broken'"):
        make(n=2, verifier=verifier).solve("q", cycling("4", "5"))


def test_minus_inf_weighs_zero_in_a_vote_and_has_probability_zero_in_soft_best_of_n():
    scores = {"4": -math.inf, "5": 0.25}
    verifier = Programmatic(lambda p, c: scores[c.answer], name="v")
    result = ttc.MajorityVote(n=3, verifier=verifier).solve("q", cycling("4", "4", "5"))
    assert result.answer == "5" and result.details["votes"] == {"4": 0.0, "5": 0.25}
    for seed in range(20):
        soft = ttc.BestOfN(n=3, verifier=verifier, selection="softmax").solve("q", cycling("4", "4", "5"), seed=seed)
        assert soft.answer == "5"


def test_all_zero_weighted_vote_falls_back_to_the_unweighted_plurality():
    # review repro: every trace under the confidence filter's threshold -> weights all 0; the
    # first-seen answer ("4") used to win silently over the plurality ("5", 3 of 4)
    from ttc.probes import TokenConfidence

    def shaky(a):
        return ScriptedResponse(f"hmm \\boxed{{{a}}}", (-3.0, -3.0, -3.0))
    llm = Scripted([shaky(4), shaky(5), shaky(5), shaky(5)])
    probe = TokenConfidence(window=2, threshold=-1.0, top_k=0)
    result = ttc.MajorityVote(n=4, verifier=probe.filter(),
                              sample=ttc.Sample(params=ttc.SamplingParams(logprobs=True))).solve("q", llm)
    assert result.details["votes"] == {"4": 0.0, "5": 0.0}
    assert result.answer == "5"
    assert result.details["vote_fallback"] == ttc.votes.ALL_ZERO_FALLBACK


def test_weighted_vote_with_positive_weights_records_no_fallback():
    scores = {"4": 0.9, "5": 0.2}
    verifier = Programmatic(lambda p, c: scores[c.answer], name="v")
    result = ttc.MajorityVote(n=3, verifier=verifier).solve("q", cycling("4", "5", "5"))
    assert result.answer == "4" and "vote_fallback" not in result.details


def test_import_ttc_alone_exposes_models_smollm2():
    # in a fresh interpreter: other tests import ttc.models, which would hide the AttributeError
    import subprocess
    import sys

    code = "import ttc; print(callable(ttc.models.smollm2), callable(ttc.votes.weighted_vote))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
