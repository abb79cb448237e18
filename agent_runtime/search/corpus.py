"""Reading a JSONL corpus for indexing, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_runtime.search.base import split_contents


class CorpusError(ValueError):
    """A corpus row that cannot be indexed. The message names the file and the 1-based line number."""


@dataclass(frozen=True, slots=True)  # slots: a million rows are held at once while indexing
class CorpusRow:
    id: str
    title: str
    text: str
    url: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "text": self.text, "url": self.url}


def parse_row(value: Any, where: str) -> CorpusRow:
    """One decoded row: ``{id, title?, text, url?}`` or Search-R1's ``{id, contents}``.

    ``title`` may be missing (passage corpora such as MS MARCO have none); ``text`` or ``contents``
    may not. ``id`` is a string or an integer (kept as a string).
    """
    if not isinstance(value, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(value).__name__}")
    row_id = value.get("id")
    if row_id is None:
        raise CorpusError(f"{where}: missing field 'id'")
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise CorpusError(f"{where}: field 'id' must be a string or an integer, got {type(row_id).__name__}")
    url = _optional_str(value, "url", where)
    if "text" in value:
        text = _required_str(value, "text", where)
        title = _optional_str(value, "title", where)
    elif "contents" in value:
        title, text = split_contents(_required_str(value, "contents", where))
    else:
        raise CorpusError(f"{where}: missing field 'text' (rows are {{id, title, text}} or {{id, contents}})")
    return CorpusRow(str(row_id), title, text, url)


def _required_str(value: dict[str, Any], key: str, where: str) -> str:
    field = value[key]
    if not isinstance(field, str):
        raise CorpusError(f"{where}: field {key!r} must be a string, got {type(field).__name__}")
    return field


def _optional_str(value: dict[str, Any], key: str, where: str) -> str:
    if value.get(key) is None:
        return ""
    return _required_str(value, key, where)


def read_corpus(path: Path, progress: bool = False) -> Iterator[CorpusRow]:
    """Rows of a JSONL file in order; blank lines are skipped. Stops at the first bad row."""
    from tqdm.auto import tqdm

    size = path.stat().st_size
    with path.open("rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", disable=not progress
    ) as bar:
        for line_no, raw in enumerate(f, start=1):
            bar.update(len(raw))
            if not raw.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                value = json.loads(raw.rstrip(b"\r\n"))
            except json.JSONDecodeError as exc:  # its own "line 1" would be the row's, not the file's
                raise CorpusError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from None
            except UnicodeDecodeError as exc:
                raise CorpusError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            yield parse_row(value, where)
