"""Reference docstrings (issue 13): every public strategy, verifier and probe names its source and
deviations, documents its arguments, and carries an example that runs (doctest, Scripted backend)."""

import doctest
import importlib

import pytest

import ttc
from ttc import probes, verifiers
from ttc.strategies.first_finish import StreamSample

#: module -> its public classes whose docstrings follow the template
DOCUMENTED = {
    "ttc.strategies.sample": [ttc.Sample],
    "ttc.strategies.majority": [ttc.MajorityVote],
    "ttc.strategies.best_of_n": [ttc.BestOfN],
    "ttc.strategies.first_finish": [StreamSample, ttc.FirstFinish],
    "ttc.strategies.early_exit": [ttc.EarlyExit],
    "ttc.strategies.deepconf": [ttc.DeepConf],
    "ttc.strategies.beam": [ttc.BeamSearch, ttc.DVTS],
    "ttc.strategies.astar": [ttc.AStar],
    "ttc.strategies.particle": [ttc.ParticleFilter],
    "ttc.strategies.particle_gibbs": [ttc.ParticleGibbs, ttc.ParallelTempering],
    "ttc.strategies.adaptive_vote": [ttc.AdaptiveVote],
    "ttc.strategies.rpc": [ttc.RPC],
    "ttc.strategies.adaptive_best_of_n": [ttc.AdaptiveBestOfN],
    "ttc.strategies.genselect": [ttc.GenSelect],
    "ttc.strategies.rsa": [ttc.RSA],
    "ttc.strategies.layers": [ttc.Fuse, ttc.Rank, ttc.Critique, ttc.Verify],
    "ttc.probes.es_cot": [probes.ESCoT],
    "ttc.verifiers.confidence": [verifiers.LogprobConfidence],
    "ttc.verifiers.judge": [verifiers.LLMJudge],
    "ttc.verifiers.process": [verifiers.ProgrammaticPRM, verifiers.PRMVerifier],
    "ttc.verifiers.programmatic": [verifiers.Programmatic],
    "ttc.verifiers.remote_prm": [verifiers.RemotePRM],
    "ttc.probes.answer_consistency": [probes.AnswerConsistency],
    "ttc.probes.confidence": [probes.TokenConfidence, probes.ConfidenceFilter],
    "ttc.probes.hidden_state": [probes.HiddenStateProbe],
    "ttc.probes.any_of": [probes.AnyOf],
}


#: transformers PRMs: their examples need model weights (docs/verifiers.md and tests/test_reward_models.py)
NEEDS_WEIGHTS = {"HFProcessRewardModel", "MathShepherdPRM", "QwenPRM"}


def public_classes(package, base):
    return {obj for name in package.__all__ if name not in NEEDS_WEIGHTS
            and isinstance(obj := getattr(package, name), type)
            and issubclass(obj, base) and not getattr(obj, "__abstractmethods__", None)}


def test_every_public_strategy_verifier_and_probe_is_checked():
    listed = {cls for classes in DOCUMENTED.values() for cls in classes}
    strategies = public_classes(ttc.strategies, ttc.Strategy)
    strategies.discard(ttc.Sampler)
    assert strategies <= listed, strategies - listed
    assert public_classes(probes, probes.Probe) <= listed
    outcome = public_classes(verifiers, verifiers.Verifier) | public_classes(verifiers, verifiers.ProcessRewardModel)
    assert outcome <= listed, outcome - listed


@pytest.mark.parametrize("cls", [c for classes in DOCUMENTED.values() for c in classes], ids=lambda c: c.__name__)
def test_docstring_follows_the_template(cls):
    doc = cls.__doc__ or ""
    assert "Deviations" in doc or "deviations" in doc, "name the deviations from the source (or say there are none)"
    assert "\n    Args:\n" in doc and "\n    Example" in doc and ">>> " in doc
    assert doc.index("Args:") < doc.index("Example")


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    ran = set()
    for test in finder.find(mod, module, globs={}):
        if test.examples:
            runner.run(test)
            ran.add(test.name.rsplit(".", 1)[-1])
    assert {c.__name__ for c in DOCUMENTED[module]} <= ran
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {module}"
