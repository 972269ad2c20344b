"""Evaluation harness: datasets, a resumable runner that streams JSONL, and reports.

    import ttc
    report = ttc.eval.evaluate("majority", "gsm8k", llm, n=[1, 4, 16], limit=50, output="results.jsonl")
    report                                    # a table per setting; report.plot() draws accuracy vs tokens
"""

from ttc.eval.datasets import DATASETS, DatasetWarning, load_dataset
from ttc.eval.report import EvalReport, SettingSummary, pass_at_k, wilson_interval
from ttc.eval.results import ResultsWarning, read_results
from ttc.eval.runner import Setting, acompare, aevaluate, compare, evaluate, n_for_budget

__all__ = ["DATASETS", "DatasetWarning", "EvalReport", "ResultsWarning", "Setting", "SettingSummary", "acompare",
           "aevaluate", "compare", "evaluate", "load_dataset", "n_for_budget", "pass_at_k", "read_results",
           "wilson_interval"]
