"""Build a server's state from the shared command-line options."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Sequence

from agent_runtime.backends import make_backend
from agent_runtime.budget import Budget
from agent_runtime.mcp_tools import McpServers
from agent_runtime.models.resolve import resolve_model
from agent_runtime.protocol import get_protocol
from agent_runtime.toolset import default_tools
from server.containers import DEFAULT_IDLE_S, DEFAULT_MAX_LIVE, Containers
from server.response_store import ResponseStore, default_state_dir
from server.state import ServerState

log = logging.getLogger(__name__)


def check_exposure(host: str, api_keys: Sequence[str], insecure: bool) -> None:
    """Off loopback, the API runs code for whoever reaches it: demand a key unless told otherwise."""
    if api_keys or insecure:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"--host {host} exposes a server that runs model-written code: set --api-key KEY "
            "(or pass --insecure to accept the risk)"
        )


def served_name(model: str | None, resolved: str) -> str:
    if model is None:
        return "tapo-default"
    path = Path(resolved)
    return path.name if path.exists() else resolved


def build_state(
    *,
    model: str | None = None,
    engine: str = "auto",
    engine_url: str | None = None,
    protocol: str = "tapo",
    search_backend: str = "bm25",
    search_index: str | Path | None = None,
    search_url: str | None = None,
    max_tool_calls: int = 4,
    max_tokens: int = 2048,
    temperature: float = 0.0,
    api_keys: Sequence[str] = (),
    state_dir: str | Path | None = None,
    max_concurrency: int = 32,
    unsafe_unsandboxed: bool = False,
    mcp: Sequence[str] = (),
    mcp_timeout: float = 60.0,
    max_containers: int = DEFAULT_MAX_LIVE,
    container_idle_s: float = DEFAULT_IDLE_S,
) -> ServerState:
    """The server's state; the ``mcp`` servers connect when it starts (:meth:`ServerState.start`).
    Stored responses live in ``state_dir`` (default: the user's data directory); at most
    ``max_containers`` code containers live at once, each until idle ``container_idle_s``."""
    proto = get_protocol(protocol)
    if mcp and not proto.function_calling:
        raise ValueError(f"--mcp offers the MCP servers' tools as functions, which the {proto.name} protocol cannot "
                         "call: serve a function-calling model with --protocol hermes")
    servers = McpServers(mcp, call_timeout=mcp_timeout) if mcp else None
    budget = Budget(max_tool_calls=max_tool_calls, max_total_tokens=max_tokens)
    # The containers end idle sessions; the pool's own expiry is only a backstop behind them.
    tools = default_tools(search_backend=search_backend, search_index=search_index, search_url=search_url,
                          unsafe_unsandboxed=unsafe_unsandboxed, code_sessions=max_containers,
                          code_session_idle_s=container_idle_s + 60)
    store = ResponseStore.in_dir(state_dir if state_dir is not None else default_state_dir())
    code = tools.get("code")
    containers = (Containers(code, store=store, max_live=max_containers, idle_s=container_idle_s)
                  if Containers.supported(code) else None)
    resolved = resolve_model(model)
    backend = make_backend(resolved, engine, engine_url)
    state = ServerState(
        backend=backend, tools=tools, model_name=served_name(model, resolved), protocol=proto, budget=budget,
        temperature=temperature, api_keys=tuple(api_keys), max_concurrency=max_concurrency, mcp=servers,
        store=store, containers=containers,
    )
    log.info("serving model=%s engine=%s tools=%s protocol=%s", state.model_name, backend.info.name,
             ",".join(tools.names) or "none", proto.name)
    return state
