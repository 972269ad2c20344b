"""The wire format's pure functions on the documented OpenAI formats ttc supports (no HTTP): legacy
completions logprobs with token strings, chat logprobs, null message content, stream chunks, error
bodies, and the rewriting of refused requests (OpenAI's strict field check, its 5 top logprobs)."""

import pytest

from ttc.backends.openai.adapting import adapt_rejected, adapt_rejected_stream
from ttc.backends.openai.features import ServerFeatures
from ttc.backends.openai.http_errors import error_message, retry_after
from ttc.backends.openai.payloads import chat_payload, completion_payload
from ttc.backends.openai.prompts import ChatMessages
from ttc.backends.openai.responses import parse_chat, parse_completions, stream_delta
from ttc.backends.openai.usage import generation, rejected_usage, split_completion_tokens
from ttc.errors import GenerationError, InvalidInput, MalformedResponse
from ttc.types import Completion, SamplingParams

LOGPROBS = SamplingParams(n=1, temperature=0.0, max_tokens=2, logprobs=True, top_logprobs=2)

#: OpenAI's legacy /v1/completions answer with `logprobs: 2` (token strings, no ids)
OPENAI_COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": " Paris.", "index": 0, "finish_reason": "stop",
                 "logprobs": {"tokens": [" Paris", "."], "token_logprobs": [-0.1, -0.5],
                              "top_logprobs": [{" Paris": -0.1, " Lyon": -3.0}, {".": -0.5, ",": -1.2}],
                              "text_offset": [24, 30]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}

#: OpenAI's /v1/chat/completions answer with `logprobs: true, top_logprobs: 2`
OPENAI_CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "5", "refusal": None},
                 "logprobs": {"content": [{"token": "5", "logprob": -0.01, "bytes": [53],
                                           "top_logprobs": [{"token": "5", "logprob": -0.01, "bytes": [53]},
                                                            {"token": "6", "logprob": -4.6, "bytes": [54]}]}],
                              "refusal": None}}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 1, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 0}}}


def test_legacy_completion_logprobs_keep_token_strings_and_ask_for_ids():
    parsed = parse_completions(OPENAI_COMPLETION, LOGPROBS, ServerFeatures(), extensions=False)
    [c] = parsed.completions
    assert c.text == " Paris." and c.logprobs == (-0.1, -0.5) and c.finish_reason == "stop"
    assert c.top_logprobs == ({" Paris": -0.1, " Lyon": -3.0}, {".": -0.5, ",": -1.2})  # keyed by text: no ids
    assert c.token_ids == () and parsed.needs_ids == (0,)  # no ids sent, no local tokenizer: /tokenize is asked
    assert c.eos is None  # no stop_reason, no tokenizer, stop strings not kept: cannot tell
    assert parsed.updates == {"logprobs": True}


def test_ids_the_server_did_not_send_come_from_the_given_encoder():
    parsed = parse_completions(OPENAI_COMPLETION, LOGPROBS, ServerFeatures(), extensions=True,
                               encode=lambda text: [7, 8], eos_ids=lambda: frozenset({8}))
    [c] = parsed.completions
    assert c.token_ids == (7, 8) and parsed.needs_ids == ()
    assert c.eos is True  # the local tokenizer's EOS id ends the ids
    assert parsed.updates == {"logprobs": True, "token_ids": False}  # return_token_ids asked for, not sent


def test_chat_logprobs_and_usage():
    parsed = parse_chat(OPENAI_CHAT, LOGPROBS, ServerFeatures(), extensions=False)
    [c] = parsed.completions
    assert c.text == "5" and c.logprobs == (-0.01,) and c.top_logprobs == ({"5": -0.01, "6": -4.6},)
    assert c.token_ids == ()  # no ids, no local tokenizer (chat never asks /tokenize)
    gen = generation(OPENAI_CHAT, parsed.completions, ChatMessages([{"role": "user", "content": "2+3?"}]))
    assert (gen.prompt_tokens, gen.completion_tokens, gen.estimated) == (14, (1,), False)


def test_null_content_is_an_empty_reply_and_a_missing_message_is_malformed():
    tool_call = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                                                                                     "content": None}}]}
    [c] = parse_chat(tool_call, SamplingParams(), ServerFeatures(), extensions=False).completions
    assert (c.text, c.finish_reason, c.eos) == ("", "tool_calls", False)
    with pytest.raises(MalformedResponse, match="no message content"):
        parse_chat({"choices": [{"index": 0}]}, SamplingParams(), ServerFeatures(), extensions=False)


def test_missing_logprobs_turn_the_feature_off_unless_the_server_has_shown_them():
    no_lp = {"choices": [{"index": 0, "text": "x", "finish_reason": "length", "logprobs": None}]}
    parsed = parse_completions(no_lp, LOGPROBS, ServerFeatures(), extensions=False, encode=lambda t: [1])
    assert parsed.updates == {"logprobs": False} and parsed.completions[0].logprobs is None
    with pytest.raises(MalformedResponse, match="logprobs were asked for") as caught:
        parse_completions(no_lp, LOGPROBS, ServerFeatures(logprobs=True), extensions=False)
    assert caught.value.feature_updates == {}


def test_the_features_given_are_not_changed():
    features = ServerFeatures()
    parse_completions(OPENAI_COMPLETION, LOGPROBS, features, extensions=True)
    assert features == ServerFeatures()


def test_choices_are_read_in_index_order_and_a_wrong_count_is_malformed():
    two = {"choices": [{"index": 1, "text": "b", "finish_reason": "length"},
                       {"index": 0, "text": "a", "finish_reason": "abort"}]}
    parsed = parse_completions(two, SamplingParams(n=2), ServerFeatures(), extensions=False,
                               encode=lambda text: [ord(ch) for ch in text])
    assert [(c.text, c.finish_reason) for c in parsed.completions] == [("a", "cancelled"), ("b", "length")]
    with pytest.raises(MalformedResponse, match="asked for 3 completions, the server returned 2"):
        parse_completions(two, SamplingParams(n=3), ServerFeatures(), extensions=False)


def test_stream_chunks():
    params, features = SamplingParams(), ServerFeatures()
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    assert stream_delta(role, params, features, chat=True) is None
    assert stream_delta({"choices": [], "usage": {"prompt_tokens": 3}}, params, features, chat=True) is None
    last = {"choices": [{"index": 0, "delta": {"content": "5"}, "finish_reason": "stop"}]}
    assert stream_delta(last, params, features, chat=True).finish_reason == "stop"
    with pytest.raises(GenerationError, match="failed mid-stream: overloaded"):
        stream_delta({"error": {"message": "overloaded"}}, params, features, chat=False)


@pytest.mark.parametrize("body, message", [
    (b'{"error": {"message": "Invalid n", "type": "invalid_request_error", "param": "n", "code": null}}',
     "Invalid n"),  # OpenAI
    (b'{"object": "error", "message": "max_tokens too large", "type": "BadRequestError", "code": 400}',
     "max_tokens too large"),  # vLLM
    (b'{"detail": "Not Found"}', "Not Found"),  # FastAPI
    (b"", "(empty body)"),
])
def test_error_messages(body, message):
    assert error_message(body) == message


def test_retry_after_header():
    assert retry_after("2") == 2.0 and retry_after("soon") is None and retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def test_openai_strict_fields_drop_vllm_extensions():
    body = completion_payload("m", "Hi", LOGPROBS, ServerFeatures(), extensions=True, stream=False)
    assert body["return_token_ids"] and body["return_tokens_as_token_ids"]
    adapted = adapt_rejected(body, "Unrecognized request argument supplied: return_token_ids", ServerFeatures())
    assert "return_token_ids" not in adapted.payload and "return_tokens_as_token_ids" not in adapted.payload
    assert adapted.updates == {"token_ids": False} and adapted.extensions is False


def test_too_many_top_logprobs_go_down_to_five_then_logprobs_go():
    body = chat_payload("m", [{"role": "user", "content": "Hi"}], LOGPROBS.replace(top_logprobs=20),
                        ServerFeatures(), extensions=False, stream=False)
    adapted = adapt_rejected(body, "top_logprobs must be at most 5", ServerFeatures())
    assert adapted.payload["top_logprobs"] == 5 and adapted.updates == {"max_top_logprobs": 5}
    adapted = adapt_rejected(adapted.payload, "logprobs are not supported", ServerFeatures())
    assert "logprobs" not in adapted.payload and adapted.updates == {"logprobs": False}
    assert adapt_rejected(body, "logprobs are not supported", ServerFeatures(logprobs=True)) is None
    assert adapt_rejected(body, "max_tokens is too large", ServerFeatures()) is None


def test_a_refused_stream_drops_stream_options():
    body = completion_payload("m", "Hi", SamplingParams(), ServerFeatures(), extensions=False, stream=True)
    adapted = adapt_rejected_stream(body, "Unrecognized argument: stream_options", extensions=False)
    assert "stream_options" not in adapted.payload and adapted.updates == {"stream_usage": False}
    body = completion_payload("m", "Hi", SamplingParams(), ServerFeatures(stream_usage=False), extensions=False,
                              stream=True)
    assert body["stream"] is True and "stream_options" not in body


def test_payloads_ask_only_for_what_the_server_has():
    features = ServerFeatures(logprobs=True, max_top_logprobs=5)
    body = completion_payload("m", [1, 2], LOGPROBS.replace(top_logprobs=20, stop=("\n",), seed=3), features,
                              extensions=False, stream=False)
    assert body == {"model": "m", "prompt": [1, 2], "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 2,
                    "stop": ["\n"], "seed": 3, "logprobs": 5}
    assert "logprobs" not in completion_payload("m", "Hi", LOGPROBS, ServerFeatures(logprobs=False),
                                                extensions=False, stream=False)
    body = chat_payload("m", [{"role": "assistant", "content": "So"}], SamplingParams(), ServerFeatures(),
                        extensions=False, stream=False, continue_final=True)
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


@pytest.mark.parametrize("prompt", ["", [], [1, -2], [1.5]])
def test_bad_prompts_are_refused_before_sending(prompt):
    with pytest.raises(InvalidInput):
        completion_payload("m", prompt, SamplingParams(), ServerFeatures(), extensions=False, stream=False)


def test_usage_without_a_usage_object_is_estimated_and_split_exactly():
    no_usage = {"choices": [{"index": 0, "text": "abcdefgh", "finish_reason": "length"}]}
    [c] = parse_completions(no_usage, SamplingParams(), ServerFeatures(), extensions=False).completions
    gen = generation(no_usage, [c], "a prompt of 22 letters")
    assert gen.estimated and gen.prompt_tokens == 6 and gen.completion_tokens == (2,)
    spent = rejected_usage(no_usage, [1, 2, 3])
    assert (spent.prompt_tokens, spent.completion_tokens, spent.estimated) == (3, 2, True)
    three = [Completion("a", (1,), "stop"), Completion("bb", (1, 2), "stop"), Completion("c", (3,), "stop")]
    assert split_completion_tokens(three, 4) == (1, 2, 1)
    assert sum(split_completion_tokens(three, 7)) == 7
