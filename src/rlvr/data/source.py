"""A recipe's data sources and the rows read from them."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlvr.errors import ConfigError
from rlvr.registry import registered

Format = Literal["auto", "jsonl", "csv", "parquet", "datasets"]
Record = dict[str, Any]

GYM_PREFIX = "gym:"
HUMANEVAL = "humaneval"
INSTRUCTIONS = "instructions"
# A skipped-rows summary quotes this many reasons: enough to spot a pattern, short enough to read.
MAX_REASONS = 5

# A judge's rubric prompt (`verifier: judge`, README: Judge rewards) fills these from the problem and the answer.
# It is checked here, with the sources and `judge.prompt` that carry one, so a typo stops the run at load time.
JUDGE_PLACEHOLDERS = ("question", "reference", "answer")
JUDGE_PROMPT_META = "judge_prompt"  # where a problem carries its source's rubric prompt
_PROMPT_FILES = (".txt", ".md")


def is_prompt_file(value: str) -> bool:
    """Whether a rubric prompt names a file (one line ending in .txt or .md) rather than being the text itself; a
    template holds `{answer}`, so none is ever taken for a file name."""
    return "\n" not in value and "{" not in value and Path(value).suffix in _PROMPT_FILES


def anchor_prompt_file(section: Any, key: str, folder: Path) -> None:
    """A rubric prompt file named in a recipe section (`judge.prompt`, a source's `judge_prompt`) is relative to the
    recipe's folder, like its data files."""
    value = section.get(key) if isinstance(section, dict) else None
    if isinstance(value, str) and is_prompt_file(value) and not Path(value).is_absolute():
        section[key] = str((folder / value).resolve())


def hard_verifier(name: str) -> str:
    """`judge.check_against`: any registered verifier but the judge itself."""
    if name == "judge":
        raise ValueError("a hard verifier checks the judge, not the judge itself")
    return name


def judge_prompt_text(value: str) -> str:
    """The rubric template a `judge_prompt` (or `judge.prompt`) gives: the file's text when it names a file, else
    itself; checked to use only the placeholders and `{answer}` among them (`{{` and `}}` are literal braces)."""
    if is_prompt_file(value):
        try:
            value = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the rubric prompt file {value}: {exc}") from None
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:  # a lone `{` or `}`
        raise ValueError(f"not a prompt template: {exc} (write a literal brace as {{{{ or }}}})") from None
    allowed = ", ".join(f"{{{name}}}" for name in JUDGE_PLACEHOLDERS)
    for name, spec, conversion in fields:
        if name not in JUDGE_PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{name}}} in the rubric prompt (placeholders: {allowed})")
    if "answer" not in {name for name, _, _ in fields}:
        raise ValueError(f"the rubric prompt never shows the answer: it needs {{answer}} (placeholders: {allowed})")
    return value


class FieldMap(BaseModel):
    """Which column of the file holds each part of a problem."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field("question", min_length=1)
    answer: str = Field("answer", min_length=1)
    tests: str | None = Field(None, description="column with test cases (a string or a list of strings); required if set")
    subset: str | None = Field(None, description="column naming each row's subset; overrides Source.subset")


SourceKind = Literal["gym", "humaneval", "instructions", "file"]
_BUILT_IN: dict[str, SourceKind] = {HUMANEVAL: "humaneval", INSTRUCTIONS: "instructions"}


def source_kind(path: str) -> SourceKind:
    """What a source path names: a reasoning-gym task (`gym:<task>`), the packaged HumanEval, the generated
    instruction-following problems (`instructions`), or a file or folder."""
    if path.startswith(GYM_PREFIX):
        return "gym"
    return _BUILT_IN.get(path, "file")


class InstructionsOptions(BaseModel):
    """The `task_config` of the `instructions` source: how many problems, from which seed. The same options always
    give the same problems, whatever the environment's seeds, so a regression suite compares like with like."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    size: int = Field(200, ge=1, le=5000, description="problems generated")
    seed: int = Field(0, description="seeds the generator")
    max_instructions: int = Field(2, ge=1, le=3, description="each problem has 1 to this many instructions")


class Source(BaseModel):
    """One dataset of a mixture, as written in a recipe: a file or folder, a reasoning-gym task, or a benchmark."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, description="a file or folder; `gym:<task>` for a reasoning-gym task; `humaneval`; `instructions`"
    )
    format: Format = "auto"
    fields: FieldMap = FieldMap()
    weight: float = Field(1.0, gt=0.0, description="relative share of this source in a Mixture")
    subset: str | None = Field(None, description="subset tag of every row; defaults to the file stem or the task name")
    split: str | None = Field(None, description="split of a saved DatasetDict; required when it has several")
    skip_invalid: bool = Field(False, description="skip invalid rows (counted in the LoadReport) instead of failing")
    task_config: dict[str, Any] = Field(
        {}, description="the reasoning-gym task's config (gym:<task>), or InstructionsOptions (instructions)"
    )
    verifier: Annotated[str, registered("rlvr.rewards", "VERIFIERS")] | None = Field(
        None,
        description="the reward that decides correctness; default: gym, code for humaneval or rows with tests, "
        "instructions for instructions, else math",
    )
    use: Literal["both", "train", "eval"] = Field(
        "both", description="both: hold out eval rows and train on the rest; train: no eval rows; eval: evaluation only"
    )
    eval_size: int | None = Field(
        None, ge=0, description="held-out rows; default: all of a file or benchmark for use=eval, else a share of env.eval_size"
    )
    system_prompt: str | None = Field(None, description="instead of the environment's system prompt, for this source's rows")
    difficulty: float | str | None = Field(
        None, description="every row's difficulty (a number), or the field holding each row's (a column, a gym metadata key)"
    )
    judge_prompt: Annotated[str, AfterValidator(judge_prompt_text)] | None = Field(
        None, description="verifier judge: this source's rubric, text or a .txt/.md file (relative to the recipe)"
    )

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.path)

    def difficulty_in(self, record: dict[str, Any], where: str) -> float | None:
        """A problem's difficulty: the source's number, or `record[difficulty]` (a row's columns, a gym entry's
        metadata), which must be a number; `where` names the row for the error."""
        if self.difficulty is None or isinstance(self.difficulty, float):
            return self.difficulty
        if self.difficulty not in record:
            raise ConfigError(f"{where}: {self.difficulty}: missing (the source's difficulty field)")
        value = record[self.difficulty]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {self.difficulty}: expected a number (a difficulty), got {value!r}")
        return float(value)

    @property
    def gym_task(self) -> str:
        return self.path.removeprefix(GYM_PREFIX)

    @property
    def instructions_options(self) -> InstructionsOptions:
        return InstructionsOptions.model_validate(self.task_config)

    def _check_instructions_options(self) -> None:
        # Here, so a typo stops the run at load time; re-raised as a ValueError, since a nested ValidationError would
        # be reported at the source's own keys.
        try:
            InstructionsOptions.model_validate(self.task_config)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            keys = ", ".join(InstructionsOptions.model_fields)
            raise ValueError(f"task_config.{where}: {error['msg']} (instructions takes {keys})") from None

    @model_validator(mode="after")
    def _defaults(self) -> Source:
        if self.task_config and self.kind not in ("gym", "instructions"):
            raise ValueError(f"task_config is for reasoning-gym sources (gym:<task>) and instructions, not {self.path!r}")
        if self.kind == "gym" and not self.gym_task:
            raise ValueError("gym: needs a task name, e.g. gym:chain_sum")
        if self.kind == "instructions":
            self._check_instructions_options()
        if self.difficulty is not None and self.kind not in ("gym", "file"):
            raise ValueError(f"difficulty is for files and reasoning-gym sources, not {self.path!r}")
        if self.subset is None:
            built_in = {"gym": self.gym_task, "humaneval": HUMANEVAL, "instructions": INSTRUCTIONS}
            self.subset = built_in.get(self.kind) or Path(self.path).stem
        if self.verifier is None:
            by_kind = {"gym": "gym", "humaneval": "code", "instructions": "instructions"}
            self.verifier = by_kind.get(self.kind) or ("code" if self.fields.tests else "math")
        if self.judge_prompt is not None and (self.verifier != "judge" or self.kind != "file"):
            raise ValueError("judge_prompt is the rubric of a file source whose verifier is judge")
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
