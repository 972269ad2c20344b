"""Evaluation datasets: GSM8K, MATH-500, any JSONL/Parquet/JSON/CSV file, a hub id, or a Python list.

    problems = load_dataset("gsm8k", split="test", limit=50)        # packaged with ttc: works offline
    problems = load_dataset("math500")
    problems = load_dataset("my_data.jsonl", question_field="prompt", answer_field="target")
    problems = load_dataset([{"question": "2+2?", "answer": "4"}, "What is 3+5?"])

Every loader returns a list of `ttc.Problem` with a stable `id` (the dataset name and the record's
position in the source), the gold answer as a string, and the other fields in `metadata`.

Names resolve to a local copy first: `$TTC_DATA_DIR/<name>_<split>.jsonl` (or `.jsonl.gz`,
`.parquet`), then the copies packaged with ttc (GSM8K's test split and MATH-500, `ttc.data`); only
when neither has it is the name's Hugging Face hub id loaded with the `datasets` library (the `eval`
extra). An unreachable hub fails at once, naming the file wanted and `$TTC_DATA_DIR`.

JSONL files (also gzipped, `.jsonl.gz`) are read line by line by ttc itself (not by `datasets`,
whose JSON loader rejects a whole file for one bad line): a malformed line is reported with its
line number, as a warning, and the other lines are kept. Parquet, JSON, CSV files, folders and hub ids go through
`datasets.load_dataset`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttc._extras import require
from ttc.data import DATA_DIR, packaged
from ttc.errors import InvalidInput
from ttc.types import Problem

#: field names tried, in order, when none is given
QUESTION_FIELDS = ("question", "problem", "prompt", "input", "query")
ANSWER_FIELDS = ("answer", "final_answer", "gold", "target", "label", "output")
ID_FIELDS = ("id", "unique_id", "problem_id", "idx")


class DatasetWarning(UserWarning):
    """A record of a dataset could not be used and was skipped (malformed line, missing field)."""


def gsm8k_gold(answer: Any) -> str:
    """GSM8K's gold answer: the text after the last '####', with thousands separators removed.

    `"... so she makes 9 * 2 = $18.\\n#### 1,018"` -> `"1018"`. Text without '####' is returned
    stripped (commas removed), so already-clean answers pass through.
    """
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip().replace(",", "")


def raw_gold(answer: Any) -> str:
    """The answer field as it is (stripped); numbers become their string form."""
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    return str(answer).strip()


def auto_gold(answer: Any) -> str:
    """GSM8K format when the text has '####', else the answer as it is."""
    return gsm8k_gold(answer) if isinstance(answer, str) and "####" in answer else raw_gold(answer)


ANSWER_FORMATS: dict[str, Callable[[Any], str]] = {"gsm8k": gsm8k_gold, "raw": raw_gold, "auto": auto_gold}


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: where its local copy and hub copy are, and how to read its records."""

    name: str
    hub_id: str
    hub_config: str | None
    splits: tuple[str, ...]
    default_split: str
    question_field: str
    answer_field: str
    answer_format: str


DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("gsm8k", "openai/gsm8k", "main", ("test", "train"), "test",
                         "question", "answer", "gsm8k"),
    "math500": DatasetSpec("math500", "HuggingFaceH4/MATH-500", None, ("test",), "test",
                           "problem", "answer", "raw"),
}
_ALIASES = {"gsm8k": "gsm8k", "gsm-8k": "gsm8k", "math500": "math500", "math-500": "math500",
            "math_500": "math500"}
_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".parquet", ".csv")
#: the environment variable naming a folder of local dataset copies (`<name>_<split>.jsonl`)
DATA_DIR_VARIABLE = "TTC_DATA_DIR"


def data_dirs() -> list[Path]:
    """Where local copies of named datasets are looked for, in order: $TTC_DATA_DIR, then the
    copies packaged with ttc."""
    dirs = []
    if os.environ.get(DATA_DIR_VARIABLE):
        dirs.append(Path(os.environ[DATA_DIR_VARIABLE]).expanduser())
    return dirs + [DATA_DIR]


def local_copy(name: str, split: str) -> Path | None:
    """The local file of dataset `name` and `split`: $TTC_DATA_DIR's, else the packaged one, else None."""
    if os.environ.get(DATA_DIR_VARIABLE):
        folder = Path(os.environ[DATA_DIR_VARIABLE]).expanduser()
        for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
            path = folder / f"{name}_{split}{suffix}"
            if path.is_file():
                return path
    return packaged(name, split)


def load_dataset(source: str | os.PathLike | Sequence[Any] | Any, split: str | None = None,
                 limit: int | None = None, *, question_field: str | None = None,
                 answer_field: str | None = None, id_field: str | None = None,
                 answer_format: str | Callable[[Any], str] | None = None,
                 hub_config: str | None = None, require_answer: bool = True) -> list[Problem]:
    """Load evaluation problems.

    source: "gsm8k" or "math500" (a copy in $TTC_DATA_DIR, else the one packaged with ttc, else
        the hub); a path to a .jsonl(.gz), .parquet, .json or .csv file or a folder of them; a
        Hugging Face hub id ("org/name"); a `datasets.Dataset`; or a Python list of `Problem`s,
        dicts or question strings.
    split: for named datasets and hub ids ("test" by default for names, "train" for files).
    limit: keep the first `limit` problems.
    question_field / answer_field / id_field: record fields to read (default: the dataset's own,
        else the first present of QUESTION_FIELDS / ANSWER_FIELDS / ID_FIELDS).
    answer_format: "gsm8k" (text after '####', commas removed), "raw", "auto" (gsm8k when the
        text has '####'; the default for files), or a function of the answer value.
    require_answer: raise when records have no answer field (evaluation needs gold answers).

    Raises `InvalidInput` for a missing question or answer field (naming it and the fields
    there are), an unknown split, or duplicate problem ids. Malformed JSONL lines and records
    without a value for the field are skipped with a `DatasetWarning` naming their line.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative integer, got {limit!r}")
    fmt = _answer_format(answer_format)
    if isinstance(source, (str, os.PathLike)):
        problems = _load_named_or_path(os.fspath(source), split, limit, question_field, answer_field,
                                       id_field, answer_format, hub_config, require_answer)
    elif _is_hf_dataset(source):
        rows = ((i, dict(row)) for i, row in enumerate(source))
        problems = _from_rows(rows, "dataset", question_field, answer_field, id_field, fmt or auto_gold,
                              limit, "record", require_answer)
    elif isinstance(source, Iterable) and not isinstance(source, Mapping):
        problems = _from_list(list(source), question_field, answer_field, id_field, fmt or auto_gold, limit)
    else:
        raise InvalidInput(f"cannot load a dataset from {type(source).__name__}: give a name "
                           f"({', '.join(DATASETS)}), a file path, a hub id, or a list of problems")
    _check_unique_ids(problems)
    return problems


# -- sources ------------------------------------------------------------------------------------
def _load_named_or_path(source: str, split: str | None, limit: int | None, question_field: str | None,
                        answer_field: str | None, id_field: str | None, answer_format: Any,
                        hub_config: str | None, require_answer: bool) -> list[Problem]:
    key = _ALIASES.get(source.strip().lower())
    if key is not None:
        spec = DATASETS[key]
        split = split or spec.default_split
        if split not in spec.splits:
            raise InvalidInput(f"dataset {spec.name!r} has no split {split!r}; known: {', '.join(spec.splits)}")
        fmt = _answer_format(answer_format) or ANSWER_FORMATS[spec.answer_format]
        qf, af = question_field or spec.question_field, answer_field or spec.answer_field
        path = local_copy(spec.name, split)
        prefix = f"{spec.name}-{split}"
        if path is not None:
            return _load_file(path, prefix, qf, af, id_field, fmt, limit, require_answer)
        wanted = f"{spec.name}_{split}.jsonl"
        return _load_hub(spec.hub_id, hub_config or spec.hub_config, split, prefix, qf, af, id_field, fmt,
                         limit, require_answer,
                         local_hint=f"to use a local copy, put {wanted} in a folder and set ${DATA_DIR_VARIABLE} "
                                    f"to it (ttc itself ships "
                                    f"{', '.join(p.name for p in sorted(DATA_DIR.glob('*.jsonl.gz')))})")

    fmt = _answer_format(answer_format) or auto_gold
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            return _load_hub(str(path), hub_config, split, path.name, question_field,
                             answer_field, id_field, fmt, limit, require_answer)
        stem = path.name[:-3].rsplit(".", 1)[0] if path.name.lower().endswith(".gz") else path.stem
        return _load_file(path, stem, question_field, answer_field, id_field, fmt, limit, require_answer)
    if source.lower().endswith(_FILE_SUFFIXES) or source.startswith((".", "/", "~")):
        raise InvalidInput(f"dataset file {source!r} does not exist (known names: {', '.join(DATASETS)})")
    if source.count("/") != 1:
        raise InvalidInput(f"unknown dataset {source!r}: not a known name ({', '.join(DATASETS)}), "
                           f"not an existing file, not a hub id of the form 'org/name'")
    return _load_hub(source, hub_config, split, source.replace("/", "--"), question_field,
                     answer_field, id_field, fmt, limit, require_answer)


def _load_file(path: Path, prefix: str, question_field: str | None, answer_field: str | None,
               id_field: str | None, fmt: Callable[[Any], str], limit: int | None,
               require_answer: bool) -> list[Problem]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson") or path.name.lower().endswith((".jsonl.gz", ".ndjson.gz")):
        return _from_rows(_jsonl_rows(path), prefix, question_field, answer_field, id_field, fmt, limit,
                          f"{path}: line", require_answer)
    builder = {".parquet": "parquet", ".json": "json", ".csv": "csv"}.get(suffix)
    if builder is None:
        raise InvalidInput(f"unsupported dataset file {str(path)!r}: use .jsonl, .parquet, .json or .csv")
    datasets = require("datasets", "eval", f"reading a {suffix} file")

    ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    rows = ((i, dict(row)) for i, row in enumerate(ds))
    return _from_rows(rows, prefix, question_field, answer_field, id_field, fmt, limit, f"{path}: record",
                      require_answer)


def _load_hub(hub_id: str, config: str | None, split: str | None, prefix: str, question_field: str | None,
              answer_field: str | None, id_field: str | None, fmt: Callable[[Any], str], limit: int | None,
              require_answer: bool, local_hint: str | None = None) -> list[Problem]:
    """A hub id or a folder through `datasets.load_dataset`; with the hub unreachable, only the local
    datasets cache is asked (offline mode: no minutes of retries), and a miss says what to do."""
    datasets = require("datasets", "eval", f"loading {hub_id!r} from the Hugging Face hub")
    reachable, why = (True, "") if os.path.isdir(hub_id) else _hub_reachable()
    try:
        with contextlib.nullcontext() if reachable else _datasets_offline(datasets):
            loaded = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # no network, unknown id, unknown split: say what was tried
        cause = (f"the hub is unreachable ({why}) and it is not in the local datasets cache" if not reachable
                 else f"{type(exc).__name__}: {str(exc).rstrip('.')}")
        if local_hint is None and not reachable:
            local_hint = "save it as a .jsonl file where the hub is reachable and pass the file's path"
        hint = f"; {local_hint}" if local_hint else ""
        raise InvalidInput(f"could not load dataset {hub_id!r} with the datasets library: {cause}{hint}") from exc
    if split is None:  # a DatasetDict: its test split, or its only split
        names = list(loaded)
        split = "test" if "test" in names else names[0] if len(names) == 1 else None
        if split is None:
            raise InvalidInput(f"dataset {hub_id!r} has splits {', '.join(names)}: choose one with split=")
        ds = loaded[split]
    else:
        ds = loaded
    rows = ((i, dict(row)) for i, row in enumerate(ds))
    return _from_rows(rows, f"{prefix}-{split}" if not prefix.endswith(split) else prefix, question_field,
                      answer_field, id_field, fmt, limit, f"{hub_id}: record", require_answer)


def _hub_reachable() -> tuple[bool, str]:
    from ttc.models import hub_reachable

    if os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_DATASETS_OFFLINE is set"
    return hub_reachable()


@contextlib.contextmanager
def _datasets_offline(datasets: Any):
    """The datasets library in offline mode for one call (it reads HF_HUB_OFFLINE once, at import)."""
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _jsonl_rows(path: Path) -> Iterable[tuple[int, dict[str, Any], int]]:
    """(record index, record, line number) for each good line; a bad line warns with its number.

    The record index counts every non-blank line, good or bad, so ids stay stable when a bad
    line is fixed later.
    """
    index = 0
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                warnings.warn(f"{path}: line {lineno}: malformed JSON ({exc.msg} at column {exc.colno}); "
                              f"line skipped", DatasetWarning, stacklevel=4)
            else:
                if isinstance(row, dict):
                    yield index, row, lineno
                else:
                    warnings.warn(f"{path}: line {lineno}: expected a JSON object, got "
                                  f"{type(row).__name__}; line skipped", DatasetWarning, stacklevel=4)
            index += 1


def _from_rows(rows: Iterable[tuple], prefix: str, question_field: str | None, answer_field: str | None,
               id_field: str | None, fmt: Callable[[Any], str], limit: int | None, where: str,
               require_answer: bool) -> list[Problem]:
    """Problems from (index, record[, line number]) tuples; unusable records warn and are skipped."""
    problems: list[Problem] = []
    fields: tuple[str, str | None, str | None] | None = None
    for item in rows:
        if limit is not None and len(problems) >= limit:
            break
        index, row = item[0], item[1]
        if fields is None:
            fields = _resolve_fields(row, question_field, answer_field, id_field, require_answer,
                                     where.rsplit(":", 1)[0])
        problem = _convert(row, fields, fmt, f"{prefix}-{index}", require_answer)
        if isinstance(problem, str):
            warnings.warn(f"{where} {item[2] if len(item) > 2 else index}: {problem}; record skipped",
                          DatasetWarning, stacklevel=3)
            continue
        problems.append(problem)
    if fields is None and limit != 0:
        raise InvalidInput(f"{where.rsplit(':', 1)[0]}: no usable records")
    return problems


def _convert(row: Mapping[str, Any], fields: tuple[str, str | None, str | None], fmt: Callable[[Any], str],
             default_id: str, require_answer: bool) -> Problem | str:
    """The record as a Problem, or the reason it cannot be one."""
    qf, af, idf = fields
    question = row.get(qf)
    answer = row.get(af) if af else None
    if not isinstance(question, str) or not question.strip():
        return f"no question in field {qf!r} (fields: {_names(row)})"
    if af and answer is None and require_answer:
        return f"no answer in field {af!r} (fields: {_names(row)})"
    pid = row.get(idf) if idf else None
    metadata = {k: v for k, v in row.items() if k not in (qf, af)}
    if answer is not None:
        metadata["raw_answer"] = answer
    return Problem(question=question, answer=fmt(answer) if answer is not None else None,
                   id=default_id if pid is None else str(pid), metadata=metadata)


def _from_list(items: list[Any], question_field: str | None, answer_field: str | None, id_field: str | None,
               fmt: Callable[[Any], str], limit: int | None) -> list[Problem]:
    """Problems from a Python list of Problems, question strings and dicts (a bad item raises)."""
    problems: list[Problem] = []
    for i, item in enumerate(items):
        if limit is not None and len(problems) >= limit:
            break
        if isinstance(item, Problem):
            problems.append(item if item.id is not None else
                            Problem(item.question, item.answer, f"problem-{i}", item.metadata))
        elif isinstance(item, str):
            problems.append(Problem(question=item, id=f"problem-{i}"))
        elif isinstance(item, Mapping):
            fields = _resolve_fields(item, question_field, answer_field, id_field, False, f"item {i}")
            problem = _convert(item, fields, fmt, f"problem-{i}", require_answer=False)
            if isinstance(problem, str):
                raise InvalidInput(f"item {i}: {problem}")
            problems.append(problem)
        else:
            raise InvalidInput(f"item {i}: expected a Problem, a question string or a dict, "
                               f"got {type(item).__name__}")
    return problems


# -- helpers ------------------------------------------------------------------------------------
def _resolve_fields(row: Mapping[str, Any], question_field: str | None, answer_field: str | None,
                    id_field: str | None, require_answer: bool, source: str) -> tuple[str, str | None, str | None]:
    qf = _pick(row, question_field, QUESTION_FIELDS, "question", source)
    af = _pick(row, answer_field, ANSWER_FIELDS, "answer", source, required=require_answer)
    idf = id_field if id_field in row else None
    if id_field is None:
        idf = next((f for f in ID_FIELDS if f in row), None)
    elif id_field not in row:
        raise InvalidInput(f"{source}: no id field {id_field!r}; available fields: {_names(row)}")
    return qf, af, idf


def _pick(row: Mapping[str, Any], given: str | None, candidates: Sequence[str], what: str, source: str,
          required: bool = True) -> str | None:
    if given is not None:
        if given in row:
            return given
        if not required:
            return None
        raise InvalidInput(f"{source}: no {what} field {given!r}; available fields: {_names(row)} "
                           f"(choose one with {what}_field=..., or --{what}-field on the command line)")
    found = next((f for f in candidates if f in row), None)
    if found is None and required:
        raise InvalidInput(f"{source}: no {what} field (looked for {', '.join(map(repr, candidates))}); "
                           f"available fields: {_names(row)} (choose one with {what}_field=..., "
                           f"or --{what}-field on the command line)")
    return found


def _names(row: Mapping[str, Any]) -> str:
    return ", ".join(repr(k) for k in row) or "(none)"


def _answer_format(fmt: str | Callable[[Any], str] | None) -> Callable[[Any], str] | None:
    if fmt is None or callable(fmt):
        return fmt
    if fmt not in ANSWER_FORMATS:
        raise InvalidInput(f"unknown answer format {fmt!r}; known: {', '.join(ANSWER_FORMATS)}")
    return ANSWER_FORMATS[fmt]


def _is_hf_dataset(source: Any) -> bool:
    return type(source).__module__.startswith("datasets.") and hasattr(source, "column_names")


def _check_unique_ids(problems: Sequence[Problem]) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise InvalidInput(f"duplicate problem id {p.id!r}: ids must be unique (results are keyed by them)")
        seen.add(p.id)
