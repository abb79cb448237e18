"""The function-calling fixture model (``tiny-functions``): the tiny model trained on hermes calls.

The functions it is trained on have random names, parameters and values, so that a test can offer
it a function it never saw and see it call that function with arguments taken from the question.
Five families, each tokenized as the loop tokenizes it (the offered functions rendered by the
chat template, tool turns injected by :class:`~agent_runtime.tool_turns.ToolTurnRenderer`):

* ``client``: "Use get_weather with city Oslo." → a call of the named function, arguments from
  the question (integers as JSON numbers), then the end of the turn;
* ``result``: the same conversation continued with the client's tool result → "The answer is R.";
* ``compute``: "Compute 12 * 34." → ``python`` with ``print(12 * 34)``, then "The answer is 408.";
* ``chain``: "Compute 12 * 34, then use set_total with amount the result." → ``python``, then a
  call of the client's function with the printed number;
* ``greeting``: "Hello!" → a plain reply, no call.

The tiny fixture's architecture (:mod:`agent_runtime.models.tiny`) with four layers instead of two
(copying names and values from the question needs them), and its tokenizer's BPE trained again with
rendered calls in the corpus. Built once per machine into the model cache: about nine minutes on two
cores. Measured greedy on held-out random tasks, each turn given the ones before: exactly right in
about 60% of ``client`` turns (random syllable values are what it misses), 80% of ``result``, 95-100%
of ``compute`` and ``greeting``, and 70% of ``chain``'s second call (the number copied from the
output); the tests rely only on what it does with a wide margin.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import GenerationConfig

from agent_runtime.functions import BUILTIN_FUNCTIONS, Function
from agent_runtime.models.cache import build_once, cache_dir, source_digest
from agent_runtime.models.fixture_tasks import run_python
from agent_runtime.models.prefix_loss import prefix_shared_loss, shared_prefix_length
from agent_runtime.models.tiny import SPEC as TINY_SPEC
from agent_runtime.models.tiny import EOS_TOKEN, PAD_TOKEN, build_tokenizer, build_untrained_model
from agent_runtime.models.tiny import _tokenizer_corpus as tokenizer_corpus  # (tiny.py unchanged: its cache key)
from agent_runtime.plain_text import encode_plain
from agent_runtime.tool_turns import DEFAULT_TOOL_TEMPLATE, ToolTurnRenderer, function_prompt_ids

VERSION = "tiny-functions-v2"
FIXTURE_FILE = "tapo_fixture.json"

Family = Literal["client", "result", "compute", "chain", "greeting"]
_FAMILY_WEIGHTS = {"client": 35, "result": 20, "compute": 15, "chain": 20, "greeting": 10}


@dataclass(frozen=True)
class FunctionsSpec:
    num_layers: int = 4  # the tiny fixture's 2 follow a tag protocol; copying values from the question needs more
    train_tasks: int = 3000
    steps: int = 2200
    short_prompt_steps: int = 1500  # the first steps leave the function list out (see train_functions_fixture)
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 30
    second_phase_lr: float = 0.5  # peak lr of the second phase, relative to ``lr``


SPEC = FunctionsSpec()

_VERBS = ("get", "find", "set", "lookup", "check", "send", "book", "list", "fetch", "update")
_NOUNS = ("weather", "order", "user", "price", "ticket", "stock", "room", "flight", "total", "score", "note")
_PARAMS = ("city", "name", "id", "count", "query", "user", "date", "amount", "code", "place", "size")
_SYLLABLES = ("ba", "do", "fi", "ka", "lu", "me", "no", "pi", "ro", "sa", "te", "vu", "zo", "qui", "ther", "mar")
_GREETINGS = ("Hello!", "Hi there!", "Good morning!", "Hello! What can you do?", "Hey, how are you?", "Hi!")
GREETING_REPLY = "Hello! I can call functions for you."


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(syllables))


def _function_name(rng: random.Random) -> str:
    noun = rng.choice(_NOUNS) if rng.random() < 0.5 else _word(rng, rng.randint(1, 2))
    return f"{rng.choice(_VERBS)}_{noun}"


_NAMES = ("Oslo", "Bergen", "Paris", "Lima", "Maria", "Tokyo", "Cairo", "Delhi", "Quito", "Rome", "Anna", "Omar",
          "Kyiv", "Nairobi", "Sofia", "Hanoi", "Berlin", "Lagos", "Chen", "Lucia")


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "integer":
        return rng.randint(1, 999)
    return rng.choice(_NAMES) if rng.random() < 0.3 else _word(rng, rng.randint(1, 3)).capitalize()


def random_function(rng: random.Random, n_params: int | None = None) -> Function:
    """A client function with 1-2 string or integer parameters, all required."""
    names: list[str] = []
    while len(names) < (n_params or rng.randint(1, 2)):
        name = rng.choice(_PARAMS) if rng.random() < 0.5 else _word(rng, rng.randint(1, 2))
        if name not in names:
            names.append(name)
    properties = {n: {"type": rng.choice(("string", "integer"))} for n in names}
    return Function(_function_name(rng), f"Does {rng.choice(_NOUNS)} things.",
                    {"type": "object", "properties": properties, "required": names})


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """A call as the model writes it (and as the default tool template renders it back)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


@dataclass(frozen=True)
class CallTask:
    family: Family
    messages: list[dict[str, Any]]  # what the prompt renders, user question first
    functions: list[Function]
    # The completion: model text (True) and tool results injected as a tool turn (False).
    pieces: list[tuple[str, bool]]


def _offered(rng: random.Random, needed: list[Function], python: bool) -> list[Function]:
    functions = list(needed)
    if rng.random() < 0.4:
        functions.append(random_function(rng))
    if python or rng.random() < 0.5:
        functions.insert(0, BUILTIN_FUNCTIONS["code"])
    if rng.random() < 0.3:
        functions.insert(0, BUILTIN_FUNCTIONS["search"])
    names = [f.name for f in functions]
    return [f for i, f in enumerate(functions) if f.name not in names[:i]]


def _client_question(rng: random.Random, function: Function, arguments: dict[str, Any]) -> str:
    parts = " and ".join(f"{k} {v}" for k, v in arguments.items())
    return rng.choice(("Use {f} with {a}.", "Call {f} with {a}.", "Please use {f} for {a}.")).format(
        f=function.name, a=parts)


def call_task(rng: random.Random) -> CallTask:
    family: Family = rng.choices(list(_FAMILY_WEIGHTS), weights=list(_FAMILY_WEIGHTS.values()))[0]
    if family == "greeting":
        question = rng.choice(_GREETINGS)
        return CallTask(family, [{"role": "user", "content": question}], _offered(rng, [random_function(rng)], False),
                        [(GREETING_REPLY, True)])
    if family in ("compute", "chain"):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        op = rng.choice(("*", "+", "-"))
        code = f"print({a} {op} {b})"
        result = run_python(code).strip()
        python_call = (call_text("python", {"code": code}), True)
        if family == "compute":
            question = rng.choice(("Compute {a} {op} {b}.", "What is {a} {op} {b}?")).format(a=a, op=op, b=b)
            return CallTask(family, [{"role": "user", "content": question}], _offered(rng, [], True),
                            [python_call, (result, False), (f"The answer is {result}.", True)])
        function = random_function(rng, 1)
        param = next(iter(function.parameters["properties"]))
        function.parameters["properties"][param]["type"] = "integer"  # a number goes on as a number
        question = f"Compute {a} {op} {b}, then use {function.name} with {param} the result."
        value = int(result)
        return CallTask(family, [{"role": "user", "content": question}], _offered(rng, [function], True),
                        [python_call, (result, False), (call_text(function.name, {param: value}), True)])
    function = random_function(rng)
    arguments = {k: _value(rng, spec["type"]) for k, spec in function.parameters["properties"].items()}
    question = _client_question(rng, function, arguments)
    messages = [{"role": "user", "content": question}]
    call = call_text(function.name, arguments)
    if family == "client":
        return CallTask(family, messages, _offered(rng, [function], False), [(call, True)])
    result = str(_value(rng, rng.choice(("string", "integer"))))
    messages += [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": function.name, "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": result},
    ]
    return CallTask(family, messages, _offered(rng, [function], False), [(f"The answer is {result}.", True)])


def call_tasks(seed: int, n: int) -> list[CallTask]:
    rng = random.Random(seed)
    return [call_task(rng) for _ in range(n)]


def encode_task(tokenizer: Any, task: CallTask, renderer: ToolTurnRenderer | None = None,
                offer_functions: bool = True) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` as the loop builds them: each model turn ends with EOS (learned), each
    tool result comes in the template's tool turn (not learned). ``offer_functions=False`` leaves the
    function list out of the prompt (the first training phase only)."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    renderer = renderer or ToolTurnRenderer(tokenizer, EOS_TOKEN)
    ids = function_prompt_ids(tokenizer, task.messages, task.functions if offer_functions else [])
    labels = [-100] * len(ids)
    for text, is_model in task.pieces:
        if is_model:
            piece = encode_plain(tokenizer, text) + [eos]
            labels += piece
        else:
            piece = renderer.ids([text])
            labels += [-100] * len(piece)
        ids += piece
    return ids, labels


def build_functions_tokenizer(seed: int = 0) -> Any:
    """The tiny fixture's tokenizer, its BPE trained again on the fixture corpus plus rendered
    function-calling conversations (JSON schemas and calls in few tokens keep the training sequences
    short); the same normalizer, pre-tokenizer, special tokens and chat template."""
    draft = build_tokenizer(seed)
    renderer = ToolTurnRenderer(draft, EOS_TOKEN)
    texts = [draft.decode(encode_task(draft, t, renderer)[0], skip_special_tokens=True)
             for t in call_tasks(seed + 1, 300)]
    tokenizer = draft.train_new_from_iterator(itertools.chain(tokenizer_corpus(seed), texts),
                                              vocab_size=TINY_SPEC.vocab_size)
    tokenizer.chat_template = draft.chat_template
    return tokenizer


def train_functions_fixture(model: Any, tokenizer: Any, seed: int = 0, progress: bool = False) -> float:
    """Two phases, as the tiny fixture trains: without the function list first (short prompts, where
    a model this small learns to copy names and values from the question), then with it."""
    renderer = ToolTurnRenderer(tokenizer, EOS_TOKEN)
    tasks = call_tasks(seed, SPEC.train_tasks)
    phases = []
    for offer in (False, True):
        examples = [encode_task(tokenizer, t, renderer, offer) for t in tasks]
        phases.append((examples, shared_prefix_length([ids for ids, _ in examples])))
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SPEC.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        short = SPEC.short_prompt_steps
        start, length, peak = (0, short, 1.0) if step < short else (short, SPEC.steps - short, SPEC.second_phase_lr)
        step -= start
        if step < SPEC.warmup_steps:
            return peak * (step + 1) / SPEC.warmup_steps
        done = (step - SPEC.warmup_steps) / max(1, length - SPEC.warmup_steps)
        return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    steps = range(SPEC.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="training tiny-functions model")
    model.train()
    smoothed = float("nan")
    for step in steps:
        examples, prefix_len = phases[step >= SPEC.short_prompt_steps]
        loss, _ = prefix_shared_loss(model, rng.sample(examples, SPEC.batch_size), prefix_len, pad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        smoothed = loss.item() if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * loss.item()
        if progress:
            steps.set_postfix(loss=f"{smoothed:.3f}")
    model.eval()
    return smoothed


def _untrained_model(tokenizer: Any, seed: int) -> Any:
    """The tiny fixture's architecture with :attr:`FunctionsSpec.num_layers` layers."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = build_untrained_model(tokenizer, seed).config.to_dict()
    config = Qwen2Config(**{**base, "num_hidden_layers": SPEC.num_layers, "layer_types": None})
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def build_functions_model(out_dir: Path, seed: int = 0, progress: bool = False) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tokenizer = build_functions_tokenizer(seed)
        model = _untrained_model(tokenizer, seed)
        final_loss = train_functions_fixture(model, tokenizer, seed, progress)
    finally:
        torch.set_num_threads(threads)
    eos, pad = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {"version": VERSION, "seed": seed, "final_loss": final_loss, "spec": asdict(SPEC)}
    (out_dir / FIXTURE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


# What the weights depend on: the training code, the tokenizer's, and the data the runtime renders
# (the default tool template, the built-in functions' schemas). The cache key hashes them, so an edit
# never leaves a stale model in a cache, and an edit elsewhere in those modules rebuilds nothing.
_WEIGHT_SOURCES = ("models/tiny.py", "models/tiny_functions.py", "models/fixture_tasks.py", "plain_text.py")


def _data_digest() -> str:
    rendered = json.dumps([DEFAULT_TOOL_TEMPLATE, [f.openai_schema() for f in BUILTIN_FUNCTIONS.values()]])
    return hashlib.sha256((source_digest(_WEIGHT_SOURCES) + rendered).encode()).hexdigest()[:12]


def tiny_functions_model_path(seed: int = 0, progress: bool = False) -> Path:
    """The built function-calling fixture, cached like the tiny fixture."""
    target = cache_dir() / f"{VERSION}-{_data_digest()}-seed{seed}"
    return build_once(target, FIXTURE_FILE, lambda out: build_functions_model(out, seed=seed, progress=progress))
