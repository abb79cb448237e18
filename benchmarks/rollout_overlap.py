"""Rollout wall time with slow tools: our concurrent loop against the lower bound, a
turn-synchronous loop and TRL 1.16's built-in ``tools=`` loop.

    python benchmarks/rollout_overlap.py [--repeats 5] [--trl-repeats 3] [--quick] [--json [PATH]]

32 trajectories (8 prompts x 4 samples, temperature 1.0, seeded) on the tiny fixture model, each
making exactly two tool calls; a tool call sleeps 300 ms (``fixed``) or a lognormal time with mean
300 ms and sigma 1 (``lognormal``), drawn per (trajectory, call index) from a seed, so that every
strategy sees the same latency for the same call. Each repeat draws new lognormal latencies (seed
``--latency-seed + repeat``). Strategies, interleaved within each repeat:

* ``ours``: ``agent_runtime.loop.rollout`` on ``TransformersBackend(max_slots=32)``, tools through
  ``ToolRegistry``: a sync tool (``FunctionTool`` on the runtime's sync-tool thread pool, the
  default) and an async tool (``asyncio.sleep``).
* ``lower bound``: the same rollout with a 0 ms tool, plus the tool latency on the critical path,
  ``max_i (latency[i][0] + latency[i][1])`` (600 ms at fixed latency). Not a strict bound: with a
  0 ms tool the trajectories drift out of step and decode in more, smaller batches, and with
  lognormal latency the slowest trajectory does not need the whole batch's generation time.
* ``turn-synchronous``: generate turn t for every live trajectory (concurrently, on the same
  engine), run all of that turn's calls concurrently, wait for all of them, then turn t + 1.
* ``TRL tools=``: ``GRPOTrainer(tools=[search, code])._generate`` (generation and its
  ``_tool_call_loop``, nothing else), sync and async tools, and once with a 0 ms tool (TRL's own
  generation time).

Two tool calls per trajectory. The fixture model answers after one call: it was trained on
think, one call, response, answer. Tool outputs meant to draw another call (empty, "No results.",
"Error: timeout, please try again.", an echo of the call, a new question, a fake chat turn) got
no second call from it in 32 trajectories each, and opening a new ``<think>`` after the result got
a valid second call in at most 12 of 32. What it does reliably is answer a *second question*: after the first tool result, the benchmark's observation wrapper (a
``Protocol`` subclass whose ``format_observation`` adds text after the first call only) closes
the first question with its gold answer and opens a second user turn in ChatML, ``<answer>G1
</answer><|im_end|>\\n<|im_start|>user\\nQ2<|im_end|>\\n<|im_start|>assistant\\n``; the model then
thinks, makes its second call, and answers after its result. Those tokens are injected (mask 0),
not generated. Even so the model fumbles some second questions (closing ``<search>`` with
``</answer>``), the same way for all samples, so an untimed calibration pass (0 ms tool, two other
seeds) keeps only question pairs on which every sample makes exactly two valid calls and answers
(4 arithmetic pairs calling ``code`` twice and 4 fact pairs calling ``search`` twice where there are
enough). Every timed run reports how many of its 32 trajectories made exactly two calls.

The latency key (trajectory, call) is found without changing the runtime: ``rollout`` seeds
trajectory i's turn t with ``seed + 1000 * i + t``; a ``TransformersBackend`` subclass sets a
context variable from it in the trajectory's task, which the tool and the observation wrapper read
(the call made at the end of turn t is call t, as no trajectory has an invalid turn).

TRL baseline. TRL parses tool calls with the tokenizer's response template and renders them with a
tool-capable chat template; the tiny model's tokenizer has neither, and the model writes
``<search>``/``<code>`` tags, not TRL's JSON. What was done:

1. The tiny model's tokenizer gets TRL's own Qwen2.5 chat template
   (``trl.chat_template_utils.qwen2_5_chat_template``; same ``<|im_start|>``/``<|im_end|>`` tokens),
   so ``GRPOTrainer`` accepts ``tools=`` and sets its Qwen response template itself. Prompts are
   conversational: the TAPO system prompt and the first question (TRL adds its tool schema).
2. A ``GRPOTrainer`` subclass overrides only ``_generate_single_turn``: it calls TRL's own
   (transformers ``generate``, left-padded batch, sampling at temperature 1.0) with a logits
   processor that makes row i emit exactly as many tokens as our model emitted in the same turn of
   the same trajectory (a reference rollout of ours, 0 ms tool; end-of-turn suppressed before that
   count, forced at it). In the two tool turns the forced end-of-turn token is replaced by the
   tool-call text our model's call maps to, ``\\n<tool_call>\\n{"name": "code", "arguments":
   {"code": "print(51 + 19)", "call_id": "t3c0"}}\\n</tool_call><|im_end|>`` (appended, not
   generated; preceded by ``</think>`` where the sampled text left a ``<think>`` open, or TRL's
   parser would read the call as reasoning), which TRL parses and runs. The sampled tokens are
   whatever the model writes for TRL's prompt; only their count is fixed. ``call_id`` is an extra
   tool argument that carries the latency key.
3. ``trainer._generate(prompts)`` is timed for the 32 prompts (8 x 4, as TRL's sampler repeats
   them), with the per-rollout tool dicts built as ``_generate_and_score_completions`` builds them.
   Rewards, reference and old logprobs are not computed.

What TRL's ``_tool_call_loop`` does (read in trl 1.16.0): after each batched generation it walks
``idxs_with_tool`` in a Python ``for`` loop and calls each sync tool inline; async tools of one
sample are gathered and waited on with ``run_coroutine_threadsafe(...).result()`` before the next
sample starts. So all tool calls of the batch run one after another, sync or async, and the next
batched generation starts only after the last of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Sequence

import numpy as np
import torch

from agent_runtime.backends.base import SamplingParams
from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.budget import Budget
from agent_runtime.loop import rollout
from agent_runtime.models.fixture_tasks import FixtureTask, fixture_search, fixture_tasks, run_python
from agent_runtime.models.tiny import BOS_LIKE_TOKEN, EOS_TOKEN, tiny_model_path
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO, Protocol
from agent_runtime.tools import FunctionTool, ToolOutput, ToolRegistry
from agent_runtime.trajectory import Trajectory
from agent_runtime.truncation import truncate_middle

N_PROMPTS, SAMPLES, CALLS = 8, 4, 2
N_TRAJ = N_PROMPTS * SAMPLES
LATENCY_S, SIGMA = 0.3, 1.0
CONTEXT = 1024  # engine context window: trajectories here stay under 500 tokens
BUDGET = Budget(max_tool_calls=CALLS, max_tokens_per_turn=64, max_total_tokens=256)
TOOLS = ("search", "code")
ARGUMENT = {"search": "query", "code": "code"}  # the TRL tools' parameter names
CANDIDATE_SEED = 101  # fixture questions the pairs are drawn from
SETTINGS = ("fixed", "lognormal")

# (trajectory, turn) of the trajectory whose task reads it; set by KeyedBackend.generate.
KEY: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("rollout_overlap_key")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- latencies and tools ---------------------------------------------------------------------


def latency_table(setting: str, seed: int, n: int = N_TRAJ, width: int = 4) -> list[list[float]]:
    """Seconds for call k of trajectory i: ``table[i][k]`` (only k < 2 is used)."""
    if setting == "zero":
        return [[0.0] * width for _ in range(n)]
    if setting == "fixed":
        return [[LATENCY_S] * width for _ in range(n)]
    mu = math.log(LATENCY_S) - SIGMA**2 / 2  # lognormal with mean LATENCY_S
    return np.random.default_rng(seed).lognormal(mu, SIGMA, size=(n, width)).tolist()


def critical_path(latencies: list[list[float]]) -> float:
    return max(sum(row[:CALLS]) for row in latencies)


_PYTHON_LOCK = threading.Lock()


def fixture_output(name: str, argument: str) -> str:
    """What the fixture's real tools return (the fixture model was trained on these outputs)."""
    if name == "search":
        return fixture_search(argument)
    with _PYTHON_LOCK:  # run_python redirects the process's stdout: one call at a time
        return run_python(argument)


class SleepingSyncTool:
    """A sync tool: sleeps its latency on the runtime's sync-tool thread pool, then answers.

    The latency key is read here, in the trajectory's task: the pool's threads do not see it.
    """

    def __init__(self, name: str, latencies: list[list[float]]) -> None:
        self.name, self.latencies = name, latencies

    def _work(self, traj: int, call: int, argument: str) -> str:
        time.sleep(self.latencies[traj][call])
        return fixture_output(self.name, argument)

    async def __call__(self, argument: str) -> ToolOutput:
        traj, call = KEY.get()
        return await FunctionTool(self.name, functools.partial(self._work, traj, call))(argument)


def sleeping_async_fn(name: str, latencies: list[list[float]]) -> Callable[[str], Any]:
    async def tool(argument: str) -> str:
        traj, call = KEY.get()
        await asyncio.sleep(latencies[traj][call])
        return fixture_output(name, argument)

    return tool


def registry(kind: str, latencies: list[list[float]]) -> ToolRegistry:
    reg = ToolRegistry()
    for name in TOOLS:
        if kind == "sync":
            reg.register(SleepingSyncTool(name, latencies))
        else:
            reg.add_function(name, sleeping_async_fn(name, latencies))
    return reg


class KeyedBackend(TransformersBackend):
    """Sets ``KEY`` = (trajectory, turn) in the calling task, from the seed the loop derives."""

    def __init__(self, *args: Any, base_seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_seed = base_seed

    async def generate(self, prompt_ids, params):
        KEY.set(divmod(params.seed - self.base_seed, 1000))
        inner = super().generate(prompt_ids, params)
        try:
            async for chunk in inner:
                yield chunk
        finally:
            await inner.aclose()


# --- two questions per trajectory ------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    first: FixtureTask
    second: FixtureTask

    def follow_up(self) -> str:
        """Injected after the first tool result: closes question 1, asks question 2."""
        return (f"<answer>{self.first.answer}</answer>{EOS_TOKEN}\n{BOS_LIKE_TOKEN}user\n{self.second.question}"
                f"{EOS_TOKEN}\n{BOS_LIKE_TOKEN}assistant\n")


@dataclass(frozen=True)
class TwoQuestionProtocol(Protocol):
    """TAPO, plus ``follow_ups[trajectory]`` after that trajectory's first tool result."""

    follow_ups: tuple[str, ...] = ()

    def format_observation(self, output: str) -> str:
        text = super().format_observation(output)
        traj, turn = KEY.get()
        return text + self.follow_ups[traj] if turn == 0 else text


def two_question_protocol(pairs: Sequence[Pair], samples: int) -> TwoQuestionProtocol:
    base = {f.name: getattr(TAPO, f.name) for f in fields(TAPO)}
    return TwoQuestionProtocol(**base, follow_ups=tuple(p.follow_up() for p in pairs for _ in range(samples)))


def candidate_pairs(per_family: int) -> dict[str, list[Pair]]:
    tasks = fixture_tasks(CANDIDATE_SEED, 40 * per_family)
    out = {}
    for family in ("arithmetic", "fact"):
        pool = [t for t in tasks if t.family == family][: 2 * per_family]
        out[family] = [Pair(a, b) for a, b in zip(pool[0::2], pool[1::2])]
    return out


def exact_two_calls(traj: Trajectory) -> bool:
    return len(traj.tool_calls) == CALLS and traj.agent_finish_reason == "answer" and traj.invalid_actions == 0


# --- strategies ------------------------------------------------------------------------------


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    pairs: list[Pair]
    seed: int

    @property
    def prompts(self) -> list[list[int]]:
        return [build_prompt_ids(self.tokenizer, TAPO, p.first.question) for p in self.pairs for _ in range(SAMPLES)]

    @property
    def protocol(self) -> TwoQuestionProtocol:
        return two_question_protocol(self.pairs, SAMPLES)

    def backend(self, n: int) -> KeyedBackend:
        return KeyedBackend(self.model, self.tokenizer, max_slots=n, context_length=CONTEXT, base_seed=self.seed)


def engine_stats(backend: TransformersBackend) -> dict:
    s = backend.stats
    return {"decode_steps": s["decode_steps"], "rows_per_step": s["decode_rows"] / max(1, s["decode_steps"]),
            "prefill_tokens": s["prefill_tokens"]}


def run_ours(setup: Setup, reg: ToolRegistry) -> tuple[float, list[Trajectory], dict]:
    prompts, protocol = setup.prompts, setup.protocol

    async def go():
        backend = setup.backend(len(prompts))
        try:
            start = time.perf_counter()
            trajs = await rollout(prompts, backend, reg, protocol=protocol, budget=BUDGET,
                                  sampling=SamplingParams(temperature=1.0, seed=setup.seed))
            wall = time.perf_counter() - start
            return wall, trajs, {"model_tokens": sum(sum(t.mask) for t in trajs), **engine_stats(backend)}
        finally:
            await backend.aclose()

    return asyncio.run(go())


def run_turn_synchronous(setup: Setup, reg: ToolRegistry) -> tuple[float, list[int], dict]:
    """Each turn: generate for all live trajectories, run all their calls, wait for every one."""
    prompts, protocol, tok = setup.prompts, setup.protocol, setup.tokenizer
    stops = protocol.stop_strings(TOOLS)
    closes = {protocol.block(name).close: name for name in TOOLS}

    async def go():
        backend = setup.backend(len(prompts))
        ids = [list(p) for p in prompts]
        model_tokens = [0] * len(prompts)
        calls = [0] * len(prompts)
        live = list(range(len(prompts)))

        async def generate_turn(i: int, turn: int):
            room = min(BUDGET.max_tokens_per_turn, BUDGET.max_total_tokens - model_tokens[i])
            params = SamplingParams(max_tokens=room, temperature=1.0, seed=setup.seed + 1000 * i + turn, stop=stops)
            new, text = [], ""
            async for chunk in backend.generate(ids[i], params):
                new += chunk.token_ids
                text += chunk.text
                if chunk.finish_reason is not None:
                    return new, text, chunk.finish_reason, chunk.stop_str
            return new, text, None, None

        async def call_tool(i: int, turn: int, name: str, argument: str):
            KEY.set((i, turn))  # this task's own context
            return await reg.call(name, argument, timeout=BUDGET.tool_timeout_s)

        try:
            start = time.perf_counter()
            turn = 0
            while live:
                results = await asyncio.gather(*(generate_turn(i, turn) for i in live))
                pending = []
                for i, (new, text, finish, stop_str) in zip(live, results):
                    ids[i] += new
                    model_tokens[i] += len(new)
                    if finish == "stop" and stop_str in closes and calls[i] < BUDGET.max_tool_calls:
                        name = closes[stop_str]
                        block = protocol.block(name)
                        argument = text[text.rfind(block.open) + len(block.open): text.rfind(block.close)].strip()
                        pending.append((i, name, argument))
                outputs = await asyncio.gather(*(call_tool(i, turn, name, arg) for i, name, arg in pending))
                for (i, _, _), result in zip(pending, outputs):
                    KEY.set((i, turn))
                    output = truncate_middle(result.output.text, tok, BUDGET.max_tool_output_tokens)
                    ids[i] += tok.encode(protocol.format_observation(output), add_special_tokens=False)
                    calls[i] += 1
                live = [i for i, _, _ in pending]
                turn += 1
            wall = time.perf_counter() - start
            return wall, calls, {"model_tokens": sum(model_tokens), **engine_stats(backend)}
        finally:
            await backend.aclose()

    return asyncio.run(go())


# --- TRL -------------------------------------------------------------------------------------


class TrlTools:
    """State of the TRL tools for one run: latencies, and what they did."""

    latencies: list[list[float]] = latency_table("zero", 0)
    calls: list[int] = [0] * N_TRAJ  # calls per trajectory
    seconds = 0.0  # time in tool calls, measured around each
    slept = 0.0  # the latencies of the calls made

    @classmethod
    def reset(cls, latencies: list[list[float]]) -> None:
        cls.latencies, cls.calls, cls.seconds, cls.slept = latencies, [0] * N_TRAJ, 0.0, 0.0

    @classmethod
    def latency(cls, call_id: str) -> float:
        traj, call = (int(x) for x in call_id.removeprefix("t").split("c"))
        cls.calls[traj] += 1
        cls.slept += cls.latencies[traj][call]
        return cls.latencies[traj][call]

    @classmethod
    def run(cls, name: str, argument: str, call_id: str) -> str:
        start = time.perf_counter()
        time.sleep(cls.latency(call_id))
        out = fixture_output(name, argument)
        cls.seconds += time.perf_counter() - start
        return out

    @classmethod
    async def arun(cls, name: str, argument: str, call_id: str) -> str:
        start = time.perf_counter()
        await asyncio.sleep(cls.latency(call_id))
        out = fixture_output(name, argument)
        cls.seconds += time.perf_counter() - start
        return out


def search(query: str, call_id: str) -> str:
    """Look something up in the encyclopedia.

    Args:
        query: What to look up.
        call_id: The benchmark's id of this call (it keys the call's latency).
    """
    return TrlTools.run("search", query, call_id)


def code(code: str, call_id: str) -> str:
    """Run Python code and return what it prints.

    Args:
        code: The Python code.
        call_id: The benchmark's id of this call (it keys the call's latency).
    """
    return TrlTools.run("code", code, call_id)


async def search_async(query: str, call_id: str) -> str:
    """Look something up in the encyclopedia.

    Args:
        query: What to look up.
        call_id: The benchmark's id of this call (it keys the call's latency).
    """
    return await TrlTools.arun("search", query, call_id)


async def code_async(code: str, call_id: str) -> str:
    """Run Python code and return what it prints.

    Args:
        code: The Python code.
        call_id: The benchmark's id of this call (it keys the call's latency).
    """
    return await TrlTools.arun("code", code, call_id)


search_async.__name__, code_async.__name__ = "search", "code"


@dataclass(frozen=True)
class TurnPlan:
    tokens: int  # model tokens of this turn in our reference rollout (end-of-turn or stop included)
    call_ids: tuple[int, ...] | None  # the tool-call text (and end-of-turn) that replaces the last one


def model_turn_lengths(traj: Trajectory) -> list[int]:
    runs: list[int] = []
    previous = 0
    for m in traj.mask:
        if m and not previous:
            runs.append(0)
        if m:
            runs[-1] += 1
        previous = m
    return runs


def trl_plan(trajs: list[Trajectory], tokenizer: Any) -> dict[tuple[int, int], TurnPlan]:
    plan = {}
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    for i, traj in enumerate(trajs):
        lengths = model_turn_lengths(traj)
        if len(lengths) != CALLS + 1 or len(traj.tool_calls) != CALLS:
            raise RuntimeError(f"reference trajectory {i} does not have two calls and an answer turn")
        for turn, n in enumerate(lengths):
            call_ids = None
            if turn < CALLS:
                c = traj.tool_calls[turn]
                payload = {"name": c.name, "arguments": {ARGUMENT[c.name]: c.arguments, "call_id": f"t{i}c{turn}"}}
                text = "\n<tool_call>\n" + json.dumps(payload) + "\n</tool_call>"
                call_ids = tuple(tokenizer.encode(text, add_special_tokens=False)) + (eos,)
            plan[(i, turn)] = TurnPlan(n, call_ids)
    return plan


def trl_trainer(path, plan: dict, conversational_prompts: list, async_tools: bool):
    """A GRPOTrainer with ``tools=`` whose generation step emits our per-turn token counts."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    class ForceLengths(LogitsProcessor):
        """Row r: no end-of-turn before its ``lengths[r]``-th token; that token is end-of-turn."""

        def __init__(self, lengths: list[int], eos_ids: list[int], eos: int) -> None:
            self.lengths, self.eos_ids, self.eos, self.start = torch.tensor(lengths), eos_ids, eos, None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if self.start is None:
                self.start = input_ids.shape[1]
            step = input_ids.shape[1] - self.start
            before = (self.lengths - 1 > step).nonzero().flatten()
            for e in self.eos_ids:
                scores[before, e] = -math.inf
            at = (self.lengths - 1 == step).nonzero().flatten()
            if len(at):
                scores[at] = -math.inf
                scores[at, self.eos] = 0.0
            return scores

    class ForcedLengthGRPOTrainer(GRPOTrainer):
        bench_turn = 0
        generation_seconds = 0.0

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            if len(prompt_ids) != N_TRAJ:  # every trajectory calls in turns 0 and 1: all rows come back
                raise RuntimeError(f"expected {N_TRAJ} rows in turn {self.bench_turn}, got {len(prompt_ids)}")
            rows = [plan[(i, self.bench_turn)] for i in range(N_TRAJ)]
            eos = self._tokenizer.eos_token_id
            close_think = self._tokenizer.encode("</think>", add_special_tokens=False)
            model = self.accelerator.unwrap_model(self.model_wrapped)
            processor = LogitsProcessorList([ForceLengths([r.tokens for r in rows], list(self.eos_token_ids), eos)])
            model.generate = functools.partial(type(model).generate, model, logits_processor=processor)
            start = time.perf_counter()
            try:
                completion_ids, logprobs = super()._generate_single_turn(
                    prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
            finally:
                del model.generate
            self.generation_seconds += time.perf_counter() - start
            out = []
            for row, ids in zip(rows, completion_ids):
                if len(ids) != row.tokens or ids[-1] != eos:
                    raise RuntimeError(f"turn {self.bench_turn}: {len(ids)} tokens, expected {row.tokens} and EOS")
                if row.call_ids:
                    # TRL's Qwen parser reads everything after an unclosed <think> as reasoning: close it.
                    text = self._tokenizer.decode(ids[:-1])
                    close = close_think if text.rfind("<think>") > text.rfind("</think>") else []
                    ids = ids[:-1] + close + list(row.call_ids)
                out.append(ids)
            self.bench_turn += 1
            return out, logprobs

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = qwen2_5_chat_template
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    tools = [search_async, code_async] if async_tools else [search, code]
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="rollout_overlap_trl_"), per_device_train_batch_size=N_TRAJ,
        num_generations=SAMPLES, max_completion_length=512, temperature=1.0, use_cpu=True, report_to="none", beta=0.0,
    )
    trainer = ForcedLengthGRPOTrainer(
        model=model, args=config, processing_class=tokenizer, tools=tools,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        train_dataset=Dataset.from_list([{"prompt": p} for p in conversational_prompts[::SAMPLES]]),
    )
    trainer._bench_tools = tools
    return trainer


def run_trl(trainer, prompts: list, latencies: list[list[float]], seed: int) -> dict:
    TrlTools.reset(latencies)
    trainer.bench_turn, trainer.generation_seconds = 0, 0.0
    # As _generate_and_score_completions builds them for a batch without environments.
    sync = {t.__name__: t for t in trainer._bench_tools if not asyncio.iscoroutinefunction(t)}
    asynchronous = {t.__name__: t for t in trainer._bench_tools if asyncio.iscoroutinefunction(t)}
    trainer._sync_tool_dicts = [dict(sync) for _ in prompts]
    trainer._async_tool_dicts = [dict(asynchronous) for _ in prompts]
    torch.manual_seed(seed)
    start = time.perf_counter()
    trainer._generate(prompts)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "two_calls": sum(c == CALLS for c in TrlTools.calls),
            "generation_s": trainer.generation_seconds, "tool_s": TrlTools.seconds, "latency_sum_s": TrlTools.slept,
            "critical_path_s": critical_path(latencies)}


# --- calibration -----------------------------------------------------------------------------


def choose_pairs(model, tokenizer, seed: int, per_family: int) -> list[Pair]:
    """Question pairs on which every sample makes exactly two calls and answers, at two other seeds."""
    candidates = candidate_pairs(per_family)
    flat = candidates["arithmetic"] + candidates["fact"]
    passes = [0] * len(flat)
    for cal_seed in (seed + 7919, seed + 104729):
        setup = Setup(model, tokenizer, flat, cal_seed)
        _, trajs, _ = run_ours(setup, registry("sync", latency_table("zero", 0, n=len(flat) * SAMPLES)))
        for j, traj in enumerate(trajs):
            passes[j // SAMPLES] += exact_two_calls(traj)
    robust = [p for p, n in zip(flat, passes) if n == 2 * SAMPLES]
    by_family = {f: [p for p in robust if p.first.family == f] for f in ("arithmetic", "fact")}
    half = N_PROMPTS // 2
    chosen = by_family["arithmetic"][:half] + by_family["fact"][:half]
    rest = [p for p in robust if p not in chosen]
    chosen += rest[: N_PROMPTS - len(chosen)]
    spares = [p for p in robust if p not in chosen]
    log(f"calibration: {len(robust)} of {len(flat)} candidate pairs make two calls in every sample "
        f"({len(by_family['arithmetic'])} arithmetic, {len(by_family['fact'])} fact)")
    if len(chosen) < N_PROMPTS:
        raise SystemExit(f"only {len(chosen)} usable question pairs; raise --candidates")
    return chosen + spares  # spares after the first N_PROMPTS


# --- reporting -------------------------------------------------------------------------------

STRATEGIES = {
    "lower_bound": "lower bound (0 ms tool + critical path)",
    "ours_sync": "ours: rollout(), sync tool",
    "ours_async": "ours: rollout(), async tool",
    "turn_sync": "turn-synchronous, sync tool",
    "trl_sync": "TRL 1.16 tools=, sync tool",
    "trl_async": "TRL 1.16 tools=, async tool",
    "trl_zero": "TRL 1.16 tools=, 0 ms tool (its generation alone)",
}


def summarize(runs: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for setting in SETTINGS:

        def by_repeat(strategy: str, key: str = "wall_s") -> dict[int, float]:
            return {r["repeat"]: r[key] for r in runs if r["setting"] == setting and r["strategy"] == strategy}

        lb, turn = by_repeat("lower_bound"), by_repeat("turn_sync")
        rows = {}
        for strategy in STRATEGIES:
            # trl_zero is measured once per repeat (it has no latency setting): compared with each setting.
            mine = [r for r in runs if r["strategy"] == strategy and (strategy == "trl_zero" or r["setting"] == setting)]
            if not mine:
                continue
            walls = [r["wall_s"] for r in mine]
            row = {"n": len(walls), "min_s": min(walls), "median_s": statistics.median(walls),
                   "vs_lower_bound": statistics.median(r["wall_s"] / lb[r["repeat"]] for r in mine)}
            if strategy.startswith("ours") and turn:
                row["faster_than_turn_sync"] = statistics.median(1 - r["wall_s"] / turn[r["repeat"]] for r in mine)
            if strategy.startswith("ours"):
                row["faster_than_turn_sync_each"] = [1 - r["wall_s"] / turn[r["repeat"]] for r in mine]
            if strategy.startswith("trl"):
                for key in ("generation_s", "tool_s", "latency_sum_s"):
                    row[key] = statistics.median(r[key] for r in mine)
                # TRL's own lower bound: its generation time in the same run, plus the critical path.
                row["vs_own_lower_bound"] = statistics.median(
                    r["wall_s"] / (r["generation_s"] + r["critical_path_s"]) for r in mine)
            rows[strategy] = row
        out[setting] = rows
    return out


def print_table(summary: dict, facts: dict) -> None:
    print("| strategy | " + " | ".join(f"{s} min / median (s) | x lower bound" for s in SETTINGS) + " |")
    print("|---|" + "---:|---:|" * len(SETTINGS))
    for strategy, label in STRATEGIES.items():
        cells = []
        for setting in SETTINGS:
            row = summary[setting].get(strategy)
            if strategy == "trl_zero" and setting != SETTINGS[0]:
                row = None
            if row is None:
                cells += ["—", "—"]
            else:
                cells += [f"{row['min_s']:.2f} / {row['median_s']:.2f}", f"{row['vs_lower_bound']:.2f}"]
        if any(c != "—" for c in cells):
            print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    fixed, lognormal = summary["fixed"], summary["lognormal"]
    if "ours_sync" in fixed:
        for kind in ("ours_sync", "ours_async"):
            ratio = fixed[kind]["vs_lower_bound"]
            print(f"Target, fixed 300 ms, {kind}: {ratio:.3f}x the lower bound (target <= 1.10): "
                  f"{'met' if ratio <= 1.10 else 'MISSED'}")
    if "ours_sync" in lognormal:
        for kind in ("ours_sync", "ours_async"):
            gain = lognormal[kind]["faster_than_turn_sync"]
            each = ", ".join(f"{100 * g:.0f}%" for g in lognormal[kind]["faster_than_turn_sync_each"])
            print(f"Target, lognormal, {kind}: {100 * gain:.1f}% faster than turn-synchronous (median; target >= 20%): "
                  f"{'met' if gain >= 0.20 else 'MISSED'}; per repeat (latency draw): {each}")
    for setting in SETTINGS:
        for kind in ("trl_sync", "trl_async"):
            row = summary[setting].get(kind)
            if row:
                print(f"TRL, {setting}, {kind} (medians): generation {row['generation_s']:.1f} s + tools "
                      f"{row['tool_s']:.1f} s (the calls' latencies sum to {row['latency_sum_s']:.1f} s); "
                      f"{row['vs_own_lower_bound']:.2f}x its own lower bound (its generation + critical path).")
    print(f"\n{facts['two_call_runs']} of {facts['runs']} timed runs had all {N_TRAJ} trajectories with exactly two "
          f"calls; model tokens per trajectory {facts['model_tokens_per_traj']:.1f} (reference), prompt "
          f"{facts['prompt_tokens']} tokens (ours) / {facts.get('trl_prompt_tokens', '—')} (TRL, with its tool schema).")


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of our-engine strategies (default 5)")
    parser.add_argument("--trl-repeats", type=int, default=3, help="repeats of the TRL runs, about 20 s each (default 3)")
    parser.add_argument("--no-trl", action="store_true", help="skip the TRL baseline")
    parser.add_argument("--no-trl-async", action="store_true", help="TRL with the sync tool only")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (trajectory i turn t: seed + 1000 i + t)")
    parser.add_argument("--latency-seed", type=int, default=0, help="lognormal latencies of repeat r: seed + r")
    parser.add_argument("--candidates", type=int, default=20, help="candidate question pairs per family")
    parser.add_argument("--quick", action="store_true", help="2 repeats, 1 TRL repeat, sync TRL only")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write results as JSON (to stdout: -)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.trl_repeats, args.no_trl_async = 2, 1, True
    torch.set_num_threads(2)
    load_before = os.getloadavg()

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    log(f"model {path}; torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
        f"load {load_before[0]:.2f}")

    # Calibration (untimed), then the reference rollout at the real seed (untimed; also a warm-up).
    pool = choose_pairs(model, tokenizer, args.seed, args.candidates)
    pairs, spares = pool[:N_PROMPTS], pool[N_PROMPTS:]
    for _ in range(N_PROMPTS):
        setup = Setup(model, tokenizer, pairs, args.seed)
        _, reference, _ = run_ours(setup, registry("sync", latency_table("zero", 0)))
        bad = sorted({j // SAMPLES for j, t in enumerate(reference) if not exact_two_calls(t)})
        if not bad:
            break
        if len(spares) < len(bad):
            raise SystemExit("the reference rollout has trajectories without exactly two calls and no spare pairs remain")
        for j in bad:
            pairs[j] = spares.pop(0)
    else:
        raise SystemExit("could not find pairs that make two calls at this seed")
    log("pairs: " + "; ".join(f"{p.first.question} / {p.second.question}" for p in pairs))
    tokens_per_traj = statistics.mean(sum(t.mask) for t in reference)
    facts: dict[str, Any] = {"prompt_tokens": len(setup.prompts[0]), "model_tokens_per_traj": tokens_per_traj,
                             "turn_tokens_reference": [model_turn_lengths(t) for t in reference]}

    trainers = {}
    trl_prompts = []
    if not args.no_trl:
        plan = trl_plan(reference, tokenizer)
        system = TAPO.system_prompt(TAPO.tool_names)
        trl_prompts = [[{"role": "system", "content": system}, {"role": "user", "content": p.first.question}]
                       for p in pairs for _ in range(SAMPLES)]
        trainers["trl_sync"] = trl_trainer(path, plan, trl_prompts, async_tools=False)
        if not args.no_trl_async:
            trainers["trl_async"] = trl_trainer(path, plan, trl_prompts, async_tools=True)
        first = trainers["trl_sync"]
        facts["trl_prompt_tokens"] = len(first._tokenize_prompts(trl_prompts[:1])[0][0])
        warm = run_trl(first, trl_prompts, latency_table("zero", 0), args.seed)  # warm-up, untimed
        log(f"TRL warm-up: {warm['wall_s']:.2f} s, {warm['two_calls']}/{N_TRAJ} trajectories with two calls")

    runs: list[dict] = []
    total = args.repeats * len(SETTINGS) * 4 + args.trl_repeats * (1 + len(SETTINGS) * len(trainers)) * bool(trainers)

    def record(setting: str, strategy: str, repeat: int, wall: float, two_calls: int | None = None, **extra) -> None:
        runs.append({"setting": setting, "strategy": strategy, "repeat": repeat, "wall_s": wall,
                     "two_call_trajectories": two_calls, **extra})
        note = f"  ({two_calls}/{N_TRAJ} with two calls)" if two_calls is not None else ""
        more = "".join(f"  {k} {v:.2f}" if isinstance(v, float) else f"  {k} {v}" for k, v in extra.items())
        log(f"[{len(runs):3d}/{total}] r{repeat} {setting:9s} {strategy:11s} {wall:7.3f} s{note}{more}")

    for r in range(args.repeats):
        for setting in SETTINGS:
            lat = latency_table(setting, args.latency_seed + r)
            setup = Setup(model, tokenizer, pairs, args.seed)
            wall, trajs, stats = run_ours(setup, registry("sync", latency_table("zero", 0)))
            record(setting, "lower_bound", r, wall + critical_path(lat), sum(map(exact_two_calls, trajs)),
                   zero_tool_s=wall, critical_path_s=critical_path(lat), **stats)
            for kind in ("sync", "async"):
                wall, trajs, stats = run_ours(setup, registry(kind, lat))
                record(setting, f"ours_{kind}", r, wall, sum(map(exact_two_calls, trajs)), **stats)
            wall, calls, stats = run_turn_synchronous(setup, registry("sync", lat))
            record(setting, "turn_sync", r, wall, sum(c == CALLS for c in calls), **stats)
            if r < args.trl_repeats and trainers:
                if setting == SETTINGS[0]:
                    res = run_trl(trainers["trl_sync"], trl_prompts, latency_table("zero", 0), args.seed + r)
                    record(setting, "trl_zero", r, res.pop("wall_s"), res.pop("two_calls"), **res)
                for name, trainer in trainers.items():
                    res = run_trl(trainer, trl_prompts, lat, args.seed + r)
                    record(setting, name, r, res.pop("wall_s"), res.pop("two_calls"), **res)

    facts["runs"] = sum(1 for r in runs if r["two_call_trajectories"] is not None)
    facts["two_call_runs"] = sum(1 for r in runs if r["two_call_trajectories"] == N_TRAJ)
    summary = summarize(runs)
    load_after = os.getloadavg()
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "config": {"trajectories": N_TRAJ, "prompts": N_PROMPTS, "samples": SAMPLES, "calls": CALLS,
                   "latency_s": LATENCY_S, "lognormal_sigma": SIGMA, "seed": args.seed, "latency_seed": args.latency_seed,
                   "repeats": args.repeats, "trl_repeats": args.trl_repeats if trainers else 0,
                   "budget": {f.name: getattr(BUDGET, f.name) for f in fields(BUDGET)},
                   "engine": {"max_slots": N_TRAJ, "context_length": CONTEXT, "batch_window_s": 0.002}},
        "pairs": [{"first": p.first.question, "second": p.second.question, "family": p.first.family} for p in pairs],
        "facts": facts,
        "summary": summary,
        "runs": runs,
    }
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.json != "-":
        print(f"\n## Rollout overlap ({N_TRAJ} trajectories, {CALLS} tool calls each)\n")
        print_table(summary, facts)
        print(f"\nload average {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
