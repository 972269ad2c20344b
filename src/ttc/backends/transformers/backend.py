"""In-process Hugging Face transformers backend with its own batched sampler.

Why not `model.generate`: with `num_return_sequences=n` it prefills the prompt n times, and it
cannot merge the concurrent requests of many strategies into one batch. Here a background
worker thread collects whatever requests are pending, prefills each *distinct* prompt once
(left-padded), replicates its KV cache for the n candidates, and decodes all sequences of the
batch together, dropping each sequence from the batch as soon as it finishes; with
`join_running = True` (opt-in), requests that arrive meanwhile are prefilled and join the batch at
its next step (the KV of both is left-padded to one width, see `prefix_cache.concat_caches`). A prompt that
extends one seen before (a step search's next step) is prefilled only past its longest prefix
held in the prefix cache (`ttc.backends.transformers.prefix_cache`: KV of earlier prompts and finished
candidates, by token ids, within a byte budget).

Sampling follows vLLM's conventions: temperature 0 is greedy, top-p filtering, per-request seeds
(a seeded request gives the same completions whatever else shares its batch), stop strings cut
from the text, EOS and the token completing a stop string kept in `token_ids`, logprobs from the
raw logits (before temperature and top-p). A request is answered as soon as its own candidates
finish, and `stream` delivers tokens as they are decoded; closing a stream drops its sequence
from the batch at the next step, so cancelled work stops costing compute.

On CUDA the decode steps run on a static KV cache replayed as CUDA graphs
(`ttc.backends.transformers.static_decode`): same prefill, same sampling, one graph launch per step instead of
hundreds of kernel launches; there, finished rows leave the batch when half of its bucket is done.
The prefix cache serves both paths: prefill (where cached prefixes are reused) is the same, and a
finished candidate's KV is copied out of the static cache as out of the dynamic one.

Why not transformers' own continuous batching (`generate_batch`, `init_continuous_batching`,
transformers 5.19; measured in benchmarks/continuous_batching.py, docs/performance.md): it runs on
the CPU, but it does not meet what ttc's strategies need. Its sampler draws from one RNG per
manager (`torch.multinomial` over the batch), so a request's samples change with whatever shares
its batch (seen: the same seeded request alone and beside 3 others gave different tokens); n,
temperature-0 greedy and do_sample are per manager, not per request; its logprobs are the chosen
token's after temperature and top-p, with no top logprobs; it has no stop strings (an adapter must
stream and cancel) and no hidden states. On the workloads where an adapter can run it (sampling
and step searches, seeds ignored) it generated fewer tokens per CPU second than this loop on the
CPU (0.44-0.46x for MajorityVote(16), 0.64-0.77x for beam search and particle filtering; table in
docs/performance.md). So the own loop stays; CB would be worth another look as a
mode for unseeded sampling on a GPU with flash attention, which this CPU cannot measure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import torch

from ttc.backends.base import HIDDEN_STATES, PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator
from ttc.backends.thinking_split import MarkerSplitter, hf_splitter
from ttc.backends.threads import Threads, resolve_threads
from ttc.backends.transformers import loading
from ttc.backends.transformers.decoding import BatchDecoder
from ttc.backends.transformers.hidden import last_layer_states
from ttc.backends.transformers.prefix_cache import PrefixCache, supports
from ttc.backends.transformers.records import Job, Request, TransformersStats
from ttc.backends.transformers.scheduler import Scheduler
from ttc.backends.transformers.tokens import Tokens
from ttc.errors import InvalidInput, Unsupported, check_positive
from ttc.models import SMOLLM2_NAME, check_hub_model, resolve_model
from ttc.thinking import ThinkingFormat, resolve_format
from ttc.types import Completion, Prompt, SamplingParams

__all__ = ["PREFIX_CACHE_BYTES", "Transformers", "TransformersStats"]

#: default memory budget of the prefix cache (KV of prompts and finished candidates), in bytes
PREFIX_CACHE_BYTES = 1 << 29


class Transformers(Generator):
    """Generate with a Hugging Face causal LM in this process, batching concurrent requests.

        llm = ttc.backends.Transformers()                 # the embedded SmolLM2-135M-Instruct
        llm = ttc.backends.Transformers("path/to/model", device="cuda", max_batch_size=128)

    `model`: None/"smollm2" for the embedded model, a local folder, or a hub id (needs a local
    hub cache offline). `device`: "auto" = CUDA when available, else CPU. `dtype`: default
    float32 on CPU, bfloat16 (float16 without bf16 support) on CUDA. `max_batch_size`: most
    sequences decoded together; a request with more candidates is split over several batches.
    `batch_window`: seconds the worker waits after a request arrives at an idle backend, so
    that requests issued together (asyncio.gather) share a batch. `max_model_len` overrides
    the context length read from the config. `num_threads` sets torch's CPU threads, process-wide,
    on a CPU device: "auto" (default) = `OMP_NUM_THREADS` if set, else half the physical cores
    (torch's own default of one per core collapses when other processes compete for the CPU;
    see `ttc.backends.threads`), "torch" = leave torch's setting, or a count. `decode`: "auto" = a
    static KV cache replayed as CUDA graphs on CUDA (`ttc.backends.transformers.static_decode`), the
    dynamic cache elsewhere; "static" forces the static cache (CUDA
    graphs only on CUDA), "dynamic" the dynamic cache. `prefix_cache_bytes`: memory budget of
    the prefix cache (`ttc.backends.transformers.prefix_cache`, either decode path): a prompt extending one
    seen before (a step search's next step) reuses its KV instead of prefilling it again; 0
    turns it off. `thinking`: the model's thinking format (a name of `ttc.thinking.FORMATS` or a
    `ThinkingFormat`); default None = what the model's folder declares in `ttc_thinking.json`, else
    no thinking (never guessed from the text); False = no thinking. With a format, completions are
    split at the marker tokens (`Completion.thinking`; docs/reasoning.md). Other keyword arguments
    go to `from_pretrained`.

    Sampling fields: n, temperature, top_p, max_tokens, stop, seed, logprobs and top_logprobs, and
    the reasoning fields `top_k`, `min_p`, `repetition_penalty`, `presence_penalty`,
    `frequency_penalty` (vLLM's definitions, `ttc.backends.transformers.sampling`);
    `chat_template_kwargs` go to the chat template. `extra` (engine-specific fields) has no place
    here: a request with it is refused (`ttc.Unsupported`).
    """

    capabilities = frozenset({TOKEN_IDS, HIDDEN_STATES, STREAM})
    _load = staticmethod(loading.load)  # (model, tokenizer) of a path; tests replace it
    _splitter: MarkerSplitter | None = None  # splits completions at the thinking markers (`thinking=`)

    def __init__(self, model: str | None = None, device: str = "auto", dtype: Any = None,
                 max_batch_size: int = 64, *, batch_window: float = 0.02,
                 max_model_len: int | None = None, num_threads: Threads | None = "auto",
                 trust_remote_code: bool = False, decode: str = "auto",
                 prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
                 thinking: str | ThinkingFormat | bool | None = None, **model_kwargs: Any):
        path = resolve_model(model)
        if "local_files_only" not in model_kwargs:
            check_hub_model(path)  # offline, a hub id fails now instead of after the loaders' retries
        torch_device = loading.as_device(device)
        threads = resolve_threads(num_threads)
        if threads is not None and torch_device.type == "cpu":
            torch.set_num_threads(threads)
        torch_dtype = loading.as_dtype(dtype, torch_device)
        hf_model, tokenizer = self._load(path, torch_dtype, trust_remote_code, model_kwargs)
        hf_model.to(torch_device)
        name = model if model is not None else SMOLLM2_NAME
        self._setup(hf_model, tokenizer, name, max_batch_size, batch_window, max_model_len, decode)
        self._setup_caches(prefix_cache_bytes)
        self._setup_thinking(resolve_format(thinking, path))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str | None = None, max_batch_size: int = 64,
                   batch_window: float = 0.02, max_model_len: int | None = None,
                   decode: str = "auto", prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
                   thinking: str | ThinkingFormat | bool | None = None) -> Transformers:
        """Wrap an already-loaded model and tokenizer (kept on the model's device and dtype);
        `thinking` as for the constructor (the default reads the folder the model was loaded from)."""
        self = cls.__new__(cls)
        folder = getattr(model.config, "_name_or_path", None)
        name = name or folder or type(model).__name__
        self._setup(model, tokenizer, name, max_batch_size, batch_window, max_model_len, decode)
        self._setup_caches(prefix_cache_bytes)
        self._setup_thinking(resolve_format(thinking, folder))
        return self

    def _setup_thinking(self, fmt: ThinkingFormat | None) -> None:
        """The thinking format and its marker ids (each must be one token: else InvalidInput now)."""
        self.thinking = fmt
        self._splitter = hf_splitter(fmt, self.tokenizer, f"Transformers({self._name!r})")

    def _setup(self, model: Any, tokenizer: Any, name: str, max_batch_size: int, batch_window: float,
               max_model_len: int | None, decode: str = "auto") -> None:
        check_positive("max_batch_size", max_batch_size)
        if decode not in ("auto", "static", "dynamic"):
            raise InvalidInput(f"decode must be 'auto', 'static' or 'dynamic', got {decode!r}")
        if batch_window < 0:
            raise InvalidInput(f"batch_window must be >= 0, got {batch_window!r}")
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._name = str(name)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_model_len = int(max_model_len or getattr(config, "max_position_embeddings", None)
                                 or min(tokenizer.model_max_length, 1 << 20))
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.eos_token_ids = loading.eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.eos_token_ids), 0)
        self._tokens = Tokens(tokenizer, self.vocab_size, self.max_model_len, self._name)
        self._seed_source = random.SystemRandom()
        self._decoder = BatchDecoder(model, self._tokens.decode, self.eos_token_ids, int(pad),
                                     self._static_decoder(model, name, decode, max_batch_size))
        self._scheduler = Scheduler(self._decoder.decode_batch, max_batch_size, batch_window)

    def _static_decoder(self, model: Any, name: str, decode: str, max_batch_size: int) -> Any:
        """The static-cache decoder where `decode` asks for it and the model supports it, else None."""
        if not (decode == "static" or (decode == "auto" and self.device.type == "cuda")):
            return None
        from ttc.backends.transformers.static_decode import StaticDecoder, unsupported_reason

        reason = unsupported_reason(model)
        if reason is None:
            return StaticDecoder(model, max_batch_size, graphs=self.device.type == "cuda")
        if decode == "static":
            raise InvalidInput(f"decode='static' is not available for {name!r}: {reason}")
        return None

    def _setup_caches(self, budget: int) -> None:
        """A prefix cache of `budget` bytes (0 = none; see prefix_cache.py)."""
        # requests join a running batch where its KV can be cut and padded by position
        self._decoder.joinable = supports(self.model) is None
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise InvalidInput(f"prefix_cache_bytes must be an integer >= 0, got {budget!r}")
        if budget and supports(self.model) is None:
            self._decoder.prefix_cache = PrefixCache(budget)
            self.capabilities = type(self).capabilities | {PREFIX_CACHING}

    # -- state of the parts, as attributes of the backend ------------------------------------
    @property
    def stats(self) -> TransformersStats:
        """What the model computed since construction or the last `reset_stats`."""
        return self._decoder.stats

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The prefix cache (None when off or unsupported by the model)."""
        return self._decoder.prefix_cache

    @property
    def join_running(self) -> bool:
        """True: requests that arrive while a batch decodes join it at its next step (dynamic cache
        only). False (default): they wait for the batch to end (docs/performance.md)."""
        return self._decoder.join_running

    @join_running.setter
    def join_running(self, value: bool) -> None:
        self._decoder.join_running = value

    @property
    def max_batch_size(self) -> int:
        return self._scheduler.max_batch_size

    @property
    def batch_window(self) -> float:
        return self._scheduler.batch_window

    @property
    def _static(self) -> Any:
        """The static-cache decoder (`static_decode.StaticDecoder`) or None; for tests and benchmarks."""
        return self._decoder.static

    def _prefill(self, distinct: list[tuple[int, ...]]) -> tuple[torch.Tensor, Any, torch.Tensor, int, list[int]]:
        """`BatchDecoder.prefill`, reached by tests of the prefix cache."""
        return self._decoder.prefill(distinct)

    # -- Generator API ----------------------------------------------------------------------
    @property
    def decode_mode(self) -> str:
        """"dynamic", "static" or "static+cuda-graphs": how decode steps run (see `decode`)."""
        if self._static is None:
            return "dynamic"
        return "static+cuda-graphs" if self._static.graphs else "static"

    @property
    def model_name(self) -> str:
        return self._name

    def tokens_generated(self) -> int:
        """Tokens sampled so far (all requests, counted at every decode step)."""
        return self._decoder.decoded

    def reset_stats(self) -> TransformersStats:
        """Start counting afresh; returns the counters up to now."""
        old, self._decoder.stats = self._decoder.stats, TransformersStats()
        return old

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, with the tokenizer's special tokens as vLLM adds them to prompts."""
        if not isinstance(text, str):
            raise InvalidInput(f"tokenize() takes a string, got {type(text).__name__}")
        return self._tokens.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids as completions show it (special tokens skipped)."""
        return self._tokens.decode(token_ids)

    async def chat_prompt(self, messages: Sequence[dict[str, str]], *,
                          chat_template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        """Token ids of the chat template applied to `messages`, ending with the assistant's header;
        `chat_template_kwargs` (e.g. {"enable_thinking": False}) go to the template."""
        return self._tokens.chat_prompt(messages, chat_template_kwargs)

    def _request(self, prompt: Prompt, params: SamplingParams, stream: bool) -> Request:
        if not isinstance(params, SamplingParams):
            raise InvalidInput(f"params must be ttc.SamplingParams, got {type(params).__name__}")
        if params.extra:
            raise Unsupported(f"SamplingParams.extra ({sorted(params.extra)}) is not supported by the Transformers "
                              f"backend: it passes engine-specific fields to a server or vLLM, and this backend's "
                              f"sampler has no such fields; use the SamplingParams fields it maps")
        if self._splitter is not None:
            self._splitter.check_request(params)
        return Request.create(self._tokens.prompt_ids(prompt), params, self.max_model_len, self._seed_source,
                              stream)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions; concurrent calls are merged into shared batches."""
        request = self._request(prompt, params, stream=False)
        self._scheduler.submit(request)
        try:
            generation = await request.future
        except asyncio.CancelledError:
            request.cancelled.set()  # the worker drops its sequences at the next step
            raise
        if self._splitter is None:
            return generation
        completions = [self._splitter.split(c, request.prompt, params) for c in generation.completions]
        return dataclasses.replace(generation, completions=completions)

    def split_thinking(self, completion: Completion, prompt: Prompt, params: SamplingParams) -> Completion:
        """A stream's completion split at the thinking markers, as `generate` splits it."""
        if self._splitter is None or completion.thinking is not None:
            return completion
        return self._splitter.split(completion, self._tokens.prompt_ids(prompt), params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion token by token; closing the iterator stops its decoding.

        Text that could still turn out to be the start of a stop string is held back, so the
        deltas' texts add up to exactly the text `generate` returns for the same seed.
        """
        if isinstance(params, SamplingParams) and params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        request = self._request(prompt, params, stream=True)
        self._scheduler.submit(request)
        try:
            while True:
                item = await request.deltas.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            request.cancelled.set()

    async def hidden_states(self, token_ids: Sequence[int], positions: Sequence[int]):
        """Last-layer hidden states at `positions` of `token_ids`, shape (len(positions), hidden)."""
        import numpy as np

        ids = self._tokens.prompt_ids(list(token_ids))
        run = last_layer_states(self.model, ids, positions)
        loop = asyncio.get_running_loop()
        job = Job(run, loop, loop.create_future())
        self._scheduler.submit(job)
        return np.asarray(await job.future)

    async def aclose(self) -> None:
        """Stop the worker thread (pending requests fail); the model stays loaded. Idempotent."""
        thread = self._scheduler.shutdown()
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def close(self) -> None:
        """Synchronous `aclose`, for code without an event loop."""
        thread = self._scheduler.shutdown()
        if thread is not None:
            thread.join()

    async def __aenter__(self) -> Transformers:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
