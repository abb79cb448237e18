"""A forced function call's arguments, generated under the function's JSON schema (``llguidance``).

When ``tool_choice`` demands a call, its arguments must be valid, not hoped for: after the call's
head, each token is sampled only among those that keep the text a prefix of ``<schema'd JSON object>``
followed by the call's closing; tokens the grammar leaves no choice about are written without asking
the model. Each sampled token is one engine call with ``SamplingParams.allowed_token_ids``, so every
engine (transformers, llama.cpp, vLLM, a remote server) enforces it the same way.

A valid prefix is not yet a call: a model can stay inside a string for ever. In the last
:data:`LANDING_TOKENS` of the budget, where some allowed tokens close something (a quote, a brace, a
bracket, and open nothing new), only those are offered, so that the call ends within the budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import llguidance
import llguidance.hf
import numpy as np

from agent_runtime.backends.base import Backend, SamplingParams

log = logging.getLogger(__name__)

LANDING_TOKENS = 24
_CLOSING = ('"', "}", "]")
_OPENING = set(",:{[")


@dataclass(frozen=True)
class _Vocabulary:
    ll: llguidance.LLTokenizer
    closers: frozenset[int]  # tokens that end with a quote, a closing brace or bracket, and open nothing


_VOCABULARIES: list[tuple[Any, _Vocabulary]] = []  # (HF tokenizer, what the constraint needs), newest last


def _vocabulary(tokenizer: Any) -> _Vocabulary:
    for known, vocabulary in _VOCABULARIES:
        if known is tokenizer:
            return vocabulary
    texts = [t.strip() for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
    closers = frozenset(i for i, t in enumerate(texts) if t.endswith(_CLOSING) and not _OPENING & set(t))
    vocabulary = _Vocabulary(llguidance.hf.from_tokenizer(tokenizer), closers)
    _VOCABULARIES.append((tokenizer, vocabulary))
    del _VOCABULARIES[:-4]  # a process serves one or two tokenizers
    return vocabulary


def arguments_matcher(tokenizer: Any, schema: Mapping[str, Any], closing: str) -> llguidance.LLMatcher | None:
    """A matcher of ``<optional space><JSON object valid under schema><closing>``; None (and a
    warning) for a schema llguidance cannot compile, whose call is then left unconstrained."""
    # The separators json.dumps writes, which chat templates render calls with and models copy.
    guided = {**schema, "x-guidance": {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}}
    lark = f"start: \" \"? arguments {json.dumps(closing)}\narguments: %json {json.dumps(guided)}"
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        log.warning("the arguments of a forced call are not constrained: llguidance cannot compile their schema (%s)",
                    "; ".join(messages))
        return None
    matcher = llguidance.LLMatcher(_vocabulary(tokenizer).ll, grammar)
    if matcher.is_error():
        log.warning("the arguments of a forced call are not constrained: %s", matcher.get_error())
        return None
    return matcher


def _allowed(matcher: llguidance.LLMatcher) -> frozenset[int]:
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
    return frozenset(int(i) for i in np.flatnonzero(bits))


async def constrained_tokens(backend: Backend, ids: list[int], matcher: llguidance.LLMatcher,
                             params: SamplingParams, max_tokens: int) -> tuple[list[int], list[float | None]]:
    """Tokens after ``ids`` until the grammar is complete (or ``max_tokens``): forced where the grammar
    allows one continuation, else sampled among the allowed tokens. Logprobs: None where forced."""
    closers = _vocabulary(backend.tokenizer).closers
    out: list[int] = []
    logprobs: list[float | None] = []
    while not matcher.is_stopped() and len(out) < max_tokens:
        forced = matcher.compute_ff_tokens()
        if forced:
            forced = forced[: max_tokens - len(out)]
            if not matcher.consume_tokens(forced):
                break
            out += forced
            logprobs += [None] * len(forced)
            continue
        allowed = _allowed(matcher)
        if not allowed:
            break
        if max_tokens - len(out) <= LANDING_TOKENS:
            allowed = (allowed & closers) or allowed
        token, logprob = await sample_among(backend, ids + out, params, allowed)
        out.append(token)
        logprobs.append(logprob)
        if not matcher.consume_token(token):  # an engine that ignored the constraint: stop constraining
            log.warning("the engine sampled token %d outside the allowed set; the call is left as it is", token)
            break
    return out, logprobs


async def sample_among(backend: Backend, ids: list[int], params: SamplingParams,
                       allowed: frozenset[int]) -> tuple[int, float | None]:
    """One token after ``ids``, sampled only among ``allowed``, and its logprob."""
    stream = backend.generate(ids, replace(params, max_tokens=1, stop=(), allowed_token_ids=allowed))
    try:
        chunk = await anext(c async for c in stream if c.token_ids)
    finally:
        await stream.aclose()
    return chunk.token_ids[0], (chunk.logprobs or [None])[0]
