"""In-process vLLM backend: a vLLM `AsyncLLM` engine driven directly, no server.

vLLM does the batching, the n samples (`SamplingParams.n`), seeds, stop strings, logprobs and
prefix caching itself; this backend only maps ttc's request and result types onto vLLM's. A
continuation (prompt + steps so far, as token ids) is an ordinary request whose prefix vLLM finds
in its prefix cache.

The engine lives on its own event loop in a background thread, so one backend serves callers on
any event loop (`asyncio.run` per call, Jupyter's loop, ttc's `solve`), and a cancelled caller
aborts its request in the engine. vLLM's engine core runs in a child process started with the
`spawn` method on CPU, so a script that builds a `VLLMEngine` at import time needs the usual
`if __name__ == "__main__":` guard.

Parts: the mapping of ttc's requests and results onto vLLM's is pure and lives in
`ttc.backends.vllm_mapping`; the engine's own event loop, and the relay of a stream from it to the
caller's loop, in `ttc.backends.loop_thread`; this module only drives the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from ttc.backends import vllm_mapping as mapping
from ttc.backends.base import PREFIX_CACHING, STREAM, TOKEN_IDS, Delta, Generation, Generator
from ttc.backends.loop_thread import LoopThread, relay
from ttc.backends.thinking_split import MarkerSplitter, hf_splitter
from ttc.backends.vllm_mapping import CPU_DEFAULTS
from ttc.errors import GenerationError, InvalidInput, ModelNotFound
from ttc.models import SMOLLM2_NAME, check_hub_model, resolve_model
from ttc.thinking import ThinkingFormat, resolve_format
from ttc.types import Completion, Prompt, SamplingParams

__all__ = ["CPU_DEFAULTS", "VLLMEngine"]

T = TypeVar("T")


class VLLMEngine(Generator):
    """Generate with a vLLM engine in this process.

        llm = ttc.backends.VLLMEngine()                              # the embedded SmolLM2-135M-Instruct
        llm = ttc.backends.VLLMEngine("path/to/model", tensor_parallel_size=2, max_model_len=8192)
        llm = ttc.backends.VLLMEngine.from_engine(my_async_llm)      # an engine you built yourself

    `model`: None/"smollm2" for the embedded model, a local folder, or a hub id. Other keyword
    arguments are vLLM engine arguments (`vllm.AsyncEngineArgs`), passed through; on a CPU-only
    vLLM, `CPU_DEFAULTS` fill in what is not given. Prefix caching is vLLM's default (on); pass
    `enable_prefix_caching=False` to turn it off. Building the engine takes a while (about 50 s
    for SmolLM2 on a small CPU) and blocks.

    Requests map one to one onto vLLM requests: n, temperature, top_p, max_tokens, stop, seed,
    logprobs (with `top_logprobs` alternatives), top_k, min_p, the three penalties and token-id
    prompts are vLLM's own; `extra` sets other fields of the installed vLLM's SamplingParams by name
    (an unknown one is `ttc.Unsupported`); `chat_template_kwargs` go to the chat template.
    `thinking`: the model's thinking format (a name of `ttc.thinking.FORMATS` or a `ThinkingFormat`);
    default None = what the model's folder declares in `ttc_thinking.json`, else no thinking; False
    = no thinking. With a format, completions are split at the marker tokens (`Completion.thinking`). A seeded
    request gives the same completions as the same request to a vLLM OpenAI server running the
    same model (vLLM gives sample i of a seeded request seed + i).
    """

    _splitter: MarkerSplitter | None = None  # splits completions at the thinking markers (`thinking=`)

    def __init__(self, model: str | None = None, *, thinking: str | ThinkingFormat | bool | None = None,
                 **engine_kwargs: Any):
        path = resolve_model(model)
        fmt = resolve_format(thinking, path)  # a bad format fails before minutes of engine start
        check_hub_model(path)  # offline, a hub id fails now instead of after minutes of retries
        kwargs = mapping.engine_kwargs(path, engine_kwargs)
        self._thread: LoopThread | None = LoopThread("ttc-vllm-engine")
        try:
            engine = self._thread.run(self._build(kwargs))
        except BaseException as exc:
            self._thread.stop()
            self._thread = None
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if not os.path.isdir(path) and isinstance(exc, (OSError, ValueError)):
                raise ModelNotFound(f"vLLM could not load {path!r}: {type(exc).__name__}: {exc}") from exc
            raise GenerationError(f"could not start a vLLM engine for {path!r}: {type(exc).__name__}: {exc}") from exc
        self._setup(engine, model if model is not None else SMOLLM2_NAME, self._thread.loop, owns=True)
        self._setup_thinking(fmt)

    @staticmethod
    async def _build(kwargs: dict[str, Any]) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        try:
            args = AsyncEngineArgs(**kwargs)
        except TypeError as exc:
            raise InvalidInput(f"unknown vLLM engine argument: {exc}") from None
        return AsyncLLM.from_engine_args(args)

    @classmethod
    def from_engine(cls, engine: Any, *, name: str | None = None,
                    loop: asyncio.AbstractEventLoop | None = None,
                    thinking: str | ThinkingFormat | bool | None = None) -> VLLMEngine:
        """Wrap a vLLM `AsyncLLM` you built yourself; `aclose()` leaves it running. `thinking` as
        for the constructor (the default reads the engine's model folder).

        Requests run on `loop` if given, else on the loop the engine's output handler already
        runs on, else on the caller's loop (an `AsyncLLM` serves one event loop).
        """
        if not hasattr(engine, "generate") or not hasattr(engine, "abort"):
            raise InvalidInput(f"from_engine needs a vLLM AsyncLLM, got {type(engine).__name__}")
        if loop is None:
            handler = getattr(engine, "output_handler", None)
            if handler is not None:
                loop = handler.get_loop()
        if name is None:
            model_config = getattr(engine, "model_config", None)
            name = getattr(model_config, "served_model_name", None) or getattr(model_config, "model", None)
            if isinstance(name, (list, tuple)):
                name = name[0] if name else None
        self = cls.__new__(cls)
        self._thread = None
        self._setup(engine, name or "vllm", loop, owns=False)
        self._setup_thinking(resolve_format(thinking, getattr(getattr(engine, "model_config", None), "model", None)))
        return self

    def _setup_thinking(self, fmt: ThinkingFormat | None) -> None:
        """The thinking format and its marker ids (each must be one token: else InvalidInput now)."""
        self.thinking = fmt
        try:
            self._splitter = hf_splitter(fmt, self.tokenizer, f"VLLMEngine({self._name!r})")
        except BaseException:
            self.close()
            raise

    def _setup(self, engine: Any, name: str, loop: asyncio.AbstractEventLoop | None, owns: bool) -> None:
        self.engine = engine
        self.loop = loop
        self._owns = owns
        self._closed = False
        self._name = str(name)
        self.tokenizer = engine.get_tokenizer()
        model_config = engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        cache_config = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
        prefix_caching = bool(getattr(cache_config, "enable_prefix_caching", False))
        self.capabilities = frozenset({TOKEN_IDS, STREAM} | ({PREFIX_CACHING} if prefix_caching else set()))
        try:
            diff = model_config.get_diff_sampling_param()
        except Exception:  # noqa: BLE001 - a model without a readable generation config
            diff = {}
        self._sampling_defaults = {k: v for k, v in diff.items() if k in mapping.DEFAULTABLE}

    # -- Generator API ----------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._name

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as vLLM tokenizes a text prompt (special tokens added)."""
        if not isinstance(text, str):
            raise InvalidInput(f"tokenize() takes a string, got {type(text).__name__}")
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=True)]

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids as completions show it (special tokens skipped)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    async def chat_prompt(self, messages: Sequence[dict[str, str]], *,
                          chat_template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
        """Token ids of the model's chat template applied to `messages`, ready for the assistant turn;
        `chat_template_kwargs` (e.g. {"enable_thinking": False}) go to the template."""
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise InvalidInput("chat_prompt needs a non-empty list of {'role': ..., 'content': ...} messages")
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(f"the tokenizer of {self.model_name!r} has no chat template; use a text prompt")
        out = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                 **dict(chat_template_kwargs or {}))
        if not isinstance(out, (list, tuple)):  # a BatchEncoding
            out = out["input_ids"]
        return [int(t) for t in out]

    async def generate(self, prompt: Prompt, params: SamplingParams) -> Generation:
        """Sample `params.n` completions in one vLLM request (the prompt is prefilled once)."""
        from vllm.sampling_params import RequestOutputKind

        engine_prompt = mapping.engine_prompt(prompt)
        vllm_params = mapping.sampling_params(params, RequestOutputKind.FINAL_ONLY, self._sampling_defaults)
        self._check_length(engine_prompt, params)
        if self._splitter is not None:
            self._splitter.check_request(params)
        return await self._on_engine_loop(self._generate(engine_prompt, vllm_params, params))

    def split_thinking(self, completion: Completion, prompt: Prompt, params: SamplingParams) -> Completion:
        """A stream's completion split at the thinking markers, as `generate` splits it."""
        if self._splitter is None or completion.thinking is not None:
            return completion
        ids = self.tokenizer.encode(prompt, add_special_tokens=True) if isinstance(prompt, str) else prompt
        return self._splitter.split(completion, ids, params)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Delta]:
        """Stream one completion; closing the iterator (or cancelling its consumer) aborts the request."""
        from vllm.sampling_params import RequestOutputKind

        if params.n != 1:
            raise InvalidInput(f"stream() produces one completion; got n={params.n}")
        engine_prompt = mapping.engine_prompt(prompt)
        vllm_params = mapping.sampling_params(params, RequestOutputKind.DELTA, self._sampling_defaults)
        self._check_length(engine_prompt, params)
        if self._splitter is not None:
            self._splitter.check_request(params)
        self._check_open()
        if self.loop is None or self.loop is asyncio.get_running_loop():
            deltas = self._stream(engine_prompt, vllm_params, params)
        else:  # the engine runs on its own loop: relay its stream to this one
            deltas = relay(lambda: self._stream(engine_prompt, vllm_params, params), self.loop)
        try:
            async for delta in deltas:
                yield delta
        finally:
            await deltas.aclose()

    async def aclose(self) -> None:
        """Shut the engine down if this backend built it (a wrapped engine is left alone). Idempotent."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Synchronous `aclose`."""
        if self._closed:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if not self._owns or thread is None:
            return
        with contextlib.suppress(Exception):
            thread.run(self._shutdown())
        thread.stop()

    async def _shutdown(self) -> None:
        self.engine.shutdown()

    async def __aenter__(self) -> VLLMEngine:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def num_unfinished_requests(self) -> int:
        """Requests the engine still holds (running or waiting); 0 once every request ended or was aborted."""
        return int(self.engine.get_num_unfinished_requests())

    # -- internals --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise GenerationError("this VLLMEngine backend is closed")

    def _check_length(self, engine_prompt: Any, params: SamplingParams) -> None:
        """Refuse what vLLM's server refuses: prompt + max_tokens beyond the context length."""
        if "prompt_token_ids" in engine_prompt:
            length = len(engine_prompt["prompt_token_ids"])
        else:
            length = len(self.tokenizer.encode(engine_prompt["prompt"], add_special_tokens=True))
        if length + params.max_tokens > self.max_model_len:
            raise InvalidInput(
                f"the context of {self.model_name!r} is {self.max_model_len} tokens, but the prompt has {length} "
                f"and max_tokens asks for {params.max_tokens} more; lower max_tokens or shorten the prompt")

    async def _on_engine_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the engine's loop; cancelling the caller cancels it there (and aborts)."""
        self._check_open()
        if self.loop is None or self.loop is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def _generate(self, engine_prompt: Any, vllm_params: Any, params: SamplingParams) -> Generation:
        request_id = f"ttc-{uuid.uuid4().hex}"
        final = None
        try:
            async for out in self.engine.generate(engine_prompt, vllm_params, request_id):
                final = out
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # vLLM's generate() aborts too; make sure
                await self.engine.abort(request_id)
            raise
        except BaseException as exc:
            raise mapping.to_ttc_error(exc) from exc
        if final is None or not final.finished:
            raise GenerationError("vLLM ended the request without a final output")
        outputs = sorted(final.outputs, key=lambda o: o.index)
        completions = [mapping.completion(o, params) for o in outputs]
        if self._splitter is not None:
            completions = [self._splitter.split(c, final.prompt_token_ids or (), params) for c in completions]
        prompt_tokens = len(final.prompt_token_ids or ())
        # vLLM's num_cached_tokens: prefix-cache hits of the prompt (for n > 1, of one of the n
        # sequences: the parent request reports its last finished child's)
        cached = getattr(final, "num_cached_tokens", None) or 0
        return Generation(prompt_tokens=prompt_tokens, completions=completions,
                          processed_prompt_tokens=prompt_tokens * len(completions), cached_prompt_tokens=cached)

    async def _stream(self, engine_prompt: Any, vllm_params: Any, params: SamplingParams) -> AsyncIterator[Delta]:
        request_id = f"ttc-{uuid.uuid4().hex}"
        finished = False
        outputs = self.engine.generate(engine_prompt, vllm_params, request_id)
        generated = 0
        try:
            async for out in outputs:
                finished = out.finished
                generated += len(out.outputs[0].token_ids)
                item = mapping.delta(out, params, generated)
                if item is not None:
                    yield item
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as exc:
            raise mapping.to_ttc_error(exc) from exc
        finally:
            await outputs.aclose()
            if not finished:
                with contextlib.suppress(Exception):
                    await self.engine.abort(request_id)
