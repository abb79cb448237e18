"""Load test of `tapo serve`: concurrent streaming clients against a real server subprocess.

    python benchmarks/serve_load.py [--clients 32] [--requests 1000] [--warm-requests 100] [--quick]

1. Starts `python -m tapo_cli serve` (max concurrency = clients, 2 tool calls, 160 tokens)
   and waits for /health.
2. Warm-up: `--warm-requests` requests (not in the latency figures), then `--requests` measured
   requests, each a streaming chat completion of a fixture arithmetic question (the tiny model
   answers those with a `code` call), from `--clients` concurrent clients.
3. Reports TTFT and latency percentiles, throughput, errors, the RSS of the server process and of
   its sandbox workers, and sandbox processes (uid 60000-60999) left while idle and after SIGTERM.
4. The loop's own share of wall time (outside generation and tools) is measured in-process after
   the server has stopped: `rollout` on the same model, tools and budget as the server builds,
   from `Trajectory.wall_seconds - generation_seconds - tool_seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent_runtime.models.fixture_tasks import fixture_tasks  # noqa: E402

SANDBOX_UIDS = range(60000, 61000)


@dataclass
class Result:
    ttft: float | None = None
    latency: float = 0.0
    completion_tokens: int = 0
    tool_steps: int = 0
    error: str | None = None


# --- processes (read from /proc) -------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:  # gone meanwhile
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def all_procs() -> dict[int, dict[str, str]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (status := proc_status(int(entry))):
            out[int(entry)] = status
    return out


def rss_kib(status: dict[str, str]) -> int:
    return int(status.get("VmRSS", "0 kB").split()[0])


def is_sandbox(status: dict[str, str]) -> bool:
    return int(status.get("Uid", "0").split()[0]) in SANDBOX_UIDS


def sandbox_count() -> int:
    """Processes whose real uid is a sandbox uid, system-wide (other work on the machine included)."""
    return sum(is_sandbox(s) for s in all_procs().values())


def descendants(root: int, procs: dict[int, dict[str, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, s in procs.items():
        children.setdefault(int(s.get("PPid", "0")), []).append(pid)
    stack, out = list(children.get(root, [])), []
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def memory(server_pid: int) -> tuple[int, int, int]:
    """(server RSS KiB, summed RSS KiB of its sandbox-uid descendants, how many of those)."""
    procs = all_procs()
    sandbox = [p for p in descendants(server_pid, procs) if is_sandbox(procs[p])]
    return rss_kib(procs.get(server_pid, {})), sum(rss_kib(procs[p]) for p in sandbox), len(sandbox)


class SandboxTracker:
    """Remembers the PID namespaces of `root`'s sandbox processes (each bwrap worker has its own), so
    that once `root` has exited its leftovers can be told apart from other work's sandboxes."""

    def __init__(self, root: int, every_s: float = 0.5) -> None:
        self.root, self.every_s, self.namespaces = root, every_s, set[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SandboxTracker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        procs = all_procs()
        for pid in descendants(self.root, procs):
            if is_sandbox(procs[pid]) and (ns := pid_namespace(pid)):
                self.namespaces.add(ns)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def alive(self) -> int:
        """Sandbox-uid processes, anywhere, in a namespace seen under `root`."""
        return sum(is_sandbox(s) and pid_namespace(pid) in self.namespaces for pid, s in all_procs().items())


# --- server ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, clients: int, model: str | None, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tapo_cli", "serve", "--port", str(port), "--max-concurrency",
           str(clients), "--max-tool-calls", "2", "--max-tokens", "160"] + (["--model", model] if model else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; log: {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not become healthy in 300 s; log: {log.name}")


def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value}, summed over duplicate names."""
    out: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = out.get(name, 0.0) + float(value)
    return out


def metric_sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k.startswith(prefix))


# --- clients ---------------------------------------------------------------------------------

async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> Result:
    r = Result()
    started = time.perf_counter()
    steps: set[str] = set()
    done = finished = False
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                r.error = f"HTTP {resp.status_code}"
                await resp.aread()
                return r
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    r.error = f"error event: {chunk['error'].get('message')}"
                    continue
                if chunk.get("usage"):
                    r.completion_tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta", {})
                    if r.ttft is None and (delta.get("reasoning") or delta.get("content")):
                        r.ttft = time.perf_counter() - started
                    if delta.get("tool_step"):
                        steps.add(delta["tool_step"]["id"])
                    finished = finished or choice.get("finish_reason") is not None
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        r.error = f"{type(exc).__name__}: {exc}"
    r.latency = time.perf_counter() - started
    r.tool_steps = len(steps)
    if r.error is None and not (done and finished):
        r.error = "stream ended without finish_reason and [DONE]"
    return r


async def load(port: int, model_name: str, questions: list[str], clients: int) -> tuple[list[Result], float]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    queue = list(reversed(questions))
    results: list[Result] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            q = queue.pop()
            body = {"model": model_name, "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": q}]}
            results.append(await one_request(client, url, body))

    async with httpx.AsyncClient(timeout=httpx.Timeout(300.0), limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return results, time.perf_counter() - started


# --- in-process loop share -------------------------------------------------------------------

@dataclass
class LoopShare:
    share: float  # of summed wall time, outside generation and tools
    ms_outside_per_tool_call: float
    trajectories: int
    tool_calls: int
    sandbox_left: int  # this process's sandbox processes alive after the tools were closed


def loop_share(model: str | None, questions: list[str], clients: int) -> LoopShare:
    """`rollout` on what `build_state` gives the server, in batches of `clients` trajectories."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as the CLI does: no weight-loading bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from agent_runtime.backends.base import SamplingParams
    from agent_runtime.loop import rollout
    from agent_runtime.prompts import build_prompt_ids
    from server.build import build_state

    async def go() -> list:
        state = build_state(model=model, max_tool_calls=2, max_tokens=160, max_concurrency=clients)
        prompts = [build_prompt_ids(state.backend.tokenizer, state.protocol, [{"role": "user", "content": q}],
                                    state.tools.names) for q in questions]
        trajs = []
        try:
            for i in range(0, len(prompts), clients):
                trajs += await rollout(prompts[i:i + clients], state.backend, state.tools, protocol=state.protocol,
                                       budget=state.budget, sampling=SamplingParams(temperature=state.temperature))
        finally:
            tracker.sample()
            await state.aclose()
        return trajs

    with SandboxTracker(os.getpid()) as tracker:
        trajs = asyncio.run(go())
    time.sleep(1.0)
    outside = sum(t.wall_seconds - t.generation_seconds - t.tool_seconds for t in trajs)
    calls = sum(len(t.tool_calls) for t in trajs)
    return LoopShare(outside / sum(t.wall_seconds for t in trajs), 1000 * outside / max(1, calls), len(trajs), calls,
                     tracker.alive())


# --- report ----------------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def ms_pair(values: list[float]) -> str:
    return f"{1000 * pct(values, 50):.0f} / {1000 * pct(values, 99):.0f} ms" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000, help="measured requests, after the warm-up")
    parser.add_argument("--warm-requests", type=int, default=100, help="warm-up requests, not in the figures")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--model", default=None, help="passed to `tapo serve --model`; default: the tiny model")
    parser.add_argument("--loop-trajectories", type=int, default=None, help="in-process share; default 4 x clients")
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 clients, 60 requests, 20 warm")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests, args.warm_requests = 8, 60, 20
    n_loop = args.loop_trajectories or 4 * args.clients
    port = args.port or free_port()
    command = "python " + shlex.join(sys.argv)

    arithmetic = [t.question for t in fixture_tasks(7, 4 * (args.requests + args.warm_requests + n_loop))
                  if t.family == "arithmetic"]
    warm, measured = arithmetic[:args.warm_requests], arithmetic[args.warm_requests:][:args.requests]
    loop_questions = arithmetic[-n_loop:]
    system_before = sandbox_count()

    log = tempfile.NamedTemporaryFile("w+", prefix="serve_load_", suffix=".log", delete=False)
    t0 = time.perf_counter()
    server = start_server(port, args.clients, args.model, log)
    startup_s = time.perf_counter() - t0
    with SandboxTracker(server.pid) as tracker:
        try:
            model_name = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["model"]
            warm_results, _ = asyncio.run(load(port, model_name, warm, args.clients))
            mem_warm = memory(server.pid)
            before = scrape(port)
            results, wall = asyncio.run(load(port, model_name, measured, args.clients))
            after = scrape(port)
            mem_end = memory(server.pid)
            time.sleep(1.0)
            tracker.sample()
            idle = tracker.alive()
        finally:
            server.send_signal(signal.SIGTERM)
            t1 = time.perf_counter()
            try:
                exit_code = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                exit_code = server.wait()
            stop_s = time.perf_counter() - t1
    left_at_exit = tracker.alive()
    time.sleep(1.0)
    left_after_1s = tracker.alive()
    system_after = sandbox_count()

    loop = loop_share(args.model, loop_questions, args.clients)

    errors = [r for r in warm_results + results if r.error]
    ok = [r for r in results if not r.error]
    tokens = sum(r.completion_tokens for r in ok)
    steps = [r.tool_steps for r in ok]
    chat = 'tapo_request_seconds_sum{endpoint="chat"}'
    chat_s = metric_sum(after, chat) - metric_sum(before, chat)
    tool_s = metric_sum(after, "tapo_tool_seconds_sum") - metric_sum(before, "tapo_tool_seconds_sum")
    mib = lambda kib: f"{kib / 1024:.0f} MiB"  # noqa: E731

    rows = [
        ("clients / measured requests / warm-up requests", f"{args.clients} / {len(measured)} / {len(warm)}"),
        ("model", model_name),
        ("server start-up to healthy", f"{startup_s:.1f} s"),
        ("TTFT p50 / p99 (client: send to first reasoning or content delta)",
         ms_pair([r.ttft for r in ok if r.ttft is not None])),
        ("latency p50 / p99 (client: send to [DONE])", ms_pair([r.latency for r in ok])),
        ("requests/s (measured phase)", f"{len(ok) / wall:.1f}"),
        ("completion tokens/s (usage sum / measured wall time)",
         f"{tokens / wall:.0f} ({tokens} tokens in {wall:.1f} s)"),
        ("tool steps per request (mean; requests with none)",
         f"{statistics.mean(steps):.2f}; {steps.count(0)}" if steps else "n/a"),
        ("errors (warm-up + measured)", f"{len(errors)}" + (f" (first: {errors[0].error})" if errors else "")),
        ("server-side tool time / chat request time (/metrics deltas, measured phase)",
         f"{100 * tool_s / chat_s:.1f}% ({tool_s:.1f} s / {chat_s:.1f} s)" if chat_s else "n/a"),
        ("server process RSS after warm-up / after all", f"{mib(mem_warm[0])} / {mib(mem_end[0])}"),
        ("sandbox workers' RSS after warm-up / after all (sum over processes; count)",
         f"{mib(mem_warm[1])} ({mem_warm[2]}) / {mib(mem_end[1])} ({mem_end[2]})"),
        ("server's sandbox processes, idle server before stopping", f"{idle}"),
        ("SIGTERM to exit (exit status; -15: uvicorn re-raises SIGTERM after its graceful shutdown)",
         f"{stop_s:.1f} s ({exit_code})"),
        ("server's sandbox processes alive at exit / 1 s later", f"{left_at_exit} / {left_after_1s}"),
        ("loop share of wall time outside generation and tools (in-process rollout)",
         f"{100 * loop.share:.2f}% ({loop.ms_outside_per_tool_call:.2f} ms per tool call; {loop.trajectories} "
         f"trajectories, {loop.tool_calls} tool calls, batches of {args.clients})"),
        ("in-process run's sandbox processes alive after closing its tools", f"{loop.sandbox_left}"),
        ("all uid 60000-60999 processes on the machine, before / after the server (other work's too)",
         f"{system_before} / {system_after}"),
    ]
    print(f"`{command}`\n")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; server log {log.name}\n")
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\nSandbox processes are those with a uid in 60000-60999; the server's are told from other work's by "
          "the PID namespaces of its workers (sampled every 0.5 s while it ran).")
    print("Loop share method: after the server stopped, `agent_runtime.loop.rollout` ran in this process on the "
          "engine, tools and budget `server.build.build_state` gives the server (same kind of questions, greedy), "
          "and the share is sum(wall - generation - tool) / sum(wall) over the `Trajectory` timings. The loop "
          "counts its per-token work (detokenizing, parsing, events) inside `generation_seconds`, so this share "
          "is what the loop spends between turns: dispatching the tool call and injecting its output.")
    if errors or left_at_exit or left_after_1s or loop.sandbox_left:
        sys.exit(1)


if __name__ == "__main__":
    main()
