"""Scaling out: VLLMEngine hands multi-GPU engine arguments to vLLM unchanged.

No engine is started (that would need several GPUs): vLLM's `AsyncLLM.from_engine_args` is
replaced by a stand-in that builds vLLM's own `VllmConfig` from the arguments VLLMEngine passes
(`EngineArgs.create_engine_config()`, which validates them against the model) and stops there.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # imports vLLM (~30 s on a busy 2-core machine)


class _Built(Exception):
    """Raised by the stand-in once the config is built, so no engine starts."""


def _engine_config(monkeypatch, **engine_kwargs):
    from vllm.v1.engine.async_llm import AsyncLLM

    from ttc.backends.vllm_engine import VLLMEngine
    from ttc.errors import GenerationError

    seen = {}

    def from_engine_args(args, *a, **k):
        seen["args"] = args
        seen["config"] = args.create_engine_config()
        raise _Built

    monkeypatch.setattr(AsyncLLM, "from_engine_args", staticmethod(from_engine_args))
    with pytest.raises(GenerationError, match="_Built"):
        VLLMEngine(**engine_kwargs)  # the embedded SmolLM2 (9 query heads, 3 key/value heads)
    return seen["args"], seen["config"]


def test_parallel_engine_arguments_reach_vllms_config(monkeypatch):
    args, config = _engine_config(monkeypatch, tensor_parallel_size=3, pipeline_parallel_size=2,
                                  data_parallel_size=2, distributed_executor_backend="mp")
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (3, 2, 2)
    parallel = config.parallel_config
    assert parallel.tensor_parallel_size == 3
    assert parallel.pipeline_parallel_size == 2
    assert parallel.data_parallel_size == 2
    assert parallel.distributed_executor_backend == "mp"
    assert parallel.world_size == 6  # tensor x pipeline GPUs per data-parallel replica


def test_the_defaults_are_one_device(monkeypatch):
    _, config = _engine_config(monkeypatch)
    parallel = config.parallel_config
    assert (parallel.tensor_parallel_size, parallel.pipeline_parallel_size, parallel.data_parallel_size) == (1, 1, 1)


def test_vllm_checks_the_parallel_layout_against_the_model(monkeypatch):
    """vLLM's own check, reached through VLLMEngine: 9 attention heads do not split over 2 GPUs."""
    from vllm.v1.engine.async_llm import AsyncLLM

    from ttc.backends.vllm_engine import VLLMEngine
    from ttc.errors import GenerationError

    monkeypatch.setattr(AsyncLLM, "from_engine_args",
                        staticmethod(lambda args, *a, **k: args.create_engine_config()))
    with pytest.raises(GenerationError, match="divisible by tensor parallel size"):
        VLLMEngine(tensor_parallel_size=2)
