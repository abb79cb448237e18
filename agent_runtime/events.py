"""Events the loop yields, in order, for one trajectory.

Concatenating the ``text`` of every :class:`Token` and :class:`Injected` event gives exactly the
decoded completion. Structure (think / answer blocks) is for consumers to parse from that text
with :class:`agent_runtime.parser.StreamParser`, the same parser the loop uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent_runtime.tools import ToolOutput
from agent_runtime.trajectory import AgentFinishReason, FinishReason, Trajectory, Usage


@dataclass(frozen=True)
class Token:
    """Model-generated text (may be empty when a token decodes to nothing yet)."""

    text: str
    token_ids: list[int]


@dataclass(frozen=True)
class ToolCall:
    id: str
    index: int
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    id: str
    index: int
    name: str
    output: ToolOutput
    seconds: float
    injected_tokens: int


@dataclass(frozen=True)
class Injected:
    """Text the runtime appended to the completion (mask 0): a tool observation or an in-band error."""

    text: str
    token_ids: list[int]
    reason: Literal["observation", "invalid_action"]


@dataclass(frozen=True)
class Answer:
    text: str


@dataclass(frozen=True)
class Done:
    finish_reason: FinishReason
    agent_finish_reason: AgentFinishReason
    usage: Usage
    trajectory: Trajectory


Event = Token | ToolCall | ToolResult | Injected | Answer | Done
