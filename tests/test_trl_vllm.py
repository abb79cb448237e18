"""The ``trl-vllm`` backend: batching across a rollout, cancellation, errors, and translation.

vLLM cannot run here (it needs CUDA). Colocate mode is driven by a stand-in with the call
signature of ``vllm.LLM.generate`` returning objects shaped like vLLM's ``RequestOutput``.
Server mode runs TRL's real ``VLLMClient.generate`` with only its HTTP ``_post`` replaced by a
stand-in that answers like vLLM's ``/v1/completions`` (so TRL's own request building and
logprob parsing are exercised). The loop test runs the real ``agent_runtime.loop.rollout``.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl.generation.vllm_client import VLLMClient

from agent_runtime.backends.base import Backend, GenerationChunk, PromptTooLongError, SamplingParams
from agent_runtime.loop import rollout
from agent_runtime.protocol import TAPO
from agent_runtime.tools import ToolRegistry
from training.trl_vllm import (
    ColocateEngine,
    MicroBatcher,
    ServerEngine,
    TRLVLLMBackend,
    TRLVLLMError,
    infer_finish,
    plan_server_calls,
    server_generate_kwargs,
    translate_request_output,
)

WORDS = ["<unk>", "<eos>", "<|endoftext|>", "hello", "world", "the", "answer", "is", "42", "<search>", "q", "</search>"]
ID = {w: i for i, w in enumerate(WORDS)}
EOS, EOT = ID["<eos>"], ID["<|endoftext|>"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace-split words; decode joins them with spaces; ``<eos>`` is the special EOS."""
    tok = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


TOKENIZER = make_tokenizer()


# ---- stand-ins for vLLM ------------------------------------------------------------------------


@dataclass
class FakeSamplingParams:
    """The fields of ``vllm.SamplingParams`` this backend may set (an unknown one is a TypeError)."""

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    logprobs: int | None = None
    output_kind: Any = None


@dataclass
class Logprob:
    logprob: float
    rank: int = 1


def request_output(
    prompt: Sequence[int],
    ids: Sequence[int],
    finish: str = "stop",
    stop_reason: int | str | None = None,
    logprobs: Sequence[float] | None = None,
) -> SimpleNamespace:
    """A final ``RequestOutput``; each logprob entry also holds a decoy token, as top-k would."""
    entries = None
    if logprobs is not None:
        entries = [{t: Logprob(lp), ID["<unk>"]: Logprob(-50.0, 2)} for t, lp in zip(ids, logprobs)]
    completion = SimpleNamespace(token_ids=list(ids), logprobs=entries, finish_reason=finish, stop_reason=stop_reason)
    return SimpleNamespace(request_id="0", prompt_token_ids=list(prompt), outputs=[completion], finished=True)


def echo(prompt: list[int], params: FakeSamplingParams) -> SimpleNamespace:
    """``hello`` once per prompt token, then EOS: results say which prompt they answer."""
    ids = [ID["hello"]] * len(prompt) + [EOS]
    return request_output(prompt, ids, "stop", None, [-0.1 * (k + 1) for k in range(len(ids))])


class FakeLLM:
    """``vllm.LLM.generate``'s signature; blocking, like the real one; records every call."""

    def __init__(self, respond: Callable[[list[int], FakeSamplingParams], Any] = echo, delay_s: float = 0.0) -> None:
        self.respond = respond
        self.delay_s = delay_s
        self.calls: list[tuple[list[list[int]], list[FakeSamplingParams]]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.threads: set[str] = set()
        self.fail_next: Exception | None = None
        self.block: Callable[[], None] | None = None  # called in the engine's thread: a call that blocks

    def generate(
        self,
        prompts: Any,
        sampling_params: Any = None,
        *,
        use_tqdm: bool = True,
        lora_request: Any = None,
        priority: Any = None,
        tokenization_kwargs: Any = None,
    ) -> list[Any]:
        self.threads.add(threading.current_thread().name)
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        ids = [list(p["prompt_token_ids"]) for p in prompts]
        self.calls.append((ids, list(sampling_params)))
        self.kwargs.append({"use_tqdm": use_tqdm})
        if self.delay_s:
            time.sleep(self.delay_s)  # blocking on purpose: it must not stall the event loop
        if self.block is not None:
            self.block()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return [self.respond(p, sp) for p, sp in zip(ids, sampling_params)]

    @property
    def batch_sizes(self) -> list[int]:
        return [len(prompts) for prompts, _ in self.calls]


def colocate_backend(
    llm: FakeLLM, tokenizer: Any = TOKENIZER, *, context_length: int = 4096, **kwargs: Any
) -> TRLVLLMBackend:
    engine = ColocateEngine(llm, tokenizer, {tokenizer.eos_token_id}, sampling_params_type=FakeSamplingParams)
    return TRLVLLMBackend(engine, tokenizer, context_length=context_length, **kwargs)


async def generate(backend: Backend, prompt: Sequence[int], params: SamplingParams | None = None) -> GenerationChunk:
    chunks = [c async for c in backend.generate(prompt, params or SamplingParams())]
    assert len(chunks) == 1 and chunks[0].finish_reason is not None
    return chunks[0]


def completion_choice(prompt: list[int], ids: list[int], logprobs: list[float] | None) -> dict[str, Any]:
    """One choice of vLLM's non-streamed ``/v1/completions`` with ``return_token_ids`` and
    ``return_tokens_as_token_ids`` (what TRL's client asks for)."""
    choice: dict[str, Any] = {
        "index": 0,
        "text": TOKENIZER.decode(ids, skip_special_tokens=True),
        "prompt_token_ids": prompt,
        "token_ids": ids,
        "finish_reason": "stop",
        "stop_reason": None,
        "logprobs": None,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "text_offset": list(range(len(ids))),
            "token_logprobs": logprobs,
            "tokens": [f"token_id:{t}" for t in ids],
            "top_logprobs": [{f"token_id:{t}": lp} for t, lp in zip(ids, logprobs)],
        }
    return choice


class FakeServer:
    """Answers TRL's ``VLLMClient._post`` like vLLM's ``/v1/completions``; records the bodies."""

    def __init__(
        self, respond: Callable[[list[int], dict[str, Any]], list[int]] | None = None, delay_s: float = 0.0
    ) -> None:
        self.respond = respond or (lambda prompt, body: [ID["hello"]] * len(prompt) + [EOS])
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []
        self.fail_when: Callable[[dict[str, Any]], bool] = lambda body: False
        self.lock = threading.Lock()

    def post(self, url: str, json: dict[str, Any]) -> dict[str, Any]:
        assert url == "http://vllm.test/v1/completions"
        with self.lock:
            self.bodies.append(json)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_when(json):
            raise Exception("Request failed: 500, engine dead")  # noqa: TRY002 - what VLLMClient._post raises
        choices = []
        for prompt in json["prompt"]:
            ids = self.respond(prompt, json)[: json["max_tokens"]]
            logprobs = [-0.1 * (k + 1) for k in range(len(ids))] if json["logprobs"] is not None else None
            choices.append(completion_choice(prompt, ids, logprobs))
        return {"id": "cmpl-1", "object": "text_completion", "choices": choices}


def trl_client(server: FakeServer) -> VLLMClient:
    """TRL's real client minus its constructor (which would contact a server)."""
    client = VLLMClient.__new__(VLLMClient)
    client.base_url = "http://vllm.test"
    client.model = "policy-on-server"
    client._post = server.post  # type: ignore[method-assign]
    server_info = {"model_config": {"max_model_len": 4096, "logprobs_mode": "processed_logprobs"}}
    client.get_server_info = lambda: server_info  # type: ignore[method-assign]
    return client


def server_backend(
    server: FakeServer, tokenizer: Any = TOKENIZER, *, context_length: int = 4096, keep_seeds: bool = False,
    **kwargs: Any
) -> TRLVLLMBackend:
    engine = ServerEngine(trl_client(server), tokenizer, {tokenizer.eos_token_id}, context_length,
                          keep_seeds=keep_seeds)
    return TRLVLLMBackend(engine, tokenizer, context_length=context_length, **kwargs)


# ---- batching ----------------------------------------------------------------------------------


async def test_concurrent_generate_calls_share_one_engine_call():
    llm = FakeLLM()
    backend = colocate_backend(llm)
    prompts = [[ID["the"]] * (i + 1) for i in range(32)]
    chunks = await asyncio.gather(*(generate(backend, p) for p in prompts))
    assert 1 <= len(llm.calls) <= 2 and sum(llm.batch_sizes) == 32
    assert backend.engine_calls == len(llm.calls) and backend.requests_sent == 32
    for prompt, chunk in zip(prompts, chunks):  # each caller gets the answer to its own prompt
        assert chunk.token_ids == [ID["hello"]] * len(prompt) + [EOS]
        assert chunk.finish_reason == "eos"
    assert llm.threads and threading.main_thread().name not in llm.threads
    assert llm.kwargs[0] == {"use_tqdm": False}
    await backend.aclose()


async def test_a_flush_runs_in_a_thread_while_the_next_batch_accumulates():
    """The first engine call blocks until the event loop has run 10 more times and the second batch
    is all waiting: counted, not timed. With the call on the loop's thread it would wait in vain."""
    llm = FakeLLM()
    backend = colocate_backend(llm)
    ticks = 0
    loop_ran = threading.Event()
    waited: list[bool] = []
    llm.block = lambda: waited.append(loop_ran.wait(20.0))  # 20 s only catches a stalled loop

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            if llm.calls:  # the first flush runs
                ticks += 1
                if ticks >= 10 and len(backend._batcher._waiting) == 12:  # the second batch, all waiting
                    loop_ran.set()

    tick_task = asyncio.create_task(ticker())
    first = [asyncio.create_task(generate(backend, [ID["the"]] * (i + 1))) for i in range(4)]
    for _ in range(2000):  # until the first flush runs (20 s at most: only catches a hang)
        if llm.calls:
            break
        await asyncio.sleep(0.01)
    assert len(llm.calls) == 1
    second = [asyncio.create_task(generate(backend, [ID["is"]] * (i + 1))) for i in range(12)]
    await asyncio.gather(*first, *second)
    tick_task.cancel()
    assert waited[0] is True  # the event loop kept running during the blocking engine call
    assert llm.batch_sizes == [4, 12]
    await backend.aclose()


async def test_max_batch_caps_one_flush():
    llm = FakeLLM()
    backend = colocate_backend(llm, max_batch=8)
    await asyncio.gather(*(generate(backend, [ID["the"]] * (i + 1)) for i in range(20)))
    assert llm.batch_sizes == [8, 8, 4]
    await backend.aclose()


async def test_a_request_arriving_alone_is_not_held_back():
    """With nothing else arriving, the window flushes it: it waits neither for a full batch (256, never)
    nor for ``max_delay_s`` (a minute here, so that only the window can send it in time)."""
    llm = FakeLLM()
    backend = colocate_backend(llm, window_s=0.005, max_delay_s=60.0)
    await asyncio.wait_for(generate(backend, [ID["the"]]), 20.0)  # only catches the minute's hold
    assert llm.batch_sizes == [1]
    await backend.aclose()


async def test_cancelled_waiting_request_is_never_sent():
    llm = FakeLLM()
    backend = colocate_backend(llm, window_s=0.1, max_delay_s=0.2)
    kept = asyncio.create_task(generate(backend, [ID["the"]]))
    dropped = asyncio.create_task(generate(backend, [ID["is"], ID["is"]]))
    await asyncio.sleep(0.02)  # both wait in the pending batch
    dropped.cancel()
    chunk = await kept
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert llm.calls[0][0] == [[ID["the"]]]  # the cancelled one never reached vLLM
    assert chunk.token_ids == [ID["hello"], EOS]
    await backend.aclose()


async def test_cancelling_a_request_in_flight_leaves_the_others_and_the_backend_working():
    llm = FakeLLM(delay_s=0.2)
    backend = colocate_backend(llm)
    kept = asyncio.create_task(generate(backend, [ID["the"]]))
    dropped = asyncio.create_task(generate(backend, [ID["is"]]))
    await asyncio.sleep(0.1)
    dropped.cancel()
    assert (await kept).token_ids == [ID["hello"], EOS]
    with pytest.raises(asyncio.CancelledError):
        await dropped
    assert (await generate(backend, [ID["the"]] * 3)).token_ids == [ID["hello"]] * 3 + [EOS]
    await backend.aclose()


async def test_closing_the_stream_before_reading_sends_nothing():
    llm = FakeLLM()
    backend = colocate_backend(llm)
    stream = backend.generate([ID["the"]], SamplingParams())
    await stream.aclose()
    await asyncio.sleep(0.05)
    assert llm.calls == []
    await backend.aclose()


async def test_an_engine_exception_fails_only_its_batch():
    llm = FakeLLM(delay_s=0.1)
    backend = colocate_backend(llm)
    llm.fail_next = RuntimeError("CUDA out of memory")
    results = await asyncio.gather(
        *(generate(backend, [ID["the"]] * (i + 1)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, TRLVLLMError) for r in results)
    assert "batch of 3 requests failed" in str(results[0]) and "CUDA out of memory" in str(results[0])
    assert isinstance(results[0].__cause__, RuntimeError)
    # The backend keeps working: the next batch succeeds.
    chunks = await asyncio.gather(*(generate(backend, [ID["is"]] * (i + 1)) for i in range(2)))
    assert [c.finish_reason for c in chunks] == ["eos", "eos"]
    await backend.aclose()


async def test_a_failed_request_fails_alone_in_its_batch():
    def respond(prompt: list[int], params: FakeSamplingParams) -> SimpleNamespace:
        if len(prompt) == 2:
            return request_output(prompt, [ID["42"]], "error")
        return echo(prompt, params)

    backend = colocate_backend(FakeLLM(respond))
    results = await asyncio.gather(
        *(generate(backend, [ID["the"]] * (i + 1)) for i in range(3)), return_exceptions=True
    )
    assert isinstance(results[1], TRLVLLMError) and "failed request" in str(results[1])
    assert results[0].token_ids == [ID["hello"], EOS] and results[2].finish_reason == "eos"
    await backend.aclose()


def test_the_backend_survives_a_new_event_loop_per_rollout():
    """A rollout_func typically calls asyncio.run once per step: the batcher rebinds."""
    llm = FakeLLM()
    backend = colocate_backend(llm)

    async def step(n: int) -> list[GenerationChunk]:
        return list(await asyncio.gather(*(generate(backend, [ID["the"]] * (i + 1)) for i in range(n))))

    assert len(asyncio.run(step(4))) == 4
    assert len(asyncio.run(step(6))) == 6
    assert sum(llm.batch_sizes) == 10 and len(llm.calls) <= 4
    asyncio.run(backend.aclose())


async def test_batcher_closes_and_fails_waiting_requests():
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: [x * 2 for x in xs], window_s=0.2, max_delay_s=0.5)
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.02)
    await batcher.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.submit(2)


# ---- colocate translation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "finish", "stop_reason", "expected"),
    [
        ([ID["<search>"], ID["q"], ID["</search>"]], "stop", "</search>", ("stop", "</search>")),
        ([ID["42"], EOS], "stop", None, ("eos", None)),
        ([ID["42"], EOT], "stop", EOT, ("eos", None)),  # a generation_config EOS id (stop token id)
        ([ID["42"], ID["42"]], "length", None, ("length", None)),
        ([ID["42"], EOS], "length", None, ("eos", None)),  # EOS as the last allowed token
        ([ID["42"]], "abort", None, ("abort", None)),
    ],
)
def test_request_output_translation(ids, finish, stop_reason, expected):
    prompt = [ID["the"], ID["answer"]]
    logprobs = [-0.25 * (k + 1) for k in range(len(ids))]
    params = SamplingParams(stop=("</search>",))
    chunk = translate_request_output(
        request_output(prompt, ids, finish, stop_reason, logprobs), prompt, params, TOKENIZER, {EOS, EOT}
    )
    assert isinstance(chunk, GenerationChunk)
    assert (chunk.finish_reason, chunk.stop_str) == expected
    assert chunk.token_ids == ids  # the stop string's and the EOS's tokens are kept
    assert chunk.logprobs == logprobs  # the sampled token's entry, not the decoy's
    assert chunk.text == TOKENIZER.decode(ids, skip_special_tokens=True)


def test_request_output_translation_without_logprobs_and_with_a_mismatched_prompt():
    prompt = [ID["the"]]
    out = request_output(prompt, [ID["42"], EOS], logprobs=None)
    chunk = translate_request_output(out, prompt, SamplingParams(logprobs=False), TOKENIZER, {EOS})
    assert isinstance(chunk, GenerationChunk) and chunk.logprobs is None
    error = translate_request_output(out, [ID["is"]], SamplingParams(logprobs=False), TOKENIZER, {EOS})
    assert isinstance(error, TRLVLLMError)
    missing = translate_request_output(out, prompt, SamplingParams(logprobs=True), TOKENIZER, {EOS})
    assert isinstance(missing, TRLVLLMError) and "returned none" in str(missing)


async def test_sampling_params_reach_vllm_per_request():
    llm = FakeLLM()
    backend = colocate_backend(llm, context_length=10)
    greedy = SamplingParams(temperature=0.0, top_p=0.9, seed=7, max_tokens=5, stop=("</search>",))
    sampled = SamplingParams(temperature=0.7, max_tokens=100, logprobs=False)
    await asyncio.gather(generate(backend, [ID["the"]] * 4, greedy), generate(backend, [ID["is"]] * 4, sampled))
    assert len(llm.calls) == 1
    prompts, params = llm.calls[0]
    assert prompts == [[ID["the"]] * 4, [ID["is"]] * 4]
    first, second = params
    assert (first.temperature, first.top_p, first.seed, first.max_tokens) == (0.0, 0.9, 7, 5)  # temperature 0: greedy
    assert first.stop == ["</search>"] and first.include_stop_str_in_output and first.n == 1
    assert first.logprobs == 0  # the sampled token's logprob only
    assert (second.temperature, second.top_p, second.seed, second.logprobs) == (0.7, 1.0, None, None)
    assert second.max_tokens == 6  # capped to the room left in the context window
    with pytest.raises(PromptTooLongError):
        await generate(backend, [ID["the"]] * 10)
    assert len(llm.calls) == 1  # a prompt with no room never reaches (and never fails) a batch
    await backend.aclose()


# ---- server mode -------------------------------------------------------------------------------


def test_server_kwargs_fit_trl_vllm_client_generate():
    params = SamplingParams(temperature=0.0, top_p=0.9, seed=3, max_tokens=7, stop=("</search>", "</code>"))
    kwargs = server_generate_kwargs(params)
    inspect.signature(VLLMClient.generate).bind(None, prompts=[[1]], **kwargs)  # TRL 1.16 accepts them all
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["logprobs"], kwargs["n"]) == (
        0.0,
        0.9,
        7,
        0,
        1,
    )
    assert kwargs["generation_kwargs"]["seed"] == 3
    assert kwargs["generation_kwargs"]["stop"] == ["</search>", "</code>"]
    assert kwargs["generation_kwargs"]["include_stop_str_in_output"] is True
    assert server_generate_kwargs(SamplingParams(logprobs=False), max_tokens=9)["logprobs"] is None
    assert server_generate_kwargs(SamplingParams(logprobs=False), max_tokens=9)["max_tokens"] == 9
    assert "seed" not in server_generate_kwargs(SamplingParams())["generation_kwargs"]


def test_plan_server_calls_groups_by_settings_and_room():
    def req(n_prompt: int, **kw: Any) -> tuple[list[int], SamplingParams]:
        return [1] * n_prompt, SamplingParams(**kw)

    same = [req(3, max_tokens=10), req(3, max_tokens=20), req(3, max_tokens=5)]
    assert plan_server_calls(same, 4096) == [([0, 1, 2], 20)]  # max_tokens may differ within a call
    seeded = [req(3, seed=1), req(3, seed=2), req(3, seed=1)]
    assert sorted(plan_server_calls(seeded, None)) == [([0, 2], 512), ([1], 512)]
    mixed = [req(3, temperature=0.0), req(3, stop=("</search>",)), req(3)]
    assert len(plan_server_calls(mixed, None)) == 3
    # Prompt 0 has room for 20 new tokens only: asking 30 for it would fail the whole call.
    tight = [req(80, max_tokens=10), req(3, max_tokens=30), req(3, max_tokens=15)]
    calls = plan_server_calls(tight, 100)
    assert sorted(calls) == [([0, 2], 15), ([1], 30)]
    for indices, max_tokens in calls:
        assert all(len(tight[i][0]) + max_tokens <= 100 and tight[i][1].max_tokens <= max_tokens for i in indices)


@pytest.mark.parametrize(
    ("ids", "max_tokens", "expected"),
    [
        ([ID["42"], EOS], 10, ("eos", None)),
        ([ID["<search>"], ID["q"], ID["</search>"]], 10, ("stop", "</search>")),
        ([ID["<search>"], ID["q"], ID["</search>"]], 3, ("stop", "</search>")),  # vLLM: stop string beats length
        ([ID["42"], ID["42"]], 2, ("length", None)),
        ([ID["42"]], 10, ("abort", None)),
    ],
)
def test_infer_finish_from_ids(ids, max_tokens, expected):
    params = SamplingParams(max_tokens=max_tokens, stop=("</search>", "</code>"))
    text = TOKENIZER.decode(ids, skip_special_tokens=True)
    assert infer_finish(ids, text, params, {EOS}, 5, 4096) == expected
    if expected[0] == "abort":  # the same ids at the edge of the context window: length
        assert infer_finish(ids, text, params, {EOS}, 4095, 4096) == ("length", None)


async def test_server_mode_batches_through_trl_vllm_client():
    server = FakeServer()
    backend = server_backend(server)
    prompts = [[ID["the"]] * (i + 1) for i in range(16)]
    params = SamplingParams(temperature=0.7, max_tokens=64, stop=("</search>",))
    chunks = await asyncio.gather(*(generate(backend, p, params) for p in prompts))
    assert len(server.bodies) == 1  # one /v1/completions request for all 16 prompts
    body = server.bodies[0]
    assert body["prompt"] == prompts and body["return_token_ids"] is True and body["model"] == "policy-on-server"
    assert (body["temperature"], body["max_tokens"], body["logprobs"], body["n"]) == (0.7, 64, 0, 1)
    assert body["stop"] == ["</search>"] and body["include_stop_str_in_output"] is True and "seed" not in body
    for prompt, chunk in zip(prompts, chunks):
        n = len(prompt) + 1
        assert chunk.token_ids == [ID["hello"]] * len(prompt) + [EOS] and chunk.finish_reason == "eos"
        assert chunk.logprobs == pytest.approx([-0.1 * (k + 1) for k in range(n)])
    await backend.aclose()


async def test_server_mode_groups_per_request_settings():
    def respond(prompt: list[int], body: dict[str, Any]) -> list[int]:
        return [ID["<search>"], ID["q"], ID["</search>"]] if body.get("stop") else [ID["42"]] * 50

    server = FakeServer(respond)
    backend = server_backend(server, keep_seeds=True)
    seeded = [SamplingParams(seed=s, stop=("</search>",)) for s in (1, 2, 3)]
    short = SamplingParams(max_tokens=4)
    longer = SamplingParams(max_tokens=9)
    results = await asyncio.gather(
        *(generate(backend, [ID["the"]], p) for p in seeded),
        generate(backend, [ID["is"]], short),
        generate(backend, [ID["is"], ID["is"]], longer),
    )
    # One call per seed (a request body has one seed) and one for both unseeded requests.
    assert len(server.bodies) == 4
    assert sorted(b.get("seed", 0) for b in server.bodies) == [0, 1, 2, 3]
    unseeded = next(b for b in server.bodies if "seed" not in b)
    assert unseeded["max_tokens"] == 9 and len(unseeded["prompt"]) == 2
    assert all((r.finish_reason, r.stop_str) == ("stop", "</search>") for r in results[:3])
    assert results[3].token_ids == [ID["42"]] * 4 and results[3].finish_reason == "length"  # cut to its own max
    assert len(results[3].logprobs) == 4
    assert results[4].token_ids == [ID["42"]] * 9 and results[4].finish_reason == "length"
    await backend.aclose()


async def test_server_mode_drops_per_trajectory_seeds_so_requests_share_a_call():
    server = FakeServer()
    backend = server_backend(server)
    results = await asyncio.gather(*(generate(backend, [ID["the"]], SamplingParams(seed=s)) for s in range(8)))
    assert len(server.bodies) == 1 and "seed" not in server.bodies[0] and len(server.bodies[0]["prompt"]) == 8
    assert all(r.finish_reason == "eos" for r in results)
    await backend.aclose()


async def test_server_mode_a_failed_call_fails_only_its_group():
    server = FakeServer()
    server.fail_when = lambda body: body.get("seed") == 2
    backend = server_backend(server, keep_seeds=True)
    results = await asyncio.gather(
        *(generate(backend, [ID["the"]], SamplingParams(seed=s)) for s in (1, 2, 3)), return_exceptions=True
    )
    assert isinstance(results[1], TRLVLLMError) and "engine dead" in str(results[1])
    assert results[0].finish_reason == "eos" and results[2].finish_reason == "eos"
    await backend.aclose()


# ---- from_trainer and sleep mode ---------------------------------------------------------------


def fake_trainer(mode: str, **generation: Any) -> SimpleNamespace:
    llm = FakeLLM()
    llm.llm_engine = SimpleNamespace(
        model_config=SimpleNamespace(max_model_len=1024, logprobs_mode="processed_logprobs")
    )
    llm.events = []
    llm.wake_up = lambda tags: llm.events.append(("wake_up", tuple(tags)))
    llm.sleep = lambda level: llm.events.append(("sleep", level))
    vllm_generation = SimpleNamespace(mode=mode, llm=llm, tensor_parallel_size=1, enable_sleep_mode=False, **generation)
    vllm_generation.sync_weights = lambda: llm.events.append(("sync_weights",))
    model = SimpleNamespace(name_or_path="org/policy", config=SimpleNamespace(max_position_embeddings=2048))
    return SimpleNamespace(
        use_vllm=True,
        vllm_mode=mode,
        vllm_generation=vllm_generation,
        processing_class=TOKENIZER,
        _tokenizer=TOKENIZER,
        eos_token_ids=[EOS, EOT],
        model=model,
        args=SimpleNamespace(vllm_max_model_length=None),
    )


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=FakeSamplingParams))


async def test_from_trainer_colocate(fake_vllm):
    trainer = fake_trainer("colocate")
    backend = TRLVLLMBackend.from_trainer(trainer)
    assert isinstance(backend, Backend)
    assert (
        backend.info.context_length == 1024 and backend.info.model == "org/policy" and backend.info.name == "trl-vllm"
    )
    assert backend.info.extra == {"mode": "colocate", "logprobs_mode": "processed_logprobs"}
    chunk = await generate(backend, [ID["the"]])
    assert trainer.vllm_generation.llm.calls and chunk.finish_reason == "eos"
    await backend.aclose()


async def test_from_trainer_server():
    trainer = fake_trainer("server", vllm_client=trl_client(FakeServer()))
    backend = TRLVLLMBackend.from_trainer(trainer)
    assert backend.info.context_length == 4096 and backend.info.model == "policy-on-server"
    assert isinstance(backend.engine, ServerEngine)
    assert (await generate(backend, [ID["the"]])).finish_reason == "eos"
    await backend.aclose()
    # No server info: TRL's vllm_max_model_length, then the model's max_position_embeddings.
    client = trl_client(FakeServer())
    client.get_server_info = lambda: (_ for _ in ()).throw(RuntimeError("no dev mode"))
    trainer = fake_trainer("server", vllm_client=client)
    assert TRLVLLMBackend.from_trainer(trainer).info.context_length == 2048
    trainer.args.vllm_max_model_length = 512
    assert TRLVLLMBackend.from_trainer(trainer).info.context_length == 512


def test_from_trainer_refuses_what_it_cannot_serve(fake_vllm):
    no_vllm = fake_trainer("colocate")
    no_vllm.use_vllm = False
    with pytest.raises(TRLVLLMError, match="use_vllm"):
        TRLVLLMBackend.from_trainer(no_vllm)
    tensor_parallel = fake_trainer("colocate")
    tensor_parallel.vllm_generation.tensor_parallel_size = 2
    with pytest.raises(TRLVLLMError, match="tensor_parallel"):
        TRLVLLMBackend.from_trainer(tensor_parallel)


def test_a_rank_without_trl_client_gets_its_own_client_of_the_same_server(fake_vllm, monkeypatch):
    import trl.generation.vllm_client as vllm_client_module

    made: list[dict] = []

    class RankClient:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def get_server_info(self) -> dict:
            return {"model_config": {"max_model_len": 512, "logprobs_mode": "processed_logprobs"}}

    monkeypatch.setattr(vllm_client_module, "VLLMClient", RankClient)
    trainer = fake_trainer("server", server_base_url=None, server_host="10.0.0.5", server_port=8001,
                           server_timeout=30.0)
    backend = TRLVLLMBackend.from_trainer(trainer)  # a non-main rank: TRL made no client
    assert made == [{"base_url": "http://10.0.0.5:8001", "connection_timeout": 30.0}]
    assert backend.info.context_length == 512


async def test_sleep_mode_wakes_for_the_rollout_and_sleeps_after(fake_vllm):
    trainer = fake_trainer("colocate")
    generation = trainer.vllm_generation
    generation.enable_sleep_mode = True
    generation._llm_weights_sleeping = True  # e.g. a second rollout in the same step
    backend = TRLVLLMBackend.from_trainer(trainer)
    with pytest.raises(TRLVLLMError, match="awake"):
        await generate(backend, [ID["the"]])
    with backend.awake():
        assert (await generate(backend, [ID["the"]])).finish_reason == "eos"
    assert generation.llm.events == [("sync_weights",), ("wake_up", ("kv_cache",)), ("sleep", 2)]
    assert generation._llm_weights_sleeping is True  # TRL re-pushes the weights before its next generation
    await backend.aclose()


# ---- the real loop through this backend --------------------------------------------------------


class ScriptedTurns:
    """Replays fixed model turns per trajectory; trajectories are told apart by their prompt."""

    def __init__(self, tokenizer: Any, prompts: list[list[int]], turns: list[str]) -> None:
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.turn_ids = [tokenizer.encode(t, add_special_tokens=False) for t in turns]
        self.turn_ids[-1].append(tokenizer.eos_token_id)  # the answer turn ends at end-of-turn
        self.seen: dict[int, list[list[int]]] = {i: [] for i in range(len(prompts))}

    def logprobs(self, traj: int, turn: int) -> list[float]:
        return [-(traj + 1) / 100 - turn / 10 - k / 1000 for k in range(len(self.turn_ids[turn]))]

    def next_turn(self, prompt: list[int]) -> tuple[int, int]:
        traj = next(i for i, p in enumerate(self.prompts) if prompt[: len(p)] == p)
        self.seen[traj].append(prompt)
        return traj, len(self.seen[traj]) - 1

    def request_output(self, prompt: list[int], params: Any) -> SimpleNamespace:
        traj, turn = self.next_turn(prompt)
        ids = self.turn_ids[turn]
        stop = "</search>" if turn == 0 else None
        return request_output(prompt, ids, "stop", stop, self.logprobs(traj, turn))

    def completion(self, prompt: list[int], body: dict[str, Any]) -> list[int]:
        return self.turn_ids[self.next_turn(prompt)[1]]


@pytest.mark.parametrize("mode", ["colocate", "server"])
async def test_rollout_through_the_backend_keeps_ids_mask_and_logprobs_aligned(tiny_tokenizer, mode):
    tok = tiny_tokenizer
    questions = [f"Question number {i}: what is the capital of France?" for i in range(12)]
    prompts = [tok.encode(q, add_special_tokens=False) for q in questions]
    script = ScriptedTurns(
        tok,
        prompts,
        [
            "<think>I should look it up.</think>\n<search>capital of France</search>",
            "<think>Found it.</think>\n<answer>Paris</answer>",
        ],
    )
    if mode == "colocate":
        llm = FakeLLM(script.request_output)
        backend = colocate_backend(llm, tok, window_s=0.02, max_delay_s=0.2)
    else:
        server = FakeServer(script.completion)
        backend = server_backend(server, tok, window_s=0.02, max_delay_s=0.2)
        # Give the server the logprobs the script holds (the fake's default is positional).
        server_post = server.post

        def post(url: str, json: dict[str, Any]) -> dict[str, Any]:
            answer = server_post(url, json)
            for choice in answer["choices"]:
                traj = next(i for i, p in enumerate(prompts) if choice["prompt_token_ids"][: len(p)] == p)
                turn = len(script.seen[traj]) - 1
                values = script.logprobs(traj, turn)
                choice["logprobs"]["token_logprobs"] = values
                choice["logprobs"]["top_logprobs"] = [{f"token_id:{t}": v} for t, v in zip(choice["token_ids"], values)]
            return answer

        backend.engine.client._post = post

    async def search(query: str) -> str:
        return "Paris is the capital of France."

    tools = ToolRegistry()
    tools.add_function("search", search)
    trajectories = await rollout(prompts, backend, tools, sampling=SamplingParams(temperature=1.0))

    injected = tok.encode(TAPO.format_observation("Paris is the capital of France."), add_special_tokens=False)
    first, second = script.turn_ids
    for i, traj in enumerate(trajectories):
        assert traj.prompt_ids == prompts[i]
        assert traj.completion_ids == first + injected + second
        assert traj.mask == [1] * len(first) + [0] * len(injected) + [1] * len(second)
        assert traj.logprobs == pytest.approx(script.logprobs(i, 0) + [None] * len(injected) + script.logprobs(i, 1))
        assert traj.completion_ids[-1] == tok.eos_token_id
        assert (traj.answer, traj.agent_finish_reason, traj.tool_call_counts) == ("Paris", "answer", {"search": 1})
        # The second turn continued from the exact ids: no re-tokenization.
        assert script.seen[i][1] == prompts[i] + first + injected
    # 12 trajectories x 2 turns: batched into a few engine calls, not 24.
    assert backend.requests_sent == 24
    assert backend.engine_calls <= 4
    await backend.aclose()
