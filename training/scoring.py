"""TAPO's reward as a TRL reward function, and reward functions named in the config (``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent_runtime.protocol import Protocol
from training.rewards import (RewardBreakdown, ToolEfficiency, function_call_reward, function_call_well_formed,
                              tapo_reward)

__all__ = ["TapoRewardFunction", "import_reward_function"]


@dataclass
class TapoRewardFunction:
    """Scores a batch with :func:`training.rewards.tapo_reward`; keeps the breakdowns of the last call
    (the trainer reads their accuracy for dynamic sampling and its metrics).

    Reads the per-sample fields :class:`training.rollout.AgentRollout` returns (``completion_text``,
    ``model_tokens``, ``tool_calls``) and the dataset's ``gold`` and ``data_source`` columns. Without
    ``completion_text`` (another rollout function), TRL's decoded completion is scored.
    """

    protocol: Protocol
    max_tokens: int
    overlong_buffer: int
    overlong_factor: float = 1.0
    tool_efficiency: ToolEfficiency | None = None
    last: list[RewardBreakdown] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.__name__ = "tapo"  # TRL names the reward's metrics after it: rewards/tapo/mean

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], *,
                 gold: list[list[str]], data_source: list[str], model_tokens: list[int] | None = None,
                 completion_text: list[str] | None = None, tool_calls: list[int] | None = None,
                 **_: Any) -> list[float]:
        n = len(completions)
        tokens = model_tokens or [len(ids) for ids in completion_ids]
        calls = tool_calls or [0] * n
        if self.protocol.function_calling:
            self.last = [self._function_calling(i, gold, data_source, tokens, calls, **_) for i in range(n)]
            return [b.total for b in self.last]
        texts = completion_text or [_completion_text(c) for c in completions]
        self.last = [
            tapo_reward(texts[i], gold[i], data_source[i], model_tokens=tokens[i], max_tokens=self.max_tokens,
                        overlong_buffer=self.overlong_buffer, overlong_factor=self.overlong_factor,
                        protocol=self.protocol, tool_calls=calls[i], tool_efficiency=self.tool_efficiency)
            for i in range(n)
        ]
        return [b.total for b in self.last]


    def _function_calling(self, i: int, gold: list[list[str]], data_source: list[str], tokens: list[int],
                          calls: list[int], *, final_answer: list[str | None], agent_finish_reason: list[str],
                          invalid_actions: list[int], **_: Any) -> RewardBreakdown:
        # The loop's reading of the trajectory (AgentRollout's fields), not its text: see function_call_reward.
        return function_call_reward(
            final_answer[i], gold[i], data_source[i],
            well_formed=function_call_well_formed(agent_finish_reason[i], invalid_actions[i]), model_tokens=tokens[i],
            max_tokens=self.max_tokens, overlong_buffer=self.overlong_buffer, overlong_factor=self.overlong_factor,
            tool_calls=calls[i], tool_efficiency=self.tool_efficiency)


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)  # conversational: [{"role", "content"}]


def import_reward_function(spec: str) -> Callable[..., list[float]]:
    """``package.module:function`` → the function (a TRL reward function: ``(prompts, completions, **kw)``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reward function {spec!r}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward function {spec!r}: cannot import {module_name}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward function {spec!r}: {module_name} has no function {attr}")
    return fn
