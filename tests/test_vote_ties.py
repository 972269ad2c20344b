"""A tied vote is won by the answer seen first, and recorded: `details["tie"]` lists the tied answers
(winner first) for every strategy that votes, and the CLI, the repr and the notebook display show it.
Equation answers vote with their values. Results carry the ttc and answer-rule versions."""

from __future__ import annotations

import json

import pytest

import ttc
from ttc.answers import ANSWER_RULES_VERSION
from ttc.backends import Scripted
from ttc.infos import ConfidenceVoteInfo, SearchInfo
from ttc.steps import select_answer
from ttc.strategies.adaptive_vote import AdaptiveVote
from ttc.strategies.rpc import rpc_vote
from ttc.types import Candidate, SamplingParams
from ttc.votes import weighted_vote

EQUATIONS = ["The answer is 17 + 25 = 42.", "The answer is 32.", "The answer is 42.", "So 17 + 25 = 32"]


def boxed(*answers):
    return Scripted([f"so the answer is \\boxed{{{a}}}" for a in answers])


def test_a_tie_is_recorded_with_the_winner_first():
    assert weighted_vote(["3", "4", "4", "3"]) == ("3", {"3": 2.0, "4": 2.0}, {"tie": ("3", "4")})
    assert weighted_vote(["4", "3", "3", "4"])[2] == {"tie": ("4", "3")}
    assert weighted_vote(["3", "4", "4"])[2] == {}  # one leader: no tie
    assert weighted_vote(["1", "2", "3"], [0.5, 0.25, 0.5])[2] == {"tie": ("1", "3")}
    assert weighted_vote(["1", "2", "3"], [0.5, 0.25, 0.4])[2] == {}


def test_a_tie_of_the_all_zero_fallback_is_recorded_by_its_counts():
    answer, _, info = weighted_vote(["1", "2", "2", "1"], [0.0] * 4)
    assert answer == "1" and info["tie"] == ("1", "2") and "vote_fallback" in info


def test_majority_records_the_tie_of_equations_and_their_values():
    result = ttc.MajorityVote(n=4).solve("What is 17 + 25?", Scripted(EQUATIONS))
    assert [c.answer for c in result.candidates] == ["42", "32", "42", "32"]
    assert result.answer == "42"
    assert result.details["votes"] == {"42": 2.0, "32": 2.0}
    assert result.details["tie"] == ["42", "32"]
    assert json.loads(json.dumps(result.to_dict()))["details"]["tie"] == ["42", "32"]


def test_a_vote_without_a_tie_records_none():
    result = ttc.MajorityVote(n=3).solve("q", boxed("3", "3", "4"))
    assert "tie" not in result.details and result.details.tie is None
    assert "tie" not in repr(result) and "tie" not in result._repr_html_() and "tie" not in result._repr_markdown_()


def test_the_repr_and_the_notebook_display_show_a_tie():
    result = ttc.MajorityVote(n=4).solve("q", Scripted(EQUATIONS))
    assert "tie=['42', '32']" in repr(result)
    line = "tie: 2 answers shared the most votes; 42 won as the one seen first (also tied: 32)"
    assert line in result._repr_markdown_()
    assert "class='ttc-tie'" in result._repr_html_() and "42 won as the one seen first" in result._repr_html_()


def test_cli_run_shows_the_tie(monkeypatch, capsys):
    import ttc.cli as cli

    monkeypatch.setattr(cli, "make_backend", lambda *a, **k: Scripted(EQUATIONS))
    assert cli.main(["run", "What is 17 + 25?", "--n", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "answer: 42\n" in out and "votes: {'42': 2.0, '32': 2.0}" in out
    assert "tie: 2 answers shared the most votes; 42 won as the one seen first (also tied: 32)" in out


def test_adaptive_vote_records_a_tie():
    result = AdaptiveVote(max_n=2, batch=2).solve("q", boxed("1", "2"))
    assert result.details["tie"] == ["1", "2"] and result.details.tie == ("1", "2")


def test_first_finish_records_a_tie():
    result = ttc.FirstFinish(n=2, k=2, params=SamplingParams(max_tokens=50)).solve("q", boxed("1", "2"))
    assert sorted(result.details["tie"]) == ["1", "2"]
    assert result.details["tie"][0] == result.answer  # the earliest finisher wins


def test_rpc_records_a_tie():
    answer, info = rpc_vote(["1", "2", "2", "1"], [0.0] * 4, [1] * 4, prune="none", dedup=False)
    assert answer == "1" and info["tie"] == ("1", "2")


def test_step_search_votes_and_deepconf_records_hold_a_tie():
    cands = [Candidate(text=a, answer=a) for a in ("1", "2")]
    answer, chosen = select_answer(cands, [1.0, 1.0], "weighted")
    assert answer == "1" and chosen["tie"] == ("1", "2")
    info = SearchInfo(select="weighted", nodes=3, finished=2, generated=2, stopped_by="search_complete", **chosen)
    assert info["tie"] == ["1", "2"]
    answer, votes, vote_info = weighted_vote(["7", "3"], [2.0, 2.0])
    record = ConfidenceVoteInfo(threshold=1.0, keep=0.5, warmup=2, online=0, confidences=(2.0, 2.0), voters=(0, 1),
                                votes=votes, stopped=0, **vote_info)
    assert record["tie"] == ["7", "3"]


@pytest.mark.parametrize("strategy", [ttc.MajorityVote(n=2), ttc.Sample()])
def test_results_carry_the_ttc_and_answer_rule_versions(strategy):
    result = strategy.solve("q", boxed("1", "2"))
    assert ANSWER_RULES_VERSION == 2
    assert result.versions == {"ttc_version": ttc.__version__, "answer_rules": 2}
    record = result.to_dict()
    assert (record["ttc_version"], record["answer_rules"]) == (ttc.__version__, 2)


def test_eval_records_carry_the_versions(tmp_path):
    from ttc.eval import evaluate

    out = tmp_path / "r.jsonl"
    evaluate("majority", [ttc.Problem(question="1 + 1?", answer="2", id="p0")], boxed("2", "2"), n=2,
             output=out, progress=False, save_report=False)
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["ttc_version"], record["answer_rules"]) == (ttc.__version__, ANSWER_RULES_VERSION)


def test_resuming_a_file_graded_by_older_answer_rules_warns(tmp_path):
    from ttc.eval import evaluate
    from ttc.eval.results import ResultsWarning

    out = tmp_path / "r.jsonl"
    problems = [ttc.Problem(question=f"{i} + 1?", answer=str(i + 1), id=f"p{i}") for i in range(2)]
    evaluate("majority", problems[:1], boxed("1"), n=1, output=out, progress=False, save_report=False)
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    del record["answer_rules"]  # a file written before the rules were versioned: version 1
    out.write_text(json.dumps(record) + "\n")
    with pytest.warns(ResultsWarning, match=r"graded by answer rules \[1\], this run grades by 2"):
        evaluate("majority", problems, boxed("2"), n=1, output=out, progress=False, save_report=False)
