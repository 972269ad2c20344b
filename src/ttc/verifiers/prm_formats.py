"""The input text of the two PRM formats, shared by the in-process and the served PRMs.

Both `ttc.verifiers.reward_models` (transformers in this process) and `ttc.verifiers.remote_prm`
(a PRM served by vLLM) build a trace's input here, so a remote PRM reads exactly the text the
in-process one tokenizes, and their step scores agree. No torch, no transformers.

- "qwen" (Qwen2.5-Math-PRM): system + question + the steps, each ended by `<extra_0>`, as chat
  messages that the PRM's chat template renders; P(correct) is read at each separator.
- "math-shepherd": "question Step 1: ... ки\\nStep 2: ... ки"; P(correct) is read at each tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["CHATML", "QWEN_SEPARATOR", "QWEN_SYSTEM", "SHEPHERD_STEP_PREFIX", "SHEPHERD_STEP_TAG", "chatml",
           "qwen_messages", "qwen_plain_text", "shepherd_text"]

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_SEPARATOR = "<extra_0>"
SHEPHERD_STEP_TAG = "ки"
SHEPHERD_STEP_PREFIX = "Step {i}: "
#: the name of the built-in ChatML rendering (what Qwen2.5's chat template gives for these messages)
CHATML = "chatml"


def qwen_answer(steps: Sequence[str], separator: str = QWEN_SEPARATOR) -> str:
    """The assistant turn: every step (any separator inside it removed) followed by the separator."""
    return "".join(s.replace(separator, "") + separator for s in steps)


def qwen_messages(question: str, steps: Sequence[str], *, separator: str = QWEN_SEPARATOR,
                  system: str | None = QWEN_SYSTEM) -> list[dict[str, str]]:
    """Chat messages of one trace, as Qwen2.5-Math-PRM's model card builds them."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question},
                       {"role": "assistant", "content": qwen_answer(steps, separator)}]


def qwen_plain_text(question: str, steps: Sequence[str], *, separator: str = QWEN_SEPARATOR,
                    system: str | None = QWEN_SYSTEM) -> str:
    """The input of a qwen-format PRM whose tokenizer has no chat template."""
    prefix = f"{system}\n" if system else ""
    return f"{prefix}{question}\n{qwen_answer(steps, separator)}"


def chatml(messages: Sequence[dict[str, Any]]) -> str:
    """ChatML, as Qwen2.5's chat template renders system/user/assistant turns without a
    generation prompt: `<|im_start|>role\\ncontent<|im_end|>\\n` per message."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def shepherd_text(question: str, steps: Sequence[str], *, step_tag: str = SHEPHERD_STEP_TAG,
                  step_prefix: str = SHEPHERD_STEP_PREFIX) -> str:
    """Math-Shepherd's input: the question, then "Step i: <step> ки" lines (a step that already
    starts with "Step " keeps its own numbering; tags inside a step are removed)."""
    lines = []
    for i, step in enumerate(steps, 1):
        step = step.replace(step_tag, "").strip()
        prefix = "" if step.lower().startswith("step ") else step_prefix.format(i=i)
        lines.append(f"{prefix}{step} {step_tag}")
    return f"{question} " + "\n".join(lines)
