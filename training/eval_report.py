"""``python -m training.eval_report``: one Markdown comparison of `tapo eval` runs and TAPO learning curves.

``--eval NAME=DIR`` (repeatable) reads ``DIR/summary.json`` of a `tapo eval` run; ``--curve NAME=DIR``
reads the per-step trajectory dumps of a ``python -m training.tapo`` run (``DIR/rollouts/step-N.jsonl``)
and gives, per step, the mean reward, accuracy and tool calls per trajectory; ``--compare A:B`` (two
``--eval`` names) tests whether B differs from A on the same questions (exact McNemar test on
right/wrong, paired by record id). EVAL.md is made of these tables and the commands that produced the runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from training.data import DataError, iter_json_lines


def _pairs(values: list[str], flag: str) -> list[tuple[str, Path]]:
    out = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise DataError(f"{flag} {value!r}: expected NAME=DIR")
        out.append((name, Path(path)))
    return out


def load_summary(path: Path) -> dict[str, Any]:
    file = path / "summary.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not a tapo eval summary ({exc})") from None


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def comparison_tables(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Accuracy by family, tool calls per question by tool, productivity and format errors, one row per run."""
    families = sorted({f for _, s in runs for f in s["accuracy"]["by_data_source"]})
    tools = sorted({t for _, s in runs for t in s["tool_calls_per_question"]["by_tool"]})
    lines = ["| model | accuracy | " + " | ".join(families) + " |", "|---|---|" + "---|" * len(families)]
    for name, s in runs:
        by = s["accuracy"]["by_data_source"]
        lines.append(f"| {name} | {_f(s['accuracy']['overall'])} | " + " | ".join(_f(by.get(f)) for f in families) + " |")
    lines += ["", "| model | tool calls / question | " + " | ".join(tools)
              + " | direct: calls / question | tool productivity | format errors |",
              "|---|---|" + "---|" * len(tools) + "---|---|---|"]
    for name, s in runs:
        calls = s["tool_calls_per_question"]
        direct = s.get("by_data_source", {}).get("demo_direct", {}).get("tool_calls_per_question")
        lines.append(f"| {name} | {_f(calls['overall'])} | " + " | ".join(_f(calls["by_tool"].get(t)) for t in tools)
                     + f" | {_f(direct)} | {_f(s['tool_productivity']['overall'])} | {_f(s['format_error_rate'])} |")
    return "\n".join(lines)


def step_curve(run: Path) -> list[dict[str, float]]:
    """Per TAPO step: mean reward, accuracy and tool calls over the trajectories it generated."""
    files = sorted((run / "rollouts").glob("step-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise DataError(f"{run}: no rollouts/step-N.jsonl (a training.tapo output directory with rollout.dump)")
    curve = []
    for path in files:
        rows = [r for _, r in iter_json_lines(path)]
        curve.append({
            "step": int(path.stem.split("-")[1]),
            "trajectories": len(rows),
            "reward": statistics.fmean(r["reward"] for r in rows),
            "accuracy": statistics.fmean(float(r["correct"]) for r in rows),
            "tool_calls": statistics.fmean(len(r["tool_steps"]) for r in rows),
        })
    return curve


def curve_table(curve: list[dict[str, float]]) -> str:
    lines = ["| step | trajectories | reward | accuracy | tool calls / trajectory |", "|---|---|---|---|---|"]
    lines += [f"| {c['step']} | {c['trajectories']} | {_f(c['reward'])} | {_f(c['accuracy'])} | {_f(c['tool_calls'])} |"
              for c in curve]
    return "\n".join(lines)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided p-value of the exact McNemar test: under "no difference", each of the ``only_a + only_b``
    discordant questions (right in one run only) is equally likely to favour either run."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def records_by_id(run: Path) -> dict[str, dict[str, Any]]:
    """The records of a `tapo eval` run (``DIR/trajectories.jsonl``), by record id."""
    out = {}
    for where, record in iter_json_lines(run / "trajectories.jsonl"):
        if not isinstance(record, dict) or "id" not in record or "correct" not in record:
            raise DataError(f"{where}: not a tapo eval record (needs id and correct)")
        out[str(record["id"])] = record
    return out


def paired_table(pairs: list[tuple[str, Path, str, Path]]) -> str:
    """One row per ``(A, B)``: questions right only in A, right only in B, and McNemar's p; then the
    same test on tool use (a question answered with at least one tool call), overall and by family,
    which says whether one model calls tools on fewer questions."""
    lines = ["| A | B | questions | right only in A | right only in B | p (exact McNemar) |",
             "|---|---|---|---|---|---|"]
    tool_lines = ["| A | B | questions | a tool called only in A | only in B | p (exact McNemar) |",
                  "|---|---|---|---|---|---|"]
    for name_a, dir_a, name_b, dir_b in pairs:
        a, b = records_by_id(dir_a), records_by_id(dir_b)
        if a.keys() != b.keys():
            raise DataError(f"{dir_a} and {dir_b}: not the same questions, cannot pair them")
        only_a = sum(bool(a[q]["correct"]) and not b[q]["correct"] for q in a)
        only_b = sum(bool(b[q]["correct"]) and not a[q]["correct"] for q in a)
        lines.append(f"| {name_a} | {name_b} | {len(a)} | {only_a} | {only_b} | {mcnemar_exact(only_a, only_b):.3g} |")
        families = sorted({str(r.get("data_source", "")) for r in a.values()} - {""})
        for family in [None, *families]:
            ids = [q for q in a if family is None or a[q].get("data_source") == family]
            used_a = {q for q in ids if a[q].get("tool_steps")}
            used_b = {q for q in ids if b[q].get("tool_steps")}
            tools_a, tools_b = len(used_a - used_b), len(used_b - used_a)
            label = f"{name_b} ({family})" if family else name_b
            tool_lines.append(f"| {name_a} | {label} | {len(ids)} | {tools_a} | {tools_b} | "
                              f"{mcnemar_exact(tools_a, tools_b):.3g} |")
    return "\n".join(lines) + "\n\nTool use, paired:\n\n" + "\n".join(tool_lines)


def report(evals: list[tuple[str, Path]], curves: list[tuple[str, Path]], compare: list[str] = ()) -> str:
    parts = []
    if evals:
        parts.append(comparison_tables([(name, load_summary(path)) for name, path in evals]))
    if compare:
        named = dict(evals)
        pairs = []
        for value in compare:
            a, sep, b = value.partition(":")
            if not sep or a not in named or b not in named:
                raise DataError(f"--compare {value!r}: expected A:B, two names given with --eval")
            pairs.append((a, named[a], b, named[b]))
        parts.append(paired_table(pairs))
    for name, path in curves:
        parts.append(f"Learning curve: {name}\n\n{curve_table(step_curve(path))}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval_report", description=__doc__.splitlines()[0])
    p.add_argument("--eval", action="append", default=[], metavar="NAME=DIR", help="a `tapo eval --out` directory")
    p.add_argument("--curve", action="append", default=[], metavar="NAME=DIR", help="a training.tapo output directory")
    p.add_argument("--compare", action="append", default=[], metavar="A:B",
                   help="paired test of two --eval runs on the same questions (exact McNemar)")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(report(_pairs(args.eval, "--eval"), _pairs(args.curve, "--curve"), args.compare))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
