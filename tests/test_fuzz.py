"""Property-based fuzzing of what users and models write: dataset rows, `--set` overrides, tool calls, chat messages.

Every input must get a result or one of the project's own one-line errors (`ConfigError`, the `ToolError` the tool
loop shows the model, the server's 400-style `RequestError`), naming where the problem is: the file and line and
field, the config key, the request field. Never a traceback of some other type.

The strategies build realistic inputs (records with the mapped fields, real config key paths, JSON tool calls
between the real markers, OpenAI-shaped messages) and break them in the ways users do, so the examples reach past
the first check. `derandomize=True` and no example database: the same examples on every run, so no test can fail by
chance. The whole file runs in about 10 s on 2 cores (with the tokenizer already converted).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rlvr.algo_config import CORRECTION_CONFIGS, LOSS_CONFIGS
from rlvr.config import RunConfig, load_config, parse_config, recipe_path
from rlvr.data import FieldMap, Source, load_source
from rlvr.env_config import GymEnvConfig, HumanEvalEnvConfig, SearchQAEnvConfig
from rlvr.envs.base import DEMO_ROLES, load_demos
from rlvr.errors import ConfigError
from rlvr.rollout.base import RolloutEngine, SamplingParams
from rlvr.rollout.tool_loop import ToolLoop, ToolLoopSettings
from rlvr.tools.base import Tool, ToolError
from rlvr.tools.protocol import CALL_CLOSE, CALL_OPEN, ChatFormat, find_call, has_open_call, parse_call
from rlvr.types import Episode


@pytest.fixture(autouse=True, scope="module")
def _examples_that_depend_on_this_file_alone():
    """Hypothesis mixes literal constants of every local module imported so far into its examples, so they would
    change with the test order and with any edit anywhere in the project. Derandomized examples must be the same
    wherever and however this file runs, so that a failure is a bug and never the luck of an import order."""
    from hypothesis.internal.conjecture import providers

    original = providers._get_local_constants
    providers._get_local_constants = providers.Constants
    providers.CONSTANTS_CACHE.cache.clear()
    yield
    providers._get_local_constants = original
    providers.CONSTANTS_CACHE.cache.clear()


def fuzz(examples: int) -> Callable:
    """Hypothesis settings for every test here: the same examples each run, nothing written to disk."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    # Module-scoped: hypothesis runs many examples per test call, and each example rewrites its own file in here.
    return tmp_path_factory.mktemp("fuzz")


# ---- shared strategies ---------------------------------------------------------------------------------------------

# st.text() leaves out surrogates; the lone ones JSON's `\ud800` escape makes are drawn on purpose, below.
TEXT = st.text(max_size=12)
GOOD_TEXT = st.text(min_size=1, max_size=24).filter(str.strip)
BLANK_TEXT = st.sampled_from(["", " ", "\t\n", "\u3000", "\r\n "])
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6
)
# JSON that Python's json module refuses past its syntax: more digits than int() converts, nesting past the recursion
# limit; and depths just below it, where the parse may succeed and later steps (repr, json.dumps) run at the edge.
HUGE_INT = st.integers(4301, 6000).map(lambda digits: "7" * digits)
DEEP = st.sampled_from([940, 970, 985, 995, 1010, 3000, 20000]).map(lambda depth: "[" * depth + "]" * depth)


def _is_text(value: str) -> bool:
    """Whether `value` is Unicode text (no lone surrogates): what a tokenizer encodes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def with_surrogate(draw: st.DrawFn, text: st.SearchStrategy[str] = GOOD_TEXT) -> str:
    value = draw(text)
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(SURROGATE) + value[at:]


# ---- 1. dataset rows -----------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One physical line of a generated JSONL file and what loading it must give."""

    raw: bytes  # without its line ending
    outcome: str  # "good", "bad" or "blank"
    # For a bad row: the start of its message after `path:line: `; None where more than one message is right.
    message: str | None = None
    record: dict[str, Any] | None = None  # a good row's record


MISSING = object()  # a field left out of a record


def _as_text(value: Any) -> str:
    """What a row holds for a field read as text, numbers allowed: `42`, `42.0` -> "42"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


FIELD_MAPS = st.builds(
    FieldMap,
    question=st.sampled_from(["question", "problem"]),
    answer=st.sampled_from(["answer", "solution"]),
    tests=st.sampled_from([None, "tests"]),
    subset=st.sampled_from([None, "subset", "topic"]),
)
NUMBER_OR_TEXT = GOOD_TEXT | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
TESTS = GOOD_TEXT | st.lists(TEXT, min_size=1, max_size=3)


def _good_value(kind: str) -> st.SearchStrategy[Any]:
    return {"question": GOOD_TEXT, "number": NUMBER_OR_TEXT, "tests": TESTS}[kind]


def _bad_value(kind: str) -> st.SearchStrategy[tuple[Any, str]]:
    """(a wrong value for a field of this kind, what the error says after the field's name)."""
    wrong = {
        # A question must be text; a number is refused too.
        "question": st.integers() | st.floats() | st.booleans() | st.lists(JSON_SCALARS, max_size=2),
        # bool is refused (no agreed spelling), and so are NaN and infinities.
        "number": st.booleans() | st.sampled_from([math.nan, math.inf, -math.inf]) | st.lists(JSON_SCALARS, max_size=2),
        "tests": st.integers() | st.booleans() | st.lists(st.integers() | st.none(), min_size=1, max_size=2),
    }[kind] | st.dictionaries(TEXT, JSON_SCALARS, max_size=2)
    empty = BLANK_TEXT if kind != "tests" else BLANK_TEXT | st.just([])
    surrogate = with_surrogate() if kind != "tests" else with_surrogate() | st.builds(lambda s: ["ok", s], with_surrogate())
    return st.one_of(
        st.just((MISSING, "missing")),
        st.just((None, "null")),
        wrong.map(lambda value: (value, "expected")),
        empty.map(lambda value: (value, "empty")),
        surrogate.map(lambda value: (value, "not Unicode text")),
    )


def _kinds(fields: FieldMap) -> dict[str, str]:
    """Each mapped field's name and the kind of value it takes, in the order rows are checked."""
    kinds = {fields.question: "question", fields.answer: "number"}
    if fields.tests:
        kinds[fields.tests] = "tests"
    if fields.subset:
        kinds[fields.subset] = "number"
    return kinds


@st.composite
def good_records(draw: st.DrawFn, fields: FieldMap) -> dict[str, Any]:
    kinds = _kinds(fields)
    record = draw(st.dictionaries(TEXT.filter(lambda key: key not in kinds), JSON_VALUES, max_size=3))
    for name, kind in kinds.items():
        record[name] = draw(_good_value(kind))
    return record


@st.composite
def jsonl_lines(draw: st.DrawFn, fields: FieldMap) -> Line:
    choice = draw(st.sampled_from(["good"] * 8 + ["blank", "field", "field", "truncated", "not_object", "limit", "bytes"]))
    if choice == "blank":
        return Line(draw(st.sampled_from([b"", b"  ", b"\t"])), "blank")
    record = draw(good_records(fields))
    text = json.dumps(record)  # ensure_ascii: a lone surrogate is written as its \\u escape, as JSON files hold it
    if choice == "good":
        return Line(text.encode(), "good", record=record)
    if choice == "field":  # one mapped field wrong, the others right: the error names that field
        name = draw(st.sampled_from(list(_kinds(fields))))
        value, problem = draw(_bad_value(_kinds(fields)[name]))
        if value is MISSING:
            del record[name]
        else:
            record[name] = value
        return Line(json.dumps(record).encode(), "bad", f"{name}: {problem}")
    if choice == "truncated":  # a proper prefix of a JSON object is never valid JSON
        return Line(text[: draw(st.integers(1, len(text) - 1))].encode(), "bad", "invalid JSON")
    if choice == "not_object":
        value = draw(JSON_VALUES.filter(lambda value: not isinstance(value, dict)))
        return Line(json.dumps(value).encode(), "bad", "expected a JSON object")
    if choice == "limit":  # valid JSON syntax the json module cannot read, or only just can
        value = draw(HUGE_INT | DEEP)
        deep = value.startswith("[")
        raw = f'{{"{fields.question}": "q", "{fields.answer}": {value}}}'.encode()
        return Line(raw, "bad", None if deep else "invalid JSON")  # an answer list, or nesting too deep
    # Bytes that are not UTF-8, or arbitrary bytes (anything but a line break).
    if draw(st.booleans()):
        return Line(text.encode()[:-1] + b'\xff"}', "bad", "invalid JSON: not UTF-8 text")
    raw = draw(st.binary(min_size=1, max_size=20)).replace(b"\n", b"")
    return Line(raw, "blank" if not raw.strip() else "bad")


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[FieldMap, list[Line], bytes]:
    fields = draw(FIELD_MAPS)
    lines = draw(st.lists(jsonl_lines(fields), max_size=8))
    endings = draw(st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(lines), max_size=len(lines)))
    first = next((line for line in lines if line.outcome != "blank"), None)
    if first is not None and lines[0] is first and draw(st.booleans()):
        first.raw = b"\xef\xbb\xbf" + first.raw  # a byte-order mark, as Windows editors write
    body = b"".join(line.raw + ending for line, ending in zip(lines, endings))
    if lines and draw(st.booleans()):
        body = body.removesuffix(endings[-1])  # no line break after the last line
    return fields, lines, body


def _loaded(source: Source) -> tuple[list, Any] | str:
    """The rows and report, or the ConfigError's message; any other exception fails the test."""
    try:
        return load_source(source)
    except ConfigError as error:
        message = str(error)
        assert message.isprintable(), message  # one line for the user: what they wrote is quoted, not printed raw
        return message


@fuzz(250)
@given(case=jsonl_files(), skip_invalid=st.booleans())
def test_jsonl_rows_load_or_name_the_file_line_and_field(folder, case, skip_invalid):
    fields, lines, body = case
    path = folder / "rows.jsonl"
    path.write_bytes(body)
    loaded = _loaded(Source(path=str(path), fields=fields, skip_invalid=skip_invalid))
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.outcome != "blank"]
    if numbered and numbered[0][1].raw.lstrip().startswith(b"["):  # a JSON array is not JSON Lines: the file fails
        assert loaded == f"{path}:{numbered[0][0]}: expected one JSON object per line (JSON Lines), found a JSON array"
        return
    good = [(number, line) for number, line in numbered if line.outcome == "good"]
    bad = [(number, line) for number, line in numbered if line.outcome == "bad"]
    if bad and not skip_invalid:
        number, line = bad[0]
        assert isinstance(loaded, str) and loaded.startswith(f"{path}:{number}: {line.message or ''}"), loaded
        return
    if not good:
        assert isinstance(loaded, str) and loaded.startswith(f"{path}: no rows"), loaded
        return
    assert not isinstance(loaded, str), loaded
    rows, report = loaded
    assert [row.line for row in rows] == [number for number, _ in good]
    assert report.rows == len(good) and report.skipped == len(bad)
    for (number, line), reason in zip(bad, report.reasons):
        assert reason.startswith(f"{path}:{number}: {line.message or ''}"), reason
    for row, (_, line) in zip(rows, good):
        record = line.record
        assert row.question == record[fields.question] and row.answer == _as_text(record[fields.answer])
        assert row.tests == (record[fields.tests] if fields.tests else None)
        assert row.subset == (_as_text(record[fields.subset]) if fields.subset else "rows")
        extra = {key: value for key, value in record.items() if key not in _kinds(fields)}
        assert json.dumps(row.extra, sort_keys=True) == json.dumps(extra, sort_keys=True)  # NaN == NaN as text


CSV_FIELD_LIMIT = 131072  # csv.field_size_limit()'s default: a longer cell is csv's own error


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[list[str], list[list[str] | None], str, dict[int, str]]:
    """(header, records (None: a blank line), line ending, {record index: file-level defect})."""
    columns = [
        "question",
        "answer",
        *draw(st.lists(TEXT.filter(lambda name: name not in ("question", "answer")), max_size=2, unique=True)),
    ]
    if draw(st.integers(0, 9)) == 0:
        columns.remove(draw(st.sampled_from(["question", "answer"])))
    if draw(st.integers(0, 9)) == 0:
        columns.append(draw(st.sampled_from(columns)))  # a duplicate column
    header = draw(st.permutations(columns))
    text = st.sampled_from([True] * 5 + [False]).flatmap(lambda good: GOOD_TEXT if good else BLANK_TEXT)
    cell = {"question": text, "answer": text}
    records: list[list[str] | None] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 7)) == 0:
            records.append(None)
            continue
        cells = [draw(cell.get(column, TEXT)) for column in header]
        if draw(st.integers(0, 7)) == 0:  # a record with a value too few or too many
            cells = cells[:-1] if len(cells) > 1 and draw(st.booleans()) else [*cells, draw(TEXT)]
        records.append(cells)
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    if ending == "\n":  # csv.writer quotes a cell with \r only when \r is in its line ending
        header = [column.replace("\r", "") for column in header]
        records = [None if cells is None else [c.replace("\r", "") for c in cells] for cells in records]
    defects: dict[int, str] = {}
    if records and draw(st.integers(0, 5)) == 0:
        defects[draw(st.integers(0, len(records) - 1))] = draw(st.sampled_from(["not_utf8", "huge"]))
    return header, records, ending, defects


def _csv_row_problem(header: list[str], cells: list[str]) -> str | None:
    """What loading says of one record, or None for a good one: the reader's checks, in their order."""
    if len(cells) != len(header):
        return f"expected {len(header)} values"
    row = dict(zip(header, cells))
    for field in ("question", "answer"):
        if field not in row:
            return f"{field}: missing"
        if not row[field].strip():
            return f"{field}: empty"
    return None


@fuzz(200)
@given(case=csv_files(), skip_invalid=st.booleans(), bom=st.booleans())
def test_csv_rows_load_or_name_the_file_line_and_field(folder, case, skip_invalid, bom):
    header, records, ending, defects = case
    out = io.StringIO()
    csv.writer(out, lineterminator=ending).writerow(header)
    chunks, starts, line = [out.getvalue().encode()], [], 1 + len(re.findall(r"\r\n|\r|\n", out.getvalue()))
    for index, cells in enumerate(records):
        out = io.StringIO()
        if cells is None:
            out.write(ending)
        else:
            if defects.get(index) == "huge":
                cells = ["x" * (CSV_FIELD_LIMIT + 1), *cells[1:]]
            csv.writer(out, lineterminator=ending).writerow(cells)
        chunk = out.getvalue().encode()
        chunks.append(b"\xff" + chunk if defects.get(index) == "not_utf8" else chunk)
        starts.append(line)
        line += len(re.findall(r"\r\n|\r|\n", out.getvalue()))
    path = folder / "rows.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"".join(chunks))
    loaded = _loaded(Source(path=str(path), skip_invalid=skip_invalid))

    def fails(expected: str) -> None:
        assert isinstance(loaded, str) and loaded.startswith(expected), (loaded, expected)

    if "not_utf8" in defects.values():  # the whole file is decoded first: the bad byte's line, before any row
        fails(f"{path}:{starts[next(iter(defects))]}: invalid CSV: not UTF-8 text")
        return
    if len(set(header)) < len(header):
        fails(f"{path}:1: duplicate columns")
        return
    good, bad = [], []
    for index, cells in enumerate(records):
        if cells is None:
            continue
        if defects.get(index) == "huge":  # csv's own error ends the file, skip_invalid or not
            if bad and not skip_invalid:
                break
            fails(f"{path}:{starts[index]}: invalid CSV: field larger than field limit")
            return
        problem = _csv_row_problem(header, cells)
        (bad if problem else good).append((starts[index], cells, problem))
    if bad and not skip_invalid:
        fails(f"{path}:{bad[0][0]}: {bad[0][2]}")
        return
    if not good:
        fails(f"{path}: no rows")
        return
    assert not isinstance(loaded, str), loaded
    rows, report = loaded
    assert [row.line for row in rows] == [start for start, _, _ in good] and report.skipped == len(bad)
    for row, (_, cells, _) in zip(rows, good):
        values = dict(zip(header, cells))
        assert (row.question, row.answer) == (values.pop("question"), values.pop("answer")) and row.extra == values


# ---- 2. config values ----------------------------------------------------------------------------------------------

RECIPES = ["default", "mixture", "python-math", "search-qa"]


def _key_paths(value: Any, prefix: tuple[str, ...] = ()) -> set[str]:
    """Every section and setting of a dumped config as a `--set` key (a list of sections by its first item's keys)."""
    paths = {".".join(prefix)} if prefix else set()
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]
        prefix = (*prefix, "0")
    if isinstance(value, dict):
        for key, item in value.items():
            paths |= _key_paths(item, (*prefix, str(key)))
    return paths


def _config_keys() -> list[str]:
    keys = set().union(*(_key_paths(load_config(recipe).model_dump()) for recipe in RECIPES))
    for env in (GymEnvConfig(), HumanEvalEnvConfig(), SearchQAEnvConfig()):
        keys |= _key_paths({"env": env.model_dump()})
    for section, choices in (("loss", LOSS_CONFIGS), ("correction", CORRECTION_CONFIGS)):
        for config in choices.values():
            keys |= _key_paths({"algo": {section: config().model_dump()}})
    keys |= {"env.sources", "env.sources.0.path", "env.id", "env.args", "env.path", "env.correct", "env.options"}
    return sorted(keys)


CONFIG_KEYS = _config_keys()
YAML_VALUES = [
    "true", "false", "null", "~", "yes", "off", "0", "-1", "7", "100000", "1e-5", "3.5", "-0.5", ".inf", "-.inf", ".nan",
    "[]", "{}", "[1, 2]", "[0.9, 0.99]", "[a, b]", "{a: 1}", "{name: cispo}", "{name: tis, cap: 2}",
    "{name: mixture, sources: [{path: rows.jsonl}]}", "[{path: gym:chain_sum}]", "[{path: 'gym:chain_sum', weight: 0}]",
    "ppo_clip", "cispo", "gspo", "tis", "none", "mixture", "gym", "humaneval", "searchqa", "verifiers", "chain_sum",
    "transformers", "vllm", "auto", "float32", "bfloat16", "cpu", "cuda", "token", "grpo", "adamw", "python", "search",
    "2024-01-01", "2024-13-01", "2024-01-01 25:00:00", "0x1F", "0o17", "1_000", "!!float x", "!!int x", "!!binary AAA",
    "!!set {a}", "!!python/object:os.system", "*x", "&a 1", "&a [*a]", "&a {b: *a}", "[", "{", "'", '"', "a: b: c",
    "- a", "? x", "|", "\t", "%YAML 1.1", "---", "...", "\x00", "\ud800", "7" * 4400, "[" * 600, "{a: " * 400, "- " * 1500,
]  # fmt: skip
# What str.isprintable() passes: no control, format, private-use or unassigned characters, no line breaks.
PRINTABLE = st.text(
    st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"], include_characters=" "), max_size=12
)
REAL_KEYS = st.sampled_from(CONFIG_KEYS)
KEYS = st.one_of(
    REAL_KEYS,
    REAL_KEYS,
    REAL_KEYS,
    st.builds(lambda key, leaf: f"{key}.{leaf}", REAL_KEYS, PRINTABLE.filter(bool)),  # a junk key in a real section
    st.lists(st.sampled_from(["train", "lr", "x", "0", "", " ", "env", "loss", "é"]), min_size=1, max_size=4).map(".".join),
    PRINTABLE,
    TEXT,  # control characters too
)
# Mostly values a user means (numbers, booleans, names), then YAML's corners, JSON and plain text.
PLAUSIBLE = st.one_of(
    st.integers(-3, 300).map(str), st.floats(0, 2).map(repr), st.sampled_from(["true", "false", "null", "[]", "{}"])
)
VALUES = st.one_of(PLAUSIBLE, PLAUSIBLE, st.sampled_from(YAML_VALUES), JSON_VALUES.map(json.dumps), PRINTABLE, TEXT)
WILD = st.builds(lambda key, value: f"{key}={value}", KEYS, VALUES)


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        return {key: leaf for name, item in value.items() for key, leaf in _leaves(item, f"{prefix}{name}.").items()}
    return {prefix.removesuffix("."): value}


# Each recipe's settings and their values: an override of the same kind is what a user mostly writes.
LEAVES = {recipe: sorted(_leaves(load_config(recipe).model_dump()).items()) for recipe in RECIPES}


def _like(value: Any) -> st.SearchStrategy[str]:
    """YAML for a value of the same kind as `value`, in range or just out of it."""
    if isinstance(value, bool):
        return st.sampled_from(["true", "false", "auto"])
    if isinstance(value, int):
        return st.integers(-2, 2 * value + 2).map(str)
    if isinstance(value, float):
        return st.floats(-0.1, 2 * value + 1, allow_nan=False).map(repr)
    if isinstance(value, str):
        return st.sampled_from([value, value.upper(), f"{value}x", ""])
    return st.just(json.dumps(value, default=str))


# What YAML builds beyond JSON: shared and self-referencing nodes (anchors), sets, bytes, dates.
YAML_TREES = [
    "{a: &x [1], b: *x}", "&a [*a]", "&a {b: *a}", "{a: &x {b: 1}, c: [*x, *x]}", "[&x {}, *x]", "!!set {a, b}",
    "!!binary AAA=", "{when: 2024-01-01, at: 2024-01-01 10:00:00}", "{? [1, 2]: 3}", "{1: 2, null: 3, 1.5: x}", "!!omap [a: 1]",
]  # fmt: skip
# Settings that take any YAML (a task's own options, a plugin's, keyword arguments): what YAML builds goes through whole.
FREE_FORM = st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from(["env.task_config", "env.task_config.x", "env.sources.0.task_config", "env.args", "tools.mcp"]),
    st.sampled_from(YAML_TREES) | JSON_VALUES.map(json.dumps),
)


@st.composite
def overrides(draw: st.DrawFn, recipe: str) -> list[str]:
    sensible = st.sampled_from(LEAVES[recipe]).flatmap(lambda leaf: _like(leaf[1]).map(lambda value: f"{leaf[0]}={value}"))
    chosen = draw(st.lists(st.one_of(sensible, sensible, WILD, FREE_FORM), max_size=3))
    # `plugins` imports what it names: no fuzzer should pick modules to import.
    return [o for o in chosen if not o.partition("=")[0].strip().startswith("plugins")]


def _names_a_key(message: str, overrides: Sequence[str], source: str) -> bool:
    """Whether a config error names one of the keys set: `--set KEY: ...` (or the whole assignment), or the failing
    key, a dotted path under one of the sections set, after the recipe's path."""
    keys = [override.partition("=")[0] for override in overrides]
    if message.startswith("--set "):
        named = message.removeprefix("--set ")
        # A section switched by name (`algo.loss.name=...`) applies its keys again under the section: `loss.name`.
        shown = [variant for key in keys for variant in (key, key.strip(), key.strip().split(".", 1)[-1])]
        return named.startswith(tuple(repr(override) for override in overrides)) or named.startswith(
            tuple(f"{key}:" for key in shown)
        )
    location = message.removeprefix(f"{source}: ")
    sections = tuple(key.strip().split(".")[0] for key in keys)
    return location != message and location.startswith(tuple(f"{section}{end}" for section in sections for end in ".:"))


@fuzz(400)
@given(data=st.data(), recipe=st.sampled_from(RECIPES))
def test_overrides_give_a_config_or_an_error_naming_the_key(data, recipe):
    sets = data.draw(overrides(recipe), label="overrides")
    try:
        config = load_config(recipe, sets)
    except ConfigError as error:
        message = str(error)
        event("--set" if message.startswith("--set") else "validation")  # the mix: --hypothesis-show-statistics
        assert message.isprintable() and _names_a_key(message, sets, str(recipe_path(recipe))), message
        return
    assert isinstance(config, RunConfig)
    event("ok")
    # What config.yaml stores is what a resumed run reads back: an accepted config must survive the trip.
    written = config.model_dump(mode="json")
    resumed = parse_config(yaml.safe_load(yaml.safe_dump(written, sort_keys=False))).model_dump(mode="json")
    assert json.dumps(resumed) == json.dumps(written)  # as text: NaN equals NaN


# ---- 3. tool-call JSON -----------------------------------------------------------------------------------------------


def _fails(arguments: dict[str, Any]) -> str:
    raise RuntimeError("the tool's own bug")


def _tool(name: str, properties: dict[str, Any], run: Callable[[dict[str, Any]], str]) -> Tool:
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return Tool(name, f"The {name} tool.", schema, lambda: run)


TOOLS = [
    _tool("echo", {"text": {"type": "string"}}, lambda arguments: arguments["text"]),  # the model's text, back to it
    _tool("add", {"a": {"type": "integer"}, "b": {"type": "integer"}}, lambda arguments: str(arguments["a"] + arguments["b"])),
    _tool("broken", {}, _fails),
    _tool("weather", {"city": {"type": "string"}}, _fails),  # external: the caller runs it
]
TOOL_NAMES = [tool.name for tool in TOOLS]
ARGUMENTS = st.one_of(
    st.fixed_dictionaries({"text": TEXT | with_surrogate()}),
    # 4300 digits: json reads them, but their sum is one digit past what str() writes.
    st.fixed_dictionaries({"a": st.integers(-(10**30), 10**30) | st.just(9 * 10**4299), "b": st.integers() | st.just(10**4299)}),
    st.fixed_dictionaries({"city": TEXT}, optional={"units": TEXT}),
    JSON_VALUES,
)
# Calls as the tools' schemas want them: the loop runs these.
GOOD_CALLS = st.one_of(
    # A string, by the schema; as JSON's \u escape it may be half a surrogate pair, which echoed back is not text.
    st.fixed_dictionaries({"name": st.just("echo"), "arguments": st.fixed_dictionaries({"text": TEXT | with_surrogate()})}),
    st.fixed_dictionaries({"name": st.just("add"), "arguments": st.fixed_dictionaries({"a": st.integers(), "b": st.integers()})}),
    st.just({"name": "broken", "arguments": {}}),
    st.fixed_dictionaries({"name": st.just("weather"), "arguments": st.fixed_dictionaries({"city": TEXT})}),
)
PAYLOADS = st.one_of(
    GOOD_CALLS,
    GOOD_CALLS.map(lambda call: {**call, "arguments": json.dumps(call["arguments"])}),
    st.fixed_dictionaries(
        {"name": st.sampled_from([*TOOL_NAMES, "python", "", "Echo"]) | TEXT | with_surrogate()},
        # The OpenAI wire format sends arguments as a JSON string.
        optional={"arguments": ARGUMENTS | ARGUMENTS.map(json.dumps)},
    ),
    st.fixed_dictionaries({"name": JSON_VALUES, "arguments": ARGUMENTS}),
    JSON_VALUES,
)


@st.composite
def call_bodies(draw: st.DrawFn) -> str:
    """What a model writes between the tool-call markers: mostly JSON calls, some broken on purpose."""
    payload, indent = draw(PAYLOADS), draw(st.sampled_from([None, 1]))
    body = json.dumps(payload, indent=indent, ensure_ascii=False)
    if draw(st.booleans()) or not body.isascii() and not _is_text(body):
        body = json.dumps(payload, indent=indent)  # a model writes a lone surrogate only as its \u escape
    damage = draw(st.sampled_from(["none"] * 4 + ["truncate", "limit", "text"]))
    if damage == "truncate" and len(body) > 1:
        body = body[: draw(st.integers(1, len(body) - 1))]
    elif damage == "limit":  # numbers and nesting the json module cannot read, or only just can
        body = f'{{"name": "echo", "arguments": {draw(HUGE_INT | DEEP)}}}'
    elif damage == "text":
        body = draw(TEXT)
    return f"\n{body}\n" if draw(st.booleans()) else body


@st.composite
def model_turns(draw: st.DrawFn) -> str:
    """A model turn: text, thinking, and a tool call that is closed, left open, or one of two."""
    before = draw(st.sampled_from(["", "Let me check.\n", "<think>I should call a tool.</think>\n"]) | TEXT)
    shape = draw(st.sampled_from(["closed", "closed", "closed", "open", "none", "two"]))
    if shape == "none":
        return before + draw(st.sampled_from(["Answer: 42", ""]) | TEXT)
    call = CALL_OPEN + draw(call_bodies())
    if shape == "open":
        return before + call
    text = before + call + CALL_CLOSE + draw(st.sampled_from(["", "\nAnswer: 3"]) | TEXT)
    return text + (CALL_OPEN + draw(call_bodies()) + CALL_CLOSE if shape == "two" else "")


@fuzz(500)
@given(text=model_turns())
def test_tool_call_text_gives_a_call_or_a_tool_error(text):
    from rlvr.chat_view import _call_summary
    from rlvr.serve.answers import assistant_message

    body = find_call(text)
    assert has_open_call(text) == (CALL_OPEN in text and body is None)
    if body is not None:
        try:
            call = parse_call(body)
        except ToolError as error:
            assert str(error)  # what the loop shows the model
        else:
            assert isinstance(call.name, str)
            assert _is_text(json.dumps([call.name, call.arguments], ensure_ascii=False))  # what a tokenizer encodes
            if call.name in TOOL_NAMES:
                try:
                    assert isinstance(TOOLS[TOOL_NAMES.index(call.name)].validate(call.arguments), dict)
                except ToolError as error:
                    assert str(error).startswith(("arguments for", "invalid arguments for"))
    # The other readers of a call: the server's answer and `rlvr chat`'s view.
    message = assistant_message(text)
    for record in message.tool_calls or []:
        json.loads(record.function.arguments)
    if CALL_OPEN in text:
        assert isinstance(_call_summary(text), str)


class _Scripted(RolloutEngine):
    """Writes the scripted turns in order, as an engine would: stopped at a stop string (kept), else ended."""

    def __init__(self, tokenizer, turns: list[str]) -> None:
        self.tokenizer, self.turns = tokenizer, list(turns)

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams) -> list[Episode]:
        episodes = []
        for prompt in prompts:
            text = self.turns.pop(0) if self.turns else "Answer: 1"
            ends = [text.index(stop) + len(stop) for stop in sampling.stop if stop in text]
            ids = self.tokenizer.encode(text[: min(ends)] if ends else text, add_special_tokens=False)
            ids = (ids if ends else [*ids, self.tokenizer.eos_token_id])[: sampling.max_new_tokens]
            episodes.append(Episode(list(prompt), ids, [0.0] * len(ids), [1] * len(ids), text=self.tokenizer.decode(ids)))
        return episodes

    def update_weights(self, weights: Any) -> None:
        pass


@pytest.fixture(scope="module")
def chat(tokenizer) -> ChatFormat:
    return ChatFormat(tokenizer, TOOLS)


def _tool_result(text: str) -> str | None:
    """What the tool loop must put after a turn that ends in a call: the tool's own output, or None for an error."""
    try:
        call = parse_call(find_call(text) or "")
        tool = TOOLS[TOOL_NAMES.index(call.name)]
        return tool.session()(tool.validate(call.arguments))
    except (ToolError, ValueError, RuntimeError):  # ValueError: unknown name, or an integer sum past int's digit limit
        return None


@fuzz(150)
@given(turns=st.lists(model_turns(), min_size=1, max_size=4), budget=st.sampled_from([64, 100_000]))
def test_the_tool_loop_answers_every_call_and_never_raises(tokenizer, chat, turns, budget):
    # Up to 4 turns against at most 3 model turns: the last call may be one the loop must not run (`max_turns`).
    loop = ToolLoop(
        _Scripted(tokenizer, turns), chat, ToolLoopSettings(max_turns=3, max_result_tokens=10**6), frozenset({"weather"})
    )
    prompt = chat.prompt_ids([{"role": "user", "content": "What is 2 + 2?"}])
    # A budget that cuts turns short (`length`), and one that no turn reaches, so the longest calls arrive whole.
    (episode,) = loop.generate([prompt], SamplingParams(greedy=True, max_new_tokens=budget))
    stats, messages = episode.meta["tools"], episode.meta["messages"]
    assert stats["stop"] in {"end_of_turn", "length", "max_turns", "tool_calls"}
    assert [m["role"] for m in messages] == ["assistant", "tool"] * (len(messages) // 2) + ["assistant"] * (len(messages) % 2)
    for asked, answered in zip(messages[::2], messages[1::2]):
        expected = _tool_result(asked["content"])
        if expected is None:
            assert answered["content"].startswith("Error: "), answered["content"]
        else:
            assert answered["content"] == expected
    assert stats["errors"] == sum(m["content"].startswith("Error: ") for m in messages[1::2])


# ---- 4. chat messages ------------------------------------------------------------------------------------------------

ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | st.sampled_from(["wizard", "", "USER"])
CONTENTS = st.one_of(
    TEXT,
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2),  # content parts
    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"])}, optional={"text": JSON_SCALARS})),
    JSON_SCALARS,
)
# On the wire a call's arguments are a JSON string: a right one, a broken one, one json cannot read, or none at all.
WIRE_ARGUMENTS = ARGUMENTS.map(json.dumps) | call_bodies() | st.sampled_from(["", " "]) | HUGE_INT | DEEP
WIRE_CALLS = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call_0", "call_1"]),
        "function": st.fixed_dictionaries({"name": st.sampled_from(TOOL_NAMES) | TEXT, "arguments": WIRE_ARGUMENTS}),
    },
    optional={"type": st.just("function")},
)
WILD_CALLS = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["call_0"]) | TEXT | st.integers(),
        "function": st.fixed_dictionaries({}, optional={"name": TEXT, "arguments": WIRE_ARGUMENTS | JSON_VALUES}),
    },
    optional={"type": st.sampled_from(["function", "tool"])},
)
MESSAGES = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": CONTENTS,
        "name": TEXT | st.integers(),
        "tool_calls": st.lists(WIRE_CALLS | WILD_CALLS, max_size=2) | JSON_SCALARS,
        "tool_call_id": st.sampled_from(["call_0", "call_1"]) | st.integers(),
        "reasoning_content": TEXT,
        "refusal": TEXT,  # a field OpenAI has and this server does not
    },
)
# Mostly messages the schema takes, so that the examples get past validation to the rendering.
VALID_MESSAGES = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "developer", "user", "assistant"]), "content": TEXT}),
    st.fixed_dictionaries(
        {"role": st.just("user"), "content": st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)}
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.none() | TEXT, "tool_calls": st.lists(WIRE_CALLS, min_size=1, max_size=2)}
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "tool_call_id": st.sampled_from(["call_0", "call_1"]), "content": TEXT}, optional={"name": TEXT}
    ),
)
VALID_SPECS = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "lookup", "echo"])},
            optional={"description": TEXT, "parameters": st.just({"type": "object", "properties": {"city": {"type": "string"}}})},
        ),
    }
)
WILD_SPECS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["function", "retrieval"]),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["get_weather", "bad name", ""]) | TEXT},
            optional={"description": TEXT, "parameters": JSON_VALUES},
        ),
    }
)
# Request options as clients send them, and as they get them wrong.
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.sampled_from([0, 0.7, 1.0]),
        "max_tokens": st.sampled_from([1, 16, 10**6]),
        "n": st.sampled_from([1, 2]),
        "seed": st.integers(0, 2**32) | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63)]),  # int64's edges
        "stop": st.sampled_from(["\n", ["a", "b"], []]),
        "tools": st.lists(VALID_SPECS, max_size=2),
        "tool_choice": st.sampled_from(["auto", "none"]),
        "reasoning_effort": st.sampled_from(["low", "high"]),
        "thinking_budget": st.just(8),
        "extra_body": st.just({"thinking_budget": 4}),
        "stream": st.booleans(),
    },
)
# One option wrong at a time, so that the others being right lets the request reach the check of that one.
WILD_OPTIONS = {
    "temperature": st.sampled_from([2.5, -1, "hot", None]),
    "max_tokens": st.sampled_from([0, 2**70, "8"]),
    "n": st.sampled_from([0, 17]),
    "seed": st.sampled_from([2**64, -(2**70), 1.5]),
    "stop": st.sampled_from([["a", ""], 3]),
    "tools": st.lists(WILD_SPECS, min_size=1, max_size=2),
    "tool_choice": st.just("required"),
    "reasoning_effort": st.just("extreme"),
    "thinking_budget": st.sampled_from([0, "8"]),
    "extra_body": st.just({"other": 1}),
    "frequency_penalty": st.sampled_from([0.0, 1.0]),
}
WILD_OPTION = st.sampled_from(sorted(WILD_OPTIONS)).flatmap(lambda key: WILD_OPTIONS[key].map(lambda value: {key: value}))
REQUESTS = st.builds(
    lambda model, messages, options, wild: {"model": model, "messages": messages, **options, **wild},
    st.sampled_from(["served"] * 9 + ["gpt-5"]),
    st.sampled_from([True, True, True, False]).flatmap(
        lambda valid: (
            st.lists(VALID_MESSAGES, min_size=1, max_size=4) if valid else st.lists(VALID_MESSAGES | MESSAGES, max_size=4)
        )
    ),
    OPTIONS,
    st.sampled_from([False, False, True]).flatmap(lambda wild: WILD_OPTION if wild else st.just({})),
)


@st.composite
def request_bodies(draw: st.DrawFn) -> bytes:
    body = json.dumps(draw(REQUESTS)).encode()
    damage = draw(st.sampled_from(["none"] * 12 + ["truncate", "bytes", "not_object"]))
    if damage == "truncate":
        return body[: draw(st.integers(0, len(body) - 1))]
    if damage == "bytes":
        return draw(st.binary(max_size=30))
    return json.dumps(draw(JSON_VALUES)).encode() if damage == "not_object" else body


@pytest.fixture(scope="module")
def served(tokenizer) -> list:
    """The server's model side on the real tokenizer, with and without tools of the recipe's own, and no engine: a
    request becomes a rendered job or a 400-style error before anything is generated."""
    from rlvr.assistant import Assistant
    from rlvr.serve.backend import ServedModel, ServeSettings

    models = []
    for tools in ([], TOOLS[:1]):
        env = SimpleNamespace(
            messages=lambda problem: [{"role": "system", "content": "Be brief."}, {"role": "user", "content": problem.question}]
        )
        assistant = SimpleNamespace(
            config=load_config(None), tokenizer=tokenizer, engine=None, sampler=None, env=env, context_length=8192
        )
        assistant.chat = ChatFormat(tokenizer, tools)
        assistant.opening = functools.partial(Assistant.opening, assistant)  # the real opening, on the stand-in env
        models.append(ServedModel(assistant, "served", ServeSettings()))
    return models


REQUEST_FIELDS = ("model", "messages", "tools", "reasoning_effort", "prompt")


@fuzz(300)
@given(body=request_bodies(), with_tools=st.booleans())
def test_chat_requests_are_rendered_or_refused_naming_the_field(served, body, with_tools):
    from rlvr.serve.app import parse
    from rlvr.serve.backend import RequestError
    from rlvr.serve.schema import ChatCompletionRequest

    try:
        request = parse(ChatCompletionRequest, body)
    except RequestError as error:  # the body's validation: OpenAI's error body, `param` naming the field
        assert error.status == 400 and error.message
        assert error.param is None or error.message.startswith(f"{error.param}: "), (error.param, error.message)
        return
    try:
        job = served[with_tools].chat_job(request)
    except RequestError as error:
        assert (
            error.status in (400, 404) and error.param is not None and error.param.split("[")[0].split(".")[0] in REQUEST_FIELDS
        )
        # This template renders any list of roles and texts: a refusal to render would be a bug of rlvr's own.
        assert not error.message.startswith("the chat template cannot render"), error.message
        return
    assert job.mode in ("plain", "tools", "thinking") and len(job.prompts) == request.n
    assert job.prompts[0] and all(isinstance(token, int) for token in job.prompts[0])
    torch.Generator().manual_seed(job.sampling.seed)  # what the engines seed with: a seed they refuse is a 500


DEMO_CALLS = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.sampled_from(TOOL_NAMES), "arguments": ARGUMENTS}),
    }
)
GOOD_DEMOS = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(DEMO_ROLES), "content": TEXT}, optional={"name": TEXT}),
    # OpenAI's format may leave out the text of a turn that calls a tool.
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "tool_calls": st.lists(DEMO_CALLS, min_size=1, max_size=2)}, optional={"content": TEXT}
    ),
)
WILD_CALLS_IN_DEMOS = st.fixed_dictionaries(
    {},
    optional={
        "function": JSON_VALUES | st.fixed_dictionaries({"name": TEXT | st.integers()}, optional={"arguments": JSON_VALUES})
    },
)
WILD_DEMOS = st.one_of(
    st.fixed_dictionaries(
        {"role": ROLES},
        optional={
            "content": CONTENTS | with_surrogate(),
            "name": TEXT,
            "tool_calls": JSON_VALUES | st.lists(DEMO_CALLS | WILD_CALLS_IN_DEMOS, max_size=2),
        },
    ),
    JSON_SCALARS,
)


@st.composite
def demo_files(draw: st.DrawFn) -> bytes:
    messages = st.sampled_from([True] * 6 + [False]).flatmap(lambda good: GOOD_DEMOS if good else WILD_DEMOS)
    choice = draw(st.sampled_from(["list"] * 12 + ["not_list", "broken", "limit", "bytes"]))
    if choice == "not_list":
        return json.dumps(draw(JSON_SCALARS | st.dictionaries(TEXT, JSON_VALUES, max_size=2))).encode()
    text = json.dumps(draw(st.lists(messages, max_size=4)), indent=1)
    if choice == "broken":
        return text[: draw(st.integers(0, len(text) - 1))].encode()
    if choice == "limit":
        return f'[{{"role": "user", "content": {draw(HUGE_INT | DEEP)}}}]'.encode()
    return text.encode()[:-1] + b"\xff]" if choice == "bytes" else text.encode()


def _demo_problem(message: Any) -> str | None:
    """The field `load_demos` must name for one message, or None: an independent reading of its rules."""
    if not isinstance(message, dict) or message.get("role") not in DEMO_ROLES:
        return "role"
    calls = message.get("tool_calls", [])
    if not isinstance(calls, list):
        return "tool_calls"
    content = message.get("content", "" if message["role"] == "assistant" and calls else None)
    if not isinstance(content, str) or not _is_text(content):
        return "content"
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(function, dict) and isinstance(function.get("name"), str) and "arguments" in function):
            return "tool_calls"
    return None


@fuzz(200)
@given(raw=demo_files())
def test_demos_load_and_render_or_name_the_message_and_field(folder, tokenizer, chat, raw):
    path = folder / "demos.json"
    path.write_bytes(raw)
    try:
        demos = load_demos(str(path))
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"env.demos: {path}: ") and "\n" not in message, message
        try:
            written = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON (or not UTF-8), or JSON that json cannot read
            return
        if isinstance(written, list):
            index, field = next((i, p) for i, m in enumerate(written) if (p := _demo_problem(m)) is not None)
            assert message.startswith(f"env.demos: {path}: message {index}: {field}: "), message
        return
    assert all(_demo_problem(message) is None for message in demos)
    # Checked at load time so that no demonstration fails as a template error mid-run: both formats render them.
    conversation = [{"role": "system", "content": "Be brief."}, *demos, {"role": "user", "content": "2 + 2?"}]
    for chat_format in (ChatFormat(tokenizer), chat):
        ids = chat_format.prompt_ids(conversation)
        assert ids and all(isinstance(token, int) for token in ids)
