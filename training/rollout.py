"""TRL's ``rollout_func`` on the runtime's loop: the same agent loop that serves users generates the
training trajectories.

:class:`AgentRollout` is called by ``GRPOTrainer`` with the batch's chat prompts. It renders them to
ids, runs every trajectory of the batch concurrently through :func:`agent_runtime.loop.rollout` on a
background event loop (tools of one trajectory overlap the generation of the others), and returns
what TRL needs: ``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask`` (0 on tool output and
other injected tokens, which then get no gradient) and per-sample fields that TRL hands to the reward
functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent_runtime.backends.base import Backend, SamplingParams
from agent_runtime.budget import Budget
from agent_runtime.loop import enabled_tool_names, rollout
from agent_runtime.prompts import build_prompt_ids, raw_prompt_ids, render_prompt_ids
from agent_runtime.protocol import Protocol
from agent_runtime.tools import ToolRegistry
from agent_runtime.trajectory import Trajectory

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["AgentRollout", "BackgroundLoop", "rollout_fields"]


class BackgroundLoop:
    """An asyncio loop on its own thread: the trainer is synchronous, the runtime is async, and the
    tools and engine keep their state (sandbox workers, KV slots) across steps on one loop."""

    def __init__(self, device: Any = None) -> None:
        self._device = device
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="rollout-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import torch

        if torch.cuda.is_available():  # the current CUDA device is per thread: use the trainer's
            torch.cuda.set_device(self._device)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


def prompt_ids_of(tokenizer: Any, prompt: str | list[dict], protocol: Protocol | None = None,
                  tool_names: Sequence[str] = ()) -> list[int]:
    """Ids of one of TRL's prompts: chat messages through the template, a string as finished text.
    Under a function-calling protocol the template also offers the functions of ``tool_names``."""
    if isinstance(prompt, str):
        return raw_prompt_ids(tokenizer, prompt)
    if protocol is not None and protocol.function_calling:
        return build_prompt_ids(tokenizer, protocol, prompt, tool_names)
    return render_prompt_ids(tokenizer, prompt)


def rollout_fields(trajectories: list[Trajectory], pad_id: int) -> dict[str, list]:
    """The dict ``rollout_func`` returns, from finished trajectories (pure; no model needed).

    A trajectory with no completion ids (an engine that gave up at once) gets one pad id with mask 0,
    so TRL's bookkeeping (which reads the last id) works and nothing is trained on it.
    """
    completion_ids, env_mask, logprobs = [], [], []
    for t in trajectories:
        if t.completion_ids:
            completion_ids.append(list(t.completion_ids))
            env_mask.append(list(t.mask))
            logprobs.append([None if lp is None else float(lp) for lp in t.logprobs])
        else:
            completion_ids.append([pad_id])
            env_mask.append([0])
            logprobs.append([None])
    return {
        "prompt_ids": [list(t.prompt_ids) for t in trajectories],
        "completion_ids": completion_ids,
        "logprobs": logprobs,
        "env_mask": env_mask,
        # Per-sample fields, given to every reward function as keyword arguments.
        "completion_text": [t.text for t in trajectories],
        "model_tokens": [t.usage.completion_tokens for t in trajectories],
        "tool_calls": [sum(t.tool_call_counts.values()) for t in trajectories],
        "tool_call_counts": [t.tool_call_counts for t in trajectories],
        "tool_failures": [t.tool_failures for t in trajectories],
        "final_answer": [t.answer for t in trajectories],
        "agent_finish_reason": [t.agent_finish_reason for t in trajectories],
        "invalid_actions": [t.invalid_actions for t in trajectories],
    }


@dataclass
class AgentRollout:
    """``rollout_func(prompts, trainer)`` for TRL's GRPOTrainer.

    ``backend_factory(trainer)`` makes the generation backend on first use: the trainer's own model
    (transformers, CPU) or the vLLM that TRL drives (GPU). After every optimizer step the backend
    is told that the weights changed, so it never reuses keys/values computed with old weights.
    """

    backend_factory: Callable[[Any], Backend]
    tools: ToolRegistry
    protocol: Protocol
    budget: Budget
    temperature: float = 1.0
    top_p: float = 1.0
    eval_temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.__name__ = "agent_rollout"  # TRL logs the function's name
        self._bg: BackgroundLoop | None = None
        self._backend: Backend | None = None
        self._weights_step: int | None = None
        # Several generation calls in one step (refill; eval) get different seeds: counted per mode.
        self._calls_this_step = {True: 0, False: 0}
        self.last_trajectories: list[Trajectory] = []

    def _ensure_started(self, trainer: Any) -> Backend:
        if self._bg is None:
            self._bg = BackgroundLoop(trainer.accelerator.device)
            self._bg.run(self.tools.astart())
        if self._backend is None:
            self._backend = self.backend_factory(trainer)
        step = trainer.state.global_step
        if self._weights_step is not None and step != self._weights_step:
            weights_changed = getattr(self._backend, "weights_changed", None)
            if weights_changed is not None:
                weights_changed()
            self._calls_this_step = {True: 0, False: 0}
        self._weights_step = step
        return self._backend

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        model = trainer.model
        training = model.training  # before the backend exists: making it switches the model to eval
        backend = self._ensure_started(trainer)
        tokenizer = backend.tokenizer
        tool_names = enabled_tool_names(self.protocol, self.tools, None)
        prompt_ids = [prompt_ids_of(tokenizer, p, self.protocol, tool_names) for p in prompts]
        sampling = SamplingParams(
            max_tokens=self.budget.max_tokens_per_turn,
            temperature=self.temperature if training else self.eval_temperature,
            top_p=self.top_p if training else 1.0,
            # A function of the step, the call within it and the process: a resumed run samples as
            # the first would have, and two processes never draw the same samples.
            seed=self.seed * 1_000_003 + trainer.state.global_step * 7_919 + self._calls_this_step[training] * 257
            + (0 if training else 131) + trainer.accelerator.process_index * 104_729,
        )
        self._calls_this_step[training] += 1
        if trainer.accelerator.num_processes > 1:
            trainer.accelerator.wait_for_everyone()  # the main process has pushed the new weights to vLLM
        awake = getattr(backend, "awake", None)  # a colocated vLLM in sleep mode wakes for the rollout
        model.eval()  # no dropout while sampling: the logprobs must be those of the policy
        try:
            with awake() if awake is not None else contextlib.nullcontext():
                trajectories = self._bg.run(rollout(prompt_ids, backend, self.tools, protocol=self.protocol,
                                                    budget=self.budget, sampling=sampling))
        finally:
            model.train(training)
        self.last_trajectories = trajectories
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return rollout_fields(trajectories, pad_id)

    def close(self) -> None:
        if self._bg is not None:
            if self._backend is not None:
                self._bg.run(self._backend.aclose())
            self._bg.run(self.tools.aclose())
            self._bg.close()
        self._bg = self._backend = None
