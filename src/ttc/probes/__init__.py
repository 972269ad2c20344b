"""Probes look at a partial trace and say whether to stop: answer consistency (Dynasor),
token confidence (DeepConf), hidden-state exit probes with conformal calibration (LYNX)."""

from ttc.probes.answer_consistency import AnswerConsistency
from ttc.probes.any_of import AnyOf
from ttc.probes.base import BOXED_SUFFIX, PLAIN_SUFFIX, Decision, Probe, TraceState, elicit_answer
from ttc.probes.completion import HESITATION_WORDS, SolutionComplete
from ttc.probes.confidence import (
    ConfidenceFilter,
    TokenConfidence,
    calibrate_threshold,
    group_confidences,
    lowest_group_confidence,
    token_confidences,
)
from ttc.probes.conformal import conformal_threshold, fit_logistic, premature_exit_rate
from ttc.probes.es_cot import ESCoT, run_jump, run_lengths
from ttc.probes.hidden_state import DEFAULT_CUES, HiddenStateProbe, LinearProbe, find_cues

__all__ = [
    "BOXED_SUFFIX",
    "DEFAULT_CUES",
    "PLAIN_SUFFIX",
    "AnswerConsistency",
    "AnyOf",
    "ConfidenceFilter",
    "Decision",
    "HiddenStateProbe",
    "LinearProbe",
    "Probe",
    "TokenConfidence",
    "TraceState",
    "calibrate_threshold",
    "conformal_threshold",
    "elicit_answer",
    "find_cues",
    "fit_logistic",
    "group_confidences",
    "lowest_group_confidence",
    "premature_exit_rate",
    "token_confidences",
]
__all__ += ["ESCoT", "run_jump", "run_lengths"]
__all__ += ["HESITATION_WORDS", "SolutionComplete"]
