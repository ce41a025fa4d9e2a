"""Verifiable formatting instructions in the spirit of IFEval (Zhou et al., 2023), and the `instructions` verifier.

Each instruction is a small typed record (its parameters) that can say what it asks (`describe`), check a response
(`check`) and draw its parameters from a seeded generator (`draw`); they are registered by kind in `INSTRUCTION_KINDS`.
A problem's reference (`problem.answer`) is the JSON list of its instructions, `[{"kind": "max_words", "limit": 20},
...]`, so the verdict is a pure function of the response and that list, and a JSONL file of such rows can name this
verifier too. The checks follow IFEval's own where they are defined there, without its nltk and langdetect data.

The verdict is IFEval's strict prompt-level accuracy: 1.0 only when every instruction is followed, checked on the
response part of the completion (`response_text`), never on the thinking before it; the share followed (IFEval's
instruction-level accuracy) is logged as `instructions/followed_fraction`. An empty response follows nothing:
otherwise saying nothing would satisfy "no commas" or "at most 15 words".
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, TypeVar, get_type_hints

from rlvr.registry import Registry
from rlvr.rewards.answers import answer_tag
from rlvr.rewards.base import Verdict, register_verifier
from rlvr.types import Problem

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# A line-start `Answer:` marker (also `**Answer:**`), with what follows on its line or the next ones being the response:
# unlike `ANSWER_LINE` it does not stop at the line's end, since bullets and paragraphs take several lines.
_ANSWER_MARK = re.compile(r"^[ \t]*\**answer\**[ \t]*[:：](?:\*\*)?[ \t]*", re.IGNORECASE | re.MULTILINE)


def response_text(completion: str) -> str:
    """The part of a completion that the instructions apply to, stripped ("" when there is none).

    Thinking is cut off first: only the text after the last `</think>` counts, and a completion that opens a
    thinking block it never closes has not answered. In what is left: the last `<answer>` tag, else everything
    after the last line-start `Answer:` marker (what the system prompt asks for), else all of it (a model that
    skips the marker answers with its whole reply, as IFEval reads it).
    """
    _, closed, rest = completion.rpartition(_THINK_CLOSE)
    if not closed:
        if completion.lstrip().startswith(_THINK_OPEN):
            return ""
        rest = completion
    tagged = answer_tag(rest)
    if tagged is not None:
        return tagged
    marks = list(_ANSWER_MARK.finditer(rest))
    return (rest[marks[-1].end() :] if marks else rest).strip()


def word_count(text: str) -> int:
    """IFEval's count: runs of word characters, so "don't" is two words and "12" one."""
    return len(re.findall(r"\w+", text))


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


class Instruction(ABC):
    """One verifiable instruction: its parameters are the dataclass fields of a registered subclass."""

    kind: ClassVar[str]  # set by `instruction`, the name it is registered and serialised under

    @abstractmethod
    def describe(self) -> str:
        """The instruction as the prompt states it."""

    @abstractmethod
    def check(self, response: str) -> bool:
        """Whether `response` (non-empty, stripped) follows it; never raises, whatever the text."""

    @classmethod
    def draw(cls, rng: random.Random) -> Instruction:
        """An instance with parameters drawn from `rng` (parameterless kinds have one instance)."""
        return cls()


INSTRUCTION_KINDS: Registry[type[Instruction]] = Registry("instruction")
InstructionType = TypeVar("InstructionType", bound=type[Instruction])


def instruction(kind: str) -> Callable[[InstructionType], InstructionType]:
    """Register an instruction class under `kind` (a frozen dataclass of its parameters)."""

    def add(cls: InstructionType) -> InstructionType:
        cls.kind = kind
        return INSTRUCTION_KINDS.register(kind)(cls)

    return add


@instruction("lowercase")
@dataclass(frozen=True)
class Lowercase(Instruction):
    def describe(self) -> str:
        return "Your entire response must be in lowercase letters; no capital letters are allowed."

    def check(self, response: str) -> bool:
        return response.islower()  # at least one letter, none of them capital (IFEval's test)


@instruction("uppercase")
@dataclass(frozen=True)
class Uppercase(Instruction):
    def describe(self) -> str:
        return "Your entire response must be in capital letters only."

    def check(self, response: str) -> bool:
        return response.isupper()


@instruction("include_keyword")
@dataclass(frozen=True)
class IncludeKeyword(Instruction):
    word: str
    WORDS: ClassVar[tuple[str, ...]] = ("blue", "happy", "water", "friend", "morning", "simple", "light", "garden", "music")

    def describe(self) -> str:
        return f'Include the word "{self.word}" in your response.'

    def check(self, response: str) -> bool:
        return _has_word(response, self.word)  # as a whole word, in any case

    @classmethod
    def draw(cls, rng: random.Random) -> IncludeKeyword:
        return cls(rng.choice(cls.WORDS))


@instruction("forbidden_word")
@dataclass(frozen=True)
class ForbiddenWord(Instruction):
    word: str
    # Disjoint from the other kinds' words and phrases, so that no two drawn instructions contradict each other.
    WORDS: ClassVar[tuple[str, ...]] = ("very", "really", "good", "nice", "just", "maybe")

    def describe(self) -> str:
        return f'Do not use the word "{self.word}" anywhere in your response.'

    def check(self, response: str) -> bool:
        return not _has_word(response, self.word)

    @classmethod
    def draw(cls, rng: random.Random) -> ForbiddenWord:
        return cls(rng.choice(cls.WORDS))


@instruction("no_character")
@dataclass(frozen=True)
class NoCharacter(Instruction):
    char: str
    # Commas twice: IFEval's classic, and one a small model can follow; a letter is the hard end of the range.
    CHARS: ClassVar[tuple[str, ...]] = (",", ",", "!", "e")
    NAMES: ClassVar[dict[str, str]] = {",": "commas", "!": "exclamation marks"}

    def describe(self) -> str:
        name = self.NAMES.get(self.char)
        if name:
            return f"Do not use any {name} in your response."
        return f'Do not use the letter "{self.char}" anywhere in your response, in either case.'

    def check(self, response: str) -> bool:
        return self.char.casefold() not in response.casefold()

    @classmethod
    def draw(cls, rng: random.Random) -> NoCharacter:
        return cls(rng.choice(cls.CHARS))


@instruction("max_words")
@dataclass(frozen=True)
class MaxWords(Instruction):
    limit: int
    # At least 15: room for the longest end phrase, five bullets and a start word in one response.
    LIMITS: ClassVar[tuple[int, ...]] = (15, 20, 30, 50)

    def describe(self) -> str:
        return f"Answer with at most {self.limit} words."

    def check(self, response: str) -> bool:
        return word_count(response) <= self.limit

    @classmethod
    def draw(cls, rng: random.Random) -> MaxWords:
        return cls(rng.choice(cls.LIMITS))


@instruction("min_words")
@dataclass(frozen=True)
class MinWords(Instruction):
    limit: int
    # At most 40: a response that fits a short generation limit (40 words are about 55 tokens).
    LIMITS: ClassVar[tuple[int, ...]] = (15, 20, 30, 40)

    def describe(self) -> str:
        return f"Answer with at least {self.limit} words."

    def check(self, response: str) -> bool:
        return word_count(response) >= self.limit

    @classmethod
    def draw(cls, rng: random.Random) -> MinWords:
        return cls(rng.choice(cls.LIMITS))


_BULLET = re.compile(r"^[ \t]*[*-][ \t]+\S", re.MULTILINE)


@instruction("bullets")
@dataclass(frozen=True)
class Bullets(Instruction):
    count: int
    COUNTS: ClassVar[tuple[int, ...]] = (2, 3, 4, 5)

    def describe(self) -> str:
        return f'Your answer must contain exactly {self.count} bullet points, each on its own line starting with "* ".'

    def check(self, response: str) -> bool:
        # Markdown's `* ` and `- ` both count (IFEval counts both); a `**bold**` line or a `***` divider does not.
        return len(_BULLET.findall(response)) == self.count

    @classmethod
    def draw(cls, rng: random.Random) -> Bullets:
        return cls(rng.choice(cls.COUNTS))


@instruction("quoted")
@dataclass(frozen=True)
class Quoted(Instruction):
    def describe(self) -> str:
        return "Wrap your entire response in double quotation marks."

    def check(self, response: str) -> bool:
        return len(response) > 1 and response[0] == response[-1] == '"'


@instruction("end_phrase")
@dataclass(frozen=True)
class EndPhrase(Instruction):
    phrase: str
    PHRASES: ClassVar[tuple[str, ...]] = (
        "Is there anything else I can help with?",
        "Hope this helps!",
        "That is all.",
        "Thank you for asking.",
        "Have a great day.",
    )

    def describe(self) -> str:
        return f'End your response with the exact phrase "{self.phrase}", with nothing after it.'

    def check(self, response: str) -> bool:
        # As IFEval: in any case, and inside closing quotes (so it combines with `quoted`).
        return response.strip('"').strip().lower().endswith(self.phrase.lower())

    @classmethod
    def draw(cls, rng: random.Random) -> EndPhrase:
        return cls(rng.choice(cls.PHRASES))


@instruction("start_word")
@dataclass(frozen=True)
class StartWord(Instruction):
    word: str
    WORDS: ClassVar[tuple[str, ...]] = ("Sure", "Yes", "Well", "Okay", "Certainly", "Here")

    def describe(self) -> str:
        return f'Start your response with the word "{self.word}".'

    def check(self, response: str) -> bool:
        # The first word after any punctuation (an opening quote, a bullet), in any case.
        first = re.match(r"\W*(\w+)", response)
        return first is not None and first[1].casefold() == self.word.casefold()

    @classmethod
    def draw(cls, rng: random.Random) -> StartWord:
        return cls(rng.choice(cls.WORDS))


_FENCE_OPEN = re.compile(r"^```(?:json)?", re.IGNORECASE)


@instruction("json")
@dataclass(frozen=True)
class Json(Instruction):
    def describe(self) -> str:
        return "Format your entire response as valid JSON; you may wrap it in ``` markdown ticks."

    def check(self, response: str) -> bool:
        body = _FENCE_OPEN.sub("", response.strip(), count=1).removesuffix("```").strip()
        try:
            json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
            return False
        return True


_DIVIDER = re.compile(r"\s?\*\*\*\s?")


@instruction("paragraphs")
@dataclass(frozen=True)
class Paragraphs(Instruction):
    count: int
    COUNTS: ClassVar[tuple[int, ...]] = (2, 3)

    def describe(self) -> str:
        return f"Your response must have {self.count} paragraphs, separated from each other by the markdown divider: ***"

    def check(self, response: str) -> bool:
        # IFEval's rule: an empty part before the first or after the last divider is forgiven, one between two is not.
        parts = _DIVIDER.split(response)
        inner = parts[1:-1]
        if any(not part.strip() for part in inner):
            return False
        return sum(1 for part in parts if part.strip()) == self.count

    @classmethod
    def draw(cls, rng: random.Random) -> Paragraphs:
        return cls(rng.choice(cls.COUNTS))


# No `<` or `>` inside: a line of many `<<` without a closing `>>` is then read in linear time.
_TITLE = re.compile(r"<<([^<>\n]+)>>")


@instruction("title")
@dataclass(frozen=True)
class Title(Instruction):
    def describe(self) -> str:
        return "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."

    def check(self, response: str) -> bool:
        return any(title.strip() for title in _TITLE.findall(response))


def instruction_record(item: Instruction) -> dict[str, Any]:
    """What the reference JSON holds for one instruction: its kind and its parameters."""
    return {"kind": item.kind, **dataclasses.asdict(item)}


def instructions_reference(items: list[Instruction]) -> str:
    """A problem's reference: the JSON list of its instructions."""
    return json.dumps([instruction_record(item) for item in items])


@lru_cache(maxsize=4096)
def parse_instructions(reference: str) -> tuple[Instruction, ...]:
    """The instructions a reference lists; ValueError for a malformed reference (a data error, not a wrong answer)."""
    try:
        records = json.loads(reference)
    except ValueError:
        raise ValueError(f"an instructions reference must be a JSON list of instructions, got {reference[:80]!r}") from None
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"an instructions reference must be a non-empty JSON list of objects, got {reference[:80]!r}")
    return tuple(_parse_record(dict(record)) for record in records)


def _parse_record(record: dict[str, Any]) -> Instruction:
    kind = record.pop("kind", None)
    if kind not in INSTRUCTION_KINDS:
        raise ValueError(f"unknown instruction kind {kind!r} (choices: {', '.join(sorted(INSTRUCTION_KINDS))})")
    cls = INSTRUCTION_KINDS[kind]
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    # `type(...) is`, not isinstance: `true` is no word count.
    if set(record) != fields or not all(type(value) is hints[name] for name, value in record.items()):
        expected = ", ".join(f"{name}: {hints[name].__name__}" for name in sorted(fields)) or "no parameters"
        raise ValueError(f"instruction {kind!r}: expected {expected}, got {record}")
    return cls(**record)


@register_verifier("instructions")
def instructions_reward(text: str, problem: Problem) -> Verdict:
    """1.0 when the response (`response_text`) follows every instruction of the reference, else 0; no vote key,
    since two responses that follow the same instructions are not one answer."""
    items = parse_instructions(problem.answer)
    response = response_text(text)
    followed = [bool(response) and item.check(response) for item in items]
    return Verdict(float(all(followed)), {"instructions/followed_fraction": sum(followed) / len(followed)})
