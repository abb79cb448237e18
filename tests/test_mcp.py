"""MCP servers as tools (``--mcp``): a real MCP server (``mcp_fixture_server.py``, the SDK's
``MCPServer``) over stdio and streamable HTTP, its tools listed at start-up, offered as functions,
called server-side from the agent loop, and its death mid-call turned into a tool error while the
server serves on. Model turns are scripted (the tiny fixture's tokenizer) so that each call is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from live_server import http_client, running_server, validate
from scripted_backend import EOS, ScriptedBackend

from agent_runtime.budget import Budget
from agent_runtime.mcp_tools import McpServers, McpStartError
from agent_runtime.protocol import HERMES
from agent_runtime.tools import FunctionTool, ToolRegistry
from server.build import build_state
from server.state import ServerState

MODEL = "scripted"
FIXTURE = Path(__file__).with_name("mcp_fixture_server.py")
STDIO = f"{sys.executable} {FIXTURE}"


def call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>" + EOS


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


@pytest.fixture(scope="module")
def http_mcp() -> Iterator[str]:
    """The fixture MCP server on streamable HTTP, in a process of its own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(FIXTURE), "--http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        assert proc.poll() is None, "the MCP fixture server exited"
        assert time.monotonic() < deadline, "the MCP fixture server did not listen within 60 s"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.kill()
    proc.wait()


@contextlib.contextmanager
def serving(tokenizer, turns: list[str], mcp: list[str], *, mcp_timeout: float = 30.0,
            ) -> Iterator[tuple[httpx.Client, ScriptedBackend]]:
    backend = ScriptedBackend(tokenizer, turns)
    tools = ToolRegistry([FunctionTool("code", lambda code: "408\n")])
    state = ServerState(backend=backend, tools=tools, model_name=MODEL, protocol=HERMES,
                        budget=Budget(max_tool_calls=3), mcp=McpServers(mcp, call_timeout=mcp_timeout))
    with running_server(state) as url, http_client(url) as http:
        yield http, backend


def ask(http: httpx.Client, text: str, **body) -> dict:
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": text}], **body})
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    return data


def steps(data: dict) -> list[tuple[str, str, str]]:
    return [(s["name"], s["arguments"], s["output"]) for s in data["choices"][0]["message"]["tool_steps"]]


def run(coro):
    return asyncio.run(coro)


def test_tools_are_listed_and_called_with_their_own_schemas():
    async def scenario():
        registry = ToolRegistry([FunctionTool("search", lambda q: "")])
        servers = McpServers([STDIO])
        try:
            functions = {f.name: f for f in await servers.connect(registry)}
            added = await registry.call("add", json.dumps({"a": 2, "b": 40}))
            refused = await registry.call("capital", json.dumps({"country": "Atlantis"}))
            clashed = await registry.call("fixture_search", json.dumps({"query": "x"}))
            return functions, added, refused, clashed
        finally:
            await servers.aclose()

    functions, added, refused, clashed = run(scenario())
    assert functions["add"].parameters["required"] == ["a", "b"]
    assert functions["add"].description == "Add two integers."
    assert "search" not in functions and functions["fixture_search"].tool == "fixture_search"  # renamed on a clash
    assert (added.output.text, added.output.ok) == ("42", True)
    assert refused.output.ok is False  # the tool's own error: shown to the model
    assert clashed.output.text == "fixture results for x"


def test_a_server_that_dies_mid_call_is_a_tool_error_then_reconnected():
    async def scenario():
        registry = ToolRegistry()
        servers = McpServers([STDIO])
        try:
            await servers.connect(registry)
            before = await registry.call("pid", "{}")
            crashed = await registry.call("crash", "{}")
            after = await registry.call("pid", "{}")
            return before, crashed, after
        finally:
            await servers.aclose()

    before, crashed, after = run(scenario())
    assert crashed.output.ok is False and "failed during the call" in crashed.output.text
    assert after.output.ok is True and after.output.text != before.output.text  # a new server process


def test_a_call_past_the_timeout_is_a_tool_error():
    async def scenario():
        registry = ToolRegistry()
        servers = McpServers([STDIO], call_timeout=0.5)
        try:
            await servers.connect(registry)
            return await registry.call("sleep", json.dumps({"seconds": 5}))
        finally:
            await servers.aclose()

    result = run(scenario())
    assert result.output.ok is False and "no result within 0.5 s" in result.output.text
    assert result.seconds < 4


@pytest.mark.parametrize("spec, says", [
    ("no-such-mcp-command --flag", "No such file or directory"),
    ("http://127.0.0.1:9/mcp", "ConnectError"),
    ('"unclosed', "not a command line"),
])
def test_a_server_that_cannot_be_reached_fails_the_start_saying_why(spec, says):
    with pytest.raises(McpStartError, match=says) as info:
        run(McpServers([spec], connect_timeout=20).connect(ToolRegistry()))
    assert spec in str(info.value)


def test_mcp_needs_a_function_calling_protocol():
    with pytest.raises(ValueError, match="--protocol hermes"):
        build_state(model="tiny", protocol="tapo", mcp=[STDIO])


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_the_loop_calls_an_mcp_tool_server_side(tokenizer, transport, request):
    spec = STDIO if transport == "stdio" else request.getfixturevalue("http_mcp")
    turns = [call("add", a=2, b=40), "The sum is 42." + EOS]
    with serving(tokenizer, turns, [spec]) as (http, backend):
        data = ask(http, "What is 2 + 40?")
    prompt = tokenizer.decode(backend.prompts[0], skip_special_tokens=False)
    assert '"name": "add"' in prompt and '"name": "python"' in prompt  # offered beside the built-in tools
    assert steps(data) == [("add", '{"a": 2, "b": 40}', "42")]
    assert data["choices"][0]["message"]["content"] == "The sum is 42."
    second = tokenizer.decode(backend.prompts[1], skip_special_tokens=False)
    assert second.rstrip().endswith("<|im_start|>assistant") and "42" in second.split("</tool_call>")[-1]


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_killing_the_mcp_server_mid_request_is_a_tool_error_and_the_server_serves_on(tokenizer, transport, request):
    spec = STDIO if transport == "stdio" else request.getfixturevalue("http_mcp")
    turns = [call("crash"), "It failed." + EOS, "Hello!" + EOS]
    with serving(tokenizer, turns, [spec]) as (http, _):
        data = ask(http, "Crash it.")
        [(name, _, output)] = steps(data)
        assert name == "crash" and "failed during the call" in output
        assert data["choices"][0]["message"]["tool_steps"][0]["ok"] is False
        assert data["choices"][0]["finish_reason"] == "stop"
        assert ask(http, "Hi")["choices"][0]["message"]["content"] == "Hello!"


def test_a_request_can_leave_the_mcp_tools_out(tokenizer):
    with serving(tokenizer, ["Hi." + EOS, "Hi." + EOS], [STDIO]) as (http, backend):
        ask(http, "Hi", agent={"tools": ["code"]})
        ask(http, "Hi", agent={"tools": ["add"]})
    only_code = tokenizer.decode(backend.prompts[0], skip_special_tokens=False)
    only_add = tokenizer.decode(backend.prompts[1], skip_special_tokens=False)
    assert '"name": "add"' not in only_code and '"name": "python"' in only_code
    assert '"name": "add"' in only_add and '"name": "python"' not in only_add


def test_tapo_serve_with_an_unreachable_mcp_server_exits_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "tapo_cli", "serve", "--model", "tiny", "--protocol", "hermes",
                           "--mcp", "no-such-mcp-command", "--port", "1"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("error: --mcp no-such-mcp-command: cannot connect: FileNotFoundError: "
                                   "[Errno 2] No such file or directory: 'no-such-mcp-command'")


def test_a_result_reads_as_its_text_with_other_content_named():
    from mcp_types import CallToolResult, ImageContent, TextContent

    from agent_runtime.mcp_tools import result_text

    mixed = CallToolResult(content=[TextContent(type="text", text="a chart"),
                                    ImageContent(type="image", data="aGk=", mime_type="image/png")])
    assert result_text(mixed) == "a chart\n[image: image/png]"
    structured_only = CallToolResult(content=[], structured_content={"result": 5})
    assert result_text(structured_only) == '{"result": 5}'


def test_a_server_spec_is_a_url_or_a_command_line():
    from agent_runtime.mcp_tools import McpServerSpec

    assert McpServerSpec.parse(" http://127.0.0.1:9000/mcp ").target() == "http://127.0.0.1:9000/mcp"
    stdio = McpServerSpec.parse("npx -y '@scope/server' /srv/my docs")
    assert (stdio.target().command, stdio.target().args) == ("npx", ["-y", "@scope/server", "/srv/my", "docs"])
    with pytest.raises(McpStartError, match="needs a command line"):
        McpServerSpec.parse("  ")


def test_a_responses_request_turns_an_mcp_server_on_by_its_label(tokenizer):
    """On ``/v1/responses`` a ``{"type": "mcp", "server_label": ...}`` tool offers that server's tools;
    each call is an ``mcp_call`` item with its output, a failed one with its error."""
    from openai.types.responses import Response

    turns = [call("add", a=2, b=40), call("crash"), "The sum is 42." + EOS, "Hi." + EOS]
    with serving(tokenizer, turns, [STDIO]) as (http, backend):
        r = http.post("/v1/responses", json={"model": MODEL, "input": "What is 2 + 40?",
                                             "tools": [{"type": "mcp", "server_label": "fixture"}]})
        assert r.status_code == 200, r.text
        data = r.json()
        plain = http.post("/v1/responses", json={"model": MODEL, "input": "Hi"}).json()
    Response.model_validate(data)
    added, crashed, message = data["output"]
    assert (added["type"], added["server_label"], added["name"]) == ("mcp_call", "fixture", "add")
    assert (added["arguments"], added["output"], added["status"]) == ('{"a": 2, "b": 40}', "42", "completed")
    assert crashed["status"] == "failed" and "failed during the call" in crashed["error"]["content"]
    assert Response.model_validate(data).output_text == "The sum is 42."
    offered = tokenizer.decode(backend.prompts[0], skip_special_tokens=False)
    assert '"name": "add"' in offered and '"name": "python"' not in offered  # only what the request listed
    assert '"name": "add"' not in tokenizer.decode(backend.prompts[-1], skip_special_tokens=False)
    assert plain["status"] == "completed"


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "mcp", "server_label": ["fixture"]}, "tools.0.server_label"),
    ({"type": "mcp", "server_label": "fixture", "require_approval": "always"}, "tools.0.require_approval"),
    ({"type": "mcp", "server_label": "fixture", "allowed_tools": "add"}, "tools.0.allowed_tools"),
])
def test_mcp_tools_on_responses_that_cannot_be_honoured_are_refused(tokenizer, tool, param):
    with serving(tokenizer, [], [STDIO]) as (http, backend):
        r = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "tools": [tool]})
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert backend.prompts == []


def test_allowed_tools_in_the_filter_form_narrow_the_mcp_tools(tokenizer):
    with serving(tokenizer, ["Hi." + EOS], [STDIO]) as (http, backend):
        r = http.post("/v1/responses", json={"model": MODEL, "input": "Hi", "tools": [
            {"type": "mcp", "server_label": "fixture", "allowed_tools": {"tool_names": ["capital"]}}]})
    assert r.status_code == 200, r.text
    offered = tokenizer.decode(backend.prompts[0], skip_special_tokens=False)
    assert '"name": "capital"' in offered and '"name": "add"' not in offered
