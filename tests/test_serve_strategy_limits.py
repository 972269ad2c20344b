"""`ttc serve`'s strategy path with the backend's own limits (issue 23): a request that cannot get
an upstream connection within `--pool-wait` is a 503 with Retry-After, and /metrics shows the
strategy pool's connections in use and requests waiting; an upstream timeout is a 504 by its type
(`GenerationTimeout`), with the read timeout `--upstream-read-timeout` applied to non-streamed
requests; an upstream 429/503 is answered 503 with its Retry-After after exactly one upstream
request (no retries). Against the fake upstream, made slow or overloaded after the warm-up (the
first strategy request probes the upstream's features).
"""

from __future__ import annotations

import re
import threading
import time

import pytest

from fake_openai import QUESTION, FakeOpenAI
from test_serve import get, post
from ttc.serve import Connections, Limits, ServeConfig, start_in_thread

MESSAGES = [{"role": "user", "content": QUESTION}]
STRATEGY = {"messages": MESSAGES, "ttc": {"n": 2}}


class Overloaded(FakeOpenAI):
    """The fake, answering every POST /v1/ route with `overload` (429 or 503, Retry-After: 7) when set."""

    def __init__(self) -> None:
        super().__init__("vllm")
        self.overload: int | None = None

    async def _handle(self, req):
        if self.overload is None or req.method != "POST" or not req.path.startswith("/v1/"):
            return await super()._handle(req)
        self.requests.append((req.path, req.json()))
        body = b'{"error": {"message": "overloaded"}}'
        return (f"HTTP/1.1 {self.overload} X\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def upstream():
    with Overloaded() as server:
        yield server


@pytest.fixture()
def fresh(upstream):
    upstream.behaviour.slow, upstream.overload = 0.0, None
    yield upstream
    upstream.behaviour.slow, upstream.overload = 0.0, None


def serve(upstream, **connections):
    config = ServeConfig(upstream=(upstream.url,), connections=Connections(health_timeout=0.5, **connections),
                         limits=Limits(retry_after=4))
    return start_in_thread(config, port=0)


def gauge(s, name: str) -> float:
    text = get(s.root + "/metrics")[1].decode()
    found = re.search(rf'^{name}{{path="strategy"}} (\S+)$', text, re.M)
    assert found, text
    return float(found.group(1))


def test_a_strategy_request_without_a_free_connection_is_a_503_and_metrics_show_the_pool(fresh):
    with serve(fresh, strategy_connections=1, pool_wait=0.3) as s:
        assert post(s.url + "/chat/completions", STRATEGY)[0] == 200  # warm-up: the probe
        assert gauge(s, "ttc_serve_upstream_connections_in_use") == 0
        fresh.behaviour.slow = 3.0
        first: list = []
        holder = threading.Thread(target=lambda: first.append(post(s.url + "/chat/completions", STRATEGY)))
        holder.start()
        deadline = time.monotonic() + 10
        while gauge(s, "ttc_serve_upstream_connections_in_use") != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gauge(s, "ttc_serve_upstream_connections_in_use") == 1
        status, headers, data = post(s.url + "/chat/completions", STRATEGY)
        assert status == 503 and headers["Retry-After"] == "4", data
        assert data["error"]["type"] == "server_overloaded" and "busy" in data["error"]["message"]
        text = get(s.root + "/metrics")[1].decode()
        assert 'ttc_serve_upstream_errors_total{cause="pool_exhausted",path="strategy"} 1.0' in text
        assert gauge(s, "ttc_serve_upstream_waiting") == 0
        holder.join(30)
        assert first[0][0] == 200, first  # the request that held the connection was answered
        assert gauge(s, "ttc_serve_upstream_connections_in_use") == 0


def test_a_strategy_request_waits_for_a_connection_within_pool_wait(fresh):
    with serve(fresh, strategy_connections=1, pool_wait=10) as s:
        assert post(s.url + "/chat/completions", STRATEGY)[0] == 200
        fresh.behaviour.slow = 0.5
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(post(s.url + "/chat/completions", STRATEGY)))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [a[0] for a in answers] == [200, 200], answers


def test_a_strategy_read_timeout_is_a_504_by_type(fresh):
    with serve(fresh, read_timeout=0.5, total_timeout=30) as s:
        assert post(s.url + "/chat/completions", STRATEGY)[0] == 200
        fresh.behaviour.slow = 3.0
        status, _, data = post(s.url + "/chat/completions", STRATEGY)
        assert status == 504 and data["error"]["type"] == "upstream_timeout", data
        assert "read timeout" in data["error"]["message"]
        text = get(s.root + "/metrics")[1].decode()
        assert 'ttc_serve_upstream_errors_total{cause="timeout",path="strategy"} 1.0' in text


@pytest.mark.parametrize("status", [429, 503])
def test_an_upstream_429_or_503_is_a_503_with_its_retry_after_after_one_request(fresh, status):
    with serve(fresh) as s:
        assert post(s.url + "/chat/completions", STRATEGY)[0] == 200
        fresh.overload = status
        sent = len(fresh.requests)
        answer, headers, data = post(s.url + "/chat/completions", STRATEGY)
        assert answer == 503 and headers["Retry-After"] == "7", data
        assert data["error"]["type"] == "upstream_overloaded"
        assert len([p for p, _ in fresh.requests[sent:] if p.startswith("/v1/")]) == 1  # not retried

