"""Every malformed or refused request gets OpenAI error JSON with the right status: never a 500,
never a traceback, never a silently ignored parameter. Checked on a live server (live_server.py);
every error body is validated against OpenAI's ``ErrorResponse`` schema.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from agent_runtime.tools import FunctionTool
from live_server import (  # noqa: F401  (pytest fixtures)
    ARITH_QUESTIONS,
    MODEL,
    assert_error,
    fixture_tools,
    make_state,
    running_server,
    keyed_server_url,
    hanging_server,
    server_url,
    single_slot_server,
    sse_data_lines,
    validate,
    wait_idle,
)

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
LONG_TEXT = "word " * 5000  # about 15k tokens: far past the tiny model's 4096


def chat(**fields):
    return {"model": MODEL, "messages": MESSAGES, **fields}


def cmpl(**fields):
    return {"model": MODEL, "prompt": [1, 2, 3], **fields}


@pytest.fixture(scope="module")
def http(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client


# (id, path, body, status, param, code); param/code ``...`` = not checked.
CASES = [
    ("missing-messages", CHAT, {"model": MODEL}, 400, "messages", ...),
    ("missing-model", CHAT, {"messages": MESSAGES}, 400, "model", ...),
    ("empty-messages", CHAT, chat(messages=[]), 400, "messages", ...),
    ("messages-not-a-list", CHAT, chat(messages="hi"), 400, "messages", ...),
    ("model-not-a-string", CHAT, chat(model=5), 400, "model", ...),
    ("temperature-not-a-number", CHAT, chat(temperature="hot"), 400, "temperature", ...),
    ("max-tokens-fraction", CHAT, chat(max_tokens=5.5), 400, "max_tokens", ...),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), 400, "max_tokens", ...),
    ("unknown-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0.role", ...),
    ("agent-not-an-object", CHAT, chat(agent="yes"), 400, "agent", ...),
    ("too-many-stops", CHAT, chat(stop=["a"] * 9), 400, "stop", ...),
    ("n-2", CHAT, chat(n=2), 400, "n", ...),
    ("logprobs-true", CHAT, chat(logprobs=True), 400, "logprobs", ...),
    ("top-logprobs", CHAT, chat(top_logprobs=3), 400, "top_logprobs", ...),
    ("tools", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), 400, "tools", ...),
    ("functions", CHAT, chat(functions=[{"name": "f"}]), 400, "functions", ...),
    ("tool-choice-required", CHAT, chat(tool_choice="required"), 400, "tool_choice", ...),
    ("response-format-json", CHAT, chat(response_format={"type": "json_object"}), 400, "response_format", ...),
    ("response-format-schema", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
     400, "response_format", ...),
    ("presence-penalty", CHAT, chat(presence_penalty=0.5), 400, "presence_penalty", ...),
    ("image-part", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     400, "messages.0.content.1.type", ...),
    ("tool-role", CHAT, chat(messages=[*MESSAGES, {"role": "tool", "content": "4", "tool_call_id": "c1"}]),
     400, "messages.1.role", ...),
    ("unknown-model", CHAT, chat(model="gpt-4o"), 404, "model", "model_not_found"),
    ("context-length", CHAT, chat(messages=[{"role": "user", "content": LONG_TEXT}]), 400, "messages",
     "context_length_exceeded"),
    ("unknown-protocol", CHAT, chat(agent={"protocol": "klingon"}), 400, "agent.protocol", ...),
    ("unknown-tool", CHAT, chat(agent={"tools": ["nope"]}), 400, "agent.tools", ...),
    ("negative-tool-calls", CHAT, chat(agent={"max_tool_calls": -1}), 400, "agent.max_tool_calls", ...),
    ("temperature-5", CHAT, chat(temperature=5), 400, "temperature", ...),
    ("temperature-negative", CHAT, chat(temperature=-0.5), 400, "temperature", ...),
    ("top-p-0", CHAT, chat(top_p=0), 400, "top_p", ...),
    # Checked as vLLM's SamplingParams checks them, before any engine sees the request.
    ("stop-empty-string", CHAT, chat(stop=""), 400, "stop", ...),
    ("stop-empty-item", CHAT, chat(stop=["</x>", ""]), 400, "stop", ...),
    ("top-k-below-minus-1", CHAT, chat(top_k=-2), 400, "top_k", ...),
    ("top-k-20", CHAT, chat(top_k=20), 400, "top_k", ...),
    ("min-p-above-1", CHAT, chat(min_p=1.5), 400, "min_p", ...),
    ("min-p-0.1", CHAT, chat(min_p=0.1), 400, "min_p", ...),
    ("repetition-penalty-0", CHAT, chat(repetition_penalty=0), 400, "repetition_penalty", ...),
    ("repetition-penalty-1.2", CHAT, chat(repetition_penalty=1.2), 400, "repetition_penalty", ...),
    # /v1/completions
    ("cmpl-oov-id", CMPL, cmpl(prompt=[1, 2, 5000]), 400, "prompt", ...),
    ("cmpl-negative-id", CMPL, cmpl(prompt=[-1]), 400, "prompt", ...),
    ("cmpl-huge-id", CMPL, cmpl(prompt=[2**70]), 400, "prompt", ...),
    ("cmpl-empty-prompt", CMPL, cmpl(prompt=[]), 400, "prompt", ...),
    ("cmpl-empty-text", CMPL, cmpl(prompt=""), 400, "prompt", ...),
    ("cmpl-batched", CMPL, cmpl(prompt=[[1, 2], [3, 4]]), 400, "prompt", ...),
    ("cmpl-too-long", CMPL, cmpl(prompt=[5] * 5000), 400, "prompt", "context_length_exceeded"),
    ("cmpl-n-2", CMPL, cmpl(n=2), 400, "n", ...),
    ("cmpl-echo", CMPL, cmpl(echo=True), 400, "echo", ...),
    ("cmpl-top-logprobs-5", CMPL, cmpl(logprobs=5), 400, "logprobs", ...),
    ("cmpl-top-k", CMPL, cmpl(top_k=20), 400, "top_k", ...),
    ("cmpl-unknown-model", CMPL, cmpl(model="nope"), 404, "model", "model_not_found"),
    ("cmpl-missing-prompt", CMPL, {"model": MODEL}, 400, "prompt", ...),
    ("cmpl-temperature-5", CMPL, cmpl(temperature=5), 400, "temperature", ...),
    ("cmpl-stop-empty-string", CMPL, cmpl(stop=""), 400, "stop", ...),
    ("cmpl-stop-empty-item", CMPL, cmpl(stop=["</x>", ""]), 400, "stop", ...),
]


@pytest.mark.parametrize("path,body,status,param,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_requests_get_openai_errors(http, path, body, status, param, code):
    assert_error(http.post(path, json=body), status, param=param, code=code)


@pytest.mark.parametrize("path,body,status,param,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_streaming_requests_get_json_errors_not_a_stream(http, path, body, status, param, code):
    """Validation happens before the stream starts: a plain JSON error, not an SSE body."""
    if not isinstance(body, dict):
        pytest.skip("not an object")
    assert_error(http.post(path, json={**body, "stream": True}), status, param=param, code=code)


# Out of vLLM's range (SamplingParams._verify_args): the error says the value is invalid, not merely
# unsupported, on both endpoints (in range, a value other than the neutral one is "not supported").
# temperature and top_p ranges are in CASES.
OUT_OF_RANGE = [
    ("top_k", -2, "-1"), ("min_p", -0.5, "0"), ("min_p", 1.5, "1"), ("repetition_penalty", 0.0, "0"),
    ("repetition_penalty", -1.0, "0"), ("presence_penalty", 2.5, "2"), ("presence_penalty", -3.0, "-2"),
    ("frequency_penalty", 2.5, "2"), ("frequency_penalty", -2.5, "-2"),
]


@pytest.mark.parametrize("name,value,bound", OUT_OF_RANGE, ids=[f"{n}={v}" for n, v, _ in OUT_OF_RANGE])
@pytest.mark.parametrize("path", [CHAT, CMPL], ids=["chat", "completions"])
def test_sampling_values_out_of_vllms_range_name_the_param_and_the_bound(http, path, name, value, bound):
    body = chat(**{name: value}) if path == CHAT else cmpl(**{name: value})
    err = assert_error(http.post(path, json=body), 400, param=name)
    assert "not supported" not in err["message"] and bound in err["message"], err


@pytest.mark.parametrize("raw", ['"repetition_penalty": NaN', '"presence_penalty": Infinity', '"min_p": NaN'],
                         ids=["repetition_penalty", "presence_penalty", "min_p"])
def test_non_finite_sampling_values_are_400_naming_the_param(http, raw):
    """Python's JSON parser accepts NaN and Infinity: they must fail the range, not reach an engine."""
    name = raw.split('"')[1]
    content = ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], %s}' % (MODEL, raw)).encode()
    err = assert_error(http.post(CHAT, content=content, headers={"content-type": "application/json"}), 400,
                       param=name)
    assert "not supported" not in err["message"], err


def test_the_tools_error_says_what_is_supported(http):
    err = assert_error(http.post(CHAT, json=chat(tools=[{"type": "function", "function": {"name": "f"}}])), 400,
                       param="tools")
    assert "agent" in err["message"] and "code" in err["message"], err


def test_context_length_error_names_the_limit(http):
    err = assert_error(http.post(CHAT, json=chat(messages=[{"role": "user", "content": LONG_TEXT}])), 400,
                       code="context_length_exceeded")
    assert "4096" in err["message"]


@pytest.mark.parametrize("raw,content_type", [
    (b"{not json", "application/json"),
    (b'{"model": "tiny", "messages": [', "application/json"),
    (b"", "application/json"),
    (b"{not json", "text/plain"),
    (b"[1, 2]", "application/json"),
    (b'"hello"', "application/json"),
    (b"\xff\xfe\x00", "application/json"),
])
@pytest.mark.parametrize("path", [CHAT, CMPL])
def test_bodies_that_are_not_a_json_object(http, path, raw, content_type):
    assert_error(http.post(path, content=raw, headers={"content-type": content_type}), 400)


def test_invalid_json_has_its_own_code(http):
    assert_error(http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400,
                 code="invalid_json")


def test_a_wrongly_typed_field_is_named_as_the_client_wrote_it(http):
    """``param`` names the request field (``messages.0.content``), not pydantic's union member."""
    err = assert_error(http.post(CHAT, json=chat(messages=[{"role": "user", "content": 5}])), 400)
    assert err["param"] == "messages.0.content", err


@pytest.mark.parametrize("path,body", [
    (CHAT, chat(temperature=1, seed=2**64)),
    (CHAT, chat(temperature=1, seed=-(2**70))),
    (CMPL, cmpl(temperature=1, seed=2**64)),
    (CHAT, chat(temperature=1e-300)),
    (CMPL, cmpl(temperature=1e-300)),
    (CHAT, chat(temperature=1, top_p=1e-300)),
    (CMPL, cmpl(temperature=1, top_p=1e-300)),
], ids=["chat-seed-2^64", "chat-seed--2^70", "cmpl-seed-2^64", "chat-temperature-1e-300", "cmpl-temperature-1e-300",
        "chat-top-p-1e-300", "cmpl-top-p-1e-300"])
def test_extreme_sampling_values_are_refused_or_served_never_a_500(server_url, path, body):
    """In-range by the API's own bounds, so: a 400 naming the parameter, or a normal reply."""
    with httpx.Client(base_url=server_url, timeout=60) as client:  # fresh: a 500 closes the connection
        r = client.post(path, json={**body, "max_tokens": 4})
    if r.status_code == 200:
        validate(r.json(), "CreateChatCompletionResponse" if path == CHAT else "CreateCompletionResponse")
    else:
        assert_error(r, 400)


@pytest.mark.parametrize("path,body", [(CHAT, chat(temperature=1, seed=2**64, max_tokens=4, stream=True)),
                                       (CMPL, cmpl(temperature=1, seed=2**64, max_tokens=4, stream=True))],
                         ids=["chat", "completions"])
def test_a_streamed_generation_failure_is_one_error_event_then_done(server_url, path, body):
    """If generation fails after the stream started, the stream carries one ``{"error": ...}`` event
    and then ``[DONE]``. (Uses a 64-bit-overflowing seed, which currently fails inside the engine;
    once the API refuses it up front, a 400 is just as good.)"""
    with httpx.Client(base_url=server_url, timeout=60) as client:
        with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                r.read()
                assert_error(r, 400, param="seed")
                return
            payloads = list(sse_data_lines(r.iter_lines()))
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    events = [json.loads(p) for p in payloads[:-1]]
    errors = [e for e in events if "error" in e]
    assert len(errors) <= 1
    for e in errors:
        validate(e, "ErrorResponse")
        assert "Traceback" not in json.dumps(e)
        assert events[-1] is e, "the error event is the last before [DONE]"
    for e in events:
        if "error" not in e:
            validate(e, "CreateChatCompletionStreamResponse" if path == CHAT else "CreateCompletionResponse",
                     **({} if path == CHAT else {"relax": ("stream_finish_reason",)}))


def test_unknown_routes_and_methods(http):
    assert_error(http.get("/v1/nope"), 404)
    assert_error(http.get("/v1/models/nope"), 404, param="model", code="model_not_found")
    assert_error(http.get(CHAT), 405)
    assert_error(http.put(CMPL, json=cmpl()), 405)


def test_server_still_serves_after_all_that(http):
    r = http.post(CHAT, json=chat(max_tokens=8))
    assert r.status_code == 200, r.text
    validate(r.json(), "CreateChatCompletionResponse")
    assert http.get("/health").json()["in_flight"] == 0


# ---- API key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"},
                                     {"Authorization": "Basic secret"}, {"Authorization": "Bearer"},
                                     {"Authorization": "Bearer secretsecret"}],
                         ids=["missing", "wrong", "no-scheme", "basic", "empty", "prefix"])
@pytest.mark.parametrize("method,path,body", [("POST", CHAT, chat(max_tokens=4)), ("POST", CMPL, cmpl()),
                                              ("GET", "/v1/models", None), ("GET", f"/v1/models/{MODEL}", None)])
def test_bad_or_missing_key_is_401(keyed_server_url, headers, method, path, body):
    r = httpx.request(method, f"{keyed_server_url}{path}", json=body, headers=headers, timeout=30)
    err = assert_error(r, 401)
    assert err["code"] == "invalid_api_key"
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


NON_ASCII_KEY = "clé-ünïcode"


@pytest.mark.parametrize("header", [f"Bearer {NON_ASCII_KEY}".encode(), f"Bearer {NON_ASCII_KEY}".encode("latin-1"),
                                    "Bearer sécret".encode(), b"Bearer \xff\xfe"],
                         ids=["utf-8", "latin-1", "near-miss", "not-utf-8"])
@pytest.mark.parametrize("method,path,body", [("POST", CHAT, chat(max_tokens=4)), ("POST", CMPL, cmpl()),
                                              ("GET", "/v1/models", None)])
def test_a_non_ascii_key_is_401_not_500(keyed_server_url, header, method, path, body):
    """Sent as raw bytes: httpx refuses a non-ASCII str header, a client on the wire need not."""
    r = httpx.request(method, f"{keyed_server_url}{path}", json=body, headers={"Authorization": header}, timeout=30)
    err = assert_error(r, 401)
    assert err["code"] == "invalid_api_key"
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_a_non_ascii_api_key_matches_its_utf8_bytes(tiny_model, tiny_tokenizer):
    """A server whose own key is not ASCII: the key sent as UTF-8 works, anything else is a 401."""
    tools = fixture_tools(FunctionTool("code", lambda code: "42\n"))
    state = make_state(tiny_model, tiny_tokenizer, tools=tools, api_keys=(NON_ASCII_KEY,))
    with running_server(state) as url:
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {NON_ASCII_KEY}".encode()}, timeout=30)
        assert ok.status_code == 200, ok.text
        assert [m["id"] for m in ok.json()["data"]] == [MODEL]
        for wrong in (f"Bearer {NON_ASCII_KEY}".encode("latin-1"), b"Bearer secret", b"Bearer cl\xc3",
                      f"Bearer {NON_ASCII_KEY}x".encode()):
            r = httpx.get(f"{url}/v1/models", headers={"Authorization": wrong}, timeout=30)
            assert assert_error(r, 401)["code"] == "invalid_api_key", wrong


def test_the_right_key_works(keyed_server_url):
    client = openai.OpenAI(base_url=f"{keyed_server_url}/v1", api_key="secret", max_retries=0)
    reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert [m.id for m in client.models.list()] == [MODEL]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_server_url}/v1", api_key="nope", max_retries=0).models.list()
    # The health probe stays open (load balancers call it without a key).
    assert httpx.get(f"{keyed_server_url}/health").status_code == 200


# ---- a full server ---------------------------------------------------------------------------


def test_a_full_server_answers_503_with_retry_after(single_slot_server):
    """max_concurrency=1: while one stream is held open (its tool call hangs), others get 503 at once."""
    url, tool = single_slot_server
    assert wait_idle(url)["in_flight"] == 0
    tool.reset()
    with httpx.Client(base_url=url, timeout=30) as held:
        with held.stream("POST", CHAT, json={"model": MODEL, "temperature": 0, "stream": True,
                                             "messages": [{"role": "user", "content": ARITH_QUESTIONS[0]}]}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept referenced: dropping it would close the connection
            data = sse_data_lines(lines)
            next(data)  # the stream has started
            assert tool.started.wait(10), "the held request should be stuck in its tool call"
            assert httpx.get(f"{url}/health").json()["in_flight"] == 1
            for path, body in ((CHAT, chat(max_tokens=4)), (CHAT, chat(max_tokens=4, stream=True)),
                               (CMPL, cmpl(max_tokens=4))):
                busy = httpx.post(f"{url}{path}", json=body, timeout=10)
                err = assert_error(busy, 503)
                assert busy.headers.get("retry-after", "").isdigit(), busy.headers
                assert err["type"] and err["code"]
            with pytest.raises(openai.APIStatusError) as info:
                openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=4)
            assert info.value.status_code == 503
    assert tool.cancelled.wait(2)
    assert wait_idle(url)["in_flight"] == 0
    # Room again: a request without tools (the code tool here hangs) goes through.
    r = httpx.post(f"{url}{CHAT}", json=chat(max_tokens=8, agent={"tools": False}), timeout=30)
    assert r.status_code == 200, r.text
