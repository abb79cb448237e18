"""What every demo family shares: templates, drafts, plan steps and number formatting.

A template is a phrasing (``text``) and a *kind*: a function that draws the numbers or entities,
formats the question and returns a :class:`Draft` with the gold answer and the plan (``steps``)
that :mod:`training.tasks.reference` replays against the real tools. Templates marked ``test``
are only ever used for the test split, over the test world and the test pools; the others make the
train and dev rows. Test templates differ from train ones in wording and sentence structure
(imperatives, inverted questions, word problems), not by one synonym.

Steps are plain JSON, stored in ``extra_info.steps`` of each row:

* ``{"think": text}``: reasoning the model writes;
* ``{"search": query, "title": gold passage title, "expect": [strings the result must contain]}``;
* ``{"code": python}``: run by the code tool; the answer of a code-ending plan is what it prints;
* ``{"answer": text}`` (a literal) or ``{"answer": null}`` (the last code output).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Any

from training.tasks.world import World

ARITH, SEARCH, TWOHOP, DIRECT = "demo_arith", "demo_search", "demo_twohop", "demo_direct"
FAMILIES = (ARITH, SEARCH, TWOHOP, DIRECT)

Step = dict[str, Any]


@dataclass(frozen=True)
class Pools:
    """Names and things of one side of the split (train/dev, or test): never shared."""

    names: tuple[str, ...]
    items: tuple[str, ...]
    capitals: tuple[tuple[str, tuple[str, ...]], ...]
    opposites: tuple[tuple[str, tuple[str, ...]], ...]
    legs: tuple[tuple[str, int], ...]
    colours: tuple[tuple[str, tuple[str, ...]], ...]
    terms: tuple[tuple[str, str], ...]  # (term with its article, one-sentence definition)


@dataclass(frozen=True)
class Context:
    world: World
    pools: Pools


@dataclass(frozen=True)
class Draft:
    question: str
    answer: str | list[str]
    steps: list[Step]
    entities: tuple[str, ...] = ()


Kind = Callable[[random.Random, Context, str], Draft | None]


@dataclass(frozen=True)
class Template:
    id: str
    family: str
    split: str  # "train" (train and dev rows) or "test"
    text: str
    kind: Kind = field(compare=False)

    def draw(self, rng: random.Random, ctx: Context) -> Draft | None:
        return self.kind(rng, ctx, self.text)


def think(text: str) -> Step:
    return {"think": text}


def search(query: str, title: str, *expect: str) -> Step:
    return {"search": query, "title": title, "expect": list(expect)}


def code(src: str) -> Step:
    return {"code": src}


def answer(text: str | None = None) -> Step:
    return {"answer": text}


# --------------------------------------------------------------------------- numbers


def digits(rng: random.Random, lo: int, hi: int) -> int:
    d = rng.randint(lo, hi)
    return rng.randint(10 ** (d - 1), 10**d - 1)


def show(n: int, rng: random.Random) -> str:
    """How a number is written in a question: sometimes with thousands separators."""
    return f"{n:,}" if n >= 10_000 and rng.random() < 0.3 else str(n)


def exact(value: Fraction) -> str:
    """A terminating fraction as a plain decimal string (``398.65``, ``12``)."""
    if value.denominator == 1:
        return str(value.numerator)
    d = Decimal(value.numerator) / Decimal(value.denominator)
    return format(d.normalize(), "f")


def round_half_up(value: Fraction, places: int) -> Fraction | None:
    """``value`` rounded to ``places`` decimals; ``None`` on an exact tie (Python's float ``round``
    rounds ties to even, so a tie would make the code's output and the gold disagree)."""
    scaled = value * 10**places
    if (2 * scaled).denominator == 1 and (2 * scaled).numerator % 2 == 1:
        return None
    return Fraction(floor(scaled + Fraction(1, 2)), 10**places)


def _terminating(value: Fraction) -> bool:
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def listing(values: Sequence[str]) -> str:
    return ", ".join(values[:-1]) + f" and {values[-1]}"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"




def a_or_an(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
