"""The ``remote`` backend end to end: server B's engine is server A's ``/v1/completions``.

A serves the tiny model with the transformers engine; B is built the way ``--engine remote``
builds it (``make_backend(tiny_path, "remote", A)``: tokenizer from the model directory, name and
context length from A's ``/v1/models``). Greedy, B must give exactly A's token ids, and the same
chat replies, tool steps included.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from live_server import (  # noqa: F401  (pytest fixtures)
    ARITH_QUESTIONS,
    MODEL,
    assert_error,
    check_chat_stream,
    fixture_tools,
    http_client,
    make_state,
    read_sse,
    running_server,
    server_url,
    sse_data_lines,
    validate,
    wait_idle,
)

from agent_runtime.backends import make_backend
from agent_runtime.backends.remote import RemoteBackend
from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.models.fixture_tasks import fixture_tasks
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO
from agent_runtime.tools import FunctionTool

QUESTIONS = (ARITH_QUESTIONS[0], ARITH_QUESTIONS[1],
             next(t.question for t in fixture_tasks(7, 40) if t.family == "fact"), "Hello, how are you?")


@pytest.fixture(scope="module")
def remote_url(server_url, tiny_path, tiny_model, tiny_tokenizer):
    backend = make_backend(str(tiny_path), "remote", server_url)
    assert isinstance(backend, RemoteBackend)
    state = make_state(tiny_model, tiny_tokenizer, backend=backend)
    with running_server(state) as url:
        yield url


@pytest.fixture(scope="module")
def a(server_url):
    with http_client(server_url) as client:
        yield client


@pytest.fixture(scope="module")
def b(remote_url):
    with http_client(remote_url) as client:
        yield client


def test_the_remote_server_describes_itself(b, tiny_model):
    version = b.get("/version").json()
    assert version["engine"] == "remote" and version["model"] == MODEL
    models = b.get("/v1/models").json()
    validate(models, "ListModelsResponse")
    assert models["data"][0]["max_model_len"] == tiny_model.config.max_position_embeddings


@pytest.mark.parametrize("question", QUESTIONS[:2])
@pytest.mark.parametrize("logprobs", [None, 0])
def test_completions_give_the_same_token_ids(a, b, tiny_tokenizer, question, logprobs):
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, question)
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 48, "temperature": 0, "return_token_ids": True}
    if logprobs is not None:
        body["logprobs"] = logprobs
    ra, rb = a.post("/v1/completions", json=body), b.post("/v1/completions", json=body)
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    ca, cb = ra.json()["choices"][0], rb.json()["choices"][0]
    assert cb["token_ids"] == ca["token_ids"] and len(ca["token_ids"]) > 0
    assert cb["prompt_token_ids"] == ca["prompt_token_ids"] == prompt
    assert cb["text"] == ca["text"]
    assert cb["finish_reason"] == ca["finish_reason"]
    if logprobs is not None:
        assert cb["logprobs"]["token_logprobs"] == pytest.approx(ca["logprobs"]["token_logprobs"], abs=1e-5)
    else:
        validate(rb.json(), "CreateCompletionResponse")
    assert rb.json()["usage"] == ra.json()["usage"]


def test_streamed_completions_through_the_remote_engine(a, b, tiny_tokenizer):
    prompt = build_prompt_ids(tiny_tokenizer, TAPO, QUESTIONS[2])
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 48, "temperature": 0, "return_token_ids": True}
    full = a.post("/v1/completions", json=body).json()["choices"][0]
    status, payloads = read_sse(b, "/v1/completions", {**body, "stream": True})
    assert status == 200 and payloads[-1] == "[DONE]"
    choices = [json.loads(p)["choices"][0] for p in payloads[:-1]]
    assert [t for c in choices for t in c["token_ids"]] == full["token_ids"]
    assert "".join(c["text"] for c in choices) == full["text"]


def _comparable(reply: dict) -> dict:
    choice = reply["choices"][0]
    message = choice["message"]
    steps = [{k: v for k, v in s.items() if k not in ("id", "seconds")} for s in message["tool_steps"]]
    return {"content": message["content"], "reasoning": message["reasoning"], "steps": steps,
            "finish": (choice["finish_reason"], choice["agent_finish_reason"]), "usage": reply["usage"]}


def test_chat_replies_are_the_same(a, b):
    steps = 0
    for question in QUESTIONS:
        body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0}
        ra, rb = a.post("/v1/chat/completions", json=body), b.post("/v1/chat/completions", json=body)
        assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
        validate(rb.json(), "CreateChatCompletionResponse")
        assert _comparable(rb.json()) == _comparable(ra.json()), question
        steps += len(rb.json()["choices"][0]["message"]["tool_steps"])
    assert steps > 0, "some of these questions make the fixture model call a tool"


def test_streamed_chat_through_the_remote_engine(a, b):
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTIONS[0]}], "temperature": 0}
    reference = a.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
    status, payloads = read_sse(b, "/v1/chat/completions", {**body, "stream": True})
    assert status == 200, payloads
    chunks = check_chat_stream(payloads)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == reference["content"]
    assert "".join(d.get("reasoning") or "" for d in deltas) == reference["reasoning"]
    done = [d["tool_step"] for d in deltas if "tool_step" in d and d["tool_step"]["status"] == "done"]
    assert [s["output"] for s in done] == [s["output"] for s in reference["tool_steps"]]


def test_context_length_comes_from_the_engine_server(b):
    r = b.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "word " * 5000}]})
    assert_error(r, 400, code="context_length_exceeded")


def test_a_client_leaving_b_frees_a(tiny_path, tiny_model, tiny_tokenizer):
    """Closing a stream on B closes B's request to A: A's in-flight count goes back to 0, and A's engine
    stops generating (counted by A's own engine, on an A and a B of this test's own)."""
    hang_s = 30.0  # only catches a hang: without the fix A generates all 3000 tokens
    max_tokens = 3000
    tools = fixture_tools(FunctionTool("code", lambda code: ""))
    engine = TransformersBackend(tiny_model, tiny_tokenizer, max_slots=1)
    engine.eos_ids = frozenset()  # A never ends the completion on its own: only max_tokens, or B leaving
    with running_server(make_state(tiny_model, tiny_tokenizer, backend=engine, tools=tools)) as a_url:
        remote = make_backend(str(tiny_path), "remote", a_url)
        with running_server(make_state(tiny_model, tiny_tokenizer, backend=remote, tools=tools)) as b_url:
            prompt = tiny_tokenizer.encode("12345", add_special_tokens=True)
            body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                    "return_token_ids": True, "stream": True}
            with http_client(b_url) as b, b.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200
                lines = r.iter_lines()  # kept referenced: dropping it would close the connection at once
                data = sse_data_lines(lines)
                assert json.loads(next(data))["choices"][0]["token_ids"]
                assert json.loads(next(data))["choices"][0]["token_ids"]
                assert httpx.get(f"{a_url}/health").json()["in_flight"] == 1, "A should be generating for B"
            assert wait_idle(a_url, timeout=hang_s)["in_flight"] == 0, "A still generates for a client that left B"
            deadline = time.monotonic() + hang_s
            while any(slot.busy for slot in engine._slots) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not any(slot.busy for slot in engine._slots), "A's engine still generates for a client that left B"
            # Counted, not timed: A's engine stopped far short of the max_tokens it would have generated.
            assert engine.stats["decode_rows"] < max_tokens // 2, engine.stats
