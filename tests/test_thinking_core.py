"""Thinking as part of a candidate, in process: splits at the marker tokens, answers from the final
content only, cut-inside-thinking candidates without an answer, reasoning tokens in usage, the
`thinking` need, the sampling fields of the in-process backends (issue 22, think-core's part).

The scripted model thinks in the deepseek_r1 format: its chat prompt opens the thinking, it writes a
thinking that holds a *different* number and a `\\boxed{7}`, closes it, and answers `\\boxed{12}`.
Any strategy that read its answer from the whole text would answer 7.
"""

import warnings

import pytest

import ttc
from ttc.backends import Scripted
from ttc.backends.scripted import ScriptedResponse
from ttc.backends.thinking_split import ShortMaxTokensWarning
from ttc.needs import Needs
from ttc.strategies.registry import STRATEGIES, make_strategy
from ttc.thinking import ThinkingFormat, generated_ids, split_text, whole
from ttc.verifiers import ProgrammaticPRM
from ttc.verifiers.process import PRMVerifier

THINKING = "First guess: 3 + 4 = \\boxed{7}.\n\nBut the question asks for 3 * 4.\n\nSo it is 12."
CONTENT = "The answer is \\boxed{12}."
WHOLE = THINKING + "</think>" + CONTENT
PARAMS = ttc.SamplingParams(max_tokens=200, temperature=0.7)
STEP_SEARCHES = {"beam", "dvts", "astar", "particle", "particle_gibbs", "parallel_tempering"}


#: top-20 alternatives for every token (DeepConf reads them)
TOP = ({k: -0.1 * (k + 1) for k in range(20)},) * 400


def thinker(prompt: str, params: ttc.SamplingParams, i: int) -> ScriptedResponse:
    """The rest of WHOLE after what the prompt's last assistant turn already holds of it (step
    searches continue it; a conversation's earlier turns are not this answer)."""
    done = prompt.rsplit("<assistant>\n", 1)[-1]
    done = done[len("<think>"):] if done.startswith("<think>") else done
    return ScriptedResponse(WHOLE[len(done):] if WHOLE.startswith(done) else WHOLE, top_logprobs=TOP)


def model(**kw) -> Scripted:
    return Scripted(thinker, thinking="deepseek_r1", **kw)


# -- the split -----------------------------------------------------------------------------------
def test_a_completion_is_split_at_the_marker_tokens_and_the_counts_add_up():
    llm = model()
    result = ttc.Sample(PARAMS).solve("3 * 4?", llm)
    c = result.candidates[0]
    completion = c.completion
    assert completion.text == CONTENT and c.text == CONTENT
    assert completion.thinking.text == THINKING and c.thinking == THINKING
    assert completion.thinking.closed and c.thinking_closed is True
    end_id = llm._ids("</think>")[0]
    assert completion.thinking.marker_token_ids == (end_id,)  # the template opened it: one marker generated
    assert end_id not in completion.token_ids and end_id not in completion.thinking.token_ids
    assert "</think>" not in c.text and "</think>" not in c.thinking and "<think>" not in c.thinking
    assert llm.decode(completion.thinking.token_ids) == THINKING and llm.decode(completion.token_ids) == CONTENT
    thinking_tokens = len(llm._ids(THINKING))
    assert completion.reasoning_tokens == thinking_tokens
    assert completion.num_tokens == thinking_tokens + 1 + len(llm._ids(CONTENT))
    assert result.usage.completion_tokens == completion.num_tokens
    assert result.usage.reasoning_tokens == thinking_tokens
    assert generated_ids(completion) == tuple(llm._ids(WHOLE))
    assert whole(completion, llm.thinking).text == WHOLE
    assert result.answer == "12"


def test_the_qwen3_format_splits_only_output_that_opens_its_thinking():
    llm = Scripted(["<think>maybe \\boxed{7}</think>so \\boxed{12}", "no thinking: \\boxed{5}"], thinking="qwen3")
    a, b = ttc.MajorityVote(n=2, sample=ttc.Sample(PARAMS)).solve("3 * 4?", llm).candidates
    assert (a.thinking, a.text, a.answer) == ("maybe \\boxed{7}", "so \\boxed{12}", "12")
    assert len(a.completion.thinking.marker_token_ids) == 2  # both markers were generated
    assert (b.thinking, b.text, b.answer) == (None, "no thinking: \\boxed{5}", "5")


def test_enable_thinking_false_reaches_the_template_and_the_output_is_all_content():
    llm = Scripted(["\\boxed{12}"], thinking="deepseek_r1")
    params = PARAMS.replace(chat_template_kwargs={"enable_thinking": False})
    result = ttc.Sample(params).solve("3 * 4?", llm)
    assert llm.requests[0][0].endswith("<think></think>")
    assert result.candidates[0].thinking is None and result.answer == "12"


def test_a_continuation_inside_an_open_thinking_is_split_as_thinking():
    llm = Scripted(["still thinking \\boxed{7}</think>\\boxed{12}"], thinking="qwen3")
    prompt = llm._ids("<user>\nq\n<assistant>\n<think>I began")  # the prompt opened the thinking
    completion = ttc.run_sync(llm.generate(prompt, PARAMS)).completions[0]
    assert completion.thinking.text == "still thinking \\boxed{7}" and completion.text == "\\boxed{12}"
    closed = llm._ids("<think>done</think>Then")  # a prompt whose thinking is closed: all content
    completion = ttc.run_sync(llm.generate(closed, PARAMS)).completions[0]
    assert completion.thinking is None


def test_split_text_agrees_with_the_id_split():
    fmt = ThinkingFormat("r1")
    thinking, content = split_text(WHOLE, fmt)
    assert (thinking.text, content) == (THINKING, CONTENT)


# -- answers from the final content only ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_strategy_answers_from_the_content_never_the_thinking(name):
    prm = ProgrammaticPRM(lambda problem, steps: 0.5)
    params = PARAMS if name not in STEP_SEARCHES else PARAMS.replace(max_tokens=40)
    verifier = prm if name in STEP_SEARCHES else None
    strategy = make_strategy(name, n=2, verifier=verifier, params=params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortMaxTokensWarning)
        result = strategy.solve("3 * 4?", model(), seed=0)
    assert result.ok, result.error
    assert result.answer == "12", (name, result)
    answered = [c for c in result.candidates if c.answer is not None]
    assert answered and all(c.answer == "12" for c in answered), name
    assert all(c.thinking is not None and "\\boxed{7}" in c.thinking for c in answered), name
    assert all("\\boxed{7}" not in c.text for c in answered), name
    assert result.usage.reasoning_tokens > 0, name
    assert result.usage.reasoning_tokens < result.usage.completion_tokens, name


def test_a_candidate_cut_inside_its_thinking_has_no_answer_even_with_a_box_in_it():
    result = ttc.MajorityVote(n=3, sample=ttc.Sample(PARAMS.replace(max_tokens=14))).solve("3 * 4?", model())
    assert result.answer is None
    assert all(c.thinking_closed is False and c.answer is None for c in result.candidates)
    assert all("\\boxed{7}" in c.thinking and c.text == "" for c in result.candidates)
    assert result.no_answer_reason.startswith("cut inside its thinking")
    d = result.to_dict()
    assert d["candidates"][0]["thinking_closed"] is False
    assert d["candidates"][0]["reasoning_tokens"] == d["candidates"][0]["completion_tokens"] == 14


def test_without_thinking_a_box_anywhere_is_still_the_answer():
    """The same text on a model that does not think: nothing is split, the last box answers."""
    result = ttc.Sample(PARAMS).solve("3 * 4?", Scripted([WHOLE]))
    assert result.candidates[0].thinking is None and result.answer == "12"
    assert result.usage.reasoning_tokens == 0


# -- shown in results -----------------------------------------------------------------------------
def test_results_show_the_reasoning_tokens_and_the_thinking_apart():
    result = ttc.MajorityVote(n=2, sample=ttc.Sample(PARAMS)).solve("3 * 4?", model())
    assert f"reasoning_tokens={result.usage.reasoning_tokens}" in repr(result)
    assert "of them thinking" in result.usage.token_summary()
    assert result.to_dict()["usage"]["reasoning_tokens"] == result.usage.reasoning_tokens
    assert "| thinking |" in result._repr_markdown_()
    assert "<th>thinking</th>" in result._repr_html_()
    plain = ttc.MajorityVote(n=2, sample=ttc.Sample(PARAMS)).solve("3 * 4?", Scripted(["\\boxed{3}"]))
    assert "reasoning_tokens" not in repr(plain) and "thinking" not in plain._repr_markdown_()


def test_eval_table_shows_the_thinking_column_only_when_there_was_thinking():
    from ttc.eval.report import EvalReport

    def record(reasoning):
        return {"setting": "s", "strategy": "majority", "n": 2, "correct": True, "latency_s": 1.0,
                "usage": {"total_tokens": 100, "completion_tokens": 80, "reasoning_tokens": reasoning},
                "candidates": [{"finish_reason": "stop", "correct": True}]}

    assert "thinking/problem" in EvalReport([record(50)]).table()
    assert "thinking/problem" not in EvalReport([record(0)]).table()


def test_ttc_run_prints_the_thinking_shortened_apart_from_the_content(capsys):
    from ttc.display import thinking_preview

    candidate = ttc.Sample(PARAMS).solve("3 * 4?", model()).candidates[0]
    line = thinking_preview(candidate, width=40)
    assert line.startswith("[thinking, ") and "closed]" in line and "…" in line and CONTENT not in line


# -- the thinking need ------------------------------------------------------------------------------
def test_a_prm_that_declares_the_thinking_need_scores_its_steps_and_others_see_the_content():
    seen = []

    class ThinkingPRM(ProgrammaticPRM):
        needs = Needs(thinking=True)

    def score(problem, steps):
        seen.append(list(steps))
        return 0.5

    ttc.BestOfN(n=1, verifier=PRMVerifier(ThinkingPRM(score)), sample=ttc.Sample(PARAMS)).solve("3 * 4?", model())
    with_thinking = seen[-1]  # the PRM is asked about each prefix of the steps: the last is all of them
    ttc.BestOfN(n=1, verifier=PRMVerifier(ProgrammaticPRM(score)), sample=ttc.Sample(PARAMS)).solve("3 * 4?", model())
    content_only = seen[-1]
    assert with_thinking[0] == "First guess: 3 + 4 = \\boxed{7}." and with_thinking[-1] == CONTENT
    assert content_only == [CONTENT]
    assert "the thinking text" in Needs(thinking=True).describe()


def test_a_hidden_thinking_is_refused_to_a_scorer_that_needs_it():
    from ttc.needs import thinking_text
    from ttc.types import Candidate, Completion, Thinking

    hidden = Completion(text="\\boxed{12}", token_ids=(), finish_reason="stop",
                        thinking=Thinking(text="", hidden_tokens=40))
    with pytest.raises(ttc.Unsupported, match="hid it.*40 thinking tokens"):
        thinking_text(Candidate(text="\\boxed{12}", answer="12", completion=hidden, thinking=""), "the PRM 'p'")


# -- defaults for thinking models ---------------------------------------------------------------------
def test_a_thinking_backend_warns_once_at_the_default_max_tokens():
    llm = model()
    with pytest.warns(ShortMaxTokensWarning, match="max_tokens=256"):
        ttc.Sample().solve("3 * 4?", llm)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortMaxTokensWarning)
        ttc.Sample().solve("3 * 4?", llm)  # once per backend
        ttc.Sample(PARAMS).solve("3 * 4?", model())  # a chosen max_tokens: no warning
        ttc.Sample().solve("3 * 4?", Scripted(["\\boxed{1}"]))  # no thinking: no warning


# -- formats and markers ---------------------------------------------------------------------------------
def test_a_model_folder_declares_its_format_and_nothing_is_guessed(tmp_path):
    from ttc.thinking import FORMAT_FILE, declared_format, resolve_format

    assert declared_format(str(tmp_path)) is None and resolve_format(None, str(tmp_path)) is None
    (tmp_path / FORMAT_FILE).write_text('{"format": "deepseek_r1"}')
    assert declared_format(str(tmp_path)).name == "deepseek_r1"
    assert resolve_format(False, str(tmp_path)) is None
    (tmp_path / FORMAT_FILE).write_text('{"format": "mine", "start": "<r>", "end": "</r>"}')
    assert declared_format(str(tmp_path)).end == "</r>"
    (tmp_path / FORMAT_FILE).write_text('{"start": "<r>"}')
    with pytest.raises(ttc.InvalidInput, match="format"):
        declared_format(str(tmp_path))
    with pytest.raises(ttc.InvalidInput, match="unknown thinking format"):
        Scripted(["x"], thinking="nonsense")


def test_a_stopped_stream_keeps_its_thinking_apart_and_counts_it():
    """FirstFinish's loser is closed mid-thinking: its text is its (empty) content, its thinking is
    kept, and its thinking tokens are in the usage like every other completion token's part."""
    long_thinking = "hmm " * 200 + "</think>\\boxed{3}"
    calls = []

    def script(prompt, params, i):  # the first stream is short and fast, the second long and slow
        calls.append(1)
        return "short \\boxed{7}</think>\\boxed{12}" if len(calls) == 1 else long_thinking

    llm = Scripted(script, thinking="deepseek_r1",
                   token_latency=lambda text, k: 0.02 if text.startswith("short") else 0.002)
    strategy = ttc.FirstFinish(n=2, params=PARAMS)
    result = strategy.solve("3 * 4?", llm)
    assert result.answer == "12"
    loser = next(c for c in result.candidates if c.finish_reason == "cancelled")
    assert loser.text == "" and loser.thinking.startswith("hmm") and loser.thinking_closed is False
    assert loser.usage.reasoning_tokens == loser.usage.completion_tokens > 0
    assert result.usage.reasoning_tokens == sum(c.usage.reasoning_tokens for c in result.candidates)
