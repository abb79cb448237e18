"""The demo agent's synthetic tasks (``training.tasks``): rows deterministic by seed, a test split of
held-out templates and entities, search queries that find their passage at top 3 with the real bm25
backend, and gold trajectories that the real tools produce and the judge accepts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from rapidfuzz.distance import Levenshtein

from agent_runtime.models.fixture_tasks import run_python
from agent_runtime.protocol import TAPO
from agent_runtime.search.bm25 import Bm25Backend
from agent_runtime.search.tool import SearchTool
from training.data import load_rows
from training.rewards import correctness, extract_answer, format_ok
from training.tasks import (
    FAMILIES,
    TEMPLATES,
    areference_trajectories,
    generate,
    judged_correct,
    reference_record,
    reference_trajectory,
    retrieval_misses,
    write_demo,
)
from training.tasks.__main__ import main as tasks_main

COMMITTED = Path(__file__).resolve().parents[1] / "data" / "demo"
SCHEMA = ("id", "question", "gold", "data_source", "prompt_ids", "completion_ids", "mask", "logprobs", "text",
          "tool_steps", "final_answer", "correct", "reward", "finish_reason", "usage")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return write_demo(out, seed=0), out


@pytest.fixture(scope="module")
def backend(demo):
    return Bm25Backend.load(demo[1] / "index", engine="numpy")


@pytest.fixture(scope="module")
def tools(backend):
    # The real bm25 search tool over the demo index; Python in process (the sandbox is the CLI's default).
    return {"search": SearchTool(backend, top_k=3), "code": run_python}


@pytest.fixture(scope="module")
def references(demo, tools):
    data, _ = demo
    rows = [r for split in ("train", "dev", "test") for r in data.rows[split]]
    refs, reasons = asyncio.run(areference_trajectories(rows, tools))
    return rows, refs, reasons


def _entities(rows):
    return {e for r in rows for e in r["extra_info"]["entities"]}


def _templates(rows):
    return {r["extra_info"]["template"] for r in rows}


def test_rows_are_a_function_of_the_seed(demo):
    data, _ = demo
    again = generate(0)
    assert again.rows == data.rows
    assert [p.to_json() for p in again.corpus] == [p.to_json() for p in data.corpus]
    other = generate(1)
    assert [r["question"] for r in other.rows["train"]] != [r["question"] for r in data.rows["train"]]
    assert {p.title for p in other.corpus}.isdisjoint({p.title for p in data.corpus})


def test_sizes_families_and_the_row_loader(demo):
    data, out = demo
    assert {s: len(r) for s, r in data.rows.items()} == {"train": 2500, "dev": 100, "test": 200}
    for split, rows in data.rows.items():
        counts = Counter(r["data_source"] for r in rows)
        assert set(counts) == set(FAMILIES)
        if split == "test":
            assert min(counts.values()) >= 40
            per_family = Counter(t.split("/")[0] for t in _templates(rows))
            assert set(per_family) == {"arith", "search", "twohop", "direct"}
            assert min(per_family.values()) >= 5, per_family
        loaded = load_rows(out, split=split)
        assert [(r.question, r.data_source) for r in loaded] == [(r["question"], r["data_source"]) for r in rows]
        assert all(r.extra_info["split"] == split and r.extra_info["template"] for r in loaded)


def test_test_split_holds_out_templates_entities_and_questions(demo):
    data, _ = demo
    seen = data.rows["train"] + data.rows["dev"]
    test = data.rows["test"]
    assert _templates(test).isdisjoint(_templates(seen))
    assert _entities(test) and _entities(test).isdisjoint(_entities(seen))
    assert {r["question"] for r in test}.isdisjoint({r["question"] for r in seen})
    # No made-up word of the test world appears anywhere in a train or dev question or answer.
    def words(world):
        names = [*world.regions, *(t.name for t in world.towns), *(p.name for p in world.persons),
                 *(c.name for c in world.companies), *(d.name for d in world.devices)]
        return {w for n in names for w in n.split()}

    held_out = words(data.encyclopedia.worlds["test"]) - words(data.encyclopedia.worlds["train"])
    assert len(held_out) > 50
    text = set(" ".join(f"{r['question']} {json.dumps(r['answer'])}" for r in seen).replace("?", " ").split())
    assert not held_out & text


def test_test_templates_differ_in_more_than_a_word():
    # Social templates ("{utterance}": identity, farewell) are kinds of their own, absent from train.
    train = [t for t in TEMPLATES if t.split == "train"]
    for t in (t for t in TEMPLATES if t.split == "test" and t.text != "{utterance}"):
        nearest = min(Levenshtein.distance(t.text.split(), u.text.split()) for u in train if u.family == t.family)
        assert nearest >= 3, t.id


def test_every_search_query_finds_its_passage_in_the_top_3(demo, backend):
    data, _ = demo
    for split, rows in data.rows.items():
        assert retrieval_misses(rows, backend, k=3) == [], split


def test_searches_stay_in_their_own_world(demo, backend):
    data, _ = demo
    worlds = data.encyclopedia.worlds
    for split, rows in data.rows.items():
        other = {p.title for p in worlds["train" if split == "test" else "test"].passages}
        for r in rows:
            for step in r["extra_info"]["steps"]:
                if "search" in step:
                    assert not {d.title for d in backend.search_sync(step["search"], 3)} & other, step


def test_every_gold_trajectory_is_judged_correct(references):
    rows, refs, reasons = references
    assert [x for x in reasons if x] == []
    for row, ref in zip(rows, refs):
        assert ref is not None
        assert format_ok(ref.text) and extract_answer(ref.text) == ref.answer
        assert judged_correct(ref.answer, row["answer"], row["data_source"])
        names = [c.name for c in ref.tool_calls]
        family = row["data_source"]
        if family == "demo_direct":
            assert names == []
        elif family == "demo_arith":
            assert names == ["code"]
        elif family == "demo_search":
            assert names == ["search"]
        else:
            assert 1 <= names.count("search") <= 2 and names[-1] == "code"
        if family != "demo_direct" or row["answer"] != [""]:
            assert correctness(ref.answer, row["answer"], family) == 1.0
        # The observations are the tools' real output, injected as the loop injects it.
        observations = [text for text, is_model in ref.pieces if not is_model]
        assert observations == [TAPO.format_observation(c.output) for c in ref.tool_calls]


def test_sft_splits_the_text_back_into_the_same_pieces(references):
    sft = pytest.importorskip("training.sft")
    _, refs, _ = references
    assert all(sft.completion_pieces(ref.text, TAPO) == ref.pieces for ref in refs)


def test_wrong_plans_give_no_trajectory(demo, tools):
    data, _ = demo
    by_family = {}
    for r in data.rows["test"]:
        by_family.setdefault(r["data_source"], r)
    search_row = by_family["demo_search"]
    wrong_answer = {**search_row, "answer": ["Nowhere"]}
    assert reference_trajectory(wrong_answer, tools) is None
    steps = [dict(s) for s in search_row["extra_info"]["steps"]]
    next(s for s in steps if "search" in s)["search"] = "autumn fair market square"
    lost = {**search_row, "extra_info": {**search_row["extra_info"], "steps": steps}}
    assert reference_trajectory(lost, tools) is None
    direct = by_family["demo_direct"]
    tool_using = {**direct, "extra_info": {**direct["extra_info"], "steps": [{"code": "print(1)"}, {"answer": None}]}}
    assert reference_trajectory(tool_using, tools) is None
    assert reference_trajectory(search_row, tools) is not None


def test_empty_direct_gold_accepts_any_answer():
    assert judged_correct("Hi! How can I help?", "", "demo_direct")
    assert not judged_correct(None, "", "demo_direct")
    assert judged_correct("Paris", ["Paris"], "demo_direct") and not judged_correct("Lyon", ["Paris"], "demo_direct")


class _CharTokenizer:
    """One id per character: enough to check the token bookkeeping of a record."""

    chat_template = None
    eos_token_id = 0

    def encode(self, text, add_special_tokens=True, split_special_tokens=False):
        return [ord(c) for c in text]


def test_reference_record_follows_the_trajectory_schema(references):
    rows, refs, _ = references
    ref = next(r for row, r in zip(rows, refs) if row["data_source"] == "demo_twohop")
    plain = reference_record(ref)
    assert set(SCHEMA) <= set(plain)
    assert plain["correct"] == 1.0 and plain["final_answer"] == ref.answer and plain["text"] == ref.text
    assert [s["name"] for s in plain["tool_steps"]] == [c.name for c in ref.tool_calls]
    assert plain["completion_ids"] == [] and plain["template"] and plain["reference"] is True
    tok = reference_record(ref, tokenizer=_CharTokenizer(), pieces=True)
    injected = sum(len(text) for text, is_model in ref.pieces if not is_model)
    assert tok["completion_ids"][-1] == 0 and len(tok["completion_ids"]) == len(ref.text) + 1
    assert tok["mask"].count(0) == injected == sum(s["injected_tokens"] for s in tok["tool_steps"])
    assert tok["usage"]["completion_tokens"] == len(ref.text) - injected + 1 and tok["prompt_ids"]
    assert tok["pieces"] == [[t, m] for t, m in ref.pieces]


def test_cli_writes_everything(tmp_path, capsys):
    assert tasks_main(["--seed", "3", "--out", str(tmp_path), "--code-tool", "inprocess", "-q"]) == 0
    assert "2500/2500 gold train trajectories" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "train_trajectories.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [r["extra_info"]["id"] for r in rows]
    assert json.loads((tmp_path / "manifest.json").read_text())["trajectories"]["kept"] == 2500


def test_committed_data_is_what_the_generator_writes(demo):
    data, _ = demo
    for split, rows in data.rows.items():
        committed = [json.loads(line) for line in (COMMITTED / f"{split}.jsonl").read_text().splitlines()]
        assert committed == rows, f"data/demo/{split}.jsonl is stale: rerun python -m training.tasks --seed 0"
    corpus = [json.loads(line) for line in (COMMITTED / "corpus.jsonl").read_text().splitlines()]
    assert corpus == [p.to_json() for p in data.corpus]
    assert Bm25Backend.load(COMMITTED / "index", engine="numpy").info.num_docs == len(corpus)
