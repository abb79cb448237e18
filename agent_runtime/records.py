"""One JSON record per trajectory: written by `tapo eval`, `tapo run --json` and training rollout dumps.

The schema (ARCHITECTURE.md, "Rows and trajectories"): ``{id, question, gold, data_source, prompt_ids,
completion_ids, mask, logprobs, text, tool_steps, final_answer, correct, reward, finish_reason, usage}``.
``tool_steps`` are :class:`agent_runtime.tool_steps.ToolStep`, all finished.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from agent_runtime.tool_steps import ToolStep, step_id
from agent_runtime.trajectory import Trajectory

__all__ = ["trajectory_record", "write_records", "read_records"]


def _tool_steps(record_id: str, traj: Trajectory) -> list[dict[str, Any]]:
    return [ToolStep.of_record(step_id(record_id, call.index), call).model_dump() for call in traj.tool_calls]


def trajectory_record(
    traj: Trajectory,
    *,
    id: str,
    question: str,
    gold: list[str],
    data_source: str,
    correct: float | None = None,
    reward: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The record of ``traj``; ``extra`` fields (e.g. a training step) are appended after the schema's."""
    return {
        "id": id,
        "question": question,
        "gold": list(gold),
        "data_source": data_source,
        "prompt_ids": traj.prompt_ids,
        "completion_ids": traj.completion_ids,
        "mask": traj.mask,
        "logprobs": traj.logprobs,
        "text": traj.text,
        "tool_steps": _tool_steps(id, traj),
        "final_answer": traj.answer,
        "correct": correct,
        "reward": reward,
        "finish_reason": traj.finish_reason,
        "agent_finish_reason": traj.agent_finish_reason,
        "usage": asdict(traj.usage),
        **extra,
    }


def write_records(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` as JSON Lines to ``path`` (parents created), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file written by :func:`write_records`."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
