"""``tapo chat``: a terminal client of the agent API, rendering each thinking span and tool step as it streams.

It speaks to any server of ours through the ``openai`` SDK, like the page, and draws the same
:class:`~clients.reply_view.ReplyView`: thinking dimmed, each tool step a panel with its program or
query and its output, the answer last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import openai
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from clients.api_errors import error_text
from clients.reply_view import ReplyView, ViewMessage, chunk_delta

__all__ = ["ChatSettings", "chat_turn", "repl", "render"]


@dataclass
class ChatSettings:
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    model: str | None = None  # default: the server's only model
    tools: bool = True
    max_tool_calls: int | None = None
    temperature: float = 0.0
    history: list[dict] = field(default_factory=list)


def render(view: ReplyView) -> RenderableType:
    return Group(*(_render_message(m) for m in view.messages))


def _render_message(m: ViewMessage) -> RenderableType:
    took = f" · {_duration(m.seconds)}" if m.seconds is not None else (" · running" if m.status == "pending" else "")
    if m.kind == "answer":
        return Markdown(m.text)
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
    """Ask ``question`` (with the conversation so far), render the reply live; returns its view."""
    view = ReplyView()
    client = _client(settings)
    messages = settings.history + [{"role": "user", "content": question}]
    agent: dict = {"tools": settings.tools}
    if settings.max_tool_calls is not None:
        agent["max_tool_calls"] = settings.max_tool_calls
    try:
        with Live(render(view), console=console, refresh_per_second=12, transient=False) as live:
            try:
                stream = client.chat.completions.create(model=_model(client, settings), messages=messages,
                                                        stream=True, temperature=settings.temperature,
                                                        extra_body={"agent": agent})
                with stream:
                    for chunk in stream:
                        view.feed(chunk_delta(chunk))
                        live.update(render(view))
                view.finish()
            except openai.OpenAIError as exc:
                view.fail(error_text(exc, settings.base_url))
            live.update(render(view))
    finally:
        client.close()
    if view.answer:
        settings.history = messages + [{"role": "assistant", "content": view.answer}]
    return view


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
            console.print("[dim]conversation cleared[/]")
            continue
        if question:
            try:
                chat_turn(question, settings, console)
            except KeyboardInterrupt:  # stop this reply, keep the session
                console.print("[dim]stopped[/]")
