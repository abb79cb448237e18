"""Property-based fuzzing of the live server from its own ``/openapi.json`` (schemathesis 4).

Bounded: the generation endpoints run the model on every request, so they get few examples and
their token budgets are clamped before each call (the fuzzer would otherwise ask for millions of
tokens, which is valid but slow). What must hold for every generated request, valid or not:

* never a 5xx (schemathesis's ``not_a_server_error`` check);
* every error is OpenAI error JSON (``ErrorResponse``), never a traceback;
* every 200 from a generation endpoint validates against OpenAI's response schemas (streams: every
  chunk, ``[DONE]`` last; ``{"error": ...}`` events are the only exemption).

The server's OpenAPI document does not list its 400/401/404/503 answers (FastAPI documents 422,
which this server never sends), so schemathesis's status-code and positive-data-acceptance checks
are not run: they would fail on documented behaviour (e.g. ``n: 2`` is schema-valid and refused
with a 400 on purpose).
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from live_server import MODEL, server_url, validate  # noqa: F401  (pytest fixture)

TOKEN_CAP = 24
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def api_schema(server_url):
    # schemathesis reads only the first 20 events of an event stream by default (and says so in
    # ``Response.stream_cut_short``): read whole streams, so that ``[DONE]`` can be checked.
    config = SchemathesisConfig.from_dict({"max-stream-events": 100_000})
    return schemathesis.openapi.from_url(f"{server_url}/openapi.json", config=config)


# schemathesis's own pytest integration (``@schema.parametrize()`` on a schema from
# ``schemathesis.pytest.from_fixture``) breaks on pytest 9 (it reads ``request.node._nodeid``),
# and a schema loaded at import time would need the server up before collection. So each
# operation's Hypothesis strategy (``APIOperation.as_strategy``) is driven by ``@given`` inside an
# ordinary test that has the live server fixture.
GENERATION = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/responses")}
OPERATIONS = sorted(GENERATION | {("GET", "/v1/models"), ("GET", "/v1/models/{model_id}"), ("GET", "/health"),
                                  ("GET", "/version"), ("GET", "/metrics"), ("GET", "/v1/responses/{response_id}"),
                                  ("DELETE", "/v1/responses/{response_id}"),
                                  ("GET", "/v1/responses/{response_id}/input_items")})


def test_the_live_schema_has_the_operations_fuzzed_here(api_schema):
    live = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert live == set(OPERATIONS)


def _clamp(body) -> None:
    """Keep generated requests cheap: cap every token budget a body can carry."""
    if not isinstance(body, dict):
        return
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int) and not isinstance(body.get(key), bool) and body[key] > TOKEN_CAP:
            body[key] = TOKEN_CAP
    agent = body.get("agent")
    if isinstance(agent, dict):
        value = agent.get("max_tokens_per_turn")
        if isinstance(value, int) and not isinstance(value, bool) and value > TOKEN_CAP:
            agent["max_tokens_per_turn"] = TOKEN_CAP
        value = agent.get("wall_clock_s")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 5:
            agent["wall_clock_s"] = 5


# Fields the server refuses by design (a 400 naming them: tested in test_server_errors.py). A
# schema-valid body almost always carries one of them, and then never reaches the model; so half of
# the positive examples drop them, and name the served model, to fuzz the generation path itself.
REFUSED = {
    "/v1/chat/completions": ("n", "logprobs", "top_logprobs", "response_format", "tools", "functions", "tool_choice",
                             "presence_penalty", "frequency_penalty"),
    "/v1/completions": ("n", "best_of", "echo", "suffix", "logprobs", "top_k", "min_p", "repetition_penalty",
                        "presence_penalty", "frequency_penalty", "skip_special_tokens"),
    "/v1/responses": ("background", "conversation", "prompt", "text", "tool_choice", "previous_response_id"),
}


def _accepted(path: str, body) -> None:
    if not isinstance(body, dict):
        return
    body["model"] = MODEL
    for key in REFUSED[path]:
        body.pop(key, None)
    if isinstance(body.get("agent"), dict):
        agent = body["agent"]
        agent.pop("protocol", None)
        if isinstance(agent.get("tools"), list):
            agent["tools"] = [t for t in agent["tools"] if t in ("code", "search")]
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            if message.get("role") == "tool":
                message["role"] = "user"
            if isinstance(message.get("content"), list):
                for part in message["content"]:
                    if isinstance(part, dict):
                        part["type"] = "text"
    if path == "/v1/responses":
        body["input"] = body["input"] if isinstance(body.get("input"), str) and body["input"] else "Hello?"
        body["tools"] = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") in
                         ("web_search", "code_interpreter")]
        if isinstance(body.get("agent"), dict):
            body["agent"].pop("tools", None)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        body["prompt"] = [t % 1000 for t in prompt]


def _check_response(case, response) -> None:
    status = response.status_code
    text = response.text
    assert "Traceback" not in text
    if status >= 400:
        validate(json.loads(text), "ErrorResponse")
        return
    if status != 200 or case.method.upper() != "POST":
        return
    if case.path.endswith("/responses"):
        _check_responses_reply(response)
        return
    name = ("CreateChatCompletionResponse" if case.path.endswith("/chat/completions")
            else "CreateCompletionResponse")
    content_type = response.headers.get("content-type") or ""
    if isinstance(content_type, list):  # schemathesis's Response keeps every header as a list
        content_type = content_type[0] if content_type else ""
    if content_type.startswith("text/event-stream"):
        assert not response.stream_cut_short, "the whole stream should have been read"
        payloads = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        assert payloads and payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1, payloads[-3:]
        for payload in payloads[:-1]:
            chunk = json.loads(payload)
            if "error" in chunk:  # the one exempt event: an error after the stream started
                validate(chunk, "ErrorResponse")
                continue
            if name == "CreateChatCompletionResponse":
                validate(chunk, "CreateChatCompletionStreamResponse")
            else:
                validate(chunk, name, relax=("stream_finish_reason",))
    else:
        validate(json.loads(text), name)


def _check_responses_reply(response) -> None:
    """A Responses reply parses with the ``openai`` package's own types; a stream's events too, numbered
    strictly upwards, the last one the response's end."""
    if "text/event-stream" not in str(response.headers.get("content-type")):
        Response.model_validate(json.loads(response.text))
        return
    assert not response.stream_cut_short, "the whole stream should have been read"
    events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    for event in events:
        STREAM_EVENT.validate_python(event)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers)), numbers
    assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed"), events[-1]


CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in sorted(GENERATION)]  # the GETs have nothing to break


@pytest.mark.parametrize("method,path,mode", CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_fuzzed_requests_never_fail(api_schema, server_url, method, path, mode):
    operation = api_schema[path][method]
    generation = (method, path) in GENERATION
    calls = []

    @given(case=operation.as_strategy(mode), accepted=st.booleans())
    @settings(max_examples=25 if generation else 12, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
              derandomize=True)  # reproducible in CI; the 5xx bugs it can hit have explicit tests too
    def run(case, accepted):
        if generation and mode is GenerationMode.POSITIVE and accepted:
            _accepted(path, case.body)
        _clamp(case.body)
        try:
            response = case.call_and_validate(base_url=server_url, checks=[not_a_server_error], timeout=60)
            calls.append(response.status_code)
            _check_response(case, response)
        except BaseException as exc:  # say which request it was (hypothesis prints an empty Case)
            exc.add_note(f"request: {case.method} {case.path} body={json.dumps(case.body, default=repr)[:3000]}")
            raise

    run()
    assert calls
    if generation and mode is GenerationMode.POSITIVE:
        assert 200 in calls, f"no fuzzed request reached the model: {sorted(calls)}"
