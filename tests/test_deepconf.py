"""ttc.DeepConf (DeepConf-online with the per-question warm-up) on the scripted backend: known
confidences per token, so the bar, the online stops and the weighted vote are known exactly."""

import pytest

import ttc
from helpers import assert_usage_is_sum_of_candidates
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.strategies.deepconf import DeepConf, percentile_threshold
from ttc.strategies.registry import make_strategy

TOKENIZER = Scripted([""])


def n_tokens(text):
    return len(TOKENIZER._ids(text)) if text else 0


def trace(name, answer, words=12):
    return f"{name} " + " ".join(f"w{i}" for i in range(words)) + f" so \\boxed{{{answer}}}"


class Script:
    """Warm-up samples and online traces with per-token confidences C (top-2 logprobs both -C).

    warmup: (confidence, answer) per warm-up sample; online: (confidences before/after `dip_at`
    tokens, answer) per online trace, in the order the traces start."""

    def __init__(self, warmup, online):
        self.warmup = warmup
        self.online = online
        self.traces = {}  # name -> (text, per-token confidences)
        self.started = 0
        self.calls = []

    def _register(self, name, answer, confs):
        text = trace(name, answer)
        n = n_tokens(text)
        per_token = confs(n)
        self.traces[name] = (text, per_token)
        return text

    def _response(self, name, done):
        text, per_token = self.traces[name]
        k = n_tokens(done)
        top = tuple({1: -c, 2: -c} for c in per_token[k:])
        return ScriptedResponse(text[len(done):], tuple(-c for c in per_token[k:]), top)

    def __call__(self, prompt, params, i):
        done = prompt.split("<assistant>\n", 1)[1]
        self.calls.append((params.n, done))
        if params.n > 1:  # the warm-up: one request for every warm-up sample
            conf, answer = self.warmup[i]
            name = f"warm{i}"
            self._register(name, answer, lambda n: [conf] * n)
            return self._response(name, "")
        if not done:  # a new online trace
            (before, after, dip_at), answer = self.online[self.started]
            name = f"online{self.started}"
            self.started += 1
            self._register(name, answer, lambda n: [before] * dip_at + [after] * (n - dip_at))
            return self._response(name, "")
        return self._response(done.split(" ", 1)[0], done)


# warm-up: confidences 6, 5 ("7") and 2, 1 ("3"); keep=0.5: the bar is their median, 3.5
WARMUP = [(6.0, "7"), (5.0, "7"), (2.0, "3"), (1.0, "3")]
# online: three steady traces at 3.6 answering "3", one that dips to 1.0 after 10 tokens ("7")
ONLINE = [((3.6, 3.6, 0), "3"), ((3.6, 3.6, 0), "3"), ((3.6, 3.6, 0), "3"), ((4.0, 1.0, 10), "7")]


def deepconf(**kw):
    args = dict(n=8, warmup=4, keep=0.5, window=4, top_k=2, every=8,
                params=ttc.SamplingParams(max_tokens=200, logprobs=True))
    args.update(kw)
    return DeepConf(**args)


def test_deepconf_sets_the_bar_from_this_questions_warmup_and_votes_weighted_by_confidence():
    llm = Scripted(Script(WARMUP, ONLINE))
    result = deepconf().solve("q", llm, seed=0)
    assert result.details["threshold"] == pytest.approx(3.5)
    # the warm-up is one request of n=4, done before any online trace started
    assert [params.n for _, params in llm.requests] == [4] + [1] * (len(llm.requests) - 1)
    reasons = [c.finish_reason for c in result.candidates]
    assert reasons == ["stop"] * 7 + ["dropped"]
    dropped = result.candidates[-1]
    # windows of 4: the dip to 1.0 starts at token 10; the window ending at 11 is (3 x 4 + 1) / 4 = 3.25 < 3.5
    assert dropped.scores["exit_tokens"] == 11 and dropped.answer is None
    # voters: warm-ups above the bar (6 + 5 for "7") and the steady online traces (3 x 3.6 for "3")
    assert result.details["voters"] == [0, 1, 4, 5, 6]
    assert result.details["votes"] == pytest.approx({"7": 11.0, "3": 10.8})
    # the confidence-weighted vote decides: by count "3" (3 votes) would beat "7" (2)
    assert result.answer == "7"
    assert_usage_is_sum_of_candidates(result)


def test_warmup_traces_under_the_bar_do_not_vote():
    # the same run with the low warm-ups answering "3" twice more would flip the vote if they voted
    result = deepconf().solve("q", Scripted(Script(WARMUP, ONLINE)), seed=0)
    assert 2 not in result.details["voters"] and 3 not in result.details["voters"]
    assert result.candidates[2].answer == result.candidates[3].answer == "3"


def test_the_bar_is_per_question():
    low = [(c - 1.5, a) for c, a in WARMUP]  # a less confident question: bar 2.0, nothing dips under it
    online = [((3.6, 3.6, 0), "3")] * 3 + [((4.0, 2.5, 10), "7")]
    strategy = deepconf()
    first = strategy.solve("q", Scripted(Script(WARMUP, ONLINE)), seed=0)
    second = strategy.solve("q", Scripted(Script(low, online)), seed=0)
    assert first.details["threshold"] == pytest.approx(3.5)
    assert second.details["threshold"] == pytest.approx(2.0)
    assert [c.finish_reason for c in second.candidates] == ["stop"] * 8


def test_percentile_threshold_is_numpys_linear_percentile():
    assert percentile_threshold([6, 5, 2, 1], keep=0.5) == pytest.approx(3.5)
    assert percentile_threshold([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], keep=0.1) == pytest.approx(9.1)  # DeepConf-low
    assert percentile_threshold([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], keep=0.9) == pytest.approx(1.9)  # DeepConf-high


def test_deepconf_refuses_a_backend_without_top_logprobs_and_bad_configuration():
    with pytest.raises(ttc.InvalidInput, match="top-2 logprobs"):
        deepconf().solve("q", Scripted(["\\boxed{1}"]))
    for bad in (dict(warmup=0), dict(warmup=9), dict(keep=0), dict(top_k=0), dict(window=0)):
        with pytest.raises(ttc.InvalidInput):
            deepconf(**bad)


def test_registry_builds_deepconf():
    strategy = make_strategy("deepconf", n=8)
    assert isinstance(strategy, ttc.DeepConf) and (strategy.n, strategy.warmup) == (8, 4)
    assert make_strategy("deepconf-online", n=64).warmup == 16


def test_offline_filter_keeps_this_questions_top_fraction_and_weights_by_confidence():
    # DeepConf-offline: per question, keep the top `keep` of traces by lowest group confidence
    # (np.percentile), then vote weighted by confidence; an absolute threshold would keep none here
    from ttc.probes import TokenConfidence

    def response(conf, answer):
        text = trace("t", answer, words=3)
        n = n_tokens(text)
        return ScriptedResponse(text, tuple([-conf] * n), tuple([{1: -conf, 2: -conf}] * n))

    batch = [response(1.0, "5"), response(1.1, "5"), response(1.2, "5"), response(2.0, "4"), response(1.9, "4")]
    probe = TokenConfidence(window=4, threshold=10.0, top_k=2)
    sample = ttc.Sample(params=ttc.SamplingParams(logprobs=True, top_logprobs=2))
    plain = ttc.MajorityVote(n=5, sample=sample, verifier=probe.filter()).solve("q", Scripted(batch))
    assert plain.details["vote_fallback"]  # every trace under the absolute bar: plurality "5"
    assert plain.answer == "5"
    top = ttc.MajorityVote(n=5, sample=sample, verifier=probe.filter(weighted=True, keep=0.4)).solve(
        "q", Scripted(batch))
    # the 60th percentile of [1.0, 1.1, 1.2, 2.0, 1.9] is 1.48: the two "4" traces are kept
    assert top.details["votes"] == pytest.approx({"5": 0.0, "4": 3.9})
    assert top.answer == "4"
