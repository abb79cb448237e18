"""``/v1/responses``: OpenAI's Responses API with hosted tools, against a real uvicorn.

Scripted model turns (the tiny fixture's tokenizer) make each item shape exact: the ``openai`` SDK's
``responses.create`` and ``responses.stream``, an ``openai-agents`` ``Agent`` on
``OpenAIResponsesModel`` with a hosted tool and a ``@function_tool``, the raw event stream, errors.
Every response and every event is validated with the ``openai`` package's own Responses types. The
trained tiny model then shows that a Responses request and a chat request run the same loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import httpx
import pytest
from live_server import (  # noqa: F401 - server_url is a fixture
    ARITH_QUESTIONS,
    SANDBOX_PROBLEM,
    WEATHER,
    assert_error,
    fixture_tools,
    http_client,
    run_agent,
    running_server,
    server_url,
)
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter
from scripted_backend import EOS, ScriptedBackend

from agent_runtime.budget import Budget
from agent_runtime.protocol import HERMES, TAPO, Protocol
from agent_runtime.sandbox import CodeTool
from agent_runtime.tools import FunctionTool, ToolRegistry
from server.containers import Containers
from server.response_store import ResponseStore, StoredResponse, owner_of
from server.state import ServerState

MODEL = "scripted"
RESPONSES = "/v1/responses"
CODE = {"type": "code_interpreter", "container": {"type": "auto"}}
WEB_SEARCH = {"type": "web_search"}
GET_WEATHER = {"type": "function", **WEATHER["function"]}  # the Responses API's flat function tool
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)
INPUT_ITEM = TypeAdapter(ResponseItem)

CODE_TURNS = ["<think>I will compute.</think><code>print(6 * 7)</code>",
              "<think>The program printed 42.</think><answer>42</answer>" + EOS]


def hermes_call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>" + EOS


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


@contextlib.contextmanager
def serving(tokenizer, turns: list[str], *, protocol: Protocol = TAPO, tools: ToolRegistry | None = None,
            backend=None, store: ResponseStore | None = None, api_keys: tuple[str, ...] = (),
            containers: dict[str, Any] | None = None) -> Iterator[tuple[httpx.Client, str, Any]]:
    """A server of scripted turns; its responses are stored in ``store`` (default: a fresh temporary one);
    ``containers``: the code containers' settings (``max_live``, ``idle_s``)."""
    backend = backend or ScriptedBackend(tokenizer, turns)
    tools = tools or fixture_tools()
    with tempfile.TemporaryDirectory() as tmp:
        store = store or ResponseStore.in_dir(tmp)
        kept = Containers(tools.get("code"), store=store, **containers) if containers is not None else None
        state = ServerState(backend=backend, tools=tools, model_name=MODEL, protocol=protocol,
                            budget=Budget(max_tool_calls=3), store=store, api_keys=api_keys, containers=kept)
        headers = {"Authorization": f"Bearer {api_keys[0]}"} if api_keys else {}
        with running_server(state) as url, http_client(url) as http:
            http.headers.update(headers)
            yield http, url, backend


def create(http: httpx.Client, **body) -> dict:
    r = http.post(RESPONSES, json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    Response.model_validate(data)
    return data


def stream_events(http: httpx.Client, **body) -> list[dict]:
    """The raw stream: every event validates as an OpenAI stream event, named as its SSE ``event``,
    numbered strictly upwards from 0."""
    events, names = [], []
    with http.stream("POST", RESPONSES, json={"model": MODEL, "stream": True, **body}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    for event in events:
        STREAM_EVENT.validate_python(event)
    assert names == [e["type"] for e in events]
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0, numbers
    return events


def output_text(data: dict) -> str:
    return Response.model_validate(data).output_text


def shapes(output: list[dict]) -> list[tuple]:
    """Items without their generated ids: what two runs of the same script must agree on."""
    return [tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(item.items()) if k not in ("id", "container_id",
                                                                                                    "call_id"))
            for item in output]


# ---- hosted tools through the openai SDK --------------------------------------------------------


def test_sdk_create_with_code_interpreter_returns_one_item_per_step(tokenizer):
    from openai import OpenAI

    with serving(tokenizer, CODE_TURNS) as (http, url, _):
        reply = OpenAI(base_url=f"{url}/v1", api_key="unused").responses.create(
            model=MODEL, input="What is 6 * 7?", tools=[CODE])
    assert reply.status == "completed" and reply.output_text == "42"
    assert [item.type for item in reply.output] == ["reasoning", "code_interpreter_call", "reasoning", "message"]
    thinking, code, after, message = reply.output
    assert thinking.content[0].text.strip() == "I will compute."
    assert code.code == "print(6 * 7)" and code.status == "completed"
    assert [(o.type, o.logs) for o in code.outputs] == [("logs", "42\n")]  # the program ran
    assert code.id.startswith(reply.id) and code.container_id
    assert after.content[0].text.strip() == "The program printed 42."
    assert message.role == "assistant" and message.status == "completed"
    usage = reply.usage
    assert usage.input_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens
    assert reply.tools[0].type == "code_interpreter"


def test_the_stream_sends_openais_event_sequence_and_ends_with_the_same_response(tokenizer):
    with serving(tokenizer, CODE_TURNS * 2) as (http, _, _):
        plain = create(http, input="What is 6 * 7?", tools=[CODE])
        events = stream_events(http, input="What is 6 * 7?", tools=[CODE])
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    code_events = [k for k in kinds if k.startswith("response.code_interpreter_call")]
    assert code_events == ["response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
                           "response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
                           "response.code_interpreter_call.completed"]
    final = events[-1]["response"]
    Response.model_validate(final)
    assert shapes(final["output"]) == shapes(plain["output"])
    # Each item is announced, then finished, with the same id; its deltas add up to its text.
    added = [e for e in events if e["type"] == "response.output_item.added"]
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert [e["item"]["id"] for e in added] == [e["item"]["id"] for e in done] == [i["id"] for i in final["output"]]
    assert [e["item"] for e in done] == final["output"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "42"
    reasoning = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert "I will compute." in reasoning and "The program printed 42." in reasoning


def test_sdk_stream_helper_accumulates_the_answer(tokenizer):
    from openai import OpenAI

    with serving(tokenizer, CODE_TURNS) as (_, url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        with client.responses.stream(model=MODEL, input="What is 6 * 7?", tools=[CODE]) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "42"


def test_web_search_is_a_web_search_call_with_its_query(tokenizer):
    turns = ["<think>Look it up.</think><search>capital of Norway</search>", "<answer>Oslo</answer>" + EOS]
    searched: list[str] = []
    tools = ToolRegistry([FunctionTool("search", lambda q: searched.append(q) or "Oslo is the capital of Norway.")])
    from openai import OpenAI

    with serving(tokenizer, turns * 4, tools=tools) as (http, url, _):
        data = create(http, input="What is the capital of Norway?", tools=[WEB_SEARCH])
        events = stream_events(http, input="What is the capital of Norway?", tools=[WEB_SEARCH])
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        typed = client.responses.create(model=MODEL, input="What is the capital of Norway?", tools=[WEB_SEARCH])
        with client.responses.stream(model=MODEL, input="What is the capital of Norway?", tools=[WEB_SEARCH]) as s:
            streamed = s.get_final_response()
    for reply in (typed, streamed):
        assert reply.output_text == "Oslo"
        assert [i.type for i in reply.output] == ["reasoning", "web_search_call", "message"]
        assert reply.output[1].action.query == "capital of Norway"
    search = next(i for i in data["output"] if i["type"] == "web_search_call")
    assert search["status"] == "completed"
    assert search["action"] == {"type": "search", "query": "capital of Norway"}
    assert searched == ["capital of Norway"] * 4
    assert output_text(data) == "Oslo"
    assert [e["type"] for e in events if e["type"].startswith("response.web_search_call")] == [
        "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed"]


def test_hosted_tools_run_only_when_listed(tokenizer):
    """Without a hosted tool in ``tools`` the model is offered none: its code block is not run."""
    ran: list[str] = []
    tools = ToolRegistry([FunctionTool("code", lambda code: ran.append(code) or "42\n")])
    turns = ["<code>print(6 * 7)</code>", "<answer>42</answer>" + EOS]
    with serving(tokenizer, turns, tools=tools) as (http, _, backend):
        data = create(http, input="What is 6 * 7?")
    assert ran == []
    assert not any(i["type"] == "code_interpreter_call" for i in data["output"])
    assert "<code>" not in tokenizer.decode(backend.prompts[0])  # the system prompt offers no code tool


# ---- function calling: the client's functions, the server's tools beside them -------------------


def test_a_client_function_comes_back_as_a_function_call_and_its_output_continues(tokenizer):
    turns = [hermes_call("python", code="print(12 * 34)"), hermes_call("get_weather", city="Oslo"),
             "In Oslo it is 408 and drizzly." + EOS]
    with serving(tokenizer, turns, protocol=HERMES) as (http, _, backend):
        first = create(http, input="Compute 12 * 34, then the weather in Oslo.", tools=[CODE, GET_WEATHER])
        assert first["status"] == "completed"
        code, call = first["output"]
        assert code["type"] == "code_interpreter_call" and code["outputs"] == [{"type": "logs", "logs": "408\n"}]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Oslo"} and call["call_id"].startswith("call_")
        # As the Agents SDK continues: the earlier items, then the function's output.
        history = [{"role": "user", "content": "Compute 12 * 34, then the weather in Oslo."}, *first["output"],
                   {"type": "function_call_output", "call_id": call["call_id"], "output": "Drizzle in Oslo"}]
        second = create(http, input=history, tools=[CODE, GET_WEATHER])
    assert output_text(second) == "In Oslo it is 408 and drizzly."
    resumed = tokenizer.decode(backend.prompts[-1], skip_special_tokens=False)
    # The model sees its own code call and its result again, then the function's result.
    assert "print(12 * 34)" in resumed and "408" in resumed and "Drizzle in Oslo" in resumed
    assert resumed.index("408") < resumed.index("Drizzle in Oslo")


def test_the_stream_sends_a_function_calls_arguments(tokenizer):
    with serving(tokenizer, [hermes_call("get_weather", city="Oslo")], protocol=HERMES) as (http, _, _):
        events = stream_events(http, input="Weather in Oslo?", tools=[GET_WEATHER])
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    (call,) = events[-1]["response"]["output"]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"city": "Oslo"}
    delta = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert delta == call["arguments"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_agents_agent_on_the_responses_model(tokenizer, stream):
    from agents import Agent, CodeInterpreterTool, OpenAIResponsesModel, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no upload to OpenAI's trace service
    weather_calls: list[str] = []
    checked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        weather_calls.append(city)
        return f"Drizzle in {city}"

    async def check(response: httpx.Response) -> None:  # every reply the framework reads, validated
        await response.aread()
        assert response.status_code == 200, response.text
        if response.headers["content-type"].startswith("text/event-stream"):
            for line in response.text.splitlines():
                if line.startswith("data: "):
                    STREAM_EVENT.validate_python(json.loads(line[6:]))
                    checked.append("event")
        else:
            Response.model_validate(response.json())
            checked.append("response")

    turns = [hermes_call("python", code="print(12 * 34)"), hermes_call("get_weather", city="Oslo"),
             "In Oslo it is 408 and drizzly." + EOS]
    with serving(tokenizer, turns, protocol=HERMES) as (_, url, backend):
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused",
                             http_client=httpx.AsyncClient(event_hooks={"response": [check]}, timeout=60))
        agent = Agent(name="weather", instructions="Answer with the tools.",
                      model=OpenAIResponsesModel(model=MODEL, openai_client=client),
                      tools=[get_weather, CodeInterpreterTool(tool_config=CODE)])

        final = run_agent(agent, "Compute 12 * 34, then the weather in Oslo.", stream=stream)
    assert final == "In Oslo it is 408 and drizzly."
    assert weather_calls == ["Oslo"]
    assert checked.count("event" if stream else "response") >= 2
    resumed = tokenizer.decode(backend.prompts[-1], skip_special_tokens=False)
    assert "Drizzle in Oslo" in resumed and "Answer with the tools." in resumed


# ---- budgets and failures ------------------------------------------------------------------------


def test_the_output_token_budget_makes_an_incomplete_response(tokenizer):
    turns = ["<think>" + "very long thoughts " * 20 + "</think><answer>42</answer>" + EOS] * 2
    with serving(tokenizer, turns) as (http, _, _):
        data = create(http, input="What is 6 * 7?", max_output_tokens=8)
        events = stream_events(http, input="What is 6 * 7?", max_output_tokens=8)
    assert data["status"] == "incomplete" and data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["usage"]["output_tokens"] == 8
    assert [(i["type"], i["status"]) for i in data["output"]] == [("reasoning", "incomplete")]  # cut mid-thought
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


class FailingBackend(ScriptedBackend):
    """Generates a few tokens of its one turn, then fails as a broken engine would."""

    async def generate(self, prompt_ids, params):
        n = 0
        async for chunk in super().generate(prompt_ids, params):
            yield chunk
            n += 1
            if n == 3:
                raise RuntimeError("the engine broke")


def test_a_generation_that_fails_mid_stream_ends_with_response_failed(tokenizer):
    backend = FailingBackend(tokenizer, ["<think>thinking for a while</think><answer>x</answer>" + EOS])
    with serving(tokenizer, [], backend=backend) as (http, _, _):
        events = stream_events(http, input="Hello?")
        health = http.get("/health").json()
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "Traceback" not in json.dumps(events)
    assert health["in_flight"] == 0  # the request's slot went back


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, 400, "tools.0.type"),
    ({"tools": [{"type": "function"}]}, 400, "tools.0.name"),
    ({"tools": [{"type": "mcp", "server_label": "nowhere", "server_url": "http://example.com"}]}, 400,
     "tools.0.server_label"),
    ({"tools": [{"type": "code_interpreter", "container": "cntr_unknown"}]}, 404, "tools.0.container"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, 400, "text.format"),
    ({"input": [{"type": "input_image", "image_url": "http://x"}]}, 400, "input.0.type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]}, 400,
     "input.0.content.0.type"),
    ({"input": [{"role": "robot", "content": "hi"}]}, 400, "input.0.role"),
    ({"input": []}, 400, "input"),
    ({"input": [{"role": "assistant", "content": "hi"}]}, 400, "input"),
    ({"tool_choice": "required"}, 400, "tool_choice"),
    ({"tool_choice": {"type": "code_interpreter"}}, 400, "tool_choice"),
    ({"background": True}, 400, "background"),
    ({"agent": {"tools": ["code"]}}, 400, "agent.tools"),
    ({"agent": {"protocol": "nonsense"}}, 400, "agent.protocol"),
    ({"max_output_tokens": 0}, 400, "max_output_tokens"),
    ({"temperature": 3}, 400, "temperature"),
    ({"previous_response_id": "resp_unknown"}, 404, "previous_response_id"),
    ({"tool_choice": "none", "tools": [CODE]}, 200, None),
    ({"model": "other"}, 404, "model"),
])
def test_bad_requests_get_openai_errors_naming_the_parameter(tokenizer, refusing, body, status, param):
    if status == 200:  # a control: a server like it answers a good request
        with serving(tokenizer, ["<answer>Hi</answer>" + EOS]) as (http, _, backend):
            data = create(http, input="Hello?", **body)
        assert output_text(data) == "Hi" and "<code>" not in tokenizer.decode(backend.prompts[0])
        return
    http, backend = refusing
    r = http.post(RESPONSES, json={"model": MODEL, "input": "Hello?", **body})
    assert_error(r, status, param=param)
    assert backend.prompts == []  # refused before anything ran


@pytest.fixture(scope="module")
def refusing(tokenizer) -> Iterator[tuple[httpx.Client, ScriptedBackend]]:
    """A server with no model turns to give: every request sent to it must be refused."""
    with serving(tokenizer, []) as (http, _, backend):
        yield http, backend


def test_web_search_on_a_server_without_search_is_refused(tokenizer):
    with serving(tokenizer, [], tools=ToolRegistry([FunctionTool("code", lambda c: "")])) as (http, _, _):
        r = http.post(RESPONSES, json={"model": MODEL, "input": "Hello?", "tools": [WEB_SEARCH]})
    assert "search" in assert_error(r, 400, param="tools.0")["message"]


# ---- the trained tiny model: the same loop as chat completions ----------------------------------


def test_a_responses_request_runs_the_same_agent_as_a_chat_request(server_url):
    """Greedy, the Responses API and chat completions give the same answer and the same tool calls."""
    with http_client(server_url) as http:
        for question in ARITH_QUESTIONS[:2]:
            chat = http.post("/v1/chat/completions", json={
                "model": "tiny", "messages": [{"role": "user", "content": question}], "temperature": 0}).json()
            r = http.post(RESPONSES, json={"model": "tiny", "input": question, "temperature": 0,
                                           "tools": [CODE, WEB_SEARCH]})
            assert r.status_code == 200, r.text
            data = r.json()
            Response.model_validate(data)
            message = chat["choices"][0]["message"]
            assert output_text(data) == message["content"]
            calls = [(i.get("code") or i.get("action", {}).get("query")) for i in data["output"]
                     if i["type"] in ("code_interpreter_call", "web_search_call")]
            assert calls == [s["arguments"] for s in message["tool_steps"]]
            logs = [i["outputs"][0]["logs"] for i in data["output"] if i["type"] == "code_interpreter_call"]
            assert logs == [s["output"] for s in message["tool_steps"] if s["name"] == "code"]


# ---- stored responses -----------------------------------------------------------------------------


def prompt_of(tokenizer, backend, n: int) -> str:
    return tokenizer.decode(backend.prompts[n], skip_special_tokens=False)


def test_previous_response_id_continues_the_stored_conversation(tokenizer):
    turns = ["<answer>Hello Ada.</answer>" + EOS, "<answer>Your name is Ada.</answer>" + EOS]
    with serving(tokenizer, turns) as (http, _, backend):
        first = create(http, input="My name is Ada.", instructions="Answer in one sentence.", tools=[CODE])
        second = create(http, input="What is my name?", previous_response_id=first["id"])
    assert first["store"] is True and second["previous_response_id"] == first["id"]
    assert output_text(second) == "Your name is Ada."
    assert "<code>" in prompt_of(tokenizer, backend, 0)  # the code tool was offered the first time only
    resumed = prompt_of(tokenizer, backend, 1)
    assert resumed.index("My name is Ada.") < resumed.index("Hello Ada.") < resumed.index("What is my name?")
    assert "Answer in one sentence." not in resumed  # instructions are not carried over (OpenAI's rule)
    assert "<code>" not in resumed


def test_a_function_calls_output_continues_a_stored_response(tokenizer):
    turns = [hermes_call("get_weather", city="Oslo"), "Drizzly in Oslo." + EOS]
    with serving(tokenizer, turns, protocol=HERMES) as (http, _, backend):
        first = create(http, input="Weather in Oslo?", tools=[GET_WEATHER])
        (call,) = first["output"]
        second = create(http, previous_response_id=first["id"], tools=[GET_WEATHER],
                        input=[{"type": "function_call_output", "call_id": call["call_id"], "output": "Drizzle"}])
    assert output_text(second) == "Drizzly in Oslo."
    resumed = prompt_of(tokenizer, backend, 1)
    assert resumed.index("Weather in Oslo?") < resumed.index('"city": "Oslo"') < resumed.index("Drizzle")


def test_sdk_retrieves_lists_the_input_of_and_deletes_a_stored_response(tokenizer):
    from openai import NotFoundError, OpenAI

    with serving(tokenizer, CODE_TURNS) as (_, url, _):
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        made = client.responses.create(model=MODEL, tools=[CODE], input=[
            {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "What is 6 * 7?"}])
        again = client.responses.retrieve(made.id)
        items = client.responses.input_items.list(made.id, order="asc")
        newest_first = client.responses.input_items.list(made.id, limit=1)
        client.responses.delete(made.id)
        with pytest.raises(NotFoundError):
            client.responses.retrieve(made.id)
        with pytest.raises(NotFoundError):
            client.responses.delete(made.id)
    assert again.model_dump() == made.model_dump() and again.output_text == "42"
    assert [(i.role, i.content[0].text) for i in items.data] == [("developer", "Be brief."), ("user", "What is 6 * 7?")]
    for item in items.data:
        INPUT_ITEM.validate_python(item.model_dump())
    assert [i.id for i in newest_first.data] == [items.data[-1].id] and newest_first.has_more


def test_store_false_keeps_nothing(tokenizer):
    with serving(tokenizer, ["<answer>Hi</answer>" + EOS]) as (http, _, _):
        data = create(http, input="Hello?", store=False)
        assert data["store"] is False
        assert_error(http.get(f"{RESPONSES}/{data['id']}"), 404)
        assert_error(http.post(RESPONSES, json={"model": MODEL, "input": "Again?", "previous_response_id": data["id"]}),
                     404, param="previous_response_id")


def test_a_response_belongs_to_the_key_that_made_it(tokenizer):
    turns = ["<answer>Hello Ada.</answer>" + EOS, "<answer>Ada.</answer>" + EOS]
    with serving(tokenizer, turns, api_keys=("key-one", "key-two")) as (http, _, _):
        mine = create(http, input="My name is Ada.")
        other = {"Authorization": "Bearer key-two"}
        assert_error(http.get(f"{RESPONSES}/{mine['id']}", headers=other), 404)
        assert_error(http.get(f"{RESPONSES}/{mine['id']}/input_items", headers=other), 404)
        assert_error(http.delete(f"{RESPONSES}/{mine['id']}", headers=other), 404)
        assert_error(http.post(RESPONSES, headers=other, json={
            "model": MODEL, "input": "What is my name?", "previous_response_id": mine["id"]}), 404)
        assert_error(http.get(f"{RESPONSES}/{mine['id']}", headers={"Authorization": "Bearer nobody"}), 401)
        assert http.get(f"{RESPONSES}/{mine['id']}").json() == mine  # its own key still reads it
        assert output_text(create(http, input="What is my name?", previous_response_id=mine["id"])) == "Ada."


def test_stored_responses_survive_a_restart(tokenizer, tmp_path):
    with serving(tokenizer, ["<answer>Hello Ada.</answer>" + EOS], store=ResponseStore.in_dir(tmp_path)) as (http, _, _):
        first = create(http, input="My name is Ada.")
    turns = ["<answer>Your name is Ada.</answer>" + EOS]
    with serving(tokenizer, turns, store=ResponseStore.in_dir(tmp_path)) as (http, _, backend):
        assert http.get(f"{RESPONSES}/{first['id']}").json() == first
        create(http, input="What is my name?", previous_response_id=first["id"])
    assert "Hello Ada." in prompt_of(tokenizer, backend, 0)


WRITER = """
import sys
from server.response_store import ResponseStore, StoredResponse
store = ResponseStore(sys.argv[1])
for n in range(100_000):
    rid = f"resp_{n}"
    store.put("owner", StoredResponse(rid, {"id": rid, "created_at": 1, "pad": "x" * 20_000}, [], []))
    print(rid, flush=True)
"""


def test_kill_9_during_writes_loses_no_committed_response(tmp_path):
    """A writer is killed with SIGKILL mid-stream; every response it reported as stored is there, whole."""
    path = tmp_path / "state.sqlite3"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    committed = [writer.stdout.readline().strip() for _ in range(200)]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store = ResponseStore(path)  # opening recovers the write-ahead log
    for rid in committed:
        record = store.get("owner", rid)
        assert record is not None and record.response["pad"] == "x" * 20_000, rid
    assert store.get("someone else", committed[0]) is None
    import sqlite3

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_owners_are_digests_of_keys_never_the_keys(tmp_path):
    store = ResponseStore(tmp_path / "s.sqlite3")
    store.put(owner_of("sk-secret"), StoredResponse("resp_1", {"id": "resp_1"}, [], []))
    assert b"sk-secret" not in (tmp_path / "s.sqlite3").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("s.sqlite3-*"))
    assert store.get(owner_of("sk-secret"), "resp_1") is not None and store.get(owner_of("other"), "resp_1") is None


# ---- code containers --------------------------------------------------------------------------------

needs_sandbox = pytest.mark.skipif(SANDBOX_PROBLEM is not None, reason=f"no sandbox here: {SANDBOX_PROBLEM}")
SET_X = ["<code>x = 41\nopen('notes.txt', 'w').write('kept')\nprint('set')</code>", "<answer>set</answer>" + EOS]
READ_X = ["<code>print(x + 1, open('notes.txt').read())</code>", "<answer>done</answer>" + EOS]


def code_item(data: dict) -> dict:
    return next(i for i in data["output"] if i["type"] == "code_interpreter_call")


@needs_sandbox
def test_a_continuation_reads_the_variables_and_files_of_the_conversations_container(tokenizer):
    with serving(tokenizer, SET_X + READ_X + READ_X, api_keys=("key-one", "key-two")) as (http, _, _):
        first = create(http, input="Set x.", tools=[CODE])
        second = create(http, input="Read x.", tools=[CODE], previous_response_id=first["id"])
        container = code_item(first)["container_id"]
        named = create(http, input="Read x.", tools=[{"type": "code_interpreter", "container": container}])
        other = http.post(RESPONSES, headers={"Authorization": "Bearer key-two"}, json={
            "model": MODEL, "input": "Read x.", "tools": [{"type": "code_interpreter", "container": container}]})
    assert code_item(first)["outputs"][0]["logs"] == "set\n"
    assert code_item(second)["container_id"] == container and container.startswith("cntr_")
    assert code_item(second)["outputs"][0]["logs"] == "42 kept\n"
    assert code_item(named)["outputs"][0]["logs"] == "42 kept\n"
    assert assert_error(other, 404, param="tools.0.container")["code"] == "container_not_found"


@needs_sandbox
def test_without_a_continuation_each_response_gets_a_fresh_container(tokenizer):
    with serving(tokenizer, SET_X + READ_X) as (http, _, _):
        first = create(http, input="Set x.", tools=[CODE])
        second = create(http, input="Read x.", tools=[CODE])
    assert code_item(second)["container_id"] != code_item(first)["container_id"]
    assert "NameError" in code_item(second)["outputs"][0]["logs"]


@needs_sandbox
def test_an_idle_container_ends_and_its_worker_is_reaped(tokenizer):
    tools = fixture_tools()
    pool = tools.get("code").pool
    with serving(tokenizer, SET_X + READ_X, tools=tools, containers={"idle_s": 1.0}) as (http, _, _):
        first = create(http, input="Set x.", tools=[CODE])
        container = code_item(first)["container_id"]
        pid = pool.session_pids()[container]
        os.kill(pid, 0)  # the container's worker runs
        deadline = time.monotonic() + 30
        while container in pool.session_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        later = http.post(RESPONSES, json={"model": MODEL, "input": "Read x.",
                                           "tools": [{"type": "code_interpreter", "container": container}]})
        continued = create(http, input="Read x.", tools=[CODE], previous_response_id=first["id"])
    assert container not in pool.session_pids()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "has ended" in assert_error(later, 404, param="tools.0.container")["message"]
    # The conversation goes on in a new container, without the old variables.
    assert code_item(continued)["container_id"] != container
    assert "NameError" in code_item(continued)["outputs"][0]["logs"]


@needs_sandbox
def test_past_the_cap_a_key_closes_its_own_idle_container_and_another_key_is_refused(tokenizer):
    answer = ["<answer>Hi</answer>" + EOS]
    turns = answer + SET_X + SET_X
    with serving(tokenizer, turns, containers={"max_live": 1}, api_keys=("key-one", "key-two")) as (http, _, _):
        other = {"Authorization": "Bearer key-two"}
        # A request that runs no code holds its container only while it runs: it blocks no one after.
        idle = http.post(RESPONSES, headers=other, json={"model": MODEL, "input": "Hi", "tools": [CODE]})
        assert idle.status_code == 200, idle.text
        first = create(http, input="Set x.", tools=[CODE])
        refused = http.post(RESPONSES, headers=other, json={"model": MODEL, "input": "Set x.", "tools": [CODE]})
        second = create(http, input="Set x again.", tools=[CODE])  # key-one: its own idle one is closed
    error = assert_error(refused, 429, param="tools.0.container")
    assert error["code"] == "container_limit_reached" and "all 1 code containers" in error["message"]
    assert refused.headers["retry-after"]
    assert code_item(second)["container_id"] != code_item(first)["container_id"]
    assert code_item(second)["outputs"][0]["logs"] == "set\n"


@needs_sandbox
def test_history_sent_back_without_previous_response_id_keeps_the_container(tokenizer):
    """As the Agents SDK continues a run: the earlier items sent back as input name the container."""
    with serving(tokenizer, SET_X + READ_X) as (http, _, _):
        first = create(http, input="Set x.", tools=[CODE])
        history = [{"role": "user", "content": "Set x."}, *first["output"], {"role": "user", "content": "Read x."}]
        second = create(http, input=history, tools=[CODE])
    assert code_item(second)["container_id"] == code_item(first)["container_id"]
    assert code_item(second)["outputs"][0]["logs"] == "42 kept\n"


@needs_sandbox
def test_chat_completions_share_a_container_through_agent_session_id(tokenizer):
    turns = SET_X + READ_X + READ_X + READ_X
    with serving(tokenizer, turns, api_keys=("key-one", "key-two")) as (http, _, _):
        def chat(session: str | None, key: str = "key-one") -> str:
            agent = {"session_id": session} if session else {}
            r = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
                "model": MODEL, "messages": [{"role": "user", "content": "Go."}], "agent": agent})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["tool_steps"][0]["output"]

        assert chat("notebook-1") == "set\n"
        assert chat("notebook-1") == "42 kept\n"
        assert "NameError" in chat(None)  # no session: a fresh process per call
        assert "NameError" in chat("notebook-1", key="key-two")  # the same name under another key: its own


@needs_sandbox
def test_a_figure_the_code_draws_comes_back_as_an_image_output(tokenizer):
    pytest.importorskip("matplotlib")
    plot = "<code>import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nprint('drawn')</code>"
    turns = [plot, "<answer>drawn</answer>" + EOS] * 2
    with serving(tokenizer, turns, tools=fixture_tools(CodeTool())) as (http, _, _):  # matplotlib preloaded
        data = create(http, input="Plot it.", tools=[CODE])
        chat = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [
            {"role": "user", "content": "Plot it."}]}).json()
    logs, image = code_item(data)["outputs"]
    assert logs == {"type": "logs", "logs": "drawn\n[1 figure shown to the user]"}
    assert image["type"] == "image" and image["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    (step,) = chat["choices"][0]["message"]["tool_steps"]
    assert step["images"] == [image["url"]]  # the same figure, on chat completions' tool step
