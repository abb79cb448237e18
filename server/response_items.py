"""Loop events to the Responses API's output items and stream events.

Pure, and the one translation both the streaming and the non-streaming endpoint use: a stream sends
the events :meth:`ResponseItems.feed` returns (the caller numbers them), a plain reply takes
:attr:`ResponseItems.output` at the end. One loop step is one item: thinking is a ``reasoning`` item,
a search a ``web_search_call``, code a ``code_interpreter_call``, an MCP tool an ``mcp_call``, a call
of the client's function a ``function_call``, the answer a ``message``. Tool items take their id
from the step's :func:`~agent_runtime.tool_steps.step_id`.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from agent_runtime.events import Done, Event
from agent_runtime.protocol import Protocol
from agent_runtime.tool_steps import ToolStep
from server.reply import ReplyBuilder

StreamEvent = dict[str, Any]  # without its sequence_number, which the endpoint adds


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseItems:
    def __init__(self, protocol: Protocol, response_id: str, *, container_id: str,
                 mcp_server_of: Mapping[str, str] | None = None) -> None:
        self.output: list[dict[str, Any]] = []
        self.container_id = container_id
        self.mcp_server_of = dict(mcp_server_of or {})  # MCP tool name -> its server's label
        self._reply = ReplyBuilder(protocol, response_id)
        self._text: int | None = None  # index of the open reasoning or message item
        self._steps: dict[str, int] = {}  # tool step id -> index of its item

    @property
    def reasoning(self) -> str:
        return self._reply.reasoning

    @property
    def content(self) -> str:
        return self._reply.content

    def feed(self, event: Event) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for delta in self._reply.feed(event):
            if delta.tool_step is not None:
                out += self._step(delta.tool_step)
            elif delta.content:
                out += self._text_delta("message", delta.content)
            elif delta.reasoning and delta.reasoning_part in ("think", "notice"):
                out += self._text_delta("reasoning", delta.reasoning)
            # A tool call's text and its output are in the tool's item, not repeated as reasoning.
        if isinstance(event, Done):  # an answer cut by the token budget is an incomplete item
            out += self._close_text("incomplete" if event.finish_reason == "length" else "completed")
        return out

    def function_calls(self, calls: list[dict[str, Any]]) -> list[StreamEvent]:
        """The client's function calls (OpenAI ``tool_calls`` dicts), each a ``function_call`` item."""
        out = self._close_text()
        for call in calls:
            item = {"id": _item_id("fc"), "type": "function_call", "status": "in_progress", "call_id": call["id"],
                    "name": call["function"]["name"], "arguments": ""}
            index = self._add(item, out)
            arguments = call["function"]["arguments"]
            out.append({"type": "response.function_call_arguments.delta", "item_id": item["id"],
                        "output_index": index, "delta": arguments})
            out.append({"type": "response.function_call_arguments.done", "item_id": item["id"],
                        "output_index": index, "arguments": arguments})
            item.update(arguments=arguments, status="completed")
            out.append(self._done(index))
        return out

    # -- text items ---------------------------------------------------------------------------

    def _text_delta(self, kind: str, text: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._text is None or self.output[self._text]["type"] != kind:
            out += self._close_text()
            if kind == "message":
                item = {"id": _item_id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                        "content": []}
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            else:
                item = {"id": _item_id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
                part = {"type": "reasoning_text", "text": ""}
            self._text = self._add(item, out)
            item["content"].append(part)
            out.append({"type": "response.content_part.added", "item_id": item["id"], "output_index": self._text,
                        "content_index": 0, "part": dict(part)})
        item = self.output[self._text]
        item["content"][0]["text"] += text
        if kind == "message":
            out.append({"type": "response.output_text.delta", "item_id": item["id"], "output_index": self._text,
                        "content_index": 0, "delta": text, "logprobs": []})
        else:
            out.append({"type": "response.reasoning_text.delta", "item_id": item["id"], "output_index": self._text,
                        "content_index": 0, "delta": text})
        return out

    def _close_text(self, status: str = "completed") -> list[StreamEvent]:
        if self._text is None:
            return []
        index, self._text = self._text, None
        item = self.output[index]
        part = item["content"][0]
        if item["type"] == "message":
            done = {"type": "response.output_text.done", "text": part["text"], "logprobs": []}
        else:
            done = {"type": "response.reasoning_text.done", "text": part["text"]}
        item["status"] = status
        common = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [{**done, **common},
                {"type": "response.content_part.done", **common, "part": dict(part)},
                self._done(index)]

    # -- tool items ---------------------------------------------------------------------------

    def _step(self, step: ToolStep) -> list[StreamEvent]:
        if step.status == "running":
            out = self._close_text()
            item = self._tool_item(step)
            index = self._add(item, out)
            self._steps[step.id] = index
            out += self._progress(item, index, step)
            return out
        index = self._steps.pop(step.id)
        item = self.output[index]
        out = []
        if item["type"] == "web_search_call":
            item["status"] = "completed" if step.ok else "failed"
            sources = [{"type": "url", "url": h.url} for h in step.hits if h.url]
            if sources:
                item["action"]["sources"] = sources
            out.append({"type": "response.web_search_call.completed", "item_id": item["id"], "output_index": index})
        elif item["type"] == "code_interpreter_call":
            # Code that raised still ran: its traceback is in the logs, as OpenAI reports it.
            item["status"] = "completed"
            item["outputs"] = [{"type": "logs", "logs": step.output or ""},
                               *({"type": "image", "url": url} for url in step.images)]
            out.append({"type": "response.code_interpreter_call.completed", "item_id": item["id"],
                        "output_index": index})
        else:
            item["status"] = "completed" if step.ok else "failed"
            if step.ok:
                item["output"] = step.output or ""
                out.append({"type": "response.mcp_call.completed", "item_id": item["id"], "output_index": index})
            else:
                item["error"] = {"type": "mcp_tool_execution_error", "content": step.output or ""}
                out.append({"type": "response.mcp_call.failed", "item_id": item["id"], "output_index": index})
        out.append(self._done(index))
        return out

    def _tool_item(self, step: ToolStep) -> dict[str, Any]:
        if step.name == "search":
            return {"id": step.id, "type": "web_search_call", "status": "in_progress",
                    "action": {"type": "search", "query": step.arguments}}
        if step.name == "code":
            return {"id": step.id, "type": "code_interpreter_call", "status": "in_progress", "code": step.arguments,
                    "container_id": self.container_id, "outputs": None}
        # An MCP tool, or a call the runtime refused (an unknown name, bad arguments): the latter has
        # no server and fails with the runtime's message, which the model also read.
        return {"id": step.id, "type": "mcp_call", "status": "in_progress", "name": step.name,
                "arguments": step.arguments, "server_label": self.mcp_server_of.get(step.name, "")}

    def _progress(self, item: dict[str, Any], index: int, step: ToolStep) -> list[StreamEvent]:
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "web_search_call":
            return [{"type": "response.web_search_call.in_progress", **at},
                    {"type": "response.web_search_call.searching", **at}]
        if item["type"] == "code_interpreter_call":
            return [{"type": "response.code_interpreter_call.in_progress", **at},
                    {"type": "response.code_interpreter_call_code.delta", **at, "delta": step.arguments},
                    {"type": "response.code_interpreter_call_code.done", **at, "code": step.arguments},
                    {"type": "response.code_interpreter_call.interpreting", **at}]
        return [{"type": "response.mcp_call.in_progress", **at},
                {"type": "response.mcp_call_arguments.done", **at, "arguments": step.arguments}]

    # -- bookkeeping --------------------------------------------------------------------------

    def _add(self, item: dict[str, Any], out: list[StreamEvent]) -> int:
        self.output.append(item)
        index = len(self.output) - 1
        out.append({"type": "response.output_item.added", "output_index": index, "item": _copy(item)})
        return index

    def _done(self, index: int) -> StreamEvent:
        return {"type": "response.output_item.done", "output_index": index, "item": _copy(self.output[index])}


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot: later deltas change the live item, not what an earlier event said."""
    out = dict(item)
    if isinstance(out.get("content"), list):
        out["content"] = [dict(p) for p in out["content"]]
    if isinstance(out.get("action"), dict):
        out["action"] = dict(out["action"])
    return out
