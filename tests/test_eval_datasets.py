"""ttc.eval.load_dataset: named datasets, files, lists, and clear errors for bad input."""

import gzip
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import ttc
from ttc.data import DATA_DIR
from ttc.eval import DatasetWarning, load_dataset
from ttc.eval.datasets import data_dirs, gsm8k_gold, local_copy

#: a few rows of GSM8K's train split (the split is not packaged): tests point $TTC_DATA_DIR here
TEST_DATA = Path(__file__).resolve().parent / "data"


def test_gsm8k_gold_is_text_after_hashes_without_commas():
    assert gsm8k_gold("She makes 9 * 2 = $18.\n#### 18") == "18"
    assert gsm8k_gold("... so 1,000 + 234 = 1,234\n#### 1,234") == "1234"
    assert gsm8k_gold(" 42 ") == "42"


def require_local_copy(name: str) -> None:
    """The packaged datasets are part of ttc: missing, the test fails (never skips)."""
    if local_copy(name, "test") != DATA_DIR / f"{name}_test.jsonl.gz":
        pytest.fail(f"{name}'s test split is not read from the copy packaged with ttc (src/ttc/data)")


def test_gsm8k_loads_from_the_packaged_copy_with_clean_gold_answers(monkeypatch):
    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
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
    # the train split is not packaged: a copy in $TTC_DATA_DIR serves it
    monkeypatch.setenv("TTC_DATA_DIR", str(TEST_DATA))
    train = load_dataset("gsm8k", split="train", limit=3)
    assert [p.id for p in train] == ["gsm8k-train-0", "gsm8k-train-1", "gsm8k-train-2"]
    assert train[0].question.startswith("Natalia") and train[0].answer == "72"
    assert load_dataset("gsm8k", limit=1)[0].answer == "18"  # the test split still comes from the package


def test_math500_uses_the_answer_field(monkeypatch):
    monkeypatch.delenv("TTC_DATA_DIR", raising=False)
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


@pytest.mark.parametrize("env, why", [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
                                       ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "127.0.0.1:9: ConnectionRefusedError")])
def test_a_split_nowhere_local_fails_fast_offline_naming_the_file_and_the_variable(tmp_path, env, why):
    """gsm8k's train split is not packaged; with the hub unreachable (switched off, or refusing) only
    the local datasets cache is asked, and the error says which file to put where. A fresh process:
    the hub library reads its settings at import."""
    code = ("import ttc.eval\n"
            "try:\n    ttc.eval.load_dataset('gsm8k', split='train')\n"
            "except ttc.InvalidInput as e:\n    print('InvalidInput:', e)\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("TTC_DATA_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "HF_HOME": str(tmp_path / "hf")},
                         capture_output=True, text=True, timeout=120)
    assert (f"InvalidInput: could not load dataset 'openai/gsm8k' with the datasets library: the hub is "
            f"unreachable ({why}") in out.stdout, out.stdout + out.stderr
    assert "not in the local datasets cache; to use a local copy, put gsm8k_train.jsonl in a folder and set " \
           "$TTC_DATA_DIR to it" in out.stdout


def test_gzipped_jsonl_files_load_like_plain_ones(tmp_path):
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"question": "q?", "answer": "x\n#### 1,234"}) + "\n")
    [problem] = load_dataset(path)
    assert (problem.id, problem.answer) == ("mine-0", "1234")


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
    assert ("the hub is unreachable (HF_DATASETS_OFFLINE is set) and it is not in the local datasets cache; save it as "
            "a .jsonl file where the hub is reachable and pass the file's path") in out.stdout


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
