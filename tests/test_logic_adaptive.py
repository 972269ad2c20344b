"""Pins found by mutation testing (scripts/mutation.py) of the adaptive strategies added with
issue 15: the stopping rules, RPC, adaptive best-of-N, ES-CoT and the shared budget. Each test names
the mutants it kills; all are deterministic."""

import pytest

from ttc.errors import InvalidInput
from ttc.stopping import BetaStop, WindowStop, beta_leader_probability


# -- ttc.stopping --------------------------------------------------------------------------------
def test_rule_repr_names_its_settings():
    # kills: StoppingRule.__repr__ statements dropped
    assert repr(BetaStop(confidence=0.9, min_samples=2)) == "BetaStop(confidence=0.9, min_samples=2)"
    assert repr(WindowStop(3)) == "WindowStop(window=3)"


def test_window_of_one_and_the_window_edges():
    # kills: `window < 1` -> `<= 1` / `< 2` (a window of 1 is legal: stop at the first answer)
    assert WindowStop(1).should_stop(["7"]) is True
    assert WindowStop(1).should_stop([None]) is False
    # kills: chunk = answers[start:start + w + 1] (the first window is [1, 1]; the third sample is outside it)
    assert WindowStop(2).should_stop(["1", "1", "2"]) is True
    # kills: the final `return False` dropped (None is not False)
    assert WindowStop(2).should_stop(["1", "2"]) is False


def test_beta_probability_refuses_negative_counts():
    # kills: the guard dropped, `or` -> `and`, `< 0` -> `< -1` on either count
    for leader, runner_up in ((-1, 0), (0, -1), (-1, 5), (5, -1)):
        with pytest.raises(InvalidInput):
            beta_leader_probability(leader, runner_up)


def test_beta_probability_edges():
    # kills: `top[0] > 0` -> `>= 0` / `> -1` (no votes: 0, not Beta(1, 1)'s 1/2), and `> 1` (one vote: 3/4)
    assert BetaStop.probability([]) == 0.0
    assert BetaStop().leader_probability([None, None]) == 0.0
    assert BetaStop.probability([1]) == 0.75
    assert BetaStop.probability([1, 1]) == 0.5
    # kills: `probability >= confidence` -> `>` (P = 3/4 exactly reaches a confidence of 3/4)
    assert BetaStop(confidence=0.75).should_stop(["7"]) is True
    assert BetaStop(confidence=0.76).should_stop(["7"]) is False
    # kills: `0.5 <= confidence` -> `0.5 < confidence` (1/2 is a legal confidence)
    assert BetaStop(confidence=0.5).confidence == 0.5
