"""The reasoning–search–code loop: the one loop that serves users and produces training rollouts.

A turn generates until a tool call closes (a protocol stop string) or the model ends its turn.
A tool call runs, its output is tokenized alone and appended (mask 0), and the model continues
from the exact ids it produced: the history is never re-tokenized.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, AsyncIterator, Sequence

from agent_runtime.backends.base import Backend, GenerationChunk, PromptTooLongError, SamplingParams
from agent_runtime.budget import Budget
from agent_runtime.constrained import arguments_matcher, constrained_tokens, sample_among
from agent_runtime.detok import IncrementalDetokenizer
from agent_runtime.events import Answer, Done, Event, Injected, Token, ToolCall, ToolResult
from agent_runtime.functions import CallError, ForcedCall, Function, FunctionCall, builtin_functions, parse_call
from agent_runtime.parser import Segment, SegmentKind, StreamParser, answer_segment
from agent_runtime.plain_text import encode_plain
from agent_runtime.protocol import TAPO, BlockRole, Protocol, last_boxed
from agent_runtime.tool_turns import ToolTurnRenderer
from agent_runtime.tools import ToolOutput, ToolRegistry
from agent_runtime.tools import ToolResult as ToolRun
from agent_runtime.trajectory import AgentFinishReason, ClientCall, FinishReason, ToolCallRecord, Trajectory
from agent_runtime.truncation import truncate_middle


class _WallClock(Exception):
    pass


async def _next_chunk(stream: AsyncIterator[GenerationChunk], deadline: float | None) -> GenerationChunk | None:
    try:
        if deadline is None:
            return await anext(stream)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _WallClock
        return await asyncio.wait_for(anext(stream), remaining)
    except StopAsyncIteration:
        return None
    except asyncio.TimeoutError:
        raise _WallClock from None


def enabled_tool_names(protocol: Protocol, tools: ToolRegistry, enabled: Sequence[str] | None) -> tuple[str, ...]:
    """Tools the model may call: known to the protocol, registered, and (if given) asked for."""
    wanted = protocol.tool_names if enabled is None else tuple(enabled)
    return tuple(t for t in protocol.tool_names if t in wanted and t in tools)


def _final_answer(protocol: Protocol, segments: list[Segment], turn_text: str) -> str | None:
    if protocol.boxed_answer:
        return last_boxed(turn_text)
    if protocol.function_calling:  # the turn's plain text is the answer
        return "".join(s.text for s in segments if s.kind is SegmentKind.PLAIN).strip() or None
    seg = answer_segment(segments)
    return seg.text.strip() if seg is not None else None


async def run(
    prompt_ids: Sequence[int],
    backend: Backend,
    tools: ToolRegistry,
    *,
    protocol: Protocol = TAPO,
    budget: Budget = Budget(),
    sampling: SamplingParams = SamplingParams(),
    enabled_tools: Sequence[str] | None = None,
    stop: Sequence[str] = (),
    functions: Sequence[Function] | None = None,
    forced: ForcedCall | None = None,
) -> AsyncIterator[Event]:
    """Run one trajectory, yielding events; the last is :class:`Done` with the :class:`Trajectory`.

    Closing the generator (or cancelling the task that iterates it) stops generation and cancels
    a running tool call. A prompt that leaves no room to generate raises :class:`PromptTooLongError`.
    ``stop``: the caller's own stop strings; one of them ends the trajectory (``stop_sequence``).
    ``functions``: what a function-calling protocol's model was offered (default: the built-in
    functions of the enabled tools); a call to one that no registry tool runs (a client's function)
    ends the trajectory with ``finish_reason="tool_calls"`` and the calls in ``client_calls``.
    ``forced``: the call ``tool_choice`` demands of the first turn (:class:`ForcedCall`): its opening
    is written, the model chooses the function where the offered ones differ, and writes its arguments
    under the function's JSON schema (:mod:`agent_runtime.constrained`), each sampled token among those
    the constraint allows (``SamplingParams.allowed_token_ids``); written tokens count as the model's,
    without logprobs.
    """
    if len(prompt_ids) >= backend.info.context_length:
        raise PromptTooLongError(len(prompt_ids), backend.info.context_length)
    tokenizer = backend.tokenizer
    enabled = enabled_tool_names(protocol, tools, enabled_tools)
    user_stops = tuple(s for s in stop if s)
    stops = protocol.stop_strings(enabled) + user_stops
    traj = Trajectory(prompt_ids=list(prompt_ids))
    detok = IncrementalDetokenizer(tokenizer)
    started = time.monotonic()
    deadline = started + budget.wall_clock_s if budget.wall_clock_s is not None else None
    calls_used = 0  # tool calls and invalid actions, against budget.max_tool_calls
    offered: dict[str, Function] = {}
    if protocol.function_calling:
        offered = {f.name: f for f in (builtin_functions(enabled) if functions is None else functions)}
        tool_turns = ToolTurnRenderer(tokenizer, tokenizer.eos_token)

    def inject_ids(ids: list[int]) -> str:
        traj.append(ids, model=False)
        shown = detok.add(ids)
        traj.text += shown
        return shown

    def inject(text: str) -> tuple[str, list[int]]:
        # Tool output is not ours: a "<|im_end|>" it prints must stay text, never end the turn.
        ids = encode_plain(tokenizer, text)
        return inject_ids(ids), ids

    ending: tuple[FinishReason, AgentFinishReason]
    while True:
        model_tokens = sum(traj.mask)
        room = backend.info.context_length - len(traj.prompt_ids) - len(traj.completion_ids)
        if room <= 0:
            ending = ("length", "context")
            break
        if model_tokens >= budget.max_total_tokens:
            ending = ("length", "max_tokens")
            break
        params = replace(
            sampling,
            max_tokens=min(budget.max_tokens_per_turn, budget.max_total_tokens - model_tokens, room),
            stop=stops,
            seed=None if sampling.seed is None else sampling.seed + traj.turns,
        )
        parser = StreamParser(protocol)
        segments: list[Segment] = []
        first_action: Segment | None = None  # the first tool call or answer of this turn
        turn_text = ""
        chunk = None
        finish_reason = None
        turn_started = time.monotonic()
        if forced is not None and traj.turns == 0:
            written = await _forced_call(forced, backend, traj, tokenizer, params)
            text = detok.add(written)
            traj.text += text
            turn_text += text
            yield Token(text, written)
            segments += [e for e in parser.feed(text) if isinstance(e, Segment)]
            params = replace(params, max_tokens=max(1, params.max_tokens - len(written)))
        stream = backend.generate(traj.prompt_ids + traj.completion_ids, params)
        try:
            while (chunk := await _next_chunk(stream, deadline)) is not None:
                traj.append(chunk.token_ids, model=True, logprobs=chunk.logprobs)
                text = detok.add(chunk.token_ids)
                traj.text += text
                turn_text += text
                yield Token(text, chunk.token_ids)
                for event in parser.feed(text):
                    if isinstance(event, Segment):
                        segments.append(event)
                        if first_action is None and _is_action(event, enabled, protocol):
                            first_action = event
                finish_reason = chunk.finish_reason
                if first_action is not None and first_action.block.role is BlockRole.TOOL and not protocol.function_calling:
                    finish_reason = finish_reason or "stop"  # the call is complete: stop here
                if finish_reason is not None:
                    break
        except _WallClock:
            ending = ("stop", "wall_clock")
            break
        finally:
            traj.generation_seconds += time.monotonic() - turn_started
            await stream.aclose()
        traj.turns += 1
        segments.extend(e for e in parser.close() if isinstance(e, Segment))

        user_stopped = finish_reason == "stop" and chunk is not None and chunk.stop_str in user_stops
        call_segments = _call_segments(protocol, segments) if finish_reason == "eos" else []
        if call_segments:
            # Function calling: the model ended its turn after one or more calls. Built-in and MCP
            # calls run together and come back as one tool turn; a client's function ends the trajectory.
            parsed = [parse_call(seg.text, offered) if seg.kind is SegmentKind.BLOCK else
                      CallError("", f"Error: the call was not closed with {seg.block.close}.", seg.text)
                      for seg in call_segments]
            client = [p for p in parsed if isinstance(p, FunctionCall) and not p.function.runs_here]
            if client:
                traj.client_calls = [ClientCall(f"call_{len(traj.tool_calls) + i}", p.name, p.arguments_json)
                                     for i, p in enumerate(client)]
                ending = ("tool_calls", "client_tool")
                break
            if calls_used >= budget.max_tool_calls:
                ending = ("stop", "tool_budget")
                break
            first_index = len(traj.tool_calls)
            starts = []
            for i, p in enumerate(parsed):
                name, argument = _call_name_argument(p)
                starts.append((name, argument))
                yield ToolCall(f"call_{first_index + i}", first_index + i, name, argument)
            timeout = budget.tool_timeout_s
            if deadline is not None:
                timeout = min(timeout or float("inf"), max(0.0, deadline - time.monotonic()))
            allowed = budget.max_tool_calls - calls_used
            runs = await asyncio.gather(*(
                _run_call(p, tools, timeout, over_budget=i >= allowed) for i, p in enumerate(parsed)))
            calls_used += len(parsed)
            traj.invalid_actions += sum(isinstance(p, CallError) for p in parsed)
            for r in runs:
                traj.tool_seconds += r.seconds
            cut = deadline is not None and time.monotonic() >= deadline
            texts = [truncate_middle(r.output.text, tokenizer, budget.max_tool_output_tokens) for r in runs]
            ids = [] if cut else tool_turns.ids(texts)
            sizes = [0 if cut else len(encode_plain(tokenizer, t)) for t in texts]
            if not cut:
                sizes[0] += len(ids) - sum(sizes)  # the template's own tokens count with the first call
            for i, ((name, argument), r, size) in enumerate(zip(starts, runs, sizes)):
                out = replace(r.output, ok=False) if cut else r.output
                traj.tool_calls.append(ToolCallRecord(first_index + i, name, argument, out.text, out.ok, r.seconds,
                                                      size, out.hits))
                yield ToolResult(f"call_{first_index + i}", first_index + i, name, out, r.seconds, size)
            if cut:
                ending = ("stop", "wall_clock")
                break
            yield Injected(inject_ids(ids), ids, "observation")
            continue

        if first_action is not None and first_action.block.role is BlockRole.TOOL and not protocol.function_calling:
            if calls_used >= budget.max_tool_calls:
                ending = ("stop", "tool_budget")
                break
            calls_used += 1
            name, argument = first_action.block.name, first_action.text.strip()
            index = len(traj.tool_calls)
            call_id = f"call_{index}"
            yield ToolCall(call_id, index, name, argument)
            timeout = budget.tool_timeout_s
            if deadline is not None:
                timeout = min(timeout or float("inf"), max(0.0, deadline - time.monotonic()))
            result = await tools.call(name, argument, timeout=timeout)
            traj.tool_seconds += result.seconds
            out = result.output
            cut = deadline is not None and time.monotonic() >= deadline
            if cut:  # by the wall clock: the call is recorded and reported as failed, nothing injected
                out, shown, ids = replace(out, ok=False), "", []
            else:
                shown, ids = inject(protocol.format_observation(
                    truncate_middle(out.text, tokenizer, budget.max_tool_output_tokens)))
            traj.tool_calls.append(
                ToolCallRecord(index, name, argument, out.text, out.ok, result.seconds, len(ids), out.hits)
            )
            yield ToolResult(call_id, index, name, out, result.seconds, len(ids))
            if cut:
                ending = ("stop", "wall_clock")
                break
            yield Injected(shown, ids, "observation")
            continue

        answer = _final_answer(protocol, segments, turn_text)
        if user_stopped:
            traj.answer = answer
            ending = ("stop", "stop_sequence")
        elif finish_reason == "length":
            full = len(traj.prompt_ids) + len(traj.completion_ids) >= backend.info.context_length - 1
            ending = ("length", "context" if full else "max_tokens")
        elif finish_reason == "abort":
            ending = ("stop", "abort")
        elif answer is not None and finish_reason != "stop":
            # An answer ends the turn with the end-of-turn token; one followed by a tool call (a
            # protocol stop string) never reached it, so it is an invalid action like any broken turn.
            traj.answer = answer
            ending = ("stop", "answer")
        elif not protocol.function_calling and (
                finish_reason == "stop" or any(s.kind is SegmentKind.MALFORMED for s in segments)):
            # A stop string outside a tool block, or broken tags: answered in-band, as TAPO does.
            if calls_used >= budget.max_tool_calls:
                ending = ("stop", "invalid")
            else:
                calls_used += 1
                traj.invalid_actions += 1
                shown, ids = inject(protocol.invalid_action_message(enabled))
                yield Injected(shown, ids, "invalid_action")
                continue
        else:
            ending = ("stop", "no_answer")
        break

    # Whatever the detokenizer still holds (an incomplete character at the very end).
    held = detok.flush()
    traj.text += held
    yield Token(held, [])
    if ending[1] == "answer":
        yield Answer(traj.answer)
    traj.finish_reason, traj.agent_finish_reason = ending
    traj.wall_seconds = time.monotonic() - started
    yield Done(*ending, traj.usage, traj)


def _is_action(segment: Segment, enabled: tuple[str, ...], protocol: Protocol) -> bool:
    if segment.kind is not SegmentKind.BLOCK:
        return False
    role = segment.block.role
    return role is BlockRole.ANSWER or (role is BlockRole.TOOL and (protocol.function_calling or segment.block.name in enabled))


def _call_segments(protocol: Protocol, segments: list[Segment]) -> list[Segment]:
    """A function-calling turn's calls, the broken ones (an unclosed or stray marker) included."""
    call = protocol.call_block
    if call is None:
        return []
    return [s for s in segments if s.block is call and s.kind in (SegmentKind.BLOCK, SegmentKind.MALFORMED)]


def _call_name_argument(call: FunctionCall | CallError) -> tuple[str, str]:
    """How a call is recorded and shown: a built-in tool by its registry name and its one argument
    (as the tag protocols record it), anything else by its function name and JSON arguments."""
    if isinstance(call, CallError):
        return call.name or "invalid", call.raw
    if call.function.argument is not None and call.function.tool is not None:
        return call.function.tool, call.function.tool_argument(call.arguments)
    return call.name, call.arguments_json


async def _run_call(call: FunctionCall | CallError, tools: ToolRegistry, timeout: float | None, *,
                    over_budget: bool) -> ToolRun:
    if isinstance(call, CallError):
        return ToolRun(call.name, ToolOutput(call.message, ok=False), 0.0)
    if over_budget:
        return ToolRun(call.name, ToolOutput(f"[Failed] The limit of tool calls is reached; {call.name} was not run.",
                                             ok=False), 0.0)
    return await tools.call(call.function.tool, call.function.tool_argument(call.arguments), timeout=timeout)


async def _forced_call(forced: ForcedCall, backend: Backend, traj: Trajectory, tokenizer: Any,
                       params: SamplingParams) -> list[int]:
    """Write the call ``forced`` demands into ``traj``; returns its tokens."""
    opening = encode_plain(tokenizer, forced.opening)
    traj.append(opening, model=True)
    which, head, logprobs = await _choose(backend, traj.prompt_ids + traj.completion_ids, forced.heads, tokenizer,
                                          params)
    traj.append(head, model=True, logprobs=logprobs)
    matcher = arguments_matcher(tokenizer, forced.schemas[which], forced.closing)
    if matcher is None:  # a schema the constraint cannot compile: the model writes them freely
        return opening + head
    arguments, logprobs = await constrained_tokens(backend, traj.prompt_ids + traj.completion_ids, matcher, params,
                                                   max(1, params.max_tokens - len(opening) - len(head)))
    traj.append(arguments, model=True, logprobs=logprobs)
    return opening + head + arguments


async def _choose(backend: Backend, ids: list[int], choices: Sequence[str], tokenizer: Any,
                  params: SamplingParams) -> tuple[int, list[int], list[float | None]]:
    """The index and tokens of one of ``choices`` after ``ids``, the model choosing: where the choices
    still open differ, one token is sampled among their next tokens; where they agree, it is forced."""
    options = [encode_plain(tokenizer, c) for c in choices]
    open_ = list(range(len(options)))
    chosen: list[int] = []
    logprobs: list[float | None] = []
    while True:
        position = len(chosen)
        done = next((i for i in open_ if len(options[i]) == position), None)
        if len(open_) == 1 or done is not None:  # (no choice's tokens begin another's: each ends in ':')
            which = done if done is not None else open_[0]
            rest = options[which][position:]
            return which, chosen + rest, logprobs + [None] * len(rest)
        following = frozenset(options[i][position] for i in open_)
        if len(following) == 1:
            token, logprob = next(iter(following)), None
        else:
            token, logprob = await sample_among(backend, ids + chosen, params, following)
        chosen.append(token)
        logprobs.append(logprob)
        open_ = [i for i in open_ if options[i][position] == token]


async def run_to_end(prompt_ids: Sequence[int], backend: Backend, tools: ToolRegistry, **kwargs: Any) -> Trajectory:
    """Run one trajectory and return it (events discarded)."""
    async for event in run(prompt_ids, backend, tools, **kwargs):
        if isinstance(event, Done):
            return event.trajectory
    raise RuntimeError("the loop ended without a Done event")


async def rollout(
    prompts: Sequence[Sequence[int]],
    backend: Backend,
    tools: ToolRegistry,
    *,
    sampling: SamplingParams = SamplingParams(),
    progress: bool = False,
    **kwargs: Any,
) -> list[Trajectory]:
    """Many trajectories as concurrent tasks: one's tool call overlaps the others' generation.

    With a seed, trajectory ``i`` samples with ``seed + 1000 * i`` so that a batch is reproducible
    and its members differ.
    """

    def params_for(i: int) -> SamplingParams:
        return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + 1000 * i)

    tasks = [asyncio.ensure_future(run_to_end(p, backend, tools, sampling=params_for(i), **kwargs)) for i, p in enumerate(prompts)]
    try:
        if not progress:
            return list(await asyncio.gather(*tasks))
        from tqdm.auto import tqdm

        with tqdm(total=len(tasks), desc="rollouts", unit="traj") as bar:
            for task in asyncio.as_completed(tasks):
                await task
                bar.update(1)
        return [t.result() for t in tasks]
    except BaseException:
        # One trajectory failed (or the caller cancelled): stop the others rather than leave them pending.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
