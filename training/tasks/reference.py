"""Gold TAPO trajectories: a row's plan replayed against the real tools, kept only when judged correct.

:func:`reference_trajectory` walks ``extra_info.steps`` of a row: the model's text (think blocks,
tool calls, the answer) is written from the plan, every tool call goes to the real tool (bm25
search over the demo corpus, Python in the sandbox or any callable), and its real output is
injected the way the loop injects it (``protocol.format_observation``). A trajectory is kept only
when each search put the gold passage in its results with the expected fact in it, each code call
succeeded, the completion passes the TAPO format gate, and :func:`training.rewards.correctness`
judges its final answer correct (``demo_direct``: with no tool call).

A kept trajectory becomes one record of the project's trajectory schema with
:func:`reference_record` (``agent_runtime.records.trajectory_record``), which ``python -m
training.sft --data`` reads: it splits ``text`` back into model text and injected tool output and
tokenizes it piece by piece (``agent_runtime.prompts.encode_pieces``), so tool output is masked
exactly as RL masks it. Token fields (``prompt_ids``, ``completion_ids``, ``mask``) are filled when
a tokenizer is given, else left empty.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_runtime.protocol import TAPO, Protocol
from agent_runtime.records import trajectory_record
from agent_runtime.tools import ToolRegistry
from agent_runtime.trajectory import ToolCallRecord, Trajectory
from training.data import TaskRow
from training.rewards import answer_family, correctness, extract_answer, format_ok, golds_of

log = logging.getLogger(__name__)

__all__ = [
    "Reference",
    "RejectedReference",
    "areference_trajectories",
    "areference_trajectory",
    "as_registry",
    "build_reference",
    "demo_tools",
    "judged_correct",
    "reference_record",
    "reference_trajectory",
    "retrieval_misses",
]

ToolsLike = ToolRegistry | Mapping[str, Callable[[str], Any]]
DEMO_TOOLS = ("search", "code")
TOOL_TIMEOUT_S = 30.0


class RejectedReference(ValueError):
    """A row whose plan did not give a correct trajectory; the message says why."""


@dataclass(frozen=True)
class Reference:
    """A gold trajectory: the completion as pieces, the tool calls made, the final answer."""

    id: str
    question: str
    ground_truth: Any
    data_source: str
    pieces: list[tuple[str, bool]]  # (text, is_model_text); tool output is not model text
    tool_calls: list[ToolCallRecord]
    answer: str
    extra_info: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The completion as the loop's ``Trajectory.text`` holds it (model text and tool output)."""
        return "".join(text for text, _ in self.pieces)


def _fields(row: Mapping[str, Any] | TaskRow) -> tuple[str, Any, str, dict[str, Any]]:
    if isinstance(row, TaskRow):
        if row.question is None:
            raise RejectedReference("a TAPO prompt row has no plan")
        return row.question, row.ground_truth, row.data_source, dict(row.extra_info)
    return row["question"], row["answer"], row["data_source"], dict(row.get("extra_info") or {})


def judged_correct(answer: str | None, ground_truth: Any, data_source: str) -> bool:
    """:func:`training.rewards.correctness` of ``answer``, as a bool."""
    return correctness(answer, ground_truth, data_source) == 1.0


def as_registry(tools: ToolsLike) -> ToolRegistry:
    """``tools`` as a :class:`ToolRegistry`: a registry as it is; a mapping of name to a ``Tool``
    (``SearchTool``, ``CodeTool``) or to a plain function ``str -> str`` (sync or async)."""
    if isinstance(tools, ToolRegistry):
        return tools
    registry = ToolRegistry()
    for name, tool in tools.items():
        if getattr(tool, "name", None) == name and inspect.iscoroutinefunction(getattr(tool, "__call__", None)):
            registry.register(tool)  # type: ignore[arg-type]
        else:
            registry.add_function(name, tool)
    return registry


def _result_line(output: str, title: str) -> str | None:
    """The line of a formatted search result (``Doc i(Title: t) text``) for the passage ``title``."""
    marker = f"(Title: {title}) "
    return next((line for line in output.splitlines() if marker in line), None)


async def build_reference(row: Mapping[str, Any] | TaskRow, tools: ToolsLike, *,
                          protocol: Protocol = TAPO) -> Reference:
    """The gold trajectory of ``row``; raises :class:`RejectedReference` saying why there is none."""
    question, ground_truth, data_source, extra = _fields(row)
    steps = extra.get("steps")
    if not steps:
        raise RejectedReference("the row has no plan (extra_info.steps)")
    registry = as_registry(tools)
    think, answer_block = protocol.block("think"), protocol.block("answer")
    pieces: list[tuple[str, bool]] = []
    calls: list[ToolCallRecord] = []
    model: list[str] = []
    last_output: str | None = None
    final: str | None = None
    for step in steps:
        if "think" in step:
            model.append(f"{think.open}{step['think']}{think.close}")
        elif "search" in step or "code" in step:
            name = "search" if "search" in step else "code"
            block = protocol.block(name)
            argument = step[name]
            model.append(f"{block.open}{argument}{block.close}" if name == "search"
                         else f"{block.open}\n{argument}\n{block.close}")
            pieces.append(("\n".join(model), True))
            model = []
            result = await registry.call(name, argument.strip(), timeout=TOOL_TIMEOUT_S)
            output = result.output
            if not output.ok:
                raise RejectedReference(f"{name} failed: {output.text.strip()[:200]}")
            if name == "search":
                line = _result_line(output.text, step["title"])
                if line is None:
                    raise RejectedReference(f"search {argument!r} did not return the passage {step['title']!r}")
                missing = [e for e in step.get("expect", []) if e not in line]
                if missing:
                    raise RejectedReference(f"passage {step['title']!r} does not say {missing}")
            else:
                last_output = output.text
            observation = protocol.format_observation(output.text)
            pieces.append((observation, False))
            calls.append(ToolCallRecord(len(calls), name, argument.strip(), output.text, output.ok,
                                        result.seconds, 0))
        elif "answer" in step:
            final = step["answer"] if step["answer"] is not None else (last_output or "").strip()
            model.append(f"{answer_block.open}{final}{answer_block.close}")
        else:
            raise RejectedReference(f"unknown plan step {sorted(step)}")
    if model:
        pieces.append(("\n".join(model), True))
    ref = Reference(str(extra.get("id", "")), question, ground_truth, data_source, pieces, calls, final or "",
                    extra)
    if final is None:
        raise RejectedReference("the plan gives no answer")
    if not format_ok(ref.text, protocol):
        raise RejectedReference("the completion fails the format gate")
    if extract_answer(ref.text, protocol) != final.strip():
        raise RejectedReference("the answer block does not parse back to the answer")
    if answer_family(data_source) == "direct" and calls:
        raise RejectedReference("a direct row answered with a tool call")
    if not judged_correct(final, ground_truth, data_source):
        raise RejectedReference(f"answer {final!r} is judged wrong against {ground_truth!r}")
    return ref


async def areference_trajectory(row: Mapping[str, Any] | TaskRow, tools: ToolsLike, *,
                                protocol: Protocol = TAPO) -> Reference | None:
    """The gold trajectory of ``row``, or ``None`` when it is not judged correct (logged at debug)."""
    try:
        return await build_reference(row, tools, protocol=protocol)
    except RejectedReference as exc:
        log.debug("no reference trajectory: %s", exc)
        return None


def reference_trajectory(row: Mapping[str, Any] | TaskRow, tools: ToolsLike, *,
                         protocol: Protocol = TAPO) -> Reference | None:
    """Synchronous :func:`areference_trajectory` (its own event loop: tools that hold workers bound
    to a loop, such as the sandbox ``CodeTool``, belong in :func:`areference_trajectories`)."""
    return asyncio.run(areference_trajectory(row, tools, protocol=protocol))


async def areference_trajectories(
    rows: Sequence[Mapping[str, Any] | TaskRow], tools: ToolsLike, *, protocol: Protocol = TAPO,
    concurrency: int = 8, progress: bool = False,
) -> tuple[list[Reference | None], list[str | None]]:
    """Gold trajectories of ``rows`` in order, ``concurrency`` at a time: ``(references, reasons)``,
    with ``None`` and the reason where a row was rejected."""
    from tqdm.auto import tqdm

    registry = as_registry(tools)
    gate = asyncio.Semaphore(concurrency)
    refs: list[Reference | None] = [None] * len(rows)
    reasons: list[str | None] = [None] * len(rows)
    bar = tqdm(total=len(rows), desc="reference trajectories", unit="row", disable=not progress)

    async def one(i: int) -> None:
        async with gate:
            try:
                refs[i] = await build_reference(rows[i], registry, protocol=protocol)
            except RejectedReference as exc:
                reasons[i] = str(exc)
            bar.update(1)

    try:
        await asyncio.gather(*(one(i) for i in range(len(rows))))
    finally:
        bar.close()
    return refs, reasons


def reference_record(ref: Reference, *, tokenizer: Any = None, protocol: Protocol = TAPO,
                     enabled_tools: Sequence[str] = DEMO_TOOLS, eos_id: int | None = None,
                     timings: bool = False, pieces: bool = False) -> dict[str, Any]:
    """``ref`` as a trajectory-schema record (``agent_runtime.records.trajectory_record``).

    With ``tokenizer``, ``prompt_ids`` are the protocol's prompt for the question (both demo tools
    enabled) and the completion is tokenized as the loop does, one piece at a time, ending with the
    end-of-turn token (``eos_id``, default ``tokenizer.eos_token_id``); ``mask`` is 0 on tool
    output. Without one, the token fields are empty: ``training.sft`` re-tokenizes ``text`` piece by
    piece anyway (its ``completion_pieces(text)`` gives back exactly ``ref.pieces``). Tool timings
    are dropped (0) unless ``timings``, so that the file is a function of the seed. Extra fields
    after the schema's: ``template``, ``split``, ``reference: true``, and with ``pieces`` the
    ``[text, is_model_text]`` pairs.
    """
    traj = Trajectory(prompt_ids=[])
    injected: list[int] = [0] * len(ref.tool_calls)
    if tokenizer is not None:
        from agent_runtime.prompts import build_prompt_ids, encode_pieces

        prompt_ids = build_prompt_ids(tokenizer, protocol, ref.question, enabled_tools)
        eos = tokenizer.eos_token_id if eos_id is None else eos_id
        ids, labels = encode_pieces(tokenizer, prompt_ids, ref.pieces, eos)
        traj.prompt_ids = list(prompt_ids)
        for token, label in zip(ids[len(prompt_ids):], labels[len(prompt_ids):]):
            traj.append([token], model=label != -100)
        observations = [text for text, is_model in ref.pieces if not is_model]
        injected = [len(tokenizer.encode(o, add_special_tokens=False)) for o in observations]
    traj.tool_calls = [ToolCallRecord(c.index, c.name, c.arguments, c.output, c.ok,
                                      c.seconds if timings else 0.0, n) for c, n in zip(ref.tool_calls, injected)]
    traj.text = ref.text
    traj.answer = ref.answer
    traj.turns = sum(1 for _, is_model in ref.pieces if is_model)
    traj.tool_seconds = sum(c.seconds for c in traj.tool_calls)
    extra: dict[str, Any] = {"template": ref.extra_info.get("template"), "split": ref.extra_info.get("split"),
                             "reference": True}
    if pieces:
        extra["pieces"] = [[text, is_model] for text, is_model in ref.pieces]
    return trajectory_record(traj, id=ref.id, question=ref.question, gold=golds_of(ref.ground_truth),
                             data_source=ref.data_source, correct=1.0, reward=None, **extra)


# --------------------------------------------------------------------------- the demo's tools


def demo_tools(index: str | Path, code: str | Callable[[str], Any] = "sandbox", *, top_k: int = 3) -> ToolRegistry:
    """``search`` (bm25 over ``index``, top ``top_k``, as served) and ``code`` for reference runs.

    ``code``: ``"sandbox"`` (the project's ``CodeTool``; start and close it in one event loop with
    ``registry.astart()``/``aclose()``), ``"inprocess"`` (``fixture_tasks.run_python``: unsandboxed,
    for the generated plans only), or any callable ``str -> str``.
    """
    from agent_runtime.search.bm25 import Bm25Backend
    from agent_runtime.search.tool import SearchTool

    registry = ToolRegistry()
    registry.register(SearchTool(Bm25Backend.load(index, engine="numpy"), top_k=top_k))
    if code == "sandbox":
        from agent_runtime.sandbox import CodeTool

        registry.register(CodeTool())
    elif code == "inprocess":
        from agent_runtime.models.fixture_tasks import run_python

        registry.add_function("code", run_python)
    elif callable(code):
        registry.add_function("code", code)
    else:
        raise ValueError(f"code must be 'sandbox', 'inprocess' or a callable, not {code!r}")
    return registry


def retrieval_misses(rows: Iterable[Mapping[str, Any]], backend: Any, k: int = 3) -> list[tuple[str, str, str]]:
    """``(row id, query, gold title)`` for every search step whose gold passage is not in the top
    ``k`` of ``backend.search_sync`` (a ``Bm25Backend``)."""
    misses = []
    for row in rows:
        extra = row.get("extra_info") or {}
        for step in extra.get("steps", []):
            if "search" in step:
                titles = [d.title for d in backend.search_sync(step["search"], k)]
                if step["title"] not in titles:
                    misses.append((str(extra.get("id")), step["search"], step["title"]))
    return misses
