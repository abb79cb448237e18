"""The HTTP server end to end: a real uvicorn on 127.0.0.1 serving the trained tiny fixture model,
with the real bubblewrap ``code`` tool and the fixture ``search``, driven by the official ``openai``
SDK and by raw HTTP/SSE. Every response and every stream chunk is validated against OpenAI's own
schemas (``live_server.validate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import torch
from live_server import (  # noqa: F401  (pytest fixtures)
    ARITH_QUESTIONS,
    assert_error,
    MODEL,
    SANDBOX_PROBLEM,
    check_chat_stream,
    fixture_tools,
    hanging_server,
    http_client,
    make_state,
    metric,
    read_sse,
    running_server,
    server_url,
    sse_data_lines,
    validate,
    wait_idle,
)
from openai import AsyncOpenAI, OpenAI

from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.detok import decode
from agent_runtime.models.fixture_tasks import fixture_tasks, run_python
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO
from agent_runtime.tools import FunctionTool
from agent_runtime.trajectory import AgentFinishReason

AGENT_FINISH_REASONS = set(AgentFinishReason.__args__)
TOOL_STEP_KEYS = {"id", "index", "name", "arguments", "status", "ok", "output", "hits", "images", "seconds",
                  "injected_tokens"}
FACT_QUESTIONS = tuple(t.question for t in fixture_tasks(7, 40) if t.family == "fact")[:3]


@pytest.fixture(scope="module")
def http(server_url):
    with http_client(server_url) as client:
        yield client


@pytest.fixture(scope="module")
def client(server_url):
    return OpenAI(base_url=f"{server_url}/v1", api_key="x", max_retries=0, timeout=120)


def chat_body(question: str, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0, **extra}


def post_chat(http: httpx.Client, body: dict) -> dict:
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    return data


@pytest.fixture(scope="module")
def arith_replies(http) -> dict[str, dict]:
    """Greedy non-streaming replies to the arithmetic questions (raw JSON, schema-checked)."""
    return {q: post_chat(http, chat_body(q)) for q in ARITH_QUESTIONS}


def tool_question(arith_replies) -> str:
    """An arithmetic question whose greedy reply ran a tool."""
    for q, data in arith_replies.items():
        if data["choices"][0]["message"]["tool_steps"]:
            return q
    pytest.fail(f"none of {ARITH_QUESTIONS} made the fixture model call a tool")


def check_tool_step(step: dict, reply_id: str) -> None:
    assert set(step) == TOOL_STEP_KEYS, step
    assert step["id"].startswith(reply_id) and isinstance(step["index"], int) and step["index"] >= 0
    assert step["name"] in ("code", "search")
    assert isinstance(step["arguments"], str) and step["arguments"]
    assert step["status"] == "done"
    assert isinstance(step["ok"], bool)
    assert isinstance(step["output"], str)
    assert isinstance(step["hits"], list)
    assert isinstance(step["seconds"], (int, float)) and step["seconds"] >= 0
    assert isinstance(step["injected_tokens"], int) and step["injected_tokens"] > 0


# ---- non-streaming chat ----------------------------------------------------------------------


def test_non_streaming_chat_reply_shape(arith_replies):
    steps_seen = 0
    for question, data in arith_replies.items():
        assert data["object"] == "chat.completion" and data["model"] == MODEL
        choice = data["choices"][0]
        message = choice["message"]
        assert message["role"] == "assistant"
        assert isinstance(message["content"], str) and message["content"], (question, message)
        assert "<answer>" not in message["content"] and "<think>" not in message["content"]
        assert message["reasoning_content"] == message["reasoning"]
        assert message["reasoning"].strip(), message
        assert "tool_calls" not in message
        assert choice["finish_reason"] in ("stop", "length")
        assert choice["agent_finish_reason"] in AGENT_FINISH_REASONS
        usage = data["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
        assert 0 < reasoning_tokens <= usage["completion_tokens"]
        steps = message["tool_steps"]
        assert [s["index"] for s in steps] == list(range(len(steps)))
        assert len({s["id"] for s in steps}) == len(steps)
        for step in steps:
            check_tool_step(step, data["id"])
            assert step["arguments"] in message["reasoning"], "the reasoning trace shows each call"
        if steps:
            steps_seen += 1
            assert usage["injected_tokens"] >= sum(s["injected_tokens"] for s in steps) > 0
        else:
            assert usage["injected_tokens"] >= 0
    assert steps_seen >= 1, "the fixture model should call a tool for at least one arithmetic question"


def test_the_real_sandbox_ran_the_models_code(arith_replies):
    """Each ``code`` step's output is what the program prints (the sandbox really ran it)."""
    if SANDBOX_PROBLEM is not None:
        pytest.skip(f"no sandbox here (the server runs the in-process fixture tool): {SANDBOX_PROBLEM}")
    code_steps = [s for d in arith_replies.values() for s in d["choices"][0]["message"]["tool_steps"]
                  if s["name"] == "code"]
    assert code_steps
    for step in code_steps:
        assert step["ok"], step
        assert step["output"] == run_python(step["arguments"]), step


def test_a_fact_question_searches(http):
    replies = [post_chat(http, chat_body(q)) for q in FACT_QUESTIONS]
    steps = [s for d in replies for s in d["choices"][0]["message"]["tool_steps"]]
    assert any(s["name"] == "search" for s in steps), replies


def test_sdk_non_streaming(client, arith_replies):
    question = tool_question(arith_replies)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                           temperature=0)
    raw = arith_replies[question]
    message = reply.choices[0].message
    assert message.content == raw["choices"][0]["message"]["content"]
    extra = message.model_extra
    assert extra["reasoning_content"] == extra["reasoning"] == raw["choices"][0]["message"]["reasoning"]
    assert [s["arguments"] for s in extra["tool_steps"]] == [
        s["arguments"] for s in raw["choices"][0]["message"]["tool_steps"]]
    assert message.tool_calls is None
    assert reply.choices[0].finish_reason == raw["choices"][0]["finish_reason"]
    assert reply.choices[0].model_extra["agent_finish_reason"] == raw["choices"][0]["agent_finish_reason"]
    assert reply.usage.completion_tokens == raw["usage"]["completion_tokens"]
    assert reply.usage.completion_tokens_details.reasoning_tokens > 0
    assert reply.usage.model_extra["injected_tokens"] > 0


# ---- streaming -------------------------------------------------------------------------------


class StreamSummary:
    def __init__(self) -> None:
        self.content = ""
        self.reasoning = ""
        self.reasoning_content = ""
        self.reasoning_parts: dict[str, str] = {}  # reasoning_part -> its text
        self.tool_step_events: list[dict] = []
        self.finish_reasons: list[tuple[str, str | None]] = []
        self.usage_chunks: list = []
        self.roles: list[str] = []
        self.ids: set[str] = set()

    def feed(self, chunk) -> None:
        """One SDK ``ChatCompletionChunk``."""
        self.ids.add(chunk.id)
        if not chunk.choices:
            self.usage_chunks.append(chunk.usage)
            return
        assert chunk.usage is None or chunk.choices == []
        choice = chunk.choices[0]
        delta = choice.delta
        assert not delta.tool_calls, "tool steps must never be sent as delta.tool_calls"
        extra = delta.model_extra or {}
        assert extra.get("reasoning") == extra.get("reasoning_content"), extra
        self.reasoning += extra.get("reasoning") or ""
        self.reasoning_content += extra.get("reasoning_content") or ""
        if extra.get("reasoning"):
            part = extra["reasoning_part"]
            self.reasoning_parts[part] = self.reasoning_parts.get(part, "") + extra["reasoning"]
        if extra.get("tool_step") is not None:
            self.tool_step_events.append(extra["tool_step"])
        if delta.role:
            self.roles.append(delta.role)
        self.content += delta.content or ""
        if choice.finish_reason is not None:
            self.finish_reasons.append((choice.finish_reason, (choice.model_extra or {}).get("agent_finish_reason")))


def check_summary_against(summary: StreamSummary, raw: dict) -> None:
    message = raw["choices"][0]["message"]
    assert len(summary.ids) == 1
    assert summary.roles == ["assistant"]
    assert summary.content == message["content"]
    assert summary.reasoning == summary.reasoning_content == message["reasoning"]
    assert summary.finish_reasons == [(raw["choices"][0]["finish_reason"], raw["choices"][0]["agent_finish_reason"])]
    # Each step twice, same id: running, then done; and the done ones are the non-streamed steps.
    by_id: dict[str, list[dict]] = {}
    for event in summary.tool_step_events:
        by_id.setdefault(event["id"], []).append(event)
    assert len(by_id) == len(message["tool_steps"])
    for events in by_id.values():
        assert [e["status"] for e in events] == ["running", "done"], events
        running, done = events
        assert set(running) == set(done) == TOOL_STEP_KEYS
        assert running["ok"] is None and running["output"] is None
        assert running["name"] == done["name"] and running["arguments"] == done["arguments"]
        assert running["index"] == done["index"]
    done_steps = [events[1] for events in by_id.values()]
    # Reasoning says which pieces are the tool calls and their output, so a client showing tool steps
    # can show the thinking alone: every call's text is in a tool_call piece, every output in a tool_output.
    assert set(summary.reasoning_parts) <= {"think", "tool_call", "tool_output", "notice"}
    for step in done_steps:
        assert step["arguments"].strip() in summary.reasoning_parts.get("tool_call", "")
        assert step["output"].strip()[:200] in summary.reasoning_parts.get("tool_output", "")
        assert step["arguments"].strip() not in summary.reasoning_parts.get("think", "")
    strip = lambda s: {k: v for k, v in s.items() if k not in ("seconds", "id")}  # noqa: E731
    assert [strip(s) for s in done_steps] == [strip(s) for s in message["tool_steps"]]
    assert len(summary.usage_chunks) == 1
    usage = summary.usage_chunks[0]
    assert usage.completion_tokens == raw["usage"]["completion_tokens"]
    assert usage.prompt_tokens == raw["usage"]["prompt_tokens"]
    reasoning_tokens = raw["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert usage.completion_tokens_details.reasoning_tokens == reasoning_tokens
    assert usage.model_extra["injected_tokens"] == raw["usage"]["injected_tokens"]


def test_sdk_stream_matches_the_non_streaming_reply(client, arith_replies):
    question = tool_question(arith_replies)
    summary = StreamSummary()
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        summary.feed(chunk)
    assert summary.tool_step_events, "the greedy reply ran a tool, so the stream must show it"
    check_summary_against(summary, arith_replies[question])


async def async_stream_summary(client: AsyncOpenAI, question: str) -> StreamSummary:
    """A greedy streamed reply to ``question`` through the async SDK, summarised."""
    summary = StreamSummary()
    stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                                  temperature=0, stream=True,
                                                  stream_options={"include_usage": True})
    async for chunk in stream:
        summary.feed(chunk)
    return summary


async def test_async_sdk_stream_matches_the_non_streaming_reply(server_url, arith_replies):
    question = tool_question(arith_replies)
    client = AsyncOpenAI(base_url=f"{server_url}/v1", api_key="x", max_retries=0, timeout=120)
    summary = await async_stream_summary(client, question)
    await client.close()
    check_summary_against(summary, arith_replies[question])


def test_raw_sse_every_chunk_validates_and_done_is_last(http, arith_replies):
    question = tool_question(arith_replies)
    status, payloads = read_sse(http, "/v1/chat/completions",
                                chat_body(question, stream=True, stream_options={"include_usage": True}))
    assert status == 200, payloads
    chunks = check_chat_stream(payloads)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    validate(chunks[-1]["usage"], "CompletionUsage")
    assert all("usage" not in c or c["choices"] == [] for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert any("tool_step" in d for d in deltas)
    assert all(d.get("reasoning") == d.get("reasoning_content") for d in deltas)


def test_raw_sse_without_include_usage_has_no_usage_chunk(http):
    status, payloads = read_sse(http, "/v1/chat/completions", chat_body("Hello, how are you?", stream=True))
    assert status == 200
    chunks = check_chat_stream(payloads)
    assert all(c["choices"] for c in chunks)
    assert sum(c["choices"][0]["finish_reason"] is not None for c in chunks) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] is not None


# ---- /v1/completions -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_ids(tiny_tokenizer) -> list[int]:
    return build_prompt_ids(tiny_tokenizer, TAPO, ARITH_QUESTIONS[0])


def complete(http, prompt_ids, *, check_schema: bool = True, **extra) -> dict:
    body = {"model": MODEL, "prompt": prompt_ids, "max_tokens": 40, "temperature": 0, "return_token_ids": True,
            **extra}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    if check_schema:
        validate(data, "CreateCompletionResponse")
    return data


def stream_complete(http, prompt_ids, *, check_schema: bool = True, **extra) -> list[dict]:
    body = {"model": MODEL, "prompt": prompt_ids, "max_tokens": 40, "temperature": 0, "return_token_ids": True,
            "stream": True, "stream_options": {"include_usage": True}, **extra}
    status, payloads = read_sse(http, "/v1/completions", body)
    assert status == 200, payloads
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert "error" not in chunk, chunk
        if check_schema:
            # Stream chunks share CreateCompletionResponse's shape; only finish_reason may be null
            # before the last chunk (see live_server._validator).
            validate(chunk, "CreateCompletionResponse", relax=("stream_finish_reason",))
    return chunks


@pytest.fixture(scope="module")
def greedy_completion(http, prompt_ids) -> dict:
    # With logprobs: checked against the schema in test_completions_with_logprobs_match_the_openai_schema,
    # so that a schema bug there does not hide what the other tests check.
    return complete(http, prompt_ids, logprobs=0, check_schema=False)


def test_completions_with_logprobs_match_the_openai_schema(http, prompt_ids, greedy_completion):
    validate(greedy_completion, "CreateCompletionResponse")
    for chunk in stream_complete(http, prompt_ids, logprobs=0, check_schema=False):
        validate(chunk, "CreateCompletionResponse", relax=("stream_finish_reason",))


def test_completions_without_logprobs_match_the_openai_schema(http, prompt_ids):
    assert complete(http, prompt_ids)["choices"][0]["logprobs"] is None
    chunks = stream_complete(http, prompt_ids)
    assert all(c["logprobs"] is None for chunk in chunks for c in chunk["choices"])


def test_allowed_token_ids_confine_every_sampled_token(http, prompt_ids, tiny_tokenizer):
    """vLLM's extension, which --engine remote sends for a constrained choice (tool_choice)."""
    allowed = sorted(set(tiny_tokenizer.encode(" 17 408 apple", add_special_tokens=False)))
    for temperature in (0, 1.0):
        data = complete(http, prompt_ids, temperature=temperature, seed=3, max_tokens=12, allowed_token_ids=allowed)
        ids = data["choices"][0]["token_ids"]
        assert len(ids) == 12 and set(ids) <= set(allowed)
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": prompt_ids, "allowed_token_ids": [10**9]})
    assert_error(r, 400, param="allowed_token_ids")


def test_completion_token_ids_text_and_logprobs(greedy_completion, prompt_ids, tiny_tokenizer, tiny_model):
    choice = greedy_completion["choices"][0]
    ids = choice["token_ids"]
    assert choice["prompt_token_ids"] == prompt_ids
    assert 0 < len(ids) <= 40
    assert choice["text"] == decode(tiny_tokenizer, ids)
    assert greedy_completion["usage"]["completion_tokens"] == len(ids)
    assert greedy_completion["usage"]["prompt_tokens"] == len(prompt_ids)
    lp = choice["logprobs"]
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(lp["text_offset"]) == len(ids)
    assert "".join(lp["tokens"]) == choice["text"]
    # Greedy: each id is the argmax of a forward pass, with the logprob reported for it.
    with torch.no_grad():
        logits = tiny_model(torch.tensor([prompt_ids + ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1: len(prompt_ids) - 1 + len(ids)]
    assert logp.argmax(-1).tolist() == ids
    expected = [float(logp[i, t]) for i, t in enumerate(ids)]
    assert lp["token_logprobs"] == pytest.approx(expected, abs=2e-3)


def test_streamed_completion_equals_the_non_streamed_one(http, prompt_ids, greedy_completion):
    chunks = stream_complete(http, prompt_ids, logprobs=0, check_schema=False)  # schema: see above
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == greedy_completion["usage"]
    assert choices[0]["prompt_token_ids"] == prompt_ids
    assert all("prompt_token_ids" not in c for c in choices[1:])
    assert all("token_ids" in c for c in choices)
    full = greedy_completion["choices"][0]
    assert [t for c in choices for t in c["token_ids"]] == full["token_ids"]
    assert "".join(c["text"] for c in choices) == full["text"]
    assert [x for c in choices for x in c["logprobs"]["token_logprobs"]] == pytest.approx(
        full["logprobs"]["token_logprobs"], abs=1e-4)  # batching may reorder float sums
    assert [c["finish_reason"] for c in choices[:-1]] == [None] * (len(choices) - 1)
    assert choices[-1]["finish_reason"] == full["finish_reason"]


def _stop_string(tiny_tokenizer, ids: list[int]) -> tuple[str, int]:
    """A stop string spanning whole tokens in the middle of the greedy output, first found there."""
    text = decode(tiny_tokenizer, ids)
    for end in range(len(ids) // 2, len(ids) - 1):
        for width in (3, 2):
            s = decode(tiny_tokenizer, ids[end - width:end])
            if s.strip() and text.find(s) == len(decode(tiny_tokenizer, ids[:end - width])):
                return s, end
    pytest.skip("no usable stop string in the greedy output")


@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_with_and_without_include_stop_str(http, prompt_ids, greedy_completion, tiny_tokenizer,
                                                      include, stream):
    full_ids = greedy_completion["choices"][0]["token_ids"]
    full_text = greedy_completion["choices"][0]["text"]
    stop, end = _stop_string(tiny_tokenizer, full_ids)
    cut = full_text.find(stop)
    extra = {"stop": [stop], "include_stop_str_in_output": include}
    if stream:
        chunks = stream_complete(http, prompt_ids, **extra)
        choices = [c["choices"][0] for c in chunks if c["choices"]]
        text = "".join(c["text"] for c in choices)
        ids = [t for c in choices for t in c["token_ids"]]
        last = choices[-1]
    else:
        last = complete(http, prompt_ids, **extra)["choices"][0]
        text, ids = last["text"], last["token_ids"]
    assert last["finish_reason"] == "stop"
    assert last["stop_reason"] == stop
    assert text == (full_text[: cut + len(stop)] if include else full_text[:cut])
    assert ids == full_ids[:end], "generation stops at the token completing the stop string; ids are never cut"


def test_completion_with_a_text_prompt(http, tiny_tokenizer):
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": "<think>", "max_tokens": 5, "temperature": 0,
                                           "return_token_ids": True})
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateCompletionResponse")
    choice = data["choices"][0]
    assert choice["prompt_token_ids"] == tiny_tokenizer.encode("<think>", add_special_tokens=True)
    assert choice["text"] == decode(tiny_tokenizer, choice["token_ids"])
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")


# ---- models, health, version, metrics, openapi -----------------------------------------------


def test_models(http, client, tiny_model):
    r = http.get("/v1/models")
    assert r.status_code == 200
    validate(r.json(), "ListModelsResponse")
    data = r.json()["data"]
    assert [m["id"] for m in data] == [MODEL]
    assert data[0]["max_model_len"] == tiny_model.config.max_position_embeddings
    assert set(data[0]["tools"]) == {"code", "search"}
    assert [m.id for m in client.models.list()] == [MODEL]
    one = http.get(f"/v1/models/{MODEL}")
    assert one.status_code == 200
    validate(one.json(), "Model")
    assert client.models.retrieve(MODEL).id == MODEL


def test_health_and_version(http):
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": MODEL, "in_flight": 0}
    version = http.get("/version").json()
    assert version["model"] == MODEL and version["engine"] == "transformers" and version["protocol"] == "tapo"
    assert isinstance(version["version"], str) and version["version"]


def test_metrics_after_a_tool_ran(http, arith_replies):
    tool_question(arith_replies)  # a tool has run on this server
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "tapo_requests_in_flight 0.0" in text
    lines = [line for line in text.splitlines() if line.startswith("tapo_tool_calls_total{")]
    assert any('tool="code"' in line and float(line.rsplit(" ", 1)[1]) >= 1 for line in lines), lines
    assert 'tapo_time_to_first_token_seconds_count{endpoint="chat"}' in text
    count = next(line for line in text.splitlines()
                 if line.startswith('tapo_time_to_first_token_seconds_count{endpoint="chat"}'))
    assert float(count.rsplit(" ", 1)[1]) >= len(ARITH_QUESTIONS)


def test_openapi_document(http):
    r = http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/version", "/metrics"):
        assert path in doc["paths"], path


# ---- agent options and request semantics -----------------------------------------------------


def _tool_calls_total(url: str) -> float:
    return sum(metric(url, "tapo_tool_calls_total", tool=t, outcome=o) for t in ("code", "search")
               for o in ("ok", "error"))


def test_tools_off_means_no_tool_steps(client, server_url, arith_replies):
    question = tool_question(arith_replies)
    before = _tool_calls_total(server_url)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                           temperature=0, extra_body={"agent": {"tools": False}})
    assert reply.choices[0].message.model_extra["tool_steps"] == []
    assert _tool_calls_total(server_url) == before, "no tool may run"


def test_only_the_tools_asked_for_run(http, server_url):
    code_before = sum(metric(server_url, "tapo_tool_calls_total", tool="code", outcome=o) for o in ("ok", "error"))
    names = []
    for question in (*ARITH_QUESTIONS, *FACT_QUESTIONS):
        body = chat_body(question, agent={"tools": ["search"]})
        data = post_chat(http, body)
        names += [s["name"] for s in data["choices"][0]["message"]["tool_steps"]]
    assert set(names) <= {"search"}, names
    assert "search" in names  # the fact questions search
    code_after = sum(metric(server_url, "tapo_tool_calls_total", tool="code", outcome=o) for o in ("ok", "error"))
    assert code_after == code_before


def test_max_tokens_caps_model_tokens(client, http):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ARITH_QUESTIONS[0]}],
                                           temperature=0, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens <= 5
    data = post_chat(http, chat_body(ARITH_QUESTIONS[0], max_completion_tokens=5, stream=False))
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] <= 5


def test_max_tokens_counts_model_tokens_only(http, arith_replies):
    """One token short of the full greedy reply: the tool still runs (its output is not counted),
    and the reply ends with ``length`` after exactly that many model tokens."""
    question = tool_question(arith_replies)
    full = arith_replies[question]
    n = full["usage"]["completion_tokens"]
    assert full["usage"]["injected_tokens"] > 1
    capped = post_chat(http, chat_body(question, max_tokens=n - 1))
    assert capped["choices"][0]["finish_reason"] == "length"
    assert capped["choices"][0]["agent_finish_reason"] == "max_tokens"
    assert capped["usage"]["completion_tokens"] == n - 1
    assert capped["usage"]["injected_tokens"] == full["usage"]["injected_tokens"]
    assert [s["output"] for s in capped["choices"][0]["message"]["tool_steps"]] == [
        s["output"] for s in full["choices"][0]["message"]["tool_steps"]]


def test_a_seed_makes_sampling_reproducible(http):
    body = chat_body(ARITH_QUESTIONS[0], temperature=1.0, seed=1234)
    first, second = post_chat(http, body), post_chat(http, body)
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["choices"][0]["message"]["reasoning"] == second["choices"][0]["message"]["reasoning"]
    assert first["usage"] == second["usage"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_stop_string_ends_the_reply_and_is_not_returned(http, arith_replies, stream):
    """OpenAI chat semantics: "the returned text will not contain the stop sequence"."""
    question = tool_question(arith_replies)
    message = arith_replies[question]["choices"][0]["message"]
    stop = message["content"]
    if not stop or stop in message["reasoning"]:
        pytest.skip("the greedy answer also occurs in the reasoning")
    body = chat_body(question, stop=[stop])
    if stream:
        status, payloads = read_sse(http, "/v1/chat/completions", {**body, "stream": True})
        assert status == 200
        chunks = [c for c in check_chat_stream(payloads) if c["choices"]]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        finish = chunks[-1]["choices"][0]["finish_reason"], chunks[-1]["choices"][0]["agent_finish_reason"]
    else:
        data = post_chat(http, body)
        content = data["choices"][0]["message"]["content"]
        finish = data["choices"][0]["finish_reason"], data["choices"][0]["agent_finish_reason"]
    assert finish == ("stop", "stop_sequence")
    assert stop not in content, f"the stop string {stop!r} was returned in content {content!r}"


def test_request_ids(http):
    assert http.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = http.get("/health").headers["x-request-id"]
    assert generated and generated != http.get("/health").headers["x-request-id"]


def test_a_client_system_message_follows_the_protocol_prompt(http):
    plain = post_chat(http, chat_body(ARITH_QUESTIONS[0]))
    with_system = post_chat(http, {**chat_body(ARITH_QUESTIONS[0]), "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": ARITH_QUESTIONS[0]}]})
    assert with_system["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
    assert with_system["choices"][0]["finish_reason"] in ("stop", "length")  # what the tiny model says varies
    with_developer = post_chat(http, {**chat_body(ARITH_QUESTIONS[0]), "messages": [
        {"role": "developer", "content": "You are terse."}, {"role": "user", "content": ARITH_QUESTIONS[0]}]})
    assert with_developer["usage"]["prompt_tokens"] == with_system["usage"]["prompt_tokens"]


def test_multi_turn_history_drops_earlier_reasoning(http, arith_replies):
    question = tool_question(arith_replies)
    answer = arith_replies[question]["choices"][0]["message"]["content"]
    follow_up = {"role": "user", "content": "What is 5 + 6?"}

    def with_assistant(content):
        return {**chat_body(question), "messages": [
            {"role": "user", "content": question}, {"role": "assistant", "content": content}, follow_up]}

    bare = post_chat(http, with_assistant(answer))
    tagged = post_chat(http, with_assistant(
        f"<think>a long chain of thought that the next turn must not see</think>\n\n<code>print(1)</code>"
        f"<response>1</response><answer>{answer}</answer>"))
    parts = post_chat(http, {**with_assistant(None), "messages": [
        {"role": "user", "content": [{"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]}, follow_up]})
    assert bare["usage"]["prompt_tokens"] == tagged["usage"]["prompt_tokens"] == parts["usage"]["prompt_tokens"]
    single = post_chat(http, chat_body("What is 5 + 6?"))
    assert bare["usage"]["prompt_tokens"] > single["usage"]["prompt_tokens"]
    assert bare["choices"][0]["message"]["content"] == tagged["choices"][0]["message"]["content"]


# ---- disconnects cancel the run --------------------------------------------------------------

# Waits on what a disconnect must cause only catch a hang: without it the hanging tool runs until
# the budget's 30 s tool time-out cuts it (so wait well under that), and the generation runs on to
# max_tokens. A slow, loaded machine gets there well within this.
HANG_S = 20.0


def wait_for(predicate, timeout_s: float = HANG_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def endless_engine(tiny_model, tiny_tokenizer) -> TransformersBackend:
    """An engine that never ends a completion on its own (no EOS): only ``max_tokens``, or the client
    leaving, can end one, whatever the fixture model writes. Its ``stats`` count what it generated."""
    engine = TransformersBackend(tiny_model, tiny_tokenizer, max_slots=1)
    engine.eos_ids = frozenset()
    return engine


@contextlib.contextmanager
def engine_server(tiny_model, tiny_tokenizer) -> Iterator[tuple[str, TransformersBackend]]:
    """A server of its own on an :func:`endless_engine`, with the engine at hand."""
    engine = endless_engine(tiny_model, tiny_tokenizer)
    tools = fixture_tools(FunctionTool("code", lambda code: ""))
    with running_server(make_state(tiny_model, tiny_tokenizer, backend=engine, tools=tools)) as url:
        yield url, engine


def engine_idle(engine: TransformersBackend) -> bool:
    return not any(slot.busy for slot in engine._slots)


def test_closing_a_stream_cancels_the_running_tool(hanging_server):
    url, tool = hanging_server
    tool.reset()
    with httpx.Client(base_url=url, timeout=30) as http:
        body = chat_body(ARITH_QUESTIONS[0], stream=True)
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            # Keep the line iterator referenced: a dropped, unfinished httpx line generator closes
            # the connection as soon as it is garbage-collected (httpcore closes on GeneratorExit).
            lines = response.iter_lines()
            data = sse_data_lines(lines)
            for payload in data:
                assert payload != "[DONE]", "the stream ended before the tool ran"
                chunk = json.loads(payload)
                validate(chunk, "CreateChatCompletionStreamResponse")
                step = chunk["choices"][0]["delta"].get("tool_step")
                if step is not None:
                    assert step["status"] == "running" and step["name"] == "code"
                    break
            assert tool.started.wait(HANG_S)
        # Leaving the block closed the connection. The tool never returns: only the disconnect can
        # cancel it before the budget's 30 s tool time-out (the budget has no wall clock).
        assert tool.cancelled.wait(HANG_S), "the disconnect did not cancel the tool"
    assert wait_idle(url, timeout=HANG_S)["in_flight"] == 0
    assert metric(url, "tapo_requests_in_flight") == 0


async def test_a_non_streaming_client_that_gives_up_cancels_the_tool(hanging_server):
    url, tool = hanging_server
    assert wait_idle(url)["in_flight"] == 0
    tool.reset()
    async with httpx.AsyncClient(base_url=url, timeout=HANG_S) as http:
        request = asyncio.create_task(http.post("/v1/chat/completions", json=chat_body(ARITH_QUESTIONS[0])))
        assert await asyncio.to_thread(tool.started.wait, HANG_S), "the model did not call the code tool"
        assert not request.done(), "the request should hang while its tool does"
        request.cancel()  # the client gives up (once the tool runs, however slow the machine): its connection closes
        with pytest.raises(asyncio.CancelledError):
            await request
    # The tool never returns: only the server's poll for the disconnect (every 0.5 s) can cancel it
    # before the budget's 30 s tool time-out.
    assert await asyncio.to_thread(tool.cancelled.wait, HANG_S), "the server did not notice the disconnect"
    assert wait_idle(url, timeout=HANG_S)["in_flight"] == 0
    assert metric(url, "tapo_requests_in_flight") == 0


def test_closing_a_completion_stream_stops_generation(tiny_model, tiny_tokenizer):
    """The engine would generate until max_tokens (it ignores EOS); leaving stops it."""
    max_tokens = 3000
    body = {"model": MODEL, "prompt": tiny_tokenizer.encode("12345"), "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "return_token_ids": True}
    with engine_server(tiny_model, tiny_tokenizer) as (url, engine), httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept referenced: see test_closing_a_stream_cancels_the_running_tool
            data = sse_data_lines(lines)
            assert json.loads(next(data))["choices"][0]["token_ids"]
            assert json.loads(next(data))["choices"][0]["token_ids"]
            assert http.get("/health").json()["in_flight"] == 1
        assert wait_idle(url, timeout=HANG_S)["in_flight"] == 0
        assert wait_for(lambda: engine_idle(engine)), "the engine still generates for a client that left"
        # Counted, not timed: the engine stopped far short of the max_tokens it would have generated.
        assert engine.stats["decode_rows"] < max_tokens // 2, engine.stats


# (A disconnect test with the real sandbox is left out: the tiny model only writes one-line
# arithmetic programs, so it cannot be made to start a long-running one.)


# ---- many concurrent streams -----------------------------------------------------------------


async def test_32_concurrent_streams(server_url, arith_replies):
    questions = [ARITH_QUESTIONS[i % len(ARITH_QUESTIONS)] for i in range(32)]
    client = AsyncOpenAI(base_url=f"{server_url}/v1", api_key="x", max_retries=0, timeout=120)

    async def raw(question: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=server_url, timeout=120) as http:
            async with http.stream("POST", "/v1/chat/completions", json=chat_body(question, stream=True)) as r:
                assert r.status_code == 200
                return check_chat_stream([p async for p in _alines(r)])

    # No time limit: a stream that hangs fails on its client's 120 s time-out (max_retries=0).
    summaries = await asyncio.gather(*(async_stream_summary(client, q) for q in questions))
    await client.close()
    assert wait_idle(server_url)["in_flight"] == 0
    raws = await asyncio.gather(*(raw(q) for q in questions))  # the same 32, read as raw SSE
    for question, summary in zip(questions, summaries):
        assert len(summary.finish_reasons) == 1 and len(summary.usage_chunks) == 1
        # Greedy replies do not depend on what else is batched with them.
        check_summary_against(summary, arith_replies[question])
    for question, chunks in zip(questions, raws):
        assert chunks[-1]["choices"][0]["finish_reason"] is not None
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert content == arith_replies[question]["choices"][0]["message"]["content"]


async def _alines(response: httpx.Response):
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip()
