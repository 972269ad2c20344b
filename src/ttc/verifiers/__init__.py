"""Verifiers score candidates: programmatic checks, logprob confidence, reward models, judges."""

from ttc.verifiers.base import Verifier, score_candidates
from ttc.verifiers.confidence import LogprobConfidence
from ttc.verifiers.programmatic import Programmatic, gold_answer_oracle

__all__ = ["LogprobConfidence", "Programmatic", "Verifier", "gold_answer_oracle", "score_candidates"]
