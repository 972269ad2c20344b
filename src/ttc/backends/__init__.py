"""Generator backends: scripted (tests), transformers, vLLM in-process, OpenAI-compatible servers."""

from ttc.backends.base import Generation, Generator
from ttc.backends.scripted import Scripted

__all__ = ["Generation", "Generator", "Scripted", "Transformers"]


def __getattr__(name: str):
    # Heavy backends import torch/vllm; load them only when asked for.
    if name == "Transformers":
        from ttc.backends.transformers import Transformers

        return Transformers
    raise AttributeError(f"module 'ttc.backends' has no attribute {name!r}")
