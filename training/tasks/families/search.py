"""demo_search: one fact about an entity of the fictional encyclopedia, found by one search."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from training.tasks.families.base import SEARCH, Draft, Step, Template, a_or_an, answer, search, think
from training.tasks.world import Company, Device, Person, Town, World

# --------------------------------------------------------------------------- demo_search kinds

_PERSON_ATTRS = ("birthplace", "born", "occupation")
_TOWN_ATTRS = ("founded", "population", "region")
_COMPANY_ATTRS = ("founder", "established", "hq", "employees")
_DEVICE_ATTRS = ("inventor", "year")


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
                f"{p.name} worked as {a_or_an(p.occupation)}.")


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


def fact_step(f: Fact) -> Step:
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
    steps = [think(f"I need to find {f.need}."), fact_step(f), think(f.says), answer(f.value)]
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
    # more wordings and sentence shapes of the same facts
    *(_s(id_, "train", text, attr) for attr, id_, text in (
        ("birthplace", "tell-birthplace", "Tell me where {P} was born."),
        ("birthplace", "home-town", "What was the home town of {P}?"),
        ("birthplace", "do-you-know-born", "Do you know where {P} was born?"),
        ("birthplace", "find-birthplace", "Find the town where {P} was born."),
        ("birthplace", "born-in-what-town", "{P} was born in what town?"),
        ("born", "birth-year-of", "What was the birth year of {P}?"),
        ("born", "look-up-born", "Look up the year {P} was born."),
        ("born", "which-year-born", "Which year was {P} born in?"),
        ("born", "id-like-born", "I'd like to know when {P} was born."),
        ("born", "year-born-statement", "{P} was born in what year?"),
        ("occupation", "job-of", "What was the job of {P}?"),
        ("occupation", "line-of-work", "What was {P}'s line of work?"),
        ("occupation", "tell-line-of-work", "Tell me what {P} did for a living."),
        ("occupation", "find-career", "Find out what {P}'s career was."),
        ("occupation", "known-as", "What kind of work was {P} known for?"),
        ("founded", "founding-year-town", "What is the founding year of {T}?"),
        ("founded", "look-up-town-founded", "Look up when the town of {T} was founded."),
        ("founded", "how-old-town-year", "In which year did people found {T}?"),
        ("founded", "town-founded-what-year", "{T} was founded in what year?"),
        ("founded", "could-you-town", "Could you find out when {T} was founded?"),
        ("population", "residents", "How many residents does {T} have?"),
        ("population", "inhabitants", "Tell me how many inhabitants {T} has."),
        ("population", "find-population", "Find the population of {T}."),
        ("population", "how-big-town", "How big is the population of the town {T}?"),
        ("population", "people-count", "What number of people live in {T}?"),
        ("region", "what-region", "What region is {T} in?"),
        ("region", "tell-region", "Tell me the region where {T} lies."),
        ("region", "find-region", "Find out which region the town of {T} belongs to."),
        ("region", "town-in-region", "{T} is located in which region?"),
        ("region", "do-you-know-region", "Do you know the region of {T}?"),
        ("founder", "who-started", "Who started {C}?"),
        ("founder", "name-founder", "Tell me the name of the founder of {C}."),
        ("founder", "find-founder", "Find out who set up the company {C}."),
        ("founder", "by-whom", "By whom was {C} founded?"),
        ("founder", "company-founded-by-whom", "{C} was founded by whom?"),
        ("established", "founding-year-company", "What is the founding year of {C}?"),
        ("established", "look-up-established", "Look up when {C} was established."),
        ("established", "company-started-year", "Which year did {C} start?"),
        ("established", "id-like-company-founded", "I'd like to know the year {C} was founded."),
        ("established", "company-established-when", "{C} was established when?"),
        ("hq", "based", "Where is {C} based?"),
        ("hq", "main-office", "In what town is the main office of {C}?"),
        ("hq", "find-headquarters", "Find the town that hosts the headquarters of {C}."),
        ("hq", "tell-hq", "Tell me where {C} has its headquarters."),
        ("hq", "company-hq-town", "The headquarters of {C} are in which town?"),
        ("employees", "staff", "How many staff work at {C}?"),
        ("employees", "workforce", "What is the size of the workforce of {C}?"),
        ("employees", "find-employees", "Find out how many people work for {C}."),
        ("employees", "tell-employees", "Tell me the number of employees of {C}."),
        ("employees", "company-employs-how-many", "{C} employs how many people?"),
        ("inventor", "who-created", "Who created the {D}?"),
        ("inventor", "came-up-with", "Who came up with the {D}?"),
        ("inventor", "find-inventor", "Find the inventor of the {D}."),
        ("inventor", "tell-inventor", "Tell me who invented the {D}."),
        ("inventor", "device-invented-by-whom", "The {D} was invented by whom?"),
        ("year", "invention-year", "What is the year of invention of the {D}?"),
        ("year", "look-up-invented", "Look up when the {D} was invented."),
        ("year", "which-year-first-made", "Which year was the {D} invented in?"),
        ("year", "id-like-invented", "I'd like to know when the {D} was invented."),
        ("year", "device-invented-what-year", "The {D} was invented in what year?"),
    )),
    # questions, requests and lead-ins in yet other shapes
    *(_s(id_, "train", text, attr) for attr, id_, text in (
        ("birthplace", "grow-up", "Where did {P} grow up?"),
        ("birthplace", "which-town-grew-up", "Which town did {P} grow up in?"),
        ("birthplace", "name-birth-town", "Name the town {P} was born in."),
        ("birthplace", "could-you-birthplace", "Could you look up the birthplace of {P}?"),
        ("birthplace", "come-from", "Which town does {P} come from?"),
        ("birthplace", "curious-birthplace", "I am curious about {P}. Where was this person born?"),
        ("birthplace", "give-birthplace", "Give the birthplace of {P}."),
        ("born", "tell-year-born", "Tell me the year {P} was born."),
        ("born", "could-you-year-born", "Could you find out what year {P} was born?"),
        ("born", "do-you-know-birth-year", "Do you know the birth year of {P}?"),
        ("born", "find-birth-year", "Find {P}'s birth year."),
        ("born", "writing-about", "I am writing about {P}. In which year was this person born?"),
        ("born", "name-year-born", "Name the year in which {P} was born."),
        ("occupation", "profession", "What was {P}'s profession?"),
        ("occupation", "do-for-work", "What did {P} do for work?"),
        ("occupation", "look-up-profession", "Look up the profession of {P}."),
        ("occupation", "could-you-job", "Could you tell me what job {P} had?"),
        ("occupation", "worked-as-what", "{P} worked as what?"),
        ("occupation", "earn-a-living", "How did {P} earn a living?"),
        ("occupation", "by-profession", "What was {P} by profession?"),
        ("occupation", "id-like-job", "I'd like to know what {P} worked as."),
        ("founded", "give-year-town-founded", "Give the year {T} was founded."),
        ("founded", "tell-founding-year-town", "Tell me the founding year of the town {T}."),
        ("founded", "what-year-town-established", "What year was {T} established?"),
        ("founded", "do-you-know-town-founded", "Do you know when the town of {T} was founded?"),
        ("founded", "reading-about-town", "I am reading about {T}. When was it founded?"),
        ("founded", "saw-founding", "Which year saw the founding of {T}?"),
        ("founded", "name-year-town-founded", "Name the year {T} was founded."),
        ("population", "how-many-inhabitants", "How many inhabitants does {T} have?"),
        ("population", "look-up-live", "Look up how many people live in {T}."),
        ("population", "could-you-population", "Could you tell me the population of {T}?"),
        ("population", "town-has-how-many", "{T} has how many people?"),
        ("population", "id-like-people", "I'd like to know how many people {T} has."),
        ("population", "number-living", "What's the number of people living in {T}?"),
        ("population", "give-population", "Give the population of the town {T}."),
        ("population", "how-populous", "How populous is {T}?"),
        ("region", "which-region-lie", "Which region does {T} lie in?"),
        ("region", "name-region", "Name the region that {T} is part of."),
        ("region", "where-found", "Where can the town of {T} be found?"),
        ("region", "look-up-region", "Look up the region of the town {T}."),
        ("region", "id-like-region", "I'd like to know which region {T} is in."),
        ("region", "would-you-find", "In what region would you find {T}?"),
        ("region", "visiting-region", "I am planning a trip to {T}. Which region is it in?"),
        ("founder", "who-established", "Who established the company {C}?"),
        ("founder", "name-the-founder", "Name the founder of {C}."),
        ("founder", "who-launched", "Who launched {C}?"),
        ("founder", "could-you-founder", "Could you find out who founded {C}?"),
        ("founder", "id-like-founder", "I'd like to know who started {C}."),
        ("founder", "look-up-founder", "Look up the founder of {C}."),
        ("founder", "is-a-company-who", "{C} is a company. Who founded it?"),
        ("established", "company-started-when", "When was the company {C} started?"),
        ("established", "which-year-launched", "In which year was {C} launched?"),
        ("established", "tell-year-company-founded", "Tell me the year {C} was founded."),
        ("established", "do-you-know-established", "Do you know when {C} was established?"),
        ("established", "find-founding-year-company", "Find the founding year of the company {C}."),
        ("established", "is-a-company-when", "{C} is a company. When was it founded?"),
        ("established", "get-started", "What year did {C} get started?"),
        ("established", "could-you-launched", "Could you find out which year {C} was launched?"),
        ("hq", "where-headquarters", "Where are the headquarters of {C}?"),
        ("hq", "which-town-based", "Which town is {C} based in?"),
        ("hq", "look-up-headquartered", "Look up where {C} is headquartered."),
        ("hq", "name-hq-town", "Name the town where {C} has its headquarters."),
        ("hq", "could-you-based", "Could you tell me where {C} is based?"),
        ("hq", "home-to-headquarters", "What town is home to the headquarters of {C}?"),
        ("hq", "id-like-main-office", "I'd like to know where the company {C} has its main office."),
        ("employees", "headcount", "What is the headcount of {C}?"),
        ("employees", "how-large-staff", "How large is the staff of {C}?"),
        ("employees", "look-up-employees", "Look up how many employees {C} has."),
        ("employees", "could-you-work-at", "Could you find out how many people work at {C}?"),
        ("employees", "how-many-workers", "How many workers does the company {C} have?"),
        ("employees", "id-like-staff", "I'd like to know the number of staff at {C}."),
        ("employees", "give-employed", "Give the number of people employed by {C}."),
        ("inventor", "who-designed", "Who designed the {D}?"),
        ("inventor", "name-inventor", "Name the inventor of the {D}."),
        ("inventor", "who-built-first", "Who built the first {D}?"),
        ("inventor", "look-up-came-up-with", "Look up who came up with the {D}."),
        ("inventor", "could-you-inventor", "Could you find out who invented the {D}?"),
        ("inventor", "whose-invention", "Whose invention was the {D}?"),
        ("inventor", "keep-hearing", "I keep hearing about the {D}. Who invented it?"),
        ("year", "tell-year-invented", "Tell me the year the {D} was invented."),
        ("year", "first-built", "When was the first {D} built?"),
        ("year", "could-you-created", "Could you find out when the {D} was created?"),
        ("year", "do-you-know-invented", "Do you know what year the {D} was invented?"),
        ("year", "find-year-invention", "Find the year of the {D}'s invention."),
        ("year", "name-year-invented", "Name the year in which the {D} was invented."),
        ("year", "dates-from", "The {D} dates from which year?"),
    )),
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
