"""A backend that replays fixed model turns: for unit tests of the loop's bookkeeping only.

Behaviour users rely on is tested on the trained tiny model; this one makes the edge cases
(malformed tags, budgets, slow tools) reproducible. It streams token by token and honours stop
strings, EOS and max_tokens the way every real engine must; a call constrained to
``allowed_token_ids`` gets the smallest of them and uses no scripted turn.
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

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> AsyncIterator[GenerationChunk]:
        self.prompts.append(list(prompt_ids))
        if params.allowed_token_ids is not None:  # a constrained choice: the smallest id, no script used
            token = min(params.allowed_token_ids)
            yield GenerationChunk([token], decode(self.tokenizer, [token]), [-0.5], "length", None)
            return
        script = self._turns.pop(0)
        ids = self.tokenizer.encode(script.removesuffix(EOS), add_special_tokens=False)
        if script.endswith(EOS):
            ids.append(self.tokenizer.eos_token_id)
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

    async def aclose(self) -> None:
        pass
