"""User datasets: every format, field mapping, exact error messages, skipping, mixing and held-out splits."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from rlvr.config import ConfigError
from rlvr.data import FieldMap, LoadReport, Mixture, Row, Source, load_source, split_held_out

RECORDS = [
    {"question": "What is 6 * 7?", "answer": "Six sevens... #### 42", "level": 1},
    {"question": "What is 2 + 2?", "answer": "#### 4", "level": 2},
    {"question": "What is 10 / 5?", "answer": "#### 2", "level": 1},
]


def write_jsonl(path: Path, records: list[dict] | list[str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def load(path: Path, **options) -> list[Row]:
    return load_source(Source(path=str(path), **options))[0]


def error(path: Path, **options) -> str:
    with pytest.raises(ConfigError) as caught:
        load_source(Source(path=str(path), **options))
    text = str(caught.value)
    assert "\n" not in text
    return text


def expected_rows(path: Path, lines: list[int]) -> list[Row]:
    return [
        Row(r["question"], r["answer"], None, path.stem, str(path), line, {"level": r["level"]})
        for r, line in zip(RECORDS, lines)
    ]


# ---------------------------------------------------------------- formats


def test_jsonl_gsm8k_like(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", RECORDS)
    rows, report = load_source(Source(path=str(path)))
    assert rows == expected_rows(path, [1, 2, 3])
    assert report == LoadReport(str(path), rows=3)


def test_json_suffix_is_json_lines_and_blank_lines_count(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(f"\n{json.dumps(RECORDS[0])}\n\n{json.dumps(RECORDS[1])}\n  \n{json.dumps(RECORDS[2])}\n")
    assert [row.line for row in load(path)] == [2, 4, 6]


def test_csv_lines_count_the_header_and_multiline_records(tmp_path):
    path = write_csv(tmp_path / "train.csv", 'question,answer,level\n"What is\n6 * 7?",42,1\n\nWhat is 2 + 2?,4,2\n')
    rows = load(path)
    assert [(row.question, row.answer, row.line, row.extra) for row in rows] == [
        ("What is\n6 * 7?", "42", 2, {"level": "1"}),
        ("What is 2 + 2?", "4", 5, {"level": "2"}),
    ]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    assert load(path) == expected_rows(path, [1, 2, 3])


def test_datasets_folder(tmp_path):
    from datasets import Dataset

    path = tmp_path / "saved"
    Dataset.from_list(RECORDS).save_to_disk(str(path))
    assert load(path) == expected_rows(path, [1, 2, 3])
    assert "split: 'train' given, but this folder holds one Dataset" in error(path, split="train")


def test_datasets_dict_needs_a_split(tmp_path):
    from datasets import Dataset, DatasetDict

    path = tmp_path / "dict"
    DatasetDict({"train": Dataset.from_list(RECORDS[:2]), "test": Dataset.from_list(RECORDS[2:])}).save_to_disk(str(path))
    assert [row.question for row in load(path, split="test")] == [RECORDS[2]["question"]]
    assert len(load(path, split="train")) == 2
    assert error(path) == f"{path}: split: required, this DatasetDict has several (available: train, test)"
    assert error(path, split="dev") == f"{path}: split: no split 'dev' (available: train, test)"


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write_jsonl(tmp_path / "train.txt", RECORDS)
    assert len(load(path, format="jsonl")) == 3
    assert (
        error(path)
        == f"{path}: unknown format '.txt' (expected .jsonl, .json, .csv, .parquet or a datasets folder; or set format)"
    )
    assert error(tmp_path, format="csv") == f"{tmp_path}: expected a csv file (format: csv)"
    assert error(path, format="datasets") == f"{path}: expected a folder saved with datasets.save_to_disk (format: datasets)"


# ---------------------------------------------------------------- fields


def test_field_map_and_subset_column(tmp_path):
    records = [
        {"prompt": "Sort [3, 1]", "solution": 13, "cases": ["assert f([3,1]) == [1,3]"], "kind": "sort"},
        {"prompt": "Add 1 and 2", "solution": 3.0, "cases": "assert add(1, 2) == 3", "kind": 7},
    ]
    path = write_jsonl(tmp_path / "code.jsonl", records)
    rows = load(path, fields=FieldMap(question="prompt", answer="solution", tests="cases", subset="kind"))
    assert [(r.question, r.answer, r.tests, r.subset, r.extra) for r in rows] == [
        ("Sort [3, 1]", "13", ["assert f([3,1]) == [1,3]"], "sort", {}),
        ("Add 1 and 2", "3", "assert add(1, 2) == 3", "7", {}),
    ]


def test_subset_defaults_to_the_stem_and_can_be_set(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", RECORDS)
    assert {row.subset for row in load(path)} == {"gsm8k"}
    assert {row.subset for row in load(path, subset="math")} == {"math"}


def test_source_rejects_unknown_keys_and_bad_weights():
    with pytest.raises(ValueError, match="extra"):
        Source(path="x.jsonl", wieght=2)
    with pytest.raises(ValueError, match="greater than 0"):
        Source(path="x.jsonl", weight=0)
    with pytest.raises(ValueError, match="extra"):
        FieldMap(questions="q")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"question": "q", "solution": "s"}', "answer: missing (fields present: question, solution)"),
        ('{"question": "q" "answer": "a"}', "invalid JSON: Expecting ',' delimiter (column 18)"),
        ('{"question": 5, "answer": "a"}', "question: expected a string, got int 5"),
        ('{"question": "", "answer": "a"}', "question: empty"),
        ('{"question": "  ", "answer": "a"}', "question: empty"),
        ('{"question": null, "answer": "a"}', "question: null"),
        ('{"question": "q", "answer": true}', "answer: expected a string or a number, got bool True"),
        ('{"question": "q", "answer": NaN}', "answer: expected a string or a number, got float nan"),
        ('{"question": "q", "answer": ["a"]}', "answer: expected a string or a number, got list ['a']"),
        ('["q", "a"]', "expected a JSON object, got list"),
        ("{}", "question: missing (fields present: none)"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, line, message):
    path = write_jsonl(tmp_path / "train.jsonl", [RECORDS[0], RECORDS[1], line])
    assert error(path) == f"{path}:3: {message}"


def test_tests_field_errors(tmp_path):
    path = write_jsonl(
        tmp_path / "code.jsonl", [{"question": "q", "answer": "a", "tests": [1, 2]}, {"question": "q", "answer": "a"}]
    )
    fields = FieldMap(tests="tests")
    assert error(path, fields=fields) == f"{path}:1: tests: expected a string or a list of strings, got list [1, 2]"
    assert error(path, fields=fields, skip_invalid=True).endswith(
        f"{path}:1: tests: expected a string or a list of strings, got list [1, 2]"
    )


def test_csv_errors(tmp_path):
    path = write_csv(tmp_path / "data.csv", "question,answer\nq1,1\nq2,2\nq3\n,4\n")
    assert error(path) == f"{path}:4: expected 2 values (question, answer), got 1"
    assert error(write_csv(tmp_path / "mapped.csv", "prompt,solution\np,s\n")) == (
        f"{tmp_path / 'mapped.csv'}:2: question: missing (fields present: prompt, solution)"
    )
    assert (
        error(write_csv(tmp_path / "dup.csv", "question,answer,answer\nq,a,b\n"))
        == f"{tmp_path / 'dup.csv'}:1: duplicate columns answer"
    )


def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert error(missing) == f"{missing}: no such file"
    empty = write_csv(tmp_path / "empty.csv", "question,answer\n")
    assert error(empty) == f"{empty}: no rows"
    array = tmp_path / "array.json"
    array.write_text(json.dumps(RECORDS, indent=1))
    assert error(array) == f"{array}:1: expected one JSON object per line (JSON Lines), found a JSON array"
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    assert error(bad).startswith(f"{bad}: not a readable Parquet file: ")
    assert error(array, skip_invalid=True).startswith(f"{array}:1: expected one JSON")


def test_parquet_null_is_an_error_with_the_row_number(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([*RECORDS, {"question": "q", "answer": None, "level": 3}]), path)
    assert error(path) == f"{path}:4: answer: null"


def test_skip_invalid_counts_and_reports(tmp_path, caplog):
    lines = [
        RECORDS[0],
        "{oops",
        {"question": "q"},
        RECORDS[1],
        {"answer": 1},
        "[]",
        {"question": 1, "answer": 1},
        {"question": "x", "answer": ""},
    ]
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="rlvr.data"):
        rows, report = load_source(Source(path=str(path), skip_invalid=True))
    assert [row.line for row in rows] == [1, 4]
    assert report.rows == 2 and report.skipped == 6
    assert report.reasons == [
        f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:3: answer: missing (fields present: question)",
        f"{path}:5: question: missing (fields present: answer)",
        f"{path}:6: expected a JSON object, got list",
        f"{path}:7: question: expected a string, got int 1",
    ]
    assert report.summary().startswith(f"{path}: 2 rows, 6 invalid rows skipped (first: {path}:2: invalid JSON")
    assert report.summary() in caplog.text


def test_skip_invalid_with_nothing_left_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"q": 1}, {"q": 2}])
    assert (
        error(path, skip_invalid=True)
        == f"{path}: no rows: all 2 invalid, first: {path}:1: question: missing (fields present: q)"
    )


# ---------------------------------------------------------------- mixing


def make_rows(subset: str, count: int) -> list[Row]:
    return [Row(f"{subset} {i}", str(i), None, subset, f"{subset}.jsonl", i + 1) for i in range(count)]


def mixture(seed: int = 0) -> Mixture:
    return Mixture([(Source(path="a.jsonl", weight=3), make_rows("a", 50)), (Source(path="b.jsonl"), make_rows("b", 7))], seed)


def test_mixture_follows_the_weights_and_keeps_subsets():
    rows = mixture().rows(0, 4000)
    shares = Counter(row.subset for row in rows)
    assert 0.70 <= shares["a"] / 4000 <= 0.80
    assert all(row.question.startswith(row.subset) for row in rows)


def test_mixture_is_deterministic_and_chunk_independent():
    stream = mixture(seed=1)
    whole = stream.rows(0, 3000)
    assert whole == mixture(seed=1).rows(0, 40) + mixture(seed=1).rows(40, 2960)
    fresh = mixture(seed=1)  # a resumed run: starts mid-stream, across a block boundary, without the prefix
    assert fresh.rows(2500, 500) == whole[2500:]
    assert fresh.rows(0, 100) == stream.rows(0, 40) + stream.rows(40, 60)
    assert [fresh.row(i) for i in (2999, 5, 1500)] == [whole[2999], whole[5], whole[1500]]
    assert mixture(seed=2).rows(0, 100) != whole[:100]


def test_mixture_cycles_each_source_in_epochs():
    rows = [row for row in mixture().rows(0, 4000) if row.subset == "b"]
    for epoch in range(len(rows) // 7):
        assert sorted(r.line for r in rows[epoch * 7 : epoch * 7 + 7]) == list(range(1, 8))
    assert rows[:7] != rows[7:14]  # each epoch is reshuffled


# ---------------------------------------------------------------- held-out split


def test_split_held_out_is_disjoint_by_question_and_seeded():
    rows = make_rows("a", 30) + make_rows("a", 10)  # questions 0..9 appear twice
    train, held_out = split_held_out(rows, 8, seed=3)
    assert len(held_out) == 8 and len({row.question for row in held_out}) == 8
    assert not {row.question for row in train} & {row.question for row in held_out}
    assert len(train) + sum(2 if int(row.answer) < 10 else 1 for row in held_out) == len(rows)
    assert split_held_out(rows, 8, seed=3) == (train, held_out)
    assert split_held_out(rows, 8, seed=4)[1] != held_out
    assert split_held_out(rows, 0, seed=3) == (rows, [])
    with pytest.raises(ConfigError, match="held-out size 30: only 30 distinct questions"):
        split_held_out(rows, 30, seed=3)
