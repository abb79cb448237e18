"""What TAPO adds to TRL's GRPOTrainer: dynamic sampling, tool metrics and trajectory dumps.

Dynamic sampling (DAPO, as TAPO uses it): a group whose completions are all right or all wrong
teaches nothing relative to itself. Its rows leave the loss *and* the token normaliser: TRL's
``dapo`` loss divides by ``num_items_in_batch``, which we recompute after zeroing their masks. With
``max_gen_batches > 1`` more groups are generated (at most that many generation calls per step) and
surviving rows refill the batch.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from agent_runtime.records import trajectory_record, write_records
from training.rollout import AgentRollout
from training.scoring import TapoRewardFunction

log = logging.getLogger(__name__)

__all__ = ["TapoTrainer", "surviving_rows", "merge_generation_batches"]

# Keys of a scored batch that are per-row tensors padded on the right along the completion.
_COMPLETION_KEYS = ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps",
                    "sampling_per_token_logps", "ref_per_token_logps", "importance_sampling_ratio")
_PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def surviving_rows(correct: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per row: does its group have both higher and lower accuracy (not all equal)?

    ``correct`` holds one accuracy per row, groups of ``group_size`` consecutive rows (TRL's order).
    """
    groups = correct.view(-1, group_size)
    mixed = (groups.max(dim=1).values - groups.min(dim=1).values) > 0
    return mixed.repeat_interleave(group_size)


def _pad_to(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    missing = width - t.shape[1]
    if missing <= 0:
        return t
    pad = t.new_full((t.shape[0], missing, *t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def merge_generation_batches(batches: list[dict[str, Any]], keep: list[torch.Tensor], target_rows: int,
                             pad_id: int) -> tuple[dict[str, Any], torch.Tensor]:
    """Rows for one step out of several scored batches: kept rows first, in order, then (when too few
    survived) the others, whose loss mask is zeroed. Returns the merged batch and its kept-row mask.

    Prompts stay left-padded and completions right-padded, to the widest of the chosen rows.
    """
    order = [(b, r) for b, k in enumerate(keep) for r in k.nonzero().flatten().tolist()]
    order += [(b, r) for b, k in enumerate(keep) for r in (~k).nonzero().flatten().tolist()]
    chosen = order[:target_rows]
    if len(chosen) < target_rows:
        raise ValueError(f"only {len(chosen)} rows generated, {target_rows} needed")
    kept = torch.tensor([bool(keep[b][r]) for b, r in chosen])
    merged: dict[str, Any] = {}
    for key, value in batches[0].items():
        if key == "num_items_in_batch":
            continue
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            if any(isinstance(b.get(key), torch.Tensor) and b[key].ndim > 0 for b in batches[1:]):
                raise ValueError(f"cannot merge {key}")
            merged[key] = value
            continue
        rows = [batches[b][key][r] .unsqueeze(0) for b, r in chosen]
        if value.ndim >= 2 and (key in _PROMPT_KEYS or key in _COMPLETION_KEYS):
            width = max(row.shape[1] for row in rows)
            left = key in _PROMPT_KEYS
            fill = {"prompt_ids": pad_id, "completion_ids": pad_id, "importance_sampling_ratio": 1.0}.get(key, 0)
            rows = [_pad_to(row, width, fill, left) for row in rows]
        merged[key] = torch.cat(rows, dim=0)
    return merged, kept


class TapoTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose rollouts run through the agent loop (``rollout``), scored by TAPO's reward."""

    def __init__(self, *args: Any, rollout: AgentRollout, tapo_reward: TapoRewardFunction,
                 extra_reward_funcs: list[Any] = (), extra_reward_weights: list[float] = (),
                 dynamic_sampling: bool = True, max_gen_batches: int = 1, dump_dir: str | Path | None = None,
                 **kwargs: Any) -> None:
        args_ = kwargs.get("args")
        if extra_reward_funcs and args_ is not None:
            args_.reward_weights = [1.0, *extra_reward_weights]
        super().__init__(*args, reward_funcs=[tapo_reward, *extra_reward_funcs], rollout_func=rollout, **kwargs)
        self.rollout = rollout
        self.tapo_reward = tapo_reward
        self.dynamic_sampling = dynamic_sampling
        self.max_gen_batches = max_gen_batches
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self._refill_calls = 0
        self._dumped: dict[Path, list[dict[str, Any]]] = {}
        self._dumped_step: tuple[str, int] | None = None

    # ---- scoring one generation batch ----------------------------------------------------------

    def _score(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor]:
        """Generate and score ``inputs``; returns TRL's batch and, per local row, whether its group survives."""
        mode = "train" if self.model.training else "eval"
        output = super()._generate_and_score_completions(inputs)
        breakdowns = self.tapo_reward.last
        trajectories = self.rollout.last_trajectories
        device = self.accelerator.device
        correct = torch.tensor([b.correct for b in breakdowns], dtype=torch.float32, device=device)
        all_correct = self.accelerator.gather(correct)
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        survive_all = surviving_rows(all_correct, group_size) if group_size > 1 else torch.ones_like(all_correct, dtype=torch.bool)
        start = self.accelerator.process_index * len(inputs)
        survive = survive_all[start:start + len(inputs)].cpu()
        self._log_batch_metrics(mode, breakdowns, trajectories, survive_all, group_size)
        self._dump(mode, inputs, trajectories, breakdowns, survive)
        return output, survive

    def _log_batch_metrics(self, mode: str, breakdowns: list, trajectories: list, survive_all: torch.Tensor,
                           group_size: int) -> None:
        device = self.accelerator.device
        n_local = len(breakdowns)
        tool_names = sorted(self.rollout.tools.names)
        local = [
            sum(b.correct for b in breakdowns),
            sum(1.0 for b in breakdowns if b.format_ok),
            sum(t.agent_finish_reason == "answer" for t in trajectories),
            *(sum(t.tool_call_counts.get(name, 0) for t in trajectories) for name in tool_names),
            *(sum(t.tool_failures.get(name, 0) for t in trajectories) for name in tool_names),
            sum(t.usage.injected_tokens for t in trajectories),
            float(n_local),
        ]
        totals = self.accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=device), reduction="sum")
        n = totals[-1].item()
        metrics = self._metrics[mode]
        metrics["tapo/accuracy"].append(totals[0].item() / n)
        metrics["tapo/format_rate"].append(totals[1].item() / n)
        metrics["tapo/answered_rate"].append(totals[2].item() / n)
        k = len(tool_names)
        for i, name in enumerate(tool_names):
            metrics[f"tools/{name}/calls_per_sample"].append(totals[3 + i].item() / n)
            metrics[f"tools/{name}/failures_per_sample"].append(totals[3 + k + i].item() / n)
        metrics["tapo/tool_tokens_mean"].append(totals[3 + 2 * k].item() / n)
        if group_size > 1:
            metrics["tapo/filtered_group_fraction"].append(1.0 - survive_all.float().mean().item())

    def _dump(self, mode: str, inputs: list[dict[str, Any]], trajectories: list, breakdowns: list,
              survive: torch.Tensor) -> None:
        if self.dump_dir is None or not trajectories:
            return
        step = self.state.global_step + (1 if mode == "train" else 0)
        rank = f".rank{self.accelerator.process_index}" if self.accelerator.num_processes > 1 else ""
        prefix = "step" if mode == "train" else "eval-step"
        path = self.dump_dir / f"{prefix}-{step:06d}{rank}.jsonl"
        # A refill call of the same step adds to the file; the first call of a step replaces what a
        # killed run may have left.
        previous = self._dumped.get(path, []) if self._dumped_step == (mode, step) else []
        self._dumped_step = (mode, step)
        records = [
            trajectory_record(t, id=str(row.get("id", "")), question=str(row.get("question", "")), gold=row["gold"],
                              data_source=row["data_source"], correct=b.correct, reward=b.total, step=step,
                              kept=bool(k))
            for row, t, b, k in zip(inputs, trajectories, breakdowns, survive.tolist(), strict=True)
        ]
        self._dumped = {path: previous + records}
        write_records(path, previous + records)

    # ---- dynamic sampling ----------------------------------------------------------------------

    def _refill_inputs(self, n_rows: int) -> list[dict[str, Any]]:
        """Another generation batch of ``n_rows`` (whole groups), drawn deterministically per step and call."""
        group_size = self.num_generations
        n_prompts_global = n_rows * self.accelerator.num_processes // group_size
        rng = random.Random(f"refill-{self.args.seed}-{self.state.global_step}-{self._refill_calls}")
        self._refill_calls += 1
        dataset = self.train_dataset
        picks = [rng.randrange(len(dataset)) for _ in range(n_prompts_global)]
        rows = [dataset[i] for i in picks for _ in range(group_size)]
        start = self.accelerator.process_index * n_rows
        return rows[start:start + n_rows]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        output, survive = self._score(inputs)
        if mode != "train" or not self.dynamic_sampling:
            return output
        batches, keeps = [output], [survive]
        target = len(inputs)
        self._refill_calls = 0
        # Until every process holds enough surviving rows (all decide alike: the same collective calls).
        while len(batches) < self.max_gen_batches and self._fewest_on_any_process(sum(int(k.sum()) for k in keeps)) \
                < target:
            more, more_survive = self._score(self._refill_inputs(target))
            batches.append(more)
            keeps.append(more_survive)
        if len(batches) > 1:
            output, survive = merge_generation_batches(batches, keeps, target, self.processing_class.pad_token_id)
        self._metrics[mode]["tapo/generation_calls"].append(float(len(batches)))
        return self._mask_filtered(output, survive)

    def _fewest_on_any_process(self, local: int) -> int:
        counts = self.accelerator.gather(torch.tensor([local], device=self.accelerator.device))
        return int(counts.min().item())

    def _mask_filtered(self, output: dict[str, Any], survive: torch.Tensor) -> dict[str, Any]:
        """Zero the loss mask of rows whose group did not survive, and recount the normaliser."""
        keep = survive.to(output["completion_mask"].device).unsqueeze(1).to(output["completion_mask"].dtype)
        tool_mask = output.get("tool_mask")
        tool_mask = keep.expand_as(output["completion_mask"]) if tool_mask is None else tool_mask * keep
        output["tool_mask"] = tool_mask
        loss_mask = output["completion_mask"] * tool_mask
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        return output
