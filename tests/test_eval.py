"""``tapo eval``: the pure aggregation on hand-made records, the runner on a scripted engine, and the
command end to end on the tiny fixture model (in-process engine, then the same run through
``--engine-url`` against our own server, which must give the same greedy trajectories)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.budget import Budget
from agent_runtime.protocol import TAPO
from agent_runtime.records import read_records
from agent_runtime.tools import ToolRegistry
from agent_runtime.trajectory import ToolCallRecord, Trajectory
from training.data import TaskRow
from training.evaluate import (
    PRODUCTIVITY_NOTE,
    eval_record,
    evaluate_rows,
    judge,
    percentile,
    row_question,
    summarize,
    summary_markdown,
)

TAPO_CMD = [sys.executable, "-m", "tapo_cli"]
SCHEMA = ("id", "question", "gold", "data_source", "prompt_ids", "completion_ids", "mask", "logprobs", "text",
          "tool_steps", "final_answer", "correct", "reward", "finish_reason", "usage")


def tapo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*TAPO_CMD, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


# ---- pure aggregation --------------------------------------------------------------------------


def rec(data_source: str, correct: bool, calls: tuple[str, ...] = (), *, fmt: bool | None = True,
        template: str | None = None, seconds: float | None = 1.0, text: str = "", failed: int = 0,
        finish: str = "answer") -> dict[str, Any]:
    steps = [{"name": name, "ok": i >= failed} for i, name in enumerate(calls)]
    record: dict[str, Any] = {
        "data_source": data_source, "correct": 1.0 if correct else 0.0, "reward": 1.0 if correct else 0.0,
        "tool_steps": steps, "final_answer": "x", "text": text, "agent_finish_reason": finish,
        "extra_info": {"template": template} if template is not None else {},
    }
    if fmt is not None:
        record["format_ok"] = fmt
    if seconds is not None:
        record["seconds"] = seconds
    return record


def test_productivity_is_correct_answers_per_tool_call_overall_and_by_source():
    records = [
        rec("demo_arith", True, ("code",)),
        rec("demo_arith", True, ("code", "code")),
        rec("demo_arith", False, ("code",)),
        rec("demo_search", True, ("search",)),
        rec("demo_search", False, ("search", "search")),
        rec("demo_direct", True),
    ]
    s = summarize(records, tools=("code", "search"))
    assert s["counts"]["questions"] == 6 and s["counts"]["correct"] == 4 and s["counts"]["tool_calls"] == 7
    assert s["accuracy"]["overall"] == pytest.approx(4 / 6)
    assert s["accuracy"]["by_data_source"] == pytest.approx({"demo_arith": 2 / 3, "demo_direct": 1.0, "demo_search": 0.5})
    assert s["tool_productivity"]["overall"] == pytest.approx(4 / 7)  # the direct answer counts, its 0 calls too
    prod = s["tool_productivity"]["by_data_source"]
    assert prod["demo_arith"] == pytest.approx(2 / 4) and prod["demo_search"] == pytest.approx(1 / 3)
    assert prod["demo_direct"] is None  # no tool call: undefined, never infinity or 0
    assert s["tool_calls_per_question"]["overall"] == pytest.approx(7 / 6)
    assert s["tool_calls_per_question"]["by_tool"] == pytest.approx({"code": 4 / 6, "search": 3 / 6})
    assert s["by_data_source"]["demo_arith"]["tool_calls_per_question"] == pytest.approx(4 / 3)
    assert s["tool_productivity"]["definition"] == PRODUCTIVITY_NOTE


def test_zero_tool_calls_give_no_productivity_and_zero_rates():
    s = summarize([rec("demo_direct", True), rec("demo_direct", False)], tools=("code", "search"))
    assert s["tool_productivity"]["overall"] is None
    assert s["tool_calls_per_question"] == {"overall": 0.0, "by_tool": {"code": 0.0, "search": 0.0}}
    assert s["accuracy"]["overall"] == 0.5
    md = summary_markdown(s)
    assert "| tool productivity (correct / tool calls) | n/a |" in md
    # Calls but no correct answer: a productivity of 0, not undefined.
    s = summarize([rec("demo_arith", False, ("code", "code"))])
    assert s["tool_productivity"]["overall"] == 0.0


def test_no_records_summarise_without_dividing_by_zero():
    s = summarize([], settings={"model": "m"})
    assert s["counts"]["questions"] == 0
    assert s["accuracy"]["overall"] is None and s["format_error_rate"] is None
    assert s["latency_s"] == {"mean": None, "p50": None, "p95": None}
    assert s["by_data_source"] == {} and s["accuracy_by_template"] == {}
    assert "# Evaluation summary" in summary_markdown(s)


def test_accuracy_by_template_groups_rows_that_name_one():
    records = [
        rec("demo_arith", True, template="plus"), rec("demo_arith", False, template="plus"),
        rec("demo_arith", True, template="times"), rec("demo_search", True, template="plus"),
        rec("demo_search", False),  # no template: in the overall numbers, not in this table
    ]
    s = summarize(records)
    by_t = s["accuracy_by_template"]
    assert set(by_t) == {"plus", "times"}
    assert by_t["plus"] == {"n": 3, "correct": 2, "accuracy": pytest.approx(2 / 3),
                            "data_sources": ["demo_arith", "demo_search"]}
    assert by_t["times"]["accuracy"] == 1.0
    md = summary_markdown(s)
    assert "| plus | demo_arith, demo_search | 3 | 2 | 0.667 |" in md


def test_format_errors_counted_from_the_flag_or_recomputed_from_the_text():
    good = "<think>t</think>\n<answer>4</answer>"
    records = [
        rec("demo_arith", True, fmt=True),
        rec("demo_arith", False, fmt=False),
        rec("demo_arith", False, fmt=None, text="4, no tags at all"),  # a rollout dump without the flag
        rec("demo_arith", True, fmt=None, text=good),
    ]
    s = summarize(records)
    assert s["counts"]["format_errors"] == 2 and s["format_error_rate"] == 0.5
    assert s["by_data_source"]["demo_arith"]["format_error_rate"] == 0.5


def test_latency_percentiles_counts_and_markdown():
    import numpy as np

    seconds = [0.5, 1.0, 1.5, 2.0, 10.0]
    records = [rec("demo_arith", i % 2 == 0, ("code",), seconds=x, failed=1 if i == 0 else 0)
               for i, x in enumerate(seconds)]
    records.append(rec("demo_arith", False, seconds=None, finish="max_tokens"))
    records[-1]["error"] = "the prompt has 9 tokens, which leaves no room"
    s = summarize(records, settings={"data": "a|b.jsonl", "temperature": 0.0})
    assert s["latency_s"]["mean"] == pytest.approx(np.mean(seconds))
    assert s["latency_s"]["p50"] == pytest.approx(np.percentile(seconds, 50))
    assert s["latency_s"]["p95"] == pytest.approx(np.percentile(seconds, 95))
    assert s["counts"]["tool_failures"] == 1 and s["counts"]["errors"] == 1
    assert s["counts"]["finish_reasons"] == {"answer": 5, "max_tokens": 1}
    assert percentile([3.0], 95) == 3.0 and percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    md = summary_markdown(s)
    assert "| data | a\\|b.jsonl |" in md  # a pipe in a value does not break the table
    assert "| demo_arith | 6 | 3 | 0.500 |" in md
    json.dumps(s)  # JSON-able as it is


# ---- judging -------------------------------------------------------------------------------------

DIRECT_GOLD = "Hello! I can search and run Python to answer questions."


def test_judge_direct_questions_need_a_well_formed_reply_without_tools():
    reply = f"<think>A greeting.</think>\n<answer>{DIRECT_GOLD}</answer>"
    assert judge(reply, DIRECT_GOLD, "demo_direct", tool_calls=0).correct == 1.0
    assert judge(reply, DIRECT_GOLD, "demo_direct", tool_calls=1).correct == 0.0  # a tool call: wrong
    other = "<think>A greeting.</think>\n<answer>Hi.</answer>"
    assert judge(other, DIRECT_GOLD, "demo_direct", tool_calls=0).correct == 0.0  # has a gold: must match it
    assert judge(other, "", "demo_direct", tool_calls=0).correct == 1.0  # no gold: any well-formed reply
    assert judge("Hi.", "", "demo_direct", tool_calls=0).total == -1.0  # not well formed


def test_judge_scores_like_tapo_without_the_overlong_penalty():
    call = "<think>t</think>\n<code>print(6*7)</code>\n\n<response>42\n</response>\n\n"
    ok = judge(call + "<answer>42</answer>", "42", "demo_arith", tool_calls=1)
    assert (ok.total, ok.correct, ok.format_ok, ok.answer) == (1.0, 1.0, True, "42")
    wrong = judge(call + "<answer>41</answer>", ["42"], "demo_arith", tool_calls=1)
    assert (wrong.total, wrong.correct) == (0.0, 0.0)
    bad = judge("<think>t</think> 42 <answer>42</answer>", "42", "demo_arith", tool_calls=0)
    assert (bad.total, bad.correct, bad.format_ok) == (-1.0, 0.0, False)


def test_eval_record_has_the_one_schema_judged():
    traj = Trajectory(prompt_ids=[1, 2, 3], completion_ids=[4, 5, 6], mask=[1, 0, 1], logprobs=[-0.1, None, -0.2],
                      text="<think>t</think>\n<code>print(1)</code>\n\n<response>1\n</response>\n\n<answer>1</answer>",
                      answer="1", wall_seconds=0.25,
                      tool_calls=[ToolCallRecord(0, "code", "print(1)", "1\n", True, 0.01, 4)])
    tapo_row = TaskRow([{"role": "system", "content": "Rules."}, {"role": "user", "content": "One?"}], None, ["1"],
                       "demo_arith", {"template": "t", "index": 3})
    record = eval_record(traj, tapo_row, 7)
    assert set(SCHEMA) <= set(record)
    assert record["id"] == "eval-7" and record["question"] == "One?" == row_question(tapo_row)
    assert (record["correct"], record["reward"], record["format_ok"]) == (1.0, 1.0, True)
    assert record["gold"] == ["1"] and record["seconds"] == 0.25 and record["extra_info"]["template"] == "t"
    assert record["tool_steps"][0]["name"] == "code" and record["tool_steps"][0]["id"] == "eval-7-call-0"
    assert summarize([record])["tool_productivity"]["overall"] == 1.0


# ---- the runner on a scripted engine -------------------------------------------------------------


def test_evaluate_rows_bounds_trajectories_in_flight_and_keeps_row_order(tiny_tokenizer):
    from scripted_backend import EOS, ScriptedBackend

    class Counting(ScriptedBackend):
        active = peak = 0

        async def generate(self, prompt_ids, params):
            Counting.active += 1
            Counting.peak = max(Counting.peak, Counting.active)
            try:
                async for chunk in super().generate(prompt_ids, params):
                    yield chunk
            finally:
                Counting.active -= 1

    n = 7
    backend = Counting(tiny_tokenizer, ["<think>t</think>\n<answer>4</answer>" + EOS] * n, delay_s=0.002)
    rows = [TaskRow(None, f"q{i}", "4" if i % 2 == 0 else "5", "demo_arith", {}) for i in range(n)]
    prompts = [tiny_tokenizer.encode(f"question {i}") for i in range(n)]
    records = asyncio.run(evaluate_rows(rows, prompts, backend, ToolRegistry(), protocol=TAPO,
                                        budget=Budget(max_tool_calls=1), concurrency=3, progress=False))
    assert Counting.peak == 3
    assert [r["id"] for r in records] == [f"eval-{i}" for i in range(n)]
    assert [r["question"] for r in records] == [f"q{i}" for i in range(n)]
    assert [r["correct"] for r in records] == [1.0 if i % 2 == 0 else 0.0 for i in range(n)]


def test_a_prompt_past_the_context_is_recorded_not_raised(tiny_tokenizer):
    from scripted_backend import EOS, ScriptedBackend

    backend = ScriptedBackend(tiny_tokenizer, ["<think>t</think>\n<answer>4</answer>" + EOS], context_length=64)
    rows = [TaskRow(None, "long", "4", "demo_arith", {}), TaskRow(None, "short", "4", "demo_arith", {})]
    prompts = [list(range(100)), tiny_tokenizer.encode("short")]
    records = asyncio.run(evaluate_rows(rows, prompts, backend, ToolRegistry(), progress=False))
    assert "no room" in records[0]["error"] and records[0]["correct"] == 0.0
    assert records[0]["agent_finish_reason"] == "context"
    assert records[1]["correct"] == 1.0 and "error" not in records[1]
    assert summarize(records)["counts"]["errors"] == 1


# ---- the command on the tiny fixture model -------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Path]:
    """A few fixture questions as plain rows plus one TAPO-style row, and a BM25 index of the
    fixture encyclopedia (one passage per fact, as the fixture's own search tool answers)."""
    from agent_runtime.models.fixture_tasks import encyclopedia, fixture_tasks
    from agent_runtime.search.bm25 import build_index

    root = tmp_path_factory.mktemp("eval")
    source = {"arithmetic": "demo_arith", "fact": "demo_search", "direct": "demo_direct"}
    wanted = {"arithmetic": 2, "fact": 2, "direct": 1}
    rows = []
    for task in fixture_tasks(7, 80):
        if wanted[task.family]:
            wanted[task.family] -= 1
            rows.append({"question": task.question, "answer": task.answer, "data_source": source[task.family],
                         "extra_info": {"template": task.family}})
    rows.append({"data_source": "demo_arith", "prompt": [{"role": "user", "content": "What is 12 * 34?"}],
                 "reward_model": {"ground_truth": "408"}, "extra_info": {"template": "tapo_row"}})
    data = root / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = root / "corpus.jsonl"
    with corpus.open("w") as f:
        for i, e in enumerate(encyclopedia()):
            for j, sentence in enumerate((f"{e.name} was born in {e.birthplace}.",
                                          f"{e.name} was born in the year {e.year}.",
                                          f"{e.name}'s favourite colour is {e.colour}.")):
                f.write(json.dumps({"id": f"{i}-{j}", "title": e.name, "text": sentence}) + "\n")
    build_index(corpus, root / "index", progress=False)
    return {"root": root, "data": data, "index": root / "index"}


EVAL_ARGS = ("--max-tokens", "160", "--max-tool-calls", "2", "--concurrency", "6")


@pytest.fixture(scope="module")
def local_eval(bench, tiny_path) -> tuple[subprocess.CompletedProcess, Path]:
    out = bench["root"] / "local"
    proc = tapo("eval", "--data", str(bench["data"]), "--model", "tiny", "--search-index", str(bench["index"]),
                "--out", str(out), *EVAL_ARGS)
    return proc, out


def test_eval_writes_judged_trajectories_and_a_consistent_summary(local_eval, bench):
    proc, out = local_eval
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = read_records(out / "trajectories.jsonl")
    rows = [json.loads(line) for line in bench["data"].read_text().splitlines()]
    assert [r["id"] for r in records] == [f"eval-{i}" for i in range(len(rows))]
    for record, row in zip(records, rows):
        assert set(SCHEMA) <= set(record)
        assert record["data_source"] == row["data_source"]
        assert len(record["completion_ids"]) == len(record["mask"]) == len(record["logprobs"])
        assert record["correct"] in (0.0, 1.0) and record["reward"] in (-1.0, 0.0, 1.0)
        verdict = judge(record["text"], record["gold"], record["data_source"], tool_calls=len(record["tool_steps"]))
        assert record["correct"] == verdict.correct and record["format_ok"] == verdict.format_ok
        if record["data_source"] == "demo_direct" and record["correct"]:
            assert record["tool_steps"] == []
    assert records[-1]["question"] == "What is 12 * 34?"  # the TAPO row's prompt, used as it is
    assert sum(len(r["tool_steps"]) for r in records) > 0  # the fixture model calls the real tools

    summary = json.loads((out / "summary.json").read_text())
    accuracy = summary["accuracy"]["overall"]
    assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
    assert accuracy == pytest.approx(sum(r["correct"] for r in records) / len(records))
    assert summary["counts"]["questions"] == len(records)
    assert summary["counts"]["tool_calls"] == sum(len(r["tool_steps"]) for r in records)
    assert set(summary["accuracy"]["by_data_source"]) == {"demo_arith", "demo_search", "demo_direct"}
    assert set(summary["accuracy_by_template"]) == {"arithmetic", "fact", "direct", "tapo_row"}
    assert set(summary["tool_calls_per_question"]["by_tool"]) == {"code", "search"}
    settings = summary["settings"]
    assert settings["model"] == "tiny" and settings["engine"] == "transformers" and settings["temperature"] == 0.0
    assert settings["search_backend"] == "bm25" and settings["max_tool_calls"] == 2 and settings["rows"] == len(rows)
    assert settings["data"] == str(bench["data"])
    assert summary == summarize(records, settings=settings, tools=settings["tools"])  # the pure function's output

    md = (out / "summary.md").read_text()
    assert md == summary_markdown(summary)
    assert f"| accuracy | {accuracy:.3f} |" in md
    assert f"accuracy {accuracy:.3f}" in proc.stdout


def test_eval_through_engine_url_gives_the_same_greedy_trajectories(local_eval, bench, tiny_model, tiny_tokenizer):
    from asgi_thread import serve_asgi

    from agent_runtime.backends.transformers_engine import TransformersBackend
    from server.app import create_app
    from server.state import ServerState

    _, local_out = local_eval
    state = ServerState(backend=TransformersBackend(tiny_model, tiny_tokenizer, max_slots=8), tools=ToolRegistry(),
                        model_name="tiny")
    out = bench["root"] / "remote"
    with serve_asgi(create_app(state)) as url:
        proc = tapo("eval", "--data", str(bench["data"]), "--engine-url", f"{url}/v1", "--model", "tiny",
                    "--search-index", str(bench["index"]), "--out", str(out), *EVAL_ARGS)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["engine"] == "remote" and summary["settings"]["engine_url"] == f"{url}/v1"
    local, remote = read_records(local_out / "trajectories.jsonl"), read_records(out / "trajectories.jsonl")
    for a, b in zip(local, remote, strict=True):
        for key in ("prompt_ids", "completion_ids", "mask", "text", "final_answer", "correct", "reward"):
            assert a[key] == b[key], (a["id"], key)
    local_summary = json.loads((local_out / "summary.json").read_text())
    assert summary["accuracy"] == local_summary["accuracy"]


# ---- bad input: one line, exit code 2 ------------------------------------------------------------


def test_a_missing_data_file_is_one_clear_line(tmp_path):
    missing = tmp_path / "nope.jsonl"
    proc = tapo("eval", "--data", str(missing), "--out", str(tmp_path / "out"), "--search-backend", "none")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "no such file" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "2+2?", "data_source": "demo_arith"}', "missing field 'answer'"),
    ('{"question": "2+2?", "answer": "4"', "bad JSON"),
])
def test_a_bad_row_names_file_and_line(tmp_path, bad_line, message):
    data = tmp_path / "rows [test].jsonl"  # brackets: not read as markup
    data.write_text('{"question": "1+1?", "answer": "2", "data_source": "demo_arith"}\n\n' + bad_line + "\n")
    proc = tapo("eval", "--data", str(data), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{data}:3" in lines[0] and message in lines[0], proc.stderr


def test_bad_options_fail_before_running(tmp_path, bench):
    proc = tapo("eval", "--data", str(bench["data"]), "--out", str(tmp_path / "o"), "--engine", "warp",
                "--search-backend", "none")
    assert proc.returncode == 2 and "unknown engine" in proc.stderr and "Traceback" not in proc.stderr


def test_an_engine_that_fails_stops_the_run_with_one_error_and_exit_code_1(tmp_path, bench, tiny_path):
    proc = tapo("eval", "--data", str(bench["data"]), "--out", str(tmp_path / "o"), "--model", "tiny",
                "--engine-url", "http://127.0.0.1:9/v1", "--search-backend", "none", "--limit", "2")
    assert proc.returncode == 1, proc.stderr
    assert "evaluation stopped" in proc.stderr and "cannot reach" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_eval_report_compares_runs_and_draws_the_learning_curve(tmp_path):
    from training.eval_report import main as report_main

    def summary(acc, calls):
        return {"accuracy": {"overall": acc, "by_data_source": {"demo_arith": acc}},
                "tool_calls_per_question": {"overall": calls, "by_tool": {"code": calls}},
                "by_data_source": {"demo_direct": {"tool_calls_per_question": 0.0}},
                "tool_productivity": {"overall": acc / calls}, "format_error_rate": 0.0}

    for name, acc, calls in (("sft", 0.5, 1.0), ("rl", 0.75, 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary(acc, calls)))
    rollouts = tmp_path / "run" / "rollouts"
    rollouts.mkdir(parents=True)
    for step, rewards in ((1, [0.0, 1.0]), (2, [1.0, 1.0])):
        rows = [{"reward": r, "correct": r, "tool_steps": [{}] * step} for r in rewards]
        (rollouts / f"step-{step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _stdout_of(["--eval", f"SFT={tmp_path / 'sft'}", "--eval", f"SFT+TAPO={tmp_path / 'rl'}",
                            "--curve", f"TAPO={tmp_path / 'run'}"], report_main)
    assert "| SFT | 0.50 | 0.50 |" in out and "| SFT+TAPO | 0.75 | 0.75 |" in out
    assert "| SFT+TAPO | 0.50 | 0.50 | 0.00 | 1.50 | 0.00 |" in out
    assert "| 1 | 2 | 0.50 | 0.50 | 1.00 |" in out and "| 2 | 2 | 1.00 | 1.00 | 2.00 |" in out
    assert report_main(["--eval", f"x={tmp_path / 'missing'}"]) == 2


def test_mcnemar_exact_matches_the_binomial_test():
    from training.eval_report import mcnemar_exact

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # six discordant pairs, all one way
    assert mcnemar_exact(2, 10) == pytest.approx(0.0385742, abs=1e-6)  # binom.test(2, 12), two-sided
    assert mcnemar_exact(10, 2) == mcnemar_exact(2, 10)


def test_eval_report_pairs_two_runs_question_by_question(tmp_path):
    from training.eval_report import main as report_main

    def run(name: str, right: list[int], tools: list[int]) -> Path:
        d = tmp_path / name
        d.mkdir()
        rows = [{"id": f"eval-{i}", "correct": float(i in right), "data_source": "demo_direct" if i < 10 else "demo_arith",
                 "tool_steps": [{"name": "search"}] if i in tools else []} for i in range(20)]
        (d / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "summary.json").write_text(json.dumps({
            "accuracy": {"overall": len(right) / 20, "by_data_source": {}},
            "tool_calls_per_question": {"overall": 0.0, "by_tool": {}}, "tool_productivity": {"overall": None},
            "format_error_rate": 0.0}))
        return d

    # A searches on eight direct questions and B on none; both compute every arithmetic one
    a = run("a", [0, 1, 2, 3], tools=[*range(8), *range(10, 20)])
    b = run("b", [0, 1, 4, 5, 6, 7, 8, 9, 10, 11], tools=list(range(10, 20)))
    out = _stdout_of(["--eval", f"A={a}", "--eval", f"B={b}", "--compare", "A:B"], report_main)
    assert "| A | B | 20 | 2 | 8 | 0.109 |" in out
    assert "| A | B | 20 | 8 | 0 | 0.00781 |" in out  # tool use, all questions
    assert "| A | B (demo_direct) | 10 | 8 | 0 | 0.00781 |" in out and "| A | B (demo_arith) | 10 | 0 | 0 | 1 |" in out
    assert report_main(["--eval", f"A={a}", "--compare", "A:C"]) == 2


def _stdout_of(argv, entry) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert entry(argv) == 0
    return out.getvalue()
