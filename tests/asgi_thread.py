"""A real HTTP server for tests: uvicorn in a thread on 127.0.0.1, on a port the OS picks."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import uvicorn


@contextlib.contextmanager
def serve_asgi(app: Any, *, lifespan: str = "on", startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``app``; yields ``http://127.0.0.1:PORT`` and stops the server on exit."""
    # Port 0: the OS picks a free port when uvicorn binds (no race with other processes).
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"uvicorn did not start within {startup_timeout} s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
