"""A Responses request as the chat request the loop already serves.

Pure: input items become chat messages, hosted tools become the loop's own tools, function tools
become the client's functions, and ``tool_choice`` keeps its meaning. Anything this server cannot
honour is a 400 that names the part of the Responses body at fault.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from server.errors import APIError, bad_request
from server.response_schemas import ResponseRequest
from server.schemas import AgentOptions, ChatCompletionRequest, ChatMessage, MessageToolCall

WEB_SEARCH_TYPES = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")
# Earlier output items a client sends back as history. The loop's own steps are left out (an earlier
# turn keeps its answer, as on chat completions), except that a function-calling model sees its code
# and MCP calls again, with their results, as the calls and tool messages its template renders.
_OWN_STEP_ITEMS = ("reasoning", "web_search_call", "code_interpreter_call", "mcp_call", "mcp_list_tools")
_REPLAYED_CALLS = ("code_interpreter_call", "mcp_call")
# The chat request's names of parameters, as a Responses client wrote them. (A message's index is not
# an input item's: instructions, the stored conversation and replayed calls shift it.)
_PARAM_NAMES = {"max_completion_tokens": "max_output_tokens", "agent.max_tool_calls": "max_tool_calls"}


@dataclass(frozen=True)
class ServerTools:
    """What the server can run for a request: its registry tools and its MCP servers' tools."""

    names: tuple[str, ...]
    mcp_servers: Mapping[str, Sequence[str]] = field(default_factory=dict)  # server label -> tool names


def chat_request(req: ResponseRequest, history: Sequence[ChatMessage], tools: ServerTools, *,
                 function_calling: bool) -> ChatCompletionRequest:
    """The chat request that runs ``req``; ``history`` is the stored conversation it continues;
    ``function_calling``: whether the protocol that will serve it calls functions."""
    refuse_unsupported(req)
    # Instructions lead this turn only: a stored conversation never holds them (OpenAI's rule).
    messages = [ChatMessage(role="system", content=req.instructions)] if req.instructions else []
    messages += [*history, *input_messages(req.input, function_calling=function_calling)]
    if not any(m.role in ("user", "tool") for m in messages):
        raise bad_request("the input holds no user message or function call output", "input")
    functions, enabled = _tools(req.tools, tools)
    if req.tool_choice == "none":  # no tool at all, the hosted ones included (OpenAI's meaning)
        enabled = []
    return ChatCompletionRequest(
        model=req.model,
        messages=messages,
        max_completion_tokens=req.max_output_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        tools=functions or None,
        tool_choice=_tool_choice(req.tool_choice),
        parallel_tool_calls=req.parallel_tool_calls,
        agent=AgentOptions(tools=list(enabled), protocol=req.agent.protocol,
                           max_tool_calls=req.max_tool_calls if req.max_tool_calls is not None else req.agent.max_tool_calls,
                           max_tokens_per_turn=req.agent.max_tokens_per_turn, wall_clock_s=req.agent.wall_clock_s),
    )


def conversation(chat: ChatCompletionRequest, req: ResponseRequest) -> list[ChatMessage]:
    """The messages of ``chat`` that a continuation carries: all but this turn's instructions."""
    return chat.messages[1:] if req.instructions else list(chat.messages)


def listed_input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``input`` as ``/input_items`` lists it: items with ids, a message's text as content parts."""
    items = [{"role": "user", "content": value}] if isinstance(value, str) else value
    listed = []
    for item in items:
        item = dict(item)
        kind = item.setdefault("type", "message")
        if kind == "message" and isinstance(item.get("content"), str):
            part_type = "output_text" if item.get("role") == "assistant" else "input_text"
            part: dict[str, Any] = {"type": part_type, "text": item["content"]}
            if part_type == "output_text":
                part["annotations"] = []
            item["content"] = [part]
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}.get(kind, "item")
        item.setdefault("id", f"{prefix}_{uuid.uuid4().hex}")
        item.setdefault("status", "completed")
        listed.append(item)
    return listed


def as_responses_error(exc: APIError) -> APIError:
    """A chat request's error, naming the parameter as the Responses body calls it."""
    if exc.param is not None:
        if exc.param == "messages" or exc.param.startswith("messages."):
            exc.param = "input"
        for chat_name, name in _PARAM_NAMES.items():
            if exc.param == chat_name or exc.param.startswith(chat_name + "."):
                exc.param = name + exc.param[len(chat_name):]
    return exc


def refuse_unsupported(req: ResponseRequest) -> None:
    if req.background:
        raise bad_request("background responses are not supported: stream instead", "background")
    if req.conversation is not None:
        raise bad_request("conversations are not supported: continue with previous_response_id", "conversation")
    if req.prompt is not None:
        raise bad_request("prompt templates are not supported: send instructions and input", "prompt")
    if req.text is not None and req.text.format is not None and req.text.format.get("type", "text") != "text":
        raise bad_request("only text output is supported (text.format {\"type\": \"text\"})", "text.format")
    if req.agent.session_id is not None:
        raise bad_request("on /v1/responses code runs in the code_interpreter tool's container "
                          "({\"type\": \"auto\"} or a container id), and a continuation keeps it", "agent.session_id")
    if req.agent.model_fields_set & {"tools"}:
        raise bad_request("on /v1/responses the server's tools are chosen in `tools` ({\"type\": \"web_search\"}, "
                          "{\"type\": \"code_interpreter\", ...}, {\"type\": \"mcp\", \"server_label\": ...})",
                          "agent.tools")


def input_messages(value: str | list[dict[str, Any]], *, function_calling: bool = False) -> list[ChatMessage]:
    """``input`` as chat messages: a string is one user message; items keep their order."""
    if isinstance(value, str):
        return [ChatMessage(role="user", content=value)]
    messages: list[ChatMessage] = []

    def add_call(call_id: str, name: str, arguments: str) -> None:
        call = MessageToolCall(id=call_id, function={"name": name, "arguments": arguments})
        last = messages[-1] if messages else None
        if last is not None and last.role == "assistant":  # a turn's calls form one assistant message
            last.tool_calls = [*(last.tool_calls or []), call]
        else:
            messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))

    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, f"input.{i}"))
        elif kind == "function_call":
            add_call(_text_field(item, "call_id", f"input.{i}"), _text_field(item, "name", f"input.{i}"),
                     str(item.get("arguments") or ""))
        elif kind in _REPLAYED_CALLS and function_calling:
            call_id, (name, arguments, result) = _text_field(item, "id", f"input.{i}"), _replayed_call(item)
            add_call(call_id, name, arguments)
            messages.append(ChatMessage(role="tool", content=result, tool_call_id=call_id))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _parts_text(output, f"input.{i}.output", ("input_text",))
            messages.append(ChatMessage(role="tool", content=text,
                                        tool_call_id=_text_field(item, "call_id", f"input.{i}")))
        elif kind in _OWN_STEP_ITEMS:
            continue
        elif kind == "item_reference":
            raise bad_request("item references are not supported: continue with previous_response_id or send the "
                              "items", f"input.{i}")
        else:
            raise bad_request(f"input items of type {kind!r} are not supported", f"input.{i}.type")
    return messages


def _replayed_call(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """An earlier code or MCP call item as (function name, JSON arguments, result text)."""
    if item["type"] == "code_interpreter_call":
        outputs = item.get("outputs")
        outputs = outputs if isinstance(outputs, list) else []
        logs = "".join(str(o.get("logs") or "") for o in outputs if isinstance(o, Mapping))
        return "python", json.dumps({"code": str(item.get("code") or "")}, ensure_ascii=False), logs
    error = item.get("error")
    result = item.get("output") or (json.dumps(error, ensure_ascii=False) if error else "")
    return str(item.get("name") or ""), str(item.get("arguments") or "{}"), str(result)


def _message(item: Mapping[str, Any], where: str) -> ChatMessage:
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        raise bad_request(f"{where}.role must be one of user, system, developer, assistant", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        text = content
    else:
        allowed = ("output_text", "refusal") if role == "assistant" else ("input_text",)
        text = _parts_text(content, f"{where}.content", allowed)
    return ChatMessage(role=role, content=text)


def _parts_text(parts: Any, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(parts, list):
        raise bad_request(f"{where} must be a string or a list of content parts", where)
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in allowed:
            raise bad_request(f"content parts of type {kind!r} are not supported here (text only: "
                              f"{', '.join(allowed)})", f"{where}.{j}.type")
        texts.append(str(part.get("text") or part.get("refusal") or ""))
    return "".join(texts)


def _text_field(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{where}.{name} must be a non-empty string", f"{where}.{name}")
    return value


def _tools(specs: Sequence[Mapping[str, Any]], server: ServerTools) -> tuple[list[dict[str, Any]], list[str]]:
    """The client's functions (as chat tools) and the server tools the request turns on."""
    functions: list[dict[str, Any]] = []
    enabled: list[str] = []
    for i, spec in enumerate(specs):
        kind = spec.get("type")
        if kind == "function":
            name = _text_field(spec, "name", f"tools.{i}")
            functions.append({"type": "function", "function": {
                "name": name, "description": spec.get("description") or "",
                "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
                "strict": bool(spec.get("strict"))}})
        elif kind in WEB_SEARCH_TYPES:
            enabled.append(_server_tool(server, "search", "this server has no search backend (start it with "
                                        "--search-backend)", f"tools.{i}"))
        elif kind == "code_interpreter":
            _container_id(spec, f"tools.{i}.container")  # checked here, opened by the endpoint
            enabled.append(_server_tool(server, "code", "this server runs no code tool", f"tools.{i}"))
        elif kind == "mcp":
            label = spec.get("server_label")
            if not isinstance(label, str) or label not in server.mcp_servers:
                known = ", ".join(server.mcp_servers) or "none"
                raise bad_request(f"no MCP server labelled {label!r}: this server's MCP servers are set when it starts "
                                  f"(--mcp), and their labels are: {known}", f"tools.{i}.server_label")
            approval = spec.get("require_approval", "never")
            asks = (approval.get("always") or {}).get("tool_names") if isinstance(approval, Mapping) else approval != "never"
            if asks:
                raise bad_request("approval of MCP calls is not supported: the server's MCP servers are trusted by "
                                  "its operator; send \"require_approval\": \"never\"", f"tools.{i}.require_approval")
            allowed = spec.get("allowed_tools")
            if isinstance(allowed, Mapping):  # the filter form: {"tool_names": [...]}
                allowed = allowed.get("tool_names")
            names = list(server.mcp_servers[label])
            if allowed is not None:
                if not isinstance(allowed, list):
                    raise bad_request("allowed_tools must be a list of tool names or {\"tool_names\": [...]}",
                                      f"tools.{i}.allowed_tools")
                names = [n for n in names if n in allowed]
            enabled.extend(names)
        else:
            raise bad_request(f"tools of type {kind!r} are not supported: this server runs web_search, "
                              "code_interpreter and mcp, and returns function calls to the client",
                              f"tools.{i}.type")
    return functions, list(dict.fromkeys(enabled))


def requested_container(specs: Sequence[Mapping[str, Any]]) -> tuple[int, str | None] | None:
    """Which container the ``code_interpreter`` tool asks for: (its index in ``tools``, a container id
    or None for ``auto``); None when no such tool is listed."""
    for i, spec in enumerate(specs):
        if spec.get("type") == "code_interpreter":
            return i, _container_id(spec, f"tools.{i}.container")
    return None


def previous_container_ids(value: str | list[dict[str, Any]]) -> list[str]:
    """The containers of the code calls a client sends back as history, oldest first (the Agents SDK
    continues this way, without ``previous_response_id``)."""
    if isinstance(value, str):
        return []
    return [item["container_id"] for item in value
            if item.get("type") == "code_interpreter_call" and isinstance(item.get("container_id"), str)]


def _container_id(spec: Mapping[str, Any], where: str) -> str | None:
    container = spec.get("container", "auto")
    if container == "auto" or isinstance(container, Mapping) and container.get("type", "auto") == "auto":
        return None
    if isinstance(container, str) and container:
        return container
    raise bad_request("container must be \"auto\", {\"type\": \"auto\"} or the id of a container", where)


def _server_tool(server: ServerTools, name: str, missing: str, where: str) -> str:
    if name not in server.names:
        raise bad_request(missing, where)
    return name


def _tool_choice(choice: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind in WEB_SEARCH_TYPES:
        return {"type": "function", "function": {"name": "search"}}
    if kind == "code_interpreter":
        return {"type": "function", "function": {"name": "python"}}
    raise bad_request(f"tool_choice of type {kind!r} is not supported", "tool_choice")
