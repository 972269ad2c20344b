"""What a gateway does to vLLM's answers, undone before they are read.

LiteLLM's proxy (checked on 1.108.7, `hosted_vllm/` provider) moves the fields of a chat choice
that OpenAI's schema lacks (vLLM's `stop_reason` and `token_ids`) into the choice's
`provider_specific_fields`; its /v1/completions answers keep them in place. `lifted` puts them
back, so the chat endpoint behind LiteLLM tells end-of-text from a stop string as vLLM does.
Pure functions of the answer's dict.
"""

from __future__ import annotations

from typing import Any

__all__ = ["lifted"]


def _lift_choice(choice: Any) -> Any:
    extra = choice.get("provider_specific_fields") if isinstance(choice, dict) else None
    if not isinstance(extra, dict) or not extra:
        return choice
    return {**{k: v for k, v in extra.items() if k not in choice}, **choice}


def lifted(data: Any) -> Any:
    """`data` with each choice's `provider_specific_fields` moved into the choice (fields the choice
    already has win); `data` itself when no choice has any."""
    found = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(found, list):
        return data
    choices = [_lift_choice(c) for c in found]
    if all(a is b for a, b in zip(choices, found, strict=True)):
        return data
    return {**data, "choices": choices}
