"""The loop on the trained tiny model through each local engine: what training and serving rely on.

Every test runs on the transformers engine and on the llama.cpp engine (the tiny model exported to an
f32 GGUF file, f32 KV cache): the same ids, mask, logprobs, KV reuse and cancellation guarantees.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import require_llama_cpp

from agent_runtime.backends.base import SamplingParams
from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.budget import Budget
from agent_runtime.detok import decode
from agent_runtime.events import Injected, Token
from agent_runtime.loop import rollout, run
from agent_runtime.models.fixture_tasks import fixture_search, fixture_tasks, run_python
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO
from agent_runtime.tools import ToolRegistry

BUDGET = Budget(max_tool_calls=2, max_tokens_per_turn=48, max_total_tokens=128)


@pytest.fixture(scope="module")
def tools() -> ToolRegistry:
    reg = ToolRegistry()
    reg.add_function("search", fixture_search)
    reg.add_function("code", run_python)
    return reg


@pytest.fixture(params=["transformers", "llamacpp"])
async def backend(request, tiny_model, tiny_tokenizer, tiny_path):
    if request.param == "transformers":
        engine = TransformersBackend(tiny_model, tiny_tokenizer, max_slots=16)
    else:
        require_llama_cpp()
        from agent_runtime.backends import make_backend

        # what `--engine llamacpp --model tiny` builds, exported at f32 so logprobs compare to 1e-4
        engine = make_backend(str(tiny_path), "llamacpp", gguf_type="f32", kv_type="f32", max_slots=16)
    yield engine
    await engine.aclose()


def questions(n: int, seed: int = 7) -> list[str]:
    tasks = [t for t in fixture_tasks(seed, 4 * n) if t.family != "direct"]
    return [t.question for t in tasks[:n]]


def teacher_forced_logprobs(model, traj, temperature: float) -> list[float]:
    ids = torch.tensor([traj.prompt_ids + traj.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
    start = len(traj.prompt_ids)
    return [float(logp[start + i - 1, tok]) for i, tok in enumerate(traj.completion_ids)]


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
async def test_logprobs_match_a_forward_pass_over_the_final_trajectory(backend, tools, tiny_model, tiny_tokenizer, temperature):
    prompts = [build_prompt_ids(tiny_tokenizer, TAPO, q) for q in questions(6)]
    trajs = await rollout(prompts, backend, tools, budget=BUDGET, sampling=SamplingParams(temperature=temperature, seed=3))
    assert sum(len(t.tool_calls) for t in trajs) >= 3, "the fixture model should call tools"
    assert any(0 in t.mask for t in trajs)
    for traj in trajs:
        reference = teacher_forced_logprobs(tiny_model, traj, temperature)
        for got, want, m in zip(traj.logprobs, reference, traj.mask):
            if m:
                assert got == pytest.approx(want, abs=1e-4)
    # Tool turns continued from the cached keys and values instead of re-reading the prefix.
    assert backend.stats["reused_tokens"] > 0
    # Concurrent trajectories were decoded together.
    assert backend.stats["decode_rows"] > backend.stats["decode_steps"]


async def test_streamed_text_ids_and_mask_agree(backend, tools, tiny_tokenizer):
    for question in questions(4, seed=11):
        prompt = build_prompt_ids(tiny_tokenizer, TAPO, question)
        events = [e async for e in run(prompt, backend, tools, budget=BUDGET, sampling=SamplingParams(temperature=0))]
        traj = events[-1].trajectory
        streamed = "".join(e.text for e in events if isinstance(e, (Token, Injected)))
        assert streamed == decode(tiny_tokenizer, traj.completion_ids) == traj.text
        # Mask 0 exactly on injected ids, in order.
        injected_ids = [i for e in events if isinstance(e, Injected) for i in e.token_ids]
        assert [i for i, m in zip(traj.completion_ids, traj.mask) if m == 0] == injected_ids
        model_ids = [i for e in events if isinstance(e, Token) for i in e.token_ids]
        assert [i for i, m in zip(traj.completion_ids, traj.mask) if m == 1] == model_ids
        assert len(traj.logprobs) == len(traj.mask) == len(traj.completion_ids)


async def test_greedy_runs_are_reproducible_and_answer_through_tools(backend, tools, tiny_tokenizer):
    prompts = [build_prompt_ids(tiny_tokenizer, TAPO, q) for q in questions(8, seed=5)]
    first = await rollout(prompts, backend, tools, budget=BUDGET, sampling=SamplingParams(temperature=0))
    second = await rollout(prompts, backend, tools, budget=BUDGET, sampling=SamplingParams(temperature=0))
    assert [t.completion_ids for t in first] == [t.completion_ids for t in second]
    answered = [t for t in first if t.agent_finish_reason == "answer"]
    assert answered and all(t.completion_ids[-1] == tiny_tokenizer.eos_token_id for t in answered)
    assert {c.name for t in first for c in t.tool_calls} == {"search", "code"}


async def test_seeded_sampling_is_reproducible(backend, tools, tiny_tokenizer):
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, questions(1)[0])
    params = SamplingParams(temperature=1.0, seed=42)
    a = await rollout([prompt] * 3, backend, tools, budget=BUDGET, sampling=params)
    b = await rollout([prompt] * 3, backend, tools, budget=BUDGET, sampling=params)
    assert [t.completion_ids for t in a] == [t.completion_ids for t in b]


async def test_cancelling_a_run_frees_its_engine_slot(backend, tools, tiny_tokenizer):
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, "Tell me a long story.")
    long_budget = Budget(max_tokens_per_turn=4000, max_total_tokens=4000)
    started = asyncio.Event()

    async def consume():
        async for event in run(prompt, backend, tools, budget=long_budget, sampling=SamplingParams(temperature=1.0, seed=1)):
            if isinstance(event, Token):
                started.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    steps = backend.stats["decode_steps"]
    await asyncio.sleep(0.3)
    # Nothing is decoding any more: the engine dropped the cancelled request.
    assert backend.stats["decode_steps"] - steps <= 1
    assert not any(slot.busy for slot in backend._slots)


async def test_prompt_longer_than_the_context_is_refused(backend, tools):
    with pytest.raises(ValueError, match="context window"):
        async for _ in run([5] * (backend.context_length + 1), backend, tools):
            pass
