"""Question templates of the four demo families, each with the plan of its gold trajectory.

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
from functools import partial
from math import floor, gcd
from typing import Any

from training.tasks.world import Company, Device, Person, Town, World

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


def _digits(rng: random.Random, lo: int, hi: int) -> int:
    d = rng.randint(lo, hi)
    return rng.randint(10 ** (d - 1), 10**d - 1)


def _show(n: int, rng: random.Random) -> str:
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


def _listing(values: Sequence[str]) -> str:
    return ", ".join(values[:-1]) + f" and {values[-1]}"


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _arith(question: str, gold: Fraction | int | str, src: str, plan: str, entities: tuple[str, ...] = ()) -> Draft:
    gold_text = gold if isinstance(gold, str) else exact(Fraction(gold))
    return Draft(question, gold_text, [think(plan), code(src), answer()], entities)


# --------------------------------------------------------------------------- demo_arith kinds


def a_product(rng, ctx, text):
    a, b = _digits(rng, 3, 6), _digits(rng, 3, 6)
    return _arith(text.format(a=_show(a, rng), b=_show(b, rng)), a * b, f"print({a} * {b})",
                  f"I need the exact product of {a} and {b}, so I will compute it with Python.")


def a_product3(rng, ctx, text):
    a, b, c = _digits(rng, 2, 4), _digits(rng, 2, 3), _digits(rng, 2, 3)
    return _arith(text.format(a=a, b=b, c=c), a * b * c, f"print({a} * {b} * {c})",
                  "Multiplying three numbers by hand is error-prone; Python will do it.")


def a_percent_of(rng, ctx, text):
    p, n = rng.randint(3, 95), _digits(rng, 3, 6)
    return _arith(text.format(p=p, n=_show(n, rng)), Fraction(n * p, 100), f"print({n} * {p} / 100)",
                  f"{p}% of {n} is {n} * {p} / 100. I will compute it.")


def a_percent_change(rng, ctx, text, sign: int):
    p, n = rng.randint(2, 60), _digits(rng, 3, 6)
    op = "+" if sign > 0 else "-"
    return _arith(text.format(p=p, n=_show(n, rng)), Fraction(n * (100 + sign * p), 100),
                  f"print({n} * (100 {op} {p}) / 100)",
                  f"Changing {n} by {op}{p}% means multiplying it by (100 {op} {p}) / 100.")


def a_percent_ratio(rng, ctx, text):
    n = _digits(rng, 3, 5)
    m = rng.randint(1, n - 1)
    gold = round_half_up(Fraction(m * 100, n), 2)
    if gold is None:
        return None
    return _arith(text.format(m=m, n=n), gold, f"print(round({m} / {n} * 100, 2))",
                  f"The percentage is {m} / {n} * 100, rounded to two decimals.")


def a_power(rng, ctx, text):
    if rng.random() < 0.6:
        a, k = rng.randint(11, 99), rng.randint(3, 7)
    else:
        a, k = rng.randint(100, 999), rng.randint(2, 4)
    return _arith(text.format(a=a, k=k, kth=_ordinal(k)), a**k, f"print({a} ** {k})",
                  f"{a} to the power of {k} is a large number; I will let Python compute it.")


def a_remainder(rng, ctx, text):
    a, b = _digits(rng, 4, 6), rng.randint(7, 999)
    return _arith(text.format(a=_show(a, rng), b=b), a % b, f"print({a} % {b})",
                  f"The remainder of {a} divided by {b} is {a} % {b} in Python.")


def a_floordiv(rng, ctx, text):
    a, b = _digits(rng, 4, 6), rng.randint(7, 999)
    return _arith(text.format(a=_show(a, rng), b=b), a // b, f"print({a} // {b})",
                  f"Whole-number division of {a} by {b} is {a} // {b} in Python.")


def a_divide_round(rng, ctx, text):
    a, b = _digits(rng, 3, 6), rng.randint(7, 999)
    gold = round_half_up(Fraction(a, b), 3)
    if gold is None:
        return None
    return _arith(text.format(a=a, b=b), gold, f"print(round({a} / {b}, 3))",
                  f"I will divide {a} by {b} and round to three decimals with Python.")


def _values(rng: random.Random, lo: int, hi: int) -> list[int]:
    return [_digits(rng, lo, hi) for _ in range(rng.randint(4, 7))]


def a_sum(rng, ctx, text):
    xs = _values(rng, 2, 5)
    return _arith(text.format(xs=_listing([str(x) for x in xs])), sum(xs), f"print(sum([{', '.join(map(str, xs))}]))",
                  f"I need the sum of {len(xs)} numbers; Python adds them exactly.")


def a_mean(rng, ctx, text, places: int = 2):
    xs = _values(rng, 2, 4)
    gold = round_half_up(Fraction(sum(xs), len(xs)), places)
    if gold is None:
        return None
    src = f"xs = [{', '.join(map(str, xs))}]\nprint(round(sum(xs) / len(xs), {places}))"
    return _arith(text.format(xs=_listing([str(x) for x in xs]), n=len(xs)), gold, src,
                  f"The mean is the sum of the {len(xs)} values divided by {len(xs)}.")


def a_sqrt(rng, ctx, text):
    r = rng.randint(101, 999)
    return _arith(text.format(n=r * r), r, f"import math\nprint(math.isqrt({r * r}))",
                  f"I will take the integer square root of {r * r} with Python.")


def _price(rng: random.Random) -> Fraction:
    return Fraction(rng.randint(3, 250)) + Fraction(rng.choice((0, 0, 1, 2, 3)), 4)


def a_buy(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    n, price = rng.randint(12, 999), _price(rng)
    p = exact(price)
    shown = p if price.denominator == 1 else f"{float(price):.2f}"
    return _arith(text.format(name=name, n=n, items=items, price=shown), n * price, f"print({n} * {p})",
                  f"{name} pays {n} times ${shown}.", (name, items))


def a_crates(rng, ctx, text):
    items = rng.choice(ctx.pools.items)
    a, b = rng.randint(24, 480), rng.randint(120, 9_999)
    return _arith(text.format(a=a, b=_show(b, rng), items=items), a * b, f"print({a} * {b})",
                  f"There are {b} crates of {a} {items} each, so I multiply.", (items,))


def a_speed(rng, ctx, text):
    v, h = rng.randint(45, 320), rng.randint(13, 97)
    return _arith(text.format(v=v, h=h), v * h, f"print({v} * {h})",
                  f"Distance is speed times time: {v} km per hour for {h} hours.")


def a_give_away(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a = _digits(rng, 5, 6)
    b = rng.randint(1_000, a - 1)
    return _arith(text.format(name=name, a=_show(a, rng), b=_show(b, rng), items=items), a - b, f"print({a} - {b})",
                  f"{name} is left with {a} minus {b} {items}.", (name, items))


def a_factory(rng, ctx, text):
    items = rng.choice(ctx.pools.items)
    a, d = _digits(rng, 3, 5), rng.randint(12, 365)
    return _arith(text.format(a=_show(a, rng), d=d, items=items), a * d, f"print({a} * {d})",
                  f"{a} {items} a day for {d} days is {a} * {d}.", (items,))


def a_damaged(rng, ctx, text):
    items = rng.choice(ctx.pools.items)
    p = rng.randint(2, 40)
    step = 100 // gcd(100, p)
    n = step * rng.randint(max(1, 1_000 // step), 900_000 // step)
    return _arith(text.format(n=_show(n, rng), p=p, items=items), n * p // 100, f"print({n} * {p} // 100)",
                  f"{p}% of {n} {items} are damaged: {n} * {p} / 100.", (items,))


def a_boxes(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a, b = _digits(rng, 4, 6), rng.randint(6, 480)
    return _arith(text.format(name=name, a=_show(a, rng), b=b, items=items), a // b, f"print({a} // {b})",
                  f"Full boxes of {b} out of {a} {items}: whole-number division.", (name, items))


def a_share_left(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a, b = _digits(rng, 4, 6), rng.randint(7, 97)
    return _arith(text.format(name=name, a=_show(a, rng), b=b, items=items), a % b, f"print({a} % {b})",
                  f"What is left over after sharing {a} {items} among {b} is the remainder.", (name, items))


def a_bills(rng, ctx, text):
    name = rng.choice(ctx.pools.names)
    xs = _values(rng, 2, 4)
    return _arith(text.format(name=name, xs=_listing([str(x) for x in xs])), sum(xs),
                  f"print(sum([{', '.join(map(str, xs))}]))", f"The total is the sum of {name}'s {len(xs)} bills.",
                  (name,))


_A = ARITH
ARITH_TEMPLATES = (
    Template("arith/product/what-is-times", _A, "train", "What is {a} × {b}?", a_product),
    Template("arith/product/compute-star", _A, "train", "Compute {a} * {b}.", a_product),
    Template("arith/product/product-of", _A, "train", "Calculate the product of {a} and {b}.", a_product),
    Template("arith/product/times-equals", _A, "train", "{a} times {b} equals what?", a_product),
    Template("arith/product3/product-of-three", _A, "train", "What is the product of {a}, {b} and {c}?", a_product3),
    Template("arith/percent/of", _A, "train", "What is {p}% of {n}?", a_percent_of),
    Template("arith/percent/percent-word", _A, "train", "Calculate {p} percent of {n}.", a_percent_of),
    Template("arith/percent/increase", _A, "train", "What is {n} increased by {p}%?",
             partial(a_percent_change, sign=1)),
    Template("arith/percent/reduce", _A, "train", "What do you get if you reduce {n} by {p}%?",
             partial(a_percent_change, sign=-1)),
    Template("arith/percent/ratio", _A, "train", "What percentage of {n} is {m}? Round to two decimal places.",
             a_percent_ratio),
    Template("arith/power/to-the-power", _A, "train", "What is {a} to the power of {k}?", a_power),
    Template("arith/power/caret", _A, "train", "Compute {a}^{k}.", a_power),
    Template("arith/remainder/divided", _A, "train", "What is the remainder when {a} is divided by {b}?", a_remainder),
    Template("arith/remainder/mod", _A, "train", "What is {a} mod {b}?", a_remainder),
    Template("arith/floordiv/rounded-down", _A, "train",
             "What is {a} divided by {b}, rounded down to a whole number?", a_floordiv),
    Template("arith/divide/round3", _A, "train", "What is {a} / {b}, rounded to 3 decimal places?", a_divide_round),
    Template("arith/sum/sum-of", _A, "train", "What is the sum of {xs}?", a_sum),
    Template("arith/sum/add-up", _A, "train", "Add up these numbers: {xs}.", a_sum),
    Template("arith/mean/average", _A, "train", "What is the average of {xs}? Round to two decimal places.", a_mean),
    Template("arith/sqrt/square-root", _A, "train", "What is the square root of {n}?", a_sqrt),
    Template("arith/word/buy", _A, "train",
             "{name} buys {n} {items} at ${price} each. How much does {name} pay in total?", a_buy),
    Template("arith/word/crates", _A, "train", "A crate holds {a} {items}. How many {items} are in {b} crates?",
             a_crates),
    Template("arith/word/train-speed", _A, "train",
             "A train travels at {v} km per hour for {h} hours. How many kilometres does it cover?", a_speed),
    Template("arith/word/give-away", _A, "train",
             "{name} had {a} {items} and gave away {b} of them. How many {items} are left?", a_give_away),
    # test only
    Template("arith/word/factory-days", _A, "test",
             "A factory makes {a} {items} every day. How many {items} does it make in {d} days?", a_factory),
    Template("arith/power/raise-ordinal", _A, "test", "Raise {a} to the {kth} power.", a_power),
    Template("arith/word/damaged-share", _A, "test",
             "Of the {n} {items} in a warehouse, {p}% are damaged. How many {items} are damaged?", a_damaged),
    Template("arith/word/fill-boxes", _A, "test",
             "{name} packs {a} {items} into boxes of {b}. How many boxes can {name} fill completely?", a_boxes),
    Template("arith/word/left-over", _A, "test",
             "{name} shares {a} {items} equally among {b} friends. How many {items} are left over?", a_share_left),
    Template("arith/word/bills-total", _A, "test",
             "{name} paid bills of {xs} dollars this year. What was the total?", a_bills),
    Template("arith/word/museum-mean", _A, "test",
             "A museum counted {xs} visitors on {n} days. What was the mean number of visitors per day, "
             "rounded to one decimal place?", partial(a_mean, places=1)),
)


# --------------------------------------------------------------------------- demo_search kinds

_PERSON_ATTRS = ("birthplace", "born", "occupation")
_TOWN_ATTRS = ("founded", "population", "region")
_COMPANY_ATTRS = ("founder", "established", "hq", "employees")
_DEVICE_ATTRS = ("inventor", "year")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


@dataclass(frozen=True)
class Fact:
    """One fact of the encyclopedia: the query that finds it, its passage, and how to say it."""

    entity: str
    query: str
    title: str
    value: str  # as the passage writes it (and the gold)
    need: str  # "I need ..." clause
    says: str  # the sentence the model thinks after reading the result


def person_fact(world: World, p: Person, attr: str) -> Fact:
    title = world.titles[p.name]["life"]
    if attr == "birthplace":
        return Fact(p.name, f"{p.name} born", title, p.birthplace, f"where {p.name} was born",
                    f"{p.name} was born in {p.birthplace}.")
    if attr == "born":
        return Fact(p.name, f"{p.name} born", title, str(p.born), f"the year {p.name} was born",
                    f"{p.name} was born in {p.born}.")
    return Fact(p.name, f"{p.name} worked as", title, p.occupation, f"what {p.name} worked as",
                f"{p.name} worked as {_a(p.occupation)}.")


def town_fact(world: World, t: Town, attr: str) -> Fact:
    titles = world.titles[t.name]
    if attr == "founded":
        return Fact(t.name, f"{t.name} founded", titles["history"], str(t.founded), f"the year {t.name} was founded",
                    f"{t.name} was founded in {t.founded}.")
    if attr == "population":
        return Fact(t.name, f"{t.name} population", titles["census"], f"{t.population:,}",
                    f"the population of {t.name}", f"{t.name} has a population of {t.population:,}.")
    return Fact(t.name, f"{t.name} located", titles["history"], t.region, f"the region {t.name} is in",
                f"{t.name} is in the {t.region}.")


def company_fact(world: World, c: Company, attr: str) -> Fact:
    titles = world.titles[c.name]
    if attr == "founder":
        return Fact(c.name, f"{c.name} founded", titles["profile"], c.founder, f"who founded {c.name}",
                    f"{c.name} was founded by {c.founder}.")
    if attr == "established":
        return Fact(c.name, f"{c.name} founded", titles["profile"], str(c.founded), f"the year {c.name} was founded",
                    f"{c.name} was founded in {c.founded}.")
    if attr == "hq":
        return Fact(c.name, f"{c.name} headquarters", titles["profile"], c.hq, f"where {c.name} has its headquarters",
                    f"The headquarters of {c.name} are in {c.hq}.")
    return Fact(c.name, f"{c.name} employees", titles["today"], f"{c.employees:,}",
                f"how many employees {c.name} has", f"{c.name} has {c.employees:,} employees.")


def device_fact(world: World, d: Device, attr: str) -> Fact:
    title = world.titles[d.name]["device"]
    if attr == "inventor":
        return Fact(d.name, f"{d.name} invented", title, d.inventor, f"who invented the {d.name}",
                    f"The {d.name} was invented by {d.inventor}.")
    return Fact(d.name, f"{d.name} invented", title, str(d.year), f"the year the {d.name} was invented",
                f"The {d.name} was invented in {d.year}.")


def _fact_step(f: Fact) -> Step:
    return search(f.query, f.title, f.value)


def s_fact(rng, ctx, text, attr: str):
    w = ctx.world
    if attr in _PERSON_ATTRS:
        p = rng.choice(w.persons)
        f, fields, ents = person_fact(w, p, attr), {"P": p.name}, [p.name]
        if attr == "birthplace":
            ents.append(p.birthplace)
    elif attr in _TOWN_ATTRS:
        t = rng.choice(w.towns)
        f, fields, ents = town_fact(w, t, attr), {"T": t.name}, [t.name]
        if attr == "region":
            ents.append(t.region)
    elif attr in _COMPANY_ATTRS:
        c = rng.choice(w.companies)
        f, fields, ents = company_fact(w, c, attr), {"C": c.name}, [c.name]
        if attr in ("founder", "hq"):
            ents.append(f.value)
    else:
        d = rng.choice(w.devices)
        f, fields, ents = device_fact(w, d, attr), {"D": d.name}, [d.name]
        if attr == "inventor":
            ents.append(d.inventor)
    steps = [think(f"I need to find {f.need}."), _fact_step(f), think(f.says), answer(f.value)]
    return Draft(text.format(**fields), f.value, steps, tuple(ents))


def _s(id_: str, split: str, text: str, attr: str) -> Template:
    return Template(f"search/{attr}/{id_}", SEARCH, split, text, partial(s_fact, attr=attr))


SEARCH_TEMPLATES = (
    _s("where-born", "train", "Where was {P} born?", "birthplace"),
    _s("which-town-born", "train", "In which town was {P} born?", "birthplace"),
    _s("birthplace-of", "train", "What is the birthplace of {P}?", "birthplace"),
    _s("what-year-born", "train", "In what year was {P} born?", "born"),
    _s("when-born", "train", "When was {P} born?", "born"),
    _s("occupation-of", "train", "What was {P}'s occupation?", "occupation"),
    _s("work-as", "train", "What did {P} work as?", "occupation"),
    _s("when-founded", "train", "When was {T} founded?", "founded"),
    _s("which-year-town-founded", "train", "In which year was the town of {T} founded?", "founded"),
    _s("population-of", "train", "What is the population of {T}?", "population"),
    _s("how-many-live", "train", "How many people live in {T}?", "population"),
    _s("which-region", "train", "In which region is {T}?", "region"),
    _s("where-located", "train", "Where is the town of {T} located?", "region"),
    _s("who-founded", "train", "Who founded {C}?", "founder"),
    _s("founder-of", "train", "Who was the founder of {C}?", "founder"),
    _s("when-company-founded", "train", "When was {C} founded?", "established"),
    _s("what-year-established", "train", "In what year was {C} established?", "established"),
    _s("where-headquartered", "train", "Where is {C} headquartered?", "hq"),
    _s("which-town-headquarters", "train", "In which town are the headquarters of {C}?", "hq"),
    _s("how-many-employ", "train", "How many people does {C} employ?", "employees"),
    _s("how-many-employees", "train", "How many employees does {C} have?", "employees"),
    _s("who-invented", "train", "Who invented the {D}?", "inventor"),
    _s("inventor-of", "train", "Who is the inventor of the {D}?", "inventor"),
    _s("when-invented", "train", "When was the {D} invented?", "year"),
    _s("what-year-invented", "train", "In what year was the {D} invented?", "year"),
    # test only
    _s("came-into-the-world", "test", "{P} came into the world in which town?", "birthplace"),
    _s("give-year-of-birth", "test", "Give the year of birth of {P}.", "born"),
    _s("tell-residents-census", "test", "Tell me the number of residents counted in {T} at the last census.",
       "population"),
    _s("credited-with-creating", "test", "Which person is credited with creating the {D}?", "inventor"),
    _s("set-up-in-which-year", "test", "The company {C} was set up in which year?", "established"),
    _s("head-office-in", "test", "{C} has its head office in which town?", "hq"),
    _s("trade-followed", "test", "What trade did {P} follow?", "occupation"),
)


# --------------------------------------------------------------------------- demo_twohop kinds


def _n(value: str) -> int:
    return int(value.replace(",", ""))


def _two(rng: random.Random, items: Sequence[Any], ok: Callable[[Any, Any], bool]) -> tuple[Any, Any] | None:
    for _ in range(50):
        a, b = rng.sample(list(items), 2)
        if ok(a, b):
            return a, b
    return None


def _twohop(question: str, facts: Sequence[Fact], src: str, final: str, gold: int, first: str,
            entities: Sequence[str]) -> Draft:
    steps: list[Step] = [think(first)]
    for i, f in enumerate(facts):
        steps.append(_fact_step(f))
        nxt = f" Now I need {facts[i + 1].need}." if i + 1 < len(facts) else f" {final}"
        steps.append(think(f.says + nxt))
    steps += [code(src), answer()]
    return Draft(question, str(gold), steps, tuple(dict.fromkeys(entities)))


def h_gap_town_company(rng, ctx, text):
    w = ctx.world
    for _ in range(50):
        t, c = rng.choice(w.towns), rng.choice(w.companies)
        if c.founded > t.founded:
            break
    else:
        return None
    ft, fc = town_fact(w, t, "founded"), company_fact(w, c, "established")
    return _twohop(text.format(T=t.name, C=c.name), [ft, fc], f"print({c.founded} - {t.founded})",
                   f"The gap is {c.founded} - {t.founded} years.", c.founded - t.founded,
                   f"I need the founding years of {t.name} and {c.name}, then their difference.", [t.name, c.name])


def h_company_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.companies, lambda a, b: a.founded < b.founded)
    if pair is None:
        return None
    c1, c2 = pair
    f1, f2 = company_fact(w, c1, "established"), company_fact(w, c2, "established")
    return _twohop(text.format(C1=c1.name, C2=c2.name), [f1, f2], f"print({c2.founded} - {c1.founded})",
                   f"The difference is {c2.founded} - {c1.founded} years.", c2.founded - c1.founded,
                   f"I need the founding years of {c1.name} and {c2.name}.", [c1.name, c2.name])


def h_age_invention(rng, ctx, text):
    w = ctx.world
    d = rng.choice(w.devices)
    p = w.person(d.inventor)
    fp, fd = person_fact(w, p, "born"), device_fact(w, d, "year")
    return _twohop(text.format(P=p.name, D=d.name), [fp, fd], f"print({d.year} - {p.born})",
                   f"The age is {d.year} - {p.born}.", d.year - p.born,
                   f"I need the year {p.name} was born and the year the {d.name} was invented.", [p.name, d.name])


def h_founder_age(rng, ctx, text):
    w = ctx.world
    c = rng.choice(w.companies)
    p = w.person(c.founder)
    fc = company_fact(w, c, "established")
    fc = Fact(fc.entity, fc.query, fc.title, str(c.founded), f"who founded {c.name} and when",
              f"{c.name} was founded in {c.founded} by {p.name}.")
    steps: list[Step] = [think(f"First I need who founded {c.name} and when."),
                         search(fc.query, fc.title, str(c.founded), p.name),
                         think(f"{fc.says} Now I need the year {p.name} was born.")]
    fp = person_fact(w, p, "born")
    steps += [_fact_step(fp), think(f"{fp.says} The age is {c.founded} - {p.born}."),
              code(f"print({c.founded} - {p.born})"), answer()]
    return Draft(text.format(C=c.name), str(c.founded - p.born), steps, (c.name, p.name))


def h_population(rng, ctx, text, op: str):
    w = ctx.world
    pair = _two(rng, w.towns, (lambda a, b: a.population > b.population) if op == "-" else (lambda a, b: True))
    if pair is None:
        return None
    t1, t2 = pair
    f1, f2 = town_fact(w, t1, "population"), town_fact(w, t2, "population")
    gold = t1.population + t2.population if op == "+" else t1.population - t2.population
    what = "The total is" if op == "+" else "The difference is"
    return _twohop(text.format(T1=t1.name, T2=t2.name), [f1, f2], f"print({t1.population} {op} {t2.population})",
                   f"{what} {t1.population} {op} {t2.population}.", gold,
                   f"I need the populations of {t1.name} and {t2.name}.", [t1.name, t2.name])


def h_employees(rng, ctx, text, op: str):
    w = ctx.world
    pair = _two(rng, w.companies, (lambda a, b: a.employees > b.employees) if op == "-" else (lambda a, b: True))
    if pair is None:
        return None
    c1, c2 = pair
    f1, f2 = company_fact(w, c1, "employees"), company_fact(w, c2, "employees")
    gold = c1.employees + c2.employees if op == "+" else c1.employees - c2.employees
    what = "Together that is" if op == "+" else "The difference is"
    return _twohop(text.format(C1=c1.name, C2=c2.name), [f1, f2], f"print({c1.employees} {op} {c2.employees})",
                   f"{what} {c1.employees} {op} {c2.employees}.", gold,
                   f"I need the number of employees of {c1.name} and of {c2.name}.", [c1.name, c2.name])


def h_age_in_year(rng, ctx, text):
    w = ctx.world
    p = rng.choice(w.persons)
    y = p.born + rng.randint(5, 90)
    fp = person_fact(w, p, "born")
    return _twohop(text.format(P=p.name, Y=y), [fp], f"print({y} - {p.born})", f"The age is {y} - {p.born}.",
                   y - p.born, f"I need the year {p.name} was born.", [p.name])


def h_birth_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.persons, lambda a, b: a.born < b.born)
    if pair is None:
        return None
    p1, p2 = pair
    f1, f2 = person_fact(w, p1, "born"), person_fact(w, p2, "born")
    return _twohop(text.format(P1=p1.name, P2=p2.name), [f1, f2], f"print({p2.born} - {p1.born})",
                   f"The difference is {p2.born} - {p1.born}.", p2.born - p1.born,
                   f"I need the birth years of {p1.name} and {p2.name}.", [p1.name, p2.name])


def h_growth(rng, ctx, text):
    w = ctx.world
    t, p = rng.choice(w.towns), rng.randint(2, 45)
    gold = round_half_up(Fraction(t.population * (100 + p), 100), 0)
    if gold is None:
        return None
    f = town_fact(w, t, "population")
    return _twohop(text.format(T=t.name, p=p), [f], f"print(round({t.population} * (100 + {p}) / 100))",
                   f"Growing by {p}% multiplies it by (100 + {p}) / 100.", int(gold),
                   f"I need the population of {t.name}.", [t.name])


def h_years_since_invention(rng, ctx, text):
    w = ctx.world
    d = rng.choice(w.devices)
    if d.year >= 2024:
        return None
    y = rng.randint(d.year + 1, 2024)
    f = device_fact(w, d, "year")
    return _twohop(text.format(D=d.name, Y=y), [f], f"print({y} - {d.year})", f"That is {y} - {d.year} years.",
                   y - d.year, f"I need the year the {d.name} was invented.", [d.name])


_H = TWOHOP
TWOHOP_TEMPLATES = (
    Template("twohop/gap-town-company/years-between", _H, "train",
             "How many years passed between the founding of {T} and the founding of {C}?", h_gap_town_company),
    Template("twohop/gap-town-company/years-after", _H, "train",
             "How many years after {T} was founded was {C} founded?", h_gap_town_company),
    Template("twohop/age-invention/how-old", _H, "train",
             "How old was {P} when the {D} was invented?", h_age_invention),
    Template("twohop/age-invention/at-what-age", _H, "train", "At what age did {P} invent the {D}?",
             h_age_invention),
    Template("twohop/founder-age/how-old-founder", _H, "train",
             "How old was the founder of {C} when the company was founded?", h_founder_age),
    Template("twohop/founder-age/what-age-person", _H, "train",
             "What age was the person who founded {C} at the time of its founding?", h_founder_age),
    Template("twohop/population-sum/combined", _H, "train",
             "What is the combined population of {T1} and {T2}?", partial(h_population, op="+")),
    Template("twohop/population-sum/together", _H, "train",
             "How many people live in {T1} and {T2} together?", partial(h_population, op="+")),
    Template("twohop/population-diff/how-many-more", _H, "train",
             "How many more people live in {T1} than in {T2}?", partial(h_population, op="-")),
    Template("twohop/age-in-year/would-have-been", _H, "train",
             "How old would {P} have been in {Y}?", h_age_in_year),
    Template("twohop/birth-gap/years-older", _H, "train",
             "How many years older is {P1} than {P2}?", h_birth_gap),
    Template("twohop/employees-sum/altogether", _H, "train",
             "How many people do {C1} and {C2} employ altogether?", partial(h_employees, op="+")),
    Template("twohop/population-growth/grew-by", _H, "train",
             "If the population of {T} grew by {p}%, how many people would live there? "
             "Round to the nearest whole number.", h_growth),
    Template("twohop/since-invention/years-until", _H, "train",
             "How many years passed between the invention of the {D} and the year {Y}?", h_years_since_invention),
    # test only
    Template("twohop/gap-town-company/opened-later", _H, "test",
             "{C} opened some years after {T} was founded. How many years later was that?", h_gap_town_company),
    Template("twohop/population-sum/add-census", _H, "test",
             "Add together the census populations of {T1} and {T2}.", partial(h_population, op="+")),
    Template("twohop/age-invention/age-in-that-year", _H, "test",
             "{P} invented the {D}. What was {P}'s age in the year of the invention?", h_age_invention),
    Template("twohop/employees-diff/compute-more", _H, "test",
             "Compute how many more employees {C1} has than {C2}.", partial(h_employees, op="-")),
    Template("twohop/company-gap/precede", _H, "test",
             "By how many years does the founding of {C1} precede that of {C2}?", h_company_gap),
    Template("twohop/founder-age/years-old-setting-up", _H, "test",
             "The founder of {C} was how many years old when setting it up?", h_founder_age),
)


# --------------------------------------------------------------------------- demo_direct kinds

REPLIES = {
    "greeting": ("Hello! I can search my encyclopedia of towns, people, companies and inventions, and run Python "
                 "for exact calculations. What would you like to know?",
                 "Hi! Ask me a question; I can look facts up or compute things for you."),
    "capabilities": ("I can answer questions, search a small encyclopedia of towns, people, companies and "
                     "inventions, and run Python code for exact arithmetic.",),
    "thanks": ("You're welcome! Ask me anything else.", "Glad I could help!"),
    "identity": ("I am a small assistant that can search an encyclopedia and run Python code.",),
    "farewell": ("Goodbye! Come back any time.",),
}
_THINK_SOCIAL = {
    "greeting": "This is a greeting, so no tool is needed.",
    "capabilities": "The user asks what I can do; no tool is needed.",
    "thanks": "The user is thanking me; no tool is needed.",
    "identity": "The user asks who I am; no tool is needed.",
    "farewell": "The user is saying goodbye; no tool is needed.",
}


def d_social(rng, ctx, text, kind: str, utterances: tuple[str, ...]):
    u = rng.choice(utterances)
    return Draft(u, "", [think(_THINK_SOCIAL[kind]), answer(rng.choice(REPLIES[kind]))])


def d_capital(rng, ctx, text):
    country, capitals = rng.choice(ctx.pools.capitals)
    return Draft(text.format(country=country), list(capitals),
                 [think(f"I know this without a tool: the capital of {country} is {capitals[0]}."),
                  answer(capitals[0])], (country,))


def d_opposite(rng, ctx, text):
    word, opposites = rng.choice(ctx.pools.opposites)
    return Draft(text.format(word=word), list(opposites),
                 [think(f"The opposite of {word} is {opposites[0]}; no tool is needed."), answer(opposites[0])],
                 (word,))


def d_legs(rng, ctx, text):
    animal, n = rng.choice(ctx.pools.legs)
    return Draft(text.format(a_animal=_a(animal), A_animal=_a(animal).capitalize()), str(n),
                 [think(f"{_a(animal).capitalize()} has {n} legs; I know this."), answer(str(n))], (animal,))


def d_colour(rng, ctx, text):
    thing, colours = rng.choice(ctx.pools.colours)
    return Draft(text.format(thing=thing, Thing=thing[0].upper() + thing[1:]), list(colours),
                 [think(f"{thing[0].upper() + thing[1:]} is {colours[0]}; no tool is needed."), answer(colours[0])],
                 (thing,))


def d_define(rng, ctx, text):
    term, definition = rng.choice(ctx.pools.terms)
    bare = term.split(" ", 1)[1]
    return Draft(text.format(term=term, bare=bare), "",
                 [think("This is a simple definition I can give without tools."), answer(definition)], (bare,))


def d_small_sum(rng, ctx, text):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Draft(text.format(a=a, b=b), str(a + b),
                 [think(f"{a} plus {b} is {a + b}; that needs no tool."), answer(str(a + b))])


_D = DIRECT
DIRECT_TEMPLATES = (
    Template("direct/greeting", _D, "train", "{utterance}",
             partial(d_social, kind="greeting", utterances=(
                 "Hello!", "Hi!", "Hi there!", "Hey!", "Good morning!", "Good evening!", "Hello there.",
                 "Greetings!", "Hey there!", "Hello, how are you?", "Hi, nice to meet you.", "Good afternoon!",
                 "Hello again!", "Hi, how is it going?", "Morning!", "Hey, good to see you.", "Hello, anyone there?"))),
    Template("direct/capabilities", _D, "train", "{utterance}",
             partial(d_social, kind="capabilities", utterances=(
                 "What can you do?", "What are you able to help with?", "What tools do you have?",
                 "How can you help me?", "What kind of questions can you answer?", "What are your abilities?",
                 "What do you know how to do?", "Can you help me with something?", "What are you good at?",
                 "What sort of tasks can you handle?", "Which tools can you use?"))),
    Template("direct/thanks", _D, "train", "{utterance}",
             partial(d_social, kind="thanks", utterances=(
                 "Thanks!", "Thank you!", "Thank you for your help.", "Thanks a lot.", "Great, thanks!",
                 "Many thanks.", "Thank you so much.", "That was helpful, thanks.", "Cheers, thank you!",
                 "Perfect, thank you.", "I appreciate your help."))),
    Template("direct/capital/what-is", _D, "train", "What is the capital of {country}?", d_capital),
    Template("direct/capital/which-city", _D, "train", "Which city is the capital of {country}?", d_capital),
    Template("direct/opposite/what-is", _D, "train", "What is the opposite of {word}?", d_opposite),
    Template("direct/legs/how-many", _D, "train", "How many legs does {a_animal} have?", d_legs),
    Template("direct/colour/what-colour", _D, "train", "What colour is {thing}?", d_colour),
    Template("direct/define/what-is", _D, "train", "What is {term}?", d_define),
    Template("direct/define/what-does-mean", _D, "train", 'What does the word "{bare}" mean?', d_define),
    Template("direct/small-sum/plus", _D, "train", "What is {a} plus {b}?", d_small_sum),
    # test only
    Template("direct/identity", _D, "test", "{utterance}",
             partial(d_social, kind="identity", utterances=(
                 "Who are you?", "Who am I talking to?", "Are you a person or a program?",
                 "Tell me about yourself.", "What is your name?"))),
    Template("direct/farewell", _D, "test", "{utterance}",
             partial(d_social, kind="farewell", utterances=(
                 "Goodbye!", "Bye, see you later.", "Good night, and thanks for the help!", "I have to go now, bye!",
                 "See you tomorrow."))),
    Template("direct/capital/name-the-city", _D, "test", "Name the capital city of {country}.", d_capital),
    Template("direct/opposite/give-a-word", _D, "test", "Give me a word that means the opposite of {word}.",
             d_opposite),
    Template("direct/define/explain-one-sentence", _D, "test", "Explain in one sentence what {term} is.", d_define),
    Template("direct/legs/walks-on", _D, "test", "{A_animal} walks on how many legs?", d_legs),
    Template("direct/colour/usually-what", _D, "test", "{Thing} is usually what colour?", d_colour),
)

TEMPLATES: tuple[Template, ...] = ARITH_TEMPLATES + SEARCH_TEMPLATES + TWOHOP_TEMPLATES + DIRECT_TEMPLATES


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
    return {split: Pools(**{k: v[i] for k, v in parts.items()}) for i, split in enumerate(("train", "test"))}
