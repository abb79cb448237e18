"""Tests for training.data: TAPO parquet rows and plain JSONL rows as TaskRows, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.data import DataError, TaskRow, iter_jsonl, load_rows, row_to_task

TAPO_PROMPT = [{"role": "user", "content": "You are an advanced reasoning assistant... Question: who?"}]


def tapo_row(i: int = 0, **overrides):
    row = {
        "data_source": "nq",
        "prompt": TAPO_PROMPT,
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": ["Paris", "paris, france"]}},
        "extra_info": {"split": "train", "index": i},
    }
    row.update(overrides)
    return row


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ parquet

def test_tapo_parquet_rows(tmp_path):
    rows = [tapo_row(0), tapo_row(1, data_source="dapo_math", ability="math",
                                  reward_model={"style": "rule", "ground_truth": {"target": ["\\frac{1}{2}"]}})]
    path = write_parquet(tmp_path / "train.parquet", rows)
    loaded = load_rows(path)
    assert len(loaded) == 2
    first = loaded[0]
    assert isinstance(first, TaskRow)
    assert first.prompt_messages == TAPO_PROMPT and first.question is None
    assert first.data_source == "nq" and first.ability == "fact-reasoning"
    assert first.ground_truth == {"target": ["Paris", "paris, france"]}
    assert first.golds == ["Paris", "paris, france"]
    assert first.extra_info == {"split": "train", "index": 0}
    assert loaded[1].golds == ["\\frac{1}{2}"] and loaded[1].data_source == "dapo_math"
    # TAPO's directory layout: {split}.parquet
    assert [r.extra_info["index"] for r in load_rows(tmp_path, split="train")] == [0, 1]
    assert len(load_rows(path, limit=1)) == 1


def test_parquet_plain_rows_and_string_ground_truth(tmp_path):
    rows = [{"question": "2+2?", "answer": "4", "data_source": "demo_arith", "extra_info": {"template": "t1"}},
            {"question": "capital of France?", "answer": "Paris", "data_source": "demo_search", "extra_info": None}]
    loaded = load_rows(write_parquet(tmp_path / "d.parquet", rows))
    assert [(r.question, r.ground_truth, r.prompt_messages) for r in loaded] == [
        ("2+2?", "4", None), ("capital of France?", "Paris", None)]
    assert loaded[0].extra_info == {"template": "t1"} and loaded[1].extra_info == {}


@pytest.mark.parametrize("bad,message", [
    ({"data_source": None}, "row 1: missing field 'data_source'"),
    ({"prompt": []}, "row 1: field 'prompt' must be a non-empty list"),
    ({"prompt": [{"role": "narrator", "content": "x"}]}, "row 1: prompt[0].role"),
    ({"reward_model": {"style": "rule", "ground_truth": None}}, "row 1: reward_model: missing field 'ground_truth'"),
    ({"reward_model": {"style": "rule", "ground_truth": {"target": []}}},
     "row 1: field 'reward_model.ground_truth' has no gold"),
])
def test_parquet_bad_rows_name_file_and_row(tmp_path, bad, message):
    path = write_parquet(tmp_path / "bad.parquet", [tapo_row(0), tapo_row(1, **bad)])
    with pytest.raises(DataError) as e:
        load_rows(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="broken.parquet: not a readable parquet file"):
        load_rows(path)


# ------------------------------------------------------------------ JSONL

def test_jsonl_rows(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"question": "What is 6*7?", "answer": 42, "data_source": "demo_arith", "extra_info": {"template": "mul"}},
        "",  # blank lines are skipped
        {"question": "Who wrote Hamlet?", "answer": ["Shakespeare", "William Shakespeare"],
         "data_source": "demo_search"},
        {"question": "Big?", "answer": 12345678901234567890, "data_source": "demo_arith"},
        {"question": "Q", "answer": {"target": ["a", "b"]}, "data_source": "hotpotqa"},
        tapo_row(7),  # TAPO-shaped rows work in JSONL too
    ])
    rows = load_rows(path)
    assert [r.ground_truth for r in rows] == [
        "42", ["Shakespeare", "William Shakespeare"], "12345678901234567890", {"target": ["a", "b"]},
        {"target": ["Paris", "paris, france"]}]
    assert rows[0].extra_info == {"template": "mul"} and rows[1].extra_info == {}
    assert rows[4].prompt_messages == TAPO_PROMPT and rows[4].question is None
    assert all(isinstance(r, TaskRow) for r in iter_jsonl(path))
    assert rows[0].question == "What is 6*7?" and rows[0].golds == ["42"]


def test_json_array_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a", "data_source": "x"}]))
    assert load_rows(path)[0].question == "q"


GOOD = {"question": "q", "answer": "a", "data_source": "demo_search"}


@pytest.mark.parametrize("line,message", [
    ("{not json", ":3: bad JSON"),
    ("[1, 2]", ":3: a row must be an object, got list"),
    (json.dumps({"answer": "a", "data_source": "x"}), ":3: a row needs 'question'"),
    (json.dumps({"question": "q", "data_source": "x"}), ":3: missing field 'answer'"),
    (json.dumps({"question": "q", "answer": "a"}), ":3: missing field 'data_source'"),
    (json.dumps({"question": 5, "answer": "a", "data_source": "x"}), ":3: field 'question' must be a non-empty string"),
    (json.dumps({"question": " ", "answer": "a", "data_source": "x"}), ":3: field 'question' must be a non-empty"),
    (json.dumps({"question": "q", "answer": True, "data_source": "x"}), ":3: field 'answer': ground truth must be"),
    (json.dumps({"question": "q", "answer": {"gold": "a"}, "data_source": "x"}),
     ":3: field 'answer': ground truth dict"),
    (json.dumps({"question": "q", "answer": [], "data_source": "x"}), ":3: field 'answer' has no gold answer"),
    (json.dumps({"question": "q", "answer": "a", "data_source": 3}), ":3: field 'data_source' must be a non-empty"),
    (json.dumps({**GOOD, "extra_info": "oops"}), ":3: field 'extra_info' must be an object"),
    (json.dumps({**GOOD, "prompt": "a string"}), ":3: field 'prompt' must be a non-empty list"),
    (json.dumps({**GOOD, "prompt": TAPO_PROMPT}), ":3: missing field 'reward_model'"),
    (json.dumps({**GOOD, "prompt": [{"role": "user", "content": 1}]}), ":3: prompt[0].content must be a string"),
])
def test_jsonl_bad_line_names_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, line, GOOD])
    with pytest.raises(DataError) as e:
        load_rows(path)
    text = str(e.value)
    assert text.startswith(str(path)) and message in text
    # a clean message for the CLI: no chained exception behind it
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


# ------------------------------------------------------------------ sources

def test_load_rows_sources(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_rows(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_rows(str(tmp_path / "missing.parquet"))
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows"):
        load_rows(tmp_path / "empty.jsonl")
    (tmp_path / "rows.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match="unknown data format"):
        load_rows(tmp_path / "rows.csv")
    with pytest.raises(DataError, match="no test.parquet or test.jsonl"):
        load_rows(tmp_path, split="test")
    write_jsonl(tmp_path / "dev.jsonl", [GOOD])
    assert load_rows(tmp_path, split="dev")[0].question == "q"


def test_hub_id_goes_through_datasets(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return [GOOD, {**GOOD, "question": "q2"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_rows("someone/tapo-data:nq", split="test")
    assert [r.question for r in rows] == ["q", "q2"] and calls == [("someone/tapo-data", "nq", "test")]

    def failing(*a, **k):
        raise FileNotFoundError("Dataset 'someone/missing' doesn't exist on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataError, match="someone/missing: cannot load split 'train'"):
        load_rows("someone/missing")


def test_row_to_task_numpy_values():
    np = pytest.importorskip("numpy")
    row = {"data_source": "nq", "prompt": np.array(TAPO_PROMPT, dtype=object),
           "reward_model": {"ground_truth": {"target": np.array(["x", "y"])}}}
    task = row_to_task(row, "mem: row 0")
    assert task.prompt_messages == TAPO_PROMPT and task.ground_truth == {"target": ["x", "y"]}
