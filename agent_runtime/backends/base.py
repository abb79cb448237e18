"""The generation backend contract shared by every engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Literal, Protocol, Sequence, runtime_checkable

FinishReason = Literal["stop", "eos", "length", "abort"]


class PromptTooLongError(ValueError):
    """The prompt leaves no room in the context window for one new token."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens, which leaves no room in the context window of {context_length}"
        )
        self.prompt_tokens, self.context_length = prompt_tokens, context_length


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one generation call.

    ``temperature == 0`` is greedy. The logprob recorded for a sampled token is
    ``log_softmax(logits / T)`` at that position before top-p truncation (T = 1 when greedy):
    what TRL computes for the importance ratio.
    """

    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = True
    # When set, every token of the call is one of these (vLLM's ``allowed_token_ids``); the logprob
    # recorded is then that of the distribution over them.
    allowed_token_ids: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise ValueError("allowed_token_ids must hold at least one token id")


@dataclass
class GenerationChunk:
    """New tokens of one generation call. ``finish_reason`` is set on the last chunk only.

    ``finish_reason``: ``stop`` (a stop string was generated; the tokens that made it are kept,
    ``stop_str`` names it), ``eos`` (an end-of-turn token, kept as the last id), ``length``
    (``max_tokens`` or the context window), ``abort`` (the engine gave up on the request).
    """

    token_ids: list[int]
    text: str
    logprobs: list[float] | None = None
    finish_reason: FinishReason | None = None
    stop_str: str | None = None


@dataclass
class BackendInfo:
    name: str
    model: str
    context_length: int
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An engine that continues token-id prompts. Must never block the event loop.

    ``generate`` is an async generator; closing it early (``aclose``, or cancelling the task that
    iterates it) stops the generation and frees what the engine held for it.
    """

    tokenizer: Any
    info: BackendInfo

    def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]: ...

    async def aclose(self) -> None: ...
