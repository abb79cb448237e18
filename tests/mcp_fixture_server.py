"""An MCP server for the tests, on the official SDK's ``MCPServer``: stdio by default, streamable
HTTP with ``--http PORT``. ``crash`` kills the server in the middle of its own call."""

from __future__ import annotations

import os
import signal
import sys
import time

from mcp.server.mcpserver import MCPServer

app = MCPServer("fixture")
CAPITALS = {"Norway": "Oslo", "Japan": "Tokyo", "Peru": "Lima"}


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def capital(country: str) -> str:
    """The capital city of a country."""
    if country not in CAPITALS:
        raise ValueError(f"no capital known for {country}")
    return CAPITALS[country]


@app.tool()
def search(query: str) -> str:
    """A tool whose name clashes with the built-in search."""
    return f"fixture results for {query}"


@app.tool()
def crash() -> str:
    """Kill this server while the call is running."""
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


@app.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


@app.tool()
def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "awake"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        app.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
