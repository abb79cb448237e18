"""A backend that replays fixed model turns: for unit tests of the loop's bookkeeping only.

Behaviour users rely on is tested on the trained tiny model; this one makes the edge cases
(malformed tags, budgets, slow tools) reproducible. It streams token by token and honours stop
strings, EOS and max_tokens the way every real engine must. A call constrained to
``allowed_token_ids`` follows the next scripted turn while its next token is allowed: the turn is
then written by constrained calls and the tokens the caller forces in between (its text is matched
against what the prompt has grown by), and the next free call streams what is left of it. Where
the turn's next token is not allowed, the smallest allowed id whose text occurs in the turn is
taken (a "}" that ends a value, say), else the smallest allowed id, using no scripted turn.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Sequence

from agent_runtime.backends.base import BackendInfo, GenerationChunk, SamplingParams
from agent_runtime.detok import decode

EOS = "<EOS>"  # in a script: end the turn with the tokenizer's end-of-turn token


class ScriptedBackend:
    def __init__(self, tokenizer: Any, turns: Sequence[str], *, context_length: int = 8192, delay_s: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.info = BackendInfo(name="scripted", model="scripted", context_length=context_length)
        self._turns = list(turns)
        self.delay_s = delay_s
        self.prompts: list[list[int]] = []
        self.closed_early = 0
        self._guide: tuple[int, str, bool] | None = None  # a turn constrained calls follow: (start, text, EOS)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        self.prompts.append(list(prompt_ids))
        if params.allowed_token_ids is not None:
            if self._guide is None and self._turns:
                script = self._turns[0]
                upcoming = self._ids(script)
                if upcoming and upcoming[0] in params.allowed_token_ids:
                    self._turns.pop(0)
                    self._guide = (len(prompt_ids), script.removesuffix(EOS), script.endswith(EOS))
            rest = self._ids(self._rest(prompt_ids)) if self._guide is not None else []
            if rest and rest[0] in params.allowed_token_ids:
                token = rest[0]
            else:
                text = self._guide[1] if self._guide is not None else ""
                near = [t for t in params.allowed_token_ids if decode(self.tokenizer, [t]) in text]
                token = min(near or params.allowed_token_ids)
            yield GenerationChunk([token], decode(self.tokenizer, [token]), [-0.5], "length", None)
            return
        if self._guide is not None:
            ids = self._ids(self._rest(prompt_ids) + (EOS if self._guide[2] else ""))
            self._guide = None
        else:
            ids = self._ids(self._turns.pop(0))
        finished = False
        try:
            for n, token in enumerate(ids, 1):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                text = decode(self.tokenizer, ids[:n])
                finish = None
                stop = next((s for s in params.stop if s in text), None)
                if token == self.tokenizer.eos_token_id:
                    finish = "eos"
                elif stop is not None:
                    finish = "stop"
                elif n >= params.max_tokens:
                    finish = "length"
                elif n == len(ids):
                    finish = "abort"  # the script ran out: a test bug, made visible
                yield GenerationChunk([token], decode(self.tokenizer, [token]), [-0.5], finish, stop)
                if finish:
                    finished = True
                    return
        finally:
            if not finished:
                self.closed_early += 1

    def _rest(self, prompt_ids: Sequence[int]) -> str:
        """What the followed turn has still to write, given what the prompt has grown by since."""
        start, text, _ = self._guide
        written = decode(self.tokenizer, list(prompt_ids[start:]))
        return text[len(written):] if text.startswith(written) else ""

    def _ids(self, script: str) -> list[int]:
        ids = self.tokenizer.encode(script.removesuffix(EOS), add_special_tokens=False)
        if script.endswith(EOS):
            ids.append(self.tokenizer.eos_token_id)
        return ids

    async def aclose(self) -> None:
        pass
