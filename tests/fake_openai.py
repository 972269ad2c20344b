"""A fake OpenAI-compatible server whose behaviours can be switched one at a time.

For the server behaviours no installable server shows here (n ignored or rejected, chat only, no
logprobs, 429 with Retry-After, SSE comment lines, no usage, a slow first byte, OpenAI's strict
field checks and string logprob tokens, a trailing assistant message prefilled without any flag
as llama.cpp, Ollama and LMDeploy do). The real vLLM and `transformers serve` are tested in
test_servers_real.py; the `vllm` preset mimics vLLM so that each other preset changes one thing.

The "model" writes one fixed solution of three steps separated by blank lines and ends it with
EOS (no \\boxed, so only the end-of-sequence signal can finish a step-search trace):

    Let me add.\\n\\n2 + 3 = 5.\\n\\nThe answer is 5.<eos>

with "6" instead of "5" for every third sample the server draws (so a vote of 4 gives 5, 5, 6, 5).
It finds how far a prompt already is by looking for the steps in its text (token-id prompts are
decoded with the server's own toy tokenizer: pieces of whitespace and non-whitespace), and goes on
exactly where a prompt that holds the start of its text stops (a chunk cut inside a step).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass

from fake_http import FakeHTTPServer, FakeRequest, response

QUESTION = "What is 2 + 3?"
EOS_ID = 0

_KNOWN_FIELDS = {"model", "prompt", "messages", "n", "temperature", "top_p", "max_tokens", "stop", "seed",
                 "logprobs", "top_logprobs", "stream", "stream_options", "max_completion_tokens"}


@dataclass
class Behaviour:
    tokenize: bool = True           # vLLM's /tokenize
    token_ids: bool = True          # return_token_ids honoured
    id_tokens: bool = True          # logprob tokens as "token_id:N" (return_tokens_as_token_ids)
    stop_reason: bool = True        # choices carry vLLM's stop_reason
    n: str = "honoured"             # "honoured" | "ignored" | "rejected"
    completions: bool = True        # /v1/completions exists
    logprobs: bool = True           # logprobs returned when asked
    max_top: int = 20               # most top logprobs accepted (more: 400)
    strict_fields: bool = False     # unknown request fields: 400 naming the field (OpenAI)
    continue_final: bool = True     # chat accepts continue_final_message
    prefill: bool = False           # a trailing assistant message is continued, whatever the request says
    usage: bool = True
    ratelimit: bool = False         # after a 429 (every 3rd request), every request gets 429 for retry_after s
    retry_after: float = 1.0
    sse_comments: bool = False      # ": keep-alive" lines, an empty role delta, usage in a last chunk
    slow: float = 0.0               # seconds before the first byte
    keep_stop: bool = False         # a matched stop string stays in the text (transformers serve)
    metrics: str | None = 'vllm:cache_config_info{block_size="16",enable_prefix_caching="True"} 1.0\n'
    think: bool = False             # the model thinks first (THOUGHT: "<think> ... \\boxed{7} ... </think> ")
    reasoning: str = "none"         # the chat endpoint's parser: "none", "parser" (message.reasoning, vLLM 0.32),
    #                                 "content" (reasoning_content, older vLLM), "hidden" (counted, not returned)
    refuse: tuple[str, ...] = ()    # request fields answered with a 400 naming them (vLLM's message style)


PRESETS = {
    "vllm": Behaviour(),
    "openai": Behaviour(tokenize=False, token_ids=False, id_tokens=False, stop_reason=False, max_top=5,
                        strict_fields=True, continue_final=False, metrics=None),
    "no_n": Behaviour(n="ignored"),
    "reject_n": Behaviour(n="rejected"),
    "chat_only": Behaviour(tokenize=False, token_ids=False, id_tokens=False, stop_reason=False,
                           completions=False, metrics=None),
    # llama.cpp's server (since its PR #13174), Ollama, LMDeploy: no vLLM fields, no flag needed to continue
    "prefill": Behaviour(tokenize=False, token_ids=False, id_tokens=False, stop_reason=False, continue_final=False,
                         prefill=True, metrics=None),
    # OpenAI's strict field checks, answered after a delay so that concurrent streams are all refused together
    "strict_concurrent": Behaviour(tokenize=False, token_ids=False, id_tokens=False, stop_reason=False, max_top=5,
                                   strict_fields=True, continue_final=False, metrics=None, slow=0.1),
    "no_logprobs": Behaviour(logprobs=False),
    "ratelimit": Behaviour(ratelimit=True),
    "sse_comments": Behaviour(sse_comments=True),
    "no_usage": Behaviour(usage=False),
    "slow": Behaviour(slow=0.2),
    "no_prefix_caching": Behaviour(metrics='vllm:cache_config_info{enable_prefix_caching="False"} 1.0\n'),
    "coarse_blocks": Behaviour(metrics='vllm:cache_config_info{block_size="128",enable_prefix_caching="True"} 1.0\n'),
    # a Qwen3-style thinking model (it writes <think> itself): without a reasoning parser, with vLLM 0.32's,
    # with an older server's reasoning_content, and a server that hides the thinking (OpenAI's o-series)
    "thinking": Behaviour(think=True),
    "thinking_parser": Behaviour(think=True, reasoning="parser"),
    "thinking_content": Behaviour(think=True, reasoning="content"),
    "thinking_hidden": Behaviour(think=True, reasoning="hidden", tokenize=False, token_ids=False, id_tokens=False,
                                 stop_reason=False, continue_final=False, metrics=None),
}

#: what the thinking model thinks before it answers: a different number, boxed, that must never be the answer
THOUGHT = "<think> Maybe it is \\boxed{7} since 3 + 4 = 7. No: add 2 and 3. </think> "


def steps(answer: str) -> list[str]:
    return ["Let me add.\n\n", "2 + 3 = 5.\n\n", f"The answer is {answer}."]


class FakeOpenAI:
    """`with FakeOpenAI("openai") as s: OpenAICompatible(s.url, model="fake")`; `s.reported` sums
    the usage objects it sent, `s.requests` lists (path, body)."""

    def __init__(self, preset: str = "vllm", **changes):
        self.behaviour = dataclasses.replace(PRESETS[preset], **changes)
        self.requests: list[tuple[str, dict]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, in order
        self.reported = {"prompt_tokens": 0, "completion_tokens": 0}
        self.reported_reasoning = 0  # completion_tokens_details.reasoning_tokens sent, summed
        self.statuses: list[int] = []
        self._vocab: dict[str, int] = {"<eos>": EOS_ID}
        self._words: list[str] = ["<eos>"]
        self._draws = itertools.count()
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._pending = 0  # requests received and not yet answered
        self._server = FakeHTTPServer(self._handle)

    # -- toy tokenizer --------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        out = []
        with self._lock:
            for piece in re.findall(r"\s+|\S+", text):
                if piece not in self._vocab:
                    self._vocab[piece] = len(self._words)
                    self._words.append(piece)
                out.append(self._vocab[piece])
        return out

    def decode(self, ids) -> str:
        return "".join(self._words[i] for i in ids if i != EOS_ID)

    @staticmethod
    def render(messages, continue_final: bool = False) -> str:
        """The toy chat template; `continue_final` leaves the last message open."""
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n<|end|>\n" for m in messages)
        if continue_final:
            return text[: -len("\n<|end|>\n")]
        return text + "<|assistant|>\n"

    # -- the model --------------------------------------------------------------------------
    def _answer(self, written: str, stop: list[str]) -> tuple[str, bool, str | None]:
        """(text, ended by EOS, the stop string matched) of one sample continuing `written`."""
        answer = "6" if next(self._draws) % 3 == 2 else "5"
        parts = steps(answer)
        if "The answer is" in written:
            return "", True, None  # said everything: EOS at once
        if self.behaviour.think and "</think>" not in written:
            parts = [THOUGHT + parts[0], *parts[1:]]
        whole = "".join(parts)
        if written and whole.startswith(written):  # cut anywhere (a chunk of tokens): go on from there
            rest = whole[len(written):]
        else:
            done = 0
            while done < len(parts) - 1 and parts[done].strip() in written:
                done += 1
            rest = "".join(parts[done:])
        for s in stop:
            at = rest.find(s)
            if at != -1:
                return rest[: at] + (s if self.behaviour.keep_stop else ""), False, s
        return rest, True, None

    def tokenizer(self) -> ToyTokenizer:
        """A local tokenizer of the fake's model (what `tokenizer=` gets for a real model)."""
        return ToyTokenizer(self)

    # -- HTTP -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    def __enter__(self) -> FakeOpenAI:
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every request received has been answered (and counted in `reported`): a
        client that closed a stream early does not wait for the server to finish it."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.01)

    async def _handle(self, req: FakeRequest) -> bytes | None:
        self._pending += 1
        try:
            return await self._answer_request(req)
        finally:
            self._pending -= 1

    async def _answer_request(self, req: FakeRequest) -> bytes | None:
        b = self.behaviour
        body = req.json() if req.body else {}
        self.requests.append((req.path, body))
        self.headers.append(dict(req.headers))
        if b.slow:
            await asyncio.sleep(b.slow)
        if b.ratelimit and req.path.startswith("/v1/") and req.method == "POST":
            now = time.monotonic()
            if now < self._blocked_until or len(self.requests) % 3 == 0:
                if now >= self._blocked_until:
                    self._blocked_until = now + b.retry_after
                self.statuses.append(429)
                head = (f"HTTP/1.1 429 X\r\nContent-Type: application/json\r\nRetry-After: {b.retry_after:g}\r\n")
                payload = json.dumps({"error": {"message": "rate limited", "code": 429}}).encode()
                return (head + f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        if req.path == "/v1/models":
            return response(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        if req.path == "/metrics":
            return response(200, b.metrics, content_type="text/plain") if b.metrics else response(404, b"")
        if req.path == "/tokenize":
            if not b.tokenize:
                return response(404, {"detail": "Not Found"})
            text = self.render(body["messages"], bool(body.get("continue_final_message"))) \
                if "messages" in body else body["prompt"]
            return response(200, {"tokens": self.encode(text), "count": 0})
        if req.path == "/v1/completions" and not b.completions:
            return response(404, {"error": {"message": "this server only serves /v1/chat/completions"}})
        if req.path not in ("/v1/completions", "/v1/chat/completions"):
            return response(404, {"detail": "Not Found"})
        for key in b.refuse:
            if key in body:
                return response(400, {"error": {"message": f"{key} is not supported by this server", "code": 400}})
        if b.strict_fields:
            for key in body:
                if key not in _KNOWN_FIELDS:
                    return response(400, {"error": {"message": f"Unrecognized request argument supplied: {key}"}})
        chat = req.path == "/v1/chat/completions"
        top = body.get("top_logprobs", 0) if chat else body.get("logprobs") or 0
        if b.logprobs and isinstance(top, int) and top > b.max_top:
            return response(400, {"error": {"message": f"logprobs must be at most {b.max_top}"}})
        n = body.get("n", 1)
        if n > 1 and b.n == "rejected":
            return response(400, {"error": {"message": "only n=1 is supported by this server ('n' must be 1)"}})
        if n > 1 and b.n == "ignored":
            n = 1
        if chat:
            messages = body["messages"]
            cont = (body.get("continue_final_message") and b.continue_final) or \
                (b.prefill and messages[-1]["role"] == "assistant")
            written = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
            prompt_text = self.render(messages, bool(cont))
            if not cont:
                written = ""
        else:
            prompt = body["prompt"]
            prompt_text = self.decode(prompt) if isinstance(prompt, list) else prompt
            written = prompt_text.split("<|assistant|>\n")[-1]
        prompt_tokens = len(prompt) if not chat and isinstance(prompt, list) else len(self.encode(prompt_text))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        samples = []
        for _ in range(n):
            text, eos, matched = self._answer(written, stop)
            ids = self.encode(text + (matched if matched and not b.keep_stop else ""))
            limit = body.get("max_tokens") or 10**6
            finish = "stop"
            if len(ids) > limit:
                ids, finish, eos = ids[:limit], "length", False
                text = self.decode(ids)
            elif eos:
                ids = ids + [EOS_ID]
            samples.append((text, ids, finish, None if eos else matched))
        completion_tokens = sum(len(s[1]) for s in samples)
        self.reported["prompt_tokens"] += prompt_tokens
        self.reported["completion_tokens"] += completion_tokens
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if chat and b.reasoning != "none":  # as vLLM: counted on the chat endpoint with a parser only
            usage["completion_tokens_details"] = {"reasoning_tokens": sum(self.thinking_tokens(s[1]) for s in samples)}
            self.reported_reasoning += usage["completion_tokens_details"]["reasoning_tokens"]
        lp = body.get("logprobs")
        want_lp = (lp is True) if chat else (lp is not None and lp is not False)
        if body.get("stream"):
            return self._stream(samples[0], chat, want_lp, top, usage, body)
        choices = [self._choice(i, s, chat, want_lp, top, body) for i, s in enumerate(samples)]
        out = {"id": "x", "object": "chat.completion" if chat else "text_completion", "model": "fake",
               "choices": choices}
        if b.usage:
            out["usage"] = usage
        return response(200, out)

    def _logprobs(self, ids, chat: bool, top: int, body: dict):
        b = self.behaviour
        tokens = [f"token_id:{i}" if b.id_tokens and body.get("return_tokens_as_token_ids") else
                  (self._words[i] if i != EOS_ID else "") for i in ids]
        values = [-0.1 * (1 + k % 3) for k in range(len(ids))]
        alts = [{f"alt{j}" if not tokens[k].startswith("token_id:") else f"token_id:{1000 + j}": -0.5 - j
                 for j in range(top)} for k in range(len(ids))]
        for k, a in enumerate(alts):
            if top:
                a.pop(next(iter(a)))
                a[tokens[k]] = values[k]
        if chat:
            return {"content": [{"token": t, "logprob": v, "top_logprobs": [{"token": x, "logprob": y}
                                                                          for x, y in a.items()]}
                                for t, v, a in zip(tokens, values, alts, strict=False)]}
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": alts if top else None}

    def thinking_tokens(self, ids) -> int:
        """Tokens strictly between the markers (vLLM's count_reasoning_tokens)."""
        start, end = self.encode("<think>")[0], self.encode("</think>")[0]
        inside, count = False, 0
        for i in ids:
            if i in (start, end):
                inside = i == start
            elif inside:
                count += 1
        return count

    def parsed(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, content) as vLLM's reasoning parser returns them."""
        if "<think>" not in text:
            return None, text
        body = text.split("<think>", 1)[1]
        if "</think>" not in body:
            return body, None
        reasoning, content = body.split("</think>", 1)
        return reasoning, content or None

    def _choice(self, index, sample, chat, want_lp, top, body):
        b = self.behaviour
        text, ids, finish, matched = sample
        choice: dict = {"index": index, "finish_reason": finish}
        if chat and b.reasoning != "none":
            reasoning, content = self.parsed(text)
            key = {"parser": "reasoning", "content": "reasoning_content"}.get(b.reasoning)
            choice["message"] = {"role": "assistant", "content": content, **({key: reasoning} if key else {})}
            if b.reasoning == "parser":
                choice["message"].setdefault("reasoning_content", None)
        elif chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = self._logprobs(ids, chat, top, body) if want_lp and b.logprobs else None
        if b.token_ids and body.get("return_token_ids"):
            choice["token_ids"] = ids
        if b.stop_reason:
            choice["stop_reason"] = matched
        return choice

    def _stream(self, sample, chat, want_lp, top, usage, body) -> bytes:
        b = self.behaviour
        text, ids, finish, matched = sample
        events = []
        if b.sse_comments:
            events.append(": keep-alive\n\n")
            if chat:
                events.append("data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                              + "\n\n")
        pieces = [self.decode([i]) for i in ids]
        state = "content" if not (chat and b.reasoning != "none" and text.lstrip().startswith("<think>")) else "before"
        key = {"parser": "reasoning", "content": "reasoning_content"}.get(b.reasoning)
        for k, (piece, tid) in enumerate(zip(pieces, ids, strict=False)):
            last = k == len(ids) - 1
            choice: dict = {"index": 0, "finish_reason": finish if last else None}
            if chat and state != "content":  # the parser: markers send nothing, thinking goes to `reasoning`
                if piece in ("<think>", "</think>"):
                    state = "thinking" if piece == "<think>" else "content"
                    choice["delta"] = {}
                elif state == "thinking" or not piece.strip():
                    choice["delta"] = {key: piece} if key else {}
                else:
                    choice["delta"] = {"content": piece}
            elif chat:
                choice["delta"] = {"content": piece}
            else:
                choice["text"] = piece
            if b.token_ids and body.get("return_token_ids"):
                choice["token_ids"] = [tid]
            if last and b.stop_reason:
                choice["stop_reason"] = matched
            events.append("data: " + json.dumps({"choices": [choice]}) + "\n\n")
            if b.sse_comments:
                events.append(": keep-alive\n\n")
        include = (body.get("stream_options") or {}).get("include_usage") or b.sse_comments
        if b.usage and include:
            events.append("data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n")
        events.append("data: [DONE]\n\n")
        payload = "".join(events).encode()
        head = (f"HTTP/1.1 200 X\r\nContent-Type: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n")
        return head.encode() + payload


class ToyTokenizer:
    """The fake model's tokenizer, with the Hugging Face methods OpenAICompatible uses."""

    chat_template = "toy"
    eos_token_id = EOS_ID

    def __init__(self, server: FakeOpenAI):
        self.server = server

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.server.encode(text)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.server.decode(ids)

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=True, continue_final_message=False):
        text = FakeOpenAI.render(messages, continue_final_message)
        return self.encode(text) if tokenize else text
