"""A backend on an OpenAI-compatible ``/v1/completions`` server that returns token ids (vLLM).

Token ids go in and come back out: the prompt is sent as ids and the ids the server sampled are
read from each streamed chunk, never re-tokenized from text. A server that does not send them,
or sends a chunk's text with an empty ``token_ids`` list, is refused (:class:`RemoteBackendError`).

Checked against vLLM's OpenAI server source, vllm-project/vllm main as stored in 2026
(``vllm/entrypoints/openai/completion/protocol.py`` and ``serving.py``; the token-id fields came
with PR #22587, first released in v0.10.2, so vLLM >= 0.10.2 is required). Request fields:

- ``prompt``: a list of token ids (the server neither tokenizes it nor adds BOS).
- ``return_token_ids: true``: every streamed choice carries ``token_ids`` (the ids new in that
  chunk, EOS included), the first one also ``prompt_token_ids``.
- ``include_stop_str_in_output: true``: our contract keeps the stop string's tokens and text.
- ``skip_special_tokens: true`` (vLLM's default, sent to be explicit). It only shapes the
  server's text, which is where vLLM matches stop strings; the transformers backend matches them
  on text decoded without special tokens too. Token ids, EOS included, come back either way.
- ``logprobs: 0``: the sampled token's logprob only, in ``choices[0].logprobs.token_logprobs``.
- ``top_k: -1``, ``min_p: 0``, ``repetition_penalty: 1``, ``presence_penalty: 0``,
  ``frequency_penalty: 0``: vLLM fills any sampling field a request leaves out from the model's
  ``generation_config.json`` (``--generation-config auto``, its default; Qwen ships ``top_k=20``).
  Sent so that the policy sampled is exactly the one in :class:`SamplingParams`.

The response is server-sent events, ``data: {json}`` ending with ``data: [DONE]``. Each event is
a ``CompletionStreamResponse`` whose ``choices[0]`` has ``text``, ``token_ids``, ``logprobs``,
``finish_reason`` and ``stop_reason`` (SGLang: ``matched_stop``); a failure mid-stream arrives as
an event holding an error object. Finish reasons are mapped by :mod:`finish`.

Logprobs follow the server's ``--logprobs-mode``. vLLM's default, ``raw_logprobs``, is
``log_softmax(logits)``: our contract (``log_softmax(logits / T)`` before top-p) only when
``T == 1`` or greedy. ``--logprobs-mode processed_logprobs`` matches it whenever ``top_p == 1``
(the RL setting; TRL sets the same mode for its vLLM engine).

``text`` is decoded here from the token ids (:class:`IncrementalDetokenizer`), not taken from the
server, so that it is exactly ``decode(ids)`` as with every other backend: vLLM cuts its text right
after a stop string even when the stop string ends inside a token.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Collection, Iterable, Sequence

import httpx

from agent_runtime.backends.base import BackendInfo, GenerationChunk, SamplingParams
from agent_runtime.backends.finish import eos_ids_of, generation_config_eos_ids, map_finish_reason
from agent_runtime.detok import IncrementalDetokenizer, decode

log = logging.getLogger(__name__)

# Used when neither the caller nor the tokenizer gives a usable context length. A guess (common
# for current open models) only used to cap max_tokens: a too-large value makes the server
# answer 400 ("maximum context length"), surfaced as RemoteBackendError. Pass the server's
# --max-model-len as context_length to avoid that.
DEFAULT_CONTEXT_LENGTH = 32768
# transformers reports int(1e30) when a tokenizer has no known maximum length.
_MAX_PLAUSIBLE_CONTEXT = 10_000_000

NO_TOKEN_IDS = (
    "the server at {url} streamed a completion without token ids. This backend needs the server "
    "to return the sampled token ids (vLLM >= 0.10.2 with `return_token_ids`); it never "
    "re-tokenizes text."
)
TEXT_WITHOUT_TOKEN_IDS = (
    "the server at {url} streamed completion text {text!r:.80} with an empty `token_ids` list "
    "(choices[0].token_ids). The engine must return the id of every token it sampled (vLLM >= 0.10.2 "
    "with `return_token_ids`); this backend never re-tokenizes text, and dropping the text would lose "
    "those tokens from the trajectory."
)


class RemoteBackendError(RuntimeError):
    """The server failed, refused the request, or cannot give what this backend needs."""


class RemoteBackend:
    """Stream completions from an OpenAI-compatible server that returns token ids."""

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 600,
        context_length: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        eos_token_ids: Iterable[int] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.url = completions_url(base_url)
        self.eos_ids = eos_ids_of(tokenizer, eos_token_ids)
        self.info = BackendInfo(
            name="remote",
            model=model,
            context_length=context_length or default_context_length(tokenizer),
            extra={"url": self.url},
        )
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = http_client is None
        # One connection per concurrent trajectory: the server batches them, so a client-side cap
        # (httpx defaults to 100) would only queue rollouts behind each other.
        # ``timeout`` bounds each wait for data (a long prefill under load included); connecting
        # to a host that does not answer fails sooner.
        self._client = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=128),
        )
        self._closed = False

    @classmethod
    def from_tokenizer_path(
        cls, base_url: str, tokenizer_path: str, model: str | None = None, **kwargs: Any
    ) -> "RemoteBackend":
        """Load the tokenizer (and the model's extra EOS ids, if a generation config is there)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        kwargs.setdefault("eos_token_ids", generation_config_eos_ids(tokenizer_path))
        return cls(base_url, tokenizer, model or str(tokenizer_path), **kwargs)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        if self._closed:
            raise RuntimeError("backend is closed")
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        prompt = [int(t) for t in prompt_ids]
        body = completion_request_body(self.info.model, prompt, params)
        stream = _CompletionStream(self.url, self.tokenizer, self.eos_ids, prompt, params)
        final: GenerationChunk | None = None
        try:
            # Leaving this block before the response is read to its end (the caller closed the
            # generator, or its task was cancelled) closes the connection: the server sees the
            # disconnect and aborts the request.
            async with self._client.stream("POST", self.url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    raw = await response.aread()
                    raise RemoteBackendError(
                        f"{self.url} answered HTTP {response.status_code}: {error_message(raw)}"
                    )
                async for payload in sse_data(response):
                    chunk = stream.feed(_parse_event(payload, self.url))
                    if chunk is None:
                        continue
                    if chunk.finish_reason is None:
                        yield chunk
                    else:
                        # Read on to [DONE] before handing it out (the server sends it at once), so
                        # the connection goes back to the pool instead of being cut.
                        final = chunk
        except httpx.ConnectError as exc:
            raise RemoteBackendError(f"cannot reach {self.url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise RemoteBackendError(f"{self.url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:  # e.g. the server dropped the connection mid-stream
            raise RemoteBackendError(f"the connection to {self.url} failed: {type(exc).__name__}: {exc}") from exc
        if final is None:
            raise RemoteBackendError(f"the stream from {self.url} ended before the completion finished")
        yield final

    async def aclose(self) -> None:
        self._closed = True
        if self._owns_client:
            await self._client.aclose()


# ---- pure helpers ----------------------------------------------------------------------------


def served_model(base_url: str, timeout: float = 10.0) -> tuple[str | None, int | None]:
    """The first model a server lists at ``/v1/models`` (the name requests must use) and its
    ``max_model_len`` (vLLM and ours list it), or ``(None, None)``."""
    url = completions_url(base_url).rsplit("/", 1)[0] + "/models"
    try:
        response = httpx.get(url, timeout=timeout)
        response.raise_for_status()
        data = response.json().get("data") or []
        if not data:
            return None, None
        length = data[0].get("max_model_len")
        return str(data[0]["id"]), int(length) if isinstance(length, int) else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("could not list models at %s: %s", url, exc)
        return None, None


def completions_url(base_url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` (trailing slash or not) -> the completions URL."""
    url = base_url.rstrip("/")
    url = url.removesuffix("/v1")
    return f"{url}/v1/completions"


def default_context_length(tokenizer: Any) -> int:
    """The tokenizer's ``model_max_length`` when it is a real limit, else :data:`DEFAULT_CONTEXT_LENGTH`."""
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value <= _MAX_PLAUSIBLE_CONTEXT:
        return value
    return DEFAULT_CONTEXT_LENGTH


def completion_request_body(model: str, prompt_ids: list[int], params: SamplingParams) -> dict[str, Any]:
    """The JSON body of one streamed ``/v1/completions`` request (field names: module docstring)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": -1,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": list(params.stop),
        "stream": True,
        "return_token_ids": True,
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    if params.logprobs:
        body["logprobs"] = 0
    if params.allowed_token_ids is not None:  # vLLM's extension, which our /v1/completions speaks too
        body["allowed_token_ids"] = sorted(params.allowed_token_ids)
    return body


def error_message(raw: bytes) -> str:
    """The message of an error body: OpenAI's ``{"error": {"message"}}``, vLLM's older flat
    ``{"object": "error", "message"}``, FastAPI's ``{"detail"}``, else the text itself."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:2000] or "(empty body)"
    return _message_of(data) or text[:2000]


def _message_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if data.get("message"):
        return str(data["message"])
    if data.get("detail"):
        return str(data["detail"])
    return None


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event before ``[DONE]`` (other fields are ignored).

    The body is read to its end even after ``[DONE]`` (servers end it right there): a response
    left unread is closed by httpx instead of going back to the pool for the next turn.
    """
    lines: list[str] = []
    done = False
    async for line in response.aiter_lines():
        if done:
            continue
        if line.startswith("data:"):
            lines.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if line or not lines:
            continue  # a comment, another field, or a blank line between events
        payload, lines = "\n".join(lines), []
        if payload.strip() == "[DONE]":
            done = True
            continue
        yield payload
    if lines and not done and "\n".join(lines).strip() != "[DONE]":
        yield "\n".join(lines)  # the last event had no blank line after it


def _parse_event(payload: str, url: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise RemoteBackendError(f"{url} sent an event that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(event, dict):
        raise RemoteBackendError(f"{url} sent an event that is not a JSON object: {payload[:200]!r}")
    if "error" in event or event.get("object") == "error":
        raise RemoteBackendError(f"{url} failed mid-stream: {_message_of(event) or payload[:2000]}")
    return event


class _CompletionStream:
    """Turns the events of one streamed completion into :class:`GenerationChunk` s."""

    def __init__(
        self, url: str, tokenizer: Any, eos_ids: Collection[int], prompt: list[int], params: SamplingParams
    ) -> None:
        self.url = url
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.prompt = prompt
        self.params = params
        self.detok = IncrementalDetokenizer(tokenizer)
        self.last_token: int | None = None
        self.finished = False

    def feed(self, event: dict[str, Any]) -> GenerationChunk | None:
        choices = event.get("choices") or []
        if not choices or self.finished:
            return None  # a usage-only event, or anything after the finish
        choice = choices[0]
        echoed = choice.get("prompt_token_ids")
        if echoed is not None and list(echoed) != self.prompt:
            raise RemoteBackendError(f"{self.url} generated from a different prompt than the ids sent")
        if choice.get("token_ids") is None:
            raise RemoteBackendError(NO_TOKEN_IDS.format(url=self.url))
        ids = [int(t) for t in choice["token_ids"]]
        if not ids and choice.get("text"):
            raise RemoteBackendError(TEXT_WITHOUT_TOKEN_IDS.format(url=self.url, text=choice["text"]))
        logprobs = self._logprobs(choice.get("logprobs"), len(ids)) if self.params.logprobs else None
        engine_finish = choice.get("finish_reason")
        if engine_finish == "error":
            raise RemoteBackendError(f"{self.url} reported an engine error for this request")
        stop_reason = choice["stop_reason"] if "stop_reason" in choice else choice.get("matched_stop")
        last = ids[-1] if ids else self.last_token
        finish, stop_str = map_finish_reason(engine_finish, stop_reason, last, self.eos_ids)
        if finish == "eos" and last not in self.eos_ids and last != stop_reason:
            finish, stop_str = self._eos_not_sent(ids, stop_reason)
        if not ids and finish is None:
            return None
        text = self.detok.add(ids)
        if ids:
            self.last_token = ids[-1]
        if finish is not None:
            text += self.detok.flush()
            self.finished = True
        return GenerationChunk(ids, text, logprobs, finish, stop_str)

    def _logprobs(self, data: Any, count: int) -> list[float]:
        values = data.get("token_logprobs") if isinstance(data, dict) else None
        if values is None and count == 0:
            return []
        if values is None or len(values) != count or any(v is None for v in values):
            raise RemoteBackendError(
                f"{self.url} did not send one logprob per sampled token "
                f"({count} tokens, logprobs {values!r:.200})"
            )
        return [float(v) for v in values]

    def _eos_not_sent(self, ids: list[int], stop_reason: int | str | None) -> tuple[str, str | None]:
        """A ``stop`` finish whose last id is no EOS: the server left the EOS id out (vLLM never
        does), or a server without ``stop_reason`` matched a stop string. Appends the EOS id only
        when it is known for sure, and never when logprobs are wanted (its logprob is unknown)."""
        if stop_reason is None:
            tail = self._recent_text(ids)
            for stop in self.params.stop:
                if stop in tail:
                    return "stop", stop
        eos = stop_reason if isinstance(stop_reason, int) else getattr(self.tokenizer, "eos_token_id", None)
        if eos is None or self.params.logprobs:
            raise RemoteBackendError(
                f"{self.url} finished on an end-of-sequence token without sending its id; "
                "the trajectory would lack it"
            )
        log.warning("%s left the EOS id out of a stop finish; appending %d", self.url, eos)
        ids.append(int(eos))
        return "eos", None

    def _recent_text(self, ids: list[int]) -> str:
        """Recent text including ``ids`` (not yet fed to the detokenizer), to look for stop strings."""
        window = max((len(s) for s in self.params.stop), default=0) + 64
        return decode(self.tokenizer, self.detok.ids[-window:] + ids)
