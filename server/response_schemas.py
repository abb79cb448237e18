"""The request body of ``/v1/responses`` (OpenAI's Responses API).

Input items and tools stay plain dicts here: they have many shapes, and :mod:`server.response_input`
reads each one, with an error that names the item, when it turns the request into a chat request.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.schemas import SEED_RANGE, AgentOptions, Lenient


class ReasoningOptions(Lenient):
    # Echoed on the response: the model reasons as it was trained to, and says so in its reasoning items.
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class TextOptions(Lenient):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponseRequest(Lenient):
    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0, le=64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, **SEED_RANGE)  # an extension, as on chat completions
    reasoning: ReasoningOptions | None = None
    text: TextOptions | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    agent: AgentOptions = Field(default_factory=AgentOptions)
