"""``/v1/responses``: OpenAI's Responses API over the same loop as chat completions.

The request becomes a chat plan (:mod:`server.response_input`), the loop's events become typed
output items (:mod:`server.response_items`), and a stream sends OpenAI's event sequence, each event
numbered, from ``response.created`` to ``response.completed`` (or ``.incomplete`` when the token
budget ran out, ``.failed`` when generation failed).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from agent_runtime.backends.base import PromptTooLongError
from agent_runtime.events import Done, Event
from agent_runtime.protocol import get_protocol
from server.chat import ChatPlan, client_tool_calls, observed_events, plan_chat, reasoning_tokens, run_to_done
from server.errors import APIError, bad_request
from server.response_input import ServerTools, as_responses_error, chat_request
from server.response_items import ResponseItems
from server.response_schemas import ResponseRequest
from server.schemas import ChatMessage
from server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class ResponseRun:
    """A validated Responses request and what it produced so far."""

    id: str
    created_at: int
    request: ResponseRequest
    plan: ChatPlan
    items: ResponseItems
    status: str = "in_progress"
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    history: list[ChatMessage] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        """The ``response`` object, as OpenAI's API returns it."""
        req = self.request
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "model": self.plan.model,
            "instructions": req.instructions,
            "output": self.items.output if self.status != "in_progress" else [],
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "tool_choice": req.tool_choice or "auto",
            "tools": [_echo_tool(t) for t in req.tools],
            "temperature": self.plan.sampling.temperature,
            "top_p": self.plan.sampling.top_p,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": req.reasoning.model_dump() if req.reasoning else {"effort": None, "summary": None},
            "text": {"format": {"type": "text"}},
            "truncation": req.truncation or "disabled",
            "metadata": req.metadata or {},
            "store": req.store,
            "user": req.user,
            "usage": self.usage,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
        }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "code_interpreter" and "container" not in tool:
        return {**tool, "container": {"type": "auto"}}
    return tool


def server_tools(state: ServerState) -> ServerTools:
    return ServerTools(names=tuple(state.tools.names),
                       mcp_servers=dict(state.mcp.tools_by_server) if state.mcp is not None else {})


def plan_response(req: ResponseRequest, state: ServerState, history: Sequence[ChatMessage] = ()) -> ResponseRun:
    try:
        protocol = get_protocol(req.agent.protocol) if req.agent.protocol else state.protocol
    except ValueError as exc:
        raise bad_request(str(exc), "agent.protocol") from None
    try:
        chat = chat_request(req, history, server_tools(state), function_calling=protocol.function_calling)
        plan = plan_chat(chat, state)
    except APIError as exc:
        raise as_responses_error(exc) from None
    except ValidationError as exc:  # an input item whose values a chat message cannot hold
        raise bad_request(f"input: {exc.errors()[0]['msg']}", "input") from None
    response_id = f"resp_{uuid.uuid4().hex}"
    mcp_server_of = {name: label for label, names in server_tools(state).mcp_servers.items() for name in names}
    items = ResponseItems(plan.protocol, response_id, container_id=f"cntr_{response_id[5:]}",
                          mcp_server_of=mcp_server_of)
    return ResponseRun(id=response_id, created_at=int(time.time()), request=req, plan=plan, items=items,
                       history=list(history))


def finish(run: ResponseRun, done: Done) -> list[dict[str, Any]]:
    """Close the run: the client's calls become items, and the status and usage are set."""
    events = run.items.function_calls(client_tool_calls(run.plan, done))
    u = done.usage
    run.usage = {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens(done, run.items.content, run.plan.tokenizer)},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }
    if done.finish_reason == "length":
        run.status, run.incomplete_details = "incomplete", {"reason": "max_output_tokens"}
    else:
        run.status = "completed"
    return events


async def create_response(req: ResponseRequest, request: Request, state: ServerState):
    if req.previous_response_id is not None:
        raise APIError(404, f"no stored response {req.previous_response_id!r}", type="not_found_error",
                       param="previous_response_id", code="response_not_found")
    run = plan_response(req, state)
    slot = state.limiter.acquire()
    events = observed_events(run.plan, state, "responses")
    if req.stream:
        return EventSourceResponse(
            _stream(run, events, slot.release),
            ping=15,
            background=BackgroundTask(slot.release),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        try:
            done = await run_to_done(events, request, run.items.feed)
        except PromptTooLongError as exc:
            raise bad_request(str(exc), "input", code="context_length_exceeded") from None
        finish(run, done)
        return JSONResponse(run.body())
    finally:
        slot.release()


async def _stream(run: ResponseRun, events: AsyncIterator[Event], release) -> AsyncIterator[dict]:
    sequence = 0

    def sse(event: dict[str, Any]) -> dict:
        nonlocal sequence
        event["sequence_number"] = sequence
        sequence += 1
        return {"event": event["type"], "data": json.dumps(event)}

    try:
        yield sse({"type": "response.created", "response": run.body()})
        yield sse({"type": "response.in_progress", "response": run.body()})
        async for event in events:
            for item_event in run.items.feed(event):
                yield sse(item_event)
            if isinstance(event, Done):
                for item_event in finish(run, event):
                    yield sse(item_event)
                kind = "response.incomplete" if run.status == "incomplete" else "response.completed"
                yield sse({"type": kind, "response": run.body()})
    except Exception as exc:  # whatever failed, the stream ends with response.failed
        if isinstance(exc, PromptTooLongError):
            run.error = {"code": "invalid_prompt", "message": str(exc)}
        else:
            log.exception("responses stream failed id=%s", run.id)
            run.error = {"code": "server_error", "message": "the generation failed"}
        run.status = "failed"
        yield sse({"type": "response.failed", "response": run.body()})
    finally:
        release()
        await events.aclose()
