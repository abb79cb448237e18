"""demo_twohop: a search (or two) and then code: gaps in years, ages, totals across entities."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial
from typing import Any

from training.tasks.families.base import (
    TWOHOP,
    Draft,
    Step,
    Template,
    answer,
    code,
    round_half_up,
    search,
    think,
)
from training.tasks.families.search import (
    Fact,
    company_fact,
    device_fact,
    fact_step,
    person_fact,
    town_fact,
)


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
        steps.append(fact_step(f))
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
    steps += [fact_step(fp), think(f"{fp.says} The age is {c.founded} - {p.born}."),
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
    # more wordings and sentence shapes of the same questions
    *(Template(f"twohop/{group}/{id_}", _H, "train", text, kind) for group, id_, text, kind in (
        ("gap-town-company", "work-out-gap", "Work out how many years separate the founding of {T} from the founding "
         "of {C}.", h_gap_town_company),
        ("gap-town-company", "first-town-then-company", "First the town of {T} was founded, later the company {C}. "
         "How many years apart were the two foundings?", h_gap_town_company),
        ("gap-town-company", "difference-founding-years", "What is the difference between the founding years of {C} "
         "and {T}?", h_gap_town_company),
        ("company-gap", "how-many-years-before", "How many years before {C2} was {C1} founded?", h_company_gap),
        ("company-gap", "calculate-gap", "Calculate the number of years between the founding of {C1} and that of "
         "{C2}.", h_company_gap),
        ("company-gap", "older-by", "{C1} is older than {C2}. By how many years?", h_company_gap),
        ("age-invention", "years-old-invented", "How many years old was {P} when inventing the {D}?",
         h_age_invention),
        ("age-invention", "find-age", "Find the age of {P} in the year the {D} was invented.", h_age_invention),
        ("age-invention", "inventor-age", "The {D} was invented by {P}. How old was the inventor then?",
         h_age_invention),
        ("founder-age", "age-of-founder", "Work out the age of the founder of {C} in the year the company started.",
         h_founder_age),
        ("founder-age", "founder-how-old", "{C} was started by one person. How old was that person when it started?",
         h_founder_age),
        ("population-sum", "total-population", "What is the total population of {T1} and {T2}?",
         partial(h_population, op="+")),
        ("population-sum", "sum-residents", "Calculate the sum of the residents of {T1} and of {T2}.",
         partial(h_population, op="+")),
        ("population-sum", "both-towns", "If you count everyone in {T1} and everyone in {T2}, how many people is that?",
         partial(h_population, op="+")),
        ("population-diff", "larger-by", "{T1} has more people than {T2}. By how many?", partial(h_population, op="-")),
        ("population-diff", "difference-populations", "What is the difference between the populations of {T1} "
         "and {T2}?", partial(h_population, op="-")),
        ("age-in-year", "age-in-year", "What age would {P} have reached in the year {Y}?", h_age_in_year),
        ("age-in-year", "if-alive", "Suppose {P} were alive in {Y}. How old would {P} be?", h_age_in_year),
        ("birth-gap", "born-apart", "How many years apart were {P1} and {P2} born?", h_birth_gap),
        ("birth-gap", "difference-birth", "Find the difference between the birth years of {P2} and {P1}.",
         h_birth_gap),
        ("employees-sum", "combined-staff", "What is the combined number of employees of {C1} and {C2}?",
         partial(h_employees, op="+")),
        ("employees-sum", "staff-total", "Add the staff of {C1} to the staff of {C2}. What total do you get?",
         partial(h_employees, op="+")),
        ("employees-diff", "how-many-more-staff", "How many more people work at {C1} than at {C2}?",
         partial(h_employees, op="-")),
        ("employees-diff", "bigger-by", "{C1} employs more people than {C2}. What is the difference?",
         partial(h_employees, op="-")),
        ("population-growth", "rise-by", "The population of {T} rises by {p}%. What will it be, rounded to a whole "
         "number?", h_growth),
        ("since-invention", "how-long-ago", "In the year {Y}, how many years had passed since the {D} was invented?",
         h_years_since_invention),
        ("since-invention", "years-old-device", "How old was the invention of the {D} in {Y}, in years?",
         h_years_since_invention),
    )),
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


