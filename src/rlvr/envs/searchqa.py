"""Search QA over a procedurally generated world of fictional countries, cities, people and organisations.

Every fact is invented, so a model can only answer by calling the `search` tool on the world's documents: the
reward measures tool use and reading, not recall from pretraining. Questions are one-hop (the answer is in the
asked entity's own document) or two-hop (that document names a second entity whose document holds the answer).

The held-out split is a closed *slice* of the world: a few cities, everyone born there, and every organisation
based there or founded by one of those people. Held-out questions ask only about slice entities and training
questions never mention one (neither the asked entity nor a two-hop bridge), so RL cannot teach the policy a
held-out fact: evaluation keeps measuring search, not memory.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from rlvr.env_config import SearchQAEnvConfig, SearchQAOptions
from rlvr.envs.base import Environment, standard_rubric
from rlvr.errors import ConfigError
from rlvr.seeds import named_rng
from rlvr.types import Document, Problem, format_hits

Subset = Literal["one_hop", "two_hop"]


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class Country:
    name: str
    capital: str


@dataclass(frozen=True)
class City:
    name: str
    country: str
    founded: int


@dataclass(frozen=True)
class Person:
    name: str
    profession: str
    pronoun: str
    birth_city: str
    birth_year: int


@dataclass(frozen=True)
class Organisation:
    name: str
    industry: str
    city: str
    founder: str
    founded: int


Entity = Country | City | Person | Organisation


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def describe(entity: Entity) -> str:
    """An entity's document text: its facts in plain sentences, naming each linked entity in full."""
    match entity:
        case Country():
            return f"{entity.name} is a country. Its capital is {entity.capital}."
        case City():
            return f"{entity.name} is a city in {entity.country}, founded in {entity.founded}."
        case Person():
            return (
                f"{entity.name} is {_a(entity.profession)}. "
                f"{entity.pronoun} was born in {entity.birth_city} in {entity.birth_year}."
            )
        case Organisation():
            return (
                f"{entity.name} is {_a(entity.industry)} company headquartered in {entity.city}. "
                f"It was founded by {entity.founder} in {entity.founded}."
            )


def document(entity: Entity) -> Document:
    return Document(entity.name, describe(entity))


PROFESSIONS = (
    "architect", "astronomer", "botanist", "cartographer", "chemist", "economist", "engineer", "geologist",
    "historian", "lawyer", "mathematician", "novelist", "painter", "photographer", "physician", "playwright",
    "poet", "sculptor", "surgeon", "violinist",
)  # fmt: skip
INDUSTRIES = (
    "aerospace", "banking", "brewing", "clockmaking", "fishing", "glassmaking", "insurance", "mining",
    "perfume", "pharmaceutical", "publishing", "railway", "shipbuilding", "shipping", "software", "tea",
    "textile", "timber",
)  # fmt: skip
# Generic on purpose: a suffix naming the industry would give the industry question's answer away.
ORG_SUFFIXES = ("Group", "Works", "Holdings", "Industries", "Partners", "Consortium")


@dataclass(frozen=True)
class KnowledgeBase:
    countries: tuple[Country, ...]
    cities: tuple[City, ...]
    people: tuple[Person, ...]
    organisations: tuple[Organisation, ...]

    def entities(self) -> Iterator[Entity]:
        yield from self.countries
        yield from self.cities
        yield from self.people
        yield from self.organisations

    def documents(self) -> list[Document]:
        """One document per entity, titled with its name: countries, cities, people, then organisations."""
        return [document(entity) for entity in self.entities()]


# ---------------------------------------------------------------- invented names

# A name word is a first syllable, sometimes a middle one, and a last syllable that hints at what it names
# ("Kasmere" is a place, "Velmora" a given name): two or three syllables, pronounceable, short in tokens.
_FIRST = tuple(
    "ash bel bra bren cal cor dre dun eld er ev fal fen fyn gal gor gwen hal hes isk ith jas jor ka kas kel kir kor lo "
    "lum lys mav mir mor nal nor or ost pel pra quel rho ril sar sel sul tam tar tir tor ul vas ve vel wen wyr xan ys "
    "zan zer zo".split()
)
_MIDDLE = tuple("a e i o an el is or un ev im ol ar en".split())
_MIDDLE_ODDS = 0.25
_LAST_SYLLABLES = {
    "given": "mora ra na wen mir da lia rin van ric dor las thea mon nor sa vin ko tan rek lo dra ssa ne",
    "surname": "rask vek holm stav rell dane mont vane kov wick bek ssen gard mer nik rath lund vik brand thorne",
    "city": "mere holt vard ness nth mar val burn rade ro sk lis dra stead haven",
    "country": "lind mark via ria thia nor dor ven gor ssia mbra land",
    "organisation": "nex vion tra lix rion ntis dex tek vo max quin rel",
}
_LAST = {kind: tuple(syllables.split()) for kind, syllables in _LAST_SYLLABLES.items()}
# Real words and names the syllables can form: every combination that is a whole word in SmolLM2's vocabulary,
# plus well-known names and places. A real word lends a name a meaning, and a famous one lends it facts.
_REAL_WORDS = frozenset(
    "ashburn belmar belmont bravo brenda calmar calmer caloric calvia calvin corinth corona correl corro erin ervin "
    "fenland fenwick galvan haldane halstead kane kara karin kelvin lone lora miranda mordor mormon norland ostmark "
    "rhoda rhone sultan tamar tartan ultra vena vene vera vero zone zoro".split()
)


def _key(word: str) -> str:
    """How a stemmer or a skimming reader sees a word: lowercase, double letters single, final vowels/s/y cut.
    Two names with one key ("Velmora", "Velmor") would be one name to a BM25 index or to the model."""
    collapsed = re.sub(r"(.)\1", r"\1", word.lower())
    return collapsed.rstrip("aeiouys") or collapsed


def _pronounceable(word: str) -> bool:
    """No letter thrice or pair of letters twice running ("Evevan"), no two of th/sh/ch together ("Iththea"), no
    three consonants running and no two vowels but the endings' own ea, ia, io (th, sh, ch, qu count as one)."""
    lower = word.lower()
    sounds = re.sub("th|sh|ch|qu", "t", lower)
    return not (
        re.search(r"(.)\1\1|(..)\2|[cst]h[cst]h", lower)
        or re.search(r"[^aeiouy]{3}", sounds)
        or any(pair not in ("ea", "ia", "io") for pair in re.findall(r"(?=([aeiou]{2}))", sounds))
    )


def _words(texts: Iterable[str]) -> set[str]:
    return {word for text in texts for word in re.findall(r"[a-z]+", text.lower())}


class _Namer:
    """Invents words, each unique in the world (by `_key`) and not a word of the reserved vocabulary."""

    MAX_DRAWS = 10_000

    def __init__(self, rng: random.Random, reserved: Iterable[str]) -> None:
        self._rng = rng
        self._taken = {_key(word) for word in reserved}

    def word(self, kind: str) -> str:
        rng = self._rng
        for _ in range(self.MAX_DRAWS):
            middle = rng.choice(_MIDDLE) if rng.random() < _MIDDLE_ODDS else ""
            word = (rng.choice(_FIRST) + middle + rng.choice(_LAST[kind])).capitalize()
            if _pronounceable(word) and _key(word) not in self._taken:
                self._taken.add(_key(word))
                return word
        raise ConfigError(f"env.task_config: too many entities, the name generator ran out of {kind} names")


def build_world(options: SearchQAOptions) -> KnowledgeBase:
    """The world for these options: a pure function of them (seeded by `kb_seed`)."""
    rng = named_rng("searchqa-world", options.kb_seed)
    namer = _Namer(rng, _RESERVED)
    country_names = [namer.word("country") for _ in range(options.countries)]
    # The first cities go one to each country (its capital), so that no country is empty.
    cities = tuple(
        City(namer.word("city"), country_names[i] if i < options.countries else rng.choice(country_names), rng.randint(700, 1750))
        for i in range(options.cities)
    )
    countries = tuple(Country(name, capital.name) for name, capital in zip(country_names, cities))
    people = tuple(
        Person(
            f"{namer.word('given')} {namer.word('surname')}",
            rng.choice(PROFESSIONS),
            rng.choice(("He", "She")),
            rng.choice(cities).name,
            rng.randint(1880, 1985),
        )
        for _ in range(options.people)
    )
    organisations = []
    for _ in range(options.organisations):
        founder = rng.choice(people)
        name = f"{namer.word('organisation')} {rng.choice(ORG_SUFFIXES)}"
        founded = min(founder.birth_year + rng.randint(22, 60), 2020)
        organisations.append(Organisation(name, rng.choice(INDUSTRIES), rng.choice(cities).name, founder.name, founded))
    return KnowledgeBase(countries, cities, people, tuple(organisations))


# ---------------------------------------------------------------- questions


@dataclass(frozen=True)
class Fact:
    """One askable fact: `entities` are the documents to read, in order (the asked entity, then any bridge)."""

    relation: str
    entities: tuple[str, ...]
    answer: str
    aliases: tuple[str, ...] = ()

    @property
    def subset(self) -> Subset:
        return "one_hop" if len(self.entities) == 1 else "two_hop"


# Paraphrases per relation; `{x}` is the asked entity. Two-hop relations never name the bridge entity.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": ("Where was {x} born?", "In which city was {x} born?", "What is the birthplace of {x}?"),
    "birth_year": ("In what year was {x} born?", "When was {x} born?", "What is the birth year of {x}?"),
    "profession": ("What is the profession of {x}?", "What does {x} do for a living?", "What is {x}'s occupation?"),
    "city_country": ("In which country is {x}?", "{x} is a city in which country?", "Which country is {x} located in?"),
    "city_founded": ("In what year was the city of {x} founded?", "When was {x} founded?"),
    "founder": ("Who founded {x}?", "Who is the founder of {x}?", "{x} was founded by whom?"),
    "headquarters": ("Where is {x} headquartered?", "In which city is {x} based?", "Which city is {x} headquartered in?"),
    "founding_year": ("In what year was {x} founded?", "When was {x} founded?", "What year was {x} established?"),
    "industry": ("What industry is {x} in?", "What kind of company is {x}?"),
    "birth_country": ("In which country was {x} born?", "{x} was born in which country?", "What is the home country of {x}?"),
    "birth_city_founded": ("In what year was the city where {x} was born founded?", "When was {x}'s birthplace founded?"),
    "headquarters_country": ("In which country is {x} headquartered?", "Which country is {x} based in?"),
    "founder_birth_year": ("In what year was the founder of {x} born?", "When was the person who founded {x} born?"),
    "founder_profession": ("What is the profession of the founder of {x}?", "What did the person who founded {x} work as?"),
    "founder_birth_city": ("In which city was the founder of {x} born?", "Where was the person who founded {x} born?"),
}


def world_facts(kb: KnowledgeBase) -> list[Fact]:
    """Every askable fact of the world, in a stable order. Countries are only ever answers: with a dozen of them a
    country question would be memorised, not searched."""
    city = {c.name: c for c in kb.cities}
    person = {p.name: p for p in kb.people}
    facts: list[Fact] = []
    for c in kb.cities:
        facts += [Fact("city_country", (c.name,), c.country), Fact("city_founded", (c.name,), str(c.founded))]
    for p in kb.people:
        born = city[p.birth_city]
        facts += [
            Fact("birth_city", (p.name,), p.birth_city),
            Fact("birth_year", (p.name,), str(p.birth_year)),
            Fact("profession", (p.name,), p.profession),
            Fact("birth_country", (p.name, born.name), born.country),
            Fact("birth_city_founded", (p.name, born.name), str(born.founded)),
        ]
    for o in kb.organisations:
        founder = person[o.founder]
        facts += [
            Fact("founder", (o.name,), o.founder),
            Fact("headquarters", (o.name,), o.city),
            Fact("founding_year", (o.name,), str(o.founded)),
            Fact("industry", (o.name,), o.industry, aliases=(f"{o.industry} company",)),
            Fact("headquarters_country", (o.name, o.city), city[o.city].country),
            Fact("founder_birth_year", (o.name, o.founder), str(founder.birth_year)),
            Fact("founder_profession", (o.name, o.founder), founder.profession),
        ]
        # A two-hop question must need the second document: not when the founder was born in the headquarters city.
        if founder.birth_city != o.city:
            facts.append(Fact("founder_birth_city", (o.name, o.founder), founder.birth_city))
    return facts


def make_problem(fact: Fact, rng: random.Random) -> Problem:
    question = rng.choice(TEMPLATES[fact.relation]).format(x=fact.entities[0])
    meta = {"aliases": list(fact.aliases), "hops": len(fact.entities), "entities": list(fact.entities), "relation": fact.relation}
    return Problem(question, fact.answer, verifier="exact_match", subset=fact.subset, meta=meta)


# ---------------------------------------------------------------- the held-out split

# The held-out slice may take at most this share of the cities, so that training keeps most of the world.
MAX_HELD_OUT_SHARE = 0.5


def held_out_slice(kb: KnowledgeBase, cities: Iterable[str]) -> set[str]:
    """The closed slice around some cities: the cities, everyone born in one, and every organisation based in one
    or founded by one of those people. Every fact about a slice entity names only slice entities as bridges."""
    cities = set(cities)
    people = {p.name for p in kb.people if p.birth_city in cities}
    organisations = {o.name for o in kb.organisations if o.city in cities or o.founder in people}
    return cities | people | organisations


def split_facts(
    facts: Sequence[Fact], kb: KnowledgeBase, needed: dict[Subset, int], seed: int
) -> tuple[dict[Subset, list[Fact]], dict[Subset, list[Fact]]]:
    """(training facts, held-out facts) per subset. The slice grows city by city, in a seeded order, until it holds
    enough facts of each subset; training keeps the facts that touch no slice entity (mixed facts are dropped)."""
    order = [c.name for c in kb.cities]
    named_rng("searchqa-held-out", seed).shuffle(order)
    limit = max(1, int(len(order) * MAX_HELD_OUT_SHARE))
    for size in range(1, limit + 1):
        held = held_out_slice(kb, order[:size])
        held_out = _by_subset(f for f in facts if held.issuperset(f.entities))
        if all(len(held_out[s]) >= n for s, n in needed.items()):
            return _by_subset(f for f in facts if held.isdisjoint(f.entities)), held_out
    wanted = " and ".join(f"{n} {s.replace('_', '-')}" for s, n in needed.items() if n)
    raise ConfigError(
        f"env.eval_size: {wanted} held-out questions need more than {MAX_HELD_OUT_SHARE:.0%} of the searchqa world;"
        " lower env.eval_size or enlarge env.task_config (cities, people, organisations)"
    )


def _by_subset(facts: Iterable[Fact]) -> dict[Subset, list[Fact]]:
    grouped: dict[Subset, list[Fact]] = {"one_hop": [], "two_hop": []}
    for fact in facts:
        grouped[fact.subset].append(fact)
    return grouped


# ---------------------------------------------------------------- the prompt

SYSTEM_PROMPT = (
    "The questions are about a fictional world you know nothing about. Look up each entity with the search tool"
    " before answering, then give the final answer on the last line as 'Answer: <answer>'."
)

# The demonstrations' own small world: hand-made, never generated (their words are reserved), never searchable.
_DEMO_PEOPLE = (
    Person("Orvanne Delkast", "cartographer", "She", "Pellisco", 1947),
    Person("Idrel Kolvane", "chemist", "He", "Sathrine", 1931),
)
_DEMO_ORGANISATIONS = (
    Organisation("Tamberlo Group", "shipping", "Quessari", "Orvanne Delkast", 1981),
    Organisation("Mirrowen Works", "glassmaking", "Sathrine", "Idrel Kolvane", 1974),
    Organisation("Brenhavo Works", "textile", "Pellisco", "Idrel Kolvane", 1969),
)
_DEMO_CITY = City("Sathrine", "Calvenor", 1388)
_DEMO_WORLD = (*_DEMO_PEOPLE, *_DEMO_ORGANISATIONS, _DEMO_CITY, Country("Calvenor", "Sathrine"))


def _search(query: str, hits: Sequence[Entity]) -> list[dict[str, Any]]:
    """One tool call and its result, as a real BM25 top-2 would return it: the right document, then a distractor."""
    call = {"type": "function", "function": {"name": "search", "arguments": {"query": query}}}
    return [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "search", "content": format_hits([document(hit) for hit in hits])},
    ]


def demonstrations() -> list[dict[str, Any]]:
    """Two worked exchanges, one-hop then two-hop. SmolLM2-135M never called the tool from instructions alone and
    did in ~94% of prompts after these two."""
    orvanne, idrel = _DEMO_PEOPLE
    tamberlo, mirrowen, brenhavo = _DEMO_ORGANISATIONS
    return [
        {"role": "user", "content": "Where was Orvanne Delkast born?"},
        *_search("Orvanne Delkast", [orvanne, tamberlo]),
        {"role": "assistant", "content": "Orvanne Delkast was born in Pellisco.\nAnswer: Pellisco"},
        {"role": "user", "content": "In which country is Mirrowen Works headquartered?"},
        *_search("Mirrowen Works", [mirrowen, brenhavo]),
        *_search("Sathrine", [_DEMO_CITY, idrel]),
        {"role": "assistant", "content": "Mirrowen Works is in Sathrine, a city in Calvenor.\nAnswer: Calvenor"},
    ]


# Everything a generated name must differ from: real words, the documents' and questions' own vocabulary (so a
# name never matches a query word like "founded"), and every name of the demonstrations' world (in its documents).
_RESERVED = (
    _REAL_WORDS
    | _words([*PROFESSIONS, *INDUSTRIES, *ORG_SUFFIXES])
    | _words(template for templates in TEMPLATES.values() for template in templates)
    | _words(describe(entity) for entity in _DEMO_WORLD)
)


# ---------------------------------------------------------------- the environment


class SearchQAEnvironment(Environment):
    """Questions about a fictional world, answered by searching its documents (`documents()`)."""

    default_tools: ClassVar[tuple[str, ...]] = ("search",)

    def __init__(self, config: SearchQAEnvConfig) -> None:
        self.options = config.task_config
        self.system_prompt = config.system_prompt or SYSTEM_PROMPT
        self.rubric = standard_rubric(config)
        self.world = build_world(self.options)
        self._train_seed = config.train_seed
        two_hop = round(config.eval_size * self.options.two_hop_fraction)
        needed: dict[Subset, int] = {"one_hop": config.eval_size - two_hop, "two_hop": two_hop}
        self._train, held_out = split_facts(world_facts(self.world), self.world, needed, config.eval_seed)
        fraction = self.options.two_hop_fraction
        for subset, wanted in (("one_hop", fraction < 1), ("two_hop", fraction > 0)):
            if wanted and not self._train[subset]:
                raise ConfigError(
                    f"env.task_config: the searchqa world is too small to leave {subset.replace('_', '-')} questions to train on"
                )
        self._held_out = self._sample_held_out(held_out, needed, config.eval_seed)

    @staticmethod
    def _sample_held_out(facts: dict[Subset, list[Fact]], needed: dict[Subset, int], seed: int) -> list[Problem]:
        rng = named_rng("searchqa-eval", seed)
        chosen = [fact for subset, count in needed.items() for fact in rng.sample(facts[subset], count)]
        rng.shuffle(chosen)
        return [make_problem(fact, rng) for fact in chosen]

    def documents(self) -> list[Document]:
        """The search corpus: one document per entity of the world, in a stable order."""
        return self.world.documents()

    def train_problems(self, start: int, count: int) -> list[Problem]:
        return [self._train_problem(index) for index in range(start, start + count)]

    def _train_problem(self, index: int) -> Problem:
        """Problem `index` of the training stream: a pure function of the index and the seeds, so a resumed run
        sees the same problems. Two-hop with probability `two_hop_fraction`, else one-hop."""
        rng = named_rng("searchqa-train", self._train_seed, index)
        subset: Subset = "two_hop" if rng.random() < self.options.two_hop_fraction else "one_hop"
        return make_problem(rng.choice(self._train[subset]), rng)

    def eval_problems(self) -> list[Problem]:
        return list(self._held_out)

    def subsets(self) -> set[str]:
        return {"one_hop", "two_hop"}

    def messages(self, problem: Problem) -> list[dict[str, Any]]:
        """System prompt, the two demonstrations, then the question (chat format with OpenAI-style tool calls)."""
        system = self.system_text(problem)
        return [{"role": "system", "content": system}, *demonstrations(), {"role": "user", "content": problem.question}]
