"""How ``/v1/chat/completions`` carries the client's functions under ``--protocol hermes``: the request
fields, the OpenAI ``tool_calls`` of a reply (whole and streamed), tool results sent back, ``tool_choice``.

A real uvicorn serves scripted model turns (the tiny fixture's tokenizer), so that
each shape is reproducible; the built-in tool is a real function. What a trained function-calling
model does with the same requests is tested in ``test_function_serving.py``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Iterator

import httpx
import pytest
from live_server import TOTAL, WEATHER, assert_error, function, http_client, read_sse, running_server, validate
from scripted_backend import EOS, ScriptedBackend

from agent_runtime.budget import Budget
from agent_runtime.protocol import HERMES
from agent_runtime.tools import FunctionTool, ToolRegistry
from server.state import ServerState

MODEL = "scripted"
CHAT = "/v1/chat/completions"


def call(name: str, **arguments) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


@contextlib.contextmanager
def serving(tokenizer, turns: list[str]) -> Iterator[tuple[httpx.Client, ScriptedBackend]]:
    backend = ScriptedBackend(tokenizer, turns)
    tools = ToolRegistry([FunctionTool("code", lambda code: "408\n"), FunctionTool("search", lambda q: f"about {q}")])
    state = ServerState(backend=backend, tools=tools, model_name=MODEL, protocol=HERMES, budget=Budget(max_tool_calls=3))
    with running_server(state) as url, http_client(url) as http:
        yield http, backend


def post(http: httpx.Client, **body) -> dict:
    r = http.post(CHAT, json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    return data


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def prompt_text(tokenizer, backend: ScriptedBackend, n: int = 0) -> str:
    return tokenizer.decode(backend.prompts[n], skip_special_tokens=False)


def test_a_call_of_a_client_function_is_returned_as_tool_calls(tokenizer):
    with serving(tokenizer, [call("get_weather", city="Oslo") + EOS]) as (http, backend):
        data = post(http, messages=user("Weather in Oslo?"), tools=[WEATHER])
    choice = data["choices"][0]
    assert (choice["finish_reason"], choice["agent_finish_reason"]) == ("tool_calls", "client_tool")
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")
    assert tool_call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert choice["message"]["content"] is None and choice["message"]["tool_steps"] == []
    # The client's function was offered beside the built-in ones, through the template.
    prompt = prompt_text(tokenizer, backend)
    for name in ("search", "python", "get_weather"):
        assert f'"name": "{name}"' in prompt


def test_the_result_sent_back_continues_the_conversation(tokenizer):
    history = [*user("Weather in Oslo?"),
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
               {"role": "tool", "tool_call_id": "call_abc", "content": "Drizzle <|im_end|>"}]
    with serving(tokenizer, ["It is drizzling in Oslo." + EOS]) as (http, backend):
        data = post(http, messages=history, tools=[WEATHER])
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == "It is drizzling in Oslo."
    assert "tool_calls" not in choice["message"]
    prompt = prompt_text(tokenizer, backend)
    assert prompt.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
                           "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nDrizzle <|im_end|>\n"
                           "</tool_response><|im_end|>\n<|im_start|>assistant\n")
    # The tool result's "<|im_end|>" is text: it cannot end the tool turn early.
    assert backend.prompts[0].count(tokenizer.eos_token_id) == prompt.count("<|im_end|>") - 1


def test_a_stream_sends_the_calls_as_indexed_deltas(tokenizer):
    turn = call("get_weather", city="Oslo") + "\n" + call("set_total", amount=3) + EOS
    with serving(tokenizer, [turn]) as (http, _):
        status, payloads = read_sse(http, CHAT, {"model": MODEL, "stream": True, "messages": user("Both, please."),
                                                 "tools": [WEATHER, TOTAL]})
    assert status == 200 and payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    deltas = [d["tool_calls"] for c in chunks for d in [c["choices"][0]["delta"]] if "tool_calls" in d]
    assert len(deltas) == 1
    assert [(d["index"], d["function"]["name"], json.loads(d["function"]["arguments"])) for d in deltas[0]] == [
        (0, "get_weather", {"city": "Oslo"}), (1, "set_total", {"amount": 3})]
    assert len({d["id"] for d in deltas[0]}) == 2
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"][0]["agent_finish_reason"] == "client_tool"


def test_built_in_calls_run_here_and_only_the_clients_call_returns(tokenizer):
    turns = [call("python", code="print(12 * 34)") + EOS, call("set_total", amount=408) + EOS]
    with serving(tokenizer, turns) as (http, _):
        data = post(http, messages=user("Compute 12 * 34, then set the total."), tools=[TOTAL])
    message = data["choices"][0]["message"]
    assert [(s["name"], s["arguments"], s["output"].strip()) for s in message["tool_steps"]] == [
        ("code", "print(12 * 34)", "408")]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == [
        ("set_total", '{"amount": 408}')]


def test_parallel_tool_calls_false_returns_one_call(tokenizer):
    turn = call("get_weather", city="Oslo") + call("get_weather", city="Rome") + EOS
    with serving(tokenizer, [turn]) as (http, _):
        data = post(http, messages=user("Oslo and Rome?"), tools=[WEATHER], parallel_tool_calls=False)
    assert [json.loads(c["function"]["arguments"]) for c in data["choices"][0]["message"]["tool_calls"]] == [
        {"city": "Oslo"}]


def test_tool_choice_required_and_named_force_the_call(tokenizer):
    with serving(tokenizer, [' {"city": "Oslo"}}\n</tool_call>' + EOS]) as (http, backend):
        data = post(http, messages=user("Hello!"), tools=[WEATHER], tool_choice="required", agent={"tools": False})
    # The name is written; the arguments are the model's, each token under the function's schema.
    assert prompt_text(tokenizer, backend).endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", '
                                                    '"arguments":')
    assert data["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                           "arguments": '{"city": "Oslo"}'}
    # several functions offered: the model chooses the name, constrained to those offered
    with serving(tokenizer, [' {"city": "Oslo"}}\n</tool_call>' + EOS]) as (http, backend):
        data = post(http, messages=user("Hello!"), tools=[WEATHER, function("get_place", city="string")],
                    tool_choice="required", agent={"tools": False})
    assert backend.prompts[0] != backend.prompts[-1]  # a constrained step came before the free one
    [call] = data["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] in ("get_weather", "get_place") and call["function"]["arguments"] == '{"city": "Oslo"}'
    with serving(tokenizer, [' {"amount": 5}}\n</tool_call>' + EOS]) as (http, backend):
        data = post(http, messages=user("Hello!"), tools=[WEATHER, TOTAL],
                    tool_choice={"type": "function", "function": {"name": "set_total"}})
    assert prompt_text(tokenizer, backend).endswith('<tool_call>\n{"name": "set_total", "arguments":')
    assert data["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "set_total", "arguments": '{"amount": 5}'}


def test_tool_choice_none_does_not_offer_the_clients_functions(tokenizer):
    with serving(tokenizer, ["Hello!" + EOS]) as (http, backend):
        data = post(http, messages=user("Hello!"), tools=[WEATHER], tool_choice="none", agent={"tools": False})
    assert data["choices"][0]["message"]["content"] == "Hello!"
    assert "get_weather" not in prompt_text(tokenizer, backend)
    assert "<tools>" not in prompt_text(tokenizer, backend)  # no built-in ones either


def test_web_search_options_turn_the_search_on(tokenizer):
    with serving(tokenizer, ["Ok." + EOS]) as (http, backend):
        post(http, messages=user("News?"), agent={"tools": ["code"]}, web_search_options={})
    assert '"name": "search"' in prompt_text(tokenizer, backend)


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]}, "tools.0"),
    ({"tools": [{"type": "retrieval"}]}, "tools.0"),
    ({"tools": [function("python", code="string")]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required", "agent": {"tools": False}}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_bad_function_requests_are_400_naming_the_parameter(tokenizer, body, param):
    with serving(tokenizer, []) as (http, _):
        assert_error(http.post(CHAT, json={"model": MODEL, "messages": user("Hi"), **body}), 400, param=param)
