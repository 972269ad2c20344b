"""Verifiers, PRMs and probes declare what they need; the strategy holding one asks its sampler for it.
And failures are loud: `solve_many` says how many problems failed, and a result without an answer
says why.

Issue 20's first problem: the README's quickstart (`BestOfN(n=4, verifier=LogprobConfidence(),
sample=short)`, where `short` does not ask for logprobs) printed `[None, None] 0 right`, every problem
failed, and nothing said so.
"""

from __future__ import annotations

import asyncio
import math
import re
import warnings
from pathlib import Path

import pytest

import ttc
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.needs import Needs, fill
from ttc.probes import AnswerConsistency, AnyOf, TokenConfidence
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import StreamSample
from ttc.strategies.registry import STRATEGIES, make_strategy
from ttc.verifiers import LogprobConfidence, ProgrammaticPRM

ROOT = Path(__file__).resolve().parents[1]
GOLD = {"17 + 25": "42", "pencils": "8", "apples": "7"}


def quickstart_block() -> str:
    """The README's Python quickstart: the block that builds the BestOfN of issue 20."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if "LogprobConfidence(), sample=short" in b]
    assert len(found) == 1, "the README's quickstart block with BestOfN(LogprobConfidence(), sample=short)"
    return found[0]


def answering(prompt: str, params: ttc.SamplingParams, i: int) -> str:
    """A scripted model that answers each of the README's questions right, in a short sentence."""
    value = next((v for k, v in GOLD.items() if k in prompt), "5")
    return f"They have {value} in all. The answer is {value}."


def run_quickstart(llm, monkeypatch) -> dict:
    """Run the README's quickstart block as written, with `ttc.backends.Transformers()` giving `llm`."""
    monkeypatch.setattr(ttc.backends, "Transformers", lambda *args, **kwargs: llm)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(quickstart_block(), "README.md:quickstart", "exec"), namespace)
    return namespace


# -- the README's quickstart -----------------------------------------------------------------------
def test_the_readme_quickstart_best_of_n_gets_answers(monkeypatch, capsys):
    llm = Scripted(answering)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ttc.ProblemsFailed)  # a failed problem would raise here
        ns = run_quickstart(llm, monkeypatch)
    results = ns["results"]
    assert isinstance(results, ttc.Results) and isinstance(results, list)
    assert [r.error for r in results] == [None, None]
    assert [r.answer for r in results] == ["42", "8"]
    assert results.failed == 0 and results.first_error is None
    # mean_logprob read the logprobs that BestOfN asked `short` for: every score is a real number
    assert all(math.isfinite(c.scores["mean_logprob"]) for r in results for c in r.candidates)
    best_requests = [p for text, p in llm.requests if "pencils" in text or "17 + 25" in text]
    assert best_requests and all(p.logprobs is True for p in best_requests)
    # the user's `short` itself was not changed: still unspecified, so the plain vote asks for none
    assert ns["short"].params.logprobs is None
    out = capsys.readouterr().out
    assert "['42', '8'] 2 right" in out and "0 failed" in out


def test_the_quickstart_setup_names_the_conflict_when_logprobs_are_refused():
    refused = ttc.Sample(params=ttc.SamplingParams(max_tokens=96, logprobs=False))
    with pytest.raises(ttc.InvalidInput) as info:
        ttc.BestOfN(n=4, verifier=LogprobConfidence(), sample=refused)
    message = str(info.value)
    assert "'mean_logprob'" in message and "BestOfN" in message and "logprobs=False" in message


# -- one mechanism: every holder asks its sampler ----------------------------------------------------
def test_needs_combine_as_a_union():
    both = Needs(logprobs=True) | Needs(top_logprobs=3) | Needs(top_logprobs=5, hidden_states=True)
    assert both == Needs(logprobs=True, top_logprobs=5, hidden_states=True)
    assert Needs.union([]) == Needs() and not Needs()
    assert both.sampling == Needs(logprobs=True, top_logprobs=5)
    assert both.describe() == "token logprobs and the top-5 logprobs of every token and hidden states"
    with pytest.raises(ttc.InvalidInput, match="top_logprobs"):
        Needs(top_logprobs=-1)
    with pytest.raises(ttc.InvalidInput, match="logprobs"):
        Needs(logprobs=1)


def test_sampling_params_leave_logprobs_unspecified_and_keep_explicit_settings():
    params = ttc.SamplingParams()
    assert params.logprobs is None and params.top_logprobs is None
    assert fill(params, Needs(logprobs=True, top_logprobs=5), who="x") == params.replace(logprobs=True,
                                                                                          top_logprobs=5)
    explicit = ttc.SamplingParams(logprobs=True, top_logprobs=10)
    assert fill(explicit, Needs(logprobs=True, top_logprobs=5), who="x") is explicit  # more is kept
    assert fill(ttc.SamplingParams(logprobs=False), Needs(), who="x").logprobs is False
    with pytest.raises(ttc.InvalidInput, match="True, False or None"):
        ttc.SamplingParams(logprobs=5)
    with pytest.raises(ttc.InvalidInput, match="top_logprobs"):
        ttc.SamplingParams(top_logprobs=-1)


def test_scorers_declare_what_they_read():
    assert LogprobConfidence().needs == Needs(logprobs=True)
    assert LogprobConfidence("self_certainty", top_k=3).needs == Needs(top_logprobs=3)
    confidence = TokenConfidence(top_k=0)
    assert confidence.needs == Needs(logprobs=True) and confidence.filter().needs == Needs(logprobs=True)
    assert AnswerConsistency().needs == Needs()
    assert AnyOf([AnswerConsistency(), TokenConfidence(top_k=4)]).needs == Needs(logprobs=True, top_logprobs=4)
    assert ttc.verifiers.Programmatic(lambda p, c: 1.0).needs == Needs()
    # a plain function that reads logprobs says so, and gets them from a sampler that did not ask
    reads = ttc.verifiers.Programmatic(lambda p, c: sum(c.completion.logprobs), log_scale=True,
                                      needs=Needs(logprobs=True))
    vote = ttc.MajorityVote(n=2, verifier=reads, sample=ttc.Sample(params=ttc.SamplingParams(max_tokens=8)))
    assert vote.sample.params.logprobs is True
    assert vote.solve("3 + 4?", Scripted(["The answer is 7."])).answer == "7"
    with pytest.raises(ttc.InvalidInput, match="Programmatic.needs must be a ttc.needs.Needs"):
        ttc.verifiers.Programmatic(lambda p, c: 1.0, needs={"logprobs": True})


@pytest.mark.parametrize("holder", ["BestOfN", "MajorityVote"])
def test_a_verifier_gets_what_it_needs_from_any_holder_and_sampler(holder):
    make = {"BestOfN": lambda v, s: ttc.BestOfN(n=2, verifier=v, sample=s),
            "MajorityVote": lambda v, s: ttc.MajorityVote(n=2, verifier=v, sample=s)}[holder]
    unspecified = ttc.SamplingParams(max_tokens=32)
    for sample in (None, ttc.Sample(params=unspecified), EarlyExit(AnswerConsistency(), params=unspecified)):
        strategy = make(LogprobConfidence(), sample)
        assert strategy.sample.params.logprobs is True, (holder, sample)
        strategy = make(LogprobConfidence("self_certainty", top_k=4), sample)
        assert strategy.sample.params.top_logprobs == 4, (holder, sample)
        # DeepConf-offline's filter reads the sampled token's logprob (top_k=0): it used to get none
        assert make(TokenConfidence(top_k=0).filter(), sample).sample.params.logprobs is True
    # explicit settings that ask for more are kept as they are (the same sampler object)
    rich = ttc.Sample(params=ttc.SamplingParams(logprobs=True, top_logprobs=10))
    assert make(LogprobConfidence("self_certainty"), rich).sample is rich


@pytest.mark.parametrize("build, names", [
    (lambda: ttc.BestOfN(n=2, verifier=LogprobConfidence("self_certainty"),
                         sample=ttc.Sample(params=ttc.SamplingParams(top_logprobs=2))),
     ["'self_certainty'", "top-5", "top_logprobs=2"]),
    (lambda: ttc.MajorityVote(n=2, verifier=LogprobConfidence(),
                              sample=ttc.Sample(params=ttc.SamplingParams(logprobs=False))),
     ["'mean_logprob'", "MajorityVote", "logprobs=False"]),
    (lambda: ttc.MajorityVote(n=2, verifier=TokenConfidence(top_k=0).filter(),
                              sample=EarlyExit(AnswerConsistency(), params=ttc.SamplingParams(logprobs=False))),
     ["'confidence_filter'", "sample=EarlyExit", "logprobs=False"]),
    (lambda: ttc.RPC(n=2, sample=ttc.Sample(params=ttc.SamplingParams(logprobs=False))),
     ["RPC", "logprobs=False"]),
    (lambda: ttc.DeepConf(n=4, warmup=2, top_k=20, params=ttc.SamplingParams(top_logprobs=5)),
     ["DeepConf(top_k=20)", "top-20", "top_logprobs=5"]),
    (lambda: ttc.DeepConf(n=4, warmup=2, params=ttc.SamplingParams(logprobs=False)),
     ["DeepConf", "logprobs=False"]),
    (lambda: EarlyExit(TokenConfidence(top_k=0), params=ttc.SamplingParams(logprobs=False)),
     ["'token_confidence'", "logprobs=False"]),
    (lambda: EarlyExit(AnyOf([AnswerConsistency(), TokenConfidence(top_k=3)]),
                       params=ttc.SamplingParams(top_logprobs=1)),
     ["'any_of'", "top-3", "top_logprobs=1"]),
    (lambda: ttc.BestOfN(n=2, verifier=LogprobConfidence("self_certainty"),
                         sample=EarlyExit(AnswerConsistency(), mode="stream")),
     ["'self_certainty'", "top-5", "mode='stream'"]),
    (lambda: ttc.BestOfN(n=2, verifier=LogprobConfidence("self_certainty"), sample=StreamSample()),
     ["'self_certainty'", "top-5", "StreamSample"]),
])
def test_an_explicit_setting_that_refuses_a_need_is_an_error_at_construction_naming_both(build, names):
    with pytest.raises(ttc.InvalidInput) as info:
        build()
    for name in names:
        assert name in str(info.value), (name, str(info.value))


def test_a_sampler_without_params_is_refused_only_when_something_is_needed():
    class Custom(ttc.Sampler):
        async def candidate(self, problem, ctx):
            raise AssertionError("not reached")

    with pytest.raises(ttc.InvalidInput, match=r"mean_logprob.*sample=Custom.*SamplingParams\(logprobs=True\)"):
        ttc.BestOfN(n=2, verifier=LogprobConfidence(), sample=Custom())
    assert isinstance(ttc.BestOfN(n=2, verifier=lambda p, c: 1.0, sample=Custom()).sample, Custom)


def test_a_step_search_asks_for_what_its_prm_reads():
    class LogprobPRM(ProgrammaticPRM):
        needs = Needs(logprobs=True)

    prm = LogprobPRM(lambda problem, steps: 0.5)
    search = ttc.BeamSearch(width=1, expansions=2, prm=prm, steps=ttc.StepConfig(max_steps=2, max_step_tokens=8))
    assert search.params.logprobs is True
    llm = Scripted(["Step one.\n\n", "The answer is 7."])
    search.solve("3 + 4?", llm)
    assert llm.requests and all(p.logprobs is True for _, p in llm.requests)
    assert prm.as_verifier().needs == Needs(logprobs=True)
    with pytest.raises(ttc.InvalidInput, match="'programmatic_prm'.*logprobs=False"):
        ttc.BeamSearch(prm=prm, params=ttc.SamplingParams(logprobs=False))
    assert ttc.BeamSearch(prm=ProgrammaticPRM(lambda problem, steps: 0.5)).params.logprobs is None


def _scored(prompt: str, params: ttc.SamplingParams, i: int) -> ScriptedResponse:
    """ "The answer is 7." with a logprob and top-5 alternatives for each of its 7 tokens."""
    return ScriptedResponse("The answer is 7.", (-0.2,) * 7, ({1: -0.2, 2: -2.0, 3: -3.0, 4: -4.0, 5: -5.0},) * 7)


@pytest.mark.parametrize("kind", ["mean_logprob", "self_certainty"])
def test_every_registered_strategy_given_a_logprob_verifier_gets_its_logprobs(kind):
    """Built by name (as `ttc run`, `ttc eval` and `ttc serve` do) from params that do not ask for
    logprobs: each strategy either refuses the verifier, or runs and its verifier reads real scores."""
    params = ttc.SamplingParams(max_tokens=24)  # logprobs unspecified
    scored = set()
    for name in STRATEGIES:
        try:
            strategy = make_strategy(name, n=2, verifier=LogprobConfidence(kind), params=params)
        except ttc.InvalidInput as exc:
            assert "verifier" in str(exc) or "outcome verifier" in str(exc), (name, exc)
            continue
        # budget forcing needs a reasoning model: a Qwen3-style one, which here answers without thinking
        llm = Scripted(_scored, thinking="qwen3") if name == "budget_forcing" else Scripted(_scored)
        result = strategy.solve("3 + 4?", llm, seed=0)
        assert result.error is None and result.answer == "7", (name, result)
        scores = [c.scores[kind] for c in result.candidates if kind in c.scores]
        if scores:
            scored.add(name)
            assert all(math.isfinite(s) for s in scores), (name, scores)
    assert {"majority", "best_of_n", "early_exit"} <= scored


# -- failures are loud -------------------------------------------------------------------------------
def test_solve_many_warns_once_with_the_count_and_the_first_error():
    llm = Scripted(["The answer is 7."])
    with pytest.warns(ttc.ProblemsFailed) as record:
        results = ttc.solve_many(ttc.MajorityVote(n=2), ["3 + 4?", "", "   "], llm, progress=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 of 3 problems failed" in message and "Problem.question is empty" in message
    assert record[0].filename == __file__  # it points at the caller's line, not at ttc's loop
    assert isinstance(results, ttc.Results) and len(results) == 3
    assert results.failed == 2 and [r.ok for r in results] == [True, False, False]
    assert results.first_error.startswith("InvalidInput: Problem.question is empty")
    assert results.failures == [results[1], results[2]] and results.no_answer == 2
    assert results[0].answer == "7"


def test_a_run_without_failures_is_silent_and_warn_false_silences_it():
    llm = Scripted(["The answer is 7."])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = ttc.solve_many(ttc.MajorityVote(n=2), ["3 + 4?"], llm, progress=False)
        assert results.failed == 0 and results.summary() == "1 problems, none failed"
        assert ttc.solve_many(ttc.MajorityVote(n=2), [""], llm, progress=False, warn=False).failed == 1


def test_asolve_many_warns_once_too():
    async def main():
        return await ttc.asolve_many(ttc.MajorityVote(n=2), ["", "3 + 4?"], Scripted(["It is 7."]), progress=False)

    with pytest.warns(ttc.ProblemsFailed, match="1 of 2 problems failed") as record:
        results = asyncio.run(main())
    assert len(record) == 1 and results.failed == 1 and isinstance(results, ttc.Results)


def test_a_shared_budget_run_returns_results_too():
    llm = Scripted(["The answer is 7."])
    results = ttc.solve_many(ttc.MajorityVote(n=2, sample=ttc.Sample(params=ttc.SamplingParams(max_tokens=16))),
                             ["3 + 4?", "2 + 5?"], llm, progress=False, total_budget=ttc.Budget(tokens=2000))
    assert isinstance(results, ttc.Results) and results.failed == 0


def test_a_result_without_an_answer_says_why():
    cut = ttc.Sample(params=ttc.SamplingParams(max_tokens=3)).solve("3 + 4?", Scripted(["The answer is 7."]))
    assert cut.answer is None and cut.no_answer_reason.startswith("cut at max_tokens")
    assert "no_answer_reason='cut at max_tokens" in repr(cut)
    silent = ttc.MajorityVote(n=2).solve("3 + 4?", Scripted(["I would rather not say."]))
    assert silent.answer is None
    assert silent.no_answer_reason == "nothing extractable: no candidate stated an answer (2 finished)"
    failed = ttc.solve_many(ttc.MajorityVote(n=2), [""], Scripted(["x"]), progress=False, warn=False)[0]
    assert failed.no_answer_reason.startswith("error: InvalidInput")
    assert failed.to_dict()["no_answer_reason"] == failed.no_answer_reason
    answered = ttc.Sample().solve("3 + 4?", Scripted(["The answer is 7."]))
    assert answered.no_answer_reason is None and "no_answer_reason" not in repr(answered)
    picky = ttc.BestOfN(n=2, verifier=lambda problem, c: float(c.answer is None))
    chose = picky.solve("3 + 4?", Scripted(["The answer is 7.", "No idea."]))
    assert chose.no_answer_reason == "the chosen candidate has no answer: 1 of 2 candidates had one"


def test_backends_treat_unspecified_logprobs_as_not_asked():
    llm = Scripted([ScriptedResponse("It is 7.", (-0.1,) * 5, ({1: -0.1},) * 5)])
    (plain,) = asyncio.run(llm.generate("q", ttc.SamplingParams())).completions
    assert plain.logprobs is None and plain.top_logprobs is None
    (asked,) = asyncio.run(llm.generate("q", ttc.SamplingParams(logprobs=True))).completions
    assert asked.logprobs == (-0.1,) * 5 and asked.top_logprobs is None


# -- the real model ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_readme_quickstart_best_of_n_answers_on_the_real_model(smollm2, monkeypatch, capsys):
    """The README's quickstart as written, on SmolLM2-135M-Instruct: no problem fails (it used to be
    every one), the verifier read real logprobs, and every problem has an answer."""
    ns = run_quickstart(smollm2, monkeypatch)
    results = ns["results"]
    assert results.failed == 0, results.first_error
    assert all(r.answer is not None for r in results), [r.no_answer_reason for r in results]
    scores = [c.scores["mean_logprob"] for r in results for c in r.candidates]
    assert len(scores) == 8 and all(math.isfinite(s) and s < 0 for s in scores)
    assert "0 failed" in capsys.readouterr().out
