"""What the loop costs outside generation and tools, and what KV reuse saves after a tool call.

    python benchmarks/loop_overhead.py [--quick]

1. Loop overhead per tool turn: trajectories replayed by an instant backend (no model) with an
   instant tool, so all wall time is the loop's own work (detokenizing, parsing, injecting,
   events); then the same questions on the tiny model, with the share of wall time outside
   generation and tools.
2. Continuing after a tool call on a 2,000-token trajectory: feeding only the new tokens into the
   parked KV slot against re-prefilling the whole prefix, on an architecture of SmolLM2-135M's
   size (random weights: the cost does not depend on their values).
3. The batching side of the trade-off: decode step time against the number of slots decoded
   together, and the KV memory a parked slot holds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scripted_backend import EOS, ScriptedBackend  # noqa: E402

from agent_runtime.backends.base import SamplingParams  # noqa: E402
from agent_runtime.backends.transformers_engine import TransformersBackend  # noqa: E402
from agent_runtime.budget import Budget  # noqa: E402
from agent_runtime.loop import rollout, run_to_end  # noqa: E402
from agent_runtime.models.fixture_tasks import fixture_search, fixture_tasks, run_python  # noqa: E402
from agent_runtime.models.tiny import tiny_model_path  # noqa: E402
from agent_runtime.prompts import build_prompt_ids  # noqa: E402
from agent_runtime.protocol import TAPO  # noqa: E402
from agent_runtime.tools import ToolRegistry  # noqa: E402


def tools() -> ToolRegistry:
    reg = ToolRegistry()
    reg.add_function("search", fixture_search)
    reg.add_function("code", run_python)
    return reg


def pure_loop_overhead(tokenizer, turns_per_traj: int, n_traj: int) -> dict:
    instant = ToolRegistry()
    instant.add_function("code", lambda _: "12345")
    turn = "<think>I need to calculate this step by step.</think>\n<code>print(123 * 456)</code>"
    script = [turn] * turns_per_traj + ["<think>Done.</think>\n<answer>56088</answer>" + EOS]
    budget = Budget(max_tool_calls=turns_per_traj, max_total_tokens=100_000)

    async def go() -> tuple[float, int]:
        total_tokens = 0
        start = time.perf_counter()
        for _ in range(n_traj):
            backend = ScriptedBackend(tokenizer, script)
            traj = await run_to_end([1, 2, 3], backend, instant, budget=budget)
            total_tokens += len(traj.completion_ids)
        return time.perf_counter() - start, total_tokens

    wall, tokens = asyncio.run(go())
    turns = n_traj * turns_per_traj
    return {"ms_per_tool_turn": 1000 * wall / turns, "us_per_token": 1e6 * wall / tokens}


def model_loop_share(path: Path, n: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    backend = TransformersBackend(model, tokenizer, max_slots=n)
    questions = [t.question for t in fixture_tasks(21, 4 * n) if t.family != "direct"][:n]
    prompts = [build_prompt_ids(tokenizer, TAPO, q) for q in questions]
    budget = Budget(max_tool_calls=2, max_tokens_per_turn=64, max_total_tokens=192)

    async def go():
        trajs = await rollout(prompts, backend, tools(), budget=budget, sampling=SamplingParams(temperature=0))
        await backend.aclose()
        return trajs

    trajs = asyncio.run(go())
    outside = [t.wall_seconds - t.generation_seconds - t.tool_seconds for t in trajs]
    tool_turns = sum(len(t.tool_calls) for t in trajs)
    return {
        "trajectories": n,
        "tool_turns": tool_turns,
        "outside_share": sum(outside) / sum(t.wall_seconds for t in trajs),
        "ms_outside_per_tool_turn": 1000 * sum(outside) / max(1, tool_turns),
    }


def smollm2_sized_model():
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True, rope_theta=100000,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), eos_token="t2")
    return model, tok


def kv_reuse_vs_reprefill(model, tokenizer, prefix_len: int, injected: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(3, model.config.vocab_size, (prefix_len,), generator=gen).tolist()
    params = SamplingParams(max_tokens=16, temperature=0)

    async def first_token_seconds(backend, prompt) -> float:
        start = time.perf_counter()
        stream = backend.generate(prompt, SamplingParams(max_tokens=1, temperature=0))
        async for _ in stream:
            pass
        return time.perf_counter() - start

    async def go(reuse: bool) -> list[float]:
        times = []
        for r in range(repeats):
            backend = TransformersBackend(model, tokenizer, max_slots=2, reuse_kv=reuse, batch_window_s=0)
            ids = []
            async for chunk in backend.generate(prefix, params):
                ids += chunk.token_ids
            tool_output = torch.randint(3, model.config.vocab_size, (injected,), generator=gen).tolist()
            times.append(await first_token_seconds(backend, prefix + ids + tool_output))
            await backend.aclose()
        return times

    reuse = asyncio.run(go(True))
    reprefill = asyncio.run(go(False))
    return {"reuse_s": statistics.median(reuse), "reprefill_s": statistics.median(reprefill)}


def decode_step_times(model, tokenizer, batches: list[int], context: int, steps: int) -> dict[int, float]:
    out = {}
    for batch in batches:
        backend = TransformersBackend(model, tokenizer, max_slots=batch, batch_window_s=0.01)
        gen = torch.Generator().manual_seed(batch)
        prompts = [torch.randint(3, model.config.vocab_size, (context,), generator=gen).tolist() for _ in range(batch)]

        async def one(p):
            async for _ in backend.generate(p, SamplingParams(max_tokens=steps, temperature=0)):
                pass

        async def go():
            await asyncio.gather(*(one(p) for p in prompts))  # warm-up: prefill every slot
            before = dict(backend.stats)
            start = time.perf_counter()
            await asyncio.gather(*(one(p) for p in prompts))  # prompts now in cache: mostly decode
            elapsed = time.perf_counter() - start
            await backend.aclose()
            return elapsed / max(1, backend.stats["decode_steps"] - before["decode_steps"])

        out[batch] = asyncio.run(go())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    path = tiny_model_path()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    pure = pure_loop_overhead(tokenizer, turns_per_traj=4, n_traj=5 if args.quick else 50)
    print("## Loop overhead (instant backend, instant tool)\n")
    print(f"| per tool turn | per token |\n|---|---|\n| {pure['ms_per_tool_turn']:.2f} ms | {pure['us_per_token']:.0f} µs |\n")

    share = model_loop_share(path, 8 if args.quick else 32)
    print("## Tiny model, greedy, concurrent trajectories\n")
    print("| trajectories | tool turns | wall time outside generation and tools | per tool turn |\n|---|---|---|---|")
    print(f"| {share['trajectories']} | {share['tool_turns']} | {100 * share['outside_share']:.1f}% | "
          f"{share['ms_outside_per_tool_turn']:.1f} ms |\n")

    model, tok = smollm2_sized_model()
    reps = 1 if args.quick else 3
    kv = kv_reuse_vs_reprefill(model, tok, prefix_len=2000, injected=16, repeats=reps)
    print("## Continuing after a tool call at 2,000 tokens (SmolLM2-135M-sized, fp32)\n")
    print("| KV reuse (16 new tokens) | re-prefill (2,032 tokens) | ratio |\n|---|---|---|")
    print(f"| {kv['reuse_s'] * 1000:.0f} ms | {kv['reprefill_s'] * 1000:.0f} ms | {kv['reprefill_s'] / kv['reuse_s']:.1f}x |\n")

    steps = decode_step_times(model, tok, [1, 8] if args.quick else [1, 8, 32], context=200, steps=8 if args.quick else 24)
    cfg = model.config
    kv_bytes_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    print("## Batched decode (SmolLM2-135M-sized, fp32, 200-token contexts)\n")
    print("| slots decoded together | ms per step | tokens/s |\n|---|---|---|")
    for batch, seconds in steps.items():
        print(f"| {batch} | {seconds * 1000:.0f} | {batch / seconds:.0f} |")
    print(f"\nA parked slot holds {kv_bytes_per_token / 1024:.0f} KiB of keys and values per token "
          f"({kv_bytes_per_token * 2000 / 2**20:.0f} MiB at 2,000 tokens).")


if __name__ == "__main__":
    main()
