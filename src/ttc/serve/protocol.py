"""The endpoint's protocol, declared once as typed models: what each request field accepts (its
JSON type, range, choices, a description). `Model.parse` validates a decoded JSON object against
it, every error a `RequestError` naming the field (an OpenAI-style 400), and `json_schema()` gives
the JSON Schema of the docs. Plain dataclasses: no new dependency.

What depends on the server (its caps, its defaults, the strategy's own parameters from the
registry) is checked by `ttc.serve.schema.parse` on top of these models, never a type twice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


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


@dataclass(frozen=True)
class Spec:
    """What one field accepts: `kind` (int, float, str, bool, a `Model`, or "any" with `check`),
    a range [low, high] (`low_open`: low excluded), `choices`, and `check(value, param)` for what a
    type cannot say (messages, prompt, stop): it returns the value to keep or raises."""

    kind: Any
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    check: Callable[[Any, str], Any] | None = None
    schema: dict[str, Any] | None = None  # the JSON schema of a field with `check`


def spec(kind: Any, doc: str, default: Any = None, **rules: Any) -> Any:
    """A model field: `x: int | None = spec(int, "what it is", low=1)`."""
    return dataclasses.field(default=default, metadata={"spec": Spec(kind, doc, **rules)})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_value(s: Spec, value: Any, param: str) -> Any:
    """`value` checked against `s` (RequestError naming `param`), converted where the spec says."""
    if s.check is not None:
        return s.check(value, param)
    if isinstance(s.kind, type) and issubclass(s.kind, Model):
        return s.kind.parse(value, param)
    if s.kind is bool:
        if not isinstance(value, bool):
            raise RequestError(f"{param} must be true or false, got {value!r}", param)
        return value
    if s.kind is str:
        if not isinstance(value, str):
            raise RequestError(f"{param} must be a string, got {value!r}", param)
        if s.choices is not None and value not in s.choices:
            raise RequestError(f"unknown {param.rsplit('.', 1)[-1]} {value!r}; known: {', '.join(s.choices)}", param)
        return value
    if s.kind is int:
        low = int(s.low) if s.low is not None else None
        if not _is_int(value) or (low is not None and value < low) or (s.high is not None and value > s.high):
            raise RequestError(f"{param} must be an integer >= {low}, got {value!r}", param)
        return value
    if s.kind is float:
        low = s.low if s.low is not None else -math.inf
        if not _is_number(value) or value < low or (s.low_open and value == low) or \
                (s.high is not None and value > s.high):
            span = f"{'(' if s.low_open else '['}{low}, {s.high if s.high is not None else 'inf'}]"
            raise RequestError(f"{param} must be a number in {span}, got {value!r}", param)
        return float(value)
    raise TypeError(f"unknown field kind {s.kind!r}")


class Model:
    """A request object declared as a dataclass of `spec` fields. `parse(data, prefix)` checks
    every field and refuses unknown ones (unless `extra` is True: then they are kept in
    `.extra`, for the caller to check); `json_schema()` describes it."""

    extra_ok: ClassVar[bool] = False
    #: the message an unknown field gets (the allowed names follow)
    unknown: ClassVar[str] = "unknown field {param}"

    @classmethod
    def specs(cls) -> dict[str, Spec]:
        return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}

    @classmethod
    def parse(cls, data: Any, prefix: str = "") -> Any:
        name = prefix or "the request body"
        if not isinstance(data, dict):
            raise RequestError(f"{name} must be an object", prefix or None)
        specs = cls.specs()
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            param = f"{prefix}.{key}" if prefix else key
            if key not in specs:
                if cls.extra_ok:
                    extra[key] = value
                    continue
                raise RequestError(cls.unknown.format(param=param, key=key) + f" (known: {', '.join(specs)})",
                                   param)
            if value is not None:
                values[key] = check_value(specs[key], value, param)
        out = cls(**values)
        object.__setattr__(out, "extra", extra)
        return out

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        props = {}
        for key, s in cls.specs().items():
            if isinstance(s.kind, type) and issubclass(s.kind, Model):
                prop = s.kind.json_schema()
            elif s.schema is not None:
                prop = dict(s.schema)
            else:
                prop = {"type": {bool: "boolean", str: "string", int: "integer", float: "number"}[s.kind]}
            if s.low is not None:
                prop["exclusiveMinimum" if s.low_open else "minimum"] = s.low
            if s.high is not None:
                prop["maximum"] = s.high
            if s.choices is not None:
                prop["enum"] = list(s.choices)
            prop["description"] = s.doc
            props[key] = prop
        out: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": props}
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            out["description"] = " ".join(doc.split())
        if not cls.extra_ok:
            out["additionalProperties"] = False
        return out


# -- custom checks ---------------------------------------------------------------------------------
def check_messages(value: Any, param: str) -> list[dict[str, str]]:
    """Chat messages with string roles and text content (OpenAI text parts are joined)."""
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


def check_prompt(value: Any, param: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise RequestError("prompt must be one non-empty string (a ttc strategy solves one problem per request)",
                           "prompt")
    return value


def check_stop(value: Any, param: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) and s for s in value) and len(value) <= 4:
        return tuple(value)
    raise RequestError("stop must be a string or a list of at most 4 non-empty strings", "stop")


def check_object(value: Any, param: str) -> dict[str, Any]:
    """A JSON object with string keys (chat_template_kwargs)."""
    if not isinstance(value, dict):
        raise RequestError(f"{param} must be an object, got {value!r}", param)
    return dict(value)


def check_top_k(value: Any, param: str) -> int:
    if not _is_int(value) or not (value == -1 or value >= 1):
        raise RequestError(f"{param} must be an integer >= 1 (or -1: all tokens), got {value!r}", param)
    return value


def check_n(value: Any, param: str) -> int:
    if value != 1 or not _is_int(value):
        raise RequestError("n: ttc returns one choice, the strategy's answer; ask for candidates with ttc.n", "n")
    return value


MESSAGES_SCHEMA = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"type": "string"}, "content": {"anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "object", "properties": {"type": {"const": "text"},
                                                                     "text": {"type": "string"}}}}]}}}}

VERIFIERS = ("mean_logprob", "self_certainty")
PRMS = ("judge", "remote")


# -- the models ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetModel(Model):
    """`ttc.budget`: the most a request may spend; each part not given is the server's cap."""

    unknown: ClassVar[str] = "unknown field {param}"
    tokens: int | None = spec(int, "tokens (prompt, completion and verifier)", low=1)
    seconds: float | None = spec(float, "wall-clock seconds", low=0.0, low_open=True)
    verifier_calls: int | None = spec(int, "verifier (judge or PRM) calls", low=1)


@dataclass(frozen=True)
class TTCObject(Model):
    """The `ttc` object: which strategy solves the request and how. A strategy's own parameters
    (`ttc.strategies.registry.OPTIONS`, e.g. a beam's `width`) come on top of these fields."""

    extra_ok: ClassVar[bool] = True
    strategy: str | None = spec(str, "a registered strategy or alias (default: the server's --strategy)")
    n: int | None = spec(int, "candidates (a step search: steps sampled per round)", low=1)
    temperature: float | None = spec(float, "sampling temperature (wins over the top-level one)", low=0.0, high=2.0)
    max_tokens: int | None = spec(int, "tokens per candidate, or per step of a step search", low=1)
    top_p: float | None = spec(float, "nucleus sampling", low=0.0, high=1.0, low_open=True)
    seed: int | None = spec(int, "sampling seed", low=0)
    verifier: str | None = spec(str, "an outcome verifier", choices=VERIFIERS)
    prm: str | None = spec(str, "a step search's process reward model", choices=PRMS)
    budget: BudgetModel | None = spec(BudgetModel, "the request's budget")
    return_candidates: bool | None = spec(bool, "include every candidate in the answer")


@dataclass(frozen=True)
class StreamOptions(Model):
    """`stream_options`."""

    extra_ok: ClassVar[bool] = True  # OpenAI may add options; unknown ones are ignored, as vLLM does
    include_usage: bool | None = spec(bool, "send a last chunk with no choices holding the usage")


_UNSUPPORTED = "field {key!r} is not supported with a ttc strategy"


@dataclass(frozen=True)
class UpstreamSampling(Model):
    """The sampling fields both endpoints pass on to the upstream (`SAMPLING_FIELDS`, `EXTRA_FIELDS`)."""

    top_k: int | None = spec("any", "top-k sampling (sent to the upstream)", check=check_top_k,
                             schema={"type": "integer"})
    min_p: float | None = spec(float, "min-p sampling (sent to the upstream)", low=0.0, high=1.0)
    presence_penalty: float | None = spec(float, "presence penalty (sent to the upstream)", low=-2.0, high=2.0)
    frequency_penalty: float | None = spec(float, "frequency penalty (sent to the upstream)", low=-2.0, high=2.0)
    repetition_penalty: float | None = spec(float, "repetition penalty (sent to the upstream)", low=0.0,
                                            low_open=True)
    thinking_token_budget: int | None = spec(int, "the most thinking tokens per candidate (vLLM's; the upstream "
                                             "needs a reasoning parser and --reasoning-config)", low=0)


@dataclass(frozen=True)
class ChatRequest(UpstreamSampling):
    """`POST /v1/chat/completions` with a `ttc` object (or any request, with --default strategy)."""

    unknown: ClassVar[str] = _UNSUPPORTED
    messages: list | None = spec("any", "the conversation; the last user message is the problem",
                                 check=check_messages, schema=MESSAGES_SCHEMA)
    model: str | None = spec(str, "ignored: the upstream's model answers")
    max_tokens: int | None = spec(int, "tokens per candidate (ttc.max_tokens wins)", low=1)
    max_completion_tokens: int | None = spec(int, "the same as max_tokens", low=1)
    temperature: float | None = spec(float, "sampling temperature", low=0.0, high=2.0)
    top_p: float | None = spec(float, "nucleus sampling", low=0.0, high=1.0, low_open=True)
    seed: int | None = spec(int, "sampling seed", low=0)
    n: int | None = spec("any", "must be 1: ttc returns one choice (candidates: ttc.n)", check=check_n,
                         schema={"const": 1})
    stream: bool | None = spec(bool, "server-sent events")
    stream_options: StreamOptions | None = spec(StreamOptions, "stream options")
    stop: tuple | None = spec("any", "stop strings (at most 4)", check=check_stop, schema={
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
    user: str | None = spec(str, "the end user (ignored)")
    ttc: TTCObject | None = spec(TTCObject, "how to solve it")
    chat_template_kwargs: dict | None = spec("any", "options of the chat template, e.g. {\"enable_thinking\": "
                                             "false}", check=check_object, schema={"type": "object"})
    reasoning_effort: str | None = spec(str, "reasoning effort, passed to upstreams that take it",
                                        choices=("none", "minimal", "low", "medium", "high", "xhigh", "max"))


@dataclass(frozen=True)
class CompletionRequest(UpstreamSampling):
    """`POST /v1/completions` with a `ttc` object (or any request, with --default strategy)."""

    unknown: ClassVar[str] = _UNSUPPORTED
    prompt: str | None = spec("any", "one prompt, sent without a chat template", check=check_prompt,
                              schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                                                     "minItems": 1, "maxItems": 1}]})
    model: str | None = spec(str, "ignored: the upstream's model answers")
    max_tokens: int | None = spec(int, "tokens per candidate (ttc.max_tokens wins)", low=1)
    temperature: float | None = spec(float, "sampling temperature", low=0.0, high=2.0)
    top_p: float | None = spec(float, "nucleus sampling", low=0.0, high=1.0, low_open=True)
    seed: int | None = spec(int, "sampling seed", low=0)
    n: int | None = spec("any", "must be 1: ttc returns one choice (candidates: ttc.n)", check=check_n,
                         schema={"const": 1})
    stream: bool | None = spec(bool, "server-sent events")
    stream_options: StreamOptions | None = spec(StreamOptions, "stream options")
    stop: tuple | None = spec("any", "stop strings (at most 4)", check=check_stop, schema={
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
    user: str | None = spec(str, "the end user (ignored)")
    ttc: TTCObject | None = spec(TTCObject, "how to solve it")


#: the request fields that become `SamplingParams` fields of the same name, and those passed as
#: `SamplingParams.extra` (fields of the upstream's that ttc passes on without using them)
SAMPLING_FIELDS = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
                   "chat_template_kwargs")
EXTRA_FIELDS = ("thinking_token_budget", "reasoning_effort")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of both endpoints' strategy requests (docs/serve.md)."""
    return {"chat/completions": ChatRequest.json_schema(), "completions": CompletionRequest.json_schema()}

