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

from rlvr.data.mixing import Mixture, Stream, split_held_out
from rlvr.data.reading import load_source, read_records
from rlvr.data.source import (
    GYM_PREFIX,
    HUMANEVAL,
    INSTRUCTIONS,
    FieldMap,
    InstructionsOptions,
    LoadReport,
    Row,
    Source,
    SourceKind,
    source_kind,
)

__all__ = [
    "GYM_PREFIX",
    "HUMANEVAL",
    "INSTRUCTIONS",
    "FieldMap",
    "InstructionsOptions",
    "LoadReport",
    "Mixture",
    "Row",
    "Source",
    "SourceKind",
    "Stream",
    "load_source",
    "read_records",
    "source_kind",
    "split_held_out",
]
