"""ttc: test-time-compute reasoning strategies for LLMs.

    import ttc
    llm = ttc.backends.Transformers()            # the embedded SmolLM2-135M-Instruct
    result = ttc.MajorityVote(n=8).solve("What is 17 + 25?", llm)
    print(result.answer, result.usage)
"""

from ttc import (  # display: Result renders in Jupyter
                        answers,
                        backends,
                        display,
                        eval,
                        models,
                        probes,
                        steps,
                        verifiers,
                        votes,
)
from ttc.context import Budget, Context
from ttc.errors import (
                        AnswerNotFound,
                        BackendUnavailable,
                        BudgetExhausted,
                        GenerationError,
                        InvalidInput,
                        MalformedResponse,
                        ModelNotFound,
                        TTCError,
                        Unsupported,
)
from ttc.prompts import ChatPrompt
from ttc.runner import asolve_many, run_sync, solve_many
from ttc.steps import StepConfig
from ttc.strategies import (
                        DVTS,
                        RPC,
                        AdaptiveBestOfN,
                        AStar,
                        BeamSearch,
                        BestOfN,
                        DeepConf,
                        EarlyExit,
                        FirstFinish,
                        MajorityVote,
                        ParticleFilter,
                        Sample,
                        Sampler,
                        Strategy,
)
from ttc.types import Candidate, Completion, Problem, Result, SamplingParams, Step, Trace, Usage

__version__ = "0.1.0"

__all__ = [
    "AnswerNotFound", "BackendUnavailable", "BestOfN", "Budget", "BudgetExhausted", "Candidate", "ChatPrompt",
    "Completion", "Context", "GenerationError", "InvalidInput", "MajorityVote", "MalformedResponse",
    "ModelNotFound", "Problem", "Result", "Sample", "Sampler", "SamplingParams", "Step", "Strategy", "TTCError",
    "Trace", "Usage", "answers", "asolve_many", "backends", "eval", "run_sync", "solve_many", "verifiers",
]
__all__ += ["DeepConf", "EarlyExit", "FirstFinish", "Unsupported", "models", "probes", "votes"]
__all__ += ["AStar", "BeamSearch", "DVTS", "ParticleFilter", "StepConfig", "steps"]
__all__ += ["RPC", "AdaptiveBestOfN"]
