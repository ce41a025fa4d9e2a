"""User datasets for training and evaluation: JSONL, CSV, Parquet or a `datasets.save_to_disk` folder.

`load_source` reads one `Source` into `Row`s and reports every problem as a one-line `ConfigError`
of the form `path:line: field: what is wrong`. `Mixture` interleaves several loaded sources by
weight into an endless stream whose row `i` depends only on `(seed, i)`, so a resumed run draws
exactly the rows it would have drawn. `split_held_out` carves an evaluation split off a row list.

Line numbers (`Row.line` and error messages) are what a user would open the file at:
- JSONL: the 1-based physical line (blank lines are not rows but still count).
- CSV: the 1-based physical line where the record starts; the header is line 1, so data starts at 2.
- Parquet and `datasets` folders: the row index + 1 (there are no lines).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.errors import ConfigError
from rlvr.registry import registered
from rlvr.seeds import named_rng

logger = logging.getLogger(__name__)

Format = Literal["auto", "jsonl", "csv", "parquet", "datasets"]
Record = dict[str, Any]
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

GYM_PREFIX = "gym:"
HUMANEVAL = "humaneval"
_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# A skipped-rows summary quotes this many reasons: enough to spot a pattern, short enough to read.
MAX_REASONS = 5


class FieldMap(BaseModel):
    """Which column of the file holds each part of a problem."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field("question", min_length=1)
    answer: str = Field("answer", min_length=1)
    tests: str | None = Field(None, description="column with test cases (a string or a list of strings); required if set")
    subset: str | None = Field(None, description="column naming each row's subset; overrides Source.subset")


SourceKind = Literal["gym", "humaneval", "file"]


def source_kind(path: str) -> SourceKind:
    """What a source path names: a reasoning-gym task (`gym:<task>`), the packaged HumanEval, or a file or folder."""
    if path.startswith(GYM_PREFIX):
        return "gym"
    return "humaneval" if path == HUMANEVAL else "file"


class Source(BaseModel):
    """One dataset of a mixture, as written in a recipe: a file or folder, a reasoning-gym task, or a benchmark."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="a file or folder; `gym:<task>` for a reasoning-gym task; `humaneval`")
    format: Format = "auto"
    fields: FieldMap = FieldMap()
    weight: float = Field(1.0, gt=0.0, description="relative share of this source in a Mixture")
    subset: str | None = Field(None, description="subset tag of every row; defaults to the file stem or the task name")
    split: str | None = Field(None, description="split of a saved DatasetDict; required when it has several")
    skip_invalid: bool = Field(False, description="skip invalid rows (counted in the LoadReport) instead of failing")
    task_config: dict[str, Any] = Field({}, description="the reasoning-gym task's config (gym:<task> only)")
    verifier: Annotated[str, registered("rlvr.rewards", "VERIFIERS")] | None = Field(
        None, description="the reward that decides correctness; default: gym, code for humaneval or rows with tests, else math"
    )
    use: Literal["both", "train", "eval"] = Field(
        "both", description="both: hold out eval rows and train on the rest; train: no eval rows; eval: evaluation only"
    )
    eval_size: int | None = Field(
        None, ge=0, description="held-out rows; default: all for use=eval, else a share of env.eval_size"
    )
    system_prompt: str | None = Field(None, description="instead of the environment's system prompt, for this source's rows")

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.path)

    @property
    def gym_task(self) -> str:
        return self.path.removeprefix(GYM_PREFIX)

    @model_validator(mode="after")
    def _defaults(self) -> Source:
        if self.task_config and self.kind != "gym":
            raise ValueError(f"task_config is for reasoning-gym sources (gym:<task>), not {self.path!r}")
        if self.kind == "gym" and not self.gym_task:
            raise ValueError("gym: needs a task name, e.g. gym:chain_sum")
        if self.subset is None:
            self.subset = {"gym": self.gym_task, "humaneval": HUMANEVAL}.get(self.kind) or Path(self.path).stem
        if self.verifier is None:
            by_kind = {"gym": "gym", "humaneval": "code"}
            self.verifier = by_kind.get(self.kind) or ("code" if self.fields.tests else "math")
        return self


@dataclass(frozen=True)
class Row:
    question: str
    answer: str
    tests: list[str] | str | None
    subset: str
    source: str  # the Source.path it came from
    line: int  # see the module docstring: JSONL/CSV line, or row index + 1
    extra: dict[str, Any] = field(default_factory=dict)  # the record's unmapped columns


@dataclass
class LoadReport:
    """What `load_source` kept and skipped; `reasons` holds the first MAX_REASONS error messages."""

    source: str
    rows: int
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.source}: {self.rows} rows"
        if self.skipped:
            text += f", {self.skipped} invalid rows skipped (first: {'; '.join(self.reasons)})"
        return text


class _Invalid(ValueError):
    """A problem with one row: fatal, or counted and skipped with `skip_invalid`."""


# ---------------------------------------------------------------- reading


def load_source(source: Source) -> tuple[list[Row], LoadReport]:
    """All valid rows of `source` and a report of the skipped ones (also logged as a warning).

    Raises ConfigError for a missing or unreadable file, an unknown format, a bad split, an empty
    result, and (unless `source.skip_invalid`) the first invalid row.
    """
    path = Path(source.path)
    if not path.exists():
        raise ConfigError(f"{source.path}: no such file")
    rows: list[Row] = []
    report = LoadReport(source.path, 0)
    for line, record in _records(source, path, _detect_format(source, path)):
        try:
            if isinstance(record, _Invalid):
                raise record
            rows.append(_to_row(record, source, line))
        except _Invalid as exc:
            message = f"{source.path}:{line}: {exc}"
            if not source.skip_invalid:
                raise ConfigError(message) from None
            report.skipped += 1
            if len(report.reasons) < MAX_REASONS:
                report.reasons.append(message)
    report.rows = len(rows)
    if not rows:
        detail = f": all {report.skipped} invalid, first: {report.reasons[0]}" if report.skipped else ""
        raise ConfigError(f"{source.path}: no rows{detail}")
    if report.skipped:
        logger.warning(report.summary())
    return rows, report


def _detect_format(source: Source, path: Path) -> Format:
    if source.format != "auto":
        expected_folder = source.format == "datasets"
        if path.is_dir() != expected_folder:
            kind = "a folder saved with datasets.save_to_disk" if expected_folder else f"a {source.format} file"
            raise ConfigError(f"{source.path}: expected {kind} (format: {source.format})")
        return source.format
    if path.is_dir():
        return "datasets"
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise ConfigError(
        f"{source.path}: unknown format {path.suffix or '(no suffix)'!r} "
        f"(expected .jsonl, .json, .csv, .parquet or a datasets folder; or set format)"
    )


def _records(source: Source, path: Path, fmt: Format) -> Iterator[tuple[int, Record | _Invalid]]:
    """(line, record) pairs; a row that cannot even be parsed comes as an _Invalid in place of the record."""
    if fmt == "jsonl":
        return _read_jsonl(source.path, path)
    if fmt == "csv":
        return _read_csv(source.path, path)
    if fmt == "parquet":
        return _numbered(_read_parquet(source.path, path))
    return _numbered(_read_datasets(source, path))


def _numbered(records: list[Record]) -> Iterator[tuple[int, Record | _Invalid]]:
    return enumerate(records, start=1)


def _read_jsonl(name: str, path: Path) -> Iterator[tuple[int, Record | _Invalid]]:
    # Bytes, not text: json.loads detects the encoding (and a BOM) per line, so one bad line is one bad row.
    with path.open("rb") as file:
        first = True
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            if first and raw.lstrip().startswith(b"["):
                raise ConfigError(f"{name}:{line}: expected one JSON object per line (JSON Lines), found a JSON array")
            first = False
            yield line, _parse_json_line(raw)


def _parse_json_line(raw: bytes) -> Record | _Invalid:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return _Invalid(f"invalid JSON: {exc.msg} (column {exc.colno})")
    except UnicodeDecodeError:
        return _Invalid("invalid JSON: not UTF-8 text")
    if not isinstance(record, dict):
        return _Invalid(f"expected a JSON object, got {type(record).__name__}")
    return record


def _read_csv(name: str, path: Path) -> Iterator[tuple[int, Record | _Invalid]]:
    # csv.reader rather than DictReader: DictReader silently pads short rows, drops extra cells and merges
    # duplicate columns; and its line_num tracking lets us report where a (possibly multi-line) record starts.
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        try:
            header = next(reader, None)
            if header is None:
                return
            duplicates = sorted({column for column in header if header.count(column) > 1})
            if duplicates:
                raise ConfigError(f"{name}:1: duplicate columns {', '.join(duplicates)}")
            end = reader.line_num
            for cells in reader:
                start, end = end + 1, reader.line_num
                if not cells:  # a blank line
                    continue
                if len(cells) != len(header):
                    yield start, _Invalid(f"expected {len(header)} values ({', '.join(header)}), got {len(cells)}")
                    continue
                yield start, dict(zip(header, cells))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}:{reader.line_num + 1}: invalid CSV: {exc}") from None


def _read_parquet(name: str, path: Path) -> list[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{name}: not a readable Parquet file: {exc}") from None


def _read_datasets(source: Source, path: Path) -> list[Record]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ConfigError(f"{source.path}: not a folder saved with datasets.save_to_disk: {exc}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[_pick_split(source, list(loaded))]
    elif source.split is not None:
        raise ConfigError(f"{source.path}: split: {source.split!r} given, but this folder holds one Dataset, not a DatasetDict")
    return loaded.to_list()


def _pick_split(source: Source, splits: list[str]) -> str:
    available = ", ".join(splits)
    if source.split is None:
        if len(splits) == 1:
            return splits[0]
        raise ConfigError(f"{source.path}: split: required, this DatasetDict has several (available: {available})")
    if source.split not in splits:
        raise ConfigError(f"{source.path}: split: no split {source.split!r} (available: {available})")
    return source.split


# ---------------------------------------------------------------- validating


def _to_row(record: Record, source: Source, line: int) -> Row:
    fields = source.fields
    mapped = {fields.question, fields.answer, fields.tests, fields.subset}
    return Row(  # keyword arguments are evaluated in order, so the first bad field is the one reported
        question=_text(record, fields.question, numbers=False),
        # Numeric answers (`42`) are common in JSON and typed columns; the scorers compare text.
        answer=_text(record, fields.answer, numbers=True),
        tests=_tests(record, fields.tests) if fields.tests else None,
        subset=_text(record, fields.subset, numbers=True) if fields.subset else source.subset or "",
        source=source.path,
        line=line,
        extra={key: value for key, value in record.items() if key not in mapped},
    )


def _present(record: Record, name: str) -> Any:
    if name not in record:
        raise _Invalid(f"{name}: missing (fields present: {', '.join(map(str, record)) or 'none'})")
    value = record[name]
    if value is None:
        raise _Invalid(f"{name}: null")
    return value


def _text(record: Record, name: str, numbers: bool) -> str:
    value = _present(record, name)
    # bool is an int, but `True` as an answer has no agreed spelling ("True", "true"), so it is rejected.
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _Invalid(f"{name}: expected a string or a number, got {_show(value)}")
        # Integral floats come from integer columns with nulls (pandas writes them as float64): 42.0 means 42.
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        raise _Invalid(f"{name}: expected a string{' or a number' if numbers else ''}, got {_show(value)}")
    if not value.strip():
        raise _Invalid(f"{name}: empty")
    return value


def _tests(record: Record, name: str) -> list[str] | str:
    value = _present(record, name)
    if isinstance(value, str):
        if not value.strip():
            raise _Invalid(f"{name}: empty")
        return value
    if isinstance(value, list) and all(isinstance(test, str) for test in value):
        if not value:
            raise _Invalid(f"{name}: empty")
        return value
    raise _Invalid(f"{name}: expected a string or a list of strings, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# ---------------------------------------------------------------- mixing


class Stream(Protocol[T_co]):
    """An endless source, such as a procedurally generated task: item k exists for every k >= 0."""

    def __getitem__(self, index: int) -> T_co: ...


class Mixture(Generic[T]):
    """An endless stream of items drawn from several sources by weight; item i is a pure function of (seed, i).

    The stream is cut into blocks of BLOCK positions. Each block picks a source per position with its
    own RNG seeded by (seed, block), so any block can be rebuilt alone. Within a finite source (a list),
    its k-th draw is row `order[k % n]` of epoch `k // n`, each epoch a fresh seeded shuffle: every row is
    seen once per epoch. Within an endless source (a `Stream`), its k-th draw is simply its item k.
    k comes from per-source draw counts before each block, kept as a small prefix table.
    """

    BLOCK = 1024

    def __init__(self, sources: Sequence[tuple[Source, Sequence[T] | Stream[T]]], seed: int) -> None:
        if not sources:
            raise ValueError("a Mixture needs at least one source")
        empty = [source.path for source, rows in sources if isinstance(rows, Sequence) and not rows]
        if empty:
            raise ValueError(f"sources without rows: {', '.join(empty)}")
        self.seed = seed
        self._rows: list[list[T] | Stream[T]] = [list(rows) if isinstance(rows, Sequence) else rows for _, rows in sources]
        self._cumulative = list(accumulate(source.weight for source, _ in sources))
        # _starts[b][s]: how many times source s was drawn before block b.
        self._starts: list[list[int]] = [[0] * len(sources)]
        self._block = lru_cache(maxsize=4)(self._block_draws)
        self._order = lru_cache(maxsize=2 * len(sources))(self._epoch_order)

    def rows(self, start: int, count: int) -> list[T]:
        """Items start .. start+count-1 of the stream (the same however the range is chunked)."""
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be >= 0, got {start}, {count}")
        return [self.row(index) for index in range(start, start + count)]

    def row(self, index: int) -> T:
        block, offset = divmod(index, self.BLOCK)
        source, draw_in_block = self._block(block)[offset]
        rows = self._rows[source]
        draw = self._block_start(block)[source] + draw_in_block
        if not isinstance(rows, list):
            return rows[draw]
        epoch, position = divmod(draw, len(rows))
        return rows[self._order(source, epoch)[position]]

    def _block_draws(self, block: int) -> list[tuple[int, int]]:
        """(source, how many earlier positions of this block drew that source) for each position."""
        rng = named_rng("mixture", self.seed, block)
        total = self._cumulative[-1]
        counts = [0] * len(self._rows)
        draws = []
        for _ in range(self.BLOCK):
            # min(): rounding can make random() * total == total, one past the last source.
            source = min(bisect_right(self._cumulative, rng.random() * total), len(self._rows) - 1)
            draws.append((source, counts[source]))
            counts[source] += 1
        return draws

    def _block_start(self, block: int) -> list[int]:
        while len(self._starts) <= block:
            done = len(self._starts) - 1
            counts = list(self._starts[done])
            for source, _ in self._block(done):
                counts[source] += 1
            self._starts.append(counts)
        return self._starts[block]

    def _epoch_order(self, source: int, epoch: int) -> list[int]:
        order = list(range(len(self._rows[source])))
        named_rng("epoch", self.seed, source, epoch).shuffle(order)
        return order


def split_held_out(rows: Sequence[Row], size: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, eval): `size` distinct questions held out, chosen by `seed`; both keep the input order.

    Rows are grouped by question text so no question is in both: eval gets the first row of each
    held-out question, and every row of a held-out question is kept out of train.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    questions = list(dict.fromkeys(row.question for row in rows))
    if size >= len(questions):
        raise ConfigError(f"held-out size {size}: only {len(questions)} distinct questions, none would be left to train on")
    held_out = set(named_rng("held-out", seed).sample(questions, size))
    train = [row for row in rows if row.question not in held_out]
    first: dict[str, Row] = {}
    for row in rows:
        if row.question in held_out:
            first.setdefault(row.question, row)
    return train, list(first.values())
