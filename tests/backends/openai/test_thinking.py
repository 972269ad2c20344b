"""Reasoning models through an OpenAI-compatible server: the sampling fields reasoning deployments
need, the thinking read apart from the final content (the server's `reasoning` / `reasoning_content`,
else the declared format), its token count, and servers that hide it.

The wire format's pure functions are tested on bodies; the backend end to end against the fake
server's thinking presets (tests/fake_openai.py: a Qwen3-style model whose thinking holds a
different number, boxed, than its answer). The real vLLM with and without a reasoning parser is in
tests/test_thinking_servers_real.py.
"""

from __future__ import annotations

import asyncio

import pytest

import ttc
from fake_openai import THOUGHT, FakeOpenAI
from ttc.backends.openai import OpenAICompatible, ServerFeatures
from ttc.backends.openai.adapting import refused_fields
from ttc.backends.openai.payloads import chat_payload, completion_payload, requested_fields
from ttc.backends.openai.reasoning import ThinkingSplit, reported_reasoning
from ttc.backends.openai.responses import parse_chat, parse_completions
from ttc.backends.openai.usage import generation, with_hidden_thinking
from ttc.context import Context
from ttc.errors import InvalidInput, Unsupported
from ttc.strategies.first_finish import StreamSample
from ttc.strategies.registry import OPTIONS, STRATEGIES, make_strategy
from ttc.thinking import FORMATS
from ttc.types import Completion, SamplingParams

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
R1 = FORMATS["deepseek_r1"]


# -- request bodies -------------------------------------------------------------------------------
def test_the_reasoning_sampling_fields_are_sent_only_when_set():
    plain = completion_payload("m", "Hi", SamplingParams(), ServerFeatures(), extensions=False, stream=False)
    assert not {"top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"} & set(plain)
    params = SamplingParams(top_k=20, min_p=0.05, presence_penalty=0.5, frequency_penalty=0.25,
                            repetition_penalty=1.1)
    for body in (completion_payload("m", "Hi", params, ServerFeatures(), extensions=False, stream=False),
                 chat_payload("m", MESSAGES, params, ServerFeatures(), extensions=False, stream=False)):
        assert (body["top_k"], body["min_p"], body["presence_penalty"], body["frequency_penalty"],
                body["repetition_penalty"]) == (20, 0.05, 0.5, 0.25, 1.1)


def test_chat_template_kwargs_go_to_the_chat_body_and_not_to_completions():
    params = SamplingParams(chat_template_kwargs={"enable_thinking": False})
    chat = chat_payload("m", MESSAGES, params, ServerFeatures(), extensions=True, stream=False)
    assert chat["chat_template_kwargs"] == {"enable_thinking": False}
    # /v1/completions: they were applied when the prompt was rendered (chat_prompt(..., chat_template_kwargs=))
    assert "chat_template_kwargs" not in completion_payload("m", [1, 2], params, ServerFeatures(), extensions=True,
                                                            stream=False)
    assert requested_fields(params, chat=True) == ("chat_template_kwargs",)
    assert requested_fields(params, chat=False) == ()


def test_extra_is_merged_verbatim_and_may_not_name_a_field_ttc_sets():
    params = SamplingParams(extra={"thinking_token_budget": 64, "include_reasoning": True})
    body = chat_payload("m", MESSAGES, params, ServerFeatures(), extensions=True, stream=True)
    assert body["thinking_token_budget"] == 64 and body["include_reasoning"] is True
    assert requested_fields(params, chat=False) == ("thinking_token_budget", "include_reasoning")
    for clash in ({"top_k": 5}, {"max_tokens": 9}, {"return_token_ids": False}, {"stream_options": {}}):
        with pytest.raises(InvalidInput, match=f"SamplingParams.extra names {next(iter(clash))}"):
            completion_payload("m", "Hi", SamplingParams(extra=clash), ServerFeatures(), extensions=True, stream=True)


def test_a_refusal_is_attributed_to_the_fields_it_names_or_to_the_one_field_sent():
    body = {"model": "m", "prompt": "Hi", "top_k": 5, "thinking_token_budget": 32}
    asked = ("top_k", "thinking_token_budget")
    vllm = ("thinking_token_budget is set but reasoning_config is not configured. Please set --reasoning-parser "
            "and/or --reasoning-config to use thinking_token_budget.")
    assert refused_fields(body, vllm, asked) == ["thinking_token_budget"]
    tserve = "Unexpected fields in the request: {'top_k', 'return_token_ids'}"
    assert refused_fields(body, tserve, asked) == ["top_k"]
    # a generic refusal is the only requested field's; with two sent, it is nobody's (no guess)
    assert refused_fields({"model": "m", "min_p": 0.1}, "Extra inputs are not permitted", ("min_p",)) == ["min_p"]
    assert refused_fields(body, "Extra inputs are not permitted", asked) == []
    # a refusal about something else (the context length) is not a field's
    assert refused_fields({"model": "m", "min_p": 0.1}, "This model's maximum context length is 2048 tokens",
                          ("min_p",)) == []


# -- reading the thinking -------------------------------------------------------------------------
def _chat_answer(message: dict, **choice) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message},
                         **choice}], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}


@pytest.mark.parametrize("key", ["reasoning", "reasoning_content"])
def test_the_server_parsers_thinking_becomes_completion_thinking(key):
    data = _chat_answer({"content": "The answer is 5.", key: "Maybe \\boxed{7}.", "reasoning_content"
                         if key == "reasoning" else "reasoning": None})
    parsed = parse_chat(data, SamplingParams(), ServerFeatures(), extensions=False)
    c = parsed.completions[0]
    assert c.text == "The answer is 5." and c.thinking.text == "Maybe \\boxed{7}." and c.thinking.closed
    assert parsed.updates["reasoning"] is True


def test_the_whole_outputs_ids_and_logprobs_are_split_at_the_marker_ids():
    # vLLM's return_token_ids and logprobs cover thinking, end marker and content: 10, 11 | 99 | 12, 13
    data = _chat_answer({"content": "five", "reasoning": "hmm"}, token_ids=[10, 11, 99, 12, 13],
                        logprobs={"content": [{"token": f"token_id:{t}", "logprob": -0.1 * k}
                                              for k, t in enumerate([10, 11, 99, 12, 13])]})
    split = ThinkingSplit(R1, start_id=98, end_id=99, opened=True)
    c = parse_chat(data, SamplingParams(logprobs=True), ServerFeatures(), extensions=True, split=split).completions[0]
    assert c.token_ids == (12, 13) and c.logprobs == pytest.approx((-0.3, -0.4))
    assert c.thinking.token_ids == (10, 11) and c.thinking.logprobs == pytest.approx((0.0, -0.1))
    assert c.thinking.marker_token_ids == (99,) and c.thinking.marker_logprobs == pytest.approx((-0.2,))
    assert c.num_tokens == 5 and c.reasoning_tokens == 2
    # markers unknown: the ids cannot be split, the thinking keeps its text only
    c = parse_chat(data, SamplingParams(), ServerFeatures(), extensions=True).completions[0]
    assert c.thinking.text == "hmm" and c.thinking.token_ids == () and c.token_ids == ()


def test_cut_inside_the_thinking_is_open_and_has_no_content():
    data = {"choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": None, "reasoning": "so 3 + 4"}}]}
    c = parse_chat(data, SamplingParams(), ServerFeatures(), extensions=False).completions[0]
    assert c.text == "" and c.thinking.text == "so 3 + 4" and not c.thinking.closed


def test_without_a_parser_the_declared_format_splits_by_ids_else_by_text():
    text = "Let me see: \\boxed{7}?</think>The answer is \\boxed{5}."
    data = {"choices": [{"index": 0, "finish_reason": "stop", "text": text, "token_ids": [5, 6, 99, 7, 8]}]}
    by_ids = parse_completions(data, SamplingParams(), ServerFeatures(), extensions=True,
                               split=ThinkingSplit(R1, 98, 99, opened=True)).completions[0]
    assert by_ids.text == "The answer is \\boxed{5}." and by_ids.token_ids == (7, 8)
    assert by_ids.thinking.text == "Let me see: \\boxed{7}?" and by_ids.thinking.token_ids == (5, 6)
    by_text = parse_completions({"choices": [{"index": 0, "finish_reason": "stop", "text": text}]}, SamplingParams(),
                                ServerFeatures(), extensions=False, split=ThinkingSplit(R1)).completions[0]
    assert by_text.text == by_ids.text and by_text.thinking.text == by_ids.thinking.text
    # no format declared: nothing is split (never guessed from the text)
    plain = parse_completions(data, SamplingParams(), ServerFeatures(), extensions=True).completions[0]
    assert plain.thinking is None and plain.text == text


def test_the_servers_reasoning_count_is_the_usage_else_ttc_counts_or_estimates():
    data = _chat_answer({"content": "5", "reasoning": "a b c d e f g h"})
    data["usage"]["completion_tokens_details"] = {"reasoning_tokens": 6}
    c = parse_chat(data, SamplingParams(), ServerFeatures(), extensions=False).completions[0]
    assert reported_reasoning(data) == 6
    gen = generation(data, [c], ttc.backends.openai.ChatMessages(MESSAGES))
    assert gen.usage().reasoning_tokens == 6 and not gen.estimated
    del data["usage"]["completion_tokens_details"]
    gen = generation(data, [c], ttc.backends.openai.ChatMessages(MESSAGES))  # no ids, no tokenizer: estimated
    assert gen.usage().reasoning_tokens == 4 and gen.estimated


def test_a_server_that_hides_the_thinking_gives_hidden_thinking_of_the_reported_count():
    data = {"choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t}}
                        for i, t in enumerate(["5", "five five"])],
            "usage": {"prompt_tokens": 3, "completion_tokens": 40,
                      "completion_tokens_details": {"reasoning_tokens": 30}}}
    completions = parse_chat(data, SamplingParams(n=2), ServerFeatures(), extensions=False).completions
    hidden = with_hidden_thinking(data, completions)
    assert all(c.thinking.hidden and c.thinking.text == "" for c in hidden)
    assert sum(c.reasoning_tokens for c in hidden) == 30
    assert generation(data, hidden, "x").usage().reasoning_tokens == 30


# -- end to end on the fake server -----------------------------------------------------------------
def _run(llm, coro):
    """Await `coro` in a fresh event loop, then close the backend's session of that loop."""
    async def go():
        try:
            return await coro
        finally:
            await llm.aclose()
    return asyncio.run(go())


def _solve(strategy, llm, seed=0):
    return strategy.solve("What is 2 + 3?", llm, seed=seed)


def test_without_a_parser_the_answer_never_comes_from_the_thinking():
    with FakeOpenAI("thinking") as server:
        llm = OpenAICompatible(server.url, model="fake", tokenizer=server.tokenizer(), thinking="qwen3")
        result = _solve(ttc.MajorityVote(n=4), llm)
        assert result.answer == "5"
        for c in result.candidates:
            assert "\\boxed{7}" in c.thinking and "7" not in c.text and "<think>" not in c.text
            assert c.completion.thinking.marker_token_ids  # split by the sampled ids (markers are one token)
        assert result.usage.reasoning_tokens == sum(server.thinking_tokens(server.encode(THOUGHT))
                                                    for _ in result.candidates)
        # the same server read without the format: the boxed 7 of the thinking wins (what the split prevents)
        blind = _solve(ttc.MajorityVote(n=4), OpenAICompatible(server.url, model="fake", tokenizer=server.tokenizer()))
        assert blind.answer == "7"


@pytest.mark.parametrize("preset", ["thinking_parser", "thinking_content"])
def test_the_servers_parser_is_read_on_the_chat_endpoint(preset):
    with FakeOpenAI(preset) as server:
        llm = OpenAICompatible(server.url, model="fake", use_chat=True)
        result = _solve(ttc.MajorityVote(n=4), llm)
        assert result.answer == "5"
        assert all("\\boxed{7}" in c.thinking and "7" not in c.text for c in result.candidates)
        reported = sum(server.thinking_tokens(server.encode(THOUGHT)) for _ in range(4))
        assert result.usage.reasoning_tokens == reported == server.reported_reasoning
        assert llm.features.reasoning is True


@pytest.mark.parametrize(("preset", "chat"), [("thinking_parser", True), ("thinking", False)])
def test_streams_keep_the_thinking_apart(preset, chat):
    with FakeOpenAI(preset) as server:
        llm = OpenAICompatible(server.url, model="fake", use_chat=chat, tokenizer=server.tokenizer(),
                               thinking="qwen3")
        result = _solve(StreamSample(), llm)
        assert result.answer == "5"
        c = result.candidates[0]
        assert "\\boxed{7}" in c.thinking and "</think>" not in c.text and "7" not in c.text
        assert result.usage.reasoning_tokens == server.thinking_tokens(server.encode(THOUGHT))
        assert result.usage.completion_tokens == server.reported["completion_tokens"]


def test_a_field_the_server_refuses_is_unsupported_and_not_sent_again():
    with FakeOpenAI("vllm", refuse=("thinking_token_budget",)) as server:
        llm = OpenAICompatible(server.url, model="fake")
        params = SamplingParams(max_tokens=16, extra={"thinking_token_budget": 32})
        with pytest.raises(Unsupported, match=r"thinking_token_budget is not supported by http://127\.0\.0\.1"):
            _run(llm, llm.generate("Hi", params))
        assert "thinking_token_budget" in llm.features.unsupported
        sent = len(server.requests)
        with pytest.raises(Unsupported, match="thinking_token_budget"):
            _run(llm, llm.generate("Hi", params))
        assert len(server.requests) == sent  # refused here, never sent again, never dropped
        assert _run(llm, llm.generate("Hi", params.replace(extra=None))).completions  # the rest still works


def test_transformers_serve_style_refusal_of_top_k_is_unsupported():
    with FakeOpenAI("openai") as server:  # strict fields: "Unrecognized request argument supplied: top_k"
        llm = OpenAICompatible(server.url, model="fake", tokenizer=server.tokenizer())
        with pytest.raises(Unsupported, match="top_k is not supported"):
            _run(llm, llm.generate("Hi", SamplingParams(top_k=5, max_tokens=8)))


def test_hidden_thinking_counts_and_refuses_only_what_needs_the_text():
    from ttc.needs import Needs
    from ttc.verifiers.base import Verifier

    with FakeOpenAI("thinking_hidden") as server:
        llm = OpenAICompatible(server.url, model="fake", use_chat=True)
        result = _solve(ttc.MajorityVote(n=2), llm)
        assert result.answer == "5" and llm.features.hidden_thinking is True
        assert result.usage.reasoning_tokens == 2 * server.thinking_tokens(server.encode(THOUGHT))
        assert all(c.completion.thinking.hidden for c in result.candidates)

        class ReadsThinking(Verifier):
            name = "reads_thinking"
            needs = Needs(thinking=True)

            async def score(self, problem, candidates, ctx):
                from ttc.needs import thinking_text

                return [float(len(thinking_text(c, self.name))) for c in candidates]

        with pytest.raises(Unsupported, match="hid it"):
            _run(llm, ttc.BestOfN(n=2, verifier=ReadsThinking()).run(ttc.Problem("What is 2 + 3?"), Context(llm)))


def test_enable_thinking_false_reaches_the_chat_template_of_a_tokenize_rendered_prompt():
    with FakeOpenAI("vllm") as server:
        llm = OpenAICompatible(server.url, model="fake")
        _run(llm, llm.chat_prompt(MESSAGES, chat_template_kwargs={"enable_thinking": False}))
        path, body = server.requests[-1]
        assert path == "/tokenize" and body["chat_template_kwargs"] == {"enable_thinking": False}


def test_a_stream_whose_server_sent_no_chunk_for_the_end_marker_is_split_by_its_text():
    # vLLM's parser sends no chunk for the "</think>" token: the joined ids lack it, the joined text has it
    from ttc.backends.openai.reasoning import split_completion

    words = {"a": 1, "b": 2, "five": 3}
    whole = Completion(text="a b</think>five", token_ids=(1, 2, 3, 0), finish_reason="stop",
                       logprobs=(-0.1, -0.2, -0.3, -0.4))
    c = split_completion(whole, ThinkingSplit(R1, 98, 99, opened=True),
                         lambda text: [words[w] for w in text.split()])
    assert (c.thinking.text, c.text) == ("a b", "five") and c.thinking.closed
    assert c.token_ids == (3, 0) and c.logprobs == (-0.3, -0.4)  # the content keeps its sampled ids, EOS too
    assert c.thinking.token_ids == (1, 2) and c.thinking.logprobs == (-0.1, -0.2)


def test_split_thinking_of_a_stream_matches_generate():
    llm_split = ThinkingSplit(R1, opened=True)
    whole = Completion(text="a \\boxed{7}</think>b 5", token_ids=(), finish_reason="stop")
    from ttc.backends.openai.reasoning import split_completion

    c = split_completion(whole, llm_split)
    assert (c.thinking.text, c.text) == ("a \\boxed{7}", "b 5")


# -- every registered strategy on a thinking model --------------------------------------------------
THINKING_MODES = {"no_parser_token_ids": ("thinking", {"thinking": "qwen3"}),
                  "parser_chat": ("thinking_parser", {"use_chat": True, "thinking": "qwen3"}),
                  "parser_chat_no_format": ("thinking_parser", {"use_chat": True})}


#: strategies that continue their traces by token ids on /v1/completions (SolveDetectVerify's rounds are EarlyExit's)
CONTINUING = [name for name in STRATEGIES if "max_steps" in OPTIONS.get(name, {})
              or name in ("early_exit", "deepconf", "solve_detect_verify")]


@pytest.mark.parametrize("mode", list(THINKING_MODES))
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_reads_its_answer_from_the_content(name, mode):
    preset, options = THINKING_MODES[mode]
    with FakeOpenAI(preset) as server:
        llm = OpenAICompatible(server.url, model="fake", tokenizer=server.tokenizer(), **options)
        prm = ttc.verifiers.ProgrammaticPRM(lambda problem, steps: 0.5)
        strategy = make_strategy(name, n=4, verifier=prm if "max_steps" in OPTIONS.get(name, {}) else None)
        if mode == "parser_chat_no_format" and name == "deepconf":
            # no format: the parser's thinking comes without logprobs, and DeepConf scores the thinking
            with pytest.raises(InvalidInput, match="logprobs"):
                _solve(strategy, llm, seed=7)
            return
        if mode == "parser_chat_no_format" and name in CONTINUING:
            # no format: its step continuations (token ids to /v1/completions, which no parser splits) cannot
            # be split: the backend says so once
            with pytest.warns(UserWarning, match="Declare its thinking format"):
                _solve(strategy, llm, seed=7)
            return
        if mode == "parser_chat_no_format" and name == "budget_forcing":
            with pytest.raises(Unsupported, match="BudgetForcing needs the model's thinking format"):
                _solve(strategy, llm, seed=7)
            return
        result = _solve(strategy, llm, seed=7)
        assert result.ok and result.answer in ("5", "6"), (result.error, result.answer)
        answered = [c for c in result.candidates if c.answer is not None]
        assert answered and all(c.answer != "7" and "\\boxed{7}" not in c.text for c in answered)
        assert result.usage.reasoning_tokens > 0


def test_a_reported_zero_beside_thinking_counted_from_the_ids_is_the_servers_undercount():
    # vLLM's deepseek_r1 parser on a thinking the template opened: reasoning_tokens 0
    data = _chat_answer({"content": "five", "reasoning": "hmm"}, token_ids=[10, 11, 99, 12])
    data["usage"]["completion_tokens_details"] = {"reasoning_tokens": 0}
    c = parse_chat(data, SamplingParams(), ServerFeatures(), extensions=True,
                   split=ThinkingSplit(R1, 98, 99, opened=True)).completions[0]
    assert generation(data, [c], "x").usage().reasoning_tokens == 2
