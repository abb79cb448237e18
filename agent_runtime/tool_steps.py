"""One tool call as clients and records see it: the one ``ToolStep`` shape of the project.

The server streams it (``delta.tool_step``, ``message.tool_steps``), trajectory records store it
(``tool_steps``), and ``tapo run --json`` prints it; all three build it here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agent_runtime.tools import ToolOutput
from agent_runtime.trajectory import ToolCallRecord

__all__ = ["SearchHit", "ToolStep", "step_id"]


class SearchHit(BaseModel):
    title: str
    url: str = ""
    score: float | None = None

    @classmethod
    def of(cls, hit: dict[str, Any]) -> "SearchHit":
        """From a search tool's hit dict (``{title, url, score}``; missing or empty fields tolerated)."""
        return cls(title=str(hit.get("title", "")), url=str(hit.get("url", "") or ""), score=hit.get("score"))


class ToolStep(BaseModel):
    """One tool call of a reply: sent when it starts (``running``) and again, same ``id``, when done."""

    id: str
    index: int
    name: str
    arguments: str
    status: Literal["running", "done"]
    ok: bool | None = None
    output: str | None = None
    hits: list[SearchHit] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)  # figures the code drew, as data: URLs (PNG)
    seconds: float | None = None
    injected_tokens: int | None = None

    @classmethod
    def running(cls, id: str, index: int, name: str, arguments: str) -> "ToolStep":
        return cls(id=id, index=index, name=name, arguments=arguments, status="running")

    @classmethod
    def done(cls, id: str, index: int, name: str, arguments: str, output: ToolOutput, seconds: float,
             injected_tokens: int) -> "ToolStep":
        return cls(id=id, index=index, name=name, arguments=arguments, status="done", ok=output.ok,
                   output=output.text, hits=[SearchHit.of(h) for h in output.hits], images=list(output.images),
                   seconds=round(seconds, 4),
                   injected_tokens=injected_tokens)

    @classmethod
    def of_record(cls, id: str, call: ToolCallRecord) -> "ToolStep":
        """The finished step of a call a trajectory recorded."""
        return cls.done(id, call.index, call.name, call.arguments, ToolOutput(call.output, call.ok, call.hits),
                        call.seconds, call.injected_tokens)


def step_id(prefix: str, index: int) -> str:
    """The id of call ``index`` of a reply or record whose id is ``prefix``."""
    return f"{prefix}-call-{index}"
