"""A real server for HTTP tests: uvicorn in a background thread on 127.0.0.1, the tiny fixture model.

``running_server(state)`` starts ``server.app.create_app(state)`` on a free port and yields its base
URL; leaving the block stops uvicorn (which runs the app's lifespan shutdown: tools and engine
closed). The fixtures below are module scoped: each test module that uses one starts its own
server and engine, and tears them down at the end of the module.

Also here: the official OpenAI response schemas (``/work/shared/reference/openai-chat-schemas.json``)
as ``jsonschema`` validators, and a small raw SSE reader, shared by the server test modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from asgi_thread import serve_asgi

from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.budget import Budget
from agent_runtime.models.fixture_tasks import fixture_search, run_python
from agent_runtime.sandbox import bwrap
from agent_runtime.sandbox.limits import SandboxLimits
from agent_runtime.sandbox.tool import CodeTool
from agent_runtime.tools import FunctionTool, ToolRegistry
from server.app import create_app
from server.state import ServerState

MODEL = "tiny"
BUDGET = Budget(max_tool_calls=2, max_tokens_per_turn=64, max_total_tokens=160)
SCHEMAS_PATH = Path("/work/shared/reference/openai-chat-schemas.json")

# Fixture arithmetic questions: the tiny model answers them with a <code> call.
ARITH_QUESTIONS = ("What is 23 * 47?", "What is 406 plus 51?", "Compute 586 + 73.", "What is 656 times 13?")


# ---- the server in a thread ------------------------------------------------------------------


@contextlib.contextmanager
def running_server(state: ServerState, *, startup_timeout: float = 60.0) -> Iterator[str]:
    """Serve ``create_app(state)`` with uvicorn on 127.0.0.1 in a thread; yields ``http://127.0.0.1:PORT``."""
    with serve_asgi(create_app(state), startup_timeout=startup_timeout) as url:
        yield url


# Where bubblewrap cannot run, the main server falls back to the in-process fixture ``run_python``
# (same outputs for the fixture model's programs) and sandbox-specific tests skip. CI installs
# bubblewrap (make setup): there a failing probe is a failure, never a fallback (as in test_sandbox.py).
SANDBOX_PROBLEM = None if os.environ.get("CI") else bwrap.probe(SandboxLimits())


# The sandbox's warm imports without matplotlib's (about 1 s more per pool start, and the tests start
# many pools); tests of figures use the default, which preloads it.
TEST_PRELOAD = ("numpy", "sympy")


def fixture_tools(code: Any | None = None) -> ToolRegistry:
    """``code`` (the real bubblewrap sandbox unless another tool is given) and ``search`` over the fixture."""
    reg = ToolRegistry()
    if code is None:
        code = CodeTool(preload=TEST_PRELOAD) if SANDBOX_PROBLEM is None else FunctionTool("code", run_python)
    reg.register(code)
    reg.register(FunctionTool("search", fixture_search))
    return reg


def make_state(tiny_model, tiny_tokenizer, *, tools: ToolRegistry | None = None, backend=None,
               **kwargs: Any) -> ServerState:
    backend = backend if backend is not None else TransformersBackend(tiny_model, tiny_tokenizer, max_slots=16)
    return ServerState(backend=backend, tools=tools if tools is not None else fixture_tools(), model_name=MODEL,
                       budget=kwargs.pop("budget", BUDGET), **kwargs)


@pytest.fixture(scope="module")
def server_url(tiny_model, tiny_tokenizer) -> Iterator[str]:
    """The main server: real sandboxed ``code``, fixture ``search``, no API key."""
    with running_server(make_state(tiny_model, tiny_tokenizer)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server_url(tiny_model, tiny_tokenizer) -> Iterator[str]:
    """A server with ``api_key="secret"`` (and a stub code tool: keys are what it is for)."""
    tools = fixture_tools(FunctionTool("code", lambda code: "42\n"))
    with running_server(make_state(tiny_model, tiny_tokenizer, tools=tools, api_keys=("secret",))) as url:
        yield url


class HangingCode:
    """A ``code`` tool that never returns and records, thread-safely, when it is cancelled."""

    name = "code"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.calls = 0

    async def __call__(self, argument: str):
        self.calls += 1
        self.started.set()
        try:
            await asyncio.Event().wait()  # forever
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")

    def reset(self) -> None:
        self.started.clear()
        self.cancelled.clear()


@pytest.fixture(scope="module")
def hanging_server(tiny_model, tiny_tokenizer) -> Iterator[tuple[str, HangingCode]]:
    """A server whose ``code`` tool hangs until cancelled, with ``max_concurrency=1``."""
    tool = HangingCode()
    tools = fixture_tools(tool)
    with running_server(make_state(tiny_model, tiny_tokenizer, tools=tools, max_concurrency=1)) as url:
        yield url, tool


@pytest.fixture(scope="module")
def single_slot_server(hanging_server) -> tuple[str, HangingCode]:
    """``max_concurrency=1``: the hanging server (one held stream fills it)."""
    return hanging_server


def http_client(url: str) -> httpx.Client:
    """A client of a test server, patient enough for CPU generation."""
    return httpx.Client(base_url=url, timeout=120)


def wait_idle(url: str, timeout: float = 10.0, **client_kwargs: Any) -> dict:
    """Poll ``/health`` until ``in_flight`` is 0; returns the last body."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/health", timeout=5, **client_kwargs).json()
        if body.get("in_flight") == 0:
            return body
        time.sleep(0.05)
    return body


def metric(url: str, name: str, **labels: str) -> float:
    """One sample from ``/metrics`` (0.0 when the series does not exist yet)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    return 0.0


# ---- the official OpenAI schemas -------------------------------------------------------------


def _denullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` -> JSON Schema 2020-12 (what ``jsonschema`` understands).

    The reference document is OpenAPI 3.1 (plain JSON Schema) but still carries ``nullable`` in
    places, which JSON Schema ignores: ``{"type": "string", "nullable": true}`` would then reject
    ``null``. This pre-pass rewrites ``{"type": T, "nullable": true}`` to ``{"type": [T, "null"]}``
    (adding ``None`` to an ``enum`` if there is one), and a nullable ``$ref`` (or a schema without
    ``type``) to ``{"anyOf": [<schema>, {"type": "null"}]}``.
    """
    if isinstance(node, list):
        return [_denullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _denullable(v) for k, v in node.items()}
    if node.pop("nullable", False) is not True:
        return node
    if "type" in node and "$ref" not in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        node["type"] = [*types, "null"] if "null" not in types else types
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


@lru_cache(maxsize=1)
def openai_document() -> dict:
    return _denullable(json.loads(SCHEMAS_PATH.read_text()))


@lru_cache(maxsize=None)
def _validator(name: str, relax: tuple[str, ...] = ()):
    from jsonschema import Draft202012Validator

    doc = copy.deepcopy(openai_document())
    schemas = doc["components"]["schemas"]
    if name not in schemas:
        raise KeyError(name)
    if "stream_finish_reason" in relax:
        # Completion stream chunks share CreateCompletionResponse's shape (its own description says
        # so), but a chunk before the last has finish_reason null, which the non-stream schema's
        # string enum does not allow: allow null there, and nothing else.
        fr = schemas[name]["properties"]["choices"]["items"]["properties"]["finish_reason"]
        fr["type"] = ["string", "null"]
        fr["enum"] = [*fr["enum"], None]
    wrapper = {"components": doc["components"], "$ref": f"#/components/schemas/{name}"}
    Draft202012Validator.check_schema(wrapper)
    return Draft202012Validator(wrapper)


def validate(instance: Any, name: str, *, relax: tuple[str, ...] = ()) -> None:
    """Raise ``AssertionError`` listing every way ``instance`` breaks ``components.schemas[name]``."""
    errors = sorted(_validator(name, tuple(relax)).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}" for e in errors[:10]]
        raise AssertionError(f"response does not match OpenAI's {name}:\n" + "\n".join(lines)
                             + f"\ninstance: {json.dumps(instance)[:1500]}")


def assert_error(response: httpx.Response, status: int, *, param: str | None | type = ..., code: Any = ...) -> dict:
    """An OpenAI error body with ``status``; never a traceback. Returns ``body["error"]``."""
    assert response.status_code == status, (response.status_code, response.text[:1000])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    assert "Traceback" not in response.text
    body = response.json()
    validate(body, "ErrorResponse")
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    return err


# ---- raw SSE -----------------------------------------------------------------------------------


def function(name: str, **params: str) -> dict:
    """An OpenAI ``tools`` entry for a client function whose parameters (name=JSON type) are all required."""
    return {"type": "function", "function": {
        "name": name, "description": f"{name} for the tests",
        "parameters": {"type": "object", "properties": {p: {"type": t} for p, t in params.items()},
                       "required": list(params)}}}


WEATHER = function("get_weather", city="string")
TOTAL = function("set_total", amount="integer")


def run_agent(agent: Any, question: str, *, stream: bool) -> str:
    """An ``openai-agents`` ``Agent``'s final output on ``question``, run to its end, streamed or not."""
    from agents import Runner

    async def go() -> str:
        if not stream:
            return (await Runner.run(agent, question)).final_output
        result = Runner.run_streamed(agent, question)
        async for _ in result.stream_events():
            pass
        return result.final_output

    return asyncio.run(go())


def sse_data_lines(lines: Iterator[str]) -> Iterator[str]:
    """The ``data:`` payloads of an SSE stream (comments and other fields skipped; one line per event)."""
    for line in lines:
        if line.startswith("data:"):
            payload = line[5:]
            yield payload[1:] if payload.startswith(" ") else payload


def read_sse(client: httpx.Client, path: str, body: dict, **kwargs: Any) -> tuple[int, list[str]]:
    """POST ``body`` and read the whole stream; returns (status, data payloads)."""
    with client.stream("POST", path, json=body, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.text]
        assert response.headers["content-type"].startswith("text/event-stream"), response.headers
        return 200, list(sse_data_lines(response.iter_lines()))


def check_chat_stream(payloads: list[str], on_chunk: Callable[[dict], None] | None = None) -> list[dict]:
    """Every payload but the last validates as a chat chunk; the last, and only it, is ``[DONE]``."""
    assert payloads, "empty stream"
    assert payloads[-1] == "[DONE]", payloads[-3:]
    assert payloads.count("[DONE]") == 1, "more than one [DONE]"
    chunks = []
    for payload in payloads[:-1]:
        chunk = json.loads(payload)
        assert "error" not in chunk, f"the stream carried an error event: {chunk}"
        validate(chunk, "CreateChatCompletionStreamResponse")
        for choice in chunk["choices"]:
            assert "tool_calls" not in choice["delta"], "tool steps must never be sent as delta.tool_calls"
        if on_chunk:
            on_chunk(chunk)
        chunks.append(chunk)
    return chunks
