"""`ttc serve` in front of the real vLLM server of the test suite, driven by the official `openai`
client: chat and completions, with and without a `ttc` object, streaming, every strategy family,
a bad request per field, caps, a client disconnect that aborts vLLM's work, and usage equal to
vLLM's own counters. Small max_tokens and n keep it to a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import openai  # a dev dependency: the official client is what these tests exercise
import pytest

from ttc.serve import Connections, Limits, ServeConfig, start_in_thread

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is 2 + 3? Answer with the number only."
MESSAGES = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def served(vllm_server):
    limits = Limits(max_n=8, max_tokens=1024, max_budget_seconds=300)
    with start_in_thread(ServeConfig(upstream=(vllm_server.url,), n=2, max_tokens=16, limits=limits), port=0) as s:
        yield s


@pytest.fixture
def client(served):
    c = openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=300)
    yield c
    c.close()


def counters(vllm_server) -> dict[str, float]:
    from test_usage_real import server_counters

    return server_counters(vllm_server.root)


def delta(before: dict, after: dict, name: str) -> float:
    return after[name] - before[name]


# -- with and without a ttc object --------------------------------------------------------------
def test_passthrough_chat_and_completions_count_what_vllm_counted(client, vllm_server):
    before = counters(vllm_server)
    chat = client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, max_tokens=8, temperature=0)
    text = client.completions.create(model=vllm_server.model, prompt="2 + 3 =", max_tokens=8, temperature=0)
    after = counters(vllm_server)
    assert not hasattr(chat, "ttc") or chat.model_extra.get("ttc") is None
    assert chat.choices[0].message.content and text.choices[0].text
    assert chat.usage.completion_tokens + text.usage.completion_tokens == delta(before, after,
                                                                               "generation_tokens_total")
    assert chat.usage.prompt_tokens + text.usage.prompt_tokens == delta(before, after, "prompt_tokens_total")


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_vote_costs_what_vllm_counted(client, vllm_server, endpoint):
    before = counters(vllm_server)
    extra = {"ttc": {"strategy": "majority", "n": 3, "max_tokens": 12, "seed": 1, "return_candidates": True}}
    if endpoint == "chat":
        r = client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, extra_body=extra)
        text = r.choices[0].message.content
    else:
        r = client.completions.create(model=vllm_server.model, prompt="Q: 2 + 3 = ?\nA:", extra_body=extra)
        text = r.choices[0].text
    after = counters(vllm_server)
    t = r.model_extra["ttc"]
    assert t["strategy"] == "majority" and t["n"] == 3 and len(t["candidates"]) == 3
    assert text in [c["text"] for c in t["candidates"]]
    assert not t["usage"]["estimated"]
    assert r.usage.completion_tokens == sum(c["completion_tokens"] for c in t["candidates"])
    assert r.usage.completion_tokens == delta(before, after, "generation_tokens_total")
    # billed: the prompt once per request; vLLM's counter: once per sequence
    assert t["usage"]["processed_prompt_tokens"] == delta(before, after, "prompt_tokens_total")
    assert r.usage.prompt_tokens * 3 == t["usage"]["processed_prompt_tokens"]


@pytest.mark.parametrize("ttc", [
    {"strategy": "best_of_n", "n": 2, "verifier": "mean_logprob", "return_candidates": True},
    {"strategy": "beam", "n": 2, "max_steps": 2, "prm": "judge"},
    {"strategy": "first_finish", "n": 2},
], ids=lambda t: t["strategy"])
def test_every_strategy_family(client, vllm_server, ttc):
    before = counters(vllm_server)
    r = client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, max_tokens=12,
                                       extra_body={"ttc": ttc})
    after = counters(vllm_server)
    t = r.model_extra["ttc"]
    assert t["strategy"] == ttc["strategy"] and "answer" in t
    if ttc["strategy"] == "best_of_n":  # scored from the candidates' logprobs (no verifier call)
        assert len(t["candidates"]) == 2 and all(c["scores"] for c in t["candidates"])
    if ttc["strategy"] == "beam":
        assert t["verifier_calls"] > 0  # the judge runs on the same server: its tokens are in total_tokens
        assert t["usage"]["verifier_tokens"] > 0
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens + t["usage"]["verifier_tokens"]
    else:
        assert_completion_tokens_match(r.usage.completion_tokens, t["usage"]["closed_streams"],
                                       delta(before, after, "generation_tokens_total"), max_tokens=12)


def assert_completion_tokens_match(billed: int, closed_streams: int, counted: float, max_tokens: int) -> None:
    """Equal to vLLM's counter, unless ttc closed streams early (FirstFinish's losers): each was
    billed what it received, and vLLM may have generated a few more, at most up to max_tokens,
    before it saw the close. Then billed is a lower bound and says so."""
    if not closed_streams:
        assert billed == counted
    else:
        assert billed <= counted <= billed + closed_streams * max_tokens


@pytest.mark.parametrize("ttc", [None, {"n": 2, "max_tokens": 12}], ids=["passthrough", "vote"])
def test_streaming_sends_the_text_and_the_usage_last(client, vllm_server, ttc):
    stream = client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ttc": ttc} if ttc else None)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    if ttc:
        t = chunks[-1].model_extra["ttc"]
        assert t["n"] == 2 and chunks[-1].usage.completion_tokens <= 2 * 12


# -- bad requests and caps ----------------------------------------------------------------------
@pytest.mark.parametrize(("ttc", "param"), [
    ({"strategy": "no_such_strategy"}, "ttc.strategy"),
    ({"n": 9}, "ttc.n"),                        # over the cap of 8: refused
    ({"max_tokens": 2000}, "ttc.max_tokens"),   # over the cap of 1024: refused
    ({"temperature": "hot"}, "ttc.temperature"),
    ({"top_p": 2}, "ttc.top_p"),
    ({"seed": 1.5}, "ttc.seed"),
    ({"verifier": "gold"}, "ttc.verifier"),
    ({"prm": "remote"}, "ttc.prm"),
    ({"budget": {"seconds": 301}}, "ttc.budget.seconds"),
    ({"return_candidates": 1}, "ttc.return_candidates"),
    ({"strategy": "beam", "width": 0}, "ttc.width"),
    ({"beams": 4}, "ttc.beams"),
])
def test_a_bad_field_is_refused_naming_it(client, vllm_server, ttc, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, extra_body={"ttc": ttc})
    assert info.value.param == param and info.value.type == "invalid_request_error"


def test_a_client_that_disconnects_aborts_vllms_work(served, vllm_server):
    from test_vllm_backends import assert_generation_stops, running_and_generated

    _, before = running_and_generated(vllm_server)
    done = finished(vllm_server)
    body = json.dumps({"messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
                       "ttc": {"n": 2, "max_tokens": 400, "temperature": 1.0, "seed": 3}}).encode()
    host, port = served.root[len("http://"):].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 60
        while running_and_generated(vllm_server)[0] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_and_generated(vllm_server)[0] >= 1, "vLLM never started the vote"
        time.sleep(0.5)
    assert_generation_stops(vllm_server, before, 2 * 400)
    # the vote's requests never finished (stop or length): vLLM aborted them (it does not count a
    # client's abort in request_success_total)
    assert finished(vllm_server) == done
    assert served.server.in_flight == 0


def finished(vllm_server) -> float:
    return sum(v for k, v in vllm_server.metrics().items() if k.startswith("vllm:request_success_total{"))


# -- the docs' curl example runs as written -----------------------------------------------------
def test_the_docs_curl_example_runs(served):
    page = (ROOT / "docs" / "serve.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", page, re.S)
    curl = next(b for b in blocks if b.lstrip().startswith("curl"))
    out = subprocess.run(["bash", "-c", curl.replace("http://127.0.0.1:8100", served.root)], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    data = json.loads(out)
    assert data["ttc"]["strategy"] == "majority" and data["usage"]["completion_tokens"] > 0


# -- production (issue 23; review serve-4e644bc) against the real vLLM ----------------------------
LONG = [{"role": "user", "content": "Write a very long story about a dragon."}]


def vllm_requests(vllm_server) -> float:
    """Requests vLLM has seen start (its prompt-token counter moves with each)."""
    return counters(vllm_server)["prompt_tokens_total"]


@pytest.mark.parametrize(("fields", "extra", "param"), [
    ({}, {"ttc": {"strategy": "beam", "n": 1, "width": 150, "expansions": 150, "max_steps": 2}},
     "ttc.width"),                                                          # review H1: 22,500 sequences
    ({"n": 9}, None, "n"),                                                  # passthrough over --max-n 8
    ({"max_tokens": 1025}, None, "max_tokens"),                             # passthrough over the cap
])
def test_work_over_a_cap_never_reaches_vllm(client, vllm_server, fields, extra, param):
    before = vllm_requests(vllm_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, extra_body=extra, **fields)
    assert info.value.param == param
    assert vllm_requests(vllm_server) == before


@pytest.mark.parametrize("ttc", [None, {"n": 2, "max_tokens": 12}], ids=["passthrough", "vote"])
def test_a_stream_without_include_usage_has_no_empty_choices_chunk(client, vllm_server, ttc):
    """Review M5: the common client loop `chunk.choices[0]` must not fail (vLLM sends no usage chunk
    unless asked, and neither does ttc now)."""
    stream = client.chat.completions.create(model=vllm_server.model, messages=MESSAGES, max_tokens=12, stream=True,
                                            extra_body={"ttc": ttc} if ttc else None)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text


def test_readiness_comes_from_the_probe_of_vllm_and_liveness_from_nothing(served):
    import urllib.request

    with urllib.request.urlopen(served.root + "/health", timeout=10) as r:
        data = json.loads(r.read())
    assert data["upstreams"] == [True] and data["details"] == ["health 200"]
    with urllib.request.urlopen(served.root + "/live", timeout=10) as r:
        assert r.status == 200


def test_an_upstream_timeout_is_a_504_and_vllm_aborts_the_request(vllm_server):
    """Review H3: passthrough had no upstream timeout."""
    from test_vllm_backends import assert_generation_stops, running_and_generated

    _, before = running_and_generated(vllm_server)
    connections = Connections(total_timeout=3, read_timeout=3)
    with start_in_thread(ServeConfig(upstream=(vllm_server.url,), connections=connections), port=0) as s:
        c = openai.OpenAI(base_url=s.url, api_key="unused", max_retries=0, timeout=120)
        with pytest.raises(openai.APIStatusError) as info:
            c.chat.completions.create(model=vllm_server.model, messages=LONG, max_tokens=400, temperature=1.0,
                                      seed=3)
        assert info.value.status_code == 504
    assert_generation_stops(vllm_server, before, 400)


def test_a_graceful_shutdown_cancels_what_is_still_running_on_vllm(vllm_server):
    """Review L3: shutdown waits `shutdown_timeout`, then cancels in-flight requests and so their
    vLLM requests (the same drain as on SIGTERM; the SIGTERM path is tested on the fake)."""
    import threading

    from test_vllm_backends import assert_generation_stops, running_and_generated

    _, before = running_and_generated(vllm_server)
    s = start_in_thread(ServeConfig(upstream=(vllm_server.url,), connections=Connections(shutdown_timeout=1)),
                        port=0)
    c = openai.OpenAI(base_url=s.url, api_key="unused", max_retries=0, timeout=120)
    errors: list = []

    def long_request():
        try:
            c.chat.completions.create(model=vllm_server.model, messages=LONG, max_tokens=400, temperature=1.0,
                                      extra_body={"ttc": {"n": 2, "seed": 3}})
        except Exception as exc:  # the server went away mid-request: expected
            errors.append(exc)

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while running_and_generated(vllm_server)[0] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_and_generated(vllm_server)[0] >= 1, "vLLM never started the request"
    s.stop()
    thread.join(30)
    assert errors and not thread.is_alive()
    assert_generation_stops(vllm_server, before, 2 * 400)
