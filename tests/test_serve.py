"""`ttc serve` against the fake OpenAI server (tests/fake_openai.py): the `ttc` object's validation,
the caps, security and error bodies, passthrough, and the registry's strategy parameters.

The real vLLM server is in test_serve_real.py. The fake's "model" answers 5, 5, 6, 5, ... (every
third sample 6), so a vote of 4 is 5 with votes {5: 3, 6: 1}.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

import ttc
from fake_openai import QUESTION, FakeOpenAI
from ttc.errors import InvalidInput
from ttc.serve import Limits, ServeConfig, start_in_thread
from ttc.strategies import registry

MESSAGES = [{"role": "user", "content": QUESTION}]


def post(url: str, body, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of a POST; `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI("vllm") as server:
        yield server


@pytest.fixture(scope="module")
def served(fake):
    limits = Limits(max_n=16, max_tokens=512, max_budget_tokens=50_000, max_budget_seconds=60, max_body_bytes=20_000)
    with start_in_thread(ServeConfig(upstream=(fake.url,), n=4, max_tokens=64, limits=limits), port=0) as s:
        yield s


def chat(served, ttc: dict | None = None, **fields) -> tuple[int, dict, dict]:
    body = {"model": "fake", "messages": MESSAGES, **fields}
    if ttc is not None:
        body["ttc"] = ttc
    return post(served.url + "/chat/completions", body)


# -- strategies ---------------------------------------------------------------------------------
def test_a_vote_answers_with_the_usage_the_upstream_reported(served, fake):
    before = dict(fake.reported)
    status, _, data = chat(served, {"n": 4, "return_candidates": True, "seed": 3})
    assert status == 200, data
    t = data["ttc"]
    assert t["answer"] == "5" and t["strategy"] == "majority" and t["n"] == 4
    assert t["details"]["votes"] == {"5": 3.0, "6": 1.0}
    assert sorted(c["answer"] for c in t["candidates"]) == ["5", "5", "5", "6"]
    chosen = next(c["text"] for c in t["candidates"] if c["answer"] == "5")
    assert data["choices"][0]["message"] == {"role": "assistant", "content": chosen}
    assert chosen.endswith("The answer is 5.")
    # usage = what the upstream reported for every request the vote made
    assert data["usage"]["prompt_tokens"] == fake.reported["prompt_tokens"] - before["prompt_tokens"]
    assert data["usage"]["completion_tokens"] == fake.reported["completion_tokens"] - before["completion_tokens"]
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    assert t["usage"]["processed_prompt_tokens"] == 4 * data["usage"]["prompt_tokens"]
    assert t["usage"]["estimated"] is False


def test_the_clients_messages_are_sent_as_they_are(served, fake):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    status, _, _ = post(served.url + "/chat/completions", {"messages": messages, "ttc": {"n": 2}})
    assert status == 200
    sent = [body for path, body in fake.requests if path == "/tokenize" and "messages" in body][-1]
    assert sent["messages"] == messages  # no ttc instruction added


def test_completions_send_the_prompt_without_a_chat_template(served, fake):
    status, _, data = post(served.url + "/completions", {"prompt": "Q: 2 + 3?\nA:", "ttc": {"n": 2}})
    assert status == 200, data
    assert data["object"] == "text_completion" and data["choices"][0]["text"].endswith("The answer is 5.")
    assert [b for p, b in fake.requests if p == "/v1/completions"][-1]["prompt"] == "Q: 2 + 3?\nA:"


@pytest.mark.parametrize("ttc", [
    {"strategy": "best_of_n", "n": 2, "verifier": "mean_logprob"},
    {"strategy": "first_finish", "n": 3, "k": 2},
    {"strategy": "beam", "n": 2, "max_steps": 3, "prm": "judge"},
    {"strategy": "particle", "n": 2, "max_steps": 3, "resampling": "systematic"},
])
def test_every_family_runs_with_its_own_parameters(served, ttc):
    status, _, data = chat(served, ttc)
    assert status == 200, data
    assert data["ttc"]["strategy"] == registry.canonical_name(ttc["strategy"])
    assert data["ttc"]["answer"] in ("5", "6")
    assert data["usage"]["completion_tokens"] > 0


def test_default_strategy_mode_votes_on_requests_without_a_ttc_object(fake):
    with start_in_thread(ServeConfig(upstream=(fake.url,), default="strategy", n=3), port=0) as s:
        status, _, data = post(s.url + "/chat/completions", {"model": "x", "messages": MESSAGES})
    assert status == 200 and data["ttc"]["strategy"] == "majority" and data["ttc"]["n"] == 3


def test_passthrough_forwards_the_body_unchanged(served, fake):
    body = {"model": "fake", "messages": MESSAGES, "max_tokens": 9, "logit_bias": {}, "custom": 1}
    status, _, data = post(served.url + "/chat/completions", body)
    assert status == 200 and "ttc" not in data
    assert fake.requests[-1] == ("/v1/chat/completions", body)


def test_a_streamed_vote_sends_the_chosen_text_then_the_usage(served):
    req = urllib.request.Request(served.url + "/chat/completions", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"messages": MESSAGES, "stream": True,
                                                  "stream_options": {"include_usage": True},
                                                  "ttc": {"n": 4, "return_candidates": True}}).encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    last = chunks[-1]
    assert last["choices"] == [] and [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "stop"
    candidates = last["ttc"]["candidates"]
    assert text == next(c["text"] for c in candidates if c["answer"] == last["ttc"]["answer"])
    assert len(chunks) > 3  # the text came in several chunks
    assert last["usage"]["completion_tokens"] == sum(c["completion_tokens"] for c in candidates)


# -- validation: a 400 naming the field ---------------------------------------------------------
BAD = [
    ({"ttc": {"strategy": "nope"}}, "ttc.strategy"),
    ({"ttc": {"strategy": 3}}, "ttc.strategy"),
    ({"ttc": {"n": 0}}, "ttc.n"),
    ({"ttc": {"n": "8"}}, "ttc.n"),
    ({"ttc": {"n": 17}}, "ttc.n"),  # over the cap of 16
    ({"ttc": {"temperature": -1}}, "ttc.temperature"),
    ({"ttc": {"max_tokens": 513}}, "ttc.max_tokens"),  # over the cap of 512
    ({"ttc": {}, "max_tokens": 0}, "max_tokens"),
    ({"ttc": {"top_p": 0}}, "ttc.top_p"),
    ({"ttc": {"seed": -1}}, "ttc.seed"),
    ({"ttc": {"verifier": "oracle"}}, "ttc.verifier"),
    ({"ttc": {"prm": "remote"}}, "ttc.prm"),  # no --prm-upstream
    ({"ttc": {"prm": "shepherd"}}, "ttc.prm"),
    ({"ttc": {"budget": {"tokens": 0}}}, "ttc.budget.tokens"),
    ({"ttc": {"budget": {"tokens": 50_001}}}, "ttc.budget.tokens"),  # over the cap
    ({"ttc": {"budget": {"seconds": 61}}}, "ttc.budget.seconds"),
    ({"ttc": {"budget": {"dollars": 1}}}, "ttc.budget.dollars"),
    ({"ttc": {"budget": 5}}, "ttc.budget"),
    ({"ttc": {"return_candidates": "yes"}}, "ttc.return_candidates"),
    ({"ttc": {"bogus": 1}}, "ttc.bogus"),
    ({"ttc": {"strategy": "majority", "k": 2}}, "ttc.k"),  # first_finish's parameter
    ({"ttc": {"strategy": "first_finish", "k": "2"}}, "ttc.k"),
    ({"ttc": {"strategy": "first_finish", "n": 2, "k": 5}}, "ttc.k"),  # the constructor's check
    ({"ttc": []}, "ttc"),
    ({"ttc": {}, "messages": []}, "messages"),
    ({"ttc": {}, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"ttc": {}, "n": 2}, "n"),
    ({"ttc": {}, "tools": []}, "tools"),
    ({"ttc": {}, "stream": "yes"}, "stream"),
    ({"ttc": {}, "stop": 5}, "stop"),
]


@pytest.mark.parametrize(("fields", "param"), BAD, ids=[p + str(i) for i, (_, p) in enumerate(BAD)])
def test_a_bad_field_is_a_400_naming_it(served, fields, param):
    status, _, data = post(served.url + "/chat/completions", {"model": "fake", "messages": MESSAGES, **fields})
    assert status == 400, data
    error = data["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_bad_json_and_a_bad_prompt_are_400s(served):
    status, _, data = post(served.url + "/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in data["error"]["message"]
    status, _, data = post(served.url + "/completions", {"prompt": ["a", "b"], "ttc": {}})
    assert status == 400 and data["error"]["param"] == "prompt"


def test_a_body_over_the_cap_is_a_413(served):
    status, _, data = post(served.url + "/chat/completions",
                           {"messages": [{"role": "user", "content": "x" * 30_000}], "ttc": {}})
    assert status == 413 and "20000 bytes" in data["error"]["message"]


def test_a_budget_too_small_is_refused_with_what_it_spent(served):
    status, _, data = chat(served, {"n": 4, "budget": {"tokens": 20}})
    assert status == 422 and data["error"]["type"] == "budget_exhausted" and data["error"]["param"] == "ttc.budget"
    assert data["usage"]["total_tokens"] <= 20
    spent = data["ttc"]["usage"]  # every count of ttc.Usage, as in an answer's ttc.usage
    assert set(spent) == {f.name for f in dataclasses.fields(ttc.Usage)}
    assert spent["prompt_tokens"] + spent["completion_tokens"] + spent["verifier_tokens"] == \
        data["usage"]["total_tokens"]
    assert b'ttc_serve_errors_total{status="422"} 1.0' in get(served.root + "/metrics")[1]  # counted once


def test_the_in_flight_cap_answers_429_with_retry_after():
    with FakeOpenAI("vllm", slow=1.5) as slow, \
            start_in_thread(ServeConfig(upstream=(slow.url,), limits=Limits(max_in_flight=1, retry_after=7)),
                            port=0) as s:
        first: list = []
        thread = threading.Thread(target=lambda: first.append(chat(s, {"n": 2})))
        thread.start()
        deadline = time.monotonic() + 10
        while s.server.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, data = chat(s, {"n": 2})
        thread.join()
        assert status == 429 and headers["Retry-After"] == "7" and data["error"]["type"] == "rate_limit_error"
        assert first[0][0] == 200
        assert b"ttc_serve_refused_total 1.0" in get(s.root + "/metrics")[1]


def test_a_client_that_disconnects_cancels_its_problem():
    with FakeOpenAI("vllm", slow=30) as slow, start_in_thread(ServeConfig(upstream=(slow.url,)), port=0) as s:
        host, port = s.root[len("http://"):].split(":")
        body = json.dumps({"messages": MESSAGES, "ttc": {"n": 2}}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            deadline = time.monotonic() + 10
            while s.server.in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert s.server.in_flight == 1
        started = time.monotonic()
        while s.server.in_flight and time.monotonic() - started < 10:
            time.sleep(0.01)
        # the fake would answer after 30 s: the problem ended because the client left
        assert s.server.in_flight == 0 and time.monotonic() - started < 10


# -- security -----------------------------------------------------------------------------------
def test_a_non_loopback_address_needs_a_key_or_insecure():
    with pytest.raises(InvalidInput, match="--api-key"):
        ServeConfig(upstream=("http://127.0.0.1:1/v1",), host="0.0.0.0")
    ServeConfig(upstream=("http://127.0.0.1:1/v1",), host="0.0.0.0", api_key="k")
    ServeConfig(upstream=("http://127.0.0.1:1/v1",), host="0.0.0.0", insecure=True)


def test_a_bad_server_setting_fails_at_start():
    with pytest.raises(InvalidInput, match="unknown strategy"):
        ServeConfig(upstream=("http://127.0.0.1:1/v1",), strategy="nope")
    with pytest.raises(InvalidInput, match="prm_format"):
        ServeConfig(upstream=("http://127.0.0.1:1/v1",), prm_format="orm")
    with pytest.raises(InvalidInput, match="n must be"):
        ServeConfig(upstream=("http://127.0.0.1:1/v1",), n=65)
    with pytest.raises(InvalidInput, match="at least one"):
        ServeConfig(upstream=())
    assert ServeConfig(upstream="http://127.0.0.1:1/v1", strategy="vote").strategy == "majority"


def test_the_cli_refuses_a_public_address_without_a_key(capsys):
    from ttc.cli import main

    assert main(["serve", "--upstream", "http://127.0.0.1:1/v1", "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_the_api_key_is_required_and_the_upstream_key_never_shown(fake):
    config = ServeConfig(upstream=(fake.url,), api_key="client-key", upstream_api_key="sk-upstream-secret")
    seen = len(fake.headers)
    with start_in_thread(config, port=0) as s:
        assert post(s.url + "/chat/completions", {"messages": MESSAGES, "ttc": {}})[0] == 401
        status, _, data = post(s.url + "/chat/completions", {"messages": MESSAGES, "ttc": {"n": 2}},
                               headers={"Authorization": "Bearer wrong"})
        assert status == 401 and data["error"]["type"] == "authentication_error"
        assert get(s.root + "/metrics")[0] == 401
        ok = {"Authorization": "Bearer client-key"}
        status, headers, data = post(s.url + "/chat/completions", {"messages": MESSAGES, "ttc": {"n": 2}}, ok)
        assert status == 200
        assert "sk-upstream-secret" not in json.dumps([headers, data])
        status, headers, data = post(s.url + "/chat/completions", {"messages": MESSAGES}, ok)  # passthrough
        assert status == 200 and "sk-upstream-secret" not in json.dumps([headers, data])
    keys = {h.get("authorization") for h in fake.headers[seen:]}
    assert keys == {"Bearer sk-upstream-secret"}  # the client's key is not forwarded


def test_an_unreachable_upstream_is_a_502_that_names_no_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    url = f"http://user:pw@127.0.0.1:{port}/v1"
    with start_in_thread(ServeConfig(upstream=(url,)), port=0) as s:
        for body in ({"messages": MESSAGES, "ttc": {"n": 2}}, {"messages": MESSAGES}):
            status, _, data = post(s.url + "/chat/completions", body)
            assert status == 502, data
            assert str(port) not in json.dumps(data) and "pw" not in json.dumps(data)
        assert get(s.root + "/health")[0] == 503


def test_models_health_and_metrics(served, fake):
    status, body = get(served.url + "/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == "fake"
    _, _, data = chat(served, {"n": 2})
    text = get(served.root + "/metrics")[1].decode()
    assert 'ttc_serve_requests_total{endpoint="/chat/completions",mode="strategy"}' in text
    assert 'ttc_serve_tokens_total{kind="completion",mode="strategy"}' in text
    assert "ttc_serve_strategy_seconds_bucket" in text and "ttc_serve_problems_in_flight 0.0" in text


# -- the registry's strategy parameters ---------------------------------------------------------
SAMPLE = {int: 2, float: 0.5, bool: True}
STRINGS = {"selection": "softmax", "mode": "chunks", "on_drop": "answer", "aggregation": "min", "select": "best",
           "resampling": "systematic", "weight_by": "min", "stop": "esc", "prune": "none", "batches": "single",
           "fallback": "first"}


@pytest.mark.parametrize("name", sorted(registry.OPTIONS))
def test_every_declared_parameter_reaches_the_strategy(name):
    options = {k: STRINGS[k] if t is str else SAMPLE[t] for k, t in registry.OPTIONS[name].items()}
    strategy = registry.make_strategy(name, n=4, **options)
    assert strategy.name in (name, "majority")  # early_exit with n > 1 is a vote over early exits
    if name == "beam":
        assert (strategy.width, strategy.expansions, strategy.steps.max_steps, strategy.aggregation) == (2, 2, 2, "min")


def test_an_unknown_or_mistyped_parameter_names_itself():
    with pytest.raises(registry.InvalidOption, match="'k'") as info:
        registry.make_strategy("majority", n=4, k=2)
    assert info.value.field == "k"
    with pytest.raises(registry.InvalidOption, match="must be int"):
        registry.make_strategy("first_finish", n=4, k=True)
    with pytest.raises(registry.InvalidOption, match="must be float"):
        registry.make_strategy("deepconf", n=4, keep="0.5")


def test_prm_upstream_is_the_default_prm_of_step_searches(fake, monkeypatch):
    """`--prm-upstream URL` builds `RemotePRM(URL, model=<its first model>, format=--prm-format)` once and
    guides step searches with it (and `ttc.prm = "remote"`); RemotePRM's own scoring is tested with it."""
    import ttc.verifiers.remote_prm as remote
    from ttc.verifiers import ProgrammaticPRM

    made = []

    def recorder(url, model=None, format=None):  # noqa: A002 - RemotePRM's keyword
        made.append((url, model, format))
        return ProgrammaticPRM(lambda problem, steps: 0.5)

    monkeypatch.setattr(remote, "RemotePRM", recorder)
    config = ServeConfig(upstream=(fake.url,), prm_upstream=fake.url, prm_format="math-shepherd")
    with start_in_thread(config, port=0) as s:
        for ttc in ({"strategy": "beam", "n": 2, "max_steps": 2}, {"strategy": "particle", "n": 2, "max_steps": 2,
                                                                   "prm": "remote"}):
            status, _, data = post(s.url + "/chat/completions", {"messages": MESSAGES, "ttc": ttc})
            assert status == 200, data
            assert data["ttc"]["verifier_calls"] > 0 and data["ttc"]["usage"]["verifier_tokens"] == 0
    assert made == [(fake.url, "fake", "math-shepherd")]


def test_answer_grouping_never_blocks_the_http_loop(fake, monkeypatch):
    """Strategies run on the worker loop: while a vote's answer grouping (math-verify, a synchronous
    wait) is held up, the HTTP loop still answers. Without the worker loop, /metrics would wait for it."""
    from ttc import votes

    entered, release = threading.Event(), threading.Event()
    group = votes.answers.group

    def held_group(answers):
        entered.set()
        release.wait(30)
        return group(answers)

    monkeypatch.setattr(votes.answers, "group", held_group)
    with start_in_thread(ServeConfig(upstream=(fake.url,)), port=0) as s:
        result: list = []
        thread = threading.Thread(target=lambda: result.append(chat(s, {"n": 2})))
        thread.start()
        assert entered.wait(30)
        status, body = get(s.root + "/metrics")  # answered while the worker loop is blocked
        assert status == 200 and b"ttc_serve_problems_in_flight 1.0" in body
        assert not result  # the vote is still held
        release.set()
        thread.join()
        assert result[0][0] == 200
