"""demo_arith: exact arithmetic that needs the code tool, in bare and word-problem phrasings."""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from math import ceil, gcd

from training.tasks.families.base import (
    ARITH,
    Draft,
    Template,
    answer,
    code,
    digits,
    exact,
    listing,
    ordinal,
    round_half_up,
    show,
    think,
)


def _arith(question: str, gold: Fraction | int | str, src: str, plan: str, entities: tuple[str, ...] = ()) -> Draft:
    gold_text = gold if isinstance(gold, str) else exact(Fraction(gold))
    return Draft(question, gold_text, [think(plan), code(src), answer()], entities)


# --------------------------------------------------------------------------- demo_arith kinds


def a_product(rng, ctx, text):
    a, b = digits(rng, 3, 6), digits(rng, 3, 6)
    return _arith(text.format(a=show(a, rng), b=show(b, rng)), a * b, f"print({a} * {b})",
                  f"I need the exact product of {a} and {b}, so I will compute it with Python.")


def a_product3(rng, ctx, text):
    a, b, c = digits(rng, 2, 4), digits(rng, 2, 3), digits(rng, 2, 3)
    return _arith(text.format(a=a, b=b, c=c), a * b * c, f"print({a} * {b} * {c})",
                  "Multiplying three numbers by hand is error-prone; Python will do it.")


def a_percent_of(rng, ctx, text):
    p, n = rng.randint(3, 95), digits(rng, 3, 6)
    return _arith(text.format(p=p, n=show(n, rng)), Fraction(n * p, 100), f"print({n} * {p} / 100)",
                  f"{p}% of {n} is {n} * {p} / 100. I will compute it.")


def a_percent_change(rng, ctx, text, sign: int):
    p, n = rng.randint(2, 60), digits(rng, 3, 6)
    op = "+" if sign > 0 else "-"
    return _arith(text.format(p=p, n=show(n, rng)), Fraction(n * (100 + sign * p), 100),
                  f"print({n} * (100 {op} {p}) / 100)",
                  f"Changing {n} by {op}{p}% means multiplying it by (100 {op} {p}) / 100.")


def a_percent_ratio(rng, ctx, text):
    n = digits(rng, 3, 5)
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
    return _arith(text.format(a=a, k=k, kth=ordinal(k)), a**k, f"print({a} ** {k})",
                  f"{a} to the power of {k} is a large number; I will let Python compute it.")


def a_remainder(rng, ctx, text):
    a, b = digits(rng, 4, 6), rng.randint(7, 999)
    return _arith(text.format(a=show(a, rng), b=b), a % b, f"print({a} % {b})",
                  f"The remainder of {a} divided by {b} is {a} % {b} in Python.")


def a_floordiv(rng, ctx, text):
    a, b = digits(rng, 4, 6), rng.randint(7, 999)
    return _arith(text.format(a=show(a, rng), b=b), a // b, f"print({a} // {b})",
                  f"Whole-number division of {a} by {b} is {a} // {b} in Python.")


def a_divide_round(rng, ctx, text):
    a, b = digits(rng, 3, 6), rng.randint(7, 999)
    gold = round_half_up(Fraction(a, b), 3)
    if gold is None:
        return None
    return _arith(text.format(a=a, b=b), gold, f"print(round({a} / {b}, 3))",
                  f"I will divide {a} by {b} and round to three decimals with Python.")


def _values(rng: random.Random, lo: int, hi: int) -> list[int]:
    return [digits(rng, lo, hi) for _ in range(rng.randint(4, 7))]


def a_sum(rng, ctx, text):
    xs = _values(rng, 2, 5)
    return _arith(text.format(xs=listing([str(x) for x in xs])), sum(xs), f"print(sum([{', '.join(map(str, xs))}]))",
                  f"I need the sum of {len(xs)} numbers; Python adds them exactly.")


def a_mean(rng, ctx, text, places: int = 2):
    xs = _values(rng, 2, 4)
    gold = round_half_up(Fraction(sum(xs), len(xs)), places)
    if gold is None:
        return None
    src = f"xs = [{', '.join(map(str, xs))}]\nprint(round(sum(xs) / len(xs), {places}))"
    return _arith(text.format(xs=listing([str(x) for x in xs]), n=len(xs)), gold, src,
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
    return _arith(text.format(a=a, b=show(b, rng), items=items), a * b, f"print({a} * {b})",
                  f"There are {b} crates of {a} {items} each, so I multiply.", (items,))


def a_speed(rng, ctx, text):
    v, h = rng.randint(45, 320), rng.randint(13, 97)
    return _arith(text.format(v=v, h=h), v * h, f"print({v} * {h})",
                  f"Distance is speed times time: {v} km per hour for {h} hours.")


def a_give_away(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a = digits(rng, 5, 6)
    b = rng.randint(1_000, a - 1)
    return _arith(text.format(name=name, a=show(a, rng), b=show(b, rng), items=items), a - b, f"print({a} - {b})",
                  f"{name} is left with {a} minus {b} {items}.", (name, items))


def a_factory(rng, ctx, text):
    items = rng.choice(ctx.pools.items)
    a, d = digits(rng, 3, 5), rng.randint(12, 365)
    return _arith(text.format(a=show(a, rng), d=d, items=items), a * d, f"print({a} * {d})",
                  f"{a} {items} a day for {d} days is {a} * {d}.", (items,))


def a_damaged(rng, ctx, text):
    items = rng.choice(ctx.pools.items)
    p = rng.randint(2, 40)
    step = 100 // gcd(100, p)
    n = step * rng.randint(max(1, 1_000 // step), 900_000 // step)
    return _arith(text.format(n=show(n, rng), p=p, items=items), n * p // 100, f"print({n} * {p} // 100)",
                  f"{p}% of {n} {items} are damaged: {n} * {p} / 100.", (items,))


def a_boxes(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a, b = digits(rng, 4, 6), rng.randint(6, 480)
    return _arith(text.format(name=name, a=show(a, rng), b=b, items=items), a // b, f"print({a} // {b})",
                  f"Full boxes of {b} out of {a} {items}: whole-number division.", (name, items))


def a_share_left(rng, ctx, text):
    name, items = rng.choice(ctx.pools.names), rng.choice(ctx.pools.items)
    a, b = digits(rng, 4, 6), rng.randint(7, 97)
    return _arith(text.format(name=name, a=show(a, rng), b=b, items=items), a % b, f"print({a} % {b})",
                  f"What is left over after sharing {a} {items} among {b} is the remainder.", (name, items))


def a_bills(rng, ctx, text):
    name = rng.choice(ctx.pools.names)
    xs = _values(rng, 2, 4)
    return _arith(text.format(name=name, xs=listing([str(x) for x in xs])), sum(xs),
                  f"print(sum([{', '.join(map(str, xs))}]))", f"The total is the sum of {name}'s {len(xs)} bills.",
                  (name,))


def a_power_of(rng, ctx, text, k: int):
    a = rng.randint(11, 999) if k == 2 else rng.randint(11, 299)
    return _arith(text.format(a=a), a**k, f"print({a} ** {k})",
                  f"{a} to the power of {k} needs exact arithmetic, so I will compute {a} ** {k} with Python.")


def _story_numbers(rng: random.Random, op: str) -> dict[str, int]:
    if op == "*":
        return {"a": digits(rng, 2, 4), "b": rng.randint(12, 480)}
    if op in ("//", "%"):
        return {"a": digits(rng, 4, 6), "b": rng.randint(6, 97 if op == "%" else 480)}
    if op == "-":
        a = digits(rng, 5, 6)
        return {"a": a, "b": rng.randint(1_000, a - 1)}
    p = rng.randint(2, 40)  # "pct": a count, so n is chosen to make n * p / 100 whole
    step = 100 // gcd(100, p)
    return {"p": p, "n": step * rng.randint(max(1, 1_000 // step), 900_000 // step)}


# op -> (the gold from the drawn numbers, the code that prints it)
_STORY_OPS: dict[str, tuple[Callable[..., int], str]] = {
    "*": (lambda a, b: a * b, "{a} * {b}"),
    "//": (lambda a, b: a // b, "{a} // {b}"),
    "%": (lambda a, b: a % b, "{a} % {b}"),
    "-": (lambda a, b: a - b, "{a} - {b}"),
    "pct": (lambda n, p: n * p // 100, "{n} * {p} // 100"),
}


def a_story(rng, ctx, text, op: str, plan: str):
    """A word problem over two numbers; ``plan`` says which operation the story asks for and why."""
    x = _story_numbers(rng, op)
    name = rng.choice(ctx.pools.names)
    gold, code_text = _STORY_OPS[op]
    expr = code_text.format(**x)
    shown = {k: show(v, rng) if k in ("a", "n") else v for k, v in x.items()}
    return _arith(text.format(name=name, **shown), gold(**x), f"print({expr})",
                  plan.format(name=name, expr=expr, **x), (name,) if "{name}" in text else ())


# --------------------------------------------------------------------------- scenarios: the story picks the operation

_OPS = {"*": operator.mul, "//": operator.floordiv, "%": operator.mod, "-": operator.sub}
_POWER_WORDS = {4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh"}


def _actors(rng: random.Random, ctx, text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """A name and an item from the pools, and those of them that ``text`` mentions (its entities)."""
    fields = {"name": rng.choice(ctx.pools.names), "items": rng.choice(ctx.pools.items)}
    return fields, tuple(v for k, v in fields.items() if f"{{{k}}}" in text)


def a_pair(rng, ctx, text, op: str, plan: str, a: tuple[int, int], b: tuple[int, int]):
    """Two numbers drawn from the ranges ``a`` and ``b`` (``a`` the larger unless multiplying);
    ``plan`` states the operation the story asks for."""
    x, y = rng.randint(*a), rng.randint(*b)
    if op != "*" and x <= y:
        return None
    fields, used = _actors(rng, ctx, text)
    expr = f"{x} {op} {y}"
    return _arith(text.format(a=show(x, rng), b=show(y, rng), **fields), _OPS[op](x, y), f"print({expr})",
                  plan.format(a=x, b=y, expr=expr, **fields), used)


def a_pct_count(rng, ctx, text, plan: str, p: tuple[int, int], n: tuple[int, int]):
    """``p``% of a count ``n``, with ``n`` chosen so that the share is a whole number."""
    pct = rng.randint(*p)
    step = 100 // gcd(100, pct)
    total = step * rng.randint(ceil(n[0] / step), n[1] // step)
    fields, used = _actors(rng, ctx, text)
    return _arith(text.format(p=pct, n=show(total, rng), **fields), total * pct // 100,
                  f"print({total} * {pct} // 100)", plan.format(p=pct, n=total, **fields), used)


def a_pct_money(rng, ctx, text, plan: str, sign: int, p: tuple[int, int] = (5, 35), n: tuple[int, int] = (20, 4_000)):
    """A percentage of a price (``sign`` 0), or the price after adding (1) or taking off (-1) that percentage."""
    pct, price = rng.randint(*p), rng.randint(*n)
    factor = {0: f"{pct}", 1: f"(100 + {pct})", -1: f"(100 - {pct})"}[sign]
    gold = Fraction(price * (pct if sign == 0 else 100 + sign * pct), 100)
    fields, used = _actors(rng, ctx, text)
    return _arith(text.format(p=pct, n=price, **fields), gold, f"print({price} * {factor} / 100)",
                  plan.format(p=pct, n=price, expr=f"{price} * {factor} / 100", **fields), used)


def _series(rng: random.Random, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(4, 7))]


def a_total(rng, ctx, text, plan: str, lo: int, hi: int):
    xs = _series(rng, lo, hi)
    fields, used = _actors(rng, ctx, text)
    return _arith(text.format(xs=listing([str(x) for x in xs]), n=len(xs), **fields), sum(xs),
                  f"print(sum([{', '.join(map(str, xs))}]))", plan.format(n=len(xs), **fields), used)


def a_average(rng, ctx, text, plan: str, lo: int, hi: int, places: int):
    xs = _series(rng, lo, hi)
    gold = round_half_up(Fraction(sum(xs), len(xs)), places)
    if gold is None:
        return None
    fields, used = _actors(rng, ctx, text)
    rounded = "round(sum(xs) / len(xs))" if places == 0 else f"round(sum(xs) / len(xs), {places})"
    return _arith(text.format(xs=listing([str(x) for x in xs]), n=len(xs), **fields), gold,
                  f"xs = [{', '.join(map(str, xs))}]\nprint({rounded})", plan.format(n=len(xs), **fields), used)


def a_power_story(rng, ctx, text, k: int, plan: str):
    side = rng.randint(11, 999)
    return _arith(text.format(a=side), side**k, f"print({side} ** {k})", plan.format(a=side))


def a_power_named(rng, ctx, text):
    a, k = rng.randint(11, 99), rng.choice(tuple(_POWER_WORDS))
    return _arith(text.format(a=a, kw=_POWER_WORDS[k]), a**k, f"print({a} ** {k})",
                  f"The {_POWER_WORDS[k]} power of {a} is {a} ** {k}; Python gives it exactly.")


def _pair(op: str, plan: str, a: tuple[int, int], b: tuple[int, int]):
    return partial(a_pair, op=op, plan=plan, a=a, b=b)


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
    # more shapes of bare arithmetic
    *(Template(f"arith/{group}/{id_}", _A, "train", text, kind) for group, id_, text, kind in (
        ("product", "multiply-by", "Multiply {a} by {b}.", a_product),
        ("product", "find-product", "Find the product of {a} and {b}.", a_product),
        ("product", "work-out-x", "Work out {a} x {b}.", a_product),
        ("product", "please-compute", "Please compute {a} * {b} for me.", a_product),
        ("product", "could-you-times", "Could you tell me what {a} times {b} is?", a_product),
        ("product", "need-multiplied", "I need {a} multiplied by {b}.", a_product),
        ("product", "multiplied-how-much", "{a} multiplied by {b} is how much?", a_product),
        ("product", "equals-blank", "{a} × {b} = ?", a_product),
        ("product3", "multiply-three", "Multiply {a} by {b} and then by {c}.", a_product3),
        ("percent", "find-percent", "Find {p}% of {n}.", a_percent_of),
        ("percent", "per-cent-word", "How much is {p} per cent of {n}?", a_percent_of),
        ("percent", "increase-imperative", "Increase {n} by {p}%.", partial(a_percent_change, sign=1)),
        ("percent", "decrease-imperative", "Decrease {n} by {p} percent.", partial(a_percent_change, sign=-1)),
        ("percent", "ratio-express", "Express {m} as a percentage of {n}, to two decimal places.", a_percent_ratio),
        ("power", "find-raised", "Find {a} raised to the power {k}.", a_power),
        ("power", "kth-power-of", "Work out the {kth} power of {a}.", a_power),
        ("power", "double-star", "Calculate {a} ** {k}.", a_power),
        ("power", "squared", "What is {a} squared?", partial(a_power_of, k=2)),
        ("power", "cube-of", "Calculate the cube of {a}.", partial(a_power_of, k=3)),
        ("power", "cubed-imperative", "Find {a} cubed.", partial(a_power_of, k=3)),
        ("remainder", "find-remainder", "Find the remainder of {a} divided by {b}.", a_remainder),
        ("remainder", "what-remains", "What remains when you divide {a} by {b}?", a_remainder),
        ("floordiv", "whole-times", "How many whole times does {b} go into {a}?", a_floordiv),
        ("floordiv", "integer-quotient", "Find the integer quotient of {a} and {b}.", a_floordiv),
        ("divide", "divide-imperative", "Divide {a} by {b} and round the result to 3 decimal places.", a_divide_round),
        ("sum", "find-total", "Find the total of {xs}.", a_sum),
        ("sum", "added-together", "Calculate {xs} added together.", a_sum),
        ("mean", "find-mean", "Find the mean of {xs}, rounded to two decimal places.", a_mean),
        ("sqrt", "find-sqrt", "Find the square root of {n}.", a_sqrt),
        ("sqrt", "what-squared-gives", "Which whole number squared gives {n}?", a_sqrt),
    )),
    # word problems: the story decides the operation
    *(Template(f"arith/word/{id_}", _A, "train", text, partial(a_story, op=op, plan=plan)) for op, id_, text, plan in (
        ("*", "printer-minutes", "A printer prints {b} pages a minute. How many pages does it print in {a} minutes?",
         "{b} pages a minute for {a} minutes is {expr} pages."),
        ("*", "pump-hours", "A pump moves {b} litres of water per hour. How many litres does it move in {a} hours?",
         "{b} litres per hour for {a} hours is {expr}."),
        ("*", "salary-months", "{name} earns {b} dollars a month. How much does {name} earn in {a} months?",
         "{b} dollars a month for {a} months is {expr}."),
        ("*", "farm-weeks", "Every week a farm harvests {b} kilograms of potatoes. How many kilograms is that over "
         "{a} weeks?", "{b} kilograms a week for {a} weeks is {expr}."),
        ("*", "rows-seats", "A hall has {a} rows with {b} seats in each row. How many seats are there?",
         "{a} rows of {b} seats: {expr}."),
        ("*", "shelves-books", "A library has {a} shelves and each shelf holds {b} books. How many books fit?",
         "{a} shelves of {b} books: {expr}."),
        ("*", "tickets-cost", "One concert ticket costs {b} dollars. What do {a} tickets cost?",
         "{a} tickets at {b} dollars each cost {expr}."),
        ("*", "cartons-eggs", "Each carton holds {b} eggs. How many eggs are there in {a} cartons?",
         "{a} cartons of {b} eggs: {expr}."),
        ("//", "teams", "How many complete teams of {b} players can be formed from {a} players?",
         "Only complete teams count, so it is whole-number division: {expr}."),
        ("//", "buses", "A bus seats {b} passengers. How many buses can {a} passengers fill completely?",
         "Only completely full buses count: {expr}."),
        ("//", "batches-flour", "One batch of bread needs {b} grams of flour. How many whole batches can a baker make "
         "from {a} grams?", "Whole batches only: {expr}."),
        ("//", "tickets-budget", "Tickets cost {b} dollars each. How many tickets can {name} buy with {a} dollars?",
         "{name} can buy as many whole tickets as {b} fits into {a}: {expr}."),
        ("//", "tanks", "A tank holds {b} litres. How many tanks can be filled to the top from {a} litres of water?",
         "Only full tanks count: {expr}."),
        ("%", "players-without-team", "{a} players are put into teams of {b}. How many players are left without a "
         "team?", "The players left over after full teams of {b} are the remainder: {expr}."),
        ("%", "cards-undealt", "{a} cards are dealt in hands of {b} cards until no full hand is possible. How many "
         "cards remain?", "What remains after full hands is the remainder: {expr}."),
        ("%", "stickers-kept", "A teacher hands out {a} stickers, the same number to each of {b} pupils, as many as "
         "possible. How many stickers does the teacher keep?", "The stickers kept are the remainder: {expr}."),
        ("%", "flour-left", "A baker uses {a} grams of flour in batches of {b} grams. How many grams are left after "
         "the last full batch?", "The flour left after full batches is the remainder: {expr}."),
        ("-", "how-many-more", "A city has {a} residents and a town has {b}. How many more people live in the city?",
         "The difference is {expr}."),
        ("-", "spent", "{name} had {a} dollars and spent {b}. How much money is left?", "What is left is {expr}."),
        ("-", "difference-between", "Find the difference between {a} and {b}.", "The difference is {expr}."),
        ("pct", "students-walk", "In a school of {n} students, {p}% walk to school. How many students walk?",
         "{p}% of {n} students is {n} * {p} / 100, a whole number here: {expr}."),
        ("pct", "seeds-sprouted", "{name} planted {n} seeds and {p}% of them sprouted. How many seeds sprouted?",
         "{p}% of {n} seeds is {n} * {p} / 100: {expr}."),
        ("pct", "votes", "{n} people voted and {p} percent chose the blue team. How many people chose the blue "
         "team?", "{p} percent of {n} is {n} * {p} / 100: {expr}."),
        ("pct", "tax", "What is the tax on a price of {n} dollars at a rate of {p}%?",
         "The tax is {p}% of {n}, {n} * {p} / 100: {expr}."),
    )),
    Template("arith/sum/shop-sales", _A, "train", "A shop sold {xs} cakes over several days. How many cakes did it "
             "sell in all?", a_sum),
    Template("arith/sum/walked", _A, "train", "On a hiking trip a group walked {xs} metres on different days. What "
             "distance is that altogether, in metres?", a_sum),
    Template("arith/mean/rainfall", _A, "train", "The daily rainfall was {xs} millimetres over {n} days. What was "
             "the average, rounded to two decimal places?", a_mean),
    Template("arith/mean/scores", _A, "train", "A player scored {xs} points in {n} games. What was the mean score, "
             "to one decimal place?", partial(a_mean, places=1)),
    # scenarios with their own numbers: full groups, what is left, shares, prices, series
    *(Template(f"arith/{group}/{id_}", _A, "train", text, kind) for group, id_, text, kind in (
        ("word", "wedding-tables", "There are {a} guests at a wedding and each round table seats {b}. How many tables "
         "can be filled completely?", _pair("//", "Only full tables count: {a} // {b} gives the number of full tables.",
                                            (100, 3_000), (6, 14))),
        ("word", "juice-bottles", "Find the number of {b} ml bottles that can be filled to the brim from {a} ml of "
         "juice.", _pair("//", "Only bottles filled to the brim count: {a} // {b}.", (10_000, 900_000), (150, 1_500))),
        ("word", "rope-pieces", "How many whole pieces {b} cm long can be cut from a rope that is {a} cm long?",
         _pair("//", "Only whole pieces count, so I divide and drop the remainder: {a} // {b}.", (1_000, 60_000),
               (15, 250))),
        ("word", "days-to-weeks", "{a} days make how many full weeks?",
         _pair("//", "A week has 7 days, so the full weeks are {a} // 7.", (100, 99_999), (7, 7))),
        ("word", "gift-sets", "Each gift set needs {b} {items}. How many complete gift sets can {name} make from {a} "
         "{items}?", _pair("//", "Complete sets only: {a} // {b} gives the number of gift sets.", (1_000, 90_000),
                           (6, 120))),
        ("word", "afford", "{name} has {a} dollars to spend on {items} that cost {b} dollars apiece. What is the "
         "largest number of {items} {name} can buy?",
         _pair("//", "{name} can only buy whole {items}, so the answer is {a} // {b}.", (500, 99_999), (3, 250))),
        ("word", "van-trips", "A delivery van takes {b} parcels on each trip. If {a} parcels are waiting, how many "
         "full trips can it make?", _pair("//", "Only full trips of {b} parcels count: {a} // {b}.", (1_000, 90_000),
                                          (12, 240))),
        ("word", "eggs-spare", "After {a} eggs are put into cartons of {b}, how many eggs do not make up a full "
         "carton?", _pair("%", "The eggs outside the full cartons are the remainder: {a} % {b}.", (1_000, 99_999),
                          (6, 30))),
        ("word", "days-extra", "{a} days is a number of full weeks plus how many extra days?",
         _pair("%", "The days after the full weeks are the remainder: {a} % 7.", (100, 99_999), (7, 7))),
        ("word", "rope-offcut", "A rope {a} cm long is cut into as many {b} cm pieces as possible. How many "
         "centimetres of rope are left?",
         _pair("%", "The rope left after the full pieces is the remainder: {a} % {b}.", (1_000, 60_000), (15, 250))),
        ("word", "gift-sets-unused", "{name} makes as many gift sets of {b} {items} as possible from {a} {items}. "
         "How many {items} are not used?",
         _pair("%", "The {items} that do not make a full set are the remainder: {a} % {b}.", (1_000, 90_000),
               (6, 120))),
        ("word", "parade-ranks", "A parade of {a} soldiers marches in ranks of {b}. How many soldiers do not fit "
         "into a full rank?", _pair("%", "The soldiers outside the full ranks are the remainder: {a} % {b}.",
                                    (500, 20_000), (6, 40))),
        ("word", "pages-evenings", "{name} reads {b} pages every evening. How many pages has {name} read after {a} "
         "evenings?", _pair("*", "{b} pages an evening for {a} evenings is {expr}.", (10, 365), (5, 80))),
        ("word", "heartbeats", "A resting heart beats {b} times a minute. How many beats is that in {a} minutes?",
         _pair("*", "{b} beats a minute for {a} minutes is {expr}.", (60, 1_440), (55, 95))),
        ("word", "weekly-savings", "For {a} weeks, {name} saves {b} dollars each week. How much does {name} save in "
         "total?", _pair("*", "{b} dollars a week for {a} weeks is {expr}.", (8, 104), (15, 400))),
        ("word", "bags-of-items", "{name} has {a} bags with {b} {items} in each bag. How many {items} are there "
         "altogether?", _pair("*", "{a} bags of {b} {items} make {expr}.", (12, 900), (6, 250))),
        ("word", "field-plants", "Find the number of plants in a field with {a} rows of {b} plants each.",
         _pair("*", "{a} rows of {b} plants make {expr}.", (20, 900), (20, 600))),
        ("word", "cyclist", "Riding at {b} metres per minute, how many metres does a cyclist cover in {a} minutes?",
         _pair("*", "Distance is speed times time: {expr}.", (15, 300), (150, 450))),
        ("word", "trip-fares", "A school sends {a} pupils on a trip, and the fare is {b} dollars per pupil. What do "
         "the fares cost in total?", _pair("*", "{a} fares of {b} dollars cost {expr}.", (20, 1_500), (3, 90))),
        ("word", "points-more", "Over a season, {name}'s team scored {a} points and its rival scored {b}. How many "
         "more points did {name}'s team score?", _pair("-", "How many more is the difference: {expr}.",
                                                       (1_000, 9_999), (500, 9_000))),
        ("word", "mountain-higher", "How much higher is a mountain of {a} metres than a hill of {b} metres?",
         _pair("-", "The difference in height is {expr}.", (1_000, 8_848), (100, 999))),
        ("word", "steps-to-go", "{name} wants to walk {a} steps today and has walked {b} so far. How many more steps "
         "does {name} need?", _pair("-", "The steps still to walk are {expr}.", (8_000, 30_000), (500, 7_999))),
        ("word", "fewer-pupils", "A school had {a} pupils last year and {b} this year. How many fewer pupils does it "
         "have now?", _pair("-", "The drop is {expr}.", (500, 9_000), (300, 8_000))),
        ("difference", "minus", "What is {a} minus {b}?",
         _pair("-", "{a} minus {b} is {expr}; I will compute it exactly.", (10_000, 999_999), (1_000, 99_999))),
        ("difference", "subtract-from", "Subtract {b} from {a}.",
         _pair("-", "Subtracting {b} from {a} is {expr}.", (10_000, 999_999), (1_000, 99_999))),
        ("word", "exam-passed", "{p}% of the {n} students who sat the exam passed. How many students passed?",
         partial(a_pct_count, plan="{p}% of {n} is {n} * {p} / 100, a whole number here.", p=(40, 98),
                 n=(100, 9_000))),
        ("word", "survey-tea", "Out of {n} people surveyed, {p}% said they prefer tea. How many people is that?",
         partial(a_pct_count, plan="{p}% of {n} people is {n} * {p} / 100.", p=(10, 90), n=(200, 50_000))),
        ("word", "orchard-apple", "An orchard has {n} trees, and {p} percent of them are apple trees. Find the "
         "number of apple trees.", partial(a_pct_count, plan="{p} percent of {n} trees is {n} * {p} / 100.",
                                           p=(10, 90), n=(100, 20_000))),
        ("word", "photos-deleted", "{name} has {n} photos on a phone and deletes {p}% of them. How many photos does "
         "{name} delete?", partial(a_pct_count, plan="{p}% of {n} photos is {n} * {p} / 100.", p=(5, 60),
                                   n=(100, 20_000))),
        ("word", "runners-finished", "How many of the {n} runners in a marathon finished, if {p}% of them did?",
         partial(a_pct_count, plan="{p}% of {n} runners is {n} * {p} / 100.", p=(60, 99), n=(200, 40_000))),
        ("word", "coat-discount", "A coat costs {n} dollars and is on sale at {p}% off. How many dollars is the "
         "discount?", partial(a_pct_money, plan="The discount is {p}% of {n}: {expr}.", sign=0, n=(30, 900))),
        ("word", "bike-sale-price", "A bike priced at {n} dollars is sold with a {p}% discount. What is the price "
         "after the discount?", partial(a_pct_money, plan="After {p}% off, the price is {expr}.", sign=-1,
                                        n=(80, 4_000))),
        ("word", "meal-tip", "A meal costs {n} dollars. What is a {p}% tip on it?",
         partial(a_pct_money, plan="The tip is {p}% of {n}: {expr}.", sign=0, p=(10, 25), n=(20, 400))),
        ("word", "laptop-with-tax", "What is the total price of a {n}-dollar laptop once {p}% sales tax is added?",
         partial(a_pct_money, plan="Adding {p}% tax multiplies the price by (100 + {p}) / 100: {expr}.", sign=1,
                 p=(5, 25), n=(300, 3_000))),
        ("word", "savings-interest", "{name} keeps {n} dollars in a savings account that pays {p}% interest a year. "
         "How much interest does {name} earn in one year?",
         partial(a_pct_money, plan="One year's interest is {p}% of {n}: {expr}.", sign=0, p=(1, 9),
                 n=(100, 50_000))),
        ("word", "salary-raise", "{name}'s monthly salary of {n} dollars goes up by {p}%. What is the new monthly "
         "salary?", partial(a_pct_money, plan="A {p}% raise multiplies the salary by (100 + {p}) / 100: {expr}.",
                            sign=1, p=(2, 15), n=(800, 9_000))),
        ("word", "basketball-points", "{name} scored {xs} points in {n} basketball games. How many points is that in "
         "total?", partial(a_total, plan="The total is the sum of the {n} scores.", lo=2, hi=45)),
        ("word", "cycled-km", "Over one week {name} cycled {xs} kilometres. What was the total distance?",
         partial(a_total, plan="The total distance is the sum of the {n} rides.", lo=3, hi=120)),
        ("word", "charity-stalls", "Find the total raised by a charity whose stalls took in {xs} dollars.",
         partial(a_total, plan="The total raised is the sum of the {n} amounts.", lo=40, hi=9_999)),
        ("word", "bakery-branches", "How many loaves did a bakery sell altogether if its branches sold {xs} loaves?",
         partial(a_total, plan="The loaves sold add up over the {n} branches: I sum them.", lo=50, hi=2_000)),
        ("word", "noon-temperatures", "What was the mean noon temperature, to one decimal place, if the readings on "
         "{n} days were {xs} degrees?", partial(
             a_average, plan="The mean is the sum of the {n} readings divided by {n}, rounded to one decimal.", lo=5,
             hi=38, places=1)),
        ("word", "test-marks", "{name} got {xs} marks in {n} tests. Find {name}'s average mark, rounded to two "
         "decimal places.", partial(
             a_average, plan="The average is the sum of the {n} marks divided by {n}, rounded to two decimals.",
             lo=30, hi=100, places=2)),
        ("word", "daily-steps", "Over {n} days {name} walked {xs} steps. To the nearest whole number, how many steps "
         "is that per day on average?", partial(
             a_average, plan="The daily average is the sum of the {n} counts divided by {n}, rounded to a whole "
             "number.", lo=2_000, hi=20_000, places=0)),
        ("word", "lap-times", "A runner's lap times were {xs} seconds. Work out the mean lap time to one decimal "
         "place.", partial(
             a_average, plan="The mean lap time is the sum of the {n} times divided by {n}, rounded to one decimal.",
             lo=60, hi=95, places=1)),
        ("word", "square-field-area", "A square field measures {a} metres on each side. What is its area in square "
         "metres?", partial(a_power_story, k=2, plan="The area of a square is its side squared: {a} ** 2.")),
        ("word", "cube-tank-volume", "A cube-shaped tank has edges {a} cm long. What is its volume in cubic "
         "centimetres?", partial(a_power_story, k=3, plan="The volume of a cube is its edge cubed: {a} ** 3.")),
        ("word", "order-total", "{name} orders {n} {items}, and each one costs ${price}. Find the total cost.", a_buy),
        ("word", "pay-for", "What does {name} pay for {n} {items} priced at ${price} each?", a_buy),
        ("power", "square-imperative", "Square {a}.", partial(a_power_of, k=2)),
        ("power", "cube-imperative", "Cube {a}.", partial(a_power_of, k=3)),
        ("power", "raised-named", "How much is {a} raised to the {kw} power?", a_power_named),
        ("power", "value-caret", "Tell me the value of {a}^{k}.", a_power),
        ("floordiv", "obelus-drop", "Compute {a} ÷ {b}, dropping any remainder.", a_floordiv),
        ("percent", "out-of", "{m} out of {n} is what percent? Give the answer to two decimal places.",
         a_percent_ratio),
        ("sum", "add-up-to", "What do {xs} add up to?", a_sum),
    )),
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


