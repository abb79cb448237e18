"""``tapo run``: the agent loop on one question, in this process, its events printed as they come."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.console import Console

from tapo_cli.options import (EngineOpt, EngineUrlOpt, MaxToolCallsOpt, ModelOpt, ProtocolOpt, SearchBackendOpt,
                              SearchIndexOpt, SearchUrlOpt, err, fail)


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
        fail(str(exc))
    asyncio.run(_print_run(prompt, backend, tools, proto, budget, sampling, as_json, question))


async def _print_run(prompt, backend, tools, protocol, budget, sampling, as_json: bool, question: str) -> None:
    from agent_runtime.events import Answer, Done, Injected, Token, ToolCall, ToolResult
    from agent_runtime.loop import run as run_loop

    out = Console(highlight=False, soft_wrap=True)
    events = JsonEvents(f"run-{uuid.uuid4().hex[:12]}", question)
    try:
        async for event in run_loop(prompt, backend, tools, protocol=protocol, budget=budget, sampling=sampling):
            if as_json:
                print(json.dumps(events.to_json(event), ensure_ascii=False), flush=True)
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
                out.print()  # the streamed text's last line ends here
                if event.trajectory.answer is not None:
                    out.print(f"Answer: {event.trajectory.answer}", markup=False)
    except ValueError as exc:  # e.g. a prompt past the context window
        fail(str(exc))
    finally:
        await tools.aclose()
        await backend.aclose()


class JsonEvents:
    """Loop events as the JSON objects ``tapo run --json`` prints, one per line.

    Tool calls are ``{"type": "tool_step", ...}`` in the one ``ToolStep`` shape (sent when the call
    starts and again, same id, when it ends, as the server streams them); the last line,
    ``{"type": "done", ...}``, is the run's trajectory record, which ``training.sft`` reads.
    """

    def __init__(self, run_id: str, question: str) -> None:
        self.run_id = run_id
        self.question = question
        self._arguments: dict[int, str] = {}

    def to_json(self, event) -> dict:
        from agent_runtime.events import Done, ToolCall, ToolResult
        from agent_runtime.records import trajectory_record
        from agent_runtime.tool_steps import ToolStep, step_id

        if isinstance(event, ToolCall):
            self._arguments[event.index] = event.arguments
            step = ToolStep.running(step_id(self.run_id, event.index), event.index, event.name, event.arguments)
            return {"type": "tool_step", **step.model_dump()}
        if isinstance(event, ToolResult):
            step = ToolStep.done(step_id(self.run_id, event.index), event.index, event.name,
                                 self._arguments[event.index], event.output, event.seconds, event.injected_tokens)
            return {"type": "tool_step", **step.model_dump()}
        if isinstance(event, Done):
            return {"type": "done", **trajectory_record(event.trajectory, id=self.run_id, question=self.question,
                                                        gold=[], data_source="")}
        return {"type": type(event).__name__.lower(), **asdict(event)}
