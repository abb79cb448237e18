"""The demo agent's fictional mini-encyclopedia: towns, people, companies and inventions.

Two worlds are drawn from one seed: the ``train`` world (train and dev rows ask about it) and the
``test`` world (only test rows do). They share no name and no word of a name, so a test entity
never appears in a train or dev row, and a train query matches a test passage on its common words
at most. Inside a world, names are made to be confused: people share surnames, towns share roots
(``Varnholt``/``Varnmere``), companies and inventions are named after people or share a prefix,
and every entity has two or three passages (life and career; history, census and sights; ...),
so a search returns look-alikes and other numbers beside the fact asked for. ``corpus()`` is the
list of ``{id, title, text}`` passages of both worlds, shuffled; titles are unique.

Names that can be gold answers (people, towns, regions) are kept apart for the QA judge
(:func:`training.rewards.substring_match`): no such name contains another as whole words, and no
two are within Levenshtein similarity 0.8 (the judge accepts 0.9), so naming a look-alike is
judged wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from training.rewards import normalize_answer

WORLDS = ("train", "test")

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "b", "d", "k", "l", "m",
           "r", "s", "t", "br", "dr", "gr", "tr", "st", "th", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "a", "ai", "ea")
_CODAS = ("", "", "", "", "", "n", "r", "l", "s", "m", "nd", "rt")
# Town names are a root and one of these endings, so that towns of one world look alike.
_TOWN_ENDINGS = ("holt", "mere", "by", "stead", "wick", "ford", "dale", "ton", "moor", "brook", "field",
                 "haven", "gate", "cliff")
_REGION_KINDS = ("Valley", "Coast", "Hills", "Plains", "Marshes", "Highlands")
OCCUPATIONS = ("clockmaker", "botanist", "engineer", "cartographer", "chemist", "shipwright", "astronomer",
               "glassblower", "architect", "physician", "weaver", "printer", "surveyor", "brewer", "potter",
               "mathematician", "blacksmith", "geologist")
_DEVICE_NOUNS = ("lamp", "loom", "compass", "pump", "press", "engine", "telescope", "kiln", "lens", "valve",
                 "clock", "sextant", "turbine", "barometer", "stove", "bellows", "plough", "winch", "still",
                 "harp")
_COMPANY_SUFFIXES = ("Works", "Mills", "Foundry", "Company", "Brothers", "Trading", "Ironworks", "Press",
                     "Shipyard", "Textiles", "Instruments", "Glassworks")
# Function words a made-up name must not be (bm25 and the reader would drop or misread them).
_RESERVED = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with who what when where which how many much year born town city people".split())


@dataclass(frozen=True)
class Town:
    name: str
    founded: int
    population: int
    region: str  # e.g. "Dunmar Valley" (the passages say "the Dunmar Valley")


@dataclass(frozen=True)
class Person:
    name: str
    born: int
    birthplace: str
    occupation: str


@dataclass(frozen=True)
class Company:
    name: str
    founder: str
    founded: int
    hq: str
    employees: int


@dataclass(frozen=True)
class Device:
    name: str  # "Morven loom"; questions say "the Morven loom"
    noun: str
    inventor: str
    year: int


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text}


@dataclass
class World:
    split: str
    regions: list[str] = field(default_factory=list)
    towns: list[Town] = field(default_factory=list)
    persons: list[Person] = field(default_factory=list)
    companies: list[Company] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    # entity name -> {facet: passage title}; facets: history, census, sights (towns), life, career
    # (people), profile, today (companies), device, design (inventions)
    titles: dict[str, dict[str, str]] = field(default_factory=dict)

    def town(self, name: str) -> Town:
        return next(t for t in self.towns if t.name == name)

    def person(self, name: str) -> Person:
        return next(p for p in self.persons if p.name == name)

    def company_of(self, founder: str) -> Company | None:
        return next((c for c in self.companies if c.founder == founder), None)

    def device_of(self, inventor: str) -> Device | None:
        return next((d for d in self.devices if d.inventor == inventor), None)


class _Names:
    """Fresh made-up words, unique across both worlds, and answer names kept apart for the QA judge."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.taken: set[str] = set()
        self.answers: list[str] = []  # normalised names that can be gold answers

    def word(self, syllables: int, *, min_len: int = 4, max_len: int = 9) -> str:
        while True:
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                        for _ in range(syllables))
            if min_len <= len(w) <= max_len and w not in _RESERVED and w not in self.taken:
                self.taken.add(w)
                return w.capitalize()

    def answer(self, make: Callable[[], str]) -> str:
        """A name from ``make()`` that no earlier answer name contains, is contained in, or resembles."""
        while True:
            name = make()
            if self.claim(name):
                return name

    def claim(self, name: str) -> bool:
        """Take ``name`` as an answer name, unless it is taken or too close to one (then False)."""
        if name.lower() in self.taken or any(_too_similar(name, other) for other in self.answers):
            return False
        self.taken.add(name.lower())
        self.answers.append(name)
        return True


def _too_similar(a: str, b: str, limit: float = 0.8) -> bool:
    na, nb = normalize_answer(a), normalize_answer(b)
    if f" {na} " in f" {nb} " or f" {nb} " in f" {na} ":
        return True
    return Levenshtein.normalized_similarity(na, nb) >= limit


@dataclass(frozen=True)
class WorldSize:
    regions: int = 4
    town_roots: int = 22  # each root gives one to three towns
    families: int = 50  # each surname gives two or three people
    companies: int = 46
    devices: int = 46


SIZES = {"train": WorldSize(), "test": WorldSize(regions=3, town_roots=8, families=14, companies=14, devices=14)}


def _make_world(split: str, rng: random.Random, names: _Names, size: WorldSize,
                suffixes: tuple[str, ...], nouns: tuple[str, ...]) -> World:
    """One world. ``suffixes`` (of company names) and ``nouns`` (of inventions) are its own: a
    query's common words then match passages of this world only."""
    world = World(split)
    world.regions = [names.answer(lambda: f"{names.word(2)} {rng.choice(_REGION_KINDS)}")
                     for _ in range(size.regions)]

    town_names: list[str] = []
    for _ in range(size.town_roots):
        root = names.word(1, min_len=3, max_len=5)
        for ending in rng.sample(_TOWN_ENDINGS, rng.choice((1, 2, 2, 3))):
            if names.claim(root + ending):  # else a town of another root looks too much like it
                town_names.append(root + ending)
    for name in town_names:
        world.towns.append(Town(name, founded=rng.randint(1120, 1780), region=rng.choice(world.regions),
                                population=rng.choice((rng.randint(800, 9_999), rng.randint(10_000, 99_999),
                                                       rng.randint(100_000, 950_000)))))

    people: list[str] = []
    for _ in range(size.families):
        surname = names.word(2)
        for _ in range(rng.choice((2, 2, 3))):  # never alone: a sibling's passages fill the results
            people.append(names.answer(lambda: f"{names.word(2, max_len=7)} {surname}"))
    for name in people:
        town = rng.choice(world.towns)
        world.persons.append(Person(name, born=rng.randint(max(1750, town.founded + 5), 1950),
                                    birthplace=town.name, occupation=rng.choice(OCCUPATIONS)))

    # Founders and inventors: distinct people, one company or one invention each at most.
    pool = list(world.persons)
    rng.shuffle(pool)
    founders, inventors = pool[: size.companies], pool[size.companies: size.companies + size.devices]
    shared_prefix: list[str] = []
    for person in founders:
        surname = person.name.split()[1]
        label = surname if rng.random() < 0.6 else names.word(2)
        company_name = f"{label} {rng.choice(suffixes)}"
        while any(c.name == company_name for c in world.companies):
            company_name = f"{label} {rng.choice(suffixes)}"
        founded = min(person.born + rng.randint(22, 60), 2020)
        world.companies.append(Company(company_name, person.name, founded, rng.choice(world.towns).name,
                                       employees=rng.choice((rng.randint(12, 950), rng.randint(1_000, 48_000)))))
    for person in inventors:
        surname = person.name.split()[1]
        taken = {d.name for d in world.devices}
        if shared_prefix and rng.random() < 0.3:
            label = rng.choice(shared_prefix)  # "Quellan lamp" and "Quellan pump"
        elif rng.random() < 0.5:
            label = surname
        else:
            label = names.word(2)
            shared_prefix.append(label)
        free = [n for n in nouns if f"{label} {n}" not in taken]
        if not free:
            label, free = names.word(2), list(nouns)
        noun = rng.choice(free)
        world.devices.append(Device(f"{label} {noun}", noun, person.name, min(person.born + rng.randint(20, 70), 2015)))
    return world


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _passages(world: World, counter: list[int]) -> None:
    def add(entity: str, facet: str, title: str, text: str) -> None:
        counter[0] += 1
        world.passages.append(Passage(f"doc-{counter[0]:04d}", title, text))
        world.titles.setdefault(entity, {})[facet] = title

    # Every entity has at least two passages and shares name words with others of its world, so a
    # query by name fills its top results from its own world.
    for t in world.towns:
        add(t.name, "history", t.name,
            f"{t.name} is a town located in the {t.region}. It was founded in {t.founded} beside a ford "
            f"and grew around its market square.")
        add(t.name, "census", f"{t.name} (census)",
            f"At the last census {t.name} had a population of {t.population:,}. The census counts every "
            f"resident of the town and its farms.")
        add(t.name, "sights", f"{t.name} (sights)",
            f"Visitors to {t.name} come for its old stone mill and the autumn fair held on the green of {t.name}.")
    for p in world.persons:
        first = p.name.split()[0]
        add(p.name, "life", p.name,
            f"{p.name} was born in {p.born} in {p.birthplace}. {first} grew up there and later worked as "
            f"{_a(p.occupation)}.")
        company, device = world.company_of(p.name), world.device_of(p.name)
        deeds = []
        if company is not None:
            deeds.append(f"In {company.founded} {first} founded {company.name}.")
        if device is not None:
            deeds.append(f"In {device.year} {first} invented the {device.name}.")
        if not deeds:
            deeds.append(f"{first} trained many apprentices and kept careful notebooks.")
        add(p.name, "career", f"{p.name} (career)",
            f"{p.name} was {_a(p.occupation)} of note. " + " ".join(deeds)
            + f" {first} was known for patient, careful work.")
    for c in world.companies:
        add(c.name, "profile", c.name,
            f"{c.name} is a company founded in {c.founded} by {c.founder}. Its headquarters are in {c.hq}.")
        add(c.name, "today", f"{c.name} (today)",
            f"Today {c.name} has {c.employees:,} employees and sells its goods across the region.")
    for d in world.devices:
        add(d.name, "device", d.name,
            f"The {d.name} is {_a(d.noun)} invented by {d.inventor} in {d.year}. It was soon copied by "
            f"workshops in many towns.")
        add(d.name, "design", f"{d.name} (design)",
            f"Early models of the {d.name} were built from brass and oak. A restored {d.name} is kept in a "
            f"museum.")


@dataclass
class Encyclopedia:
    seed: int
    worlds: dict[str, World]

    def corpus(self) -> list[Passage]:
        docs = [p for w in WORLDS for p in self.worlds[w].passages]
        random.Random(f"{self.seed}:corpus-order").shuffle(docs)
        return docs


def make_encyclopedia(seed: int) -> Encyclopedia:
    """Both worlds and their passages, a pure function of ``seed``."""
    rng = random.Random(f"{seed}:world")
    names = _Names(rng)
    suffixes, nouns = list(_COMPANY_SUFFIXES), list(_DEVICE_NOUNS)
    rng.shuffle(suffixes)
    rng.shuffle(nouns)
    worlds = {
        "train": _make_world("train", rng, names, SIZES["train"], tuple(suffixes[4:]), tuple(nouns[6:])),
        "test": _make_world("test", rng, names, SIZES["test"], tuple(suffixes[:4]), tuple(nouns[:6])),
    }
    counter = [0]
    for split in WORLDS:
        _passages(worlds[split], counter)
    titles = [p.title for w in worlds.values() for p in w.passages]
    assert len(titles) == len(set(titles)), "passage titles must be unique"
    return Encyclopedia(seed, worlds)
