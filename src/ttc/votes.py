"""The one rule for verifier scores and weighted votes, shared by every strategy.

Scores (outcome verifiers, PRM values used as weights):
- NaN and +inf are refused with an error naming the verifier: they are bugs, not judgements;
- -inf means "the worst": weight 0 in a weighted vote, probability 0 in soft best-of-N;
- a verifier that declares `log_scale = True` (its scores are log-probabilities, e.g. mean token
  logprob) has its scores exponentiated before they weight a vote, so agreement adds up instead of
  cancelling out (summing negative numbers made the *minority* answer win);
- any other negative weight is refused: a vote weight is a non-negative amount of belief.

Votes: the answer with the largest total weight wins. A tie (two or more groups with exactly the
same largest total) goes to the group whose first answer came first (the candidates' order: the
order they were drawn, or finished, in), and is recorded: `details["tie"]` lists the tied answers
in that order, the winner first. When every weight is 0 (e.g. a confidence filter that dropped
every trace) the weighted vote says nothing, so the unweighted plurality decides instead, and
`details["vote_fallback"]` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ttc import answers
from ttc.errors import InvalidInput

#: details["vote_fallback"] when every weight was 0
ALL_ZERO_FALLBACK = "every weight was 0: unweighted plurality"


def check_scores(name: str, scores: Sequence[float]) -> list[float]:
    """`scores` as floats; NaN or +inf raise InvalidInput naming the verifier `name`."""
    out = [float(s) for s in scores]
    for s in out:
        if math.isnan(s) or s == math.inf:
            raise InvalidInput(f"verifier {name!r} returned the score {s}: scores must be numbers "
                               f"(-inf for 'worst'), never NaN or +inf")
    return out


def vote_weights(name: str, scores: Sequence[float], log_scale: bool = False) -> list[float]:
    """Vote weights from the scores of verifier `name`: exp(score) for log-scale scores, the score
    itself otherwise; -inf gives 0; other negative (non-log-scale) scores raise InvalidInput."""
    out = []
    for s in check_scores(name, scores):
        if log_scale:
            if s > 700:  # exp would overflow; a log-probability is <= 0 anyway
                raise InvalidInput(f"verifier {name!r} declares log-scale scores but returned {s}")
            out.append(math.exp(s))  # exp(-inf) == 0.0
        elif s == -math.inf:
            out.append(0.0)
        elif s < 0:
            raise InvalidInput(f"verifier {name!r} returned the negative score {s}, which cannot weight a vote: "
                               f"weights must be >= 0 (or declare the verifier's scores log-scale: "
                               f"log_scale = True, and they are exponentiated)")
        else:
            out.append(s)
    return out


def weighted_vote(candidate_answers: Sequence[str | None], weights: Sequence[float] | None = None
                  ) -> tuple[str | None, dict[str, float], dict[str, Any]]:
    """(answer, votes, info): the answer whose equivalence group has the largest total weight.

    `weights` (one per answer, non-negative: see `vote_weights`) default to 1 each. Answers that
    are None do not vote. Ties go to the group seen first, and info["tie"] holds the tied answers
    (winner first). If the groups' totals are all 0 the unweighted plurality decides, and
    info["vote_fallback"] says so.
    """
    if weights is None:
        weights = [1.0] * len(candidate_answers)
    if len(weights) != len(candidate_answers):
        raise InvalidInput(f"{len(weights)} weights for {len(candidate_answers)} answers")
    groups = answers.group(list(candidate_answers))
    votes = {candidate_answers[g[0]]: math.fsum(weights[i] for i in g) for g in groups}
    if not votes:
        return None, votes, {}
    info: dict[str, Any] = {}
    decide = votes
    if all(v == 0 for v in votes.values()):
        decide = {candidate_answers[g[0]]: float(len(g)) for g in groups}
        info["vote_fallback"] = ALL_ZERO_FALLBACK
    answer = max(decide, key=decide.get)  # max keeps the first of equals
    tied = tied_answers(decide)
    if tied:
        info["tie"] = tied
    return answer, votes, info


def tied_answers(votes: dict[str, float]) -> tuple[str, ...] | None:
    """The answers that share the largest total, in the votes' order (the first is the one a tie
    gives the win to); None when one answer leads alone."""
    if not votes:
        return None
    top = max(votes.values())
    tied = tuple(a for a, v in votes.items() if v == top)
    return tied if len(tied) > 1 else None
