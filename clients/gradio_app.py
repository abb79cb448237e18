"""The demo page: a Gradio chat that talks to the agent API through the ``openai`` SDK.

``tapo demo`` mounts it at ``/`` on the API server's own FastAPI app (one process, one port). The page
is a real client of the API: it sees exactly what any client gets, so the key, the limits and the
errors are the API's. Each thinking span and tool step is a collapsible message with a title, status
and duration (rendered from :class:`clients.reply_view.ReplyView`); the answer comes last.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any, AsyncIterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline, and no telemetry from a demo

import gradio as gr  # noqa: E402
import openai  # noqa: E402
from PIL import Image  # noqa: E402

from clients.api_errors import error_text  # noqa: E402
from clients.reply_view import HOSTED_TOOLS, ReplyView, ViewMessage, chunk_delta, event_delta  # noqa: E402

__all__ = ["build_page", "mount_page", "respond"]

ERROR_PREFIX = "Error: "
ANSWER_PREFIX = "**Answer**\n\n"  # the answer's label; taken off again before the API sees it
PROTOCOLS = ("tapo", "search-r1", "torl")
APIS = {"Chat Completions": "chat", "Responses": "responses"}
MAX_FIGURE_PIXELS = 16_000_000
EXAMPLES = ("What is 4821 * 37?", "Trosma Works has its head office in which town?", "Hello! What can you do?")
# System fonts: the default theme loads Google Fonts, which an offline machine cannot reach.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def _text(content: Any) -> str:
    """A Gradio message's content as text (Gradio 6 hands content over as a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "" if content is None else str(content)


def api_messages(history: list[dict], question: str) -> list[dict]:
    """The conversation as the API takes it: user turns and earlier answers, never steps or errors."""
    out = []
    for m in history:
        text = _text(m.get("content"))
        if m.get("role") == "user":
            out.append({"role": "user", "content": text})
        elif m.get("role") == "assistant" and not (m.get("metadata") or {}).get("title") \
                and not text.startswith(ERROR_PREFIX):
            out.append({"role": "assistant", "content": text.removeprefix(ANSWER_PREFIX)})
    return out + [{"role": "user", "content": question}]


def _gradio_messages(m: ViewMessage) -> list[gr.ChatMessage]:
    """One view message as the chat shows it; each figure a code step drew follows it as an image."""
    if m.kind == "answer":
        return [gr.ChatMessage(role="assistant", content=ANSWER_PREFIX + m.text)]
    if m.kind == "error":
        return [gr.ChatMessage(role="assistant", content=ERROR_PREFIX + m.text)]
    metadata: dict[str, Any] = {"title": m.title, "status": m.status}
    if m.status == "done" and m.seconds is not None:
        metadata["duration"] = m.seconds
    figures = [gr.ChatMessage(role="assistant", content=gr.Image(value=image, format="png", show_label=False),
                              metadata={"title": f"Figure {i}", "status": "done"})
               for i, url in enumerate(m.images, 1) if (image := _figure(url)) is not None]
    return [gr.ChatMessage(role="assistant", content=m.text or "…", metadata=metadata), *figures]


def _figure(url: str) -> Image.Image | None:
    """A figure's PNG data URL as an image; None for anything else, or one too large to draw (the
    code that made it is the model's: its header is read before its pixels)."""
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix):], validate=True)), formats=["PNG"])
        if image.width * image.height > MAX_FIGURE_PIXELS:
            return None
        image.load()
    except (ValueError, OSError, Image.DecompressionBombError):
        return None
    return image


def _shown(view: ReplyView) -> list[gr.ChatMessage]:
    return [g for m in view.messages for g in _gradio_messages(m)]


async def _deltas(client: openai.AsyncOpenAI, api: str, model: str, messages: list[dict], temperature: float,
                  tools: bool, max_tool_calls: int, protocol: str) -> AsyncIterator[dict[str, Any]]:
    """The reply's deltas, from chat completions or from the Responses API (its hosted tools)."""
    agent = {"max_tool_calls": max_tool_calls, "protocol": protocol}
    if api == "responses":
        hosted = list(HOSTED_TOOLS) if tools else []
        stream = await client.responses.create(model=model, input=messages, stream=True, temperature=temperature,
                                               tools=hosted, max_tool_calls=max_tool_calls, store=False,
                                               extra_body={"agent": {"protocol": protocol}})
        async with stream:
            async for event in stream:
                if event.type == "response.failed":
                    yield {"error": f"The generation failed: {event.response.error.message}"}
                    return
                yield event_delta(event)
        return
    stream = await client.chat.completions.create(model=model, messages=messages, stream=True, temperature=temperature,
                                                  extra_body={"agent": {"tools": bool(tools), **agent}})
    async with stream:
        async for chunk in stream:
            yield chunk_delta(chunk)


async def respond(question: str, history: list[dict], api_key: str, tools: bool, max_tool_calls: float,
                  temperature: float, protocol: str, api: str = "chat", *, api_base: str, model: str
                  ) -> AsyncIterator[tuple[list, str]]:
    """Stream one reply into the chat: yields ``(messages, "")`` (the box is cleared) as it grows."""
    question = (question or "").strip()
    if not question:
        yield history, ""
        return
    messages = api_messages(history, question)
    shown = list(history) + [gr.ChatMessage(role="user", content=question)]
    view = ReplyView()
    yield shown, ""  # the question shows at once; the reply follows as it streams
    client = openai.AsyncOpenAI(base_url=api_base, api_key=api_key or "no-key", max_retries=0, timeout=600)
    try:
        async for delta in _deltas(client, APIS.get(api, api), model, messages, temperature, bool(tools),
                                   int(max_tool_calls), protocol):
            if "error" in delta:
                view.fail(delta["error"])
                break
            view.feed(delta)
            yield shown + _shown(view), ""
        view.finish()
    except openai.OpenAIError as exc:  # every SDK failure is shown, never raised into Gradio
        view.fail(error_text(exc, api_base))
    finally:
        await client.close()
    if not view.messages:
        view.fail("The model returned an empty reply.")
    yield shown + _shown(view), ""


def build_page(api_base: str, *, model: str, protocol: str = "tapo", max_tool_calls: int = 4,
               key_required: bool = False, concurrency: int = 32) -> gr.Blocks:
    async def on_submit(question, history, api_key, tools, max_calls, temperature, proto, api):
        async for update in respond(question, history, api_key, tools, max_calls, temperature, proto, api,
                                    api_base=api_base, model=model):
            yield update

    with gr.Blocks(title="tapo-agents") as page:
        gr.Markdown(f"### tapo-agents · `{model}`\nThe agent thinks, searches and runs Python on the server; "
                    "each step opens below as it happens.")
        with gr.Row():
            with gr.Column(scale=4):
                chat = gr.Chatbot(show_label=False, height=600, elem_id="chat", buttons=["copy"], layout="panel",
                                  placeholder="Ask a question that needs arithmetic or a lookup.")
                with gr.Row():
                    box = gr.Textbox(show_label=False, placeholder="Ask the agent…", scale=8, elem_id="question",
                                     autofocus=True)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    stop = gr.Button("Stop", scale=1, elem_id="stop")
                gr.Examples(list(EXAMPLES), inputs=box)
            with gr.Column(scale=1, min_width=240):
                with gr.Accordion("Settings", open=True):
                    key = gr.Textbox(label="API key", type="password", visible=key_required, elem_id="api-key",
                                     info="This server requires its API key.")
                    tools = gr.Checkbox(True, label="Tools (search and Python)")
                    max_calls = gr.Slider(0, 16, value=max_tool_calls, step=1, label="Max tool calls")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature")
                    proto = gr.Dropdown(list(PROTOCOLS), value=protocol, label="Protocol")
                    api = gr.Radio(list(APIS), value="Chat Completions", label="API", elem_id="api",
                                   info="Responses: the hosted web_search and code_interpreter tools.")
                clear = gr.Button("Clear chat")
        inputs = [box, chat, key, tools, max_calls, temperature, proto, api]
        runs = [trigger(on_submit, inputs, [chat, box], concurrency_limit=concurrency)
                for trigger in (box.submit, send.click)]
        stop.click(None, cancels=runs)
        clear.click(lambda: ([], ""), None, [chat, box], cancels=runs)
    return page


def mount_page(app: Any, api_base: str, **settings: Any) -> Any:
    """Mount the page at ``/`` of ``app`` (the API's routes, registered first, keep their paths)."""
    page = build_page(api_base, **settings)
    return gr.mount_gradio_app(app, page, path="/", theme=THEME, footer_links=[], ssr_mode=False,
                               show_error=False)
