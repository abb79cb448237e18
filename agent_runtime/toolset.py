"""The tools an agent gets from the shared command-line options."""

from __future__ import annotations

import logging
from pathlib import Path

from agent_runtime.tools import ToolRegistry

log = logging.getLogger(__name__)

SEARCH_BACKENDS = ("bm25", "retriever", "searxng", "serper", "none")
# The demo agent's encyclopedia (``python -m training.tasks --out data/demo``), the default bm25 index
# of a source checkout.
DEMO_SEARCH_INDEX = Path(__file__).resolve().parents[1] / "data" / "demo" / "index"


def default_tools(
    *,
    search_backend: str = "bm25",
    search_index: str | Path | None = None,
    search_url: str | None = None,
    code: bool = True,
    unsafe_unsandboxed: bool = False,
    code_sessions: int = 16,
    code_session_idle_s: float = 600.0,
) -> ToolRegistry:
    """``code`` in the sandbox, and ``search`` on the chosen backend.

    ``bm25`` without an index searches the demo corpus (:data:`DEMO_SEARCH_INDEX`), or, where this
    is no source checkout, gives no search tool (said in the log). Configuration errors
    (a missing index directory, URL or API key; no usable sandbox) raise ``ValueError`` subclasses
    with a message for the user. ``code_sessions`` bounds the code sessions (workers kept for one
    conversation's state) and ``code_session_idle_s`` ends one idle that long.
    """
    from agent_runtime.search.factory import make_search_tool

    tools = ToolRegistry()
    if code:
        from agent_runtime.sandbox import CodeTool

        tools.register(CodeTool(unsafe_unsandboxed=unsafe_unsandboxed, max_sessions=code_sessions,
                                session_idle_s=code_session_idle_s))
    if search_backend == "bm25" and search_index is None and DEMO_SEARCH_INDEX.is_dir():
        search_index = DEMO_SEARCH_INDEX
    if search_backend == "bm25" and search_index is None:
        log.info("no --search-index given and no demo index at %s: the agent has no search tool", DEMO_SEARCH_INDEX)
    else:
        tool = make_search_tool(search_backend, index=search_index, url=search_url)
        if tool is not None:
            tools.register(tool)
    return tools
