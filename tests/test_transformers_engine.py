"""The slot engine against plain transformers, on more than one architecture."""

from __future__ import annotations

import asyncio
import copy

import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from agent_runtime.backends.base import SamplingParams
from agent_runtime.backends.packed_linear import forget_packed, pack_linears, packing_available
from agent_runtime.backends.transformers_engine import TransformersBackend

VOCAB = 96


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(VOCAB)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="w0")), eos_token="w1")


def random_model(arch: str):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


async def generate(backend, prompt, params):
    ids, logprobs, finish = [], [], None
    async for chunk in backend.generate(prompt, params):
        ids += chunk.token_ids
        logprobs += chunk.logprobs
        finish = chunk.finish_reason
    return ids, logprobs, finish


def assert_teacher_forced_logprobs(model, context: list[int], ids: list[int], logprobs: list[float]) -> None:
    """``logprobs`` of ``ids`` sampled after ``context`` equal a plain forward pass over them all."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([context + ids])).logits[0], dim=-1)
    for k, tok in enumerate(ids):
        assert logprobs[k] == pytest.approx(float(logp[len(context) + k - 1, tok]), abs=1e-4)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
async def test_batched_slots_match_plain_transformers(arch):
    model, tokenizer = random_model(arch), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=4)
    prompts = [[5 + i] * (3 + 7 * i) for i in range(6)]  # more requests than slots, different lengths
    try:
        results = await asyncio.gather(*(generate(backend, p, SamplingParams(max_tokens=12, temperature=0)) for p in prompts))
        for prompt, (ids, logprobs, _) in zip(prompts, results):
            expected = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=1,
                                      pad_token_id=0)[0, len(prompt):].tolist()
            assert ids == expected[: len(ids)]
            assert_teacher_forced_logprobs(model, prompt, ids, logprobs)
    finally:
        await backend.aclose()


async def test_continuation_reuses_the_parked_slot():
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=2)
    try:
        prompt = list(range(10, 60))
        ids, _, _ = await generate(backend, prompt, SamplingParams(max_tokens=5, temperature=0))
        before = dict(backend.stats)
        continued = prompt + ids + [7, 8, 9]
        more, logprobs, _ = await generate(backend, continued, SamplingParams(max_tokens=5, temperature=0))
        assert backend.stats["reused_tokens"] - before["reused_tokens"] == len(prompt) + len(ids) - 1
        assert backend.stats["prefill_tokens"] - before["prefill_tokens"] == 4  # last sampled token + 3 injected
        assert_teacher_forced_logprobs(model, continued, more, logprobs)
    finally:
        await backend.aclose()


async def test_after_a_weight_update_nothing_computed_with_the_old_weights_is_reused():
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=2)
    try:
        prompt = list(range(10, 40))
        await generate(backend, prompt, SamplingParams(max_tokens=3, temperature=0))
        with torch.no_grad():  # what a training step does
            for p in model.parameters():
                p.mul_(1.5)
        backend.weights_changed()
        before = dict(backend.stats)
        ids, logprobs, _ = await generate(backend, prompt, SamplingParams(max_tokens=3, temperature=0))
        assert backend.stats["reused_tokens"] == before["reused_tokens"]
        assert_teacher_forced_logprobs(model, prompt, ids, logprobs)
    finally:
        await backend.aclose()


async def test_stop_strings_end_the_request_and_keep_their_tokens():
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=2)
    try:
        free_ids, _, _ = await generate(backend, [3, 4, 5], SamplingParams(max_tokens=10, temperature=0))
        stop = tokenizer.decode(free_ids[2:3])
        ids, _, finish = await generate(backend, [3, 4, 5], SamplingParams(max_tokens=10, temperature=0, stop=(stop,)))
        assert finish == "stop" and ids == free_ids[: free_ids.index(free_ids[2]) + 1]
    finally:
        await backend.aclose()


async def test_top_p_sampling_stays_in_the_nucleus():
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=8)
    prompt = [3, 4, 5]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([prompt])).logits[0, -1], dim=-1)
    order = torch.argsort(probs, descending=True).tolist()
    nucleus = set(order[: int((torch.cumsum(probs[order], 0) < 0.5).sum()) + 1])
    try:
        firsts = await asyncio.gather(
            *(generate(backend, prompt, SamplingParams(max_tokens=1, temperature=1.0, top_p=0.5, seed=s)) for s in range(24))
        )
        assert {ids[0] for ids, _, _ in firsts} <= nucleus
    finally:
        await backend.aclose()


async def test_a_failing_request_does_not_stop_the_engine():
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=2)
    try:
        with pytest.raises(IndexError):
            await generate(backend, [VOCAB + 50], SamplingParams(max_tokens=3, temperature=0))  # id out of range
        ids, _, _ = await generate(backend, [3, 4], SamplingParams(max_tokens=3, temperature=0))
        assert len(ids) == 3
    finally:
        await backend.aclose()


async def test_the_turn_ends_on_the_ids_trl_counts_as_eos():
    """TRL's GRPOTrainer ends a completion at the tokenizer's EOS or any ``generation_config.eos_token_id``
    and reads every other ending as truncated; the engine must stop on exactly those ids."""
    model, tokenizer = random_model("qwen2"), word_tokenizer()
    prompt, greedy = [5, 6, 7], SamplingParams(max_tokens=4, temperature=0.0)
    first = (await generate(TransformersBackend(model, tokenizer, max_slots=1), prompt, greedy))[0][0]
    assert first != tokenizer.eos_token_id

    model.config.eos_token_id = first  # config.json only: generation (and TRL) ignore it
    ids, _, finish = await generate(TransformersBackend(model, tokenizer, max_slots=1), prompt, greedy)
    assert (len(ids), finish) == (4, "length")

    model.generation_config.eos_token_id = [tokenizer.eos_token_id, first]  # an end-of-turn id, as chat models have
    backend = TransformersBackend(model, tokenizer, max_slots=1)
    assert backend.eos_ids == {tokenizer.eos_token_id, first}
    ids, _, finish = await generate(backend, prompt, greedy)
    assert (ids, finish) == ([first], "eos")


async def test_generation_raises_no_deprecation_warnings():
    """A server log must not repeat a library's FutureWarning on every request."""
    import warnings

    backend = TransformersBackend(random_model("qwen2"), word_tokenizer(), max_slots=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await generate(backend, [5, 6, 7], SamplingParams(max_tokens=3, temperature=0.0))
    assert [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))] == []


def test_both_samplers_keep_to_the_allowed_tokens_and_renormalise_over_them():
    import math

    import numpy as np

    from agent_runtime.backends.slot_engine import sample_token
    from agent_runtime.backends.transformers_engine import sample_token_torch

    logits = np.array([5.0, 1.0, 0.5, 3.0], dtype=np.float32)  # token 0 is the favourite, and not allowed
    allowed = frozenset({1, 2})
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for temperature in (0.0, 1.0):
        params = SamplingParams(temperature=temperature, allowed_token_ids=allowed)
        for _ in range(20):
            assert sample_token(logits, params, rng)[0] in allowed
            assert sample_token_torch(torch.from_numpy(logits), params, generator)[0] in allowed
    greedy = SamplingParams(temperature=0, allowed_token_ids=allowed)
    expected = 1.0 - math.log(math.exp(1.0) + math.exp(0.5))
    for token, logprob in (sample_token(logits, greedy, rng), sample_token_torch(torch.from_numpy(logits), greedy, None)):
        assert token == 1 and logprob == pytest.approx(expected, abs=1e-5)


async def test_prompts_fed_together_give_the_logprobs_each_gives_alone():
    """Two trajectories continue after tool outputs of different lengths while a new prompt arrives: all
    three are fed in one left-padded forward, and each one's logprobs equal a plain forward over it."""
    model, tokenizer = random_model("llama"), word_tokenizer()
    backend = TransformersBackend(model, tokenizer, max_slots=4, batch_window_s=0.05)
    try:
        first = [list(range(10, 40)), list(range(40, 52))]
        parked = [p + (await generate(backend, p, SamplingParams(max_tokens=4, temperature=0)))[0] for p in first]
        prompts = [parked[0] + [7, 8, 9, 10, 11], parked[1] + [12, 13], [20 + i for i in range(8)]]
        before = dict(backend.stats)
        results = await asyncio.gather(*(generate(backend, p, SamplingParams(max_tokens=6, temperature=0)) for p in prompts))
        assert backend.stats["reused_tokens"] - before["reused_tokens"] == len(parked[0]) - 1 + len(parked[1]) - 1
        for prompt, (ids, logprobs, _) in zip(prompts, results):
            assert_teacher_forced_logprobs(model, prompt, ids, logprobs)
    finally:
        await backend.aclose()


def test_prompts_are_grouped_by_length_with_bounded_padding():
    from agent_runtime.backends.transformers_engine import prefill_groups

    groups = prefill_groups([30, 5, 28, 6, 400, 31], max_columns=4096)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4, 5]
    assert [1, 3] in groups and [2, 0, 5] in groups and [4] in groups  # short with short, long alone
    lengths = [50] * 100
    assert all(len(g) * 50 <= 1000 for g in prefill_groups(lengths, max_columns=1000))


def test_the_batched_sampler_draws_each_row_as_alone_and_from_its_distribution():
    from agent_runtime.backends.transformers_engine import sample_rows_torch

    vocab = 50_000
    logits = torch.full((3, vocab), -4.0)
    logits[:, :4] = torch.tensor([4.0, 3.5, 3.0, 1.0])  # a peaked distribution over a large vocabulary
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0),
              SamplingParams(temperature=0.7, top_p=0.9)]
    for seed in range(5):
        together = sample_rows_torch(logits, params, [None] + [torch.Generator().manual_seed(seed) for _ in range(2)])
        alone = [sample_rows_torch(logits[i : i + 1], [params[i]], [None if i == 0 else torch.Generator().manual_seed(seed)])[0]
                 for i in range(3)]
        assert [t for t, _ in together] == [t for t, _ in alone]
        assert [lp for _, lp in together] == pytest.approx([lp for _, lp in alone], abs=1e-6)
    probs = torch.softmax(logits[2] / 0.7, dim=-1)
    order = torch.argsort(probs, descending=True)
    nucleus = order[: int((torch.cumsum(probs[order], 0) < 0.9).sum()) + 1].tolist()
    generator = torch.Generator().manual_seed(0)
    draws = [sample_rows_torch(logits[2:], [params[2]], [generator])[0][0] for _ in range(1000)]
    assert set(draws) <= set(nucleus)
    kept = probs[nucleus] / probs[nucleus].sum()
    for token, p in zip(nucleus, kept.tolist()):
        assert draws.count(token) / len(draws) == pytest.approx(p, abs=0.05)


# --- packed weights ---------------------------------------------------------------------------


@pytest.mark.skipif(not packing_available(), reason="this torch has no oneDNN")
def test_packed_linears_serve_inference_and_follow_every_weight_update() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(576, 512), torch.nn.ReLU(), torch.nn.Linear(512, 576, bias=False))
    reference = copy.deepcopy(model)
    pack_linears(model)
    x = torch.randn(8, 576)
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-4)
    # outside inference mode (a trainer's forward and backward) the layers are the plain ones, bit for bit
    out = model(x)
    assert torch.equal(out, reference(x))
    out.sum().backward()
    assert model[0].weight.grad is not None
    # an optimizer step changes the weights in place: the next inference forward sees the new ones
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-4)
    model[2].weight = torch.nn.Parameter(torch.zeros(576, 512))  # a new tensor altogether
    with torch.inference_mode():
        assert torch.count_nonzero(model(x)) == 0
    # a write through .data bumps no version counter: the engine's weights_changed forgets the copies
    model[2].weight.data.fill_(1.0)
    forget_packed(model)
    reference.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-4)
    # and a deepcopy of a packed model serves its own weights
    twin = copy.deepcopy(model)
    twin[2].weight.data.zero_()
    with torch.inference_mode():
        assert torch.count_nonzero(twin(x)) == 0 and torch.allclose(model(x), reference(x), rtol=1e-4, atol=1e-4)
