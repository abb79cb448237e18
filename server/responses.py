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
from server.limits import Slot
from server.response_input import (
    ServerTools,
    as_responses_error,
    chat_request,
    conversation,
    input_messages,
    listed_input_items,
    previous_container_ids,
    requested_container,
)
from server.response_items import ResponseItems
from server.response_schemas import ResponseRequest
from server.response_store import StoredResponse
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
    conversation: list[ChatMessage] = field(default_factory=list)  # what it continued, then its input
    container_id: str | None = None  # the code container it runs in
    stored: bool = False  # kept when it ends (``store`` asked for, and this server has a store)

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
            "store": self.stored,
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
    available = server_tools(state)
    try:
        chat = chat_request(req, history, available, function_calling=protocol.function_calling)
        plan = plan_chat(chat, state)
    except APIError as exc:
        raise as_responses_error(exc) from None
    except ValidationError as exc:  # an input item whose values a chat message cannot hold
        raise bad_request(f"input: {exc.errors()[0]['msg']}", "input") from None
    response_id = f"resp_{uuid.uuid4().hex}"
    mcp_server_of = {name: label for label, names in available.mcp_servers.items() for name in names}
    items = ResponseItems(plan.protocol, response_id, container_id=f"cntr_{response_id[5:]}",
                          mcp_server_of=mcp_server_of)
    return ResponseRun(id=response_id, created_at=int(time.time()), request=req, plan=plan, items=items,
                       conversation=conversation(chat, req), stored=req.store and state.store is not None)


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


async def save(run: ResponseRun, state: ServerState, owner: str) -> None:
    """Keep a finished response: its object, its input items, and the conversation it ends."""
    if not run.stored:
        return
    reply = input_messages(run.items.output, function_calling=run.plan.protocol.function_calling)
    record = StoredResponse(run.id, run.body(), listed_input_items(run.request.input),
                            [m.model_dump(exclude_none=True) for m in [*run.conversation, *reply]], run.container_id)
    await state.store.aput(owner, record)


async def stored_response(state: ServerState, owner: str, response_id: str,
                          param: str | None = None) -> StoredResponse:
    """A stored response of ``owner``'s; 404 for any other (another key's answers the same as none)."""
    record = await state.store.aget(owner, response_id) if state.store is not None else None
    if record is None:
        raise APIError(404, f"no stored response with id {response_id!r}", type="not_found_error", param=param,
                       code="response_not_found")
    return record


async def delete_stored_response(state: ServerState, owner: str, response_id: str) -> dict[str, Any]:
    if state.store is None or not await state.store.adelete(owner, response_id):
        raise APIError(404, f"no stored response with id {response_id!r}", type="not_found_error",
                       code="response_not_found")
    return {"id": response_id, "object": "response", "deleted": True}


async def list_input_items(state: ServerState, owner: str, response_id: str, *, limit: int, order: str,
                           after: str | None) -> dict[str, Any]:
    items = (await stored_response(state, owner, response_id)).input_items
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise bad_request(f"no input item {after!r} in response {response_id!r}", "after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


async def create_response(req: ResponseRequest, request: Request, state: ServerState, owner: str):
    previous = None
    if req.previous_response_id is not None:
        previous = await stored_response(state, owner, req.previous_response_id, "previous_response_id")
    history = [ChatMessage.model_validate(m) for m in previous.conversation] if previous else []
    run = plan_response(req, state, history)
    slot = state.limiter.acquire()
    try:
        await _open_container(run, state, owner, previous, slot)
    except BaseException:
        slot.release()
        raise
    events = observed_events(run.plan, state, "responses")
    if req.stream:
        return EventSourceResponse(
            _stream(run, events, slot.release, state, owner),
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
        await save(run, state, owner)
        return JSONResponse(run.body())
    finally:
        slot.release()


async def _open_container(run: ResponseRun, state: ServerState, owner: str, previous: StoredResponse | None,
                          slot: Slot) -> None:
    """Bind the run's code to its container: the one the tool names, else the conversation's while it
    lives, else a new one. Without the sandbox's sessions code runs statelessly, under a per-response id."""
    wanted = requested_container(run.request.tools)
    if wanted is None or "code" not in run.plan.tools:
        return
    index, container_id = wanted
    if state.containers is None:
        if container_id is not None:
            raise APIError(404, f"container {container_id!r} does not exist: this server keeps no containers (it "
                                "runs code without the sandbox)", type="not_found_error",
                           param=f"tools.{index}.container", code="container_not_found")
        return
    if container_id is None:  # auto: the conversation's own, where one still lives
        await state.containers.reap()
        earlier = [previous.container_id if previous else None, *previous_container_ids(run.request.input)]
        container_id = next((c for c in reversed(earlier) if state.containers.is_live(owner, c)), None)
    container = await state.containers.open(owner, container_id, param=f"tools.{index}.container")
    slot.also_release(container.release)
    run.plan.registry = state.containers.tools(state.tools, container)
    run.container_id = run.items.container_id = container.id


async def _stream(run: ResponseRun, events: AsyncIterator[Event], release, state: ServerState,
                  owner: str) -> AsyncIterator[dict]:
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
                await save(run, state, owner)  # before the last event: a client may continue at once
                kind = "response.incomplete" if run.status == "incomplete" else "response.completed"
                yield sse({"type": kind, "response": run.body()})
                return  # the loop's clean-up (in finally) cannot turn a finished response into a failed one
    except Exception as exc:  # whatever failed, the stream ends with response.failed
        if isinstance(exc, PromptTooLongError):
            run.error = {"code": "invalid_prompt", "message": str(exc)}
        else:
            log.exception("responses stream failed id=%s", run.id)
            run.error = {"code": "server_error", "message": "the generation failed"}
        run.status = "failed"
        try:
            await save(run, state, owner)
        except Exception:
            log.exception("could not store the failed response id=%s", run.id)
        yield sse({"type": "response.failed", "response": run.body()})
    finally:
        release()
        await events.aclose()
