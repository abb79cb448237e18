"""RemoteBackend against a real HTTP server that speaks vLLM's streamed ``/v1/completions``; and the
pure translation of the in-process vLLM adapter.

The server is a small Starlette app run by uvicorn on 127.0.0.1 in a background thread. It replays
fixed scripts shaped like vLLM's ``CompletionStreamResponse`` events, records every request body,
and notices when a client hangs up. vLLM itself cannot run here (it needs CUDA): the vLLM adapter
is tested through its pure functions and a stand-in engine only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
import time
from types import SimpleNamespace
from typing import Any, AsyncIterator, Callable, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from asgi_thread import serve_asgi

from agent_runtime.backends.base import GenerationChunk, SamplingParams
from agent_runtime.backends.finish import map_finish_reason
from agent_runtime.backends.remote import (
    DEFAULT_CONTEXT_LENGTH,
    RemoteBackend,
    RemoteBackendError,
    completion_request_body,
    completions_url,
)
from agent_runtime.backends.vllm_engine import (
    INSTALL_HINT,
    RequestOutputTranslator,
    VLLMBackend,
    VLLMBackendError,
    sampled_logprobs,
    sampling_params_kwargs,
)

WORDS = ["<unk>", "<eos>", "<|endoftext|>", "hello", "world", "</answer>", "the", "answer", "is", "42"]
ID = {w: i for i, w in enumerate(WORDS)}
EOS = ID["<eos>"]
PROMPT = [ID["the"], ID["answer"], ID["is"]]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace-split words; decode joins them with spaces; ``<eos>`` is the special EOS."""
    tok = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


# ---- the scripted vLLM-like server -----------------------------------------------------------


def event(
    ids: list[int],
    text: str = "",
    logprobs: list[float] | None = None,
    finish: str | None = None,
    stop_reason: int | str | None = None,
    **choice_fields: Any,
) -> dict[str, Any]:
    """One ``CompletionStreamResponse`` as vLLM streams it with ``return_token_ids``."""
    choice: dict[str, Any] = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "token_ids": ids,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "text_offset": [0] * len(ids),
            "token_logprobs": logprobs,
            "tokens": [WORDS[i] for i in ids],
            "top_logprobs": [{WORDS[i]: lp} for i, lp in zip(ids, logprobs)],
        }
    choice.update(choice_fields)
    return {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]}


USAGE_EVENT = {"id": "cmpl-test", "object": "text_completion", "created": 0, "model": "m", "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}


class FakeVLLM:
    """Routes each request by its ``model`` field to a scenario; records what it saw."""

    def __init__(self) -> None:
        self.url = ""
        self.scenarios: dict[str, Callable[[dict], Response]] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.client_ports: dict[str, list[int]] = {}
        self.endless_sent: dict[str, int] = {}
        self.endless_closed: dict[str, threading.Event] = {}
        self.app = Starlette(routes=[Route("/v1/completions", self.completions, methods=["POST"])])

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        model = body["model"]
        self.requests.setdefault(model, []).append(body)
        self.headers.setdefault(model, []).append(dict(request.headers))
        self.client_ports.setdefault(model, []).append(request.client.port)
        return self.scenarios[model](body)

    def stream(self, model: str, events: list[dict | str]) -> str:
        """Send ``events`` (a str is sent as the raw data line) then ``[DONE]``."""

        async def body() -> AsyncIterator[str]:
            for item in events:
                yield f"data: {item if isinstance(item, str) else json.dumps(item)}\n\n"
            yield "data: [DONE]\n\n"

        self.scenarios[model] = lambda _: StreamingResponse(body(), media_type="text/event-stream")
        return model

    def error(self, model: str, status: int, payload: Any) -> str:
        self.scenarios[model] = lambda _: JSONResponse(payload, status_code=status)
        return model

    def endless(self, model: str) -> str:
        """Streams ``hello`` every 10 ms until the client goes away, then marks itself closed."""
        self.endless_sent[model] = 0
        closed = self.endless_closed[model] = threading.Event()

        async def body() -> AsyncIterator[str]:
            try:
                while True:
                    self.endless_sent[model] += 1
                    yield f"data: {json.dumps(event([ID['hello']], ' hello', [-0.5]))}\n\n"
                    await asyncio.sleep(0.01)
            finally:
                closed.set()  # what vLLM does here: abort the request

        self.scenarios[model] = lambda _: StreamingResponse(body(), media_type="text/event-stream")
        return model


@pytest.fixture(scope="module")
def server() -> Iterator[FakeVLLM]:
    fake = FakeVLLM()
    with serve_asgi(fake.app, lifespan="off") as url:
        fake.url = url
        yield fake


@pytest.fixture
async def backend_for(server: FakeVLLM, tokenizer):
    """``backend_for(model, **kw)``: a RemoteBackend on the test server, closed after the test."""
    made: list[RemoteBackend] = []

    def make(model: str, **kwargs: Any) -> RemoteBackend:
        backend = RemoteBackend(server.url, tokenizer, model, timeout=10, **kwargs)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


async def collect(backend: RemoteBackend, params: SamplingParams, prompt: list[int] = PROMPT) -> list[GenerationChunk]:
    return [chunk async for chunk in backend.generate(prompt, params)]


# ---- RemoteBackend over HTTP -----------------------------------------------------------------


async def test_chunks_map_and_request_carries_prompt_ids_and_vllm_fields(server, backend_for):
    model = server.stream("stop-string", [
        event([ID["hello"]], "hello", [-0.1], prompt_token_ids=PROMPT),
        event([ID["world"], ID["42"]], " world 42", [-0.2, -0.25]),  # vLLM merges deltas when behind
        event([ID["</answer>"]], " </answer>", [-0.3], finish="stop", stop_reason="</answer>"),
        USAGE_EVENT,
    ])
    params = SamplingParams(max_tokens=9, temperature=0.7, top_p=0.9, seed=5, stop=("</answer>",))
    chunks = await collect(backend_for(model), params)

    assert [c.token_ids for c in chunks] == [[ID["hello"]], [ID["world"], ID["42"]], [ID["</answer>"]]]
    assert [c.text for c in chunks] == ["hello", " world 42", " </answer>"]
    assert [c.logprobs for c in chunks] == [[-0.1], [-0.2, -0.25], [-0.3]]
    assert [c.finish_reason for c in chunks] == [None, None, "stop"]
    assert chunks[-1].stop_str == "</answer>"

    (body,) = server.requests[model]
    assert body["prompt"] == PROMPT
    assert body["model"] == model
    assert body["stream"] is True
    assert body["return_token_ids"] is True
    assert body["include_stop_str_in_output"] is True
    assert body["skip_special_tokens"] is True
    assert body["logprobs"] == 0
    assert body["stop"] == ["</answer>"]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (9, 0.7, 0.9, 5)
    # Neutral values, so the server's generation_config defaults cannot change the policy.
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (-1, 0.0, 1.0)


async def test_eos_finish_keeps_the_eos_id_last(server, backend_for):
    model = server.stream("eos", [
        event([ID["hello"]], "hello", [-0.1]),
        event([EOS], "", [-0.01], finish="stop", stop_reason=None),
    ])
    chunks = await collect(backend_for(model), SamplingParams())
    assert chunks[-1].finish_reason == "eos" and chunks[-1].stop_str is None
    assert chunks[-1].token_ids == [EOS]
    assert "".join(c.text for c in chunks) == "hello"  # special tokens are not text


async def test_stop_token_id_is_an_eos_finish(server, backend_for):
    # A generation_config EOS that is not the tokenizer's: vLLM reports it as the stop_reason id.
    end = ID["<|endoftext|>"]
    ending = event([ID["hello"], end], "hello", [-0.1, -0.2], finish="stop", stop_reason=end)
    model = server.stream("stop-token", [ending])
    (chunk,) = await collect(backend_for(model), SamplingParams())
    assert (chunk.finish_reason, chunk.token_ids) == ("eos", [ID["hello"], end])


@pytest.mark.parametrize(
    ("last", "engine_finish", "expected"),
    [(ID["world"], "length", "length"), (EOS, "length", "eos"), (ID["world"], "abort", "abort"),
     (ID["world"], "repetition", "abort")],
)
async def test_length_and_other_finishes(server, backend_for, last, engine_finish, expected):
    ending = event([ID["hello"], last], "", [-0.1, -0.2], finish=engine_finish)
    model = server.stream(f"finish-{engine_finish}-{last}", [ending])
    (chunk,) = await collect(backend_for(model), SamplingParams(max_tokens=2))
    assert chunk.finish_reason == expected
    assert chunk.token_ids == [ID["hello"], last]


async def test_abort_with_no_new_tokens(server, backend_for):
    model = server.stream("abort-empty", [
        event([ID["hello"]], "hello", [-0.1]),
        event([], "", [], finish="abort"),
    ])
    chunks = await collect(backend_for(model), SamplingParams())
    assert chunks[-1].token_ids == [] and chunks[-1].logprobs == [] and chunks[-1].finish_reason == "abort"


async def test_no_logprobs_requested(server, backend_for):
    model = server.stream("no-logprobs", [event([ID["hello"], EOS], "hello", finish="stop")])
    (chunk,) = await collect(backend_for(model), SamplingParams(logprobs=False))
    assert chunk.logprobs is None
    assert "logprobs" not in server.requests[model][0]


async def test_server_without_token_ids_is_refused(server, backend_for):
    plain = event([ID["hello"]], "hello", [-0.1])
    del plain["choices"][0]["token_ids"]
    model = server.stream("no-token-ids", [plain])
    with pytest.raises(RemoteBackendError, match="return_token_ids") as info:
        await collect(backend_for(model), SamplingParams())
    assert "re-tokenize" in str(info.value)


@pytest.mark.parametrize("finish", [None, "stop"], ids=["mid-stream", "final"])
async def test_text_with_empty_token_ids_is_refused_not_dropped(server, backend_for, finish):
    """A choice whose text has no ids (``token_ids: []``) would lose those tokens from the trajectory."""
    events = [event([ID["hello"]], "hello", [-0.1]), event([], " world", [], finish=finish)]
    if finish is None:
        events.append(event([EOS], "", [-0.01], finish="stop"))
    model = server.stream(f"text-without-ids-{finish}", events)
    with pytest.raises(RemoteBackendError, match=r"token_ids") as info:
        await collect(backend_for(model), SamplingParams())
    message = str(info.value)
    assert server.url in message and "' world'" in message, message


async def test_http_400_surfaces_the_openai_error_message(server, backend_for):
    message = "This model's maximum context length is 16 tokens. However, you requested 20 tokens."
    model = server.error("too-long", 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
    with pytest.raises(RemoteBackendError) as info:
        await collect(backend_for(model), SamplingParams())
    assert message in str(info.value) and "400" in str(info.value)


async def test_older_vllm_flat_error_and_plain_5xx(server, backend_for):
    flat = server.error("flat-error", 400, {"object": "error", "message": "top_p must be in (0, 1]", "code": 400})
    with pytest.raises(RemoteBackendError, match=r"top_p must be in \(0, 1\]"):
        await collect(backend_for(flat), SamplingParams())
    server.scenarios["plain-500"] = lambda _: Response("engine died", status_code=500)
    with pytest.raises(RemoteBackendError, match="HTTP 500: engine died"):
        await collect(backend_for("plain-500"), SamplingParams())


async def test_error_event_mid_stream(server, backend_for):
    model = server.stream("mid-stream-error", [
        event([ID["hello"]], "hello", [-0.1]),
        {"error": {"message": "KV cache transfer failed", "type": "InternalServerError", "code": 500}},
    ])
    seen = []
    with pytest.raises(RemoteBackendError, match="KV cache transfer failed"):
        async for chunk in backend_for(model).generate(PROMPT, SamplingParams()):
            seen.append(chunk)
    assert [c.token_ids for c in seen] == [[ID["hello"]]]


async def test_server_dropping_the_connection_mid_stream(server, backend_for):
    async def body() -> AsyncIterator[str]:
        yield f"data: {json.dumps(event([ID['hello']], 'hello', [-0.1]))}\n\n"
        raise RuntimeError("engine process died")  # uvicorn cuts the chunked body short

    server.scenarios["dropped"] = lambda _: StreamingResponse(body(), media_type="text/event-stream")
    with pytest.raises(RemoteBackendError, match="the connection to .* failed"):
        await collect(backend_for("dropped"), SamplingParams())


async def test_stream_that_ends_without_finishing_is_an_error(server, backend_for):
    model = server.stream("truncated", [event([ID["hello"]], "hello", [-0.1])])
    with pytest.raises(RemoteBackendError, match="ended before the completion finished"):
        await collect(backend_for(model), SamplingParams())


async def test_misaligned_logprobs_are_refused(server, backend_for):
    model = server.stream("bad-logprobs", [event([ID["hello"], ID["world"]], "hello world", [-0.1], finish="length")])
    with pytest.raises(RemoteBackendError, match="one logprob per sampled token"):
        await collect(backend_for(model), SamplingParams())


async def test_prompt_echo_must_match(server, backend_for):
    echo = event([ID["hello"]], "hello", [-0.1], finish="length", prompt_token_ids=[1, 2])
    model = server.stream("other-prompt", [echo])
    with pytest.raises(RemoteBackendError, match="different prompt"):
        await collect(backend_for(model), SamplingParams())


async def test_connection_refused_names_the_url(tokenizer):
    with socket.socket() as sock:  # a port that nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = RemoteBackend(f"http://127.0.0.1:{port}/v1/", tokenizer, "m", timeout=5)
    try:
        with pytest.raises(RemoteBackendError) as info:
            await collect(backend, SamplingParams())
    finally:
        await backend.aclose()
    assert f"http://127.0.0.1:{port}/v1/completions" in str(info.value)
    assert "cannot reach" in str(info.value)


async def test_closing_the_stream_early_disconnects_the_server(server, backend_for):
    model = server.endless("endless")
    stream = backend_for(model).generate(PROMPT, SamplingParams(max_tokens=10_000))
    first = await anext(stream)
    second = await anext(stream)
    assert first.token_ids == second.token_ids == [ID["hello"]]
    await stream.aclose()

    closed = server.endless_closed[model]
    deadline = time.monotonic() + 5
    while not closed.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert closed.is_set(), "the server never saw the client hang up"
    sent = server.endless_sent[model]
    await asyncio.sleep(0.1)
    assert server.endless_sent[model] == sent  # and it stopped generating


async def test_cancelling_the_consumer_disconnects_the_server(server, backend_for):
    model = server.endless("endless-cancelled")
    backend = backend_for(model)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in backend.generate(PROMPT, SamplingParams(max_tokens=10_000)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    closed = server.endless_closed[model]
    deadline = time.monotonic() + 5
    while not closed.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert closed.is_set()


async def test_finished_streams_reuse_the_connection(server, backend_for):
    # The final chunk is handed out only after [DONE], so the keep-alive connection is reused.
    model = server.stream("reuse", [event([ID["hello"], EOS], "hello", [-0.1, -0.2], finish="stop")])
    backend = backend_for(model)
    for _ in range(3):
        stream = backend.generate(PROMPT, SamplingParams())
        async for chunk in stream:
            if chunk.finish_reason:
                break
        await stream.aclose()  # what the agent loop does after the finish
    ports = server.client_ports[model]
    assert len(ports) == 3 and len(set(ports)) == 1


async def test_api_key_is_sent_as_bearer_token(server, backend_for):
    model = server.stream("auth", [event([EOS], "", [-0.1], finish="stop")])
    await collect(backend_for(model, api_key="sk-test"), SamplingParams())
    assert server.headers[model][0]["authorization"] == "Bearer sk-test"


async def test_eos_left_out_by_the_server(server, backend_for, caplog):
    # A stop finish with no stop string and no EOS id: appended (vLLM's stop_reason None means the
    # tokenizer's EOS) only when no logprob is needed for it.
    model = server.stream("eos-left-out", [event([ID["hello"]], "hello", [-0.1], finish="stop", stop_reason=None)])
    (chunk,) = await collect(backend_for(model), SamplingParams(logprobs=False))
    assert (chunk.finish_reason, chunk.token_ids) == ("eos", [ID["hello"], EOS])
    assert "left the EOS id out" in caplog.text
    with pytest.raises(RemoteBackendError, match="without sending its id"):
        await collect(backend_for(model), SamplingParams(logprobs=True))


async def test_stop_string_found_when_the_server_sends_no_stop_reason(server, backend_for):
    plain = event([ID["hello"], ID["</answer>"]], "hello </answer>", [-0.1, -0.2], finish="stop")
    del plain["choices"][0]["stop_reason"]
    model = server.stream("no-stop-reason", [plain])
    (chunk,) = await collect(backend_for(model), SamplingParams(stop=("</answer>",)))
    assert (chunk.finish_reason, chunk.stop_str) == ("stop", "</answer>")
    assert chunk.token_ids == [ID["hello"], ID["</answer>"]]


async def test_sglang_matched_stop(server, backend_for):
    sglang = event([ID["hello"], ID["</answer>"]], "hello </answer>", [-0.1, -0.2], finish="stop",
                   matched_stop="</answer>")
    del sglang["choices"][0]["stop_reason"]
    model = server.stream("sglang", [sglang])
    (chunk,) = await collect(backend_for(model), SamplingParams(stop=("</answer>",)))
    assert (chunk.finish_reason, chunk.stop_str) == ("stop", "</answer>")


async def test_given_http_client_is_used_and_left_open(server, tokenizer):
    model = server.stream("own-client", [event([EOS], "", [-0.1], finish="stop")])
    async with httpx.AsyncClient(timeout=5) as client:
        backend = RemoteBackend(server.url + "/v1", tokenizer, model, http_client=client)
        (chunk,) = await collect(backend, SamplingParams())
        await backend.aclose()
        assert chunk.finish_reason == "eos"
        assert not client.is_closed


async def test_closed_backend_and_empty_prompt(tokenizer):
    backend = RemoteBackend("http://127.0.0.1:9", tokenizer, "m")
    with pytest.raises(ValueError, match="empty"):
        await collect(backend, SamplingParams(), prompt=[])
    await backend.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await collect(backend, SamplingParams())


def test_base_url_forms_and_context_length(tokenizer):
    for base in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"):
        assert completions_url(base) == "http://h:8000/v1/completions"
    # This tokenizer has no real model_max_length (transformers reports 1e30): the default applies.
    assert RemoteBackend("http://h:1", tokenizer, "m").info.context_length == DEFAULT_CONTEXT_LENGTH
    assert RemoteBackend("http://h:1", tokenizer, "m", context_length=4096).info.context_length == 4096
    sized = make_tokenizer()
    sized.model_max_length = 2048
    assert RemoteBackend("http://h:1", sized, "m").info.context_length == 2048


def test_request_body_leaves_out_unset_seed():
    body = completion_request_body("m", [1, 2], SamplingParams(temperature=0))
    assert "seed" not in body and body["temperature"] == 0 and body["stop"] == []
    assert "allowed_token_ids" not in body
    constrained = completion_request_body("m", [1, 2], SamplingParams(allowed_token_ids=frozenset({7, 3})))
    assert constrained["allowed_token_ids"] == [3, 7]  # vLLM's field, which our /v1/completions reads too


# ---- finish-reason mapping (shared) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("finish", "stop_reason", "last", "expected"),
    [
        (None, None, 3, (None, None)),
        ("stop", "</answer>", 5, ("stop", "</answer>")),
        ("stop", None, EOS, ("eos", None)),
        ("stop", 2, 2, ("eos", None)),
        ("length", None, 3, ("length", None)),
        ("length", None, EOS, ("eos", None)),
        ("length", None, None, ("length", None)),
        ("abort", None, 3, ("abort", None)),
        ("repetition", None, 3, ("abort", None)),
        ("something-new", None, 3, ("abort", None)),
    ],
)
def test_map_finish_reason(finish, stop_reason, last, expected):
    assert map_finish_reason(finish, stop_reason, last, {EOS}) == expected


# ---- in-process vLLM adapter: pure translation with stand-ins --------------------------------
# vLLM needs CUDA and cannot be installed here; these stand-ins (SimpleNamespace) have the fields
# of vllm.RequestOutput / CompletionOutput / Logprob that the adapter reads.


def request_output(ids, logprobs=None, finish=None, stop_reason=None, request_id="r1"):
    completion = SimpleNamespace(token_ids=ids, logprobs=logprobs, finish_reason=finish, stop_reason=stop_reason)
    return SimpleNamespace(request_id=request_id, outputs=[completion], finished=finish is not None)


def lp(token: int, value: float, other: int | None = None) -> dict[int, SimpleNamespace]:
    """One position's ``{token_id: Logprob}``, maybe with a top-1 alternative as vLLM adds."""
    entry = {token: SimpleNamespace(logprob=value, rank=1, decoded_token=WORDS[token])}
    if other is not None:
        entry[other] = SimpleNamespace(logprob=value - 1, rank=2, decoded_token=WORDS[other])
    return entry


def test_sampling_params_kwargs():
    params = SamplingParams(max_tokens=7, temperature=0.6, top_p=0.95, seed=3, stop=("</answer>", "\n\n"))
    kwargs = sampling_params_kwargs(params, output_kind="DELTA")
    assert kwargs == {
        "n": 1, "max_tokens": 7, "temperature": 0.6, "top_p": 0.95, "seed": 3, "stop": ["</answer>", "\n\n"],
        "include_stop_str_in_output": True, "skip_special_tokens": True, "logprobs": 0, "output_kind": "DELTA",
    }
    no_lp = sampling_params_kwargs(SamplingParams(logprobs=False))
    assert no_lp["logprobs"] is None and "output_kind" not in no_lp and "allowed_token_ids" not in no_lp
    assert sampling_params_kwargs(SamplingParams(allowed_token_ids=frozenset({9, 4})))["allowed_token_ids"] == [4, 9]


def test_translator_delta_outputs(tokenizer):
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=True, cumulative=False)
    a = tr.translate(request_output([ID["hello"]], [lp(ID["hello"], -0.1, other=ID["world"])]))
    b = tr.translate(request_output([ID["world"], ID["</answer>"]], [lp(ID["world"], -0.2), lp(ID["</answer>"], -0.3)],
                                    finish="stop", stop_reason="</answer>"))
    assert (a.token_ids, a.text, a.logprobs, a.finish_reason) == ([ID["hello"]], "hello", [-0.1], None)
    assert (b.token_ids, b.text, b.logprobs) == ([ID["world"], ID["</answer>"]], " world </answer>", [-0.2, -0.3])
    assert (b.finish_reason, b.stop_str) == ("stop", "</answer>")


def test_translator_cumulative_outputs_are_diffed(tokenizer):
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=True, cumulative=True)
    entries = [lp(ID["hello"], -0.1), lp(ID["world"], -0.2), lp(EOS, -0.3)]
    a = tr.translate(request_output([ID["hello"]], entries[:1]))
    same = tr.translate(request_output([ID["hello"]], entries[:1]))  # nothing new
    b = tr.translate(request_output([ID["hello"], ID["world"], EOS], entries, finish="stop"))
    assert a.token_ids == [ID["hello"]] and same is None
    assert (b.token_ids, b.logprobs, b.finish_reason, b.text) == ([ID["world"], EOS], [-0.2, -0.3], "eos", " world")


def test_translator_abort_without_new_tokens(tokenizer):
    # vLLM's final abort output has no new token but, in delta mode, every logprob so far.
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=True, cumulative=False)
    tr.translate(request_output([ID["hello"]], [lp(ID["hello"], -0.1)]))
    end = tr.translate(request_output([], [lp(ID["hello"], -0.1)], finish="abort"))
    assert (end.token_ids, end.logprobs, end.finish_reason) == ([], [], "abort")


def test_translator_length_on_eos_and_stop_token_id(tokenizer):
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=False, cumulative=False)
    assert tr.translate(request_output([EOS], finish="length")).finish_reason == "eos"
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=False, cumulative=False)
    chunk = tr.translate(request_output([2], finish="stop", stop_reason=2))
    assert (chunk.finish_reason, chunk.logprobs) == ("eos", None)


def test_translator_errors(tokenizer):
    tr = RequestOutputTranslator(tokenizer, {EOS}, logprobs=True, cumulative=False)
    with pytest.raises(VLLMBackendError, match="failed request"):
        tr.translate(request_output([], finish="error"))
    with pytest.raises(VLLMBackendError, match="no logprob for sampled token"):
        sampled_logprobs([ID["hello"]], [lp(ID["world"], -1.0)])
    with pytest.raises(VLLMBackendError, match="returned none"):
        sampled_logprobs([ID["hello"]], None)


class StandInEngine:
    """Has the parts of ``AsyncLLM`` the adapter calls: ``generate``, ``abort``, ``shutdown``."""

    def __init__(self, outputs: list[SimpleNamespace], *, hang: bool = False) -> None:
        self.outputs = outputs
        self.hang = hang
        self.calls: list[tuple[Any, Any, str]] = []
        self.aborted: list[str] = []
        self.generator_closed = False
        self.shut_down = False
        self.model_config = SimpleNamespace(max_model_len=2048, logprobs_mode="processed_logprobs")

    async def generate(self, prompt, sampling_params, request_id):
        self.calls.append((prompt, sampling_params, request_id))
        try:
            for out in self.outputs:
                yield out
            if self.hang:
                await asyncio.Event().wait()
        finally:
            self.generator_closed = True

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.shut_down = True


def stand_in_backend(engine: StandInEngine, tokenizer) -> VLLMBackend:
    return VLLMBackend(
        engine, tokenizer, model_name="m", sampling_params_type=SimpleNamespace, delta_output_kind="DELTA"
    )


async def test_vllm_backend_flow_with_a_stand_in_engine(tokenizer):
    engine = StandInEngine([
        request_output([ID["hello"]], [lp(ID["hello"], -0.1)]),
        request_output([EOS], [lp(EOS, -0.2)], finish="stop"),
    ])
    backend = stand_in_backend(engine, tokenizer)
    assert backend.info.context_length == 2048 and backend.info.extra["logprobs_mode"] == "processed_logprobs"
    chunks = [c async for c in backend.generate(PROMPT, SamplingParams(max_tokens=5))]
    assert [c.token_ids for c in chunks] == [[ID["hello"]], [EOS]]
    assert chunks[-1].finish_reason == "eos"
    prompt, sampling, request_id = engine.calls[0]
    assert prompt == {"prompt_token_ids": PROMPT}
    assert sampling.output_kind == "DELTA" and sampling.max_tokens == 5 and sampling.logprobs == 0
    assert engine.aborted == []  # finished normally: nothing to abort
    await backend.aclose()
    assert engine.shut_down


async def test_vllm_backend_aborts_when_closed_early(tokenizer):
    engine = StandInEngine([request_output([ID["hello"]], [lp(ID["hello"], -0.1)])], hang=True)
    backend = stand_in_backend(engine, tokenizer)
    stream = backend.generate(PROMPT, SamplingParams())
    await anext(stream)
    await stream.aclose()
    (_, _, request_id) = engine.calls[0]
    assert engine.aborted == [request_id]
    assert engine.generator_closed


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_missing_gives_the_install_hint(tokenizer):
    with pytest.raises(ImportError) as info:
        VLLMBackend.from_pretrained("some/model")
    assert str(info.value) == INSTALL_HINT and "[vllm]" in INSTALL_HINT
    with pytest.raises(ImportError, match="CUDA"):
        VLLMBackend(object(), tokenizer)
