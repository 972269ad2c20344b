"""Build a backend from a short name, for the CLI and for configs."""

from __future__ import annotations

from typing import Any

from ttc._extras import require_extra
from ttc.backends.base import Generator
from ttc.errors import InvalidInput

BACKENDS = ("transformers", "vllm", "openai")


def make_backend(kind: str = "transformers", model: str | None = None, url: str | None = None,
                 threads: Any = "auto", **kwargs: Any) -> Generator:
    """`transformers` (in-process HF), `vllm` (in-process vLLM engine) or `openai` (a server at `url`).

    `threads` is the transformers backend's `num_threads` ("auto", "torch" or a count); the other
    backends run their model elsewhere and ignore it. A model folder that does not exist, or a hub
    id that is not cached while the hub is unreachable, is reported here, before torch or vLLM is
    imported (seconds of imports for nothing).
    """
    if kind in ("transformers", "vllm") and model is not None:
        from ttc.models import DEFAULT_MODEL_ALIASES, check_hub_model, resolve_model

        if model.strip().lower() not in DEFAULT_MODEL_ALIASES:
            # a missing folder, or an uncached hub id with the hub unreachable: ModelNotFound now
            check_hub_model(resolve_model(model))
    if kind == "transformers":
        require_extra("transformers", "the transformers backend")
        from ttc.backends.transformers import Transformers

        return Transformers(model, num_threads=threads, **kwargs)
    if kind == "vllm":
        require_extra("vllm", "the vllm backend")
        from ttc.backends.vllm_engine import VLLMEngine

        return VLLMEngine(model, **kwargs)
    if kind == "openai":
        if not url:
            raise InvalidInput("the openai backend needs --url, e.g. http://127.0.0.1:8000/v1")
        from ttc.backends.openai_compatible import OpenAICompatible

        return OpenAICompatible(url, model=model, **kwargs)
    raise InvalidInput(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}")
