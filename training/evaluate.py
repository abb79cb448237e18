"""``tapo eval``: judge agent trajectories over a benchmark file and summarise them.

Three layers, the first two pure (no model, no I/O) and unit-tested on hand-made records:

* judging one finished trajectory against its row (:func:`judge`, :func:`eval_record`), with
  :func:`training.rewards.tapo_reward`, the trainer's own reward;
* aggregation: trajectory records → summary dict (:func:`summarize`) → Markdown (:func:`summary_markdown`);
* the runner (:func:`evaluate_rows`): the agent loop over all rows, a bounded number of trajectories
  in flight, a progress bar. The command itself (files, options, errors) is in ``tapo_cli.eval``.

Definitions used by the summary:

* **correct**: the format gate passes and the extracted answer matches a gold for the row's data
  source (:func:`training.rewards.correctness`); a ``demo_direct`` row is correct only when no tool
  was called, and when its gold is empty any well-formed answer counts.
* **reward**: TAPO's score without the overlong penalty (a training-time length shaping that
  depends on the trainer's settings): 1 correct, 0 wrong, -1 when the format gate fails.
* **tool calls**: the calls the loop executed (``tool_steps``). A call the model made after its
  budget ran out (``agent_finish_reason == "tool_budget"``) was not run and is not counted.
* **tool productivity** (OTC-PO, Wang et al. 2025, arXiv:2504.14870): correct answers divided by
  tool calls, summed over the questions of the group. With no tool call in a group the ratio is
  undefined and is reported as ``null`` (Markdown: ``n/a``), whatever the accuracy.
* **format error**: the format gate (:func:`training.rewards.format_ok`) fails on the completion.
* **latency**: each trajectory's wall-clock seconds in the loop (generation and tools; time queued
  behind ``--concurrency`` is not counted).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent_runtime.protocol import TAPO, Protocol, get_protocol
from agent_runtime.records import trajectory_record
from agent_runtime.trajectory import Trajectory
from training.data import TaskRow
from training.rewards import (RewardBreakdown, format_ok, function_call_reward, function_call_well_formed,
                              tapo_reward)

__all__ = [
    "PRODUCTIVITY_NOTE",
    "build_prompts",
    "eval_record",
    "evaluate_rows",
    "git_commit",
    "judge",
    "percentile",
    "row_question",
    "summarize",
    "summary_markdown",
]

PRODUCTIVITY_NOTE = ("tool productivity = correct answers / tool calls (OTC-PO); null (n/a) when "
                     "no tool was called, since the ratio is then undefined")

# --------------------------------------------------------------------------- judging (pure)


def judge(text: str, ground_truth: Any, data_source: str, *, tool_calls: int,
          protocol: Protocol = TAPO) -> RewardBreakdown:
    """TAPO's reward (:func:`training.rewards.tapo_reward`) for one completion, without the overlong
    penalty: ``total`` is 1 (correct), 0 (wrong) or -1 (format gate failed)."""
    return tapo_reward(text, ground_truth, data_source, model_tokens=0,
                       max_tokens=1, overlong_buffer=0, overlong_factor=0.0, protocol=protocol,
                       tool_calls=tool_calls)


def judge_trajectory(traj: Trajectory, ground_truth: Any, data_source: str, protocol: Protocol = TAPO) -> RewardBreakdown:
    """:func:`judge` for a finished trajectory: a tag protocol's text, or a function-calling
    trajectory's final answer and format as the loop read them (:func:`training.rewards.function_call_reward`)."""
    if not protocol.function_calling:
        return judge(traj.text, ground_truth, data_source, tool_calls=len(traj.tool_calls), protocol=protocol)
    return function_call_reward(
        traj.answer, ground_truth, data_source,
        well_formed=function_call_well_formed(traj.agent_finish_reason, traj.invalid_actions), model_tokens=0,
        max_tokens=1, overlong_buffer=0, overlong_factor=0.0, tool_calls=len(traj.tool_calls))


def row_question(row: TaskRow) -> str:
    """The question of a row: a plain row's ``question``, else a TAPO prompt's last user message."""
    if row.question is not None:
        return row.question
    users = [m["content"] for m in row.prompt_messages or () if m["role"] == "user"]
    return users[-1] if users else (row.prompt_messages or [{"content": ""}])[-1]["content"]


def build_prompts(rows: Sequence[TaskRow], tokenizer: Any, protocol: Protocol,
                  enabled_tools: Sequence[str]) -> list[list[int]]:
    """Prompt ids of each row: a TAPO row's chat prompt as it is (it already holds its instructions,
    :func:`agent_runtime.prompts.render_prompt_ids`), a plain row's question inside the protocol's
    prompt for ``enabled_tools`` (:func:`agent_runtime.prompts.build_prompt_ids`)."""
    from agent_runtime.prompts import build_prompt_ids, render_prompt_ids

    prompts = []
    for i, row in enumerate(rows):
        try:
            prompts.append(render_prompt_ids(tokenizer, row.prompt_messages) if row.prompt_messages is not None
                           else build_prompt_ids(tokenizer, protocol, row.question, enabled_tools))
        except Exception as exc:  # noqa: BLE001 - e.g. a chat template that refuses a TAPO row's roles
            raise ValueError(f"row {i} (0-based): cannot build its prompt: {type(exc).__name__}: {exc}") from None
    return prompts


def eval_record(traj: Trajectory, row: TaskRow, index: int, *, protocol: Protocol = TAPO,
                error: str | None = None) -> dict[str, Any]:
    """The trajectory record (``agent_runtime.records`` schema) of row ``index``, judged.

    Extra fields after the schema's: ``format_ok``, ``seconds`` (the trajectory's wall clock),
    ``extra_info`` (the row's, ``template`` included) and, when the loop could not run the row,
    ``error``.
    """
    verdict = judge_trajectory(traj, row.ground_truth, row.data_source, protocol)
    extra: dict[str, Any] = {"format_ok": verdict.format_ok, "seconds": round(traj.wall_seconds, 6),
                             "extra_info": _jsonable(row.extra_info)}
    if error is not None:
        extra["error"] = error
    return trajectory_record(traj, id=f"eval-{index}", question=row_question(row), gold=row.golds,
                             data_source=row.data_source, correct=verdict.correct, reward=verdict.total, **extra)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy values from parquet rows
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --------------------------------------------------------------------------- aggregation (pure)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics (numpy's
    default); ``None`` for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _calls_by_tool(record: Mapping[str, Any]) -> Counter[str]:
    return Counter(str(step.get("name")) for step in record.get("tool_steps") or ())


def _is_correct(record: Mapping[str, Any]) -> bool:
    value = record.get("correct")
    return value is not None and float(value) > 0


def _format_ok(record: Mapping[str, Any], protocol: Protocol) -> bool:
    if record.get("format_ok") is not None:
        return bool(record["format_ok"])
    return format_ok(record.get("text") or "", protocol)  # records from elsewhere (rollout dumps)


def _template(record: Mapping[str, Any]) -> str | None:
    info = record.get("extra_info")
    if isinstance(info, Mapping) and info.get("template") is not None:
        return str(info["template"])
    return None


def _group_stats(records: list[Mapping[str, Any]], protocol: Protocol) -> dict[str, Any]:
    n = len(records)
    correct = sum(_is_correct(r) for r in records)
    calls = sum(len(r.get("tool_steps") or ()) for r in records)
    fmt_errors = sum(not _format_ok(r, protocol) for r in records)
    return {
        "n": n,
        "correct": correct,
        "accuracy": _ratio(correct, n),
        "format_error_rate": _ratio(fmt_errors, n),
        "tool_calls": calls,
        "tool_calls_per_question": _ratio(calls, n),
        "tool_productivity": _ratio(correct, calls),
    }


def _template_stats(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    correct = sum(_is_correct(r) for r in records)
    return {"n": len(records), "correct": correct, "accuracy": _ratio(correct, len(records)),
            "data_sources": sorted({str(r.get("data_source")) for r in records})}


def summarize(records: Iterable[Mapping[str, Any]], *, settings: Mapping[str, Any] | None = None,
              tools: Sequence[str] = (), protocol: str | Protocol | None = None) -> dict[str, Any]:
    """The summary of judged trajectory records (a JSON-able dict; see the module docstring).

    ``tools``: the tools the agent had, so that a tool never called still shows 0 calls.
    ``protocol``: for the format gate of records that carry no ``format_ok`` (default: the
    settings' ``protocol``, else ``tapo``). Rates over no records are ``None``.
    """
    records = list(records)
    settings = dict(settings or {})
    proto = protocol if isinstance(protocol, Protocol) else get_protocol(protocol or settings.get("protocol") or "tapo")
    overall = _group_stats(records, proto)
    n = overall["n"]

    by_source: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_template: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    calls_by_tool: Counter[str] = Counter({t: 0 for t in tools})
    failures = 0
    for r in records:
        by_source[str(r.get("data_source"))].append(r)
        template = _template(r)
        if template is not None:
            by_template[template].append(r)
        calls_by_tool.update(_calls_by_tool(r))
        failures += sum(1 for step in r.get("tool_steps") or () if step.get("ok") is False)
    sources = {ds: _group_stats(rs, proto) for ds, rs in sorted(by_source.items())}

    latencies = [float(r["seconds"]) for r in records if r.get("seconds") is not None]
    finish = Counter(str(r.get("agent_finish_reason") or r.get("finish_reason")) for r in records)
    return {
        "counts": {
            "questions": n,
            "correct": overall["correct"],
            "answered": sum(r.get("final_answer") is not None for r in records),
            "format_errors": sum(not _format_ok(r, proto) for r in records),
            "tool_calls": overall["tool_calls"],
            "tool_failures": failures,
            "errors": sum(r.get("error") is not None for r in records),
            "finish_reasons": dict(sorted(finish.items())),
        },
        "accuracy": {
            "overall": overall["accuracy"],
            "by_data_source": {ds: s["accuracy"] for ds, s in sources.items()},
        },
        "tool_calls_per_question": {
            "overall": overall["tool_calls_per_question"],
            "by_tool": {t: _ratio(c, n) for t, c in sorted(calls_by_tool.items())},
        },
        "tool_productivity": {
            "overall": overall["tool_productivity"],
            "by_data_source": {ds: s["tool_productivity"] for ds, s in sources.items()},
            "definition": PRODUCTIVITY_NOTE,
        },
        "format_error_rate": overall["format_error_rate"],
        "latency_s": {
            "mean": sum(latencies) / len(latencies) if latencies else None,
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
        },
        "accuracy_by_template": {t: _template_stats(rs) for t, rs in sorted(by_template.items())},
        "by_data_source": sources,
        "settings": settings,
    }


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    text = _num(value) if not isinstance(value, (list, tuple)) else ", ".join(map(str, value))
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as Markdown tables (the same numbers as ``summary.json``)."""
    counts, latency = summary["counts"], summary["latency_s"]
    out = ["# Evaluation summary", ""]
    out += _table(["metric", "value"], [
        ("questions", counts["questions"]),
        ("correct", counts["correct"]),
        ("accuracy", summary["accuracy"]["overall"]),
        ("tool calls per question", summary["tool_calls_per_question"]["overall"]),
        ("tool productivity (correct / tool calls)", summary["tool_productivity"]["overall"]),
        ("format error rate", summary["format_error_rate"]),
        ("answered", counts["answered"]),
        ("tool calls", counts["tool_calls"]),
        ("tool failures", counts["tool_failures"]),
        ("errors (row not run)", counts["errors"]),
        ("latency mean (s)", latency["mean"]),
        ("latency p50 (s)", latency["p50"]),
        ("latency p95 (s)", latency["p95"]),
    ])
    out += ["", "## By data source", ""]
    out += _table(["data source", "n", "correct", "accuracy", "format error rate", "tool calls / question",
                   "tool productivity"],
                  [(ds, s["n"], s["correct"], s["accuracy"], s["format_error_rate"], s["tool_calls_per_question"],
                    s["tool_productivity"]) for ds, s in summary["by_data_source"].items()])
    out += ["", "## Tool calls per question, by tool", ""]
    by_tool = summary["tool_calls_per_question"]["by_tool"]
    out += _table(["tool", "calls / question"], by_tool.items()) if by_tool else ["No tools."]
    out += ["", "## By template (`extra_info.template`)", ""]
    templates = summary["accuracy_by_template"]
    out += (_table(["template", "data sources", "n", "correct", "accuracy"],
                   [(t, s["data_sources"], s["n"], s["correct"], s["accuracy"]) for t, s in templates.items()])
            if templates else ["No row names a template."])
    out += ["", "## How trajectories ended", ""]
    out += _table(["agent finish reason", "count"], counts["finish_reasons"].items())
    settings = summary.get("settings") or {}
    if settings:
        out += ["", "## Settings", ""]
        out += _table(["setting", "value"], [(k, v) for k, v in settings.items()])
    out += ["", f"Note: {summary['tool_productivity'].get('definition', PRODUCTIVITY_NOTE)}.", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- running (not pure)


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit checked out where this package lives (or at ``path``), ``None`` outside a git work tree."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        proc = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


async def evaluate_rows(
    rows: Sequence[TaskRow],
    prompts: Sequence[Sequence[int]],
    backend: Any,
    tools: Any,
    *,
    protocol: Protocol = TAPO,
    budget: Any = None,
    sampling: Any = None,
    concurrency: int = 8,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Run the agent loop on every row (``prompts[i]`` is row ``i``'s prompt ids) with at most
    ``concurrency`` trajectories in flight; returns the judged records in row order.

    With a seed, row ``i`` samples with ``seed + 1000 * i`` (as :func:`agent_runtime.loop.rollout`).
    A prompt past the context window is recorded as an unanswered trajectory with an ``error``;
    any other failure (the engine) cancels the rest and propagates. ``progress``: a tqdm bar on
    stderr (``None``: only on a terminal).
    """
    from tqdm.auto import tqdm

    from agent_runtime.backends.base import PromptTooLongError, SamplingParams
    from agent_runtime.budget import Budget
    from agent_runtime.loop import run_to_end

    if len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} rows but {len(prompts)} prompts")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    budget = budget if budget is not None else Budget()
    sampling = sampling if sampling is not None else SamplingParams(temperature=0.0)
    gate = asyncio.Semaphore(concurrency)
    records: list[dict[str, Any] | None] = [None] * len(rows)
    correct = done = 0

    with tqdm(total=len(rows), desc="eval", unit="q", disable=None if progress is None else not progress,
              dynamic_ncols=True) as bar:

        async def one(i: int) -> None:
            nonlocal correct, done
            params = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + 1000 * i)
            async with gate:
                error = None
                try:
                    traj = await run_to_end(prompts[i], backend, tools, protocol=protocol, budget=budget,
                                            sampling=params)
                except PromptTooLongError as exc:
                    traj = Trajectory(prompt_ids=list(prompts[i]), finish_reason="length",
                                      agent_finish_reason="context")
                    error = str(exc)
            records[i] = eval_record(traj, rows[i], i, protocol=protocol, error=error)
            correct += _is_correct(records[i])
            done += 1
            bar.update(1)
            bar.set_postfix(accuracy=f"{correct / done:.3f}", refresh=False)

        try:
            async with asyncio.TaskGroup() as group:
                for i in range(len(rows)):
                    group.create_task(one(i))
        except ExceptionGroup as eg:  # the first failure, as it was raised (the others were cancelled)
            first = eg.exceptions[0]
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise first from None
    return [r for r in records if r is not None]
