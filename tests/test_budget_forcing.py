"""Budget forcing (s1) on the scripted backend: the rule, the token-id continuations and the counts.

The scripted model thinks in words after the prompt opened `<think>`; every word and every space is
one token, so each count below is exact."""

import asyncio
import dataclasses
import random

import pytest

import ttc
from ttc.backends import Scripted
from ttc.backends.base import PREFIX_CACHING, STREAM
from ttc.forcing import ANSWER, FORCE, THINK, WAIT, MarkerIds, next_move, prompt_state
from ttc.strategies.budget_forcing import THINKING_BUDGET, BudgetForcing
from ttc.strategies.registry import make_strategy, worst_case
from ttc.thinking import ThinkingFormat
from ttc.types import SamplingParams, Thinking

CUE = ttc.thinking.FORMATS["deepseek_r1"].answer_cue


class Recording(Scripted):
    """Scripted, keeping every prompt exactly as the strategy sent it (token ids or text)."""

    def __init__(self, script, **kwargs):
        super().__init__(script, **kwargs)
        self.prompts = []

    async def generate(self, prompt, params):
        self.prompts.append(prompt)
        return await super().generate(prompt, params)


def thinker(words: int, answer: str = "7", wait_words: int | None = None):
    """A model that thinks `words` words (each word + space: 2 tokens), closes its thinking and
    answers; after a "Wait" it thinks `wait_words` more and closes again; after the cue it answers."""
    def script(prompt, params, i):
        if prompt.endswith(CUE):
            return f"{answer}}} done"
        n = wait_words if prompt.endswith("Wait") and wait_words is not None else words
        return " t" * n + f" </think> The answer is \\boxed{{{answer}}}."
    return script


def forced(budget, script, **kwargs):
    llm = Recording(script)
    result = BudgetForcing(budget=budget, thinking="deepseek_r1", **kwargs).solve("3 + 4?", llm)
    return result, llm


@pytest.mark.parametrize("budget", [1, 2, 5, 8, 10, 11, 12, 30])
def test_the_thinking_never_exceeds_the_budget_and_is_forced_exactly_when_it_reaches_it(budget):
    own = 11  # the model's own thinking: " t" x 5 and a space, then the end marker
    r, llm = forced(budget, thinker(5))
    info, c = r.details, r.candidates[0]
    assert info["thinking_tokens"] == min(budget, own)
    assert info["forced"] == (budget <= own)
    assert llm.requests[0][1].max_tokens == budget
    assert r.answer == "7" and c.thinking_closed  # ended: by the model, or by ttc (then a prompt token)
    assert c.completion.thinking.closed == (not info["forced"])  # whether the model wrote the end marker
    assert r.usage.reasoning_tokens == info["thinking_tokens"]


def test_a_cut_thinking_is_continued_as_ids_with_the_end_marker_and_the_cue_appended():
    r, llm = forced(4, thinker(20))
    first, second = llm.prompts
    end, start = llm._vocab["</think>"], llm._vocab["<think>"]
    assert isinstance(second, list) and all(isinstance(t, int) for t in second)
    generated = list(r.candidates[0].completion.thinking.token_ids)
    cue = [llm._vocab[p] for p in ttc.backends.scripted._TOKEN.findall(CUE)]
    assert first[-1] == start and len(generated) == 4
    assert second == first + generated + [end] + cue
    assert r.candidates[0].text.startswith(CUE) and r.answer == "7"
    assert r.details["injected_tokens"] == 1 + len(cue) + 1  # the start marker the template lacked, end, cue


def test_a_thinking_ended_early_is_extended_by_wait_as_many_times_as_asked():
    for waits in (0, 1, 2, 3):
        r, llm = forced(100, thinker(3, wait_words=2), waits=waits)
        info = r.details
        assert info["waits"] == waits and not info["forced"]
        assert info["thinking_tokens"] == 7 + 5 * waits
        assert r.candidates[0].thinking.count("Wait") == waits
        assert len(llm.requests) == waits + 1
        # the end marker is a stop string while a "Wait" is left, and only then
        assert [bool(p.stop) for _, p in llm.requests] == [True] * waits + [False]
        assert r.answer == "7"


def test_wait_is_appended_to_the_thinking_ids_without_the_suppressed_end_marker():
    r, llm = forced(100, thinker(3, wait_words=2), waits=1)
    first, second = llm.prompts
    wait = llm._vocab["Wait"]
    assert second == first + [llm._vocab[" "], llm._vocab["t"]] * 3 + [llm._vocab[" "], wait]
    assert llm._vocab["</think>"] not in second


def test_the_extension_stops_at_the_budget():
    r, llm = forced(9, thinker(3, wait_words=3), waits=5)  # 7 tokens, then a wait leaves 2 of budget
    assert r.details["thinking_tokens"] == 9 and r.details["waits"] == 1 and r.details["forced"]
    assert [p.max_tokens for _, p in llm.requests][:2] == [9, 2]


def test_a_backend_that_ignores_the_stop_string_has_its_tokens_after_the_marker_discarded_and_counted():
    class NoStop(Recording):
        async def generate(self, prompt, params):
            return await super().generate(prompt, params.replace(stop=()))

    llm = NoStop(thinker(3, wait_words=2))
    r = BudgetForcing(budget=100, waits=1, thinking="deepseek_r1").solve("3 + 4?", llm)
    info = r.details
    assert info["discarded_tokens"] > 0 and info["marker_tokens"] == 2  # the suppressed one and the last
    assert llm._vocab["</think>"] not in llm.prompts[1][len(llm.prompts[0]):]
    total = info["thinking_tokens"] + info["marker_tokens"] + info["content_tokens"] + info["discarded_tokens"]
    assert total == r.usage.completion_tokens == llm.generated_tokens


@pytest.mark.parametrize("budget,waits", [(4, 0), (100, 0), (100, 2), (9, 3)])
def test_thinking_markers_content_and_discarded_add_up_to_the_completion_tokens(budget, waits):
    r, llm = forced(budget, thinker(4, wait_words=3), waits=waits)
    info = r.details
    total = info["thinking_tokens"] + info["marker_tokens"] + info["content_tokens"] + info["discarded_tokens"]
    assert total == r.usage.completion_tokens == llm.generated_tokens
    assert r.usage.generator_calls == info["requests"] == len(llm.prompts)
    assert r.candidates[0].usage.counts() == r.usage.counts()


def test_a_model_cut_while_answering_after_its_own_end_marker_finishes_its_answer():
    def script(prompt, params, i):
        answer = "The answer is \\boxed{7}."
        return answer if prompt.endswith("</think> ") else " t t </think> " + answer
    r, llm = forced(7, script)  # 5 thinking + 1 marker + 1 content = budget 7: cut, then continued
    assert r.answer == "7" and not r.details["forced"] and len(llm.requests) == 2
    assert llm.requests[1][1].max_tokens == 128 - 1
    # the continuation holds the model's own end marker and the answer begun after it
    assert llm.prompts[1][len(llm.prompts[0]):] == llm.prompts[0][:0] + [
        llm._vocab[t] for t in (" ", "t", " ", "t", " ", "</think>", " ")]
    assert r.candidates[0].text == " The answer is \\boxed{7}."


def test_votes_and_best_of_n_wrap_it():
    llm = Scripted(thinker(20))
    vote = ttc.MajorityVote(n=3, sample=BudgetForcing(budget=6, thinking="deepseek_r1")).solve("3 + 4?", llm)
    assert vote.answer == "7" and all(c.scores["forced"] == 1.0 for c in vote.candidates)
    confidence = ttc.verifiers.LogprobConfidence()  # needs logprobs: the sampler is asked for them
    best = ttc.BestOfN(n=2, verifier=confidence, sample=BudgetForcing(budget=6, thinking="deepseek_r1"))
    r = best.solve("3 + 4?", llm)
    assert r.answer == "7" and all(c.completion.thinking.num_tokens == 6 for c in r.candidates)
    assert all(len(c.completion.logprobs) == len(c.completion.token_ids) > 0 for c in r.candidates)


def test_the_registry_builds_it_with_its_budget_from_max_tokens():
    params = SamplingParams(max_tokens=12)
    one = make_strategy("budget_forcing", n=1, params=params, thinking="deepseek_r1")
    assert isinstance(one, BudgetForcing) and one.budget == 12
    many = make_strategy("s1", n=4, params=params, budget=8, waits=2, thinking="qwen3")
    assert isinstance(many, ttc.MajorityVote) and (many.sample.budget, many.sample.waits) == (8, 2)
    assert worst_case("budget_forcing", 2, 12, {"waits": 1}).tokens == 2 * (2 * 13 + 256)


# -- the engine's own budget ------------------------------------------------------------------------
class EngineBudget(Recording):
    capabilities = Recording.capabilities | {THINKING_BUDGET}


def test_a_backend_with_the_engines_thinking_budget_gets_one_request_carrying_it():
    llm = EngineBudget(thinker(3))
    r = BudgetForcing(budget=16, thinking="deepseek_r1").solve("3 + 4?", llm)
    assert r.details["path"] == "engine" and len(llm.requests) == 1
    assert llm.requests[0][1].extra == {"thinking_token_budget": 16} and r.answer == "7"
    # room for the budget, the end marker and the answer (the template lacked the start: ttc added it)
    assert llm.requests[0][1].max_tokens == 16 + 1 + 128
    c, info = r.candidates[0], r.details
    assert c.completion.thinking.num_tokens == info["thinking_tokens"] == 7 and c.completion.thinking.closed
    assert c.completion.thinking.marker_token_ids == (llm._vocab["</think>"],) and info["marker_tokens"] == 1
    assert c.text == " The answer is \\boxed{7}." and c.finish_reason == "stop" and not info["forced"]
    assert info["content_tokens"] == len(c.completion.token_ids) == 8
    for kwargs in ({"waits": 1}, {"engine": "never"}):
        strategy = BudgetForcing(budget=16, thinking="deepseek_r1", **kwargs)
        assert strategy.solve("3 + 4?", llm).details["path"] == "tokens"


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [({"budget": 0}, "budget"), ({"budget": -3}, "budget"),
                                          ({"waits": -1}, "waits"), ({"wait": " ", "waits": 1}, "wait"),
                                          ({"engine": "sometimes"}, "engine"),
                                          ({"engine": "always", "waits": 1}, "cannot extend")])
def test_bad_settings_are_refused_by_name(kwargs, match):
    with pytest.raises(ttc.InvalidInput, match=match):
        BudgetForcing(thinking="deepseek_r1", **kwargs)


def test_a_marker_that_is_not_one_token_of_the_model_is_refused():
    fmt = ThinkingFormat("odd", start="<think>", end="< / think >")
    with pytest.raises(ttc.InvalidInput, match="'< / think >' is 7 tokens"):
        BudgetForcing(budget=8, thinking=fmt).solve("3 + 4?", Scripted(thinker(3)))


def test_a_backend_without_token_ids_or_the_engines_budget_is_refused():
    class Text(Scripted):
        capabilities = frozenset({STREAM, PREFIX_CACHING})

    with pytest.raises(ttc.Unsupported, match="no token ids"):
        BudgetForcing(budget=8, thinking="deepseek_r1").solve("3 + 4?", Text(thinker(3)))
    with pytest.raises(ttc.Unsupported, match="engine='always'"):
        BudgetForcing(budget=8, engine="always", thinking="deepseek_r1").solve("3 + 4?", Scripted(thinker(3)))
    with pytest.raises(ttc.Unsupported, match="thinking format"):
        BudgetForcing(budget=8).solve("3 + 4?", Scripted(thinker(3)))


def test_a_prompt_that_closed_its_thinking_is_refused():
    closed = ttc.ChatPrompt(system="<think> </think> Answer directly.")
    with pytest.raises(ttc.InvalidInput, match="closes the thinking"):
        BudgetForcing(budget=8, thinking="deepseek_r1", prompt=closed).solve("3 + 4?", Scripted(thinker(3)))


# -- the pure rule --------------------------------------------------------------------------------------
def test_next_move():
    kw = {"cap": 10, "waits": 1, "progressed": True}
    assert next_move(thought=4, closed=True, finish="stop", waits_done=0, **kw) == WAIT
    assert next_move(thought=4, closed=True, finish="stop", waits_done=1, **kw) == ANSWER
    assert next_move(thought=10, closed=True, finish="stop", waits_done=0, **kw) == ANSWER
    assert next_move(thought=10, closed=False, finish="length", waits_done=0, **kw) == FORCE
    assert next_move(thought=4, closed=False, finish="length", waits_done=0, **kw) == THINK
    assert next_move(thought=4, closed=False, finish="stop", waits_done=1, **kw) == FORCE
    assert next_move(thought=4, closed=False, finish="stop", waits_done=0, **kw) == WAIT
    assert next_move(thought=4, closed=False, finish="length", waits_done=0, cap=10, waits=1,
                     progressed=False) == FORCE


def test_prompt_state():
    m = MarkerIds(start=1, end=2)
    assert prompt_state([5, 1, 6], m) is True
    assert prompt_state([5, 1, 6, 2], m) is False
    assert prompt_state([5, 6], m) is None
    assert prompt_state([1, 2, 1], m) is True


# -- on a backend that splits the thinking itself (as the in-process backends do) -------------------
@pytest.mark.parametrize("fmt", ["deepseek_r1", "qwen3"])
@pytest.mark.parametrize("budget,waits", [(5, 0), (40, 0), (40, 2), (12, 3)])
def test_on_a_backend_that_splits_the_thinking_the_rule_and_the_counts_hold(fmt, budget, waits):
    opens = "<think>" if fmt == "qwen3" else ""  # a Qwen3-style model writes its start marker itself

    def script(prompt, params, i):
        if prompt.endswith(CUE):
            return "7} done"
        if prompt.endswith("Wait"):
            return " t t t </think> \\boxed{7}"
        return opens + " t t t t </think> The answer is \\boxed{7}."

    llm = Recording(script, thinking=fmt)
    r = BudgetForcing(budget=budget, waits=waits).solve("3 + 4?", llm)  # the format: the backend's
    info, c = r.details, r.candidates[0]
    own = 9 + 7 * waits  # " t t t t " then " t t t " per wait
    assert info["thinking_tokens"] == min(budget, own) == c.completion.thinking.num_tokens
    assert info["forced"] == (budget <= own) and r.answer == "7"
    assert r.usage.reasoning_tokens == info["thinking_tokens"]
    total = info["thinking_tokens"] + info["marker_tokens"] + info["content_tokens"] + info["discarded_tokens"]
    assert total == r.usage.completion_tokens == llm.generated_tokens
    assert c.thinking.count("Wait") == info["waits"]
    if fmt == "qwen3":
        assert llm.prompts[0][-1] != llm._vocab["<think>"] and llm.requests[0][1].max_tokens == budget + 1
        # the model's own start marker stays in every continuation, once
        assert all(p[len(llm.prompts[0]):].count(llm._vocab["<think>"]) == 1 for p in llm.prompts[1:])
        assert info["marker_tokens"] >= 1


def test_a_qwen3_style_model_that_does_not_think_answers_as_it_is():
    llm = Recording(lambda p, params, i: " \\boxed{7}." if p.endswith("is") else "The answer is \\boxed{7}.",
                    thinking="qwen3")
    r = BudgetForcing(budget=4).solve("3 + 4?", llm)
    c = r.candidates[0]
    assert r.answer == "7" and c.text == "The answer is \\boxed{7}." and c.completion.thinking is None is c.thinking
    assert c.thinking_closed is None
    assert (r.details["thinking_tokens"], r.details["content_tokens"], r.details["forced"]) == (0, 7, False)
    assert len(llm.requests) == 2 and llm.requests[1][1].max_tokens == 128 - 5  # the cut answer, continued


def test_the_token_budget_of_the_problem_ends_the_thinking_and_forces_what_it_can():
    llm = Recording(thinker(40))
    prompt = len(llm._ids(asyncio.run(llm.chat_prompt([{"role": "user", "content": "x"}]))))
    with pytest.raises(ttc.BudgetExhausted):  # not even one thinking request fits
        BudgetForcing(budget=64, thinking="deepseek_r1").solve("3 + 4?", llm, budget=ttc.Budget(tokens=20))
    r = BudgetForcing(budget=64, thinking="deepseek_r1").solve("3 + 4?", llm, budget=ttc.Budget(tokens=prompt + 90))
    assert r.ok and r.details["thinking_tokens"] < 64 and r.usage.total_tokens <= prompt + 90


def test_prompt_state_at_the_first_position():
    m = MarkerIds(start=1, end=2)
    assert prompt_state([1, 5], m) is True and prompt_state([2, 5], m) is False


def test_marker_ids_are_looked_up_once_per_generator_and_format():
    from ttc.forcing import marker_token_ids

    class Counting(Scripted):
        asked = 0

        async def tokenize(self, text):
            type(self).asked += 1
            return await super().tokenize(text)

    llm = Counting(["x"])
    fmt = ttc.thinking.FORMATS["deepseek_r1"]
    first = asyncio.run(marker_token_ids(llm, fmt))
    assert asyncio.run(marker_token_ids(llm, fmt)) == first and Counting.asked == 2
    other = dataclasses.replace(fmt, name="other", start="<t>", end="</t>")
    assert asyncio.run(marker_token_ids(llm, other)) != first and Counting.asked == 4


def test_a_marker_the_tokenizer_splits_is_found_in_its_vocabulary():
    from ttc.forcing import marker_token_ids

    class Vocab:
        unk_token_id = 0

        def convert_tokens_to_ids(self, token):
            return {"<think>": 101, "</think>": 102}.get(token, 0)

    class Split(Scripted):
        tokenizer = Vocab()

        async def tokenize(self, text):
            return [7, 8]  # every marker text encodes as two pieces

    fmt = ttc.thinking.FORMATS["deepseek_r1"]
    assert asyncio.run(marker_token_ids(Split(["x"]), fmt)) == MarkerIds(start=101, end=102)
    odd = dataclasses.replace(fmt, name="odd", end="</odd>")
    with pytest.raises(ttc.InvalidInput, match="'</odd>' is 2 tokens"):
        asyncio.run(marker_token_ids(Split(["x"]), odd))


def test_a_seeded_run_gives_its_requests_consecutive_seeds_and_repeats():
    def seeds():
        llm = Recording(thinker(3, wait_words=2))
        BudgetForcing(budget=100, waits=2, thinking="deepseek_r1", params=SamplingParams(seed=5)).solve("3 + 4?", llm)
        return [p.seed for _, p in llm.requests]

    first = seeds()
    assert len(first) == 3 and first == [first[0], first[0] + 1, first[0] + 2] and seeds() == first
    assert first[0] == random.Random(5).getrandbits(31)  # the seed rule's draw, then + 1 per request


def test_a_backend_that_hides_the_thinking_is_refused():
    class Hiding(Scripted):
        async def generate(self, prompt, params):
            gen = await super().generate(prompt, params)
            hidden = [dataclasses.replace(c, thinking=Thinking(text="", hidden_tokens=5)) for c in gen.completions]
            return dataclasses.replace(gen, completions=hidden)

    with pytest.raises(ttc.Unsupported, match="hides the thinking"):
        BudgetForcing(budget=8, thinking="deepseek_r1").solve("3 + 4?", Hiding(thinker(3)))


@pytest.mark.parametrize("budget,waits", [(4, 0), (100, 1)])
def test_without_a_decoder_the_texts_come_from_the_completions(budget, waits):
    class NoDecode(Recording):
        can_decode = False

    texts = []
    for cls in (Recording, NoDecode):
        r = BudgetForcing(budget=budget, waits=waits, thinking="deepseek_r1").solve(
            "3 + 4?", cls(thinker(3, wait_words=2)))
        texts.append((r.candidates[0].thinking, r.candidates[0].text, r.answer))
    assert texts[0] == texts[1]
