"""``python -m training.tapo --config CONFIG --output-dir DIR [--resume] [key.path=value ...]``

TAPO training: DAPO adapted to tool calls, on TRL's GRPOTrainer, with rollouts through the agent loop.
Checkpoints (``DIR/checkpoint-N``) are Hugging Face directories (a LoRA adapter when LoRA is on);
the end of a run writes ``DIR/final``, a merged model that ``tapo serve --model DIR/final`` loads
(and ``DIR/adapter`` with LoRA).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from training import configure_logging
from training.config import TapoConfig, load_config
from agent_runtime.tools import ToolInfrastructureError

log = logging.getLogger("training.tapo")

FINAL_DIR = "final"  # the merged model
ADAPTER_DIR = "adapter"  # the LoRA adapter, when LoRA is on


# ---- pieces ------------------------------------------------------------------------------------


def make_tools(cfg: TapoConfig) -> Any:
    from agent_runtime.tools import FunctionTool, ToolRegistry

    tools = ToolRegistry(max_infrastructure_failures=cfg.tools.max_infrastructure_failures)
    if cfg.tools.code:
        from agent_runtime.sandbox import CodeTool

        tools.register(CodeTool())
    if cfg.tools.search == "fixture":
        from agent_runtime.models.fixture_tasks import fixture_search

        tools.register(FunctionTool("search", fixture_search))
    elif cfg.tools.search != "none":
        from agent_runtime.search.factory import make_search_tool

        tools.register(make_search_tool(cfg.tools.search, index=cfg.tools.search_index, url=cfg.tools.search_url,
                                        top_k=cfg.tools.search_top_k))
    return tools


def make_budget(cfg: TapoConfig) -> Any:
    from agent_runtime.budget import Budget

    a = cfg.agent
    return Budget(max_tool_calls=a.max_tool_calls, max_tokens_per_turn=a.max_tokens_per_turn or a.max_response_tokens,
                  max_total_tokens=a.max_response_tokens, max_tool_output_tokens=a.max_tool_output_tokens,
                  tool_timeout_s=a.tool_timeout_s)


def build_dataset(source: str, split: str, limit: int | None, *, tokenizer: Any, protocol: Any,
                  tool_names: tuple[str, ...], max_prompt_tokens: int,
                  source_repeats: dict[str, int] | None = None) -> Any:
    """Task rows as a ``datasets.Dataset`` with TRL's ``prompt`` column plus ``id``, ``question``,
    ``gold`` and ``data_source`` for the rewards and the dumps. Prompts longer than
    ``max_prompt_tokens`` are left out (as verl's ``filter_overlong_prompts``), with a count in the log.
    Rows whose ``data_source`` is in ``source_repeats`` appear that many times (the sampler shuffles)."""
    import datasets

    from agent_runtime.prompts import protocol_messages
    from training.data import DataError, load_rows
    from training.rollout import prompt_ids_of

    rows = load_rows(source, split=split, limit=limit)
    records, too_long = [], 0
    for i, row in enumerate(rows):
        if row.prompt_messages is not None:  # TAPO's rows hold their instructions: used as they are
            messages = row.prompt_messages
            question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        else:
            question = row.question
            messages = [{"role": "user", "content": question}]
            if not protocol.function_calling:  # a function-calling prompt offers its functions at rollout
                messages = protocol_messages(protocol, messages, tool_names)
        if len(prompt_ids_of(tokenizer, messages, protocol, tool_names)) > max_prompt_tokens:
            too_long += 1
            continue
        index = row.extra_info.get("index", i)
        records.append({"id": f"{row.data_source}-{split}-{index}", "question": question, "gold": row.golds,
                        "data_source": row.data_source, "prompt": messages})
    if too_long:
        log.warning("%s: left out %d of %d rows whose prompt is longer than %d tokens",
                    source, too_long, len(rows), max_prompt_tokens)
    if not records:
        raise DataError(f"{source}: no rows left with a prompt of at most {max_prompt_tokens} tokens")
    repeats = source_repeats or {}
    unknown = sorted(set(repeats) - {r["data_source"] for r in records})
    if unknown:
        raise DataError(f"{source}: data.source_repeats names sources with no rows: {', '.join(unknown)}")
    records = [r for r in records for _ in range(repeats.get(r["data_source"], 1))]
    return datasets.Dataset.from_list(records)


def _dtype(cfg: TapoConfig) -> Any:
    """Weights in bf16 on GPU only under LoRA (the trained adapter stays fp32): full fine-tuning keeps
    fp32 weights and computes in bf16 (``bf16`` autocast), or lr-1e-6 updates round away."""
    import torch

    if cfg.model.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and cfg.lora.enabled else torch.float32
    return getattr(torch, cfg.model.dtype)


def load_model(cfg: TapoConfig) -> tuple[Any, Any]:
    """The policy and its tokenizer; an SFT adapter goes on training as the same adapter when LoRA is on."""
    from training.policy import load_policy

    return load_policy(cfg.model.name, dtype=_dtype(cfg), continue_adapter=cfg.lora.enabled)


def grpo_args(cfg: TapoConfig, output_dir: Path) -> Any:
    import torch
    from trl import GRPOConfig

    on_gpu = torch.cuda.is_available()
    defaults: dict[str, Any] = {
        "logging_steps": 1,
        "report_to": "none",
        "remove_unused_columns": False,  # the rewards read gold and data_source
        "max_completion_length": cfg.agent.max_response_tokens,
        "bf16": on_gpu and cfg.model.dtype != "float16",  # bf16 compute on GPU
        "fp16": on_gpu and cfg.model.dtype == "float16",
        "use_cpu": not on_gpu,
        "save_strategy": "steps",
    }
    if cfg.data.dev is not None:
        defaults |= {"eval_strategy": "steps", "num_generations_eval": 1}
    from training.checkpointing import with_checkpointing

    return GRPOConfig(output_dir=str(output_dir), **with_checkpointing(GRPOConfig, defaults | cfg.grpo))


def _backend_factory(cfg: TapoConfig):
    def make(trainer: Any) -> Any:
        engine = cfg.rollout.engine
        if engine == "auto":
            engine = "trl-vllm" if trainer.args.use_vllm else "transformers"
        if engine == "trl-vllm":
            from training.trl_vllm import TRLVLLMBackend

            return TRLVLLMBackend.from_trainer(trainer)
        if trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3 \
                or trainer.is_fsdp_enabled:
            # Every forward of a sharded model gathers parameters across processes, and processes
            # decode different numbers of tokens: they would wait on each other forever.
            raise ValueError("rollout.engine=transformers cannot generate with sharded weights (ZeRO-3, FSDP): "
                             "set grpo.use_vllm=true")
        from agent_runtime.backends.transformers_engine import TransformersBackend

        args = trainer.args
        slots = max(args.per_device_train_batch_size * args.steps_per_generation, args.per_device_eval_batch_size)
        model = trainer.accelerator.unwrap_model(trainer.model)
        return TransformersBackend(model, trainer.processing_class, max_slots=slots, name=cfg.model.name)

    return make


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` (TRL/transformers write ``trainer_state.json`` last)."""
    import json

    complete = []
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not step.isdigit():
            continue
        try:  # written last, and not atomically: a kill may leave it cut short
            saved_step = json.loads((path / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            saved_step = None
        if saved_step == int(step):
            complete.append((int(step), path))
        else:
            log.warning("%s is incomplete (the run stopped while saving it): skipped", path)
    return max(complete)[1] if complete else None


def export_final(trainer: Any, output_dir: Path) -> Path:
    """The trained model as one Hugging Face directory, ``OUTPUT_DIR/final``; with LoRA the adapter
    is also kept, as ``OUTPUT_DIR/adapter``, and ``final`` is base plus adapter merged.

    Every process calls this: ``save_model`` gathers sharded (ZeRO-3) weights; the main process
    then merges an adapter by reloading it onto its base from disk, which needs no gathered copy.
    """
    final = output_dir / FINAL_DIR
    lora = hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config")
    trainer.save_model(str(output_dir / ADAPTER_DIR if lora else final))
    if lora and trainer.accelerator.is_main_process:
        import shutil
        import tempfile

        from agent_runtime.models.resolve import load_causal_lm

        dtype = next(trainer.accelerator.unwrap_model(trainer.model).parameters()).dtype
        model, tokenizer = load_causal_lm(str(output_dir / ADAPTER_DIR), dtype=dtype)
        merged = Path(tempfile.mkdtemp(prefix=f".{FINAL_DIR}-", dir=output_dir))
        model.save_pretrained(merged, safe_serialization=True)
        tokenizer.save_pretrained(merged)
        if final.exists():
            shutil.rmtree(final)
        merged.rename(final)
    trainer.accelerator.wait_for_everyone()
    return final


# ---- the run -----------------------------------------------------------------------------------


def build_trainer(cfg: TapoConfig, output_dir: Path) -> Any:
    """The :class:`~training.trainer.TapoTrainer` for ``cfg``, writing under ``output_dir``."""
    from agent_runtime.loop import enabled_tool_names
    from agent_runtime.protocol import get_protocol
    from training.rewards import ToolEfficiency
    from training.rollout import AgentRollout
    from training.scoring import TapoRewardFunction, import_reward_function
    from training.trainer import TapoTrainer

    protocol = get_protocol(cfg.agent.protocol)
    tools = make_tools(cfg)
    tool_names = enabled_tool_names(protocol, tools, None)
    # The TRL arguments first: under DeepSpeed ZeRO-3 they register the config that makes
    # from_pretrained load the model sharded, not one full copy per process.
    args = grpo_args(cfg, output_dir)
    model, tokenizer = load_model(cfg)
    dataset_kwargs = dict(tokenizer=tokenizer, protocol=protocol, tool_names=tool_names,
                          max_prompt_tokens=cfg.data.max_prompt_tokens)
    train_set = build_dataset(cfg.data.train, cfg.data.train_split, cfg.data.train_limit,
                              source_repeats=cfg.data.source_repeats, **dataset_kwargs)
    dev_set = (build_dataset(cfg.data.dev, cfg.data.dev_split, cfg.data.dev_limit, **dataset_kwargs)
               if cfg.data.dev else None)
    rollout = AgentRollout(_backend_factory(cfg), tools, protocol, make_budget(cfg), temperature=args.temperature,
                           top_p=args.top_p, eval_temperature=cfg.rollout.eval_temperature, seed=args.seed)
    efficiency = cfg.reward.tool_efficiency
    reward = TapoRewardFunction(
        protocol, max_tokens=cfg.agent.max_response_tokens, overlong_buffer=cfg.reward.overlong_buffer,
        overlong_factor=cfg.reward.overlong_factor,
        tool_efficiency=ToolEfficiency(efficiency.optimal_calls, efficiency.smooth, efficiency.weight)
        if efficiency else None)
    peft_config = None
    if cfg.lora.enabled and not hasattr(model, "peft_config"):  # a new adapter, unless one goes on training
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    return TapoTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=dev_set, processing_class=tokenizer,
        peft_config=peft_config, rollout=rollout, tapo_reward=reward,
        extra_reward_funcs=[import_reward_function(spec) for spec in cfg.reward.extra],
        extra_reward_weights=list(cfg.reward.extra.values()),
        dynamic_sampling=cfg.dynamic_sampling.enabled, max_gen_batches=cfg.dynamic_sampling.max_gen_batches,
        dump_dir=output_dir / "rollouts" if cfg.rollout.dump else None,
    )


def train(cfg: TapoConfig, output_dir: Path, resume: bool = False) -> Path:
    """Run TAPO training; returns the directory of the final merged model."""
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no complete checkpoint in %s; starting from step 0", output_dir)
    trainer = build_trainer(cfg, output_dir)
    _use_rich_progress(trainer)
    (output_dir / "tapo_config.yaml").write_text(_dump_yaml(cfg))
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        trainer.rollout.close()
    final = export_final(trainer, output_dir)
    if trainer.accelerator.is_main_process:
        log.info("final model: %s", final)
    return final


def _use_rich_progress(trainer: Any) -> None:
    """TRL's rich progress display instead of tqdm bars, on a terminal."""
    if not sys.stderr.isatty():
        return
    from transformers.trainer_callback import ProgressCallback
    from trl.trainer.callbacks import RichProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgressCallback())


def _dump_yaml(cfg: TapoConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# ---- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.tapo",
        description="TAPO training (DAPO adapted to tool calls) on TRL's GRPOTrainer.",
        epilog="Overrides: key.path=value pairs after the options, values as YAML, e.g. "
               "grpo.max_steps=10 lora.enabled=true data.train=my.jsonl",
    )
    parser.add_argument("--config", type=Path, help="YAML config (see configs/)")
    parser.add_argument("--output-dir", type=Path, required=True, help="checkpoints, rollouts and the final model")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(log, verbose=args.verbose)
    try:
        cfg = load_config(args.config, args.overrides)
        train(cfg, args.output_dir, resume=args.resume)
    except ValueError as e:  # config (file: key), data (file:line), tool configuration, model names
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ToolInfrastructureError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
