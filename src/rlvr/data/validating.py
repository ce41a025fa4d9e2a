"""Checking one record of a file and turning it into a `Row`; what is wrong is named by field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from rlvr.data.source import Record, Row, Source
from rlvr.errors import lone_surrogate


class InvalidRow(ValueError):
    """A problem with one row: fatal, or counted and skipped with `skip_invalid`."""


def to_row(record: Record, source: Source, line: int) -> Row:
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


def names(columns: Iterable[Any]) -> str:
    """Column names for a one-line message: a name with a line break or another unprintable character as its repr."""
    return ", ".join(name if name.isprintable() else repr(name) for name in map(str, columns))


def _present(record: Record, name: str) -> Any:
    if name not in record:
        raise InvalidRow(f"{name}: missing (fields present: {names(record) or 'none'})")
    value = record[name]
    if value is None:
        raise InvalidRow(f"{name}: null")
    return value


def _text(record: Record, name: str, numbers: bool) -> str:
    value = _present(record, name)
    # bool is an int, but `True` as an answer has no agreed spelling ("True", "true"), so it is rejected.
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InvalidRow(f"{name}: expected a string or a number, got {_show(value)}")
        # Integral floats come from integer columns with nulls (pandas writes them as float64): 42.0 means 42.
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not isinstance(value, str):
        raise InvalidRow(f"{name}: expected a string{' or a number' if numbers else ''}, got {_show(value)}")
    if not value.strip():
        raise InvalidRow(f"{name}: empty")
    return _unicode(name, value)


def _unicode(name: str, value: str) -> str:
    # Refused here, not mid-run in the tokenizer.
    if (surrogate := lone_surrogate(value)) is not None:
        raise InvalidRow(f"{name}: not Unicode text (a lone surrogate {surrogate!r})")
    return value


def _tests(record: Record, name: str) -> list[str] | str:
    value = _present(record, name)
    if isinstance(value, str):
        if not value.strip():
            raise InvalidRow(f"{name}: empty")
        return _unicode(name, value)
    if isinstance(value, list) and all(isinstance(test, str) for test in value):
        if not value:
            raise InvalidRow(f"{name}: empty")
        return [_unicode(name, test) for test in value]
    raise InvalidRow(f"{name}: expected a string or a list of strings, got {_show(value)}")


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
