"""House-style rules (issue 13): one seed rule on Context, probes that declare their behaviour, AnyOf."""

import asyncio

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.context import Context
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, AnyOf, Decision, Probe, TokenConfidence, TraceState
from ttc.probes.base import CONTINUE, DROP, EXIT
from ttc.strategies.early_exit import EarlyExit


def seed_echo(prompt, params, i):
    return f"\\boxed{{{params.seed}}}"


# -- the seed rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params_seed, run_seed", [(5, None), (None, 5)])
def test_a_seeded_sample_called_twice_draws_a_new_seed_each_time(params_seed, run_seed):
    sample = ttc.Sample(params=ttc.SamplingParams(max_tokens=8, seed=params_seed))

    async def two(run_seed):
        ctx = Context(Scripted(seed_echo), seed=run_seed)
        return [(await sample.candidate(ttc.Problem("q"), ctx)).answer for _ in range(2)]

    first, second = asyncio.run(two(run_seed))
    assert first != second  # each request of a run gets its own seed
    assert asyncio.run(two(run_seed)) == [first, second]  # and the run is reproducible


def test_one_seed_rule_for_every_sampler():
    """Sample, StreamSample, EarlyExit and the step searches' Stepper draw request seeds the same way:
    in order, from Random(params.seed), else from the run's RNG; an unseeded run sends no seed."""
    import random

    from ttc.strategies.first_finish import StreamSample

    ctx = Context(Scripted(["x"]), seed=3)
    rng = random.Random(3)
    assert [ctx.next_seed() for _ in range(3)] == [rng.getrandbits(31) for _ in range(3)]
    own = random.Random(9)
    assert [ctx.next_seed(9) for _ in range(2)] == [own.getrandbits(31) for _ in range(2)]
    assert Context(Scripted(["x"])).next_seed() is None

    expected = [random.Random(11).getrandbits(31)]
    for sampler in (ttc.Sample(params=ttc.SamplingParams(max_tokens=8)),
                    StreamSample(params=ttc.SamplingParams(max_tokens=8))):
        llm = Scripted(seed_echo)
        sampler.solve("q", llm, seed=11)
        assert [p.seed for _, p in llm.requests] == expected, type(sampler).__name__
    llm = Scripted(seed_echo)
    ttc.Sample(params=ttc.SamplingParams(max_tokens=8)).solve("q", llm)
    assert llm.requests[0][1].seed is None


# -- probes declare their behaviour ------------------------------------------------------------------
class ScriptedProbe(Probe):
    """Says `actions[k]` at its k-th check, recording the token count it was asked at."""

    def __init__(self, name, actions, every=8, scans=False, suffix=None, top=0, caps=frozenset()):
        self.name, self.actions, self.every, self.scans_tokens = name, list(actions), every, scans
        self.suffix, self.required_capabilities = suffix, frozenset(caps)
        self.needs = ttc.Needs(logprobs=bool(top), top_logprobs=top, hidden_states="hidden_states" in caps)
        self.asked: list[int] = []

    async def check(self, state, ctx):
        self.asked.append(len(state.token_ids))
        action = self.actions[len(self.asked) - 1] if len(self.asked) <= len(self.actions) else CONTINUE
        return Decision(action, score=float(len(self.asked)), at=len(state.token_ids))


def test_probes_declare_scanning_and_suffix_as_attributes():
    assert TokenConfidence().scans_tokens and not AnswerConsistency().scans_tokens
    assert AnswerConsistency(suffix=PLAIN_SUFFIX).suffix == PLAIN_SUFFIX and TokenConfidence().suffix is None
    # EarlyExit reads the attributes, not the probe's name
    custom = ScriptedProbe("my_probe", [], scans=True, suffix=" So:")
    ee = EarlyExit(custom)
    assert ee.scan_every_token and ee.answer_suffix == " So:"
    assert not EarlyExit(ScriptedProbe("token_confidence", [])).scan_every_token


def test_any_of_requirements_are_the_union_of_its_members():
    a = ScriptedProbe("a", [], every=64, top=3, caps={"hidden_states"})
    b = ScriptedProbe("b", [], every=24, scans=True, suffix=" S", top=5, caps={"stream"})
    both = AnyOf([a, b])
    assert both.every == 8  # gcd: both members' check points fall on the container's
    assert both.scans_tokens and both.suffix == " S"
    assert both.needs == ttc.Needs(logprobs=True, top_logprobs=5, hidden_states=True)
    assert both.required_capabilities == {"hidden_states", "stream"}
    assert not AnyOf([ScriptedProbe("a", [])]).needs
    with pytest.raises(ttc.InvalidInput, match="at least one"):
        AnyOf([])
    with pytest.raises(ttc.InvalidInput, match="different names"):
        AnyOf([ScriptedProbe("a", []), ScriptedProbe("a", [])])
    with pytest.raises(ttc.InvalidInput, match="ttc probes"):
        AnyOf([lambda state: None])


def _drive(probe, lengths):
    """Check `probe` after each token count in `lengths`; return the first stopping decision."""
    state = TraceState(problem=ttc.Problem("q"), prompt_ids=[0])
    probe.reset(state)
    ctx = Context(Scripted(["x"]))

    async def go():
        for n in lengths:
            state.token_ids = list(range(n))
            decision = await probe.check(state, ctx)
            if decision.stop:
                return n, decision
        return None, None

    return asyncio.run(go())


def test_any_of_asks_each_member_at_its_own_check_points_and_the_first_stop_decides():
    a = ScriptedProbe("a", [CONTINUE, CONTINUE, EXIT], every=16)
    b = ScriptedProbe("b", [CONTINUE] * 5 + [DROP], every=8)
    at, decision = _drive(AnyOf([a, b]), range(8, 200, 8))
    # a is asked at 16, 32, 48 (its own cadence) and exits at 48; b, every 8, was asked 6 times by then
    assert a.asked == [16, 32, 48] and b.asked == [8, 16, 24, 32, 40]
    assert at == 48 and decision.action == EXIT and decision.probe == "a" and decision.at == 48
    # in list order: when both stop at the same check, the first member decides, the second is not asked
    a = ScriptedProbe("a", [DROP], every=8)
    b = ScriptedProbe("b", [EXIT], every=8)
    at, decision = _drive(AnyOf([a, b]), [8])
    assert (at, decision.action, decision.probe, b.asked) == (8, DROP, "a", [])
    # a member that never stops keeps the trace going
    at, decision = _drive(AnyOf([ScriptedProbe("a", [], every=8)]), range(8, 64, 8))
    assert at is None


def test_any_of_gives_each_scanning_member_its_own_cursor():
    seen = {}

    class Scanner(ScriptedProbe):
        async def check(self, state, ctx):
            seen.setdefault(self.name, []).append((state.scanned, len(state.token_ids)))
            state.scanned = len(state.token_ids)
            return Decision(CONTINUE)

    _drive(AnyOf([Scanner("x", [], every=8, scans=True), Scanner("y", [], every=8, scans=True)]), [8, 16])
    assert seen == {"x": [(0, 8), (8, 16)], "y": [(0, 8), (8, 16)]}


WORDS = [f"w{i}" for i in range(60)]
TRACE = " ".join(WORDS) + " so the answer is \\boxed{7}"  # 127 tokens
PARAMS = ttc.SamplingParams(max_tokens=400, logprobs=True)


def trace_script(logprobs, probe_answer):
    def script(prompt, params, i):
        done = prompt.split("<assistant>\n", 1)[1]
        if done.endswith(PLAIN_SUFFIX):
            return probe_answer(len(done[: -len(PLAIN_SUFFIX)].split()))
        n_done = len(Scripted([""])._ids(done)) if done else 0
        return ScriptedResponse(TRACE[len(done):], tuple(logprobs[n_done:]))
    return script


@pytest.mark.parametrize("mode", ["chunks", "stream"])
def test_early_exit_with_any_of_stops_on_whichever_member_stops_first(mode):
    dip = [-0.1] * 127
    for i in range(50, 56):
        dip[i] = -5.0
    consistency = AnswerConsistency(every=8, window=2, suffix=PLAIN_SUFFIX)
    confidence = TokenConfidence(window=8, threshold=-1.0, top_k=0, every=16)
    # the probe answers agree from 20 words (40 tokens) on: answer consistency exits at 48 tokens,
    # before the confidence dip (at 52 tokens)
    early = Scripted(trace_script(dip, lambda w: " 7." if w >= 20 else f" {w}."))
    result = EarlyExit(AnyOf([confidence, consistency]), params=PARAMS, mode=mode).solve("q", early)
    c = result.candidates[0]
    assert (result.answer, c.finish_reason, c.scores["exit_tokens"]) == ("7", "early_exit", 48)
    assert "answer_consistency" in c.scores and "token_confidence" not in c.scores
    assert_usage_is_sum_of_candidates(result)
    # the probe answers never agree: the confidence dip drops the trace at 52 tokens
    late = Scripted(trace_script(dip, lambda w: f" {w}."))
    no_logprobs = PARAMS.replace(logprobs=None)  # unspecified: the probe's need fills it in
    with pytest.raises(ttc.InvalidInput, match=r"probe 'any_of' \(AnyOf\) needs token logprobs.*logprobs=False"):
        EarlyExit(AnyOf([confidence, consistency]), params=PARAMS.replace(logprobs=False), mode=mode)
    result = EarlyExit(AnyOf([confidence, consistency]), params=no_logprobs, mode=mode).solve("q", late)
    c = result.candidates[0]
    assert (result.answer, c.finish_reason, c.scores["exit_tokens"]) == (None, "dropped", 52)
    assert c.scores["token_confidence"] < -1.0
    # answer consistency was asked every 8 tokens: 6 probe requests before the drop
    assert c.scores["probe_calls"] == 6
    assert_usage_is_sum_of_candidates(result)
    # logprobs were asked for although the params did not: AnyOf carries its member's requirement
    trace_requests = [p for text, p in late.requests if not text.endswith(PLAIN_SUFFIX)]
    assert trace_requests and all(p.logprobs for p in trace_requests)
