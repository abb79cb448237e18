"""Agent frameworks, unchanged, against ``tapo serve --protocol hermes``: an ``openai-agents`` ``Agent``
with a ``@function_tool`` through ``OpenAIChatCompletionsModel``, and a ``pydantic-ai`` ``Agent`` with a
tool, each streaming and not. The framework runs its own function when the server returns the call,
sends the result back, and reads the final answer; the built-in tools run server-side in between.
Model turns are scripted (the tiny fixture's tokenizer), so that the exchange is exact; every reply and
chunk is checked against OpenAI's schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Iterator

import httpx
import pytest
from live_server import run_agent, running_server, validate
from scripted_backend import EOS, ScriptedBackend

from agent_runtime.budget import Budget
from agent_runtime.protocol import HERMES
from agent_runtime.tools import FunctionTool, ToolRegistry
from server.state import ServerState

MODEL = "scripted"


def call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>" + EOS


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


class Recorder:
    """Every request body and every response or stream chunk the server sent, checked against the
    OpenAI schemas (an httpx event hook on the framework's own client)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.checked = 0  # responses and chunks validated

    async def on_request(self, request: httpx.Request) -> None:
        self.requests.append(json.loads(request.content))

    async def on_response(self, response: httpx.Response) -> None:
        await response.aread()
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in response.text.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    validate(json.loads(line[6:]), "CreateChatCompletionStreamResponse")
                    self.checked += 1
        else:
            assert response.status_code == 200, response.text
            validate(response.json(), "CreateChatCompletionResponse")
            self.checked += 1

    def client(self, base_url: str):
        from openai import AsyncOpenAI

        http = httpx.AsyncClient(event_hooks={"request": [self.on_request], "response": [self.on_response]},
                                 timeout=60)
        return AsyncOpenAI(base_url=base_url, api_key="unused", http_client=http)


@contextlib.contextmanager
def serving(tokenizer, turns: list[str]) -> Iterator[tuple[str, ScriptedBackend]]:
    backend = ScriptedBackend(tokenizer, turns)
    tools = ToolRegistry([FunctionTool("code", lambda code: "408\n")])
    state = ServerState(backend=backend, tools=tools, model_name=MODEL, protocol=HERMES, budget=Budget(max_tool_calls=3))
    with running_server(state) as url:
        yield f"{url}/v1", backend


TURNS = [call("python", code="print(12 * 34)"), call("get_weather", city="Oslo"),
         "In Oslo it is 408 and drizzly." + EOS]


def check_exchange(tokenizer, backend: ScriptedBackend, recorder: Recorder, weather_calls: list[str]) -> None:
    assert weather_calls == ["Oslo"]  # the framework ran its own function, once, with the model's argument
    first, second = recorder.requests
    assert recorder.checked >= 2
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert second["messages"][-1]["role"] == "tool"
    # The result came back through the chat template, after the built-in call that ran here.
    resumed = tokenizer.decode(backend.prompts[-1], skip_special_tokens=False)
    assert "Drizzle in Oslo" in resumed and "get_weather" in resumed


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_agents_agent_calls_its_function_tool(tokenizer, stream):
    from agents import Agent, OpenAIChatCompletionsModel, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no upload to OpenAI's trace service
    weather_calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        weather_calls.append(city)
        return f"Drizzle in {city}"

    recorder = Recorder()
    with serving(tokenizer, TURNS) as (base_url, backend):
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=recorder.client(base_url))
        agent = Agent(name="weather", instructions="Answer with the tools.", model=model, tools=[get_weather])

        final = run_agent(agent, "Compute 12 * 34, then the weather in Oslo.", stream=stream)
    assert final == "In Oslo it is 408 and drizzly."
    check_exchange(tokenizer, backend, recorder, weather_calls)
    assert all(r.get("stream", False) is stream for r in recorder.requests)


@pytest.mark.parametrize("stream", [False, True])
def test_a_pydantic_ai_agent_calls_its_tool(tokenizer, stream):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    weather_calls: list[str] = []
    recorder = Recorder()
    with serving(tokenizer, TURNS) as (base_url, backend):
        model = OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=recorder.client(base_url)))
        agent = Agent(model, instructions="Answer with the tools.")

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The current weather in a city."""
            weather_calls.append(city)
            return f"Drizzle in {city}"

        async def go() -> str:
            if not stream:
                return (await agent.run("Compute 12 * 34, then the weather in Oslo.")).output
            async with agent.run_stream("Compute 12 * 34, then the weather in Oslo.") as result:
                return await result.get_output()

        final = asyncio.run(go())
    assert final == "In Oslo it is 408 and drizzly."
    check_exchange(tokenizer, backend, recorder, weather_calls)
