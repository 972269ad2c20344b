"""Solve-Detect-Verify's logic on the Scripted backend: where the detector stops a trace, when the
verifier escalates, stop on an accepted answer, a refining round with the critique on a rejected one,
and that every request's tokens are in the usage and under the budget."""

from __future__ import annotations

import itertools

import pytest

import ttc
from ttc.backends import Scripted
from ttc.hesitation import DONE_THINKING, HESITATION_WORDS, find_hesitations, hesitation_pattern, split_paragraphs
from ttc.probes import PLAIN_SUFFIX, SolutionComplete
from ttc.probes.completion import complete_by_logprobs
from ttc.strategies.registry import make_strategy, worst_case
from ttc.verifiers import FlexVerifier
from ttc.verifiers.flex import Check, majority, read_verdict

PATTERN = hesitation_pattern(HESITATION_WORDS)
TRACE = "Tom has 3 apples and gets 4 more, so 3 + 4 = 7.\nWait, is that right? 3 + 4 = 7.\nHmm, yes it is 7."
DETECT = "complete solution"  # in the detector's question
VERIFY = "[Solution]"  # in the verifier's prompt
REFINE = "A verifier found an error"  # in the refining round's prompt


def assistant_text(prompt: str) -> str:
    """What the solver wrote so far: after the last assistant tag of a Scripted chat prompt, or after
    the raw prompt (its refining turn, which ends with the feedback message, or "Answer:")."""
    if "<assistant>\n" in prompt:
        return prompt.rsplit("<assistant>\n", 1)[1]
    if REFINE in prompt:
        return prompt.rsplit("with the final answer at the end.\n\n", 1)[1]
    return prompt.split("Answer:", 1)[1]


def shown_solution(prompt: str) -> str:
    """The partial solution the detector's question shows (the assistant turn before it)."""
    return prompt.split("<assistant>\n")[-2].split("\n<user>\n")[0]


def make_llm(trace: str = TRACE, complete: tuple[str, ...] = ("Hmm",), verdicts=("\\boxed{-1}",),
             answer: str = " 7", refined: str = "Tom has 3 + 4 = 7 apples.") -> Scripted:
    """A solver that writes `trace` chunk by chunk, says its solution is complete at the words in
    `complete`, answers `answer` when asked, and a verifier that cycles through `verdicts`."""
    verdict = itertools.cycle(verdicts)

    def script(prompt: str, params: ttc.SamplingParams, i: int) -> str:
        if DETECT in prompt:
            solution = shown_solution(prompt)
            last = find_hesitations(TRACE, PATTERN)
            # the word the trace was cut before: the first hesitation word after the solution shown
            word = next((w for at, w in last if at >= len(solution.rstrip())), "")
            return "Yes" if word in complete else "No"
        if VERIFY in prompt:
            return next(verdict)
        if prompt.endswith(PLAIN_SUFFIX):
            return answer
        full = refined if REFINE in prompt else trace
        return full[len(assistant_text(prompt)):]

    return Scripted(script)


def detector(every: int = 4) -> SolutionComplete:
    return SolutionComplete(every=every)


def requests_of(llm: Scripted, marker: str) -> list[tuple[str, ttc.SamplingParams]]:
    return [(p, params) for p, params in llm.requests if marker in p]


# -- the pure parts -----------------------------------------------------------------------------
def test_hesitation_words_only_at_step_boundaries():
    text = "We await the sum. Wait, check. I wait here.\nhmm ok. Let me check: 7. Waiting is long.\n'Alternatively' x"
    found = find_hesitations(text, PATTERN)
    assert [w for _, w in found] == ["Wait", "hmm", "Let me check", "Alternatively"]
    assert [text[at:at + len(w)] for at, w in found] == [w for _, w in found]
    assert find_hesitations(text, PATTERN, start=found[1][0] + 1) == found[2:]
    assert find_hesitations(text, PATTERN, start=found[1][0]) == found[1:]  # a word at `start` counts
    assert find_hesitations(text, PATTERN, start=found[3][0]) == found[3:]  # from the word, not its quote


def test_the_longest_word_wins_where_one_begins_another():
    pattern = hesitation_pattern(("wait", "wait a second"))
    assert find_hesitations("x.\nWait a second, y.", pattern) == [(3, "Wait a second")]


def test_paragraphs_are_cut_before_each_hesitation_word():
    assert split_paragraphs("a = 1.\nWait, b = 2. Hmm c.", PATTERN) == ["a = 1.", "Wait, b = 2.", "Hmm c."]
    assert split_paragraphs("Wait. x", PATTERN) == ["Wait. x"]


def test_complete_is_yes_more_probable_than_no():
    assert complete_by_logprobs({"Yes": -0.1, "No": -2.0}) > 0.5
    assert complete_by_logprobs({" yes": -3.0, "No": -0.2}) < 0.5
    assert complete_by_logprobs({"Maybe": -0.1}) == 0.5  # neither seen: not complete
    assert complete_by_logprobs({"Yes": -1.0}) == 1.0  # No absent counts as -inf


def test_verdicts_are_read_from_the_last_box():
    assert read_verdict("paragraph 2 is wrong \\boxed{2}") == (False, 2)
    assert read_verdict("\\boxed{1} no wait \\boxed{-1}") == (True, -1)
    assert read_verdict("\\boxed{-2}") == (None, None)
    assert read_verdict("\\boxed{0}") == (False, 0)
    assert read_verdict("no verdict") == (None, None)


def test_majority_of_readable_checks_and_its_share():
    def c(valid, step):
        return Check("fast", valid, step, 1)
    assert majority([c(True, -1), c(None, None), c(True, -1), c(False, 2)]) == ((True, -1), 2 / 3)
    assert majority([c(False, 2), c(True, -1)]) == ((False, 2), 0.5)  # a tie: the first seen
    assert majority([c(False, 1), c(False, 2), c(False, 2)]) == ((False, 2), 2 / 3)  # same paragraph only
    assert majority([c(None, None)]) == (None, 0.0)


# -- detection ----------------------------------------------------------------------------------
def test_trace_stops_before_the_first_word_where_the_model_says_complete():
    llm = make_llm(complete=("Hmm",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    rounds = r.details["rounds"]
    assert [(d["word"], d["complete"]) for d in rounds[0]["detections"]] == [("Wait", False), ("Hmm", True)]
    cut = TRACE.index("Hmm")
    ids = llm._ids(TRACE[:cut])
    assert rounds[0]["detections"][1]["at"] == len(ids)  # tokens before the word
    assert rounds[0]["detections"][0]["at"] == len(llm._ids(TRACE[:TRACE.index("Wait")]))
    cand = r.candidates[0]
    assert cand.finish_reason == "early_exit"
    assert cand.text == TRACE[:cut] + PLAIN_SUFFIX + " 7"
    assert r.answer == "7"
    # the detector saw the solution up to the word (not past it)
    shown = [shown_solution(p) for p, _ in requests_of(llm, DETECT)]
    assert shown[1].rstrip() == TRACE[:cut].rstrip()
    assert all(params.max_tokens == 1 and params.top_logprobs for _, params in requests_of(llm, DETECT))


def test_a_stream_stops_at_the_same_point():
    llm = make_llm(complete=("Hmm",))
    r = ttc.SolveDetectVerify(detector=detector(), mode="stream").solve("Tom?", llm)
    assert [d["word"] for d in r.details["rounds"][0]["detections"]] == ["Wait", "Hmm"]
    assert r.candidates[0].text == TRACE[:TRACE.index("Hmm")] + PLAIN_SUFFIX + " 7"
    assert r.usage.closed_streams == 1


def test_no_completion_point_lets_the_trace_end_on_its_own():
    llm = make_llm(complete=())
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    assert r.candidates[0].finish_reason == "stop"
    assert r.candidates[0].text == TRACE
    assert [d["complete"] for d in r.details["rounds"][0]["detections"]] == [False, False]
    assert r.answer == "7"


def test_a_word_still_being_written_is_not_taken_for_a_hesitation():
    trace = "So 3 + 4 = 7.\nWaiting for nothing, the answer is 7."
    llm = make_llm(trace=trace, complete=("Wait",))
    r = ttc.SolveDetectVerify(detector=detector(every=1), rounds=1).solve("Tom?", llm)
    assert r.details["rounds"][0]["detections"] == []
    assert not requests_of(llm, DETECT)


def test_hesitation_words_are_given_without_their_spaces():
    probe = SolutionComplete(words=(" Hmm ",))
    assert probe.words == ("Hmm",)
    assert [w for _, w in find_hesitations(TRACE, probe.pattern)] == ["Hmm"]


def test_max_checks_bounds_the_completeness_requests():
    llm = make_llm(complete=())
    r = ttc.SolveDetectVerify(detector=SolutionComplete(every=4, max_checks=1), rounds=1).solve("Tom?", llm)
    assert len(r.details["rounds"][0]["detections"]) == 1
    assert len(requests_of(llm, DETECT)) == 1


def test_a_reasoning_model_is_watched_inside_its_thinking_only():
    trace = "<think>3 + 4 = 7.\nWait, fine.</think>So 7.\nHmm, done."
    probe = SolutionComplete(thinking="qwen3")
    assert probe.watched(trace) == "<think>3 + 4 = 7.\nWait, fine."
    llm = make_llm(trace=trace, complete=())
    r = ttc.SolveDetectVerify(detector=SolutionComplete(every=4, thinking="qwen3"), rounds=1).solve("Tom?", llm)
    assert [d["word"] for d in r.details["rounds"][0]["detections"]] == ["Wait"]
    # the completeness question closes the thinking first, as the authors ask it
    assert all(p.endswith(DONE_THINKING + "</think>\n\n") for p, _ in requests_of(llm, DETECT))


def test_a_reasoning_model_answers_after_closing_its_thinking():
    s = ttc.SolveDetectVerify(thinking="deepseek_r1")
    assert s.answer_suffix.startswith("\n</think>")
    assert s.detector.thinking.name == "deepseek_r1" and s.thinking.name == "deepseek_r1"


# -- verification -------------------------------------------------------------------------------
def test_agreeing_fast_checks_settle_the_verdict_without_slow_checks():
    llm = make_llm(verdicts=("\\boxed{-1}",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert v["valid"] is True and v["escalated"] is False and v["agreement"] == 1.0
    assert [c["mode"] for c in v["checks"]] == ["fast"] * 4
    assert [params.max_tokens for _, params in requests_of(llm, VERIFY)] == [48] * 4
    assert r.details["stopped_by"] == "verified" and r.candidates[0].scores["verified"] == 1.0
    assert not requests_of(llm, REFINE)  # stopped: no second round
    assert len(r.details["rounds"]) == 1


def test_disagreeing_fast_checks_escalate_to_slow_checks():
    # fast: -1, -1, -1, 1 (agreement 0.75 < 0.9); slow (ceil(4/4) = 1 check): -1
    llm = make_llm(verdicts=("\\boxed{-1}", "\\boxed{-1}", "\\boxed{-1}", "\\boxed{1}", "\\boxed{-1}"))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert v["escalated"] is True and v["agreement"] == 0.75
    assert [c["mode"] for c in v["checks"]] == ["fast"] * 4 + ["slow"]
    assert [params.max_tokens for _, params in requests_of(llm, VERIFY)] == [48] * 4 + [384]
    assert "review every paragraph" in requests_of(llm, VERIFY)[-1][0]
    assert v["valid"] is True and r.details["stopped_by"] == "verified"
    assert r.details["escalations"] == 1


def test_the_slow_checks_decide_against_the_fast_majority():
    llm = make_llm(verdicts=("\\boxed{-1}", "\\boxed{-1}", "\\boxed{0}", "\\boxed{1}", "critique \\boxed{1}"))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert (v["valid"], v["error_step"], v["escalated"]) == (False, 1, True)
    assert v["feedback"] == "critique"


def test_threshold_at_the_agreement_does_not_escalate():
    llm = make_llm(verdicts=("\\boxed{-1}", "\\boxed{-1}", "\\boxed{-1}", "\\boxed{1}"))
    verifier = FlexVerifier(threshold=0.75)
    r = ttc.SolveDetectVerify(verifier=verifier, detector=detector()).solve("Tom?", llm)
    assert r.details["rounds"][0]["verification"]["escalated"] is False


def test_no_slow_checks_keeps_the_fast_majority():
    llm = make_llm(verdicts=("\\boxed{-1}", "\\boxed{-1}", "\\boxed{2}", "\\boxed{1}"))
    r = ttc.SolveDetectVerify(verifier=FlexVerifier(slow=0), detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert (v["valid"], v["escalated"], len(v["checks"])) == (True, True, 4)  # unsure, but nothing to escalate to


def test_a_rejected_answer_gets_a_refining_round_with_the_critique():
    llm = make_llm(verdicts=("The sum is wrong \\boxed{1}",), answer=" 8")
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    rounds = r.details["rounds"]
    assert len(rounds) == 2 and r.details["stopped_by"] == "max_rounds"
    assert r.candidates[0].scores["verified"] == 0.0
    assert rounds[0]["verification"]["valid"] is False and rounds[0]["answer"] == "8"
    assert "verification" not in rounds[1]  # the last round is answered unverified
    refine = requests_of(llm, REFINE)
    assert refine, "no refining round"
    prompt = refine[0][0]
    assert "first in paragraph 1" in prompt and "The sum is wrong" in prompt and "\\boxed{1}" not in prompt
    assert TRACE[:TRACE.index("Hmm")] in prompt  # the previous solution is shown
    assert r.candidates[0].text == "Tom has 3 + 4 = 7 apples."
    assert r.answer == "7"
    assert len(requests_of(llm, VERIFY)) == 4  # only the first round was verified


def test_a_raw_text_prompt_is_refined_as_raw_text():
    llm = make_llm(verdicts=("Off. \\boxed{0}",))
    raw = "Question: Tom?\nAnswer:"
    problem = ttc.Problem("Tom?", metadata={"prompt": raw})
    r = ttc.SolveDetectVerify(detector=detector()).solve(problem, llm)
    refine = requests_of(llm, REFINE)
    assert refine and refine[0][0].startswith(raw + TRACE[:TRACE.index("Hmm")])
    assert "<user>" not in refine[0][0]  # no chat template around a raw prompt
    assert "first in paragraph 0" in refine[0][0] and "Off." in refine[0][0]
    assert len(r.details["rounds"]) == 2


def test_a_prompt_that_is_not_text_is_refined_as_a_conversation():
    llm = make_llm(verdicts=("Off. \\boxed{0}",))
    problem = ttc.Problem("Tom?", metadata={"prompt": ["not", "text"]})  # ChatPrompt ignores it too
    ttc.SolveDetectVerify(detector=detector()).solve(problem, llm)
    refine = requests_of(llm, REFINE)[0][0]
    assert refine.startswith("<user>") and "<assistant>\n" + TRACE[:TRACE.index("Hmm")] in refine


def test_more_rounds_verify_every_round_but_the_last():
    llm = make_llm(verdicts=("\\boxed{0}",))
    r = ttc.SolveDetectVerify(detector=detector(), rounds=3).solve("Tom?", llm)
    assert ["verification" in x for x in r.details["rounds"]] == [True, True, False]
    assert len(requests_of(llm, VERIFY)) == 8


def test_one_round_is_detection_only():
    llm = make_llm()
    r = ttc.SolveDetectVerify(detector=detector(), rounds=1).solve("Tom?", llm)
    assert not requests_of(llm, VERIFY)
    assert r.details["stopped_by"] == "max_rounds" and r.usage.verifier_calls == 0


def test_no_readable_verdict_keeps_the_answer():
    llm = make_llm(verdicts=("I am not sure",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert v["valid"] is None and v["escalated"] is True  # nothing readable: escalated, still nothing
    assert r.details["stopped_by"] == "unsure" and r.answer == "7"
    assert not requests_of(llm, REFINE)


def test_a_separate_verifier_model_is_asked_instead_of_the_solver():
    judge = Scripted(["\\boxed{-1}"])
    llm = make_llm(verdicts=("\\boxed{3}",))
    r = ttc.SolveDetectVerify(verifier=FlexVerifier(judge), detector=detector()).solve("Tom?", llm)
    assert not requests_of(llm, VERIFY) and len(judge.requests) == 4
    assert r.details["stopped_by"] == "verified"


def test_a_reasoning_verifiers_feedback_is_its_thinking():
    judge = Scripted(["<think>the sum is off</think> so \\boxed{0}"])
    llm = make_llm()
    s = ttc.SolveDetectVerify(verifier=FlexVerifier(judge, thinking="qwen3"), detector=detector())
    r = s.solve("Tom?", llm)
    assert r.details["rounds"][0]["verification"]["feedback"] == "the sum is off"
    refine = requests_of(llm, REFINE)[0][0]
    assert "the sum is off" in refine and "so" not in refine.split("critique:")[1].split("Correct your")[0]


def test_a_reasoning_verifier_checks_fast_with_its_thinking_closed():
    judge = Scripted(["thinking about it</think>\\boxed{-1}"])
    llm = make_llm()
    s = ttc.SolveDetectVerify(verifier=FlexVerifier(judge, thinking="deepseek_r1"), detector=detector())
    s.solve("Tom?", llm)
    assert all(p.endswith(DONE_THINKING + "</think>\n\n") for p, _ in judge.requests)
    assert "Answer at once" not in judge.requests[0][0]


# -- usage and budget ---------------------------------------------------------------------------
def _tokens(llm: Scripted, prompt: str, params: ttc.SamplingParams) -> int:
    return len(llm._ids(prompt))


def test_every_request_is_in_the_usage():
    llm = make_llm(verdicts=("\\boxed{-1}", "\\boxed{-1}", "\\boxed{-1}", "\\boxed{1}", "\\boxed{2}"))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    verifier = requests_of(llm, VERIFY)
    assert r.usage.verifier_calls == len(verifier) == 5
    checks = [c["tokens"] for x in r.details["rounds"] if "verification" in x for c in x["verification"]["checks"]]
    assert r.usage.verifier_tokens == sum(checks) == r.details.rounds[0].verdict.tokens
    verifier_prompts = sum(len(llm._ids(p)) for p, _ in verifier)
    assert r.usage.verifier_tokens > verifier_prompts  # prompts and the verdicts generated
    others = [p for p, _ in llm.requests if VERIFY not in p]
    assert r.usage.prompt_tokens == sum(len(llm._ids(p)) for p in others)
    assert r.usage.generator_calls == len(others)
    assert r.usage.prompt_tokens + r.usage.completion_tokens + r.usage.verifier_tokens == \
        sum(len(llm._ids(p)) for p, _ in llm.requests) + llm.generated_tokens
    cand = r.candidates[0]
    assert (cand.usage.total_tokens, cand.usage.verifier_tokens, cand.usage.verifier_calls) == \
        (r.usage.total_tokens, r.usage.verifier_tokens, r.usage.verifier_calls)
    assert cand.scores["verifications"] == 1 and cand.scores["escalations"] == 1


def test_a_token_budget_counts_the_verifier_and_stops_before_it_is_exceeded():
    llm = make_llm(verdicts=("\\boxed{1}",))
    free = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm)
    first = free.details["rounds"][0]["tokens"]
    verify_cost = free.usage.verifier_tokens
    assert free.details["stopped_by"] == "max_rounds"
    # no room to verify (a check's prompt alone is ~100 tokens); room to verify but not to refine
    for limit, verified in ((first + 60, False), (first + verify_cost + 20, True)):
        llm = make_llm(verdicts=("\\boxed{1}",))
        r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm, budget=ttc.Budget(tokens=limit))
        assert r.usage.total_tokens + r.usage.verifier_tokens <= limit
        assert r.details["stopped_by"] == "budget"
        assert ("verification" in r.details["rounds"][0]) is verified
        assert len(r.details["rounds"]) == 1
        assert r.answer == "7"


def test_checks_sent_together_reserve_their_tokens_against_each_other():
    llm = make_llm(verdicts=("\\boxed{1}",))
    free = ttc.SolveDetectVerify(detector=detector(), rounds=2).solve("Tom?", llm)
    first = free.details["rounds"][0]["tokens"]
    check = free.details["rounds"][0]["verification"]["checks"][0]["tokens"]  # a prompt and a 1-token verdict
    limit = first + int(2.5 * check)  # room for two checks and a half, were they not reserved at 48 tokens each
    llm = make_llm(verdicts=("\\boxed{1}",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm, budget=ttc.Budget(tokens=limit))
    assert r.usage.total_tokens + r.usage.verifier_tokens <= limit
    assert len(requests_of(llm, VERIFY)) < 4 and r.details["stopped_by"] == "budget"


def test_a_verifier_call_budget_stops_the_verification():
    llm = make_llm(verdicts=("\\boxed{1}",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm, budget=ttc.Budget(verifier_calls=2))
    # the four fast checks are sent together: only two reach the verifier, and both are counted
    assert r.usage.verifier_calls == len(requests_of(llm, VERIFY)) == 2
    assert r.details["stopped_by"] == "budget"
    assert r.candidates[0].usage.verifier_calls == r.usage.verifier_calls
    enough = make_llm(verdicts=("\\boxed{1}",))
    r = ttc.SolveDetectVerify(detector=detector()).solve("Tom?", enough, budget=ttc.Budget(verifier_calls=4))
    assert r.usage.verifier_calls == 4 and r.details["stopped_by"] == "max_rounds"  # verified, rejected, refined


def test_a_verifier_request_on_the_contexts_own_generator():
    import asyncio

    llm = Scripted(["\\boxed{-1}"])
    ctx = ttc.Context(llm, ttc.Budget(tokens=100))
    (completion, tokens), = asyncio.run(ctx.verifier_generate("check this", ttc.SamplingParams(max_tokens=8)))
    assert completion.text == "\\boxed{-1}" and tokens == len(llm._ids("check this")) + 1
    assert (ctx.usage.verifier_calls, ctx.usage.verifier_tokens, ctx.usage.total_tokens) == (1, tokens, 0)
    assert ctx.remaining_tokens() == 100 - tokens  # verifier tokens count against the token budget


def test_majority_vote_over_solve_detect_verify_candidates():
    llm = make_llm()
    r = ttc.MajorityVote(n=3, sample=ttc.SolveDetectVerify(detector=detector())).solve("Tom?", llm)
    assert r.answer == "7" and len(r.candidates) == 3
    assert all(c.details["stopped_by"] == "verified" for c in r.candidates)
    assert r.usage.verifier_calls == sum(c.usage.verifier_calls for c in r.candidates) == 12


def test_a_seeded_run_is_reproducible():
    def run():
        llm = make_llm(verdicts=("\\boxed{1}",))
        ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm, seed=3)
        return [params.seed for _, params in llm.requests]
    seeds = run()
    assert seeds == run() and any(s is not None for s in seeds)


# -- the registry and bad input -----------------------------------------------------------------
def test_registry_builds_it_alone_or_voted():
    one = make_strategy("sdv", n=1, every=16, fast=2, threshold=1.0)
    assert isinstance(one, ttc.SolveDetectVerify)
    assert (one.detector.every, one.verifier.fast, one.verifier.slow, one.verifier.threshold) == (16, 2, 1, 1.0)
    voted = make_strategy("solve_detect_verify", n=4, rounds=3)
    assert isinstance(voted, ttc.MajorityVote) and voted.sample.rounds == 3
    wc = worst_case("solve_detect_verify", 2, 100, {"rounds": 2, "fast": 4})
    assert wc.sequences == 8 and wc.tokens == 2 * (2 * (2 * 100 + 12) + 1 * (4 * 48 + 1 * 384))


@pytest.mark.parametrize("build", [
    lambda: ttc.SolveDetectVerify(rounds=0),
    lambda: ttc.SolveDetectVerify(mode="batch"),
    lambda: ttc.SolveDetectVerify(feedback="no keys"),
    lambda: ttc.SolveDetectVerify(verifier=ttc.verifiers.LLMJudge()),
    lambda: ttc.SolveDetectVerify(detector=ttc.probes.AnswerConsistency()),
    lambda: FlexVerifier(threshold=0.0),
    lambda: FlexVerifier(fast=0),
    lambda: FlexVerifier(slow=-1),
    lambda: FlexVerifier(prompt="no keys"),
    lambda: FlexVerifier("not a generator"),
    lambda: FlexVerifier(fast_tokens=0),
    lambda: FlexVerifier(slow_tokens=0),
    lambda: SolutionComplete(words=("  ",)),
    lambda: SolutionComplete(words=()),
    lambda: SolutionComplete(every=0),
    lambda: SolutionComplete(top_logprobs=0),
    lambda: SolutionComplete(max_checks=0),
])
def test_bad_settings_are_refused(build):
    with pytest.raises(ttc.InvalidInput):
        build()


# -- inside a reasoning model's thinking ----------------------------------------------------------
#: a deepseek_r1-style model: its chat prompt opens the thinking; it boxes a wrong number inside the
#: thinking and hesitates twice before it closes the thinking and answers
THOUGHT = "3 + 4 = 7, so \\boxed{7}.\nWait, the question asks for 3 * 4.\nHmm, 3 * 4 = 12, that is all.\nSo 12."
THINKING_TRACE = THOUGHT + "</think>The answer is \\boxed{12}."
SECOND_THOUGHT = "Redo: 3 * 4 = 12."
CUE = "\n\nThe final answer is \\boxed{"


def thinking_llm(trace: str = THINKING_TRACE, complete: tuple[str, ...] = ("Hmm",), fast=("\\boxed{-1}",),
                 slow=("\\boxed{-1}",), second: str = SECOND_THOUGHT + "</think>So \\boxed{12}.") -> Scripted:
    """The solver writes `trace` (thinking, end marker, content); the detector says complete at the
    words in `complete`; an answer cue after the end marker is answered "12}"; a fast check (its
    thinking closed) says the next of `fast`, a slow one (thinking open) the next of `slow`; a
    refining round writes `second`."""
    fast_verdicts, slow_verdicts = itertools.cycle(fast), itertools.cycle(slow)

    def script(prompt: str, params: ttc.SamplingParams, i: int) -> str:
        if DETECT in prompt:
            shown = shown_solution(prompt).rstrip()
            word = next((w for at, w in find_hesitations(THOUGHT, PATTERN) if at >= len(shown)), "")
            return "Yes" if word in complete else "No"
        if VERIFY in prompt:
            return next(fast_verdicts) if prompt.endswith("</think>\n\n") else next(slow_verdicts)
        if prompt.endswith(CUE):
            return "12}."
        if REFINE in prompt:  # what the refining round wrote so far: after its own start marker
            return second[len(prompt.rsplit("<think>", 1)[1].lstrip("\n")):]
        return trace[len(prompt.rsplit("<assistant>\n", 1)[1].removeprefix("<think>")):]

    return Scripted(script, thinking="deepseek_r1")


def thinking_sdv(**kw) -> ttc.SolveDetectVerify:
    return ttc.SolveDetectVerify(detector=detector(), params=ttc.SamplingParams(max_tokens=200), **kw)


def test_inside_the_thinking_the_stop_closes_it_and_the_answer_comes_from_the_content():
    llm = thinking_llm(complete=("Hmm",))
    r = thinking_sdv(rounds=1).solve("3 * 4?", llm)
    first = r.details["rounds"][0]
    assert [(d["word"], d["complete"]) for d in first["detections"]] == [("Wait", False), ("Hmm", True)]
    cut = THOUGHT.index("Hmm")
    assert first["detections"][1]["at"] == len(llm._ids(THOUGHT[:cut]))  # tokens of thinking before the word
    c = r.candidates[0]
    assert c.finish_reason == "early_exit" and r.answer == "12"
    assert c.thinking == THOUGHT[:cut] and c.thinking_closed is True  # the thinking, cut before the word
    assert c.text == CUE + "12}" and "\\boxed{7}" not in c.text and "</think>" not in c.text
    # the answer was asked for once, after exactly one end marker, right after the cut thinking
    asked = [p for p, _ in llm.requests if p.endswith(CUE)]
    assert len(asked) == 1 and asked[0].endswith("<think>" + THOUGHT[:cut] + "</think>" + CUE)
    # the detector was shown the thinking so far (no marker) and asked after a closed placeholder thinking
    questions = [p for p, _ in requests_of(llm, DETECT)]
    assert [shown_solution(p) for p in questions] == [THOUGHT[:THOUGHT.index("Wait")].rstrip(), THOUGHT[:cut].rstrip()]
    assert all(p.endswith("<assistant>\n<think>" + DONE_THINKING + "</think>\n\n") for p in questions)


def test_inside_the_thinking_every_token_is_counted_and_the_thinking_is_reasoning_tokens():
    llm = thinking_llm(complete=("Hmm",))
    r = thinking_sdv(rounds=1).solve("3 * 4?", llm)
    c = r.candidates[0]
    generated = c.completion.thinking  # the solver's chunks: all of them inside the thinking
    assert generated.text.startswith(THOUGHT[:THOUGHT.index("Hmm")]) and THOUGHT.startswith(generated.text)
    assert r.usage.reasoning_tokens == generated.num_tokens == len(llm._ids(generated.text)) > 0
    detector_calls = len(requests_of(llm, DETECT))
    assert r.usage.completion_tokens == generated.num_tokens + detector_calls + len(llm._ids("12}."))
    assert r.usage.prompt_tokens == sum(len(llm._ids(p)) for p, _ in llm.requests)
    assert r.usage.completion_tokens == llm.generated_tokens
    assert (c.usage.total_tokens, c.usage.reasoning_tokens) == (r.usage.total_tokens, r.usage.reasoning_tokens)
    assert c.scores["probe_calls"] == detector_calls + 1  # the questions and the elicited answer


def test_once_the_model_closes_its_thinking_the_detector_is_silent():
    trace = "3 * 4 = 12.</think>\nWait, to confirm: \\boxed{12}.\nHmm, yes, \\boxed{12}."
    llm = thinking_llm(trace=trace, complete=("Wait", "Hmm", "to confirm"))
    r = thinking_sdv(rounds=1).solve("3 * 4?", llm)
    assert r.details["rounds"][0]["detections"] == [] and not requests_of(llm, DETECT)
    c = r.candidates[0]
    assert c.finish_reason == "stop" and c.thinking == "3 * 4 = 12." and r.answer == "12"


def test_without_a_hesitation_in_the_thinking_the_trace_ends_on_its_own_and_answers_from_the_content():
    llm = thinking_llm(trace="So \\boxed{7}? No: 3 * 4.</think>\\boxed{12}", complete=("Wait",))
    r = thinking_sdv(rounds=1).solve("3 * 4?", llm)
    c = r.candidates[0]
    assert (c.finish_reason, c.thinking, c.text, r.answer) == ("stop", "So \\boxed{7}? No: 3 * 4.", "\\boxed{12}", "12")


def test_a_reasoning_verifier_checks_the_whole_solution_and_reads_its_verdict_from_the_content():
    # fast checks disagree; the slow check boxes an index in its thinking and none in its content
    llm = thinking_llm(fast=("\\boxed{-1}", "\\boxed{1}"), slow=("Paragraph 1 is off \\boxed{1}</think>Not sure.",))
    r = thinking_sdv().solve("3 * 4?", llm)
    v = r.details["rounds"][0]["verification"]
    assert [c["mode"] for c in v["checks"]] == ["fast"] * 4 + ["slow"]
    assert v["checks"][-1]["valid"] is None  # the box in the slow check's thinking is not its verdict
    assert v["valid"] is None and r.details["stopped_by"] == "unsure" and r.answer == "12"
    fast = [p for p, _ in requests_of(llm, VERIFY) if p.endswith("</think>\n\n")]
    slow = [p for p, _ in requests_of(llm, VERIFY) if p.endswith("<think>")]
    assert len(fast) == 4 and len(slow) == 1
    assert all(p.endswith("<assistant>\n<think>" + DONE_THINKING + "</think>\n\n") for p in fast)
    assert "Answer at once" not in fast[0] and "review every paragraph" not in slow[0]  # steered by its thinking
    # the solution checked: the thinking's paragraphs (cut at its hesitation words), then the content
    solution = fast[0].split("[Solution]\n\n", 1)[1]
    assert "<paragraph_0>\n3 + 4 = 7, so \\boxed{7}.\n</paragraph_0>" in solution
    second = "Wait, the question asks for 3 * 4.\n\nThe final answer is \\boxed{12}"
    assert f"<paragraph_1>\n{second}\n</paragraph_1>" in solution
    assert "<think>" not in solution.split("Review the solution")[0] and v["paragraphs"] == 2


def test_a_rejected_answer_is_refined_with_the_whole_solution_and_the_verifiers_thinking():
    llm = thinking_llm(fast=("\\boxed{1}", "\\boxed{0}"), slow=("the sum is off \\boxed{1}</think>\\boxed{1}",))
    r = thinking_sdv().solve("3 * 4?", llm)
    rounds = r.details["rounds"]
    v = rounds[0]["verification"]
    assert (v["valid"], v["error_step"], v["feedback"]) == (False, 1, "the sum is off")
    refine = requests_of(llm, REFINE)
    assert refine
    prompt = refine[0][0]
    cut = THOUGHT[:THOUGHT.index("Hmm")].rstrip()
    # the previous round as an assistant turn: its thinking, then its content, without markers
    assert f"<assistant>\n{cut}\n\n{CUE.lstrip()}12}}\n<user>\n" in prompt
    assert "first in paragraph 1" in prompt and "the sum is off" in prompt
    assert prompt.endswith("<assistant>\n<think>") and prompt.count("</think>") == 0
    c = r.candidates[0]
    assert (c.thinking, c.text, c.thinking_closed, r.answer) == (SECOND_THOUGHT, "So \\boxed{12}.", True, "12")
    assert len(rounds) == 2 and rounds[1]["answer"] == "12" and r.details["stopped_by"] == "max_rounds"
    alone = thinking_sdv(rounds=1).solve("3 * 4?", thinking_llm())  # the first round by itself
    assert r.usage.reasoning_tokens == alone.usage.reasoning_tokens + len(llm._ids(SECOND_THOUGHT))
    assert r.usage.completion_tokens + r.usage.prompt_tokens + r.usage.verifier_tokens == \
        sum(len(llm._ids(p)) for p, _ in llm.requests) + llm.generated_tokens


def test_a_raw_prompt_on_a_reasoning_model_is_refined_as_raw_text_with_a_new_thinking():
    llm = thinking_llm(fast=("\\boxed{0}",))
    raw = "<user>\n3 * 4?\n<assistant>\n<think>"
    r = thinking_sdv().solve(ttc.Problem("3 * 4?", metadata={"prompt": raw}), llm)
    cut = THOUGHT[:THOUGHT.index("Hmm")]
    refine = requests_of(llm, REFINE)[0][0]
    assert refine.startswith(raw + cut + "</think>" + CUE + "12}\n\n" + "A verifier found an error")
    assert refine.endswith("with the final answer at the end.\n\n<think>\n")
    assert r.answer == "12" and r.candidates[0].thinking.endswith(SECOND_THOUGHT)


# -- written from the mutation run's survivors (scripts/mutation.py, docs/testing.md) ---------------
def _ctx(llm) -> ttc.Context:
    return ttc.Context(llm)


def _check(probe: SolutionComplete, llm, text: str, state=None):
    """Ask `probe` about a trace whose text (so far) is `text`, as EarlyExit would between chunks."""
    import asyncio

    from ttc.probes.base import TraceState

    if state is None:
        state = TraceState(problem=ttc.Problem("Tom?"), prompt_ids=[])
        probe.reset(state)
    state.text, state.token_ids = text, llm._ids(text)
    return state, asyncio.run(probe.check(state, _ctx(llm)))


def test_a_word_at_the_very_end_waits_for_the_next_token_then_counts():
    asked = []
    llm = Scripted(lambda prompt, params, i: asked.append(prompt) or "No")
    probe = SolutionComplete(every=1)
    state, decision = _check(probe, llm, "So 3 + 4 = 7.\nWait")
    assert not asked and probe.detections(state) == []  # "Wait" may still become "Waiting"
    state, decision = _check(probe, llm, "So 3 + 4 = 7.\nWait, 7.", state)
    assert [(d.word, d.at) for d in probe.detections(state)] == [("Wait", len(llm._ids("So 3 + 4 = 7.\n")))]
    assert len(asked) == 1 and not decision.stop


def test_a_long_word_cut_between_chunks_is_found_in_the_next_one():
    llm = Scripted(lambda prompt, params, i: "No")
    probe = SolutionComplete(every=1)
    state, _ = _check(probe, llm, "x = 7.\nLet me double-che")
    state, _ = _check(probe, llm, "x = 7.\nLet me double-check it: 7.", state)
    assert [d.word for d in probe.detections(state)] == ["Let me double-check"]


def test_a_word_at_the_start_is_asked_about_with_an_empty_solution():
    llm = make_llm(trace="Hmm, 3 + 4 = 7.\nWait, yes: 7.", complete=())
    r = ttc.SolveDetectVerify(detector=detector(), rounds=1).solve("Tom?", llm)
    dets = r.details["rounds"][0]["detections"]
    assert [(d["word"], d["at"]) for d in dets] == [("Hmm", 0), ("Wait", len(llm._ids("Hmm, 3 + 4 = 7.\n")))]
    assert [shown_solution(p) for p, _ in requests_of(llm, DETECT)] == ["", "Hmm, 3 + 4 = 7."]


def test_neither_yes_nor_no_is_not_complete():
    llm = Scripted(lambda prompt, params, i: "Maybe" if DETECT in prompt else TRACE[len(assistant_text(prompt)):])
    r = ttc.SolveDetectVerify(detector=detector(), rounds=1).solve("Tom?", llm)
    assert [d["p_complete"] for d in r.details["rounds"][0]["detections"]] == [0.5, 0.5]
    assert r.candidates[0].finish_reason == "stop"


def test_the_top_alternatives_decide_over_the_sampled_token():
    from ttc.backends.scripted import ScriptedResponse

    yes_id = Scripted([""])._ids("Yes")[0]

    def script(prompt, params, i):
        if DETECT in prompt:  # sampled "No", but Yes (by id and by text, twice) is more probable
            return ScriptedResponse("No", top_logprobs=[{yes_id: -0.7, " yes": -0.9, "Yes": -2.0, "No": -1.2}])
        if prompt.endswith(PLAIN_SUFFIX):
            return " 7"
        return TRACE[len(assistant_text(prompt)):]

    llm = Scripted(script)
    llm._ids("Yes")  # the same vocabulary: id `yes_id` decodes to "Yes"
    r = ttc.SolveDetectVerify(detector=detector(), rounds=1).solve("Tom?", llm)
    first = r.details["rounds"][0]["detections"][0]
    import math
    yes = math.exp(-0.7) + math.exp(-0.9)  # the larger of the two "Yes" entries, and " yes"
    assert first["complete"] is True and first["p_complete"] == pytest.approx(yes / (yes + math.exp(-1.2)))


def test_complete_is_the_share_of_yes_in_yes_and_no():
    import math

    assert complete_by_logprobs({"Yes": math.log(0.6), "No": math.log(0.2)}) == pytest.approx(0.75)


def test_without_a_decoder_the_cut_is_proportional():
    class NoDecode(Scripted):
        @property
        def can_decode(self) -> bool:
            return False

    llm = NoDecode(lambda prompt, params, i: "Yes")
    probe = SolutionComplete(every=1)
    text = "3 + 4 = 7, so it is 7.\nHmm, 7."
    state, decision = _check(probe, llm, text)
    expected = len(llm._ids(text)) * text.index("Hmm") // len(text)  # rounded down
    assert decision.stop and decision.at == expected == probe.detections(state)[0].at
    assert expected != len(llm._ids(text[:text.index("Hmm")]))  # not what a decoder would say


def test_watched_is_the_text_before_the_end_marker():
    from ttc.thinking import FORMATS

    probe = SolutionComplete()
    fmt = FORMATS["deepseek_r1"]
    assert probe.watched("</think>Wait", fmt) == "" and probe.watched("abc", fmt) == "abc"
    assert probe.watched("ab</think>c", fmt) == "ab" and probe.watched("ab</think>c") == "ab</think>c"


def test_a_text_level_reasoning_model_is_shown_and_verified_without_markers():
    # a backend that does not split the thinking; the strategy is told the format
    trace = "<think>3 + 4 = 7.\nWait, fine.\nHmm, 7.</think>So 7."
    llm = make_llm(trace=trace, complete=("Hmm",), verdicts=("\\boxed{-1}",))
    r = ttc.SolveDetectVerify(detector=SolutionComplete(every=4, thinking="qwen3"), thinking="qwen3").solve("T?", llm)
    assert [shown_solution(p) for p, _ in requests_of(llm, DETECT)] == ["3 + 4 = 7.", "3 + 4 = 7.\nWait, fine."]
    checked = requests_of(llm, VERIFY)[0][0].split("[Solution]", 1)[1].split("Review the solution")[0]
    assert "<think>" not in checked and "</think>" not in checked and "Wait, fine." in checked
    assert r.answer == "7"


def test_a_budget_too_small_for_the_first_round_is_the_budgets_error():
    with pytest.raises(ttc.BudgetExhausted):
        ttc.SolveDetectVerify(detector=detector()).solve("Tom?", make_llm(), budget=ttc.Budget(tokens=3))


def test_each_round_is_seeded_with_whole_numbers_of_its_own():
    llm = make_llm(verdicts=("\\boxed{1}",))
    ttc.SolveDetectVerify(detector=detector()).solve("Tom?", llm, seed=3)
    solver = [params.seed for p, params in llm.requests if DETECT not in p and VERIFY not in p
              and not p.endswith(PLAIN_SUFFIX)]
    first = [s for p, params in llm.requests for s in [params.seed] if REFINE not in p and s in solver]
    second = [params.seed for p, params in llm.requests if REFINE in p]
    assert all(isinstance(s, int) for s in solver) and second and set(second).isdisjoint(first)
    assert all(params.seed is None or isinstance(params.seed, int) for _, params in llm.requests)  # checks too


def test_the_chosen_checks_critique_is_the_first_of_the_majority():
    fast = ("A \\boxed{1}", "B \\boxed{2}", "C \\boxed{2}", "D \\boxed{2}")
    llm = make_llm(verdicts=fast)
    r = ttc.SolveDetectVerify(verifier=FlexVerifier(threshold=0.75), detector=detector()).solve("Tom?", llm)
    assert r.details["rounds"][0]["verification"]["feedback"] == "B"
    slow = ("A \\boxed{1}", "B \\boxed{2}", "C \\boxed{3}", "D \\boxed{4}",  # fast: no agreement
            "X \\boxed{1}", "Y \\boxed{2}", "Z \\boxed{2}")
    llm = make_llm(verdicts=slow)
    r = ttc.SolveDetectVerify(verifier=FlexVerifier(slow=3), detector=detector()).solve("Tom?", llm)
    v = r.details["rounds"][0]["verification"]
    assert (v["escalated"], v["error_step"], v["feedback"]) == (True, 2, "Y")


def test_slow_checks_default_to_a_quarter_of_the_fast_ones_rounded_up():
    assert [FlexVerifier(fast=k).slow for k in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


def test_verify_on_its_own_seeds_each_check_and_needs_no_spent_record():
    import asyncio

    judge = Scripted(["\\boxed{1}", "\\boxed{2}", "\\boxed{1}", "\\boxed{2}", "\\boxed{1}"])
    verdict = asyncio.run(FlexVerifier(judge).verify("Tom?", "3 + 4 = 7.", _ctx(judge), seed=10))
    assert [params.seed for _, params in judge.requests] == [10, 11, 12, 13, 14]
    assert verdict.escalated and len(verdict.checks) == 5


def test_the_verifiers_repr_names_its_model():
    assert repr(FlexVerifier()).startswith("FlexVerifier(generator=\"the run's generator\", fast=4, threshold=0.9")
    assert repr(FlexVerifier(Scripted(["x"]), fast=2)) == ("FlexVerifier(generator='scripted', fast=2, threshold=0.9, "
                                                          "slow=1, fast_tokens=48, slow_tokens=384)")


def test_a_text_level_reasoning_verifier_reads_its_verdict_after_the_end_marker():
    class OpensThinking(Scripted):  # a template that opens the thinking; the backend does not split it
        async def chat_prompt(self, messages, *, chat_template_kwargs=None):
            return (await super().chat_prompt(messages)) + "<think>"

    outputs = iter(["\\boxed{-1}", "\\boxed{1}", "\\boxed{-1}", "\\boxed{1}",  # fast: unsure
                    "paragraph 1? \\boxed{1}</think>not sure", "still thinking \\boxed{1}"])  # slow: no verdict
    judge = OpensThinking(lambda prompt, params, i: next(outputs))
    import asyncio

    verdict = asyncio.run(FlexVerifier(judge, slow=2, thinking="deepseek_r1").verify("Tom?", "7.", _ctx(judge)))
    assert [c.valid for c in verdict.checks[4:]] == [None, None] and verdict.valid is None
    assert verdict.checks[4].thinking == "paragraph 1? \\boxed{1}" and verdict.checks[4].text == "not sure"


def test_the_prompt_state_and_the_placeholder_that_closes_it():
    import asyncio

    from ttc.hesitation import AFTER_THINKING, close_thinking, closing_placeholder
    from ttc.thinking import FORMATS, opened_by_text

    fmt = FORMATS["deepseek_r1"]
    assert [opened_by_text(t, fmt) for t in ("<think>a", "</think>a", "a", "<think>a</think>b", "x<think>")] == \
        [True, False, None, False, True]
    assert closing_placeholder(fmt, False) == ""
    assert closing_placeholder(fmt, None) == "<think>" + DONE_THINKING + "</think>" + AFTER_THINKING
    llm = Scripted([""], thinking="deepseek_r1")
    opened = llm._ids("<user>\nq\n<assistant>\n<think>")
    closed = asyncio.run(close_thinking(llm, opened, fmt))
    assert closed == opened + llm._ids(DONE_THINKING + "</think>\n\n")
    done = llm._ids("<user>\nq\n<assistant>\n<think></think>")
    assert asyncio.run(close_thinking(llm, done, fmt)) == done
