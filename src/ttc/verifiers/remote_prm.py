"""A process reward model served by vLLM: step scores from its pooling API, one request per call.

    prm = ttc.verifiers.RemotePRM("http://127.0.0.1:8001", model="Qwen/Qwen2.5-Math-PRM-7B")
    beam = ttc.BeamSearch(4, 4, prm)                  # any step search takes it like a local PRM

vLLM (0.32, CPU and GPU alike) serves a PRM as a *pooling* model: `Qwen2ForProcessRewardModel`
is a pooling architecture (`--runner pooling` is chosen by itself) whose only task is
`token_classify` with STEP pooling, i.e. the head's softmax at every token whose id is the
pooler's `step_tag_id` (default 151651, Qwen's `<extra_0>`; another vocabulary needs
`--pooler-config '{"step_tag_id": ID}'`). A math-shepherd-style causal LM becomes one with
`--convert classify` and a head built from its '+'/'-' rows of the LM head (see
docs/verifiers.md for the exact commands). The endpoint is `POST /pooling` (at the server's
root, not under /v1) with `{"model", "input": [text, ...], "task": "token_classify"}`; each
input's `data` is one row of label probabilities per step tag, and `usage.prompt_tokens` counts
the tokens the server ran.

Inputs are built by `ttc.verifiers.prm_formats`, the same functions the in-process PRMs
(`ttc.verifiers.reward_models`) use, so both read the same text and give the same scores. The
Qwen format is rendered with ChatML (what Qwen2.5-Math-PRM's chat template gives for these
messages) unless `tokenizer=` supplies the PRM's own chat template. vLLM tokenizes the text
with special tokens added, as the in-process PRMs do.

Cost: `score` sends every trace of the call in one request and records the server's
`usage.prompt_tokens` as verifier tokens (a server that reports no usage marks the usage as
estimated); the verifier calls are counted by `score_steps`, as for any PRM.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ttc.context import Context
from ttc.errors import (
    BackendUnavailable,
    GenerationError,
    InvalidInput,
    MalformedResponse,
    ModelNotFound,
    Unsupported,
)
from ttc.types import Problem
from ttc.verifiers.prm_formats import (
    CHATML,
    QWEN_SEPARATOR,
    QWEN_SYSTEM,
    SHEPHERD_STEP_PREFIX,
    SHEPHERD_STEP_TAG,
    chatml,
    qwen_messages,
    qwen_plain_text,
    shepherd_text,
)
from ttc.verifiers.process import ProcessRewardModel

__all__ = ["REMOTE_FORMATS", "RemotePRM"]

#: the formats a served PRM can have, and the label column that holds P(step correct)
REMOTE_FORMATS = {"qwen2.5-math-prm": 1, "math-shepherd": 0}
_ALIASES = {"qwen": "qwen2.5-math-prm", "qwen-prm": "qwen2.5-math-prm", "qwen2.5-math-prm": "qwen2.5-math-prm",
            "math-shepherd": "math-shepherd", "shepherd": "math-shepherd", "math_shepherd": "math-shepherd",
            "mathshepherd": "math-shepherd"}
_TEMPLATES = (CHATML, "plain")


def _root(url: str) -> str:
    """The server's root URL (the pooling API is not under /v1)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"RemotePRM needs the PRM server's URL, got {url!r}")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"RemotePRM needs an http(s) URL like http://127.0.0.1:8001, got {url!r}")
    for suffix in ("/pooling", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url


class RemotePRM(ProcessRewardModel):
    """Step scores from a PRM served by vLLM's pooling API (`POST /pooling`, task `token_classify`).

    Source: the PRM formats of Qwen2.5-Math-PRM (Zhang et al., 2025, "The Lessons of Developing
    Process Reward Models in Mathematical Reasoning") and Math-Shepherd (Wang et al., 2024); the
    served model is the same network the in-process PRMs (`ttc.verifiers.reward_models`) run.
    Deviations: none in the scores (the input text is built by the same functions); the Qwen
    format is rendered with ChatML unless `tokenizer=` supplies the PRM's own chat template.

    Args:
        url: the server (`http://host:port`; a trailing `/v1` is fine).
        model: the served model name (None: the server's only model).
        format: "qwen2.5-math-prm" (P(correct) = column 1 of the 2-label softmax at each
            `<extra_0>`) or "math-shepherd" (column 0, P('+'), at each 'ки').
        tokenizer, template, system, separator, step_tag, step_prefix: the input text, as for
            the in-process formats (`template="plain"` for a PRM without a chat template).
        label: the column to read, if the server's head differs.
        api_key, timeout, connect_timeout, retries, name: the HTTP client and the verifier name.

    Example:
        >>> from ttc.verifiers import RemotePRM
        >>> prm = RemotePRM("http://127.0.0.1:8001/v1", model="prm", format="math-shepherd")
        >>> (prm.root, prm.format, prm.label)  # no request until a search scores steps
        ('http://127.0.0.1:8001', 'math-shepherd', 0)
    """

    def __init__(self, url: str, model: str | None = None, format: str = "qwen2.5-math-prm", *,
                 tokenizer: Any = None, template: str = CHATML, system: str | None = QWEN_SYSTEM,
                 separator: str = QWEN_SEPARATOR, step_tag: str = SHEPHERD_STEP_TAG,
                 step_prefix: str = SHEPHERD_STEP_PREFIX, label: int | None = None, api_key: str | None = None,
                 timeout: float = 300.0, connect_timeout: float = 10.0, retries: int = 2, name: str | None = None):
        self.root = _root(url)
        key = _ALIASES.get(str(format).lower())
        if key is None:
            raise InvalidInput(f"unknown RemotePRM format {format!r}; known: {', '.join(REMOTE_FORMATS)}")
        if template not in _TEMPLATES:
            raise InvalidInput(f"unknown template {template!r}; known: {', '.join(_TEMPLATES)}")
        if label is not None and (not isinstance(label, int) or label < 0):
            raise InvalidInput(f"label must be a column index >= 0, got {label!r}")
        if not isinstance(retries, int) or retries < 0:
            raise InvalidInput(f"retries must be an integer >= 0, got {retries!r}")
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidInput(f"model must be the served model's name, got {model!r}")
        self.model = model
        self.format = key
        self.label = REMOTE_FORMATS[key] if label is None else label
        self.template = template
        self.system = system
        self.separator = separator
        self.step_tag = step_tag
        self.step_prefix = step_prefix
        self.api_key = api_key
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retries = retries
        self.name = name or (os.path.basename(model.rstrip("/")) if model else "remote_prm")
        if isinstance(tokenizer, str):
            from ttc.verifiers.loading import _load_tokenizer  # the in-process PRM loader

            tokenizer = _load_tokenizer(os.path.expanduser(tokenizer), False)
        self.tokenizer = tokenizer

    # -- inputs --------------------------------------------------------------------------------
    def text(self, question: str, steps: Sequence[str]) -> str:
        """The text the server tokenizes for one trace (the in-process PRM's text for this format)."""
        if self.format == "math-shepherd":
            return shepherd_text(question, steps, step_tag=self.step_tag, step_prefix=self.step_prefix)
        if self.tokenizer is not None:
            if getattr(self.tokenizer, "chat_template", None):
                messages = qwen_messages(question, steps, separator=self.separator, system=self.system)
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
            return qwen_plain_text(question, steps, separator=self.separator, system=self.system)
        if self.template == "plain":
            return qwen_plain_text(question, steps, separator=self.separator, system=self.system)
        return chatml(qwen_messages(question, steps, separator=self.separator, system=self.system))

    @property
    def marker(self) -> str:
        return self.step_tag if self.format == "math-shepherd" else self.separator

    # -- scoring -------------------------------------------------------------------------------
    async def score(self, problem: Problem, traces: Sequence[Sequence[str]], ctx: Context) -> list[list[float]]:
        if not traces:
            return []
        texts = [self.text(problem.question, steps) for steps in traces]
        payload: dict[str, Any] = {"input": texts, "task": "token_classify", "use_activation": True}
        if self.model is not None:
            payload["model"] = self.model
        body = await self._post("/pooling", payload)
        rows = self._rows(body, len(texts))
        scores = [self._step_scores(row, steps, i) for i, (row, steps) in enumerate(zip(rows, traces, strict=True))]
        usage = body.get("usage")
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            ctx.record_verifier_tokens(tokens)
        else:  # not vLLM: the tokens it ran are unknown
            ctx.usage.estimated = True
        return scores

    def _rows(self, body: Any, n: int) -> list[Any]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise MalformedResponse(f"the PRM server at {self.root} answered {got} results for {n} inputs: "
                                    f"{json.dumps(body)[:300]}")
        try:
            ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
            return [item["data"] for item in ordered]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise MalformedResponse(f"the PRM server at {self.root} answered items without `data`: "
                                    f"{json.dumps(data)[:300]}") from None

    def _step_scores(self, row: Any, steps: Sequence[str], index: int) -> list[float]:
        if not isinstance(row, list):
            raise MalformedResponse(f"the PRM server at {self.root} answered {type(row).__name__} for input {index}, "
                                    f"not a list of step scores (is it a token_classify model?)")
        if len(row) != len(steps):
            raise InvalidInput(
                f"{self.name}: the server found {len(row)} step markers for {len(steps)} steps in input {index}; "
                f"its pooler must read the {self.marker!r} token (`--pooler-config '{{\"step_tag_id\": ID}}'` "
                f"with that token's id) and the tokenizer must keep it a single token")
        out = []
        for cell in row:
            values = cell if isinstance(cell, list) else [cell]
            column = 0 if len(values) == 1 else self.label
            try:
                out.append(float(values[column]))
            except (IndexError, TypeError, ValueError):
                raise MalformedResponse(f"the PRM server at {self.root} answered step scores {cell!r}; "
                                        f"expected label probabilities with a column {column}") from None
        return out

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        url = self.root + path
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout)
        last: Exception | None = None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
                try:
                    async with session.post(url, json=payload, headers=headers) as response:
                        text = await response.text()
                        status = response.status
                except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                    last = BackendUnavailable(f"cannot reach the PRM server at {url}: {type(exc).__name__}: {exc}")
                    continue
                except aiohttp.ClientError as exc:
                    last = GenerationError(f"the request to the PRM server at {url} failed: {exc}")
                    continue
                if status == 200:
                    try:
                        return json.loads(text)
                    except ValueError:
                        raise MalformedResponse(f"the PRM server at {url} answered non-JSON: {text[:300]!r}") from None
                if status >= 500 or status == 429:
                    last = GenerationError(f"the PRM server at {url} answered {status}: {_message(text)}")
                    continue
                await self._raise_for(status, text, url, session, headers)
        assert last is not None
        raise last

    async def _raise_for(self, status: int, text: str, url: str, session: aiohttp.ClientSession,
                         headers: dict[str, str]) -> None:
        message = _message(text)
        if status == 404 and self.model is not None and "does not exist" in message:
            served = await self._served_models(session, headers)
            raise ModelNotFound(f"the PRM server at {self.root} does not serve {self.model!r}"
                                + (f"; it serves {served}" if served else "") + f" ({message})")
        if status in (404, 405):
            raise Unsupported(f"the server at {self.root} has no vLLM pooling endpoint ({url} answered {status}: "
                              f"{message}); serve the PRM with vLLM as a pooling model (see docs/verifiers.md)")
        if status in (401, 403):
            raise InvalidInput(f"the PRM server at {self.root} refused the request ({status}): {message}; "
                               f"check api_key")
        raise InvalidInput(f"the PRM server at {self.root} rejected the request ({status}): {message}")

    async def _served_models(self, session: aiohttp.ClientSession, headers: dict[str, str]) -> list[str]:
        try:
            async with session.get(self.root + "/v1/models", headers=headers) as response:
                body = await response.json(content_type=None)
            return [str(m["id"]) for m in body["data"]]
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, TypeError, ValueError):
            return []

    def __repr__(self) -> str:
        return f"RemotePRM({self.root!r}, model={self.model!r}, format={self.format!r})"


def _message(text: str) -> str:
    """The error message of an OpenAI-style error body, else the body's start."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:500]
    return text[:300]
