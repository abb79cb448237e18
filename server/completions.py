"""``/v1/completions``: raw generation without tools, speaking vLLM's token-id extensions.

This is what the ``remote`` backend talks to, so one of our servers can drive another (or a
vLLM fleet can stand in for ours): prompts as token ids, ``return_token_ids``,
``include_stop_str_in_output``, the sampled token's logprob, and ``stop_reason``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from agent_runtime.backends.base import GenerationChunk, SamplingParams
from agent_runtime.detok import decode
from agent_runtime.prompts import raw_prompt_ids
from server.errors import APIError, bad_request
from server.schemas import CompletionRequest
from server.stops import StopTrimmer
from server.state import ServerState


@dataclass
class CompletionPlan:
    id: str
    created: int
    model: str
    prompt_ids: list[int]
    sampling: SamplingParams
    return_token_ids: bool
    include_stop: bool
    logprobs: bool
    include_usage: bool


def _refuse_unsupported(req: CompletionRequest) -> None:
    checks = [
        (req.n not in (None, 1), "n", "n > 1 is not supported"),
        (req.best_of not in (None, 1), "best_of", "best_of > 1 is not supported"),
        (bool(req.echo), "echo", "echo is not supported"),
        (req.suffix is not None, "suffix", "suffix is not supported"),
        (req.logprobs not in (None, 0, 1), "logprobs", "only the sampled token's logprob is returned: use logprobs 0 or 1"),
        # vLLM sampling fields the remote backend sends as neutral values (ranges: schemas).
        (req.top_k not in (None, 0, -1), "top_k", "top_k is not supported"),
        (req.min_p not in (None, 0), "min_p", "min_p is not supported"),
        (req.repetition_penalty not in (None, 1), "repetition_penalty", "repetition_penalty is not supported"),
        (bool(req.presence_penalty), "presence_penalty", "presence_penalty is not supported"),
        (bool(req.frequency_penalty), "frequency_penalty", "frequency_penalty is not supported"),
        (not req.skip_special_tokens, "skip_special_tokens", "special tokens are always skipped in text"),
    ]
    for failed, param, message in checks:
        if failed:
            raise bad_request(message, param)


def _prompt_ids(req: CompletionRequest, state: ServerState) -> list[int]:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise bad_request("one prompt per request: batched prompts are not supported", "prompt")
        prompt = prompt[0]
    tokenizer = state.backend.tokenizer
    if isinstance(prompt, str):
        ids = raw_prompt_ids(tokenizer, prompt)
    else:
        ids = list(prompt)
        vocab = len(tokenizer)
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise bad_request(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", "prompt")
    if not ids:
        raise bad_request("the prompt is empty", "prompt")
    context = state.backend.info.context_length
    if len(ids) >= context:
        raise bad_request(f"this model's maximum context length is {context} tokens; the prompt has {len(ids)}",
                          "prompt", code="context_length_exceeded")
    return ids


def plan_completion(req: CompletionRequest, state: ServerState) -> CompletionPlan:
    _refuse_unsupported(req)
    state.check_model(req.model)
    ids = _prompt_ids(req, state)
    room = state.backend.info.context_length - len(ids)
    vocab = len(state.backend.tokenizer)
    bad = next((t for t in req.allowed_token_ids or () if not 0 <= t < vocab), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary (0..{vocab - 1})", "allowed_token_ids")
    sampling = SamplingParams(
        max_tokens=min(req.max_tokens, room),
        temperature=1.0 if req.temperature is None else req.temperature,  # OpenAI's default
        top_p=req.top_p or 1.0,
        seed=req.seed,
        stop=tuple(req.stops),
        logprobs=req.logprobs is not None,
        allowed_token_ids=frozenset(req.allowed_token_ids) if req.allowed_token_ids else None,
    )
    return CompletionPlan(
        id=f"cmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=state.model_name,
        prompt_ids=ids,
        sampling=sampling,
        return_token_ids=req.return_token_ids,
        include_stop=req.include_stop_str_in_output,
        logprobs=req.logprobs is not None,
        include_usage=req.include_usage,
    )


def _finish(chunk: GenerationChunk) -> tuple[str | None, str | None]:
    """OpenAI finish_reason and vLLM's stop_reason (the stop string, None for EOS)."""
    if chunk.finish_reason is None:
        return None, None
    if chunk.finish_reason == "stop":
        return "stop", chunk.stop_str
    if chunk.finish_reason == "eos":
        return "stop", None
    return "length", None


def _logprobs_body(tokenizer: Any, ids: list[int], logprobs: list[float] | None, offset: int) -> dict:
    tokens = [decode(tokenizer, [t]) for t in ids]
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(t)
    values = list(logprobs or [])
    # Only the sampled token is known: each position's "top" list holds just that token.
    top = [{token: value} for token, value in zip(tokens, values)]
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": top, "text_offset": offsets}


async def completions(req: CompletionRequest, request: Request, state: ServerState):
    plan = plan_completion(req, state)
    slot = state.limiter.acquire()
    if req.stream:
        return EventSourceResponse(_stream(plan, state, slot.release), ping=15,
                                   background=BackgroundTask(slot.release))
    try:
        return JSONResponse(await _complete(plan, state))
    finally:
        slot.release()


def _usage(plan: CompletionPlan, completion_tokens: int) -> dict:
    return {"prompt_tokens": len(plan.prompt_ids), "completion_tokens": completion_tokens,
            "total_tokens": len(plan.prompt_ids) + completion_tokens}


async def _generate(plan: CompletionPlan, state: ServerState) -> AsyncIterator[GenerationChunk]:
    started = time.perf_counter()
    first = True
    state.metrics.in_flight.inc()
    try:
        async for chunk in state.backend.generate(plan.prompt_ids, plan.sampling):
            if first:
                state.metrics.ttft.labels("completions").observe(time.perf_counter() - started)
                first = False
            yield chunk
    finally:
        state.metrics.in_flight.dec()
        state.metrics.latency.labels("completions").observe(time.perf_counter() - started)


async def _complete(plan: CompletionPlan, state: ServerState) -> dict:
    trimmer = StopTrimmer(plan.sampling.stop, plan.include_stop)
    text, ids, logprobs = "", [], []
    last = None
    async for chunk in _generate(plan, state):
        text += trimmer.feed(chunk.text, chunk.stop_str)
        ids += chunk.token_ids
        logprobs += chunk.logprobs or []
        last = chunk
    text += trimmer.flush() if last.finish_reason != "stop" else ""
    finish_reason, stop_reason = _finish(last)
    state.metrics.count_usage(len(plan.prompt_ids), len(ids))
    choice: dict[str, Any] = {
        "index": 0, "text": text, "finish_reason": finish_reason, "stop_reason": stop_reason,
        "logprobs": _logprobs_body(state.backend.tokenizer, ids, logprobs, 0) if plan.logprobs else None,
    }
    if plan.return_token_ids:
        choice["token_ids"] = ids
        choice["prompt_token_ids"] = plan.prompt_ids
    return {"id": plan.id, "object": "text_completion", "created": plan.created, "model": plan.model,
            "choices": [choice], "usage": _usage(plan, len(ids))}


async def _stream(plan: CompletionPlan, state: ServerState, release) -> AsyncIterator[dict]:
    trimmer = StopTrimmer(plan.sampling.stop, plan.include_stop)
    generated = 0
    offset = 0
    stream = _generate(plan, state)
    try:
        async for chunk in stream:
            text = trimmer.feed(chunk.text, chunk.stop_str)
            if chunk.finish_reason is not None and chunk.finish_reason != "stop":
                text += trimmer.flush()
            finish_reason, stop_reason = _finish(chunk)
            choice: dict[str, Any] = {
                "index": 0, "text": text, "finish_reason": finish_reason, "stop_reason": stop_reason,
                "logprobs": _logprobs_body(state.backend.tokenizer, chunk.token_ids, chunk.logprobs, offset)
                if plan.logprobs else None,
            }
            offset += len(text)
            if plan.return_token_ids:
                choice["token_ids"] = chunk.token_ids
                if generated == 0:
                    choice["prompt_token_ids"] = plan.prompt_ids
            generated += len(chunk.token_ids)
            yield {"data": json.dumps({"id": plan.id, "object": "text_completion", "created": plan.created,
                                       "model": plan.model, "choices": [choice]})}
        state.metrics.count_usage(len(plan.prompt_ids), generated)
        if plan.include_usage:
            yield {"data": json.dumps({"id": plan.id, "object": "text_completion", "created": plan.created,
                                       "model": plan.model, "choices": [], "usage": _usage(plan, generated)})}
    except Exception as exc:  # after the stream started: one error event, then [DONE]
        yield {"data": json.dumps(APIError(500, f"the generation failed: {type(exc).__name__}",
                                           type="server_error").body())}
    finally:
        release()
        await stream.aclose()
    yield {"data": "[DONE]"}
