"""A client for a running vLLM server, or any OpenAI-compatible completions endpoint.

Requests go to `/v1/completions` (text or token-id prompts, n, logprobs, stop, seed) with vLLM's
extra fields `return_token_ids` and `return_tokens_as_token_ids`, so completions carry the exact
token ids the server sampled and a continuation can be sent back as token ids without
re-tokenising. A server that rejects those fields (plain OpenAI) is retried once without them
and remembered. `chat_prompt` and `tokenize` use vLLM's `/tokenize` endpoint, which applies the
model's chat template on the server; `use_chat=True` (or `chat()`) sends chat requests to
`/v1/chat/completions` instead. Their answers are cached (`token_cache`): a text is sent to
`/tokenize` once, however many problems or runs ask for it.

Servers differ (see docs/backends.md), and what this one can do is detected, not assumed: each
feature is learnt from the first response that shows it, and `probe()` (which step searches
call through `detect_capabilities()`) asks the server once with tiny requests. Without
`/tokenize`, a local tokenizer of the served model (`tokenizer=`, or found offline from the
model name) applies the chat template and counts tokens; without one, chat prompts go to
`/v1/chat/completions` and step searches continue the assistant's message
(`continue_final_message`) where the server supports it. `n` is split into n single requests
(sample i seeded seed + i, vLLM's rule) on servers that ignore or reject it.

Robustness: a concurrency limit (per event loop), timeouts, retries with exponential backoff on
connection errors and 5xx/429 (never on other 4xx, which raise `RequestRejected` with the
server's message), several replicas (the least busy one gets each request; one that refuses
connections sits out a cool-down), streaming whose early close aborts the request on the server,
and clear errors: no server -> `BackendUnavailable`, unparseable answer -> `MalformedResponse`.

Layout: one module per job, behind the facade `client.OpenAICompatible`.

- `transport.py`: aiohttp sessions (one per event loop), replicas, retries, Retry-After,
  timeouts, SSE. It sends JSON and returns JSON, and knows nothing of completions.
- `features.py` (the `ServerFeatures` record) and `probe.py` (the capability probe that fills it;
  the reading of each probe answer is a pure function).
- The wire format, pure functions of dicts (no I/O, nothing shared is changed):
  `payloads.py` (request bodies built from `SamplingParams`, and how a refused body is rewritten),
  `responses.py` (`parse_completions` / `parse_chat` -> completions and feature updates;
  `stream_delta`), `usage.py` (what a request cost, reported or estimated).
- `tokenization.py`: `/tokenize` with its cache, the local tokenizer (transformers imported
  lazily, only to load one), chat templates. `prompts.py`: `ChatMessages`.
- `fanout.py` (n samples where a server ignores n) and `streaming.py` (reading one stream).

Why this split. The openai-python client keeps its transport in `_base_client.py` (one
`request` loop with retries, `_calculate_retry_timeout` reading Retry-After, `_streaming.py` for
SSE) and its resources (`resources/completions.py`) build a body and `_post` it: our
`transport.py` is that base client, without types per endpoint. LiteLLM puts each provider's
request and response mapping in each provider's `transformation.py` (under `llms`) (`transform_request`,
`transform_response`, `map_openai_params` on a `BaseConfig`) apart from the one HTTP handler
(`llms/custom_httpx/llm_http_handler.py`): that is the model for `payloads.py`/`responses.py`,
made plain functions so that they can be tested on recorded answers without HTTP
(tests/backends/openai/). vLLM's server splits the same way from the other side:
`entrypoints/openai/completion/protocol.py` declares the request and response models and
`serving.py` runs them. Unlike LiteLLM, the parsers do not write the features record: they
return updates the facade applies, so that per-request adaptation (issue 27) and features per
endpoint (issue 24) change one function each.
"""

from ttc.backends.openai.client import OpenAICompatible
from ttc.backends.openai.features import COARSE_BLOCK, ServerFeatures
from ttc.backends.openai.http_errors import HTTPStatusError, RequestRejected
from ttc.backends.openai.prompts import ChatMessages

__all__ = ["COARSE_BLOCK", "ChatMessages", "HTTPStatusError", "OpenAICompatible", "RequestRejected",
           "ServerFeatures"]
