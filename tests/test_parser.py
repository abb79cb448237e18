"""Tests for the incremental block parser: chunking independence, hold-back, and examples."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.parser import (
    Delta,
    ParseEvent,
    Segment,
    SegmentKind,
    StreamParser,
    answer_segment,
    parse,
    tool_calls,
)
from agent_runtime.protocol import SEARCH_R1, TAPO, TORL, Block, BlockRole, Protocol

# Not a shipped protocol: markers that are prefixes of other markers ("[" of "[[", "]" of "]]"),
# to exercise leftmost-longest matching and holding back a complete marker that may still grow.
NESTED = Protocol(
    name="nested",
    blocks=(Block("one", "[", "]", BlockRole.REASONING), Block("two", "[[", "]]", BlockRole.TOOL)),
    observation_template="{output}",
)
PROTOCOLS = [TAPO, SEARCH_R1, TORL, NESTED]

FRAGMENTS = [
    "<think>", "</think>", "<search>", "</search>", "<code>", "</code>", "<answer>", "</answer>",
    "<response>", "</response>", "<information>", "</information>", "<", ">", "/", "think", "a", " ",
    "\n", "x < y", "`", "``", "```", "```python", "```output", "python", "é", "数", "[", "]", "[[", "]]",
]

texts = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=30,
).map("".join)


@st.composite
def text_and_chunks(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A text and a random split of it into chunks (empty chunks included)."""
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=len(text) + 3)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]


def run(protocol: Protocol, chunks: list[str]) -> list[ParseEvent]:
    p = StreamParser(protocol)
    events: list[ParseEvent] = []
    for c in chunks:
        events += p.feed(c)
    return events + p.close()


def segments(events: list[ParseEvent]) -> list[Segment]:
    return [e for e in events if isinstance(e, Segment)]


def delta_runs(events: list[ParseEvent]) -> list[tuple[Block | None, str]]:
    runs: list[tuple[Block | None, str]] = []
    for e in events:
        if isinstance(e, Delta):
            if runs and runs[-1][0] == e.block:
                runs[-1] = (e.block, runs[-1][1] + e.text)
            else:
                runs.append((e.block, e.text))
    return runs


def raw(s: Segment) -> str:
    """The input text a segment stands for."""
    if s.kind is SegmentKind.BLOCK:
        assert s.block is not None
        return s.block.open + s.text + s.block.close
    return s.text


def content(s: Segment) -> tuple[Block | None, str]:
    """What the Deltas before a segment must add up to, and their block."""
    if s.kind is SegmentKind.PLAIN:
        return None, s.text
    assert s.block is not None
    if s.kind is SegmentKind.BLOCK:
        return s.block, s.text
    if s.error == f"unclosed {s.block.open}":
        assert s.text.startswith(s.block.open)
        return s.block, s.text[len(s.block.open):]
    assert s.error == f"unexpected {s.text}" and s.text == s.block.close
    return None, ""  # a stray close marker: marker text never appears in a Delta


def check_events(protocol: Protocol, text: str, events: list[ParseEvent]) -> None:
    segs = segments(events)
    # Lossless: the segments spell out the input exactly.
    assert "".join(raw(s) for s in segs) == text
    # Plain runs are maximal and non-empty; Deltas are non-empty.
    for a, b in zip(segs, segs[1:]):
        assert not (a.kind is SegmentKind.PLAIN and b.kind is SegmentKind.PLAIN)
    assert all(s.text for s in segs if s.kind is SegmentKind.PLAIN)
    assert all(e.text for e in events if isinstance(e, Delta))
    # Invariants 2 and 3: the Deltas before each segment (and after the previous one) add up to its content.
    pending: list[Delta] = []
    for e in events:
        if isinstance(e, Delta):
            pending.append(e)
            continue
        block, want = content(e)
        assert "".join(d.text for d in pending) == want
        assert all(d.block == block for d in pending)
        pending = []
    assert pending == []


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@settings(max_examples=300, deadline=None)
@given(data=text_and_chunks())
def test_chunking_independence(protocol: Protocol, data: tuple[str, list[str]]) -> None:
    text, chunks = data
    whole = run(protocol, [text])
    chunked = run(protocol, chunks)
    assert segments(chunked) == segments(whole) == parse(protocol, text)  # invariant 1
    assert delta_runs(chunked) == delta_runs(whole)  # invariant 2 (merged runs)
    check_events(protocol, text, whole)
    check_events(protocol, text, chunked)


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@settings(max_examples=100, deadline=None)
@given(text=texts)
def test_one_char_chunks(protocol: Protocol, text: str) -> None:
    chunked = run(protocol, ["", *text, ""])
    assert segments(chunked) == parse(protocol, text)
    assert delta_runs(chunked) == delta_runs(run(protocol, [text]))
    check_events(protocol, text, chunked)


def recognisable(protocol: Protocol, block: Block | None) -> set[str]:
    """Markers the parser may still complete in a state (the spec, written out independently)."""
    if block is not None:
        return {block.close}
    opens = {b.open for b in protocol.blocks}
    return opens | {b.close for b in protocol.blocks if not any(o.startswith(b.close) for o in opens)}


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.name)
@settings(max_examples=200, deadline=None)
@given(data=text_and_chunks())
def test_holds_back_only_a_possible_marker_start(protocol: Protocol, data: tuple[str, list[str]]) -> None:
    text, chunks = data
    p = StreamParser(protocol)
    events: list[ParseEvent] = []
    for c in chunks:
        events += p.feed(c)
    segs = segments(events)
    consumed = "".join(raw(s) for s in segs) + (p.current_block.open if p.current_block else "")
    assert text.startswith(consumed)
    since = 0
    for i, e in enumerate(events):
        if isinstance(e, Segment):
            since = i + 1
    reported = "".join(e.text for e in events[since:] if isinstance(e, Delta))
    rest = text[len(consumed):]
    assert rest.startswith(reported)
    held = rest[len(reported):]
    # The held-back text is the longest suffix that is a proper prefix of a marker recognisable now.
    prefixes = {m[:k] for m in recognisable(protocol, p.current_block) for k in range(1, len(m))}
    expected = max((k for k in range(1, len(rest) + 1) if rest[-k:] in prefixes), default=0)
    assert len(held) == expected


# --- examples -------------------------------------------------------------------------------------

THINK, SEARCH, CODE, ANSWER, RESPONSE = (TAPO.block(n) for n in ("think", "search", "code", "answer", "response"))


def test_tapo_trajectory() -> None:
    text = (
        "<think>I need the year.</think>\n"
        "<search>Harbor Bridge opening</search>\n\n"
        "<response>It opened in 1931.</response>\n\n"
        "<code>\na, b = 1, 2\nif a < b:\n    print(\"<answer>\")\n</code>"
        "<response><answer></response>"
        "<answer>1931</answer>"
    )
    segs = parse(TAPO, text)
    assert segs == [
        Segment(SegmentKind.BLOCK, "I need the year.", THINK),
        Segment(SegmentKind.PLAIN, "\n"),
        Segment(SegmentKind.BLOCK, "Harbor Bridge opening", SEARCH),
        Segment(SegmentKind.PLAIN, "\n\n"),
        Segment(SegmentKind.BLOCK, "It opened in 1931.", RESPONSE),
        Segment(SegmentKind.PLAIN, "\n\n"),
        Segment(SegmentKind.BLOCK, "\na, b = 1, 2\nif a < b:\n    print(\"<answer>\")\n", CODE),
        Segment(SegmentKind.BLOCK, "<answer>", RESPONSE),
        Segment(SegmentKind.BLOCK, "1931", ANSWER),
    ]
    assert [s.block for s in tool_calls(segs)] == [SEARCH, CODE]
    assert answer_segment(segs) == Segment(SegmentKind.BLOCK, "1931", ANSWER)
    assert answer_segment(segs[:-1]) is None


def test_tag_split_across_chunks() -> None:
    p = StreamParser(TAPO)
    assert p.feed("<sea") == []
    assert p.current_block is None
    assert p.feed("rch>q</se") == [Delta("q", SEARCH)]
    assert p.current_block == SEARCH
    assert p.feed("arch>") == [Segment(SegmentKind.BLOCK, "q", SEARCH)]
    assert p.current_block is None
    assert p.close() == []


def test_held_back_text_is_released() -> None:
    p = StreamParser(TAPO)
    assert p.feed("hello <thi") == [Delta("hello ", None)]
    assert p.feed("s") == [Delta("<this", None)]
    assert p.feed("<") == []
    assert p.close() == [Delta("<", None), Segment(SegmentKind.PLAIN, "hello <this<")]


def test_unclosed_block_at_close() -> None:
    p = StreamParser(TAPO)
    assert p.feed("x<code>print(1)</co") == [
        Delta("x", None), Segment(SegmentKind.PLAIN, "x"), Delta("print(1)", CODE),
    ]
    assert p.current_block == CODE
    assert p.close() == [
        Delta("</co", CODE),
        Segment(SegmentKind.MALFORMED, "<code>print(1)</co", CODE, "unclosed <code>"),
    ]
    assert p.current_block is None


def test_stray_close_is_malformed() -> None:
    assert parse(TAPO, "a</think>b") == [
        Segment(SegmentKind.PLAIN, "a"),
        Segment(SegmentKind.MALFORMED, "</think>", THINK, "unexpected </think>"),
        Segment(SegmentKind.PLAIN, "b"),
    ]


def test_unknown_tags_and_other_markers_inside() -> None:
    assert parse(TAPO, "<foo>bar</foo>") == [Segment(SegmentKind.PLAIN, "<foo>bar</foo>")]
    assert parse(TAPO, "<think>see <search>x</search></think>") == [
        Segment(SegmentKind.BLOCK, "see <search>x</search>", THINK),
    ]


def test_torl_blocks() -> None:
    code, output = TORL.block("code"), TORL.block("output")
    text = "text ```python\nprint(1)\n``` more ```output\n1\n```"
    assert parse(TORL, text) == [
        Segment(SegmentKind.PLAIN, "text "),
        Segment(SegmentKind.BLOCK, "\nprint(1)\n", code),
        Segment(SegmentKind.PLAIN, " more "),
        Segment(SegmentKind.BLOCK, "\n1\n", output),
    ]
    assert parse(TORL, "```bash\nls\n```") == [Segment(SegmentKind.PLAIN, "```bash\nls\n```")]


def test_current_block_mid_stream() -> None:
    p = StreamParser(TAPO)
    p.feed("<think>hmm")
    assert p.current_block == THINK
    p.feed("</think><answer>4")
    assert p.current_block == ANSWER
    p.feed("</answer>")
    assert p.current_block is None


def test_empty_input() -> None:
    assert parse(TAPO, "") == []
    assert run(TAPO, ["", ""]) == []


def test_one_megabyte_parses_fast() -> None:
    unit = "<think>a < b, so <code> is content</think> plain <foo> ``` <search>q</search>\n"
    text = unit * (1_000_000 // len(unit) + 1)
    start = time.perf_counter()
    segs = parse(TAPO, text)
    elapsed = time.perf_counter() - start
    assert len(tool_calls(segs)) == text.count("<search>")
    assert "".join(raw(s) for s in segs) == text
    # Adversarial: nothing but marker starts, streamed in 4 KiB chunks.
    evil = "<thin" * 200_000
    events = run(TAPO, [evil[i:i + 4096] for i in range(0, len(evil), 4096)])
    assert segments(events) == [Segment(SegmentKind.PLAIN, evil)]
    print(f"1 MB parse: {elapsed:.3f}s")
