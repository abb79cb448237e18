"""The hermes function-calling protocol: call parsing, template rendering, and the loop's bookkeeping.

Model turns are scripted (the tokenizer is the tiny fixture's), tools are
real functions; what a trained function-calling model does is tested on the fixture model.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from scripted_backend import EOS, ScriptedBackend

from agent_runtime.budget import Budget
from agent_runtime.detok import decode
from agent_runtime.events import Done, Injected, ToolCall, ToolResult
from agent_runtime.functions import (
    BUILTIN_FUNCTIONS,
    CallError,
    FunctionCall,
    FunctionSchemaError,
    builtin_functions,
    client_function,
    offered_functions,
    parse_call,
)
from agent_runtime.loop import run, run_to_end
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import HERMES, get_protocol
from agent_runtime.tool_turns import DEFAULT_TOOL_TEMPLATE, ToolTurnRenderer, function_prompt_ids, tool_chat_template
from agent_runtime.tools import ToolRegistry

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    return tiny_tokenizer


def call_text(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def registry(**fns) -> ToolRegistry:
    reg = ToolRegistry()
    for name, fn in fns.items():
        reg.add_function(name, fn)
    return reg


async def collect(gen):
    return [e async for e in gen]


def full_text(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


# --- parsing calls ----------------------------------------------------------------------------

FUNCTIONS = {f.name: f for f in offered_functions(builtin_functions(("search", "code")), [client_function(WEATHER)])}


def test_a_call_parses_to_its_function_and_arguments():
    call = parse_call('{"name": "python", "arguments": {"code": "print(1)"}}', FUNCTIONS)
    assert isinstance(call, FunctionCall)
    assert call.function is BUILTIN_FUNCTIONS["code"] and call.arguments == {"code": "print(1)"}
    # Arguments written as a JSON string (some models do) are read too.
    call = parse_call('{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}', FUNCTIONS)
    assert isinstance(call, FunctionCall) and not call.function.runs_here
    assert call.arguments_json == '{"city": "Oslo"}'


@pytest.mark.parametrize("text, name, fragment", [
    ('{"name": "python", "arguments": {"code": ', "", "not valid JSON"),
    ('["python"]', "", "must be a JSON object"),
    ('{"name": "rm_rf", "arguments": {}}', "rm_rf", "no function named 'rm_rf'. Available: search, python, get_weather"),
    ('{"name": "python", "arguments": {}}', "python", "'code' is a required property"),
    ('{"name": "python", "arguments": {"code": 3}}', "python", "at code: 3 is not of type 'string'"),
    ('{"name": "search", "arguments": {"query": "x", "k": 3}}', "search", "Additional properties"),
    ('{"name": "python", "arguments": [1]}', "python", "must be a JSON object"),
])
def test_a_bad_call_is_an_error_the_model_can_read(text, name, fragment):
    error = parse_call(text, FUNCTIONS)
    assert isinstance(error, CallError)
    assert error.name == name and fragment in error.message and error.message.startswith("Error:")


def test_client_functions_are_checked_when_offered():
    with pytest.raises(FunctionSchemaError, match="type 'function'"):
        client_function({"type": "retrieval"})
    with pytest.raises(FunctionSchemaError, match="non-empty 'name'"):
        client_function({"type": "function", "function": {"name": ""}})
    with pytest.raises(FunctionSchemaError, match="not a valid JSON schema"):
        client_function({"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}})
    with pytest.raises(FunctionSchemaError, match="two functions are named 'python'"):
        offered_functions(builtin_functions(("code",)), [client_function(
            {"type": "function", "function": {"name": "python"}})])
    # No parameters: a function without arguments.
    assert client_function({"type": "function", "function": {"name": "now"}}).parameters == {
        "type": "object", "properties": {}}


# --- the chat template --------------------------------------------------------------------------

def test_the_prompt_offers_the_functions_through_the_template(tokenizer):
    assert tool_chat_template(tokenizer) == DEFAULT_TOOL_TEMPLATE  # the fixture's template has no tools
    functions = offered_functions(builtin_functions(("search", "code")), [client_function(WEATHER)])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]
    ids = build_prompt_ids(tokenizer, HERMES, messages, functions=functions)
    text = full_text(tokenizer, ids)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Functions")
    for f in functions:
        assert json.dumps(f.openai_schema()) in text
    assert text.endswith("<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n")
    assert text.count("<|im_start|>system") == 1  # the client's system message is not repeated
    # By default the built-in tools asked for are offered, nothing else.
    text = full_text(tokenizer, build_prompt_ids(tokenizer, HERMES, "Hi", enabled_tools=("code",)))
    assert '"name": "python"' in text and '"name": "search"' not in text


def test_earlier_calls_and_results_render_as_the_template_says(tokenizer):
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "rain <|im_end|>"},
    ]
    ids = function_prompt_ids(tokenizer, messages, [client_function(WEATHER)])
    text = full_text(tokenizer, ids)
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
            "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nrain <|im_end|>\n</tool_response>"
            "<|im_end|>\n<|im_start|>assistant\n") in text
    # A tool result's special-token string stays text: one end-of-turn id fewer than the string count.
    assert ids.count(tokenizer.eos_token_id) == text.count("<|im_end|>") - 1


def test_a_tool_turn_is_the_template_difference_with_the_output_as_plain_text(tokenizer):
    renderer = ToolTurnRenderer(tokenizer, tokenizer.eos_token)
    one = renderer.ids(["42 <|im_end|>"])
    assert full_text(tokenizer, one) == (
        "\n<|im_start|>user\n<tool_response>\n42 <|im_end|>\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert one.count(tokenizer.eos_token_id) == 1  # the template's, not the output's
    two = renderer.ids(["a", "b"])
    assert full_text(tokenizer, two) == ("\n<|im_start|>user\n<tool_response>\na\n</tool_response>\n<tool_response>\n"
                                         "b\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_a_model_template_that_renders_tools_is_used_as_it_is(tokenizer):
    # A model whose template has a "tool" role of its own: its format, not the default one, is injected.
    own = (
        "{%- if tools %}{{- '<|im_start|>system\\nTOOLS ' + (tools | map(attribute='function.name') | join(',')) "
        "+ '<|im_end|>\\n' }}{%- endif %}"
        "{%- for m in messages %}"
        "{%- if m['role'] == 'tool' %}{{- '<|im_start|>tool\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{%- elif m['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' + (m['content'] or '') }}"
        "{%- for c in m['tool_calls'] or [] %}{{- '<tool_call>' + c['function']['name'] + '</tool_call>' }}{%- endfor %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}"
        "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    saved = tokenizer.chat_template
    tokenizer.chat_template = own
    try:
        assert tool_chat_template(tokenizer) is None
        prompt = full_text(tokenizer, build_prompt_ids(tokenizer, HERMES, "Hi"))
        assert prompt.startswith("<|im_start|>system\nTOOLS search,python<|im_end|>\n")
        turn = full_text(tokenizer, ToolTurnRenderer(tokenizer, tokenizer.eos_token).ids(["7"]))
        assert turn == "\n<|im_start|>tool\n7<|im_end|>\n<|im_start|>assistant\n"
    finally:
        tokenizer.chat_template = saved


# --- the loop -----------------------------------------------------------------------------------

async def test_a_built_in_call_runs_and_the_conversation_goes_on_as_the_template_renders_it(tokenizer):
    question = "What is 6 * 7?"
    prompt = build_prompt_ids(tokenizer, HERMES, question)
    backend = ScriptedBackend(tokenizer, [call_text("python", {"code": "print(6 * 7)"}) + EOS,
                                          "<think>The tool said 42.</think>6 * 7 = 42." + EOS])
    tools = registry(code=lambda code: str(eval(code.removeprefix("print(").removesuffix(")"))))
    events = await collect(run(prompt, backend, tools, protocol=HERMES))
    call = next(e for e in events if isinstance(e, ToolCall))
    assert (call.name, call.arguments) == ("code", "print(6 * 7)")  # recorded as the tag protocols record it
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.output.text == "42" and result.output.ok
    done = events[-1]
    traj = done.trajectory
    assert (done.finish_reason, done.agent_finish_reason, traj.answer) == ("stop", "answer", "6 * 7 = 42.")

    # The model's call and its end-of-turn token are model tokens; the tool turn is injected.
    injected = next(e for e in events if isinstance(e, Injected))
    first_turn = backend.prompts[1][len(prompt):len(backend.prompts[1]) - len(injected.token_ids)]
    assert first_turn[-1] == tokenizer.eos_token_id
    assert traj.mask == [1] * len(first_turn) + [0] * len(injected.token_ids) + [1] * (
        len(traj.mask) - len(first_turn) - len(injected.token_ids))
    assert backend.prompts[1] == prompt + traj.completion_ids[:len(backend.prompts[1]) - len(prompt)]
    assert traj.completion_ids[-1] == tokenizer.eos_token_id
    assert traj.usage.injected_tokens == len(injected.token_ids) == traj.tool_calls[0].injected_tokens

    # What the loop built is the conversation the chat template renders, token for token in text.
    rendered = function_prompt_ids(tokenizer, [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "python", "arguments": {"code": "print(6 * 7)"}}}]},
        {"role": "tool", "content": "42"},
    ], builtin_functions(("search", "code")))
    assert full_text(tokenizer, backend.prompts[1]) == full_text(tokenizer, rendered)
    assert traj.answer == HERMES.extract_answer(decode(tokenizer, [i for i, m in zip(traj.completion_ids, traj.mask) if m]))


async def test_calls_of_one_turn_run_together_and_come_back_in_one_tool_turn(tokenizer):
    both_running = threading.Barrier(2, timeout=10)  # broken unless the two calls overlap

    def search(query: str) -> str:
        both_running.wait()
        return f"about {query}"

    turn = call_text("search", {"query": "Oslo"}) + "\n" + call_text("search", {"query": "Bergen"}) + EOS
    backend = ScriptedBackend(tokenizer, [turn, "Both are in Norway." + EOS])
    events = await collect(run([1, 2], backend, registry(search=search), protocol=HERMES))
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(r.index, r.output.text, r.output.ok) for r in results] == [(0, "about Oslo", True), (1, "about Bergen", True)]
    injected = [e for e in events if isinstance(e, Injected)]
    assert len(injected) == 1 and injected[0].text.count("<tool_response>") == 2
    traj = events[-1].trajectory
    assert traj.tool_call_counts == {"search": 2} and traj.answer == "Both are in Norway."
    assert sum(c.injected_tokens for c in traj.tool_calls) == len(injected[0].token_ids)


async def test_a_call_to_a_client_function_ends_the_reply_with_the_call(tokenizer):
    ran = []
    functions = offered_functions(builtin_functions(("search",)), [client_function(WEATHER)])
    backend = ScriptedBackend(tokenizer, [
        call_text("search", {"query": "capital of Norway"}) + EOS,
        "<think>Oslo.</think>" + call_text("get_weather", {"city": "Oslo"}) + EOS])
    events = await collect(run([1], backend, registry(search=lambda q: ran.append(q) or "Oslo"), protocol=HERMES,
                               functions=functions))
    done = events[-1]
    traj = done.trajectory
    assert ran == ["capital of Norway"]  # the built-in one ran here
    assert (done.finish_reason, done.agent_finish_reason) == ("tool_calls", "client_tool")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in traj.client_calls] == [("call_1", "get_weather", {"city": "Oslo"})]
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["search"]  # the client's call is not a tool step
    assert traj.completion_ids[-1] == tokenizer.eos_token_id and traj.mask[-1] == 1  # an answered trajectory
    assert traj.answer is None


@pytest.mark.parametrize("turn, fragment", [
    ("<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"\n</tool_call>", "not valid JSON"),
    (call_text("python", {"source": "print(1)"}), "'code' is a required property"),
    (call_text("shell", {"cmd": "ls"}), "no function named 'shell'"),
    ("<tool_call>\n{\"name\": \"python\"", "not closed with </tool_call>"),
])
async def test_a_malformed_call_is_answered_as_its_result_and_counts(tokenizer, turn, fragment):
    ran = []
    backend = ScriptedBackend(tokenizer, [turn + EOS, "Sorry." + EOS])
    events = await collect(run([1], backend, registry(code=lambda c: ran.append(c) or "1"), protocol=HERMES))
    result = next(e for e in events if isinstance(e, ToolResult))
    assert not result.output.ok and fragment in result.output.text
    injected = next(e for e in events if isinstance(e, Injected))
    assert fragment in injected.text and "<tool_response>" in injected.text
    traj = events[-1].trajectory
    assert ran == [] and traj.invalid_actions == 1 and traj.answer == "Sorry."


async def test_the_tool_budget_counts_every_call_of_a_turn(tokenizer):
    ran = []
    turn = "".join(call_text("search", {"query": q}) for q in "abc") + EOS
    backend = ScriptedBackend(tokenizer, [turn, call_text("search", {"query": "d"}) + EOS])
    events = await collect(run([1], backend, registry(search=lambda q: ran.append(q) or q), protocol=HERMES,
                               budget=Budget(max_tool_calls=2)))
    assert ran == ["a", "b"]  # the third call of the turn is over the budget: answered, not run
    results = [e for e in events if isinstance(e, ToolResult)]
    assert not results[2].output.ok and "limit of tool calls" in results[2].output.text
    done = events[-1]
    assert (done.finish_reason, done.agent_finish_reason) == ("stop", "tool_budget")


async def test_a_plain_reply_is_the_answer(tokenizer):
    backend = ScriptedBackend(tokenizer, ["Hello! I can search and run Python." + EOS])
    done = (await collect(run([1], backend, registry(), protocol=HERMES)))[-1]
    assert (done.agent_finish_reason, done.trajectory.answer) == ("answer", "Hello! I can search and run Python.")
    assert done.trajectory.tool_calls == []


def test_the_protocol_is_registered_and_needs_a_chat_template(tokenizer):
    assert get_protocol("hermes") is HERMES and HERMES.tool_names == ("search", "code")
    assert HERMES.stop_strings(("search", "code")) == ()  # the model ends its own turn after its calls
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        with pytest.raises(ValueError, match="hermes protocol needs a model with a chat template"):
            build_prompt_ids(tokenizer, HERMES, "Hi")
    finally:
        tokenizer.chat_template = saved


def test_a_forced_call_is_the_name_then_arguments_under_the_functions_schema():
    from agent_runtime.functions import ForcedCall, forced_call

    total = client_function({"type": "function", "function": {"name": "set_total", "parameters": TOTAL_SCHEMA}})
    free = client_function({"type": "function", "function": {"name": "ping"}})
    assert forced_call(HERMES, [total, free]) == ForcedCall(
        "<tool_call>\n", ('{"name": "set_total", "arguments":', '{"name": "ping", "arguments":'),
        (TOTAL_SCHEMA, {"type": "object", "properties": {}}), "}\n</tool_call>")


TOTAL_SCHEMA = {"type": "object", "properties": {"amount": {"type": "integer"}, "note": {"type": "string"}},
                "required": ["amount"], "additionalProperties": False}


def _forced_run(tokenizer, functions, turns):
    from agent_runtime.functions import forced_call

    backend = ScriptedBackend(tokenizer, turns)
    prompt = build_prompt_ids(tokenizer, HERMES, "Hello!", functions=functions)
    traj = asyncio.run(run_to_end(prompt, backend, ToolRegistry(), protocol=HERMES, functions=functions,
                                  forced=forced_call(HERMES, functions), budget=Budget(max_total_tokens=120)))
    return traj, backend


def test_a_forced_choice_is_made_among_the_offered_calls_only(tiny_tokenizer):
    place = client_function({"type": "function", "function": {"name": "get_place", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    weather = client_function({"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    traj, _ = _forced_run(tiny_tokenizer, [weather, place], [' {"city": "Oslo"}}\n</tool_call>' + EOS])
    # The scripted backend takes the smallest token id it is allowed: one of the two names, whole.
    [call] = traj.client_calls
    assert call.name in ("get_weather", "get_place") and json.loads(call.arguments) == {"city": "Oslo"}
    assert traj.text.startswith('<tool_call>\n{"name": "' + call.name + '", "arguments": {"city": "Oslo"}}')
    assert len(traj.completion_ids) == len(traj.mask) == len(traj.logprobs)


@pytest.mark.parametrize("written", [
    ' {"amount": "twelve"}}\n</tool_call>',  # a string where the schema says integer
    ' {"amount": 12, "total": 12}}\n</tool_call>',  # a key the schema does not allow
])
def test_forced_arguments_follow_the_schema_whatever_the_model_would_write(tiny_tokenizer, written):
    """Where the model would write arguments that fail the schema, it is only offered tokens that keep
    them valid: the call is valid, and it is the client's call that ends the reply."""
    total = client_function({"type": "function", "function": {"name": "set_total", "parameters": TOTAL_SCHEMA}})
    traj, backend = _forced_run(tiny_tokenizer, [total], [written + EOS, "Sorry." + EOS])
    [call] = traj.client_calls
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["amount"], int) and set(arguments) <= {"amount", "note"}
    assert traj.tool_calls == [] and traj.invalid_actions == 0  # no in-band error, no second turn
    assert len(traj.completion_ids) == len(traj.mask) == len(traj.logprobs)


def test_forced_arguments_the_model_writes_validly_are_its_own(tiny_tokenizer):
    total = client_function({"type": "function", "function": {"name": "set_total", "parameters": TOTAL_SCHEMA}})
    traj, _ = _forced_run(tiny_tokenizer, [total], [' {"amount": 12, "note": "hi"}}\n</tool_call>' + EOS])
    [call] = traj.client_calls
    assert json.loads(call.arguments) == {"amount": 12, "note": "hi"}
    # Sampled tokens carry the engine's logprobs; the tokens the grammar left no choice about, none.
    assert any(lp is not None for lp in traj.logprobs) and any(lp is None for lp in traj.logprobs)
