"""Generated TAPO trajectories and the matching test tools for the tiny fixture model.

Three families of questions, each answered in the TAPO format:

* ``arithmetic``: the model calls ``<code>print(a op b)</code>`` and copies the printed result;
* ``fact``: the model calls ``<search>birthplace of Name</search>`` (or ``birth year of`` /
  ``favourite colour of``) over a small, fixed, fictional encyclopedia of 32 made-up people and
  copies the value from ``(Title: Name) Name was born in Place.``;
* ``direct``: greetings, answered without any tool.

:func:`fixture_search` and :func:`run_python` are the real tools the integration tests plug into the
runtime; :func:`trajectory_text` runs them, so training observations are exactly what the tools return.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import traceback
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from agent_runtime.protocol import TAPO

Family = Literal["arithmetic", "fact", "direct"]
Attribute = Literal["birthplace", "year", "colour"]


@dataclass(frozen=True)
class FixtureTask:
    question: str
    answer: str
    family: Family


@dataclass(frozen=True)
class Entity:
    name: str
    birthplace: str
    year: int
    colour: str


# --- the fictional encyclopedia ---------------------------------------------------------------

_ENCYCLOPEDIA_SEED = 1234  # fixed: the tools must not depend on the model's seed
_N_ENTITIES = 32
_COLOURS = ("red", "blue", "green", "amber", "violet", "teal", "crimson", "ochre", "silver", "indigo")
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "qu", "r", "s", "t", "v", "z", "br", "dr", "gl",
           "kr", "pl", "st", "th", "tr", "zh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ee")
_CODAS = ("", "", "n", "r", "l", "th", "x", "nd", "rk", "st", "m")


def _made_up_word(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
    return word.capitalize()


@lru_cache(maxsize=1)
def encyclopedia() -> tuple[Entity, ...]:
    """The fixture's fictional entities (fixed, independent of any model seed)."""
    rng = random.Random(_ENCYCLOPEDIA_SEED)
    taken: set[str] = set()

    def fresh(syllables: int) -> str:
        while True:
            word = _made_up_word(rng, syllables)
            # Unique, and no name inside another, so that lookup by substring is unambiguous.
            if all(word.lower() not in t.lower() and t.lower() not in word.lower() for t in taken):
                taken.add(word)
                return word

    places = [fresh(2) for _ in range(16)]
    return tuple(
        Entity(fresh(2), rng.choice(places), rng.randint(1650, 1999), rng.choice(_COLOURS))
        for _ in range(_N_ENTITIES)
    )


def _sentence(entity: Entity, attribute: Attribute) -> str:
    if attribute == "birthplace":
        return f"{entity.name} was born in {entity.birthplace}."
    if attribute == "year":
        return f"{entity.name} was born in the year {entity.year}."
    return f"{entity.name}'s favourite colour is {entity.colour}."


def _value(entity: Entity, attribute: Attribute) -> str:
    return {"birthplace": entity.birthplace, "year": str(entity.year), "colour": entity.colour}[attribute]


# Queries put the name after a space, as in the question: the byte-level BPE merges a name with the
# character before it (" Zorblat" and ">Zorblat" are different tokens), and a tiny model copies an
# identical token far more easily than it learns one token-to-token mapping per name.
_QUERY_PREFIX: dict[Attribute, str] = {"birthplace": "birthplace of", "year": "birth year of",
                                       "colour": "favourite colour of"}


def _find_entity(text: str) -> Entity | None:
    lowered = text.lower()
    hits = [e for e in encyclopedia() if e.name.lower() in lowered]
    return max(hits, key=lambda e: len(e.name)) if hits else None


def _find_attribute(text: str, entity: Entity | None) -> Attribute | None:
    lowered = text.lower()
    if entity is not None:  # a made-up name may contain "born" or "year"
        lowered = lowered.replace(entity.name.lower(), " ")
    if "colour" in lowered or "color" in lowered:
        return "colour"
    if "year" in lowered or "when" in lowered:
        return "year"
    if "birthplace" in lowered or "where" in lowered or "town" in lowered or "born" in lowered:
        return "birthplace"
    return None


def fixture_search(query: str) -> str:
    """Search tool over the fixture encyclopedia: ``(Title: Name) …`` for the entity named in ``query``.

    Returns the sentence for the attribute the query asks about, the whole entry when it names
    none, or ``"No results."`` when it names no known entity.
    """
    entity = _find_entity(query)
    if entity is None:
        return "No results."
    attribute = _find_attribute(query, entity)
    attributes: tuple[Attribute, ...] = (attribute,) if attribute else ("birthplace", "year", "colour")
    return f"(Title: {entity.name}) " + " ".join(_sentence(entity, a) for a in attributes)


def run_python(code: str) -> str:
    """TEST tool for the tiny fixture only: runs ``code`` in this process, unsandboxed.

    Returns what the code printed, or (after anything printed before the error) the last line of
    the traceback. The real, sandboxed code tool lives elsewhere; never expose this one to a model
    you do not control.
    """
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<code>", "exec"), {"__name__": "__fixture__"})
    except (Exception, SystemExit) as exc:  # the error text is the tool's output
        return out.getvalue() + traceback.format_exception_only(type(exc), exc)[-1].strip()
    return out.getvalue()


# --- questions ------------------------------------------------------------------------------

# Each operator as a symbol, sometimes as a word; the code always uses the symbol.
_OPS = {"+": "plus", "-": "minus", "*": "times"}
_WORD_OPS = {word: sym for sym, word in _OPS.items()}
_ARITHMETIC_TEMPLATES = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "Calculate {a} {op} {b}.",
                         "How much is {a} {op} {b}?")
_FACT_TEMPLATES: dict[Attribute, tuple[str, ...]] = {
    "birthplace": ("Where was {n} born?", "In which town was {n} born?", "What is the birthplace of {n}?"),
    "year": ("In what year was {n} born?", "When was {n} born?", "What year was {n} born?"),
    "colour": ("What is {n}'s favourite colour?", "Which colour does {n} like best?",
               "What colour is the favourite of {n}?"),
}
_GREETINGS = ("Hello!", "Hi!", "Hi there!", "Hey!", "Good morning!", "Good evening!", "Hello there.",
              "Greetings!", "Hey there!", "Hello, how are you?")
GREETING_ANSWER = "Hello! I can search and run Python to answer questions."

_THINK = {"arithmetic": "I need to calculate this.", "fact": "I should look this up.",
          "direct": "This is a greeting."}


def _arithmetic_task(rng: random.Random) -> FixtureTask:
    op = rng.choice(tuple(_OPS))
    spelled = _OPS[op] if rng.random() < 0.2 else op
    a, b = rng.randint(2, 999), rng.randint(2, rng.choice((20, 99, 999)))
    question = rng.choice(_ARITHMETIC_TEMPLATES).format(a=a, op=spelled, b=b)
    return FixtureTask(question, str(eval(f"{a} {op} {b}")), "arithmetic")  # noqa: S307 - our own ints


def _fact_task(rng: random.Random) -> FixtureTask:
    entity = rng.choice(encyclopedia())
    attribute: Attribute = rng.choice(("birthplace", "year", "colour"))
    question = rng.choice(_FACT_TEMPLATES[attribute]).format(n=entity.name)
    return FixtureTask(question, _value(entity, attribute), "fact")


def _direct_task(rng: random.Random) -> FixtureTask:
    return FixtureTask(rng.choice(_GREETINGS), GREETING_ANSWER, "direct")


def fixture_tasks(seed: int, n: int) -> list[FixtureTask]:
    """``n`` tasks drawn deterministically from ``seed``: ~45% arithmetic, ~45% fact, ~10% direct."""
    rng = random.Random(seed)
    makers = (_arithmetic_task, _fact_task, _direct_task)
    return [rng.choices(makers, weights=(45, 45, 10))[0](rng) for _ in range(n)]


# --- trajectories ---------------------------------------------------------------------------

_ARITHMETIC_RE = re.compile(r"(\d+) ([-+*]|plus|minus|times) (\d+)")


def tool_call(task: FixtureTask) -> tuple[str, str] | None:
    """``(tool name, tool input)`` the trajectory for ``task`` makes, or ``None`` for a direct answer."""
    if task.family == "arithmetic":
        m = _ARITHMETIC_RE.search(task.question)
        if m is None:
            raise ValueError(f"not a fixture arithmetic question: {task.question!r}")
        return "code", f"print({m[1]} {_WORD_OPS.get(m[2], m[2])} {m[3]})"
    if task.family == "fact":
        entity = _find_entity(task.question)
        attribute = _find_attribute(task.question, entity)
        if entity is None or attribute is None:
            raise ValueError(f"not a fixture fact question: {task.question!r}")
        return "search", f"{_QUERY_PREFIX[attribute]} {entity.name}"
    return None


def trajectory_text(task: FixtureTask) -> list[tuple[str, bool]]:
    """The completion for ``task`` as ``(text, is_model_text)`` pieces; observations are not model text.

    The end-of-turn token after the final piece is not included: the tokenizer's EOS follows it.
    """
    think = f"<think>{_THINK[task.family]}</think>\n"
    call = tool_call(task)
    if call is None:
        return [(f"{think}<answer>{task.answer}</answer>", True)]
    name, tool_input = call
    output = run_python(tool_input) if name == "code" else fixture_search(tool_input)
    block = TAPO.block(name)
    return [
        (f"{think}{block.open}{tool_input}{block.close}", True),
        (TAPO.format_observation(output), False),
        (f"<answer>{task.answer}</answer>", True),
    ]
