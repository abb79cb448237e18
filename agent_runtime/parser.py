"""Incremental parser for protocol blocks: text chunks in, typed events out.

The parser is pure (no I/O, no model state) and chunking-independent: however a text is split
into chunks, the emitted :class:`Segment` list equals :func:`parse` of the whole text, and the
:class:`Delta` texts add up to the same content. Deltas let a server stream block content as
soon as it is certain; only a suffix that might still turn into a marker is held back.

Semantics: outside a block every block's open marker is recognised, plus stray close markers
(unless a close marker is a prefix of an open marker, as ToRL's "```" is of "```python", in which
case it is ordinary text). Inside a block only that block's own close marker is recognised, so
code such as ``a < b`` or ``print("<answer>")`` is content. At one position the longest marker
wins; markers are found left to right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from agent_runtime.protocol import Block, BlockRole, Protocol


class SegmentKind(StrEnum):
    PLAIN = "plain"  # text outside any block
    BLOCK = "block"  # a complete, well-formed block
    MALFORMED = "malformed"  # a stray closing tag, or a block left open at close()


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    text: str  # PLAIN: raw text; BLOCK: content between the markers (not stripped); MALFORMED: raw text
    block: Block | None = None  # BLOCK: the block; MALFORMED: the unclosed block or the stray close's block
    error: str | None = None  # MALFORMED only: e.g. "unclosed <search>" / "unexpected </think>"


@dataclass(frozen=True)
class Delta:
    text: str  # content as soon as it is certain; marker text never appears here
    block: Block | None  # the block the text is inside, None outside any block


ParseEvent = Delta | Segment

_Action = tuple[Literal["open", "close", "stray"], Block]


@dataclass
class _Matcher:
    """The markers recognised in one parser state, with the data to find them fast."""

    actions: dict[str, _Action]
    pattern: re.Pattern[str] = field(init=False)
    prefixes: frozenset[str] = field(init=False)  # proper prefixes of the markers
    longest: int = field(init=False)

    def __post_init__(self) -> None:
        markers = sorted(self.actions, key=len, reverse=True)
        # Literal alternation, longest first: Python's re takes the first alternative that matches
        # at the leftmost position, so this is leftmost-longest, and literals cannot backtrack badly.
        self.pattern = re.compile("|".join(map(re.escape, markers))) if markers else re.compile(r"(?!)")
        self.prefixes = frozenset(m[:k] for m in markers for k in range(1, len(m)))
        self.longest = len(markers[0]) if markers else 0

    def hold_start(self, buf: str, pos: int) -> int:
        """Start of the longest suffix of ``buf[pos:]`` that could still grow into a marker."""
        n = len(buf)
        for k in range(min(self.longest - 1, n - pos), 0, -1):
            if buf[n - k:] in self.prefixes:
                return n - k
        return n


def _outside_matcher(protocol: Protocol) -> _Matcher:
    actions: dict[str, _Action] = {}
    for b in protocol.blocks:
        if b.open:
            actions.setdefault(b.open, ("open", b))
    opens = list(actions)
    for b in protocol.blocks:
        # A close marker that starts an open marker (ToRL's "```") is too common in plain text
        # (e.g. "```bash") to call malformed; it stays plain.
        if b.close and not any(o.startswith(b.close) for o in opens):
            actions.setdefault(b.close, ("stray", b))
    return _Matcher(actions)


class StreamParser:
    """Feed text chunks; get :class:`Delta` and :class:`Segment` events. ``close()`` flushes."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self._outside = _outside_matcher(protocol)
        self._inside = {b: _Matcher({b.close: ("close", b)} if b.close else {}) for b in protocol.blocks}
        self._reset()

    def _reset(self) -> None:
        self._buf = ""  # unprocessed text: only the held-back suffix between calls
        self._open: Block | None = None
        self._run: list[str] = []  # the current plain run or block content, as emitted in Deltas

    @property
    def current_block(self) -> Block | None:
        return self._open

    def feed(self, text: str) -> list[ParseEvent]:
        self._buf += text
        return self._scan(final=False)

    def close(self) -> list[ParseEvent]:
        """Flush held-back text and the last segment; the parser is then ready for a new stream."""
        events = self._scan(final=True)
        content = "".join(self._run)
        if self._open is not None:
            b = self._open
            events.append(Segment(SegmentKind.MALFORMED, b.open + content, b, f"unclosed {b.open}"))
        elif content:
            events.append(Segment(SegmentKind.PLAIN, content))
        self._reset()
        return events

    def _scan(self, final: bool) -> list[ParseEvent]:
        events: list[ParseEvent] = []
        buf, pos = self._buf, 0
        while True:
            matcher = self._outside if self._open is None else self._inside[self._open]
            # Text from `hold` on might be the start of a marker; it waits for more input. A match
            # starting before `hold` is final: no longer marker can start at or before it.
            hold = len(buf) if final else matcher.hold_start(buf, pos)
            m = matcher.pattern.search(buf, pos)
            if m is not None and m.start() >= hold:
                m = None
            end = m.start() if m is not None else hold
            if end > pos:
                piece = buf[pos:end]
                self._run.append(piece)
                events.append(Delta(piece, self._open))
            if m is None:
                self._buf = buf[hold:]
                return events
            pos = m.end()
            self._on_marker(m.group(), matcher.actions[m.group()], events)

    def _on_marker(self, marker: str, action: _Action, events: list[ParseEvent]) -> None:
        kind, block = action
        content = "".join(self._run)
        self._run = []
        if kind == "close":
            events.append(Segment(SegmentKind.BLOCK, content, block))
            self._open = None
            return
        if content:  # end the plain run (maximal runs keep the result independent of chunking)
            events.append(Segment(SegmentKind.PLAIN, content))
        if kind == "open":
            self._open = block
        else:
            events.append(Segment(SegmentKind.MALFORMED, marker, block, f"unexpected {marker}"))


def parse(protocol: Protocol, text: str) -> list[Segment]:
    """Parse a whole text at once: the Segments of ``feed(text)`` and ``close()``."""
    p = StreamParser(protocol)
    return [e for e in p.feed(text) + p.close() if isinstance(e, Segment)]


def tool_calls(segments: list[Segment]) -> list[Segment]:
    """The well-formed tool blocks, in order."""
    return [s for s in segments if s.kind is SegmentKind.BLOCK and s.block is not None
            and s.block.role is BlockRole.TOOL]


def answer_segment(segments: list[Segment]) -> Segment | None:
    """The last well-formed answer block, or ``None``."""
    for s in reversed(segments):
        if s.kind is SegmentKind.BLOCK and s.block is not None and s.block.role is BlockRole.ANSWER:
            return s
    return None
