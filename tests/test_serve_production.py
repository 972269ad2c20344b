"""`ttc serve` in production (issue 23): one regression test per finding of the review
serve-4e644bc (M1-M5, H2, H3, L1-L3, L5, L6), against the fake upstream; each failed on 4e644bc.

Faults are switched on a `Faulty` fake after the server has warmed up (its backend probes the
upstream's features on the first strategy request). `Hung` is an upstream that reads a request
and never answers, and records when the client gives up on it (what vLLM does on a closed
connection: abort the request).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from fake_http import response
from fake_openai import QUESTION, FakeOpenAI
from test_serve import get, post
from ttc.serve import Connections, Limits, ServeConfig, start_in_thread
from ttc.serve.redact import Redactor

MESSAGES = [{"role": "user", "content": QUESTION}]
KEY = "sk-upstream-SECRET-123"


class Faulty(FakeOpenAI):
    """The fake with one switchable fault on its POST /v1/ routes (`fault = None`: none)."""

    def __init__(self, preset: str = "vllm", **changes):
        super().__init__(preset, **changes)
        self.fault: str | None = None

    async def _handle(self, req):
        fault = self.fault
        if fault is None or req.method != "POST" or not req.path.startswith("/v1/"):
            return await super()._handle(req)
        self.requests.append((req.path, req.json() if req.body else {}))
        self.headers.append(dict(req.headers))
        auth = req.headers.get("authorization", "")
        if fault == "401_echo":
            return response(401, {"error": {"message": f"Incorrect API key provided: {auth}"}})
        if fault == "400_echo":
            return response(400, {"error": {"message": f"backend {self.url} refused {auth}"}})
        if fault == "200_echo_stream":
            payload = f'data: {{"choices": [{{"index": 0, "delta": {{"content": "{auth}"}}}}]}}\n\ndata: [DONE]\n\n'
            return response(200, payload, content_type="text/event-stream")
        if fault == "ratelimit":
            body = json.dumps({"error": {"message": "rate limited"}}).encode()
            return (f"HTTP/1.1 429 X\r\nContent-Type: application/json\r\nRetry-After: 7\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        if fault == "html502":
            return response(502, "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>", content_type="text/html")
        if fault == "truncated":
            return response(200, b'{"id": "x", "choices": [', content_length=400, close=True)
        raise AssertionError(fault)


class Hung:
    """An upstream that accepts requests and never answers; `got` is set when a POST arrives,
    `aborted` when its client then closes the connection."""

    def __init__(self) -> None:
        self.got = threading.Event()
        self.aborted = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            post = head.startswith(b"POST")
            if post:
                self.got.set()
            while await reader.read(1024):
                pass
            if post:
                self.aborted.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def faulty():
    with Faulty("vllm") as server:
        yield server


@pytest.fixture()
def keyed(faulty):
    """A server with an upstream key in front of the faulty fake, warmed up, logging to `log`."""
    log = io.StringIO()
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), upstream_api_key=KEY, log_format="json"), port=0,
                         log_stream=log) as s:
        assert post(s.url + "/chat/completions", {"messages": MESSAGES, "ttc": {"n": 2}})[0] == 200
        s.log = log
        yield s
    faulty.fault = None


def chat_to(s, body, headers=None):
    return post(s.url + "/chat/completions", body, headers)


def stream_body(url, body, headers=None) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


# -- M2: secrets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ttc", [None, {"n": 2}], ids=["passthrough", "strategy"])
def test_an_upstream_that_refuses_the_key_is_a_502_that_never_shows_it(keyed, faulty, ttc):
    faulty.fault = "401_echo"
    body = {"messages": MESSAGES, **({"ttc": ttc} if ttc else {})}
    status, headers, data = chat_to(keyed, body)
    assert status == 502 and "refused ttc's credentials" in data["error"]["message"], data
    assert KEY not in json.dumps([headers, data])
    status, _, text = stream_body(keyed.url + "/chat/completions", {**body, "stream": True})
    assert KEY not in text and "credentials" in text
    assert KEY not in get(keyed.root + "/metrics")[1].decode()
    assert "refused" in keyed.log.getvalue() and KEY not in keyed.log.getvalue()


def test_an_echoed_key_and_upstream_url_are_redacted_from_relayed_bytes(keyed, faulty):
    faulty.fault = "400_echo"
    status, _, data = chat_to(keyed, {"messages": MESSAGES})
    assert status == 400 and KEY not in json.dumps(data) and faulty.url not in json.dumps(data)
    assert "<redacted>" in data["error"]["message"] and "<upstream>" in data["error"]["message"]
    faulty.fault = "200_echo_stream"
    status, _, text = stream_body(keyed.url + "/chat/completions", {"messages": MESSAGES, "stream": True})
    assert status == 200 and KEY not in text and "<redacted>" in text


def test_a_secret_split_across_stream_chunks_is_still_redacted():
    text = f"data: one {KEY} two {KEY}{KEY} end".encode()
    for cut in range(1, len(text)):
        for second in (cut, min(len(text), cut + 7)):
            stream = Redactor([KEY]).stream()
            out = stream.feed(text[:cut]) + stream.feed(text[cut:second]) + stream.feed(text[second:]) + stream.flush()
            assert KEY.encode() not in out and out.count(b"<redacted>") == 3, (cut, out)


def test_openai_api_key_is_sent_upstream_only_when_configured(faulty, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    faulty.fault = None
    seen = len(faulty.headers)
    with start_in_thread(ServeConfig(upstream=(faulty.url,)), port=0) as s:
        assert chat_to(s, {"messages": MESSAGES, "ttc": {"n": 2}})[0] == 200
        assert chat_to(s, {"messages": MESSAGES})[0] == 200
    assert {h.get("authorization") for h in faulty.headers[seen:]} == {None}


def test_keys_come_from_files_and_the_environment_by_name(tmp_path, monkeypatch):
    from ttc.cli import build_parser, serve_api_key, upstream_api_key

    (tmp_path / "client").write_text("client-key\n")
    (tmp_path / "up").write_text(KEY)
    monkeypatch.setenv("MY_UPSTREAM_KEY", "sk-env")
    parse = build_parser().parse_args
    args = parse(["serve", "--upstream", "http://x/v1", "--api-key-file", str(tmp_path / "client"),
                  "--upstream-api-key-file", str(tmp_path / "up")])
    assert serve_api_key(args) == "client-key" and upstream_api_key(args) == KEY
    args = parse(["serve", "--upstream", "http://x/v1", "--upstream-api-key-env", "MY_UPSTREAM_KEY"])
    assert upstream_api_key(args) == "sk-env" and serve_api_key(args) is None


# -- M1: browsers cannot drive it ---------------------------------------------------------------
@pytest.mark.parametrize("ttc", [None, {"n": 2}], ids=["passthrough", "strategy"])
@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_only_json_bodies_are_read(keyed, faulty, kind, ttc):
    sent = len(faulty.requests)
    body = {"messages": MESSAGES, **({"ttc": ttc} if ttc else {})}
    status, _, data = post(keyed.url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": kind})
    assert status == 415 and data["error"]["message"], data
    assert len(faulty.requests) == sent


@pytest.mark.parametrize(("headers", "allowed"), [
    ({"Host": "attacker.example:8100"}, {}),
    ({"Origin": "http://evil.example"}, {}),
    ({"Host": "ttc.internal:8100"}, {"allowed_hosts": ("ttc.internal",)}),
    ({"Origin": "http://app.example"}, {"allowed_origins": ("http://app.example",)}),
])
def test_without_a_key_a_foreign_host_or_origin_is_a_403(faulty, headers, allowed):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), **allowed), port=0) as s:
        status, _, data = chat_to(s, {"messages": MESSAGES}, headers)
        assert status == (200 if allowed else 403), data
        assert get(s.root + "/live", headers)[0] == 200  # probes come from anywhere


def test_with_a_key_any_host_is_served(faulty):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), api_key="k"), port=0) as s:
        status, _, _ = chat_to(s, {"messages": MESSAGES}, {"Host": "ttc.example", "Authorization": "Bearer k"})
        assert status == 200


# -- L5: authentication details -----------------------------------------------------------------
def test_the_bearer_scheme_is_case_insensitive_and_a_malformed_header_is_a_401(faulty):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), api_key="k"), port=0) as s:
        for auth in ("bearer k", "BEARER k", "Bearer  k"):
            assert chat_to(s, {"messages": MESSAGES}, {"Authorization": auth})[0] == 200, auth
        host, port = s.root[len("http://"):].split(":")
        body = json.dumps({"messages": MESSAGES}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "authentication_error"


# -- H2/H3: pools and timeouts ------------------------------------------------------------------
def test_a_hung_upstream_is_a_504_at_the_timeout_and_the_request_is_aborted():
    hung = Hung()
    try:
        connections = Connections(total_timeout=1.5, read_timeout=1.0, health_timeout=0.5)
        with start_in_thread(ServeConfig(upstream=(hung.url,), connections=connections), port=0) as s:
            for body in ({"messages": MESSAGES}, {"messages": MESSAGES, "stream": True}):
                hung.aborted.clear()
                status, headers, data = chat_to(s, body)
                assert status == 504 and data["error"]["type"] == "upstream_timeout", data
                assert hung.aborted.wait(5)  # ttc closed the upstream connection
            text = get(s.root + "/metrics")[1].decode()
            assert 'ttc_serve_upstream_errors_total{cause="timeout",path="passthrough"}' in text
    finally:
        hung.close()


def test_a_full_passthrough_pool_is_a_503_with_retry_after_and_health_still_answers(faulty):
    hung = Hung()
    try:
        connections = Connections(passthrough_connections=1, pool_wait=0.3, health_timeout=0.5, shutdown_timeout=1)
        config = ServeConfig(upstream=(hung.url,), connections=connections, limits=Limits(retry_after=4))
        with start_in_thread(config, port=0) as s:
            holder = threading.Thread(target=lambda: _quietly(chat_to, s, {"messages": MESSAGES}), daemon=True)
            holder.start()
            assert hung.got.wait(10)
            status, headers, data = chat_to(s, {"messages": MESSAGES})
            assert status == 503 and headers["Retry-After"] == "4", data
            text = get(s.root + "/metrics")[1].decode()
            assert 'ttc_serve_upstream_connections_in_use{path="passthrough"} 1.0' in text
            assert 'cause="pool_exhausted"' in text
            assert get(s.root + "/health")[0] == 503  # answered at once, from the probe (hung: not ready)
            assert get(s.root + "/live")[0] == 200
    finally:
        hung.close()


def test_health_answers_from_the_probe_while_the_pool_is_full(faulty):
    """Review H2: /health shared the passthrough pool and said 503 under load."""
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), connections=Connections(passthrough_connections=1,
                                                                                     pool_wait=0.2)), port=0) as s:
        async def hold():  # the only passthrough slot, held for the whole check
            async with s.server.pool.slot():
                await asyncio.sleep(2)

        fut = asyncio.run_coroutine_threadsafe(hold(), s._loop)
        time.sleep(0.2)
        status, body = get(s.root + "/health")
        assert status == 200 and json.loads(body)["upstreams"] == [True]
        fut.result(10)


def test_a_request_body_that_never_arrives_is_a_408(faulty):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), connections=Connections(body_timeout=0.5)),
                         port=0) as s:
        host, port = s.root[len("http://"):].split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 100000\r\n\r\n{\"messages\"")
            sock.settimeout(20)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408")


def test_an_upstream_429_on_the_strategy_path_is_a_503_with_its_retry_after(keyed, faulty):
    """Review L2: a 502 after about 9 s of retries."""
    faulty.fault = "ratelimit"
    status, headers, data = chat_to(keyed, {"messages": MESSAGES, "ttc": {"n": 2}})
    assert status == 503 and headers["Retry-After"] == "7", data
    status, headers, data = chat_to(keyed, {"messages": MESSAGES})  # passthrough relays it
    assert status == 429 and headers["Retry-After"] == "7"


# -- L2: passthrough error bodies ---------------------------------------------------------------
@pytest.mark.parametrize("fault", ["html502", "truncated"])
def test_a_non_json_or_truncated_upstream_body_is_a_502_json_error(keyed, faulty, fault):
    faulty.fault = fault
    status, headers, data = chat_to(keyed, {"messages": MESSAGES})
    assert status == 502 and data["error"]["type"] == "upstream_error", data
    assert headers["Content-Type"].startswith("application/json") and data["request_id"] == headers["X-Request-Id"]


# -- M4: any upstream ---------------------------------------------------------------------------
def test_strategies_and_readiness_work_in_front_of_an_upstream_without_tokenize_or_health():
    with FakeOpenAI("openai") as plain, \
            start_in_thread(ServeConfig(upstream=(plain.url,), tokenizer=plain.tokenizer()), port=0) as s:
        assert get(s.root + "/health")[0] == 200  # reachability: /v1/models answers
        status, _, data = chat_to(s, {"messages": MESSAGES, "max_tokens": 32, "ttc": {"n": 3}})
        assert status == 200 and data["ttc"]["answer"] == "5", data


def test_live_contacts_nothing(faulty):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,)), port=0) as s:
        seen = len(faulty.requests)
        assert get(s.root + "/live") == (200, b'{"status": "alive"}')
        assert len(faulty.requests) == seen


# -- M5, L1: protocol details ---------------------------------------------------------------------
@pytest.mark.parametrize("options", [None, {"include_usage": False}, {"include_usage": True}])
def test_the_usage_chunk_comes_only_when_asked(keyed, options):
    body = {"messages": MESSAGES, "stream": True, "ttc": {"n": 2}, **({"stream_options": options} if options else {})}
    _, _, text = stream_body(keyed.url + "/chat/completions", body)
    chunks = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    empty = [c for c in chunks if c["choices"] == []]
    assert len(empty) == (1 if options and options["include_usage"] else 0)
    assert chunks[-1]["ttc"]["answer"] in ("5", "6")  # the ttc field always comes


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_deeply_nested_json_is_a_400(keyed, path):
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        status, _, data = post(keyed.url + path, raw)
        assert status == 400 and "nests too deeply" in data["error"]["message"], data


def test_every_answer_carries_a_request_id(keyed):
    status, headers, data = chat_to(keyed, {"messages": MESSAGES, "ttc": {"n": 0}})
    assert status == 400 and data["request_id"] == headers["X-Request-Id"]
    assert set(data["error"]) == {"message", "type", "param", "code"}
    status, headers, data = chat_to(keyed, {"messages": MESSAGES, "ttc": {"n": 2}}, {"X-Request-Id": "abc-123"})
    assert status == 200 and headers["X-Request-Id"] == "abc-123" and data["id"] == "chatcmpl-ttc-abc-123"


# -- M3: logs and metrics -----------------------------------------------------------------------
def test_one_json_access_line_per_request_and_errors_with_their_cause(keyed, faulty):
    keyed.log.truncate(0)
    keyed.log.seek(0)
    chat_to(keyed, {"messages": MESSAGES, "ttc": {"n": 2}}, {"X-Request-Id": "req-1"})
    chat_to(keyed, {"messages": MESSAGES}, {"X-Request-Id": "req-2"})
    faulty.fault = "html502"
    chat_to(keyed, {"messages": MESSAGES}, {"X-Request-Id": "req-3"})
    lines = [json.loads(line) for line in keyed.log.getvalue().splitlines()]
    access = {x["request_id"]: x for x in lines if x["message"] == "request"}
    assert set(access) == {"req-1", "req-2", "req-3"}
    one = access["req-1"]
    assert (one["method"], one["path"], one["status"], one["mode"], one["strategy"], one["n"]) == \
        ("POST", "/v1/chat/completions", 200, "strategy", "majority", 2)
    assert one["completion_tokens"] > 0 and one["latency_ms"] >= 0
    assert access["req-2"]["prompt_tokens"] > 0 and access["req-3"]["status"] == 502
    error = next(x for x in lines if x["message"] == "bad upstream response")
    assert error["request_id"] == "req-3" and error["upstream"] == faulty.url and "not JSON" in error["cause"]
    text = get(keyed.root + "/metrics")[1].decode()
    assert 'ttc_serve_upstream_errors_total{cause="http_5xx",path="passthrough"}' in text
    assert 'ttc_serve_upstream_waiting{path="passthrough"} 0.0' in text


# -- L3: graceful shutdown ----------------------------------------------------------------------
def test_sigterm_with_a_request_in_flight_exits_within_the_shutdown_timeout_and_aborts_it():
    hung = Hung()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "ttc.cli", "serve", "--upstream", hung.url, "--port", str(port),
           "--shutdown-timeout", "2", "--health-timeout", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(root + "/live")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        client = threading.Thread(target=lambda: _quietly(chat_to, _Root(root), {"messages": MESSAGES}), daemon=True)
        client.start()
        assert hung.got.wait(20)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=2 + 15)  # the shutdown timeout, and the interpreter's exit
        assert rc == 0
        assert hung.aborted.wait(5)  # the in-flight request was cancelled upstream
        assert b"shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        hung.close()


class _Root:
    def __init__(self, root: str):
        self.url = root + "/v1"


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception:  # the server went away: expected here
        pass


def test_the_probes_also_answer_on_a_port_of_their_own(faulty):
    faulty.fault = None
    with start_in_thread(ServeConfig(upstream=(faulty.url,), health_port=0, api_key="k"), port=0) as s:
        probes = f"http://127.0.0.1:{s.server.probes.port}"
        status, body = get(probes + "/health")
        assert status == 200 and json.loads(body)["upstreams"] == [True]
        assert get(probes + "/live")[0] == 200
        assert get(probes + "/metrics")[0] == 404  # probes only
    assert not s.server.probes.thread.is_alive()
