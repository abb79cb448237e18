"""The ``tapo`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from agent_runtime import __version__

app = typer.Typer(
    name="tapo",
    help="Train and serve tool-using reasoning agents: one reasoning-search-code loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

# Options shared by run, serve, demo and eval (ARCHITECTURE.md, Contracts).
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="HF directory, LoRA adapter, .gguf file, hub id, or an alias (demo-agent, tiny, "
                    "smollm2-135m-instruct); default: demo-agent.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="auto, transformers, vllm or remote.")]
EngineUrlOpt = Annotated[Optional[str], typer.Option("--engine-url", help="OpenAI-compatible server for --engine remote.")]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help="tapo, search-r1 or torl.")]
MaxToolCallsOpt = Annotated[int, typer.Option("--max-tool-calls", min=0, help="Tool calls before the final turn.")]
SearchBackendOpt = Annotated[str, typer.Option("--search-backend", help="bm25, retriever, searxng, serper or none.")]
SearchIndexOpt = Annotated[Optional[Path], typer.Option(
    "--search-index", help="Index from `tapo index build` (bm25); default: the demo encyclopedia.")]
SearchUrlOpt = Annotated[Optional[str], typer.Option("--search-url", help="Retriever or SearxNG base URL.")]


def _fail(message: str, code: int = 2) -> None:
    # escape: messages hold paths and "[split]"-like text that rich would read as markup;
    # soft_wrap: one line however long (rich wraps at 80 columns off a terminal).
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    if not verbose:  # quiet by default: no weight-loading bars or library chatter
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the model to.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the weights and the training data.")] = 0,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Fit it on fixture trajectories.")] = True,
) -> None:
    """Build the tiny Qwen2-architecture test model and its tokenizer, offline and deterministically."""
    from agent_runtime.models.tiny import build_tiny_model

    path = build_tiny_model(out, seed=seed, train=train, progress=True)
    print(path)


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The question to ask.")],
    model: ModelOpt = None,
    engine: EngineOpt = "auto",
    engine_url: EngineUrlOpt = None,
    protocol: ProtocolOpt = "tapo",
    max_tool_calls: MaxToolCallsOpt = 4,
    search_backend: SearchBackendOpt = "bm25",
    search_index: SearchIndexOpt = None,
    search_url: SearchUrlOpt = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Model tokens in all.")] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 is greedy.")] = 0.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print events as JSON lines.")] = False,
) -> None:
    """Run the agent loop locally on one question and print its events."""
    from agent_runtime.backends import make_backend
    from agent_runtime.backends.base import SamplingParams
    from agent_runtime.budget import Budget
    from agent_runtime.models.resolve import resolve_model
    from agent_runtime.prompts import build_prompt_ids
    from agent_runtime.protocol import get_protocol
    from agent_runtime.sandbox import SandboxUnavailableError
    from agent_runtime.toolset import default_tools

    try:
        proto = get_protocol(protocol)
        budget = Budget(max_tool_calls=max_tool_calls, max_total_tokens=max_tokens)
        sampling = SamplingParams(temperature=temperature, seed=seed)
        tools = default_tools(search_backend=search_backend, search_index=search_index, search_url=search_url)
        backend = make_backend(resolve_model(model), engine, engine_url)
        prompt = build_prompt_ids(backend.tokenizer, proto, question, tools.names)
    except (ValueError, OSError, ImportError, SandboxUnavailableError) as exc:
        _fail(str(exc))
    asyncio.run(_print_run(prompt, backend, tools, proto, budget, sampling, as_json))


async def _print_run(prompt, backend, tools, protocol, budget, sampling, as_json: bool) -> None:
    from agent_runtime.events import Answer, Done, Injected, Token, ToolCall, ToolResult
    from agent_runtime.loop import run as run_loop

    out = Console(highlight=False, soft_wrap=True)
    try:
        async for event in run_loop(prompt, backend, tools, protocol=protocol, budget=budget, sampling=sampling):
            if as_json:
                print(json.dumps(_event_json(event)), flush=True)
            elif isinstance(event, Token):
                out.print(event.text, end="", markup=False)
            elif isinstance(event, ToolCall):
                err.print(f"\n[cyan]→ {event.name}[/] call {event.index + 1}", highlight=False)
            elif isinstance(event, ToolResult):
                status = "[green]ok[/]" if event.output.ok else "[red]failed[/]"
                err.print(f"[cyan]← {event.name}[/] {status} in {event.seconds:.2f} s", highlight=False)
            elif isinstance(event, Injected):
                out.print(event.text, end="", style="yellow", markup=False)
            elif isinstance(event, Answer):
                pass  # already streamed inside the text
            elif isinstance(event, Done):
                usage = event.usage
                err.print(
                    f"\n[dim]finish={event.finish_reason} ({event.agent_finish_reason}) "
                    f"tokens: prompt {usage.prompt_tokens}, model {usage.completion_tokens}, "
                    f"tool {usage.injected_tokens}[/]",
                    highlight=False,
                )
                if event.trajectory.answer is not None:
                    out.print(f"Answer: {event.trajectory.answer}", markup=False)
    except ValueError as exc:  # e.g. a prompt past the context window
        _fail(str(exc))
    finally:
        await tools.aclose()
        await backend.aclose()


def serve(
    ctx: typer.Context,
    model: ModelOpt = None,
    engine: EngineOpt = "auto",
    engine_url: EngineUrlOpt = None,
    protocol: ProtocolOpt = "tapo",
    search_backend: SearchBackendOpt = "bm25",
    search_index: SearchIndexOpt = None,
    search_url: SearchUrlOpt = None,
    max_tool_calls: MaxToolCallsOpt = 4,
    host: Annotated[str, typer.Option("--host", help="Interface to bind; loopback by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="TAPO_API_KEY", help="Require this bearer key.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback host without a key.")] = False,
    max_concurrency: Annotated[int, typer.Option("--max-concurrency", min=1, help="Requests at once; more get 503.")] = 32,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Default model-token cap per reply.")] = 2048,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Default when a request has none.")] = 0.0,
) -> None:
    """Serve the OpenAI-compatible API; the agent loop runs server-side."""
    import uvicorn

    from agent_runtime.sandbox import SandboxUnavailableError
    from server.app import create_app
    from server.build import build_state, check_exposure

    with_page = ctx.info_name == "demo"
    try:
        check_exposure(host, api_key, insecure)
        state = build_state(
            model=model, engine=engine, engine_url=engine_url, protocol=protocol, search_backend=search_backend,
            search_index=search_index, search_url=search_url, max_tool_calls=max_tool_calls, max_tokens=max_tokens,
            temperature=temperature, api_key=api_key, max_concurrency=max_concurrency,
        )
    except (ValueError, OSError, ImportError, SandboxUnavailableError) as exc:
        _fail(str(exc))
    api = create_app(state)
    base = f"http://{_url_host(host)}:{port}"
    if with_page:
        try:
            from clients.gradio_app import mount_page
        except ImportError as exc:
            _fail(f"the demo page needs the [demo] extra ({exc.name} is missing): pip install 'tapo-agents[demo]'")
        api = mount_page(api, f"{_url_host(host, connect=True)}:{port}/v1", model=state.model_name,
                         protocol=protocol, max_tool_calls=max_tool_calls, key_required=api_key is not None,
                         concurrency=max_concurrency)
        err.print(f"demo page on {base}/ ; API on {base}/v1 (model {state.model_name})", highlight=False,
                  soft_wrap=True)
    else:
        err.print(f"serving {state.model_name} on {base}/v1 (OpenAI-compatible)", highlight=False, soft_wrap=True)
    uvicorn.run(api, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


app.command()(serve)
app.command("demo", help="Serve the API and a chat page at / that talks to it (one process, one port).")(serve)


def _url_host(host: str, *, connect: bool = False) -> str:
    """``host`` as it goes in a URL; with ``connect``, the address this machine reaches a server bound
    there on (a wildcard bind is reached on loopback), with its scheme."""
    if connect:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    name = f"[{host}]" if ":" in host else host
    return f"http://{name}" if connect else name


@app.command("eval")
def eval_command(
    data: Annotated[str, typer.Option("--data", help="Benchmark rows: JSONL {question, answer, data_source, extra_info}, "
                                      "TAPO parquet, a directory holding SPLIT.parquet/.jsonl, or a hub dataset id.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for trajectories.jsonl, summary.json and summary.md.")],
    model: ModelOpt = None,
    engine: EngineOpt = "auto",
    engine_url: EngineUrlOpt = None,
    protocol: ProtocolOpt = "tapo",
    max_tool_calls: MaxToolCallsOpt = 4,
    search_backend: SearchBackendOpt = "bm25",
    search_index: SearchIndexOpt = None,
    search_url: SearchUrlOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Trajectories in flight at once.")] = 8,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N rows.")] = None,
    split: Annotated[str, typer.Option("--split", help="Split read from a directory or hub dataset.")] = "test",
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Model tokens per question in all.")] = 2048,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 is greedy.")] = 0.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Sampling seed (question i uses seed + 1000 i).")] = None,
) -> None:
    """Run the agent over benchmark rows; write judged trajectories and an accuracy summary.

    Writes OUT/trajectories.jsonl, OUT/summary.json and OUT/summary.md. With --engine-url (any OpenAI-compatible /v1/completions server that returns token ids), --model names the tokenizer.
    """
    from agent_runtime.backends import choose_engine, make_backend
    from agent_runtime.backends.base import SamplingParams
    from agent_runtime.budget import Budget
    from agent_runtime.loop import enabled_tool_names
    from agent_runtime.models.resolve import resolve_model
    from agent_runtime.protocol import get_protocol
    from agent_runtime.sandbox import SandboxUnavailableError
    from agent_runtime.toolset import default_tools
    from training.data import DataError, load_rows
    from training.evaluate import build_prompts, git_commit

    try:  # the data first: a bad file fails before any model loads
        rows = load_rows(data, split=split, limit=limit)
    except DataError as exc:
        _fail(str(exc))
    tools = backend = None
    try:
        proto = get_protocol(protocol)
        budget = Budget(max_tool_calls=max_tool_calls, max_total_tokens=max_tokens)
        sampling = SamplingParams(temperature=temperature, seed=seed)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out}: exists and is not a directory")
        chosen = choose_engine(engine, engine_url)
        tools = default_tools(search_backend=search_backend, search_index=search_index, search_url=search_url)
        resolved = resolve_model(model)
        slots = {"max_slots": min(concurrency, len(rows))} if chosen == "transformers" else {}  # KV memory
        backend = make_backend(resolved, engine, engine_url, **slots)
        enabled = enabled_tool_names(proto, tools, None)
        try:
            prompts = build_prompts(rows, backend.tokenizer, proto, enabled)
        except ValueError as exc:
            raise ValueError(f"{data}: {exc}") from None
    except (ValueError, OSError, ImportError, SandboxUnavailableError) as exc:
        _close_quietly(tools, backend)
        _fail(str(exc))
    settings = {
        "data": data, "split": split, "limit": limit, "rows": len(rows), "model": model or "tiny",
        "model_path": resolved, "engine": backend.info.name, "engine_url": engine_url, "protocol": proto.name,
        "tools": list(enabled), "search_backend": search_backend if "search" in tools else "none",
        "search_index": str(search_index) if search_index is not None else None, "search_url": search_url,
        "temperature": temperature, "seed": seed, "max_tool_calls": max_tool_calls, "max_tokens": max_tokens,
        "concurrency": concurrency, "git_commit": git_commit(), "version": __version__,
    }
    err.print(f"evaluating {len(rows)} rows from {data} with {settings['model']} ({backend.info.name}), "
              f"tools: {', '.join(enabled) or 'none'}", highlight=False, markup=False, soft_wrap=True)
    records = asyncio.run(_run_eval(rows, prompts, backend, tools, proto, budget, sampling, concurrency))
    _write_eval(out, records, settings, enabled, proto)


async def _run_eval(rows, prompts, backend, tools, protocol, budget, sampling, concurrency: int) -> list[dict]:
    from training.evaluate import evaluate_rows

    try:
        await tools.astart()
        return await evaluate_rows(rows, prompts, backend, tools, protocol=protocol, budget=budget,
                                   sampling=sampling, concurrency=concurrency)
    except Exception as exc:  # the engine failed (a remote server gone, a device error): no traceback
        logging.getLogger("tapo.eval").info("evaluation failed", exc_info=True)  # the traceback with -v
        _fail(f"evaluation stopped: {type(exc).__name__}: {exc}", code=1)
    finally:
        await tools.aclose()
        await backend.aclose()


def _close_quietly(tools, backend) -> None:
    async def close() -> None:
        for thing in (tools, backend):
            if thing is not None:
                await thing.aclose()

    try:
        asyncio.run(close())
    except Exception:  # noqa: BLE001 - already failing with a clearer message
        pass


def _write_eval(out: Path, records: list[dict], settings: dict, tools, protocol) -> None:
    from agent_runtime.records import write_records
    from training.evaluate import summarize, summary_markdown

    summary = summarize(records, settings=settings, tools=tools, protocol=protocol)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_records(out / "trajectories.jsonl", records)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write the results to {out}: {exc}")
    counts, fmt = summary["counts"], lambda v: "n/a" if v is None else f"{v:.3f}"
    print(f"accuracy {fmt(summary['accuracy']['overall'])} ({counts['correct']}/{counts['questions']}), "
          f"tool calls/question {fmt(summary['tool_calls_per_question']['overall'])}, "
          f"tool productivity {fmt(summary['tool_productivity']['overall'])}, "
          f"format errors {fmt(summary['format_error_rate'])}; wrote {out}/summary.md")


@app.command()
def chat(
    question: Annotated[Optional[str], typer.Argument(help="Ask this once and exit; without it, a session.")] = None,
    url: Annotated[str, typer.Option("--url", envvar="TAPO_BASE_URL", help="The API's base URL.")] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[Optional[str], typer.Option("--api-key", envvar="TAPO_API_KEY", help="The server's key.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model id; default: the server's.")] = None,
    tools: Annotated[bool, typer.Option("--tools/--no-tools", help="Let the agent use its tools.")] = True,
    max_tool_calls: Annotated[Optional[int], typer.Option("--max-tool-calls", min=0,
                                                          help="Tool calls before the final turn; default: the server's.")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=2.0, help="0 is greedy.")] = 0.0,
) -> None:
    """Chat with a running server in the terminal; tool steps are drawn as they stream."""
    from rich.console import Console

    from clients.terminal_chat import ChatSettings, chat_turn, repl

    settings = ChatSettings(base_url=url, api_key=api_key, model=model, tools=tools,
                            max_tool_calls=max_tool_calls, temperature=temperature)
    console = Console()
    if question is None:
        repl(settings, console)
        return
    view = chat_turn(question, settings, console)
    if any(m.kind == "error" for m in view.messages):
        raise typer.Exit(1)


@app.command("exec")
def exec_code(
    code: Annotated[Optional[str], typer.Option("--code", help="Python to run; read from stdin when omitted.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Wall-clock seconds.")] = 10.0,
) -> None:
    """Run Python once in the code tool's sandbox and print one JSON object (ok, output, seconds)."""
    from agent_runtime.sandbox import SandboxUnavailableError, exec_once

    source = code if code is not None else sys.stdin.read()
    try:
        result = exec_once(source, timeout=timeout)
    except SandboxUnavailableError as exc:
        _fail(str(exc))
    print(json.dumps(result))


def _mount_search_commands() -> None:
    from agent_runtime.search.commands import index_app, search_command

    app.add_typer(index_app, name="index")
    app.command("search")(search_command)


_mount_search_commands()


def _event_json(event) -> dict:
    from agent_runtime.events import Done

    kind = type(event).__name__.lower()
    if isinstance(event, Done):
        return {
            "type": "done",
            "finish_reason": event.finish_reason,
            "agent_finish_reason": event.agent_finish_reason,
            "usage": asdict(event.usage),
            "trajectory": event.trajectory.to_dict(),
        }
    return {"type": kind, **asdict(event)}


if __name__ == "__main__":
    app()
