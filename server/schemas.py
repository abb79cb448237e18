"""Request models of the HTTP API (the ``tool_step`` extension is :mod:`agent_runtime.tool_steps`).

Unknown request fields are ignored (clients send many); fields we cannot honour are refused with
a 400 that names them, in :mod:`server.chat` and :mod:`server.completions`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Lenient):
    type: str
    text: str | None = None


class CalledFunction(Lenient):
    name: str
    arguments: str = ""  # JSON text, as OpenAI sends it


class MessageToolCall(Lenient):
    """A call the assistant made in an earlier turn, sent back by the client with its result."""

    id: str = ""
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None  # assistant messages
    tool_call_id: str | None = None  # tool messages

    def text(self) -> str:
        """The message's text; parts other than text are refused by the caller before this."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content)


class StreamOptions(Lenient):
    include_usage: bool = False


class AgentOptions(Lenient):
    """Extension body field ``agent``: how the server runs the loop for this request."""

    tools: bool | list[str] = True  # on, off, or the names of the tools to enable
    max_tool_calls: int | None = Field(default=None, ge=0, le=64)
    protocol: str | None = None
    max_tokens_per_turn: int | None = Field(default=None, ge=1)
    wall_clock_s: float | None = Field(default=None, gt=0, le=3600)
    # The client's name for a code session: calls of requests that give it share Python globals and
    # files (a container, kept until idle past its timeout). Chat completions only.
    session_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


StopField = str | list[str] | None
SEED_RANGE = {"ge": -(2**63), "le": 2**63 - 1}  # a torch generator seed is a signed 64-bit integer


def _stops(value: StopField) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class _GenerationRequest(Lenient):
    """Fields both endpoints share.

    Sampling values are checked here as vLLM's ``SamplingParams._verify_args`` checks them (vLLM
    0.31.0: temperature finite in [0, 2], top_p in (0, 1], top_k -1, 0 or at least 1, min_p in
    [0, 1], repetition_penalty finite and > 0, presence and frequency penalties in [-2, 2], no empty
    stop string), so a bad request is a 400 naming the parameter before it reaches an engine: in a
    colocated vLLM one request's ValueError would otherwise fail the whole batch it joined. NaN
    fails every range. Values in range that this server cannot honour are refused by the endpoints.
    """

    model: str
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # -1 and 0 both mean "all tokens"
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    seed: int | None = Field(default=None, **SEED_RANGE)
    stop: StopField = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: StopField) -> StopField:
        stops = _stops(value)
        if len(stops) > 8:
            raise ValueError("at most 8 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop cannot contain an empty string")
        return value

    @property
    def stops(self) -> list[str]:
        return _stops(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    web_search_options: dict[str, Any] | None = None  # present: the built-in search is on
    agent: AgentOptions = Field(default_factory=AgentOptions)


class CompletionRequest(_GenerationRequest):
    """``/v1/completions``: raw generation, no tools. Speaks vLLM's token-id extensions."""

    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0)
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
    return_token_ids: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    allowed_token_ids: list[int] | None = Field(default=None, min_length=1)
