"""CPU engines side by side on the default model: our transformers engine (fp32), padded ``generate``,
our llama.cpp engine, bare llama-cpp-python.

    python benchmarks/cpu_engines.py [--type q8_0] [--tokens 128] [--runs 3] [--only transformers] [--json OUT]

The default model (the demo agent: SmolLM2-135M-Instruct plus its LoRA adapter) is exported once to a
GGUF file (``--type``), which both llama.cpp columns load; transformers runs the same merged weights
in fp32. Each engine runs in a process of its own, one after another:

- decode tokens/s at batch 1 (greedy; the time after the first token, over the tokens after it);
- aggregate tokens/s with 8 and 32 concurrent streams (sampled, T=1, distinct seeds; all tokens of
  all streams over the wall time). Bare llama-cpp-python's ``Llama`` decodes one sequence at a
  time, so its streams run one after another, which is how it serves concurrent requests;
- time to first token on a prompt of about 1,000 tokens;
- one whole demo question ("What is 4821 * 37?") through the agent loop with the sandboxed code
  tool, end to end (bare llama-cpp-python and ``generate`` have no loop: not measured);
- continuing a trajectory of about 2,000 tokens after a tool call (17 tokens of tool output fed into
  the slot it left) against feeding the same 2,017 tokens into a cold slot.

Plain ``model.generate`` is what a transformers user batches with: the same weights (loaded apart
from the engine's, whose layers run packed weights) and prompts, left-padded into one batch; a row
that has ended keeps its place (and its compute) until all end, and only its tokens up to its end
count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_runtime.backends.base import SamplingParams
from agent_runtime.backends.llamacpp_engine import LlamaCppBackend, cpu_count
from agent_runtime.backends.transformers_engine import TransformersBackend
from agent_runtime.budget import Budget
from agent_runtime.loop import run_to_end
from agent_runtime.models.gguf_export import exported_gguf_path
from agent_runtime.models.resolve import resolve_model
from agent_runtime.prompts import build_prompt_ids
from agent_runtime.protocol import TAPO
from agent_runtime.toolset import default_tools

STREAM_PROMPTS = [
    "Tell me about the history of {}.", "Write a short story about {}.", "Explain how {} works.",
    "Describe a day in the life of {}.",
]
TOPICS = ["bridges", "bees", "a lighthouse keeper", "clocks", "the moon", "bread", "rivers", "trains"]
DEMO_QUESTION = "What is 4821 * 37?"


def chat_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


def stream_prompts(tokenizer: Any, n: int) -> list[list[int]]:
    return [chat_ids(tokenizer, STREAM_PROMPTS[i % len(STREAM_PROMPTS)].format(TOPICS[i % len(TOPICS)]))
            for i in range(n)]


def long_prompts(tokenizer: Any, n: int, target: int = 1000) -> list[list[int]]:
    """``n`` prompts of ``target`` tokens that differ from their first words on, so that no engine
    reuses keys and values of an earlier one: every time to first token is a cold prefill."""
    sentence = "The river town keeps a ledger of every boat that passes, with its cargo and its crew. "
    text = sentence * (target // len(tokenizer(sentence)["input_ids"]) + 1)
    prompts = []
    for i in range(n):
        ids = chat_ids(tokenizer, f"Ledger {TOPICS[i % len(TOPICS)]} {i}. " + text + "What does the town keep?")
        prompts.append(ids[:target - 8] + ids[-8:] if len(ids) > target else ids)
    return prompts


# ---- our engines (the Backend protocol) ---------------------------------------------------------


async def timed_generate(backend: Any, prompt: list[int], params: SamplingParams) -> tuple[int, float, float]:
    """(tokens, seconds to the first token, seconds in all)."""
    start = time.perf_counter()
    first, n = None, 0
    async for chunk in backend.generate(prompt, params):
        n += len(chunk.token_ids)
        if first is None:
            first = time.perf_counter() - start
    return n, first or 0.0, time.perf_counter() - start


async def ours_decode(backend: Any, prompt: list[int], tokens: int) -> float:
    n, first, total = await timed_generate(backend, prompt, SamplingParams(max_tokens=tokens, temperature=0.0))
    return (n - 1) / (total - first)


async def ours_streams(backend: Any, prompts: list[list[int]], tokens: int) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*[
        timed_generate(backend, p, SamplingParams(max_tokens=tokens, temperature=1.0, seed=i))
        for i, p in enumerate(prompts)])
    return sum(r[0] for r in results) / (time.perf_counter() - start)


async def ours_ttft(backend: Any, prompt: list[int]) -> float:
    _, first, _ = await timed_generate(backend, prompt, SamplingParams(max_tokens=1, temperature=0.0))
    return first


async def ours_demo_question(backend: Any, tools: Any) -> tuple[float, str | None, int]:
    prompt = build_prompt_ids(backend.tokenizer, TAPO, DEMO_QUESTION, tools.names)
    start = time.perf_counter()
    traj = await run_to_end(prompt, backend, tools, budget=Budget(max_tool_calls=4, max_total_tokens=512),
                            sampling=SamplingParams(temperature=0.0))
    return time.perf_counter() - start, traj.answer, len(traj.tool_calls)


async def ours_continuation(backend: Any, tokenizer: Any) -> tuple[float, float]:
    """Seconds to the first token after 17 tokens of tool output on a ~2,000-token trajectory, fed into
    the slot the trajectory left, and fed whole into a cold slot (a prompt that shares no prefix)."""
    trajectory = long_prompts(tokenizer, 1, target=2000)[0]
    generated = [c.token_ids[0] async for c in backend.generate(trajectory, SamplingParams(max_tokens=8, temperature=0.0))]
    tool_output = tokenizer("<response>\n178377\n</response>\n", add_special_tokens=False)["input_ids"]
    tool_output = (tool_output * 17)[:17]
    continued = trajectory + generated + tool_output
    before = backend.stats["reused_tokens"]
    reuse = await ours_ttft(backend, continued)
    assert backend.stats["reused_tokens"] - before == len(trajectory) + len(generated) - 1, "the slot was not reused"
    cold = long_prompts(tokenizer, 2, target=2000)[1]
    cold = cold[: len(continued)] + tool_output[: max(0, len(continued) - len(cold))]
    return reuse, await ours_ttft(backend, cold)


async def measure_ours(backend: Any, tokenizer: Any, tools: Any, tokens: int, repeats: int) -> dict:
    prompt = stream_prompts(tokenizer, 1)[0]
    await ours_decode(backend, prompt, 8)  # warm up (first-call allocations)
    result = {"decode_tok_s": statistics.median([await ours_decode(backend, prompt, tokens) for _ in range(repeats)])}
    for n in (8, 32):
        result[f"streams_{n}_tok_s"] = await ours_streams(backend, stream_prompts(tokenizer, n), tokens // 2)
    long_ids = long_prompts(tokenizer, repeats)
    result["ttft_1k_s"] = statistics.median([await ours_ttft(backend, ids) for ids in long_ids])
    result["ttft_prompt_tokens"] = len(long_ids[0])
    seconds, answer, calls = await ours_demo_question(backend, tools)
    result.update(demo_question_s=seconds, demo_answer=answer, demo_tool_calls=calls)
    result["continue_2k_s"], result["reprefill_2k_s"] = await ours_continuation(backend, tokenizer)
    return result


# ---- plain transformers generate ----------------------------------------------------------------


def padded_generate(model: Any, tokenizer: Any, prompts: list[list[int]], tokens: int, *, sample: bool) -> int:
    """Tokens made by one left-padded ``generate`` over ``prompts``, each row counted up to its end."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=tokens, do_sample=sample,
                             temperature=1.0 if sample else None, top_p=1.0, top_k=0, pad_token_id=pad)
    made = 0
    for row in out[:, width:].tolist():
        ends = [i for i, t in enumerate(row) if t in eos]
        made += ends[0] + 1 if ends else len(row)
    return made


def measure_generate(model: Any, tokenizer: Any, tokens: int, repeats: int) -> dict:
    import torch

    prompt = stream_prompts(tokenizer, 1)[0]

    def seconds(n: int) -> float:
        start = time.perf_counter()
        padded_generate(model, tokenizer, [prompt], n, sample=False)
        return time.perf_counter() - start

    seconds(8)  # warm up
    # Decode rate: the time of tokens - 1 more tokens, without the prefill and first token.
    result = {"decode_tok_s": statistics.median([(tokens - 1) / (seconds(tokens) - seconds(1)) for _ in range(repeats)])}
    for n in (8, 32):
        torch.manual_seed(0)
        start = time.perf_counter()
        made = padded_generate(model, tokenizer, stream_prompts(tokenizer, n), tokens // 2, sample=True)
        result[f"streams_{n}_tok_s"] = made / (time.perf_counter() - start)
    long_ids = long_prompts(tokenizer, repeats)
    ttft = []
    for ids in long_ids:
        start = time.perf_counter()
        padded_generate(model, tokenizer, [ids], 1, sample=False)
        ttft.append(time.perf_counter() - start)
    result["ttft_1k_s"] = statistics.median(ttft)
    result["ttft_prompt_tokens"] = len(long_ids[0])
    return result


# ---- bare llama-cpp-python ----------------------------------------------------------------------


def bare_generate(llm: Any, prompt: list[int], tokens: int, *, temperature: float, seed: int) -> tuple[int, float, float]:
    llm.reset()  # a fresh request: nothing of the previous one is reused
    llm.set_seed(seed)
    start = time.perf_counter()
    first, n = None, 0
    for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=temperature, top_p=1.0, top_k=0,
                                   min_p=0.0, repeat_penalty=1.0, stream=True):
        n += 1
        if first is None:
            first = time.perf_counter() - start
    return n, first or 0.0, time.perf_counter() - start


def measure_bare(gguf: str, tokenizer: Any, tokens: int, repeats: int, context: int) -> dict:
    import llama_cpp

    threads = cpu_count()
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = stream_prompts(tokenizer, 1)[0]

    def decode() -> float:
        n, first, total = bare_generate(llm, prompt, tokens, temperature=0.0, seed=0)
        return (n - 1) / (total - first)

    decode()
    result = {"decode_tok_s": statistics.median([decode() for _ in range(repeats)])}
    for n in (8, 32):
        start = time.perf_counter()
        made = sum(bare_generate(llm, p, tokens // 2, temperature=1.0, seed=i)[0]
                   for i, p in enumerate(stream_prompts(tokenizer, n)))
        result[f"streams_{n}_tok_s"] = made / (time.perf_counter() - start)
    long_ids = long_prompts(tokenizer, repeats)
    result["ttft_1k_s"] = statistics.median([bare_generate(llm, ids, 1, temperature=0.0, seed=0)[1] for ids in long_ids])
    result["ttft_prompt_tokens"] = len(long_ids[0])
    return result


# ---- report -------------------------------------------------------------------------------------


def table(results: dict[str, dict]) -> str:
    rows = [("decode tok/s, batch 1", "decode_tok_s", "{:.1f}"), ("aggregate tok/s, 8 streams", "streams_8_tok_s", "{:.1f}"),
            ("aggregate tok/s, 32 streams", "streams_32_tok_s", "{:.1f}"), ("time to first token, 1k prompt (s)", "ttft_1k_s", "{:.2f}"),
            ("demo question end to end (s)", "demo_question_s", "{:.2f}"),
            ("continue a 2k trajectory after a tool call (s)", "continue_2k_s", "{:.3f}"),
            ("the same 2k tokens into a cold slot (s)", "reprefill_2k_s", "{:.2f}")]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        cells = [fmt.format(results[n][key]) if key in results[n] else "n/a" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def measure_engine(engine: str, args: argparse.Namespace) -> dict[str, dict]:
    """The columns of one engine, measured in this process."""
    model = resolve_model(None)
    results: dict[str, dict] = {}
    if engine == "bare":
        from agent_runtime.models.resolve import load_tokenizer

        gguf = str(exported_gguf_path(model, args.type))
        results[f"bare llama-cpp-python {args.type}"] = measure_bare(gguf, load_tokenizer(model), args.tokens,
                                                                     args.repeats, args.context)
        return results
    tools = default_tools(search_backend="bm25")
    await tools.astart()  # the sandbox workers warm up before any timing, not during it
    try:
        if engine == "transformers":
            backend = TransformersBackend.from_pretrained(model, max_slots=32, context_length=args.context)
        else:
            backend = LlamaCppBackend.from_pretrained(model, gguf_type=args.type, max_slots=32, context_length=args.context)
        try:
            name = "transformers fp32" if engine == "transformers" else f"ours llamacpp {args.type}"
            results[name] = await measure_ours(backend, backend.tokenizer, tools, args.tokens, args.repeats)
        finally:
            await backend.aclose()
        if engine == "transformers":
            # A model of its own: the engine's layers run packed weights (packed_linear) in inference mode.
            import torch

            from agent_runtime.models.resolve import load_causal_lm

            plain, tokenizer = load_causal_lm(model, dtype=torch.float32, attn_implementation="sdpa")
            results["padded generate fp32"] = measure_generate(plain, tokenizer, args.tokens, args.repeats)
    finally:
        await tools.aclose()
    return results


def measure_all(args: argparse.Namespace) -> dict[str, dict]:
    """Each engine in a process of its own (llama.cpp decodes at half speed for a while in a process
    where torch has just been busy), the engines interleaved ``--runs`` times; each figure is the
    median of its runs, since one run on these shared machines can be off by a third."""
    exported_gguf_path(resolve_model(None), args.type)  # export once, before any timing
    engines = ["transformers"] if args.only == "transformers" else ["transformers", "llamacpp", "bare"]
    runs: list[dict[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            runs.append({})
            for engine in engines:
                out = Path(tmp) / f"{engine}-{run}.json"
                command = [sys.executable, __file__, "--engine", engine, "--json", str(out), "--type", args.type,
                           "--tokens", str(args.tokens), "--repeats", str(args.repeats), "--context", str(args.context)]
                subprocess.run(command, check=True)
                runs[-1].update(json.loads(out.read_text())["results"])
    return {column: {key: statistics.median(r[column][key] for r in runs) if isinstance(value, float) else value
                     for key, value in figures.items()}
            for column, figures in runs[0].items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--type", default="q8_0", choices=("f32", "f16", "q8_0"), help="the GGUF export's tensor type")
    p.add_argument("--tokens", type=int, default=128, help="new tokens at batch 1 (half that per stream)")
    p.add_argument("--repeats", type=int, default=3, help="batch-1 and first-token measurements in each run")
    p.add_argument("--runs", type=int, default=3, help="runs of every engine, interleaved; figures are medians")
    p.add_argument("--context", type=int, default=2048)
    p.add_argument("--only", choices=("transformers",), help="only our transformers engine and padded generate")
    p.add_argument("--engine", choices=("transformers", "llamacpp", "bare"), help=argparse.SUPPRESS)  # one column set
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.engine:
        results = asyncio.run(measure_engine(args.engine, args))
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        return
    results = measure_all(args)
    print(table(results))
    hf, generate = results["transformers fp32"], results["padded generate fp32"]
    for n, target in ((8, 1.2), (32, 1.5)):
        key = f"streams_{n}_tok_s"
        print(f"{n} streams: transformers engine / padded generate = {hf[key] / generate[key]:.2f}x (target >= {target})")
    print(f"continuing a 2k trajectory: {hf['reprefill_2k_s'] / hf['continue_2k_s']:.0f}x cheaper than a cold slot (target >= 20)")
    if args.only != "transformers":
        ours, bare = results[f"ours llamacpp {args.type}"], results[f"bare llama-cpp-python {args.type}"]
        print(f"batch 1: ours / bare = {ours['decode_tok_s'] / bare['decode_tok_s']:.2f}x (target >= 0.9), "
              f"ours / transformers = {ours['decode_tok_s'] / hf['decode_tok_s']:.2f}x (target >= 5)")
        for n in (8, 32):
            key = f"streams_{n}_tok_s"
            print(f"{n} streams: ours / transformers = {ours[key] / hf[key]:.2f}x, ours / bare = {ours[key] / bare[key]:.2f}x")
        print(f"demo question: transformers {hf['demo_answer']!r} with {hf['demo_tool_calls']} tool call(s), "
              f"ours {ours['demo_answer']!r} with {ours['demo_tool_calls']} tool call(s)")
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[2]:.2f} (15 min)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
