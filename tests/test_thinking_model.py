"""The thinking test model (issue 22): its synthetic traces, its chat template, its markers, its
build's reproducibility, and how a real vLLM server with the deepseek_r1 reasoning parser serves it
(thinking split from content, reasoning tokens counted, `enable_thinking=False`, thinking budgets)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ttc.answers import last_boxed
from ttc.errors import InvalidInput
from ttc.thinking_model import (
    CHAT_TEMPLATE,
    DEFAULT_RECIPE,
    RECIPE_FILE,
    THINKING_FILE,
    ThinkingRecipe,
    held_out_traces,
    target_text,
    thinking_folder_name,
    training_traces,
)
from ttc.thinking_traces import arithmetic_traces

_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


# -- the synthetic traces (fast) -------------------------------------------------------------------
def test_traces_are_deterministic_per_seed():
    assert arithmetic_traces(50, seed=7) == arithmetic_traces(50, seed=7)
    assert arithmetic_traces(50, seed=7) != arithmetic_traces(50, seed=8)
    assert arithmetic_traces(0, seed=1) == []
    with pytest.raises(InvalidInput, match="n must be"):
        arithmetic_traces(-1, seed=0)


def test_every_step_is_correct_arithmetic_and_the_last_one_is_the_answer():
    operations = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
                  "/": lambda a, b: a / b}
    for trace in arithmetic_traces(300, seed=3):
        results = []
        for step in trace.steps:
            for a, op, b, result in _STEP.findall(step):
                assert operations[op](int(a), int(b)) == int(result), (trace.question, step)
                results.append(int(result))
        assert results and results[-1] == trace.answer > 0, trace
        assert trace.thinking.split("\n\n") == list(trace.steps)
        assert last_boxed(trace.final) == str(trace.answer)


def test_held_out_problems_are_not_trained_on():
    trained = {trace.question for trace in training_traces(DEFAULT_RECIPE)}
    held_out = held_out_traces(100)
    assert len(held_out) == 100 and len({t.question for t in held_out}) == 100
    assert not trained & {t.question for t in held_out}


def test_the_taught_output_closes_the_thinking_before_the_answer():
    trace = arithmetic_traces(1, seed=0)[0]
    text = target_text(trace)
    thinking, _, answer = text.partition("</think>")
    assert thinking == trace.thinking + "\n" and "\\boxed{" not in thinking
    assert answer == f"\n\n{trace.final}<|im_end|>"
    assert target_text(trace, thinking=False) == f"{trace.final}<|im_end|>"


# -- the chat template (fast: rendered with jinja2 as transformers does) ---------------------------
def _render(messages, **kwargs) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment().from_string(CHAT_TEMPLATE).render(messages=messages, **kwargs)


def test_the_template_opens_the_thinking_like_deepseek_r1():
    prompt = _render([{"role": "user", "content": "2+2?"}], add_generation_prompt=True)
    assert prompt == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert _render([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                   enable_thinking=True) == prompt


def test_enable_thinking_false_closes_an_empty_thinking_like_qwen3():
    prompt = _render([{"role": "user", "content": "2+2?"}], add_generation_prompt=True, enable_thinking=False)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_earlier_assistant_turns_keep_only_their_final_content():
    prompt = _render([{"role": "user", "content": "a"},
                      {"role": "assistant", "content": "<think>\nsecret 7\n</think>\n\nThe answer is 4."},
                      {"role": "user", "content": "b"}], add_generation_prompt=True)
    assert "secret" not in prompt and "<|im_start|>assistant\nThe answer is 4.<|im_end|>" in prompt


def test_a_non_default_recipe_gets_its_own_folder():
    other = ThinkingRecipe(steps=3)
    assert thinking_folder_name() == f"SmolLM2-135M-Thinking-v1-{DEFAULT_RECIPE.digest()}"
    assert thinking_folder_name(other) == f"SmolLM2-135M-Thinking-v1-{other.digest()}"
    assert other.digest() != DEFAULT_RECIPE.digest() == ThinkingRecipe().digest()


def test_the_model_name_resolves_to_the_thinking_model(monkeypatch):
    import ttc.models

    monkeypatch.setattr(ttc.models, "smollm2_thinking", lambda: "/built/thinking")
    for name in ("smollm2-thinking", "SmolLM2-Thinking", " smollm2_thinking "):
        assert ttc.models.resolve_model(name) == "/built/thinking"


# -- the built model (slow) ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_markers_are_single_tokens_kept_in_decoded_text(thinking_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(thinking_model)
    ids = {marker: tokenizer.encode(marker, add_special_tokens=False) for marker in ("<think>", "</think>")}
    assert all(len(v) == 1 for v in ids.values()), ids
    text = "step one\n</think>\n\nThe answer is \\boxed{3}."
    encoded = tokenizer.encode(text, add_special_tokens=False)
    assert ids["</think>"][0] in encoded
    # vLLM decodes with skip_special_tokens=True: the parser must still see the marker in the text
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text
    assert json.loads((Path(thinking_model) / THINKING_FILE).read_text()) == {"format": "deepseek_r1"}


@pytest.mark.slow
def test_the_cached_model_was_built_by_the_default_recipe(thinking_model):
    record = json.loads((Path(thinking_model) / RECIPE_FILE).read_text())
    assert record["digest"] == DEFAULT_RECIPE.digest()
    assert Path(thinking_model).name == thinking_folder_name(DEFAULT_RECIPE)


@pytest.mark.slow
def test_the_same_recipe_gives_the_same_weights():
    """Reproducible build, on a reduced recipe (2 steps instead of the full fine-tune)."""
    from ttc.models import smollm2
    from ttc.thinking_model import train_thinking_model, weights_checksum

    tiny = ThinkingRecipe(steps=2, batch_size=2, trainable_layers=1)
    first = weights_checksum(train_thinking_model(smollm2(), tiny, progress=False)[0])
    again = weights_checksum(train_thinking_model(smollm2(), tiny, progress=False)[0])
    reseeded = weights_checksum(train_thinking_model(smollm2(), ThinkingRecipe(steps=2, batch_size=2,
                                                                              trainable_layers=1, seed=1),
                                                     progress=False)[0])
    assert first == again != reseeded


def _chat(url: str, question: str, **fields) -> dict:
    body = {"model": _served(url), "messages": [{"role": "user", "content": question}], **fields}
    request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def _served(url: str) -> str:
    with urllib.request.urlopen(f"{url}/models", timeout=30) as response:
        return json.load(response)["data"][0]["id"]


@pytest.mark.slow
def test_sampled_traces_close_their_thinking_and_answer(thinking_vllm_server):
    """The issue's rule: >= 80 of 100 sampled traces close their thinking within 256 tokens and
    answer after it; the server splits thinking (`message.reasoning`) from content and counts the
    reasoning tokens."""
    problems = held_out_traces(100)
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda i: _chat(thinking_vllm_server.url, problems[i].question, seed=i,
                                                  temperature=0.7, max_tokens=256), range(len(problems))))
    answered = 0
    for response in responses:
        message, usage = response["choices"][0]["message"], response["usage"]
        reasoning, content = message.get("reasoning") or "", message.get("content") or ""
        assert reasoning.strip(), message  # every trace thinks first
        assert "</think>" not in reasoning and "</think>" not in content and "<think>" not in content
        assert "\\boxed{" not in reasoning, message
        details = usage["completion_tokens_details"]
        assert 0 < details["reasoning_tokens"] < usage["completion_tokens"] <= 256, usage
        answered += last_boxed(content) is not None
    assert answered >= 80, f"only {answered}/100 traces closed their thinking and answered"


@pytest.mark.slow
def test_enable_thinking_false_answers_without_thinking(thinking_vllm_server):
    question = held_out_traces(1)[0].question
    response = _chat(thinking_vllm_server.url, question, temperature=0, max_tokens=64,
                     chat_template_kwargs={"enable_thinking": False})
    message = response["choices"][0]["message"]
    assert last_boxed(message.get("content") or "") is not None, message
    assert not (message.get("reasoning") or "").strip(), message
    assert response["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.slow
def test_the_server_enforces_the_thinking_token_budget(thinking_vllm_server):
    question = held_out_traces(1)[0].question
    free = _chat(thinking_vllm_server.url, question, temperature=0, max_tokens=200)
    natural = free["usage"]["completion_tokens_details"]["reasoning_tokens"]
    budget = 8
    assert natural > 2 * budget, free  # otherwise the budget would not bind
    capped = _chat(thinking_vllm_server.url, question, temperature=0, max_tokens=200,
                   thinking_token_budget=budget)
    message, usage = capped["choices"][0]["message"], capped["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] <= budget, capped
    assert message.get("reasoning") is not None and message.get("content"), capped  # closed, then answered


@pytest.mark.slow
def test_without_a_parser_the_thinking_stays_in_the_content_and_budgets_are_refused(
        thinking_vllm_server_no_parser):
    url = thinking_vllm_server_no_parser.url
    question = held_out_traces(1)[0].question
    message = _chat(url, question, temperature=0, max_tokens=200)["choices"][0]["message"]
    assert "</think>" in message["content"] and not message.get("reasoning"), message
    with pytest.raises(urllib.error.HTTPError) as refused:
        _chat(url, question, max_tokens=16, thinking_token_budget=8)
    assert refused.value.code == 400
    assert "thinking_token_budget" in refused.value.read().decode()
