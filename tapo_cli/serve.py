"""``tapo serve`` and ``tapo demo``: the OpenAI-compatible server, and for ``demo`` the chat page of
``clients`` mounted at / on the same port."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer

from tapo_cli.options import (EngineOpt, EngineUrlOpt, MaxToolCallsOpt, ModelOpt, ProtocolOpt, SearchBackendOpt,
                              SearchIndexOpt, SearchUrlOpt, err, fail)


def serve(
    ctx: typer.Context,
    model: ModelOpt = None,
    engine: EngineOpt = "auto",
    engine_url: EngineUrlOpt = None,
    protocol: ProtocolOpt = "tapo",
    search_backend: SearchBackendOpt = "bm25",
    search_index: SearchIndexOpt = None,
    search_url: SearchUrlOpt = None,
    max_tool_calls: MaxToolCallsOpt = 4,
    host: Annotated[str, typer.Option("--host", help="Interface to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option(
        "--api-key", envvar="TAPO_API_KEY", help="Require a bearer key: this one, or another given again (repeatable; "
        "each key sees only the responses it stored).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback host without a key.")] = False,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, help="Requests at once; more get 503.")] = 32,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Default model-token cap per reply.")] = 2048,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Default when a request has none.")] = 0.0,
    mcp: Annotated[Optional[list[str]], typer.Option(
        "--mcp", metavar="SERVER", help="An MCP server whose tools the model may call: a command line (stdio) or an http(s):// URL "
                      "(streamable HTTP). Repeatable; needs a function-calling protocol (--protocol hermes).")] = None,
    mcp_timeout: Annotated[float, typer.Option("--mcp-timeout", min=0.1, help="Seconds an MCP tool call may take.")] = 60.0,
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="TAPO_STATE_DIR", help="Where stored responses are kept (an SQLite database); default: the user's data "
                            "directory (~/.local/share/tapo-agents on Linux).")] = None,
    max_containers: Annotated[int, typer.Option(
        "--max-containers", min=1, help="Code containers (sandbox sessions that keep a conversation's Python state) "
                                        "alive at once; past it a new one is refused with 429.")] = 16,
    container_idle_minutes: Annotated[float, typer.Option(
        "--container-idle-minutes", min=0.01, help="A container idle this long ends, and its worker with it.")] = 20.0,
) -> None:
    """Serve the OpenAI-compatible API; the agent loop runs server-side."""
    import sqlite3

    import uvicorn

    from agent_runtime.sandbox import SandboxUnavailableError
    from server.app import create_app
    from server.build import build_state, check_exposure

    with_page = ctx.info_name == "demo"
    try:
        api_keys = tuple(api_key or ())
        check_exposure(host, api_keys, insecure)
        state = build_state(
            model=model, engine=engine, engine_url=engine_url, protocol=protocol, search_backend=search_backend,
            search_index=search_index, search_url=search_url, max_tool_calls=max_tool_calls, max_tokens=max_tokens,
            temperature=temperature, api_keys=api_keys, max_concurrency=max_concurrency, mcp=mcp or (),
            mcp_timeout=mcp_timeout, state_dir=state_dir, max_containers=max_containers,
            container_idle_s=container_idle_minutes * 60,
        )
    except (ValueError, OSError, ImportError, SandboxUnavailableError, sqlite3.Error) as exc:
        fail(str(exc))
    api = create_app(state)
    base = f"http://{url_host(host)}:{port}"
    if with_page:
        try:
            from clients.gradio_app import mount_page
        except ImportError as exc:
            fail(f"the demo page needs the [demo] extra ({exc.name} is missing): pip install 'tapo-agents[demo]'")
        api = mount_page(api, f"{url_host(host, connect=True)}:{port}/v1", model=state.model_name,
                         protocol=protocol, max_tool_calls=max_tool_calls, key_required=bool(api_keys),
                         concurrency=max_concurrency)
        banner = f"demo page on {base}/ ; API on {base}/v1 (model {state.model_name})"
    else:
        banner = f"serving {state.model_name} on {base}/v1 (OpenAI-compatible)"
    config = uvicorn.Config(api, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    asyncio.run(_serve(state, uvicorn.Server(config), banner))


async def _serve(state, server, banner: str) -> None:
    """Start the tools (MCP servers connected, their tools listed) before listening, in the loop that
    serves: a server that cannot be reached is one line of error, not a traceback from start-up."""
    from agent_runtime.mcp_tools import McpStartError

    try:
        await state.start()
    except McpStartError as exc:
        await state.aclose()
        fail(str(exc))
    err.print(banner, highlight=False, soft_wrap=True)
    await server.serve()


def url_host(host: str, *, connect: bool = False) -> str:
    """``host`` as it goes in a URL; with ``connect``, the address this machine reaches a server bound
    there on (a wildcard bind is reached on loopback), with its scheme."""
    if connect:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}" if connect else name
