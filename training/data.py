"""Task rows for training and evaluation: TAPO's parquet rows and plain JSONL, as typed ``TaskRow``s.

Two row shapes are accepted, in either file format:

* TAPO / verl rows (``recipe/tapo/src/data_proc/*.py`` in github.com/Goer17/TAPO write them):
  ``{"data_source", "prompt": [{"role", "content"}, ...], "ability", "reward_model":
  {"ground_truth": ...}, "extra_info": {...}}``. The prompt already holds TAPO's instructions and
  is used as it is.
* Plain rows: ``{"question", "answer", "data_source", "extra_info"?}``; the trainer builds the
  protocol's prompt around ``question``.

Ground truth may be a string, a number, a list of them or ``{"target": [...]}`` (TAPO's nq rows).
A bad row stops loading with a :class:`DataError` naming the file and the row: ``path:LINE`` (1-based)
for JSONL, ``path: row N`` (0-based, as ``pandas.read_parquet(path).iloc[N]``) for parquet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.rewards import golds_of

__all__ = ["DataError", "TaskRow", "load_rows", "iter_json_lines", "iter_jsonl", "iter_parquet", "row_to_task"]

_ROLES = frozenset({"system", "user", "assistant", "tool"})
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and row (no traceback needed)."""


@dataclass(frozen=True)
class TaskRow:
    prompt_messages: list[dict[str, str]] | None  # TAPO rows: the chat prompt as it is
    question: str | None  # plain rows: the question the protocol's prompt is built around
    ground_truth: Any  # str | list[str] | {"target": [...]} (as given; numbers turned into strings)
    data_source: str
    extra_info: dict[str, Any] = field(default_factory=dict)
    ability: str | None = None

    @property
    def golds(self) -> list[str]:
        return golds_of(self.ground_truth)


def _require(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: missing field {key!r} (fields: {', '.join(map(str, row)) or 'none'})")
    return row[key]


def _str_field(row: Mapping[str, Any], key: str, where: str) -> str:
    value = _require(row, key, where)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"


def _ground_truth(value: Any, key: str, where: str) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays from `datasets` / pandas
    try:
        golds = golds_of(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: field {key!r}: {e}") from None
    if not golds:
        raise DataError(f"{where}: field {key!r} has no gold answer")
    if isinstance(value, (int, float)):
        return golds[0]
    if isinstance(value, (list, tuple)):
        return golds
    if isinstance(value, Mapping):
        target = value["target"]
        return {**value, "target": golds if isinstance(target, (list, tuple)) or hasattr(target, "tolist")
                else golds[0]}
    return value


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'prompt' must be a non-empty list of chat messages, got {_describe(value)}")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, Mapping):
            raise DataError(f"{where}: prompt[{i}] must be a message object, got {_describe(msg)}")
        role, content = msg.get("role"), msg.get("content")
        if role not in _ROLES:
            raise DataError(f"{where}: prompt[{i}].role must be one of {', '.join(sorted(_ROLES))}, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{where}: prompt[{i}].content must be a string, got {_describe(content)}")
        out.append({"role": role, "content": content})
    return out


def _extra_info(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    extra = row.get("extra_info")
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise DataError(f"{where}: field 'extra_info' must be an object, got {_describe(extra)}")
    return dict(extra)


def row_to_task(row: Any, where: str) -> TaskRow:
    """One raw row (a mapping) to a :class:`TaskRow`; ``where`` names it in errors (``file:line``)."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: a row must be an object, got {_describe(row)}")
    data_source = _str_field(row, "data_source", where)
    extra = _extra_info(row, where)
    ability = row.get("ability")
    if ability is not None and not isinstance(ability, str):
        raise DataError(f"{where}: field 'ability' must be a string, got {_describe(ability)}")
    if row.get("prompt") is not None:  # TAPO / verl row
        messages = _messages(row["prompt"], where)
        reward_model = _require(row, "reward_model", where)
        if not isinstance(reward_model, Mapping):
            raise DataError(f"{where}: field 'reward_model' must be an object, got {_describe(reward_model)}")
        gt = _ground_truth(_require(reward_model, "ground_truth", f"{where}: reward_model"),
                           "reward_model.ground_truth", where)
        return TaskRow(messages, None, gt, data_source, extra, ability)
    if row.get("question") is None:
        raise DataError(f"{where}: a row needs 'question' (plain rows) or 'prompt' (TAPO rows); "
                        f"fields: {', '.join(map(str, row)) or 'none'}")
    question = _str_field(row, "question", where)
    gt = _ground_truth(_require(row, "answer", where), "answer", where)
    return TaskRow(None, question, gt, data_source, extra, ability)


def iter_json_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for each value of a JSON Lines file (blank lines skipped), ``where`` being
    ``path:LINE``; a ``.json`` file holding one array works too (``path: item N``). Unreadable files
    and bad JSON raise :class:`DataError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: bad JSON: {e.msg}") from None
        for i, row in enumerate(rows):
            yield f"{path}: item {i}", row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: bad JSON: {e.msg} (column {e.colno})") from None


def iter_jsonl(path: str | Path) -> Iterator[TaskRow]:
    """Task rows of a JSON Lines file (see :func:`iter_json_lines`)."""
    for where, row in iter_json_lines(path):
        yield row_to_task(row, where)


def iter_parquet(path: str | Path, batch_size: int = 1024) -> Iterator[TaskRow]:
    """Rows of a parquet file (TAPO's ``train.parquet``/``test.parquet``), read in batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=batch_size)
        index = 0
        for batch in batches:
            for row in batch.to_pylist():
                yield row_to_task(row, f"{path}: row {index}")
                index += 1
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None


def _iter_hub(dataset_id: str, split: str) -> Iterator[TaskRow]:
    """A Hugging Face hub dataset (``owner/name`` or ``owner/name:config``) through ``datasets``."""
    import datasets

    name, _, config = dataset_id.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 - many error types; the message is what matters
        raise DataError(f"{dataset_id}: cannot load split {split!r} from the hub: {e}") from None
    for i, row in enumerate(ds):
        yield row_to_task(row, f"{dataset_id}[{split}]: row {i}")


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?")


def _iter_path(path: Path, split: str) -> Iterator[TaskRow]:
    if path.is_dir():
        for suffix in (".parquet", *_JSONL_SUFFIXES):
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return _iter_path(candidate, split)
        raise DataError(f"{path}: directory has no {split}.parquet or {split}.jsonl")
    if path.suffix == ".parquet":
        return iter_parquet(path)
    if path.suffix in _JSONL_SUFFIXES:
        return iter_jsonl(path)
    raise DataError(f"{path}: unknown data format (expected .parquet, .jsonl, .ndjson or .json)")


def load_rows(source: str | Path, *, split: str = "train", limit: int | None = None) -> list[TaskRow]:
    """Load task rows from a parquet/JSONL file, a directory holding ``{split}.parquet`` or
    ``{split}.jsonl`` (TAPO's data layout), or a Hugging Face hub dataset id (``owner/name``,
    optionally ``owner/name:config``) through ``datasets.load_dataset``. Raises :class:`DataError`.
    """
    path = Path(source)
    if path.exists():
        rows_iter = _iter_path(path, split)
    elif isinstance(source, str) and _HUB_ID.fullmatch(source) and not source.endswith(
            (".parquet", *_JSONL_SUFFIXES)):
        rows_iter = _iter_hub(source, split)
    else:
        raise DataError(f"{source}: no such file or directory")
    rows: list[TaskRow] = []
    for row in rows_iter:
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{source}: no rows")
    return rows
