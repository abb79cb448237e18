"""demo_arith: exact arithmetic that needs the code tool, in bare and word-problem phrasings."""

from __future__ import annotations

import random
from fractions import Fraction
from functools import partial
from math import gcd

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


