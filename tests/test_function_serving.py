"""Client functions over ``/v1/chat/completions``: the function-calling fixture (``tiny-functions``)
served with ``--protocol hermes`` by a real uvicorn, driven by the unchanged ``openai`` SDK and raw
HTTP. Every response and chunk validates against OpenAI's schemas."""

from __future__ import annotations

import json
from typing import Iterator

import httpx
import jsonschema
import pytest
from live_server import (TOTAL, WEATHER, assert_error, fixture_tools, function, http_client, read_sse, running_server,
                         validate)
from openai import OpenAI

from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.budget import Budget
from agent_runtime.models.tiny_functions import GREETING_REPLY, tiny_functions_model_path
from agent_runtime.protocol import HERMES
from server.state import ServerState

MODEL = "tiny-functions"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def functions_url() -> Iterator[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_functions_model_path(progress=True)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    state = ServerState(backend=TransformersBackend(model, tokenizer, max_slots=8), tools=fixture_tools(),
                        model_name=MODEL, protocol=HERMES,
                        budget=Budget(max_tool_calls=3, max_tokens_per_turn=96, max_total_tokens=256))
    with running_server(state) as url:
        yield url


@pytest.fixture(scope="module")
def http(functions_url) -> Iterator[httpx.Client]:
    with http_client(functions_url) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(functions_url) -> OpenAI:
    return OpenAI(base_url=f"{functions_url}/v1", api_key="unused", timeout=120)


def post(http: httpx.Client, **body) -> dict:
    r = http.post(CHAT, json={"model": MODEL, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    return data


def sse_chunks(http: httpx.Client, **body) -> list[dict]:
    status, payloads = read_sse(http, CHAT, {"model": MODEL, "temperature": 0, "stream": True, **body})
    assert status == 200 and payloads[-1] == "[DONE]", payloads[-3:]
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    return chunks


def test_sdk_call_result_and_answer(sdk):
    """The OpenAI SDK's own loop: a call of the client's function, its result sent back, the answer."""
    messages = [{"role": "user", "content": "Use get_weather with city Oslo."}]
    first = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert call.id.startswith("call_")
    messages += [choice.message.model_dump(include={"role", "content", "tool_calls"}),
                 {"role": "tool", "tool_call_id": call.id, "content": "14"}]
    second = sdk.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER], temperature=0)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The answer is 14."
    assert not second.choices[0].message.tool_calls


def test_sdk_stream_carries_the_call_as_indexed_deltas(sdk):
    stream = sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Call get_weather with city Bergen."}],
                                         tools=[WEATHER], temperature=0, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", {"city": "Bergen"})]


def test_raw_stream_chunks_validate(http):
    chunks = sse_chunks(http, messages=[{"role": "user", "content": "Use set_total with amount 77."}], tools=[TOTAL])
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert len(calls) == 1 and calls[0][0]["index"] == 0
    assert json.loads(calls[0][0]["function"]["arguments"]) == {"amount": 77}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_built_in_tool_runs_here_and_only_the_clients_call_returns(http):
    data = post(http, messages=[{"role": "user", "content": "Compute 12 * 34, then use set_total with amount the result."}],
                tools=[TOTAL])
    choice = data["choices"][0]
    steps = choice["message"]["tool_steps"]
    assert [(s["name"], s["ok"]) for s in steps] == [("code", True)]  # python ran in the server
    assert steps[0]["output"].strip() == "408"
    assert choice["finish_reason"] == "tool_calls" and choice["agent_finish_reason"] == "client_tool"
    (call,) = choice["message"]["tool_calls"]  # (the value the fixture copies from the output is not checked)
    assert call["function"]["name"] == "set_total" and isinstance(json.loads(call["function"]["arguments"])["amount"], int)


def test_tool_choice_required_always_calls_and_none_never(http):
    # A greeting, which the model answers without a call when it may choose: the forced opening writes
    # the call's name, the model the arguments, under the function's schema.
    for question in ("Hello!", "Use get_weather with city Oslo."):
        required = post(http, messages=[{"role": "user", "content": question}], tools=[WEATHER], tool_choice="required",
                        agent={"tools": False})
        assert required["choices"][0]["finish_reason"] == "tool_calls", question
        assert required["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
        none = post(http, messages=[{"role": "user", "content": question}], tools=[WEATHER], tool_choice="none",
                    agent={"tools": False})
        assert none["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in none["choices"][0]["message"]
    # Several functions: the name is chosen by the model among them, under constraint.
    place = function("find_place", city="string")
    for question in ("Hello!", "Good morning!"):
        several = post(http, messages=[{"role": "user", "content": question}], tools=[WEATHER, place],
                       tool_choice="required", agent={"tools": False})
        assert several["choices"][0]["finish_reason"] == "tool_calls", question
        assert several["choices"][0]["message"]["tool_calls"][0]["function"]["name"] in ("get_weather", "find_place")
    named = post(http, messages=[{"role": "user", "content": "Hello!"}], tools=[TOTAL, WEATHER],
                 tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert [c["function"]["name"] for c in named["choices"][0]["message"]["tool_calls"]] == ["get_weather"]


@pytest.mark.parametrize("question", ["Hello!", "Good morning!", "What is the weather in Oslo?", "Set it."])
def test_forced_calls_have_arguments_valid_under_the_schema(http, question):
    """Arguments are enforced, not hoped for: on questions that have nothing to do with the function,
    a forced call's arguments still validate against its schema (an integer where it says integer)."""
    for tool in (TOTAL, WEATHER, function("book", nights="integer", city="string")):
        data = post(http, messages=[{"role": "user", "content": question}], tools=[tool], tool_choice="required",
                    agent={"tools": False})
        (call,) = data["choices"][0]["message"]["tool_calls"]
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, tool["function"]["parameters"])


def test_a_greeting_gets_a_plain_reply(http):
    data = post(http, messages=[{"role": "user", "content": "Hello!"}], tools=[WEATHER])
    message = data["choices"][0]["message"]
    assert message["content"] == GREETING_REPLY and "tool_calls" not in message


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]}, "tools.0"),
    ({"tools": [function("python", code="string")]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required", "agent": {"tools": False}}, "tool_choice"),
])
def test_bad_function_requests_are_400_naming_the_parameter(http, body, param):
    assert_error(http.post(CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}), 400,
                 param=param)


def test_an_openai_agents_agent_runs_its_function_tool_on_the_fixture(functions_url):
    import asyncio

    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return "14"

    model = OpenAIChatCompletionsModel(model=MODEL, openai_client=AsyncOpenAI(base_url=f"{functions_url}/v1",
                                                                              api_key="unused"))
    agent = Agent(name="weather", instructions="Answer with the tools.", model=model, tools=[get_weather])
    result = asyncio.run(Runner.run(agent, "Use get_weather with city Oslo."))
    assert cities == ["Oslo"] and result.final_output == "The answer is 14."


def test_a_pydantic_ai_agent_runs_its_tool_on_the_fixture(functions_url):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    agent = Agent(OpenAIChatModel(MODEL, provider=OpenAIProvider(base_url=f"{functions_url}/v1", api_key="unused")))
    cities: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return "14"

    assert agent.run_sync("Use get_weather with city Bergen.").output == "The answer is 14."
    assert cities == ["Bergen"]
