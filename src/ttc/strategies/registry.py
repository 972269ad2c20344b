"""Strategies by name, for the CLI and the evaluation harness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ttc.errors import InvalidInput
from ttc.probes import AnswerConsistency, SolutionComplete
from ttc.steps import StepConfig
from ttc.strategies.adaptive_best_of_n import AdaptiveBestOfN
from ttc.strategies.adaptive_vote import AdaptiveVote
from ttc.strategies.astar import AStar
from ttc.strategies.base import Strategy
from ttc.strategies.beam import DVTS, BeamSearch
from ttc.strategies.best_of_n import BestOfN
from ttc.strategies.budget_forcing import BudgetForcing
from ttc.strategies.deepconf import DeepConf
from ttc.strategies.early_exit import EarlyExit
from ttc.strategies.first_finish import FirstFinish
from ttc.strategies.genselect import GenSelect
from ttc.strategies.layers import Critique, Fuse, Rank, Verify
from ttc.strategies.majority import MajorityVote
from ttc.strategies.particle import ParticleFilter
from ttc.strategies.particle_gibbs import ParallelTempering, ParticleGibbs, temperature_ladder
from ttc.strategies.rpc import RPC
from ttc.strategies.rsa import RSA
from ttc.strategies.sample import DEFAULT_PARAMS, Sample
from ttc.strategies.solve_detect_verify import SolveDetectVerify
from ttc.strategies.wrapping import sampler_for
from ttc.verifiers.base import Verifier
from ttc.verifiers.confidence import LogprobConfidence
from ttc.verifiers.flex import FlexVerifier
from ttc.verifiers.process import PRMVerifier, ProcessRewardModel


def _sample(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    return Sample(params=params)


def _majority(n: int, verifier: Verifier | None, params: Any) -> Strategy:
    return MajorityVote(n=n, sample=Sample(params=params), verifier=verifier)


def _best_of_n(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    verifier = verifier or LogprobConfidence()
    return BestOfN(n=n, verifier=verifier, sample=Sample(params=params), **options)


def _first_finish(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    return FirstFinish(n=n, params=params, **options)


def _early_exit(n: int, verifier: Verifier | None, params: Any, every: int = 64, **options: Any) -> Strategy:
    """Early exit by answer consistency (probed every `every` tokens); n > 1 votes over n
    early-exited candidates."""
    sample = EarlyExit(AnswerConsistency(every=every), params=params, **options)
    return sample if n == 1 else MajorityVote(n=n, sample=sample, verifier=verifier)


def _deepconf(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """DeepConf-online over n traces: the first min(16, n // 2) are the per-question warm-up
    (the paper: 16 of 256); traces vote weighted by their own confidence (a verifier is not used)."""
    options.setdefault("warmup", min(16, max(1, n // 2)))
    return DeepConf(n=n, params=params, **options)


def _step_search_args(verifier: Any, params: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """PRM, step config and step sampling for a step search built by name.

    `verifier` may be a process reward model (or a PRM wrapped as a verifier); None gives the
    default `LLMJudge()`, which judges with the generator the search runs on. An outcome verifier
    cannot guide a step search. The sampling params' max_tokens becomes the per-step budget;
    `options` may set `max_steps` (the step config's) and the search's own keyword arguments.
    """
    if isinstance(verifier, PRMVerifier):
        verifier = verifier.prm
    if verifier is not None and not isinstance(verifier, ProcessRewardModel):
        raise InvalidInput(f"step searches need a process reward model, not the outcome verifier "
                           f"{getattr(verifier, 'name', type(verifier).__name__)!r}; leave it out to use "
                           f"ttc.verifiers.LLMJudge() on the same model")
    options = dict(options or {})
    steps = StepConfig(max_step_tokens=params.max_tokens, **({"max_steps": options.pop("max_steps")}
                                                             if "max_steps" in options else {}))
    return {"prm": verifier, "steps": steps, "params": params, **options}


def _beam(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = steps sampled per round (Snell et al.'s N): max(1, n // 4) beams of n // beams expansions
    (16: 4 x 4; 10: 2 x 5; n < 8: one beam of n), as docs/strategies/step_search.md says."""
    width = options.pop("width", max(1, n // 4))
    expansions = options.pop("expansions", max(1, n // max(1, width)))
    return BeamSearch(width=width, expansions=expansions, **_step_search_args(verifier, params, options))


def _dvts(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = steps sampled per round: max(1, n // 4) subtrees of n // subtrees expansions."""
    subtrees = options.pop("subtrees", max(1, n // 4))
    expansions = options.pop("expansions", max(1, n // max(1, subtrees)))
    return DVTS(subtrees=subtrees, expansions=expansions, **_step_search_args(verifier, params, options))


def _astar(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = steps sampled per expansion."""
    return AStar(expansions=n, **_step_search_args(verifier, params, options))


def _particle(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = particles."""
    return ParticleFilter(particles=n, **_step_search_args(verifier, params, options))


def _particle_gibbs(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = particles x iterations, the particles drawn in all (its_hub's split of its budget):
    `iterations` (default 2) sweeps of max(2, n // iterations) particles, unless `particles` is given."""
    iterations = options.pop("iterations", 2)
    particles = options.pop("particles", max(2, n // max(1, iterations)))
    return ParticleGibbs(particles=particles, iterations=iterations, **_step_search_args(verifier, params, options))


def _parallel_tempering(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """n = particles x iterations x chains: `chains` (default 3) chains whose inverse temperatures
    fall geometrically from 1 to `hottest_beta` (default 0.25: temperatures 1, 2, 4), `iterations`
    (default 2) sweeps each, max(2, n // (iterations x chains)) particles, unless `particles` is given."""
    iterations = options.pop("iterations", 2)
    chains = options.pop("chains", 3)
    temperatures = temperature_ladder(chains, options.pop("hottest_beta", 0.25))
    particles = options.pop("particles", max(2, n // max(1, iterations * chains)))
    return ParallelTempering(particles=particles, iterations=iterations, temperatures=temperatures,
                             **_step_search_args(verifier, params, options))


def _adaptive_vote(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """AdaptiveVote with max_n = n, rounds of 4, Adaptive-Consistency's Beta rule (c = 0.95)."""
    if verifier is not None:
        raise InvalidInput("adaptive_vote does not weight votes: use it without a verifier")
    options.setdefault("batch", min(4, n))
    return AdaptiveVote(max_n=n, sample=Sample(params=params), **options)


def _rpc(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """RPC over n paths (a verifier is not used: the paths' own probabilities weigh the vote)."""
    return RPC(n=n, sample=Sample(params=params), **options)


def _adaptive_best_of_n(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """Adaptive best-of-N with at most n samples (the model's self-evaluation decides; no verifier)."""
    return AdaptiveBestOfN(max_n=n, sample=Sample(params=params), **options)


def _solve_detect_verify(n: int, verifier: Verifier | None, params: Any, every: int = 32, rounds: int = 2,
                         fast: int = 4, threshold: float = 0.9, slow: int | None = None, mode: str = "chunks",
                         thinking: str | None = None) -> Strategy:
    """Solve-Detect-Verify with a FlexVerifier on the same model (`fast` quick checks, `slow` long ones
    when they agree less than `threshold`), the detector asked every `every` tokens; n > 1 votes over n
    such candidates (the outcome `verifier`, if any, weights that vote)."""
    sample = SolveDetectVerify(verifier=FlexVerifier(fast=fast, threshold=threshold, slow=slow, thinking=thinking),
                               detector=SolutionComplete(every=every, thinking=thinking), params=params,
                               rounds=rounds, mode=mode, thinking=thinking)
    return sample if n == 1 else MajorityVote(n=n, sample=sample, verifier=verifier)


def _budget_forcing(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """Budget forcing (s1) with a thinking budget of `budget` tokens (default: max_tokens) and
    `waits` "Wait" extensions; n > 1 votes over n budget-forced candidates."""
    options.setdefault("budget", params.max_tokens)
    sample = BudgetForcing(params=params, **options)
    return sample if n == 1 else MajorityVote(n=n, sample=sample, verifier=verifier)


def _no_verifier(name: str, verifier: Verifier | None) -> None:
    if verifier is not None:
        raise InvalidInput(f"{name} chooses by the model's own reading, not by a verifier: use it without one")


def _genselect(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """GenSelect over n samples (a knockout tournament when they do not fit one prompt)."""
    _no_verifier("genselect", verifier)
    return GenSelect(n=n, sample=Sample(params=params), **options)


def _rsa(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """RSA with a population of n, k = min(3, n) (option `k`), 2 rounds (option `rounds`)."""
    _no_verifier("rsa", verifier)
    options.setdefault("k", min(3, n))
    return RSA(population=n, sample=Sample(params=params), **options)


def _fuse(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """Fuse the top k = min(3, n) (option `k`) of n samples; with a verifier, the top k by its
    scores (`Fuse(sample=BestOfN(n, verifier))`), else the first k."""
    options.setdefault("k", min(3, n))
    sample = Sample(params=params)
    if verifier is not None:
        return Fuse(sample=BestOfN(n=n, verifier=verifier, sample=sample), **options)
    return Fuse(n=n, sample=sample, **options)


def _archon(n: int, verifier: Verifier | None, params: Any, **options: Any) -> Strategy:
    """Archon's generate -> critique -> (verify) -> rank -> fuse stack over n samples: each sample
    critiqued, a verifier (if given) keeps those scoring >= 0.5, ranked, the top k = min(3, n) fused."""
    k = options.pop("k", min(3, n))
    limit = {"max_prompt_tokens": options["max_prompt_tokens"]} if "max_prompt_tokens" in options else {}
    sample = sampler_for(Sample(params=params), verifier, holder="archon")  # what the verifier needs
    layer: Strategy = Critique(n=n, sample=sample, **limit)
    if verifier is not None:
        layer = Verify(verifier=verifier, sample=layer)
    stack = Fuse(k=k, sample=Rank(k=k, sample=layer, **limit), **options)
    stack.name = "archon"  # results say which stack ran
    return stack


#: name -> factory(n, verifier, sampling params); later strategies register here too
STRATEGIES: dict[str, Callable[[int, Verifier | None, Any], Strategy]] = {
    "sample": _sample,
    "majority": _majority,
    "best_of_n": _best_of_n,
    "first_finish": _first_finish,
    "early_exit": _early_exit,
    "deepconf": _deepconf,
    "beam": _beam,
    "dvts": _dvts,
    "astar": _astar,
    "particle": _particle,
    "particle_gibbs": _particle_gibbs,
    "parallel_tempering": _parallel_tempering,
    "adaptive_vote": _adaptive_vote,
    "rpc": _rpc,
    "adaptive_best_of_n": _adaptive_best_of_n,
    "solve_detect_verify": _solve_detect_verify,
    "budget_forcing": _budget_forcing,
    "genselect": _genselect,
    "rsa": _rsa,
    "fuse": _fuse,
    "archon": _archon,
}
#: each strategy's own parameters that a caller may set by name (the `ttc` object of `ttc serve`):
#: parameter -> its JSON type. `make_strategy(name, ..., **options)` refuses any other; the strategy's
#: constructor checks the values. A strategy without an entry has no own parameters beyond n.
_STEP_OPTIONS: dict[str, type] = {"max_steps": int, "aggregation": str, "select": str}
OPTIONS: dict[str, dict[str, type]] = {
    "best_of_n": {"selection": str},
    "first_finish": {"k": int, "require_answer": bool},
    "early_exit": {"every": int, "mode": str, "on_drop": str},
    "deepconf": {"warmup": int, "keep": float, "window": int, "top_k": int, "every": int},
    "beam": {"width": int, "expansions": int, "unique": bool, **_STEP_OPTIONS},
    "dvts": {"subtrees": int, "expansions": int, "unique": bool, **_STEP_OPTIONS},
    "astar": {"max_expansions": int, "cost_weight": float, "solutions": int, **_STEP_OPTIONS},
    "particle": {"resampling": str, "weight_by": str, "resample_threshold": float, **_STEP_OPTIONS},
    "particle_gibbs": {"particles": int, "iterations": int, "resampling": str, "weight_by": str,
                       "resample_threshold": float, **_STEP_OPTIONS},
    "parallel_tempering": {"particles": int, "iterations": int, "chains": int, "hottest_beta": float,
                           "resampling": str,
                           "weight_by": str, "resample_threshold": float, **_STEP_OPTIONS},
    "adaptive_vote": {"batch": int, "stop": str, "stream": bool},
    "rpc": {"prune": str, "normalise": bool, "dedup": bool},
    "adaptive_best_of_n": {"threshold": float, "batches": str},
    "solve_detect_verify": {"every": int, "rounds": int, "fast": int, "threshold": float, "slow": int,
                            "mode": str, "thinking": str},
    "budget_forcing": {"budget": int, "waits": int, "wait": str, "thinking": str, "answer_tokens": int,
                       "engine": str},
    "genselect": {"group_size": int, "max_prompt_tokens": int, "fallback": str},
    "rsa": {"k": int, "rounds": int, "max_prompt_tokens": int},
    "fuse": {"k": int, "fusions": int, "max_prompt_tokens": int},
    "archon": {"k": int, "fusions": int, "max_prompt_tokens": int},
}
# -- worst cases: what a strategy built by name can cost at most (`ttc serve` refuses past its caps) --
@dataclass(frozen=True)
class WorstCase:
    """The most a strategy built by name can ask of its generator: `sequences` generated at once
    (one request's n, or the requests one round sends together) and `tokens` generated in all
    (completion tokens of every request, before any budget cuts them). `sequences_from` /
    `tokens_from`: the parameters that set each, the one to name when a cap refuses it."""

    sequences: int
    tokens: int
    sequences_from: str = "n"
    tokens_from: str = "n"


def _steps_of(options: dict[str, Any]) -> int:
    return options.get("max_steps", StepConfig.max_steps)


def _wc_samples(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n independent samples of at most max_tokens each, all at once."""
    return WorstCase(n, n * max_tokens)


def _wc_sample(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    return WorstCase(1, max_tokens, "n", "max_tokens")


def _wc_early_exit(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """Each of n candidates: max_tokens, plus a 12-token elicited answer per probe (every `every`)."""
    every = max(1, options.get("every", 64))
    probes = -(-max_tokens // every)
    return WorstCase(n, n * (max_tokens + probes * 12), "n", "every")


def _wc_adaptive_best_of_n(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """At most n samples, each self-evaluated with a 1-token answer."""
    return WorstCase(n, n * (max_tokens + 1))


def _wc_solve_detect_verify(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """Each of n candidates: `rounds` traces of max_tokens, at worst a one-token completeness check per
    generated token and a 12-token answer each, and a verification of every round but the last
    (`fast` checks of 48 tokens, `slow` of 384); the fast checks of the n candidates run at once."""
    rounds = max(1, options.get("rounds", 2))
    fast = max(1, options.get("fast", 4))
    slow = options.get("slow", -(-fast // 4))
    per_round = 2 * max_tokens + 12
    verify = fast * 48 + slow * 384
    return WorstCase(n * fast, n * (rounds * per_round + (rounds - 1) * verify), "n",
                     "rounds" if "rounds" in options else "n")


def _wc_tree(width_key: str) -> Callable[[int, int, dict[str, Any]], WorstCase]:
    """Beam / DVTS: width x expansions steps per round (the factory's defaults from n), max_steps
    rounds of at most max_tokens (the per-step limit) each."""

    def worst(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
        width = options.get(width_key, max(1, n // 4))
        expansions = options.get("expansions", max(1, n // max(1, width)))
        at_once = width * expansions
        named = width_key if width >= expansions else "expansions"
        if width_key not in options and "expansions" not in options:
            named = "n"
        return WorstCase(at_once, at_once * _steps_of(options) * max_tokens, named,
                         "max_steps" if "max_steps" in options else named)

    return worst


def _wc_astar(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n steps per expansion, `max_expansions` expansions (default 2 x max_steps)."""
    expansions = options.get("max_expansions", 2 * _steps_of(options))
    return WorstCase(n, n * expansions * max_tokens, "n", "max_expansions" if "max_expansions" in options else "n")


def _wc_particle(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n particles, one step each per round, max_steps rounds."""
    return WorstCase(n, n * _steps_of(options) * max_tokens, "n", "max_steps" if "max_steps" in options else "n")


def _wc_particle_gibbs(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """`iterations` sweeps, one after the other, of at most `particles` particles (the factory's
    defaults from n), one step each per round, max_steps rounds."""
    iterations = max(1, options.get("iterations", 2))
    particles = options.get("particles", max(2, n // iterations))
    named = "particles" if "particles" in options else "n"
    return WorstCase(particles, iterations * particles * _steps_of(options) * max_tokens, named,
                     "max_steps" if "max_steps" in options else named)


def _wc_parallel_tempering(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """`chains` particle Gibbs chains whose sweeps run at the same time: chains x particles at once,
    times iterations x max_steps rounds of at most max_tokens each."""
    iterations = max(1, options.get("iterations", 2))
    chains = max(1, options.get("chains", 3))
    particles = options.get("particles", max(2, n // (iterations * chains)))
    named = "particles" if "particles" in options else ("chains" if "chains" in options else "n")
    return WorstCase(chains * particles, iterations * chains * particles * _steps_of(options) * max_tokens, named,
                     "max_steps" if "max_steps" in options else named)


def _wc_budget_forcing(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """Each of n candidates: waits + 1 thinking requests of at most budget + 1 tokens (the budget
    left, plus a start marker; a backend that ignores the end marker as a stop string may fill
    them), then at most 2 x answer_tokens of answer."""
    budget = options.get("budget", max_tokens)
    waits = options.get("waits", 0)
    answer = options.get("answer_tokens", 128)
    return WorstCase(n, n * ((waits + 1) * (budget + 1) + 2 * answer), "n", "budget")


def _wc_genselect(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n samples at once, then at most n - 1 selections (each removes at least one candidate), at most
    n // 2 of them at once."""
    return WorstCase(n, (2 * n - 1) * max_tokens)


def _wc_rsa(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """A population of n at once, rewritten `rounds` (default 2) times."""
    rounds = options.get("rounds", 2)
    return WorstCase(n, n * (1 + rounds) * max_tokens, "n", "rounds" if "rounds" in options else "n")


def _wc_fuse(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n samples, then `fusions` (default 1) fused candidates in one request."""
    fusions = options.get("fusions", 1)
    return WorstCase(max(n, fusions), (n + fusions) * max_tokens, "n" if n >= fusions else "fusions",
                     "fusions" if "fusions" in options else "n")


def _wc_archon(n: int, max_tokens: int, options: dict[str, Any]) -> WorstCase:
    """n samples, n critiques (at once), one ranking, `fusions` (default 1) fused candidates."""
    fusions = options.get("fusions", 1)
    return WorstCase(max(n, fusions), (2 * n + 1 + fusions) * max_tokens, "n" if n >= fusions else "fusions",
                     "fusions" if "fusions" in options else "n")


#: name -> worst(n, max_tokens per sequence or step, own options) -> WorstCase; one per STRATEGIES entry
WORST_CASES: dict[str, Callable[[int, int, dict[str, Any]], WorstCase]] = {
    "sample": _wc_sample,
    "majority": _wc_samples,
    "best_of_n": _wc_samples,
    "first_finish": _wc_samples,
    "early_exit": _wc_early_exit,
    "deepconf": _wc_samples,
    "beam": _wc_tree("width"),
    "dvts": _wc_tree("subtrees"),
    "astar": _wc_astar,
    "particle": _wc_particle,
    "particle_gibbs": _wc_particle_gibbs,
    "parallel_tempering": _wc_parallel_tempering,
    "adaptive_vote": _wc_samples,
    "rpc": _wc_samples,
    "adaptive_best_of_n": _wc_adaptive_best_of_n,
    "solve_detect_verify": _wc_solve_detect_verify,
    "budget_forcing": _wc_budget_forcing,
    "genselect": _wc_genselect,
    "rsa": _wc_rsa,
    "fuse": _wc_fuse,
    "archon": _wc_archon,
}


def worst_case(name: str, n: int, max_tokens: int, options: dict[str, Any] | None = None) -> WorstCase:
    """The most strategy `name` built with n, per-sequence (or per-step) max_tokens and its own
    parameters `options` can generate at once and in all (see `WorstCase`)."""
    return WORST_CASES[canonical_name(name)](n, max_tokens, dict(options or {}))


ALIASES = {"self_consistency": "majority", "vote": "majority", "bon": "best_of_n", "best-of-n": "best_of_n"}
ALIASES.update({"ffs": "first_finish", "first-finish": "first_finish", "early-exit": "early_exit"})
ALIASES.update({"adaptive": "adaptive_vote", "adaptive-vote": "adaptive_vote", "adaptive_consistency": "adaptive_vote"})
ALIASES.update({"deepconf_online": "deepconf", "deepconf-online": "deepconf"})
ALIASES.update({"beam_search": "beam", "beam-search": "beam", "a*": "astar", "a_star": "astar",
                "particle_filter": "particle", "particle-filter": "particle", "pf": "particle"})
ALIASES.update({"sdv": "solve_detect_verify", "solve-detect-verify": "solve_detect_verify"})
ALIASES.update({"budget-forcing": "budget_forcing", "s1": "budget_forcing"})
ALIASES.update({"gen_select": "genselect", "gen-select": "genselect", "recursive_self_aggregation": "rsa",
                "fusion": "fuse", "fuser": "fuse"})
ALIASES.update({"particle-gibbs": "particle_gibbs", "pg": "particle_gibbs", "parallel-tempering": "parallel_tempering",
                "pt": "parallel_tempering", "tempering": "parallel_tempering"})


def canonical_name(name: str) -> str:
    """The registered name of strategy `name` (aliases resolved); unknown names list the known ones."""
    key = ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    return key


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise `InvalidOption` unless every option is one of strategy `name`'s own parameters, of its type."""
    declared = OPTIONS.get(canonical_name(name), {})
    for key, value in options.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidOption(key, f"unknown parameter {key!r} for strategy {name!r}; its own parameters: {known}")
        kind = declared[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise InvalidOption(key, f"parameter {key!r} of strategy {name!r} must be {kind.__name__}, got {value!r}")


class InvalidOption(InvalidInput):
    """A strategy parameter that is not the strategy's, or not of its type; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def make_strategy(name: str, n: int = 8, verifier: Verifier | None = None, params: Any = DEFAULT_PARAMS,
                  **options: Any) -> Strategy:
    """The strategy called `name`, configured with n candidates and its own parameters `options`
    (see `OPTIONS`); unknown names list the known ones."""
    key = canonical_name(name)
    check_options(key, options)
    return STRATEGIES[key](n, verifier, params, **options) if options else STRATEGIES[key](n, verifier, params)


# -- replay on a sample bank (`ttc tune`): which strategies are functions of independent samples --
@dataclass(frozen=True)
class Replayability:
    """Whether `ttc tune` can evaluate a strategy from a recorded sample bank, and how (or why not).

    `exact`: the replay gives the answer the real strategy gives on a backend serving the bank's
    samples in order (tested); otherwise it is a documented approximation of the live strategy."""

    replayable: bool
    how: str
    exact: bool = False


_FRESH = "needs fresh generation beyond independent samples"
#: name -> Replayability; one per STRATEGIES entry (tests/test_tune_replay.py checks it), and
#: "shared_budget", the runner's token total shared across problems (not a strategy of its own)
REPLAY: dict[str, Replayability] = {
    "sample": Replayability(True, "the first sample of the subsample", exact=True),
    "majority": Replayability(True, "vote over the first n samples (weighted by a recorded verifier score too)",
                              exact=True),
    "best_of_n": Replayability(True, "the best of the first n samples by a recorded score (mean_logprob, or a "
                               "verifier recorded with --verifier)", exact=True),
    "adaptive_vote": Replayability(True, "rounds of `batch` samples taken in order until the real stopping rule "
                                   "stops", exact=True),
    "rpc": Replayability(True, "RPC's vote over the first n samples' recorded logprobs (pruning refitted per "
                         "subsample)", exact=True),
    "deepconf": Replayability(True, "warm-up = the first samples; each later trace truncated at the first "
                              "check (every `every` tokens) where a window's confidence from the recorded top "
                              "logprobs falls under the bar; its tokens counted to there"),
    "first_finish": Replayability(True, "the shortest of the first n samples wins (equal decoding speed "
                                  "assumed); the others are billed up to its length"),
    "shared_budget": Replayability(True, "`solve_many(total_budget=, allocation=)` running AdaptiveVote or "
                                   "MajorityVote: its allocation (worst-case reservations, waves, fewest samples "
                                   "first) replayed across all problems at once from each problem's ordering",
                                   exact=True),
    "early_exit": Replayability(False, f"{_FRESH}: its probes elicit answers mid-trace"),
    "adaptive_best_of_n": Replayability(False, f"{_FRESH}: the model's self-evaluation of each sample"),
    "solve_detect_verify": Replayability(False, f"{_FRESH}: its detector and verifier question the model "
                                                "mid-trace, and a rejected answer is solved again with feedback"),
    "budget_forcing": Replayability(False, f"{_FRESH}: the thinking is cut at the budget (or extended by "
                                           "\"Wait\") and the model answers after the injected end marker"),
    **{name: Replayability(False, f"{_FRESH}: a step search extends partial traces")
       for name in ("beam", "dvts", "astar", "particle", "particle_gibbs", "parallel_tempering")},
    **{name: Replayability(False, f"{_FRESH}: the model reads the candidates and writes a new answer or choice")
       for name in ("genselect", "rsa", "fuse", "archon")},
}


def replayability(name: str) -> Replayability:
    """How `ttc tune` can replay strategy `name` (or "shared_budget") from a sample bank (see `REPLAY`)."""
    return REPLAY[name] if name in REPLAY else REPLAY[canonical_name(name)]
