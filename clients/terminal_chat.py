"""``tapo chat``: a terminal client of the agent API, rendering each thinking span and tool step as it streams.

It speaks to any server of ours through the ``openai`` SDK, like the page, and draws the same
:class:`~clients.reply_view.ReplyView`: thinking dimmed, each tool step a panel with its program or
query and its output, the answer last.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import openai
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from clients.api_errors import error_text
from clients.reply_view import HOSTED_TOOLS, ReplyView, ViewMessage, chunk_delta, event_delta

__all__ = ["ChatSettings", "PlainPrinter", "chat_turn", "plain_text", "repl", "render"]


@dataclass
class ChatSettings:
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    model: str | None = None  # default: the server's only model
    tools: bool = True
    max_tool_calls: int | None = None
    temperature: float = 0.0
    api: str = "chat"  # or "responses": the Responses API, each turn continuing the last (its code state too)
    history: list[dict] = field(default_factory=list)
    previous_response_id: str | None = None


def render(view: ReplyView) -> RenderableType:
    return Group(*(_render_message(m) for m in view.messages))


def _render_message(m: ViewMessage) -> RenderableType:
    took = f" · {_duration(m.seconds)}" if m.seconds is not None else (" · running" if m.status == "pending" else "")
    if m.kind == "answer":
        return Group(Text("Answer", style="bold green"), Markdown(m.text))
    if m.kind == "error":
        return Text(f"error: {m.text}", style="bold red")
    if m.kind in ("thinking", "notice"):
        return Text(f"{m.title}{took}\n{m.text}", style="dim italic")
    body: list[RenderableType] = []
    for i, block in enumerate(m.text.split("```")):  # prose and fenced blocks alternate
        if not block.strip():
            continue
        if i % 2:
            lang, _, code = block.partition("\n")
            body.append(Syntax(code.rstrip(), lang.strip() or "text", theme="ansi_dark", word_wrap=True))
        else:
            body.append(Text(block.strip()))
    return Panel(Group(*body), title=f"{m.title}{took}", title_align="left", border_style="cyan")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _client(settings: ChatSettings) -> openai.OpenAI:
    return openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or "no-key", max_retries=0, timeout=600)


def _model(client: openai.OpenAI, settings: ChatSettings) -> str:
    if settings.model is None:
        settings.model = client.models.list().data[0].id
    return settings.model


def chat_turn(question: str, settings: ChatSettings, console: Console) -> ReplyView:
    """Ask ``question`` (with the conversation so far), render the reply as it streams; returns its view.

    A terminal gets the live drawing; a pipe or file gets plain lines (no padding to the console's
    width, no escape codes), each message once it is complete, ending with a newline.
    """
    view = ReplyView()
    client = _client(settings)
    messages = settings.history + [{"role": "user", "content": question}]
    drawing = Live(render(view), console=console, refresh_per_second=12) if console.is_terminal else None
    printed = PlainPrinter(console.file)
    try:
        with drawing or contextlib.nullcontext():
            try:
                for delta in _deltas(client, settings, question, messages):
                    if "error" in delta:
                        view.fail(delta["error"])
                        break
                    view.feed(delta)
                    if drawing is not None:
                        drawing.update(render(view))
                    else:
                        printed.update(view.messages[:-1])  # the last one may still grow
                view.finish()
                _save_figures(view)
            except openai.OpenAIError as exc:
                view.fail(error_text(exc, settings.base_url))
            if drawing is not None:
                drawing.update(render(view))
            else:
                printed.update(view.messages)
    finally:
        client.close()
    if view.answer:
        settings.history = messages + [{"role": "assistant", "content": view.answer}]
    return view


def _deltas(client: openai.OpenAI, settings: ChatSettings, question: str, messages: list[dict]) -> Iterator[dict]:
    """The reply's deltas, from chat completions or the Responses API (which continues the last turn)."""
    model = _model(client, settings)
    if settings.api == "responses":
        extra = {"max_tool_calls": settings.max_tool_calls} if settings.max_tool_calls is not None else {}
        stream = client.responses.create(model=model, input=question, stream=True, temperature=settings.temperature,
                                         tools=list(HOSTED_TOOLS) if settings.tools else [],
                                         previous_response_id=settings.previous_response_id, **extra)
        with stream:
            for event in stream:
                if event.type == "response.failed":
                    yield {"error": f"The generation failed: {event.response.error.message}"}
                    return
                if event.type in ("response.completed", "response.incomplete"):
                    settings.previous_response_id = event.response.id
                yield event_delta(event)
        return
    agent: dict = {"tools": settings.tools}
    if settings.max_tool_calls is not None:
        agent["max_tool_calls"] = settings.max_tool_calls
    stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                            temperature=settings.temperature, extra_body={"agent": agent})
    with stream:
        for chunk in stream:
            yield chunk_delta(chunk)


def _save_figures(view: ReplyView) -> None:
    """A terminal shows no images: each figure a code step drew is saved, and its path shown."""
    for m in view.messages:
        for i, url in enumerate(m.images, 1):
            prefix = "data:image/png;base64,"
            if not url.startswith(prefix):
                continue
            fd, path = tempfile.mkstemp(prefix="tapo-figure-", suffix=".png")
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(url[len(prefix):]))
            m.text += f"\n\nFigure {i}: {path}"


@dataclass
class PlainPrinter:
    """Writes each finished message once, as plain text: what a pipe or a log file should receive."""
    out: IO[str]
    written: set[int] = field(default_factory=set)

    def update(self, finished: list[ViewMessage]) -> None:
        for m in finished:
            if id(m) in self.written or m.status != "done" or not (m.text.strip() or m.kind == "error"):
                continue
            self.written.add(id(m))
            self.out.write(plain_text(m) + "\n")
        self.out.flush()


def plain_text(m: ViewMessage) -> str:
    if m.kind == "error":
        return f"error: {m.text}"
    if m.kind == "answer":
        return f"Answer:\n{m.text.strip()}"
    took = f" ({_duration(m.seconds)})" if m.seconds is not None else ""
    return f"{m.title}{took}:\n{m.text.strip()}\n"


def repl(settings: ChatSettings, console: Console) -> None:
    """Ask, render, repeat; ``/reset`` forgets the conversation, ``/quit`` or Ctrl-D leaves."""
    console.print(f"[bold]tapo chat[/] · {settings.base_url} · /reset to start over, /quit to leave", highlight=False)
    while True:
        try:
            question = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if question in ("/quit", "/exit"):
            return
        if question == "/reset":
            settings.history = []
            settings.previous_response_id = None
            console.print("[dim]conversation cleared[/]")
            continue
        if question:
            try:
                chat_turn(question, settings, console)
            except KeyboardInterrupt:  # stop this reply, keep the session
                console.print("[dim]stopped[/]")
