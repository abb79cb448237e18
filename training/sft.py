"""``python -m training.sft``: cold-start SFT on agent trajectories, with TRL's SFTTrainer and LoRA.

Input is trajectory JSONL (the one schema `tapo eval`, `tapo run --json` and training dumps write),
or ``--teacher URL``: any OpenAI-compatible completions endpoint that runs our protocol, driven
through the agent loop over ``--tasks`` rows, keeping only trajectories judged correct (rejection
sampling). A trajectory is learned on the ids the loop recorded when they belong to the student's
tokenizer, otherwise re-tokenized piece by piece as the loop tokenizes: the model's tokens are
learned, injected tool output gets label -100, exactly the tokens RL masks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from agent_runtime.protocol import Protocol, get_protocol
from training import configure_logging
from training.data import DataError, iter_json_lines

log = logging.getLogger("training.sft")

__all__ = ["completion_pieces", "load_trajectories", "sft_dataset", "collect_from_teacher", "main"]


def completion_pieces(text: str, protocol: Protocol) -> list[tuple[str, bool]] | None:
    """A completion's text as ``(text, is_model_text)`` pieces: each tool observation the loop injected
    (the protocol's observation template around the output) is one injected piece.

    ``None`` when the text holds anything else the loop injects (an invalid-action message): such a
    trajectory is no example to learn from.
    """
    prefix, _, suffix = protocol.observation_template.partition("{output}")
    pattern = re.compile(re.escape(prefix) + r".*?" + re.escape(suffix), re.DOTALL)
    pieces: list[tuple[str, bool]] = []
    start = 0
    for m in pattern.finditer(text):
        if m.start() > start:
            pieces.append((text[start:m.start()], True))
        pieces.append((m.group(0), False))
        start = m.end()
    if start < len(text):
        pieces.append((text[start:], True))
    marker = protocol.invalid_action_message(()).strip().split(".")[0]  # "My previous action is invalid"
    if any(marker in piece for piece, _ in pieces):
        return None
    return pieces


def load_trajectories(paths: Iterable[str | Path], *, correct_only: bool = True) -> list[dict[str, Any]]:
    """Trajectory records from JSONL files; bad lines stop with ``file:line``. ``correct_only`` keeps
    records judged correct (``correct`` truthy) and ended by an answer."""
    records = []
    for path in paths:
        for where, record in iter_json_lines(path):
            if not isinstance(record, dict) or not isinstance(record.get("question"), str) \
                    or not isinstance(record.get("text"), str):
                raise DataError(f"{where}: a trajectory record needs string fields 'question' and 'text'")
            if correct_only and not (record.get("correct") and record.get("final_answer") is not None):
                continue
            records.append(record)
    return records


def sft_dataset(records: list[dict[str, Any]], tokenizer: Any, protocol: Protocol, *, max_length: int) -> Any:
    """``datasets.Dataset`` of ``input_ids`` and ``labels`` for SFTTrainer.

    A record that carries the loop's ids (``prompt_ids``, ``completion_ids``, ``mask``, made with this
    tokenizer) is learned on exactly those ids: labels are the model tokens (mask 1), so what was
    sampled is what is learned, and a block the model wrote itself is never mistaken for tool output.
    Other records (text only, or ids of another tokenizer) are re-tokenized piece by piece, with the
    prompt built as the trainer and the server build it. Records with in-band error messages, or
    longer than ``max_length``, are left out with a count in the log."""
    import datasets

    from agent_runtime.prompts import build_prompt_ids, encode_pieces

    eos = tokenizer.eos_token_id
    rows, unusable, too_long, retokenized = [], 0, 0, 0
    for record in records:
        loop_ids = _loop_ids(record, tokenizer)
        if protocol.function_calling:
            # The chat template's tool turns cannot be told from model text in a decoded completion:
            # only the loop's own ids are learned (a teacher's or a rollout's trajectory records).
            if loop_ids is None:
                unusable += 1
                continue
            ids, labels = loop_ids
        elif not (pieces := completion_pieces(record["text"], protocol)):
            unusable += 1
            continue
        elif loop_ids is not None:
            ids, labels = loop_ids
        else:
            retokenized += "completion_ids" in record
            ids, labels = encode_pieces(tokenizer, build_prompt_ids(tokenizer, protocol, record["question"]), pieces,
                                        eos)
        if len(ids) > max_length:
            too_long += 1
            continue
        rows.append({"input_ids": ids, "labels": labels})
    if unusable or too_long:
        log.warning("left out %d trajectories with in-band error messages (in a function-calling protocol: "
                    "without the loop's ids for this tokenizer) and %d longer than %d tokens",
                    unusable, too_long, max_length)
    if retokenized:
        log.warning("%d trajectories carry ids that do not decode to their text with this tokenizer (made by "
                    "another model's tokenizer?): re-tokenized from their text", retokenized)
    if not rows:
        raise DataError("no usable trajectories (none correct, or none short enough)")
    return datasets.Dataset.from_list(rows)


def _loop_ids(record: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int]] | None:
    """``(input_ids, labels)`` from the ids the loop recorded, or ``None`` when the record has none that
    belong to ``tokenizer`` (they must decode to the record's text)."""
    from agent_runtime.detok import decode

    prompt, completion, mask = (record.get(k) for k in ("prompt_ids", "completion_ids", "mask"))
    if not (isinstance(prompt, list) and isinstance(completion, list) and isinstance(mask, list)) \
            or not completion or len(mask) != len(completion):
        return None
    vocab = len(tokenizer)
    if any(not isinstance(i, int) or not 0 <= i < vocab for i in prompt + completion):
        return None
    if decode(tokenizer, completion) != record["text"]:
        return None
    labels = [-100] * len(prompt) + [i if m else -100 for i, m in zip(completion, mask)]
    return prompt + completion, labels


async def _collect(rows: list[Any], backend: Any, tools: Any, protocol: Protocol, *, samples: int,
                   temperature: float, seed: int, max_tool_calls: int, concurrency: int) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    from agent_runtime.backends.base import SamplingParams
    from agent_runtime.budget import Budget
    from agent_runtime.loop import run_to_end
    from agent_runtime.prompts import build_prompt_ids
    from agent_runtime.records import trajectory_record
    from training.evaluate import judge_trajectory

    limit = asyncio.Semaphore(concurrency)
    budget = Budget(max_tool_calls=max_tool_calls)

    async def one(i: int, k: int) -> dict[str, Any]:
        row = rows[i]
        async with limit:
            prompt = build_prompt_ids(backend.tokenizer, protocol, row.question)
            params = SamplingParams(temperature=temperature, seed=seed + 1000 * (i * samples + k))
            traj = await run_to_end(prompt, backend, tools, protocol=protocol, budget=budget, sampling=params)
        score = judge_trajectory(traj, row.ground_truth, row.data_source, protocol)
        return trajectory_record(traj, id=f"{row.data_source}-{i}-{k}", question=row.question, gold=row.golds,
                                 data_source=row.data_source, correct=score.correct, reward=score.total)

    tasks = [asyncio.ensure_future(one(i, k)) for i in range(len(rows)) for k in range(samples)]
    with tqdm(total=len(tasks), desc="teacher", unit="traj") as bar:
        for task in asyncio.as_completed(tasks):
            await task
            bar.update(1)
    return [t.result() for t in tasks]


def collect_from_teacher(url: str, tokenizer_model: str, tasks_path: str, *, protocol: Protocol,
                         samples: int = 4, temperature: float = 1.0, seed: int = 0, max_tool_calls: int = 4,
                         concurrency: int = 32, search_backend: str = "bm25", search_index: str | None = None,
                         api_key: str | None = None) -> list[dict[str, Any]]:
    """Trajectories from a teacher endpoint through the loop (plain question rows only)."""
    from agent_runtime.backends import make_backend
    from agent_runtime.models.resolve import resolve_model
    from agent_runtime.toolset import default_tools
    from training.data import load_rows

    rows = [r for r in load_rows(tasks_path) if r.question is not None]
    if not rows:
        raise DataError(f"{tasks_path}: no plain question rows to send to the teacher")
    kwargs = {"api_key": api_key} if api_key else {}
    backend = make_backend(resolve_model(tokenizer_model), "remote", url, **kwargs)
    tools = default_tools(search_backend=search_backend, search_index=search_index)

    async def go() -> list[dict[str, Any]]:
        await tools.astart()
        try:
            return await _collect(rows, backend, tools, protocol, samples=samples, temperature=temperature,
                                  seed=seed, max_tool_calls=max_tool_calls, concurrency=concurrency)
        finally:
            await tools.aclose()
            await backend.aclose()

    return asyncio.run(go())


def train_sft(records: list[dict[str, Any]], *, model_name: str, output_dir: Path, protocol: Protocol,
              lora: bool = True, lora_r: int = 16, lora_alpha: int = 32, epochs: float = 2.0,
              max_steps: int = -1, learning_rate: float = 2e-4, batch_size: int = 8, grad_accum: int = 1,
              max_length: int = 1024, seed: int = 0, report_to: str = "none", compute: str = "auto",
              save_steps: int | None = None, resume: bool = False) -> Path:
    """SFT (LoRA by default); returns ``output_dir/final``: the adapter (LoRA) or the full model.

    ``compute``: ``bf16`` autocast, ``fp32``, or ``auto`` (bf16 where the hardware has it natively).
    ``save_steps``: a checkpoint every so many steps (default: each epoch); ``resume``: go on from the
    newest checkpoint in ``output_dir`` (same schedule, same data order), if there is one."""
    import torch
    from trl import SFTConfig

    from training.checkpointing import with_checkpointing
    from training.policy import bf16_compute, load_policy

    on_gpu = torch.cuda.is_available()
    # A LoRA adapter given as the model goes on training in that same adapter (its rank and targets):
    # one adapter ships, as when TAPO continues the SFT adapter.
    model, tokenizer = load_policy(model_name, dtype=torch.bfloat16 if on_gpu else torch.float32, continue_adapter=lora)
    go_on = hasattr(model, "peft_config")
    dataset = sft_dataset(records, tokenizer, protocol, max_length=max_length)
    log.info("SFT on %d trajectories%s", len(dataset), f", going on in the adapter {model_name}" if go_on else "")
    peft_config = None
    if lora and not go_on:
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    args = SFTConfig(**with_checkpointing(SFTConfig, dict(
        output_dir=str(output_dir), num_train_epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum, max_length=max_length,
        lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=5, seed=seed,
        save_strategy="steps" if save_steps else "epoch", save_steps=save_steps or 500,
        report_to=report_to, bf16=compute == "bf16" or (compute == "auto" and bf16_compute()), use_cpu=not on_gpu, dataset_num_proc=None,
        gradient_checkpointing=False,  # small models; and the shared-prefix loss needs the prefix's cache
        # Rows of similar length together: padding costs compute, and CPU attention memory grows with
        # batch x width x (prefix + width).
        train_sampling_strategy="group_by_length",
    )))
    trainer = _prefix_sharing_trainer_class()(model=model, args=args, train_dataset=dataset,
                                              processing_class=tokenizer, peft_config=peft_config)
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(output_dir)) if resume and output_dir.is_dir() else None
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    final = output_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(final)
    return final


def _prefix_sharing_trainer_class() -> type:
    """SFTTrainer whose loss computes the rows' shared prefix (the protocol's system prompt) once per
    batch: about 3x less compute on agent examples, the same loss and gradients."""
    import torch
    from trl import SFTTrainer

    from agent_runtime.models.prefix_loss import prefix_shared_loss

    class PrefixSharingSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids, labels = inputs["input_ids"], inputs["labels"]
            mask = inputs.get("attention_mask")
            same = (ids == ids[:1]).all(dim=0) & (labels == -100).all(dim=0)
            if mask is not None:
                same &= mask.bool().all(dim=0)
            prefix_len = int(same.int().cumprod(dim=0).sum()) - 1  # the token after it must carry no label
            # Recomputation would refill the prefix's cache. (transformers < 5.2x knows only the old name.)
            checkpointing = getattr(model, "is_activation_checkpointing", None)
            if checkpointing is None:
                checkpointing = getattr(model, "is_gradient_checkpointing", False)
            if return_outputs or prefix_len < 2 or checkpointing:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            lengths = mask.sum(dim=1).tolist() if mask is not None else [ids.shape[1]] * len(ids)
            rows = [(ids[i, :n].tolist(), labels[i, :n].tolist()) for i, n in enumerate(lengths)]
            pad = self.processing_class.pad_token_id
            # The loss calls the decoder directly, outside the autocast that wraps model.forward.
            with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
                if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
                    total, _ = prefix_shared_loss(model, rows, prefix_len, pad, reduction="sum")
                    return total / num_items_in_batch.to(total.device)
                loss, _ = prefix_shared_loss(model, rows, prefix_len, pad)
                return loss

    return PrefixSharingSFTTrainer


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.sft", description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", default=[], help="trajectory JSONL (repeatable)")
    p.add_argument("--teacher", help="OpenAI-compatible completions URL of a teacher running our protocol")
    p.add_argument("--teacher-model", help="the teacher's tokenizer (a --model name); default: --model")
    p.add_argument("--tasks", help="task rows for the teacher (JSONL/parquet)")
    p.add_argument("--samples", type=_positive_int, default=4, help="teacher samples per task")
    p.add_argument("--teacher-temperature", type=float, default=1.0)
    p.add_argument("--search-backend", default="bm25")
    p.add_argument("--search-index")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the student (default: %(default)s)")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--protocol", default="tapo")
    p.add_argument("--all", action="store_true", help="train on every trajectory, not only correct ones")
    p.add_argument("--limit", type=_positive_int, help="train on the first N usable trajectories")
    p.add_argument("--no-lora", action="store_true", help="train all weights")
    p.add_argument("--lora-r", type=_positive_int, default=16)
    p.add_argument("--lora-alpha", type=_positive_int, default=32)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--compute", choices=("auto", "bf16", "fp32"), default="auto",
                   help="bf16 autocast or fp32; auto: bf16 on a GPU or a CPU with AMX/AVX512-BF16")
    p.add_argument("--grad-accum", type=_positive_int, default=1)
    p.add_argument("--max-length", type=_positive_int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-to", default="none")
    p.add_argument("--save-steps", type=_positive_int, help="a checkpoint every N steps (default: each epoch)")
    p.add_argument("--resume", action="store_true", help="go on from the newest checkpoint in --output-dir")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(log, verbose=args.verbose)
    try:
        protocol = get_protocol(args.protocol)
        records = load_trajectories(args.data, correct_only=not args.all)
        if args.teacher:
            if not args.tasks:
                raise DataError("--teacher needs --tasks (the rows to ask it)")
            taught = collect_from_teacher(
                args.teacher, args.teacher_model or args.model, args.tasks, protocol=protocol, samples=args.samples,
                temperature=args.teacher_temperature, seed=args.seed, search_backend=args.search_backend,
                search_index=args.search_index)
            from agent_runtime.records import write_records

            write_records(args.output_dir / "teacher.jsonl", taught)
            kept = [r for r in taught if r["correct"] and r["final_answer"] is not None]
            log.info("teacher: kept %d of %d trajectories (correct)", len(kept), len(taught))
            records += taught if args.all else kept
        if not records:
            raise DataError("no trajectories to train on: give --data files or --teacher")
        if args.limit is not None:
            records = records[: args.limit]
        final = train_sft(records, model_name=args.model, output_dir=args.output_dir, protocol=protocol,
                          lora=not args.no_lora, lora_r=args.lora_r, lora_alpha=args.lora_alpha, epochs=args.epochs,
                          max_steps=args.max_steps, learning_rate=args.learning_rate, batch_size=args.batch_size,
                          grad_accum=args.grad_accum, max_length=args.max_length, seed=args.seed, compute=args.compute,
                          report_to=args.report_to, save_steps=args.save_steps, resume=args.resume)
    except ValueError as e:  # DataError, bad model names, bad options
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("SFT model: %s", final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
