"""Generator backends: scripted (tests), transformers, vLLM in-process, OpenAI-compatible servers."""

from ttc.backends.base import Generation, Generator
from ttc.backends.scripted import Scripted

__all__ = ["Generation", "Generator", "OpenAICompatible", "Scripted", "Transformers", "VLLMEngine"]


def __getattr__(name: str):
    # Heavy backends import torch/vllm; load them only when asked for, and say which extra is missing
    # (`pip install ttc` is the light core: ttc[transformers], ttc[vllm]).
    from ttc._extras import require_extra

    if name == "Transformers":
        require_extra("transformers", "ttc.backends.Transformers")
        from ttc.backends.transformers import Transformers

        return Transformers
    if name == "VLLMEngine":
        require_extra("vllm", "ttc.backends.VLLMEngine")
        from ttc.backends.vllm_engine import VLLMEngine

        return VLLMEngine
    if name == "OpenAICompatible":
        from ttc.backends.openai_compatible import OpenAICompatible

        return OpenAICompatible
    raise AttributeError(f"module 'ttc.backends' has no attribute {name!r}")
