"""The `instructions` source: generated instruction-following problems in the spirit of IFEval, built in.

Each problem is a short, simple request ("Name a few fruits.") followed by one to `max_instructions` verifiable
formatting instructions ("Answer with at most 20 words. Do not use any commas."), drawn with a seeded generator
from `rlvr.rewards.instructions`. The request is easy on purpose: what is measured is whether the model follows the
instructions, so a regression suite can tell that RL on another task did not break instruction following. No data
is downloaded (IFEval's own checkers need nltk data), and the same options always give the same problems.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from itertools import count

from rlvr.data import INSTRUCTIONS, InstructionsOptions, Source
from rlvr.errors import ConfigError
from rlvr.rewards.instructions import INSTRUCTION_KINDS, Instruction, instructions_reference
from rlvr.seeds import named_rng
from rlvr.types import Problem

# Short on purpose (every prompt token is paid for in each pass); it says where the response starts, since the
# instructions are checked on the response alone, not on the thinking before it.
INSTRUCTIONS_SYSTEM_PROMPT = (
    "Think briefly, then write 'Answer:' followed by your response. "
    "The response after 'Answer:' must follow every instruction in the request."
)


@dataclass(frozen=True)
class Request:
    """A base request, and the instruction kinds that would contradict it (a count it already fixes, a number)."""

    text: str
    avoid: frozenset[str] = frozenset()


# A request that fixes one sentence leaves no room for bullets, paragraphs or a word minimum; a numeric answer has
# no letters to put in a case, and a short fact none to spread over bullets or paragraphs.
_ONE_SENTENCE = frozenset({"bullets", "paragraphs", "min_words"})
_SHORT_FACT = frozenset({"bullets", "paragraphs"})
_NUMERIC = _SHORT_FACT | {"lowercase", "uppercase"}

REQUESTS: tuple[Request, ...] = (
    Request("Describe the sea."),
    Request("Explain why people keep pets."),
    Request("Write a short note inviting a friend to lunch."),
    Request("Give some advice to someone learning to cook."),
    Request("Describe your ideal weekend."),
    Request("Explain what a library is for."),
    Request("Write a short story about a lost cat."),
    Request("Describe how to make a cup of tea."),
    Request("Explain why sleep is important."),
    Request("Write a short poem about the moon."),
    Request("Describe a busy city street."),
    Request("Give tips for staying warm in winter."),
    Request("Explain how a bicycle works."),
    Request("Write a thank-you message to a teacher."),
    Request("Describe the taste of an orange."),
    Request("Explain why trees are useful."),
    Request("Write a product description for a water bottle."),
    Request("Describe a rainy day."),
    Request("Explain how to plant a seed."),
    Request("Write a short review of a film you like."),
    Request("Name a few fruits."),
    Request("List some animals that live in the ocean."),
    Request("Suggest some names for a pet dog."),
    Request("List a few things to pack for a beach trip."),
    Request("Name some sports played with a ball."),
    Request("Suggest a few hobbies for a rainy afternoon."),
    Request("Describe the sea in one sentence.", _ONE_SENTENCE),
    Request("Explain in one sentence why the sky looks blue.", _ONE_SENTENCE),
    Request("Summarise the story of Cinderella in one sentence.", _ONE_SENTENCE),
    Request("Define the word 'friendship' in one sentence.", _ONE_SENTENCE),
    Request("Tell me in one sentence what a volcano is.", _ONE_SENTENCE),
    Request("Describe the smell of fresh bread in one sentence.", _ONE_SENTENCE),
    Request("What is the capital of France?", _SHORT_FACT),
    Request("What colour is the sky on a clear day?", _SHORT_FACT),
    Request("Which animal is known as the king of the jungle?", _SHORT_FACT),
    Request("What do bees make?", _SHORT_FACT),
    Request("What is 7 plus 5?", _NUMERIC),
    Request("What is 9 times 3?", _NUMERIC),
    Request("How many days are in a week?", _NUMERIC),
    Request("What is 100 minus 36?", _NUMERIC),
    Request("How many legs does a spider have?", _NUMERIC),
    Request("What is half of 50?", _NUMERIC),
)

# Kinds that cannot both be followed in one response, or only in a contrived one (a bullet list inside quotes
# breaks its own bullets; JSON cannot start with a word or end with a phrase). Their words and phrases are disjoint
# (see `rewards.instructions`), so any other pair can be followed at once.
CONFLICTS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in [
        ("lowercase", "uppercase"),
        ("max_words", "min_words"),
        ("max_words", "paragraphs"),
        ("bullets", "paragraphs"),
        ("bullets", "quoted"),
        ("no_character", "include_keyword"),
        ("no_character", "end_phrase"),
        ("no_character", "start_word"),
        *(("json", kind) for kind in ("bullets", "paragraphs", "quoted", "end_phrase", "start_word", "title", "no_character")),
    ]
)
# Draws in a row that give no new question before deciding the options ask for more distinct problems than there
# are (max_instructions: 1 has about 1,900).
_MAX_REPEATS = 5_000


def draw_instructions(rng: random.Random, request: Request, most: int) -> list[Instruction]:
    """One to `most` instructions of distinct kinds that neither contradict the request nor each other."""
    chosen: list[str] = []
    for _ in range(rng.randint(1, most)):
        allowed = [
            kind
            for kind in sorted(INSTRUCTION_KINDS)
            if kind not in request.avoid and kind not in chosen and all(frozenset((kind, c)) not in CONFLICTS for c in chosen)
        ]
        if not allowed:
            break
        chosen.append(rng.choice(allowed))
    return [INSTRUCTION_KINDS[kind].draw(rng) for kind in chosen]


@lru_cache(maxsize=8)
def _generated(options: InstructionsOptions) -> tuple[tuple[str, str, str], ...]:
    """(question, reference, request) of each problem. Draw j depends only on (seed, j) and a repeated question is
    skipped, so a larger size keeps the smaller one's problems as its first ones."""
    problems: dict[str, tuple[str, str, str]] = {}
    last_new = 0
    for attempt in count():
        if len(problems) == options.size:
            break
        if attempt - last_new > _MAX_REPEATS:
            raise ConfigError(
                f"instructions: task_config.size: only {len(problems)} distinct problems with "
                f"max_instructions {options.max_instructions}, {options.size} asked for"
            )
        rng = named_rng("instructions", options.seed, attempt)
        request = rng.choice(REQUESTS)
        items = draw_instructions(rng, request, options.max_instructions)
        question = " ".join([request.text, *(item.describe() for item in items)])
        if question not in problems:
            problems[question] = (question, instructions_reference(items), request.text)
            last_new = attempt
    return tuple(problems.values())


def instruction_problems(source: Source) -> list[Problem]:
    """The source's generated problems, in order, each checked by its verifier (`instructions` by default)."""
    return [
        Problem(
            question=question,
            answer=reference,
            verifier=source.verifier or INSTRUCTIONS,
            subset=source.subset or INSTRUCTIONS,
            system_prompt=source.system_prompt or INSTRUCTIONS_SYSTEM_PROMPT,
            meta={"request": request},
        )
        for question, reference, request in _generated(source.instructions_options)
    ]


def instructions_split(source: Source, eval_size: int) -> tuple[list[Problem] | None, list[Problem]]:
    """(training problems, held-out problems): the first `eval_size` generated problems are held out, as many as
    asked for (like a gym task's, so `env.eval_size` sizes an evaluation-only source too) and the same ones whatever
    the environment's seeds; training gets the rest of the `size` generated (None for `use: eval`)."""
    problems = instruction_problems(source)
    evaluation_only = source.use == "eval"
    if eval_size > len(problems) or (eval_size == len(problems) and not evaluation_only):
        left = "fewer than asked for" if evaluation_only else "none would be left to train on"
        raise ConfigError(
            f"{source.path}: held-out size {eval_size}: only {len(problems)} problems, {left} (raise task_config.size)"
        )
    return (None if evaluation_only else problems[eval_size:]), problems[:eval_size]
