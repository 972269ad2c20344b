"""ttc: test-time-compute reasoning strategies for LLMs.

    import ttc
    llm = ttc.backends.Transformers()            # the embedded SmolLM2-135M-Instruct
    result = ttc.MajorityVote(n=8).solve("What is 17 + 25?", llm)
    print(result.answer, result.usage)
"""

from ttc import answers, backends, display, eval, models, probes, steps, stopping, verifiers, votes  # noqa: F401 (display: Result renders in Jupyter)
from ttc.context import Budget, Context
from ttc.errors import (
    AnswerNotFound,
    BackendUnavailable,
    BudgetExhausted,
    GenerationError,
    GenerationTimeout,
    InvalidInput,
    MalformedResponse,
    MissingExtra,
    ModelNotFound,
    PoolExhausted,
    ProblemsFailed,
    TTCError,
    TTCWarning,
    Unsupported,
)
from ttc.needs import Needs
from ttc.prompts import ChatPrompt
from ttc.runner import asolve_many, run_sync, solve_many
from ttc.steps import StepConfig
from ttc.strategies import (
    DVTS,
    RPC,
    AdaptiveBestOfN,
    AdaptiveVote,
    AStar,
    BeamSearch,
    BestOfN,
    BudgetForcing,
    DeepConf,
    EarlyExit,
    FirstFinish,
    MajorityVote,
    ParallelTempering,
    ParticleFilter,
    ParticleGibbs,
    Sample,
    Sampler,
    Strategy,
)
from ttc.types import Candidate, Completion, Problem, Result, Results, SamplingParams, Step, Trace, Usage

__version__ = "0.1.0"

__all__ = [
    "DVTS",
    "RPC",
    "AStar",
    "AdaptiveBestOfN",
    "AdaptiveVote",
    "AnswerNotFound",
    "BackendUnavailable",
    "BeamSearch",
    "BestOfN",
    "Budget",
    "BudgetExhausted",
    "BudgetForcing",
    "Candidate",
    "ChatPrompt",
    "Completion",
    "Context",
    "DeepConf",
    "EarlyExit",
    "FirstFinish",
    "GenerationError",
    "GenerationTimeout",
    "InvalidInput",
    "MajorityVote",
    "MalformedResponse",
    "MissingExtra",
    "ModelNotFound",
    "Needs",
    "ParallelTempering",
    "ParticleFilter",
    "ParticleGibbs",
    "PoolExhausted",
    "Problem",
    "ProblemsFailed",
    "Result",
    "Results",
    "Sample",
    "Sampler",
    "SamplingParams",
    "Step",
    "StepConfig",
    "Strategy",
    "TTCError",
    "TTCWarning",
    "Trace",
    "Unsupported",
    "Usage",
    "answers",
    "asolve_many",
    "backends",
    "eval",
    "models",
    "probes",
    "run_sync",
    "solve_many",
    "steps",
    "stopping",
    "verifiers",
    "votes",
]
