"""The `ttc` object of a request, and the OpenAI fields around it: parsed and checked, every error
a `RequestError` naming the field (an OpenAI-style 400).

    {"model": "...", "messages": [...], "max_tokens": 256, "stream": false,
     "ttc": {"strategy": "majority", "n": 8, "temperature": 0.7, "max_tokens": 256, "top_p": 1.0,
             "seed": 0, "verifier": "mean_logprob", "prm": "judge",
             "budget": {"tokens": 20000, "seconds": 60, "verifier_calls": 100},
             "return_candidates": true, ...the strategy's own parameters (registry.OPTIONS)...}}

Sampling fields in `ttc` win over the top-level ones; the top-level ones win over the server's
defaults. The server's caps (`Limits`) refuse, never cut.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from ttc.context import Budget
from ttc.errors import InvalidInput
from ttc.serve.config import ServeConfig
from ttc.strategies import registry
from ttc.types import SamplingParams

#: the `ttc` object's own fields; a strategy's parameters (registry.OPTIONS) come on top
TTC_FIELDS = ("strategy", "n", "temperature", "max_tokens", "top_p", "seed", "verifier", "prm", "budget",
              "return_candidates")
BUDGET_FIELDS = ("tokens", "seconds", "verifier_calls")
#: verifier names a request may give (outcome verifiers; `prm` picks a step search's PRM)
VERIFIERS = ("mean_logprob", "self_certainty")
PRMS = ("judge", "remote")
#: top-level fields a strategy request may carry (others are refused: ttc would ignore them)
CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "n",
               "stream", "stream_options", "stop", "user", "ttc"}
COMPLETION_FIELDS = (CHAT_FIELDS - {"messages", "max_completion_tokens"}) | {"prompt"}


class RequestError(Exception):
    """An OpenAI-style error answer: HTTP `status`, `message`, the `param` it is about, `type`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.type = type
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        out = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": None},
               **self.extra}
        if request_id is not None:
            out["request_id"] = request_id
        return out


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, param: str, low: int = 1, high: int | None = None, cap: str = "") -> int:
    if not _is_int(value) or value < low:
        raise RequestError(f"{param} must be an integer >= {low}, got {value!r}", param)
    if high is not None and value > high:
        raise RequestError(f"{param}={value} is over this server's cap of {high}{cap}", param)
    return value


def _number(value: Any, param: str, low: float, high: float | None = None, low_open: bool = False) -> float:
    if not _is_number(value) or value < low or (low_open and value == low) or (high is not None and value > high):
        span = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise RequestError(f"{param} must be a number in {span}, got {value!r}", param)
    return float(value)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RequestError("messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RequestError(f"messages[{i}] must be an object with a string role", f"messages[{i}]")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise RequestError(f"messages[{i}].content: only text parts are supported",
                                   f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    if not any(m["content"].strip() for m in out):
        raise RequestError("messages are all empty: there is nothing to solve", "messages")
    return out


def parse(body: Any, kind: str, config: ServeConfig, *, prm_available: bool) -> StrategyRequest:
    """The strategy request in `body` (a decoded JSON object) for endpoint `kind`; `RequestError`
    naming the field when something is wrong or over the server's caps."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None)
    limits = config.limits
    allowed = CHAT_FIELDS if kind == "chat" else COMPLETION_FIELDS
    for key in body:
        if key not in allowed:
            raise RequestError(f"field {key!r} is not supported with a ttc strategy (supported: "
                               f"{', '.join(sorted(allowed))})", key)
    t = body.get("ttc", {})
    if t is None:
        t = {}
    if not isinstance(t, dict):
        raise RequestError("ttc must be an object", "ttc")

    # the problem
    messages = prompt = None
    if kind == "chat":
        messages = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("prompt must be one non-empty string (a ttc strategy solves one problem "
                               "per request)", "prompt")

    # the strategy and its own parameters
    name = t.get("strategy", config.strategy)
    if not isinstance(name, str):
        raise RequestError(f"ttc.strategy must be a string, got {name!r}", "ttc.strategy")
    try:
        name = registry.canonical_name(name)
    except InvalidInput as exc:
        raise RequestError(str(exc), "ttc.strategy") from None
    own = registry.OPTIONS.get(name, {})
    options = {}
    for key, value in t.items():
        if key in TTC_FIELDS:
            continue
        if key not in own:
            known = ", ".join(sorted(own)) or "none"
            raise RequestError(f"unknown field ttc.{key} (the ttc object's fields: {', '.join(TTC_FIELDS)}; "
                               f"the own parameters of strategy {name!r}: {known})", f"ttc.{key}")
        options[key] = value
    try:
        registry.check_options(name, options)
    except registry.InvalidOption as exc:
        raise RequestError(str(exc), f"ttc.{exc.field}") from None

    if "n" in body and body["n"] not in (1, None):
        raise RequestError("n: ttc returns one choice, the strategy's answer; ask for candidates with ttc.n", "n")
    n = _int(t.get("n", config.n), "ttc.n", high=limits.max_n)

    # sampling: ttc's fields, else the top-level ones, else the server's defaults
    def pick(key: str, *top: str) -> tuple[Any, str]:
        if key in t and t[key] is not None:
            return t[key], f"ttc.{key}"
        for name_ in top:
            if body.get(name_) is not None:
                return body[name_], name_
        return None, f"ttc.{key}"

    value, param = pick("max_tokens", "max_tokens", "max_completion_tokens")
    max_tokens = config.max_tokens if value is None else _int(value, param, high=limits.max_tokens)
    value, param = pick("temperature", "temperature")
    temperature = config.temperature if value is None else _number(value, param, 0.0, 2.0)
    value, param = pick("top_p", "top_p")
    top_p = 1.0 if value is None else _number(value, param, 0.0, 1.0, low_open=True)
    value, param = pick("seed", "seed")
    seed = None if value is None else _int(value, param, low=0)
    stop = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4:
        stop = tuple(stop)
    else:
        raise RequestError("stop must be a string or a list of at most 4 non-empty strings", "stop")
    params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stop,
                            logprobs=True)

    verifier = t.get("verifier")
    if verifier is not None and verifier not in VERIFIERS:
        raise RequestError(f"unknown verifier {verifier!r}; known: {', '.join(VERIFIERS)}", "ttc.verifier")
    prm = t.get("prm")
    if prm is not None and prm not in PRMS:
        raise RequestError(f"unknown prm {prm!r}; known: {', '.join(PRMS)}", "ttc.prm")
    if prm == "remote" and not prm_available:
        raise RequestError("prm 'remote' needs the server started with --prm-upstream URL", "ttc.prm")
    if verifier is not None and prm is not None:
        raise RequestError("give ttc.verifier (outcome verifier) or ttc.prm (step searches), not both", "ttc.prm")

    budget = _budget(t.get("budget"), config)
    _check_worst_case(name, n, max_tokens, options, budget_given=(t.get("budget") or {}).get("tokens") is not None,
                      config=config)
    ret = t.get("return_candidates", False)
    if not isinstance(ret, bool):
        raise RequestError(f"ttc.return_candidates must be true or false, got {ret!r}", "ttc.return_candidates")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false, got {stream!r}", "stream")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise RequestError("stream_options must be an object", "stream_options")
    include_usage = (so or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise RequestError("stream_options.include_usage must be true or false", "stream_options.include_usage")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", "model")
    return StrategyRequest(kind=kind, messages=messages, prompt=prompt, strategy=name, n=n, params=params,
                           budget=budget, verifier=verifier, prm=prm, return_candidates=ret, options=options,
                           stream=stream, stream_usage=include_usage, model=model)


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


def _budget(value: Any, config: ServeConfig) -> Budget:
    """The request's budget within the server's caps; each part not given is the cap itself."""
    limits = config.limits
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RequestError("ttc.budget must be an object with tokens, seconds, verifier_calls", "ttc.budget")
    for key in value:
        if key not in BUDGET_FIELDS:
            raise RequestError(f"unknown field ttc.budget.{key} (known: {', '.join(BUDGET_FIELDS)})",
                               f"ttc.budget.{key}")
    tokens = value.get("tokens")
    tokens = limits.max_budget_tokens if tokens is None else _int(
        tokens, "ttc.budget.tokens", high=limits.max_budget_tokens, cap=" tokens per request")
    seconds = value.get("seconds")
    if seconds is None:
        seconds = limits.max_budget_seconds
    else:
        seconds = _number(seconds, "ttc.budget.seconds", 0.0, None, low_open=True)
        if seconds > limits.max_budget_seconds:
            raise RequestError(f"ttc.budget.seconds={seconds} is over this server's cap of "
                               f"{limits.max_budget_seconds} s per request", "ttc.budget.seconds")
    calls = value.get("verifier_calls")
    cap = limits.max_budget_verifier_calls
    calls = cap if calls is None else _int(calls, "ttc.budget.verifier_calls", high=cap)
    return Budget(tokens=tokens, seconds=seconds, verifier_calls=calls)
