"""The search-QA environment: a fictional world only the search tool knows, with a held-out slice training never touches."""

from __future__ import annotations

import re
from collections import Counter
from functools import cache

import pytest

from rlvr.config import ConfigError, parse_config
from rlvr.env_config import SearchQAEnvConfig, SearchQAOptions
from rlvr.envs.searchqa import (
    SearchQAEnvironment,
    build_world,
    demonstrations,
    held_out_slice,
    split_facts,
    world_facts,
)
from rlvr.rewards import REWARDS
from rlvr.types import Document, Problem


def searchqa(eval_size: int = 200, **options: object) -> SearchQAEnvironment:
    return SearchQAEnvironment(SearchQAEnvConfig(task_config=SearchQAOptions(**options), eval_size=eval_size))


@cache
def default_env() -> SearchQAEnvironment:
    return searchqa()


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def name_words(documents: list[Document]) -> Counter[str]:
    return Counter(word.lower() for doc in documents for word in doc.title.split())


def test_same_options_build_the_same_world_and_problems():
    first, second = searchqa(kb_seed=3), searchqa(kb_seed=3)
    assert first.documents() == second.documents()
    assert first.eval_problems() == second.eval_problems()
    assert first.train_problems(0, 50) == second.train_problems(0, 50)
    assert searchqa(kb_seed=4).documents() != first.documents()


def test_every_entity_has_one_document_and_every_name_word_is_unique():
    env = default_env()
    docs = env.documents()
    world = env.world
    assert len(docs) == 12 + 60 + 400 + 150
    assert len({doc.title.lower() for doc in docs}) == len(docs)
    # Organisation suffixes (Group, Works, ...) are shared on purpose; every invented word names one entity only,
    # so a BM25 query for a name finds that entity first (a surname is never also a city).
    suffixes = Counter(o.name.split()[-1].lower() for o in world.organisations)
    shared = {word for word, count in name_words(docs).items() if count > 1}
    assert shared <= set(suffixes)
    assert docs[0].text == f"{world.countries[0].name} is a country. Its capital is {world.cities[0].name}."


def test_held_out_entities_never_appear_in_training():
    env = default_env()
    held_out = {name for problem in env.eval_problems() for name in problem.meta["entities"]}
    trained = {name for problem in env.train_problems(0, 5000) for name in problem.meta["entities"]}
    assert held_out and trained and not held_out & trained
    assert not {problem.question for problem in env.eval_problems()} & {p.question for p in env.train_problems(0, 5000)}


def test_the_split_is_disjoint_by_construction():
    world = build_world(SearchQAOptions())
    train, held_out = split_facts(world_facts(world), world, {"one_hop": 100, "two_hop": 100}, seed=5)
    held_cities = {name for fact in held_out["one_hop"] for name in fact.entities if fact.relation.startswith("city_")}
    slice_ = held_out_slice(world, held_cities)
    # Every held-out fact lies inside the slice, every training fact outside it, without a single shared entity.
    assert all(slice_.issuperset(fact.entities) for fact in held_out["one_hop"] + held_out["two_hop"])
    for fact in train["one_hop"] + train["two_hop"]:
        assert slice_.isdisjoint(fact.entities)
        assert fact.answer not in slice_  # closed: a training answer never even names a held-out entity
    assert len(train["one_hop"]) > 1000 and len(train["two_hop"]) > 600  # most of the world is left to train on


def check_answerable(problem: Problem, documents: dict[str, str]) -> None:
    first, *bridge = problem.meta["entities"]
    assert problem.meta["hops"] == 1 + len(bridge)
    assert problem.question.count(first) == 1 and not any(name in problem.question for name in bridge)
    assert mentions(documents[problem.meta["entities"][-1]], problem.answer), problem
    if bridge:
        assert problem.subset == "two_hop"
        assert mentions(documents[first], bridge[0])  # the first document leads to the second ...
        assert not mentions(documents[first], problem.answer)  # ... which is needed for the answer
    else:
        assert problem.subset == "one_hop"


def test_every_question_is_answerable_from_the_documents():
    env = default_env()
    documents = {doc.title: doc.text for doc in env.documents()}
    problems = env.eval_problems() + env.train_problems(0, 2000)
    for problem in problems:
        check_answerable(problem, documents)
    relations = Counter(problem.meta["relation"] for problem in problems)
    assert len(relations) == 15  # every relation is asked


def test_eval_size_and_two_hop_fraction_are_respected():
    env = searchqa(eval_size=40, two_hop_fraction=0.25)
    problems = env.eval_problems()
    assert len(problems) == 40
    assert Counter(p.subset for p in problems) == {"one_hop": 30, "two_hop": 10}
    assert len({p.question for p in problems}) == 40
    train = Counter(p.subset for p in env.train_problems(0, 2000))
    assert 0.2 < train["two_hop"] / 2000 < 0.3
    assert {p.subset for p in searchqa(two_hop_fraction=0.0).train_problems(0, 300)} == {"one_hop"}
    assert {p.subset for p in searchqa(two_hop_fraction=1.0).eval_problems()} == {"two_hop"}


def test_the_training_stream_resumes_at_any_index():
    env = default_env()
    assert env.train_problems(10, 5) == env.train_problems(0, 15)[10:]
    assert searchqa().train_problems(1234, 3) == env.train_problems(1234, 3)


def test_exact_match_scores_the_answer_line():
    env = default_env()
    for problem in env.eval_problems()[:20]:
        assert problem.verifier == "exact_match"
        assert REWARDS["correct"](f"I searched.\nAnswer: {problem.answer}", problem) == 1.0
        assert REWARDS["correct"](f"Answer: {problem.answer}x", problem) == 0.0
        score = env.rubric.score(f"Found it.\nAnswer: {problem.answer}", problem)
        assert score.components == {"correct": 1.0, "format": 1.0}
    industry = next(p for p in env.train_problems(0, 500) if p.meta["relation"] == "industry")
    assert REWARDS["correct"](f"Answer: a {industry.answer} company", industry) == 1.0  # via the alias


@pytest.mark.parametrize(
    "options, message",
    [
        ({"peeple": 10}, r"env.task_config.peeple: unknown key \(valid keys: countries, cities, people,"),
        ({"people": "many"}, r"env.task_config.people: Input should be a valid integer"),
        ({"people": True}, r"env.task_config.people: Input should be a valid integer"),
        ({"organisations": 0}, r"env.task_config.organisations: Input should be greater than or equal to 1"),
        ({"two_hop_fraction": 1.5}, r"env.task_config.two_hop_fraction: Input should be less than or equal to 1"),
        ({"countries": 12, "cities": 5}, r"env.task_config.cities: every country needs a city"),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"env": {"name": "searchqa", "task_config": options}})


def test_a_world_too_small_for_the_held_out_split_is_refused():
    with pytest.raises(ConfigError, match="env.eval_size: 100 one-hop and 100 two-hop held-out questions need more than 50%"):
        searchqa(countries=2, cities=4, people=20, organisations=5)
    with pytest.raises(ConfigError, match="too small to leave one-hop questions to train on"):
        searchqa(eval_size=1, countries=1, cities=1, people=1, organisations=1)
    assert len(searchqa(eval_size=10, countries=2, cities=4, people=20, organisations=5).eval_problems()) == 10


def test_prompt_is_system_then_two_demonstrations_then_the_question():
    env = default_env()
    problem = env.eval_problems()[0]
    messages = env.messages(problem)
    assert messages[0]["role"] == "system" and "search" in messages[0]["content"]
    assert messages[-1] == {"role": "user", "content": problem.question}
    assert [m["role"] for m in messages[1:-1]] == [
        "user", "assistant", "tool", "assistant",
        "user", "assistant", "tool", "assistant", "tool", "assistant",
    ]  # fmt: skip
    for message in messages[1:-1]:
        if message["role"] == "tool":
            assert message["name"] == "search" and message["content"].startswith("[1] ") and "\n[2] " in message["content"]
        elif message["role"] == "assistant" and message.get("tool_calls"):
            (call,) = message["tool_calls"]
            assert message["content"] == "" and call["function"]["name"] == "search"
            assert set(call["function"]["arguments"]) == {"query"}
        elif message["role"] == "assistant":
            assert re.fullmatch(r"[^\n]+\nAnswer: \w+", message["content"])
    custom = SearchQAEnvironment(SearchQAEnvConfig(system_prompt="Search first.", eval_size=10))
    assert custom.messages(problem)[0] == {"role": "system", "content": "Search first."}


def test_each_search_result_shows_the_searched_document_first():
    messages = demonstrations()
    for call, result in zip(messages, messages[1:]):
        if call.get("tool_calls"):
            query = call["tool_calls"][0]["function"]["arguments"]["query"]
            assert result["content"].startswith(f"[1] {query}: {query} is ")


@pytest.mark.parametrize("kb_seed", [0, 1, 2, 7])
def test_demonstration_names_are_not_in_the_world(kb_seed):
    demo_words = {
        word.lower() for message in demonstrations() for word in re.findall(r"\b[A-Z][a-z]+\b", message.get("content", ""))
    }
    demo_words -= {"answer", "she", "he", "it", "in", "where", "works", "group"}  # sentence starts and org suffixes
    assert {"orvanne", "delkast", "pellisco", "sathrine", "calvenor", "mirrowen"} <= demo_words
    world_words = set(name_words(searchqa(kb_seed=kb_seed).documents()))
    assert not demo_words & world_words


def test_environment_declares_its_tools_subsets_and_rubric():
    env = SearchQAEnvironment(SearchQAEnvConfig(format_reward=0.2, rewards={"length": 0.5}, eval_size=10))
    assert SearchQAEnvironment.default_tools == ("search",)
    assert env.subsets() == {"one_hop", "two_hop"}
    assert env.rubric.weights == {"correct": 1.0, "format": 0.2, "length": 0.5}
