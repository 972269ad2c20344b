"""The `ttc` object of a request, and the OpenAI fields around it: parsed and checked, every error
a `RequestError` naming the field (an OpenAI-style 400).

    {"model": "...", "messages": [...], "max_tokens": 256, "stream": false,
     "top_k": 20, "min_p": 0.0, "chat_template_kwargs": {"enable_thinking": true}, "thinking_token_budget": 512,
     "ttc": {"strategy": "majority", "n": 8, "temperature": 0.7, "max_tokens": 256, "top_p": 1.0,
             "seed": 0, "verifier": "mean_logprob", "prm": "judge",
             "budget": {"tokens": 20000, "seconds": 60, "verifier_calls": 100},
             "return_candidates": true, ...the strategy's own parameters (registry.OPTIONS)...}}

The fields' types and ranges are declared once, as typed models, in `ttc.serve.protocol`; this
module adds what depends on the server: sampling fields in `ttc` win over the top-level ones, the
top-level ones win over the server's defaults, and the server's caps (`Limits`, each strategy's
worst case) refuse, never cut.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ttc.context import Budget
from ttc.errors import InvalidInput
from ttc.serve.config import ServeConfig
from ttc.serve.protocol import (
    EXTRA_FIELDS,
    SAMPLING_FIELDS,
    BudgetModel,
    ChatRequest,
    CompletionRequest,
    RequestError,
    TTCObject,
    check_messages,
    check_prompt,
)
from ttc.strategies import registry
from ttc.types import SamplingParams

#: the `ttc` object's own fields; a strategy's parameters (registry.OPTIONS) come on top
TTC_FIELDS = tuple(TTCObject.specs())
BUDGET_FIELDS = tuple(BudgetModel.specs())


@dataclass
class StrategyRequest:
    """A request to run a strategy: the problem (chat messages or a raw prompt) and how to solve it."""

    kind: str                      # "chat" | "completions"
    messages: list[dict[str, str]] | None
    prompt: str | None
    strategy: str
    n: int
    params: SamplingParams
    budget: Budget
    verifier: str | None = None
    prm: str | None = None
    return_candidates: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    stream_usage: bool = False     # stream_options.include_usage
    model: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def question(self) -> str:
        """The last user message (or the prompt): what an LLM judge is told the problem is."""
        if self.prompt is not None:
            return self.prompt
        users = [m["content"] for m in self.messages or [] if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _over_cap(value: Any, param: str, high: int, cap: str = "") -> None:
    if value > high:
        raise RequestError(f"{param}={value} is over this server's cap of {high}{cap}", param)


def parse(body: Any, kind: str, config: ServeConfig, *, prm_available: bool) -> StrategyRequest:
    """The strategy request in `body` (a decoded JSON object) for endpoint `kind`: its fields
    checked by the protocol's models (`ttc.serve.protocol`), then the server's caps, defaults and
    the strategy's own parameters; `RequestError` naming the field when something is wrong."""
    limits = config.limits
    top = (ChatRequest if kind == "chat" else CompletionRequest).parse(body)
    t = top.ttc or TTCObject()
    messages = prompt = None
    if kind == "chat":
        messages = top.messages if top.messages is not None else check_messages(None, "messages")
    else:
        prompt = top.prompt if top.prompt is not None else check_prompt(None, "prompt")

    # the strategy and its own parameters
    try:
        name = registry.canonical_name(t.strategy or config.strategy)
    except InvalidInput as exc:
        raise RequestError(str(exc), "ttc.strategy") from None
    own = registry.OPTIONS.get(name, {})
    options = dict(getattr(t, "extra", {}))
    for key in options:
        if key not in own:
            known = ", ".join(sorted(own)) or "none"
            raise RequestError(f"unknown field ttc.{key} (the ttc object's fields: {', '.join(TTC_FIELDS)}; "
                               f"the own parameters of strategy {name!r}: {known})", f"ttc.{key}")
    try:
        registry.check_options(name, options)
    except registry.InvalidOption as exc:
        raise RequestError(str(exc), f"ttc.{exc.field}") from None

    n = t.n if t.n is not None else config.n
    _over_cap(n, "ttc.n", limits.max_n)

    # sampling: ttc's fields, else the top-level ones, else the server's defaults
    def pick(key: str, *names: str) -> tuple[Any, str]:
        if getattr(t, key) is not None:
            return getattr(t, key), f"ttc.{key}"
        for name_ in names:
            if getattr(top, name_, None) is not None:
                return getattr(top, name_), name_
        return None, f"ttc.{key}"

    value, param = pick("max_tokens", "max_tokens", "max_completion_tokens")
    if value is not None:
        _over_cap(value, param, limits.max_tokens)
    max_tokens = config.max_tokens if value is None else value
    temperature = pick("temperature", "temperature")[0]
    top_p = pick("top_p", "top_p")[0]
    sampling = {k: getattr(top, k) for k in SAMPLING_FIELDS if getattr(top, k, None) is not None}
    extra = {k: getattr(top, k) for k in EXTRA_FIELDS if getattr(top, k, None) is not None}
    params = SamplingParams(temperature=config.temperature if temperature is None else temperature,
                            top_p=1.0 if top_p is None else top_p, max_tokens=max_tokens,
                            seed=pick("seed", "seed")[0], stop=top.stop or (), logprobs=True, **sampling,
                            extra=extra or None)

    if t.prm == "remote" and not prm_available:
        raise RequestError("prm 'remote' needs the server started with --prm-upstream URL", "ttc.prm")
    if t.verifier is not None and t.prm is not None:
        raise RequestError("give ttc.verifier (outcome verifier) or ttc.prm (step searches), not both", "ttc.prm")

    budget = _budget(t.budget or BudgetModel(), config)
    given = t.budget is not None and t.budget.tokens is not None
    _check_worst_case(name, n, max_tokens, options, budget_given=given, config=config)
    include_usage = bool(top.stream_options and top.stream_options.include_usage)
    return StrategyRequest(kind=kind, messages=messages, prompt=prompt, strategy=name, n=n, params=params,
                           budget=budget, verifier=t.verifier, prm=t.prm, return_candidates=bool(t.return_candidates),
                           options=options, stream=bool(top.stream), stream_usage=include_usage, model=top.model)


def _check_worst_case(name: str, n: int, max_tokens: int, options: dict[str, Any], *, budget_given: bool,
                      config: ServeConfig) -> None:
    """Refuse (400 naming the parameter) a request whose strategy could generate more sequences at
    once than `--max-n`, or more tokens in all than `--max-budget-tokens` when the client gave no
    `ttc.budget.tokens` (a given budget is enforced, so it bounds the total itself)."""
    limits = config.limits
    worst = registry.worst_case(name, n, max_tokens, options)
    if worst.sequences > limits.max_n:
        raise RequestError(f"strategy {name!r} with these parameters generates up to {worst.sequences} sequences at "
                           f"once, over this server's cap of {limits.max_n} (--max-n); "
                           f"lower ttc.{worst.sequences_from}",
                           f"ttc.{worst.sequences_from}")
    if not budget_given and worst.tokens > limits.max_budget_tokens:
        raise RequestError(f"strategy {name!r} with these parameters can generate up to {worst.tokens} tokens, over "
                           f"this server's cap of {limits.max_budget_tokens} per request (--max-budget-tokens); "
                           f"lower ttc.{worst.tokens_from} or max_tokens, or give ttc.budget.tokens",
                           f"ttc.{worst.tokens_from}")
    top_k = options.get("top_k")
    if top_k is not None and top_k > limits.max_top_logprobs:
        raise RequestError(f"ttc.top_k={top_k} is over this server's cap of {limits.max_top_logprobs} top logprobs "
                           f"per token (--max-top-logprobs)", "ttc.top_k")


def check_passthrough(body: dict[str, Any], config: ServeConfig) -> None:
    """The caps a forwarded request obeys (unless `passthrough_untouched`): `n` within `--max-n`,
    `max_tokens` / `max_completion_tokens` within `--cap-max-tokens`."""
    if config.passthrough_untouched:
        return
    limits = config.limits
    n = body.get("n")
    if n is not None and _is_int(n) and n > limits.max_n:
        raise RequestError(f"n={n} is over this server's cap of {limits.max_n} (--max-n)", "n")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and _is_int(value) and value > limits.max_tokens:
            raise RequestError(f"{key}={value} is over this server's cap of {limits.max_tokens} (--cap-max-tokens)",
                               key)
    top = body.get("top_logprobs") if "messages" in body else body.get("logprobs")
    if _is_int(top) and top > limits.max_top_logprobs:
        param = "top_logprobs" if "messages" in body else "logprobs"
        raise RequestError(f"{param}={top} is over this server's cap of {limits.max_top_logprobs} "
                           f"(--max-top-logprobs)", param)


def _budget(given: BudgetModel, config: ServeConfig) -> Budget:
    """The request's budget within the server's caps; each part not given is the cap itself."""
    limits = config.limits
    tokens = limits.max_budget_tokens if given.tokens is None else given.tokens
    _over_cap(tokens, "ttc.budget.tokens", limits.max_budget_tokens, " tokens per request")
    seconds = limits.max_budget_seconds if given.seconds is None else given.seconds
    if seconds > limits.max_budget_seconds:
        raise RequestError(f"ttc.budget.seconds={seconds} is over this server's cap of "
                           f"{limits.max_budget_seconds} s per request", "ttc.budget.seconds")
    cap = limits.max_budget_verifier_calls
    calls = cap if given.verifier_calls is None else given.verifier_calls
    if cap is not None:
        _over_cap(calls, "ttc.budget.verifier_calls", cap)
    return Budget(tokens=tokens, seconds=seconds, verifier_calls=calls)
