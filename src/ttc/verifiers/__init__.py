"""Verifiers score candidates: programmatic checks, logprob confidence, reward models, judges."""

from ttc.verifiers.base import Verifier, score_candidates
from ttc.verifiers.confidence import LogprobConfidence
from ttc.verifiers.flex import FlexVerifier
from ttc.verifiers.judge import LLMJudge
from ttc.verifiers.process import AGGREGATIONS, PRMVerifier, ProcessRewardModel, ProgrammaticPRM, aggregate, score_steps
from ttc.verifiers.programmatic import Programmatic, gold_answer_oracle
from ttc.verifiers.remote_prm import RemotePRM

__all__ = [
    "AGGREGATIONS",
    "FlexVerifier",
    "HFProcessRewardModel",
    "LLMJudge",
    "LogprobConfidence",
    "MathShepherdPRM",
    "PRMVerifier",
    "ProcessRewardModel",
    "Programmatic",
    "ProgrammaticPRM",
    "QwenPRM",
    "RemotePRM",
    "Verifier",
    "aggregate",
    "gold_answer_oracle",
    "score_candidates",
    "score_steps",
]


def __getattr__(name: str):
    # transformers PRMs import torch/transformers; load them only when asked for.
    if name in ("HFProcessRewardModel", "MathShepherdPRM", "QwenPRM", "Qwen2ForProcessRewardModel", "reward_models"):
        import importlib

        from ttc._extras import require_extra

        require_extra("transformers", f"ttc.verifiers.{name}")
        reward_models = importlib.import_module("ttc.verifiers.reward_models")  # `from . import` would recurse
        return reward_models if name == "reward_models" else getattr(reward_models, name)
    raise AttributeError(f"module 'ttc.verifiers' has no attribute {name!r}")
