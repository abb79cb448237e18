"""The clients against a real server (the trained tiny fixture, real sandbox): the page's reply function,
``tapo chat``, the SDK examples, and the reply view they all draw from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from live_server import ARITH_QUESTIONS, MODEL, server_url  # noqa: F401  (pytest fixture)

from clients.reply_view import ReplyView, event_delta

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "clients" / "examples"
TAPO = str(Path(sys.executable).with_name("tapo"))


@pytest.fixture(scope="module")
def reference(server_url):  # noqa: F811
    """A question the fixture model answers through a tool, and its greedy non-streamed reply: what
    every client must end up showing."""
    for question in ARITH_QUESTIONS:
        r = httpx.post(f"{server_url}/v1/chat/completions", timeout=120,
                       json={"model": MODEL, "messages": [{"role": "user", "content": question}], "temperature": 0})
        message = r.json()["choices"][0]["message"]
        if message["tool_steps"]:
            return message | {"question": question}
    pytest.fail(f"none of {ARITH_QUESTIONS} made the fixture model call a tool")


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens once the socket is closed


# ---- the reply view (pure) --------------------------------------------------------------------


def test_reply_view_orders_thinking_steps_and_answer_and_leaves_tool_traces_out():
    now = iter(range(100))
    view = ReplyView(clock=lambda: float(next(now)))
    step = {"id": "s-0", "index": 0, "name": "code", "arguments": "print(2 + 2)"}
    for delta in [
        {"reasoning": "I will compute it.", "reasoning_part": "think"},
        {"reasoning": "\n", "reasoning_part": "think"},
        {"reasoning": "[code]\nprint(2 + 2)", "reasoning_part": "tool_call"},
        {"tool_step": step | {"status": "running"}},
        {"tool_step": step | {"status": "done", "ok": True, "output": "4\n", "seconds": 0.02}},
        {"reasoning": "[output]\n4\n\n", "reasoning_part": "tool_output"},
        {"reasoning": "It is 4.", "reasoning_part": "think"},
        {"content": "4"},
    ]:
        view.feed(delta)
    view.finish()
    kinds = [(m.kind, m.title) for m in view.messages]
    assert kinds == [("thinking", "Thinking"), ("tool", "Python"), ("thinking", "Thinking"), ("answer", "")]
    first, tool, second, answer = view.messages
    assert first.text == "I will compute it." and "[code]" not in first.text
    assert "print(2 + 2)" in tool.text and "4" in tool.text and tool.seconds == 0.02 and tool.status == "done"
    assert second.text == "It is 4." and "[output]" not in second.text
    assert answer.text == view.answer == "4"
    assert all(m.status == "done" for m in view.messages) and first.seconds is not None


def test_reply_view_marks_a_failed_step_and_shows_an_error_last():
    view = ReplyView()
    step = {"id": "s-0", "index": 0, "name": "search", "arguments": "Velmora founder"}
    view.feed({"tool_step": step | {"status": "running"}})
    assert view.messages[0].status == "pending" and view.messages[0].title == "Search: Velmora founder"
    view.feed({"tool_step": step | {"status": "done", "ok": False, "output": "TimeoutError", "seconds": 5.0}})
    view.fail("The API answered 503: busy")
    assert view.messages[0].title.endswith("(failed)") and "Error:" in view.messages[0].text
    assert view.messages[-1].kind == "error" and view.messages[-1].text == "The API answered 503: busy"


# ---- the page's reply function ---------------------------------------------------------------


def _title(message) -> str | None:
    return (message.metadata or {}).get("title")


async def _respond(question: str, api_base: str, history: list | None = None, api_key: str = "",
                   api: str = "Chat Completions") -> list:
    from clients.gradio_app import respond

    updates = [u async for u in respond(question, history or [], api_key, True, 4, 0.0, "tapo", api,
                                        api_base=api_base, model=MODEL)]
    assert all(box == "" for _, box in updates)  # the question box is cleared
    return updates[-1][0]


@pytest.mark.parametrize("api", ["Chat Completions", "Responses"])
async def test_page_reply_shows_each_tool_step_before_the_same_answer_as_the_api(server_url, reference, api):  # noqa: F811
    pytest.importorskip("gradio")
    shown = await _respond(reference["question"], f"{server_url}/v1", api=api)
    assert shown[0].role == "user" and shown[0].content == reference["question"]
    steps = [m for m in shown[1:] if _title(m) and _title(m) != "Thinking"]
    assert len(steps) == len(reference["tool_steps"])
    for m, ref in zip(steps, reference["tool_steps"]):
        assert m.metadata["status"] == "done" and m.metadata["duration"] >= 0
        assert ref["arguments"].strip() in m.content and ref["output"].strip() in m.content
    # The answer comes last, labelled, and plain (not collapsible); every step before it is collapsible.
    assert _title(shown[-1]) is None and shown[-1].content == "**Answer**\n\n" + reference["content"]
    assert all(_title(m) for m in shown[1:-1])


def test_page_titles_a_failed_step_as_failed():
    pytest.importorskip("gradio")
    from clients.gradio_app import _gradio_messages

    view = ReplyView()
    step = {"id": "s-0", "index": 0, "name": "code", "arguments": "1/0"}
    view.feed({"tool_step": step | {"status": "running"}})
    view.feed({"tool_step": step | {"status": "done", "ok": False, "output": "ZeroDivisionError", "seconds": 0.1}})
    shown, = _gradio_messages(view.messages[0])
    assert shown.metadata["title"] == "Python (failed)" and shown.metadata["status"] == "done"


async def test_page_sends_earlier_answers_but_never_steps_or_errors(server_url):  # noqa: F811
    from clients.gradio_app import api_messages

    history = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
               {"role": "assistant", "content": "thinking…", "metadata": {"title": "Thinking"}},
               {"role": "assistant", "content": [{"type": "text", "text": "**Answer**\n\nHello!"}], "metadata": None},
               {"role": "user", "content": "again"},
               {"role": "assistant", "content": "Error: Cannot reach the agent API"}]
    assert api_messages(history, "What now?") == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "again"}, {"role": "user", "content": "What now?"}]


async def test_page_says_when_the_api_is_unreachable():
    pytest.importorskip("gradio")
    url = _closed_port_url()
    shown = await _respond("What is 2 + 2?", url)
    assert shown[-1].content == f"Error: Cannot reach the agent API at {url}: is the server running?"


# ---- tapo chat and the SDK examples, as a user runs them --------------------------------------


def _run(args: list[str], url: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, TAPO_BASE_URL=url, COLUMNS="120")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_tapo_chat_draws_the_tool_steps_and_the_answer(server_url, reference):  # noqa: F811
    done = _run([TAPO, "chat", reference["question"]], f"{server_url}/v1")
    assert done.returncode == 0, done.stderr
    for step in reference["tool_steps"]:
        title = "Python" if step["name"] == "code" else "Search"
        assert title in done.stdout and step["output"].strip() in done.stdout
    assert done.stdout.rstrip().endswith(reference["content"].strip())
    # Through a pipe: plain lines, not padded to the terminal's width, no escape codes, a final newline.
    assert done.stdout.endswith("\n") and "\x1b" not in done.stdout
    assert all(line == line.rstrip() for line in done.stdout.splitlines()), done.stdout
    assert f"Answer:\n{reference['content'].strip()}\n" in done.stdout


def test_tapo_chat_on_the_responses_api_draws_the_same_steps_and_answer(server_url, reference):  # noqa: F811
    done = _run([TAPO, "chat", "--api", "responses", reference["question"]], f"{server_url}/v1")
    assert done.returncode == 0, done.stderr
    for step in reference["tool_steps"]:
        if step["name"] == "code":
            assert "Python" in done.stdout and step["output"].strip() in done.stdout
    assert f"Answer:\n{reference['content'].strip()}\n" in done.stdout


def test_a_responses_stream_reads_as_the_same_view_as_a_chat_stream():
    """The Responses API's events give the view the chat deltas give: thinking, the step, the answer."""
    item = {"id": "r-call-0", "type": "code_interpreter_call", "code": "print(2 + 2)", "container_id": "c",
            "status": "in_progress", "outputs": None}
    done = item | {"status": "completed", "outputs": [{"type": "logs", "logs": "4\n"},
                                                      {"type": "image", "url": "data:image/png;base64,AAAA"}]}
    events = [
        {"type": "response.created", "response": {}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"id": "rs", "type": "reasoning"}},
        {"type": "response.reasoning_text.delta", "delta": "I will compute it."},
        {"type": "response.output_item.added", "output_index": 1, "item": item},
        {"type": "response.code_interpreter_call_code.delta", "delta": "print(2 + 2)"},
        {"type": "response.output_item.done", "output_index": 1, "item": done},
        {"type": "response.output_text.delta", "delta": "4"},
        {"type": "response.completed", "response": {}},
    ]
    view = ReplyView(clock=lambda: 0.0)
    for event in events:
        view.feed(event_delta(event))
    view.finish()
    thinking, step, answer = view.messages
    assert (thinking.kind, thinking.text) == ("thinking", "I will compute it.")
    assert step.title == "Python" and "print(2 + 2)" in step.text and "4" in step.text
    assert step.images == ["data:image/png;base64,AAAA"]
    assert (answer.kind, answer.text) == ("answer", "4")


def test_the_page_shows_a_png_figure_and_drops_anything_else():
    pytest.importorskip("gradio")
    import base64
    import io

    from PIL import Image

    from clients.gradio_app import _gradio_messages

    def png(width: int, height: int) -> str:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height)).save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    view = ReplyView()
    step = {"id": "s-0", "index": 0, "name": "code", "arguments": "plot()", "status": "done", "ok": True,
            "output": "", "images": [png(64, 48), "data:image/png;base64,bm90IGEgcG5n", png(5000, 5000),
                                     "https://example.com/x.png"]}
    view.feed({"tool_step": step})
    shown = _gradio_messages(view.messages[0])
    assert [_title(m) for m in shown] == ["Python", "Figure 1"]  # not a PNG, too many pixels, not data: dropped
    assert shown[1].content.value is not None


def test_tapo_chat_explains_an_unreachable_server_and_fails():
    url = _closed_port_url()
    done = _run([TAPO, "chat", "Hello"], url)
    assert done.returncode == 1 and "Cannot reach the agent API" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_sdk_examples_run_against_the_server(server_url, reference):  # noqa: F811
    url = f"{server_url}/v1"
    streamed = _run([sys.executable, str(EXAMPLES / "stream_tool_steps.py"), reference["question"]], url)
    assert streamed.returncode == 0, streamed.stderr
    first = reference["tool_steps"][0]
    assert f"[{first['name']}] {first['arguments'].strip()}" in streamed.stdout
    assert streamed.stdout.rstrip().endswith(reference["content"].strip())
    plain = _run([sys.executable, str(EXAMPLES / "non_streaming.py"), reference["question"]], url)
    assert plain.returncode == 0, plain.stderr
    assert f"answer: {reference['content']}" in plain.stdout and "tool step 0:" in plain.stdout
    responses = _run([sys.executable, str(EXAMPLES / "responses_hosted_tools.py"), reference["question"]], url)
    assert responses.returncode == 0, responses.stderr
    if first["name"] == "code":
        assert f"[code] {first['arguments'].strip()} -> {first['output'].strip()!r}" in responses.stdout
    else:
        assert f"[search] {first['arguments']}" in responses.stdout
    assert f"answer: {reference['content']}" in responses.stdout and "status: completed" in responses.stdout
    together = _run([sys.executable, str(EXAMPLES / "async_concurrent.py")], url)
    assert together.returncode == 0, together.stderr
    assert together.stdout.count("answer:") == 3
