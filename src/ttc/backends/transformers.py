"""In-process Hugging Face transformers backend with its own batched sampler.

Why not `model.generate`: with `num_return_sequences=n` it prefills the prompt n times, and it
cannot merge the concurrent requests of many strategies into one batch. Here a background
worker thread collects whatever requests are pending, prefills each *distinct* prompt once
(left-padded), replicates its KV cache for the n candidates, and decodes all sequences of the
batch together, dropping each sequence from the batch as soon as it finishes; with
`join_running = True` (opt-in), requests that arrive meanwhile are prefilled and join the batch at
its next step (the KV of both is left-padded to one width, see `prefix_cache.concat_caches`). A prompt that
extends one seen before (a step search's next step) is prefilled only past its longest prefix
held in the prefix cache (`ttc.backends.prefix_cache`: KV of earlier prompts and finished
candidates, by token ids, within a byte budget).

Sampling follows vLLM's conventions: temperature 0 is greedy, top-p filtering, per-request seeds
(a seeded request gives the same completions whatever else shares its batch), stop strings cut
from the text, EOS and the token completing a stop string kept in `token_ids`, logprobs from the
raw logits (before temperature and top-p). A request is answered as soon as its own candidates
finish, and `stream` delivers tokens as they are decoded; closing a stream drops its sequence
from the batch at the next step, so cancelled work stops costing compute.

On CUDA the decode steps run on a static KV cache replayed as CUDA graphs
(`ttc.backends.static_decode`): same prefill, same sampling, one graph launch per step instead of
hundreds of kernel launches; there, finished rows leave the batch when half of its bucket is done.
The prefix cache serves both paths: prefill (where cached prefixes are reused) is the same, and a
finished candidate's KV is copied out of the static cache as out of the dynamic one.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import operator
import os
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ttc.backends.base import HIDDEN_STATES, PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator
from ttc.backends.prefix_cache import PrefixCache, concat_caches, past_cache, row_kv
from ttc.backends.threads import Threads, resolve_threads
from ttc.errors import GenerationError, InvalidInput, ModelNotFound, check_positive
from ttc.models import SMOLLM2_NAME, check_hub_model, resolve_model
from ttc.types import Completion, Prompt, SamplingParams, Usage

__all__ = ["Transformers", "TransformersStats"]

_MASK64 = (1 << 64) - 1
#: default memory budget of the prefix cache (KV of prompts and finished candidates), in bytes
PREFIX_CACHE_BYTES = 1 << 29
#: texts of at most _SHORT_TEXT characters are tokenised once per backend (the last _SHORT_TEXTS of them)
_SHORT_TEXT, _SHORT_TEXTS = 64, 1024


@dataclass
class TransformersStats:
    """What the model actually computed, for tests and benchmarks.

    prefill_tokens counts real (unpadded) prompt tokens of distinct prompts run through the model:
    a request for n candidates adds its prompt once, and a prefix found in the prefix cache
    counts in cached_tokens instead. decode_rows counts sequences fed to decode steps, so
    finished sequences visibly stop costing anything (on the static-cache path they count as
    soon as they finish, though their rows keep computing until half of the bucket is done).
    """

    requests: int = 0
    sequences: int = 0
    batches: int = 0
    prefill_calls: int = 0
    prefill_tokens: int = 0
    cached_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    generated_tokens: int = 0
    joined: int = 0  # sequences that joined a batch already decoding
    model_seconds: float = 0.0  # forward passes and sampling (up to the sampled tokens on the host)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- requests and the worker's per-sequence state ----------------------------------------------
@dataclass(eq=False)
class _Request:
    """One `generate` (or `stream`) call as the worker sees it; may be split over several batches.

    A generate request is answered through `future`, a stream through `deltas` (Delta items,
    or an exception); both live on the caller's event loop `loop`.
    """

    prompt: tuple[int, ...]
    params: SamplingParams
    seeds: list[int]
    max_new: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None
    deltas: asyncio.Queue | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    results: list[Completion | None] = field(default_factory=list)
    next_index: int = 0      # first sample index not yet scheduled
    remaining: int = 0       # samples not yet finished
    started: bool = False
    prefilled: int = 0       # prompt tokens actually run through the model for this request
                             # (not those shared with another request or found in the prefix cache)

    def usage(self, completion_tokens: int) -> Usage:
        """This request's usage: the prompt once per sequence is processed; all but what this
        request itself prefilled came from the KV copy (cached)."""
        processed = len(self.prompt) * self.params.n
        return Usage(prompt_tokens=len(self.prompt), processed_prompt_tokens=processed,
                     cached_prompt_tokens=max(0, processed - self.prefilled),
                     completion_tokens=completion_tokens, generator_calls=1)

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set() or (self.future is not None and self.future.cancelled())

    def deliver(self, result: Any = None, error: BaseException | None = None) -> None:
        """Answer from the worker thread; a stream gets errors only (its last delta ends it)."""
        if self.deltas is None:
            _post(self.loop, self.future, result, error)
        elif error is not None:
            try:
                self.loop.call_soon_threadsafe(self.deltas.put_nowait, error)
            except RuntimeError:
                pass

    def send(self, delta: Delta) -> None:
        try:
            self.loop.call_soon_threadsafe(self.deltas.put_nowait, delta)
        except RuntimeError:  # the consumer's loop is gone
            self.cancelled.set()


@dataclass(eq=False)
class _Job:
    """A function to run on the model thread (hidden-state passes), serialised with batches."""

    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


_CLOSE = object()


@dataclass(eq=False)
class _Seq:
    """Decoding state of one candidate."""

    request: _Request
    index: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top: list[dict[int, float]] = field(default_factory=list)
    text: str = ""            # incrementally detokenised text (kept for stop strings and streams)
    prefix_offset: int = 0
    read_offset: int = 0
    stop_at: int | None = None
    finish_reason: str | None = None
    sent_tokens: int = 0      # streams: tokens and characters already delivered
    sent_chars: int = 0


def _mix_seed(seed: int, index: int) -> int:
    """splitmix64 of (seed, sample index): independent streams for the n samples of one seed."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def _resolve_future(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _post(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: Any = None,
          error: BaseException | None = None) -> None:
    """Resolve a future from the worker thread on the loop that owns it (which may be gone)."""
    try:
        loop.call_soon_threadsafe(_resolve_future, future, result, error)
    except RuntimeError:  # that event loop is closed: nobody is waiting any more
        pass


def _as_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype):
        return getattr(torch, dtype)
    raise InvalidInput(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or a torch.dtype")


def _as_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInput(f"unknown device {device!r}: {exc}") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} asked for, but this torch sees no CUDA GPU")
    return torch_device


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
    static KV cache replayed as CUDA graphs on CUDA (`ttc.backends.static_decode`), the dynamic
    cache elsewhere; "static" forces the static cache (CUDA
    graphs only on CUDA), "dynamic" the dynamic cache. `prefix_cache_bytes`: memory budget of
    the prefix cache (`ttc.backends.prefix_cache`, either decode path): a prompt extending one
    seen before (a step search's next step) reuses its KV instead of prefilling it again; 0
    turns it off. Other keyword arguments go to `from_pretrained`.
    """

    capabilities = frozenset({TOKEN_IDS, HIDDEN_STATES, STREAM})

    def __init__(self, model: str | None = None, device: str = "auto", dtype: Any = None,
                 max_batch_size: int = 64, *, batch_window: float = 0.02,
                 max_model_len: int | None = None, num_threads: Threads | None = "auto",
                 trust_remote_code: bool = False, decode: str = "auto",
                 prefix_cache_bytes: int = PREFIX_CACHE_BYTES, **model_kwargs: Any):
        path = resolve_model(model)
        if "local_files_only" not in model_kwargs:
            check_hub_model(path)  # offline, a hub id fails now instead of after the loaders' retries
        torch_device = _as_device(device)
        threads = resolve_threads(num_threads)
        if threads is not None and torch_device.type == "cpu":
            torch.set_num_threads(threads)
        torch_dtype = _as_dtype(dtype, torch_device)
        try:
            hf_model, tokenizer = self._load(path, torch_dtype, trust_remote_code, model_kwargs)
        except (OSError, ValueError) as exc:
            if os.path.isdir(path):
                raise ModelNotFound(f"could not load the model folder {path!r}: {exc}") from exc
            raise ModelNotFound(
                f"could not load {path!r}: it is not a local folder, and as a hub id it needs the "
                f"Hugging Face hub (unreachable offline) or a local hub cache. Pass a model folder "
                f"instead (HF_HUB_OFFLINE=1 skips the network attempts). ({type(exc).__name__}: {exc})") from exc
        hf_model.to(torch_device)
        name = model if model is not None else SMOLLM2_NAME
        self._setup(hf_model, tokenizer, name, max_batch_size, batch_window, max_model_len, decode)
        self._setup_caches(prefix_cache_bytes)

    @staticmethod
    def _load(path: str, dtype: torch.dtype, trust_remote_code: bool, kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Load model and tokenizer; a hub id is looked up in the local hub cache before the network."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hub_keys = ("local_files_only", "revision", "cache_dir", "token", "subfolder")
        shared = {k: kwargs[k] for k in hub_keys if k in kwargs}

        def load(**extra: Any) -> tuple[Any, Any]:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **shared, **extra)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                         **kwargs, **extra)
            return model, tokenizer

        if os.path.isdir(path) or "local_files_only" in kwargs:
            return load()
        try:
            return load(local_files_only=True)  # offline, a cached hub model loads without network timeouts
        except (OSError, ValueError):
            return load()

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str | None = None, max_batch_size: int = 64,
                   batch_window: float = 0.02, max_model_len: int | None = None,
                   decode: str = "auto", prefix_cache_bytes: int = PREFIX_CACHE_BYTES) -> Transformers:
        """Wrap an already-loaded model and tokenizer (kept on the model's device and dtype)."""
        self = cls.__new__(cls)
        name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self._setup(model, tokenizer, name, max_batch_size, batch_window, max_model_len, decode)
        self._setup_caches(prefix_cache_bytes)
        return self

    def _setup_caches(self, budget: int) -> None:
        """A prefix cache of `budget` bytes (0 = none; see prefix_cache.py),
        and the token ids of short texts."""
        from ttc.backends.prefix_cache import supports

        self._short_ids: collections.OrderedDict[str, tuple[int, ...]] = collections.OrderedDict()
        # requests join a running batch where its KV can be cut and padded by position
        self._joinable = supports(self.model) is None

        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise InvalidInput(f"prefix_cache_bytes must be an integer >= 0, got {budget!r}")
        self.prefix_cache: PrefixCache | None = None
        if budget and supports(self.model) is None:
            self.prefix_cache = PrefixCache(budget)
            self.capabilities = type(self).capabilities | {PREFIX_CACHING}

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
        self.max_batch_size = max_batch_size
        self.batch_window = batch_window
        self._name = str(name)
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.max_model_len = int(max_model_len or getattr(config, "max_position_embeddings", None)
                                 or min(tokenizer.model_max_length, 1 << 20))
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        self.eos_token_ids = self._eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.eos_token_ids), 0)
        self._pad_id = int(pad)
        forward_params = inspect.signature(model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward_params
        self._pass_cache_position = "cache_position" in forward_params  # transformers 4.x
        self.stats = TransformersStats()
        self._decoded = 0  # tokens sampled since construction (not reset with stats), for progress
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # fast tokenizers are not safe to use from two threads at once ("Already borrowed")
        self._tokenizer_lock = threading.Lock()
        self._closed = False
        self._seed_source = random.SystemRandom()
        #: True: requests that arrive while a batch decodes join it at its next step (continuous
        #: batching; dynamic cache only). False (default): they wait for the batch to end. Opt-in
        #: because no gain was measured yet (docs/performance.md, "Requests joining a running batch").
        self.join_running = False
        self._pending: collections.deque[_Request] = collections.deque()
        self._closing = False
        self._joinable = False
        self._static = None
        if decode == "static" or (decode == "auto" and self.device.type == "cuda"):
            from ttc.backends.static_decode import StaticDecoder, unsupported_reason

            reason = unsupported_reason(model)
            if reason is None:
                self._static = StaticDecoder(model, max_batch_size, graphs=self.device.type == "cuda")
            elif decode == "static":
                raise InvalidInput(f"decode='static' is not available for {name!r}: {reason}")

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
        ids: set[int] = set()
        config = getattr(model, "generation_config", None)
        for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
            if source is None:
                continue
            ids.update([source] if isinstance(source, int) else source)
        return frozenset(int(i) for i in ids)

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
        return self._decoded

    def reset_stats(self) -> TransformersStats:
        """Start counting afresh; returns the counters up to now."""
        old, self.stats = self.stats, TransformersStats()
        return old

    def _encode(self, text: str) -> list[int]:
        """Token ids of `text`; short strings (delimiters, suffixes a search asks for on every
        problem) are remembered, the LRU `_SHORT_TEXTS` of them."""
        short = len(text) <= _SHORT_TEXT
        with self._tokenizer_lock:
            cache = self._short_ids
            if short and text in cache:
                cache.move_to_end(text)
                return list(cache[text])
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
            if short:
                cache[text] = tuple(ids)
                if len(cache) > _SHORT_TEXTS:
                    cache.popitem(last=False)
            return ids

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, with the tokenizer's special tokens as vLLM adds them to prompts."""
        if not isinstance(text, str):
            raise InvalidInput(f"tokenize() takes a string, got {type(text).__name__}")
        return self._encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids as completions show it (special tokens skipped)."""
        with self._tokenizer_lock:
            return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    async def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the chat template applied to `messages`, ending with the assistant's header."""
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InvalidInput("chat_prompt needs a non-empty list of {'role': ..., 'content': ...} messages")
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(f"the tokenizer of {self.model_name!r} has no chat template; use a text prompt")
        with self._tokenizer_lock:
            out = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
        if not isinstance(out, (list, tuple)):  # BatchEncoding (transformers >= 5 returns a dict)
            out = out["input_ids"]
        return [int(t) for t in out]

    def _prompt_ids(self, prompt: Prompt) -> tuple[int, ...]:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidInput("empty prompt")
            ids = self._encode(prompt)
        else:
            try:
                ids = [operator.index(t) for t in prompt]
            except TypeError:
                raise InvalidInput("a prompt must be text or a sequence of integer token ids") from None
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidInput(f"token ids out of the vocabulary (size {self.vocab_size}): {bad[:5]}")
        if not ids:
            raise InvalidInput("empty prompt (no token ids)")
        if len(ids) >= self.max_model_len:
            raise InvalidInput(f"prompt of {len(ids)} tokens does not fit the context of {self.model_name!r} "
                               f"({self.max_model_len} tokens, at least one must be left to generate)")
        return tuple(ids)

    def _request(self, prompt: Prompt, params: SamplingParams, stream: bool) -> _Request:
        if not isinstance(params, SamplingParams):
            raise InvalidInput(f"params must be ttc.SamplingParams, got {type(params).__name__}")
        ids = self._prompt_ids(prompt)
        if params.seed is None:
            seeds = [self._seed_source.getrandbits(63) for _ in range(params.n)]
        else:
            seeds = [_mix_seed(params.seed, i) for i in range(params.n)]
        loop = asyncio.get_running_loop()
        return _Request(prompt=ids, params=params, seeds=seeds,
                        max_new=min(params.max_tokens, self.max_model_len - len(ids)), loop=loop,
                        future=None if stream else loop.create_future(),
                        deltas=asyncio.Queue() if stream else None,
                        results=[None] * params.n, remaining=params.n)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions; concurrent calls are merged into shared batches."""
        request = self._request(prompt, params, stream=False)
        self._submit(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            request.cancelled.set()  # the worker drops its sequences at the next step
            raise

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion token by token; closing the iterator stops its decoding.

        Text that could still turn out to be the start of a stop string is held back, so the
        deltas' texts add up to exactly the text `generate` returns for the same seed.
        """
        if isinstance(params, SamplingParams) and params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        request = self._request(prompt, params, stream=True)
        self._submit(request)
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

        ids = self._prompt_ids(list(token_ids))
        pos = [operator.index(p) for p in positions]
        if any(not 0 <= p < len(ids) for p in pos):
            raise InvalidInput(f"positions must lie in [0, {len(ids)}), got {pos}")

        def run() -> Any:
            out = self.model(input_ids=torch.tensor([ids], device=self.device), output_hidden_states=True,
                             use_cache=False)
            hidden = out.hidden_states[-1][0, pos]
            return hidden.float().cpu().numpy()

        loop = asyncio.get_running_loop()
        job = _Job(run, loop, loop.create_future())
        self._submit(job)
        return np.asarray(await job.future)

    async def aclose(self) -> None:
        """Stop the worker thread (pending requests fail); the model stays loaded. Idempotent."""
        thread = self._shutdown()
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def close(self) -> None:
        """Synchronous `aclose`, for code without an event loop."""
        thread = self._shutdown()
        if thread is not None:
            thread.join()

    async def __aenter__(self) -> Transformers:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- worker -----------------------------------------------------------------------------
    def _submit(self, item: _Request | _Job) -> None:
        with self._lock:
            if self._closed:
                raise GenerationError("this Transformers backend is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name="ttc-transformers", daemon=True)
                self._thread.start()
            self._queue.put(item)

    def _shutdown(self) -> threading.Thread | None:
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_CLOSE)
        return thread

    def _worker(self) -> None:
        pending: collections.deque[_Request] = collections.deque()
        self._pending = pending
        try:
            self._serve(pending)
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            with self._lock:
                self._closed = True
            self._fail_all(pending, GenerationError(f"the Transformers worker died: {type(exc).__name__}: {exc}"))
            raise
        self._fail_all(pending, GenerationError("the Transformers backend was closed before this request ran"))

    def _serve(self, pending: collections.deque[_Request]) -> None:
        self._closing = False
        while True:  # after a close, what was accepted before it still runs
            if not pending:
                if self._closing:
                    break
                item = self._queue.get()
                if item is _CLOSE:
                    break
                self._accept(item, pending)
                if self.batch_window > 0:
                    time.sleep(self.batch_window)  # let requests issued together arrive
            self._poll(pending)
            batch = self._take_batch(pending)
            if batch:
                self._run_batch(batch)

    def _poll(self, pending: collections.deque[_Request]) -> None:
        """Take everything waiting in the queue (without blocking); a close request is remembered."""
        while not self._closing:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _CLOSE:
                self._closing = True
                break
            self._accept(item, pending)

    def _fail_all(self, pending: collections.deque[_Request], error: GenerationError) -> None:
        for request in pending:
            request.deliver(error=error)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Request):
                item.deliver(error=error)
            elif isinstance(item, _Job):
                _post(item.loop, item.future, error=error)

    def _accept(self, item: _Request | _Job, pending: collections.deque) -> None:
        if isinstance(item, _Job):  # hidden-state passes run at once, between batches
            try:
                with torch.inference_mode():
                    result = item.fn()
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                _post(item.loop, item.future, error=GenerationError(f"hidden-state pass failed: {exc}"))
            else:
                _post(item.loop, item.future, result)
            return
        pending.append(item)

    def _take_batch(self, pending: collections.deque[_Request], room: int | None = None
                    ) -> list[tuple[_Request, range]]:
        """Whole requests first come first served, the last one possibly split, up to `room`
        sequences (default max_batch_size)."""
        batch: list[tuple[_Request, range]] = []
        room = self.max_batch_size if room is None else room
        while pending and room:
            request = pending[0]
            if request.is_cancelled():
                pending.popleft()
                continue
            take = min(room, request.params.n - request.next_index)
            batch.append((request, range(request.next_index, request.next_index + take)))
            request.next_index += take
            room -= take
            if request.next_index == request.params.n:
                pending.popleft()
        return batch

    def _run_batch(self, batch: list[tuple[_Request, range]]) -> None:
        try:
            with torch.inference_mode():
                self._decode_batch(batch)
        except Exception as exc:  # noqa: BLE001 - every unanswered request of the batch gets the error
            error = GenerationError(f"generation failed: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            for request, _ in batch:
                if request.remaining:
                    request.cancelled.set()
                    request.deliver(error=error)

    def _finish(self, seq: _Seq) -> None:
        """A candidate is done: stream its last delta, and answer its request once all are done."""
        request = seq.request
        completion = self._completion(seq)
        if request.deltas is not None:
            self._send(seq, completion)
        request.results[seq.index] = completion
        request.remaining -= 1
        if request.remaining == 0:
            u = request.usage(0)
            request.deliver(Generation(prompt_tokens=u.prompt_tokens, completions=list(request.results),
                                       processed_prompt_tokens=u.processed_prompt_tokens,
                                       cached_prompt_tokens=u.cached_prompt_tokens))

    def _send(self, seq: _Seq, final: Completion | None = None) -> None:
        """Deliver the tokens decoded since the last delta, holding back a possible stop string's start."""
        if final is not None:
            text = final.text[seq.sent_chars:]
        else:
            hold = max((len(stop) for stop in seq.request.params.stop), default=1) - 1
            text = seq.text[seq.sent_chars:max(seq.sent_chars, len(seq.text) - hold)]
        seq.sent_chars += len(text)
        tokens = tuple(seq.tokens[seq.sent_tokens:])
        logprobs = tuple(seq.logprobs[seq.sent_tokens:]) if seq.logprobs else None
        seq.sent_tokens = len(seq.tokens)
        seq.request.send(Delta(text=text, token_ids=tokens, logprobs=logprobs,
                               finish_reason=None if final is None else final.finish_reason,
                               usage=seq.request.usage(seq.sent_tokens)))

    # -- the model loop ---------------------------------------------------------------------
    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 cache: Any, past_length: int) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        if self._pass_cache_position:
            kwargs["cache_position"] = torch.arange(past_length, past_length + input_ids.shape[1],
                                                    device=self.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def _prepare(self, batch: list[tuple[_Request, range]]
                 ) -> tuple[list[_Seq], torch.Tensor, torch.Tensor, Any, torch.Tensor, int]:
        """Prefill the batch's distinct prompts (each once); its sequences, the prompt row of each,
        and the prompts' last logits, cache, mask and width."""
        device = self.device
        prompts: dict[tuple[int, ...], int] = {}
        owners: list[_Request] = []  # the request charged with each distinct prompt's prefill
        for request, _ in batch:
            if request.prompt not in prompts:  # a prompt shared by requests is prefilled once
                prompts[request.prompt] = len(prompts)
                owners.append(request)
            if not request.started:
                request.started = True
                self.stats.requests += 1
        distinct = list(prompts)
        logits, cache, mask, width, cached = self._prefill(distinct)
        for prompt, owner, reused in zip(distinct, owners, cached, strict=True):
            owner.prefilled += len(prompt) - reused  # the prefix cache's part counts as cached
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += sum(len(p) for p in distinct) - sum(cached)
        self.stats.cached_tokens += sum(cached)

        seqs: list[_Seq] = []
        rows: list[int] = []
        for request, indices in batch:
            for i in indices:
                greedy = request.params.temperature == 0
                gen = None
                if not greedy:
                    gen = torch.Generator(device=device)
                    gen.manual_seed(request.seeds[i])
                seqs.append(_Seq(request, i, gen))
                rows.append(prompts[request.prompt])
        self.stats.sequences += len(seqs)
        return seqs, torch.tensor(rows, dtype=torch.long, device=device), logits, cache, mask, width

    def _decode_batch(self, batch: list[tuple[_Request, range]]) -> None:
        device = self.device
        started = time.perf_counter()
        seqs, row_index, logits, cache, mask, width = self._prepare(batch)
        self.stats.batches += 1
        session = None
        longest = max(r.max_new for r, _ in batch)
        if self._static is not None and self._static.fits(width + longest):
            # the prompts' KV rows go into a fixed-shape cache, one per candidate
            session = self._static.start(cache, row_index, mask, width, longest)
            cache = None
        else:
            cache.batch_select_indices(row_index)  # one prompt's KV cache -> its n candidates
        mask = mask[row_index]
        logits = logits[row_index]
        next_position = mask.sum(-1, keepdim=True)
        # requests that arrive while this batch decodes join it at the next step (dynamic cache only)
        joining = session is None and self.join_running and self._joinable

        active = list(seqs)
        temps = torch.tensor([s.request.params.temperature for s in active], dtype=torch.float32, device=device)
        top_ps = torch.tensor([s.request.params.top_p for s in active], dtype=torch.float32, device=device)
        while True:
            tokens = self._sample(logits, active, temps, top_ps)  # waits for the device (.tolist())
            self.stats.model_seconds += time.perf_counter() - started  # counted before answers go out
            self.stats.generated_tokens += len(active)
            self._decoded += len(active)
            keep = []
            for j, seq in enumerate(active):
                if seq.request.cancelled.is_set():
                    continue  # nobody is waiting: drop it without an answer
                if self._finished(seq):
                    if self.prefix_cache is not None:  # where its KV is: (cache, row, columns)
                        held = session.row(j) if session is not None else (cache, j, mask[j].nonzero().squeeze(-1))
                        self._keep_kv(*held, seq)
                    self._finish(seq)
                    continue
                if seq.request.deltas is not None:
                    self._send(seq)
                keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished sequences from the batch
                keep_index = torch.tensor(keep, dtype=torch.long, device=device)
                if session is not None:
                    session.keep(keep_index)
                else:
                    cache.batch_select_indices(keep_index)
                mask, next_position, tokens = mask[keep_index], next_position[keep_index], tokens[keep_index]
                temps, top_ps = temps[keep_index], top_ps[keep_index]
                active = [active[j] for j in keep]
            started = time.perf_counter()
            if session is not None:
                logits = session.step(tokens, next_position)
            else:
                past = mask.shape[1]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
                logits = self._forward(tokens[:, None], mask, next_position, cache, past)
            next_position = next_position + 1
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(active)
            if joining:
                self._poll(self._pending)
                extra = self._take_batch(self._pending, self.max_batch_size - len(active)) \
                    if self._pending and len(active) < self.max_batch_size else []
                if extra:  # prefill the newcomers; they sample with the running rows from now on
                    new, rows, new_logits, new_cache, new_mask, _ = self._prepare(extra)
                    new_cache.batch_select_indices(rows)
                    new_mask = new_mask[rows]
                    cache, mask = concat_caches(self.model, cache, mask, new_cache, new_mask)
                    logits = torch.cat([logits, new_logits[rows]])
                    next_position = torch.cat([next_position, new_mask.sum(-1, keepdim=True)])
                    temps = torch.cat([temps, torch.tensor([s.request.params.temperature for s in new],
                                                           dtype=torch.float32, device=device)])
                    top_ps = torch.cat([top_ps, torch.tensor([s.request.params.top_p for s in new],
                                                             dtype=torch.float32, device=device)])
                    active = active + new
                    self.stats.joined += len(new)

    def _prefill(self, distinct: list[tuple[int, ...]]) -> tuple[torch.Tensor, Any, torch.Tensor, int, list[int]]:
        """Run the distinct prompts, each from its longest prefix held by the prefix cache.

        Rows are [cached prefix, left-padded | new tokens, left-padded] with an attention mask
        over both, so prompts with different cached lengths share one forward pass. Returns the
        last position's logits, the cache, its mask, its width and each prompt's cached length.
        """
        from transformers import DynamicCache

        device = self.device
        found = [self.prefix_cache.match(p[:-1]) if self.prefix_cache is not None else (0, None)
                 for p in distinct]  # at least the last token is computed, for its logits
        lengths = [m for m, _ in found]
        suffixes = [p[m:] for p, m in zip(distinct, lengths, strict=False)]
        width = max(len(s) for s in suffixes)
        input_ids = torch.full((len(distinct), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for row, ids in enumerate(suffixes):  # left padding: every prompt ends at the last column
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids):] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        if any(lengths):
            cache, past_mask = past_cache(self.model, [kv for _, kv in found], lengths)
            mask = torch.cat([past_mask, mask], dim=-1)
        else:
            cache = DynamicCache(config=self.model.config)
        past = mask.shape[1] - width
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        logits = self._forward(input_ids, mask, positions, cache, past)
        if self.prefix_cache is not None:
            for row, ids in enumerate(distinct):
                columns = mask[row].nonzero().squeeze(-1)
                self.prefix_cache.insert(ids, lambda a, b, row=row, columns=columns: row_kv(cache, row, columns[a:b]))
        return logits, cache, mask, mask.shape[1], lengths

    def _keep_kv(self, cache: Any, row: int, columns: torch.Tensor, seq: _Seq) -> None:
        """Store a finished candidate's KV (prompt + its tokens but the last, which was never fed),
        held in `cache`'s `row` at `columns` (dynamic or static cache)."""
        ids = seq.request.prompt + tuple(seq.tokens[:-1])
        if len(columns) == len(ids):
            self.prefix_cache.insert(ids, lambda a, b, row=row, columns=columns: row_kv(cache, row, columns[a:b]))

    def _sample(self, logits: torch.Tensor, active: list[_Seq], temps: torch.Tensor,
                top_ps: torch.Tensor) -> torch.Tensor:
        """Pick one token per row, record it (with logprobs when asked) on its sequence."""
        tokens = logits.argmax(-1)
        # which rows sample, read from the host-side params, and no index tensor when all rows do:
        # either would make the host wait for the device before it can queue the sampling kernels
        sampled = [j for j, s in enumerate(active) if s.request.params.temperature != 0]
        if sampled:
            every = len(sampled) == len(active)
            index = None if every else torch.tensor(sampled, device=logits.device)
            scores = logits / temps[:, None] if every else logits[index] / temps[index, None]
            if any(active[j].request.params.top_p < 1 for j in sampled):
                scores = self._top_p(scores, top_ps if every else top_ps[index])
            # Gumbel-max with one generator per sequence: a row's draws do not depend on its batch
            uniform = torch.stack([torch.rand(scores.shape[-1], generator=active[j].generator, device=logits.device)
                                   for j in sampled])
            gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
            if every:
                tokens = (scores + gumbel).argmax(-1)
            else:
                tokens[index] = (scores + gumbel).argmax(-1)
        want_lp = [bool(s.request.params.logprobs or s.request.params.top_logprobs) for s in active]
        token_list = tokens.tolist()
        chosen = top_values = top_ids = None
        if any(want_lp):
            logprobs = torch.log_softmax(logits, dim=-1)  # raw distribution, as vLLM reports it
            chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()
            k = min(max(s.request.params.top_logprobs or 0 for s in active), logprobs.shape[-1])
            if k:
                values, ids = logprobs.topk(k, dim=-1)
                top_values, top_ids = values.tolist(), ids.tolist()
        for j, seq in enumerate(active):
            seq.tokens.append(token_list[j])
            if want_lp[j]:
                seq.logprobs.append(chosen[j])
                k = seq.request.params.top_logprobs
                if k:
                    seq.top.append(dict(zip(top_ids[j][:k], top_values[j][:k], strict=False)))
        return tokens

    @staticmethod
    def _top_p(scores: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        """Mask tokens outside the nucleus: those whose more likely tokens already hold >= top_p."""
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        probs = sorted_scores.softmax(-1)
        mass_before = probs.cumsum(-1) - probs
        remove = mass_before >= top_p[:, None]
        remove[:, 0] = False
        sorted_scores = sorted_scores.masked_fill(remove, float("-inf"))
        return torch.full_like(scores, float("-inf")).scatter(-1, order, sorted_scores)

    def _finished(self, seq: _Seq) -> bool:
        """Check EOS, stop strings and length for the token just appended (vLLM's order)."""
        params = seq.request.params
        token = seq.tokens[-1]
        if token in self.eos_token_ids:
            seq.finish_reason = "stop"
        elif (params.stop or seq.request.deltas is not None) and self._stop_string_hit(seq, params.stop):
            seq.finish_reason = "stop"
        elif len(seq.tokens) >= seq.request.max_new:
            seq.finish_reason = "length"
        return seq.finish_reason is not None

    def _stop_string_hit(self, seq: _Seq, stops: tuple[str, ...]) -> bool:
        """Incremental detokenisation (prefix/read offsets, as vLLM) and a search of the new text."""
        before = self.decode(seq.tokens[seq.prefix_offset:seq.read_offset])
        after = self.decode(seq.tokens[seq.prefix_offset:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return False  # an incomplete character: wait for the next token
        new = after[len(before):]
        seq.prefix_offset, seq.read_offset = seq.read_offset, len(seq.tokens)
        old_length = len(seq.text)
        seq.text += new
        if not stops:
            return False
        best: int | None = None
        best_end = None
        for stop in stops:
            if not stop:
                continue
            at = seq.text.find(stop, max(0, old_length - len(stop) + 1))
            if at != -1 and (best_end is None or at + len(stop) < best_end):
                best, best_end = at, at + len(stop)
        if best is None:
            return False
        seq.stop_at = best
        return True

    def _completion(self, seq: _Seq) -> Completion:
        params = seq.request.params
        if seq.stop_at is not None:
            text = seq.text[:seq.stop_at]
        else:
            text = self.decode(seq.tokens)
        want_lp = bool(params.logprobs or params.top_logprobs)
        return Completion(text=text, token_ids=tuple(seq.tokens), finish_reason=seq.finish_reason or "length",
                          logprobs=tuple(seq.logprobs) if want_lp else None,
                          top_logprobs=tuple(seq.top) if params.top_logprobs else None)
