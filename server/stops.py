"""Cutting generated text at a client's stop string, as OpenAI and vLLM return it."""

from __future__ import annotations


class StopTrimmer:
    """Text as vLLM sends it: cut at the stop string, which is kept only when asked.

    Token ids are never cut. Text that could still turn out to be a stop string is held back.
    """

    def __init__(self, stops: tuple[str, ...], include_stop: bool) -> None:
        self.stops, self.include_stop = stops, include_stop
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""

    def feed(self, text: str, stop_str: str | None) -> str:
        self.pending += text
        if stop_str is not None:
            cut = self.pending.find(stop_str)
            if cut >= 0:
                out = self.pending[: cut + (len(stop_str) if self.include_stop else 0)]
                self.pending = ""
                return out
        if self.include_stop or not self.stops:
            out, self.pending = self.pending, ""
            return out
        keep = len(self.pending) - self.hold
        out, self.pending = (self.pending[:keep], self.pending[keep:]) if keep > 0 else ("", self.pending)
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
