"""Reading a source's records from JSONL, CSV, Parquet or a `datasets` folder, with the line each came from."""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from rlvr.data.source import MAX_REASONS, Format, LoadReport, Record, Row, Source
from rlvr.data.validating import InvalidRow, names, to_row
from rlvr.errors import ConfigError, parser_limit

logger = logging.getLogger(__name__)

_SUFFIXES: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


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
            if isinstance(record, InvalidRow):
                raise record
            rows.append(to_row(record, source, line))
        except InvalidRow as exc:
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


def read_records(source: Source) -> Iterator[tuple[int, Record | InvalidRow]]:
    """(line, record) pairs of any format a source takes, not yet validated: for readers of rows of another shape
    (supervised fine-tuning's chat traces). A row that cannot be parsed comes as an InvalidRow."""
    path = Path(source.path)
    if not path.exists():
        raise ConfigError(f"{source.path}: no such file")
    return _records(source, path, _detect_format(source, path))


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


def _records(source: Source, path: Path, fmt: Format) -> Iterator[tuple[int, Record | InvalidRow]]:
    """(line, record) pairs; a row that cannot even be parsed comes as an InvalidRow in place of the record."""
    if fmt == "jsonl":
        return _read_jsonl(source.path, path)
    if fmt == "csv":
        return _read_csv(source.path, path)
    if fmt == "parquet":
        return _numbered(_read_parquet(source.path, path))
    return _numbered(_read_datasets(source, path))


def _numbered(records: list[Record]) -> Iterator[tuple[int, Record | InvalidRow]]:
    return enumerate(records, start=1)


def _read_jsonl(name: str, path: Path) -> Iterator[tuple[int, Record | InvalidRow]]:
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


def _parse_json_line(raw: bytes) -> Record | InvalidRow:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        return InvalidRow(f"invalid JSON: {exc.msg} (column {exc.colno})")
    except UnicodeDecodeError:
        return InvalidRow("invalid JSON: not UTF-8 text")
    except (ValueError, RecursionError) as exc:  # valid syntax that Python does not read: a huge integer, deep nesting
        return InvalidRow(f"invalid JSON: {parser_limit(exc)}")
    if not isinstance(record, dict):
        return InvalidRow(f"expected a JSON object, got {type(record).__name__}")
    return record


def _read_csv(name: str, path: Path) -> Iterator[tuple[int, Record | InvalidRow]]:
    # csv.reader rather than DictReader: DictReader silently pads short rows, drops extra cells and merges
    # duplicate columns; and its line_num tracking lets us report where a (possibly multi-line) record starts.
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # utf-8-sig would count error positions without it
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Decoded whole, not in the chunks a text file reads ahead by, so that the error names the line of the bad byte.
        line = len(re.findall(rb"\r\n|\r|\n", raw[: exc.start])) + 1
        raise ConfigError(f"{name}:{line}: invalid CSV: not UTF-8 text ({exc.reason})") from None
    with io.StringIO(text, newline="") as file:
        reader = csv.reader(file)
        try:
            header = next(reader, None)
            if header is None:
                return
            duplicates = sorted({column for column in header if header.count(column) > 1})
            if duplicates:
                raise ConfigError(f"{name}:1: duplicate columns {names(duplicates)}")
            end = reader.line_num
            for cells in reader:
                start, end = end + 1, reader.line_num
                if not cells:  # a blank line
                    continue
                if len(cells) != len(header):
                    yield start, InvalidRow(f"expected {len(header)} values ({names(header)}), got {len(cells)}")
                    continue
                yield start, dict(zip(header, cells))
        except csv.Error as exc:  # raised on the line it has just read (a field over csv's size limit)
            raise ConfigError(f"{name}:{reader.line_num}: invalid CSV: {exc}") from None


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
