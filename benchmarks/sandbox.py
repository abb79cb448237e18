"""The ``code`` tool's warm sandbox pool against a fresh Python process per call.

    .venv/bin/python benchmarks/sandbox.py [--calls 200] [--quick]

The baseline is what TAPO's published code server does: a new ``python -c`` process per request
(here ``sys.executable`` through ``asyncio.create_subprocess_exec``, output captured). Ours is
``CodeTool`` with its default preload (numpy, sympy): each call forks a warm, sandboxed worker.

1. Latency of ``print(1+1)``, one call at a time: median and p95, after a few warm-up calls.
2. The same for ``import sympy; print(sympy.factorint(2**64-1))`` (fewer calls: a fresh process
   pays the sympy import every time).
3. Throughput with 8 callers in parallel, for ``print(1+1)`` and the sympy call: ours with
   ``pool_size=2`` (the default) and ``pool_size=8``, against 8 fresh processes at a time.

Both sides are measured in one run, interleaved (calls alternate, throughput rounds rotate), so
drift of the machine hits them equally. Every output is checked. Torch is never imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent_runtime.sandbox import CodeTool

Runner = Callable[[str], Awaitable[str]]

PRINT_CODE = "print(1+1)"
PRINT_OUT = "2\n"
SYMPY_CODE = "import sympy; print(sympy.factorint(2**64-1))"
SYMPY_OUT = "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"
WARMUP = 5
CALLERS = 8
ROUNDS = 4  # throughput: each configuration runs this many interleaved rounds
TARGET = 0.5  # the target: ours at most half the fresh-process latency


async def fresh_process(code: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"fresh process exited {proc.returncode}: {out.decode()!r}")
    return out.decode()


def pooled(tool: CodeTool) -> Runner:
    async def run(code: str) -> str:
        result = await tool.run(code)
        if not result.ok:
            raise RuntimeError(f"sandbox call failed: {result.output!r}")
        return result.output

    return run


async def timed(runner: Runner, code: str, expected: str) -> float:
    start = time.perf_counter()
    out = await runner(code)
    elapsed = time.perf_counter() - start
    if out != expected:
        raise RuntimeError(f"unexpected output {out!r}, wanted {expected!r}")
    return elapsed


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p95_ms: float


def summarize(seconds: list[float]) -> Latency:
    p95 = statistics.quantiles(seconds, n=20, method="inclusive")[18]
    return Latency(1000 * statistics.median(seconds), 1000 * p95)


async def latency(runners: dict[str, Runner], code: str, expected: str, calls: int) -> dict[str, Latency]:
    """One call at a time, alternating which side goes first; the first ``WARMUP`` rounds are dropped."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for i in range(WARMUP + calls):
        for name in names if i % 2 == 0 else reversed(names):
            elapsed = await timed(runners[name], code, expected)
            if i >= WARMUP:
                samples[name].append(elapsed)
    return {name: summarize(values) for name, values in samples.items()}


async def burst(runner: Runner, code: str, expected: str, calls: int) -> float:
    """``calls`` calls from ``CALLERS`` concurrent callers; returns the wall time."""
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await timed(runner, code, expected)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return time.perf_counter() - start


def per_round(calls: int) -> int:
    return max(CALLERS, calls // ROUNDS)


async def throughput(runners: dict[str, Runner], code: str, expected: str, calls: int) -> dict[str, float]:
    """Calls per second, over ``ROUNDS`` rounds whose order rotates between configurations."""
    n = per_round(calls)
    names = list(runners)
    for name in names:  # warm-up: every worker and every page of the interpreter touched once
        await burst(runners[name], code, expected, CALLERS)
    wall = dict.fromkeys(names, 0.0)
    for r in range(ROUNDS):
        for name in names[r % len(names):] + names[: r % len(names)]:
            wall[name] += await burst(runners[name], code, expected, n)
    return {name: ROUNDS * n / seconds for name, seconds in wall.items()}


async def started(pool_size: int) -> tuple[CodeTool, float]:
    tool = CodeTool(pool_size=pool_size)
    start = time.perf_counter()
    await tool.start()
    return tool, time.perf_counter() - start


@dataclass(frozen=True)
class Results:
    calls: int
    sympy_calls: int
    latency: dict[str, dict[str, Latency]]  # code label -> side -> latency
    throughput: dict[str, dict[str, float]]  # code label -> configuration -> calls/s
    startup_s: dict[str, float]  # configuration -> seconds to start its workers


async def measure(calls: int, sympy_calls: int) -> Results:
    async with contextlib.AsyncExitStack() as stack:
        pool2, start2 = await started(2)
        stack.push_async_callback(pool2.close)
        pool8, start8 = await started(8)
        stack.push_async_callback(pool8.close)
        pair = {"ours": pooled(pool2), "fresh": fresh_process}
        trio = {"pool2": pooled(pool2), "pool8": pooled(pool8), "fresh": fresh_process}
        lat_print = await latency(pair, PRINT_CODE, PRINT_OUT, calls)
        lat_sympy = await latency(pair, SYMPY_CODE, SYMPY_OUT, sympy_calls)
        tp_print = await throughput(trio, PRINT_CODE, PRINT_OUT, calls)
        tp_sympy = await throughput(trio, SYMPY_CODE, SYMPY_OUT, sympy_calls)
    return Results(
        calls,
        sympy_calls,
        {"print": lat_print, "sympy": lat_sympy},
        {"print": tp_print, "sympy": tp_sympy},
        {"pool2": start2, "pool8": start8},
    )


def markdown(r: Results) -> str:
    labels = {"print": "`print(1+1)`", "sympy": "sympy `factorint(2**64-1)`"}
    counts = {"print": r.calls, "sympy": r.sympy_calls}
    lines = [
        f"`{shlex.join([sys.executable, *sys.argv])}`",
        "",
        f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}. Ours: `CodeTool` (bubblewrap, preload "
        "numpy+sympy). Fresh: a new `python -c` process per call.",
        "",
        "| measurement | ours | fresh `python -c` | ours / fresh |",
        "|---|---:|---:|---:|",
    ]
    for key, label in labels.items():
        ours, fresh = r.latency[key]["ours"], r.latency[key]["fresh"]
        lines += [
            f"| {label} latency median, ms ({counts[key]} calls, pool_size=2) | {ours.median_ms:.1f} | "
            f"{fresh.median_ms:.1f} | {ours.median_ms / fresh.median_ms:.2f} |",
            f"| {label} latency p95, ms | {ours.p95_ms:.1f} | {fresh.p95_ms:.1f} | {ours.p95_ms / fresh.p95_ms:.2f} |",
        ]
    for key, label in labels.items():
        tp, n = r.throughput[key], ROUNDS * per_round(counts[key])
        for pool in ("pool2", "pool8"):
            lines.append(
                f"| {label} throughput, {CALLERS} callers, pool_size={pool[4:]}, calls/s ({n} calls) | "
                f"{tp[pool]:.1f} | {tp['fresh']:.1f} | {tp[pool] / tp['fresh']:.2f} |"
            )
    startup = f"{r.startup_s['pool2']:.1f} / {r.startup_s['pool8']:.1f}"
    lines.append(f"| worker start-up, pool_size=2 / 8, s | {startup} | — | — |")
    verdicts = []
    for key, label in labels.items():
        ratio = r.latency[key]["ours"].median_ms / r.latency[key]["fresh"].median_ms
        verdicts.append(f"{label} {ratio:.2f}× ({'met' if ratio <= TARGET else 'NOT met'})")
    lines += [
        "",
        "Latency: lower is better (ratio < 1 favours ours). Throughput: higher is better (ratio > 1 favours ours).",
        f"Target, ours ≤ {TARGET}× the fresh median latency: " + "; ".join(verdicts) + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls of print(1+1) per side (default 200)")
    parser.add_argument("--sympy-calls", type=int, default=None, help="timed sympy calls per side (default calls/4)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 calls, 10 sympy calls")
    args = parser.parse_args()
    calls = 30 if args.quick else args.calls
    sympy_calls = args.sympy_calls or (10 if args.quick else max(10, calls // 4))
    if calls < 2 or sympy_calls < 2:
        parser.error("need at least 2 calls for percentiles")
    print(markdown(asyncio.run(measure(calls, sympy_calls))))


if __name__ == "__main__":
    main()
