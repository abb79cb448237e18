"""``tapo chat``: the terminal client (``clients.terminal_chat``) of a running server."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class Api(str, Enum):
    chat = "chat"
    responses = "responses"


def chat(
    question: Annotated[Optional[str], typer.Argument(help="Ask this once and exit; without it, a session.")] = None,
    url: Annotated[str, typer.Option("--url", envvar="TAPO_BASE_URL", help="The API's base URL.")] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="TAPO_API_KEY", help="The server's key.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model id; default: the server's.")] = None,
    tools: Annotated[bool, typer.Option("--tools/--no-tools", help="Let the agent use its tools.")] = True,
    max_tool_calls: Annotated[Optional[int], typer.Option("--max-tool-calls", min=0,
                                                          help="Tool calls before the final turn; default: the server's.")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0, help="0 is greedy.")] = 0.0,
    api: Annotated[Api, typer.Option(
        "--api", help="chat: /v1/chat/completions; responses: /v1/responses with the hosted tools, each turn continuing "
             "the last (previous_response_id), so the code's variables persist.")] = Api.chat,
) -> None:
    """Chat with a running server in the terminal; tool steps are drawn as they stream."""
    from rich.console import Console

    from clients.terminal_chat import ChatSettings, chat_turn, repl

    settings = ChatSettings(base_url=url, api_key=api_key, model=model, tools=tools,
                            max_tool_calls=max_tool_calls, temperature=temperature, api=api.value)
    console = Console()
    if question is None:
        repl(settings, console)
        return
    view = chat_turn(question, settings, console)
    if any(m.kind == "error" for m in view.messages):
        raise typer.Exit(1)
