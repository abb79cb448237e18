"""``python -m training.eval_report``: one Markdown comparison of `tapo eval` runs and TAPO learning curves.

``--eval NAME=DIR`` (repeatable) reads ``DIR/summary.json`` of a `tapo eval` run; ``--curve NAME=DIR``
reads the per-step trajectory dumps of a ``python -m training.tapo`` run (``DIR/rollouts/step-N.jsonl``)
and gives, per step, the mean reward, accuracy and tool calls per trajectory. EVAL.md is made of
these tables and the commands that produced the runs.
"""

from __future__ import annotations

import argparse
import json
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


def report(evals: list[tuple[str, Path]], curves: list[tuple[str, Path]]) -> str:
    parts = []
    if evals:
        parts.append(comparison_tables([(name, load_summary(path)) for name, path in evals]))
    for name, path in curves:
        parts.append(f"Learning curve: {name}\n\n{curve_table(step_curve(path))}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.eval_report", description=__doc__.splitlines()[0])
    p.add_argument("--eval", action="append", default=[], metavar="NAME=DIR", help="a `tapo eval --out` directory")
    p.add_argument("--curve", action="append", default=[], metavar="NAME=DIR", help="a training.tapo output directory")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(report(_pairs(args.eval, "--eval"), _pairs(args.curve, "--curve")))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
