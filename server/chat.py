"""``/v1/chat/completions``: the agent loop runs server-side; tool steps stream to the client."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi import Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from agent_runtime.backends.base import PromptTooLongError, SamplingParams
from agent_runtime.budget import Budget
from agent_runtime.events import Done, Event, Token, ToolResult
from agent_runtime.functions import (
    ForcedCall,
    Function,
    FunctionSchemaError,
    builtin_functions,
    client_function,
    forced_call,
    offered_functions,
)
from agent_runtime.loop import enabled_tool_names, run
from agent_runtime.parser import SegmentKind, parse
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import BlockRole, Protocol, get_protocol
from agent_runtime.tools import ToolRegistry
from server.errors import APIError, bad_request
from server.reply import ReplyBuilder, ReplyDelta
from server.schemas import ChatCompletionRequest, ChatMessage
from server.state import ServerState
from server.stops import StopTrimmer

log = logging.getLogger(__name__)


@dataclass
class ChatPlan:
    """A validated request, ready to run."""

    id: str
    created: int
    model: str
    protocol: Protocol
    prompt_ids: list[int]
    tools: tuple[str, ...]
    budget: Budget
    sampling: SamplingParams
    stops: list[str]
    include_usage: bool
    tokenizer: Any
    functions: list[Function] | None = None  # offered to a function-calling model
    forced: ForcedCall | None = None  # the call tool_choice demands of the first turn
    parallel_tool_calls: bool = True
    registry: ToolRegistry | None = None  # the tools, code bound to a container; None: the server's


def refuse_unsupported(req: ChatCompletionRequest) -> None:
    """Parameters this server cannot honour get a 400 that names them, never a silent ignore."""
    if req.n not in (None, 1):
        raise bad_request("n > 1 is not supported: send one request per completion", "n")
    if req.logprobs:
        raise bad_request("logprobs are not returned by chat completions here; use /v1/completions", "logprobs")
    if req.top_logprobs:
        raise bad_request("top_logprobs is not supported", "top_logprobs")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise bad_request("only response_format {\"type\": \"text\"} is supported", "response_format")
    if req.functions:
        raise bad_request("the deprecated `functions` field is not supported: send them as `tools` "
                          "([{\"type\": \"function\", \"function\": {...}}])", "functions")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name):
            raise bad_request(f"{name} is not supported", name)
    # vLLM's sampling extensions, in range (schemas) but only their neutral values can be honoured.
    for name, neutral in (("top_k", (0, -1)), ("min_p", (0,)), ("repetition_penalty", (1,))):
        if getattr(req, name) not in (None, *neutral):
            raise bad_request(f"{name} is not supported", name)
    for i, message in enumerate(req.messages):
        if isinstance(message.content, list):
            for j, part in enumerate(message.content):
                if part.type != "text":
                    raise bad_request(f"content parts of type {part.type!r} are not supported (text only)",
                                      f"messages.{i}.content.{j}.type")


def history_messages(protocol: Protocol, messages: list[ChatMessage]) -> list[dict]:
    """The conversation as the model sees it; earlier assistant turns keep only their answer (and,
    under a function-calling protocol, their calls of the client's functions)."""
    out = []
    for message in messages:
        role = "system" if message.role == "developer" else message.role
        text = message.text()
        if role == "assistant":
            text = assistant_history_text(protocol, text)
        item: dict[str, Any] = {"role": role, "content": text}
        if message.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.function.name, "arguments": _arguments(c.function.arguments)}}
                                  for c in message.tool_calls]
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _arguments(text: str) -> Any:
    """A call's arguments as an object where they parse (templates render objects), else the text."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, dict) else text


def assistant_history_text(protocol: Protocol, text: str) -> str:
    """Drop reasoning and tool blocks from an earlier reply; present its answer as the protocol does."""
    if protocol.boxed_answer:
        return text
    segments = parse(protocol, text)
    if protocol.function_calling:  # the reply's plain text is its answer
        return "".join(s.text for s in segments if s.kind is SegmentKind.PLAIN).strip()
    answer = protocol.block("answer")
    answers = [s.text.strip() for s in segments if s.kind is SegmentKind.BLOCK and s.block.role is BlockRole.ANSWER]
    plain = "".join(s.text for s in segments if s.kind is SegmentKind.PLAIN).strip()
    body = answers[-1] if answers else plain
    return f"{answer.open}{body}{answer.close}"


def plan_chat(req: ChatCompletionRequest, state: ServerState) -> ChatPlan:
    refuse_unsupported(req)
    state.check_model(req.model)
    options = req.agent
    try:
        protocol = get_protocol(options.protocol) if options.protocol else state.protocol
    except ValueError as exc:
        raise bad_request(str(exc), "agent.protocol") from None
    if options.tools is True:
        wanted = None
    elif options.tools is False:
        wanted = ()
    else:
        unknown = [t for t in options.tools if t not in state.tools.names]
        if unknown:
            raise bad_request(f"unknown tools {unknown}; this server has {list(state.tools.names)}", "agent.tools")
        wanted = tuple(options.tools)
    if req.web_search_options is not None:
        if "search" not in state.tools:
            raise bad_request("this server has no search backend (start it with --search-backend)", "web_search_options")
        if wanted is not None and "search" not in wanted:
            wanted = (*wanted, "search")
    tools = enabled_tool_names(protocol, state.tools, wanted)
    server_functions = [f for f in state.mcp_functions if wanted is None or f.tool in wanted]
    functions, forced = plan_functions(req, protocol, tools, server_functions)
    max_tokens = req.max_completion_tokens or req.max_tokens or state.budget.max_total_tokens
    budget = replace(
        state.budget,
        max_total_tokens=max_tokens,
        max_tool_calls=state.budget.max_tool_calls if options.max_tool_calls is None else options.max_tool_calls,
        max_tokens_per_turn=options.max_tokens_per_turn or state.budget.max_tokens_per_turn,
        wall_clock_s=options.wall_clock_s or state.budget.wall_clock_s,
    )
    prompt_ids = build_prompt_ids(state.backend.tokenizer, protocol, history_messages(protocol, req.messages), tools,
                                  functions=functions)
    context = state.backend.info.context_length
    if len(prompt_ids) >= context:
        raise bad_request(
            f"this model's maximum context length is {context} tokens; the messages take {len(prompt_ids)}",
            "messages",
            code="context_length_exceeded",
        )
    temperature = state.temperature if req.temperature is None else req.temperature
    return ChatPlan(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=state.model_name,
        protocol=protocol,
        prompt_ids=prompt_ids,
        tools=tools,
        budget=budget,
        sampling=SamplingParams(temperature=temperature, top_p=req.top_p or 1.0, seed=req.seed),
        stops=req.stops,
        include_usage=req.include_usage,
        tokenizer=state.backend.tokenizer,
        functions=functions,
        forced=forced,
        parallel_tool_calls=req.parallel_tool_calls is not False,
    )


def plan_functions(req: ChatCompletionRequest, protocol: Protocol, tools: tuple[str, ...],
                   server_functions: Sequence[Function] = ()) -> tuple[list[Function] | None, ForcedCall | None]:
    """The functions offered to a function-calling model (the built-in tools', the MCP servers'
    ``server_functions``, the client's), and how ``tool_choice`` ``required`` or a named function
    forces the first turn (:func:`~agent_runtime.functions.forced_call`). Other protocols: no
    functions, and a 400 for any request that needs them."""
    if not protocol.function_calling:
        if req.tools:
            raise bad_request(
                f"the {protocol.name} protocol cannot call the client's functions: this server runs its own tools "
                "(search, code) inside the agent loop; choose them with the `agent` field, e.g. "
                "{\"agent\": {\"tools\": [\"code\"]}}, or serve a function-calling model with --protocol hermes",
                "tools")
        if req.tool_choice not in (None, "none", "auto"):
            raise bad_request(f"tool_choice {req.tool_choice!r} needs client functions, which the {protocol.name} "
                              "protocol cannot call", "tool_choice")
        for i, message in enumerate(req.messages):
            if message.role == "tool" or message.tool_calls:
                raise bad_request(f"the {protocol.name} protocol makes no calls of the client's functions, so it "
                                  "takes no tool messages or tool calls", f"messages.{i}.role")
        return None, None
    client: list[Function] = []
    for i, spec in enumerate(req.tools or []):
        try:
            client.append(client_function(spec))
        except FunctionSchemaError as exc:
            raise bad_request(str(exc), f"tools.{i}") from None
    if req.tool_choice == "none":
        client = []
    try:
        functions = offered_functions([*builtin_functions(tools), *server_functions], client)
    except FunctionSchemaError as exc:
        raise bad_request(f"{exc}: a client function may not take the name of one of the server's tools", "tools") from None
    choice = req.tool_choice
    if choice == "required":
        if not functions:
            raise bad_request("tool_choice 'required' needs at least one function in `tools`", "tool_choice")
        return functions, forced_call(protocol, functions)
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        chosen = next((f for f in functions if f.name == name), None)
        if chosen is None:
            raise bad_request("tool_choice must name one of the functions in `tools`: "
                              "{\"type\": \"function\", \"function\": {\"name\": ...}}", "tool_choice")
        return functions, forced_call(protocol, [chosen])
    return functions, None


async def chat_completions(req: ChatCompletionRequest, request: Request, state: ServerState, owner: str):
    plan = plan_chat(req, state)
    slot = state.limiter.acquire()
    session = req.agent.session_id
    if session is not None and "code" in plan.tools:
        try:
            if state.containers is None:
                raise bad_request("code sessions need the sandbox, which this server runs without", "agent.session_id")
            container = await state.containers.open_named(owner, session, param="agent.session_id")
        except BaseException:
            slot.release()
            raise
        slot.also_release(container.release)
        plan.registry = state.containers.tools(state.tools, container)
    events = observed_events(plan, state, "chat")
    if plan.stops:
        events = _without_stop_strings(events, plan.stops)
    if req.stream:
        return EventSourceResponse(
            _stream(plan, events, slot.release),
            ping=15,
            background=BackgroundTask(slot.release),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        return JSONResponse(await _complete(plan, events, request))
    finally:
        slot.release()


async def _without_stop_strings(events: AsyncIterator[Event], stops: list[str]) -> AsyncIterator[Event]:
    """A client's stop string ends the reply and is not returned (OpenAI's and vLLM's behaviour).

    Model text that could still turn into a stop string is held back until it cannot.
    """
    trimmer = StopTrimmer(tuple(stops), include_stop=False)
    async for event in events:
        if isinstance(event, Token):
            text = trimmer.feed(event.text, None)
            if text or event.token_ids:
                yield Token(text, event.token_ids)
            continue
        if isinstance(event, Done):
            stop = next((s for s in stops if s in trimmer.pending), None)
            tail = trimmer.feed("", stop) if event.agent_finish_reason == "stop_sequence" else trimmer.flush()
        else:  # a tool call or injected text: the turn ended without a stop string
            tail = trimmer.flush()
        if tail:
            yield Token(tail, [])
        yield event


async def observed_events(plan: ChatPlan, state: ServerState, endpoint: str) -> AsyncIterator[Event]:
    """The loop's events for ``plan``, with metrics recorded on the way (labelled ``endpoint``)."""
    metrics = state.metrics
    started = time.perf_counter()
    first_token = True
    metrics.in_flight.inc()
    try:
        async for event in run(plan.prompt_ids, state.backend, plan.registry or state.tools, protocol=plan.protocol,
                               budget=plan.budget, sampling=plan.sampling, enabled_tools=plan.tools, stop=plan.stops,
                               functions=plan.functions, forced=plan.forced):
            if first_token and isinstance(event, Token) and event.token_ids:
                metrics.ttft.labels(endpoint).observe(time.perf_counter() - started)
                first_token = False
            elif isinstance(event, ToolResult):
                metrics.tool_calls.labels(event.name, "ok" if event.output.ok else "error").inc()
                metrics.tool_latency.labels(event.name).observe(event.seconds)
            elif isinstance(event, Done):
                u = event.usage
                metrics.count_usage(u.prompt_tokens, u.completion_tokens, u.injected_tokens)
            yield event
    finally:
        metrics.in_flight.dec()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def reasoning_tokens(done: Done, content: str, tokenizer: Any) -> int:
    """Everything the model wrote that is not the final content (re-tokenized estimate)."""
    content_tokens = len(tokenizer.encode(content, add_special_tokens=False)) if content else 0
    return max(0, done.usage.completion_tokens - content_tokens)


def _usage(done: Done, builder: ReplyBuilder, tokenizer: Any) -> dict:
    u = done.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens(done, builder.content, tokenizer)},
        "injected_tokens": u.injected_tokens,  # tool output, not generated: an extension field
    }


async def run_to_done(events: AsyncIterator[Event], request: Request, feed: Callable[[Event], Any]) -> Done:
    """Feed every event to ``feed`` and return the last; a client that disconnects meanwhile
    cancels the run (and its sandbox work)."""

    async def consume() -> Done:
        done = None
        async for event in events:
            feed(event)
            if isinstance(event, Done):
                done = event
        return done

    task = asyncio.ensure_future(consume())
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if not task.done() and await request.is_disconnected():
            task.cancel()
            break
    return await task


async def _complete(plan: ChatPlan, events: AsyncIterator[Event], request: Request) -> dict:
    builder = ReplyBuilder(plan.protocol, plan.id)
    try:
        done = await run_to_done(events, request, builder.feed)
    except PromptTooLongError as exc:
        raise bad_request(str(exc), "messages", code="context_length_exceeded") from None
    calls = client_tool_calls(plan, done)
    message = {
        "role": "assistant",
        "content": builder.content or (None if calls else ""),
        "refusal": None,
        "reasoning_content": builder.reasoning,
        "reasoning": builder.reasoning,
        "tool_steps": [s.model_dump() for s in builder.steps.values()],
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": done.finish_reason,
            "agent_finish_reason": done.agent_finish_reason,
            "logprobs": None,
        }],
        "usage": _usage(done, builder, plan.tokenizer),
    }


def client_tool_calls(plan: ChatPlan, done: Done) -> list[dict]:
    """The reply's calls of the client's functions, as OpenAI ``tool_calls`` (fresh ids, so that ids
    stay unique across a conversation's turns); one only when ``parallel_tool_calls`` is false."""
    calls = done.trajectory.client_calls
    if not plan.parallel_tool_calls:
        calls = calls[:1]
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _chunk(plan: ChatPlan, delta: dict, finish_reason: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None, **extra}
    return json.dumps({"id": plan.id, "object": "chat.completion.chunk", "created": plan.created,
                       "model": plan.model, "choices": [choice]})


def _delta_body(d: ReplyDelta) -> dict:
    body: dict[str, Any] = {}
    if d.reasoning:
        body["reasoning"] = body["reasoning_content"] = d.reasoning  # vLLM's new name and SGLang's
        body["reasoning_part"] = d.reasoning_part
    if d.content:
        body["content"] = d.content
    if d.tool_step is not None:
        body["tool_step"] = d.tool_step.model_dump()
    return body


async def _stream(plan: ChatPlan, events: AsyncIterator[Event], release) -> AsyncIterator[dict]:
    builder = ReplyBuilder(plan.protocol, plan.id)
    try:
        yield {"data": _chunk(plan, {"role": "assistant", "content": ""})}
        async for event in events:
            for delta in builder.feed(event):
                yield {"data": _chunk(plan, _delta_body(delta))}
            if isinstance(event, Done):
                calls = client_tool_calls(plan, event)
                if calls:  # OpenAI's indexed deltas, each call whole
                    yield {"data": _chunk(plan, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})}
                yield {"data": _chunk(plan, {}, event.finish_reason, agent_finish_reason=event.agent_finish_reason)}
                if plan.include_usage:
                    yield {"data": json.dumps({
                        "id": plan.id, "object": "chat.completion.chunk", "created": plan.created,
                        "model": plan.model, "choices": [], "usage": _usage(event, builder, plan.tokenizer),
                    })}
    except asyncio.CancelledError:
        raise  # the client went away: the loop's generator is closed, its tool call cancelled
    except PromptTooLongError as exc:
        yield {"data": json.dumps(bad_request(str(exc), "messages", code="context_length_exceeded").body())}
    except Exception:
        log.exception("chat stream failed id=%s", plan.id)
        yield {"data": json.dumps(APIError(500, "the generation failed", type="server_error").body())}
    finally:
        release()
        await events.aclose()
    yield {"data": "[DONE]"}
