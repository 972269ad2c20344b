"""Probes and step searches inside a reasoning model's thinking (scripted backend with a thinking format):
the answer probe closes the thinking before its cue, DeepConf scores the thinking tokens, ES-CoT and
the answer probe stop probing once the model closed its thinking, step searches cut the thinking at the
format's step delimiter; without a thinking format every probe behaves as before."""

import asyncio
import dataclasses

import pytest

import ttc
from ttc.backends import Scripted
from ttc.context import Context
from ttc.probes import PLAIN_SUFFIX, AnswerConsistency, TokenConfidence
from ttc.probes.base import TraceState
from ttc.probes.confidence import lowest_group_confidence
from ttc.probes.es_cot import ESCoT
from ttc.steps import StepConfig, Stepper
from ttc.thinking import FORMATS
from ttc.types import Completion, Problem, Thinking


def probing(thinking):
    """A model that thinks " t" forever; asked with the plain suffix it answers 7."""
    return Scripted(lambda p, params, i: " 7" if p.endswith(PLAIN_SUFFIX) else " t t t t", thinking=thinking)


def probe_prompts(llm):
    return [p for p, _ in llm.requests if p.endswith(PLAIN_SUFFIX)]


def test_the_answer_probe_closes_an_open_thinking_before_its_cue():
    llm = probing("deepseek_r1")
    r = ttc.EarlyExit(AnswerConsistency(every=4, suffix=PLAIN_SUFFIX)).solve("3 + 4?", llm)
    asked = probe_prompts(llm)
    assert asked and all(p.endswith(" t</think>" + PLAIN_SUFFIX) for p in asked)
    c = r.candidates[0]
    assert r.answer == "7" and c.finish_reason == "early_exit"
    assert c.text == PLAIN_SUFFIX + " 7" and "</think>" not in c.text  # the content: cue and answer
    assert c.thinking.strip().startswith("t t") and c.thinking_closed


def test_without_a_thinking_format_the_answer_probe_is_unchanged():
    llm = probing(None)
    r = ttc.EarlyExit(AnswerConsistency(every=4, suffix=PLAIN_SUFFIX)).solve("3 + 4?", llm)
    asked = probe_prompts(llm)
    assert asked and not any("</think>" in p for p in asked)
    assert r.answer == "7" and r.candidates[0].text.endswith(PLAIN_SUFFIX + " 7") and r.candidates[0].thinking is None


@pytest.mark.parametrize("probe", [AnswerConsistency(every=4, suffix=PLAIN_SUFFIX),
                                   ESCoT(every=4, suffix=PLAIN_SUFFIX)])
def test_probes_stop_asking_once_the_model_closed_its_thinking(probe):
    def script(p, params, i):
        tail = p.split("<assistant>")[-1]
        if p.endswith(PLAIN_SUFFIX):
            return " 5"  # one probe answer: never enough to exit
        if "</think>" in tail:
            return " \\boxed{7}."
        return " </think> The answer is" if tail.count(" t") >= 2 else " t t t t t t"
    llm = Scripted(script, thinking="deepseek_r1")
    r = ttc.EarlyExit(probe).solve("3 + 4?", llm)
    # chunk 1 (" t t " open): probed once; chunk 2 (closed): not probed; the model answers itself
    assert len(probe_prompts(llm)) == 1
    assert r.answer == "7" and r.candidates[0].finish_reason == "stop"


def test_deepconf_scores_the_thinking_tokens():
    thinking = Thinking(text=" t" * 4, token_ids=(1, 2, 1, 2), logprobs=(-0.1,) * 4,
                        top_logprobs=({1: -0.1, 2: -0.1},) * 4, marker_token_ids=(9,))
    c = Completion(text=" 7", token_ids=(3, 4), finish_reason="stop", logprobs=(-5.0, -5.0),
                   top_logprobs=({3: -5.0, 4: -5.0},) * 2, thinking=thinking)
    assert lowest_group_confidence(c, window=2, mode="topk") == pytest.approx(0.1)
    assert lowest_group_confidence(c, window=2, mode="logprob") == pytest.approx(-0.1)
    plain = dataclasses.replace(c, thinking=None)
    assert lowest_group_confidence(plain, window=2, mode="logprob") == pytest.approx(-5.0)


def test_the_online_confidence_probe_reads_the_thinking_positions_only():
    llm = Scripted(["x"], thinking="deepseek_r1")
    ctx = Context(llm)

    async def check():
        ids = await llm.tokenize("<think> a b </think> c d")  # the prompt does not open: the model did
        prompt = await llm.tokenize("question")
        lp = [0.0] + [-0.1] * 5 + [0.0] + [-9.0] * 4  # start, thinking, end, content (very unsure)
        state = TraceState(problem=Problem("q"), prompt_ids=prompt, token_ids=ids, logprobs=lp)
        assert len(ids) == len(lp)
        return await TokenConfidence(window=2, threshold=-1.0, top_k=0).check(state, ctx)

    d = asyncio.run(check())
    assert d.action == "continue" and d.score == pytest.approx(-0.1)


def test_step_searches_cut_the_thinking_at_the_formats_step_delimiter():
    fmt = dataclasses.replace(FORMATS["deepseek_r1"], name="lines", step_delimiter="\n")
    llm = Scripted(["a\nb"], thinking=fmt)

    async def start(config):
        stepper = await Stepper(Problem("3 + 4?"), Context(llm), config, ttc.SamplingParams()).start()
        return stepper.config.delimiter, stepper.opened

    assert asyncio.run(start(StepConfig())) == ("\n", True)
    assert asyncio.run(start(StepConfig(delimiter="###"))) == ("###", True)  # a named delimiter stays


def test_an_exit_after_the_thinking_closed_keeps_the_content_apart_from_the_thinking():
    from ttc.strategies.early_exit import _content_after

    fmt = FORMATS["deepseek_r1"]
    assert _content_after(" t t</think> The sum", PLAIN_SUFFIX + " 7", fmt) == (
        " The sum" + PLAIN_SUFFIX + " 7", {"thinking": " t t", "thinking_closed": True})
    assert _content_after(" t t", "</think>" + PLAIN_SUFFIX + " 7", fmt) == (
        PLAIN_SUFFIX + " 7", {"thinking": " t t", "thinking_closed": True})
    assert _content_after("The sum", PLAIN_SUFFIX + " 7", None) == ("The sum" + PLAIN_SUFFIX + " 7", {})
