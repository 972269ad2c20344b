"""Thinking on the real thinking test model, in process (issue 22, think-core's part): on the
transformers backend and on `VLLMEngine`, every registered strategy runs and reads its answers from
the final content; the counts add up (thinking + markers + content = completion tokens); and a
thinking that holds a `\\boxed{}` with another number than the final answer never gives the answer.

The model (`thinking_model`, a SmolLM2 fine-tuned to think in `<think> ... </think>` and then answer
with `\\boxed{}`) declares its format in `ttc_thinking.json`, so the backends are built without
`thinking=`: the declared default is what is tested.
"""


import re

import pytest

import ttc
from ttc.answers import read_answer
from ttc.strategies.registry import STRATEGIES, make_strategy
from ttc.thinking import generated_ids
from ttc.verifiers import ProgrammaticPRM

pytestmark = pytest.mark.slow

PARAMS = ttc.SamplingParams(max_tokens=128, temperature=0.7)
STEP_SEARCHES = {"beam", "dvts", "astar", "particle", "particle_gibbs", "parallel_tempering"}
#: a problem like the model's training traces, asked as its bare question (the model was tuned on that)
PROBLEM = ttc.Problem("Ada has 5 apples. Ada gets 7 more and then gives away 3. How many apples does Ada have now?",
                      answer="9", metadata={"messages": [{"role": "user", "content": "Ada has 5 apples. Ada gets 7 "
                                                          "more and then gives away 3. How many apples does Ada "
                                                          "have now?"}]})


@pytest.fixture(scope="module")
def thinking_transformers(thinking_model):
    from ttc.backends.transformers import Transformers

    backend = Transformers(thinking_model, device="cpu")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def thinking_engine(thinking_model):
    from ttc.backends.vllm_engine import VLLMEngine

    engine = VLLMEngine(thinking_model)
    yield engine
    engine.close()


@pytest.fixture(params=["transformers", "vllm_engine"])
def backend(request):
    return request.getfixturevalue("thinking_transformers" if request.param == "transformers" else "thinking_engine")


def check_split(llm, completion) -> None:
    """Text and ids agree part by part, the markers are in neither, and the counts add up."""
    t = completion.thinking
    assert t is not None, "the declared format was not picked up"
    start_id, end_id = llm._splitter.start_id, llm._splitter.end_id
    assert start_id not in completion.token_ids + t.token_ids and end_id not in completion.token_ids + t.token_ids
    assert completion.text == llm.decode(completion.token_ids) or completion.finish_reason == "stop"
    assert t.text == llm.decode(t.token_ids) or not t.closed
    whole = generated_ids(completion)
    assert len(whole) == t.num_tokens + len(t.marker_token_ids) + len(completion.token_ids) == completion.num_tokens
    assert t.closed == (end_id in whole)


def test_the_declared_format_is_picked_up_and_the_markers_are_single_tokens(backend):
    assert backend.thinking is not None and backend.thinking.name == "deepseek_r1"
    assert backend._splitter.start_id != backend._splitter.end_id


#: its verifier's checks (4 x 48 tokens, a 384-token slow one) per candidate cost more than this sweep's CI time:
#: tests/test_solve_detect_verify_real.py runs it, smaller, on this model through vLLM
@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"solve_detect_verify"}))
def test_every_registered_strategy_answers_from_the_final_content(name, backend):
    options = {"max_steps": 2} if name in STEP_SEARCHES else {}
    verifier = ProgrammaticPRM(lambda problem, steps: 0.5) if name in STEP_SEARCHES else None
    params = PARAMS.replace(max_tokens=48) if name in STEP_SEARCHES else PARAMS
    strategy = make_strategy(name, n=2, verifier=verifier, params=params, **options)
    result = strategy.solve(PROBLEM, backend, seed=1)
    assert result.ok, (name, result.error)
    assert result.candidates, name
    assert result.usage.reasoning_tokens > 0, (name, result.usage)  # the model thought, and it was counted
    assert result.usage.reasoning_tokens <= result.usage.completion_tokens, name
    for c in result.candidates:
        assert c.thinking is not None, (name, c.text)
        if c.thinking_closed is False:
            assert c.answer is None or c.finish_reason in ("early_exit", "dropped"), (name, c)
        elif c.answer is not None and c.finish_reason not in ("early_exit", "dropped"):
            assert c.answer == read_answer(c.text, c.finish_reason != "length")[0], (name, c.answer, c.text)
        if c.completion is not None and name not in ("early_exit", "deepconf"):
            check_split(backend, c.completion)
    answered = [c for c in result.candidates if c.answer is not None]
    if result.answer is not None:
        assert answered, name


def test_counts_add_up_to_what_the_backend_generated(thinking_transformers):
    """Usage's completion tokens equal the tokens the backend decoded; the thinking is part of them."""
    llm = thinking_transformers
    before = llm.tokens_generated()
    result = ttc.MajorityVote(n=4, sample=ttc.Sample(PARAMS)).solve(PROBLEM, llm, seed=2)
    decoded = llm.tokens_generated() - before
    assert result.usage.completion_tokens == decoded
    split = sum(c.completion.thinking.num_tokens + len(c.completion.thinking.marker_token_ids)
                + len(c.completion.token_ids) for c in result.candidates)
    assert split == decoded
    assert result.usage.reasoning_tokens == sum(c.completion.thinking.num_tokens for c in result.candidates)


QUESTION = "Ada has 5 apples. Ada gets 7 more and then gives away 3. How many apples does Ada have now?"


def opened_prompt(llm, draft: str) -> ttc.Problem:
    """The question in the model's chat template, which opens the thinking, followed by `draft`
    inside that thinking: a raw text prompt (`metadata["prompt"]`), so every strategy sends it as is."""
    text = llm.tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                             add_generation_prompt=True)
    assert text.rstrip().endswith("<think>")  # the template opened the thinking (deepseek_r1)
    return ttc.Problem(QUESTION, answer="9", metadata={"prompt": text + draft})


def old_rule(c) -> str | None:
    """The answer today's rule would read: the whole output, thinking included."""
    whole_text = (c.thinking or "") + ("</think>" if c.thinking_closed else "") + c.text
    return read_answer(whole_text, c.finish_reason != "length")[0]


def test_a_box_in_the_thinking_is_never_the_answer(backend):
    """The prompt opens the thinking with drafts that box 7; the model copies a `\\boxed{7}` into
    its own thinking. Whatever it does next, the answer is read from its final content only: a
    candidate that never closed its thinking has none (today's rule would read 7 from its thinking)."""
    problem = opened_prompt(backend, "Draft: \\boxed{7}.\n\nDraft: \\boxed{7}.\n\nDraft:")
    strategy = ttc.MajorityVote(n=8, sample=ttc.Sample(PARAMS.replace(max_tokens=96, temperature=0.8)))
    result = strategy.solve(problem, backend, seed=5)
    assert result.ok, result.error
    boxed = [c for c in result.candidates if "\\boxed{7}" in (c.thinking or "")]
    assert boxed, [(c.thinking, c.text) for c in result.candidates]
    for c in result.candidates:
        check_split(backend, c.completion)
        content = read_answer(c.text, c.finish_reason != "length")[0]
        assert c.answer == (content if c.thinking_closed else None), (c.thinking, c.text, c.answer)
    differs = [c for c in boxed if c.answer != old_rule(c)]
    assert differs, "no candidate shows the difference: today's rule would read the same answers"
    for c in differs:  # what today's rule would answer is a box the model wrote inside its thinking
        assert old_rule(c) in re.findall(r"\\boxed\{([^{}]*)\}", c.thinking), (c.thinking, c.text)


def test_numbers_in_the_thinking_are_not_the_answer(backend):
    """Closed thinking that works with other numbers than its final answer: the answer is the content's."""
    problem = opened_prompt(backend, "Ada starts with 5 apples.\n\n")
    result = ttc.MajorityVote(n=8, sample=ttc.Sample(PARAMS.replace(max_tokens=96, temperature=1.0))).solve(
        problem, backend, seed=5)
    closed = [c for c in result.candidates if c.thinking_closed]
    assert closed, [(c.thinking, c.text) for c in result.candidates]
    for c in closed:
        assert c.answer == read_answer(c.text, c.finish_reason != "length")[0]
    thinking_numbers = [c for c in closed if c.answer is not None and read_answer(c.thinking, True)[0] not in
                        (None, c.answer)]
    assert thinking_numbers, [(c.thinking, c.text) for c in closed]
