"""demo_direct: questions that need no tool: social turns and facts the base model knows."""

from __future__ import annotations

from functools import partial

from training.tasks.families.base import (
    DIRECT,
    Draft,
    Template,
    a_or_an,
    answer,
    think,
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
    "wellbeing": ("I'm doing well, thank you! How can I help you today?",),
    "acknowledgement": ("Great! Let me know if you have another question.",),
    "apology": ("No problem at all. What would you like to know?",),
    "compliment": ("Thank you, that's kind of you! Is there anything else I can do?",),
    "tools": ("Yes: I can search a small encyclopedia of towns, people, companies and inventions, and run Python "
              "code to calculate exact results.",),
    "help": ("Of course! What would you like to know?",
             "Sure, ask away: I can answer questions, look facts up or calculate things for you."),
}
_THINK_SOCIAL = {
    "greeting": "This is a greeting, so no tool is needed.",
    "capabilities": "The user asks what I can do; no tool is needed.",
    "thanks": "The user is thanking me; no tool is needed.",
    "identity": "The user asks who I am; no tool is needed.",
    "farewell": "The user is saying goodbye; no tool is needed.",
    "wellbeing": "The user asks how I am; no tool is needed.",
    "acknowledgement": "The user acknowledges my answer; no tool is needed.",
    "apology": "The user apologises; a friendly reply needs no tool.",
    "compliment": "The user pays me a compliment; no tool is needed.",
    "tools": "The user asks about my tools; I can explain without using one.",
    "help": "The user asks for help but has not asked a question yet; no tool is needed.",
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


_KNOWN = "I know this, so no tool is needed"
_DEFINE_KNOWN = "I know what {term} is, so no tool is needed; one sentence will do."


def d_legs(rng, ctx, text, note="I know this"):
    animal, n = rng.choice(ctx.pools.legs)
    return Draft(text.format(a_animal=a_or_an(animal), A_animal=a_or_an(animal).capitalize()), str(n),
                 [think(f"{a_or_an(animal).capitalize()} has {n} legs; {note}."), answer(str(n))], (animal,))


def d_colour(rng, ctx, text, note="no tool is needed"):
    thing, colours = rng.choice(ctx.pools.colours)
    return Draft(text.format(thing=thing, Thing=thing[0].upper() + thing[1:]), list(colours),
                 [think(f"{thing[0].upper() + thing[1:]} is {colours[0]}; {note}."), answer(colours[0])],
                 (thing,))


def d_define(rng, ctx, text, plan="This is a simple definition I can give without tools."):
    term, definition = rng.choice(ctx.pools.terms)
    bare = term.split(" ", 1)[1]
    return Draft(text.format(term=term, bare=bare), "",
                 [think(plan.format(term=term)), answer(definition)], (bare,))


def d_small_sum(rng, ctx, text):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Draft(text.format(a=a, b=b), str(a + b),
                 [think(f"{a} plus {b} is {a + b}; that needs no tool."), answer(str(a + b))])


KNOWN_FACTS = (  # (question, acceptable answers, the answer as said): things a small chat model knows
    ("How many days are there in a week?", ("7", "seven"), "7"),
    ("How many months are in a year?", ("12", "twelve"), "12"),
    ("How many hours are there in a day?", ("24", "twenty-four"), "24"),
    ("How many minutes are in an hour?", ("60", "sixty"), "60"),
    ("What planet do we live on?", ("Earth",), "Earth"),
    ("At what temperature in Celsius does water freeze?", ("0", "zero"), "0 degrees Celsius"),
    ("Which animal says moo?", ("cow",), "A cow"),
    ("What is the largest ocean on Earth?", ("Pacific",), "The Pacific Ocean"),
    ("What colour do you get by mixing blue and yellow?", ("green",), "Green"),
    ("What is the plural of mouse?", ("mice",), "mice"),
    ("Which season comes after winter?", ("spring",), "Spring"),
    ("What do bees make?", ("honey",), "Honey"),
    ("Which star is closest to the Earth?", ("Sun",), "The Sun"),
)


def d_known(rng, ctx, text):
    question, golds, said = rng.choice(KNOWN_FACTS)
    return Draft(question, list(golds), [think("This is common knowledge; no tool is needed."), answer(said)])


def d_small_arith(rng, ctx, text, op: str):
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return Draft(text.format(a=a, b=b), str(value),
                 [think(f"{a} {op} {b} is {value}; small numbers need no tool."), answer(str(value))])


UNITS = (  # (the larger unit with its article, the smaller unit, how many, the number in words or None)
    ("a week", "days", 7, "seven"), ("a year", "months", 12, "twelve"), ("a day", "hours", 24, "twenty-four"),
    ("an hour", "minutes", 60, "sixty"), ("a minute", "seconds", 60, "sixty"), ("a decade", "years", 10, "ten"),
    ("a century", "years", 100, None), ("a year", "weeks", 52, "fifty-two"), ("a metre", "centimetres", 100, None),
    ("a kilometre", "metres", 1000, None), ("a kilogram", "grams", 1000, None),
)
PLURALS = (
    ("mouse", ("mice",)), ("child", ("children",)), ("foot", ("feet",)), ("tooth", ("teeth",)), ("man", ("men",)),
    ("woman", ("women",)), ("goose", ("geese",)), ("person", ("people", "persons")), ("leaf", ("leaves",)),
    ("knife", ("knives",)), ("wolf", ("wolves",)), ("baby", ("babies",)), ("box", ("boxes",)),
    ("city", ("cities",)), ("potato", ("potatoes",)), ("cactus", ("cacti", "cactuses")),
)
SYNONYMS = (
    ("huge", ("enormous", "giant", "massive", "big", "large")), ("angry", ("mad", "cross", "furious")),
    ("smart", ("clever", "intelligent", "bright")), ("gift", ("present",)), ("shout", ("yell", "scream")),
    ("choose", ("pick", "select")), ("rock", ("stone",)), ("sick", ("ill", "unwell")),
    ("scared", ("afraid", "frightened")), ("jump", ("leap", "hop")), ("talk", ("speak", "chat")),
    ("tired", ("sleepy", "exhausted", "weary")), ("beautiful", ("pretty", "lovely", "gorgeous")),
    ("sofa", ("couch", "settee")), ("friend", ("pal", "buddy", "mate")), ("cry", ("weep", "sob")),
)
SOUNDS = (  # (the sound, the animals that make it; the answer names the first)
    ("moo", ("cow",)), ("woof", ("dog",)), ("meow", ("cat",)), ("neigh", ("horse",)), ("oink", ("pig",)),
    ("baa", ("sheep", "lamb")), ("quack", ("duck",)), ("hoot", ("owl",)), ("ribbit", ("frog",)),
    ("hiss", ("snake",)), ("buzz", ("bee",)), ("cluck", ("chicken", "hen")), ("roar", ("lion", "tiger")),
)
SIDES = (("a triangle", 3), ("a square", 4), ("a rectangle", 4), ("a pentagon", 5), ("a hexagon", 6),
         ("an octagon", 8))


def d_units(rng, ctx, text):
    big, small, n, word = rng.choice(UNITS)
    return Draft(text.format(big=big, small=small), [str(n)] + ([word] if word else []),
                 [think(f"There are {n} {small} in {big}; {_KNOWN}."), answer(str(n))])


def d_plural(rng, ctx, text):
    noun, plurals = rng.choice(PLURALS)
    return Draft(text.format(noun=noun), list(plurals),
                 [think(f"The plural of {noun} is {plurals[0]}; {_KNOWN}."), answer(plurals[0])])


def d_synonym(rng, ctx, text):
    word, synonyms = rng.choice(SYNONYMS)
    return Draft(text.format(word=word), list(synonyms),
                 [think(f"{synonyms[0].capitalize()} means about the same as {word}; {_KNOWN}."),
                  answer(synonyms[0])])


def d_sound(rng, ctx, text):
    sound, animals = rng.choice(SOUNDS)
    said = a_or_an(animals[0])
    return Draft(text.format(sound=sound), list(animals),
                 [think(f'{said.capitalize()} says "{sound}"; {_KNOWN}.'), answer(said.capitalize())])


def d_sides(rng, ctx, text):
    shape, n = rng.choice(SIDES)
    return Draft(text.format(a_shape=shape), str(n),
                 [think(f"{shape.capitalize()} has {n} sides; {_KNOWN}."), answer(str(n))])


_legs_known = partial(d_legs, note=_KNOWN)
_colour_known = partial(d_colour, note=_KNOWN)
_define_known = partial(d_define, plan=_DEFINE_KNOWN)
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
    *(Template(f"direct/{kind}", _D, "train", "{utterance}", partial(d_social, kind=kind, utterances=said))
      for kind, said in (
          ("wellbeing", ("How are you?", "How are you doing today?", "How's it going?", "Are you doing well?",
                         "How do you feel today?")),
          ("acknowledgement", ("OK.", "Okay, got it.", "Cool.", "Nice!", "I see.", "Alright.", "Great.",
                               "Makes sense.")),
          ("apology", ("Sorry, my mistake.", "Oops, sorry about that.", "I apologise for the confusion.",
                       "Sorry to bother you.")),
          ("compliment", ("You are very helpful.", "Good job!", "You're smart.", "Well done, that was quick.",
                          "I like talking to you.")),
          ("tools", ("Can you search the web?", "Are you able to run code?", "Do you have a calculator?",
                     "Can you look things up?", "Can you do maths?")),
      )),
    *(Template(f"direct/{group}/{id_}", _D, "train", text, kind) for group, id_, text, kind in (
        ("capital", "tell-me", "Tell me the capital of {country}.", d_capital),
        ("capital", "do-you-know", "Do you know what the capital of {country} is?", d_capital),
        ("capital", "capital-is-which", "{country}'s capital is which city?", d_capital),
        ("capital", "seat-of-government", "In which city is the government of {country} based?", d_capital),
        ("opposite", "antonym", "What is an antonym of {word}?", d_opposite),
        ("opposite", "tell-opposite", "Tell me the opposite of the word {word}.", d_opposite),
        ("opposite", "reverse-of", "If something is not {word}, what is it? Give the opposite word.", d_opposite),
        ("legs", "count-legs", "Count the legs of {a_animal} for me.", d_legs),
        ("legs", "number-of-legs", "What is the number of legs of {a_animal}?", d_legs),
        ("legs", "do-you-know-legs", "Do you know how many legs {a_animal} has?", d_legs),
        ("colour", "which-colour", "Which colour is {thing}?", d_colour),
        ("colour", "tell-colour", "Tell me the colour of {thing}.", d_colour),
        ("colour", "what-color", "What color is {thing} normally?", d_colour),
        ("define", "define-imperative", "Define {term}.", d_define),
        ("define", "meaning-of", "What is the meaning of the word {bare}?", d_define),
        ("define", "describe", "Describe {term} in a few words.", d_define),
        ("define", "could-you-tell", "Could you tell me what {term} is?", d_define),
        ("known", "fact", "{question}", d_known),
        ("small-arith", "plus-sum", "What is the sum of {a} and {b}?", partial(d_small_arith, op="+")),
        ("small-arith", "add-imperative", "Add {a} and {b}.", partial(d_small_arith, op="+")),
        ("small-arith", "minus", "What is {a} minus {b}?", partial(d_small_arith, op="-")),
        ("small-arith", "take-away", "Take {b} away from {a}. What is left?", partial(d_small_arith, op="-")),
        ("small-arith", "times", "What is {a} times {b}?", partial(d_small_arith, op="*")),
        ("small-arith", "symbol", "{a} * {b} = ?", partial(d_small_arith, op="*")),
    )),
    Template("direct/help", _D, "train", "{utterance}",
             partial(d_social, kind="help", utterances=(
                 "I need some help.", "Can I ask you a question?", "I have a question for you.",
                 "Could you help me, please?", "Help!", "Are you able to help me out?", "I'm stuck and need help.",
                 "Can you assist me?"))),
    *(Template(f"direct/{group}/{id_}", _D, "train", text, kind) for group, id_, text, kind in (
        ("capital", "quick-question", "Quick question: what's the capital of {country}?", d_capital),
        ("capital", "planning-trip", "I'm planning a trip to {country}. Which city is its capital?", d_capital),
        ("capital", "terse", "Capital of {country}?", d_capital),
        ("opposite", "need-the-opposite", "I need the opposite of {word}. What is it?", d_opposite),
        ("legs", "tell-me", "Tell me how many legs {a_animal} has.", _legs_known),
        ("legs", "drawing", "I'm drawing {a_animal}. How many legs should it have?", _legs_known),
        ("legs", "just-curious", "Just curious: how many legs has {a_animal} got?", _legs_known),
        ("colour", "say-what", "Say what colour {thing} is.", _colour_known),
        ("colour", "picture", "Picture {thing}. What colour is it?", _colour_known),
        ("define", "short-definition", "Give a short definition of {term}.", _define_known),
        ("define", "simple-words", "In simple words, what is {term}?", _define_known),
        ("define", "keep-hearing", 'I keep hearing the word "{bare}". What does it mean?', _define_known),
        ("small-arith", "multiply-by", "Multiply {a} by {b}.", partial(d_small_arith, op="*")),
        ("small-arith", "subtract-from", "Subtract {b} from {a}.", partial(d_small_arith, op="-")),
        ("units", "how-many-in", "Tell me how many {small} there are in {big}.", d_units),
        ("plural", "give-plural", "Give the plural of {noun}.", d_plural),
        ("synonym", "another-word", "What is another word for {word}?", d_synonym),
        ("sound", "name-the-animal", 'Name the animal that says "{sound}".', d_sound),
        ("sides", "how-many", "How many sides does {a_shape} have?", d_sides),
    )),
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
