"""ttc.eval.load_dataset: named datasets, files, lists, and clear errors for bad input."""

import json
import os
import subprocess
import sys
import warnings

import pytest

import ttc
from ttc.eval import DatasetWarning, load_dataset
from ttc.eval.datasets import data_dirs, gsm8k_gold, local_copy


def test_gsm8k_gold_is_text_after_hashes_without_commas():
    assert gsm8k_gold("She makes 9 * 2 = $18.\n#### 18") == "18"
    assert gsm8k_gold("... so 1,000 + 234 = 1,234\n#### 1,234") == "1234"
    assert gsm8k_gold(" 42 ") == "42"


def require_local_copy(name: str) -> None:
    """The local datasets are part of the test environment: missing, the test fails (never skips)."""
    if local_copy(name, "test") is None:
        pytest.fail(f"no local copy of {name} (../shared/data or $TTC_DATA_DIR): the dataset tests need it")


def test_gsm8k_loads_from_the_local_copy_with_clean_gold_answers():
    require_local_copy("gsm8k")
    problems = load_dataset("gsm8k", limit=5)
    assert len(problems) == 5
    assert problems[0].id == "gsm8k-test-0"
    assert problems[0].question.startswith("Janet")
    assert problems[0].answer == "18"
    assert "####" in problems[0].metadata["raw_answer"]  # the full solution is kept
    everything = load_dataset("gsm8k")
    assert len(everything) == 1319
    assert all("," not in p.answer and "####" not in p.answer for p in everything)
    assert all(ttc.answers.extract(f"#### {p.answer}") is not None for p in everything[:50])
    assert len(load_dataset("gsm8k", split="train", limit=3)) == 3


def test_math500_uses_the_answer_field():
    require_local_copy("math500")
    problems = load_dataset("math500", limit=3)
    assert problems[0].id == "math500-test-0"
    assert problems[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert problems[0].metadata["subject"] == "Precalculus"
    assert len(load_dataset("MATH-500")) == 500


def test_named_dataset_resolves_to_TTC_DATA_DIR_first(tmp_path, monkeypatch):
    (tmp_path / "gsm8k_test.jsonl").write_text(json.dumps({"question": "q?", "answer": "x\n#### 2,500"}) + "\n")
    monkeypatch.setenv("TTC_DATA_DIR", str(tmp_path))
    assert data_dirs()[0] == tmp_path
    [problem] = load_dataset("gsm8k")
    assert problem.answer == "2500" and problem.id == "gsm8k-test-0"


def test_unknown_split_of_a_named_dataset_is_an_error():
    with pytest.raises(ttc.InvalidInput, match="no split 'validation'; known: test, train"):
        load_dataset("gsm8k", split="validation")


def test_jsonl_with_custom_field_names(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"p{i}", "target": i * 10, "level": i}) for i in range(4)))
    problems = load_dataset(str(path), question_field="prompt", answer_field="target", limit=3)
    assert [(p.id, p.question, p.answer) for p in problems] == [("mine-0", "p0", "0"), ("mine-1", "p1", "10"),
                                                                ("mine-2", "p2", "20")]
    assert problems[1].metadata["level"] == 1
    # the same fields are found without being named
    assert [p.answer for p in load_dataset(path)] == ["0", "10", "20", "30"]


def test_missing_answer_field_names_the_field_and_the_available_fields(tmp_path):
    path = tmp_path / "no_answer.jsonl"
    path.write_text(json.dumps({"question": "q", "solution": "s"}) + "\n")
    with pytest.raises(ttc.InvalidInput) as info:
        load_dataset(path)
    message = str(info.value)
    assert "no answer field" in message and "'answer'" in message
    assert "available fields: 'question', 'solution'" in message
    with pytest.raises(
        ttc.InvalidInput, match=r"no answer field 'gold_label'; available fields: 'question', 'solution'"
    ):
        load_dataset(path, answer_field="gold_label")
    with pytest.raises(ttc.InvalidInput, match="no question field 'text'"):
        load_dataset(path, question_field="text", answer_field="solution")


def test_malformed_jsonl_line_is_reported_with_its_line_number_and_the_rest_kept(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(
        json.dumps({"question": "a", "answer": "1"}) + "\n"
        + '{"question": "b", "answer": \n'        # line 2: malformed
        + "\n"                                       # blank lines are fine
        + json.dumps({"question": "c", "answer": "3"}) + "\n"
        + "[1, 2]\n"                                 # line 5: not an object
        + json.dumps({"question": "d"}) + "\n"       # line 6: no answer
        + json.dumps({"question": "e", "answer": "5"}) + "\n")
    with pytest.warns(DatasetWarning) as caught:
        problems = load_dataset(path)
    messages = [str(w.message) for w in caught]
    assert any("line 2: malformed JSON" in m for m in messages), messages
    assert any("line 5: expected a JSON object" in m for m in messages), messages
    assert any("line 6: no answer in field 'answer'" in m for m in messages), messages
    assert len(messages) == 3
    assert [p.question for p in problems] == ["a", "c", "e"]
    # ids count every record, so fixing line 2 later does not renumber the others
    assert [p.id for p in problems] == ["broken-0", "broken-2", "broken-5"]


def test_parquet_file_and_folder_load_through_the_datasets_library(tmp_path):
    import pandas as pd
    folder = tmp_path / "hub_like"
    folder.mkdir()
    frame = pd.DataFrame({"problem": ["x?", "y?"], "answer": ["1", "2"], "unique_id": ["u1", "u2"]})
    frame.to_parquet(folder / "test.parquet")
    problems = load_dataset(str(folder / "test.parquet"))
    assert [(p.id, p.question, p.answer) for p in problems] == [("u1", "x?", "1"), ("u2", "y?", "2")]
    # a folder goes through datasets.load_dataset(folder), the same call as a hub id
    assert [p.answer for p in load_dataset(str(folder))] == ["1", "2"]  # its only split, "test"
    assert load_dataset(str(folder), split="test")[0].id == "u1"


def test_unreachable_hub_id_is_a_clear_error():
    # a fresh process, so that the hub library reads the offline switch (no 25 s of retries)
    code = ("import ttc.eval\n"
            "try:\n    ttc.eval.load_dataset('nobody/no-such-dataset')\n"
            "except ttc.InvalidInput as e:\n    print('InvalidInput:', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "InvalidInput: could not load dataset 'nobody/no-such-dataset' with the datasets library" in out.stdout, \
        out.stdout + out.stderr


def test_python_list_of_problems_dicts_and_strings():
    problems = load_dataset([ttc.Problem("a?", "1"), {"problem": "b?", "answer": 2}, "c?",
                             ttc.Problem("d?", "4", id="mine")])
    assert [(p.id, p.question, p.answer) for p in problems] == [
        ("problem-0", "a?", "1"), ("problem-1", "b?", "2"), ("problem-2", "c?", None), ("mine", "d?", "4")]
    with pytest.raises(ttc.InvalidInput, match="item 1: expected a Problem"):
        load_dataset(["ok?", 42])
    with pytest.raises(ttc.InvalidInput, match="duplicate problem id 'x'"):
        load_dataset([ttc.Problem("a", "1", id="x"), ttc.Problem("b", "2", id="x")])


def test_missing_file_and_unknown_name_are_clear_errors(tmp_path):
    with pytest.raises(ttc.InvalidInput, match="does not exist"):
        load_dataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(ttc.InvalidInput, match="unknown dataset 'gsm9k'.*gsm8k, math500"):
        load_dataset("gsm9k")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset([]) == []
