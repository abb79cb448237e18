"""Pools of names, items and known facts, split once into a train side and a test side."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from training.tasks.families.base import Pools

# --------------------------------------------------------------------------- pools

_CAPITALS = (
    ("France", ("Paris",)), ("Germany", ("Berlin",)), ("Italy", ("Rome",)), ("Spain", ("Madrid",)),
    ("Japan", ("Tokyo",)), ("China", ("Beijing",)), ("Russia", ("Moscow",)), ("the United Kingdom", ("London",)),
    ("Egypt", ("Cairo",)), ("Greece", ("Athens",)), ("Portugal", ("Lisbon",)), ("Ireland", ("Dublin",)),
    ("Norway", ("Oslo",)), ("Sweden", ("Stockholm",)), ("Poland", ("Warsaw",)), ("Austria", ("Vienna",)),
    ("Argentina", ("Buenos Aires",)), ("South Korea", ("Seoul",)), ("Thailand", ("Bangkok",)),
    ("Kenya", ("Nairobi",)), ("Peru", ("Lima",)), ("Cuba", ("Havana",)), ("Finland", ("Helsinki",)),
    ("Denmark", ("Copenhagen",)), ("the Netherlands", ("Amsterdam",)), ("Belgium", ("Brussels",)),
    ("Hungary", ("Budapest",)), ("the Czech Republic", ("Prague",)), ("Turkey", ("Ankara",)),
    ("Iran", ("Tehran",)), ("Canada", ("Ottawa",)), ("Australia", ("Canberra",)), ("India", ("New Delhi",)),
    ("Mexico", ("Mexico City",)), ("Brazil", ("Brasília", "Brasilia")),
    ("the United States", ("Washington, D.C.", "Washington")),
)
_OPPOSITES = (
    ("hot", ("cold",)), ("big", ("small", "little")), ("up", ("down",)), ("fast", ("slow",)), ("happy", ("sad",)),
    ("open", ("closed", "shut")), ("early", ("late",)), ("full", ("empty",)), ("wet", ("dry",)),
    ("hard", ("soft", "easy")), ("old", ("young", "new")), ("light", ("dark", "heavy")), ("tall", ("short",)),
    ("day", ("night",)), ("win", ("lose",)), ("left", ("right",)), ("strong", ("weak",)), ("rich", ("poor",)),
    ("push", ("pull",)), ("above", ("below",)), ("first", ("last",)), ("inside", ("outside",)),
    ("begin", ("end", "finish")), ("buy", ("sell",)), ("loud", ("quiet", "soft")), ("clean", ("dirty",)),
    ("cheap", ("expensive",)), ("thick", ("thin",)), ("true", ("false",)), ("near", ("far",)),
)
_LEGS = (
    ("spider", 8), ("dog", 4), ("cat", 4), ("horse", 4), ("chicken", 2), ("ant", 6), ("bee", 6), ("cow", 4),
    ("duck", 2), ("beetle", 6), ("elephant", 4), ("ostrich", 2), ("lion", 4), ("butterfly", 6), ("penguin", 2),
    ("goat", 4), ("scorpion", 8), ("sheep", 4), ("tiger", 4), ("fly", 6), ("pigeon", 2), ("giraffe", 4),
    ("grasshopper", 6), ("zebra", 4),
)
_COLOURS = (
    ("a ripe banana", ("yellow",)), ("fresh grass", ("green",)), ("snow", ("white",)),
    ("the sky on a clear day", ("blue",)), ("coal", ("black",)), ("a ripe tomato", ("red",)),
    ("a carrot", ("orange",)), ("milk", ("white",)), ("a lemon", ("yellow",)), ("an emerald", ("green",)),
    ("a ripe strawberry", ("red",)), ("charcoal", ("black",)), ("a polar bear's fur", ("white",)),
    ("a lime", ("green",)), ("a pumpkin", ("orange",)), ("a sapphire", ("blue",)), ("a fire truck", ("red",)),
    ("a school bus", ("yellow",)), ("a stop sign", ("red",)), ("chalk", ("white",)), ("a cucumber", ("green",)),
    ("a raven", ("black",)), ("a tangerine", ("orange",)),
)
_TERMS = (
    ("a noun", "A noun is a word that names a person, place, thing or idea."),
    ("a verb", "A verb is a word that describes an action or a state."),
    ("an adjective", "An adjective is a word that describes a noun."),
    ("a planet", "A planet is a large body that orbits a star, like the Earth orbits the Sun."),
    ("a river", "A river is a large natural stream of water flowing to a sea, lake or another river."),
    ("an island", "An island is a piece of land surrounded by water."),
    ("a desert", "A desert is a dry region that gets very little rain."),
    ("a volcano", "A volcano is an opening in the Earth's crust where molten rock, ash and gas escape."),
    ("a library", "A library is a place that keeps books and other materials for people to read or borrow."),
    ("a museum", "A museum is a building where objects of art, history or science are kept and shown."),
    ("a bicycle", "A bicycle is a vehicle with two wheels that you move by pedalling."),
    ("a thermometer", "A thermometer is an instrument that measures temperature."),
    ("a calendar", "A calendar is a chart of the days, weeks and months of a year."),
    ("a dictionary", "A dictionary is a book or resource that lists words and explains their meanings."),
    ("an orchestra", "An orchestra is a large group of musicians who play instruments together."),
    ("a glacier", "A glacier is a large, slowly moving mass of ice."),
    ("a peninsula", "A peninsula is land surrounded by water on three sides."),
    ("a harbour", "A harbour is a sheltered area of water where ships can stay safely."),
    ("a satellite", "A satellite is an object that orbits a planet, like the Moon or a man-made spacecraft."),
    ("a vaccine", "A vaccine is a substance that trains the body's immune system to fight a disease."),
    ("a recipe", "A recipe is a set of instructions for preparing a dish."),
    ("an alphabet", "An alphabet is the set of letters used to write a language."),
    ("a continent", "A continent is one of the Earth's very large land masses, such as Africa or Asia."),
    ("a forest", "A forest is a large area covered mainly with trees."),
    ("a bridge", "A bridge is a structure built to cross a river, road or valley."),
    ("an ocean", "An ocean is a very large body of salt water."),
    ("a mountain", "A mountain is a large natural rise of land, much higher than a hill."),
    ("a compass", "A compass is an instrument with a magnetic needle that shows direction."),
    ("a poem", "A poem is a piece of writing that uses rhythm and imagery, often in lines and verses."),
    ("a hospital", "A hospital is a place where sick or injured people are cared for."),
)
_NAMES = ("Mira", "Tomas", "Ana", "Felix", "Priya", "Jonas", "Lena", "Omar", "Sofia", "Ravi", "Elena", "Hugo",
          "Nadia", "Pablo", "Grace", "Samir", "Clara", "Leo", "Ingrid", "Kwame", "Beatriz", "Yusuf", "Mei",
          "Anton", "Leila", "Dmitri")
_ITEMS = ("apples", "pencils", "bolts", "bricks", "candles", "tiles", "bottles", "screws", "notebooks", "buttons",
          "oranges", "cups", "lanterns", "marbles", "seashells", "stamps", "ribbons", "tickets", "jars", "spoons",
          "envelopes", "batteries")

# Train-only entries: appended to the train side after the split, never drawn for test.
_TRAIN_CAPITALS = (
    ("Switzerland", ("Bern",)), ("Chile", ("Santiago",)), ("Colombia", ("Bogotá", "Bogota")),
    ("Nigeria", ("Abuja",)), ("Morocco", ("Rabat",)), ("Saudi Arabia", ("Riyadh",)), ("Iraq", ("Baghdad",)),
    ("Pakistan", ("Islamabad",)), ("Afghanistan", ("Kabul",)), ("Vietnam", ("Hanoi",)),
    ("the Philippines", ("Manila",)), ("Indonesia", ("Jakarta",)), ("New Zealand", ("Wellington",)),
    ("Iceland", ("Reykjavik", "Reykjavík")), ("Romania", ("Bucharest",)), ("Ukraine", ("Kyiv", "Kiev")),
    ("Syria", ("Damascus",)), ("Nepal", ("Kathmandu",)),
)
_TRAIN_OPPOSITES = (
    ("good", ("bad",)), ("high", ("low",)), ("long", ("short",)), ("sweet", ("sour", "bitter")),
    ("smooth", ("rough",)), ("safe", ("dangerous", "unsafe")), ("alive", ("dead",)), ("asleep", ("awake",)),
    ("always", ("never",)), ("same", ("different",)), ("polite", ("rude", "impolite")),
    ("narrow", ("wide", "broad")), ("deep", ("shallow",)), ("yes", ("no",)), ("love", ("hate",)),
    ("north", ("south",)), ("summer", ("winter",)), ("remember", ("forget",)), ("laugh", ("cry",)),
    ("give", ("take", "receive")),
)
_TRAIN_LEGS = (
    ("rabbit", 4), ("mouse", 4), ("bear", 4), ("wolf", 4), ("fox", 4), ("pig", 4), ("deer", 4), ("camel", 4),
    ("frog", 4), ("crocodile", 4), ("squirrel", 4), ("donkey", 4), ("eagle", 2), ("parrot", 2), ("owl", 2),
    ("swan", 2), ("goose", 2), ("turkey", 2), ("flamingo", 2), ("mosquito", 6), ("ladybird", 6),
    ("cockroach", 6), ("wasp", 6), ("cricket", 6), ("tarantula", 8),
)
_TRAIN_COLOURS = (
    ("a cherry", ("red",)), ("a pea", ("green",)), ("a plum", ("purple",)), ("a blueberry", ("blue",)),
    ("an orange", ("orange",)), ("salt", ("white",)), ("a crow", ("black",)), ("broccoli", ("green",)),
    ("chocolate", ("brown",)), ("a flamingo", ("pink",)), ("an eggplant", ("purple",)),
)
_TRAIN_TERMS = (
    ("a triangle", "A triangle is a flat shape with three straight sides and three angles."),
    ("a telescope", "A telescope is an instrument that makes distant objects, like stars, look closer."),
    ("a microscope", "A microscope is an instrument that makes very small things look much bigger."),
    ("a farm", "A farm is land used for growing crops or raising animals."),
    ("a lake", "A lake is a large body of water surrounded by land."),
    ("a village", "A village is a small group of houses in the countryside, smaller than a town."),
    ("a pilot", "A pilot is a person who flies an aircraft."),
    ("a map", "A map is a drawing of an area that shows where places and roads are."),
    ("a mammal", "A mammal is a warm-blooded animal that feeds its young with milk."),
    ("an umbrella", "An umbrella is a folding cover on a stick that protects you from rain or sun."),
    ("a seed", "A seed is the small part of a plant from which a new plant can grow."),
    ("a storm", "A storm is a spell of bad weather with strong wind and often rain, thunder or snow."),
    ("a teacher", "A teacher is a person whose job is to help others learn."),
    ("a keyboard", "A keyboard is a set of keys used to type letters and numbers into a computer."),
    ("a cloud", "A cloud is a mass of tiny water droplets or ice crystals floating in the sky."),
    ("a habit", "A habit is something you do regularly, often without thinking about it."),
)
_TRAIN_ONLY = {"capitals": _TRAIN_CAPITALS, "opposites": _TRAIN_OPPOSITES, "legs": _TRAIN_LEGS,
               "colours": _TRAIN_COLOURS, "terms": _TRAIN_TERMS}


def _split_pool(values: Sequence[Any], rng: random.Random, n_test: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    shuffled = list(values)
    rng.shuffle(shuffled)
    return tuple(shuffled[n_test:]), tuple(shuffled[:n_test])


def make_pools(seed: int) -> dict[str, Pools]:
    """Train and test pools: each list is split once, so the two sides share nothing."""
    rng = random.Random(f"{seed}:pools")
    parts = {
        "names": _split_pool(_NAMES, rng, 8), "items": _split_pool(_ITEMS, rng, 7),
        "capitals": _split_pool(_CAPITALS, rng, 10), "opposites": _split_pool(_OPPOSITES, rng, 9),
        "legs": _split_pool(_LEGS, rng, 8), "colours": _split_pool(_COLOURS, rng, 7),
        "terms": _split_pool(_TERMS, rng, 9),
    }
    for key, extra in _TRAIN_ONLY.items():
        train, test = parts[key]
        parts[key] = (train + extra, test)
    return {split: Pools(**{k: v[i] for k, v in parts.items()}) for i, split in enumerate(("train", "test"))}


def _check_train_only() -> None:
    pools = {"capitals": _CAPITALS, "opposites": _OPPOSITES, "legs": _LEGS, "colours": _COLOURS, "terms": _TERMS}
    for key, extra in _TRAIN_ONLY.items():
        keys = [entry[0] for entry in extra]
        clash = set(keys) & {entry[0] for entry in pools[key]}
        if clash or len(set(keys)) != len(keys):
            raise ValueError(f"train-only {key} repeat an entry: {sorted(clash) or keys}")


_check_train_only()

