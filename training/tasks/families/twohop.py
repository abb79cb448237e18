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


def _plan(question: str, first: str, looks: Sequence[Step], notes: Sequence[str], final: str, expr: str,
          gold: int, entities: Sequence[str]) -> Draft:
    """Think ``first``, then each search followed by its note (what is known, what is still missing);
    ``final`` after the last search restates every value found and what to compute."""
    steps: list[Step] = [think(first)]
    for i, look in enumerate(looks):
        steps += [look, think(notes[i] if i < len(notes) else final)]
    steps += [code(f"print({expr})"), answer()]
    return Draft(question, str(gold), steps, tuple(dict.fromkeys(entities)))


def _twohop(question: str, facts: Sequence[Fact], goal: str, final: str, expr: str, gold: int) -> Draft:
    """Facts of entities named in the question, looked up in the order the question names them."""
    entities = [f.entity for f in facts]
    facts = sorted(facts, key=lambda f: question.find(f.entity))
    first = f"I need {' and '.join(f.need for f in facts)}, then {goal}."
    notes = [f"{f.says} Still missing: {nxt.need}." for f, nxt in zip(facts, facts[1:])]
    return _plan(question, first, [fact_step(f) for f in facts], notes, final, expr, gold, entities)


def h_gap_town_company(rng, ctx, text):
    w = ctx.world
    for _ in range(50):
        t, c = rng.choice(w.towns), rng.choice(w.companies)
        if c.founded > t.founded:
            break
    else:
        return None
    return _twohop(text.format(T=t.name, C=c.name), [town_fact(w, t, "founded"), company_fact(w, c, "established")],
                   "the number of years between them",
                   f"{c.name} was founded in {c.founded} and {t.name} in {t.founded}, so the gap is "
                   f"{c.founded} - {t.founded}.", f"{c.founded} - {t.founded}", c.founded - t.founded)


def h_company_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.companies, lambda a, b: a.founded < b.founded)
    if pair is None:
        return None
    c1, c2 = pair
    return _twohop(text.format(C1=c1.name, C2=c2.name),
                   [company_fact(w, c1, "established"), company_fact(w, c2, "established")],
                   "the number of years between them",
                   f"{c2.name} was founded in {c2.founded} and {c1.name} in {c1.founded}, so the gap is "
                   f"{c2.founded} - {c1.founded}.", f"{c2.founded} - {c1.founded}", c2.founded - c1.founded)


def h_town_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.towns, lambda a, b: a.founded < b.founded)
    if pair is None:
        return None
    t1, t2 = pair
    return _twohop(text.format(T1=t1.name, T2=t2.name), [town_fact(w, t1, "founded"), town_fact(w, t2, "founded")],
                   "the number of years between them",
                   f"{t2.name} was founded in {t2.founded} and {t1.name} in {t1.founded}, so the gap is "
                   f"{t2.founded} - {t1.founded}.", f"{t2.founded} - {t1.founded}", t2.founded - t1.founded)


def h_invention_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.devices, lambda a, b: a.year < b.year)
    if pair is None:
        return None
    d1, d2 = pair
    return _twohop(text.format(D1=d1.name, D2=d2.name), [device_fact(w, d1, "year"), device_fact(w, d2, "year")],
                   "the number of years between them",
                   f"The {d2.name} was invented in {d2.year} and the {d1.name} in {d1.year}, so the gap is "
                   f"{d2.year} - {d1.year}.", f"{d2.year} - {d1.year}", d2.year - d1.year)


def h_birth_to_founding(rng, ctx, text):
    w = ctx.world
    for _ in range(50):
        p, c = rng.choice(w.persons), rng.choice(w.companies)
        if c.founded > p.born:
            break
    else:
        return None
    return _twohop(text.format(P=p.name, C=c.name), [person_fact(w, p, "born"), company_fact(w, c, "established")],
                   "the number of years between them",
                   f"{c.name} was founded in {c.founded} and {p.name} was born in {p.born}, so the gap is "
                   f"{c.founded} - {p.born}.", f"{c.founded} - {p.born}", c.founded - p.born)


def h_age_invention(rng, ctx, text):
    w = ctx.world
    d = rng.choice(w.devices)
    p = w.person(d.inventor)
    return _twohop(text.format(P=p.name, D=d.name), [person_fact(w, p, "born"), device_fact(w, d, "year")],
                   "the age at the invention",
                   f"The {d.name} was invented in {d.year} and {p.name} was born in {p.born}, so the age is "
                   f"{d.year} - {p.born}.", f"{d.year} - {p.born}", d.year - p.born)


def h_founder_age(rng, ctx, text):
    w = ctx.world
    c = rng.choice(w.companies)
    p = w.person(c.founder)
    fc, fp = company_fact(w, c, "established"), person_fact(w, p, "born")
    return _plan(text.format(C=c.name), f"First I need who founded {c.name} and when.",
                 [search(fc.query, fc.title, str(c.founded), p.name), fact_step(fp)],
                 [f"{c.name} was founded in {c.founded} by {p.name}. Still missing: {fp.need}."],
                 f"{p.name} was born in {p.born} and founded {c.name} in {c.founded}, so the age is "
                 f"{c.founded} - {p.born}.", f"{c.founded} - {p.born}", c.founded - p.born, [c.name, p.name])


def h_inventor_age(rng, ctx, text):
    w = ctx.world
    d = rng.choice(w.devices)
    p = w.person(d.inventor)
    fd, fp = device_fact(w, d, "year"), person_fact(w, p, "born")
    return _plan(text.format(D=d.name), f"First I need who invented the {d.name} and when.",
                 [search(fd.query, fd.title, str(d.year), p.name), fact_step(fp)],
                 [f"The {d.name} was invented in {d.year} by {p.name}. Still missing: {fp.need}."],
                 f"{p.name} was born in {p.born} and invented the {d.name} in {d.year}, so the age is "
                 f"{d.year} - {p.born}.", f"{d.year} - {p.born}", d.year - p.born, [d.name, p.name])


def h_birthplace_age(rng, ctx, text):
    w = ctx.world
    p = rng.choice(w.persons)
    t = w.town(p.birthplace)
    fp, ft = person_fact(w, p, "born"), town_fact(w, t, "founded")
    return _plan(text.format(P=p.name), f"First I need where and when {p.name} was born.",
                 [search(fp.query, fp.title, str(p.born), t.name), fact_step(ft)],
                 [f"{p.name} was born in {p.born} in {t.name}. Still missing: {ft.need}."],
                 f"{t.name} was founded in {t.founded} and {p.name} was born there in {p.born}, so the town's age "
                 f"was {p.born} - {t.founded}.", f"{p.born} - {t.founded}", p.born - t.founded, [p.name, t.name])


def h_population(rng, ctx, text, op: str):
    w = ctx.world
    pair = _two(rng, w.towns, (lambda a, b: a.population > b.population) if op == "-" else (lambda a, b: True))
    if pair is None:
        return None
    t1, t2 = pair
    gold = t1.population + t2.population if op == "+" else t1.population - t2.population
    what = "the total" if op == "+" else "the difference"
    return _twohop(text.format(T1=t1.name, T2=t2.name),
                   [town_fact(w, t1, "population"), town_fact(w, t2, "population")],
                   "their sum" if op == "+" else "their difference",
                   f"{t1.name} has a population of {t1.population:,} and {t2.name} of {t2.population:,}, so {what} "
                   f"is {t1.population} {op} {t2.population}.", f"{t1.population} {op} {t2.population}", gold)


def h_employees(rng, ctx, text, op: str):
    w = ctx.world
    pair = _two(rng, w.companies, (lambda a, b: a.employees > b.employees) if op == "-" else (lambda a, b: True))
    if pair is None:
        return None
    c1, c2 = pair
    gold = c1.employees + c2.employees if op == "+" else c1.employees - c2.employees
    what = "the total" if op == "+" else "the difference"
    return _twohop(text.format(C1=c1.name, C2=c2.name),
                   [company_fact(w, c1, "employees"), company_fact(w, c2, "employees")],
                   "their sum" if op == "+" else "their difference",
                   f"{c1.name} has {c1.employees:,} employees and {c2.name} has {c2.employees:,}, so {what} is "
                   f"{c1.employees} {op} {c2.employees}.", f"{c1.employees} {op} {c2.employees}", gold)


def h_age_in_year(rng, ctx, text):
    w = ctx.world
    p = rng.choice(w.persons)
    y = p.born + rng.randint(5, 90)
    return _twohop(text.format(P=p.name, Y=y), [person_fact(w, p, "born")], f"the age in {y}",
                   f"{p.name} was born in {p.born}, so in {y} the age is {y} - {p.born}.", f"{y} - {p.born}",
                   y - p.born)


def h_town_age_in_year(rng, ctx, text):
    w = ctx.world
    t = rng.choice(w.towns)
    y = rng.randint(t.founded + 10, 2024)
    return _twohop(text.format(T=t.name, Y=y), [town_fact(w, t, "founded")], f"the town's age in {y}",
                   f"{t.name} was founded in {t.founded}, so in {y} it was {y} - {t.founded} years old.",
                   f"{y} - {t.founded}", y - t.founded)


def h_company_age_in_year(rng, ctx, text):
    w = ctx.world
    c = rng.choice(w.companies)
    if c.founded >= 2024:
        return None
    y = rng.randint(c.founded + 1, 2024)
    return _twohop(text.format(C=c.name, Y=y), [company_fact(w, c, "established")], f"the company's age in {y}",
                   f"{c.name} was founded in {c.founded}, so in {y} it was {y} - {c.founded} years old.",
                   f"{y} - {c.founded}", y - c.founded)


def h_birth_gap(rng, ctx, text):
    w = ctx.world
    pair = _two(rng, w.persons, lambda a, b: a.born < b.born)
    if pair is None:
        return None
    p1, p2 = pair
    return _twohop(text.format(P1=p1.name, P2=p2.name), [person_fact(w, p1, "born"), person_fact(w, p2, "born")],
                   "their difference",
                   f"{p2.name} was born in {p2.born} and {p1.name} in {p1.born}, so the difference is "
                   f"{p2.born} - {p1.born}.", f"{p2.born} - {p1.born}", p2.born - p1.born)


def h_growth(rng, ctx, text):
    w = ctx.world
    t, p = rng.choice(w.towns), rng.randint(2, 45)
    gold = round_half_up(Fraction(t.population * (100 + p), 100), 0)
    if gold is None:
        return None
    return _twohop(text.format(T=t.name, p=p), [town_fact(w, t, "population")],
                   f"the population after {p}% growth, rounded",
                   f"{t.name} has a population of {t.population:,}. Growing by {p}% multiplies it by "
                   f"(100 + {p}) / 100.", f"round({t.population} * (100 + {p}) / 100)", int(gold))


def h_years_since_invention(rng, ctx, text):
    w = ctx.world
    d = rng.choice(w.devices)
    if d.year >= 2024:
        return None
    y = rng.randint(d.year + 1, 2024)
    return _twohop(text.format(D=d.name, Y=y), [device_fact(w, d, "year")], f"the years from then to {y}",
                   f"The {d.name} was invented in {d.year}, so by {y} that is {y} - {d.year} years.",
                   f"{y} - {d.year}", y - d.year)


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
    # requests, statements followed by a question, inverted questions, and kinds of their own
    *(Template(f"twohop/{group}/{id_}", _H, "train", text, kind) for group, id_, text, kind in (
        ("gap-town-company", "calculate-after", "Calculate how many years after the founding of {T} the company {C} "
         "was founded.", h_gap_town_company),
        ("gap-town-company", "how-much-later", "How much later than {T} was {C} founded, in years?",
         h_gap_town_company),
        ("gap-town-company", "id-like-passed", "I'd like to know how many years passed from the founding of {T} to "
         "that of {C}.", h_gap_town_company),
        ("gap-town-company", "town-older-by", "The town of {T} is older than the company {C}. By how many years?",
         h_gap_town_company),
        ("company-gap", "separate", "How many years separate the founding of {C1} and the founding of {C2}?",
         h_company_gap),
        ("company-gap", "work-out-older", "Work out how much older {C1} is than {C2}, in years.", h_company_gap),
        ("company-gap", "founded-after-how-many", "{C2} was founded after {C1}. How many years after?",
         h_company_gap),
        ("age-invention", "calculate-age", "Calculate {P}'s age in the year the {D} was invented.", h_age_invention),
        ("age-invention", "inverted-how-old", "{P} was how old when the {D} was invented?", h_age_invention),
        ("age-invention", "designed-by", "The {D} was designed by {P}. How old was the designer at the time?",
         h_age_invention),
        ("founder-age", "person-who-started", "How old was the person who started {C} when they started it?",
         h_founder_age),
        ("founder-age", "calculate-founder-age", "Calculate the age of the founder of {C} at the time the company "
         "was founded.", h_founder_age),
        ("founder-age", "someone-founded", "Someone founded {C}. What age was that person in the founding year?",
         h_founder_age),
        ("inventor-age", "how-old-inventor", "How old was the inventor of the {D} when inventing it?",
         h_inventor_age),
        ("inventor-age", "person-who-invented", "How old was the person who invented the {D} at the time?",
         h_inventor_age),
        ("inventor-age", "work-out-inventor-age", "Work out the age of the inventor of the {D} in the year it was "
         "invented.", h_inventor_age),
        ("inventor-age", "someone-invented", "Someone came up with the {D}. How old were they then?",
         h_inventor_age),
        ("birthplace-age", "home-town-age", "How old was the home town of {P} when {P} was born?",
         h_birthplace_age),
        ("birthplace-age", "birthplace-existed", "How many years had {P}'s birthplace existed when {P} was born?",
         h_birthplace_age),
        ("birthplace-age", "born-in-a-town", "{P} was born in some town. How many years old was that town at the time "
         "of the birth?", h_birthplace_age),
        ("population-sum", "between-them", "How many inhabitants do {T1} and {T2} have between them?",
         partial(h_population, op="+")),
        ("population-sum", "work-out-total", "Work out the total number of people living in {T1} and {T2}.",
         partial(h_population, op="+")),
        ("population-sum", "take-together", "Take {T1} and {T2} together. How many people live there in total?",
         partial(h_population, op="+")),
        ("population-diff", "larger-by-people", "By how many people is {T1} larger than {T2}?",
         partial(h_population, op="-")),
        ("population-diff", "outnumbers", "Find out by how many people {T1} outnumbers {T2}.",
         partial(h_population, op="-")),
        ("population-diff", "fewer-people", "{T2} is smaller than {T1}. How many fewer people live in {T2}?",
         partial(h_population, op="-")),
        ("age-in-year", "work-out-age-had", "Work out the age {P} would have had in {Y}.", h_age_in_year),
        ("age-in-year", "in-year-how-old", "In {Y}, how old would {P} have been?", h_age_in_year),
        ("age-in-year", "inverted-age", "{P} would have been how old in {Y}?", h_age_in_year),
        ("birth-gap", "born-before", "{P1} was born before {P2}. How many years before?", h_birth_gap),
        ("birth-gap", "calculate-births", "Calculate the number of years between the births of {P1} and {P2}.",
         h_birth_gap),
        ("birth-gap", "younger-by", "By how many years is {P2} younger than {P1}?", h_birth_gap),
        ("employees-sum", "together-employees", "Together, how many employees do {C1} and {C2} have?",
         partial(h_employees, op="+")),
        ("employees-sum", "total-workforce", "Work out the total workforce of {C1} and {C2}.",
         partial(h_employees, op="+")),
        ("employees-sum", "staff-of-both", "I'd like to know how many staff {C1} and {C2} have in all.",
         partial(h_employees, op="+")),
        ("employees-diff", "larger-by-employees", "By how many employees is {C1} larger than {C2}?",
         partial(h_employees, op="-")),
        ("employees-diff", "difference-headcounts", "What is the difference between the headcounts of {C1} and "
         "{C2}?", partial(h_employees, op="-")),
        ("employees-diff", "fewer-staff", "{C2} has fewer staff than {C1}. How many fewer?",
         partial(h_employees, op="-")),
        ("population-growth", "suppose-grows", "Suppose {T} grows by {p}%. What would its population be? Round to "
         "a whole number.", h_growth),
        ("population-growth", "calculate-increase", "Calculate the population of {T} after it increases by {p}%, "
         "rounded to the nearest whole number.", h_growth),
        ("since-invention", "existed-by", "How many years had the {D} existed by {Y}?", h_years_since_invention),
        ("since-invention", "work-out-lie", "Work out how many years lie between the invention of the {D} and {Y}.",
         h_years_since_invention),
        ("town-gap", "years-older-town", "How many years older is {T1} than {T2}?", h_town_gap),
        ("town-gap", "founded-apart", "How many years apart were {T1} and {T2} founded?", h_town_gap),
        ("town-gap", "calculate-town-years", "Calculate the difference between the founding years of {T1} and "
         "{T2}.", h_town_gap),
        ("town-gap", "town-later", "{T2} was founded after {T1}. How many years later?", h_town_gap),
        ("invention-gap", "after-invention", "How many years after the {D1} was the {D2} invented?",
         h_invention_gap),
        ("invention-gap", "between-inventions", "Calculate the number of years between the inventions of the {D1} "
         "and the {D2}.", h_invention_gap),
        ("invention-gap", "came-first", "The {D1} came before the {D2}. How many years passed between the two "
         "inventions?", h_invention_gap),
        ("birth-to-founding", "after-born", "How many years after {P} was born was {C} founded?",
         h_birth_to_founding),
        ("birth-to-founding", "work-out-birth-founding", "Work out the number of years between the birth of {P} "
         "and the founding of {C}.", h_birth_to_founding),
        ("birth-to-founding", "born-before-company", "{P} was born before {C} existed. How many years before its "
         "founding?", h_birth_to_founding),
        ("town-age-in-year", "how-old-town", "How old was the town of {T} in {Y}?", h_town_age_in_year),
        ("town-age-in-year", "existed-for", "In {Y}, for how many years had {T} existed?", h_town_age_in_year),
        ("town-age-in-year", "find-town-age", "Find the age of {T} in the year {Y}.", h_town_age_in_year),
        ("company-age-in-year", "how-old-company", "How old was {C} in {Y}?", h_company_age_in_year),
        ("company-age-in-year", "in-business", "By {Y}, how many years had {C} been in business?",
         h_company_age_in_year),
        ("company-age-in-year", "tell-company-age", "Tell me how many years old {C} was in {Y}.",
         h_company_age_in_year),
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


