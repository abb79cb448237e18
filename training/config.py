"""The trainer's configuration: a YAML file plus ``key.path=value`` overrides, validated in one place.

Sections hold what TAPO adds (agent budget, tools, rewards, dynamic sampling, LoRA, data); the
``grpo`` section is passed to TRL's :class:`~trl.GRPOConfig` as it is, so each of its keys is the
TRL argument it sets. Errors name the file and the key, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["ConfigError", "TapoConfig", "load_config", "apply_overrides"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    name: str = "tiny"  # anything `tapo serve --model` takes: a directory, a hub id, `tiny`
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU


class LoraSection(_Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class DataSection(_Section):
    train: str  # a parquet/JSONL file, a directory with {split}.parquet|jsonl, or a hub dataset id
    train_split: str = "train"
    dev: str | None = None  # run greedily every `grpo.eval_steps` when set
    dev_split: str = "test"
    train_limit: int | None = Field(None, ge=1)
    dev_limit: int | None = Field(None, ge=1)
    max_prompt_tokens: int = Field(2048, ge=1)  # longer prompts are left out, with a count in the log
    # Train rows of these data sources appear this many times (others once): RL steps spend more of
    # their prompts on the families the policy is still wrong on, e.g. {demo_direct: 3}.
    source_repeats: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)


class ToolsSection(_Section):
    code: bool = True  # Python in the sandbox
    # `fixture`: the tiny model's fictional encyclopedia (tests and the tiny-cpu preset only).
    search: Literal["bm25", "retriever", "searxng", "serper", "fixture", "none"] = "none"
    search_index: str | None = None
    search_url: str | None = None
    search_top_k: int = Field(3, ge=1)  # results per search call (TAPO: 1)
    # Tool failures that are not the model's (a raised exception: a dead sandbox pool, a search server
    # down) in a row before the run stops, instead of silently training on their error messages.
    max_infrastructure_failures: int = Field(8, ge=1)


class AgentSection(_Section):
    protocol: Literal["tapo", "search-r1", "torl", "hermes"] = "tapo"
    max_tool_calls: int = Field(4, ge=0)
    max_response_tokens: int = Field(2048, ge=1)  # model tokens of one trajectory (tool output excluded)
    max_tokens_per_turn: int | None = Field(None, ge=1)  # default: max_response_tokens
    max_tool_output_tokens: int = Field(2048, ge=1)
    tool_timeout_s: float = Field(30.0, gt=0)


class ToolEfficiencySection(_Section):
    weight: float = Field(1.0, ge=0)  # OTC's alpha
    optimal_calls: int | None = None  # None: OTC-PPO's form, fewer calls always earn more
    smooth: float = Field(1.0, gt=0)  # OTC's c


class RewardSection(_Section):
    overlong_buffer: int = Field(1024, ge=0)
    overlong_factor: float = Field(1.0, ge=0)
    tool_efficiency: ToolEfficiencySection | None = None
    # More reward functions as `module:function` with weights; TAPO's reward always has weight 1.
    extra: dict[str, float] = Field(default_factory=dict)


class DynamicSamplingSection(_Section):
    enabled: bool = True
    # Generation calls per step, to refill the batch with groups that survive (TAPO's max_num_gen_batches);
    # 1 generates once and trains on the survivors only.
    max_gen_batches: int = Field(1, ge=1)


class RolloutSection(_Section):
    engine: Literal["auto", "transformers", "trl-vllm"] = "auto"  # auto: trl-vllm when grpo.use_vllm
    eval_temperature: float = Field(0.0, ge=0)  # greedy on the dev split
    dump: bool = True  # every step's trajectories to OUTPUT_DIR/rollouts/step-N.jsonl


class TapoConfig(_Section):
    model: ModelSection = ModelSection()
    lora: LoraSection = LoraSection()
    data: DataSection
    tools: ToolsSection = ToolsSection()
    agent: AgentSection = AgentSection()
    reward: RewardSection = RewardSection()
    dynamic_sampling: DynamicSamplingSection = DynamicSamplingSection()
    rollout: RolloutSection = RolloutSection()
    grpo: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grpo_keys_are_trl_arguments(self) -> "TapoConfig":
        from trl import GRPOConfig

        known = {f.name for f in dataclasses.fields(GRPOConfig)}
        unknown = sorted(set(self.grpo) - known)
        if unknown:
            raise ValueError(f"grpo: not GRPOConfig arguments of the installed TRL: {', '.join(unknown)}")
        per_generation = self.grpo.get("steps_per_generation") or self.grpo.get("gradient_accumulation_steps") or 1
        save_steps = self.grpo.get("save_steps")
        if isinstance(save_steps, int) and save_steps % per_generation:
            # A resume restarts generation at the checkpoint: mid-window, every later window would shift.
            raise ValueError(f"grpo.save_steps ({save_steps}) must be a multiple of grpo.steps_per_generation "
                             f"({per_generation}), so that a resumed run generates where the first run did")
        for key in ("output_dir", "resume_from_checkpoint"):
            if key in self.grpo:
                raise ValueError(f"grpo.{key}: give it on the command line (--output-dir, --resume)")
        loss_type = self.grpo.get("loss_type") or _default_loss_type()
        if self.dynamic_sampling.enabled and loss_type not in EXACT_UNDER_FILTERING:
            raise ValueError(
                f"grpo.loss_type={loss_type} with dynamic_sampling.enabled: the rows it filters out would still "
                f"count in that loss's denominator; use one of {', '.join(sorted(EXACT_UNDER_FILTERING))}, "
                "or set dynamic_sampling.enabled=false")
        return self


# Losses normalised by the tokens that count (TRL's num_items_in_batch, or bnpo's mask sum): masking
# filtered rows out of them gives exactly the loss over the surviving rows. grpo, sapo, luspo (mean
# over sequences) and dr_grpo (batch x max length) would still count the filtered rows.
EXACT_UNDER_FILTERING = frozenset({"dapo", "bnpo", "cispo", "vespo"})


def _default_loss_type() -> str:
    from trl import GRPOConfig

    return next(f.default for f in dataclasses.fields(GRPOConfig) if f.name == "loss_type")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-6`` (no dot) as a string; learning rates are written that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _parse_value(text: str) -> Any:
    return _yaml(text) if text.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["grpo.learning_rate=1e-5", "lora.enabled=true"]`` applied to ``raw`` (values parsed as YAML)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key.path=value")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TapoConfig:
    """Read ``path`` (YAML), apply ``overrides`` and validate. Raises :class:`ConfigError`."""
    raw: Any = {}
    source = "command line"
    if path is not None:
        source = str(path)
        try:
            raw = _yaml(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ConfigError(f"{where}: bad YAML: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    raw = apply_overrides(raw, list(overrides))
    try:
        return TapoConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_error(source, e)) from None
