"""ttc: test-time-compute reasoning strategies for LLMs.

    import ttc
    llm = ttc.backends.Transformers()            # the embedded SmolLM2-135M-Instruct
    result = ttc.MajorityVote(n=8).solve("What is 17 + 25?", llm)
    print(result.answer, result.usage)
"""

from ttc import aggregation, answers, backends, display, eval, models, probes, steps, stopping, verifiers, votes  # noqa: F401 (display: Result renders in Jupyter)
from ttc.bank.report import TuneReport
from ttc.bank.tune import tune
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
    PromptTooLong,
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
    RSA,
    AdaptiveBestOfN,
    AdaptiveVote,
    AStar,
    BeamSearch,
    BestOfN,
    BudgetForcing,
    Critique,
    DeepConf,
    EarlyExit,
    FirstFinish,
    Fuse,
    GenSelect,
    MajorityVote,
    ParallelTempering,
    ParticleFilter,
    ParticleGibbs,
    Rank,
    Sample,
    Sampler,
    SolveDetectVerify,
    Strategy,
    Verify,
)
from ttc.types import Candidate, Completion, Problem, Result, Results, SamplingParams, Step, Trace, Usage

__version__ = "0.1.0"

__all__ = [
    "DVTS",
    "RPC",
    "RSA",
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
    "Critique",
    "DeepConf",
    "EarlyExit",
    "FirstFinish",
    "Fuse",
    "GenSelect",
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
    "PromptTooLong",
    "Rank",
    "Result",
    "Results",
    "Sample",
    "Sampler",
    "SamplingParams",
    "SolveDetectVerify",
    "Step",
    "StepConfig",
    "Strategy",
    "TTCError",
    "TTCWarning",
    "Trace",
    "TuneReport",
    "Unsupported",
    "Usage",
    "Verify",
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
    "tune",
    "verifiers",
    "votes",
]
