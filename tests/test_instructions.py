"""The `instructions` source and verifier: each checker by hand, the response part of a completion, the generator
(deterministic, varied, never contradictory) and the source in a mixture, scored through the real rubric."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from rlvr.config import ConfigError, load_config
from rlvr.data import Source
from rlvr.env_config import MixtureEnvConfig
from rlvr.envs import make_env
from rlvr.envs.instructions import CONFLICTS, INSTRUCTIONS_SYSTEM_PROMPT, REQUESTS, instruction_problems
from rlvr.envs.mixture import eval_sizes
from rlvr.rewards import REWARDS, VOTE_KEYS
from rlvr.rewards.instructions import (
    INSTRUCTION_KINDS,
    Instruction,
    instruction_record,
    parse_instructions,
    response_text,
    word_count,
)
from rlvr.scoring import Scorer
from rlvr.types import Problem


def reference(*records: dict) -> str:
    return json.dumps(list(records))


def problem(*records: dict) -> Problem:
    return Problem("q", reference(*records), verifier="instructions", subset="instructions")


def correct(text: str, *records: dict) -> float:
    return REWARDS["correct"](text, problem(*records)).value


FIFTEEN = " ".join(["word"] * 15)


@pytest.mark.parametrize(
    "record, response, followed",
    [
        ({"kind": "lowercase"}, "all lower here, 12 times.", True),
        ({"kind": "lowercase"}, "Not lower.", False),
        ({"kind": "lowercase"}, "12", False),  # no letter at all: IFEval's str.islower
        ({"kind": "uppercase"}, "ALL CAPS, 12 TIMES!", True),
        ({"kind": "uppercase"}, "ALL CAPs", False),
        ({"kind": "include_keyword", "word": "blue"}, "The Blue sea.", True),
        ({"kind": "include_keyword", "word": "blue"}, "A blueberry pie.", False),  # a whole word only
        ({"kind": "forbidden_word", "word": "very"}, "Everything is fine.", True),
        ({"kind": "forbidden_word", "word": "very"}, "It is Very nice.", False),
        ({"kind": "no_character", "char": ","}, "apples and pears", True),
        ({"kind": "no_character", "char": ","}, "apples, pears", False),
        ({"kind": "no_character", "char": "e"}, "a dog ran", True),
        ({"kind": "no_character", "char": "e"}, "Eat up", False),  # in either case
        ({"kind": "max_words", "limit": 15}, FIFTEEN, True),
        ({"kind": "max_words", "limit": 15}, FIFTEEN + " more", False),
        ({"kind": "min_words", "limit": 15}, FIFTEEN, True),
        ({"kind": "min_words", "limit": 15}, " ".join(["word"] * 13) + " don't", True),  # don't: two words
        ({"kind": "min_words", "limit": 15}, " ".join(["word"] * 14), False),
        ({"kind": "bullets", "count": 2}, "Fruits:\n* apple\n- pear", True),
        ({"kind": "bullets", "count": 2}, "**Fruits**\n* apple\n  * pear\n***", True),  # bold and a divider are no bullets
        ({"kind": "bullets", "count": 2}, "* apple\n* pear\n* plum", False),
        ({"kind": "bullets", "count": 2}, "*apple\n*pear", False),  # a bullet is a marker, a space and text
        ({"kind": "quoted"}, '"The sea is blue."', True),
        ({"kind": "quoted"}, '"The sea is blue.', False),
        ({"kind": "quoted"}, '"', False),
        ({"kind": "end_phrase", "phrase": "That is all."}, "Done. that is all.", True),
        ({"kind": "end_phrase", "phrase": "That is all."}, '"Done. That is all."', True),  # inside closing quotes
        ({"kind": "end_phrase", "phrase": "That is all."}, "That is all. Bye.", False),
        ({"kind": "start_word", "word": "Sure"}, "Sure, here it is.", True),
        ({"kind": "start_word", "word": "Sure"}, '"sure thing"', True),
        ({"kind": "start_word", "word": "Sure"}, "Surely not.", False),
        ({"kind": "start_word", "word": "Sure"}, "Yes, sure.", False),
        ({"kind": "json"}, '{"fruits": ["apple", "pear"]}', True),
        ({"kind": "json"}, '```JSON\n{"a": 1}\n```', True),
        ({"kind": "json"}, "{fruits: [apple]}", False),
        ({"kind": "json"}, "[" * 100_000, False),  # too deep for the parser: not JSON, no RecursionError
        ({"kind": "paragraphs", "count": 2}, "One.\n***\nTwo.", True),
        ({"kind": "paragraphs", "count": 2}, "***\nOne.\n***\nTwo.\n***", True),  # empty ends are forgiven
        ({"kind": "paragraphs", "count": 2}, "One.\n***\n***\nTwo.", False),  # an empty one between is not
        ({"kind": "paragraphs", "count": 2}, "One.\n\nTwo.", False),
        ({"kind": "title"}, "<<My Day>>\nIt was fine.", True),
        ({"kind": "title"}, "<< >> It was fine.", False),
        ({"kind": "title"}, "<My Day> It was fine.", False),
    ],
)
def test_each_checker_by_hand(record, response, followed):
    (item,) = parse_instructions(reference(record))
    assert item.check(response) is followed
    assert correct(f"Some thinking.\nAnswer: {response}", record) == float(followed)


def test_every_kind_has_a_hand_case_and_round_trips():
    cases = test_each_checker_by_hand.pytestmark[0].args[1]
    assert {record["kind"] for record, _, _ in cases} == set(INSTRUCTION_KINDS)
    for record, _, _ in cases:
        (item,) = parse_instructions(reference(record))
        assert isinstance(item, Instruction) and json.loads(reference(record)) == [{"kind": item.kind, **record}]


@pytest.mark.parametrize(
    "completion, response",
    [
        ("I think it is 12.\nAnswer: twelve", "twelve"),
        ("Reasoning, With Capitals.\n**Answer:** * a\n* b", "* a\n* b"),  # several lines after the marker
        ("Answer:\n* a\n* b\n", "* a\n* b"),
        ("Answer: first\nanswer: second\nand more", "second\nand more"),  # the last marker
        ("<think>Caps, Commas!</think>\nhello there", "hello there"),
        ("<think>Answer: not this</think> Answer: this", "this"),  # a marker inside the thinking does not count
        ("<think>it never ends", ""),  # no answer at all
        ("Let me see. <answer>in the tag</answer>", "in the tag"),
        ("  a plain reply  ", "a plain reply"),  # no marker: the whole reply, as IFEval reads it
    ],
)
def test_the_response_is_the_part_after_the_thinking(completion, response):
    assert response_text(completion) == response


def test_instructions_apply_to_the_response_not_the_thinking():
    lowercase = {"kind": "lowercase"}
    assert correct("Thinking In Capitals, Sure.\nAnswer: a calm blue sea", lowercase) == 1.0
    assert correct("thinking in lowercase\nAnswer: A calm blue sea", lowercase) == 0.0
    assert correct("<think>it never ends", {"kind": "no_character", "char": ","}) == 0.0
    assert correct("Answer:", {"kind": "max_words", "limit": 15}) == 0.0  # saying nothing follows nothing


def test_every_instruction_must_be_followed_and_the_share_is_logged():
    records = ({"kind": "lowercase"}, {"kind": "max_words", "limit": 15}, {"kind": "no_character", "char": ","})
    assert correct("Answer: a calm sea", *records) == 1.0
    verdict = REWARDS["correct"]("Answer: a calm, blue sea", problem(*records))
    assert verdict.value == 0.0 and verdict.info == {"instructions/followed_fraction": pytest.approx(2 / 3)}
    assert "instructions" not in VOTE_KEYS  # two compliant responses are not one answer: no maj@k


@pytest.mark.parametrize(
    "text", ["", "\x00\ud800", "<<" * 20_000, "*** " * 5_000, "[" * 100_000, "Answer:" * 1000, "<think>" * 50, "é" * 10_000]
)
def test_any_text_scores_without_raising(text):
    for cls in INSTRUCTION_KINDS.values():
        assert correct(text, instruction_record(cls.draw(random.Random(0)))) in (0.0, 1.0)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("not json", "JSON list"),
        ("[]", "non-empty JSON list"),
        ('[{"kind": "shout"}]', "unknown instruction kind 'shout'"),
        ('[{"kind": "max_words", "limit": "15"}]', "expected limit: int"),
        ('[{"kind": "max_words", "limit": true}]', "expected limit: int"),
        ('[{"kind": "lowercase", "extra": 1}]', "expected no parameters"),
    ],
)
def test_a_malformed_reference_is_a_data_error(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_instructions(bad)


def problems(**options) -> list[Problem]:
    return instruction_problems(Source(path="instructions", task_config=options))


def test_generation_is_deterministic_and_varied():
    first = problems(size=200)
    assert [(p.question, p.answer) for p in first] == [(p.question, p.answer) for p in problems(size=200)]
    assert [p.question for p in problems(size=50)] == [p.question for p in first[:50]]  # a prefix of a larger set
    assert {p.question for p in problems(size=200, seed=1)} != {p.question for p in first}
    assert len({p.question for p in first}) == 200
    kinds = Counter(record["kind"] for p in first for record in json.loads(p.answer))
    assert set(kinds) == set(INSTRUCTION_KINDS) and min(kinds.values()) >= 5
    assert len({p.meta["request"] for p in first}) >= 35
    assert Counter(len(json.loads(p.answer)) for p in first).keys() == {1, 2}
    assert {len(json.loads(p.answer)) for p in problems(size=100, max_instructions=1)} == {1}
    assert {len(json.loads(p.answer)) for p in problems(size=300, max_instructions=3)} == {1, 2, 3}


def test_no_problem_asks_for_contradicting_instructions():
    avoid = {request.text: request.avoid for request in REQUESTS}
    for p in problems(size=500, max_instructions=3):
        kinds = [record["kind"] for record in json.loads(p.answer)]
        assert len(set(kinds)) == len(kinds) and not set(kinds) & avoid[p.meta["request"]]
        assert not any(frozenset((a, b)) in CONFLICTS for a in kinds for b in kinds if a != b)
        assert p.question.startswith(p.meta["request"] + " ")


# Words with no e, comma or exclamation mark that no instruction names, to build a response that follows any mix.
BODY = ["sun", "sky", "wind", "fog", "rock", "hill", "frost", "pond"]


def compliant(items: tuple[Instruction, ...]) -> str:
    """A response that follows every one of `items` (any mix the generator draws), built by hand."""
    by = {item.kind: item for item in items}
    bullets = getattr(by.get("bullets"), "count", 0)
    words = [BODY[i % len(BODY)] for i in range(max(getattr(by.get("min_words"), "limit", 3), bullets))]
    if bullets:
        text = "\n".join([f"* {w}" for w in words[: bullets - 1]] + ["* " + " ".join(words[bullets - 1 :])])
    elif "paragraphs" in by:
        count = by["paragraphs"].count
        text = "\n***\n".join(" ".join(words[i::count]) for i in range(count))
    else:
        text = " ".join(words)
    if "include_keyword" in by:
        text += " " + by["include_keyword"].word
    if "end_phrase" in by:
        text += " " + by["end_phrase"].phrase
    if "title" in by:
        text = "<<sun>>\n" + text
    if "start_word" in by:
        text = by["start_word"].word + "\n" + text
    if "json" in by:
        text = json.dumps({"answer": text})
    text = text.lower() if "lowercase" in by else text.upper() if "uppercase" in by else text
    return f'"{text}"' if "quoted" in by else text


# For each kind, a change that breaks it whatever else the response holds.
BREAK = {
    "lowercase": lambda text, item: "Sun " + text,
    "uppercase": lambda text, item: "sun " + text,
    "include_keyword": lambda text, item: re.sub(rf"\b{item.word}\b", "", text, flags=re.IGNORECASE),
    "forbidden_word": lambda text, item: f"{text} {item.word}",
    "no_character": lambda text, item: text + item.char,
    "max_words": lambda text, item: text + " sun" * (item.limit + 1),
    "min_words": lambda text, item: "sun",
    "bullets": lambda text, item: text + "\n* sky",
    "quoted": lambda text, item: text + " sun",
    "end_phrase": lambda text, item: text + " sun",
    "start_word": lambda text, item: "sun " + text,
    "json": lambda text, item: text + "}",
    "paragraphs": lambda text, item: text + "\n***\nsky",
    "title": lambda text, item: text.replace("<<", "(("),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_generated_problem_can_be_followed_and_broken(seed):
    assert set(BREAK) == set(INSTRUCTION_KINDS)
    for p in problems(size=300, seed=seed, max_instructions=3):
        items = parse_instructions(p.answer)
        text = compliant(items)
        assert REWARDS["correct"](f"Thinking, With Capitals!\nAnswer: {text}", p).value == 1.0, (p.question, text)
        for item in items:
            assert REWARDS["correct"](f"Answer: {BREAK[item.kind](text, item)}", p).value == 0.0, (p.question, item)


def test_the_source_in_a_mixture_scores_through_the_rubric():
    config = MixtureEnvConfig(sources=[Source(path="instructions", use="eval")], eval_size=30)
    env = make_env(config)
    held_out = env.eval_problems()  # the first env.eval_size generated, whatever the environment's seeds
    assert [p.question for p in held_out] == [p.question for p in problems(size=30)]
    assert env.subsets() == {"instructions"}
    # Generated, like a gym task: it takes its share of env.eval_size even when it is for evaluation only.
    assert eval_sizes([Source(path="instructions", use="eval"), Source(path="b.jsonl")], 10) == [5, 5]
    assert {(p.verifier, p.subset) for p in held_out} == {("instructions", "instructions")}
    assert env.messages(held_out[0])[0] == {"role": "system", "content": INSTRUCTIONS_SYSTEM_PROMPT}
    assert [p.question for p in held_out] == [p.question for p in make_env(config).eval_problems()]

    thinking = "<think>Caps, Commas! And Very Many Words, just Maybe.</think>\n"
    followed, ignored = [], []
    for p in held_out:
        items = parse_instructions(p.answer)
        followed.append(f"{thinking}Answer: {compliant(items)}")
        ignored.append(f"{thinking}Answer: {BREAK[items[0].kind](compliant(items), items[0])}")
    scores = Scorer(env.rubric, workers=0).score(followed + ignored, held_out + held_out)
    assert [s.components["correct"] for s in scores] == [1.0] * 30 + [0.0] * 30
    assert all(s.error is None for s in scores)
    # The environment's rubric: correct plus the small format term, which only a one-line answer earns.
    assert all(s.total == pytest.approx(s.components["correct"] + 0.1 * s.components["format"]) for s in scores)


def test_the_source_trains_on_what_it_does_not_hold_out():
    env = make_env(MixtureEnvConfig(sources=[Source(path="instructions", task_config={"size": 40})], eval_size=10))
    held_out = {p.question for p in env.eval_problems()}
    train = {p.question for p in env.train_problems(0, 100)}
    assert held_out == {p.question for p in problems(size=10)} and len(train) == 30 and not held_out & train
    for use, eval_size, left in [("both", 40, "none would be left to train on"), ("eval", 41, "fewer than asked for")]:
        source = Source(path="instructions", use=use, task_config={"size": 40})
        with pytest.raises(ConfigError, match=f"held-out size {eval_size}: only 40 problems, {left}"):
            make_env(MixtureEnvConfig(sources=[source], eval_size=eval_size))


def test_a_recipe_names_the_source_and_its_options_are_checked():
    config = load_config(None, ["env.name=mixture", "env.sources=[{path: instructions, use: eval, task_config: {size: 5}}]"])
    (source,) = config.env.sources
    assert (source.subset, source.verifier, source.instructions_options.size) == ("instructions", "instructions", 5)
    with pytest.raises(ConfigError, match=r"env.sources.0: task_config.sise: Extra inputs .* \(instructions takes size, seed"):
        load_config(None, ["env.name=mixture", "env.sources=[{path: instructions, task_config: {sise: 5}}]"])
    with pytest.raises(ConfigError, match="only .* distinct problems"):
        problems(size=5000, max_instructions=1)


def test_a_file_of_instruction_rows_uses_the_same_verifier(tmp_path):
    path = tmp_path / "mine.jsonl"
    row = {"question": "Name a colour. Answer in lowercase.", "answer": reference({"kind": "lowercase"})}
    path.write_text(json.dumps(row) + "\n")
    env = make_env(MixtureEnvConfig(sources=[Source(path=str(path), use="eval", verifier="instructions")]))
    (p,) = env.eval_problems()
    assert REWARDS["correct"]("Answer: blue", p).value == 1.0 and REWARDS["correct"]("Answer: Blue", p).value == 0.0


def test_word_count_is_ifevals():
    assert word_count("Don't stop: 12 apples, 3-4 pears!") == 8  # don, t, stop, 12, apples, 3, 4, pears
