"""Limits on one trajectory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """``max_tool_calls`` tool calls (invalid actions count too, as in TAPO's turn limit), then one
    final turn in which a tool call ends the trajectory instead of running.

    Token limits count model tokens only; tool output is bounded by ``max_tool_output_tokens``,
    with the middle dropped. ``wall_clock_s`` bounds the whole run.
    """

    max_tool_calls: int = 4
    max_tokens_per_turn: int = 512
    max_total_tokens: int = 2048
    max_tool_output_tokens: int = 512
    tool_timeout_s: float | None = 30.0
    wall_clock_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens_per_turn", "max_total_tokens", "max_tool_output_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0")
