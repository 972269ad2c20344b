"""A counting proxy and a shared step reward in front of one OpenAI-compatible server, so that two
libraries can be compared on it (issue 25: ttc's ParticleGibbs against its_hub's).

    python benchmarks/pg_gateway.py --upstream http://127.0.0.1:8000/v1 --ports 8941 8942 --stats stats.json

Standard library only: it runs in either library's virtual environment. Each port is one *side*
(one library). On each port:

- every other path (`/v1/completions`, `/v1/chat/completions`, `/tokenize`, ...) is forwarded to the
  upstream server unchanged, and the side is billed what the upstream's answer says it cost: one
  request, and the `usage` (prompt and completion tokens) of the answer. These are the side's
  *generation* counts, counted on the client side of the server: a server shared with other users
  has `/metrics` deltas that hold their traffic too.
- `POST /reward` with `{"question": ..., "steps": [...]}` answers `{"score": s, "prompt_tokens": p,
  "completion_tokens": c}`: the probability that the last step is correct, asked of the upstream
  model exactly as `ttc.verifiers.LLMJudge` asks it (its `STEP_INSTRUCTION`, the steps listed as
  "Step i: ...", one greedy token with its top-20 log-probabilities, P(Yes) / (P(Yes) + P(No))),
  through the chat endpoint. Steps are normalised first (whitespace stripped, empty steps dropped),
  so a list of steps and the same steps joined by a delimiter and split again are one input. Every
  answer is cached by (question, steps) for the gateway's life, shared by all sides: the same
  input gets the same score on every side (a reward function, not a second sample of the judge).
  A side is billed every reward call it makes, with the tokens the judge request cost when the
  score was first computed (a cached answer costs the side what a fresh one would have).

`GET /stats` answers every side's counts; on exit (SIGINT/SIGTERM) they are written to `--stats`.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: ttc.verifiers.judge.STEP_INSTRUCTION (copied: this file runs without ttc installed)
STEP_INSTRUCTION = ("Problem: {question}\n\nSolution steps:\n{steps}\n\n"
                    "Is step {k} correct? Answer Yes or No.")
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


def normalise_steps(steps: list[str]) -> list[str]:
    """The steps with surrounding whitespace stripped and empty ones dropped."""
    return [s.strip() for s in steps if s.strip()]


def judge_messages(question: str, steps: list[str]) -> list[dict[str, str]]:
    """LLMJudge's question about the last of `steps` (LLMJudge.messages)."""
    listed = "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))
    return [{"role": "user", "content": STEP_INSTRUCTION.format(question=question, steps=listed, k=len(steps))}]


def p_yes(top: list[dict]) -> float:
    """P(Yes) / (P(Yes) + P(No)) over the top log-probabilities (0.5 when neither is there)."""
    def norm(token: str) -> str:
        return token.strip().strip(".,:;!\"'").lower()
    yes = sum(math.exp(t["logprob"]) for t in top if norm(t["token"]) == "yes")
    no = sum(math.exp(t["logprob"]) for t in top if norm(t["token"]) == "no")
    return yes / (yes + no) if yes + no > 0 else 0.5


class Server(ThreadingHTTPServer):
    """One side's port: a thread per connection, and a listen queue deep enough for a burst of
    concurrent connections (the default of 5 resets clients under a few dozen parallel requests)."""

    daemon_threads = True
    request_queue_size = 1024


class Gateway:
    """The upstream, the shared reward cache and every side's counts."""

    def __init__(self, upstream: str, model: str):
        self.upstream = upstream.rstrip("/")
        self.root = self.upstream.rsplit("/v1", 1)[0]
        self.model = model
        self.lock = threading.Lock()
        self.rewards: dict[tuple[str, tuple[str, ...]], dict] = {}
        self.stats: dict[str, dict[str, int]] = {}

    def count(self, side: str, **amounts: int) -> None:
        with self.lock:
            row = self.stats.setdefault(side, {})
            for key, value in amounts.items():
                row[key] = row.get(key, 0) + value

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "application/json")

    def reward(self, side: str, question: str, steps: list[str]) -> dict:
        steps = normalise_steps(steps)
        key = (question, tuple(steps))
        with self.lock:
            known = self.rewards.get(key)
        if known is None:
            if not steps:
                fresh = {"score": 0.5, "prompt_tokens": 0, "completion_tokens": 0}
            else:
                payload = {"model": self.model, "messages": judge_messages(question, steps), "max_tokens": 1,
                           "temperature": 0.0, "logprobs": True, "top_logprobs": 20}
                status, body, _ = self.post(f"{self.upstream}/chat/completions", json.dumps(payload).encode(),
                                            {"Content-Type": "application/json"})
                if status != 200:
                    raise RuntimeError(f"judge request failed ({status}): {body[:300]!r}")
                data = json.loads(body)
                usage = data.get("usage") or {}
                fresh = {"score": p_yes(data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]),
                         "prompt_tokens": usage.get("prompt_tokens", 0),
                         "completion_tokens": usage.get("completion_tokens", 0)}
            with self.lock:
                known = self.rewards.setdefault(key, fresh)  # the first answer wins: one score per input
        self.count(side, reward_calls=1, reward_prompt_tokens=known["prompt_tokens"],
                   reward_completion_tokens=known["completion_tokens"])
        return known

    def forward(self, side: str, method: str, path: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, bytes, str]:
        url = self.root + path
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                status, data, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/json")
        except (urllib.error.URLError, OSError) as e:  # the upstream dropped it: a 502 the client may retry
            status, data, ctype = 502, json.dumps({"error": f"upstream: {e}"}).encode(), "application/json"
        if path.split("?")[0] in GENERATION_PATHS:
            usage = _usage_of(data)
            self.count(side, requests=1, prompt_tokens=usage.get("prompt_tokens", 0),
                       completion_tokens=usage.get("completion_tokens", 0), failed=int(status != 200))
        else:
            self.count(side, other_requests=1)
        return status, data, ctype


def _usage_of(data: bytes) -> dict:
    """The `usage` of a JSON answer, or of the last server-sent event that carries one."""
    try:
        return json.loads(data).get("usage") or {}
    except (ValueError, AttributeError):
        usage: dict = {}
        for line in data.decode(errors="replace").splitlines():
            if line.startswith("data:") and '"usage"' in line:
                try:
                    usage = json.loads(line[5:]).get("usage") or usage
                except ValueError:
                    pass
        return usage


def handler_for(gateway: Gateway, side: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None

        def _headers(self) -> dict[str, str]:
            return {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/stats":
                with gateway.lock:
                    body = json.dumps(gateway.stats).encode()
                self._send(200, body)
                return
            self._send(*gateway.forward(side, "GET", self.path, None, self._headers()))

        def do_POST(self) -> None:  # noqa: N802
            body = self._body()
            if self.path == "/reward":
                try:
                    request = json.loads(body or b"{}")
                    answer = gateway.reward(side, request["question"], list(request["steps"]))
                    self._send(200, json.dumps(answer).encode())
                except Exception as exc:  # noqa: BLE001 - reported to the caller
                    self._send(500, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                return
            self._send(*gateway.forward(side, "POST", self.path, body, self._headers()))

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="the server's /v1 URL")
    ap.add_argument("--ports", type=int, nargs="+", required=True, help="one loopback port per side")
    ap.add_argument("--names", nargs="+", help="the sides' names (default: their ports)")
    ap.add_argument("--model", help="served model name (default: the upstream's first)")
    ap.add_argument("--stats", help="write the counts here on exit")
    args = ap.parse_args()
    model = args.model
    if model is None:
        with urllib.request.urlopen(args.upstream.rstrip("/") + "/models", timeout=10) as r:
            model = json.load(r)["data"][0]["id"]
    gateway = Gateway(args.upstream, model)
    names = args.names or [str(p) for p in args.ports]
    servers = []
    for port, name in zip(args.ports, names, strict=True):
        server = Server(("127.0.0.1", port), handler_for(gateway, name))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    print(json.dumps({"ready": dict(zip(names, args.ports, strict=True)), "model": model}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    for server in servers:
        server.shutdown()
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump({"stats": gateway.stats, "distinct_rewards": len(gateway.rewards)}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
