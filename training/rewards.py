"""TAPO's rewards as pure functions: a format gate, correctness by data source, overlong penalty.

Everything here is a pure function of text and numbers (no model, no I/O), so the trainer, ``tapo
eval`` and the tests all score a completion the same way.

How TAPO scores (``verl/utils/reward_score/tool_dapo.py`` and ``verl/workers/reward_manager/tapo.py``
in github.com/Goer17/TAPO), and where this module differs:

* **Format gate.** TAPO's ``check_format`` walks the stripped response as a chain of
  ``\\s*<tag>…</tag>\\s*`` blocks (tags think/response/answer and the enabled tools), nothing
  else, last tag ``answer``; a failure scores -1. :func:`format_ok` does the same walk with the
  project's parser, and is stricter in three ways: exactly one answer block (TAPO accepts several
  and keeps the last), every tool block immediately followed by a response block (the tool's
  output), and every response block immediately preceded by a tool block (a response the model
  wrote itself is a hallucinated observation). As in TAPO, an ``<answer>`` inside ``<think>`` is
  think content, not an answer.
* **Correctness.** TAPO compares normalised strings for math sources, gives QA (``nq``) a gold
  substring match or partial credit ``1 - lev/maxlen`` when that ratio is below 0.5, and counts
  ``score > 0.9`` as accurate. Here correctness is binary 1/0: QA sources match a gold as a whole
  word sequence inside the prediction, or by Levenshtein similarity >= 0.9 (TAPO's accuracy
  threshold); math sources go through ``math-verify``; see :func:`answer_family` for the mapping.
* **Overlong penalty.** TAPO adds DAPO's soft overlong punishment (buffer 1024 of 2048, factor 1)
  to every score, format failures included, counted on the whole response (model tokens and
  injected tool output). Here it is counted on model tokens only (the tool's output is not the
  model's length), through ``trl.rewards.get_soft_overlong_punishment``.
* **Tool efficiency** (optional, not in TAPO): OTC-PO's tool-integrated reward, see
  :class:`ToolEfficiency`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import multiprocessing
import re
import string
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from agent_runtime.parser import Segment, SegmentKind, answer_segment, parse
from agent_runtime.parser import tool_calls as parsed_tool_calls
from agent_runtime.protocol import TAPO, BlockRole, Protocol, last_boxed

log = logging.getLogger(__name__)

__all__ = [
    "RewardBreakdown",
    "ToolEfficiency",
    "answer_family",
    "correctness",
    "exact_match",
    "extract_answer",
    "format_ok",
    "function_call_reward",
    "function_call_well_formed",
    "golds_of",
    "math_match",
    "normalize_answer",
    "numeric_match",
    "otc_tool_reward",
    "overlong_penalty",
    "parse_number",
    "substring_match",
    "tapo_reward",
]

# --------------------------------------------------------------------------- format and answer


def _model_segments(text: str, protocol: Protocol) -> list[Segment]:
    return parse(protocol, text)


def _format_ok_segments(segments: list[Segment], protocol: Protocol) -> bool:
    if protocol.boxed_answer:  # ToRL: free text; the format is "a \boxed{} exists" (in model text)
        return _boxed_answer(segments) is not None
    roles: list[BlockRole] = []
    for s in segments:
        if s.kind is SegmentKind.MALFORMED:
            return False
        if s.kind is SegmentKind.PLAIN:
            if s.text.strip():
                return False  # text outside blocks (whitespace between blocks is fine)
            continue
        assert s.block is not None
        roles.append(s.block.role)
    if not roles or roles[-1] is not BlockRole.ANSWER or roles.count(BlockRole.ANSWER) != 1:
        return False
    for i, role in enumerate(roles):
        if role is BlockRole.TOOL and roles[i + 1] is not BlockRole.OBSERVATION:
            return False  # (a tool block is never last: the last block is the answer)
        if role is BlockRole.OBSERVATION and (i == 0 or roles[i - 1] is not BlockRole.TOOL):
            return False
    return True


def format_ok(text: str, protocol: Protocol = TAPO) -> bool:
    """TAPO's format gate on a full decoded completion (model text and injected tool output).

    Tag protocols: the text is a chain of protocol blocks (think, tool calls, tool responses,
    answer) with only whitespace between and around them; no malformed or unclosed tag; exactly
    one answer block, and it is the last block; each tool block is immediately followed by a
    response block and each response block immediately follows a tool block. An ``<answer>``
    written inside ``<think>`` is think content (the parser only sees ``</think>`` there).
    ``protocol.boxed_answer`` (ToRL): a ``\\boxed{…}`` exists in the model's prose (outside code
    and its output).

    The text must be decoded without special tokens (as the loop's ``Trajectory.text`` is).
    """
    return _format_ok_segments(_model_segments(text, protocol), protocol)


def _boxed_answer(segments: list[Segment]) -> str | None:
    # The answer is in the model's prose: a "\boxed{}" inside code or its output is ignored.
    prose = "\n".join(
        s.text for s in segments
        if not (s.kind is SegmentKind.BLOCK and s.block is not None
                and s.block.role in (BlockRole.TOOL, BlockRole.OBSERVATION))
    )
    return last_boxed(prose)


def extract_answer(text: str, protocol: Protocol = TAPO) -> str | None:
    """Content of the last well-formed answer block (stripped), or ``None``.

    Uses the parser rather than ``protocol.extract_answer``'s regex so that an ``<answer>`` inside
    ``<think>`` (or inside a tool call or tool output) is not taken as the answer. With two answer
    blocks the last one is returned (as TAPO's ``check_format`` and Search-R1's ``extract_solution``
    keep the last); :func:`format_ok` rejects such a completion anyway. ToRL: the last
    ``\\boxed{…}`` of the model's prose (outside code and its output).
    """
    return _answer_of(_model_segments(text, protocol), protocol)


def _answer_of(segments: list[Segment], protocol: Protocol) -> str | None:
    if protocol.boxed_answer:
        return _boxed_answer(segments)
    seg = answer_segment(segments)
    return seg.text.strip() if seg is not None else None


# --------------------------------------------------------------------------- ground truth


def golds_of(ground_truth: Any) -> list[str]:
    """The gold answers of a row: a string, a number, a list of them, or ``{"target": ...}``.

    Numbers become strings (ints exactly). Array-likes (numpy, as verl's parquet loading gives)
    are turned into lists. Anything else raises ``TypeError``/``ValueError``.
    """
    gt = ground_truth
    if isinstance(gt, Mapping):
        if "target" not in gt:
            raise ValueError(f"ground truth dict needs a 'target' key, got keys {sorted(map(str, gt))}")
        gt = gt["target"]
    if hasattr(gt, "tolist") and not isinstance(gt, (str, bytes)):
        gt = gt.tolist()
    items = list(gt) if isinstance(gt, (list, tuple)) else [gt]
    golds: list[str] = []
    for item in items:
        if isinstance(item, str):
            golds.append(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"ground truth number is not finite: {item!r}")
            golds.append(str(item))
        else:
            raise TypeError(f"ground truth must be str, number, a list of them or {{'target': [...]}}, "
                            f"got {type(item).__name__}")
    return golds


# --------------------------------------------------------------------------- QA matching

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD / Search-R1 normalisation: lowercase, drop punctuation and articles, squash spaces.

    Unicode-aware (as MLQA's evaluation): NFKC first, and every Unicode punctuation character
    (category P*) is dropped besides ASCII ``string.punctuation``, so ``Grey’s`` == ``Grey's``.
    """
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _as_list(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def exact_match(pred: str | None, golds: str | Iterable[str]) -> bool:
    """Normalised prediction equals some normalised gold."""
    if pred is None:
        return False
    p = normalize_answer(pred)
    return any(p == normalize_answer(g) for g in _as_list(golds))


QA_MIN_SIMILARITY = 0.9


def substring_match(pred: str | None, golds: str | Iterable[str], *,
                    min_similarity: float = QA_MIN_SIMILARITY) -> bool:
    """QA match: some normalised gold occurs in the normalised prediction, else a fuzzy match.

    Containment is on whole words (``" gold "`` in ``" pred "``), so gold ``1`` does not match
    ``10`` (Search-R1's ``subem_check`` is raw substring). Fallback: Levenshtein similarity
    ``1 - distance / max(len)`` (``rapidfuzz.distance.Levenshtein.normalized_similarity``, the same
    ratio TAPO computes with the ``Levenshtein`` package) of at least ``min_similarity``; 0.9 is
    TAPO's accuracy threshold and allows one edit per ten characters (none below ten). A gold that
    normalises to nothing (e.g. "The") never matches. Like TAPO and Search-R1, a prediction that
    lists many candidates contains the gold: keep answers short in the prompt.
    """
    if pred is None:
        return False
    p = normalize_answer(pred)
    if not p:
        return False
    from rapidfuzz.distance import Levenshtein

    for g in _as_list(golds):
        n = normalize_answer(g)
        if not n:
            continue
        if f" {n} " in f" {p} ":
            return True
        if Levenshtein.normalized_similarity(p, n) >= min_similarity:
            return True
    return False


# --------------------------------------------------------------------------- numbers

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
                      "eighty": 80, "ninety": 90, "hundred": 100})

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_FULL_NUMBER = re.compile(rf"(?P<num>{_NUM}|[+-]?\d+/\d+)(?:\s*(?:×|\*|x|\\times|\\cdot)\s*10\s*(?:\^|\*\*)"
                          rf"\s*\{{?(?P<exp>[+-]?\d+)\}}?)?\s*(?P<pct>%)?")
_ANY_NUMBER = re.compile(rf"(?<![\w./])(?:[+-]?\d+/\d+(?![\w/.])|{_NUM}(?:\s*%)?(?!\w|\.\d|/\d))")


@dataclass(frozen=True)
class ParsedNumber:
    value: Fraction
    integer: bool  # written as an integer literal (no point, exponent, fraction or percent)
    percent: bool


def _clean_number_text(text: str) -> str:
    s = unicodedata.normalize("NFKC", text).strip()
    s = s.replace("\u2212", "-")  # Unicode minus sign
    for a, b in (("\\%", "%"), ("\\$", ""), ("{,}", ","), ("\\,", ""), ("\\!", ""), ("\\ ", "")):
        s = s.replace(a, b)
    s = s.strip("$ ").rstrip(".")
    s = re.sub(r"^([+-]?)\s*(?:US\$|USD\b|[€£¥₹$])\s*", r"\1", s)  # a leading currency sign
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators: 1,234,567
    s = re.sub(r"(?<=\d)_(?=\d)", "", s)  # Python-style 5_900_000
    return s.strip()


_MAX_EXPONENT = 1000  # "1e999999999" would build a billion-digit integer: such numbers are not answers
_MAX_DIGITS = 1000


def _from_match(m: re.Match[str]) -> ParsedNumber | None:
    num, exp, pct = m.group("num"), m.group("exp"), m.group("pct")
    e = re.search(r"[eE]([+-]?\d+)", num)
    if (len(num) > _MAX_DIGITS or (e is not None and abs(int(e.group(1))) > _MAX_EXPONENT)
            or (exp is not None and abs(int(exp)) > _MAX_EXPONENT)):
        return None
    try:
        value = Fraction(num)
    except (ValueError, ZeroDivisionError):
        return None
    if exp is not None:
        value *= Fraction(10) ** int(exp)
    integer = exp is None and pct is None and re.fullmatch(r"[+-]?\d+", num) is not None
    return ParsedNumber(value, integer, pct is not None)


def parse_number(text: str, *, extract: bool = True) -> ParsedNumber | None:
    """A number written in ``text``, exactly (``Fraction``, never float), or ``None``.

    Handles signs, Unicode minus and full-width digits (NFKC), thousands commas (``1,234``, LaTeX
    ``1{,}234``), decimals, scientific notation (``1.5e3``, ``1.5 \\times 10^{3}``, ``1.5×10^3``),
    fractions ``3/4``, percentages (``50%``, ``50\\%``), currency signs and a trailing period; the
    words zero to twenty and the tens. ``extract``: when the whole text is not a number, take the
    only number in it (``"1133 days"``); with several numbers it returns ``None``. Exponents past
    1000 and literals over 1000 characters are refused (``None``) to keep scoring fast.
    """
    s = _clean_number_text(text)
    if not s:
        return None
    word = _NUMBER_WORDS.get(s.lower())
    if word is not None:
        return ParsedNumber(Fraction(word), True, False)
    m = _FULL_NUMBER.fullmatch(s)
    if m is not None:
        return _from_match(m)
    if not extract:
        return None
    found = _ANY_NUMBER.findall(s)
    if len(found) != 1:
        return None
    m = _FULL_NUMBER.fullmatch(found[0].strip())
    return _from_match(m) if m is not None else None


def _close(a: Fraction, b: Fraction, rel_tol: Fraction, abs_tol: Fraction) -> bool:
    return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), abs_tol)


def numeric_match(pred: str | None, gold: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6, *,
                  extract: bool = True) -> bool:
    """Numbers equal within ``math.isclose``-style tolerance, computed exactly on fractions.

    Two integer literals must be equal exactly (12345678901234567890 != ...891, where any relative
    tolerance would accept them). A percentage stands for both its number and its hundredth:
    ``50%`` matches ``50`` and ``0.5``. ``extract`` as in :func:`parse_number` (for the prediction;
    the gold is always extracted).
    """
    if pred is None:
        return False
    p, g = parse_number(pred, extract=extract), parse_number(gold)
    if p is None or g is None:
        return False
    if p.integer and g.integer:
        return p.value == g.value
    rt, at = Fraction(str(rel_tol)), Fraction(str(abs_tol))
    ps = [p.value, p.value / 100] if p.percent else [p.value]
    gs = [g.value, g.value / 100] if g.percent else [g.value]
    return any(_close(a, b, rt, at) for a in ps for b in gs)


# --------------------------------------------------------------------------- math-verify

MATH_TIMEOUT_S = 5


def _latex_wrapped(s: str) -> str:
    return s if re.search(r"\$|\\\(|\\\[|\\boxed", s) else f"${s}$"


def _math_verify_inline(pred: str, gold: str, timeout_s: int | None) -> bool:
    from math_verify import parse as mv_parse
    from math_verify import verify as mv_verify

    def parsed(s: str) -> list[Any]:
        out = mv_parse(_latex_wrapped(s), parsing_timeout=timeout_s)  # type: ignore[arg-type]
        return out or mv_parse(s, parsing_timeout=timeout_s)  # type: ignore[arg-type]

    g = parsed(gold)
    if not g:
        return False
    p = parsed(pred)
    return bool(p) and bool(mv_verify(g, p, timeout_seconds=timeout_s))


_pool: Any = None
_pool_lock = threading.Lock()


def _shutdown_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.terminate()
            _pool = None


atexit.register(_shutdown_pool)


def _worker_wait_s(timeout_s: int) -> float:
    # Parsing gold and prediction plus one comparison, each bounded by timeout_s in the worker,
    # and the worker's start (spawn, imports) the first time.
    return 3 * timeout_s + 30


def _math_verify_in_worker(pred: str, gold: str, timeout_s: int) -> bool:
    # math-verify's timeouts use signal.alarm(), which works only in the main thread (elsewhere it
    # raises ValueError; TRL's accuracy_reward then drops the timeout altogether). Off the main
    # thread we run it in a spawned worker, where its own timeouts work, and bound the wait here.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = multiprocessing.get_context("spawn").Pool(processes=1)
        pool = _pool
    try:
        job = pool.apply_async(_math_verify_inline, (pred, gold, timeout_s))
        return bool(job.get(timeout=_worker_wait_s(timeout_s)))
    except multiprocessing.TimeoutError:
        log.warning("math-verify worker timed out; restarting it")
        with _pool_lock:
            if _pool is pool:
                pool.terminate()
                _pool = None
        return False


def math_match(pred: str | None, gold: str, *, timeout_s: int = MATH_TIMEOUT_S) -> bool:
    """``math_verify.verify(parse(gold), parse(pred))``: ``\\frac{1}{2}`` == ``0.5`` == ``1/2``.

    Bare answers are wrapped in ``$…$`` for LaTeX extraction (falling back to parsing them as
    they are). math-verify bounds parsing and each comparison by ``timeout_s`` (its own
    ``signal.alarm`` timeouts); off the main thread the call runs in a worker process instead.
    Any error or timeout counts as no match.
    """
    if pred is None or not pred.strip() or not gold.strip():
        return False
    try:
        if threading.current_thread() is threading.main_thread():
            return _math_verify_inline(pred, gold, timeout_s)
        return _math_verify_in_worker(pred, gold, timeout_s)
    except Exception:  # noqa: BLE001 - a scorer must not crash training on one odd answer
        log.debug("math-verify failed on %r vs %r", pred, gold, exc_info=True)
        return False


# --------------------------------------------------------------------------- dispatch

AnswerFamily = Literal["numeric", "qa", "math", "direct", "default"]

_DEMO_FAMILIES: dict[str, AnswerFamily] = {
    "demo_arith": "numeric", "demo_search": "qa", "demo_twohop": "numeric", "demo_direct": "direct",
}
_MATH_KEYS = ("math", "gsm8k", "aime", "amc")
_QA_PREFIXES = ("nq", "triviaqa", "hotpotqa", "2wiki", "musique", "bamboogle", "popqa")
_NUMERIC_SOURCES = ("calculator",)  # TAPO's calculator source: numeric tolerance


def answer_family(data_source: str) -> AnswerFamily:
    """How a data source's answers are compared.

    ============================  ========  =====================================================
    data_source                   family    correct when
    ============================  ========  =====================================================
    ``demo_arith``,               numeric   :func:`numeric_match` with some gold (the answer
    ``demo_twohop``                         holds one number)
    ``demo_search``               qa        :func:`substring_match` (whole-word containment or
                                            Levenshtein >= 0.9)
    ``demo_direct``               direct    as ``qa`` (a sentence holding the gold is right); any
                                            answer when the gold is empty or blank;
                                            :func:`tapo_reward` also requires no tool call
    contains math/gsm8k/aime/amc  math      equal without spaces/case, else :func:`math_match`,
    (``dapo_math``, ``aime2024``)           else :func:`numeric_match` (one number in the text)
    a ``_``/``-`` separated part  qa        as ``qa`` above (Search-R1's and TAPO's QA sets)
    starting with nq, triviaqa,
    hotpotqa, 2wiki, musique,
    bamboogle, popqa
    ``calculator``                numeric   as ``numeric``
    anything else                 default   :func:`exact_match`, else :func:`numeric_match`
    ============================  ========  =====================================================
    """
    ds = data_source.strip().lower()
    if ds in _DEMO_FAMILIES:
        return _DEMO_FAMILIES[ds]
    if any(k in ds for k in _MATH_KEYS):
        return "math"
    if any(part.startswith(_QA_PREFIXES) for part in re.split(r"[^a-z0-9]+", ds)):
        return "qa"
    if ds in _NUMERIC_SOURCES:
        return "numeric"
    return "default"


def _compact(s: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", s)).lower().strip("$.")


def _matches(pred: str, gold: str, family: AnswerFamily) -> bool:
    if family == "numeric":
        return numeric_match(pred, gold)
    if parse_number(pred, extract=False) is not None and parse_number(gold, extract=False) is not None:
        # Both plain numbers: compare them as numbers. (SQuAD normalisation drops "-" and ".",
        # which would make -5 == 5 and 1.5 == 15.)
        return numeric_match(pred, gold, extract=False)
    if family in ("qa", "direct"):
        return substring_match(pred, [gold])
    if family == "math":
        return _compact(pred) == _compact(gold) or math_match(pred, gold) or numeric_match(pred, gold)
    return exact_match(pred, [gold]) or numeric_match(pred, gold)  # default


def correctness(pred: str | None, ground_truth: Any, data_source: str) -> float:
    """1.0 if the extracted answer ``pred`` matches some gold for its data source, else 0.0.

    See :func:`answer_family` for the mapping. Whatever the family, a prediction and a gold that
    are both plain numbers are compared as numbers (:func:`numeric_match`). ``pred`` ``None`` (no
    answer) scores 0; a ``demo_direct`` row without gold (or with a blank one) accepts any answer.
    """
    if pred is None:
        return 0.0
    golds = golds_of(ground_truth)
    family = answer_family(data_source)
    if family == "direct" and not any(g.strip() for g in golds):  # no gold: any answer is right
        return 1.0
    return 1.0 if any(_matches(pred, g, family) for g in golds) else 0.0


# --------------------------------------------------------------------------- overlong penalty


def _soft_overlong_formula(length: int, max_len: int, buffer: int) -> float:
    """DAPO Eq. 13, as TRL 1.16's ``get_soft_overlong_punishment`` computes it (kept for tests and
    as the fallback when TRL is not installed)."""
    if length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return (max_len - buffer - length) / buffer
    return -1.0


@functools.lru_cache(maxsize=64)
def _trl_soft_overlong(max_len: int, buffer: int) -> Any:
    try:
        from trl.rewards import get_soft_overlong_punishment
    except ImportError:  # the [train] extra is not installed (e.g. `tapo eval` on a server box)
        return None
    return get_soft_overlong_punishment(max_completion_len=max_len, soft_punish_cache=buffer)


def overlong_penalty(model_tokens: int, max_tokens: int, overlong_buffer: int, overlong_factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment on the number of MODEL tokens, times ``overlong_factor``.

    0 up to ``max_tokens - overlong_buffer``, then linear down to -1 at ``max_tokens``, -1 past it
    (TAPO: ``min(-(len - (max - buffer)) / buffer * factor, 0)``, same inside the buffer). Computed
    by ``trl.rewards.get_soft_overlong_punishment`` (which only takes ``len`` of each completion,
    so it is fed a ``range`` of the model-token count). ``overlong_factor=0`` disables it.
    """
    if model_tokens < 0 or max_tokens <= 0 or not 0 <= overlong_buffer <= max_tokens:
        raise ValueError(f"bad overlong settings: model_tokens={model_tokens}, max_tokens={max_tokens}, "
                         f"overlong_buffer={overlong_buffer}")
    if overlong_factor == 0:
        return 0.0
    fn = _trl_soft_overlong(max_tokens, overlong_buffer)
    value = fn([range(model_tokens)])[0] if fn is not None else _soft_overlong_formula(
        model_tokens, max_tokens, overlong_buffer)
    return float(overlong_factor * value)


# --------------------------------------------------------------------------- tool efficiency


@dataclass(frozen=True)
class ToolEfficiency:
    """OTC-PO's tool-integrated reward (Wang et al., 2025, "Acting Less is Reasoning More",
    arXiv:2504.14870): a correct answer earns less the further its tool calls ``m`` are from the
    optimal number ``n``.

    ``optimal_calls`` is ``n``: OTC-GRPO takes the fewest calls among the group's correct answers
    (the caller sets it per group with ``dataclasses.replace``); ``None`` uses OTC-PPO's form, which
    only rewards fewer calls. ``smooth`` is OTC's ``c``; ``weight`` is its ``alpha``: for a correct
    answer the reward is ``1 + weight * (r_tool - 1)``, which for ``weight=1`` is OTC's
    ``alpha * r_tool * r_correct``. Wrong answers are untouched.
    """

    optimal_calls: int | None = None
    smooth: float = 1.0
    weight: float = 1.0


def otc_tool_reward(calls: int, optimal_calls: int | None, smooth: float = 1.0) -> float:
    """OTC's ``r_tool`` in [0, 1], 1 at the optimum.

    * ``n`` unknown (OTC-PPO): ``cos(m * pi / (2m + c))``: 1 at m = 0, falling towards 0.
    * ``n = 0``: 1 if m = 0, else ``cos(m * pi / (2m + c))``.
    * ``n > 0``: ``sin(f * pi / (2n))`` with ``f = 2nm / (m + n)``: 1 at m = n, lower on both sides
      (OTC-GRPO).
    """
    m = calls
    if m < 0 or (optimal_calls is not None and optimal_calls < 0) or smooth <= 0:
        raise ValueError(f"bad tool-efficiency input: calls={calls}, optimal_calls={optimal_calls}, smooth={smooth}")
    if optimal_calls is None or optimal_calls == 0:
        return 1.0 if m == 0 else math.cos(m * math.pi / (2 * m + smooth))
    n = optimal_calls
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


# --------------------------------------------------------------------------- the reward


@dataclass(frozen=True)
class RewardBreakdown:
    total: float
    format_ok: bool
    correct: float  # 1.0 / 0.0 (0 whenever the format gate fails)
    overlong_penalty: float  # <= 0
    tool_term: float  # <= 0; 0 unless tool_efficiency is set and the answer is correct
    answer: str | None = None  # the extracted answer (also when the format gate fails)
    tool_calls: int = 0  # the count the tool term and demo_direct used


def tapo_reward(
    text: str,
    ground_truth: Any,
    data_source: str,
    *,
    model_tokens: int,
    max_tokens: int,
    overlong_buffer: int,
    overlong_factor: float = 1.0,
    protocol: Protocol = TAPO,
    tool_calls: int = 0,
    tool_efficiency: ToolEfficiency | None = None,
) -> RewardBreakdown:
    """TAPO's reward for one completion.

    ``total = (-1 if the format gate fails else correctness) + overlong penalty + tool term``.
    As in TAPO, the overlong penalty applies to format failures too. ``text`` is the full decoded
    completion (model text and injected tool output); ``model_tokens`` counts model tokens only.
    ``tool_calls`` is the loop's count; the tool blocks found in ``text`` are counted too and the
    larger is used. ``demo_direct`` rows are correct only with no tool call.
    """
    segments = _model_segments(text, protocol)
    return _score(_format_ok_segments(segments, protocol), _answer_of(segments, protocol),
                  max(tool_calls, len(parsed_tool_calls(segments))), ground_truth, data_source,
                  model_tokens=model_tokens, max_tokens=max_tokens, overlong_buffer=overlong_buffer,
                  overlong_factor=overlong_factor, tool_efficiency=tool_efficiency)


def function_call_reward(
    answer: str | None,
    ground_truth: Any,
    data_source: str,
    *,
    well_formed: bool,
    model_tokens: int,
    max_tokens: int,
    overlong_buffer: int,
    overlong_factor: float = 1.0,
    tool_calls: int = 0,
    tool_efficiency: ToolEfficiency | None = None,
) -> RewardBreakdown:
    """TAPO's reward for a function-calling trajectory (``--protocol hermes``), the same terms as
    :func:`tapo_reward`. Its text cannot be walked as tags: the chat template's tool turns sit between
    the model's turns, and differ by model. So the loop's own reading is scored: ``answer`` is the last
    turn's text (no call in it), and the format gate is ``well_formed``: the trajectory ended with that
    answer and every call parsed and fitted its function's schema (no invalid action).
    """
    return _score(well_formed and bool(answer and answer.strip()), answer, tool_calls, ground_truth, data_source,
                  model_tokens=model_tokens, max_tokens=max_tokens, overlong_buffer=overlong_buffer,
                  overlong_factor=overlong_factor, tool_efficiency=tool_efficiency)


def function_call_well_formed(agent_finish_reason: str | None, invalid_actions: int) -> bool:
    """The format gate of a function-calling trajectory, from the loop's reading of it: it ended with
    an answer (not a budget, a length cut or a client's call) and no call was invalid."""
    return agent_finish_reason == "answer" and invalid_actions == 0


def _score(fmt: bool, answer: str | None, calls: int, ground_truth: Any, data_source: str, *, model_tokens: int,
           max_tokens: int, overlong_buffer: int, overlong_factor: float,
           tool_efficiency: ToolEfficiency | None) -> RewardBreakdown:
    correct = 0.0
    if fmt:
        correct = correctness(answer, ground_truth, data_source)
        if answer_family(data_source) == "direct" and calls > 0:
            correct = 0.0
    base = correct if fmt else -1.0
    penalty = overlong_penalty(model_tokens, max_tokens, overlong_buffer, overlong_factor)
    tool_term = 0.0
    if tool_efficiency is not None and correct > 0:
        r_tool = otc_tool_reward(calls, tool_efficiency.optimal_calls, tool_efficiency.smooth)
        tool_term = correct * tool_efficiency.weight * (r_tool - 1.0)
    return RewardBreakdown(base + penalty + tool_term, fmt, correct, penalty, tool_term, answer, calls)

