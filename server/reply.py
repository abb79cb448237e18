"""Loop events to the parts of an assistant reply: reasoning, content and tool steps.

Pure: the streaming and non-streaming endpoints both feed events here. Content is the answer
(or, from a model that writes no tags, its plain reply); reasoning is the think text plus a
readable trace of each tool call and its output; whitespace between blocks is dropped. Each piece
of reasoning says what it is (``reasoning_part``), so that a client which shows tool steps from
``tool_step`` can leave their trace out of the thinking it shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent_runtime.events import Done, Event, Injected, Token, ToolCall, ToolResult
from agent_runtime.parser import Delta, ParseEvent, Segment, SegmentKind, StreamParser
from agent_runtime.protocol import Block, BlockRole, Protocol
from agent_runtime.tool_steps import ToolStep, step_id

TRACE_OUTPUT_CHARS = 2000  # of a tool's output, copied into the reasoning trace
# What a piece of reasoning is: the model's thinking, its tool call, the tool's output (or a model's
# own observation block), or the runtime's note on an invalid action.
ReasoningPart = Literal["think", "tool_call", "tool_output", "notice"]
_PART_OF_ROLE: dict[BlockRole, ReasoningPart] = {
    BlockRole.REASONING: "think", BlockRole.TOOL: "tool_call", BlockRole.OBSERVATION: "tool_output"}


@dataclass
class ReplyDelta:
    reasoning: str = ""
    content: str = ""
    tool_step: ToolStep | None = None
    reasoning_part: ReasoningPart = "think"

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_step)


class ReplyBuilder:
    def __init__(self, protocol: Protocol, step_id_prefix: str) -> None:
        self.protocol = protocol
        self.step_id_prefix = step_id_prefix
        self.content = ""
        self.reasoning = ""
        self.steps: dict[str, ToolStep] = {}
        self._parser = StreamParser(protocol)
        self._held_space = ""  # whitespace after content, sent only if more content follows
        self._open: Block | None = None  # the block whose content is streaming

    def feed(self, event: Event) -> list[ReplyDelta]:
        if isinstance(event, Token):
            return self._parsed(self._parser.feed(event.text))
        if isinstance(event, ToolCall):
            step = ToolStep.running(self._step_id(event.index), event.index, event.name, event.arguments)
            self.steps[step.id] = step
            return [ReplyDelta(tool_step=step)]
        if isinstance(event, ToolResult):
            key = self._step_id(event.index)
            step = ToolStep.done(key, event.index, event.name, self.steps[key].arguments, event.output,
                                 event.seconds, event.injected_tokens)
            self.steps[step.id] = step
            trace = _clip(event.output.text.strip(), TRACE_OUTPUT_CHARS)
            label = "output" if event.output.ok else "error"
            return [ReplyDelta(tool_step=step), self._reason(f"[{label}]\n{trace}\n\n", "tool_output")]
        if isinstance(event, Injected):
            # A turn ended: the loop starts a fresh parser for the next one, and so do we.
            deltas = self._parsed(self._parser.close())
            self._parser = StreamParser(self.protocol)
            if event.reason == "invalid_action":
                deltas.append(self._reason(event.text.strip() + "\n\n", "notice"))
            return [d for d in deltas if d]
        if isinstance(event, Done):
            return self._parsed(self._parser.close())
        return []

    def _step_id(self, index: int) -> str:
        return step_id(self.step_id_prefix, index)

    def _parsed(self, events: list[ParseEvent]) -> list[ReplyDelta]:
        out = []
        for ev in events:
            if isinstance(ev, Delta):
                out.append(self._delta(ev))
            elif isinstance(ev, Segment) and ev.kind is SegmentKind.BLOCK and ev.block.role is not BlockRole.ANSWER:
                if self._open is ev.block:
                    out.append(self._reason("\n", _PART_OF_ROLE[ev.block.role]))
                self._open = None
            elif isinstance(ev, Segment):
                self._open = None
        return [d for d in out if d]

    def _delta(self, delta: Delta) -> ReplyDelta:
        block = delta.block
        if block is None or block.role is BlockRole.ANSWER:
            if block is not None and self._open is not block and self.content:
                self._held_space = "\n"  # plain text, then an answer: keep them apart
            self._open = block
            return ReplyDelta(content=self._content(delta.text))
        self._held_space = ""  # whitespace before a reasoning block is layout, not content
        header = ""
        if self._open is not block:
            self._open = block
            if block.role is BlockRole.TOOL:
                header = f"[{block.name}]\n"
            elif block.role is BlockRole.OBSERVATION:
                header = "[observation]\n"
        return self._reason(header + delta.text, _PART_OF_ROLE[block.role])

    def _content(self, text: str) -> str:
        if not self.content:
            text = text.lstrip()
        if not text.strip():
            self._held_space += text
            return ""
        text = self._held_space + text
        kept = text.rstrip()
        self._held_space = text[len(kept) :]
        self.content += kept
        return kept

    def _reason(self, text: str, part: ReasoningPart) -> ReplyDelta:
        self.reasoning += text
        return ReplyDelta(reasoning=text, reasoning_part=part)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"
