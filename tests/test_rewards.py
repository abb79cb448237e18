"""Tests for training.rewards: the format gate, answer extraction, matching and TAPO's reward."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

from agent_runtime.protocol import SEARCH_R1, TORL
from training import rewards
from training.rewards import (
    RewardBreakdown,
    ToolEfficiency,
    answer_family,
    correctness,
    exact_match,
    extract_answer,
    format_ok,
    golds_of,
    math_match,
    normalize_answer,
    numeric_match,
    otc_tool_reward,
    overlong_penalty,
    parse_number,
    substring_match,
    tapo_reward,
)

GOOD = ("<think>I need the capital.</think>\n<search>capital of France</search>\n\n"
        "<response>(Title: France) Paris is the capital.</response>\n\n"
        "<think>So it is Paris.</think>\n<answer>Paris</answer>")
GOOD_CODE = ("<think>compute</think><code>\nprint(6*7)\n</code>\n\n<response>42</response>\n\n"
             "<answer>42</answer>")


# ------------------------------------------------------------------ format gate and extraction

@pytest.mark.parametrize("text", [
    GOOD,
    GOOD_CODE,
    "<answer>x</answer>",
    "  \n<think>a</think>\n\n<answer>x</answer>\n  ",
    "<think></think><answer></answer>",  # empty blocks are well formed (the empty answer is just wrong)
    "<think>a <answer>draft</answer> b</think><answer>final</answer>",
    "<code>if a < b: print('<answer>')</code><response>x</response><answer>1</answer>",
])
def test_format_ok_accepts(text):
    assert format_ok(text)


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("   \n", "only whitespace"),
    ("<think>a</think>", "no answer"),
    ("Paris", "no blocks"),
    ("The answer is <answer>Paris</answer>", "text before a block"),
    ("<answer>Paris</answer> I hope that helps", "text after the answer"),
    ("<answer>a</answer><answer>b</answer>", "two answers"),
    ("<answer>a</answer><think>more</think>", "answer not last"),
    ("<think>x <answer>Paris</answer></think>", "answer inside think is not an answer"),
    ("<search>q</search><answer>x</answer>", "tool call without response"),
    ("<search>q</search>", "ends on a tool call"),
    ("<think>a</think><response>made up</response><answer>x</answer>", "response without tool call"),
    ("<think>a<answer>x</answer>", "unclosed think"),
    ("<think>a</think></search><answer>x</answer>", "stray close tag"),
    ("<think>a</think><foo>b</foo><answer>x</answer>", "unknown tag"),
    ("<answer>x", "unclosed answer"),
    ("\nMy previous action is invalid. Let me try again.\n<answer>x</answer>", "in-band error text"),
])
def test_format_ok_rejects(text, why):
    assert not format_ok(text), why


def test_format_ok_other_protocols():
    sr1 = "<think>a</think><search>q</search>\n\n<information>doc</information>\n\n<answer>x</answer>"
    assert format_ok(sr1, SEARCH_R1)
    assert not format_ok(sr1.replace("information", "response"), SEARCH_R1)
    assert format_ok("Let me compute.\n```python\nprint(1)\n```\n```output\n1\n```\nSo \\boxed{1}.", TORL)
    assert not format_ok("The answer is 1.", TORL)
    # a \boxed printed by the tool is not the model's answer
    assert not format_ok("```python\nprint('\\\\boxed{1}')\n```\n```output\n\\boxed{1}\n```\n", TORL)


def test_extract_answer():
    assert extract_answer(GOOD) == "Paris"
    assert extract_answer("<answer>  spaced out \n</answer>") == "spaced out"
    assert extract_answer("<think>no answer</think>") is None
    assert extract_answer("") is None
    # two answers: the last one counts (as TAPO and Search-R1 keep the last); the gate rejects it
    assert extract_answer("<answer>first</answer><answer>second</answer>") == "second"
    # an answer inside think is think content, not an answer
    assert extract_answer("<think><answer>hidden</answer></think>") is None
    assert extract_answer("<think><answer>hidden</answer></think><answer>shown</answer>") == "shown"
    assert extract_answer("<response><answer>from tool</answer></response>") is None
    assert extract_answer("x \\boxed{\\frac{1}{2}} y \\boxed{3}", TORL) == "3"
    assert extract_answer("no box", TORL) is None


# ------------------------------------------------------------------ ground truth

def test_golds_of():
    assert golds_of("Paris") == ["Paris"]
    assert golds_of(["a", "b"]) == ["a", "b"]
    assert golds_of({"target": ["a", "b"]}) == ["a", "b"]
    assert golds_of({"target": "a"}) == ["a"]
    assert golds_of({"target": np.array(["a", "b"])}) == ["a", "b"]
    assert golds_of(12345678901234567890) == ["12345678901234567890"]
    assert golds_of([1, 2.5]) == ["1", "2.5"]
    assert golds_of([]) == []
    with pytest.raises(ValueError, match="target"):
        golds_of({"answer": "x"})
    for bad in (None, True, [None], [["nested"]], {"target": [b"bytes"]}):
        with pytest.raises(TypeError):
            golds_of(bad)
    with pytest.raises(ValueError):
        golds_of(float("nan"))


# ------------------------------------------------------------------ QA

def test_normalize_answer():
    assert normalize_answer("  The  Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("Grey’s Anatomy") == normalize_answer("Grey's anatomy") == "greys anatomy"
    assert normalize_answer("ＰＡＲＩＳ") == "paris"  # full-width (NFKC)
    assert normalize_answer("Zürich") == "zürich"
    assert normalize_answer("theater") == "theater"  # articles only as whole words
    assert normalize_answer("") == ""


def test_exact_match():
    assert exact_match("the Paris", "paris")
    assert exact_match("PARIS.", ["London", "Paris"])
    assert not exact_match("Paris, France", "paris")
    assert not exact_match(None, "paris")
    assert exact_match("São Paulo", "são paulo")


def test_substring_match():
    assert substring_match("It is Paris, France", ["paris"])
    assert substring_match("Paris", ["London", "Paris"])
    assert not substring_match("10", "1")  # whole words: gold 1 is not in 10
    assert not substring_match("London", "Paris")
    assert not substring_match("anything", "The")  # gold normalises to nothing
    assert not substring_match("", "Paris")
    assert not substring_match(None, "Paris")
    # Levenshtein fallback: one edit in >= 10 characters passes at the default 0.9
    assert substring_match("Barak Obama", "Barack Obama")  # similarity 11/12
    assert not substring_match("Pariss", "Paris")  # short: 5/6 < 0.9
    assert substring_match("Pariss", "Paris", min_similarity=0.8)
    assert substring_match("zurich", "Zürich", min_similarity=0.8)


# ------------------------------------------------------------------ numbers

@pytest.mark.parametrize("text,value,integer,percent", [
    ("42", 42, True, False),
    ("-7", -7, True, False),
    ("−7", -7, True, False),  # Unicode minus
    ("１２３", 123, True, False),  # full-width digits
    ("1,234,567", 1234567, True, False),
    ("1{,}000", 1000, True, False),
    ("$1,234.50", 1234.5, False, False),
    ("0.5", 0.5, False, False),
    (".5", 0.5, False, False),
    ("1.5e3", 1500, False, False),
    ("1.5 \\times 10^{3}", 1500, False, False),
    ("2×10^-2", 0.02, False, False),
    ("3/4", 0.75, False, False),
    ("50%", 50, False, True),
    ("12.5\\%", 12.5, False, True),
    ("twelve", 12, True, False),
    ("1133 days", 1133, True, False),
    ("The answer is 3.5.", 3.5, False, False),
])
def test_parse_number(text, value, integer, percent):
    n = parse_number(text)
    assert n is not None
    assert float(n.value) == pytest.approx(value)
    assert (n.integer, n.percent) == (integer, percent)


def test_parse_number_exact_and_rejects():
    assert parse_number("12345678901234567890").value == 12345678901234567890
    assert parse_number("1e30").value == 10**30
    assert parse_number("between 5 and 7") is None  # several numbers: no guess
    assert parse_number("1133 days", extract=False) is None
    assert parse_number("Paris") is None
    assert parse_number("") is None
    assert parse_number("1/0") is None
    # no billion-digit integers from a model's "1e999999999": refused, and fast
    assert parse_number("1e999999999") is None and parse_number("1 \\times 10^{99999999}") is None
    assert parse_number("9" * 5000) is None
    assert not numeric_match("1e999999999", "1")


def test_numeric_match():
    assert numeric_match("1,000", "1000")
    assert numeric_match("1000.00001", "1000")  # relative tolerance 1e-4
    assert not numeric_match("1001", "1000.0")  # 1e-3 off
    assert numeric_match("0.3333", "1/3", rel_tol=1e-3)
    assert numeric_match("3.14159", "3.1416")
    assert numeric_match("0", "0.0000001")  # absolute tolerance near zero
    # huge integers compare exactly, never through float
    assert numeric_match("12345678901234567890", "12,345,678,901,234,567,890")
    assert not numeric_match("12345678901234567891", "12345678901234567890")
    assert not numeric_match("1000001", "1000000")  # two integers: exact
    # percentages stand for the number and its hundredth
    assert numeric_match("50%", "50")
    assert numeric_match("50%", "0.5")
    assert numeric_match("0.5", "50%")
    assert not numeric_match("5", "50%")
    assert numeric_match("1.5e3", "1500")
    assert numeric_match("−3", "-3")
    assert numeric_match("three", "3")
    assert numeric_match("about 1133 days", "1133")
    assert not numeric_match("about 1133 days", "1133", extract=False)
    assert not numeric_match(None, "1")
    assert not numeric_match("x", "1")


# ------------------------------------------------------------------ math-verify

def test_math_match_latex():
    assert math_match("0.5", "\\frac{1}{2}")
    assert math_match("\\frac{1}{2}", "0.5")
    assert math_match("\\dfrac12", "\\frac{1}{2}")
    assert math_match("2^{1/2}", "\\sqrt{2}")
    assert math_match("1+x", "x+1")
    assert math_match("\\boxed{\\frac{3}{4}}", "0.75")
    assert not math_match("\\frac{1}{3}", "0.5")
    assert not math_match("", "1")
    assert not math_match(None, "1")
    assert not math_match("}{\\frac{", "1")  # garbage: no match, no exception


def test_math_match_off_main_thread_and_timeout(monkeypatch):
    # math-verify's signal-based timeouts only work in the main thread; elsewhere a worker runs it.
    out: dict[str, bool] = {}

    def run(key: str, pred: str, gold: str) -> None:
        out[key] = math_match(pred, gold)

    monkeypatch.setattr(rewards, "_worker_wait_s", lambda timeout_s: 0.001)  # the worker cannot start in 1 ms
    t = threading.Thread(target=run, args=("timeout", "0.5", "\\frac{1}{2}"))
    t.start()
    t.join()
    assert out["timeout"] is False and rewards._pool is None  # timed out: counted wrong, worker dropped
    monkeypatch.undo()
    threads = [threading.Thread(target=run, args=(k, p, "\\frac{1}{2}")) for k, p in (("yes", "0.5"), ("no", "0.4"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["yes"] is True and out["no"] is False
    rewards._shutdown_pool()


# ------------------------------------------------------------------ dispatch

@pytest.mark.parametrize("source,family", [
    ("demo_arith", "numeric"), ("demo_search", "qa"), ("demo_twohop", "numeric"), ("demo_direct", "direct"),
    ("dapo_math", "math"), ("deep_math", "math"), ("gsm8k", "math"), ("aime2024", "math"), ("amc23", "math"),
    ("MATH500", "math"), ("nq", "qa"), ("triviaqa", "qa"), ("hotpotqa", "qa"), ("2wikimultihopqa", "qa"),
    ("musique", "qa"), ("bamboogle", "qa"), ("popqa", "qa"), ("nq_hotpotqa_train", "qa"),
    ("calculator", "numeric"), ("default", "default"), ("inquiry", "default"), ("something", "default"),
])
def test_answer_family(source, family):
    assert answer_family(source) == family


def test_correctness_by_source():
    assert correctness("1,133", "1133", "demo_arith") == 1.0
    assert correctness("1133.0", ["1133"], "demo_arith") == 1.0
    assert correctness("1134", "1133", "demo_arith") == 0.0
    assert correctness("the Eiffel Tower", {"target": ["Eiffel Tower", "La tour Eiffel"]}, "demo_search") == 1.0
    assert correctness("It's in Paris", ["paris"], "nq") == 1.0
    assert correctness("London", ["paris"], "hotpotqa") == 0.0
    assert correctness("three", "3", "nq") == 1.0  # both plain numbers: compared as numbers
    assert correctness("1.5", "15", "nq") == 0.0  # ... not as normalised strings ("15" == "15")
    assert correctness("-5", "5", "something") == 0.0
    assert correctness("0.5", "\\frac{1}{2}", "dapo_math") == 1.0
    assert correctness("\\frac{1}{2}", {"target": ["0.5"]}, "math500") == 1.0
    assert correctness("x + 1", "x+1", "aime2024") == 1.0
    assert correctness("33", "33", "aime2024") == 1.0
    assert correctness("34", "33", "aime2024") == 0.0
    assert correctness("PARIS", "paris", "unknown_source") == 1.0
    assert correctness("1,000", "1000", "unknown_source") == 1.0
    assert correctness("anything", [], "demo_direct") == 1.0
    assert correctness("7", "7", "demo_direct") == 1.0
    assert correctness("8", "7", "demo_direct") == 0.0
    assert correctness("anything", [""], "demo_direct") == 1.0  # a blank gold is no gold
    assert correctness("The capital of Norway is Oslo.", "Oslo", "demo_direct") == 1.0
    assert correctness("The capital of Norway is Bergen.", "Oslo", "demo_direct") == 0.0


def test_twohop_answers_are_one_number():
    assert correctness("49.0 years", "49", "demo_twohop") == 1.0
    assert correctness("From 1830 to 1879 is 49 years", "49", "demo_twohop") == 0.0
    assert correctness("1830, 1879, 49", "49", "demo_twohop") == 0.0
    assert correctness(None, "7", "demo_arith") == 0.0


# ------------------------------------------------------------------ overlong penalty

def test_overlong_penalty_matches_trl():
    from trl.rewards import get_soft_overlong_punishment

    for max_len, buf in ((100, 20), (2048, 1024), (50, 0), (10, 10)):
        trl_fn = get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=buf)
        for n in sorted({0, 1, max_len - buf - 1, max_len - buf, max_len - buf + 1, max_len - 1, max_len,
                         max_len + 1, 3 * max_len} - {-1}):
            expected = trl_fn([[0] * n])[0]
            assert overlong_penalty(n, max_len, buf) == pytest.approx(expected)
            assert rewards._soft_overlong_formula(n, max_len, buf) == pytest.approx(expected)
    assert overlong_penalty(90, 100, 20) == pytest.approx(-0.5)  # TRL's docstring example
    assert overlong_penalty(90, 100, 20, overlong_factor=0.5) == pytest.approx(-0.25)
    assert overlong_penalty(10**6, 100, 20, overlong_factor=0.0) == 0.0
    # TAPO's formula inside the buffer: min(-(len - (max - buf)) / buf * factor, 0)
    assert overlong_penalty(1536, 2048, 1024) == pytest.approx(-(1536 - 1024) / 1024)
    with pytest.raises(ValueError):
        overlong_penalty(5, 100, 200)
    with pytest.raises(ValueError):
        overlong_penalty(-1, 100, 20)


# ------------------------------------------------------------------ tool efficiency (OTC)

def test_otc_tool_reward():
    assert otc_tool_reward(0, None) == 1.0
    assert otc_tool_reward(0, 0) == 1.0
    assert otc_tool_reward(1, 0, smooth=1.0) == pytest.approx(math.cos(math.pi / 3))
    assert otc_tool_reward(2, 2) == pytest.approx(1.0)
    assert otc_tool_reward(4, 2) == pytest.approx(math.sin(2 * 2 * 4 / 6 * math.pi / 4))
    assert otc_tool_reward(0, 2) == 0.0  # OTC is symmetric around the optimum
    values = [otc_tool_reward(m, 2) for m in range(2, 10)]
    assert values == sorted(values, reverse=True)  # more calls than needed: less reward
    values = [otc_tool_reward(m, None, smooth=2.0) for m in range(0, 10)]
    assert values == sorted(values, reverse=True) and all(0 < v <= 1 for v in values)
    with pytest.raises(ValueError):
        otc_tool_reward(-1, 0)


# ------------------------------------------------------------------ the reward

def _reward(text, gt="Paris", source="nq", **kw):
    args = dict(model_tokens=10, max_tokens=100, overlong_buffer=20)
    args.update(kw)
    return tapo_reward(text, gt, source, **args)


def test_tapo_reward_basic():
    r = _reward(GOOD)
    assert r == RewardBreakdown(1.0, True, 1.0, 0.0, 0.0, "Paris", 1)
    assert _reward(GOOD, gt="London").total == 0.0
    bad = _reward("Paris")
    assert (bad.total, bad.format_ok, bad.correct, bad.answer) == (-1.0, False, 0.0, None)
    # a correct answer in a broken format still scores -1
    two = _reward("<answer>Paris</answer><answer>Paris</answer>")
    assert (two.total, two.correct, two.answer) == (-1.0, 0.0, "Paris")
    assert _reward("<think><answer>Paris</answer></think>").total == -1.0
    assert _reward("<answer></answer>").total == 0.0


def test_tapo_reward_overlong_counts_model_tokens_only():
    # in the buffer: 90 model tokens of 100, buffer 20 -> -0.5, whatever the injected length
    r = _reward(GOOD, model_tokens=90)
    assert r.overlong_penalty == pytest.approx(-0.5) and r.total == pytest.approx(0.5)
    # as in TAPO, format failures are penalised too
    assert _reward("x", model_tokens=200).total == pytest.approx(-2.0)
    assert _reward(GOOD, model_tokens=90, overlong_factor=0.0).total == 1.0


def test_tapo_reward_tool_efficiency():
    eff = ToolEfficiency(optimal_calls=1)
    assert _reward(GOOD, tool_efficiency=eff).tool_term == pytest.approx(0.0)  # one call, optimal one
    r = _reward(GOOD, tool_efficiency=dataclasses.replace(eff, optimal_calls=0))
    assert r.tool_term == pytest.approx(math.cos(math.pi / 3) - 1)
    assert r.total == pytest.approx(math.cos(math.pi / 3))  # weight 1: OTC's alpha * r_tool * correct
    half = _reward(GOOD, tool_efficiency=ToolEfficiency(optimal_calls=0, weight=0.5))
    assert half.total == pytest.approx(1 + 0.5 * (math.cos(math.pi / 3) - 1))
    # the loop's count wins when larger; wrong answers are untouched
    assert _reward(GOOD, tool_calls=3, tool_efficiency=eff).tool_calls == 3
    wrong = _reward(GOOD, gt="London", tool_efficiency=ToolEfficiency(optimal_calls=0))
    assert (wrong.tool_term, wrong.total) == (0.0, 0.0)
    no_tools = _reward("<think>easy</think><answer>Paris</answer>", tool_efficiency=ToolEfficiency())
    assert (no_tools.tool_term, no_tools.total) == (0.0, 1.0)


def test_tapo_reward_demo_direct_requires_no_tool_call():
    direct = "<think>I know this.</think><answer>42</answer>"
    assert _reward(direct, gt="42", source="demo_direct").total == 1.0
    assert _reward(GOOD_CODE, gt="42", source="demo_direct").total == 0.0
    assert _reward(direct, gt="42", source="demo_direct", tool_calls=1).total == 0.0
    assert _reward(direct, gt=[], source="demo_direct").total == 1.0


def test_tapo_reward_other_sources_and_protocols():
    math_text = "<think>half</think><code>print(1/2)</code><response>0.5</response><answer>\\frac{1}{2}</answer>"
    assert _reward(math_text, gt={"target": ["0.5"]}, source="dapo_math").total == 1.0
    arith = "<think>t</think><answer>12,345,678,901,234,567,890</answer>"
    assert _reward(arith, gt=12345678901234567890, source="demo_arith").total == 1.0
    assert _reward(arith, gt="12345678901234567891", source="demo_arith").total == 0.0
    torl = "```python\nprint(2+2)\n```\n```output\n4\n```\nSo \\boxed{4}."
    r = _reward(torl, gt="4", source="gsm8k", protocol=TORL)
    assert (r.total, r.tool_calls, r.answer) == (1.0, 1, "4")
    assert _reward("no box", gt="4", source="gsm8k", protocol=TORL).total == -1.0


# ------------------------------------------------------------------ function calling (hermes)


def test_a_function_calling_trajectory_is_scored_on_the_loops_reading():
    from agent_runtime.protocol import HERMES
    from training.rewards import function_call_reward, function_call_well_formed
    from training.scoring import TapoRewardFunction

    def score(answer, finish="answer", invalid=0, source="demo_arith", calls=1):
        return function_call_reward(answer, ["408"], source, well_formed=function_call_well_formed(finish, invalid),
                                    model_tokens=10, max_tokens=100, overlong_buffer=10, tool_calls=calls)

    assert score("The answer is 408.").total == 1.0
    assert score("The answer is 407.").total == 0.0
    assert score("The answer is 408.", invalid=1).total == -1.0  # a call that did not parse or fit its schema
    assert score("408", finish="tool_budget").total == -1.0  # ended by the budget, not by an answer
    assert score("", finish="answer").total == -1.0  # an empty last turn is no answer
    assert score("Hello!", source="demo_direct", calls=1).correct == 0.0  # direct rows: no tool call allowed
    reward = TapoRewardFunction(HERMES, max_tokens=100, overlong_buffer=10)
    totals = reward([None, None], ["x", "y"], [[1], [1]], gold=[["408"], ["408"]], data_source=["demo_arith"] * 2,
                    final_answer=["The answer is 408.", "408"], agent_finish_reason=["answer", "answer"],
                    invalid_actions=[0, 2], tool_calls=[1, 3], completion_text=["<tool_call>junk", "junk"])
    assert totals == [1.0, -1.0]  # the text is not walked as tags: "junk" does not matter
