"""What a streamed agent reply looks like as a list of messages: thinking, each tool step, the answer.

Pure: it reads the stream's deltas (``delta.reasoning`` with its ``reasoning_part``, ``delta.tool_step``,
``delta.content``) and keeps the messages a chat UI shows. The Gradio page and ``tapo chat`` both render
from it, so they show the same thing. Tool calls and their outputs are shown from ``tool_step`` (their
trace in the reasoning is left out); the thinking between them becomes its own message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

__all__ = ["ReplyView", "ViewMessage", "chunk_delta"]

Kind = Literal["thinking", "tool", "notice", "answer", "error"]
SHOWN_OUTPUT_CHARS = 4000  # of a tool's output, in its message


@dataclass
class ViewMessage:
    kind: Kind
    title: str
    text: str
    status: Literal["pending", "done"] = "pending"
    seconds: float | None = None
    step_id: str | None = None
    started: float = 0.0

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
        if step.get("status") == "done":
            shown.status = "done"
            shown.seconds = step.get("seconds")
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
