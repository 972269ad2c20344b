"""Pieces of `ttc run` that are more than argument plumbing: the --prompt option, the progress
bar's total, and the note that says who scored a step search's steps."""

from __future__ import annotations

from typing import Any

from ttc.errors import InvalidInput
from ttc.types import Problem

#: the named prompts of --prompt; anything else is a template with {question}
NAMED_PROMPTS = ("default", "demo")
#: the strategies that sample whole candidates: at most n x max_tokens tokens
WHOLE_CANDIDATE_STRATEGIES = ("sample", "majority", "best_of_n", "first_finish")


def prompt_problem(question: str, prompt: str | None) -> Problem | str:
    """The problem `ttc run` solves: the question itself (each strategy's own prompt) when
    `prompt` is None; else the question in the user message `prompt` makes of it: "default"
    (step by step, boxed answer), "demo" (the demo's "give the final answer as a number"), or a
    template in which `{question}` is replaced by the question (nothing else is interpreted).
    """
    if prompt is None:
        return question
    if prompt in NAMED_PROMPTS:
        from ttc.demo import DEMO_PROMPT
        from ttc.prompts import ChatPrompt

        chat = DEMO_PROMPT if prompt == "demo" else ChatPrompt()
        content = chat.instruction.format(question=question)
    elif "{question}" in prompt:
        content = prompt.replace("{question}", question)
    else:
        raise InvalidInput(f"--prompt must be {' or '.join(NAMED_PROMPTS)}, or a template containing "
                           f"{{question}}; got {prompt!r}")
    # a problem that brings its own conversation is sent as it is (ttc.prompts.ChatPrompt)
    return Problem(question=question, metadata={"messages": [{"role": "user", "content": content}]})


def is_step_search(strategy: Any) -> bool:
    from ttc.strategies.stepwise import StepSearch

    return isinstance(strategy, StepSearch)


def progress_total(strategy: Any, n: int, max_tokens: int) -> int | None:
    """An upper bound on the tokens `strategy` decodes, for the progress bar (None: no bound known).

    Whole candidates: n x max_tokens. Step searches: at most n steps sampled per round (beams x
    expansions, expansions of A*, particles), each of at most the step token limit, plus one
    judged token per step (LLMJudge reads one token), for at most max_steps rounds (A*: its
    max_expansions); the search usually stops well before.
    """
    if strategy.name in WHOLE_CANDIDATE_STRATEGIES:
        return getattr(strategy, "n", 1) * max_tokens
    if is_step_search(strategy):
        steps = strategy.steps
        step_tokens = max(steps.max_step_tokens, steps.final_step_tokens or 0) + 1
        rounds = getattr(strategy, "max_expansions", steps.max_steps)
        return rounds * n * step_tokens
    return None


def judge_note(strategy: Any, model_name: str) -> str | None:
    """One line saying that a step search's steps were scored by an LLM judge, and by which model."""
    if not is_step_search(strategy):
        return None
    from ttc.verifiers.judge import LLMJudge

    prm = strategy.prm
    if isinstance(prm, LLMJudge):
        judge = model_name if prm.generator is None else prm.generator.model_name
        same = " (the same model that wrote them)" if prm.generator is None else ""
        return (f"note: each step was scored by an LLM judge built on {judge}{same}: its P(Yes) to \"Is step k "
                f"correct?\", a weak signal from a small model, not a trained process reward model")
    return f"note: each step was scored by the process reward model {getattr(prm, 'name', type(prm).__name__)}"
