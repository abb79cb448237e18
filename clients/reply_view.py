"""What a streamed agent reply looks like as a list of messages: thinking, each tool step, the answer.

Pure: it reads the stream's deltas (``delta.reasoning`` with its ``reasoning_part``, ``delta.tool_step``,
``delta.content``; a Responses API stream's events become the same deltas through :func:`event_delta`)
and keeps the messages a chat UI shows. The Gradio page and ``tapo chat`` both render
from it, so they show the same thing. Tool calls and their outputs are shown from ``tool_step`` (their
trace in the reasoning is left out); the thinking between them becomes its own message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

__all__ = ["HOSTED_TOOLS", "ReplyView", "ViewMessage", "chunk_delta", "event_delta"]

Kind = Literal["thinking", "tool", "notice", "answer", "error"]
SHOWN_OUTPUT_CHARS = 4000  # of a tool's output, in its message
# The server's own tools, as a Responses API request turns them on.
HOSTED_TOOLS = ({"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "web_search"})


@dataclass
class ViewMessage:
    kind: Kind
    title: str
    text: str
    status: Literal["pending", "done"] = "pending"
    seconds: float | None = None
    step_id: str | None = None
    started: float = 0.0
    images: list[str] = field(default_factory=list)  # figures a code step drew, as data: URLs

    @property
    def is_step(self) -> bool:
        """Thinking, a tool step or a runtime notice: shown collapsible, with a title."""
        return self.kind in ("thinking", "tool", "notice")


def chunk_delta(chunk: Any) -> dict[str, Any]:
    """The delta of an ``openai`` SDK chunk (or of a raw chunk dict) as a plain dict, extension fields included."""
    if isinstance(chunk, dict):
        choices = chunk.get("choices") or []
        return dict(choices[0].get("delta") or {}) if choices else {}
    if not chunk.choices:
        return {}
    delta = chunk.choices[0].delta
    out = dict(delta.model_extra or {})
    if delta.content:
        out["content"] = delta.content
    return out


def event_delta(event: Any) -> dict[str, Any]:
    """A Responses API stream event (an ``openai`` SDK event or a raw dict) as the chat delta it amounts
    to: reasoning and answer text, and each tool item as the ``tool_step`` it is (sent when it starts
    and when it is done). Other events give an empty delta."""
    event = event if isinstance(event, dict) else event.model_dump()
    kind = event.get("type")
    if kind == "response.reasoning_text.delta":
        return {"reasoning": event["delta"], "reasoning_part": "think"}
    if kind == "response.output_text.delta":
        return {"content": event["delta"]}
    if kind in ("response.output_item.added", "response.output_item.done"):
        step = _item_step(event["item"], done=kind.endswith(".done"))
        return {"tool_step": step} if step else {}
    return {}


def _item_step(item: dict[str, Any], *, done: bool) -> dict[str, Any] | None:
    kind = item.get("type")
    step: dict[str, Any] = {"id": item.get("id"), "status": "done" if done else "running"}
    if kind == "code_interpreter_call":
        outputs = item.get("outputs") or []
        step |= {"name": "code", "arguments": item.get("code") or "", "ok": item.get("status") != "failed",
                 "output": "".join(o.get("logs") or "" for o in outputs if o.get("type") == "logs"),
                 "images": [o["url"] for o in outputs if o.get("type") == "image" and o.get("url")]}
    elif kind == "web_search_call":
        action = item.get("action") or {}
        step |= {"name": "search", "arguments": action.get("query") or "", "ok": item.get("status") != "failed",
                 "hits": [{"title": s.get("url", "")} for s in action.get("sources") or []]}
    elif kind == "mcp_call":
        error = item.get("error")
        step |= {"name": item.get("name") or "tool", "arguments": item.get("arguments") or "",
                 "ok": item.get("status") != "failed",
                 "output": item.get("output") or (str((error or {}).get("content", error)) if error else "")}
    else:
        return None
    return step


@dataclass
class ReplyView:
    clock: Callable[[], float] = time.monotonic
    messages: list[ViewMessage] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "".join(m.text for m in self.messages if m.kind == "answer")

    def feed(self, delta: dict[str, Any]) -> None:
        """One chunk's delta (see :func:`chunk_delta`)."""
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        part = delta.get("reasoning_part", "think")
        if reasoning and part in ("think", "notice"):
            self._thinking(reasoning, "thinking" if part == "think" else "notice")
        if delta.get("tool_step"):
            self._step(delta["tool_step"])
        if delta.get("content"):
            self._content(delta["content"])

    def fail(self, message: str) -> None:
        """The request failed: close what is open and show why, last."""
        self._close_open()
        self.messages.append(ViewMessage("error", "Error", message, status="done"))

    def finish(self) -> None:
        """The stream ended: nothing stays pending, empty thinking is dropped."""
        self._close_open()
        self.messages = [m for m in self.messages if m.text.strip() or m.kind == "answer"]

    # -- the parts ----------------------------------------------------------------------------

    def _thinking(self, text: str, kind: Kind) -> None:
        last = self.messages[-1] if self.messages else None
        if last is not None and last.kind == kind and last.status == "pending":
            last.text += text
            return
        if not text.strip():
            return  # whitespace between blocks opens nothing
        self._close_open()
        title = "Thinking" if kind == "thinking" else "Note from the runtime"
        self.messages.append(ViewMessage(kind, title, text.lstrip(), started=self.clock()))

    def _step(self, step: dict[str, Any]) -> None:
        shown = next((m for m in self.messages if m.step_id == step["id"]), None)
        if shown is None:
            self._close_open()
            shown = ViewMessage("tool", _step_title(step), "", step_id=step["id"], started=self.clock())
            self.messages.append(shown)
        shown.text = _step_text(step)
        shown.images = list(step.get("images") or [])
        if step.get("status") == "done":
            shown.status = "done"
            seconds = step.get("seconds")  # the server's timing; a Responses item has none: timed here
            shown.seconds = seconds if seconds is not None else round(self.clock() - shown.started, 3)
            if step.get("ok") is False:
                shown.title += " (failed)"

    def _content(self, text: str) -> None:
        last = self.messages[-1] if self.messages else None
        if last is None or last.kind != "answer":
            self._close_open()
            last = ViewMessage("answer", "", "", status="done")
            self.messages.append(last)
        last.text += text

    def _close_open(self) -> None:
        now = self.clock()
        for m in self.messages:
            if m.status == "pending":
                m.status = "done"
                if m.seconds is None:
                    m.seconds = round(now - m.started, 3)
                m.text = m.text.rstrip()


def _step_title(step: dict[str, Any]) -> str:
    name, args = step.get("name", "tool"), " ".join(str(step.get("arguments", "")).split())
    if name == "search":
        return f"Search: {args[:80]}"
    if name == "code":
        return "Python"
    return f"Tool: {name}"


def _step_text(step: dict[str, Any]) -> str:
    name, args = step.get("name"), str(step.get("arguments", "")).strip()
    parts = [f"```python\n{args}\n```" if name == "code" else f"Query: {args}"]
    if step.get("status") != "done":
        parts.append("running…")
        return "\n\n".join(parts)
    hits = step.get("hits") or []
    if hits:
        parts.append("\n".join(f"{i}. {h.get('title', '')}" for i, h in enumerate(hits, 1)))
    output = str(step.get("output") or "").strip()
    if len(output) > SHOWN_OUTPUT_CHARS:
        output = output[:SHOWN_OUTPUT_CHARS] + "\n[…]"
    label = "Output" if step.get("ok") is not False else "Error"
    parts.append(f"{label}:\n```\n{output or '(no output)'}\n```")
    return "\n\n".join(parts)
