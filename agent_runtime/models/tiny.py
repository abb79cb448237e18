"""A tiny Qwen2-architecture model, built and trained locally in seconds, for offline tests.

:func:`build_tiny_model` trains a byte-level BPE tokenizer (Qwen2's pre-tokenizer, ChatML template)
and a small Qwen2 causal LM on the fixture trajectories of :mod:`agent_runtime.models.fixture_tasks`,
tokenized exactly as the runtime tokenizes them (prompt through :func:`build_prompt_ids`, each piece
alone). The result follows the TAPO format reliably and gets the answer right often but not always.
:func:`tiny_model_path` caches one build per seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agent_runtime.models.cache import build_once, cache_dir
from agent_runtime.models.fixture_tasks import fixture_tasks, trajectory_text
from agent_runtime.models.prefix_loss import prefix_shared_loss, shared_prefix_length
from agent_runtime.prompts import build_prompt_ids, encode_pieces
from agent_runtime.protocol import TAPO

# Bump when anything here or in fixture_tasks changes what gets built: cached builds are keyed by it.
VERSION = "tiny-qwen2-v3"
FIXTURE_FILE = "tapo_fixture.json"

PAD_TOKEN, BOS_LIKE_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_LIKE_TOKEN, EOS_TOKEN)
# Qwen2's pre-tokenizer pattern: digits split one per token; words keep their leading space.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Sizes and training budget (part of what :data:`VERSION` names)."""

    vocab_size: int = 1536  # an upper bound: the small corpus runs out of merges near 1030
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    rope_theta: float = 10000.0
    train_tasks: int = 3000
    steps: int = 1400
    short_prompt_steps: int = 1000  # the first steps leave out the system prompt (see train_fixture)
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 30
    second_phase_lr: float = 0.5  # peak lr of the second phase, relative to ``lr``


SPEC = TinySpec()


# --- tokenizer ------------------------------------------------------------------------------


def _tokenizer_corpus(seed: int) -> Iterator[str]:
    for tools in (TAPO.tool_names, ("search",), ("code",), ()):
        yield TAPO.system_prompt(tools)
    for _ in range(8):  # the chat template's role names, so that they become single tokens
        yield "system\nuser\nassistant\n"
    for task in fixture_tasks(seed, SPEC.train_tasks):
        yield task.question
        for text, _ in trajectory_text(task):
            yield text


def build_tokenizer(seed: int = 0) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Qwen2's pre-tokenizer, trained on the fixture corpus; any text encodes."""
    tok = Tokenizer(models.BPE())
    # NFC as in Qwen2's tokenizer.json; transformers loads a qwen2 directory with Qwen2Tokenizer,
    # which adds it anyway, so the built and the reloaded tokenizer must both have it.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=SPEC.vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is unknown
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(seed), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# --- model ----------------------------------------------------------------------------------


def build_untrained_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen2ForCausalLM:
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=SPEC.hidden_size,
        intermediate_size=SPEC.intermediate_size,
        num_hidden_layers=SPEC.num_layers,
        num_attention_heads=SPEC.num_heads,
        num_key_value_heads=SPEC.num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": SPEC.rope_theta},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        dtype="float32",
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def encode_example(tokenizer: PreTrainedTokenizerFast, question: str, pieces: list[tuple[str, bool]],
                   system_prompt: bool = True) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` tokenized as the runtime does: each piece alone; loss on model text + EOS.

    ``system_prompt=False`` leaves out the protocol's system prompt (the first training phase only).
    """
    if system_prompt:
        ids = build_prompt_ids(tokenizer, TAPO, question)
    else:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            tokenize=True, return_dict=True)["input_ids"]
    return encode_pieces(tokenizer, ids, pieces, tokenizer.convert_tokens_to_ids(EOS_TOKEN))


def train_fixture(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, seed: int = 0,
                  progress: bool = False) -> float:
    """Trains ``model`` on the fixture trajectories in place; returns the final smoothed loss.

    Two phases over the same trajectories. The first ``SPEC.short_prompt_steps`` steps leave out the
    system prompt: with ~290 constant tokens to look past, a model this small often never learns to
    copy numbers and operators from the question in budget. The remaining steps use the exact
    runtime prompts (:func:`build_prompt_ids`), so the final model is tuned on what it will see.
    """
    tasks = [(t.question, trajectory_text(t)) for t in fixture_tasks(seed, SPEC.train_tasks)]
    phases = []
    for system_prompt in (False, True):
        examples = [encode_example(tokenizer, q, pieces, system_prompt) for q, pieces in tasks]
        # All prompts share their start (the system prompt): run it once per step, not once per row.
        prefix = torch.tensor([examples[0][0][:shared_prefix_length([ids for ids, _ in examples])]])
        phases.append((examples, prefix))
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=SPEC.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        # One warmup + cosine cycle per phase; the second at a lower peak, so that adapting to the
        # system prompt does not undo the copying learned in the first.
        short = SPEC.short_prompt_steps
        start, length, peak = (0, short, 1.0) if step < short else (short, SPEC.steps - short, SPEC.second_phase_lr)
        step -= start
        if step < SPEC.warmup_steps:
            return peak * (step + 1) / SPEC.warmup_steps
        done = (step - SPEC.warmup_steps) / max(1, length - SPEC.warmup_steps)
        return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    steps = range(SPEC.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="training tiny model")
    model.train()
    smoothed = float("nan")
    for step in steps:
        examples, prefix = phases[step >= SPEC.short_prompt_steps]
        batch = rng.sample(examples, SPEC.batch_size)
        loss, _ = prefix_shared_loss(model, batch, prefix.shape[1], pad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        smoothed = loss.item() if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * loss.item()
        if progress:
            steps.set_postfix(loss=f"{smoothed:.3f}")
    model.eval()
    return smoothed


# --- build and cache ------------------------------------------------------------------------


def build_tiny_model(out_dir: Path, seed: int = 0, train: bool = True, progress: bool = False) -> Path:
    """Builds the tokenizer and model deterministically from ``seed`` into ``out_dir``; returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tokenizer = build_tokenizer(seed)
        model = build_untrained_model(tokenizer, seed)
        final_loss = train_fixture(model, tokenizer, seed, progress) if train else None
    finally:
        torch.set_num_threads(threads)
    eos, pad = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {"version": VERSION, "seed": seed, "trained": train, "final_loss": final_loss, "spec": asdict(SPEC)}
    (out_dir / FIXTURE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir


# The weights depend on these sources (training code, fixture tasks, the prompt the runtime
# builds): the cache key hashes them, so an edit never leaves a stale model in a cache.
_WEIGHT_SOURCES = ("models/tiny.py", "models/fixture_tasks.py", "protocol.py", "prompts.py")


def _source_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for relative in _WEIGHT_SOURCES:
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()[:12]


def tiny_model_path(seed: int = 0, progress: bool = False) -> Path:
    """A built-and-trained tiny model directory, cached under ``$TAPO_CACHE_DIR`` (``~/.cache/tapo``),
    built once across processes (:func:`agent_runtime.models.cache.build_once`); ``progress`` shows a
    bar while it builds (a few minutes on two cores, more under load)."""
    target = cache_dir() / f"{VERSION}-{_source_digest()}-seed{seed}"
    return build_once(target, FIXTURE_FILE, lambda out: build_tiny_model(out, seed=seed, train=True, progress=progress))
