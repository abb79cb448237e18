"""``tapo eval``: the agent over benchmark rows (read and judged by ``training``), written as trajectory
JSONL and an accuracy summary."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent_runtime import __version__
from tapo_cli.options import (EngineOpt, EngineUrlOpt, MaxToolCallsOpt, ModelOpt, ProtocolOpt, SearchBackendOpt,
                              SearchIndexOpt, SearchUrlOpt, err, fail)


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
    from agent_runtime.models.resolve import DEMO_AGENT, resolve_model
    from agent_runtime.protocol import get_protocol
    from agent_runtime.sandbox import SandboxUnavailableError
    from agent_runtime.toolset import default_tools
    from training.data import DataError, load_rows
    from training.evaluate import build_prompts, git_commit

    try:  # the data first: a bad file fails before any model loads
        rows = load_rows(data, split=split, limit=limit)
    except DataError as exc:
        fail(str(exc))
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
        local = chosen in ("transformers", "llamacpp")  # engines that allocate KV slots up front
        slots = {"max_slots": min(concurrency, len(rows))} if local else {}  # KV memory
        backend = make_backend(resolved, engine, engine_url, **slots)
        enabled = enabled_tool_names(proto, tools, None)
        try:
            prompts = build_prompts(rows, backend.tokenizer, proto, enabled)
        except ValueError as exc:
            raise ValueError(f"{data}: {exc}") from None
    except (ValueError, OSError, ImportError, SandboxUnavailableError) as exc:
        _close_quietly(tools, backend)
        fail(str(exc))
    settings = {
        "data": data, "split": split, "limit": limit, "rows": len(rows), "model": model or DEMO_AGENT,
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
        fail(f"evaluation stopped: {type(exc).__name__}: {exc}", code=1)
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
        fail(f"cannot write the results to {out}: {exc}")
    counts, fmt = summary["counts"], lambda v: "n/a" if v is None else f"{v:.3f}"
    print(f"accuracy {fmt(summary['accuracy']['overall'])} ({counts['correct']}/{counts['questions']}), "
          f"tool calls/question {fmt(summary['tool_calls_per_question']['overall'])}, "
          f"tool productivity {fmt(summary['tool_productivity']['overall'])}, "
          f"format errors {fmt(summary['format_error_rate'])}; wrote {out}/summary.md")
